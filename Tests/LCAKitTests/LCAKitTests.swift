import Foundation
import LCAKit
import XCTest

/// End-to-end checks of the library on the embedded digits set.
final class LCAKitTests: XCTestCase {
    /// Trains the default digits net through LCAKit and checks every
    /// record's invariants: |residual| ≤ threshold or flagged; Σ per-tensor
    /// LCA == lca_total exactly; residual == loss_after − loss_before −
    /// lca_total exactly; consecutive losses chain.
    func testDigitsRunInvariants() throws {
        let data = try Dataset(source: "digits")
        XCTAssertEqual(data.count, 1797)
        XCTAssertEqual(data.features, 64)
        XCTAssertEqual(data.classes, 10)
        let model = try Model(spec: data.defaultModelSpec)
        XCTAssertEqual(model.spec, "64-32-10")
        XCTAssertEqual(model.parameterCount, 64 * 32 + 32 + 32 * 10 + 10)
        XCTAssertEqual(model.tensors.map(\.name), ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"])
        XCTAssertEqual(model.tensors[0].shape, [32, 64])
        model.initialize(seed: 1)

        var configuration = TrainingConfiguration()
        configuration.iterations = 21
        let trainer = try Trainer(model: model, data: data, configuration: configuration)
        XCTAssertEqual(trainer.trainingCount + trainer.validationCount, 1797)
        XCTAssertEqual(trainer.iterationsPerEpoch, 7)
        XCTAssertGreaterThan(trainer.memoryBytes, model.parameterCount * 4)

        var summary = RunSummary(trainer: trainer)
        var worstResidual = 0.0, worstSumError = 0.0, worstResidualIdentity = 0.0
        var previousLossAfter: Double?
        var failures: [String] = []
        for _ in 0..<configuration.iterations {
            let record = try trainer.step()
            summary.add(record)
            let v = record.train
            let sum = v.tensorLCA.reduce(0, +)
            let identity = v.lossAfter - v.lossBefore - v.lcaTotal
            worstResidual = max(worstResidual, abs(v.residual))
            worstSumError = max(worstSumError, abs(sum - v.lcaTotal))
            worstResidualIdentity = max(worstResidualIdentity, abs(identity - v.residual))
            if !(abs(v.residual) <= configuration.lcaThreshold || v.residualAboveThreshold) {
                failures.append("iteration \(record.iteration): |residual| \(abs(v.residual)) above threshold and not flagged")
            }
            if sum != v.lcaTotal {
                failures.append("iteration \(record.iteration): Σ tensor LCA \(sum) != lca_total \(v.lcaTotal)")
            }
            if identity != v.residual {
                failures.append("iteration \(record.iteration): loss_after − loss_before − lca_total = \(identity), residual \(v.residual)")
            }
            if let previousLossAfter, previousLossAfter != v.lossBefore {
                failures.append("iteration \(record.iteration): loss_before \(v.lossBefore) != previous loss_after \(previousLossAfter)")
            }
            if !(2...32).contains(v.subintervals) {
                failures.append("iteration \(record.iteration): \(v.subintervals) sub-intervals")
            }
            let counted = zip(zip(v.tensorHelped, v.tensorHurt), v.tensorZero).map { $0.0 + $0.1 + $1 }
            if counted != model.tensors.map({ UInt64($0.count) }) {
                failures.append("iteration \(record.iteration): helped + hurt + zero \(counted) != tensor sizes")
            }
            previousLossAfter = v.lossAfter
        }
        print("digits run: worst |residual| \(worstResidual), worst |Σ tensor − total| \(worstSumError), worst residual identity error \(worstResidualIdentity)")
        XCTAssert(failures.isEmpty, failures.prefix(10).joined(separator: "\n"))
        XCTAssertEqual(trainer.iteration, 21)

        summary.finish(wallSeconds: 1)
        let view = try XCTUnwrap(summary.train)
        XCTAssertLessThan(view.lossLast, view.lossFirst, "training should lower the loss")
        XCTAssertLessThanOrEqual(abs(view.conservationError), 1e-12, "Σ LCA + Σ residual vs loss change: off by \(view.conservationError)")
        XCTAssert(summary.table.contains("fc1.weight"))
        let decoded = try JSONFormat.decoder().decode(RunSummary.self, from: Data(summary.jsonString().utf8))
        XCTAssertEqual(decoded.train?.lcaTotal, view.lcaTotal)

        // the per-parameter totals add up to the run's per-tensor sums
        let totals = trainer.lcaTotals
        for (index, tensor) in model.tensors.enumerated() {
            let fromTotals = totals[tensor.offset..<(tensor.offset + tensor.count)].reduce(0, +)
            let difference = abs(fromTotals - view.tensors[index].lca)
            XCTAssertLessThanOrEqual(difference, 1e-9 * max(1, abs(fromTotals)), "\(tensor.name): totals \(fromTotals) vs Σ records \(view.tensors[index].lca)")
        }
    }

    /// Same seed, one thread or two: identical records.
    func testThreadCountDoesNotChangeRecords() throws {
        func records(threads: Int) throws -> [IterationRecord] {
            Core.threads = threads
            defer { Core.threads = 0 }
            let data = try Dataset(source: "digits")
            let model = try Model(spec: "64-16-10")
            model.initialize(seed: 7)
            var configuration = TrainingConfiguration()
            configuration.seed = 7
            configuration.iterations = 5
            configuration.batchSize = 100
            configuration.lcaValidationView = true
            configuration.evalChunk = 300
            let trainer = try Trainer(model: model, data: data, configuration: configuration)
            return try (0..<5).map { _ in try trainer.step() }
        }
        let one = try records(threads: 1), two = try records(threads: 2)
        for (a, b) in zip(one, two) where a != b {
            XCTFail("iteration \(a.iteration): 1 thread lca_total \(a.train.lcaTotal), 2 threads \(b.train.lcaTotal)")
        }
        XCTAssertNotNil(one.last?.validation)
    }

    /// A stopped run resumed from its state gives the same log and weights
    /// as a run that never stopped.
    func testResumeReproducesTheRun() throws {
        let folder = try temporaryFolder("resume", testCase: self)
        var recipe = RunRecipe(data: DataSource(source: "digits"))
        recipe.configuration.iterations = 6
        recipe.configuration.batchSize = 200
        recipe.saveEvery = 2
        let whole = RunFolder(path: folder.appendingPathComponent("whole").path)
        try TrainingRun(recipe: recipe, outputs: RunOutputs(folder: whole)).run()

        let parts = RunFolder(path: folder.appendingPathComponent("parts").path)
        var steps = 0
        try TrainingRun(recipe: recipe, outputs: RunOutputs(folder: parts)).run { _, control in
            steps += 1
            if steps >= 3 { control.stop() }
        }
        XCTAssert(FileManager.default.fileExists(atPath: parts.checkpoint(iteration: 3)))
        let resumed = try TrainingRun(resuming: parts)
        XCTAssertEqual(resumed.trainer.iteration, 3)
        let summary = try resumed.run()
        XCTAssertEqual(summary.iterations, 6, "the summary of a resumed run covers the whole run")

        for name in ["lca.log", "checkpoint-000006.safetensors", "state.safetensors", "lca-total.safetensors", "lca-helped.safetensors"] {
            let a = try contents(URL(fileURLWithPath: whole.path + "/" + name))
            let b = try contents(URL(fileURLWithPath: parts.path + "/" + name))
            XCTAssertEqual(a, b, "\(name) differs after resume (\(a.count) vs \(b.count) bytes)")
        }
        let log = try LogReader(path: whole.log)
        XCTAssertEqual(log.records.map(\.iteration), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(log.header.model.spec, "64-32-10")
    }

    // MARK: Network

    /// `Network` round-trips through the spec string: the core's layers of
    /// a spec, rendered, give the canonical spec the core prints; parsing
    /// that again gives the same network; every layer kind of docs/models.md
    /// appears.
    func testNetworkRoundTrip() throws {
        let specs = ["fc", "lenet", "resnet20", "64-32-10", "784-100-50-10", "64-10", "3-200-200-200-1",
                     "input(784) dense(100) relu dense(50) relu dense(10)",
                     "input(1,28,28) conv(20,5) relu maxpool(2) conv(40,5) relu maxpool(2) dropout(0.25) dense(400) relu dropout(0.5) dense(10)",
                     "input(3,32,32) conv(16,3) bn relu block(16) block(16) block(16) block(32,stride=2) block(32) block(32) block(64,stride=2) block(64) block(64) gap dense(10)",
                     "input(3,32,32) conv(8,3,stride=2,valid) bn relu maxpool(3,stride=1) avgpool(2) dropout(0.1) flatten block(8) block(12,stride=2) avgpool(2,stride=1) fc(10)",
                     "input(2,9,9) conv(4,3,same) avgpool(3,stride=2) gap dense(3)"]
        var kinds = Set<String>()
        for spec in specs {
            // mean squared error: a model of one output is a valid MLP too
            let mse = Loss.meanSquaredError
            let network = try Network(spec: spec, loss: mse)
            XCTAssertEqual(network.spec, try Model(spec: spec, loss: mse).spec, "\(spec): the spec the core prints")
            XCTAssertEqual(try Network(spec: network.spec, loss: mse), network, spec)
            let rebuilt = Network(layers: network.layers, loss: mse)
            XCTAssertEqual(rebuilt.layers, network.layers, spec)
            XCTAssertEqual(try Model(spec: rebuilt.spec, loss: mse).spec, rebuilt.spec, "\(spec): rendered \(rebuilt.spec)")
            XCTAssertEqual(try Network(spec: rebuilt.spec, loss: mse).layers, network.layers, "\(spec): rendered \(rebuilt.spec)")
            XCTAssertEqual(try Model(spec: rebuilt.spec, loss: mse).parameterCount, try Model(spec: spec, loss: mse).parameterCount, spec)
            for layer in network.layers { kinds.insert(String(layer.description.prefix { $0 != "(" })) }
        }
        XCTAssertEqual(kinds, ["input", "dense", "conv", "relu", "maxpool", "avgpool", "gap", "bn", "dropout", "flatten", "block"])
        // the rendering: dashes for an MLP, defaults left out, built-in names kept
        XCTAssertEqual(try Network(spec: "input(784) dense(100) relu dense(50) relu dense(10)").layers,
                       try Network(spec: "fc").layers)
        XCTAssertEqual(Network(layers: try Network(spec: "fc").layers).spec, "784-100-50-10")
        XCTAssertEqual(try Network(spec: "fc").spec, "784-100-50-10")
        XCTAssertEqual(try Network(spec: "lenet").spec, "lenet")
        XCTAssertEqual(Network(layers: try Network(spec: "lenet").layers).spec,
                       "input(1,28,28) conv(20,5) relu maxpool(2) conv(40,5) relu maxpool(2) dropout(0.25) dense(400) relu dropout(0.5) dense(10)")
        XCTAssertEqual(Network(layers: try Network(spec: "resnet20").layers).spec,
                       "input(3,32,32) conv(16,3) bn relu block(16) block(16) block(16) block(32,stride=2) block(32) block(32) block(64,stride=2) block(64) block(64) gap dense(10)")
        XCTAssertEqual(Network.mlp([64, 32, 10]).spec, "64-32-10")
        XCTAssertEqual(Network.mlp([64, 32, 10]).layers, [.input(64), .dense(32), .relu, .dense(10)])
        XCTAssertEqual(Network(layers: [.input(channels: 1, height: 8, width: 8), .conv(channels: 4, kernel: 3, stride: 2, padding: .valid),
                                        .relu, .maxpool(2), .dense(10)]).spec,
                       "input(1,8,8) conv(4,3,stride=2,valid) relu maxpool(2) dense(10)")
        XCTAssertEqual(try Network(spec: "64-32-10").layers, [.input(64), .dense(32), .relu, .dense(10)])
        XCTAssertThrowsError(try Network(spec: "input(3) nope")) { XCTAssertEqual(($0 as? LCAError)?.code, .invalidArgument) }
        // Codable: spec and loss; the layers come back from the core
        let lenet = try Network(spec: "lenet", loss: .meanSquaredError)
        XCTAssertEqual(try JSONDecoder().decode(Network.self, from: try JSONEncoder().encode(lenet)), lenet)
    }

    // MARK: the run type

    private func smallRecipe(iterations: Int = 6, saveEvery: Int = 2) -> RunRecipe {
        var recipe = RunRecipe(data: DataSource(source: "digits"))
        recipe.configuration.iterations = iterations
        recipe.configuration.batchSize = 200
        recipe.configuration.lcaValidationView = true
        recipe.configuration.lcaUnits = true
        recipe.saveEvery = saveEvery
        return recipe
    }

    /// Every combination of outputs writes the same log bytes as the plain
    /// folder run: folder + callback + TensorBoard, a log path and callback
    /// without a folder, TensorBoard only, nothing; the callback sees in
    /// place exactly the records the log holds; the summaries agree.
    func testRunOutputsCombinations() throws {
        let folder = try temporaryFolder("outputs", testCase: self)
        let recipe = smallRecipe()
        let plain = RunFolder(path: folder.appendingPathComponent("plain").path)
        let plainSummary = try TrainingRun(recipe: recipe, outputs: RunOutputs(folder: plain)).run()
        let reference = try contents(URL(fileURLWithPath: plain.log))
        let records = try LogReader(path: plain.log).records
        XCTAssertEqual(records.count, 6)

        // folder + callback + TensorBoard
        let all = RunFolder(path: folder.appendingPathComponent("all").path)
        let board = folder.appendingPathComponent("tb").path
        var seen: [IterationRecord] = []
        let allSummary = try TrainingRun(recipe: recipe, outputs: RunOutputs(folder: all, tensorBoard: board)).run { record, _ in
            seen.append(record.copy())
        }
        XCTAssertEqual(try contents(URL(fileURLWithPath: all.log)), reference, "folder + callback + TensorBoard: lca.log")
        XCTAssertEqual(seen, records, "the callback's records are the log's")
        for name in ["checkpoint-000000.safetensors", "checkpoint-000002.safetensors", "checkpoint-000006.safetensors",
                     "state.safetensors", "lca-total.safetensors", "config.json", "summary.txt"] {
            XCTAssertEqual(try contents(URL(fileURLWithPath: all.path + "/" + name)).count > 0, true, name)
            if name.hasSuffix(".safetensors") {
                XCTAssertEqual(try contents(URL(fileURLWithPath: all.path + "/" + name)),
                               try contents(URL(fileURLWithPath: plain.path + "/" + name)), name)
            }
        }
        let events = try FileManager.default.contentsOfDirectory(atPath: board).filter { $0.hasPrefix("events.out.tfevents.") }
        XCTAssertEqual(events.count, 1)
        let eventBytes = try contents(URL(fileURLWithPath: board + "/" + events[0]))
        XCTAssertGreaterThan(eventBytes.count, 6 * 100, "one event per iteration")
        XCTAssertEqual(allSummary.train, plainSummary.train)
        XCTAssertEqual(allSummary.validation, plainSummary.validation)

        // a log path and a callback, no folder
        let path = folder.appendingPathComponent("only.log").path
        var count = 0
        let logged = try TrainingRun(recipe: recipe, outputs: RunOutputs(log: path))
        XCTAssertNil(logged.folder)
        XCTAssertEqual(logged.logPath, path)
        try logged.run { record, _ in
            count += 1
            XCTAssertEqual(record.train.tensorLCA.reduce(0, +), records[count - 1].train.tensorLCA.reduce(0, +))
        }
        XCTAssertEqual(count, 6)
        XCTAssertEqual(try contents(URL(fileURLWithPath: path)), reference, "log path without a folder")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted(), ["all", "only.log", "plain", "tb"])

        // no output at all: same summary; run runs once
        let bareRun = try TrainingRun(recipe: recipe)
        XCTAssertNil(bareRun.logPath)
        XCTAssertEqual(try bareRun.run().train, plainSummary.train)
        XCTAssertThrowsError(try bareRun.run()) { XCTAssertEqual(($0 as? LCAError)?.code, .state) }
        // stopped before it starts: no iteration, the folder saved at 0
        let early = RunFolder(path: folder.appendingPathComponent("early").path)
        let stopped = try TrainingRun(recipe: recipe, outputs: RunOutputs(folder: early))
        stopped.control.stop()
        XCTAssertEqual(try stopped.run().iterations, 0)
        XCTAssertEqual(try TrainingRun(resuming: early).trainer.iteration, 0)
    }

    /// The log on standard output ("-", as `lca train -o -`), with a run
    /// folder beside it (`--run-dir`) and a callback: the bytes on stdout
    /// are the folder run's lca.log; the folder gets everything but the log.
    func testRunLogToStandardOutputWithCallback() throws {
        let folder = try temporaryFolder("stdoutlog", testCase: self)
        let recipe = smallRecipe()
        let plain = RunFolder(path: folder.appendingPathComponent("plain").path)
        try TrainingRun(recipe: recipe, outputs: RunOutputs(folder: plain)).run()
        let captured = folder.appendingPathComponent("stdout.log").path
        let runDir = RunFolder(path: folder.appendingPathComponent("rundir").path)
        var iterations: [UInt64] = []
        // standard output goes to a file while the run writes to it
        fflush(nil)
        let saved = dup(STDOUT_FILENO)
        let file = open(captured, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        XCTAssertGreaterThanOrEqual(file, 0)
        dup2(file, STDOUT_FILENO)
        close(file)
        let result = Result {
            try TrainingRun(recipe: recipe, outputs: RunOutputs(folder: runDir, log: "-")).run { record, _ in
                iterations.append(record.iteration)
            }
        }
        fflush(nil)
        dup2(saved, STDOUT_FILENO)
        close(saved)
        _ = try result.get()
        XCTAssertEqual(iterations, [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(try contents(URL(fileURLWithPath: captured)), try contents(URL(fileURLWithPath: plain.log)))
        XCTAssertFalse(FileManager.default.fileExists(atPath: runDir.log))
        XCTAssertEqual(try contents(URL(fileURLWithPath: runDir.state)), try contents(URL(fileURLWithPath: plain.state)))
    }

    /// The run stopped from its callback, then resumed (with TensorBoard on
    /// the resumed part), gives the bytes of the run that never stopped:
    /// log, checkpoints, state and totals; the summary covers the whole run.
    func testResumeAfterStopInCallback() throws {
        let folder = try temporaryFolder("stopresume", testCase: self)
        let recipe = smallRecipe(iterations: 7, saveEvery: 3)
        let whole = RunFolder(path: folder.appendingPathComponent("whole").path)
        let wholeSummary = try TrainingRun(recipe: recipe, outputs: RunOutputs(folder: whole)).run()
        let parts = RunFolder(path: folder.appendingPathComponent("parts").path)
        let first = try TrainingRun(recipe: recipe, outputs: RunOutputs(folder: parts)).run { record, control in
            if record.iteration == 4 { control.stop() }
        }
        XCTAssertEqual(first.iterations, 4)
        let resumed = try TrainingRun(resuming: parts, tensorBoard: folder.appendingPathComponent("tb").path)
        XCTAssertEqual(resumed.trainer.iteration, 4)
        var later: [UInt64] = []
        let summary = try resumed.run { record, _ in later.append(record.iteration) }
        XCTAssertEqual(later, [5, 6, 7])
        XCTAssertEqual(summary.iterations, 7)
        XCTAssertEqual(summary.train, wholeSummary.train)
        for name in ["lca.log", "checkpoint-000007.safetensors", "checkpoint-000006.safetensors", "state.safetensors",
                     "lca-total.safetensors", "lca-helped.safetensors"] {
            let a = try contents(URL(fileURLWithPath: whole.path + "/" + name))
            let b = try contents(URL(fileURLWithPath: parts.path + "/" + name))
            XCTAssertEqual(a, b, "\(name) differs after resume (\(a.count) vs \(b.count) bytes)")
        }
    }

    /// A run folder whose log was damaged fails to resume with an error
    /// naming the log and the byte offset, not a partial summary: a log cut
    /// inside the records before the state, and a log whose header was
    /// overwritten.
    func testResumeOfADamagedLogNamesFileAndOffset() throws {
        let folder = try temporaryFolder("damaged", testCase: self)
        let recipe = smallRecipe(iterations: 6, saveEvery: 3)
        let run = RunFolder(path: folder.path + "/run")
        try TrainingRun(recipe: recipe, outputs: RunOutputs(folder: run)).run { record, control in
            if record.iteration == 4 { control.stop() }
        }
        let bytes = try contents(URL(fileURLWithPath: run.log))
        let stream = try LogStream(path: run.log)
        let recordsStart = stream.offset, recordSize = stream.header.recordSize
        // cut in the middle of record 2: the state is at iteration 4
        try bytes.prefix(recordsStart + recordSize + recordSize / 2).write(to: URL(fileURLWithPath: run.log))
        XCTAssertThrowsError(try TrainingRun(resuming: run)) { error in
            let error = error as? LCAError
            XCTAssertEqual(error?.kind, .missingRecords, "\(String(describing: error))")
            XCTAssertEqual(error?.path, run.log)
            XCTAssertEqual(error?.offset, recordsStart + recordSize)
            XCTAssert(error?.description.hasPrefix("\(run.log): byte \(recordsStart + recordSize): ") == true, "\(String(describing: error))")
        }
        // a damaged header
        var broken = bytes
        broken[0] = 0x50
        try broken.write(to: URL(fileURLWithPath: run.log))
        XCTAssertThrowsError(try TrainingRun(resuming: run)) { error in
            let error = error as? LCAError
            XCTAssertEqual(error?.kind, .badMagic)
            XCTAssertEqual(error?.path, run.log)
            XCTAssertEqual(error?.offset, 0)
        }
        // the files are left as they were: nothing was cut back
        XCTAssertEqual(try contents(URL(fileURLWithPath: run.log)), broken)
    }

    /// The attribution of one step between two checkpoints reproduces the
    /// trainer's record of that step (same evaluation set, same integrator).
    func testAttributionMatchesTheTrainersRecord() throws {
        let folder = try temporaryFolder("attribute", testCase: self)
        var recipe = RunRecipe(data: DataSource(source: "digits"))
        recipe.configuration.iterations = 3
        recipe.saveEvery = 1
        let run = RunFolder(path: folder.path)
        try TrainingRun(recipe: recipe, outputs: RunOutputs(folder: run)).run()
        let log = try LogReader(path: run.log)
        var configuration = TrainingConfiguration()
        configuration.validation = .count(179)
        let data = try Dataset(source: "digits")
        let result = try attribute(from: run.checkpoint(iteration: 1), to: run.checkpoint(iteration: 2), data: data,
                                   configuration: configuration)
        let record = log.records[1].train
        XCTAssertEqual(result.examples, 1797 - 179)
        XCTAssertEqual(result.view.lcaTotal, record.lcaTotal, "attribute \(result.view.lcaTotal) vs trainer \(record.lcaTotal)")
        XCTAssertEqual(result.view.lossBefore, record.lossBefore)
        XCTAssertEqual(result.view.lossAfter, record.lossAfter)
        XCTAssertEqual(result.view.tensorLCA, record.tensorLCA)
        // JSONDecoder parses doubles correctly rounded (JSONSerialization on Linux does not)
        struct Totals: Decodable { var lca_total: Double; var residual: Double }
        let decoded = try JSONDecoder().decode(Totals.self, from: Data(result.json.utf8))
        XCTAssertEqual(decoded.lca_total, result.view.lcaTotal, "17 significant digits round-trip")
        XCTAssertEqual(decoded.residual, result.view.residual, "17 significant digits round-trip")
    }

    func testValidationSizeParsing() {
        XCTAssertEqual(ValidationSize(parsing: "0"), .count(0))
        XCTAssertEqual(ValidationSize(parsing: "500"), .count(500))
        XCTAssertEqual(ValidationSize(parsing: "0.1"), .fraction(0.1))
        XCTAssertEqual(ValidationSize(parsing: "default"), .automatic)
        XCTAssertNil(ValidationSize(parsing: "1.5"))
        XCTAssertNil(ValidationSize(parsing: "-3"))
        // rounded down, as the core rounds its default of 10%
        XCTAssertEqual(ValidationSize.fraction(0.1).resolvedCount(exampleCount: 1797), 179)
    }

    func testErrorsCarryTheCoreMessage() {
        XCTAssertThrowsError(try Model(spec: "64-x-10")) { error in
            let error = error as? LCAError
            XCTAssertEqual(error?.code, .invalidArgument)
            XCTAssertFalse(error?.message.isEmpty ?? true)
        }
        XCTAssertThrowsError(try Dataset(source: "/nonexistent/images.idx", labels: "/nonexistent/labels.idx")) { error in
            XCTAssert((error as? LCAError)?.message.contains("/nonexistent/") ?? false, "\(error)")
        }
    }

    /// Data files are streamed: a good gzip file loads like the plain one,
    /// and a cut file (plain or gzip) throws a format error naming the
    /// file, the byte and what was expected.
    func testCutDataFilesNameTheFileAndTheByte() throws {
        let folder = try temporaryFolder("cut-data", testCase: self)
        let count = 50, side = 8
        var images: [UInt8] = [0, 0, 8, 3] + [UInt32(count), UInt32(side), UInt32(side)].flatMap(bigEndianBytes)
        images += (0..<count * side * side).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ $0 / 7) }
        let labels: [UInt8] = [0, 0, 8, 1] + bigEndianBytes(UInt32(count)) + (0..<count).map { UInt8($0 % 10) }
        let imagesURL = folder.appendingPathComponent("images.idx")
        let labelsURL = folder.appendingPathComponent("labels.idx")
        try Data(images).write(to: imagesURL)
        try Data(labels).write(to: labelsURL)
        let gzip = try CLI.shell("gzip -k -n images.idx", in: folder)
        XCTAssertEqual(gzip.status, 0, gzip.stderr)
        let gz = try contents(folder.appendingPathComponent("images.idx.gz"))

        let plain = try Dataset(source: imagesURL.path, labels: labelsURL.path)
        let compressed = try Dataset(source: imagesURL.path + ".gz", labels: labelsURL.path)
        let all = (0..<UInt32(count)).map { $0 }
        XCTAssertEqual(plain.count, count)
        XCTAssertEqual(plain.gather(all).inputs, compressed.gather(all).inputs)
        XCTAssertEqual(plain.gather(all).labels, compressed.gather(all).labels)

        let cutPlain = folder.appendingPathComponent("cut.idx")
        try Data(images.prefix(16 + 100)).write(to: cutPlain)
        let cutGzip = folder.appendingPathComponent("cut.idx.gz")
        try gz.prefix(gz.count / 2).write(to: cutGzip)
        let cases: [(URL, [String])] = [
            (cutPlain, ["cut.idx: byte 116: data ends early", "expected 3200 bytes of images (50 × 64)", "found 100"]),
            (cutGzip, ["cut.idx.gz: byte ", "gzip data stops inside a member", "truncated file?"]),
        ]
        for (url, needles) in cases {
            XCTAssertThrowsError(try Dataset(source: url.path, labels: labelsURL.path)) { error in
                let error = error as? LCAError
                XCTAssertEqual(error?.code, .format)
                for needle in needles {
                    XCTAssert(error?.message.contains(needle) ?? false, "\(needle) not in: \(error?.message ?? "")")
                }
            }
        }
    }
}

private func bigEndianBytes(_ value: UInt32) -> [UInt8] {
    [UInt8(value >> 24), UInt8(truncatingIfNeeded: value >> 16), UInt8(truncatingIfNeeded: value >> 8),
     UInt8(truncatingIfNeeded: value)]
}
