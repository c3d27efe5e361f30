import ArgumentParser
import Foundation
import LCAKit

extension Loss: ExpressibleByArgument {}
extension Optimizer: ExpressibleByArgument {}
extension LogSync: ExpressibleByArgument {}

/// `lca train`: train a model, streaming one LCA record per iteration.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model and measure the LCA of every iteration (the default subcommand).",
        discussion: """
            With no arguments: the 64-32-10 MLP on the embedded 8×8 digits (1,618 training \
            examples after a 179-example validation split), \(Train.defaultEpochs) epochs of \
            \(Train.digitsBatches) minibatches of \(Defaults.configuration.batchSize) \
            (\(Train.defaultEpochs * Train.digitsBatches) iterations), \(Train.defaultOptimizer), \
            lr \(Defaults.number(Defaults.configuration.learningRate)), LCA on the whole training split. \
            The run folder (default runs/<YYYYmmdd-HHMMSS>) receives lca.log, config.json, \
            checkpoints, state.safetensors, the LCA totals and summary.txt; the summary table \
            is printed on stdout.
            """
    )

    /// The 1,618 training examples of the embedded digits (1,797 less the
    /// default validation split of 179) in minibatches of the default size.
    static let digitsBatches = (1_618 + Defaults.configuration.batchSize - 1) / Defaults.configuration.batchSize
    static let defaultEpochs = Defaults.epochs(data: Defaults.data)
    static var defaultOptimizer: String {
        let c = Defaults.configuration
        return c.optimizer == .momentum ? "SGD with momentum \(Defaults.number(c.momentum))" : c.optimizer.rawValue
    }

    // MARK: data and model

    @Option(help: ArgumentHelp("\(Defaults.dataSources) \(Defaults.note(Defaults.data))", valueName: "name|folder|file"))
    var data: String?

    @Option(help: ArgumentHelp("IDX labels file, when --data is an images file.", valueName: "file"))
    var labels: String?

    @Option(help: ArgumentHelp("Model: 'fc' (784-100-50-10), 'lenet', 'resnet20', layer widths joined by '-' (64-32-10), or a layer list such as \"input(1,28,28) conv(20,5) relu maxpool(2) dense(10)\" (docs/models.md). (default: fc for 784-feature data, else <features>-32-<classes>; with --init, the checkpoint's, and then required when its metadata has none, as in files saved by PyTorch, else it must describe the same model)", valueName: "spec"))
    var model: String?

    @Option(help: "Loss: ce (softmax cross-entropy) or mse (mean squared error). (default: \(Defaults.loss); with --init, the checkpoint's, \(Defaults.loss) when its metadata has none)")
    var loss: Loss?

    @Option(help: ArgumentHelp("Start from this checkpoint's weights instead of a fresh initialisation; lca's or another tool's (docs/checkpoints.md: F16, BF16 and F64 tensors are converted to F32, with a note).", valueName: "checkpoint"))
    var `init`: String?

    // MARK: optimisation

    @Option(help: "Optimizer: sgd, momentum or adam. \(Defaults.note(Defaults.configuration.optimizer))")
    var optimizer: Optimizer?

    @Option(name: .customLong("lr"), help: ArgumentHelp("Learning rate. \(Defaults.note(Defaults.configuration.learningRate))", valueName: "rate"))
    var learningRate: Double?

    @Option(help: ArgumentHelp("Momentum μ for --optimizer momentum (PyTorch's convention). \(Defaults.note(Defaults.configuration.momentum))", valueName: "μ"))
    var momentum: Double?

    @Option(help: ArgumentHelp("L2 coefficient λ added to the step's gradient (not to the allocated loss). \(Defaults.note(Defaults.configuration.weightDecay))", valueName: "λ"))
    var weightDecay: Double?

    @Option(help: ArgumentHelp("Minibatch size. \(Defaults.note(Defaults.configuration.batchSize))", valueName: "n"))
    var batchSize: Int?

    @Option(help: ArgumentHelp("Passes over the training split; iterations = epochs × ⌈training / batch⌉. (default: \(Defaults.epochs(data: Defaults.data)) for digits, \(Defaults.epochs(data: "")) otherwise)", valueName: "n"))
    var epochs: Int?

    @Option(help: ArgumentHelp("Total iterations (instead of --epochs).", valueName: "n"))
    var iterations: Int?

    @Option(help: ArgumentHelp("Seed of initialisation, split, subset and shuffles. \(Defaults.note(Defaults.configuration.seed))", valueName: "n"))
    var seed: UInt64?

    @Option(help: ArgumentHelp("Examples held out for validation: a count, a fraction in (0, 1), or 0 for none. (default: min(5000, 10%))", valueName: "size|fraction"))
    var validation: String?

    @Option(parsing: .singleValue, help: ArgumentHelp("Freeze a tensor (learning-rate scale 0); repeatable.", valueName: "tensor"))
    var freeze: [String] = []

    @Option(name: .customLong("lr-scale"), parsing: .singleValue, help: ArgumentHelp("Scale one tensor's learning rate; repeatable.", valueName: "tensor=x"))
    var learningRateScales: [String] = []

    // MARK: LCA

    @Flag(name: .customLong("no-lca"), help: "Train only; compute no LCA.")
    var noLCA = false

    @Option(name: .customLong("lca-subset"), help: ArgumentHelp("Allocate the loss on a seeded subset of this many training examples (0 = the whole training split).", valueName: "n"))
    var lcaSubset: Int?

    @Flag(name: .customLong("lca-validation"), help: "Also allocate the validation loss (a second view of the same steps).")
    var lcaValidation = false

    @OptionGroup var integrator: IntegratorOptions

    @Flag(help: "Per-unit views: add each output unit's LCA (a neuron's incoming weights plus its bias) to every record (log field unit_lca).")
    var units = false

    @Flag(name: .customLong("no-lca-histogram"), help: "Leave the |LCA| histogram (log field lca_histogram, 240 bytes per tensor and view) out of every record.")
    var noLCAHistogram = false

    @Option(help: ArgumentHelp("Split the LCA by loss group: 'class' (the labels) or a FILE of one group id per example of the data (IDX unsigned byte or int32, or .npy of uint8, int32 or int64); every record then holds each group's LCA per tensor, its losses and residual (log fields group_lca, …; docs/method.md).", valueName: "class|file"))
    var groups: String?

    @Flag(name: .customLong("groups-totals"), help: "With --groups: also write lca-group-total.safetensors, each group's per-parameter Σ LCA (tensors <tensor>@<group>, P × G float64).")
    var groupsTotals = false

    // MARK: output

    @Option(name: [.short, .long], help: ArgumentHelp("Run folder, or '-' to write the binary log to stdout (and no folder unless --run-dir). (default: runs/<YYYYmmdd-HHMMSS>)", valueName: "path"))
    var output: String?

    @Option(help: ArgumentHelp("Run folder when -o - sends the log to stdout.", valueName: "dir"))
    var runDir: String?

    @Option(help: ArgumentHelp("Save a checkpoint, the resume state and the totals every k iterations (0 = at the start and end only).", valueName: "k"))
    var saveEvery: Int = 0

    @Option(help: ArgumentHelp("Continue the run in this folder from its state.safetensors, with its config.json.", valueName: "rundir"))
    var resume: String?

    @Option(help: ArgumentHelp("When the log is fsynced: never, checkpoint (at every save, before the resume state) or record (after every record). A killed process loses at most the record in flight with any of them; this decides what survives a power loss.", valueName: "policy"))
    var fsync: LogSync = .checkpoint

    @Option(help: ArgumentHelp("Threads for the core (0 = OMP_NUM_THREADS if set, else the CPUs available); results do not depend on it.", valueName: "n"))
    var threads: Int?

    @Option(help: ArgumentHelp("Also write TensorBoard event files here, live, one event per iteration (tensorboard --logdir DIR).", valueName: "dir"))
    var tensorboard: String?

    @Flag(help: "Print the summary as JSON instead of the table.")
    var json = false

    @Flag(help: "No progress line, no notices.")
    var quiet = false

    mutating func validate() throws {
        if epochs != nil && iterations != nil {
            throw ValidationError("--epochs and --iterations are mutually exclusive")
        }
        if let epochs, epochs < 1 { throw ValidationError("--epochs must be at least 1") }
        if let iterations, iterations < 1 { throw ValidationError("--iterations must be at least 1") }
        if let batchSize, batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if let learningRate, !(learningRate > 0) || !learningRate.isFinite { throw ValidationError("--lr must be a positive number") }
        if let weightDecay, !(weightDecay >= 0) { throw ValidationError("--weight-decay must be >= 0") }
        if let lcaSubset, lcaSubset < 0 { throw ValidationError("--lca-subset must be >= 0") }
        if let threads, threads < 0 { throw ValidationError("--threads must be >= 0") }
        if saveEvery < 0 { throw ValidationError("--save-every must be >= 0") }
        if let validation, ValidationSize(parsing: validation) == nil {
            throw ValidationError("--validation must be a count (0 = none) or a fraction in (0, 1), not '\(validation)'")
        }
        if noLCA && (lcaValidation || lcaSubset != nil || units || groups != nil) {
            throw ValidationError("--no-lca cannot be combined with --lca-validation, --lca-subset, --units or --groups")
        }
        if groupsTotals && groups == nil { throw ValidationError("--groups-totals needs --groups") }
        if runDir != nil && output != "-" {
            throw ValidationError("--run-dir is for -o - (the log on stdout); otherwise use -o DIR")
        }
        for entry in learningRateScales {
            guard let (_, scale) = Self.parseScale(entry), scale >= 0, scale.isFinite else {
                throw ValidationError("--lr-scale expects TENSOR=X with X >= 0, not '\(entry)'")
            }
        }
        if resume != nil {
            let conflicting: [(String, Bool)] = [
                ("--data", data != nil), ("--labels", labels != nil), ("--model", model != nil),
                ("--loss", loss != nil), ("--init", self.`init` != nil), ("--optimizer", optimizer != nil),
                ("--lr", learningRate != nil), ("--momentum", momentum != nil), ("--weight-decay", weightDecay != nil),
                ("--batch-size", batchSize != nil), ("--epochs", epochs != nil), ("--iterations", iterations != nil),
                ("--seed", seed != nil), ("--validation", validation != nil), ("--freeze", !freeze.isEmpty),
                ("--lr-scale", !learningRateScales.isEmpty), ("--no-lca", noLCA), ("--lca-subset", lcaSubset != nil),
                ("--lca-validation", lcaValidation), ("--output", output != nil),
                ("--units", units), ("--no-lca-histogram", noLCAHistogram),
                ("--groups", groups != nil), ("--groups-totals", groupsTotals),
                ("--save-every", saveEvery != 0),
            ]
            let given = conflicting.filter(\.1).map(\.0) + integrator.given
            if !given.isEmpty {
                throw ValidationError("--resume continues a run with the configuration in its config.json; drop \(given.joined(separator: ", "))")
            }
        }
    }

    static func parseScale(_ entry: String) -> (String, Double)? {
        guard let equals = entry.lastIndex(of: "="), let scale = Double(entry[entry.index(after: equals)...]) else { return nil }
        let tensor = String(entry[..<equals])
        return tensor.isEmpty ? nil : (tensor, scale)
    }

    /// The recipe the flags describe.
    func recipe() -> RunRecipe {
        var configuration = TrainingConfiguration()
        if let seed { configuration.seed = seed }
        if let optimizer { configuration.optimizer = optimizer }
        if let learningRate { configuration.learningRate = learningRate }
        if let momentum { configuration.momentum = momentum }
        if let weightDecay { configuration.weightDecay = weightDecay }
        if let batchSize { configuration.batchSize = batchSize }
        if let iterations { configuration.iterations = iterations }
        if let validation { configuration.validation = ValidationSize(parsing: validation)! }
        configuration.lca = !noLCA
        if let lcaSubset { configuration.lcaSubset = lcaSubset }
        configuration.lcaValidationView = lcaValidation
        integrator.apply(to: &configuration)
        configuration.lcaUnits = units
        configuration.lcaHistogram = !noLCAHistogram
        configuration.lcaGroupTotals = groupsTotals
        let scales = freeze.map { TensorScale(tensor: $0, scale: 0) }
            + learningRateScales.compactMap { Self.parseScale($0).map { TensorScale(tensor: $0.0, scale: $0.1) } }
        // Default length: 5 epochs of the small embedded digits set, 1 epoch of anything else.
        let epochCount = iterations == nil ? (epochs ?? Defaults.epochs(data: data ?? Defaults.data)) : nil
        var recipe = RunRecipe(data: DataSource(source: data ?? Defaults.data, labels: labels), model: model, loss: loss ?? Defaults.loss,
                               initCheckpoint: self.`init`, configuration: configuration, learningRateScales: scales,
                               saveEvery: saveEvery, epochs: epochCount)
        recipe.groups = groups
        return recipe
    }

    /// The recipe, with --init's model resolved: --model or the checkpoint's metadata (both
    /// when present must agree; a file saved by PyTorch has none), its loss unless --loss, and
    /// a note when its tensors are converted to F32.
    /// The recipe, with the initial checkpoint's loss when --init is given
    /// without --loss (TrainingRun resolves the model and loads the file).
    func initialRecipe() throws -> RunRecipe {
        var recipe = recipe()
        if let initial = self.`init`, loss == nil {
            recipe.loss = try Model.checkpointSpec(initial, requested: model).loss
        }
        return recipe
    }

    /// The message and exit status (128 + signal) of a run a signal stopped;
    /// it has saved its checkpoint, state, totals and summary.
    func interrupted(_ run: TrainingRun) -> ExitCode {
        let number = Int32(interruptRequested)
        let done = run.trainer.iteration, total = UInt64(run.totalIterations)
        var message = "lca: \(signalName(number)): stopped after iteration \(done) of \(total)"
        if let folder = run.folder {
            message += done < total
                ? "; saved in \(folder.path); continue with: lca train --resume \(folder.path)\n"
                : "; the run had finished and is saved in \(folder.path)\n"
        } else {
            message += "; no run folder, so it cannot be resumed\n"
        }
        Output.stderr(message)
        return ExitCode(128 + number)
    }

    func run() throws {
        try Report.failures {
            if let threads { Core.threads = threads }
            installRunSignalHandlers()
            let run: TrainingRun
            do { run = try makeRun() } catch let error as LCAError where error.kind == .tooManyIterations {
                throw ValidationError("--epochs \(epochs ?? 0): \(error.message)")
            }
            if let notice = run.initialConversion?.notice, !quiet { Output.stderr(notice) }
            if let notice = run.data.classNotice, !quiet { Output.stderr("lca: note: \(notice)\n") }
            try train(run)
        }
    }

    private func makeRun() throws -> TrainingRun {
        let run: TrainingRun
        if let resume {
            run = try TrainingRun(resuming: RunFolder(path: resume), tensorBoard: tensorboard, logSync: fsync,
                                  writes: Ranks.writes)
        } else if !Ranks.writes {
            // MPI: a rank other than 0 trains the same steps and writes nothing (docs/mpi.md)
            run = try TrainingRun(recipe: initialRecipe(), outputs: RunOutputs())
        } else if output == "-" {
            run = try TrainingRun(recipe: initialRecipe(), outputs: RunOutputs(folder: runDir.map(RunFolder.init(path:)),
                                                                        log: "-", tensorBoard: tensorboard, logSync: fsync))
        } else {
            run = try TrainingRun(recipe: initialRecipe(), outputs: RunOutputs(folder: RunFolder(path: output ?? RunFolder.timestamped()),
                                                                        tensorBoard: tensorboard, logSync: fsync))
        }
        return run
    }

    private func train(_ run: TrainingRun) throws {
        // under mpirun stderr is a pipe: a plain line every 10 s instead
        let progress = Progress(total: run.totalIterations, parameters: run.model.parameterCount, enabled: !quiet && Output.stderrIsTerminal,
                                lineEvery: !quiet && Ranks.underLauncher ? .seconds(10) : nil)
        let summary: RunSummary
        // under MPI every rank stops after the same iteration, with the same
        // signal (the largest any rank received): maxOverRanks is a collective
        interruptRequested = Core.maxOverRanks(interruptRequested)
        if interruptRequested != 0 { run.control.stop() }
        do {
            summary = try run.run { record, control in
                progress.update(record)
                interruptRequested = Core.maxOverRanks(interruptRequested)
                if interruptRequested != 0 { control.stop() }
            }
        } catch {
            progress.finish()
            throw error
        }
        progress.finish()
        if Ranks.launched, !quiet {
            Output.stderr(String(format: "lca: %d ranks: %llu evaluation passes, %.3f s on the slowest rank of each, %.3f s on rank 0, %.3f s of CPU on the busiest\n",
                                 Core.rankCount, Core.rankPasses, Core.slowestRankSeconds, Core.ownRankSeconds,
                                 Core.slowestRankCPUSeconds))
        }
        let text = json ? try summary.jsonString() + "\n" : summary.table
        if run.logPath == "-" {
            if !quiet { Output.stderr(text) }
        } else {
            if let folder = run.folder, !quiet, !json { Output.stderr("run folder: \(folder.path)\n") }
            try Output.stdout(text)
        }
        if interruptRequested != 0 { throw interrupted(run) }
    }
}
