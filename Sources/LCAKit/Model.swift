internal import CLCA

/// The loss a model is trained on and whose change LCA allocates.
public enum Loss: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// Mean softmax cross-entropy over integer labels ("ce").
    case crossEntropy = "ce"
    /// Mean squared error over outputs, as torch's MSELoss ("mse"); targets
    /// are the data set's float targets or one-hot labels.
    case meanSquaredError = "mse"

    /// The command-line spelling: "ce" or "mse".
    public var description: String { rawValue }

    var cValue: lca_loss_kind {
        switch self {
        case .crossEntropy: return LCA_LOSS_SOFTMAX_CROSS_ENTROPY
        case .meanSquaredError: return LCA_LOSS_MEAN_SQUARED_ERROR
        }
    }

    init(_ kind: lca_loss_kind) {
        self = kind == LCA_LOSS_MEAN_SQUARED_ERROR ? .meanSquaredError : .crossEntropy
    }
}

/// One parameter tensor of a model: a named, shaped slice of the model's
/// flat parameter array.
public struct TensorInfo: Sendable, Hashable, Codable {
    /// PyTorch-style name, e.g. "fc1.weight".
    public var name: String
    /// Shape in PyTorch order: a dense weight is (out, in).
    public var shape: [Int]
    /// Index of the tensor's first element in the flat parameter array.
    public var offset: Int
    /// Number of elements (the product of `shape`).
    public var count: Int

    /// Makes a tensor description.
    public init(name: String, shape: [Int], offset: Int, count: Int) {
        self.name = name
        self.shape = shape
        self.offset = offset
        self.count = count
    }

    /// The shape written as "32×784".
    public var shapeDescription: String { shape.map(String.init).joined(separator: "×") }
}

/// The output units of one layer (the neurons of a dense layer, the
/// channels of a convolution), for per-unit LCA: unit `u` gathers its slice
/// of every tensor of the layer (incoming weights plus bias).
public struct UnitGroup: Sendable, Hashable, Codable {
    /// The layer's name ("fc1").
    public var group: String
    /// Number of units.
    public var units: Int
    /// Index of the group's first unit in `ViewRecord.unitLCA`.
    public var offset: Int
    /// The tensors whose slices make up the units (as a log header lists
    /// them; nil when not known).
    public var tensors: [String]?

    /// Makes a unit group description.
    public init(group: String, units: Int, offset: Int, tensors: [String]? = nil) {
        self.group = group
        self.units = units
        self.offset = offset
        self.tensors = tensors
    }
}

/// A checkpoint's model description, read from its metadata without
/// loading the weights.
public struct CheckpointSpec: Sendable, Hashable {
    /// The model spec in canonical form ("784-100-50-10").
    public var spec: String
    /// The loss the model was trained with.
    public var loss: Loss
}

/// What loading a checkpoint converted: files written by other tools
/// (PyTorch's `safetensors.torch.save_file`) may hold F16, BF16 or F64
/// tensors, which are converted to F32 on load: F16 and BF16 exactly
/// (every value is a float32 value), F64 rounded to nearest.
public struct CheckpointConversion: Sendable, Hashable {
    /// The checkpoint's path.
    public var path: String
    /// The iteration in the checkpoint's metadata (0 when absent).
    public var iteration: UInt64
    /// Tensors converted from F16.
    public var f16Tensors: Int
    /// Tensors converted from BF16.
    public var bf16Tensors: Int
    /// Tensors converted from F64.
    public var f64Tensors: Int
    /// Values in those F64 tensors.
    public var f64Values: Int
    /// Of those, the values float32 holds only rounded.
    public var f64Rounded: Int

    /// True when every tensor was F32 (loaded bit for bit).
    public var isEmpty: Bool { f16Tensors + bf16Tensors + f64Tensors == 0 }

    /// One line for stderr saying what was converted, or nil when nothing
    /// was: "lca: note: a.safetensors: converted to F32 on load: 2 F64
    /// tensors (rounded to nearest: 3 of 8 values changed)".
    public var notice: String? {
        if isEmpty { return nil }
        func tensors(_ n: Int, _ dtype: String) -> String { "\(n) \(dtype) tensor\(n == 1 ? "" : "s")" }
        var parts: [String] = []
        let exact = [(f16Tensors, "F16"), (bf16Tensors, "BF16")].filter { $0.0 > 0 }.map { tensors($0.0, $0.1) }
        if !exact.isEmpty { parts.append(exact.joined(separator: ", ") + " (exact)") }
        if f64Tensors > 0 {
            parts.append(tensors(f64Tensors, "F64") + " (rounded to nearest: \(f64Rounded) of \(f64Values) values changed)")
        }
        return "lca: note: \(path): converted to F32 on load: \(parts.joined(separator: "; "))\n"
    }
}

/// A neural network: its architecture and its float32 parameters.
///
/// A `Model` owns the core's model handle. It is a reference type because
/// a `Trainer` trains it in place; read `parameters` for a copy.
///
/// ```swift
/// let model = try Model(spec: "64-32-10")
/// model.initialize(seed: 1)
/// print(model.parameterCount, model.tensors.map(\.name))
/// ```
public final class Model {
    let handle: OpaquePointer

    /// The tensors in parameter order.
    public let tensors: [TensorInfo]
    /// The layers' output units, for per-unit LCA views, in record order.
    public let unitGroups: [UnitGroup]
    /// Σ units over `unitGroups`: the length of `ViewRecord.unitLCA` when
    /// per-unit views are on.
    public var unitCount: Int { Int(lca_model_unit_count(handle)) }

    /// Builds a model from a spec: "fc" (the paper's 784-100-50-10 MLP) or
    /// layer widths joined by "-" ("64-32-10"), dense layers with ReLU
    /// between them. Parameters start at zero: call `initialize(seed:)` or
    /// `loadCheckpoint(_:)`.
    public init(spec: String, loss: Loss = .crossEntropy) throws {
        var pointer: OpaquePointer?
        try check(lca_model_new(&pointer, spec, loss.cValue))
        guard let pointer else { throw LCAError(code: .outOfMemory, message: "lca_model_new returned no model") }
        handle = pointer
        var infos: [TensorInfo] = []
        let tensorCount = lca_model_tensor_count(pointer)
        for index in 0..<tensorCount {
            var info = lca_tensor_info()
            do { try check(lca_model_tensor(pointer, index, &info)) } catch {
                lca_model_free(pointer)
                throw error
            }
            let shape = withUnsafeBytes(of: info.shape) { raw in
                Array(raw.bindMemory(to: Int64.self).prefix(Int(info.rank))).map { Int($0) }
            }
            infos.append(TensorInfo(name: String(cString: info.name), shape: shape,
                                    offset: Int(info.offset), count: Int(info.count)))
        }
        tensors = infos
        var groups: [UnitGroup] = []
        for index in 0..<lca_model_unit_group_count(pointer) {
            var info = lca_unit_group_info()
            if lca_model_unit_group(pointer, index, &info) == LCA_OK {
                groups.append(UnitGroup(group: String(cString: info.name), units: Int(info.units), offset: Int(info.offset)))
            }
        }
        unitGroups = groups
    }

    /// Builds the model for a checkpoint, which may come from another tool
    /// (no lca metadata, F16/BF16/F64 tensors), and loads its weights.
    /// - Parameters:
    ///   - spec: the model spec; nil takes the checkpoint's `lca.model`.
    ///     When both exist they must describe the same model.
    ///   - loss: the loss; nil takes the checkpoint's `lca.loss`
    ///     (cross-entropy when absent).
    /// - Returns: the model and what the load converted.
    public static func load(checkpoint path: String, spec: String? = nil, loss: Loss? = nil) throws
        -> (model: Model, conversion: CheckpointConversion) {
        let described = try Model.checkpointSpec(path, requested: spec)
        let model = try Model(spec: described.spec, loss: loss ?? described.loss)
        let conversion = try model.loadCheckpoint(path)
        return (model, conversion)
    }

    /// The model to load a checkpoint into: `requested` when given, else
    /// the spec in the checkpoint's metadata (`lca.model`); when both
    /// exist they must describe the same model (an error names both), and
    /// when neither does the error asks for a spec. The loss is the
    /// metadata's, cross-entropy when absent.
    public static func checkpointSpec(_ path: String, requested: String? = nil) throws -> CheckpointSpec {
        var buffer = [CChar](repeating: 0, count: 4096)
        var loss = LCA_LOSS_SOFTMAX_CROSS_ENTROPY
        try buffer.withUnsafeMutableBufferPointer { storage in
            try check(lca_checkpoint_model_spec(path, requested, storage.baseAddress, storage.count, &loss))
        }
        let spec = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return CheckpointSpec(spec: spec, loss: Loss(loss))
    }

    deinit { lca_model_free(handle) }

    /// The spec in canonical form ("784-100-50-10").
    public var spec: String { String(cString: lca_model_spec(handle)) }
    /// The loss the model is trained with.
    public var loss: Loss { Loss(lca_model_loss(handle)) }
    /// Inputs per example.
    public var inputSize: Int { Int(lca_model_input_size(handle)) }
    /// Number of parameters over all tensors.
    public var parameterCount: Int { Int(lca_model_parameter_count(handle)) }

    /// Checks that the data fits the model (features, classes or targets):
    /// the core's one check (`lca_model_check_data`), which the trainer also
    /// makes.
    /// - Throws: `LCAError` `.mismatch` saying what differs.
    public func checkFits(_ data: Dataset) throws {
        try check(lca_model_check_data(handle, data.handle))
    }

    /// The tensor with this name, or nil.
    public func tensor(named name: String) -> TensorInfo? {
        let index = lca_model_find_tensor(handle, name)
        return index < 0 ? nil : tensors[index]
    }

    /// A copy of the flat parameter array (tensor order, row-major); setting
    /// it replaces every parameter (the count must match).
    public var parameters: [Float] {
        get {
            let count = parameterCount
            return Array(UnsafeBufferPointer(start: lca_model_parameters_const(handle), count: count))
        }
        set {
            precondition(newValue.count == parameterCount, "parameter count mismatch")
            let destination = lca_model_parameters(handle)!
            newValue.withUnsafeBufferPointer { source in
                destination.update(from: source.baseAddress!, count: source.count)
            }
        }
    }

    /// He-normal weights and zero biases from the seed's initialisation
    /// stream (the same numbers on every machine).
    public func initialize(seed: UInt64) {
        lca_model_initialize(handle, seed)
    }

    /// Loads parameters from a safetensors checkpoint, as written by lca or
    /// by another tool: every tensor of this model must be in the file
    /// under its name and with its shape (a missing name gives an error
    /// listing the expected and found names and how to rename), as F32
    /// (bit for bit), F16 or BF16 (exact) or F64 (rounded to nearest); a
    /// non-finite or out-of-range value fails naming the tensor. On
    /// failure the parameters are unchanged.
    /// - Returns: the iteration and what was converted.
    @discardableResult
    public func loadCheckpoint(_ path: String) throws -> CheckpointConversion {
        var report = lca_checkpoint_report()
        try check(lca_checkpoint_load_report(path, handle, &report))
        return CheckpointConversion(path: path, iteration: report.iteration,
                                    f16Tensors: Int(report.f16_tensors), bf16Tensors: Int(report.bf16_tensors),
                                    f64Tensors: Int(report.f64_tensors), f64Values: Int(report.f64_values),
                                    f64Rounded: Int(report.f64_rounded))
    }

    /// Saves the parameters as a safetensors checkpoint (PyTorch names,
    /// spec, loss and iteration in the metadata), atomically.
    public func saveCheckpoint(_ path: String, iteration: UInt64) throws {
        try check(lca_checkpoint_save(path, handle, iteration))
    }

    /// Mean loss, and optionally its gradient, of the given parameters on
    /// labelled examples. `inputs` holds `labels.count` rows of `inputSize`
    /// floats.
    public func lossAndGradient(parameters: [Float], inputs: [Float], labels: [Int32],
                                wantGradient: Bool = true) throws -> (loss: Double, gradient: [Float]) {
        let n = labels.count
        guard parameters.count == parameterCount, inputs.count == n * inputSize else {
            throw LCAError.invalid("lossAndGradient: \(parameters.count) parameters and \(inputs.count) inputs do not fit \(n) examples of model \(spec)")
        }
        try check(lca_model_reserve(handle, max(n, 1)))
        var loss = 0.0
        var gradient = [Float](repeating: 0, count: wantGradient ? parameterCount : 0)
        try parameters.withUnsafeBufferPointer { p in
            try inputs.withUnsafeBufferPointer { x in
                try labels.withUnsafeBufferPointer { y in
                    try gradient.withUnsafeMutableBufferPointer { g in
                        try check(lca_model_loss_and_gradient(handle, p.baseAddress, x.baseAddress, y.baseAddress,
                                                              nil, n, &loss, wantGradient ? g.baseAddress : nil))
                    }
                }
            }
        }
        return (loss, gradient)
    }

    /// The LCA of the straight step from parameters `from` to `to` on the
    /// given examples of `data` (all when `indices` is nil), with the
    /// configuration's integrator settings (threshold, sub-interval cap,
    /// evaluation chunk). The model's own parameters are left unchanged.
    public func attribute(from: [Float], to: [Float], data: Dataset, indices: [UInt32]? = nil,
                          configuration: TrainingConfiguration = TrainingConfiguration()) throws -> ViewRecord {
        guard from.count == parameterCount, to.count == parameterCount else {
            throw LCAError(code: .mismatch, message: "attribute: parameter vectors of length \(from.count) and \(to.count), model \(spec) has \(parameterCount)")
        }
        var record = lca_record()
        var view: ViewRecord?
        let count = indices?.count ?? data.count
        let t = tensors.count, groups = configuration.exampleGroups?.count ?? 0
        var tensorLCA = [Double](repeating: 0, count: max(t, 1))
        var tensorFirstOrder = [Double](repeating: 0, count: max(t, 1))
        var tensorCounts = [UInt64](repeating: 0, count: max(3 * t, 1))
        var groupLCA = [Double](repeating: 0, count: max(groups * t, 1))
        var groupLosses = [Double](repeating: 0, count: max(3 * groups, 1))
        var groupFlags = [UInt32](repeating: 0, count: max(groups, 1))
        try configuration.withCConfig(exampleCount: data.count) { config in
            config.lca_units = 0 // per-unit sums are not part of an attribution
            config.lca_group_totals = 0
            try from.withUnsafeBufferPointer { a in
                try to.withUnsafeBufferPointer { b in
                    try (indices ?? []).withUnsafeBufferPointer { i in
                        try tensorLCA.withUnsafeMutableBufferPointer { lca in
                            try tensorFirstOrder.withUnsafeMutableBufferPointer { firstOrder in
                                try tensorCounts.withUnsafeMutableBufferPointer { counts in
                                    try groupLCA.withUnsafeMutableBufferPointer { gl in
                                        try groupLosses.withUnsafeMutableBufferPointer { losses in
                                            try groupFlags.withUnsafeMutableBufferPointer { flags in
                                                try check(lca_attribute_groups(handle, a.baseAddress, b.baseAddress, data.handle,
                                                                               indices == nil ? nil : i.baseAddress, count, &config,
                                                                               &record, lca.baseAddress, firstOrder.baseAddress,
                                                                               counts.baseAddress, gl.baseAddress, losses.baseAddress,
                                                                               flags.baseAddress))
                                                // copy while the buffers are pinned: the record points into them
                                                view = ViewRecord(record.train, tensorCount: t)
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return view!
    }
}
