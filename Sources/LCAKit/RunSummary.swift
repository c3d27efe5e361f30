import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Totals over a run's iterations, per tensor and overall, for one
/// evaluation set (the training split or the validation split).
public struct ViewSummary: Sendable, Codable, Hashable {
    /// One row of the per-tensor table.
    public struct TensorRow: Sendable, Codable, Hashable {
        /// Tensor name ("fc1.weight").
        public var name: String
        /// Number of parameters in the tensor.
        public var parameters: Int
        /// Σ over iterations of the tensor's LCA (negative = it helped).
        public var lca: Double
        /// Σ over iterations of the tensor's first-order LCA.
        public var firstOrder: Double
        /// Mean over iterations of the share of its parameters that helped
        /// (helped / parameters), in [0, 1].
        public var helpedShare: Double
    }

    /// Which set: "training split", "LCA subset" or "validation split".
    public var name: String
    /// Examples in the set.
    public var examples: Int
    /// Iterations summed.
    public var iterations: Int
    /// One row per tensor.
    public var tensors: [TensorRow]
    /// Evaluation-set loss before the first summed iteration.
    public var lossFirst: Double
    /// Evaluation-set loss after the last summed iteration.
    public var lossLast: Double
    /// Σ over iterations of the total LCA.
    public var lcaTotal: Double
    /// Σ over iterations of the residual.
    public var residualTotal: Double
    /// Σ over iterations of the first-order total.
    public var firstOrderTotal: Double
    /// Mean |residual| per iteration.
    public var meanAbsResidual: Double
    /// Largest |residual| of any iteration.
    public var maxAbsResidual: Double
    /// Iterations that needed more than 2 Simpson sub-intervals.
    public var refinedIterations: Int
    /// Iterations whose |residual| stayed above the threshold at the cap.
    public var flaggedIterations: Int
    /// Mean over iterations of the share of all parameters that helped.
    public var helpingShare: Double

    /// lossLast − lossFirst.
    public var lossChange: Double { lossLast - lossFirst }
    /// lossChange − (lcaTotal + residualTotal): zero up to rounding when
    /// every iteration's loss_after is the next one's loss_before.
    public var conservationError: Double { lossChange - (lcaTotal + residualTotal) }

    init(name: String, examples: Int, tensors: [TensorInfo]) {
        self.name = name
        self.examples = examples
        self.iterations = 0
        self.tensors = tensors.map { TensorRow(name: $0.name, parameters: $0.count, lca: 0, firstOrder: 0, helpedShare: 0) }
        lossFirst = .nan
        lossLast = .nan
        lcaTotal = 0
        residualTotal = 0
        firstOrderTotal = 0
        meanAbsResidual = 0
        maxAbsResidual = 0
        refinedIterations = 0
        flaggedIterations = 0
        helpingShare = 0
    }

    // Means are kept as running sums while accumulating (`add`) and divided
    // on `finished()`, so that every sum is a plain float64 loop in
    // iteration order.
    mutating func add<View: ViewValues>(_ view: View) {
        if iterations == 0 { lossFirst = view.lossBefore }
        lossLast = view.lossAfter
        iterations += 1
        var helped: UInt64 = 0, parameters = 0
        for index in tensors.indices {
            tensors[index].lca += view.tensorLCA[index]
            tensors[index].firstOrder += view.tensorFirstOrder[index]
            let count = tensors[index].parameters
            tensors[index].helpedShare += count > 0 ? Double(view.tensorHelped[index]) / Double(count) : 0
            // wrapping: a damaged log's counts must not trap (lca verify names them)
            helped &+= view.tensorHelped[index]
            parameters &+= count
        }
        lcaTotal += view.lcaTotal
        residualTotal += view.residual
        firstOrderTotal += view.firstOrderTotal
        meanAbsResidual += abs(view.residual)
        maxAbsResidual = max(maxAbsResidual, abs(view.residual))
        if view.subintervals > 2 { refinedIterations += 1 }
        if view.residualAboveThreshold { flaggedIterations += 1 }
        helpingShare += parameters > 0 ? Double(helped) / Double(parameters) : 0
    }

    func finished() -> ViewSummary {
        var done = self
        let n = Double(max(iterations, 1))
        for index in done.tensors.indices { done.tensors[index].helpedShare /= n }
        done.meanAbsResidual /= n
        done.helpingShare /= n
        return done
    }

    func render(threshold: Double) -> String {
        var rows: [[String]] = [["tensor", "parameters", "total LCA", "first order", "helped"]]
        for row in tensors {
            rows.append([row.name, String(row.parameters), Format.scientific(row.lca),
                         Format.scientific(row.firstOrder), Format.percent(row.helpedShare)])
        }
        rows.append(["total", String(tensors.reduce(0) { $0 + $1.parameters }), Format.scientific(lcaTotal),
                     Format.scientific(firstOrderTotal), Format.percent(helpingShare)])
        var text = "LCA on the \(name) (\(examples) examples), \(iterations) iterations\n"
        text += Format.table(rows, rightAligned: [false, true, true, true, true], ruleBefore: rows.count - 1)
        text += "\n"
        let label = { (s: String) in s.padding(toLength: 22, withPad: " ", startingAt: 0) }
        text += label("loss first → last") + "\(Format.fixed(lossFirst)) → \(Format.fixed(lossLast))"
            + "  (change \(Format.scientific(lossChange)))\n"
        text += label("conservation") + "Σ LCA \(Format.scientific(lcaTotal)) + Σ residual "
            + "\(Format.scientific(residualTotal)) = \(Format.scientific(lcaTotal + residualTotal))"
            + "  (off by \(String(format: "%.1e", conservationError)))\n"
        text += label("|residual|") + "mean \(String(format: "%.3e", meanAbsResidual)), max "
            + "\(String(format: "%.3e", maxAbsResidual))  (threshold \(String(format: "%.1e", threshold)) nats)\n"
        text += label("refinement") + "\(refinedIterations) iterations needed > 2 sub-intervals, "
            + "\(flaggedIterations) flagged above threshold\n"
        text += label("parameters helping") + "\(Format.percent(helpingShare)) per iteration (mean)\n"
        return text
    }
}

/// Accumulates a run's iteration records and renders its summary: a table
/// per evaluation set (one row per tensor: parameters, Σ LCA, mean share
/// helped; then a total row), the loss change and its conservation check,
/// residual statistics, refinement counts, wall time and memory. Encodable
/// as JSON.
///
/// ```swift
/// var summary = RunSummary(trainer: trainer)
/// for _ in 0..<n { summary.add(try trainer.step()) }
/// summary.finish(wallSeconds: 1.2, coreMemoryBytes: trainer.memoryBytes)
/// print(summary.table)
/// ```
public struct RunSummary: Sendable, Codable, Hashable {
    /// Model spec in canonical form.
    public var model: String
    /// The loss allocated.
    public var loss: Loss
    /// Number of parameters.
    public var parameters: Int
    /// Where the data came from.
    public var data: String
    /// Whether LCA was computed.
    public var lca: Bool
    /// First iteration summed (1-based; later than 1 for a resumed run).
    public var firstIteration: UInt64
    /// Last iteration summed.
    public var lastIteration: UInt64
    /// Iterations summed.
    public var iterations: Int
    /// Minibatch loss of the first summed iteration.
    public var batchLossFirst: Double
    /// Minibatch loss of the last summed iteration.
    public var batchLossLast: Double
    /// The training-split (or LCA-subset) view, when LCA was on.
    public var train: ViewSummary?
    /// The validation view, when it was on.
    public var validation: ViewSummary?
    /// The residual threshold of the run, in nats.
    public var lcaThreshold: Double
    /// Wall-clock seconds of the run (set by `finish`).
    public var wallSeconds: Double
    /// Peak resident memory of the process in bytes (getrusage ru_maxrss).
    public var peakMemoryBytes: Int
    /// Bytes the core allocated for the trainer.
    public var coreMemoryBytes: Int
    /// Threads the core used.
    public var threads: Int
    /// The core's thread back end ("pthreads" or "openmp", `Core.threadBackend`).
    public var threadBackend: String
    /// Examples per evaluation chunk (0 when LCA is off or unknown).
    public var evalChunk: Int = 0
    /// Examples per accumulation unit (0 when LCA is off or unknown).
    public var accumulationUnit: Int = 0
    /// Where the core's memory goes (nil when unknown: a summary from a log).
    public var memoryUse: MemoryUse?
    /// Loss groups of the run ("10 from class"; nil without groups).
    public var lossGroups: String?
    private var finished: Bool
    /// Made from a log (`init(header:)`): the table leaves out wall time,
    /// memory and threads, which a log does not record.
    private var fromLog = false

    /// An empty summary for a trainer's run.
    public init(trainer: Trainer) {
        let configuration = trainer.configuration
        let tensors = trainer.model.tensors
        model = trainer.model.spec
        loss = trainer.model.loss
        parameters = trainer.model.parameterCount
        data = trainer.data.source
        lca = configuration.lca
        firstIteration = trainer.iteration + 1
        lastIteration = trainer.iteration
        iterations = 0
        batchLossFirst = .nan
        batchLossLast = .nan
        let subset = configuration.lcaSubset > 0 && trainer.evaluationCount < trainer.trainingCount
        train = configuration.lca
            ? ViewSummary(name: subset ? "LCA subset of the training split" : "training split",
                          examples: trainer.evaluationCount, tensors: tensors)
            : nil
        validation = configuration.lca && configuration.lcaValidationView
            ? ViewSummary(name: "validation split", examples: trainer.validationCount, tensors: tensors)
            : nil
        lcaThreshold = configuration.lcaThreshold
        wallSeconds = 0
        peakMemoryBytes = 0
        coreMemoryBytes = trainer.memoryBytes
        threads = Core.threads
        threadBackend = Core.threadBackend
        evalChunk = configuration.lca ? trainer.evaluationChunk : 0
        accumulationUnit = configuration.lca ? trainer.accumulationUnit : 0
        memoryUse = trainer.memoryUse
        lossGroups = configuration.lca ? configuration.exampleGroups.map { "\($0.count) from \($0.source)" } : nil
        finished = false
    }

    /// An empty summary for the run a log describes, to be filled with the
    /// log's records (`lca show`): the same table `lca train` prints, minus
    /// the wall time, memory and threads, which the log does not record.
    public init(header: LogHeader) {
        let config = header.config
        let data = header.data
        model = header.model.spec
        loss = header.model.loss == "mean_squared_error" ? .meanSquaredError : .crossEntropy
        parameters = header.model.parameters
        self.data = data?.source ?? ""
        lca = config?.lca ?? true
        firstIteration = 1
        lastIteration = 0
        iterations = 0
        batchLossFirst = .nan
        batchLossLast = .nan
        let evaluation = data?.evaluation ?? 0, training = data?.training ?? 0
        let subset = (config?.lcaSubset ?? 0) > 0 && evaluation < training
        train = lca ? ViewSummary(name: subset ? "LCA subset of the training split" : "training split",
                                  examples: evaluation, tensors: header.tensors) : nil
        validation = lca && header.hasValidation
            ? ViewSummary(name: "validation split", examples: data?.validation ?? 0, tensors: header.tensors) : nil
        lcaThreshold = config?.lcaThreshold ?? 0.001
        wallSeconds = 0
        peakMemoryBytes = 0
        coreMemoryBytes = 0
        threads = 0
        threadBackend = ""
        finished = false
        fromLog = true
    }

    /// Adds one iteration.
    public mutating func add(_ record: IterationRecord) { accumulate(record) }

    /// Adds one iteration read in place from the core (`TrainingRun`).
    mutating func add(_ record: RecordView) { accumulate(record) }

    private mutating func accumulate<Record: RecordValues>(_ record: Record) {
        precondition(!finished, "RunSummary.add after finish")
        if iterations == 0 {
            firstIteration = record.iteration
            batchLossFirst = record.batchLoss
        }
        lastIteration = record.iteration
        batchLossLast = record.batchLoss
        iterations += 1
        train?.add(record.train)
        if let view = record.validation { validation?.add(view) }
    }

    /// Turns running sums into means and records time and memory; call once
    /// after the last `add`.
    public mutating func finish(wallSeconds: Double, coreMemoryBytes: Int? = nil) {
        guard !finished else { return }
        finished = true
        train = train?.finished()
        validation = validation?.finished()
        self.wallSeconds = wallSeconds
        if let coreMemoryBytes { self.coreMemoryBytes = coreMemoryBytes }
        if !fromLog { peakMemoryBytes = ProcessStats.peakResidentBytes }
    }

    /// The summary for people: aligned columns, one block per view.
    public var table: String {
        var text = "model \(model) (\(parameters) parameters, loss \(loss)), data \(data)\n"
        if iterations == 0 {
            text += "no iterations run\n"
        } else {
            text += "iterations \(firstIteration)–\(lastIteration)\n"
        }
        let summary = finished ? self : { var copy = self; copy.finish(wallSeconds: wallSeconds); return copy }()
        if let view = summary.train, iterations > 0 {
            text += "\n" + view.render(threshold: lcaThreshold)
        } else if !lca {
            text += "LCA off (--no-lca)\n"
        }
        if let view = summary.validation, iterations > 0 { text += "\n" + view.render(threshold: lcaThreshold) }
        let label = { (s: String) in s.padding(toLength: 22, withPad: " ", startingAt: 0) }
        text += "\n"
        text += label("minibatch loss") + "\(Format.fixed(batchLossFirst)) → \(Format.fixed(batchLossLast))\n"
        if fromLog { return text }
        let perIteration = iterations > 0 ? summary.wallSeconds / Double(iterations) : 0
        text += label("wall time") + "\(Format.duration(summary.wallSeconds))"
            + (iterations > 0 ? String(format: " (%.1f ms per iteration)", perIteration * 1000) : "") + "\n"
        text += label("memory") + "peak \(Format.bytes(summary.peakMemoryBytes)) (process), "
            + "\(Format.bytes(coreMemoryBytes)) allocated by the core\n"
        if let use = memoryUse { text += label("memory use") + use.description + "\n" }
        text += label("threads") + "\(threads) (\(threadBackend))"
            + ", matrix kernel \(Core.gemmKernelName)\n"
        if evalChunk > 0 {
            text += label("evaluation chunk") + "\(evalChunk) examples"
                + (accumulationUnit > 0 ? ", summed exactly in units of \(accumulationUnit)" : "") + "\n"
        }
        if let lossGroups {
            text += label("loss groups") + "\(lossGroups): every record carries each group's LCA "
                + "(lca show --groups, lca report)\n"
        }
        return text
    }

    /// The summary as pretty-printed JSON (snake_case keys, sorted;
    /// `JSONFormat`).
    public func jsonString() throws -> String {
        let encoder = JSONFormat.encoder()
        let summary = finished ? self : { var copy = self; copy.finish(wallSeconds: wallSeconds); return copy }()
        return String(decoding: try encoder.encode(summary), as: UTF8.self)
    }

    private enum CodingKeys: String, CodingKey {
        case model, loss, parameters, data, lca, firstIteration, lastIteration, iterations
        case batchLossFirst, batchLossLast, train, validation, lcaThreshold, wallSeconds
        case peakMemoryBytes, coreMemoryBytes, threads, threadBackend, evalChunk, accumulationUnit
        case memoryUse
    }

    /// Decodes a finished summary.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        model = try c.decode(String.self, forKey: .model)
        loss = try c.decode(Loss.self, forKey: .loss)
        parameters = try c.decode(Int.self, forKey: .parameters)
        data = try c.decode(String.self, forKey: .data)
        lca = try c.decode(Bool.self, forKey: .lca)
        firstIteration = try c.decode(UInt64.self, forKey: .firstIteration)
        lastIteration = try c.decode(UInt64.self, forKey: .lastIteration)
        iterations = try c.decode(Int.self, forKey: .iterations)
        batchLossFirst = try c.decode(Double.self, forKey: .batchLossFirst)
        batchLossLast = try c.decode(Double.self, forKey: .batchLossLast)
        train = try c.decodeIfPresent(ViewSummary.self, forKey: .train)
        validation = try c.decodeIfPresent(ViewSummary.self, forKey: .validation)
        lcaThreshold = try c.decode(Double.self, forKey: .lcaThreshold)
        wallSeconds = try c.decode(Double.self, forKey: .wallSeconds)
        peakMemoryBytes = try c.decode(Int.self, forKey: .peakMemoryBytes)
        coreMemoryBytes = try c.decode(Int.self, forKey: .coreMemoryBytes)
        threads = try c.decode(Int.self, forKey: .threads)
        threadBackend = try c.decode(String.self, forKey: .threadBackend)
        evalChunk = try c.decodeIfPresent(Int.self, forKey: .evalChunk) ?? 0
        accumulationUnit = try c.decodeIfPresent(Int.self, forKey: .accumulationUnit) ?? 0
        memoryUse = try c.decodeIfPresent(MemoryUse.self, forKey: .memoryUse)
        finished = true
    }

    /// Encodes the summary (means already divided out).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(model, forKey: .model)
        try c.encode(loss, forKey: .loss)
        try c.encode(parameters, forKey: .parameters)
        try c.encode(data, forKey: .data)
        try c.encode(lca, forKey: .lca)
        try c.encode(firstIteration, forKey: .firstIteration)
        try c.encode(lastIteration, forKey: .lastIteration)
        try c.encode(iterations, forKey: .iterations)
        try c.encode(batchLossFirst, forKey: .batchLossFirst)
        try c.encode(batchLossLast, forKey: .batchLossLast)
        try c.encodeIfPresent(train, forKey: .train)
        try c.encodeIfPresent(validation, forKey: .validation)
        try c.encode(lcaThreshold, forKey: .lcaThreshold)
        try c.encode(wallSeconds, forKey: .wallSeconds)
        try c.encode(peakMemoryBytes, forKey: .peakMemoryBytes)
        try c.encode(coreMemoryBytes, forKey: .coreMemoryBytes)
        try c.encode(threads, forKey: .threads)
        try c.encode(threadBackend, forKey: .threadBackend)
        try c.encode(evalChunk, forKey: .evalChunk)
        try c.encode(accumulationUnit, forKey: .accumulationUnit)
        try c.encodeIfPresent(memoryUse, forKey: .memoryUse)
    }
}

/// Where a trainer's memory goes (`lca_trainer_memory_use`, docs/memory.md):
/// the data set with the split's indices, the per-parameter vectors, the
/// exact accumulator, and the workspace that `--memory-budget` bounds.
public struct MemoryUse: Codable, Hashable, Sendable {
    public var dataBytes: Int
    public var parameterBytes: Int
    public var accumulatorBytes: Int
    public var workspaceBytes: Int
    public var workers: Int
    public var evalChunk: Int
    public var trainChunk: Int
    public var memoryBudget: Int
    /// A residual net's activations (docs/memory.md): "kept" when the
    /// budget holds every one, "recomputed" when a pass keeps only its
    /// blocks' inputs and recomputes the rest; "all" for other nets.
    public var activations: String
    /// For a residual net, the smallest `--memory-budget` that keeps every
    /// activation at these chunks (0 for other nets).
    public var keepAllBudget: Int
    /// Of `workspaceBytes`: an MLP's first layer kept along the step, so
    /// that the passes inside a step skip its product (docs/memory.md); 0
    /// when the budget cannot hold it, nil in summaries written before it.
    public var firstLayerBytes: Int?

    /// "data 1.2 MiB, parameter vectors 3.4 MiB, exact sums 1.0 MiB (1
    /// worker), workspace 60.1 MiB of the 64.0 MiB budget (chunks:
    /// evaluation 21, training 21; blocks recomputed in the backward pass)"
    public var description: String {
        let residual = activations == "kept" ? "; every activation kept"
            : activations == "recomputed"
            ? "; blocks recomputed in the backward pass: --memory-budget "
                + "\((keepAllBudget + (1 << 20) - 1) >> 20)M keeps every activation, faster" : ""
        let firstLayer = (firstLayerBytes ?? 0) > 0
            ? "; the first layer kept along the step: \(Format.bytes(firstLayerBytes ?? 0))" : ""
        return "data \(Format.bytes(dataBytes)), parameter vectors \(Format.bytes(parameterBytes)), "
            + "exact sums \(Format.bytes(accumulatorBytes)) (\(workers) worker\(workers == 1 ? "" : "s")), "
            + "workspace \(Format.bytes(workspaceBytes)) of the \(Format.bytes(memoryBudget)) budget "
            + "(chunks: " + (evalChunk > 0 ? "evaluation \(evalChunk), " : "") + "training \(trainChunk)"
            + residual + firstLayer + ")"
    }
}

/// Facts about the running process.
public enum ProcessStats {
    /// Peak resident set size of this program in bytes. On Linux the
    /// kernel's high-water mark of this address space (VmHWM in
    /// /proc/self/status): getrusage's ru_maxrss survives exec, so under
    /// `swift run` it would report the larger swift-run driver that started
    /// the tool. Elsewhere, or if /proc is missing, ru_maxrss.
    public static var peakResidentBytes: Int {
        #if os(Linux)
        // An unreadable /proc is not a failure: the documented fallback is ru_maxrss.
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
           let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
           let kib = Int(line.dropFirst("VmHWM:".count).filter(\.isNumber)) {
            return kib * 1024
        }
        #endif
        var usage = rusage()
        #if os(Linux)
        let who = __rusage_who_t(RUSAGE_SELF.rawValue)
        #else
        let who = RUSAGE_SELF
        #endif
        guard getrusage(who, &usage) == 0 else { return 0 }
        #if os(Linux)
        return Int(usage.ru_maxrss) * 1024
        #else
        return Int(usage.ru_maxrss)
        #endif
    }
}
