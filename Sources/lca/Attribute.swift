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
            training split left by --validation. The model spec comes from the checkpoints' \
            metadata, or from --model for checkpoints saved by other tools such as PyTorch \
            (docs/checkpoints.md); F16, BF16 and F64 tensors are converted to F32, with a note \
            on stderr. Prints a per-tensor table, or one JSON object with --json.
            """
    )

    @Option(help: ArgumentHelp("Starting checkpoint (safetensors).", valueName: "checkpoint"))
    var from: String

    @Option(help: ArgumentHelp("Final checkpoint (safetensors).", valueName: "checkpoint"))
    var to: String

    @Option(help: ArgumentHelp(Defaults.dataSources, valueName: "name|folder|file"))
    var data: String

    @Option(help: ArgumentHelp("IDX labels file, when --data is an images file.", valueName: "file"))
    var labels: String?

    @Option(help: ArgumentHelp("Model spec; required when the checkpoint's metadata has none (saved by PyTorch), else it must describe the same model as the metadata (default: the metadata's).", valueName: "spec"))
    var model: String?

    @Option(help: "Loss to allocate: ce or mse (default: the checkpoint's, ce when its metadata has none).")
    var loss: Loss?

    @OptionGroup var integrator: IntegratorOptions

    @Option(help: ArgumentHelp("Hold out a validation split as `lca train --seed S --validation SIZE` does and evaluate on the rest: a count or a fraction in (0, 1).", valueName: "size|fraction"))
    var validation: String = "0"

    @Option(help: ArgumentHelp("Seed of the validation split. \(Defaults.note(Defaults.configuration.seed))", valueName: "n"))
    var seed: UInt64?

    @Option(help: ArgumentHelp("Threads for the core (0 = OMP_NUM_THREADS if set, else the CPUs available); results do not depend on it.", valueName: "n"))
    var threads: Int?

    @Option(help: ArgumentHelp("Split the LCA by loss group: 'class' (the labels) or a FILE of one group id per example of --data (IDX unsigned byte or int32, or .npy of uint8, int32 or int64), as lca train --groups.", valueName: "class|file"))
    var groups: String?

    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    mutating func validate() throws {
        if let threads, threads < 0 { throw ValidationError("--threads must be >= 0") }
        guard let size = ValidationSize(parsing: validation), size != .automatic else {
            throw ValidationError("--validation must be a count (0 = none) or a fraction in (0, 1), not '\(validation)'")
        }
    }

    func run() throws {
        try Report.failures {
            if let threads { Core.threads = threads }
            var configuration = TrainingConfiguration()
            integrator.apply(to: &configuration)
            if let seed { configuration.seed = seed }
            configuration.validation = ValidationSize(parsing: validation)!
            let dataset = try Dataset(source: data, labels: labels)
            if let groups { configuration.exampleGroups = try ExampleGroups.parse(groups, data: dataset) }
            var noted: Set<String> = [] // once per file, also when --from and --to are the same
            let result = try attribute(from: from, to: to, data: dataset, modelSpec: model, loss: loss,
                                       configuration: configuration) { conversion in
                if let notice = conversion.notice, noted.insert(conversion.path).inserted { Output.stderr(notice) }
            }
            try Output.stdout(json ? result.json + "\n" : result.table)
        }
    }
}
