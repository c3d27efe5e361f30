import Foundation

/// The loss-group fields of issue 15 (`lca train --groups`,
/// docs/log-format.md "Version 2"): the one place that knows their names,
/// shapes and bounds. The reader, the exports, `lca verify`, `lca show
/// --groups` and the report's group figures all go through it.
///
/// The evaluation loss is a weighted sum of group losses, L = Σ_g (n_g/N)
/// L_g, so the LCA splits by group: per group g and tensor t, `group_lca`
/// is the LCA of (n_g/N)·L_g, and Σ_g group_lca = lca up to the rounding
/// that `sumBound` allows.
public enum GroupFields {
    /// Per group and tensor, group-major (G · T elements).
    public static let groupLCA = "group_lca"
    /// Per group (G elements each), in record order.
    public static let perGroup = ["group_loss_before", "group_loss_after", "group_residual", "group_flags"]
    /// One u32, present only when G is odd (keeps the next field 8-byte
    /// aligned); always 0.
    public static let reserved = "group_reserved"
    /// Every group field name of one view ("" or "val_").
    public static func names(prefix: String = "") -> [String] {
        ([groupLCA] + perGroup + [reserved]).map { prefix + $0 }
    }
    /// Whether a field name is a group field of either view.
    public static func isGroupField(_ name: String) -> Bool {
        name.hasPrefix("group_") || name.hasPrefix("val_group_")
    }

    /// `lca verify`'s bound on |Σ_g group_lca − lca| per tensor, relative to
    /// the largest of |lca|, Σ_g |group_lca| and the tensor's absolute LCA
    /// (lca_hurting − lca_helping, version 2): 2⁻³⁰ ≈ 9.3e-10, the zero
    /// floor's ratio. The writer's group gradients add up exactly to the
    /// total's (the exact accumulator, docs/method.md); what is left is the
    /// rounding of G + 1 float64 sums of at most P terms each, about
    /// P · 2⁻⁵³ ≈ 1e-11 of the absolute sum for fc1.weight's 78,400: the
    /// bound leaves a factor of 100 for cancellation between groups.
    public static let sumBound = 0x1p-30
    /// Plus, per tensor, count · f_t · 2⁻²⁰ (f_t the record's zero floor,
    /// 2⁻³⁰ of its largest |LCA|): what float64 sums of `count` terms of at
    /// most the largest |LCA| can round by, 8 times over; it matters only
    /// for a tensor whose LCA is all rounding (a conv bias before batch
    /// norm), whose scale is then itself rounding.
    public static let floorSlack = 0x1p-20
    /// `lca verify`'s bound on a recorded `group_residual` against
    /// (n_g/N)·(L_g after − L_g before) − Σ_t group_lca recomputed, relative
    /// to the magnitudes added (2⁻⁴⁰ ≈ 9.1e-13: a few roundings).
    public static let residualBound = 0x1p-40
    /// `lca verify`'s bound on |Σ_g (n_g/N)·L_g − L|, relative to L: the
    /// group losses and the loss are the same exact sums divided
    /// differently (2⁻³⁰).
    public static let lossBound = 0x1p-30

    /// The layers of a model's tensors, in model order: the tensors sharing
    /// the name before the first dot ("fc1.weight", "fc1.bias" → "fc1"),
    /// as `tools/results/tables.py layers` groups them.
    public static func layers(_ tensors: [TensorInfo]) -> [(name: String, tensors: [Int])] {
        var layers: [(name: String, tensors: [Int])] = []
        for (index, tensor) in tensors.enumerated() {
            let layer = String(tensor.name.split(separator: ".", maxSplits: 1).first ?? Substring(tensor.name))
            if let at = layers.firstIndex(where: { $0.name == layer }) {
                layers[at].tensors.append(index)
            } else {
                layers.append((layer, [index]))
            }
        }
        return layers
    }

    /// The header's group names (empty without groups).
    public static func names(_ header: LogHeader) -> [String] { header.groups?.names ?? [] }

    /// The examples per group of a view (the evaluation set's, or with
    /// `validation` the validation split's), or nil when the header does
    /// not give them.
    public static func examples(_ header: LogHeader, validation: Bool) -> [Int]? {
        validation ? header.groups?.validationExamples : header.groups?.examples
    }

    /// What is wrong with the header's `groups`, or nil: names unique and
    /// non-empty, one example count per name, counts ≥ 0 adding up to the
    /// data's evaluation (validation) size when the header gives it.
    public static func headerProblem(_ header: LogHeader) -> String? {
        guard let groups = header.groups else { return nil }
        let g = groups.names.count
        guard g > 0 else { return "the header's groups list no names" }
        if Set(groups.names).count != g { return "the header's group names are not unique" }
        if groups.names.contains(where: \.isEmpty) { return "a group name is empty" }
        for (what, counts, expected) in [("examples", groups.examples, header.data?.evaluation),
                                         ("validation_examples", groups.validationExamples,
                                          header.hasValidation ? header.data?.validation : nil)] {
            guard let counts else { continue }
            guard counts.count == g else { return "groups.\(what) has \(counts.count) counts for \(g) groups" }
            guard counts.allSatisfy({ $0 >= 0 }) else { return "groups.\(what) has a negative count" }
            let sum = counts.reduce(0, +)
            if let expected, sum != expected {
                return "groups.\(what) add up to \(sum), the \(what == "examples" ? "evaluation set" : "validation split") has \(expected) examples"
            }
        }
        return nil
    }
}

extension ViewRecord {
    /// Group g's LCA per tensor (T values), or an empty slice when the
    /// record has no group fields.
    public func groupTensorLCA(_ g: Int) -> ArraySlice<Double> {
        let t = tensorLCA.count
        guard t > 0, g >= 0, (g + 1) * t <= groupLCA.count else { return [] }
        return groupLCA[(g * t)..<((g + 1) * t)]
    }

    /// Group g's LCA of tensor t (0 when absent).
    public func groupLCA(group g: Int, tensor t: Int) -> Double {
        let slice = groupTensorLCA(g)
        return t >= 0 && t < slice.count ? slice[slice.startIndex + t] : 0
    }

    /// Σ over tensors (in tensor order) of group g's LCA.
    public func groupTotalLCA(_ g: Int) -> Double { groupTensorLCA(g).reduce(0, +) }

    /// Whether group g's residual is flagged above the threshold.
    public func groupResidualAboveThreshold(_ g: Int) -> Bool {
        g >= 0 && g < groupFlags.count && groupFlags[g] & 1 != 0
    }
}
