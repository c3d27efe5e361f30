import Foundation

/// Where a run's examples come from: a named set ("digits",
/// "fashion-mnist"), a folder, or an IDX images file with its labels file.
/// Paths are kept absolute so that a run can be resumed from anywhere.
public struct DataSource: Sendable, Hashable, Codable {
    /// "digits", "fashion-mnist", a folder, or an images file.
    public var source: String
    /// The labels file when `source` is an images file.
    public var labels: String?

    /// Makes a data source; relative paths that exist are made absolute.
    public init(source: String, labels: String? = nil) {
        self.source = DataSource.absolute(source)
        self.labels = labels.map(DataSource.absolute)
    }

    /// Opens the data set.
    public func open() throws -> Dataset {
        try Dataset(source: source, labels: labels)
    }

    /// `path` made absolute when it names an existing file or folder; named
    /// sets ("digits") stay as they are.
    static func absolute(_ path: String) -> String {
        guard !path.hasPrefix("/"), FileManager.default.fileExists(atPath: path) else { return path }
        return URL(fileURLWithPath: path).standardizedFileURL.path
    }
}

/// A learning-rate multiplier for one tensor (0 freezes it).
public struct TensorScale: Sendable, Hashable, Codable {
    /// Tensor name ("fc3.weight").
    public var tensor: String
    /// Multiplier of the learning rate.
    public var scale: Double

    /// Makes a tensor scale.
    public init(tensor: String, scale: Double) {
        self.tensor = tensor
        self.scale = scale
    }
}

/// Everything that determines a training run: written to the run folder's
/// `config.json`, so that `--resume` rebuilds the same trainer.
public struct RunRecipe: Sendable, Hashable, Codable {
    /// The data.
    public var data: DataSource
    /// Model spec ("fc", "64-32-10"); nil = the data's default model (or the
    /// `initCheckpoint`'s spec). Canonical once the run has started.
    public var model: String?
    /// The loss.
    public var loss: Loss
    /// Checkpoint whose weights the run starts from instead of a fresh
    /// initialisation (absolute path).
    public var initCheckpoint: String?
    /// Optimizer, schedule and LCA settings.
    public var configuration: TrainingConfiguration
    /// Learning-rate multipliers, applied in order.
    public var learningRateScales: [TensorScale]
    /// Save a checkpoint, the resume state and the totals every this many
    /// iterations; 0 = only at the start and the end.
    public var saveEvery: Int
    /// Run `epochs` passes over the training split instead of
    /// `configuration.iterations` iterations, when set.
    public var epochs: Int?
    /// What the run started with (data, model, options), set when it
    /// starts; `--resume` refuses a changed input. Nil in a recipe not yet
    /// started, and in the config.json of runs written before it existed.
    public var fingerprint: RunFingerprint?
    /// Loss groups (issue 15): "class" (the labels) or the absolute path of
    /// a file of one group id per example (`ExampleGroups.parse`); nil =
    /// none. The run sets `configuration.exampleGroups` from it, at the
    /// start and on resume (the fingerprint holds a hash of the ids).
    public var groups: String?

    /// A recipe for a network (its spec and loss).
    public init(data: DataSource, network: Network, initCheckpoint: String? = nil,
                configuration: TrainingConfiguration = TrainingConfiguration(),
                learningRateScales: [TensorScale] = [], saveEvery: Int = 0, epochs: Int? = nil) {
        self.init(data: data, model: network.spec, loss: network.loss, initCheckpoint: initCheckpoint,
                  configuration: configuration, learningRateScales: learningRateScales,
                  saveEvery: saveEvery, epochs: epochs)
    }

    /// Makes a recipe.
    public init(data: DataSource, model: String? = nil, loss: Loss = .crossEntropy, initCheckpoint: String? = nil,
                configuration: TrainingConfiguration = TrainingConfiguration(),
                learningRateScales: [TensorScale] = [], saveEvery: Int = 0, epochs: Int? = nil) {
        self.data = data
        self.model = model
        self.loss = loss
        self.initCheckpoint = initCheckpoint.map(DataSource.absolute)
        self.configuration = configuration
        self.learningRateScales = learningRateScales
        self.saveEvery = saveEvery
        self.epochs = epochs
    }
}

/// What a run folder holds, by name.
///
/// - `lca.log`: the binary log (docs/log-format.md)
/// - `config.json`: the resolved `RunRecipe`
/// - `checkpoint-NNNNNN.safetensors`: weights after iteration N (000000 =
///   the initial weights)
/// - `state.safetensors`: the resume state of the last save
/// - `lca-total.safetensors`, `lca-helped.safetensors`: per-parameter Σ LCA
///   and helped counts at the last save
/// - `summary.txt`: the summary table
/// - `lca.lock`: locked (`flock`) while a run writes the folder
///
/// Every file but the log is replaced atomically (`NAME.tmp`, fsync,
/// rename, folder fsync); the log is appended a record per `write(2)`.
public struct RunFolder: Sendable, Hashable {
    /// The folder's path.
    public var path: String

    /// A run folder at `path`.
    public init(path: String) { self.path = path }

    /// `lca.log`.
    public var log: String { path + "/lca.log" }
    /// `config.json`.
    public var config: String { path + "/config.json" }
    /// `state.safetensors`.
    public var state: String { path + "/state.safetensors" }
    /// `lca-total.safetensors`.
    public var totals: String { path + "/lca-total.safetensors" }
    /// `lca-helped.safetensors`.
    public var helped: String { path + "/lca-helped.safetensors" }
    /// `lca-group-total.safetensors` (`--groups-totals`).
    public var groupTotals: String { path + "/lca-group-total.safetensors" }
    /// `summary.txt`.
    public var summary: String { path + "/summary.txt" }
    /// `checkpoint-NNNNNN.safetensors` for an iteration.
    public func checkpoint(iteration: UInt64) -> String {
        path + "/checkpoint-" + String(format: "%06llu", iteration) + ".safetensors"
    }

    /// A new folder name from the clock, `runs/YYYYmmdd-HHMMSS`, with
    /// `-2`, `-3`, … appended when that name is taken.
    public static func timestamped(parent: String = "runs", date: Date = Date()) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.dateFormat = "yyyyMMdd-HHmmss"
        let base = parent + "/" + formatter.string(from: date)
        var candidate = base, suffix = 2
        while FileManager.default.fileExists(atPath: candidate) {
            candidate = base + "-\(suffix)"
            suffix += 1
        }
        return candidate
    }

    /// `lca.lock`: locked (flock) while a run writes the folder.
    public var lock: String { path + "/lca.lock" }

    /// The lca files the folder already holds (`config.json`, `lca.log`,
    /// `state.safetensors`, the totals, `summary.txt`, any
    /// `checkpoint-*.safetensors`), by name; empty for a new folder.
    public var runFiles: [String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else { return [] }
        let fixed: Set<String> = ["lca.log", "config.json", "state.safetensors", "lca-total.safetensors",
                                  "lca-helped.safetensors", "lca-group-total.safetensors", "summary.txt"]
        return names.filter { name in
            fixed.contains(name) || (name.hasPrefix("checkpoint-") && name.hasSuffix(".safetensors"))
        }.sorted()
    }

    /// Removes the temporary files (`NAME.tmp`) a killed run left while
    /// replacing one of its files; the file itself is intact. Called under
    /// the folder's lock.
    func removeStaleTemporaries() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else { return }
        let fixed: Set<String> = ["lca.log", "config.json", "state.safetensors", "lca-total.safetensors",
                                  "lca-helped.safetensors", "lca-group-total.safetensors", "summary.txt"]
        for name in names where name.hasSuffix(".tmp") {
            let base = String(name.dropLast(4))
            if fixed.contains(base) || (base.hasPrefix("checkpoint-") && base.hasSuffix(".safetensors")) {
                try? FileManager.default.removeItem(atPath: path + "/" + name)
            }
        }
    }

    /// True when the folder already holds any lca file (`runFiles`): a
    /// new run never writes over one.
    public var holdsRun: Bool { !runFiles.isEmpty }
}

/// Where a run writes, in any combination (all optional):
///
/// - `folder`: a run folder (`RunFolder`): `lca.log`, `config.json`,
///   checkpoints every `saveEvery` and at the end, the resume state, the
///   totals and `summary.txt`; only a run with a folder can be resumed;
/// - `log`: the binary log at this path, or "-" for standard output (nil:
///   the folder's `lca.log`, or no log without a folder);
/// - `tensorBoard`: TensorBoard event files in this folder, one event per
///   iteration.
public struct RunOutputs: Sendable, Hashable {
    /// The run folder, or nil.
    public var folder: RunFolder?
    /// The log's path ("-" = standard output); nil = the folder's `lca.log`.
    public var log: String?
    /// The TensorBoard folder, or nil.
    public var tensorBoard: String?
    /// When the log file is fsynced (default: at every save).
    public var logSync: LogSync

    /// Makes a set of outputs; the default writes nothing.
    public init(folder: RunFolder? = nil, log: String? = nil, tensorBoard: String? = nil,
                logSync: LogSync = .checkpoint) {
        self.folder = folder
        self.log = log
        self.tensorBoard = tensorBoard
        self.logSync = logSync
    }
}

/// What a run's callback may do between two iterations: the changes take
/// effect at the next step. Learning-rate changes made here are not part of
/// the recipe (`config.json`) or the resume state: a resumed run starts
/// from the recipe's `learningRateScales`, so a script that froze a tensor
/// during the run freezes it again through the resumed run's `control`.
public final class RunControl {
    let trainer: Trainer
    /// True once `stop()` was called.
    public private(set) var stopRequested = false

    init(trainer: Trainer) { self.trainer = trainer }

    /// Ends the run after this iteration (the final save still happens).
    public func stop() { stopRequested = true }
    /// Freezes a tensor (learning-rate scale 0) from the next step on.
    public func freeze(_ tensor: String) throws { try trainer.setLearningRateScale(tensor: tensor, scale: 0) }
    /// Scales a tensor's learning rate from the next step on.
    public func setLearningRateScale(_ tensor: String, _ scale: Double) throws {
        try trainer.setLearningRateScale(tensor: tensor, scale: scale)
    }
    /// The current parameters (a copy).
    public var parameters: [Float] { trainer.model.parameters }
}

/// A whole training run, the one way to run one: builds the model, data and
/// trainer from a recipe, steps through the iterations, writes the outputs
/// it was given (`RunOutputs`: run folder, log, TensorBoard) and
/// accumulates the summary; a callback sees every iteration's record in
/// place and may stop the run, freeze a tensor or rescale its learning
/// rate. `lca train` is this type with its flags mapped to a recipe and
/// outputs. For one step at a time, use `Trainer`.
///
/// The log is written by the core (`lca_trainer_set_log`): each record
/// goes from the core's arrays to the file; the summary, TensorBoard and
/// the callback read the same record in place (`RecordView`), and nothing
/// is copied into Swift arrays unless the callback asks (`copy()`).
///
/// Why a callback and not an `AsyncSequence`: the core's step is
/// synchronous, CPU-bound work on the caller's thread, and what a script
/// does between iterations (freeze, rescale, stop) must take effect exactly
/// at the next step. A callback runs between two steps on the same thread,
/// so that holds by construction, with no buffering, no task hops and no
/// need for the trainer (a non-thread-safe C handle) to be `Sendable`.
/// Wrap `run` in a `Task` to keep it off the main actor.
///
/// ```swift
/// var configuration = TrainingConfiguration()
/// configuration.iterations = 35
/// let run = try TrainingRun(recipe: RunRecipe(data: DataSource(source: "digits"), network: .mlp([64, 32, 10]),
///                                             configuration: configuration),
///                           outputs: RunOutputs(folder: RunFolder(path: "runs/try"), tensorBoard: "tb/try"))
/// let summary = try run.run { record, control in
///     if record.iteration == 10 { try control.freeze("fc2.weight") }
///     if record.train.lossAfter < 0.5 { control.stop() }
/// }
/// print(summary.table)
/// ```
/// and later, `try TrainingRun(resuming: RunFolder(path: "runs/try")).run()`.
public final class TrainingRun {
    /// The recipe, resolved (canonical spec, absolute paths, iterations).
    public let recipe: RunRecipe
    /// The outputs (for a resumed run: its folder and log, and the
    /// TensorBoard folder given).
    public let outputs: RunOutputs
    /// The model being trained.
    public let model: Model
    /// The data.
    public let data: Dataset
    /// The trainer.
    public let trainer: Trainer
    /// Freeze or rescale tensors before `run`, as the callback does during it.
    public let control: RunControl
    /// The summary so far.
    public private(set) var summary: RunSummary
    /// What loading `recipe.initCheckpoint` converted (F16, BF16 or F64
    /// tensors to F32), for a notice; nil without an initial checkpoint or
    /// on a resumed run.
    public let initialConversion: CheckpointConversion?
    private var log: LogWriter?
    private var lock: RunFolderLock?
    private let resumed: Bool
    private var started = false

    /// The run folder, or nil.
    public var folder: RunFolder? { outputs.folder }
    /// Where the log goes: a path, "-" for standard output, or nil for none.
    public var logPath: String? { outputs.log ?? outputs.folder?.log }

    /// Starts a new run: resolves the recipe, creates the folder (if any)
    /// and locks it, writes `config.json` (with the run's fingerprint) and
    /// the initial checkpoint, opens the log, and writes the resume state
    /// and totals of iteration 0, so that the folder can be resumed however
    /// the run ends from then on.
    /// - Throws: `LCAError` with code `.state` when the folder already holds
    ///   a run or any lca file (nothing is overwritten: resume it, or choose
    ///   another folder) or another process holds its lock; `.mismatch`
    ///   when the model does not fit the data.
    public init(recipe: RunRecipe, outputs: RunOutputs = RunOutputs()) throws {
        if let folder = outputs.folder { try TrainingRun.checkNew(folder) }
        var recipe = recipe
        let data = try recipe.data.open()
        // The model: explicit spec, else the initial checkpoint's, else the
        // data's default. A checkpoint without lca.model metadata (saved by
        // PyTorch) needs the explicit spec; one with it must agree.
        var spec = recipe.model
        var loss = recipe.loss
        if let initial = recipe.initCheckpoint {
            let described = try Model.checkpointSpec(initial, requested: recipe.model)
            if spec == nil { loss = described.loss }
            spec = described.spec
        }
        let model = try Model(spec: spec ?? data.defaultModelSpec, loss: loss)
        try model.checkFits(data)
        if let initial = recipe.initCheckpoint {
            initialConversion = try model.loadCheckpoint(initial)
        } else {
            initialConversion = nil
            model.initialize(seed: recipe.configuration.seed)
        }
        recipe.model = model.spec
        recipe.loss = model.loss
        try TrainingRun.resolveGroups(&recipe, data: data)
        if let epochs = recipe.epochs {
            let training = try Trainer.trainingCount(model: model, data: data, configuration: recipe.configuration)
            let batchSize = recipe.configuration.batchSize
            guard let iterations = TrainingConfiguration.checkedIterations(
                epochs: epochs, trainingCount: training, batchSize: batchSize) else {
                throw LCAError(code: .invalidArgument, kind: .tooManyIterations,
                               message: "\(epochs) epochs × \(training / batchSize + (training % batchSize > 0 ? 1 : 0)) batches per epoch "
                               + "is more iterations than a 64-bit count holds (at most \(Int.max))")
            }
            recipe.configuration.iterations = iterations
        }
        let trainer = try Trainer(model: model, data: data, configuration: recipe.configuration)
        for scale in recipe.learningRateScales {
            try trainer.setLearningRateScale(tensor: scale.tensor, scale: scale.scale)
        }
        var lock: RunFolderLock?
        if let folder = outputs.folder {
            recipe.fingerprint = nil
            recipe.fingerprint = try RunFingerprint.of(recipe: recipe, data: data, model: model)
            try TrainingRun.createFolder(folder.path)
            lock = try RunFolderLock(folder: folder)
            // checked again under the lock: another run may have started here meanwhile
            try TrainingRun.checkNew(folder)
            try TrainingRun.writeJSON(recipe, to: folder.config)
            try model.saveCheckpoint(folder.checkpoint(iteration: 0), iteration: 0)
        }
        self.recipe = recipe
        self.outputs = outputs
        self.model = model
        self.data = data
        self.trainer = trainer
        self.control = RunControl(trainer: trainer)
        self.summary = RunSummary(trainer: trainer)
        self.resumed = false
        self.lock = lock
        self.log = try logPath.map { try LogWriter(path: $0, trainer: trainer) }
        log?.setSyncEveryRecord(outputs.logSync == .record)
        // The resume state (and totals) of iteration 0, written last: from
        // here on the folder can be resumed whenever the run is killed.
        try save()
    }

    /// The recipe's loss groups into its configuration (`groups` "class"
    /// or a file; its path made absolute); the per-group totals need them.
    static func resolveGroups(_ recipe: inout RunRecipe, data: Dataset) throws {
        guard let argument = recipe.groups else {
            recipe.configuration.exampleGroups = nil
            if recipe.configuration.lcaGroupTotals {
                throw LCAError.invalid("--groups-totals needs --groups")
            }
            return
        }
        guard recipe.configuration.lca else { throw LCAError.invalid("--groups needs LCA (not --no-lca)") }
        if argument != "class" { recipe.groups = DataSource.absolute(argument) }
        recipe.configuration.exampleGroups = try ExampleGroups.parse(recipe.groups!, data: data)
    }

    /// Refuses a folder that already holds lca files.
    static func checkNew(_ folder: RunFolder) throws {
        let files = folder.runFiles
        guard !files.isEmpty else { return }
        let listed = files.prefix(3).joined(separator: ", ") + (files.count > 3 ? ", …" : "")
        if FileManager.default.fileExists(atPath: folder.state) && FileManager.default.fileExists(atPath: folder.config) {
            throw LCAError(code: .state, message: "\(folder.path): already holds a run (\(listed)); continue it with lca train --resume \(folder.path), or choose another folder")
        }
        throw LCAError(code: .state, message: "\(folder.path): already holds lca files (\(listed)) and no resumable run; nothing is overwritten: remove them or choose another folder")
    }

    /// Continues the run in `folder` from its `state.safetensors`, with the
    /// recipe of its `config.json`. The log is cut back to the state's
    /// iteration and appended to; the result is byte for byte the run that
    /// never stopped. The summary covers the whole run, so the log's
    /// records up to the state are read first.
    /// - Parameter tensorBoard: also write TensorBoard events of the
    ///   iterations still to run into this folder.
    /// - Parameter writes: false for a data-parallel rank other than 0
    ///   (docs/mpi.md): the folder is only read (config, state), neither
    ///   locked nor written, and the run has no outputs.
    /// - Throws: `LCAError` naming the file and byte offset when the log is
    ///   damaged or holds fewer records than the state's iteration; `.state`
    ///   when another process holds the folder's lock or there is no resume
    ///   state; `.mismatch` naming what changed when the data, the model or
    ///   the options differ from the fingerprint in `config.json`.
    public init(resuming folder: RunFolder, tensorBoard: String? = nil, logSync: LogSync = .checkpoint,
                writes: Bool = true) throws {
        let lock = writes ? try RunFolderLock(folder: folder) : nil
        if writes { folder.removeStaleTemporaries() }
        if FileManager.default.fileExists(atPath: folder.config), !FileManager.default.fileExists(atPath: folder.state) {
            throw LCAError(code: .state, message: "no resume state: the run was stopped before its start was saved, so there is nothing to continue; remove the folder and start the run again", path: folder.state)
        }
        var recipe: RunRecipe
        do {
            recipe = try JSONFormat.decoder().decode(RunRecipe.self, from: Data(contentsOf: URL(fileURLWithPath: folder.config)))
        } catch let error as DecodingError {
            throw LCAError(code: .format, message: "not a run configuration: \(error)", path: folder.config)
        } catch {
            throw LCAError(code: .io, message: "cannot read: \(LCAError.fileSystemText(error, path: folder.config))", path: folder.config)
        }
        guard let spec = recipe.model else {
            throw LCAError(code: .format, message: "no \"model\" recorded", path: folder.config)
        }
        let data = try recipe.data.open()
        let model = try Model(spec: spec, loss: recipe.loss)
        try TrainingRun.resolveGroups(&recipe, data: data)
        if let stored = recipe.fingerprint {
            try RunFingerprint.of(recipe: recipe, data: data, model: model)
                .check(against: stored, config: folder.config, recipe: recipe)
        }
        let trainer = try Trainer(model: model, data: data, configuration: recipe.configuration)
        for scale in recipe.learningRateScales {
            try trainer.setLearningRateScale(tensor: scale.tensor, scale: scale.scale)
        }
        try trainer.loadState(from: folder.state)
        // The records before the state, read before the log is cut back.
        var summary = RunSummary(trainer: trainer)
        if trainer.iteration > 0, writes {
            let earlier = try LogStream(path: folder.log)
            while earlier.recordsRead < Int(trainer.iteration), let record = try earlier.next() {
                summary.add(record)
            }
            if earlier.recordsRead < Int(trainer.iteration) {
                throw LCAError.log(.missingRecords, path: folder.log, offset: earlier.offset,
                                   "the log ends after \(earlier.recordsRead) complete records, but the resume state is at iteration \(trainer.iteration)")
            }
        }
        self.recipe = recipe
        self.outputs = writes ? RunOutputs(folder: folder, log: folder.log, tensorBoard: tensorBoard, logSync: logSync)
                              : RunOutputs()
        self.model = model
        self.data = data
        self.trainer = trainer
        self.control = RunControl(trainer: trainer)
        self.summary = summary
        self.initialConversion = nil
        self.resumed = true
        self.lock = lock
        self.log = writes ? try LogWriter(resuming: folder.log, trainer: trainer) : nil
        log?.setSyncEveryRecord(logSync == .record)
    }

    /// Iterations the run is meant to take in all.
    public var totalIterations: Int { recipe.configuration.iterations }

    /// Runs the remaining iterations: the core writes each record to the
    /// log; TensorBoard gets its event; the callback sees the record; the
    /// folder gets a save at every `saveEvery` and at the end.
    /// - Parameter onIteration: called after every iteration with the
    ///   record (borrowed: valid during the call; `copy()` keeps it) and
    ///   the run's control (stop, freeze, rescale).
    /// - Returns: the finished summary (also written to `summary.txt`).
    ///   `run` runs once; `control.stop()` before it leaves the run at its
    ///   first (or resumed) iteration, saved.
    /// - Throws: the first failure; when the callback or TensorBoard fails,
    ///   the run stops after that iteration and the folder is saved first.
    ///   `.state` when called a second time (the log is closed: continue a
    ///   run folder with `init(resuming:)`).
    @discardableResult
    public func run(_ onIteration: (RecordView, RunControl) throws -> Void = { _, _ in }) throws -> RunSummary {
        guard !started else {
            throw LCAError(code: .state, message: "TrainingRun.run: the run has already run; continue a run folder with TrainingRun(resuming:)")
        }
        started = true
        let clock = ContinuousClock()
        let started = clock.now
        let saveEvery = UInt64(max(recipe.saveEvery, 0))
        var lastSaved: UInt64? = trainer.iteration  // saved by init (start or resume state)
        let board = try outputs.tensorBoard.map {
            try TensorBoardWriter(directory: $0, tensors: model.tensors, groups: recipe.configuration.exampleGroups?.names ?? [])
        }
        let units = recipe.configuration.lcaUnits ? model.unitGroups : []
        var failure: Error?
        while trainer.iteration < UInt64(totalIterations), !control.stopRequested {
            do {
                try trainer.advance()
            } catch let error as LCAError where error.code == .numeric {
                throw diverged(error, lastSaved: lastSaved)
            }
            let record = RecordView(r: trainer.record, tensors: model.tensors, unitGroups: units)
            summary.add(record)
            do {
                try board?.write(record)
                try onIteration(record, control)
            } catch {
                failure = error
            }
            if saveEvery > 0, record.iteration % saveEvery == 0 {
                try save()
                lastSaved = record.iteration
            }
            if failure != nil { break }
        }
        if lastSaved != trainer.iteration || folder.map({ !FileManager.default.fileExists(atPath: $0.state) }) == true {
            try save()
        }
        try log?.close()
        log = nil
        if let failure { throw failure }
        try board?.close()
        let elapsed = started.duration(to: clock.now)
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        summary.finish(wallSeconds: seconds, coreMemoryBytes: trainer.memoryBytes)
        if let folder {
            try TrainingRun.write(summary.table, to: folder.summary)
        }
        lock = nil  // the folder is complete: another process may resume or read it
        return summary
    }

    /// The core's divergence message (iteration and tensor), with what is
    /// kept and what the user can do. The parameters are no longer finite,
    /// so nothing is saved: the folder keeps its last save.
    func diverged(_ error: LCAError, lastSaved: UInt64?) -> LCAError {
        try? log?.close()
        log = nil
        var message = error.message
        if let folder, let lastSaved {
            message += "; \(folder.log) is valid up to the previous iteration and the folder keeps its save of iteration \(lastSaved) (\(folder.checkpoint(iteration: lastSaved))). --resume would repeat the same steps and diverge again: start a new run with a smaller --lr (or another optimizer), from those weights with --init \(folder.checkpoint(iteration: lastSaved)) or from the start"
        } else {
            message += "; try a smaller --lr (or another optimizer)"
        }
        return LCAError(code: .numeric, message: message)
    }

    /// Writes the checkpoint of the current iteration, the resume state and
    /// the totals into the run folder (nothing without a folder).
    public func save() throws {
        guard let folder else { return }
        let iteration = trainer.iteration
        // the log on disk first, so that the state never runs ahead of it
        if outputs.logSync != .never { try log?.sync() }
        try model.saveCheckpoint(folder.checkpoint(iteration: iteration), iteration: iteration)
        try trainer.saveState(to: folder.state)
        if recipe.configuration.lca {
            try trainer.saveTotals(totalsPath: folder.totals, helpedPath: folder.helped)
        }
        if recipe.configuration.lcaGroupTotals {
            try trainer.saveGroupTotals(to: folder.groupTotals)
        }
    }

    static func createFolder(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw LCAError(code: .io, message: "\(path): cannot create the run folder: \(LCAError.fileSystemText(error, path: path, writing: true))")
        }
    }

    static func writeJSON<T: Encodable>(_ value: T, to path: String) throws {
        let data = try JSONFormat.encoder().encode(value)
        try write(String(decoding: data, as: UTF8.self) + "\n", to: path)
    }

    /// Writes a text file atomically (temporary file, fsync, rename).
    static func write(_ text: String, to path: String) throws {
        try AtomicFile.write(Data(text.utf8), to: path)
    }
}
