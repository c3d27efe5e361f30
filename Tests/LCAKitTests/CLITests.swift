import Foundation
import XCTest
import LCAKit

/// The `lca` command as a user runs it.
final class CLITests: XCTestCase {
    /// `lca train` with no arguments trains the digits net into
    /// runs/<timestamp> and prints the summary table.
    func testTrainWithNoArgumentsSucceeds() throws {
        let folder = try temporaryFolder("default", testCase: self)
        let result = try CLI.run(["train"], in: folder)
        XCTAssertEqual(result.status, 0, "stderr: \(result.stderr)")
        XCTAssert(result.stdoutText.contains("fc1.weight"), result.stdoutText)
        XCTAssert(result.stdoutText.contains("total"), result.stdoutText)
        let runs = try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent("runs").path)
        XCTAssertEqual(runs.count, 1)
        let run = folder.appendingPathComponent("runs").appendingPathComponent(runs[0])
        let files = Set(try FileManager.default.contentsOfDirectory(atPath: run.path))
        for expected in ["lca.log", "config.json", "checkpoint-000000.safetensors", "checkpoint-000035.safetensors",
                         "state.safetensors", "lca-total.safetensors", "lca-helped.safetensors", "summary.txt"] {
            XCTAssert(files.contains(expected), "\(expected) missing from \(files.sorted())")
        }
        // and lca with no subcommand at all is lca train
        let bare = try CLI.run(["--iterations", "2", "-o", "bare", "--quiet"], in: folder)
        XCTAssertEqual(bare.status, 0, bare.stderr)
        // a folder that holds a run is not overwritten
        let again = try CLI.run(["--iterations", "2", "-o", "bare", "--quiet"], in: folder)
        XCTAssertEqual(again.status, 1, again.stderr)
        XCTAssert(again.stderr.contains("bare"), again.stderr)
    }

    /// show, export and verify take a run folder for its lca.log, as report
    /// and plot do; a folder without one is named.
    func testLogCommandsTakeARunFolder() throws {
        let folder = try temporaryFolder("runfolder", testCase: self)
        let train = try CLI.run(["train", "--iterations", "2", "-o", "run", "--quiet"], in: folder)
        XCTAssertEqual(train.status, 0, train.stderr)
        for command in [["show"], ["verify"], ["export", "--to", "csv"]] {
            let byFolder = try CLI.run(command + ["run"], in: folder)
            let byLog = try CLI.run(command + ["run/lca.log"], in: folder)
            XCTAssertEqual(byFolder.status, 0, "\(command): \(byFolder.stderr)")
            if command != ["verify"] { XCTAssertEqual(byFolder.stdout, byLog.stdout, "\(command)") }
        }
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("empty"), withIntermediateDirectories: true)
        let empty = try CLI.run(["show", "empty"], in: folder)
        XCTAssertEqual(empty.status, 1, empty.stderr)
        XCTAssert(empty.stderr.contains("empty: is a folder but holds no lca.log"), empty.stderr)
    }

    /// --init takes the spec and weights from a checkpoint; --freeze keeps a
    /// tensor still (its LCA is exactly 0); --json is a decodable summary.
    func testInitFreezeAndJSONSummary() throws {
        let folder = try temporaryFolder("init", testCase: self)
        let first = try CLI.run(["train", "--model", "64-16-10", "--iterations", "3", "-o", "first", "--quiet"], in: folder)
        XCTAssertEqual(first.status, 0, first.stderr)
        let second = try CLI.run(["train", "--init", "first/checkpoint-000003.safetensors", "--iterations", "3",
                                  "--freeze", "fc1.bias", "--lr-scale", "fc2.weight=0.5", "-o", "second", "--json"], in: folder)
        XCTAssertEqual(second.status, 0, second.stderr)
        let summary = try JSONFormat.decoder().decode(RunSummary.self, from: second.stdout)
        XCTAssertEqual(summary.model, "64-16-10")
        XCTAssertEqual(summary.iterations, 3)
        let bias = try XCTUnwrap(summary.train?.tensors.first { $0.name == "fc1.bias" })
        XCTAssertEqual(bias.lca, 0, "a frozen tensor does not move")
        XCTAssertEqual(try contents(folder.appendingPathComponent("first/checkpoint-000003.safetensors")).count,
                       try contents(folder.appendingPathComponent("second/checkpoint-000000.safetensors")).count)
        let unknown = try CLI.run(["train", "--freeze", "fc9.weight", "--iterations", "1", "-o", "third", "--quiet"], in: folder)
        XCTAssertEqual(unknown.status, 1, unknown.stderr)
        XCTAssert(unknown.stderr.contains("fc9.weight"), unknown.stderr)
    }

    /// The same seed gives byte-identical logs and checkpoints with 1 and 2
    /// threads.
    func testThreadCountGivesIdenticalBytes() throws {
        let folder = try temporaryFolder("threads", testCase: self)
        for threads in ["1", "2"] {
            let result = try CLI.run(["train", "--iterations", "8", "--batch-size", "128", "--lca-validation",
                                      "--save-every", "4", "--threads", threads, "-o", "t\(threads)", "--quiet"], in: folder)
            XCTAssertEqual(result.status, 0, result.stderr)
        }
        for name in ["lca.log", "checkpoint-000004.safetensors", "checkpoint-000008.safetensors", "state.safetensors",
                     "lca-total.safetensors", "lca-helped.safetensors", "config.json"] {
            let one = try contents(folder.appendingPathComponent("t1/" + name))
            let two = try contents(folder.appendingPathComponent("t2/" + name))
            if one != two {
                let at = zip(one, two).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(one.count, two.count)
                XCTFail("\(name): 1 and 2 threads differ at byte \(at) (\(one.count) vs \(two.count) bytes)")
            }
        }
    }

    /// LCA_KERNEL forces a kernel family, which the summary names; a value
    /// the core cannot use is a usage error (exit 64) naming it, never
    /// ignored. The FMA families give the same bytes.
    func testKernelEnvironmentVariable() throws {
        let folder = try temporaryFolder("kernel", testCase: self)
        let wrong = try CLI.run(["train", "--iterations", "1", "-o", "wrong", "--quiet"], in: folder,
                                environment: ["LCA_KERNEL": "avx3"])
        XCTAssertEqual(wrong.status, 64, wrong.stderr)
        XCTAssert(wrong.stderr.contains("LCA_KERNEL=avx3"), wrong.stderr)
        XCTAssert(wrong.stderr.contains("avx512, avx2 or portable"), wrong.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("wrong").path))
        var logs: [String: Data] = [:]
        for family in ["portable", "avx2", "avx512"] {
            let run = try CLI.run(["train", "--iterations", "2", "-o", family], in: folder,
                                  environment: ["LCA_KERNEL": family])
            if family == "avx512" && run.status == 64 && run.stderr.contains("cannot run") { continue }
            XCTAssertEqual(run.status, 0, run.stderr)
            XCTAssert(run.stdoutText.contains("matrix kernel \(family)"), run.stdoutText)
            logs[family] = try contents(folder.appendingPathComponent(family + "/lca.log"))
        }
        if let avx512 = logs["avx512"], let avx2 = logs["avx2"] {
            XCTAssertEqual(avx512, avx2, "the avx512 and avx2 families give the same bytes")
        }
    }

    /// `lca attribute --json` prints one parseable object with the
    /// documented keys; its per-tensor LCA adds up to lca_total.
    func testAttributeJSONParses() throws {
        let folder = try temporaryFolder("attribute", testCase: self)
        let train = try CLI.run(["train", "--iterations", "4", "-o", "run", "--quiet"], in: folder)
        XCTAssertEqual(train.status, 0, train.stderr)
        let result = try CLI.run(["attribute", "--from", "run/checkpoint-000000.safetensors",
                                  "--to", "run/checkpoint-000004.safetensors", "--data", "digits", "--json"], in: folder)
        XCTAssertEqual(result.status, 0, result.stderr)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: result.stdout) as? [String: Any], result.stdoutText)
        XCTAssertEqual(object["model"] as? String, "64-32-10")
        XCTAssertEqual(object["examples"] as? Int, 1797)
        for key in ["from", "to", "loss_before", "loss_after", "lca_total", "first_order_total", "residual",
                    "subintervals", "residual_above_threshold", "tensors"] {
            XCTAssertNotNil(object[key], "key \(key) missing")
        }
        XCTAssert(result.stdoutText.hasPrefix("{\"from\": "), result.stdoutText)
        let tensors = try XCTUnwrap(object["tensors"] as? [[String: Any]])
        XCTAssertEqual(tensors.map { $0["name"] as? String }, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"])
        XCTAssertEqual(tensors.first?["shape"] as? [Int], [32, 64])
        let sum = tensors.compactMap { $0["lca"] as? Double }.reduce(0, +)
        let total = try XCTUnwrap(object["lca_total"] as? Double)
        XCTAssertEqual(sum, total, accuracy: 1e-12 * max(1, abs(total)))
        let before = try XCTUnwrap(object["loss_before"] as? Double), after = try XCTUnwrap(object["loss_after"] as? Double)
        let residual = try XCTUnwrap(object["residual"] as? Double)
        XCTAssertEqual(after - before - total, residual, accuracy: 1e-12)

        let table = try CLI.run(["attribute", "--from", "run/checkpoint-000000.safetensors",
                                 "--to", "run/checkpoint-000004.safetensors", "--data", "digits"], in: folder)
        XCTAssertEqual(table.status, 0, table.stderr)
        XCTAssert(table.stdoutText.contains("fc2.bias"), table.stdoutText)
    }

    /// Bad input exits 1 with `lca: error:` and a message naming the file.
    func testBadInputExitsOneNamingTheFile() throws {
        let folder = try temporaryFolder("bad", testCase: self)
        let missing = try CLI.run(["train", "--data", "no-such-images.idx", "--labels", "no-such-labels.idx", "--quiet"], in: folder)
        XCTAssertEqual(missing.status, 1, missing.stderr)
        XCTAssert(missing.stderr.hasPrefix("lca: error: "), missing.stderr)
        XCTAssert(missing.stderr.contains("no-such-"), missing.stderr)

        let missingFolder = try CLI.run(["train", "--data", "no-such-folder", "--quiet"], in: folder)
        XCTAssertEqual(missingFolder.status, 1, missingFolder.stderr)
        XCTAssert(missingFolder.stderr.contains("no-such-folder"), missingFolder.stderr)

        let corrupt = folder.appendingPathComponent("corrupt.safetensors")
        try Data([0x10, 0, 0, 0, 0, 0, 0, 0] + Array("{\"a\": nonsense".utf8)).write(to: corrupt)
        let attribute = try CLI.run(["attribute", "--from", "corrupt.safetensors", "--to", "corrupt.safetensors",
                                     "--data", "digits"], in: folder)
        XCTAssertEqual(attribute.status, 1, attribute.stderr)
        XCTAssert(attribute.stderr.hasPrefix("lca: error: "), attribute.stderr)
        XCTAssert(attribute.stderr.contains("corrupt.safetensors"), attribute.stderr)

        let initial = try CLI.run(["train", "--init", "corrupt.safetensors", "--quiet"], in: folder)
        XCTAssertEqual(initial.status, 1, initial.stderr)
        XCTAssert(initial.stderr.contains("corrupt.safetensors"), initial.stderr)

        let truncated = folder.appendingPathComponent("truncated.safetensors")
        try Data([0x40, 0x42, 0x0F, 0, 0, 0, 0, 0]).write(to: truncated)
        let short = try CLI.run(["attribute", "--from", "truncated.safetensors", "--to", "truncated.safetensors",
                                 "--data", "digits", "--json"], in: folder)
        XCTAssertEqual(short.status, 1, short.stderr)
        XCTAssert(short.stderr.contains("truncated.safetensors"), short.stderr)
        XCTAssert(short.stdout.isEmpty, "nothing on stdout after a failure")
    }

    /// Bad flags are usage errors: exit status 64.
    func testBadFlagsExit64() throws {
        let folder = try temporaryFolder("flags", testCase: self)
        let cases: [[String]] = [
            ["train", "--no-such-flag"],
            ["train", "--epochs", "0"],
            ["train", "--epochs", "2", "--iterations", "3"],
            ["train", "--loss", "hinge"],
            ["train", "--validation", "1.5"],
            ["train", "--lca-max-subintervals", "5"],
            ["train", "--lr-scale", "fc1.weight"],
            ["train", "--resume", "somewhere", "--lr", "0.1"],
            ["attribute", "--data", "digits"],
        ]
        for arguments in cases {
            let result = try CLI.run(arguments, in: folder)
            XCTAssertEqual(result.status, 64, "\(arguments.joined(separator: " ")): \(result.stderr)")
        }
    }

    /// A reader that goes away early is a clean stop, not a crash.
    func testClosedPipeIsACleanStop() throws {
        let folder = try temporaryFolder("pipe", testCase: self)
        let lca = try CLI.executable().path
        let result = try CLI.shell("set -o pipefail; '\(lca)' train -o - --iterations 200 --quiet | head -c 100 > /dev/null", in: folder)
        XCTAssertEqual(result.status, 0, "lca train -o - | head -c 100: status \(result.status), stderr: \(result.stderr)")
        XCTAssertFalse(result.stderr.contains("error"), result.stderr)
        let table = try CLI.shell("set -o pipefail; '\(lca)' train --iterations 3 -o run --quiet | head -c 10 > /dev/null", in: folder)
        XCTAssertEqual(table.status, 0, table.stderr)
    }

    /// -o - writes a log that LCAKit reads back, with no run folder.
    func testLogToStdout() throws {
        let folder = try temporaryFolder("stdout", testCase: self)
        let result = try CLI.run(["train", "-o", "-", "--iterations", "3", "--quiet"], in: folder)
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual(Array(result.stdout.prefix(4)), [0x89, 0x4C, 0x43, 0x41])
        let path = folder.appendingPathComponent("stdout.log")
        try result.stdout.write(to: path)
        let records = try LogReaderShim.iterations(path.path)
        XCTAssertEqual(records, [1, 2, 3])
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("runs").path))
    }

    /// --resume continues a run stopped by Ctrl-C (wherever it stopped) and
    /// ends with the same log and weights as a run that never stopped.
    func testResumeFromTheCommandLine() throws {
        let folder = try temporaryFolder("resume-cli", testCase: self)
        let arguments = ["train", "--iterations", "60", "--batch-size", "100", "--save-every", "25", "--quiet"]
        let whole = try CLI.run(arguments + ["-o", "whole"], in: folder)
        XCTAssertEqual(whole.status, 0, whole.stderr)

        // start the same run and interrupt it once it has written a few records
        let process = Process()
        process.executableURL = try CLI.executable()
        process.arguments = arguments + ["-o", "part"]
        process.currentDirectoryURL = folder
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let log = folder.appendingPathComponent("part/lca.log").path
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, process.isRunning {
            if let size = try? FileManager.default.attributesOfItem(atPath: log)[.size] as? Int, size > 8_000 { break }
            usleep(2_000)
        }
        process.interrupt()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 130, "an interrupted run saves and exits 130 (issue 12: never 0)")

        let resumed = try CLI.run(["train", "--resume", "part", "--quiet", "--json"], in: folder)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        for name in ["lca.log", "checkpoint-000060.safetensors", "state.safetensors", "lca-total.safetensors"] {
            let a = try contents(folder.appendingPathComponent("whole/" + name))
            let b = try contents(folder.appendingPathComponent("part/" + name))
            XCTAssertEqual(a, b, "\(name) differs between the whole run and the resumed one (\(a.count) vs \(b.count) bytes)")
        }
        let summary = try JSONSerialization.jsonObject(with: resumed.stdout) as? [String: Any]
        XCTAssertEqual(summary?["iterations"] as? Int, 60, resumed.stdoutText)
    }

    /// A run killed with SIGKILL keeps every complete record, and the numbers
    /// in the log agree with each other: per-tensor sums add up to the total,
    /// residual = loss change − total, losses chain from record to record,
    /// |residual| ≤ threshold or flagged, help/hurt/zero counts cover each tensor.
    func testKilledRunKeepsEveryCompleteRecord() throws {
        let folder = try temporaryFolder("kill", testCase: self)
        let process = Process()
        process.executableURL = try CLI.executable()
        process.arguments = ["train", "--iterations", "1000000", "--batch-size", "50", "--quiet", "-o", "run"]
        process.currentDirectoryURL = folder
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let log = folder.appendingPathComponent("run/lca.log").path
        func size() -> Int { (try? FileManager.default.attributesOfItem(atPath: log)[.size] as? Int) ?? 0 }
        let deadline = Date().addingTimeInterval(120)
        // header and record sizes from the preamble, once it is there
        func preamble(_ at: Int) -> Int? {
            guard let handle = FileHandle(forReadingAtPath: log), let bytes = try? handle.read(upToCount: 24), bytes.count == 24 else { return nil }
            return (0..<4).reduce(0) { $0 | Int(bytes[bytes.startIndex + at + $1]) << (8 * $1) }
        }
        func wanted() -> Int { (preamble(12).map { 24 + $0 } ?? 1 << 40) + 30 * (preamble(16) ?? 1 << 20) }
        while Date() < deadline, process.isRunning, size() < wanted() { usleep(10_000) }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationReason, .uncaughtSignal, "the run ended before it was killed")

        let bytes = size()
        let reader = try LogReader(path: log)
        let start = 24 + reader.headerText.utf8.count
        let recordSize = reader.header.recordSize
        XCTAssertGreaterThanOrEqual(reader.records.count, 30)
        XCTAssertEqual(reader.records.count, (bytes - start) / recordSize)
        print("killed run: \(reader.records.count) complete records, \((bytes - start) % recordSize) bytes of a partial one")
        let threshold = 0.001
        var failures: [String] = []
        var previous: IterationRecord?
        for (index, record) in reader.records.enumerated() {
            let v = record.train
            if record.iteration != UInt64(index + 1) { failures.append("record \(index): iteration \(record.iteration)") }
            if v.tensorLCA.reduce(0, +) != v.lcaTotal { failures.append("iteration \(record.iteration): Σ tensors != total") }
            if v.lossAfter - v.lossBefore - v.lcaTotal != v.residual { failures.append("iteration \(record.iteration): residual identity") }
            if let previous, previous.train.lossAfter != v.lossBefore { failures.append("iteration \(record.iteration): losses do not chain") }
            if !(abs(v.residual) <= threshold || v.residualAboveThreshold) { failures.append("iteration \(record.iteration): |residual| \(abs(v.residual)) unflagged") }
            for (t, tensor) in reader.header.tensors.enumerated()
            where v.tensorHelped[t] + v.tensorHurt[t] + v.tensorZero[t] != UInt64(tensor.count) {
                failures.append("iteration \(record.iteration): \(tensor.name) counts do not cover the tensor")
            }
            previous = record
        }
        XCTAssert(failures.isEmpty, failures.prefix(10).joined(separator: "\n"))
    }

}



/// Reads the iteration numbers of a log through LCAKit.
enum LogReaderShim {
    static func iterations(_ path: String) throws -> [UInt64] {
        try LogReader(path: path).records.map(\.iteration)
    }
}
