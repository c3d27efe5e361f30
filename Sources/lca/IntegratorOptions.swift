import ArgumentParser
import LCAKit

/// The integrator's options, shared by `lca train` and `lca attribute`.
struct IntegratorOptions: ParsableArguments {
    @Option(name: .customLong("lca-threshold"), help: ArgumentHelp("Refine while |residual| exceeds this many nats. \(Defaults.note(Defaults.configuration.lcaThreshold))", valueName: "x"))
    var lcaThreshold: Double?

    @Option(name: .customLong("lca-max-subintervals"), help: ArgumentHelp("Cap on Simpson sub-intervals: \(Core.subintervalChoices); an iteration still above the threshold at the cap is flagged. \(Defaults.note(Defaults.configuration.lcaMaxSubintervals))", valueName: "n"))
    var lcaMaxSubintervals: Int?

    @Option(help: ArgumentHelp("Examples an evaluation worker holds at once (memory and speed only: the results are the same bytes whatever it is). (default: the most that fit --memory-budget; at most the accumulation unit of 512 or one --bn-group, shared evenly between the passes of a unit, rounded up to 128s for an MLP; a batch-norm group larger than the chunk is recomputed in sub-chunks)", valueName: "n"))
    var evalChunk: Int?

    @Option(help: ArgumentHelp("Batch norm under LCA: normalise the evaluation set in fixed groups of this many examples. \(Defaults.note(Defaults.configuration.bnGroup))", valueName: "n"))
    var bnGroup: Int?

    @Option(help: ArgumentHelp("Activations a worker may hold (the evaluation chunk, the training minibatch, a batch-norm group: what does not fit is recomputed in sub-chunks; a residual net keeps every activation when the budget holds them at the same chunks, else only its blocks' inputs, recomputing the rest), in bytes or with a K, M or G suffix; at least one example's (the results do not depend on it). \(Defaults.note(Defaults.bytes(Defaults.configuration.memoryBudget)))", valueName: "bytes"))
    var memoryBudget: String?

    /// The flags that were given, for commands that refuse them in some mode.
    var given: [String] {
        [("--lca-threshold", lcaThreshold != nil), ("--lca-max-subintervals", lcaMaxSubintervals != nil),
         ("--eval-chunk", evalChunk != nil), ("--bn-group", bnGroup != nil),
         ("--memory-budget", memoryBudget != nil)].filter(\.1).map(\.0)
    }

    /// The largest --eval-chunk and --bn-group accepted (2³² examples).
    static let maximumExamples = 1 << 32

    func validate() throws {
        if let lcaThreshold, !(lcaThreshold >= 0) { throw ValidationError("--lca-threshold must be >= 0") }
        if let n = lcaMaxSubintervals, !Core.isValidSubintervalCap(n) {
            throw ValidationError("--lca-max-subintervals must be \(Core.subintervalChoices), not \(n)")
        }
        if let evalChunk, evalChunk < 1 { throw ValidationError("--eval-chunk must be at least 1") }
        if let bnGroup, bnGroup < 1 { throw ValidationError("--bn-group must be at least 1") }
        // the core multiplies these by an example's bytes: beyond 2³² the
        // product can overflow size_t (--eval-chunk 2⁶³ crashed the core)
        if let evalChunk, evalChunk > Self.maximumExamples {
            throw ValidationError("--eval-chunk must be at most \(Self.maximumExamples), not \(evalChunk)")
        }
        if let bnGroup, bnGroup > Self.maximumExamples {
            throw ValidationError("--bn-group must be at most \(Self.maximumExamples), not \(bnGroup)")
        }
        if let memoryBudget, ByteCount.parse(memoryBudget) == nil {
            throw ValidationError("--memory-budget must be a positive byte count such as 512M or 2G, not '\(memoryBudget)'")
        }
    }

    /// Sets the given options on a configuration.
    func apply(to configuration: inout TrainingConfiguration) {
        if let lcaThreshold { configuration.lcaThreshold = lcaThreshold }
        if let lcaMaxSubintervals { configuration.lcaMaxSubintervals = lcaMaxSubintervals }
        if let evalChunk { configuration.evalChunk = evalChunk }
        if let bnGroup { configuration.bnGroup = bnGroup }
        if let memoryBudget, let bytes = ByteCount.parse(memoryBudget) { configuration.memoryBudget = bytes }
    }
}
