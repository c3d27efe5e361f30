internal import CLCA
import Foundation

/// The optimizer that moves the parameters.
public enum Optimizer: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// Plain stochastic gradient descent: θ ← θ − lr·g.
    case sgd
    /// Heavy-ball momentum, PyTorch's convention: v ← μ·v + g; θ ← θ − lr·v.
    case momentum
    /// Adam (Kingma & Ba) with bias correction.
    case adam

    /// The command-line spelling.
    public var description: String { rawValue }

    var cValue: lca_optimizer_kind {
        switch self {
        case .sgd: return LCA_OPTIMIZER_SGD
        case .momentum: return LCA_OPTIMIZER_MOMENTUM
        case .adam: return LCA_OPTIMIZER_ADAM
        }
    }

    init(_ kind: lca_optimizer_kind) {
        switch kind {
        case LCA_OPTIMIZER_SGD: self = .sgd
        case LCA_OPTIMIZER_ADAM: self = .adam
        default: self = .momentum
        }
    }
}

/// How many examples are held out of the data as a validation split.
///
/// Encoded in JSON as `"default"`, an integer count, or a fraction.
public enum ValidationSize: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The core's default: min(5,000, 10% of the set).
    case automatic
    /// Exactly this many examples (0 = no validation split).
    case count(Int)
    /// This fraction of the set, in (0, 1), rounded to the nearest count.
    case fraction(Double)

    /// Parses "default", an integer count ("500", "0") or a fraction in
    /// (0, 1) ("0.1"). Returns nil for anything else.
    public init?(parsing text: String) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed == "default" || trimmed == "auto" {
            self = .automatic
        } else if let count = Int(trimmed), count >= 0 {
            self = .count(count)
        } else if let fraction = Double(trimmed), fraction > 0, fraction < 1 {
            self = .fraction(fraction)
        } else {
            return nil
        }
    }

    /// The number of held-out examples for a set of `exampleCount`, or nil
    /// for the core's default.
    public func resolvedCount(exampleCount: Int) -> Int? {
        switch self {
        case .automatic: return nil
        case .count(let count): return count
        case .fraction(let fraction): return Int((Double(exampleCount) * fraction).rounded(.down)) // as the core: 10% of 1,797 is 179
        }
    }

    /// "default", the count, or the fraction.
    public var description: String {
        switch self {
        case .automatic: return "default"
        case .count(let count): return String(count)
        case .fraction(let fraction): return String(fraction)
        }
    }

    /// Decodes "default", an integer or a fraction.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        // Probes of the value's JSON type (string, integer, number): the
        // last one throws when it is none of them, so no failure is hidden.
        if let text = try? container.decode(String.self) {
            guard let parsed = ValidationSize(parsing: text) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "validation size \"\(text)\"")
            }
            self = parsed
        } else if let count = try? container.decode(Int.self) {
            self = .count(count)
        } else {
            self = .fraction(try container.decode(Double.self))
        }
    }

    /// Encodes "default", an integer or a fraction.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .automatic: try container.encode("default")
        case .count(let count): try container.encode(count)
        case .fraction(let fraction): try container.encode(fraction)
        }
    }
}

/// Everything a training run computes from besides the model and the data:
/// the Swift mirror of the core's `lca_config`.
///
/// Start from `TrainingConfiguration()` (the core's defaults) and change
/// what you need. It is `Codable`, so a run folder's `config.json` can
/// rebuild the same trainer.
public struct TrainingConfiguration: Sendable, Hashable, Codable {
    /// Seed of every random choice (initialisation, split, subset, shuffle).
    public var seed: UInt64
    /// The optimizer (default: momentum).
    public var optimizer: Optimizer
    /// Learning rate (default 0.01).
    public var learningRate: Double
    /// Momentum μ (default 0.9), used by `.momentum`.
    public var momentum: Double
    /// Adam's β₁ (default 0.9).
    public var adamBeta1: Double
    /// Adam's β₂ (default 0.999).
    public var adamBeta2: Double
    /// Adam's ε (default 1e-8).
    public var adamEpsilon: Double
    /// L2 coefficient λ: the step uses g + λθ; the allocated loss has no L2
    /// term (default 0).
    public var weightDecay: Double
    /// Minibatch size (default 250).
    public var batchSize: Int
    /// Total iterations the run is meant to take.
    public var iterations: Int
    /// Examples held out as a validation split.
    public var validation: ValidationSize
    /// Compute LCA (default true); false trains only.
    public var lca: Bool
    /// 0 = allocate the loss on the whole training split; otherwise on a
    /// seeded subset of this many training examples.
    public var lcaSubset: Int
    /// Also allocate the validation loss (a second view, same trajectory).
    public var lcaValidationView: Bool
    /// Residual threshold in nats that triggers refinement (default 0.001).
    public var lcaThreshold: Double
    /// Cap on Simpson sub-intervals: 2, 4, 8, 16 or 32 (default 32).
    public var lcaMaxSubintervals: Int
    /// Examples an evaluation worker holds at once; 0 (the default) picks
    /// the most that fit `memoryBudget`, at most 512; never more than the
    /// accumulation unit (`Trainer.accumulationUnit`, one `bnGroup` with
    /// batch norm: a group larger than the chunk is recomputed in
    /// sub-chunks). Memory and speed only: the results are the same bytes
    /// whatever it is.
    public var evalChunk: Int
    /// Batch norm under LCA: the evaluation set is normalised in consecutive
    /// groups of this many examples (default 250; docs/models.md).
    public var bnGroup: Int
    /// Bytes of activations a worker may hold: the automatic evaluation
    /// chunk, the training minibatch's chunk, a batch-norm group in
    /// sub-chunks (512 MiB; at least one example's; docs/memory.md). The
    /// results do not depend on it.
    public var memoryBudget: Int
    /// Per-unit views: each record also carries the LCA of every output
    /// unit (neuron or channel: incoming weights plus bias), in
    /// `ViewRecord.unitLCA` and the log's `unit_lca` field (default false).
    public var lcaUnits: Bool
    /// The |LCA| histogram in every record (`ViewRecord.tensorHistogram`,
    /// the log's `lca_histogram` field, 240 bytes per tensor and view;
    /// default true). False leaves it out (`lca train --no-lca-histogram`).
    public var lcaHistogram: Bool
    /// Loss groups (issue 15): every record then carries each group's LCA,
    /// losses and residual (`ViewRecord.groupLCA`). Not written to
    /// `config.json` (a `RunRecipe` records where they came from,
    /// `RunRecipe.groups`); nil = none.
    public var exampleGroups: ExampleGroups?
    /// Per-parameter per-group run totals (`lca-group-total.safetensors`,
    /// P × G float64); needs `exampleGroups`.
    public var lcaGroupTotals: Bool

    /// The core's defaults (`lca_config_default()`).
    public init() {
        self.init(lca_config_default())
    }

    init(_ c: lca_config) {
        seed = c.seed
        optimizer = Optimizer(c.optimizer)
        learningRate = c.learning_rate
        momentum = c.momentum
        adamBeta1 = c.adam_beta1
        adamBeta2 = c.adam_beta2
        adamEpsilon = c.adam_epsilon
        weightDecay = c.weight_decay
        batchSize = Int(c.batch_size)
        iterations = Int(c.iterations)
        validation = c.validation == Int(bitPattern: UInt(bitPattern: -1)) ? .automatic : .count(Int(c.validation))
        lca = c.lca != 0
        lcaSubset = Int(c.lca_subset)
        lcaValidationView = c.lca_validation_view != 0
        lcaThreshold = c.lca_threshold
        lcaMaxSubintervals = Int(c.lca_max_subintervals)
        evalChunk = Int(c.eval_chunk)
        lcaUnits = c.lca_units != 0
        bnGroup = Int(c.bn_group)
        memoryBudget = Int(c.memory_budget)
        lcaHistogram = c.lca_histogram != 0
        exampleGroups = nil
        lcaGroupTotals = c.lca_group_totals != 0
    }

    /// `cConfig` with the loss groups' ids pinned for the call of body (the
    /// core copies them).
    func withCConfig<R>(exampleCount: Int, _ body: (inout lca_config) throws -> R) throws -> R {
        var c = try cConfig(exampleCount: exampleCount)
        c.lca_group_totals = lcaGroupTotals ? 1 : 0
        guard let groups = exampleGroups else { return try body(&c) }
        return try groups.ids.withUnsafeBufferPointer { ids in
            try groups.source.withCString { source in
                c.example_groups = ids.baseAddress
                c.example_group_count = ids.count
                c.group_count = UInt32(groups.count)
                c.group_source = source
                return try body(&c)
            }
        }
    }

    /// The C config, with the validation size resolved for a set of
    /// `exampleCount` examples.
    func cConfig(exampleCount: Int) throws -> lca_config {
        func unsigned(_ value: Int, _ name: String) throws -> Int {
            guard value >= 0 else { throw LCAError.invalid("\(name) must not be negative (got \(value))") }
            return value
        }
        var c = lca_config_default()
        c.seed = seed
        c.optimizer = optimizer.cValue
        c.learning_rate = learningRate
        c.momentum = momentum
        c.adam_beta1 = adamBeta1
        c.adam_beta2 = adamBeta2
        c.adam_epsilon = adamEpsilon
        c.weight_decay = weightDecay
        c.batch_size = try unsigned(batchSize, "batch size")
        c.iterations = UInt64(try unsigned(iterations, "iterations"))
        if let count = validation.resolvedCount(exampleCount: exampleCount) {
            c.validation = try unsigned(count, "validation size")
        } else {
            c.validation = Int(bitPattern: UInt(bitPattern: -1))
        }
        c.lca = lca ? 1 : 0
        c.lca_subset = try unsigned(lcaSubset, "LCA subset")
        c.lca_validation_view = lcaValidationView ? 1 : 0
        c.lca_threshold = lcaThreshold
        c.lca_max_subintervals = UInt32(try unsigned(lcaMaxSubintervals, "maximum sub-intervals"))
        c.eval_chunk = try unsigned(evalChunk, "evaluation chunk")
        c.lca_units = lcaUnits ? 1 : 0
        guard bnGroup >= 1 else { throw LCAError.invalid("batch-norm group must be at least 1 (got \(bnGroup))") }
        c.bn_group = bnGroup
        guard memoryBudget >= 1 else { throw LCAError.invalid("memory budget must be at least 1 byte (got \(memoryBudget))") }
        c.memory_budget = memoryBudget
        c.lca_histogram = lcaHistogram ? 1 : 0
        return c
    }

    private enum CodingKeys: String, CodingKey {
        case seed, optimizer, learningRate, momentum, adamBeta1, adamBeta2, adamEpsilon, weightDecay
        case batchSize, iterations, validation, lca, lcaSubset, lcaValidationView, lcaThreshold
        case lcaMaxSubintervals, evalChunk, lcaUnits, bnGroup, memoryBudget, lcaHistogram
        case lcaGroupTotals
    }

    /// Decodes a configuration; keys that are missing keep the core's
    /// defaults.
    public init(from decoder: any Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? seed
        optimizer = try c.decodeIfPresent(Optimizer.self, forKey: .optimizer) ?? optimizer
        learningRate = try c.decodeIfPresent(Double.self, forKey: .learningRate) ?? learningRate
        momentum = try c.decodeIfPresent(Double.self, forKey: .momentum) ?? momentum
        adamBeta1 = try c.decodeIfPresent(Double.self, forKey: .adamBeta1) ?? adamBeta1
        adamBeta2 = try c.decodeIfPresent(Double.self, forKey: .adamBeta2) ?? adamBeta2
        adamEpsilon = try c.decodeIfPresent(Double.self, forKey: .adamEpsilon) ?? adamEpsilon
        weightDecay = try c.decodeIfPresent(Double.self, forKey: .weightDecay) ?? weightDecay
        batchSize = try c.decodeIfPresent(Int.self, forKey: .batchSize) ?? batchSize
        iterations = try c.decodeIfPresent(Int.self, forKey: .iterations) ?? iterations
        validation = try c.decodeIfPresent(ValidationSize.self, forKey: .validation) ?? validation
        lca = try c.decodeIfPresent(Bool.self, forKey: .lca) ?? lca
        lcaSubset = try c.decodeIfPresent(Int.self, forKey: .lcaSubset) ?? lcaSubset
        lcaValidationView = try c.decodeIfPresent(Bool.self, forKey: .lcaValidationView) ?? lcaValidationView
        lcaThreshold = try c.decodeIfPresent(Double.self, forKey: .lcaThreshold) ?? lcaThreshold
        lcaMaxSubintervals = try c.decodeIfPresent(Int.self, forKey: .lcaMaxSubintervals) ?? lcaMaxSubintervals
        evalChunk = try c.decodeIfPresent(Int.self, forKey: .evalChunk) ?? evalChunk
        lcaUnits = try c.decodeIfPresent(Bool.self, forKey: .lcaUnits) ?? lcaUnits
        bnGroup = try c.decodeIfPresent(Int.self, forKey: .bnGroup) ?? bnGroup
        memoryBudget = try c.decodeIfPresent(Int.self, forKey: .memoryBudget) ?? memoryBudget
        lcaHistogram = try c.decodeIfPresent(Bool.self, forKey: .lcaHistogram) ?? lcaHistogram
        lcaGroupTotals = try c.decodeIfPresent(Bool.self, forKey: .lcaGroupTotals) ?? lcaGroupTotals
    }

    /// Encodes every field.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(seed, forKey: .seed)
        try c.encode(optimizer, forKey: .optimizer)
        try c.encode(learningRate, forKey: .learningRate)
        try c.encode(momentum, forKey: .momentum)
        try c.encode(adamBeta1, forKey: .adamBeta1)
        try c.encode(adamBeta2, forKey: .adamBeta2)
        try c.encode(adamEpsilon, forKey: .adamEpsilon)
        try c.encode(weightDecay, forKey: .weightDecay)
        try c.encode(batchSize, forKey: .batchSize)
        try c.encode(iterations, forKey: .iterations)
        try c.encode(validation, forKey: .validation)
        try c.encode(lca, forKey: .lca)
        try c.encode(lcaSubset, forKey: .lcaSubset)
        try c.encode(lcaValidationView, forKey: .lcaValidationView)
        try c.encode(lcaThreshold, forKey: .lcaThreshold)
        try c.encode(lcaMaxSubintervals, forKey: .lcaMaxSubintervals)
        try c.encode(evalChunk, forKey: .evalChunk)
        try c.encode(lcaUnits, forKey: .lcaUnits)
        try c.encode(bnGroup, forKey: .bnGroup)
        try c.encode(memoryBudget, forKey: .memoryBudget)
        try c.encode(lcaHistogram, forKey: .lcaHistogram)
        // only when on, so that config.json (and its hash) of a run without is unchanged
        if lcaGroupTotals { try c.encode(lcaGroupTotals, forKey: .lcaGroupTotals) }
    }

    /// Iterations for `epochs` passes over `trainingCount` examples:
    /// epochs × ⌈trainingCount / batchSize⌉.
    /// Int.max when the product does not fit (see `checkedIterations`).
    public static func iterations(epochs: Int, trainingCount: Int, batchSize: Int) -> Int {
        checkedIterations(epochs: epochs, trainingCount: trainingCount, batchSize: batchSize) ?? Int.max
    }

    /// epochs × ⌈trainingCount / batchSize⌉, or nil when it overflows Int
    /// (no arithmetic here traps, whatever the user's numbers).
    public static func checkedIterations(epochs: Int, trainingCount: Int, batchSize: Int) -> Int? {
        guard batchSize > 0, trainingCount >= 0, epochs >= 0 else { return 0 }
        let batches = trainingCount / batchSize + (trainingCount % batchSize > 0 ? 1 : 0)
        let (product, overflow) = epochs.multipliedReportingOverflow(by: batches)
        return overflow ? nil : product
    }
}
