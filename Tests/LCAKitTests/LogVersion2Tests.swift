import Foundation
import LCAKit
import XCTest

/// Log version 2 (docs/log-format.md): the zero floor, helping/hurting
/// sums, unmoved counts and the |LCA| histogram; a real version-1 log
/// (Tests/fixtures) read by every reader as before; v1 and v2 of the same
/// run agree on the fields they share.
final class LogVersion2Tests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let fixture = root.appendingPathComponent("Tests/fixtures/v1-digits-64-16-10.lca.log")
    /// The command that wrote the fixture (with main's version-1 writer).
    static let fixtureRun = ["train", "--data", "digits", "--model", "64-16-10", "--iterations", "6", "--batch-size", "32",
                             "--lca-validation", "--units", "--quiet", "-o", "run"]

    /// The fixture reads as version 1: no version-2 values, the same
    /// summary `lca show` printed when it was written, and every reader
    /// and command accepts it.
    func testVersion1FixtureReadsAsBefore() throws {
        let log = try LogReader(path: Self.fixture.path)
        XCTAssertEqual(log.formatVersion, 1)
        XCTAssertEqual(log.header.version, 1)
        XCTAssertNil(log.histogramEdges)
        XCTAssertNil(log.header.zeroFloor)
        XCTAssertEqual(log.records.count, 6)
        for record in log.records {
            for view in [record.train, try XCTUnwrap(record.validation)] {
                XCTAssertNil(view.lcaFloor)
                XCTAssertEqual(view.tensorHelping, [])
                XCTAssertEqual(view.tensorHurting, [])
                XCTAssertEqual(view.tensorUnmoved, [])
                XCTAssertEqual(view.tensorHistogram, [])
                XCTAssertEqual(view.unitLCA.count, 26)
            }
        }
        let folder = try temporaryFolder("v1-fixture", testCase: self)
        let shown = try CLI.run(["show", Self.fixture.path], in: folder)
        XCTAssertEqual(shown.status, 0, shown.stderr)
        let expected = try String(contentsOf: Self.root.appendingPathComponent("Tests/fixtures/v1-digits-64-16-10.show.txt"), encoding: .utf8)
        XCTAssertEqual(shown.stdoutText, expected)
        let verified = try CLI.run(["verify", Self.fixture.path], in: folder)
        XCTAssertEqual(verified.status, 0, verified.stderr)
        for target in ["csv", "jsonl", "npy"] {
            let result = try CLI.run(["export", Self.fixture.path, "--to", target, "-o", "out.\(target)"], in: folder)
            XCTAssertEqual(result.status, 0, "\(target): \(result.stderr)")
        }
        let csv = try String(contentsOf: folder.appendingPathComponent("out.csv"), encoding: .utf8)
        let columns = csv.split(separator: "\n")[0].split(separator: ",")
        XCTAssert(columns.contains("fc1.weight.helped"))
        XCTAssertFalse(columns.contains { $0.contains("helping") || $0.contains("histogram") || $0.contains("floor") })
        let board = try CLI.run(["export", Self.fixture.path, "--to", "tensorboard", "-o", "tb"], in: folder)
        XCTAssertEqual(board.status, 0, board.stderr)
    }

    /// The same run written today (version 2) agrees with the version-1
    /// fixture on every shared field (the FMA kernel families give the same
    /// bytes, docs/kernels.md): bit for bit for what the ends of a step
    /// give (losses, first-order LCA, sub-intervals); the allocated LCA
    /// within 1e-6 of the record's largest |tensor LCA|, since the passes
    /// inside a step interpolate an MLP's first layer (docs/method.md,
    /// "The first layer along the step"), which rounds differently from the
    /// product the fixture's run computed. `helped`/`hurt` can only lose
    /// the parameters within the floor to `zero`.
    func testVersion1AndVersion2AgreeOnSharedFields() throws {
        if ProcessInfo.processInfo.environment["LCA_KERNEL"] == "portable" {
            throw XCTSkip("the fixture was written with an FMA kernel family")
        }
        let folder = try temporaryFolder("v1-v2", testCase: self)
        let result = try CLI.run(Self.fixtureRun, in: folder)
        XCTAssertEqual(result.status, 0, result.stderr)
        let v1 = try LogReader(path: Self.fixture.path)
        let v2 = try LogReader(path: folder.appendingPathComponent("run/lca.log").path)
        XCTAssertEqual(v2.formatVersion, 2)
        XCTAssertEqual(v2.histogramEdges?.count, 29)
        XCTAssertEqual(v2.header.tensors, v1.header.tensors)
        XCTAssertEqual(v2.header.units, v1.header.units)
        XCTAssertEqual(v2.records.count, v1.records.count)
        var moved = 0, worstAllocated = 0.0
        for (a, b) in zip(v1.records, v2.records) {
            XCTAssertEqual(a.iteration, b.iteration)
            XCTAssertEqual(a.epoch, b.epoch)
            XCTAssertEqual(a.batchLoss.bitPattern, b.batchLoss.bitPattern)
            for (x, y) in [(a.train, b.train), (try XCTUnwrap(a.validation), try XCTUnwrap(b.validation))] {
                for (p, q) in [(x.lossBefore, y.lossBefore), (x.lossAfter, y.lossAfter),
                               (x.firstOrderTotal, y.firstOrderTotal)] {
                    XCTAssertEqual(p.bitPattern, q.bitPattern, "iteration \(a.iteration)")
                }
                XCTAssertEqual(x.subintervals, y.subintervals)
                XCTAssertEqual(x.residualAboveThreshold, y.residualAboveThreshold)
                XCTAssertEqual(x.tensorFirstOrder.map(\.bitPattern), y.tensorFirstOrder.map(\.bitPattern))
                let scale = x.tensorLCA.map(abs).max() ?? 0, tolerance = 1e-6 * scale
                let allocated = [(x.lcaTotal, y.lcaTotal), (x.residual, y.residual)]
                    + Array(zip(x.tensorLCA, y.tensorLCA)) + Array(zip(x.unitLCA, y.unitLCA))
                let worst = allocated.map { abs($0.0 - $0.1) }.max() ?? 0
                worstAllocated = max(worstAllocated, worst / max(scale, .leastNonzeroMagnitude))
                XCTAssertLessThanOrEqual(worst, tolerance, "iteration \(a.iteration): allocated LCA")
                XCTAssertEqual(x.tensorLCA.count, y.tensorLCA.count)
                XCTAssertEqual(x.unitLCA.count, y.unitLCA.count)
                for t in 0..<x.tensorLCA.count {
                    XCTAssertLessThanOrEqual(y.tensorHelped[t], x.tensorHelped[t])
                    XCTAssertLessThanOrEqual(y.tensorHurt[t], x.tensorHurt[t])
                    XCTAssertEqual(x.tensorHelped[t] + x.tensorHurt[t] + x.tensorZero[t], y.tensorHelped[t] + y.tensorHurt[t] + y.tensorZero[t])
                    moved += Int(y.tensorZero[t] - x.tensorZero[t])
                }
                XCTAssertNotNil(y.lcaFloor)
            }
        }
        print("v1 → v2: \(moved) parameter-iterations moved into zero by the floor; allocated LCA: worst difference "
              + "\(worstAllocated) of the record's largest |tensor LCA| (tolerance 1e-6)")
    }

    /// The invariants of every version-2 record, from the reader's values:
    /// the floor is 2⁻³⁰ of something (finite, ≥ 0); helping ≤ 0 ≤
    /// hurting; lca = helping + hurting + a rest within zero · floor; the
    /// histogram's bins add up to helped and hurt per tensor; unmoved ≤
    /// zero, and a frozen tensor is wholly unmoved.
    func testVersion2InvariantsAndFrozenTensor() throws {
        let folder = try temporaryFolder("v2-invariants", testCase: self)
        let result = try CLI.run(["train", "--iterations", "8", "--batch-size", "100", "--freeze", "fc2.bias", "--lca-validation",
                                  "--quiet", "-o", "run"], in: folder)
        XCTAssertEqual(result.status, 0, result.stderr)
        let log = try LogReader(path: folder.appendingPathComponent("run/lca.log").path)
        let t = log.header.tensors.count
        let frozen = try XCTUnwrap(log.header.tensors.firstIndex { $0.name == "fc2.bias" })
        for record in log.records {
            for v in [record.train, try XCTUnwrap(record.validation)] {
                let floor = try XCTUnwrap(v.lcaFloor)
                XCTAssert(floor.isFinite && floor >= 0)
                XCTAssertEqual(v.tensorHistogram.count, t * 2 * 30)
                for i in 0..<t {
                    XCTAssertLessThanOrEqual(v.tensorHelping[i], 0)
                    XCTAssertGreaterThanOrEqual(v.tensorHurting[i], 0)
                    let rest = v.tensorLCA[i] - v.tensorHelping[i] - v.tensorHurting[i]
                    // the rounding of three float64 sums of at most count terms (n·ε/2 each)
                    let count = Double(log.header.tensors[i].count)
                    let bound = Double(v.tensorZero[i]) * floor
                        + 3 * (count + 2) * Double.ulpOfOne / 2 * (v.tensorHurting[i] - v.tensorHelping[i] + Double(v.tensorZero[i]) * floor)
                    XCTAssertLessThanOrEqual(abs(rest), bound, "iteration \(record.iteration) tensor \(i)")
                    let helping = try XCTUnwrap(v.histogram(tensor: i, hurting: false)).reduce(UInt64(0)) { $0 + UInt64($1) }
                    let hurting = try XCTUnwrap(v.histogram(tensor: i, hurting: true)).reduce(UInt64(0)) { $0 + UInt64($1) }
                    XCTAssertEqual(helping, v.tensorHelped[i])
                    XCTAssertEqual(hurting, v.tensorHurt[i])
                    XCTAssertLessThanOrEqual(v.tensorUnmoved[i], v.tensorZero[i])
                }
                XCTAssertEqual(v.tensorUnmoved[frozen], UInt64(log.header.tensors[frozen].count))
                XCTAssertEqual(v.tensorLCA[frozen], 0)
            }
        }
        let verified = try CLI.run(["verify", folder.appendingPathComponent("run/lca.log").path], in: folder)
        XCTAssertEqual(verified.status, 0, verified.stderr + verified.stdoutText)
    }

    /// `--no-lca-histogram` (and `TrainingConfiguration.lcaHistogram`)
    /// leaves the histogram out: `"lca_histogram": null`, records 240
    /// bytes per tensor smaller, every other value the same.
    func testNoHistogram() throws {
        let folder = try temporaryFolder("v2-no-histogram", testCase: self)
        for (name, extra) in [("with", [String]()), ("without", ["--no-lca-histogram"])] {
            let result = try CLI.run(["train", "--iterations", "3", "--quiet", "-o", name] + extra, in: folder)
            XCTAssertEqual(result.status, 0, result.stderr)
        }
        let with = try LogReader(path: folder.appendingPathComponent("with/lca.log").path)
        let without = try LogReader(path: folder.appendingPathComponent("without/lca.log").path)
        XCTAssertNil(without.histogramEdges)
        XCTAssert(without.headerText.contains("\"lca_histogram\": null"), without.headerText)
        XCTAssertEqual(with.histogramEdges?.first, 1e-14)
        XCTAssertEqual(with.histogramEdges?.last, 1)
        XCTAssertEqual(with.header.recordSize - without.header.recordSize, 240 * with.header.tensors.count)
        for (a, b) in zip(with.records, without.records) {
            XCTAssertEqual(b.train.tensorHistogram, [])
            var stripped = a
            stripped.train.tensorHistogram = []
            XCTAssertEqual(stripped, b)
        }
        var configuration = TrainingConfiguration()
        XCTAssertTrue(configuration.lcaHistogram)
        configuration.lcaHistogram = false
        let decoded = try JSONDecoder().decode(TrainingConfiguration.self, from: JSONEncoder().encode(configuration))
        XCTAssertFalse(decoded.lcaHistogram)
    }

    /// The zero-copy `RecordView.View` has the version-2 values in place:
    /// buffers of T (T · 60 for the histogram), or of count 0 for a
    /// histogram left out; its copy equals what the log holds.
    func testRecordViewVersion2Buffers() throws {
        let folder = try temporaryFolder("v2-record-view", testCase: self)
        for histogram in [true, false] {
            var configuration = TrainingConfiguration()
            configuration.iterations = 3
            configuration.batchSize = 200
            configuration.lcaHistogram = histogram
            let path = folder.appendingPathComponent("run-\(histogram).log").path
            let run = try TrainingRun(recipe: RunRecipe(data: DataSource(source: "digits"), network: .mlp([64, 16, 10]),
                                                        configuration: configuration),
                                      outputs: RunOutputs(log: path))
            var copies: [IterationRecord] = []
            try run.run { record, _ in
                let v = record.train
                XCTAssertEqual(v.tensorHelping.count, 4)
                XCTAssertEqual(v.tensorHurting.count, 4)
                XCTAssertEqual(v.tensorUnmoved.count, 4)
                XCTAssertEqual(v.tensorHistogram.count, histogram ? 4 * 60 : 0)
                XCTAssertNotNil(v.lcaFloor)
                XCTAssertEqual(v.tensorHelping.reduce(0, +) <= 0, true)
                copies.append(record.copy())
            }
            XCTAssertEqual(try LogReader(path: path).records, copies)
        }
    }

    /// The exports of a version-2 log: CSV gets the per-tensor helping,
    /// hurting and unmoved columns and the floor, not the histogram; JSON
    /// Lines adds the histogram as two arrays of 30 counts per tensor; the
    /// .npy dtype shapes it (T, 2, 30).
    func testVersion2Exports() throws {
        let folder = try temporaryFolder("v2-exports", testCase: self)
        XCTAssertEqual(try CLI.run(["train", "--iterations", "3", "--quiet", "-o", "run"], in: folder).status, 0)
        let log = "run/lca.log"
        let reader = try LogReader(path: folder.appendingPathComponent(log).path)
        for target in ["csv", "jsonl", "npy"] {
            let result = try CLI.run(["export", log, "--to", target, "-o", "out.\(target)"], in: folder)
            XCTAssertEqual(result.status, 0, "\(target): \(result.stderr)")
        }
        let csv = try String(contentsOf: folder.appendingPathComponent("out.csv"), encoding: .utf8).split(separator: "\n")
        let names = csv[0].split(separator: ",").map(String.init)
        for column in ["lca_floor", "fc1.weight.lca_helping", "fc2.bias.lca_hurting", "fc1.bias.unmoved"] {
            XCTAssert(names.contains(column), "\(column) not in \(names)")
        }
        XCTAssertFalse(names.contains { $0.contains("histogram") })
        let first = csv[1].split(separator: ",").map(String.init)
        let helping = try XCTUnwrap(names.firstIndex(of: "fc1.weight.lca_helping"))
        XCTAssertEqual(Double(first[helping])?.bitPattern, reader.records[0].train.tensorHelping[0].bitPattern)

        let line = try String(contentsOf: folder.appendingPathComponent("out.jsonl"), encoding: .utf8).split(separator: "\n")[0]
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        let bins = try XCTUnwrap(object["fc2.weight.lca_histogram.hurting"] as? [Int])
        XCTAssertEqual(bins.map(UInt32.init), Array(try XCTUnwrap(reader.records[0].train.histogram(tensor: 2, hurting: true))))

        let npy = try Data(contentsOf: folder.appendingPathComponent("out.npy"))
        let npyHeader = String(decoding: npy.prefix(4096), as: UTF8.self)
        XCTAssert(npyHeader.contains("('lca_histogram', '<u4', (4, 2, 30))"), npyHeader)
        XCTAssert(npyHeader.contains("('lca_helping', '<f8', (4,))"), npyHeader)
    }
}
