import Foundation
import XCTest

/// Hostile input the C core refuses (issue 12, part "core"): every case exits 1 with
/// `lca: error:` naming what is wrong, no signal, no run folder left, and the files that
/// existed unchanged.
final class CoreHostileTests: XCTestCase {
    private func assertRefused(_ result: CLI.Result, _ parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(result.status, 1, result.stderr, file: file, line: line)
        XCTAssertFalse(result.signaled, result.stderr, file: file, line: line)
        XCTAssert(result.stderr.hasPrefix("lca: error: "), result.stderr, file: file, line: line)
        for part in parts { XCTAssert(result.stderr.contains(part), "missing \"\(part)\" in: \(result.stderr)", file: file, line: line) }
        XCTAssert(result.stdout.isEmpty, "nothing on stdout after a failure", file: file, line: line)
    }

    /// A layer whose output would be 0×0 is refused naming the layer and the sizes.
    func testZeroOutputLayerIsRefused() throws {
        let folder = try temporaryFolder("zero-output", testCase: self)
        let result = try CLI.run(["train", "--model", "input(1,8,8) conv(4,9,valid)", "-o", "run", "--iterations", "2"], in: folder)
        assertRefused(result, ["layer 1 \"conv(4,9,valid)\"", "kernel 9×9", "8×8 input", "at least 1×1"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("run").path))
    }

    /// A model whose memory cannot fit is refused before allocation, with the bytes.
    func testModelBeyondMemoryIsRefusedUpFront() throws {
        let folder = try temporaryFolder("memory", testCase: self)
        let result = try CLI.run(["train", "--model", "64-100000000-100000000-10", "-o", "run"], in: folder)
        assertRefused(result, ["model \"64-100000000-100000000-10\" (10000007600000010 parameters)", "would need 40000030400000040 bytes", "available"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("run").path))
    }

    /// The error of a 5,000-character spec keeps its reason (the core's messages were cut at
    /// 1,024 bytes).
    func testLongSpecErrorIsNotCut() throws {
        let folder = try temporaryFolder("long-spec", testCase: self)
        let spec = "input(1,8,8)" + String(repeating: " ", count: 5000) + "conv(4,9,valid) dense(10)"
        let result = try CLI.run(["train", "--model", spec, "-o", "run"], in: folder)
        assertRefused(result, [spec, "every layer's output must be at least 1×1)"])
    }

    /// Labels 0, 7 and 255 make a 256-class problem: said in one note line.
    func testClassCountNotice() throws {
        let folder = try temporaryFolder("classes", testCase: self)
        var images = Data([0, 0, 8, 3, 0, 0, 0, 6, 0, 0, 0, 2, 0, 0, 0, 2])
        images.append(Data(repeating: 0, count: 24))
        try images.write(to: folder.appendingPathComponent("images.idx"))
        try Data([0, 0, 8, 1, 0, 0, 0, 6, 0, 7, 255, 0, 7, 7]).write(to: folder.appendingPathComponent("labels.idx"))
        let result = try CLI.run(["train", "--data", "images.idx", "--labels", "labels.idx", "-o", "run", "--iterations", "2"], in: folder)
        XCTAssertEqual(result.status, 0, result.stderr)
        let notes = result.stderr.split(separator: "\n").filter { $0.hasPrefix("lca: note: data set ") }
        XCTAssertEqual(notes.count, 1, result.stderr)
        XCTAssert(notes.first?.hasSuffix("images.idx: 256 classes (labels 0 … 255), of which 3 occur; missing: 1 … 6, 8 … 254; a model needs at least 256 outputs") ?? false, result.stderr)
        let quiet = try CLI.run(["train", "--data", "images.idx", "--labels", "labels.idx", "-o", "quiet", "--iterations", "2", "--quiet"], in: folder)
        XCTAssertEqual(quiet.status, 0, quiet.stderr)
        XCTAssertFalse(quiet.stderr.contains("lca: note:"), quiet.stderr)
        let digits = try CLI.run(["train", "-o", "digits", "--iterations", "2"], in: folder)
        XCTAssertEqual(digits.status, 0, digits.stderr)
        XCTAssertFalse(digits.stderr.contains("classes"), digits.stderr)
    }

    /// NaN weights in a checkpoint given to --init are refused naming the file, the tensor and
    /// the element (they were reported as "training diverged").
    func testNaNCheckpointIsRefusedNamingTheFile() throws {
        let folder = try temporaryFolder("nan-init", testCase: self)
        let first = try CLI.run(["train", "-o", "run", "--iterations", "2", "--quiet"], in: folder)
        XCTAssertEqual(first.status, 0, first.stderr)
        let checkpoint = folder.appendingPathComponent("run/checkpoint-000002.safetensors")
        var bytes = try contents(checkpoint)
        var nan = Float.nan.bitPattern.littleEndian
        withUnsafeBytes(of: &nan) { bytes.replaceSubrange(bytes.count - 4 ..< bytes.count, with: $0) }
        let poisoned = folder.appendingPathComponent("poisoned.safetensors")
        try bytes.write(to: poisoned)
        let result = try CLI.run(["train", "--init", "poisoned.safetensors", "-o", "again", "--iterations", "2"], in: folder)
        assertRefused(result, ["poisoned.safetensors", "tensor \"fc2.bias\" (F32)", "element 9 [9] is NaN", "must be finite"])
        XCTAssertFalse(result.stderr.contains("diverged; try a smaller learning rate"), result.stderr)
        XCTAssertEqual(try contents(poisoned), bytes, "the checkpoint is unchanged")
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("again").path))
    }
}
