import Foundation

/// A network architecture as a value: the model spec the core builds, and
/// the loss. `Sendable`, so a sweep can hand networks to several tasks.
///
/// ```swift
/// let mlp = Network(input: 64, layers: [.dense(32), .dense(10)])   // "64-32-10"
/// let paper = Network(spec: "fc")                                  // 784-100-50-10
/// ```
public struct Network: Sendable, Hashable, Codable, CustomStringConvertible {
    /// One layer of a network built from layers.
    public enum Layer: Sendable, Hashable, Codable {
        /// A dense layer with this many output units; ReLU follows every
        /// dense layer but the last.
        case dense(Int)
    }

    /// The model spec handed to the core ("64-32-10", "fc").
    public var spec: String
    /// The loss the network is trained on.
    public var loss: Loss

    /// A network from a spec string: "fc" (the paper's 784-100-50-10 MLP)
    /// or layer widths joined by "-". Checked when a model is built.
    public init(spec: String, loss: Loss = .crossEntropy) {
        self.spec = spec
        self.loss = loss
    }

    /// A network from its input width and layers.
    public init(input: Int, layers: [Layer], loss: Loss = .crossEntropy) {
        let widths = [input] + layers.map { layer -> Int in
            switch layer { case .dense(let units): return units }
        }
        self.init(spec: widths.map(String.init).joined(separator: "-"), loss: loss)
    }

    /// The paper's MNIST net: 784 → 100 → 50 → 10, ReLU, 84,060 parameters.
    public static let paperFC = Network(spec: "fc")

    /// Builds the model, with He-normal weights from `seed`.
    public func makeModel(seed: UInt64 = 1) throws -> Model {
        let model = try Model(spec: spec, loss: loss)
        model.initialize(seed: seed)
        return model
    }

    /// The spec.
    public var description: String { spec }
}

extension Dataset {
    /// The embedded UCI 8×8 digits (1,797 images, 64 pixels, 10 classes).
    public static func digits() throws -> Dataset { try Dataset(source: "digits") }
    /// Debian's Fashion-MNIST training set (`apt-get install dataset-fashion-mnist`).
    public static func fashionMNIST() throws -> Dataset { try Dataset(source: "fashion-mnist") }
    /// MNIST-format IDX files (plain or gzip).
    public static func idx(images: String, labels: String) throws -> Dataset {
        try Dataset(source: images, labels: labels)
    }
}

/// One iteration as an experiment sees it: the record, with per-tensor LCA
/// by name.
public struct Iteration: Sendable {
    /// The record (the same values the log holds).
    public let record: IterationRecord
    /// The model's tensors, in record order.
    public let tensors: [TensorInfo]
    /// The unit groups of `record.train.unitLCA` (empty without per-unit views).
    public let unitGroups: [UnitGroup]

    /// The iteration number (1-based).
    public var number: UInt64 { record.iteration }

    /// The iteration's LCA of the tensor with this name (training view), or nil.
    public subscript(lca tensor: String) -> Double? {
        tensors.firstIndex { $0.name == tensor }.map { record.train.tensorLCA[$0] }
    }

    /// The iteration's LCA per tensor name (training view).
    public var lcaByTensor: [String: Double] {
        Dictionary(uniqueKeysWithValues: zip(tensors.map(\.name), record.train.tensorLCA))
    }

    /// The per-unit LCA of one layer ("fc1"), when per-unit views are on.
    public func unitLCA(group name: String) -> ArraySlice<Double>? {
        guard let group = unitGroups.first(where: { $0.group == name }),
              record.train.unitLCA.count >= group.offset + group.units else { return nil }
        return record.train.unitLCA[group.offset..<(group.offset + group.units)]
    }
}

/// A training run scripted in Swift: build it from value types, run it,
/// and receive every iteration in a callback that can stop the run, freeze
/// a tensor or change its learning rate before the next step.
///
/// Why a callback and not an `AsyncSequence`: the core's step is
/// synchronous, CPU-bound work on the caller's thread, and the things a
/// script does between iterations (freeze a layer, rescale a learning rate,
/// stop) must take effect exactly at the next step. A callback runs between
/// two steps on the same thread, so that holds by construction, with no
/// buffering, no task hops and no need for the trainer (which wraps a
/// non-thread-safe C handle) to be `Sendable`. An `AsyncSequence` would need
/// a producer task and a buffer policy, and a change made by its consumer
/// would race the producer's next step unless the producer waited for every
/// pull, which is a callback with more machinery. Wrap `run` in a `Task` to
/// keep it off the main actor.
///
/// ```swift
/// var configuration = TrainingConfiguration()
/// configuration.iterations = 35
/// let experiment = try Experiment(network: Network(input: 64, layers: [.dense(32), .dense(10)]),
///                                 data: try .digits(), configuration: configuration)
/// let summary = try experiment.run { iteration, control in
///     if iteration.number == 10 { try control.freeze("fc2.weight") }
///     if iteration.record.train.lossAfter < 0.5 { control.stop() }
/// }
/// print(summary.table)
/// ```
public final class Experiment {
    /// What the callback may do between iterations.
    public final class Control {
        let trainer: Trainer
        var stopRequested = false

        init(trainer: Trainer) { self.trainer = trainer }

        /// Ends the run after this iteration.
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

    /// The network.
    public let network: Network
    /// The model being trained.
    public let model: Model
    /// The data.
    public let data: Dataset
    /// The trainer.
    public let trainer: Trainer
    private let control: Control

    /// Builds the model (He-normal weights from the configuration's seed, or
    /// the weights of `initialCheckpoint`) and its trainer.
    public init(network: Network, data: Dataset, configuration: TrainingConfiguration,
                initialCheckpoint: String? = nil) throws {
        let model = try network.makeModel(seed: configuration.seed)
        if let initialCheckpoint { try model.loadCheckpoint(initialCheckpoint) }
        self.network = network
        self.model = model
        self.data = data
        trainer = try Trainer(model: model, data: data, configuration: configuration)
        control = Control(trainer: trainer)
    }

    /// Freezes a tensor before (or between) runs.
    public func freeze(_ tensor: String) throws { try control.freeze(tensor) }

    /// Scales a tensor's learning rate before (or between) runs.
    public func setLearningRateScale(_ tensor: String, _ scale: Double) throws {
        try control.setLearningRateScale(tensor, scale)
    }

    /// Runs up to `iterations` more iterations (default: until the
    /// configuration's total), calling `onIteration` after each.
    /// - Parameters:
    ///   - log: also write the binary log here ("-" = stdout).
    ///   - tensorBoard: also write TensorBoard event files into this folder.
    /// - Returns: the summary of the iterations run.
    @discardableResult
    public func run(iterations: Int? = nil, log: String? = nil, tensorBoard: String? = nil,
                    onIteration: (Iteration, Control) throws -> Void = { _, _ in }) throws -> RunSummary {
        let writer = try log.map { try LogWriter(path: $0, trainer: trainer) }
        let board = try tensorBoard.map { try TensorBoardWriter(directory: $0, tensors: model.tensors) }
        let total = UInt64(trainer.configuration.iterations)
        let end = iterations.map { trainer.iteration + UInt64(max($0, 0)) } ?? total
        var summary = RunSummary(trainer: trainer)
        let clock = ContinuousClock(), started = clock.now
        control.stopRequested = false
        let units = trainer.configuration.lcaUnits ? model.unitGroups : []
        while trainer.iteration < end, !control.stopRequested {
            let record = try trainer.step()
            try writer?.write(record)
            try board?.write(record)
            summary.add(record)
            try onIteration(Iteration(record: record, tensors: model.tensors, unitGroups: units), control)
        }
        try writer?.close()
        try board?.close()
        let elapsed = started.duration(to: clock.now)
        summary.finish(wallSeconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18,
                       coreMemoryBytes: trainer.memoryBytes)
        return summary
    }
}
