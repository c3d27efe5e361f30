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

    /// True when the folder already holds a run (its `config.json` or
    /// `lca.log`).
    public var holdsRun: Bool {
        FileManager.default.fileExists(atPath: config) || FileManager.default.fileExists(atPath: log)
    }
}

/// A whole training run as `lca train` does it: builds the model, data and
/// trainer from a recipe, writes the run folder (config, checkpoints,
/// state, totals, summary) and the log, steps through the iterations and
/// accumulates the summary.
///
/// ```swift
/// let run = try TrainingRun(recipe: RunRecipe(data: DataSource(source: "digits")),
///                           folder: RunFolder(path: "runs/try"))
/// let summary = try run.run()
/// print(summary.table)
/// ```
public final class TrainingRun {
    /// The recipe, resolved (canonical spec, absolute paths, iterations).
    public let recipe: RunRecipe
    /// The run folder, or nil when only a log is written.
    public let folder: RunFolder?
    /// Where the log goes: a path, "-" for standard output, or nil for none.
    public let logPath: String?
    /// The model being trained.
    public let model: Model
    /// The data.
    public let data: Dataset
    /// The trainer.
    public let trainer: Trainer
    /// The summary so far.
    public private(set) var summary: RunSummary
    private let log: LogWriter?
    private let resumed: Bool

    /// Starts a new run: resolves the recipe, creates the folder (if any),
    /// writes `config.json` and the initial checkpoint, opens the log.
    /// - Parameters:
    ///   - folder: the run folder to create, or nil.
    ///   - logPath: the log's path; nil means `folder`'s `lca.log` (no log
    ///     when there is no folder either); "-" is standard output.
    /// - Throws: `LCAError` with code `.state` when `folder` already holds a
    ///   run (resume it, or choose another folder).
    public init(recipe: RunRecipe, folder: RunFolder?, logPath: String? = nil) throws {
        if let folder, folder.holdsRun {
            throw LCAError(code: .state, message: "\(folder.path): already holds a run; continue it with --resume \(folder.path) or choose another folder")
        }
        var recipe = recipe
        let data = try recipe.data.open()
        // The model: explicit spec, else the initial checkpoint's, else the data's default.
        var spec = recipe.model
        var loss = recipe.loss
        if spec == nil, let initial = recipe.initCheckpoint {
            let described = try Model.readSpec(checkpoint: initial)
            spec = described.spec
            loss = described.loss
        }
        let model = try Model(spec: spec ?? data.defaultModelSpec, loss: loss)
        if let initial = recipe.initCheckpoint {
            try model.loadCheckpoint(initial)
        } else {
            model.initialize(seed: recipe.configuration.seed)
        }
        guard model.inputSize == data.features else {
            throw LCAError(code: .mismatch, message: "data \(data.source) has \(data.features) features per example, but model \(model.spec) takes \(model.inputSize) inputs")
        }
        recipe.model = model.spec
        recipe.loss = model.loss
        if let epochs = recipe.epochs {
            let training = try Trainer.trainingCount(model: model, data: data, configuration: recipe.configuration)
            recipe.configuration.iterations = TrainingConfiguration.iterations(
                epochs: epochs, trainingCount: training, batchSize: recipe.configuration.batchSize)
        }
        let trainer = try Trainer(model: model, data: data, configuration: recipe.configuration)
        for scale in recipe.learningRateScales {
            try trainer.setLearningRateScale(tensor: scale.tensor, scale: scale.scale)
        }
        if let folder {
            try TrainingRun.createFolder(folder.path)
            try TrainingRun.writeJSON(recipe, to: folder.config)
            try model.saveCheckpoint(folder.checkpoint(iteration: 0), iteration: 0)
        }
        let resolvedLog = logPath ?? folder?.log
        self.recipe = recipe
        self.folder = folder
        self.logPath = resolvedLog
        self.model = model
        self.data = data
        self.trainer = trainer
        self.log = try resolvedLog.map { try LogWriter(path: $0, trainer: trainer) }
        self.summary = RunSummary(trainer: trainer)
        self.resumed = false
    }

    /// Continues the run in `folder` from its `state.safetensors`, with the
    /// recipe of its `config.json`. The log is cut back to the state's
    /// iteration and appended to; the result is byte for byte the run that
    /// never stopped.
    public init(resuming folder: RunFolder) throws {
        let recipe: RunRecipe
        do {
            recipe = try JSONFormat.decoder().decode(RunRecipe.self, from: Data(contentsOf: URL(fileURLWithPath: folder.config)))
        } catch let error as DecodingError {
            throw LCAError(code: .format, message: "\(folder.config): not a run configuration: \(error)")
        } catch {
            throw LCAError(code: .io, message: "\(folder.config): cannot read: \(error.localizedDescription)")
        }
        guard let spec = recipe.model else {
            throw LCAError(code: .format, message: "\(folder.config): no \"model\" recorded")
        }
        let data = try recipe.data.open()
        let model = try Model(spec: spec, loss: recipe.loss)
        let trainer = try Trainer(model: model, data: data, configuration: recipe.configuration)
        for scale in recipe.learningRateScales {
            try trainer.setLearningRateScale(tensor: scale.tensor, scale: scale.scale)
        }
        try trainer.loadState(from: folder.state)
        self.recipe = recipe
        self.folder = folder
        self.logPath = folder.log
        self.model = model
        self.data = data
        self.trainer = trainer
        self.log = try LogWriter(resuming: folder.log, trainer: trainer)
        // The summary covers the whole run: the records already in the log
        // (cut back to the state) come first.
        var summary = RunSummary(trainer: trainer)
        if trainer.iteration > 0, let earlier = try? LogReader(path: folder.log) {
            for record in earlier.records.prefix(Int(trainer.iteration)) { summary.add(record) }
        }
        self.summary = summary
        self.resumed = true
    }

    /// Iterations the run is meant to take in all.
    public var totalIterations: Int { recipe.configuration.iterations }

    /// Runs the remaining iterations, writing each record to the log and
    /// saving at every `saveEvery` and at the end.
    /// - Parameters:
    ///   - progress: called after every iteration with its record.
    ///   - shouldStop: polled before every iteration; true ends the run
    ///     early (the final save still happens).
    /// - Returns: the finished summary (also written to `summary.txt`).
    @discardableResult
    public func run(progress: (IterationRecord) -> Void = { _ in },
                    shouldStop: () -> Bool = { false }) throws -> RunSummary {
        let clock = ContinuousClock()
        let started = clock.now
        let saveEvery = UInt64(max(recipe.saveEvery, 0))
        var lastSaved: UInt64? = resumed ? trainer.iteration : nil
        while trainer.iteration < UInt64(totalIterations), !shouldStop() {
            let record = try trainer.step()
            try log?.write(record)
            summary.add(record)
            progress(record)
            if saveEvery > 0, record.iteration % saveEvery == 0 {
                try save()
                lastSaved = record.iteration
            }
        }
        if lastSaved != trainer.iteration || folder.map({ !FileManager.default.fileExists(atPath: $0.state) }) == true {
            try save()
        }
        try log?.close()
        let elapsed = started.duration(to: clock.now)
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        summary.finish(wallSeconds: seconds, coreMemoryBytes: trainer.memoryBytes)
        if let folder {
            try TrainingRun.write(summary.table, to: folder.summary)
        }
        return summary
    }

    /// Writes the checkpoint of the current iteration, the resume state and
    /// the totals into the run folder (nothing without a folder).
    public func save() throws {
        guard let folder else { return }
        let iteration = trainer.iteration
        try model.saveCheckpoint(folder.checkpoint(iteration: iteration), iteration: iteration)
        try trainer.saveState(to: folder.state)
        if recipe.configuration.lca {
            try trainer.saveTotals(totalsPath: folder.totals, helpedPath: folder.helped)
        }
    }

    static func createFolder(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw LCAError(code: .io, message: "\(path): cannot create the run folder: \(error.localizedDescription)")
        }
    }

    static func writeJSON<T: Encodable>(_ value: T, to path: String) throws {
        let data = try JSONFormat.encoder().encode(value)
        try write(String(decoding: data, as: UTF8.self) + "\n", to: path)
    }

    static func write(_ text: String, to path: String) throws {
        do {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            throw LCAError(code: .io, message: "\(path): cannot write: \(error.localizedDescription)")
        }
    }
}
