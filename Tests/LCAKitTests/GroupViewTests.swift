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

extension GroupViewTests {
    /// The figure JSON of `name` in a report page.
    static func figureData(_ html: String, _ name: String) throws -> [String: Any] {
        let start = try XCTUnwrap(html.range(of: "<script type=\"application/json\" class=\"figure-data\" id=\"data-\(name)\">"), name)
        let end = try XCTUnwrap(html.range(of: "</script>", range: start.upperBound..<html.endIndex))
        let text = html[start.upperBound..<end.lowerBound].replacingOccurrences(of: "\\/", with: "/")
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    /// Figures 10 and 11 are drawn from a grouped log, with the numbers of
    /// the reader; per layer with --group-layers; named as missing, with
    /// the reason, for a log without groups; lca plot draws them alone.
    func testReportGroupFigures() throws {
        let folder = try temporaryFolder("group-report", testCase: self)
        let (grouped, log) = try Self.groupedLog(folder)
        let result = try CLI.run(["report", grouped.path, "-o", "page.html"], in: folder)
        XCTAssertEqual(result.status, 0, result.stderr)
        let html = try String(contentsOf: folder.appendingPathComponent("page.html"), encoding: .utf8)
        for figure in ["group-heatmap", "group-cumulative"] {
            let section = try XCTUnwrap(html.range(of: "<section class=\"figure\" id=\"fig-\(figure)\""), figure)
            let next = html.range(of: "</section>", range: section.upperBound..<html.endIndex)!
            let body = html[section.upperBound..<next.lowerBound]
            XCTAssert(body.contains("<svg"), "\(figure) has no svg")
            XCTAssertFalse(body.contains("Not shown"), "\(figure): \(body.prefix(300))")
        }
        let t = log.header.tensors.count
        let heat = try Self.figureData(html, "group-heatmap")
        XCTAssertEqual(heat["by"] as? String, "tensor")
        XCTAssertEqual(heat["parts"] as? [String], log.header.tensors.map(\.name))
        XCTAssertEqual(heat["groups"] as? [String], Self.names)
        // each heat-map cell is the group's LCA of that tensor at an iteration (8 records: one per cell)
        // (compared within 1e-15: Foundation's JSON parser on Linux does
        // not always read the shortest digits back to the same double)
        func close(_ a: [Double], _ b: [Double]) -> Bool {
            a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= 1e-15 * abs($1) }
        }
        let extreme = try XCTUnwrap(heat["extreme"] as? [[[Double]]])
        XCTAssertEqual(extreme.count, t)
        for i in 0..<t {
            for k in 0..<3 {
                let expected = log.records.map { $0.train.groupLCA(group: k, tensor: i) }
                XCTAssert(close(extreme[i][k], expected), "\(extreme[i][k]) != \(expected)")
            }
        }
        let cumulative = try Self.figureData(html, "group-cumulative")
        XCTAssertEqual(cumulative["layers"] as? [String], ["fc1", "fc2"])
        let totals = try XCTUnwrap(cumulative["totals"] as? [[Double]])
        var worst = 0.0
        for (l, members) in [[0, 1], [2, 3]].enumerated() {
            for k in 0..<3 {
                let expected = Self.sum(log, group: k, tensors: members)
                worst = max(worst, abs(totals[l][k] - expected) / abs(expected))
            }
        }
        print("report: worst relative difference of a layer's Σ group LCA from the reader's \(worst)")
        XCTAssertLessThan(worst, 1e-12)
        XCTAssert(html.contains("(share of the group"), "the per-layer share table is missing")
        // per layer
        let byLayer = try CLI.run(["report", grouped.path, "--group-layers", "-o", "layers.html"], in: folder)
        XCTAssertEqual(byLayer.status, 0, byLayer.stderr)
        let layerHTML = try String(contentsOf: folder.appendingPathComponent("layers.html"), encoding: .utf8)
        let layerHeat = try Self.figureData(layerHTML, "group-heatmap")
        XCTAssertEqual(layerHeat["by"] as? String, "layer")
        XCTAssertEqual(layerHeat["parts"] as? [String], ["fc1", "fc2"])
        let layerExtreme = try XCTUnwrap(layerHeat["extreme"] as? [[[Double]]])
        XCTAssert(close(layerExtreme[1][2], log.records.map { $0.train.groupLCA(group: 2, tensor: 2) + $0.train.groupLCA(group: 2, tensor: 3) }))
        XCTAssertFalse(close(layerExtreme[1][2], log.records.map { $0.train.groupLCA(group: 2, tensor: 2) }), "the layer's cells are its weight's alone")
        // the plain log: named as missing
        let plain = try CLI.run(["report", folder.appendingPathComponent("run/lca.log").path, "-o", "plain.html"], in: folder)
        XCTAssertEqual(plain.status, 0, plain.stderr)
        let plainHTML = try String(contentsOf: folder.appendingPathComponent("plain.html"), encoding: .utf8)
        XCTAssert(plainHTML.contains("10 (group-heatmap): the log has no loss groups"), "no reason for the missing group figures")
        // lca plot
        let keep = ProcessInfo.processInfo.environment["LCA_KEEP_GROUP_REPORT"]
        if let keep { try? FileManager.default.copyItem(at: folder.appendingPathComponent("page.html"), to: URL(fileURLWithPath: keep + "/page.html")) }
        for figure in ["group-heatmap", "group-cumulative"] {
            let plot = try CLI.run(["plot", grouped.path, "--figure", figure, "-o", "\(figure).svg"], in: folder)
            XCTAssertEqual(plot.status, 0, plot.stderr)
            let svg = try String(contentsOf: folder.appendingPathComponent("\(figure).svg"), encoding: .utf8)
            XCTAssert(svg.contains("<polygon") || svg.contains("<rect x="), "\(figure).svg draws nothing")
            if let keep { try? svg.write(toFile: keep + "/\(figure).svg", atomically: true, encoding: .utf8) }
            let refused = try CLI.run(["plot", folder.appendingPathComponent("run/lca.log").path, "--figure", figure, "-o", "x.svg"], in: folder)
            XCTAssertEqual(refused.status, 1)
            XCTAssert(refused.stderr.contains("the log has no loss groups"), refused.stderr)
        }
    }
}

extension GroupViewTests {
    /// End to end with the writer: `lca train --groups class` gives a log
    /// that verify accepts (Σ_g group LCA = LCA far inside the bound), whose
    /// show --groups rows "Σ over groups" and "ungrouped" agree, and whose
    /// report draws figures 10 and 11.
    func testTrainedWithGroupsClass() throws {
        let folder = try temporaryFolder("group-train", testCase: self)
        let log = try GroupReaderTests.run(folder, ["--groups", "class"])
        let report = try LogVerifier.verify(try LogStream(path: log.path))
        XCTAssertNil(report.failure, report.failure?.description ?? "")
        XCTAssertEqual(report.groups, 10)
        print("lca train --groups class: Σ_g group_lca vs lca, worst \(report.maxGroupSumError) of the tensor's scale; max |group residual| \(report.maxAbsGroupResidual)")
        XCTAssertLessThan(report.maxGroupSumError, 1e-12)
        let verified = try CLI.run(["verify", log.path], in: folder)
        XCTAssertEqual(verified.status, 0, verified.stderr)
        XCTAssert(verified.stdoutText.contains("10 groups"), verified.stdoutText)
        let shown = try CLI.run(["show", "--groups", log.path], in: folder)
        XCTAssertEqual(shown.status, 0, shown.stderr)
        let lines = shown.stdoutText.split(separator: "\n")
        let sums = lines.filter { $0.hasPrefix("Σ over groups") }.map { $0.dropFirst("Σ over groups".count) }
        let plain = lines.filter { $0.hasPrefix("ungrouped") }.map { $0.dropFirst("ungrouped".count) }
        XCTAssertEqual(sums.count, 2, "a layer table per view")
        XCTAssertEqual(sums.map { $0.trimmingCharacters(in: .whitespaces) }, plain.map { $0.trimmingCharacters(in: .whitespaces) })
        let page = try CLI.run(["report", "run", "-o", "-"], in: folder)
        XCTAssertEqual(page.status, 0, page.stderr)
        let html = page.stdoutText
        XCTAssertFalse(html.contains("10 (group-heatmap):"), "figure 10 named as missing")
        XCTAssertFalse(html.contains("11 (group-cumulative):"), "figure 11 named as missing")
        let cumulative = try Self.figureData(html, "group-cumulative")
        XCTAssertEqual(cumulative["groups"] as? [String], (0..<10).map(String.init))
        // live TensorBoard events of a run with groups carry the group scalars
        let live = try CLI.run(["train", "--iterations", "3", "--groups", "class", "--tensorboard", "tb", "--quiet", "-o", "live"], in: folder)
        XCTAssertEqual(live.status, 0, live.stderr)
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent("tb").path)
        let events = String(decoding: try contents(folder.appendingPathComponent("tb/" + (try XCTUnwrap(files.first)))), as: UTF8.self)
        for tag in ["group_lca/7/fc1.weight", "group_lca_cumulative/0/fc2.bias", "group_loss/9", "group_residual/3"] {
            XCTAssert(events.contains(tag), "live TensorBoard: no tag \(tag)")
        }
    }
}
