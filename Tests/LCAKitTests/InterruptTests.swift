import Foundation
import XCTest
@testable import LCAKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Interrupted runs (issue 12): a run killed, interrupted or terminated at
/// any moment and then resumed (again and again) ends byte for byte as the
/// run that never stopped.
final class InterruptTests: XCTestCase {
    static let arguments = ["train", "--iterations", "100", "--batch-size", "50", "--save-every", "7", "--quiet"]

    /// True once the process catches `number` (Linux: SigCgt in /proc), so
    /// that the signal reaches the run's handler, not the default action.
    static func catches(_ pid: Int32, _ number: Int32) -> Bool {
        #if os(Linux)
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("SigCgt:") }),
              let mask = UInt64(line.dropFirst(7).trimmingCharacters(in: .whitespaces), radix: 16) else { return false }
        return mask & (1 << UInt64(number - 1)) != 0
        #else
        return true
        #endif
    }

    struct Outcome {
        var stops: [String] = []
        var statuses: [Int32] = []
        var restarts = 0
    }

    /// Runs `arguments` into `folder/part`, sending `number` at `count`
    /// seeded moments (each to a new or resumed process), then lets the last
    /// resumed process finish. A moment: once the log holds a seeded number
    /// of records (0…99, in increasing order; 0: during its start), then a seeded 0–3 ms more, so
    /// that kills also land inside records and saves.
    func interruptedRun(in folder: URL, signal number: Int32, count: Int, seed: UInt64,
                        header: Int, recordSize: Int, during start: Bool = false) throws -> Outcome {
        var random = SplitMix64(state: seed)
        let targets = start ? [Int](repeating: 0, count: count) : (0..<count).map { _ in Int(random.next() % 100) }.sorted()
        let jitter = start ? 0.008 : 0.003
        let lock = folder.appendingPathComponent("part/lca.lock").path
        var outcome = Outcome()
        let log = folder.appendingPathComponent("part/lca.log").path
        func records() -> Int {
            let size = (try? FileManager.default.attributesOfItem(atPath: log)[.size] as? Int) ?? 0
            return max(0, size - header) / recordSize
        }
        let part = folder.appendingPathComponent("part")
        var finished = false
        for attempt in 0...count where !finished {
            let state = part.appendingPathComponent("state.safetensors").path
            let started = FileManager.default.fileExists(atPath: state)
            if !started, FileManager.default.fileExists(atPath: part.path) {
                // killed before its start was saved: --resume says to start again, and -o refuses the folder
                let resume = try CLI.run(["train", "--resume", "part", "--quiet"], in: folder)
                XCTAssertEqual(resume.status, 1, resume.stderr)
                XCTAssertFalse(resume.signaled, resume.stderr)
                try FileManager.default.removeItem(at: part)
                outcome.restarts += 1
            }
            let process = Process()
            process.executableURL = try CLI.executable()
            process.arguments = started ? ["train", "--resume", "part", "--quiet"] : Self.arguments + ["-o", "part"]
            process.currentDirectoryURL = folder
            process.standardOutput = FileHandle.nullDevice
            let err = Pipe()
            process.standardError = err
            try process.run()
            if attempt < count {
                if number != SIGKILL {
                    let deadline = Date().addingTimeInterval(20)
                    while Date() < deadline, process.isRunning, !Self.catches(process.processIdentifier, number) { usleep(200) }
                }
                let deadline = Date().addingTimeInterval(20)
                while Date() < deadline, process.isRunning, records() < targets[attempt] { usleep(100) }
                // during the start: once the folder is locked (its files are being written)
                while start, Date() < deadline, process.isRunning, !FileManager.default.fileExists(atPath: lock) { usleep(50) }
                let delay = random.uniform(jitter)
                usleep(UInt32(delay * 1e6))
                kill(process.processIdentifier, number)
                outcome.stops.append(String(format: "%d+%.1fms", targets[attempt], delay * 1000))
            }
            let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            if process.terminationReason == .exit {
                outcome.statuses.append(process.terminationStatus)
                if process.terminationStatus == 0 {
                    finished = true
                } else {
                    XCTAssertEqual(process.terminationStatus, 128 + number, "stopped by signal \(number): \(message)")
                    XCTAssert(message.contains("lca train --resume part") || message.contains("had finished"), message)
                    if message.contains("had finished") { finished = true }
                }
            } else {
                outcome.statuses.append(-process.terminationStatus)
                XCTAssertEqual(number, SIGKILL, "only SIGKILL may end the process by a signal: \(process.terminationStatus) \(message)")
            }
        }
        if !finished {
            let resumed = try CLI.run(["train", "--resume", "part", "--quiet"], in: folder)
            XCTAssertEqual(resumed.status, 0, resumed.stderr)
        }
        return outcome
    }

    /// Compares every file of the whole run (but the summary, whose wall
    /// time differs) with the interrupted one's.
    func compare(_ folder: URL, _ label: String) throws {
        let whole = folder.appendingPathComponent("whole"), part = folder.appendingPathComponent("part")
        let names = try FileManager.default.contentsOfDirectory(atPath: whole.path).filter { $0.hasSuffix(".safetensors") || $0 == "lca.log" || $0 == "config.json" }
        XCTAssertGreaterThan(names.count, 15)
        for name in names.sorted() {
            let a = try contents(whole.appendingPathComponent(name))
            let b = try? contents(part.appendingPathComponent(name))
            XCTAssertEqual(a, b, "\(label): \(name) differs from the uninterrupted run's (\(a.count) vs \(b?.count ?? -1) bytes)")
        }
        // a signal's save adds the checkpoint of the iteration it stopped at; nothing else is extra
        let extra = try Set(FileManager.default.contentsOfDirectory(atPath: part.path)).subtracting(names)
            .filter { !$0.hasPrefix("checkpoint-") && !["summary.txt", "lca.lock"].contains($0) }
        XCTAssert(extra.isEmpty, "\(label): left behind \(extra.sorted())")
    }

    func check(signal number: Int32, name: String, seed: UInt64, during start: Bool = false) throws {
        let folder = try temporaryFolder("interrupt-\(name)", testCase: self)
        let whole = try CLI.run(Self.arguments + ["-o", "whole"], in: folder)
        XCTAssertEqual(whole.status, 0, whole.stderr)
        let reader = try LogReader(path: folder.appendingPathComponent("whole/lca.log").path)
        let outcome = try interruptedRun(in: folder, signal: number, count: 5, seed: seed,
                                         header: 24 + reader.headerText.utf8.count, recordSize: reader.header.recordSize,
                                         during: start)
        print("\(name): signals at records \(outcome.stops.joined(separator: ", ")); statuses \(outcome.statuses); restarted \(outcome.restarts)×")
        if number != SIGKILL {
            XCTAssertGreaterThanOrEqual(outcome.statuses.filter { $0 == 128 + number }.count, 3, "too few runs were stopped by the signal")
        }
        try compare(folder, name)
    }

    func testSIGKILLAtSeededMomentsThenResumeIsByteIdentical() throws {
        for seed: UInt64 in [12, 1212] { try check(signal: SIGKILL, name: "SIGKILL-\(seed)", seed: seed) }
    }

    /// SIGKILL within 8 ms of a run locking its new folder (its start:
    /// config, checkpoint 0, log header, state): the folder is resumed, or
    /// (killed before the state existed) refused by --resume and started
    /// again.
    func testSIGKILLDuringTheStart() throws {
        try check(signal: SIGKILL, name: "SIGKILL-start", seed: 30, during: true)
    }

    func testSIGINTSavesExits130AndResumesByteIdentical() throws {
        try check(signal: SIGINT, name: "SIGINT", seed: 130)
    }

    func testSIGTERMSavesExits143AndResumesByteIdentical() throws {
        try check(signal: SIGTERM, name: "SIGTERM", seed: 143)
    }

    func testSIGHUPSavesExits129() throws {
        try check(signal: SIGHUP, name: "SIGHUP", seed: 129)
    }

    /// The state exists from the start: a run killed right after its start
    /// is resumable (the default --save-every 0 included).
    func testStateIsWrittenAtTheStart() throws {
        let folder = try temporaryFolder("start-state", testCase: self)
        var configuration = TrainingConfiguration()
        configuration.iterations = 5
        let run = try TrainingRun(recipe: RunRecipe(data: DataSource(source: "digits"), configuration: configuration),
                                  outputs: RunOutputs(folder: RunFolder(path: folder.appendingPathComponent("r").path)))
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent("r").path)
        for name in ["state.safetensors", "lca-total.safetensors", "lca-helped.safetensors", "config.json", "checkpoint-000000.safetensors", "lca.log"] {
            XCTAssert(names.contains(name), "\(name) missing at the start: \(names)")
        }
        _ = run
    }

    /// A second run into the same folder, or a resume of it, fails at once
    /// while the first one holds it; the first's files are unchanged.
    func testRunFolderIsLocked() throws {
        let folder = try temporaryFolder("lock", testCase: self)
        var configuration = TrainingConfiguration()
        configuration.iterations = 5
        let path = folder.appendingPathComponent("r").path
        let recipe = RunRecipe(data: DataSource(source: "digits"), configuration: configuration)
        let run = try TrainingRun(recipe: recipe, outputs: RunOutputs(folder: RunFolder(path: path)))
        let config = try contents(URL(fileURLWithPath: path + "/config.json"))
        XCTAssertThrowsError(try TrainingRun(resuming: RunFolder(path: path))) { error in
            XCTAssert("\(error)".contains("another lca process is writing this run folder"), "\(error)")
        }
        let second = try CLI.run(["train", "--iterations", "3", "-o", "r", "--quiet"], in: folder)
        XCTAssertEqual(second.status, 1, second.stderr)
        XCTAssertFalse(second.signaled)
        let resumed = try CLI.run(["train", "--resume", "r", "--quiet"], in: folder)
        XCTAssertEqual(resumed.status, 1, resumed.stderr)
        XCTAssert(resumed.stderr.contains("another lca process is writing this run folder"), resumed.stderr)
        XCTAssertEqual(try contents(URL(fileURLWithPath: path + "/config.json")), config)
        try run.run()
        let after = try CLI.run(["train", "--resume", "r", "--quiet"], in: folder)
        XCTAssertEqual(after.status, 0, after.stderr)
    }

    /// -o never writes over lca files, even without config.json or lca.log.
    func testOutputFolderWithLCAFilesIsRefused() throws {
        let folder = try temporaryFolder("refuse", testCase: self)
        let run = folder.appendingPathComponent("r")
        try FileManager.default.createDirectory(at: run, withIntermediateDirectories: true)
        let checkpoint = run.appendingPathComponent("checkpoint-000000.safetensors")
        try Data("precious".utf8).write(to: checkpoint)
        let result = try CLI.run(["train", "--iterations", "3", "-o", "r", "--quiet"], in: folder)
        XCTAssertEqual(result.status, 1, result.stderr)
        XCTAssertFalse(result.signaled)
        XCTAssert(result.stderr.contains("r: already holds lca files (checkpoint-000000.safetensors)"), result.stderr)
        XCTAssertEqual(try contents(checkpoint), Data("precious".utf8))
        // a folder with other files only is fine
        let other = folder.appendingPathComponent("o")
        try FileManager.default.createDirectory(at: other, withIntermediateDirectories: true)
        try Data("notes".utf8).write(to: other.appendingPathComponent("notes.txt"))
        let fine = try CLI.run(["train", "--iterations", "3", "-o", "o", "--quiet"], in: folder)
        XCTAssertEqual(fine.status, 0, fine.stderr)
    }

    /// A folder whose run was killed before its start was saved says so.
    func testResumeWithoutStateSaysRestart() throws {
        let folder = try temporaryFolder("nostate", testCase: self)
        let ok = try CLI.run(["train", "--iterations", "3", "-o", "r", "--quiet"], in: folder)
        XCTAssertEqual(ok.status, 0, ok.stderr)
        try FileManager.default.removeItem(at: folder.appendingPathComponent("r/state.safetensors"))
        let result = try CLI.run(["train", "--resume", "r", "--quiet"], in: folder)
        XCTAssertEqual(result.status, 1, result.stderr)
        XCTAssert(result.stderr.contains("state.safetensors: no resume state"), result.stderr)
        XCTAssert(result.stderr.contains("start the run again"), result.stderr)
    }

    /// --fsync record and never give the same bytes as the default.
    func testFsyncPoliciesWriteTheSameLog() throws {
        let folder = try temporaryFolder("fsync", testCase: self)
        var logs: [Data] = []
        for policy in ["checkpoint", "record", "never"] {
            let result = try CLI.run(["train", "--iterations", "20", "--save-every", "5", "--fsync", policy, "-o", policy, "--quiet"], in: folder)
            XCTAssertEqual(result.status, 0, result.stderr)
            logs.append(try contents(folder.appendingPathComponent(policy + "/lca.log")))
        }
        XCTAssertEqual(logs[0], logs[1])
        XCTAssertEqual(logs[0], logs[2])
        let bad = try CLI.run(["train", "--fsync", "sometimes"], in: folder)
        XCTAssertEqual(bad.status, 64, bad.stderr)
    }

    /// IDX files of `count` 8×8 images (seeded bytes) and labels 0…9.
    static func writeIDX(images: URL, labels: URL, count: Int, seed: UInt64) throws {
        var random = SplitMix64(state: seed)
        var pixels = Data([0, 0, 8, 3, 0, 0, UInt8(count >> 8), UInt8(count & 255), 0, 0, 0, 8, 0, 0, 0, 8])
        for _ in 0..<(count * 64) { pixels.append(UInt8(random.next() & 255)) }
        var classes = Data([0, 0, 8, 1, 0, 0, UInt8(count >> 8), UInt8(count & 255)])
        for i in 0..<count { classes.append(UInt8(i % 10)) }
        try pixels.write(to: images)
        try classes.write(to: labels)
    }

    /// --resume refuses changed data (one pixel), an edited option in
    /// config.json, and says which; nothing in the folder changes.
    func testResumeRefusesChangedInput() throws {
        let folder = try temporaryFolder("fingerprint", testCase: self)
        let images = folder.appendingPathComponent("img.idx"), labels = folder.appendingPathComponent("lab.idx")
        try Self.writeIDX(images: images, labels: labels, count: 200, seed: 7)
        let first = try CLI.run(["train", "--data", "img.idx", "--labels", "lab.idx", "--iterations", "20", "--save-every", "5",
                                 "--batch-size", "20", "-o", "r", "--quiet"], in: folder)
        XCTAssertEqual(first.status, 0, first.stderr)
        let run = folder.appendingPathComponent("r")
        func snapshot() throws -> [String: Data] {
            var files: [String: Data] = [:]
            for name in try FileManager.default.contentsOfDirectory(atPath: run.path) { files[name] = try contents(run.appendingPathComponent(name)) }
            return files
        }
        let before = try snapshot()
        let same = try CLI.run(["train", "--resume", "r", "--quiet"], in: folder)
        XCTAssertEqual(same.status, 0, "an unchanged input resumes: \(same.stderr)")

        var pixels = try contents(images)
        pixels[16 + 5 * 64 + 3] ^= 1
        try pixels.write(to: images)
        let changed = try CLI.run(["train", "--resume", "r", "--quiet"], in: folder)
        XCTAssertEqual(changed.status, 1, changed.stderr)
        XCTAssertFalse(changed.signaled)
        XCTAssert(changed.stderr.contains("config.json: cannot resume: the data (\(images.path), \(labels.path)) changed"), changed.stderr)
        XCTAssert(changed.stderr.contains("200 examples of 64 features, 10 classes"), changed.stderr)
        XCTAssertFalse(changed.stderr.contains("options"), changed.stderr)
        pixels[16 + 5 * 64 + 3] ^= 1
        try pixels.write(to: images)

        let config = run.appendingPathComponent("config.json")
        let text = String(decoding: try contents(config), as: UTF8.self)
        XCTAssert(text.contains("\"learning_rate\" : 0.01"), text)
        try Data(text.replacingOccurrences(of: "\"learning_rate\" : 0.01", with: "\"learning_rate\" : 0.02").utf8).write(to: config)
        let edited = try CLI.run(["train", "--resume", "r", "--quiet"], in: folder)
        XCTAssertEqual(edited.status, 1, edited.stderr)
        XCTAssert(edited.stderr.contains("the options differ from those the run started with"), edited.stderr)
        XCTAssertFalse(edited.stderr.contains("the data"), edited.stderr)
        try Data(text.utf8).write(to: config)
        var after = try snapshot()
        after["summary.txt"] = before["summary.txt"]  // rewritten by the unchanged resume (wall time)
        XCTAssertEqual(after.keys.sorted(), before.keys.sorted())
        for (name, data) in before { XCTAssertEqual(after[name], data, "\(name) changed") }
    }

    /// A diverged run stops naming the iteration and what became
    /// non-finite; the log is valid up to the iteration before, the last
    /// save is kept and the folder stays resumable (it diverges again, the
    /// same way, and says what to do).
    func testDivergenceNamesIterationAndKeepsTheLastSave() throws {
        let folder = try temporaryFolder("diverge", testCase: self)
        // At --lr 1e12 the evaluation-set gradient after the first step
        // (7.8e8 for a unit's share of fc1.weight) is beyond the exact sum's
        // range (docs/method.md, "Determinism"): the divergence shows at
        // iteration 1, named by tensor, before the loss itself overflows
        // (which it did at iteration 2 when the gradient was summed in float64).
        let result = try CLI.run(["train", "--lr", "1e12", "--iterations", "50", "--save-every", "7", "-o", "d", "--quiet"], in: folder)
        XCTAssertEqual(result.status, 1, result.stderr)
        XCTAssertFalse(result.signaled)
        XCTAssert(result.stderr.contains("lca: error: iteration 1: training-split view: the gradient of fc1.weight element"), result.stderr)
        XCTAssert(result.stderr.contains("beyond the exact sum's range"), result.stderr)
        XCTAssert(result.stderr.contains("training diverged"), result.stderr)
        XCTAssert(result.stderr.contains("keeps its save of iteration 0"), result.stderr)
        XCTAssert(result.stderr.contains("smaller --lr"), result.stderr)
        let reader = try LogReader(path: folder.appendingPathComponent("d/lca.log").path)
        XCTAssertEqual(reader.records.map(\.iteration), [])
        let state = try contents(folder.appendingPathComponent("d/state.safetensors"))
        let again = try CLI.run(["train", "--resume", "d", "--quiet"], in: folder)
        XCTAssertEqual(again.status, 1, again.stderr)
        XCTAssert(again.stderr.contains("iteration 1: training-split view: the gradient of fc1.weight element"), again.stderr)
        XCTAssertEqual(try contents(folder.appendingPathComponent("d/state.safetensors")), state)
    }

    /// The core names the tensor whose gradient or update is not finite.
    func testNonFiniteUpdateNamesTheTensor() throws {
        let folder = try temporaryFolder("diverge-tensor", testCase: self)
        let result = try CLI.run(["train", "--optimizer", "sgd", "--lr", "1e300", "--no-lca", "--iterations", "20", "-o", "d", "--quiet"], in: folder)
        XCTAssertEqual(result.status, 1, result.stderr)
        XCTAssert(result.stderr.contains("lca: error: iteration 1: the updated value of fc1.weight (element 65) is inf: training diverged"), result.stderr)
        let minibatch = try CLI.run(["train", "--lr", "1e38", "--no-lca", "--iterations", "20", "-o", "m", "--quiet"], in: folder)
        XCTAssertEqual(minibatch.status, 1, minibatch.stderr)
        XCTAssert(minibatch.stderr.contains("lca: error: iteration 2: the minibatch loss is not finite: training diverged"), minibatch.stderr)
    }

    /// Resume cuts a partial last record (and anything after the state's
    /// iteration) before appending, and removes a killed save's temporaries.
    func testResumeCutsAPartialRecord() throws {
        let folder = try temporaryFolder("partial", testCase: self)
        let first = try CLI.run(["train", "--iterations", "20", "--save-every", "5", "-o", "r", "--quiet"], in: folder)
        XCTAssertEqual(first.status, 0, first.stderr)
        let log = folder.appendingPathComponent("r/lca.log")
        let complete = try contents(log)
        var damaged = complete
        damaged.append(contentsOf: [UInt8](repeating: 0xAB, count: 100))
        try damaged.write(to: log)
        try Data("half a state".utf8).write(to: folder.appendingPathComponent("r/state.safetensors.tmp"))
        let resumed = try CLI.run(["train", "--resume", "r", "--quiet"], in: folder)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try contents(log), complete, "the partial record was not cut")
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("r/state.safetensors.tmp").path))
    }
}

extension SplitMix64 {
    /// Uniform in [0, upper), from the top 53 bits.
    mutating func uniform(_ upper: Double) -> Double { Double(next() >> 11) / Double(1 << 53) * upper }
}
