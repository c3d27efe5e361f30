import Foundation

/// The figures of `lca report` / `lca plot`, numbered as in the issue.
public enum ReportFigure: String, CaseIterable, Sendable {
    case conservation, cumulative, totals, helping
    case iterationsHelped = "iterations-helped"
    case lcaHistogram = "lca-histogram"
    case heatmap, units
    case synchronisation
    case top
    case groupHeatmap = "group-heatmap"
    case groupCumulative = "group-cumulative"

    public var number: Int {
        switch self {
        case .conservation: 1
        case .cumulative: 2
        case .totals: 3
        case .helping: 4
        case .iterationsHelped: 5
        case .lcaHistogram: 6
        case .heatmap, .units: 7
        case .synchronisation: 8
        case .top: 9
        case .groupHeatmap: 10
        case .groupCumulative: 11
        }
    }

    public var title: String {
        switch self {
        case .conservation: "Evaluation loss vs L₀ + Σ LCA, and the residual"
        case .cumulative: "Cumulative LCA per tensor"
        case .totals: "Total LCA per tensor"
        case .helping: "Share of parameters helping per iteration"
        case .iterationsHelped: "Iterations helped, per parameter"
        case .lcaHistogram: "Distribution of per-parameter LCA"
        case .heatmap: "Per-iteration LCA, tensors × iterations"
        case .units: "Per-iteration LCA, units × iterations"
        case .synchronisation: "Synchronisation of learning peaks"
        case .top: "Most helping and most hurting parameters"
        case .groupHeatmap: "Per-iteration LCA by loss group, groups × iterations"
        case .groupCumulative: "Cumulative LCA by loss group, per layer"
        }
    }
}

/// Builds the figures and the self-contained HTML page of a run from its
/// `ReportData` (and, for a run folder, its `RunTotals`).
public struct ReportBuilder {
    public let data: ReportData
    public let totals: RunTotals?
    /// Scale each heat-map row to its own largest |LCA|.
    public var perRowScaling = false
    public let syncOptions: PeakSynchronisation.Options
    /// Figure 8: the weight tensors with an effect (indices into the
    /// header's tensors) and the statistic (nil when fewer than two).
    public let syncTensors: [Int]
    public let sync: PeakSynchronisation.Result?

    /// - Parameter analyseSync: compute figure 8's statistic (false: `lca
    ///   plot` of another figure, which need not pay for it).
    public init(data: ReportData, totals: RunTotals?, perRowScaling: Bool = false,
                sync options: PeakSynchronisation.Options = .init(), analyseSync: Bool = true) {
        self.data = data
        self.totals = totals
        self.perRowScaling = perRowScaling
        syncOptions = options
        let kept = data.syncTensors.indices.filter { data.hasEffect[data.syncTensors[$0]] }
        syncTensors = kept.map { data.syncTensors[$0] }
        if analyseSync && kept.count >= 2 && data.records >= 3 {
            sync = PeakSynchronisation.analyse(names: syncTensors.map { data.header.tensors[$0].name },
                                               series: kept.map { data.syncSeries[$0] }, options: options)
        } else {
            sync = nil
        }
    }

    var names: [String] { data.header.tensors.map(\.name) }
    /// Names with " (no effect)" for tensors whose LCA was zero (or within
    /// the floor) throughout.
    var markedNames: [String] { names.enumerated().map { data.hasEffect[$0.offset] ? $0.element : $0.element + " (no effect)" } }
    var noEffect: [String] { names.enumerated().filter { !data.hasEffect[$0.offset] }.map(\.element) }
    func color(_ i: Int) -> String { SVGPlot.palette[i % SVGPlot.palette.count] }

    /// Why a figure cannot be drawn from this input (nil: it can).
    public func unavailable(_ figure: ReportFigure) -> String? {
        switch figure {
        case .lcaHistogram:
            if !data.isVersion2 { return "needs log version 2 (a per-tensor histogram of |LCA| by sign in every record); this log is version \(data.header.version)" }
            return data.histogram.records == 0 ? "the log's records carry no |LCA| histogram" : nil
        case .synchronisation:
            if data.records < 3 { return "needs at least 3 records (a peak is a strict local minimum between two iterations); this log has \(data.records)" }
            return sync == nil ? "needs two or more weight tensors (rank 2 or more) with an effect; this model has \(syncTensors.count)" : nil
        case .iterationsHelped, .top:
            return totals == nil ? "needs the run folder's per-parameter totals (lca-total.safetensors, lca-helped.safetensors): give the run folder instead of the log alone" : nil
        case .units: return data.header.units?.isEmpty ?? true ? "the log has no per-unit fields (train with --units)" : nil
        case .groupHeatmap, .groupCumulative:
            if data.groupNames.isEmpty { return "the log has no loss groups (train with --groups class or --groups FILE)" }
            return data.groupRecords == 0 ? "the log has no records with group fields" : nil
        default: return data.records == 0 ? "the log has no records" : nil
        }
    }

    /// The figure alone as SVG (a placeholder saying why when unavailable).
    public func svg(_ figure: ReportFigure, width: Int = 900, height: Int? = nil) -> String {
        let h = height ?? defaultHeight(figure)
        if let why = unavailable(figure) { return SVGPlot.note(title: "\(figure.number). \(figure.title)", text: why, width: width, height: min(h, 120)) }
        let t = "\(figure.number). \(figure.title)"
        switch figure {
        case .conservation:
            let top = SVGPlot.lines(title: t, series: [
                .init(name: "evaluation loss L(θ_t)", color: "#000000", envelope: data.evalLoss),
                .init(name: "L₀ + Σ LCA", color: "#d62728", envelope: data.rebuiltLoss, dashed: true)],
                width: width, height: h * 6 / 10, yLabel: "loss (nats)")
            let th = data.threshold
            let bottom = SVGPlot.lines(title: "residual per iteration (band: ± threshold \(SVGPlot.label(th)))", series: [
                .init(name: "residual = ΔL − Σ LCA", color: "#1f77b4", envelope: data.residual)],
                width: width, height: h - h * 6 / 10, yLabel: "nats", band: th > 0 ? (-th, th) : nil, marks: [0])
            return stack([top, bottom], width: width, heights: [h * 6 / 10, h - h * 6 / 10])
        case .cumulative:
            var series = data.cumulative.enumerated().map { SVGPlot.Series(name: names[$0.offset], color: color($0.offset), envelope: $0.element) }
            series += data.validationCumulative.enumerated().map { SVGPlot.Series(name: names[$0.offset] + " (validation)", color: color($0.offset), envelope: $0.element, dashed: true) }
            return SVGPlot.lines(title: t, series: series, width: width, height: h, yLabel: "Σ LCA (nats)", marks: [0])
        case .totals:
            let count = data.header.tensors.map { Double(max(1, $0.count)) }
            let perParameter = data.totals.enumerated().map { $0.element / count[$0.offset] }
            if data.isVersion2 {
                let split = Array(zip(data.helpingTotals, data.hurtingTotals))
                let perSplit = split.enumerated().map { ($0.element.0 / count[$0.offset], $0.element.1 / count[$0.offset]) }
                let a = SVGPlot.bars(title: t + ": helping (blue) and hurting (red) parts, net (black tick), raw", labels: markedNames, values: data.totals, split: split, width: width, height: h / 2, xLabel: "Σ LCA (nats): Σ of the negative part, Σ of the positive part")
                let b = SVGPlot.bars(title: "per parameter", labels: markedNames, values: perParameter, split: perSplit, width: width, height: h - h / 2, xLabel: "Σ LCA / parameters (nats)")
                return stack([a, b], width: width, heights: [h / 2, h - h / 2])
            }
            let a = SVGPlot.bars(title: t + " (net; raw)", labels: markedNames, values: data.totals, width: width, height: h / 2, xLabel: "Σ LCA (nats); negative = helped")
            let b = SVGPlot.bars(title: "per parameter (net)", labels: markedNames, values: perParameter, width: width, height: h - h / 2, xLabel: "Σ LCA / parameters (nats)")
            return stack([a, b], width: width, heights: [h / 2, h - h / 2])
        case .helping:
            let n = names.count
            func rows(_ e: [Envelope]) -> [SVGPlot.Series] {
                e.enumerated().map { SVGPlot.Series(name: $0.offset == n ? "overall" : names[$0.offset], color: $0.offset == n ? "#000000" : color($0.offset), envelope: $0.element) }
            }
            let hh = h / 3
            let a = SVGPlot.lines(title: t + ": of all parameters", series: rows(data.shareAll), width: width, height: hh, yLabel: "helped / all", marks: [0.5], yRange: (0, 1))
            let b = SVGPlot.lines(title: "of the non-zero ones: helped / (helped + hurt)", series: rows(data.shareNonZero), width: width, height: hh, yLabel: "helped / non-zero", marks: [0.5], yRange: (0, 1))
            var zeroRows = rows(data.shareZero)
            if data.sawUnmoved {
                zeroRows += data.shareUnmoved.enumerated().map {
                    SVGPlot.Series(name: ($0.offset == n ? "overall" : names[$0.offset]) + " unmoved", color: $0.offset == n ? "#000000" : color($0.offset), envelope: $0.element, dashed: true)
                }
            }
            let zeroTitle = data.isVersion2 ? "share with |LCA| within the floor (solid) and share that did not move (dashed)" : "share with LCA exactly zero"
            let c = SVGPlot.lines(title: zeroTitle, series: zeroRows, width: width, height: h - 2 * hh, yLabel: "zero / all", yRange: (0, 1))
            return stack([a, b, c], width: width, heights: [hh, hh, h - 2 * hh])
        case .iterationsHelped:
            let r = totals!
            return SVGPlot.histogram(title: t + " (\(r.parameters) parameters, \(r.iterations) iterations)", counts: r.histogram, binWidth: r.binWidth, width: width, height: h, xLabel: "iterations in which the parameter helped (LCA below minus the zero floor), bins of \(r.binWidth)")
        case .heatmap:
            return SVGPlot.heatMap(title: t, rows: Array(zip(markedNames, data.perIteration)), columns: 300, width: width, height: h, perRow: perRowScaling)
        case .lcaHistogram:
            let hist = data.histogram
            let labels = (0..<LCAHistogram.bins).map(LCAHistogram.binLabel)
            let effect = names.indices.filter { data.hasEffect[$0] }
            let per = effect.map { (name: names[$0], color: color($0), helping: hist.helping($0), hurting: hist.hurting($0)) }
            return SVGPlot.signedHistogram(title: t + " (all tensors: bars; per tensor: lines)",
                                           overall: (hist.helping(of: names.indices.map { $0 }), hist.hurting(of: names.indices.map { $0 })),
                                           perTensor: per, binLabels: labels, width: width, height: h)
        case .synchronisation:
            return synchronisationSVG(title: t, width: width, height: h)
        case .units:
            let groups = data.header.units ?? []
            let heights = groups.map { _ in h / max(1, groups.count) }
            let maps = groups.map { g in
                SVGPlot.heatMap(title: "\(t): \(g.group) (\(g.units) units)", rows: (0..<g.units).map { ("\(g.group)[\($0)]", data.units[g.offset + $0]) },
                                columns: 200, width: width, height: h / max(1, groups.count), perRow: perRowScaling)
            }
            return stack(maps, width: width, heights: heights)
        case .groupHeatmap:
            let parts = data.groupHeatByLayer ? data.groupLayers.map(\.name) : names
            let each = h / max(1, parts.count)
            let maps = parts.enumerated().map { i, part in
                SVGPlot.heatMap(title: (i == 0 ? "\(t): " : "") + "\(data.groupHeatByLayer ? "layer" : "tensor") \(part)",
                                rows: Array(zip(data.groupNames, data.groupHeat[i])), columns: 300, width: width, height: each,
                                perRow: perRowScaling)
            }
            return stack(maps, width: width, heights: maps.map { _ in each })
        case .groupCumulative:
            return groupCumulativeSVG(title: t, width: width, height: h)
        case .top:
            let r = totals!
            let rows = r.mostHelping.count + r.mostHurting.count + 3
            var s = SVGPlot.note(title: t, text: "", width: width, height: 40 + rows * 16).replacingOccurrences(of: "</svg>", with: "")
            var y = 44
            func line(_ text: String, bold: Bool = false) {
                s += "<text x=\"20\" y=\"\(y)\" font-size=\"12\" font-family=\"monospace\"\(bold ? " font-weight=\"bold\"" : "")>\(SVGPlot.esc(text))</text>"
                y += 16
            }
            line("most helping (Σ LCA < 0)", bold: true)
            if r.mostHelping.isEmpty { line("(none)") }
            for p in r.mostHelping { line(String(format: "%@ %@  %+.6e", p.tensor, "[" + p.index.map(String.init).joined(separator: ", ") + "]", p.total)) }
            line("most hurting (Σ LCA > 0)", bold: true)
            if r.mostHurting.isEmpty { line("(none: no parameter's total is above zero)") }
            for p in r.mostHurting { line(String(format: "%@ %@  %+.6e", p.tensor, "[" + p.index.map(String.init).joined(separator: ", ") + "]", p.total)) }
            return s + "</svg>"
        }
    }

    /// The pairs matrix (colour: −log10 of the hypergeometric p, text: the
    /// coincidences), the definitions and a small table of the pairs.
    func synchronisationSVG(title: String, width: Int, height: Int) -> String {
        guard let r = sync else { return "" }
        let m = r.names.count
        var strength = [[Double?]](repeating: [Double?](repeating: nil, count: m), count: m)
        var text = [[String]](repeating: [String](repeating: "", count: m), count: m)
        var tips = text
        for i in 0..<m {
            text[i][i] = "\(r.peaks[i].count)"
            tips[i][i] = "\(r.names[i]): \(r.peaks[i].count) peaks in \(r.iterations) iterations"
        }
        for p in r.pairs {
            for (i, j) in [(p.a, p.b), (p.b, p.a)] {
                strength[i][j] = min(1, -p.log10PHypergeometric / 10)
                text[i][j] = "\(p.coincidences)"
                tips[i][j] = "\(r.names[p.a]) × \(r.names[p.b]): \(p.coincidences) coinciding peaks (expected \(String(format: "%.1f", p.expected))), p shift \(p.pShift.map { String(format: "%.3g", $0) } ?? "not computed"), p hypergeometric \(Self.pText(p.pHypergeometric, p.log10PHypergeometric))"
            }
        }
        let legend = "cell: coinciding peaks of the row's tensor with the column's (diagonal: peaks); colour: −log10 p (hypergeometric), white 0, darkest ≥ 10"
        let matrixHeight = Self.matrixHeight(m, width: width)
        let matrix = SVGPlot.matrix(title: title, labels: r.names, strength: strength, text: text, tips: tips, width: width, height: matrixHeight, legend: legend)
        var lines: [(String, Bool)] = []
        lines.append(("T = \(r.iterations) iterations; a peak: a strict local minimum of the tensor's per-iteration LCA below its median", false))
        lines.append(("(iterations 2 … T−1); coincidence: a peak of A with a peak of B within ±\(r.window) iteration(s), positions mod T.", false))
        if let w = r.wholeSet {
            lines.append((String(format: "whole set (%d tensors): S = Σ over ordered pairs of coincidences = %d, null mean %.1f;", m, w.statistic, w.nullMean), true))
            lines.append((String(format: "  p = %.3g (independent uniform circular shifts of every tensor, %d draws, SplitMix64 seed %llu; floor 1/%d)", w.p, w.shifts, w.seed, w.shifts + 1), true))
        } else {
            lines.append(("whole set: needs three or more weight tensors (this model has \(m)); the pairs below stand alone.", false))
        }
        lines.append(("p shift: exact, all T circular shifts of A (floor 1/T = \(String(format: "%.3g", 1 / Double(max(1, r.iterations))))); p hyper: hypergeometric tail, A's peaks as draws,", false))
        lines.append(("B's covered iterations as successes (ignores that peaks are never adjacent). \(r.pairs.count) pairs: no correction for multiple tests.", false))
        if r.pairsWithoutExact > 0 { lines.append(("\(r.pairsWithoutExact) pair(s) without an exact p (T × T/64 word operations over the budget).", false)) }
        lines.append((Self.row("A", "B", "peaks A", "peaks B", "coincide", "expected", "p shift", "p hyper"), true))
        let shown = r.pairs.sorted { $0.log10PHypergeometric < $1.log10PHypergeometric }.prefix(12)
        for p in shown {
            lines.append((Self.row(r.names[p.a], r.names[p.b], "\(p.peaksA)", "\(p.peaksB)", "\(p.coincidences)", String(format: "%.1f", p.expected),
                                   p.pShift.map { String(format: "%.3g", $0) } ?? "—", Self.pText(p.pHypergeometric, p.log10PHypergeometric)), false))
        }
        if r.pairs.count > shown.count { lines.append(("… \(r.pairs.count - shown.count) more pairs (smallest p hyper first; all in the figure's JSON)", false)) }
        let tableHeight = 40 + 16 * lines.count
        let table = SVGPlot.textBlock(title: "", lines: lines, width: width, height: tableHeight)
        return stack([matrix, table], width: width, heights: [matrixHeight, tableHeight])
    }

    /// Per layer, each group's cumulative LCA, then a table: the share of each group's Σ LCA carried by each layer.
    func groupCumulativeSVG(title: String, width: Int, height: Int) -> String {
        let layers = data.groupLayers, groups = data.groupNames
        let tableLines = groups.count + 2
        let tableHeight = 40 + 16 * tableLines
        let each = max(120, (height - tableHeight) / max(1, layers.count))
        var parts: [String] = [], heights: [Int] = []
        for (l, layer) in layers.enumerated() {
            // the groups alone: their sum (the layer's LCA, figure 2) would
            // flatten them to a tenth of the scale
            let series = groups.enumerated().map { k, name in
                SVGPlot.Series(name: name, color: color(k), envelope: data.groupCumulative[l][k])
            }
            parts.append(SVGPlot.lines(title: l == 0 ? "\(title): layer \(layer.name)" : "layer \(layer.name)", series: series,
                                       width: width, height: each, yLabel: "Σ LCA (nats)", marks: [0]))
            heights.append(each)
        }
        let cell = max(9, (layers.map(\.name.count).max() ?? 0) + 2)
        let nameWidth = max(12, (groups.map(\.count).max() ?? 0) + 2)
        func pad(_ s: String, _ w: Int) -> String { s.count >= w ? String(s.prefix(w - 1)) + " " : s + String(repeating: " ", count: w - s.count) }
        var lines: [(String, Bool)] = [(pad("group", nameWidth) + pad("Σ LCA", 13) + layers.map { pad($0.name, cell) }.joined()
                                        + "  (share of the group's Σ LCA per layer)", true)]
        for (k, name) in groups.enumerated() {
            let total = layers.indices.reduce(0) { $0 + data.groupLayerTotals[$1][k] }
            lines.append((pad(name, nameWidth) + pad(String(format: "%+.4e", total), 13)
                          + layers.indices.map { pad(total != 0 ? String(format: "%.0f%%", 100 * data.groupLayerTotals[$0][k] / total) : "—", cell) }.joined(), false))
        }
        parts.append(SVGPlot.textBlock(title: "", lines: lines, width: width, height: tableHeight))
        heights.append(tableHeight)
        return stack(parts, width: width, heights: heights)
    }

    /// One part's block of the group heat map.
    func groupHeatHeight(_ groups: Int) -> Int { 66 + max(40, min(16 * groups, 400)) }

    static func matrixHeight(_ m: Int, width: Int) -> Int { Int(min(Double(width - 150), 56.0 * Double(m))) + 150 }

    static func row(_ cells: String...) -> String {
        let widths = [16, 16, 8, 8, 9, 9, 10, 12]
        return zip(cells, widths).map { c, w in c.count >= w ? String(c.prefix(w - 1)) + " " : c + String(repeating: " ", count: w - c.count) }.joined()
    }

    /// A p-value as text, from its log when it is below the smallest double.
    static func pText(_ p: Double, _ log10P: Double) -> String {
        if p > 0 { return String(format: "%.3g", p) }
        if !log10P.isFinite { return "0" }
        let e = log10P.rounded(.down)
        return String(format: "%.2fe%d", pow(10, log10P - e), Int(e))
    }

    func defaultHeight(_ figure: ReportFigure) -> Int {
        switch figure {
        case .conservation: 520
        case .helping: 720
        case .totals: max(300, 120 + 2 * 24 * names.count)
        case .lcaHistogram: 420 + 14 * (names.count / 5)
        case .synchronisation:
            sync.map { r in
                let m = r.names.count
                let rows = 8 + min(12, r.pairs.count) + (r.pairs.count > 12 ? 1 : 0) + (r.pairsWithoutExact > 0 ? 1 : 0)
                return Self.matrixHeight(m, width: 900) + 40 + 16 * rows
            } ?? 360
        case .heatmap: max(160, 80 + 18 * names.count)
        case .units: max(200, (data.header.units ?? []).reduce(0) { $0 + 70 + min(400, 3 * $1.units) })
        case .top: 40 + 16 * (3 + (totals.map { $0.mostHelping.count + $0.mostHurting.count } ?? 0))
        case .groupHeatmap: groupHeatHeight(data.groupNames.count) * max(1, data.groupHeatByLayer ? data.groupLayers.count : names.count)
        case .groupCumulative:
            (40 + 16 * (data.groupNames.count + 2)) + data.groupLayers.count * (260 + 14 * ((data.groupNames.count + 4) / 4))
        default: 360
        }
    }

    func stack(_ parts: [String], width: Int, heights: [Int]) -> String {
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(heights.reduce(0, +))\" viewBox=\"0 0 \(width) \(heights.reduce(0, +))\">"
        var y = 0
        for (p, h) in zip(parts, heights) {
            s += p.replacingOccurrences(of: "<svg xmlns=\"http://www.w3.org/2000/svg\"", with: "<svg y=\"\(y)\"", options: .anchored)
            y += h
        }
        return s + "</svg>"
    }

    /// The numbers a figure plots, as JSON-ready values (the page embeds
    /// them; the tests compare them with the log).
    public func figureData(_ figure: ReportFigure, columns: Int = 836) -> [String: Any] {
        let x0 = data.firstIteration, x1 = max(data.lastIteration, data.firstIteration + 1)
        func cols(_ e: Envelope) -> [[Double]] { e.columns(columns, xMin: x0, xMax: x1).map { [$0.x0, $0.x1, $0.min, $0.max, $0.last] } }
        var d: [String: Any] = ["figure": figure.rawValue, "number": figure.number]
        if let why = unavailable(figure) { d["unavailable"] = why; return d }
        switch figure {
        case .conservation:
            d["initial_loss"] = data.initialLoss ?? 0
            d["final_loss"] = data.finalLoss ?? 0
            d["lca_sum"] = data.lcaSum
            d["conservation_error"] = data.conservationError ?? 0
            d["threshold"] = data.threshold
            d["series"] = ["eval_loss": cols(data.evalLoss), "rebuilt_loss": cols(data.rebuiltLoss), "residual": cols(data.residual)]
        case .cumulative:
            d["series"] = Dictionary(uniqueKeysWithValues: zip(names, data.cumulative.map(cols)))
            if !data.validationCumulative.isEmpty { d["validation"] = Dictionary(uniqueKeysWithValues: zip(names, data.validationCumulative.map(cols))) }
        case .totals:
            d["tensors"] = names
            d["total"] = data.totals
            d["per_parameter"] = data.totals.enumerated().map { $0.element / Double(max(1, data.header.tensors[$0.offset].count)) }
            d["no_effect"] = noEffect
            if data.isVersion2 {
                d["helping"] = data.helpingTotals
                d["hurting"] = data.hurtingTotals
            } else {
                d["helping_part"] = "needs log version 2"
            }
        case .helping:
            let keys = names + ["overall"]
            d["all"] = Dictionary(uniqueKeysWithValues: zip(keys, data.shareAll.map(cols)))
            d["non_zero"] = Dictionary(uniqueKeysWithValues: zip(keys, data.shareNonZero.map(cols)))
            d["zero"] = Dictionary(uniqueKeysWithValues: zip(keys, data.shareZero.map(cols)))
            if data.sawUnmoved { d["unmoved"] = Dictionary(uniqueKeysWithValues: zip(keys, data.shareUnmoved.map(cols))) }
        case .iterationsHelped:
            d["histogram"] = totals!.histogram
            d["bin_width"] = totals!.binWidth
        case .heatmap:
            d["rows"] = Dictionary(uniqueKeysWithValues: zip(names, data.perIteration.map(cols)))
        case .groupHeatmap:
            let parts = data.groupHeatByLayer ? data.groupLayers.map(\.name) : names
            d["by"] = data.groupHeatByLayer ? "layer" : "tensor"
            d["parts"] = parts
            d["groups"] = data.groupNames
            d["extreme"] = data.groupHeat.map { $0.map { $0.buckets.map(\.extreme) } }
        case .groupCumulative:
            d["layers"] = data.groupLayers.map(\.name)
            d["layer_tensors"] = data.groupLayers.map { $0.tensors.map { names[$0] } }
            d["groups"] = data.groupNames
            d["totals"] = data.groupLayerTotals
            d["series"] = Dictionary(uniqueKeysWithValues: data.groupLayers.enumerated().map { l, layer in
                (layer.name, Dictionary(uniqueKeysWithValues: data.groupNames.enumerated().map { k, name in (name, cols(data.groupCumulative[l][k])) }))
            })
            d["records"] = data.groupRecords
        case .units:
            d["groups"] = (data.header.units ?? []).map { g in ["group": g.group, "units": g.units] as [String: Any] }
            d["extreme"] = data.units.map { $0.buckets.map(\.extreme) }
        case .top:
            func rows(_ ps: [RunTotals.Parameter]) -> [[String: Any]] { ps.map { ["tensor": $0.tensor, "index": $0.index, "total": $0.total] } }
            d["most_helping"] = rows(totals!.mostHelping)
            d["most_hurting"] = rows(totals!.mostHurting)
        case .lcaHistogram:
            d["edges"] = LCAHistogram.edges
            d["records"] = data.histogram.records
            d["helping"] = Dictionary(uniqueKeysWithValues: names.indices.map { (names[$0], data.histogram.helping($0).map(Int.init)) })
            d["hurting"] = Dictionary(uniqueKeysWithValues: names.indices.map { (names[$0], data.histogram.hurting($0).map(Int.init)) })
            d["no_effect"] = noEffect
            if let f = data.floorRange { d["floor"] = [f.min, f.max] }
        case .synchronisation:
            let r = sync!
            d["tensors"] = r.names
            d["iterations"] = r.iterations
            d["window"] = r.window
            d["peak_counts"] = r.peaks.map(\.count)
            if r.peaks.reduce(0, { $0 + $1.count }) <= 20_000 {
                let first = Int(data.firstIteration)
                d["peak_iterations"] = r.peaks.map { $0.map { $0 + first } }
            }
            d["pairs"] = r.pairs.map { p -> [String: Any] in
                var e: [String: Any] = ["a": r.names[p.a], "b": r.names[p.b], "peaks_a": p.peaksA, "peaks_b": p.peaksB,
                                        "covered_b": p.coveredB, "coincidences": p.coincidences, "expected": p.expected,
                                        "p_hypergeometric": p.pHypergeometric, "log10_p_hypergeometric": p.log10PHypergeometric]
                if let q = p.pShift { e["p_shift_exact"] = q }
                return e
            }
            if let w = r.wholeSet {
                d["whole_set"] = ["statistic": w.statistic, "null_mean": w.nullMean, "p_random_shifts": w.p,
                                  "shifts": w.shifts, "seed": Int(w.seed)] as [String: Any]
            }
            d["no_effect_excluded"] = data.syncTensors.filter { !data.hasEffect[$0] }.map { names[$0] }
        }
        return d
    }

    /// JSON text of `value` (dictionaries with sorted keys, arrays, strings,
    /// numbers) with doubles in the shortest text that reads back to the
    /// same bits, infinities and NaN as "inf", "-inf", "nan" (JSONFormat's
    /// convention); "</" escaped so that the text can sit in a script block.
    static func json(_ value: Any) -> String {
        var out = ""
        func write(_ v: Any) {
            switch v {
            case let d as [String: Any]:
                out += "{"
                for (i, k) in d.keys.sorted().enumerated() {
                    if i > 0 { out += "," }
                    write(k); out += ":"; write(d[k]!)
                }
                out += "}"
            case let a as [Any]:
                out += "["
                for (i, x) in a.enumerated() { if i > 0 { out += "," }; write(x) }
                out += "]"
            case let s as String:
                out += "\""
                for u in s.unicodeScalars {
                    switch u {
                    case "\"": out += "\\\""
                    case "\\": out += "\\\\"
                    case "/": out += "\\/"
                    case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
                    default: out.unicodeScalars.append(u)
                    }
                }
                out += "\""
            case let b as Bool: out += b ? "true" : "false"
            case let i as Int: out += String(i)
            case let d as Double:
                out += d.isNaN ? "\"nan\"" : d.isInfinite ? (d > 0 ? "\"inf\"" : "\"-inf\"") : "\(d)"
            default: out += "null"
            }
        }
        write(value)
        return out
    }

    /// One paragraph: the figures this input cannot give, and why; the
    /// tensors with no effect.
    func missingSummary() -> String {
        var parts: [String] = []
        let missing = ReportFigure.allCases.compactMap { f in unavailable(f).map { "\(f.number) (\(f.rawValue)): \($0)" } }
        if !missing.isEmpty {
            parts.append("<p class=\"note\" id=\"missing-figures\"><b>Figures missing for this input</b>: " + missing.map(SVGPlot.esc).joined(separator: "; ") + ".</p>")
        }
        if !noEffect.isEmpty {
            parts.append("<p class=\"note\" id=\"no-effect\"><b>No effect</b> (LCA zero\(data.isVersion2 ? " or within the floor" : "") at every iteration, marked on the figures): " + noEffect.map(SVGPlot.esc).joined(separator: ", ") + ".</p>")
        }
        if let f = data.floorRange {
            parts.append("<p class=\"note\">Helped and hurt counts leave out |LCA| within the record's floor (relative to the iteration's largest |LCA|): \(SVGPlot.label(f.min)) to \(SVGPlot.label(f.max)) nats in this log.</p>")
        }
        return parts.joined(separator: "\n")
    }

    /// The whole page: one self-contained HTML file.
    public func html(source: String) -> String {
        let h = data.header
        let esc = SVGPlot.esc
        var page = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>lca report: \(esc(source))</title>
            <style>
            body{font-family:sans-serif;max-width:960px;margin:1em auto;padding:0 1em;color:#222}
            section.figure{margin:1.5em 0;padding:.5em;border:1px solid #ddd;border-radius:4px}
            section.figure svg{display:block;max-width:100%;height:auto}
            .missing{color:#777}
            table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left}
            p.note{font-size:90%;color:#555}
            </style></head><body>
            <h1>lca report</h1>
            <table>
            <tr><th>source</th><td>\(esc(source))</td></tr>
            <tr><th>model</th><td>\(esc(h.model.spec)) (\(h.model.parameters) parameters, \(h.tensors.count) tensors, \(esc(h.model.loss)))</td></tr>
            <tr><th>data</th><td>\(esc(h.data?.source ?? "?")): \(h.data?.training ?? 0) training, \(h.data?.validation ?? 0) validation, LCA on \(h.data?.evaluation ?? 0)</td></tr>
            <tr><th>iterations</th><td>\(data.records) records (\(Int(data.firstIteration))–\(Int(data.lastIteration))), log version \(h.version)</td></tr>
            <tr><th>conservation</th><td>L₀ = \(String(format: "%.6f", data.initialLoss ?? 0)), L_end = \(String(format: "%.6f", data.finalLoss ?? 0)), Σ LCA = \(String(format: "%+.6e", data.lcaSum)); whole-run conservation error (L_end − L₀) − Σ LCA = <b>\(String(format: "%+.3e", data.conservationError ?? 0))</b> (\(String(format: "%.3g", 100 * abs(data.conservationError ?? 0) / max(abs((data.finalLoss ?? 0) - (data.initialLoss ?? 0)), 1e-300)))% of the loss change); largest |residual| \(String(format: "%.3e", data.maxAbsResidual)), threshold \(SVGPlot.label(data.threshold)), \(data.residualsAboveThreshold) iteration(s) above it at the sub-interval cap</td></tr>
            </table>
            \(missingSummary())
            <p class="note">Long series are reduced to the plot's pixel width by a min/max envelope per pixel column (each column is drawn from the smallest to the largest value of the iterations it covers), so peaks are never lost. Heat-map cells show the value of largest magnitude in their column. Hover over a series, bar or bin for its name and value.</p>

            """
        for figure in ReportFigure.allCases {
            let id = "fig-\(figure.rawValue)"
            page += "<section class=\"figure\" id=\"\(id)\" data-figure=\"\(figure.rawValue)\">\n"
            if let why = unavailable(figure) {
                page += "<h2>\(figure.number). \(esc(figure.title))</h2><p class=\"missing\">Not shown: \(esc(why)).</p>\n"
            } else {
                page += svg(figure) + "\n"
                if figure == .totals && !data.isVersion2 {
                    page += "<p class=\"note\">Net bars only: the split into the helping and the hurting part needs a record field of log version 2.</p>\n"
                }
                if figure == .synchronisation {
                    page += "<p class=\"note\">Which p is which: <b>p shift</b> is exact (every one of the T circular shifts of the first tensor's peaks, so it cannot be below 1/T); <b>p hyper</b> is analytic (hypergeometric upper tail, computed in log space; an approximation: it treats peaks as a random subset of iterations); the <b>whole-set p</b> is from independent random circular shifts of every weight tensor (its floor is 1/(draws + 1)). Only weight tensors (rank 2 or more) with an effect take part; biases and batch-norm vectors are left out.</p>\n"
                }
            }
            page += "<script type=\"application/json\" class=\"figure-data\" id=\"data-\(figure.rawValue)\">\(Self.json(figureData(figure)))</script>\n</section>\n"
        }
        page += "</body></html>\n"
        return page
    }
}
