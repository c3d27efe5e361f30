import Foundation
import LCAKit
import XCTest

/// Issue 15's views: `lca show --groups` and the report's group figures,
/// on a log with loss groups (GroupedLogFixture from a real run), checked
/// against sums made here from the reader's values.
final class GroupViewTests: XCTestCase {
    static let names = ["zero", "one", "two"]

    /// A grouped log in `folder` and its records.
    static func groupedLog(_ folder: URL, _ extra: [String] = []) throws -> (URL, LogReader) {
        let plain = try GroupReaderTests.run(folder, extra)
        var fixture = GroupedLogFixture(names: names)
        let grouped = folder.appendingPathComponent("grouped.log")
        try fixture.write(from: plain, to: grouped)
        return (grouped, try LogReader(path: grouped.path))
    }

    /// Σ over records of group k's LCA of the tensors `members`.
    static func sum(_ log: LogReader, group k: Int, tensors members: [Int], validation: Bool = false) -> Double {
        log.records.reduce(0) { total, record in
            let v = validation ? record.validation! : record.train
            return total + members.reduce(0) { $0 + v.groupLCA(group: k, tensor: $1) }
        }
    }

    func testShowGroups() throws {
        let folder = try temporaryFolder("group-show", testCase: self)
        let (grouped, log) = try Self.groupedLog(folder)
        let shown = try CLI.run(["show", "--groups", grouped.path], in: folder)
        XCTAssertEqual(shown.status, 0, shown.stderr)
        let text = shown.stdoutText
        print(text)
        XCTAssert(text.contains("loss groups on the training split (3 groups from class, 8 iterations)"), text)
        XCTAssert(text.contains("loss groups on the validation split"), text)
        XCTAssert(text.contains("Σ group LCA per layer (share of the group's Σ LCA)"), text)
        // each group's row: examples and Σ LCA as printed
        let examples = try XCTUnwrap(log.header.groups?.examples)
        let t = log.header.tensors.count
        for (k, name) in Self.names.enumerated() {
            let total = Self.sum(log, group: k, tensors: Array(0..<t))
            let row = try XCTUnwrap(text.split(separator: "\n").first { $0.hasPrefix(name + " ") && $0.contains("→") }, name)
            XCTAssert(row.contains(" \(examples[k]) "), String(row))
            XCTAssert(row.contains(String(format: "%13.6e", total)), "\(row) has not \(String(format: "%13.6e", total))")
        }
        // the layer table: fc1 = fc1.weight + fc1.bias
        let fc1 = Self.sum(log, group: 1, tensors: [0, 1])
        let layerRow = try XCTUnwrap(text.split(separator: "\n").first { $0.hasPrefix("one ") && !$0.contains("→") })
        XCTAssert(layerRow.contains(String(format: "%+.4e", fc1)), "\(layerRow): no \(String(format: "%+.4e", fc1))")
        // per tensor
        let byTensor = try CLI.run(["show", "--groups", "--group-tensors", grouped.path], in: folder)
        XCTAssertEqual(byTensor.status, 0, byTensor.stderr)
        XCTAssert(byTensor.stdoutText.contains("Σ group LCA per tensor"))
        XCTAssert(byTensor.stdoutText.contains("fc2.weight"))
        // without --groups the summary is the plain log's
        let plainShow = try CLI.run(["show", folder.appendingPathComponent("run/lca.log").path], in: folder)
        let groupedShow = try CLI.run(["show", grouped.path], in: folder)
        XCTAssertEqual(plainShow.stdoutText, groupedShow.stdoutText)
        // JSON: per view, group, tensor and layer, the same sums
        let json = try CLI.run(["show", "--json", grouped.path], in: folder)
        XCTAssertEqual(json.status, 0, json.stderr)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: json.stdout) as? [String: Any])
        let views = try XCTUnwrap(object["groups"] as? [[String: Any]])
        XCTAssertEqual(views.map { $0["view"] as? String }, ["training split", "validation split"])
        var worst = 0.0
        for (viewIndex, view) in views.enumerated() {
            let groups = try XCTUnwrap(view["groups"] as? [[String: Any]])
            XCTAssertEqual(groups.map { $0["name"] as? String }, Self.names)
            for (k, group) in groups.enumerated() {
                let layers = try XCTUnwrap(group["layers"] as? [[String: Any]])
                XCTAssertEqual(layers.map { $0["name"] as? String }, ["fc1", "fc2"])
                for (l, members) in [[0, 1], [2, 3]].enumerated() {
                    let expected = Self.sum(log, group: k, tensors: members, validation: viewIndex == 1)
                    let got = try XCTUnwrap(layers[l]["lca"] as? Double)
                    worst = max(worst, abs(got - expected) / abs(expected))
                }
            }
        }
        print("show --json: worst relative difference of a layer's Σ group LCA from the reader's \(worst)")
        XCTAssertLessThan(worst, 1e-12)
        // --groups on a log without groups: a clear error
        let refused = try CLI.run(["show", "--groups", folder.appendingPathComponent("run/lca.log").path], in: folder)
        XCTAssertEqual(refused.status, 1)
        XCTAssert(refused.stderr.contains("the log has no loss groups"), refused.stderr)
    }
}
