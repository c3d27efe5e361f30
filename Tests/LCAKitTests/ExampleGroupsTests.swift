import Foundation
import XCTest
import LCAKit

/// Loss groups (issue 15): `lca train --groups`, the files it reads, the
/// per-group totals, resume and `lca attribute --groups`.
final class ExampleGroupsTests: XCTestCase {
    /// The digits' labels, as a group id per example.
    private func digitLabels() throws -> [UInt32] {
        let data = try Dataset(source: "digits")
        return data.gather((0..<data.count).map { UInt32($0) }).labels.map { UInt32($0) }
    }

    /// ids as an IDX file of type 0x08 (bytes) or 0x0C (big-endian int32).
    private func idx(_ ids: [Int64], int32: Bool) -> Data {
        var bytes: [UInt8] = [0, 0, int32 ? 0x0C : 0x08, 1]
        let n = UInt32(ids.count)
        bytes += [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)]
        for id in ids {
            if int32 {
                let v = UInt32(bitPattern: Int32(id))
                bytes += [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)]
            } else {
                bytes.append(UInt8(id))
            }
        }
        return Data(bytes)
    }

    /// ids as a version-1 .npy file of dtype descr ("|u1", "<i4", "<i8").
    private func npy(_ ids: [Int64], descr: String, shape: String? = nil) -> Data {
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shape ?? "(\(ids.count),)"), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)]
        bytes += Array(header.utf8)
        let width = descr.hasSuffix("1") ? 1 : descr.hasSuffix("4") ? 4 : 8
        for id in ids {
            let v = UInt64(bitPattern: id)
            for k in 0..<width { bytes.append(UInt8(v >> (8 * UInt64(k)) & 0xFF)) }
        }
        return Data(bytes)
    }

    /// The F64 tensors of a safetensors file by name (8-byte header length,
    /// JSON header, data).
    private func safetensors(_ url: URL) throws -> [String: [Double]] {
        let bytes = try Data(contentsOf: url)
        let length = bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        let header = try XCTUnwrap(try JSONSerialization.jsonObject(with: bytes.subdata(in: 8..<(8 + length))) as? [String: Any])
        var tensors: [String: [Double]] = [:]
        for (name, value) in header where name != "__metadata__" {
            let entry = try XCTUnwrap(value as? [String: Any])
            XCTAssertEqual(entry["dtype"] as? String, "F64", name)
            let offsets = try XCTUnwrap(entry["data_offsets"] as? [Int])
            let data = bytes.subdata(in: (8 + length + offsets[0])..<(8 + length + offsets[1]))
            tensors[name] = data.withUnsafeBytes { raw in
                (0..<(data.count / 8)).map { Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self))) }
            }
        }
        return tensors
    }

    /// `--groups class --groups-totals --lca-validation`: the header's groups,
    /// every record's groups adding up to its tensors (relative 1e-12 of
    /// Σ_g |·|, the bound of docs/method.md "Groups"), the per-group totals
    /// named `<tensor>@<group>` adding up to lca-total.safetensors.
    func testGroupsClassRecordsAndTotals() throws {
        let folder = try temporaryFolder("groups-class", testCase: self)
        let run = try CLI.run(["train", "--groups", "class", "--groups-totals", "--lca-validation", "--iterations", "6",
                               "-o", "run", "--quiet"], in: folder)
        XCTAssertEqual(run.status, 0, run.stderr)
        let log = try LogReader(path: folder.appendingPathComponent("run/lca.log").path)
        let groups = try XCTUnwrap(log.header.groups)
        XCTAssertEqual(groups.source, "class")
        XCTAssertEqual(groups.names, (0..<10).map(String.init))
        XCTAssertEqual(groups.examples?.reduce(0, +), 1618)
        XCTAssertEqual(groups.validationExamples?.reduce(0, +), 179)
        // the summary says the run has groups, and where to see them
        let summary = try String(contentsOf: folder.appendingPathComponent("run/summary.txt"), encoding: .utf8)
        XCTAssertTrue(summary.contains("loss groups           10 from class: every record carries each group's LCA"),
                      summary)
        var worst = 0.0
        for record in log.records {
            for view in [record.train, try XCTUnwrap(record.validation)] {
                XCTAssertEqual(view.groupCount, 10)
                for t in 0..<view.tensorLCA.count {
                    let parts = (0..<10).map { view.groupLCA[$0 * view.tensorLCA.count + t] }
                    let scale = parts.map(abs).reduce(0, +)
                    worst = max(worst, abs(parts.reduce(0, +) - view.tensorLCA[t]) / max(scale, 1e-300))
                }
                let residuals = view.groupResidual.reduce(0, +)
                XCTAssertEqual(residuals, view.residual, accuracy: 1e-12)
            }
        }
        print("worst |Σ_g group_lca − lca| / Σ_g |group_lca| over records and tensors: \(worst)")
        XCTAssertLessThanOrEqual(worst, 1e-12)

        let totals = try safetensors(folder.appendingPathComponent("run/lca-total.safetensors"))
        let grouped = try safetensors(folder.appendingPathComponent("run/lca-group-total.safetensors"))
        XCTAssertEqual(grouped.count, 10 * totals.count)
        var worstTotal = 0.0
        for (name, values) in totals {
            for i in 0..<values.count {
                let parts = try (0..<10).map { try XCTUnwrap(grouped["\(name)@\($0)"], "\(name)@\($0) missing")[i] }
                let scale = parts.map(abs).reduce(0, +)
                if scale > 0 { worstTotal = max(worstTotal, abs(parts.reduce(0, +) - values[i]) / scale) }
            }
        }
        print("worst |Σ_g group total − total| / Σ_g |·| per parameter: \(worstTotal)")
        XCTAssertLessThanOrEqual(worstTotal, 1e-12)
        // the summary is written as before
        XCTAssert(FileManager.default.fileExists(atPath: folder.appendingPathComponent("run/summary.txt").path))
    }

    /// A FILE in each format gives the same ids as the labels they were
    /// written from, and a run from a file writes the records of
    /// `--groups class` when the file holds the labels.
    func testGroupsFileFormats() throws {
        let folder = try temporaryFolder("groups-files", testCase: self)
        let labels = try digitLabels().map { Int64($0) }
        let files: [(String, Data)] = [
            ("ids-u8.idx", idx(labels, int32: false)), ("ids-i32.idx", idx(labels, int32: true)),
            ("ids-u1.npy", npy(labels, descr: "|u1")), ("ids-i4.npy", npy(labels, descr: "<i4")),
            ("ids-i8.npy", npy(labels, descr: "<i8")),
        ]
        for (name, bytes) in files {
            let url = folder.appendingPathComponent(name)
            try bytes.write(to: url)
            let groups = try ExampleGroups.load(file: url.path, exampleCount: labels.count)
            XCTAssertEqual(groups.ids.map { Int64($0) }, labels, name)
            XCTAssertEqual(groups.count, 10, name)
            XCTAssertEqual(groups.source, "file:" + url.path, name)
        }
        let byClass = try CLI.run(["train", "--groups", "class", "--iterations", "3", "-o", "class", "--quiet"], in: folder)
        XCTAssertEqual(byClass.status, 0, byClass.stderr)
        let byFile = try CLI.run(["train", "--groups", "ids-i4.npy", "--iterations", "3", "-o", "file", "--quiet"], in: folder)
        XCTAssertEqual(byFile.status, 0, byFile.stderr)
        let a = try LogReader(path: folder.appendingPathComponent("class/lca.log").path)
        let b = try LogReader(path: folder.appendingPathComponent("file/lca.log").path)
        XCTAssertEqual(b.header.groups?.source, "file:" + folder.appendingPathComponent("ids-i4.npy").path)
        XCTAssertEqual(a.records, b.records, "the same ids give the same records")
    }

    /// Bad groups files: exit 1, the message names the file and the byte or
    /// field at fault; nothing is written.
    func testGroupsFileErrors() throws {
        let folder = try temporaryFolder("groups-errors", testCase: self)
        let labels = try digitLabels().map { Int64($0) }
        var negative = labels
        negative[5] = -1
        var large = labels
        large[7] = 5000
        let cases: [(String, Data, [String])] = [
            ("short.npy", npy(Array(labels.dropLast()), descr: "<i4"), ["short.npy", "1796 group ids", "1797 examples"]),
            ("float.npy", npy(labels, descr: "<f4"), ["float.npy", "'descr' is <f4"]),
            ("matrix.npy", npy(labels, descr: "<i4", shape: "(1797, 1)"), ["matrix.npy", "'shape'"]),
            ("negative.npy", npy(negative, descr: "<i8"), ["negative.npy", "byte \(128 + 5 * 8)", "negative"]),
            ("large.idx", idx(large, int32: true), ["large.idx", "byte \(8 + 7 * 4)", "too many groups"]),
            ("cut.idx", idx(labels, int32: true).dropLast(3), ["cut.idx", "IDX header says 1797 ids"]),
            ("type.idx", { var d = self.idx(labels, int32: false); d[2] = 0x0D; return d }(), ["type.idx", "byte 2", "IDX type 0x0d"]),
        ]
        for (name, bytes, fragments) in cases {
            try bytes.write(to: folder.appendingPathComponent(name))
            let result = try CLI.run(["train", "--groups", name, "--iterations", "1", "-o", "out-" + name, "--quiet"], in: folder)
            XCTAssertEqual(result.status, 1, "\(name): \(result.stderr)")
            for fragment in fragments { XCTAssert(result.stderr.contains(fragment), "\(name): \(result.stderr)") }
            XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("out-" + name + "/lca.log").path), name)
        }
        let missing = try CLI.run(["train", "--groups", "no-such.npy", "--iterations", "1", "-o", "x", "--quiet"], in: folder)
        XCTAssertEqual(missing.status, 1, missing.stderr)
        XCTAssert(missing.stderr.contains("no-such.npy"), missing.stderr)
        let totals = try CLI.run(["train", "--groups-totals", "--iterations", "1", "-o", "y", "--quiet"], in: folder)
        XCTAssertEqual(totals.status, 64, totals.stderr)
        XCTAssert(totals.stderr.contains("--groups-totals needs --groups"), totals.stderr)
        let noLCA = try CLI.run(["train", "--groups", "class", "--no-lca", "--iterations", "1", "-o", "z", "--quiet"], in: folder)
        XCTAssertEqual(noLCA.status, 64, noLCA.stderr)
    }

    /// A run with groups resumes to the bytes of the run that never
    /// stopped (log, state, per-group totals); a groups file changed since
    /// the start is refused, naming the groups; --groups with --resume is
    /// refused.
    func testResumeWithGroups() throws {
        let folder = try temporaryFolder("groups-resume", testCase: self)
        let labels = try digitLabels().map { Int64($0 % 4) }
        try npy(labels, descr: "<i8").write(to: folder.appendingPathComponent("ids.npy"))
        let arguments = ["train", "--groups", "ids.npy", "--groups-totals", "--batch-size", "100", "--quiet"]
        let whole = try CLI.run(arguments + ["--iterations", "6", "-o", "whole"], in: folder)
        XCTAssertEqual(whole.status, 0, whole.stderr)
        let three = try CLI.run(arguments + ["--iterations", "3", "-o", "three"], in: folder)
        XCTAssertEqual(three.status, 0, three.stderr)
        // "part": the whole run's folder with the resume state of iteration 3 (the same steps,
        // so the same state): resuming cuts its log back to 3 records and runs 4 … 6 again
        let manager = FileManager.default
        try manager.copyItem(at: folder.appendingPathComponent("whole"), to: folder.appendingPathComponent("part"))
        try manager.removeItem(at: folder.appendingPathComponent("part/state.safetensors"))
        try manager.copyItem(at: folder.appendingPathComponent("three/state.safetensors"),
                             to: folder.appendingPathComponent("part/state.safetensors"))
        let resumed = try CLI.run(["train", "--resume", "part", "--quiet"], in: folder)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        for name in ["lca.log", "state.safetensors", "lca-group-total.safetensors", "lca-total.safetensors"] {
            XCTAssertEqual(try contents(folder.appendingPathComponent("whole/" + name)),
                           try contents(folder.appendingPathComponent("part/" + name)), name)
        }
        let conflicting = try CLI.run(["train", "--resume", "part", "--groups", "class"], in: folder)
        XCTAssertEqual(conflicting.status, 64, conflicting.stderr)
        XCTAssert(conflicting.stderr.contains("--groups"), conflicting.stderr)
        // other ids in the same file: refused
        try npy(labels.map { ($0 + 1) % 4 }, descr: "<i8").write(to: folder.appendingPathComponent("ids.npy"))
        let changed = try CLI.run(["train", "--resume", "part", "--quiet"], in: folder)
        XCTAssertEqual(changed.status, 1, changed.stderr)
        XCTAssert(changed.stderr.contains("the loss groups changed"), changed.stderr)
        XCTAssert(changed.stderr.contains("ids.npy"), changed.stderr)
    }

    /// `lca attribute --groups class`: each group's LCA per tensor adds up
    /// to the tensor's, and the groups' examples to the examples.
    func testAttributeGroups() throws {
        let folder = try temporaryFolder("groups-attribute", testCase: self)
        let train = try CLI.run(["train", "--iterations", "4", "-o", "run", "--quiet"], in: folder)
        XCTAssertEqual(train.status, 0, train.stderr)
        let result = try CLI.run(["attribute", "--from", "run/checkpoint-000000.safetensors", "--to",
                                  "run/checkpoint-000004.safetensors", "--data", "digits", "--groups", "class", "--json"],
                                 in: folder)
        XCTAssertEqual(result.status, 0, result.stderr)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: result.stdout) as? [String: Any])
        let groups = try XCTUnwrap(object["groups"] as? [[String: Any]])
        XCTAssertEqual(groups.count, 10)
        XCTAssertEqual(groups.compactMap { $0["examples"] as? Int }.reduce(0, +), 1797)
        let tensors = try XCTUnwrap(object["tensors"] as? [[String: Any]])
        for (t, tensor) in tensors.enumerated() {
            let lca = try XCTUnwrap(tensor["lca"] as? Double)
            let parts = try groups.map { try XCTUnwrap(($0["tensor_lca"] as? [Double])?[t]) }
            XCTAssertEqual(parts.reduce(0, +), lca, accuracy: 1e-12 * max(parts.map(abs).reduce(0, +), 1e-300))
        }
        let table = try CLI.run(["attribute", "--from", "run/checkpoint-000000.safetensors", "--to",
                                 "run/checkpoint-000004.safetensors", "--data", "digits", "--groups", "class"], in: folder)
        XCTAssertEqual(table.status, 0, table.stderr)
        XCTAssert(table.stdoutText.contains("by loss group"), table.stdoutText)
    }

    /// The Swift API: a trainer with groups gives records whose group
    /// fields are there, and one without has none.
    func testTrainerAPI() throws {
        let data = try Dataset(source: "digits")
        let model = try Model(spec: "64-16-10")
        model.initialize(seed: 1)
        var configuration = TrainingConfiguration()
        configuration.iterations = 2
        configuration.exampleGroups = try ExampleGroups.classes(of: data)
        configuration.lcaGroupTotals = true
        let trainer = try Trainer(model: model, data: data, configuration: configuration)
        let record = try trainer.step()
        XCTAssertEqual(record.train.groupCount, 10)
        XCTAssertEqual(record.train.groupLCA.count, 10 * model.tensors.count)
        XCTAssertEqual(trainer.groupExamples().reduce(0, +), trainer.evaluationCount)
        XCTAssertEqual(trainer.groupTotals.count, 10 * model.parameterCount)
        let plain = try Trainer(model: try Model(spec: "64-16-10"), data: data, configuration: TrainingConfiguration())
        let plainRecord = try plain.step()
        XCTAssertEqual(plainRecord.train.groupCount, 0)
        XCTAssertTrue(plainRecord.train.groupLCA.isEmpty)
    }
}
