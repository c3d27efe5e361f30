import Foundation
@testable import LCAKit
import XCTest

/// `lca report` and `lca plot`: the envelope reducer keeps every peak, each
/// figure's embedded numbers are the log's and the totals', the page holds
/// every figure, and the commands fail as the rest of the CLI.
final class ReportTests: XCTestCase {
    func testEnvelopeKeepsExtremesInConstantSpace() {
        var generator = SystemRandomNumberGenerator()
        var e = Envelope(capacity: 64)
        var values: [Double] = []
        for i in 1...100_000 {
            var v = Double.random(in: -1...1, using: &generator)
            if i == 77_777 { v = 50 }      // one spike
            if i == 3 { v = -40 }
            values.append(v)
            e.add(Double(i), v)
            XCTAssertLessThanOrEqual(e.buckets.count, 64)
        }
        XCTAssertEqual(e.buckets.reduce(0) { $0 + $1.count }, values.count)
        XCTAssertEqual(e.range?.max, 50)
        XCTAssertEqual(e.range?.min, -40)
        XCTAssertEqual(e.buckets.last?.last, values.last)
        for width in [1, 7, 30, 500] {
            let columns = e.columns(width, xMin: 1, xMax: 100_000)
            XCTAssertLessThanOrEqual(columns.count, width)
            XCTAssertEqual(columns.map(\.max).max(), 50)
            XCTAssertEqual(columns.map(\.min).min(), -40)
            XCTAssertEqual(columns.reduce(0) { $0 + $1.count }, values.count)
        }
        // A bucket's min and max are those of exactly the points it covers.
        var start = 0
        for b in e.buckets {
            let slice = values[start..<(start + b.count)]
            XCTAssertEqual(b.min, slice.min())
            XCTAssertEqual(b.max, slice.max())
            XCTAssertEqual(b.x0, Double(start + 1))
            start += b.count
        }
    }

    private func run(_ folder: URL, _ extra: [String] = []) throws -> URL {
        let r = try CLI.run(["train", "--iterations", "30", "--batch-size", "100", "-o", "run", "--quiet"] + extra, in: folder)
        XCTAssertEqual(r.status, 0, r.stderr)
        return folder.appendingPathComponent("run")
    }

    /// Parses the page's figure-data blocks by figure name.
    private func blocks(_ html: String) throws -> [String: [String: Any]] {
        var out: [String: [String: Any]] = [:]
        var rest = html[...]
        while let open = rest.range(of: "class=\"figure-data\" id=\"data-") {
            let tail = rest[open.upperBound...]
            let start = tail.range(of: "\">")!.upperBound
            let end = tail.range(of: "</script>")!.lowerBound
            let json = String(tail[start..<end]).replacingOccurrences(of: "<\\/", with: "</")
            let d = try XCTUnwrap(try JSONDecoder().decode(JSONValue.self, from: Data(json.utf8)).any as? [String: Any])
            out[d["figure"] as! String] = d
            rest = tail[end...]
        }
        return out
    }

    func testReportNumbersAreTheLogs() throws {
        let folder = try temporaryFolder("report", testCase: self)
        let runFolder = try run(folder, ["--units", "--lca-validation", "--model", "64-32-16-10"])
        let r = try CLI.run(["report", "run", "-o", "page.html"], in: folder)
        XCTAssertEqual(r.status, 0, r.stderr)
        let html = try String(contentsOf: folder.appendingPathComponent("page.html"), encoding: .utf8)
        XCTAssertFalse(html.contains("http://") && html.contains("<script src"), "no external resources")
        let figures = try blocks(html)
        XCTAssertEqual(Set(figures.keys), Set(ReportFigure.allCases.map(\.rawValue)))
        for figure in ReportFigure.allCases {
            XCTAssertTrue(html.contains("id=\"fig-\(figure.rawValue)\""), figure.rawValue)
        }
        XCTAssertNil(figures["synchronisation"]?["unavailable"])

        let log = try LogReader(path: runFolder.appendingPathComponent("lca.log").path)
        let records = log.records
        let names = log.header.tensors.map(\.name)
        func series(_ d: Any?) -> [[Double]] { d as! [[Double]] }

        // 6: the |LCA| histogram, summed over the records (log version 2).
        if log.header.version < 2 {
            XCTAssertNotNil(figures["lca-histogram"]?["unavailable"])
            XCTAssertTrue(html.contains("Figures missing for this input</b>: 6 (lca-histogram): needs log version 2"))
        } else {
            let hist = try XCTUnwrap(figures["lca-histogram"])
            XCTAssertNil(hist["unavailable"])
            let helping = hist["helping"] as! [String: Any], hurting = hist["hurting"] as! [String: Any]
            for (i, name) in names.enumerated() {
                var h = [Double](repeating: 0, count: 30), u = h
                for r in records {
                    for k in 0..<30 { h[k] += Double(r.train.tensorHistogram[i * 60 + k]); u[k] += Double(r.train.tensorHistogram[i * 60 + 30 + k]) }
                }
                XCTAssertEqual(helping[name] as! [Double], h, name)
                XCTAssertEqual(hurting[name] as! [Double], u, name)
            }
        }

        // 8: peaks, coincidences and the whole-set statistic from the records.
        let sync = try XCTUnwrap(figures["synchronisation"])
        let weights = log.header.tensors.indices.filter { i in
            log.header.tensors[i].shape.count >= 2 && records.contains { $0.train.tensorHelped[i] + $0.train.tensorHurt[i] > 0 }
        }
        XCTAssertEqual(sync["tensors"] as! [String], weights.map { names[$0] })
        XCTAssertEqual(sync["iterations"] as! Double, Double(records.count))
        var peakSets: [Set<Int>] = []
        for (k, i) in weights.enumerated() {
            let x = records.map { $0.train.tensorLCA[i] }
            let median = PeakSynchronisation.median(x)
            let peaks: [Int] = (1..<(x.count - 1)).filter { (t: Int) -> Bool in
                let v: Double = x[t]
                return v < x[t - 1] && v < x[t + 1] && v < median
            }
            XCTAssertFalse(peaks.isEmpty)
            XCTAssertEqual((sync["peak_iterations"] as! [[Double]])[k], peaks.map { Double(records[$0].iteration) }, names[i])
            peakSets.append(Set(peaks))
        }
        var ordered = 0
        for pair in sync["pairs"] as! [[String: Any]] {
            let a = weights.firstIndex { names[$0] == pair["a"] as! String }!, b = weights.firstIndex { names[$0] == pair["b"] as! String }!
            let c = peakSets[a].intersection(peakSets[b]).count
            XCTAssertEqual(pair["coincidences"] as! Double, Double(c))
            ordered += 2 * c
            let p = pair["p_shift_exact"] as! Double
            XCTAssertGreaterThanOrEqual(p, 1 / Double(records.count))
            XCTAssertLessThanOrEqual(p, 1)
        }
        XCTAssertEqual(weights.count, 3)
        XCTAssertEqual((sync["whole_set"] as! [String: Any])["statistic"] as! Double, Double(ordered))

        // 1: losses, rebuilt loss, residual, conservation error.
        let c = try XCTUnwrap(figures["conservation"])
        XCTAssertEqual(c["initial_loss"] as! Double, records[0].train.lossBefore)
        XCTAssertEqual(c["final_loss"] as! Double, records.last!.train.lossAfter)
        let lcaSum = records.reduce(0) { $0 + $1.train.lcaTotal }
        XCTAssertEqual(c["lca_sum"] as! Double, lcaSum)
        XCTAssertEqual(c["conservation_error"] as! Double, (records.last!.train.lossAfter - records[0].train.lossBefore) - lcaSum)
        let cs = c["series"] as! [String: Any]
        let eval = series(cs["eval_loss"])
        XCTAssertEqual(eval.map { $0[3] }.max(), records.map(\.train.lossAfter).max())
        XCTAssertEqual(eval.map { $0[2] }.min(), records.map(\.train.lossAfter).min())
        XCTAssertEqual(series(cs["residual"]).map { $0[3] }.max(), records.map(\.train.residual).max())
        XCTAssertEqual(series(cs["rebuilt_loss"]).last?[4], records[0].train.lossBefore + lcaSum)

        // 2: cumulative per tensor ends at the tensor's sum (training and validation).
        let cumulative = figures["cumulative"]!["series"] as! [String: Any]
        let validation = figures["cumulative"]!["validation"] as! [String: Any]
        for (i, name) in names.enumerated() {
            let sum = records.reduce(0) { $0 + $1.train.tensorLCA[i] }
            XCTAssertEqual(series(cumulative[name]).last![4], sum, accuracy: 1e-15)
            XCTAssertEqual(series(validation[name]).last![4], records.reduce(0) { $0 + $1.validation!.tensorLCA[i] }, accuracy: 1e-15)
        }

        // 3: totals raw and per parameter.
        let totals = figures["totals"]!
        for (i, t) in log.header.tensors.enumerated() {
            let sum = records.reduce(0) { $0 + $1.train.tensorLCA[i] }
            XCTAssertEqual((totals["total"] as! [Double])[i], sum, accuracy: 1e-15)
            XCTAssertEqual((totals["per_parameter"] as! [Double])[i], sum / Double(t.count), accuracy: 1e-15)
        }

        // 4: shares helped, of all and of the non-zero, and zero, per tensor and overall.
        let helping = figures["helping"]!
        let all = helping["all"] as! [String: Any], nonZero = helping["non_zero"] as! [String: Any], zero = helping["zero"] as! [String: Any]
        for (i, name) in names.enumerated() {
            let n = Double(log.header.tensors[i].count)
            let shares = records.map { Double($0.train.tensorHelped[i]) / n }
            XCTAssertEqual(series(all[name]).map { $0[3] }.max(), shares.max())
            XCTAssertEqual(series(all[name]).map { $0[2] }.min(), shares.min())
            let nz = records.map { r -> Double in
                let h = r.train.tensorHelped[i], u = r.train.tensorHurt[i]
                return h + u > 0 ? Double(h) / Double(h + u) : 0
            }
            XCTAssertEqual(series(nonZero[name]).map { $0[3] }.max(), nz.max())
            XCTAssertEqual(series(zero[name]).map { $0[3] }.max(), records.map { Double($0.train.tensorZero[i]) / n }.max())
        }
        let overall = records.map { Double($0.train.helpedCount) / Double(log.header.model.parameters) }
        XCTAssertEqual(series(all["overall"]).map { $0[3] }.max(), overall.max())

        // 5, 9: from the totals files.
        let totalFile = try SafeTensorsFile(path: runFolder.appendingPathComponent("lca-total.safetensors").path)
        let helpedFile = try SafeTensorsFile(path: runFolder.appendingPathComponent("lca-helped.safetensors").path)
        var everyTotal: [(String, Double)] = [], everyHelped: [UInt32] = []
        for t in log.header.tensors {
            everyTotal += try totalFile.doubles(t.name, count: t.count).map { (t.name, $0) }
            everyHelped += try helpedFile.uint32s(t.name, count: t.count)
        }
        let hist = (figures["iterations-helped"]!["histogram"] as! [Double]).map { Int($0) }
        let bin = Int(figures["iterations-helped"]!["bin_width"] as! Double)
        XCTAssertEqual(hist.reduce(0, +), log.header.model.parameters)
        for (k, count) in hist.enumerated() {
            XCTAssertEqual(count, everyHelped.filter { Int($0) / bin == k || (k == hist.count - 1 && Int($0) / bin > k) }.count)
        }
        let top = figures["top"]!
        let helpingTop = (top["most_helping"] as! [[String: Any]]).map { $0["total"] as! Double }
        XCTAssertEqual(helpingTop, Array(everyTotal.map(\.1).filter { $0 < 0 }.sorted().prefix(10)))
        let hurtingTop = (top["most_hurting"] as! [[String: Any]]).map { $0["total"] as! Double }
        XCTAssertEqual(hurtingTop, Array(everyTotal.map(\.1).filter { $0 > 0 }.sorted(by: >).prefix(10)))

        // 7: the heat map's cells are the per-iteration extremes.
        let rows = figures["heatmap"]!["rows"] as! [String: Any]
        for (i, name) in names.enumerated() {
            XCTAssertEqual(series(rows[name]).map { $0[2] }.min(), records.map { $0.train.tensorLCA[i] }.min())
            XCTAssertEqual(series(rows[name]).map { $0[3] }.max(), records.map { $0.train.tensorLCA[i] }.max())
        }
        let units = figures["units"]!["extreme"] as! [[Double]]
        XCTAssertEqual(units.count, log.header.unitCount)
        for u in units.indices {
            let v = records.map { $0.train.unitLCA[u] }
            let extreme = abs(v.min()!) >= abs(v.max()!) ? v.min()! : v.max()!
            XCTAssertEqual(units[u].max(by: { abs($0) < abs($1) }), extreme)
        }
    }

    func testLogAloneSaysWhatIsMissing() throws {
        let folder = try temporaryFolder("report-log", testCase: self)
        _ = try run(folder)
        let r = try CLI.run(["report", "run/lca.log", "-o", "-"], in: folder)
        XCTAssertEqual(r.status, 0, r.stderr)
        let html = r.stdoutText
        XCTAssertTrue(html.contains("Not shown: needs the run folder"))
        XCTAssertTrue(html.contains("Not shown: the log has no per-unit fields"))
        let version = try LogReader(path: folder.appendingPathComponent("run/lca.log").path).header.version
        // a version-1 log cannot give figure 6; a version-2 log can
        XCTAssertEqual(html.contains("needs log version 2"), version < 2)
        XCTAssertTrue(html.contains("Figures missing for this input</b>: 5 (iterations-helped)"))
        XCTAssertTrue(html.contains("<svg"))
    }

    func testPlotWritesEachFigureAndFailsAsTheCLI() throws {
        let folder = try temporaryFolder("plot", testCase: self)
        _ = try run(folder)
        for figure in ["conservation", "cumulative", "totals", "helping", "iterations-helped", "heatmap", "top"] {
            let r = try CLI.run(["plot", "run", "--figure", figure, "-o", "\(figure).svg", "--width", "640", "--height", "400"], in: folder)
            XCTAssertEqual(r.status, 0, "\(figure): \(r.stderr)")
            let svg = try String(contentsOf: folder.appendingPathComponent("\(figure).svg"), encoding: .utf8)
            XCTAssertTrue(svg.contains("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\""), figure)
            XCTAssertTrue(svg.hasSuffix("</svg>\n"), figure)
        }
        let missing = try CLI.run(["plot", "run/lca.log", "--figure", "top", "-o", "t.svg"], in: folder)
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.stderr.hasPrefix("lca: error: run/lca.log: figure top: needs the run folder"), missing.stderr)
        let sync = try CLI.run(["plot", "run", "--figure", "synchronisation", "-o", "s.svg", "--sync-window", "1"], in: folder)
        XCTAssertEqual(sync.status, 0, sync.stderr)
        let syncSVG = try String(contentsOf: folder.appendingPathComponent("s.svg"), encoding: .utf8)
        XCTAssertTrue(syncSVG.contains("within ±1 iteration(s)"))
        XCTAssertTrue(syncSVG.contains("class=\"cell\""))
        XCTAssertEqual(try CLI.run(["plot", "run", "--figure", "synchronisation", "-o", "s.svg", "--sync-window", "-1"], in: folder).status, 64)
        XCTAssertEqual(try CLI.run(["report", "run", "-o", "r.html", "--sync-window", "5000"], in: folder).status, 64)
        if try LogReader(path: folder.appendingPathComponent("run/lca.log").path).header.version < 2 {
            let v1 = try CLI.run(["plot", "run", "--figure", "lca-histogram", "-o", "h.svg"], in: folder)
            XCTAssertEqual(v1.status, 1)
            XCTAssertTrue(v1.stderr.contains("needs log version 2"), v1.stderr)
        }
        let noFile = try CLI.run(["plot", "nothing.log", "--figure", "helping", "-o", "h.svg"], in: folder)
        XCTAssertEqual(noFile.status, 1)
        XCTAssertTrue(noFile.stderr.hasPrefix("lca: error: nothing.log: "), noFile.stderr)
        XCTAssertEqual(try CLI.run(["plot", "run", "--figure", "helping", "-o", "h.pdf"], in: folder).status, 64)
        XCTAssertEqual(try CLI.run(["plot", "run", "--figure", "nope", "-o", "h.svg"], in: folder).status, 64)
        XCTAssertEqual(try CLI.run(["plot", "run", "--figure", "helping", "-o", "h.svg", "--width", "0"], in: folder).status, 64)
        let noRaster = try CLI.run(["plot", "run", "--figure", "helping", "-o", "h.png"], in: folder, environment: ["PATH": "/nonexistent"])
        XCTAssertEqual(noRaster.status, 1)
        XCTAssertTrue(noRaster.stderr.contains("librsvg2-bin"), noRaster.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("h.png").path))
        let notRun = try CLI.run(["report", ".", "-o", "x.html"], in: folder)
        XCTAssertEqual(notRun.status, 1)
        XCTAssertTrue(notRun.stderr.contains("holds no lca.log"), notRun.stderr)
    }

    /// Figures 3, 4 and 6 from log-version-2 fields, fed as synthetic
    /// records through the same reducer the reader's records go through.
    func testVersion2FiguresFromSyntheticFields() throws {
        let folder = try temporaryFolder("report-v2", testCase: self)
        let runFolder = try run(folder)
        let log = try LogReader(path: runFolder.appendingPathComponent("lca.log").path)
        let t = log.header.tensors.count
        let data = ReportData(header: log.header, width: 400)
        var helping = [Double](repeating: 0, count: t), hurting = helping
        var counts = [UInt64](repeating: 0, count: t * 60)
        for (n, r) in log.records.enumerated() {
            let h = (0..<t).map { -abs(r.train.tensorLCA[$0]) - Double(n) * 1e-3 }
            let u = (0..<t).map { Double($0 + 1) * 1e-4 }
            let hist = (0..<(t * 60)).map { UInt32(($0 * 7 + n) % 5 + ($0 % 60 == 59 ? 0 : 1)) }
            let unmoved = (0..<t).map { UInt64(min($0, log.header.tensors[$0].count)) }
            for i in 0..<t { helping[i] += h[i]; hurting[i] += u[i] }
            for k in hist.indices { counts[k] += UInt64(hist[k]) }
            data.add(r, version2: .init(floor: 1e-12 * Double(n + 1), helping: h, hurting: u, unmoved: unmoved, histogram: hist))
        }
        XCTAssertTrue(data.isVersion2)
        let builder = ReportBuilder(data: data, totals: nil)
        XCTAssertNil(builder.unavailable(.lcaHistogram))
        let totals = builder.figureData(.totals)
        XCTAssertEqual(totals["helping"] as! [Double], helping)
        XCTAssertEqual(totals["hurting"] as! [Double], hurting)
        let hist = builder.figureData(.lcaHistogram)
        XCTAssertEqual(hist["edges"] as! [Double], LCAHistogram.edges)
        XCTAssertEqual(LCAHistogram.edges.count, 29)
        XCTAssertEqual(LCAHistogram.edges.first!, 1e-14, accuracy: 1e-28)
        XCTAssertEqual(LCAHistogram.edges.last!, 1)
        for (i, t) in log.header.tensors.enumerated() {
            XCTAssertEqual((hist["helping"] as! [String: [Int]])[t.name], counts[(i * 60)..<(i * 60 + 30)].map(Int.init))
            XCTAssertEqual((hist["hurting"] as! [String: [Int]])[t.name], counts[(i * 60 + 30)..<(i * 60 + 60)].map(Int.init))
        }
        let helpingShares = builder.figureData(.helping)["unmoved"] as! [String: Any]
        let last = (helpingShares[log.header.tensors[1].name] as! [[Double]]).last!
        XCTAssertEqual(last[4], 1 / Double(log.header.tensors[1].count))
        // the SVGs: split bars (both parts), one bin per non-zero count
        let bars = builder.svg(.totals)
        XCTAssertTrue(bars.contains("helping (blue) and hurting (red)"))
        XCTAssertEqual(bars.components(separatedBy: "class=\"net\"").count - 1, 2 * t)
        XCTAssertEqual(bars.components(separatedBy: "class=\"bar\"").count - 1, 2 * 2 * t)
        let svg = builder.svg(.lcaHistogram)
        let overallNonZero = (0..<60).filter { k in (0..<t).contains { counts[$0 * 60 + k] > 0 } }.count
        XCTAssertEqual(svg.components(separatedBy: "class=\"bin\"").count - 1, overallNonZero)
        let page = builder.html(source: "synthetic")
        if let folder = ProcessInfo.processInfo.environment["LCA_REPORT_ARTIFACTS"] {
            // for a person to look at: LCA_REPORT_ARTIFACTS=DIR swift test --filter testVersion2
            try page.write(toFile: folder + "/synthetic-v2.html", atomically: true, encoding: .utf8)
            try svg.write(toFile: folder + "/synthetic-v2-lca-histogram.svg", atomically: true, encoding: .utf8)
            try bars.write(toFile: folder + "/synthetic-v2-totals.svg", atomically: true, encoding: .utf8)
        }
        XCTAssertFalse(page.contains("6 (lca-histogram)"))
        XCTAssertTrue(page.contains("within the record's floor"))
        XCTAssertFalse(page.contains("Net bars only"))
    }

    /// A record whose counts exceed the tensor's parameters (a damaged log
    /// the stream cannot tell from a good one) is refused with its offset,
    /// not divided by.
    func testDamagedCountsAreRefusedWithTheirOffset() throws {
        let folder = try temporaryFolder("report-counts", testCase: self)
        _ = try run(folder)
        let path = folder.appendingPathComponent("run/lca.log").path
        let stream = try LogStream(path: path)
        let field = try XCTUnwrap(stream.header.fields.first { $0.name == "helped" })
        let start = stream.headerBytes.count + stream.header.recordSize   // record 1
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        for k in 0..<8 { bytes[start + field.offset + k] = 0xff }
        let damaged = folder.appendingPathComponent("damaged.log")
        try bytes.write(to: damaged)
        for command in [["report", "damaged.log", "-o", "d.html"], ["plot", "damaged.log", "--figure", "helping", "-o", "d.svg"]] {
            let r = try CLI.run(command, in: folder)
            XCTAssertEqual(r.status, 1, r.stderr)
            XCTAssertTrue(r.stderr.hasPrefix("lca: error: damaged.log: byte "), r.stderr)
            let byte = Int(r.stderr.dropFirst("lca: error: damaged.log: byte ".count).prefix { $0.isNumber }) ?? -1
            if stream.header.version < 2 {
                XCTAssertEqual(byte, start + field.offset, "the helped field of record 1: " + r.stderr)
                XCTAssertTrue(r.stderr.contains(": record 1 (iteration 2): tensor "), r.stderr)
                XCTAssertTrue(r.stderr.contains("exceeds its"), r.stderr)
            } else {
                // a version-2 stream refuses it first: the histogram no longer adds up to the count
                XCTAssertTrue((start..<(start + stream.header.recordSize)).contains(byte), "inside record 1: " + r.stderr)
            }
        }
    }

    /// A frozen tensor has LCA zero throughout: "no effect" on the page,
    /// left out of figure 8.
    func testFrozenTensorIsMarkedNoEffect() throws {
        let folder = try temporaryFolder("report-frozen", testCase: self)
        _ = try run(folder, ["--model", "64-32-16-10", "--freeze", "fc2.weight"])
        let r = try CLI.run(["report", "run", "-o", "-"], in: folder)
        XCTAssertEqual(r.status, 0, r.stderr)
        let figures = try blocks(r.stdoutText)
        XCTAssertEqual(figures["totals"]?["no_effect"] as? [String], ["fc2.weight"])
        XCTAssertEqual(figures["synchronisation"]?["no_effect_excluded"] as? [String], ["fc2.weight"])
        XCTAssertFalse((figures["synchronisation"]?["tensors"] as? [String] ?? []).contains("fc2.weight"))
        XCTAssertTrue(r.stdoutText.contains("<b>No effect</b>"))
        XCTAssertTrue(r.stdoutText.contains("fc2.weight (no effect)"))
    }

    /// A conv bias followed by batch norm has a true gradient of zero: with
    /// the floor of log version 2 its LCA is within rounding of zero at
    /// every iteration, and the page says "no effect" (a version-1 log
    /// counts its 1e-15 values as helped or hurt).
    func testBiasBeforeBatchNormHasNoEffectInVersion2() throws {
        let folder = try temporaryFolder("report-bn", testCase: self)
        let r = try CLI.run(["train", "--model", "input(1,8,8) conv(4,3) bn relu conv(4,3) bn relu dense(10)",
                             "--iterations", "12", "-o", "run", "--quiet"], in: folder)
        XCTAssertEqual(r.status, 0, r.stderr)
        let page = try CLI.run(["report", "run", "-o", "-"], in: folder)
        XCTAssertEqual(page.status, 0, page.stderr)
        let figures = try blocks(page.stdoutText)
        let version = try LogReader(path: folder.appendingPathComponent("run/lca.log").path).header.version
        let noEffect = figures["totals"]?["no_effect"] as? [String] ?? []
        if version >= 2 {
            XCTAssertEqual(noEffect, ["conv1.bias", "conv2.bias"])
            XCTAssertTrue(page.stdoutText.contains("conv1.bias (no effect)"))
        } else {
            XCTAssertFalse(noEffect.contains("conv1.weight"))
        }
        XCTAssertFalse((figures["synchronisation"]?["tensors"] as? [String] ?? []).contains("conv1.bias"))
    }

    /// The page as a person sees it: rendered by headless Chromium (when
    /// installed), every figure section laid out, non-empty, inside the page.
    func testChromiumRendersEveryFigure() throws {
        let candidates = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        guard let chromium = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            print("""
                ########################################################################
                SKIPPED: headless Chromium is not installed (Debian: apt-get install chromium);
                the report is not checked as a person sees it (.ci/run installs it)
                ########################################################################
                """)
            throw XCTSkip("headless Chromium is not installed (Debian: apt-get install chromium)")
        }
        let folder = try temporaryFolder("chromium", testCase: self)
        _ = try run(folder, ["--units"])
        XCTAssertEqual(try CLI.run(["report", "run", "-o", "page.html"], in: folder).status, 0)
        // Chromium prints the laid-out DOM; a tiny inline script added to a
        // copy of the page writes each figure's box into the DOM.
        var html = try String(contentsOf: folder.appendingPathComponent("page.html"), encoding: .utf8)
        html = html.replacingOccurrences(of: "</body>", with: """
            <script>
            const out=[];for(const s of document.querySelectorAll('section.figure')){const r=s.getBoundingClientRect();
            const g=s.querySelector('svg');const b=g?g.getBoundingClientRect():null;
            out.push([s.dataset.figure,r.width,r.height,r.left,r.right,b?b.width:0,b?b.height:0,document.documentElement.scrollWidth].join(','));}
            const p=document.createElement('pre');p.id='boxes';p.textContent=out.join(';');document.body.appendChild(p);
            </script></body>
            """)
        let probe = folder.appendingPathComponent("probe.html")
        try html.write(to: probe, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: chromium)
        process.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,3000", "--dump-dom", probe.absoluteString]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let dom = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let start = try XCTUnwrap(dom.range(of: "<pre id=\"boxes\">")).upperBound
        let boxes = dom[start...].prefix { $0 != "<" }.split(separator: ";").map { $0.split(separator: ",") }
        XCTAssertEqual(boxes.count, ReportFigure.allCases.count)
        let unavailable = Set(ReportFigure.allCases.filter { html.contains("id=\"fig-\($0.rawValue)\" data-figure=\"\($0.rawValue)\">\n<h2>") }.map(\.rawValue))
        XCTAssertFalse(unavailable.contains("synchronisation"))
        for box in boxes {
            let name = String(box[0]), v = box.dropFirst().map { Double($0) ?? -1 }
            XCTAssertGreaterThan(v[0], 100, name); XCTAssertGreaterThan(v[1], 40, name)
            XCTAssertGreaterThanOrEqual(v[2], 0, name); XCTAssertLessThanOrEqual(v[3], v[6], name)
            if !unavailable.contains(name) {
                XCTAssertGreaterThan(v[4], 100, name); XCTAssertGreaterThan(v[5], 40, name)
            }
        }
        // The screenshot itself, for a person to look at.
        let shot = Process()
        shot.executableURL = URL(fileURLWithPath: chromium)
        shot.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1000,3000",
                          "--screenshot=\(folder.appendingPathComponent("page.png").path)", folder.appendingPathComponent("page.html").absoluteString]
        shot.standardError = FileHandle.nullDevice
        shot.standardOutput = FileHandle.nullDevice
        try shot.run()
        shot.waitUntilExit()
        let png = try Data(contentsOf: folder.appendingPathComponent("page.png"))
        XCTAssertGreaterThan(png.count, 10_000)
    }
}

/// Any JSON value, decoded by JSONDecoder (whose number parsing reads the
/// shortest round-trip text back to the same bits), as Foundation objects.
private struct JSONValue: Decodable {
    let any: Any
    init(from decoder: Decoder) throws {
        if var array = try? decoder.unkeyedContainer() {
            var out: [Any] = []
            while !array.isAtEnd { out.append(try array.decode(JSONValue.self).any) }
            any = out
        } else if let object = try? decoder.container(keyedBy: Key.self) {
            var out: [String: Any] = [:]
            for key in object.allKeys { out[key.stringValue] = try object.decode(JSONValue.self, forKey: key).any }
            any = out
        } else {
            let single = try decoder.singleValueContainer()
            if let s = try? single.decode(String.self) { any = s }
            else if let b = try? single.decode(Bool.self) { any = b }
            else if let d = try? single.decode(Double.self) { any = d }   // integers too
            else { any = NSNull() }
        }
    }
    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}
