internal import CLCA
import Foundation

/// The LCA of one straight step between two checkpoints, per tensor.
public struct Attribution: Sendable, Hashable, Codable {
    /// Path of the starting checkpoint.
    public var from: String
    /// Path of the final checkpoint.
    public var to: String
    /// Model spec in canonical form.
    public var model: String
    /// The loss that was allocated.
    public var loss: Loss
    /// Number of examples the loss was evaluated on.
    public var examples: Int
    /// The model's tensors, in the order of `view`'s arrays.
    public var tensors: [TensorInfo]
    /// Losses, totals, residual and per-tensor values (and with loss
    /// groups, each group's: `view.groupLCA`, …).
    public var view: ViewRecord
    /// With loss groups: the examples of each group among `examples`
    /// (empty without groups).
    public var groupExamples: [Int] = []

    /// The machine-readable form, one line, keys in a fixed order, doubles
    /// with 17 significant digits (round-trippable):
    /// `{"from": …, "to": …, "model": …, "examples": n, "loss_before": x,
    /// "loss_after": x, "lca_total": x, "first_order_total": x,
    /// "residual": x, "subintervals": n, "residual_above_threshold": false,
    /// "tensors": [{"name": …, "shape": […], "count": n, "lca": x,
    /// "first_order": x, "helped": n, "hurt": n, "zero": n}, …]}`.
    public var json: String {
        var tensorObjects: [String] = []
        for (index, tensor) in tensors.enumerated() {
            let shape = "[" + tensor.shape.map(String.init).joined(separator: ", ") + "]"
            tensorObjects.append(
                "{\"name\": \(JSONText.string(tensor.name)), \"shape\": \(shape), \"count\": \(tensor.count), "
                + "\"lca\": \(JSONText.number(view.tensorLCA[index])), "
                + "\"first_order\": \(JSONText.number(view.tensorFirstOrder[index])), "
                + "\"helped\": \(view.tensorHelped[index]), \"hurt\": \(view.tensorHurt[index]), "
                + "\"zero\": \(view.tensorZero[index])}")
        }
        return "{\"from\": \(JSONText.string(from)), \"to\": \(JSONText.string(to)), "
            + "\"model\": \(JSONText.string(model)), \"examples\": \(examples), "
            + "\"loss_before\": \(JSONText.number(view.lossBefore)), "
            + "\"loss_after\": \(JSONText.number(view.lossAfter)), "
            + "\"lca_total\": \(JSONText.number(view.lcaTotal)), "
            + "\"first_order_total\": \(JSONText.number(view.firstOrderTotal)), "
            + "\"residual\": \(JSONText.number(view.residual)), "
            + "\"subintervals\": \(view.subintervals), "
            + "\"residual_above_threshold\": \(view.residualAboveThreshold), "
            + "\"tensors\": [" + tensorObjects.joined(separator: ", ") + "]"
            + groupsJSON + "}"
    }

    /// `, "groups": [{"name": "0", "examples": n, "loss_before": x,
    /// "loss_after": x, "lca": x, "residual": x, "residual_above_threshold":
    /// false, "tensor_lca": [x, …]}, …]`, or "" without groups.
    var groupsJSON: String {
        guard view.groupCount > 0 else { return "" }
        let objects = (0..<view.groupCount).map { g -> String in
            let lca = view.groupLCA(group: g).map { Array($0) } ?? []
            return "{\"name\": \"\(g)\", \"examples\": \(g < groupExamples.count ? groupExamples[g] : 0), "
                + "\"loss_before\": \(JSONText.number(view.groupLossBefore[g])), "
                + "\"loss_after\": \(JSONText.number(view.groupLossAfter[g])), "
                + "\"lca\": \(JSONText.number(lca.reduce(0, +))), "
                + "\"residual\": \(JSONText.number(view.groupResidual[g])), "
                + "\"residual_above_threshold\": \(view.groupFlags[g] & 1 != 0), "
                + "\"tensor_lca\": [" + lca.map(JSONText.number).joined(separator: ", ") + "]}"
        }
        return ", \"groups\": [" + objects.joined(separator: ", ") + "]"
    }

    /// A per-tensor table with a total row and the loss change, residual
    /// and sub-interval lines, for people.
    public var table: String {
        var rows: [[String]] = [["tensor", "shape", "parameters", "LCA", "first order", "helped %", "hurt %"]]
        for (index, tensor) in tensors.enumerated() {
            let count = Double(max(tensor.count, 1))
            rows.append([tensor.name, tensor.shapeDescription, String(tensor.count),
                         Format.scientific(view.tensorLCA[index]), Format.scientific(view.tensorFirstOrder[index]),
                         Format.percent(Double(view.tensorHelped[index]) / count),
                         Format.percent(Double(view.tensorHurt[index]) / count)])
        }
        let total = tensors.reduce(0) { $0 + $1.count }
        let helped = view.tensorHelped.reduce(0, +), hurt = view.tensorHurt.reduce(0, +)
        rows.append(["total", "", String(total), Format.scientific(view.lcaTotal),
                     Format.scientific(view.firstOrderTotal),
                     Format.percent(Double(helped) / Double(max(total, 1))),
                     Format.percent(Double(hurt) / Double(max(total, 1)))])
        var text = "LCA of the step \(from) → \(to)\n"
        text += "model \(model), loss \(loss), \(examples) examples\n\n"
        text += Format.table(rows, rightAligned: [false, false, true, true, true, true, true], ruleBefore: rows.count - 1)
        text += "\n"
        text += "loss \(Format.fixed(view.lossBefore)) → \(Format.fixed(view.lossAfter))"
        text += " (change \(Format.scientific(view.lossChange)) = LCA \(Format.scientific(view.lcaTotal))"
        text += " + residual \(Format.scientific(view.residual)))\n"
        text += "Simpson sub-intervals: \(view.subintervals)"
        text += view.residualAboveThreshold ? "  (cap reached, |residual| above threshold)\n" : "\n"
        if view.groupCount > 0 {
            var groupRows: [[String]] = [["group", "examples", "loss before", "loss after", "LCA", "residual"]]
            for g in 0..<view.groupCount {
                let lca = view.groupLCA(group: g)?.reduce(0, +) ?? 0
                groupRows.append([String(g), g < groupExamples.count ? String(groupExamples[g]) : "",
                                  Format.fixed(view.groupLossBefore[g]), Format.fixed(view.groupLossAfter[g]),
                                  Format.scientific(lca),
                                  Format.scientific(view.groupResidual[g]) + (view.groupFlags[g] & 1 != 0 ? " !" : "")])
            }
            text += "\nby loss group (LCA of the group's share n_g/N of the loss; ! = residual above threshold)\n"
            text += Format.table(groupRows, rightAligned: [false, true, true, true, true, true], ruleBefore: nil)
        }
        return text
    }
}

/// The LCA of the straight step between two checkpoints on a data set.
///
/// - Parameters:
///   - from: the starting checkpoint (safetensors, as `lca train` writes).
///   - to: the final checkpoint; its tensors must match `from`'s.
///   - data: the examples whose mean loss is allocated.
///   - modelSpec: the model spec; nil reads it from `from`'s metadata. It
///     is needed for checkpoints written by other tools (no `lca.model`
///     metadata); when both exist they must describe the same model.
///   - loss: the loss to allocate; nil = the loss `from` records
///     (cross-entropy when it records none).
///   - configuration: integrator settings (`lcaThreshold`,
///     `lcaMaxSubintervals`, `evalChunk`). When its `validation` holds out
///     examples (a count or a fraction; `.automatic` counts as none here),
///     the loss is evaluated on the remaining training split chosen exactly
///     as a `Trainer` with the same seed chooses it, so that the result
///     matches a training run's LCA; otherwise on every example.
///   - conversions: called once per checkpoint whose tensors were
///     converted to F32 (F16, BF16, F64), to tell the user.
public func attribute(from: String, to: String, data: Dataset, modelSpec: String? = nil, loss: Loss? = nil,
                      configuration: TrainingConfiguration = TrainingConfiguration(),
                      conversions: ((CheckpointConversion) -> Void)? = nil) throws -> Attribution {
    let recorded = try Model.checkpointSpec(from, requested: modelSpec)
    let model = try Model(spec: recorded.spec, loss: loss ?? recorded.loss)
    // `to` must hold the same model as `from`; without metadata (another tool's file) it is read
    // as `from`'s model
    let toModel = try Model(spec: Model.checkpointSpec(to, requested: model.spec).spec, loss: model.loss)
    for (checkpoint, target) in [(from, model), (to, toModel)] {
        let conversion = try target.loadCheckpoint(checkpoint)
        if !conversion.isEmpty { conversions?(conversion) }
    }
    let start = model.parameters, end = toModel.parameters

    var indices: [UInt32]? = nil
    if case let held? = configuration.validation.resolvedCount(exampleCount: data.count), held > 0 {
        guard held < data.count else {
            throw LCAError.invalid("validation split of \(held) leaves no examples (data set has \(data.count))")
        }
        indices = try Split.trainingIndices(data: data, validation: held, seed: configuration.seed)
    }
    let view = try model.attribute(from: start, to: end, data: data, indices: indices,
                                   configuration: configuration)
    var groupExamples: [Int] = []
    if let groups = configuration.exampleGroups {
        groupExamples = [Int](repeating: 0, count: groups.count)
        if let indices {
            for i in indices where Int(i) < groups.ids.count { groupExamples[Int(groups.ids[Int(i)])] += 1 }
        } else {
            for id in groups.ids { groupExamples[Int(id)] += 1 }
        }
    }
    return Attribution(from: from, to: to, model: model.spec, loss: model.loss,
                       examples: indices?.count ?? data.count, tensors: model.tensors, view: view,
                       groupExamples: groupExamples)
}

/// The core's seeded training/validation split, for attribution on the
/// same examples a training run evaluated.
enum Split {
    /// The training split a trainer with this seed makes (`lca_dataset_split`).
    static func trainingIndices(data: Dataset, validation: Int, seed: UInt64) throws -> [UInt32] {
        var training = [UInt32](repeating: 0, count: data.count - validation)
        try check(lca_dataset_split(data.handle, validation, seed, &training, nil))
        return training
    }
}
