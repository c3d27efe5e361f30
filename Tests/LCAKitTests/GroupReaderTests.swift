import Foundation
import LCAKit
import XCTest

/// Issue 15's readers: a log with loss-group fields (GroupedLogFixture,
/// made from a real run) read by LogReader, checked by `lca verify`
/// (which must fail on each kind of damage, naming it), exported.
final class GroupReaderTests: XCTestCase {
    static let names = ["zero", "one", "two"]

    /// A small real run with the validation view, in `folder/run`.
    static func run(_ folder: URL, _ extra: [String] = []) throws -> URL {
        let result = try CLI.run(["train", "--iterations", "8", "--batch-size", "100", "--lca-validation", "--quiet", "-o", "run"] + extra,
                                 in: folder)
        XCTAssertEqual(result.status, 0, result.stderr)
        return folder.appendingPathComponent("run/lca.log")
    }

    /// The reader returns exactly the values written, per view, group and
    /// tensor; the accessors agree; verify passes and reports the groups.
    func testReaderReturnsTheGroupFields() throws {
        let folder = try temporaryFolder("group-reader", testCase: self)
        let plain = try Self.run(folder)
        var fixture = GroupedLogFixture(names: Self.names)
        let grouped = folder.appendingPathComponent("grouped.log")
        try fixture.write(from: plain, to: grouped)
        let log = try LogReader(path: grouped.path)
        let original = try LogReader(path: plain.path)
        XCTAssertEqual(log.header.groups?.names, Self.names)
        XCTAssertEqual(log.records.count, fixture.written.count)
        let t = log.header.tensors.count
        var worst = 0.0
        for (index, record) in log.records.enumerated() {
            for (viewIndex, view) in [record.train, try XCTUnwrap(record.validation)].enumerated() {
                let expected = fixture.written[index][viewIndex]
                XCTAssertEqual(view.groupLCA, expected.groupLCA)
                XCTAssertEqual(view.groupLossBefore, expected.lossBefore)
                XCTAssertEqual(view.groupLossAfter, expected.lossAfter)
                XCTAssertEqual(view.groupResidual, expected.residual)
                XCTAssertEqual(view.groupFlags, expected.flags)
                XCTAssertEqual(view.groupCount, 3)
                XCTAssertEqual(view.groupLCA(group: 1, tensor: 2), expected.groupLCA[t + 2])
                XCTAssertEqual(Array(view.groupTensorLCA(2)), Array(expected.groupLCA[(2 * t)...]))
                for tensor in 0..<t {
                    let sum = (0..<3).reduce(0.0) { $0 + view.groupLCA(group: $1, tensor: tensor) }
                    worst = max(worst, abs(sum - view.tensorLCA[tensor]) / max(abs(view.tensorLCA[tensor]), 1e-300))
                }
            }
            // the other fields are the original log's
            var stripped = record
            for keyPath in [\IterationRecord.train] {
                stripped[keyPath: keyPath].groupLCA = []
                stripped[keyPath: keyPath].groupLossBefore = []
                stripped[keyPath: keyPath].groupLossAfter = []
                stripped[keyPath: keyPath].groupResidual = []
                stripped[keyPath: keyPath].groupFlags = []
            }
            stripped.validation = original.records[index].validation
            XCTAssertEqual(stripped, original.records[index])
        }
        print("fixture: worst |Σ_g group_lca − lca| / |lca| = \(worst)")
        XCTAssertLessThan(worst, 1e-12)
        let report = try LogVerifier.verify(try LogStream(path: grouped.path))
        XCTAssertNil(report.failure, report.failure?.description ?? "")
        XCTAssertEqual(report.groups, 3)
        XCTAssertLessThan(report.maxGroupSumError, GroupFields.sumBound)
        print("verify: max group sum error \(report.maxGroupSumError), max |group residual| \(report.maxAbsGroupResidual)")
        let verified = try CLI.run(["verify", grouped.path], in: folder)
        XCTAssertEqual(verified.status, 0, verified.stderr)
        XCTAssert(verified.stdoutText.contains("3 groups: Σ group LCA = LCA within"), verified.stdoutText)
        // the plain log has no group fields
        XCTAssertEqual(original.records[0].train.groupLCA, [])
        XCTAssertEqual(original.records[0].train.groupCount, 0)
    }

    /// Each kind of damage fails verify with its own message and the
    /// iteration (or the header); the undamaged fixture passes.
    func testVerifyFindsEachGroupInconsistency() throws {
        let folder = try temporaryFolder("group-verify", testCase: self)
        let plain = try Self.run(folder)
        func verify(_ name: String, _ change: (inout GroupedLogFixture) -> Void) throws -> LogVerifier.Report {
            var fixture = GroupedLogFixture(names: Self.names)
            change(&fixture)
            let url = folder.appendingPathComponent(name + ".log")
            try fixture.write(from: plain, to: url)
            return try LogVerifier.verify(try LogStream(path: url.path))
        }
        func expect(_ name: String, iteration: UInt64, _ words: [String], _ change: (inout GroupedLogFixture) -> Void,
                    file: StaticString = #filePath, line: UInt = #line) throws {
            let report = try verify(name, change)
            let failure = try XCTUnwrap(report.failure, "\(name): verify passed", file: file, line: line)
            XCTAssertEqual(failure.iteration, iteration, "\(name): \(failure)", file: file, line: line)
            for word in words { XCTAssert(failure.message.contains(word), "\(name): no \"\(word)\" in \(failure)", file: file, line: line) }
        }
        XCTAssertNil(try verify("good") { _ in }.failure)
        // a group's LCA off by 1e-6 of the tensor's: the sum no longer matches
        try expect("sum", iteration: 4, ["fc1.weight", "Σ over groups of group_lca"]) { f in
            f.tamper = { r, v, values in if r == 3 && v == 0 { values.groupLCA[0] *= 1 + 1e-6 } }
        }
        // the same in the validation view
        try expect("valsum", iteration: 2, ["validation", "val_group_lca"]) { f in
            f.tamper = { r, v, values in if r == 1 && v == 1 { values.groupLCA[5] += 1e-3 } }
        }
        // a residual above the threshold that is not flagged, and a flag without cause
        try expect("unflagged", iteration: 3, ["group one", "not flagged"]) { f in
            f.tamper = { r, v, values in
                if r == 2 && v == 0 { values.residual[1] = 0.01; values.lossAfter[1] = values.lossBefore[1] + (values.groupLCA[4..<8].reduce(0, +) + 0.01) * 3 }
            }
        }
        try expect("flag", iteration: 5, ["group two", "flagged above the threshold"]) { f in
            f.tamper = { r, v, values in if r == 4 && v == 0 { values.flags[2] = 1 } }
        }
        // a residual that is not what the losses and LCA give
        try expect("residual", iteration: 6, ["group zero", "group_residual", "n_g/N"]) { f in
            f.tamper = { r, v, values in if r == 5 && v == 0 { values.residual[0] += 1e-6 } }
        }
        // losses that do not chain from record to record
        try expect("chain", iteration: 7, ["group_loss_before", "previous group_loss_after"]) { f in
            f.tamper = { r, v, values in if r == 6 && v == 0 { values.lossBefore[2] = values.lossBefore[2].nextUp } }
        }
        // group counts that do not cover the evaluation set
        try expect("count", iteration: 0, ["header", "groups.examples add up to"]) { f in
            f.tamperHeader = { json in
                var groups = json["groups"] as! [String: Any]
                groups["examples"] = [1, 2, 3]
                json["groups"] = groups
            }
        }
        try expect("names", iteration: 0, ["header", "not unique"]) { f in f.names = ["a", "a", "b"] }
        // a group with no examples must have no LCA
        var empty = GroupedLogFixture(names: Self.names)
        let n = try LogReader(path: plain.path).header.data?.evaluation ?? 0
        empty.examples = [n / 2, n - n / 2, 0]
        let emptyURL = folder.appendingPathComponent("empty.log")
        try empty.write(from: plain, to: emptyURL)
        XCTAssertNil(try LogVerifier.verify(try LogStream(path: emptyURL.path)).failure)
        try expect("emptylca", iteration: 1, ["group two has no examples"]) { f in
            f.examples = [n / 2, n - n / 2, 0]
            f.tamper = { r, v, values in if r == 0 && v == 0 { values.residual[2] = 1e-9 } }
        }
        // the command line: exit 1 naming the iteration
        let damaged = folder.appendingPathComponent("residual.log")
        let result = try CLI.run(["verify", damaged.path], in: folder)
        XCTAssertEqual(result.status, 1)
        XCTAssert(result.stderr.contains("FAILED at iteration 6: group zero"), result.stderr)
    }

    /// A header that does not explain the group fields is refused by every
    /// reader (exit 1, the file, byte 24 and the problem), the log unchanged.
    func testHeadersThatDoNotExplainTheGroupFieldsAreRefused() throws {
        let folder = try temporaryFolder("group-hostile", testCase: self)
        let plain = try Self.run(folder)
        func refused(_ name: String, _ words: [String], _ change: @escaping (inout [String: Any]) -> Void) throws {
            var fixture = GroupedLogFixture(names: Self.names)
            fixture.tamperHeader = change
            let url = folder.appendingPathComponent(name + ".log")
            try fixture.write(from: plain, to: url)
            let before = try contents(url)
            for command in [["show"], ["verify"], ["export", "--to", "csv"], ["report", "-o", "-"], ["plot", "--figure", "group-heatmap", "-o", "x.svg"]] {
                let result = try CLI.run(command + [url.path], in: folder)
                XCTAssertEqual(result.status, 1, "\(name) \(command): \(result.stderr)")
                XCTAssertFalse(result.signaled)
                XCTAssert(result.stderr.hasPrefix("lca: error: \(url.path): byte 24:"), "\(name) \(command): \(result.stderr)")
                for word in words { XCTAssert(result.stderr.contains(word), "\(name) \(command): no \"\(word)\" in \(result.stderr)") }
            }
            XCTAssertEqual(try contents(url), before)
        }
        try refused("nogroups", ["group fields but the header lists no groups"]) { $0.removeValue(forKey: "groups") }
        try refused("twogroups", ["group_lca has", "expected", "groups × tensors"]) { json in
            var groups = json["groups"] as! [String: Any]
            groups["names"] = ["a", "b"]
            json["groups"] = groups
        }
        try refused("partial", ["has group_lca", "but not", "group_flags"]) { json in
            // drop the training view's group_flags by renaming it: the record still adds up
            var fields = json["fields"] as! [[String: Any]]
            if let i = fields.firstIndex(where: { $0["name"] as? String == "group_flags" }) { fields[i]["name"] = "group_flagz" }
            json["fields"] = fields
        }
    }

    /// Exports name every group value: CSV and JSON Lines columns
    /// `<group>.<tensor>.group_lca`, `<group>.group_loss_before`, …, equal
    /// to the reader's values bit for bit; npy's dtype gives group_lca its
    /// (G, T) shape; TensorBoard gets one scalar per group and tensor.
    func testExportsNameTheGroupValues() throws {
        let folder = try temporaryFolder("group-export", testCase: self)
        let plain = try Self.run(folder)
        var fixture = GroupedLogFixture(names: Self.names)
        let grouped = folder.appendingPathComponent("grouped.log")
        try fixture.write(from: plain, to: grouped)
        let log = try LogReader(path: grouped.path)
        let result = try CLI.run(["export", grouped.path, "--to", "csv", "-o", "out.csv"], in: folder)
        XCTAssertEqual(result.status, 0, result.stderr)
        let lines = try String(contentsOf: folder.appendingPathComponent("out.csv"), encoding: .utf8).split(separator: "\n")
        let columns = lines[0].split(separator: ",").map(String.init)
        let tensors = log.header.tensors.map(\.name)
        for (k, group) in Self.names.enumerated() {
            for (t, tensor) in tensors.enumerated() {
                for (prefix, view) in [("", \IterationRecord.train), ("val_", \IterationRecord.validation!)] {
                    let column = try XCTUnwrap(columns.firstIndex(of: "\(group).\(tensor).\(prefix)group_lca"), "\(group).\(tensor).\(prefix)group_lca")
                    for (row, record) in log.records.enumerated() {
                        let value = try XCTUnwrap(Double(String(lines[row + 1].split(separator: ",")[column])))
                        XCTAssertEqual(value.bitPattern, record[keyPath: view].groupLCA(group: k, tensor: t).bitPattern)
                    }
                }
            }
            for field in ["group_loss_before", "group_loss_after", "group_residual", "group_flags", "val_group_residual"] {
                XCTAssert(columns.contains("\(group).\(field)"), "\(group).\(field)")
            }
        }
        XCTAssert(columns.contains("group_reserved"))
        let npy = try CLI.run(["export", grouped.path, "--to", "npy", "-o", "out.npy"], in: folder)
        XCTAssertEqual(npy.status, 0, npy.stderr)
        let npyHead = String(decoding: try contents(folder.appendingPathComponent("out.npy")).prefix(4096), as: UTF8.self)
        XCTAssert(npyHead.contains("('group_lca', '<f8', (3, \(tensors.count)))"), npyHead)
        XCTAssert(npyHead.contains("('group_residual', '<f8', (3,))"), npyHead)
        let board = try CLI.run(["export", grouped.path, "--to", "tensorboard", "-o", "tb"], in: folder)
        XCTAssertEqual(board.status, 0, board.stderr)
        let events = try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent("tb").path)
        let event = try contents(folder.appendingPathComponent("tb").appendingPathComponent(try XCTUnwrap(events.first)))
        let text = String(decoding: event, as: UTF8.self)
        for tag in ["group_lca/one/fc2.weight", "group_lca_cumulative/two/fc1.bias", "group_lca/zero/total", "group_loss/two",
                    "group_residual/one", "validation/group_lca/one/fc1.weight"] {
            XCTAssert(text.contains(tag), "no TensorBoard tag \(tag)")
        }
    }
}
