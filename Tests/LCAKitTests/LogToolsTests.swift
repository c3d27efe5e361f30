import Foundation
import LCAKit
import XCTest

/// The streaming reader, the exports, `lca show` / `export` / `verify`,
/// per-unit views, the run type's callback and the examples.
final class LogToolsTests: XCTestCase {
    /// A small run with per-unit and validation views, written through
    /// LCAKit; returns the log path and the records the trainer produced.
    private func makeRun(_ folder: URL, iterations: Int = 8) throws -> (path: String, records: [IterationRecord]) {
        var configuration = TrainingConfiguration()
        configuration.iterations = iterations
        configuration.batchSize = 200
        configuration.lcaUnits = true
        configuration.lcaValidationView = true
        let path = folder.appendingPathComponent("run.log").path
        let run = try TrainingRun(recipe: RunRecipe(data: DataSource(source: "digits"), network: .mlp([64, 16, 10]),
                                                    configuration: configuration),
                                  outputs: RunOutputs(log: path))
        var records: [IterationRecord] = []
        try run.run { record, _ in records.append(record.copy()) }
        return (path, records)
    }

    /// train → log → LogStream and LogReader give the trainer's records
    /// exactly (per-unit values included); LogWriter writes the same bytes.
    func testStreamingReaderRoundTripIsExact() throws {
        let folder = try temporaryFolder("roundtrip", testCase: self)
        let (path, records) = try makeRun(folder)
        let stream = try LogStream(path: path)
        XCTAssertEqual(stream.header.units?.map(\.group), ["fc1", "fc2"])
        XCTAssertEqual(stream.header.unitCount, 26)
        var read: [IterationRecord] = []
        while let record = try stream.next() { read.append(record) }
        XCTAssertEqual(read.count, records.count)
        for (a, b) in zip(read, records) where a != b { XCTFail("iteration \(a.iteration): the log's record differs from the trainer's") }
        XCTAssertEqual(read.first?.train.unitLCA.count, 26)
        XCTAssertEqual(read.first?.validation?.unitLCA.count, 26)
        XCTAssertEqual(stream.partialBytes, 0)
        XCTAssertEqual(try LogReader(path: path).records, records)
        // per-unit sums of a layer add up to its tensors' sum
        var worst = 0.0
        for record in read {
            let v = record.train
            worst = max(worst, abs(v.unitLCA[0..<16].reduce(0, +) - (v.tensorLCA[0] + v.tensorLCA[1])),
                        abs(v.unitLCA[16..<26].reduce(0, +) - (v.tensorLCA[2] + v.tensorLCA[3])))
        }
        print("worst |Σ units − Σ tensors| of a layer: \(worst)")
        XCTAssertLessThan(worst, 1e-15)
    }

    /// The log cut at every byte offset of its last record reads without
    /// error up to the previous record; corrupt headers give typed errors
    /// that name the problem.
    func testTruncationAndCorruptHeaders() throws {
        let folder = try temporaryFolder("truncate", testCase: self)
        let (path, records) = try makeRun(folder, iterations: 4)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let recordSize = try LogStream(path: path).header.recordSize
        let cut = folder.appendingPathComponent("cut.log")
        var wrong: [Int] = []
        for length in (bytes.count - recordSize)..<bytes.count {
            try bytes.prefix(length).write(to: cut)
            let stream = try LogStream(path: cut.path)
            var read: [IterationRecord] = []
            while let record = try stream.next() { read.append(record) }
            if read != Array(records.prefix(3)) || stream.partialBytes != length - (bytes.count - recordSize) { wrong.append(length) }
        }
        XCTAssert(wrong.isEmpty, "\(wrong.count) of \(recordSize) cut lengths misread, first \(wrong.prefix(3))")

        func expect(_ name: String, _ data: Data, _ kind: LCAError.Kind, _ words: String, file: StaticString = #filePath, line: UInt = #line) throws {
            let url = folder.appendingPathComponent(name)
            try data.write(to: url)
            do {
                _ = try LogStream(path: url.path)
                XCTFail("\(name) was accepted", file: file, line: line)
            } catch let error as LCAError {
                XCTAssertEqual(error.kind, kind, error.description, file: file, line: line)
                XCTAssertEqual(error.path, url.path, file: file, line: line)
                XCTAssertNotNil(error.offset, file: file, line: line)
                XCTAssert(error.description.contains(name) && error.description.contains(words), error.description, file: file, line: line)
            }
            // the whole-file reader throws the same error
            XCTAssertThrowsError(try LogReader(path: url.path), file: file, line: line) { error in
                XCTAssertEqual((error as? LCAError)?.code, .format, file: file, line: line)
            }
        }
        var data = bytes
        data[0] = 0x50
        try expect("magic.log", data, .badMagic, "magic")
        data = bytes
        data[8] = 3
        try expect("version.log", data, .unsupportedVersion, "version 1 or 2, found 3")
        data = bytes
        data[16] = data[16] &+ 8
        try expect("size.log", data, .recordSizeMismatch, "record size")
        data = bytes
        data[24] = UInt8(ascii: "[")
        try expect("json.log", data, .badHeader, "JSON header")
        try expect("short.log", bytes.prefix(12), .truncatedHeader, "preamble")
        try expect("shortjson.log", bytes.prefix(100), .truncatedHeader, "inside the")
        try expect("empty.log", Data(), .truncatedHeader, "preamble")
    }

    /// lca export: CSV and JSON Lines values read back to the same doubles;
    /// the .npy holds the records' bytes unchanged after its header.
    func testExportsRoundTrip() throws {
        let folder = try temporaryFolder("export", testCase: self)
        let (path, records) = try makeRun(folder, iterations: 5)
        let csv = try CLI.run(["export", path, "--to", "csv"])
        XCTAssertEqual(csv.status, 0, csv.stderr)
        let lines = csv.stdoutText.split(separator: "\n").map { $0.split(separator: ",").map(String.init) }
        XCTAssertEqual(lines.count, 6)
        let names = lines[0]
        func column(_ name: String) -> [Double] {
            guard let index = names.firstIndex(of: name) else { XCTFail("no column \(name)"); return [] }
            return lines.dropFirst().map { Double($0[index])! }
        }
        XCTAssertEqual(column("lca_total"), records.map(\.train.lcaTotal))
        XCTAssertEqual(column("fc2.bias.lca"), records.map { $0.train.tensorLCA[3] })
        XCTAssertEqual(column("fc1.weight.val_lca"), records.map { $0.validation!.tensorLCA[0] })
        XCTAssertEqual(column("fc2.unit9.lca"), records.map { $0.train.unitLCA[25] })
        XCTAssertEqual(column("fc1.unit3.val_lca"), records.map { $0.validation!.unitLCA[3] })
        XCTAssertEqual(column("fc1.weight.helped"), records.map { Double($0.train.tensorHelped[0]) })

        let jsonl = try CLI.run(["export", path, "--to", "jsonl"])
        XCTAssertEqual(jsonl.status, 0, jsonl.stderr)
        struct Row: Decodable {
            var iteration: UInt64
            var residual: Double
            var lossAfter: Double
            enum CodingKeys: String, CodingKey { case iteration, residual; case lossAfter = "loss_after" }
        }
        let rows = try jsonl.stdoutText.split(separator: "\n").map { try JSONDecoder().decode(Row.self, from: Data($0.utf8)) }
        XCTAssertEqual(rows.map(\.iteration), [1, 2, 3, 4, 5])
        XCTAssertEqual(rows.map(\.residual), records.map(\.train.residual))
        XCTAssertEqual(rows.map(\.lossAfter), records.map(\.train.lossAfter))

        let npy = folder.appendingPathComponent("run.npy")
        let export = try CLI.run(["export", path, "--to", "npy", "-o", npy.path])
        XCTAssertEqual(export.status, 0, export.stderr)
        let npyBytes = try Data(contentsOf: npy), logBytes = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertEqual(Array(npyBytes.prefix(6)), [0x93] + Array("NUMPY".utf8))
        let headerLength = Int(npyBytes[8]) | Int(npyBytes[9]) << 8
        XCTAssertEqual((10 + headerLength) % 64, 0)
        let npyHeader = String(decoding: npyBytes[10..<(10 + headerLength)], as: UTF8.self)
        XCTAssert(npyHeader.contains("'shape': (5,)") && npyHeader.contains("('unit_lca', '<f8', (26,))"), npyHeader)
        let recordSize = try LogStream(path: path).header.recordSize
        XCTAssertEqual(npyBytes.suffix(from: 10 + headerLength), logBytes.suffix(5 * recordSize))

        XCTAssertEqual(try CLI.run(["export", path, "--to", "npy"]).status, 64)
        XCTAssertEqual(try CLI.run(["export", path, "--to", "xml"]).status, 64)
    }

    /// lca show prints the summary lca train printed; works on a pipe, with
    /// --json, and with --follow on a log being written; lca verify passes a
    /// good log and names the first failing iteration of a bad one.
    func testShowFollowAndVerify() throws {
        let folder = try temporaryFolder("show", testCase: self)
        let train = try CLI.run(["train", "--iterations", "6", "--batch-size", "300", "-o", "run"], in: folder)
        XCTAssertEqual(train.status, 0, train.stderr)
        let show = try CLI.run(["show", "run/lca.log"], in: folder)
        XCTAssertEqual(show.status, 0, show.stderr)
        // the LCA block of the two tables is the same text
        func block(_ text: String) -> String {
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
            guard let start = lines.firstIndex(where: { $0.hasPrefix("LCA on the") }),
                  let end = lines.firstIndex(where: { $0.hasPrefix("minibatch loss") }) else { return "" }
            return lines[start...end].joined(separator: "\n")
        }
        XCTAssertFalse(block(show.stdoutText).isEmpty, show.stdoutText)
        XCTAssertEqual(block(show.stdoutText), block(train.stdoutText))

        let json = try CLI.run(["show", "run/lca.log", "--json"], in: folder)
        let summary = try JSONFormat.decoder().decode(RunSummary.self, from: json.stdout)
        XCTAssertEqual(summary.iterations, 6)
        XCTAssertEqual(summary.train?.lcaTotal, try LogReader(path: folder.appendingPathComponent("run/lca.log").path).records.reduce(0) { $0 + $1.train.lcaTotal })

        let lca = try CLI.executable().path
        let piped = try CLI.shell("set -o pipefail; '\(lca)' train -o - --iterations 4 --quiet | '\(lca)' show - > shown.txt", in: folder)
        XCTAssertEqual(piped.status, 0, piped.stderr)
        XCTAssert(try String(contentsOf: folder.appendingPathComponent("shown.txt"), encoding: .utf8).contains("iterations 1–4"))
        let early = try CLI.shell("set -o pipefail; '\(lca)' train -o - --iterations 300 --quiet | '\(lca)' show - | head -c 100 > /dev/null", in: folder)
        XCTAssertEqual(early.status, 0, "lca train -o - | lca show - | head -c 100: \(early.stderr)")
        XCTAssertFalse(early.stderr.contains("error"), early.stderr)

        // --follow on a log still being written: one line per iteration, then the summary
        let writer = Process()
        writer.executableURL = try CLI.executable()
        writer.arguments = ["train", "--iterations", "40", "--batch-size", "50", "-o", "live", "--quiet"]
        writer.currentDirectoryURL = folder
        writer.standardOutput = FileHandle.nullDevice
        writer.standardError = FileHandle.nullDevice
        try writer.run()
        let deadline = Date().addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: folder.appendingPathComponent("live/lca.log").path), Date() < deadline { usleep(10_000) }
        let follow = try CLI.run(["show", "live/lca.log", "--follow"], in: folder)
        writer.waitUntilExit()
        XCTAssertEqual(follow.status, 0, follow.stderr)
        let rows = follow.stdoutText.split(separator: "\n").filter { $0.first == " " && $0.contains("%") }
        XCTAssertEqual(rows.count, 40, follow.stdoutText)
        XCTAssert(follow.stdoutText.contains("iterations 1–40"), follow.stdoutText)

        let verify = try CLI.run(["verify", "run/lca.log"], in: folder)
        XCTAssertEqual(verify.status, 0, verify.stderr)
        XCTAssert(verify.stdoutText.contains("6 records consistent"), verify.stdoutText)
        let strict = try CLI.run(["verify", "run/lca.log", "--max-residual", "0"], in: folder)
        XCTAssertEqual(strict.status, 1, strict.stdoutText)
        XCTAssert(strict.stderr.contains("iteration 1:"), strict.stderr)
        // flip one bit of lca_total in record 3: verify names iteration 3
        let path = folder.appendingPathComponent("run/lca.log")
        var bytes = try Data(contentsOf: path)
        let stream = try LogStream(path: path.path)
        let offset = stream.headerBytes.count + 2 * stream.header.recordSize
            + stream.header.fields.first { $0.name == "lca_total" }!.offset
        bytes[offset] ^= 1
        try bytes.write(to: folder.appendingPathComponent("bad.log"))
        let bad = try CLI.run(["verify", "bad.log"], in: folder)
        XCTAssertEqual(bad.status, 1)
        XCTAssert(bad.stderr.contains("iteration 3: lca_total"), bad.stderr)
        XCTAssertFalse(bad.stderr.contains("\u{1B}["), "no colour when NO_COLOR is set / not a terminal")
        let missing = try CLI.run(["show", "no-such.log"], in: folder)
        XCTAssertEqual(missing.status, 1)
        XCTAssert(missing.stderr.contains("no-such.log"), missing.stderr)
        XCTAssertEqual(try CLI.run(["verify", "run/lca.log", "--max-residual", "-1"], in: folder).status, 64)
    }

    /// lca train --units and --tensorboard: the log carries unit_lca, the
    /// event folder gets a file, verify checks the unit sums.
    func testTrainWithUnitsAndTensorBoard() throws {
        let folder = try temporaryFolder("units", testCase: self)
        let train = try CLI.run(["train", "--iterations", "3", "--units", "--tensorboard", "tb", "-o", "run", "--quiet"], in: folder)
        XCTAssertEqual(train.status, 0, train.stderr)
        let log = try LogReader(path: folder.appendingPathComponent("run/lca.log").path)
        XCTAssertEqual(log.header.units, [UnitGroup(group: "fc1", units: 32, offset: 0, tensors: ["fc1.weight", "fc1.bias"]),
                                          UnitGroup(group: "fc2", units: 10, offset: 32, tensors: ["fc2.weight", "fc2.bias"])])
        XCTAssertEqual(log.records.first?.train.unitLCA.count, 42)
        let events = try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent("tb").path)
        XCTAssertEqual(events.count, 1)
        XCTAssert(events[0].hasPrefix("events.out.tfevents."), "\(events)")
        XCTAssertEqual(try CLI.run(["verify", "run/lca.log"], in: folder).status, 0)
        XCTAssertEqual(try CLI.run(["train", "--no-lca", "--units"], in: folder).status, 64)
    }

    /// CRC-32C check value and TensorFlow's mask.
    func testCRC32C() {
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)
    }

    /// The run's callback: per-tensor LCA by name, stop early, freeze
    /// between iterations (the frozen tensor's LCA is 0 from then on), and
    /// per-unit LCA by layer.
    func testRunCallbackStopsAndFreezes() throws {
        var configuration = TrainingConfiguration()
        configuration.iterations = 50
        configuration.batchSize = 250
        configuration.lcaUnits = true
        let run = try TrainingRun(recipe: RunRecipe(data: DataSource(source: "digits"), network: try Network(spec: "64-16-10"),
                                                    configuration: configuration))
        var seen: [(number: UInt64, fc2: Double?, record: IterationRecord, units: Int?, tensors: Int)] = []
        var missing: Double?? = nil
        let summary = try run.run { record, control in
            seen.append((record.iteration, record[lca: "fc2.weight"], record.copy(), record.unitLCA(group: "fc2")?.count,
                         record.lcaByTensor.count))
            if record.iteration == 1 { missing = record[lca: "fc9.weight"] }
            if record.iteration == 2 { try control.freeze("fc2.weight") }
            if record.iteration == 5 { control.stop() }
        }
        XCTAssertEqual(summary.iterations, 5)
        XCTAssertEqual(seen.map(\.number), [1, 2, 3, 4, 5])
        XCTAssertEqual(seen[0].fc2, seen[0].record.train.tensorLCA[2])
        XCTAssertEqual(missing, .some(nil))
        XCTAssertNotEqual(seen[1].fc2, 0)
        XCTAssertEqual(seen[2...].map(\.fc2), [0, 0, 0])
        XCTAssertEqual(seen[0].units, 10)
        XCTAssertEqual(seen[0].tensors, 4)
        XCTAssertThrowsError(try run.control.freeze("nope")) { XCTAssertEqual(($0 as? LCAError)?.code, .invalidArgument) }
    }

    /// Both examples run on the digits and print their comparison.
    func testExamplesRun() throws {
        let directory = try CLI.executable().deletingLastPathComponent()
        for (name, arguments, expected) in [("freeze-last-layer", ["--iterations", "7"], "last layer frozen"),
                                            ("lr-sweep", ["--iterations", "7", "--rates", "0.01,0.1"], "lr 0.1")] {
            let process = Process()
            process.executableURL = directory.appendingPathComponent(name)
            process.arguments = arguments
            let out = Pipe()
            process.standardOutput = out
            try process.run()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            print(text)
            XCTAssertEqual(process.terminationStatus, 0, name)
            XCTAssert(text.contains(expected) && text.contains("fc2.bias"), text)
        }
    }
}
