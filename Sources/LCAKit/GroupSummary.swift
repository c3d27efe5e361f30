import Foundation

/// A run's LCA split by loss group (issue 15), for one view, summed over
/// the records that carry group fields, in constant memory: per group the
/// loss before the first and after the last record, Σ LCA per tensor and
/// per layer, Σ and largest |residual| and the flagged records. What `lca
/// show --groups` prints and `lca show --json` gives as `"groups"`.
public struct GroupSummary: Sendable, Encodable {
    /// A tensor's or a layer's share of a group's LCA.
    public struct Part: Sendable, Encodable, Hashable {
        public var name: String
        /// Σ over records of the group's LCA of this tensor (layer).
        public var lca: Double
        /// lca / the group's Σ LCA (nan when that is 0).
        public var share: Double
    }

    /// One group's totals.
    public struct Group: Sendable, Encodable {
        public var name: String
        /// The group's examples in this view (nil when the header does not say).
        public var examples: Int?
        /// L_g before the first record, after the last.
        public var lossFirst = Double.nan, lossLast = Double.nan
        /// Σ over records and tensors of the group's LCA.
        public var lca = 0.0
        /// Σ over records of the group's residual, and the largest |residual|.
        public var residual = 0.0, maxAbsResidual = 0.0
        /// Records whose group residual was flagged above the threshold.
        public var flagged = 0
        public var tensors: [Part]
        public var layers: [Part]
    }

    /// "training split" or "validation split".
    public let view: String
    /// "class", "file:PATH", … (the header's `groups.source`).
    public let source: String?
    /// Records summed (those with group fields).
    public private(set) var iterations = 0
    public private(set) var groups: [Group]
    /// Per tensor Σ over the same records of the ungrouped LCA.
    public private(set) var ungrouped: [Part]
    private let layerTensors: [[Int]]

    /// nil when the header has no groups.
    public init?(header: LogHeader, validation: Bool = false) {
        let names = GroupFields.names(header)
        guard !names.isEmpty, !validation || header.hasValidation else { return nil }
        view = validation ? "validation split" : "training split"
        source = header.groups?.source
        let tensorNames = header.tensors.map(\.name)
        let layers = GroupFields.layers(header.tensors)
        layerTensors = layers.map(\.tensors)
        let examples = GroupFields.examples(header, validation: validation)
        func parts(_ list: [String]) -> [Part] { list.map { Part(name: $0, lca: 0, share: .nan) } }
        groups = names.enumerated().map { k, name in
            Group(name: name, examples: examples.flatMap { k < $0.count ? $0[k] : nil },
                  tensors: parts(tensorNames), layers: parts(layers.map(\.name)))
        }
        ungrouped = parts(tensorNames)
    }

    /// Adds one record's view (ignored when it has no group fields).
    public mutating func add(_ v: ViewRecord) {
        let t = ungrouped.count
        guard v.groupCount == groups.count, v.groupLCA.count == groups.count * t, v.tensorLCA.count == t else { return }
        for k in groups.indices {
            if iterations == 0 { groups[k].lossFirst = v.groupLossBefore[k] }
            groups[k].lossLast = v.groupLossAfter[k]
            for i in 0..<t {
                let value = v.groupLCA[k * t + i]
                groups[k].tensors[i].lca += value
                groups[k].lca += value
            }
            groups[k].residual += v.groupResidual[k]
            groups[k].maxAbsResidual = max(groups[k].maxAbsResidual, abs(v.groupResidual[k]))
            if v.groupResidualAboveThreshold(k) { groups[k].flagged += 1 }
        }
        for i in 0..<t { ungrouped[i].lca += v.tensorLCA[i] }
        iterations += 1
    }

    /// The layers' sums and the shares, once the records are added.
    public func finished() -> GroupSummary {
        var copy = self
        for k in copy.groups.indices {
            let total = copy.groups[k].lca
            for (l, members) in layerTensors.enumerated() {
                copy.groups[k].layers[l].lca = members.reduce(0) { $0 + copy.groups[k].tensors[$1].lca }
            }
            for i in copy.groups[k].tensors.indices { copy.groups[k].tensors[i].share = copy.groups[k].tensors[i].lca / total }
            for l in copy.groups[k].layers.indices { copy.groups[k].layers[l].share = copy.groups[k].layers[l].lca / total }
        }
        let total = copy.ungrouped.reduce(0) { $0 + $1.lca }
        for i in copy.ungrouped.indices { copy.ungrouped[i].share = copy.ungrouped[i].lca / total }
        return copy
    }

    /// The text tables: per group its examples, losses, Σ LCA, residuals
    /// and flags; then Σ LCA per layer (or per tensor with `byTensor`)
    /// with each part's share of the group's LCA, a row Σ over groups and
    /// the ungrouped LCA of the same records.
    public func table(byTensor: Bool = false) -> String {
        let width = max(10, groups.map(\.name.count).max() ?? 0, "Σ over groups".count, "ungrouped".count)
        func pad(_ s: String) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }
        func right(_ s: String, _ w: Int) -> String { s.count >= w ? s : String(repeating: " ", count: w - s.count) + s }
        var text = "\nloss groups on the \(view) (\(groups.count) groups\(source.map { " from \($0)" } ?? ""), \(iterations) iterations)\n"
        text += pad("group") + "  examples    L_g first → last       Σ group LCA    Σ residual  max |residual|  flagged\n"
        text += String(repeating: "-", count: width) + "  --------  -------------------  -------------  ------------  --------------  -------\n"
        for g in groups {
            text += pad(g.name) + "  " + right(g.examples.map(String.init) ?? "?", 8)
                + String(format: "  %8.6f → %8.6f  %13.6e  %12.4e  %14.4e  %7d\n", g.lossFirst, g.lossLast, g.lca, g.residual, g.maxAbsResidual, g.flagged)
        }
        let columns = byTensor ? groups.first?.tensors.map(\.name) ?? [] : groups.first?.layers.map(\.name) ?? []
        let cell = max(20, (columns.map(\.count).max() ?? 0) + 2)
        text += "\nΣ group LCA per \(byTensor ? "tensor" : "layer") (share of the group's Σ LCA)\n"
        text += pad("group") + columns.map { "  " + right($0, cell) }.joined() + "\n"
        text += String(repeating: "-", count: width) + columns.map { _ in "  " + String(repeating: "-", count: cell) }.joined() + "\n"
        func row(_ name: String, _ parts: [Part]) -> String {
            pad(name) + parts.map { p in
                "  " + right(String(format: "%+.4e", p.lca) + (p.share.isFinite ? String(format: " (%4.0f%%)", 100 * p.share) : "        "), cell)
            }.joined() + "\n"
        }
        for g in groups { text += row(g.name, byTensor ? g.tensors : g.layers) }
        text += String(repeating: "-", count: width) + columns.map { _ in "  " + String(repeating: "-", count: cell) }.joined() + "\n"
        let sums = (byTensor ? groups.first?.tensors : groups.first?.layers)?.indices.map { i -> Part in
            let name = byTensor ? groups[0].tensors[i].name : groups[0].layers[i].name
            return Part(name: name, lca: groups.reduce(0) { $0 + (byTensor ? $1.tensors[i].lca : $1.layers[i].lca) }, share: .nan)
        } ?? []
        text += row("Σ over groups", sums)
        let plain: [Part] = byTensor ? ungrouped.map { Part(name: $0.name, lca: $0.lca, share: .nan) }
            : layerTensors.enumerated().map { l, members in
                Part(name: columns[l], lca: members.reduce(0) { $0 + ungrouped[$1].lca }, share: .nan)
            }
        text += row("ungrouped", plain)
        return text
    }

    enum CodingKeys: String, CodingKey { case view, source, iterations, groups, ungrouped }
}
