import Foundation
import XCTest

/// Issue 12, readers and commands: hostile logs, user numbers that
/// overflow, a full stdout and outputs that would replace their input,
/// each through the real `lca` binary: the message, the exit code, no
/// signal, and files that existed unchanged.
final class HostileInputTests: XCTestCase {
    /// A small good log (digits, 7 iterations) in `folder/run/lca.log`.
    private func goodLog(_ folder: URL, _ extra: [String] = [], run: String = "run") throws -> URL {
        let result = try CLI.run(["train", "--epochs", "1", "-o", run] + extra, in: folder)
        XCTAssertEqual(result.status, 0, result.stderr)
        return folder.appendingPathComponent("\(run)/lca.log")
    }

    /// The parts of a log: header JSON object and the records' bytes.
    private func split(_ log: Data) throws -> (json: [String: Any], records: Data, recordSize: Int) {
        let bytes = [UInt8](log)
        func u32(_ at: Int) -> Int { (0..<4).reduce(0) { $0 | Int(bytes[at + $1]) << (8 * $1) } }
        let length = u32(12), recordSize = u32(16)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: log.subdata(in: 24..<(24 + length))) as? [String: Any])
        return (json, log.subdata(in: (24 + length)..<log.count), recordSize)
    }

    /// A log with this header and these records (the preamble recomputed,
    /// its version the header's).
    private func assemble(_ json: [String: Any], _ records: Data, recordSize: Int) throws -> Data {
        let text = try JSONSerialization.data(withJSONObject: json)
        var out = Data([0x89, 0x4C, 0x43, 0x41, 0x0D, 0x0A, 0x1A, 0x0A])
        for value in [json["version"] as? Int ?? 1, text.count, recordSize, 0] {
            out.append(contentsOf: (0..<4).map { UInt8((value >> (8 * $0)) & 0xFF) })
        }
        return out + text + records
    }

    /// Runs `arguments` for each of show, show --json, verify, export, report, plot
    /// on `log` and asserts exit 1, no signal, `lca: error:` with the path,
    /// the byte offset and `words`, and the log unchanged.
    private func expectRefused(_ log: URL, _ words: [String], in folder: URL,
                               file: StaticString = #filePath, line: UInt = #line) throws {
        let before = try contents(log)
        for command in [["show"], ["show", "--json"], ["verify"], ["export", "--to", "csv"], ["export", "--to", "jsonl"], ["report", "-o", "-"], ["plot", "--figure", "helping", "-o", "refused.svg"]] {
            let result = try CLI.run(command + [log.path], in: folder)
            let what = "\(command.joined(separator: " ")) \(log.lastPathComponent)"
            XCTAssertFalse(result.signaled, "\(what) died of a signal: \(result.stderr)", file: file, line: line)
            XCTAssertEqual(result.status, 1, "\(what): \(result.stderr)", file: file, line: line)
            XCTAssert(result.stderr.hasPrefix("lca: error: \(log.path): byte "), "\(what): \(result.stderr)", file: file, line: line)
            for word in words {
                XCTAssert(result.stderr.contains(word), "\(what): no \"\(word)\" in \(result.stderr)", file: file, line: line)
            }
            XCTAssertFalse(result.stderr.contains("Fatal error"), "\(what): \(result.stderr)", file: file, line: line)
        }
        XCTAssertEqual(try contents(log), before, "the log changed", file: file, line: line)
    }

    func testHostileLogHeaders() throws {
        let folder = try temporaryFolder("hostile-header", testCase: self)
        let (json, records, recordSize) = try split(try contents(try goodLog(folder)))
        func variant(_ name: String, _ change: (inout [String: Any]) -> Void) throws -> URL {
            var copy = json
            change(&copy)
            let url = folder.appendingPathComponent(name)
            try assemble(copy, records, recordSize: recordSize).write(to: url)
            return url
        }
        // 10¹² units: aborted allocating 16 TB before
        try expectRefused(try variant("units.log") { $0["units"] = [["group": "fc1", "units": 1_000_000_000_000, "offset": 0]] },
                          ["byte 24:", "unit group fc1 has 1000000000000 units", "\(recordSize)-byte record"], in: folder)
        // unit counts whose sum overflows
        try expectRefused(try variant("unitsum.log") {
            $0["units"] = [["group": "fc1", "units": 1 << 62, "offset": 0], ["group": "fc2", "units": 1 << 62, "offset": 0]]
        }, ["byte 24:", "unit group fc1"], in: folder)
        // a unit group outside the units
        try expectRefused(try variant("unitoffset.log") { $0["units"] = [["group": "fc1", "units": 4, "offset": 100]] },
                          ["byte 24:", "unit group fc1 starts at unit 100"], in: folder)
        func fields(_ change: @escaping (inout [[String: Any]]) -> Void) -> (inout [String: Any]) -> Void {
            { header in
                var list = header["fields"] as? [[String: Any]] ?? []
                change(&list)
                header["fields"] = list
            }
        }
        // a field count whose byte size overflows
        try expectRefused(try variant("fieldcount.log", fields { $0[1]["count"] = 1 << 62 }),
                          ["byte 24:", "field epoch", "does not fit in the \(recordSize)-byte record"], in: folder)
        // a negative offset (loaded before the record's start)
        try expectRefused(try variant("fieldoffset.log", fields { $0[1]["offset"] = -8 }),
                          ["byte 24:", "field epoch has offset -8"], in: folder)
        // a field past the record's end
        try expectRefused(try variant("fieldend.log", fields { $0[1]["offset"] = 1 << 40 }),
                          ["byte 24:", "field epoch", "does not fit"], in: folder)
        // a negative tensor size
        try expectRefused(try variant("tensor.log") { header in
            var tensors = header["tensors"] as? [[String: Any]] ?? []
            tensors[0]["count"] = -5
            header["tensors"] = tensors
        }, ["byte 24:", "tensor fc1.weight has count -5"], in: folder)
        // version 2: a histogram field of the wrong size, a histogram the
        // header does not describe, histogram edges out of order
        try expectRefused(try variant("histogramcount.log", fields { list in
            let at = list.firstIndex { $0["name"] as? String == "lca_histogram" }!
            list[at]["count"] = (list[at]["count"] as! Int) - 2
            list.append(["name": "pad", "type": "<u4", "offset": (list[at]["offset"] as! Int) + 4 * (list[at]["count"] as! Int), "count": 2])
        }), ["byte 24:", "field lca_histogram has 238 elements, expected 240 (tensors × 2 × 30 bins)"], in: folder)
        try expectRefused(try variant("histogramnull.log") { $0["lca_histogram"] = NSNull() },
                          ["byte 24:", "lca_histogram field but the header's lca_histogram is absent or null"], in: folder)
        try expectRefused(try variant("histogramedges.log") { header in
            var histogram = header["lca_histogram"] as! [String: Any]
            var edges = histogram["edges"] as! [Double]
            edges.swapAt(3, 4)
            histogram["edges"] = edges
            header["lca_histogram"] = histogram
        }, ["byte 24:", "lca_histogram's edges are not positive, finite and ascending"], in: folder)
        try expectRefused(try variant("helpingcount.log", fields { list in
            let at = list.firstIndex { $0["name"] as? String == "lca_helping" }!
            list[at]["type"] = "<u4"
            list[at]["count"] = 8
        }), ["byte 24:", "field lca_helping has 8 elements, expected 4 (one per tensor)"], in: folder)
    }

    /// Version 2: a record whose histogram counts do not add up to its
    /// helped/hurt counts is refused by every command, naming the byte of
    /// the tensor's first bin; `lca verify` also checks a record whose
    /// helping sum lies outside what its bins allow.
    func testDamagedHistogramRecords() throws {
        let folder = try temporaryFolder("hostile-histogram", testCase: self)
        let good = try contents(try goodLog(folder))
        let (json, records, recordSize) = try split(good)
        let headerEnd = try assemble(json, Data(), recordSize: recordSize).count
        let list = try XCTUnwrap(json["fields"] as? [[String: Any]])
        func offset(_ name: String) throws -> Int { try XCTUnwrap(list.first { $0["name"] as? String == name }?["offset"] as? Int) }
        let histogram = try offset("lca_histogram")
        func write(_ name: String, _ data: Data) throws -> URL {
            let url = folder.appendingPathComponent(name)
            try data.write(to: url)
            return url
        }
        // record 2, tensor 1 (fc1.bias), a hurting bin one higher
        var damaged = records
        let at = 2 * recordSize + histogram + 4 * ((2 * 1 + 1) * 30 + 20)
        damaged[at] = damaged[at] &+ 1
        try expectRefused(try write("bins.log", try assemble(json, damaged, recordSize: recordSize)),
                          ["byte \(headerEnd + 2 * recordSize + histogram + 4 * 3 * 30):", "record 2: lca_histogram of tensor 1: the hurting bins add up to",
                           "expected the record's hurt count"], in: folder)
        // the helping sum of fc2.weight in record 0 made 10× larger: bins and counts agree, verify refuses
        var sums = records
        let helping = try offset("lca_helping") + 8 * 2
        let value = Double(bitPattern: sums[helping..<(helping + 8)].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        let bits = (10 * value).bitPattern
        sums.replaceSubrange(helping..<(helping + 8), with: (0..<8).map { UInt8((bits >> (8 * UInt64($0))) & 0xFF) })
        let sumsLog = try write("sums.log", try assemble(json, sums, recordSize: recordSize))
        let verified = try CLI.run(["verify", sumsLog.path], in: folder)
        XCTAssertFalse(verified.signaled, verified.stderr)
        XCTAssertEqual(verified.status, 1, verified.stderr)
        XCTAssert(verified.stderr.contains("FAILED at iteration 1: fc2.weight: lca − lca_helping − lca_hurting"), verified.stderr)
    }

    func testHostileLogRecords() throws {
        let folder = try temporaryFolder("hostile-records", testCase: self)
        let good = try contents(try goodLog(folder))
        let (json, records, recordSize) = try split(good)
        // the header as `assemble` writes it (compact JSON) ends here
        let headerEnd = try assemble(json, Data(), recordSize: recordSize).count
        func counter(_ record: Int, _ value: UInt64) -> Data {
            var copy = records
            let at = record * recordSize
            copy.replaceSubrange(at..<(at + 8), with: (0..<8).map { UInt8((value >> (8 * UInt64($0))) & 0xFF) })
            return copy
        }
        func write(_ name: String, _ data: Data) throws -> URL {
            let url = folder.appendingPathComponent(name)
            try data.write(to: url)
            return url
        }
        // a record counter near 2⁶⁴ (trapped before)
        try expectRefused(try write("counter.log", try assemble(json, counter(1, UInt64.max - 1), recordSize: recordSize)),
                          ["byte \(headerEnd + recordSize):", "record 1 is numbered 18446744073709551614, expected 2"], in: folder)
        try expectRefused(try write("counter0.log", try assemble(json, counter(0, UInt64.max), recordSize: recordSize)),
                          ["byte \(headerEnd):", "record 0 is numbered 18446744073709551615, expected 1"], in: folder)
        // garbage appended: three records' worth of bytes that are not records
        var generator = SystemRandomNumberGenerator()
        let garbage = Data((0..<(3 * recordSize)).map { _ in UInt8.random(in: 0...255, using: &generator) | 0x80 })
        try expectRefused(try write("garbage.log", good + garbage),
                          ["byte \(good.count):", "record 7 is numbered", "expected 8"], in: folder)
        // helped counts near 2⁶⁴ (their sums trapped): show reads them, verify names the overflow
        // (in a log without the histogram, whose bins would no longer add up)
        let (plain, plainRecords, plainSize) = try split(try contents(try goodLog(folder, ["--no-lca-histogram"], run: "plain")))
        var huge = plainRecords
        let helped = try XCTUnwrap((plain["fields"] as? [[String: Any]])?.first { $0["name"] as? String == "helped" }?["offset"] as? Int)
        for index in 0..<2 { huge.replaceSubrange((helped + 8 * index)..<(helped + 8 * index + 8), with: [UInt8](repeating: 0xFF, count: 8)) }
        let hugeLog = try write("helped.log", try assemble(plain, huge, recordSize: plainSize))
        let shown = try CLI.run(["show", hugeLog.path], in: folder)
        XCTAssertFalse(shown.signaled, shown.stderr)
        XCTAssertEqual(shown.status, 0, shown.stderr)
        let verified = try CLI.run(["verify", hugeLog.path], in: folder)
        XCTAssertFalse(verified.signaled, verified.stderr)
        XCTAssertEqual(verified.status, 1, verified.stderr)
        XCTAssert(verified.stderr.contains("FAILED at iteration 1: fc1.weight: helped 18446744073709551615 + hurt"), verified.stderr)
        XCTAssert(verified.stderr.contains("overflows, the tensor has 2048 parameters"), verified.stderr)
        // a preamble naming a 4 GB record: refused before the read buffer is allocated
        var big = try assemble(json, records, recordSize: recordSize)
        big.replaceSubrange(16..<20, with: [0xFF, 0xFF, 0xFF, 0xFF])
        try expectRefused(try write("bigrecord.log", big), ["byte 16:", "record size 4294967295 is more than the 268435456 bytes"], in: folder)
        // two logs concatenated: the second header is read as records
        try expectRefused(try write("concat.log", good + good),
                          ["byte \(good.count):", "record 7 is numbered", "expected 8"], in: folder)
    }

    /// --epochs near Int.max trapped (epochs × batches overflowed): now a
    /// usage error naming the flag, before the run folder is made.
    func testEpochsOverflow() throws {
        let folder = try temporaryFolder("epochs", testCase: self)
        for arguments in [["--epochs", "9223372036854775807"], ["--epochs", "9223372036854775807", "--batch-size", "1"],
                          ["--epochs", "4611686018427387904"]] {
            let result = try CLI.run(["train"] + arguments + ["-o", "run"], in: folder)
            XCTAssertFalse(result.signaled, result.stderr)
            XCTAssertEqual(result.status, 64, result.stderr)
            XCTAssert(result.stderr.contains("--epochs \(arguments[1]):"), result.stderr)
            XCTAssert(result.stderr.contains("batches per epoch is more iterations than a 64-bit count holds"), result.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("run").path))
        }
    }

    /// `lca export a.log -o a.log` replaced the log it read and exited 0:
    /// refused (npy, csv, jsonl; through a symlink, a hard link and standard
    /// input too), the log unchanged.
    func testNoCommandWritesOverItsInput() throws {
        let folder = try temporaryFolder("own-input", testCase: self)
        let log = try goodLog(folder)
        let before = try contents(log)
        try FileManager.default.createSymbolicLink(atPath: folder.appendingPathComponent("link.log").path, withDestinationPath: log.path)
        try FileManager.default.linkItem(atPath: log.path, toPath: folder.appendingPathComponent("hard.log").path)
        let cases: [(input: String, target: String, output: String)] = [
            ("run/lca.log", "npy", "run/lca.log"), ("run/lca.log", "csv", "run/lca.log"), ("run/lca.log", "jsonl", "run/lca.log"),
            ("run/lca.log", "npy", "link.log"), ("link.log", "csv", "hard.log"), ("run/lca.log", "csv", "hard.log"),
        ]
        for item in cases {
            let result = try CLI.run(["export", item.input, "--to", item.target, "-o", item.output], in: folder)
            XCTAssertFalse(result.signaled)
            XCTAssertEqual(result.status, 1, "\(item): \(result.stderr)")
            XCTAssertEqual(result.stderr, "lca: error: \(item.output) is the input \(item.input) itself (the same file): "
                           + "writing it would destroy what is being read; choose another output\n")
            XCTAssertEqual(try contents(log), before, "\(item) changed the log")
        }
        let piped = try CLI.shell("'\(try CLI.executable().path)' export - --to csv -o run/lca.log < run/lca.log", in: folder)
        XCTAssertEqual(piped.status, 1, piped.stderr)
        XCTAssert(piped.stderr.contains("is the input (standard input) itself"), piped.stderr)
        XCTAssertEqual(try contents(log), before)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.contains(".tmp-") }
        XCTAssertEqual(leftovers, [])
    }

    /// A failed export leaves an existing output untouched (written to a
    /// temporary file and renamed only at the end); a good one replaces it.
    func testFailedExportLeavesOutputUntouched() throws {
        let folder = try temporaryFolder("export-atomic", testCase: self)
        let good = try contents(try goodLog(folder))
        try (good + good).write(to: folder.appendingPathComponent("concat.log"))
        for target in ["csv", "jsonl", "npy"] {
            let output = folder.appendingPathComponent("out.\(target)")
            try Data("precious\n".utf8).write(to: output)
            let result = try CLI.run(["export", "concat.log", "--to", target, "-o", output.path], in: folder)
            XCTAssertFalse(result.signaled)
            XCTAssertEqual(result.status, 1, result.stderr)
            XCTAssert(result.stderr.contains("concat.log: byte \(good.count): record 7 is numbered"), result.stderr)
            XCTAssertEqual(try contents(output), Data("precious\n".utf8), target)
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: output.path)
            let fine = try CLI.run(["export", "run/lca.log", "--to", target, "-o", output.path], in: folder)
            XCTAssertEqual(fine.status, 0, fine.stderr)
            XCTAssertNotEqual(try contents(output), Data("precious\n".utf8), target)
            let mode = try FileManager.default.attributesOfItem(atPath: output.path)[.posixPermissions] as? Int
            XCTAssertEqual(mode, 0o600, "the replaced \(target) output keeps its permissions")
        }
        // -o - is standard output, not a file named "-"
        let dash = try CLI.run(["export", "run/lca.log", "--to", "csv", "-o", "-"], in: folder)
        XCTAssertEqual(dash.status, 0, dash.stderr)
        XCTAssert(dash.stdoutText.hasPrefix("iteration,"), dash.stdoutText)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("-").path))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.contains(".tmp-") }
        XCTAssertEqual(leftovers, [])
    }

    /// A TensorBoard export is written whole: a log that fails part-way
    /// leaves no partial event file (and no temporary one) in the folder; a
    /// good export leaves one event file; the log itself, exported into its
    /// own folder, is never touched (a new file is created beside it).
    func testTensorBoardExportIsWholeOrNothing() throws {
        let folder = try temporaryFolder("export-tensorboard", testCase: self)
        let log = try goodLog(folder)
        let good = try contents(log)
        try (good + good).write(to: folder.appendingPathComponent("concat.log"))
        let failed = try CLI.run(["export", "concat.log", "--to", "tensorboard", "-o", "tb"], in: folder)
        XCTAssertFalse(failed.signaled)
        XCTAssertEqual(failed.status, 1, failed.stderr)
        XCTAssert(failed.stderr.contains("concat.log: byte \(good.count): record 7 is numbered"), failed.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent("tb").path), [])
        // show summarises the records before the one that cannot belong to the run, then fails
        let shown = try CLI.run(["show", "concat.log"], in: folder)
        XCTAssertEqual(shown.status, 1, shown.stderr)
        XCTAssert(shown.stdoutText.contains("iterations 1–7"), shown.stdoutText)
        XCTAssert(shown.stderr.hasSuffix("the summary above covers the 7 records before it\n"), shown.stderr)
        let fine = try CLI.run(["export", "run/lca.log", "--to", "tensorboard", "-o", "run"], in: folder)
        XCTAssertEqual(fine.status, 0, fine.stderr)
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent("run").path)
        XCTAssertEqual(names.filter { $0.contains("tfevents") }.count, 1, "\(names)")
        XCTAssertEqual(names.filter { $0.contains(".tmp-") }, [])
        XCTAssertEqual(try contents(log), good)
    }

    /// Writes to a full stdout exited 0 with the output lost: now
    /// `lca: error: stdout: No space left on device`, exit 1. A closed pipe
    /// stays a quiet end (exit 0).
    func testFullStdout() throws {
        guard FileManager.default.fileExists(atPath: "/dev/full") else { throw XCTSkip("no /dev/full here") }
        let folder = try temporaryFolder("full-stdout", testCase: self)
        _ = try goodLog(folder)
        let lca = "'\(try CLI.executable().path)'"
        for command in ["export run/lca.log --to csv", "export run/lca.log --to jsonl", "show run/lca.log", "show --json run/lca.log",
                        "verify run/lca.log", "train --epochs 1 -o run2",
                        "attribute --from run/checkpoint-000000.safetensors --to run/checkpoint-000007.safetensors --data digits"] {
            let result = try CLI.shell("\(lca) \(command) > /dev/full", in: folder)
            XCTAssertEqual(result.status, 1, "\(command): \(result.stderr)")
            XCTAssert(result.stderr.hasSuffix("lca: error: stdout: \(String(cString: strerror(ENOSPC)))\n"), "\(command): \(result.stderr)")
        }
        let output = try CLI.shell("\(lca) export run/lca.log --to csv -o /dev/full", in: folder)
        XCTAssertEqual(output.status, 1)
        XCTAssertEqual(output.stderr, "lca: error: /dev/full: write failed: \(String(cString: strerror(ENOSPC)))\n")
        let pipe = try CLI.shell("set -o pipefail; \(lca) export run/lca.log --to csv | head -c 10", in: folder)
        XCTAssertEqual(pipe.status, 0, pipe.stderr)
        XCTAssertEqual(pipe.stderr, "")
    }

    /// Foundation's "NSCocoaErrorDomain error 512" became plain text with the
    /// path and the system's reason.
    func testFoundationErrorsInPlainText() throws {
        let folder = try temporaryFolder("foundation", testCase: self)
        let log = try goodLog(folder)
        try Data().write(to: folder.appendingPathComponent("file"))
        let train = try CLI.run(["train", "-o", "file/run"], in: folder)
        XCTAssertEqual(train.status, 1)
        XCTAssertEqual(train.stderr, "lca: error: file/run: cannot create the run folder: \(String(cString: strerror(ENOTDIR)))\n")
        let board = try CLI.run(["export", log.path, "--to", "tensorboard", "-o", "file/tb"], in: folder)
        XCTAssertEqual(board.status, 1)
        XCTAssertEqual(board.stderr, "lca: error: file/tb: cannot create the TensorBoard folder: \(String(cString: strerror(ENOTDIR)))\n")
        let resume = folder.appendingPathComponent("resume")
        try FileManager.default.createDirectory(at: resume.appendingPathComponent("config.json"), withIntermediateDirectories: true)
        try Data().write(to: resume.appendingPathComponent("lca.log"))
        try Data().write(to: resume.appendingPathComponent("state.safetensors")) // past the no-state check
        let resumed = try CLI.run(["train", "--resume", "resume"], in: folder)
        XCTAssertEqual(resumed.status, 1)
        XCTAssert(resumed.stderr.contains("config.json: cannot read: \(String(cString: strerror(EISDIR)))"), resumed.stderr)
        for result in [train, board, resumed] {
            XCTAssertFalse(result.signaled)
            XCTAssertFalse(result.stderr.contains("NSCocoaErrorDomain"), result.stderr)
        }
    }

    /// --eval-chunk 2⁶³ crashed the core (a size overflow): a usage error
    /// naming the flag now; the same bound for --bn-group.
    func testHugeChunkAndGroup() throws {
        let folder = try temporaryFolder("chunk", testCase: self)
        for flag in ["--eval-chunk", "--bn-group"] {
            let result = try CLI.run(["train", flag, "9223372036854775807", "--iterations", "2", "-o", "run"], in: folder)
            XCTAssertFalse(result.signaled, result.stderr)
            XCTAssertEqual(result.status, 64, result.stderr)
            XCTAssert(result.stderr.contains("\(flag) must be at most 4294967296, not 9223372036854775807"), result.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("run").path))
        }
    }
}
