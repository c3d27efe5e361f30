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
        try TrainingRun(recipe: recipe, folder: whole).run()

        let parts = RunFolder(path: folder.appendingPathComponent("parts").path)
        var steps = 0
        try TrainingRun(recipe: recipe, folder: parts).run(progress: { _ in steps += 1 }, shouldStop: { steps >= 3 })
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

    /// The attribution of one step between two checkpoints reproduces the
    /// trainer's record of that step (same evaluation set, same integrator).
    func testAttributionMatchesTheTrainersRecord() throws {
        let folder = try temporaryFolder("attribute", testCase: self)
        var recipe = RunRecipe(data: DataSource(source: "digits"))
        recipe.configuration.iterations = 3
        recipe.saveEvery = 1
        let run = RunFolder(path: folder.path)
        try TrainingRun(recipe: recipe, folder: run).run()
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
