internal import CLCA

/// Trains a model on a data set and measures the LCA of every step.
///
/// The step-by-step API: `TrainingRun` runs whole runs (log, run folder,
/// TensorBoard, a callback) on top of it. The trainer owns every buffer it
/// needs (sized once, up front); `step()` allocates nothing in the core and
/// copies the record into Swift values. With a `LogWriter` attached, each
/// step's record is written to the log by the core itself.
///
/// ```swift
/// let model = try Model(spec: "64-32-10")
/// model.initialize(seed: 1)
/// var configuration = TrainingConfiguration()
/// configuration.iterations = 35
/// let trainer = try Trainer(model: model, data: try Dataset(source: "digits"),
///                           configuration: configuration)
/// for _ in 0..<configuration.iterations {
///     let record = try trainer.step()
///     print(record.iteration, record.train.lcaTotal, record.train.residual)
/// }
/// ```
public final class Trainer {
    let handle: OpaquePointer
    /// The core's record of the last step (its arrays point into the
    /// trainer), at a stable address for borrowed views.
    let record: UnsafeMutablePointer<lca_record>

    /// The model being trained (in place).
    public let model: Model
    /// The data set the training and validation splits come from.
    public let data: Dataset
    /// The configuration the trainer was made with.
    public let configuration: TrainingConfiguration

    /// Makes a trainer for the model's current parameters: initialise them
    /// or load a checkpoint first. Splits the data (validation held out by
    /// seed) and allocates every buffer.
    public init(model: Model, data: Dataset, configuration: TrainingConfiguration) throws {
        var pointer: OpaquePointer?
        try configuration.withCConfig(exampleCount: data.count) { config in
            try check(lca_trainer_new(&pointer, model.handle, data.handle, &config))
        }
        handle = pointer!
        record = .allocate(capacity: 1)
        record.initialize(to: lca_record())
        self.model = model
        self.data = data
        self.configuration = configuration
    }

    deinit {
        lca_trainer_free(handle)
        record.deallocate()
    }

    /// The number of training examples `configuration` leaves in `data`
    /// after the validation split, as the core computes it.
    public static func trainingCount(model: Model, data: Dataset, configuration: TrainingConfiguration) throws -> Int {
        // The core's split arithmetic, without a trainer: a probe trainer allocates the
        // model's whole training state, and a model too large for memory would be refused
        // with the probe's figure (no LCA) instead of the run's.
        let held = lca_validation_size(data.count, try configuration.cConfig(exampleCount: data.count).validation)
        if held < data.count { return data.count - held }
        // no training examples left: the probe reports it as the core words it
        var probe = configuration
        probe.iterations = max(probe.iterations, 1)
        probe.lca = false
        probe.lcaValidationView = false
        return try Trainer(model: model, data: data, configuration: probe).trainingCount
    }

    /// Runs one iteration: a minibatch step, then the LCA of that step.
    /// - Returns: the record, copied into Swift values (`TrainingRun`'s
    ///   callback reads it in place instead).
    public func step() throws -> IterationRecord {
        try advance()
        return IterationRecord(record.pointee, tensorCount: model.tensors.count,
                               unitCount: configuration.lcaUnits ? model.unitCount : 0)
    }

    /// One iteration, its record left in `record` (and written to the
    /// attached log by the core).
    func advance() throws {
        try check(lca_trainer_step(handle, record))
    }

    /// Examples per evaluation chunk, as the core resolved it (from
    /// `memoryBudget` when `evalChunk` is 0; at most `accumulationUnit`).
    public var evaluationChunk: Int { Int(lca_trainer_config(handle).pointee.eval_chunk) }

    /// Examples per accumulation unit: what the results' bytes depend on
    /// (`bnGroup` for batch-norm nets, else 512), unlike the chunk.
    public var accumulationUnit: Int { Int(lca_trainer_accumulation_unit(handle)) }

    /// Iterations completed so far (also after `loadState(from:)`).
    public var iteration: UInt64 { lca_trainer_iteration(handle) }
    /// Size of the training split.
    public var trainingCount: Int { Int(lca_trainer_training_count(handle)) }
    /// Size of the validation split (0 when none).
    public var validationCount: Int { Int(lca_trainer_validation_count(handle)) }
    /// Size of the set whose loss LCA allocates (the training split or the
    /// LCA subset).
    public var evaluationCount: Int { Int(lca_trainer_evaluation_count(handle)) }
    /// Bytes the core allocated for this trainer (parameters, optimizer
    /// state, LCA vectors, workspace).
    public var memoryBytes: Int { Int(lca_trainer_memory_bytes(handle)) }
    /// Where the memory goes (docs/memory.md).
    public var memoryUse: MemoryUse {
        var use = lca_memory_use()
        lca_trainer_memory_use(handle, &use)
        return MemoryUse(dataBytes: Int(use.data_bytes), parameterBytes: Int(use.parameter_bytes),
                         accumulatorBytes: Int(use.accumulator_bytes),
                         workspaceBytes: Int(use.workspace_bytes), workers: Int(use.workers),
                         evalChunk: Int(use.eval_chunk), trainChunk: Int(use.train_chunk),
                         memoryBudget: Int(use.memory_budget),
                         activations: use.activations == LCA_ACTIVATIONS_KEPT ? "kept"
                             : use.activations == LCA_ACTIVATIONS_RECOMPUTED ? "recomputed" : "all",
                         keepAllBudget: Int(use.keep_all_budget),
                         firstLayerBytes: Int(use.first_layer_bytes))
    }
    /// Iterations in one pass over the training split: ⌈training / batch⌉.
    public var iterationsPerEpoch: Int {
        let batch = max(configuration.batchSize, 1)
        return (trainingCount + batch - 1) / batch
    }

    /// Sets a learning-rate multiplier for one tensor from the next step on;
    /// 0 freezes it.
    public func setLearningRateScale(tensor name: String, scale: Double) throws {
        try check(lca_trainer_set_tensor_lr_scale(handle, name, scale))
    }

    /// Per-parameter run totals Σ_t LCA_{t,i} (flat, tensor order).
    public var lcaTotals: [Double] {
        Array(UnsafeBufferPointer(start: lca_trainer_lca_totals(handle), count: model.parameterCount))
    }

    /// Saves everything a later `loadState(from:)` needs to continue with
    /// the same bytes (parameters, optimizer state, totals, iteration).
    public func saveState(to path: String) throws {
        try check(lca_trainer_save_state(handle, path))
    }

    /// Restores a state saved by a trainer made with the same model, data
    /// and configuration.
    public func loadState(from path: String) throws {
        try check(lca_trainer_load_state(handle, path))
    }

    /// Per-parameter per-group run totals (G · P, group-major: group g's
    /// Σ_t LCA at `g * parameterCount + i`), with `lcaGroupTotals`; else empty.
    public var groupTotals: [Double] {
        guard let totals = lca_trainer_group_totals(handle), let groups = configuration.exampleGroups else { return [] }
        return Array(UnsafeBufferPointer(start: totals, count: groups.count * model.parameterCount))
    }

    /// Examples of each loss group in the evaluation set (`validation`
    /// false) or the validation split; empty without groups.
    public func groupExamples(validation: Bool = false) -> [Int] {
        guard let counts = lca_trainer_group_examples(handle, validation ? 1 : 0), let groups = configuration.exampleGroups else { return [] }
        return UnsafeBufferPointer(start: counts, count: groups.count).map { Int($0) }
    }

    /// Writes the per-group totals (`lcaGroupTotals`) as one safetensors
    /// file of F64 tensors named `<tensor>@<group>` ("fc1.weight@3").
    public func saveGroupTotals(to path: String) throws {
        try check(lca_group_totals_save(path, handle))
    }

    /// Writes the per-parameter LCA totals (F64) and helped counts (U32) as
    /// two safetensors files named like the model's tensors.
    public func saveTotals(totalsPath: String, helpedPath: String) throws {
        try check(lca_totals_save(totalsPath, helpedPath, handle))
    }
}
