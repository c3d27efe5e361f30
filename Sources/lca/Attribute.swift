import ArgumentParser
import Foundation
import LCAKit

/// `lca attribute`: the LCA of the straight step between two checkpoints.
struct Attribute: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Allocate the loss change between two checkpoints to their parameters.",
        discussion: """
            Integrates the gradient along the straight line from --from to --to (composite \
            Simpson, refined while |residual| > threshold) on every example of --data, or on the \
            training split left by --validation. The model spec comes from the checkpoint's \
            metadata. Prints a per-tensor table, or one JSON object with --json.
            """
    )

    @Option(help: ArgumentHelp("Starting checkpoint (safetensors).", valueName: "checkpoint"))
    var from: String

    @Option(help: ArgumentHelp("Final checkpoint (safetensors).", valueName: "checkpoint"))
    var to: String

    @Option(help: ArgumentHelp("Data: 'digits', 'fashion-mnist', a folder, or an IDX images file (with --labels).", valueName: "name|folder|file"))
    var data: String

    @Option(help: ArgumentHelp("IDX labels file, when --data is an images file.", valueName: "file"))
    var labels: String?

    @Option(help: ArgumentHelp("Model spec; must match the checkpoint's (default: read from it).", valueName: "spec"))
    var model: String?

    @Option(help: "Loss to allocate: ce or mse (default: the checkpoint's).")
    var loss: Loss?

    @Option(name: .customLong("lca-threshold"), help: ArgumentHelp("Refine while |residual| exceeds this many nats. (default: 0.001)", valueName: "x"))
    var lcaThreshold: Double?

    @Option(name: .customLong("lca-max-subintervals"), help: ArgumentHelp("Cap on Simpson sub-intervals: 2, 4, 8, 16 or 32. (default: 32)", valueName: "n"))
    var lcaMaxSubintervals: Int?

    @Option(help: ArgumentHelp("Examples per evaluation chunk. (default: the most that fit --memory-budget, at most 1000; a multiple of --bn-group for nets with batch norm)", valueName: "n"))
    var evalChunk: Int?

    @Option(help: ArgumentHelp("Batch norm under LCA: normalise the evaluation set in groups of this many examples. (default: 250)", valueName: "n"))
    var bnGroup: Int?

    @Option(help: ArgumentHelp("Workspace the automatic evaluation chunk may use, in bytes or with a K, M or G suffix. (default: 1G)", valueName: "bytes"))
    var memoryBudget: String?

    @Option(help: ArgumentHelp("Hold out a validation split as `lca train --seed S --validation SIZE` does and evaluate on the rest: a count or a fraction in (0, 1).", valueName: "size|fraction"))
    var validation: String = "0"

    @Option(help: ArgumentHelp("Seed of the validation split. (default: 1)", valueName: "n"))
    var seed: UInt64?

    @Option(help: ArgumentHelp("Threads for the core (0 = OpenMP default); results do not depend on it.", valueName: "n"))
    var threads: Int?

    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    mutating func validate() throws {
        if let lcaThreshold, !(lcaThreshold >= 0) { throw ValidationError("--lca-threshold must be >= 0") }
        if let n = lcaMaxSubintervals, ![2, 4, 8, 16, 32].contains(n) {
            throw ValidationError("--lca-max-subintervals must be 2, 4, 8, 16 or 32")
        }
        if let evalChunk, evalChunk < 1 { throw ValidationError("--eval-chunk must be at least 1") }
        if let bnGroup, bnGroup < 1 { throw ValidationError("--bn-group must be at least 1") }
        if let memoryBudget, ByteCount.parse(memoryBudget) == nil {
            throw ValidationError("--memory-budget must be a positive byte count such as 512M or 2G, not '\(memoryBudget)'")
        }
        if let threads, threads < 0 { throw ValidationError("--threads must be >= 0") }
        guard let size = ValidationSize(parsing: validation), size != .automatic else {
            throw ValidationError("--validation must be a count (0 = none) or a fraction in (0, 1), not '\(validation)'")
        }
    }

    func run() throws {
        try Report.failures {
            if let threads { Core.threads = threads }
            var configuration = TrainingConfiguration()
            if let lcaThreshold { configuration.lcaThreshold = lcaThreshold }
            if let lcaMaxSubintervals { configuration.lcaMaxSubintervals = lcaMaxSubintervals }
            if let evalChunk { configuration.evalChunk = evalChunk }
        if let bnGroup { configuration.bnGroup = bnGroup }
        if let memoryBudget, let bytes = ByteCount.parse(memoryBudget) { configuration.memoryBudget = bytes }
            if let seed { configuration.seed = seed }
            configuration.validation = ValidationSize(parsing: validation)!
            let dataset = try Dataset(source: data, labels: labels)
            let result = try attribute(from: from, to: to, data: dataset, modelSpec: model, loss: loss,
                                       configuration: configuration)
            try Output.stdout(json ? result.json + "\n" : result.table)
        }
    }
}
