import Foundation

/// Plotting primitives that write SVG text: axes, envelope series, bars,
/// heat maps, histograms. Every function returns a complete `<svg>` element.
public enum SVGPlot {
    public static let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                                 "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]

    static func esc(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    static func num(_ v: Double) -> String { String(format: "%.1f", v) }

    /// A short label for a value.
    public static func label(_ v: Double) -> String {
        if v == 0 { return "0" }
        let a = abs(v)
        if a >= 1e4 || a < 1e-3 { return String(format: "%.2g", v) }
        return String(format: "%.4g", v)
    }

    static func ticks(_ lo: Double, _ hi: Double, _ n: Int = 5) -> [Double] {
        guard hi > lo, lo.isFinite, hi.isFinite else { return [lo] }
        let raw = (hi - lo) / Double(n)
        let mag = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * mag }.first { $0 >= raw } ?? raw
        var t = (lo / step).rounded(.up) * step
        var out: [Double] = []
        while t <= hi + step * 1e-9 { out.append(abs(t) < step * 1e-9 ? 0 : t); t += step }
        return out
    }

    /// A plotting frame: maps data to pixels.
    public struct Frame {
        public var x: Double, y: Double, w: Double, h: Double
        public var xMin: Double, xMax: Double, yMin: Double, yMax: Double
        func px(_ v: Double) -> Double { x + (xMax > xMin ? (v - xMin) / (xMax - xMin) : 0.5) * w }
        func py(_ v: Double) -> Double { y + h - (yMax > yMin ? (v - yMin) / (yMax - yMin) : 0.5) * h }
    }

    static func axes(_ f: Frame, xLabel: String, yLabel: String) -> String {
        var s = "<g class=\"axes\" font-size=\"11\" fill=\"#333\">"
        s += "<rect x=\"\(num(f.x))\" y=\"\(num(f.y))\" width=\"\(num(f.w))\" height=\"\(num(f.h))\" fill=\"none\" stroke=\"#999\"/>"
        for t in ticks(f.yMin, f.yMax) {
            let y = f.py(t)
            s += "<line x1=\"\(num(f.x))\" x2=\"\(num(f.x + f.w))\" y1=\"\(num(y))\" y2=\"\(num(y))\" stroke=\"#eee\"/>"
            s += "<text x=\"\(num(f.x - 4))\" y=\"\(num(y + 4))\" text-anchor=\"end\">\(esc(label(t)))</text>"
        }
        for t in ticks(f.xMin, f.xMax) {
            let x = f.px(t)
            s += "<text x=\"\(num(x))\" y=\"\(num(f.y + f.h + 14))\" text-anchor=\"middle\">\(esc(label(t)))</text>"
        }
        s += "<text x=\"\(num(f.x + f.w / 2))\" y=\"\(num(f.y + f.h + 28))\" text-anchor=\"middle\">\(esc(xLabel))</text>"
        s += "<text transform=\"translate(\(num(f.x - 48)),\(num(f.y + f.h / 2))) rotate(-90)\" text-anchor=\"middle\">\(esc(yLabel))</text>"
        return s + "</g>"
    }

    static func open(_ width: Int, _ height: Int, title: String) -> String {
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" viewBox=\"0 0 \(width) \(height)\" font-family=\"sans-serif\">"
            + "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
            + "<text x=\"\(width / 2)\" y=\"16\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">\(esc(title))</text>"
    }

    /// A series to draw: its envelope, reduced per pixel column, drawn as a
    /// filled band from min to max (a line where they coincide).
    public struct Series {
        public var name: String, color: String, envelope: Envelope, dashed: Bool
        public init(name: String, color: String, envelope: Envelope, dashed: Bool = false) {
            self.name = name; self.color = color; self.envelope = envelope; self.dashed = dashed
        }
    }

    /// Line chart of envelopes; `band` a shaded horizontal band (e.g. ±
    /// threshold), `marks` horizontal reference lines.
    public static func lines(title: String, series: [Series], width: Int, height: Int, xLabel: String = "iteration",
                             yLabel: String, band: (Double, Double)? = nil, marks: [Double] = [],
                             yRange: (Double, Double)? = nil) -> String {
        let all = series.flatMap { $0.envelope.buckets }
        let xMin = all.map(\.x0).min() ?? 0, xMax = all.map(\.x1).max() ?? 1
        var yMin = all.map(\.min).filter(\.isFinite).min() ?? 0, yMax = all.map(\.max).filter(\.isFinite).max() ?? 1
        if let (a, b) = band { yMin = min(yMin, a); yMax = max(yMax, b) }
        for m in marks { yMin = min(yMin, m); yMax = max(yMax, m) }
        if let r = yRange { yMin = r.0; yMax = r.1 }
        if yMax <= yMin { yMax = yMin + 1; yMin -= 1 }
        let pad = (yMax - yMin) * 0.04
        let legendRows = (series.count + 3) / 4
        let f = Frame(x: 64, y: 26, w: Double(width) - 80, h: Double(height) - 66 - Double(legendRows) * 14,
                      xMin: xMin, xMax: xMax == xMin ? xMin + 1 : xMax, yMin: yMin - pad, yMax: yMax + pad)
        var s = open(width, height, title: title) + axes(f, xLabel: xLabel, yLabel: yLabel)
        if let (a, b) = band {
            s += "<rect class=\"band\" x=\"\(num(f.x))\" y=\"\(num(f.py(b)))\" width=\"\(num(f.w))\" height=\"\(num(max(1, f.py(a) - f.py(b))))\" fill=\"#fdd\" opacity=\"0.8\"/>"
        }
        for m in marks {
            s += "<line class=\"mark\" x1=\"\(num(f.x))\" x2=\"\(num(f.x + f.w))\" y1=\"\(num(f.py(m)))\" y2=\"\(num(f.py(m)))\" stroke=\"#000\" stroke-dasharray=\"4 3\"/>"
        }
        for sr in series {
            let cols = sr.envelope.columns(Int(f.w), xMin: f.xMin, xMax: f.xMax)
            guard !cols.isEmpty else { continue }
            let upper = cols.map { "\(num(f.px(($0.x0 + $0.x1) / 2))),\(num(f.py($0.max)))" }
            let lower = cols.reversed().map { "\(num(f.px(($0.x0 + $0.x1) / 2))),\(num(f.py($0.min)))" }
            let dash = sr.dashed ? " stroke-dasharray=\"5 3\"" : ""
            s += "<polygon class=\"series\" data-name=\"\(esc(sr.name))\" points=\"\((upper + lower).joined(separator: " "))\" fill=\"\(sr.color)\" fill-opacity=\"0.3\" stroke=\"\(sr.color)\" stroke-width=\"1.2\"\(dash)><title>\(esc(sr.name))</title></polygon>"
        }
        var lx = f.x, ly = f.y + f.h + 44
        for (i, sr) in series.enumerated() {
            if i > 0 && i % 4 == 0 { lx = f.x; ly += 14 }
            s += "<rect x=\"\(num(lx))\" y=\"\(num(ly - 8))\" width=\"10\" height=\"8\" fill=\"\(sr.color)\"/><text x=\"\(num(lx + 14))\" y=\"\(num(ly))\" font-size=\"11\">\(esc(sr.name))</text>"
            lx += f.w / 4
        }
        return s + "</svg>"
    }

    /// Horizontal bars around zero; `split` (helping, hurting) per bar when
    /// known draws the two parts, else the net value alone.
    public static func bars(title: String, labels: [String], values: [Double], split: [(Double, Double)]? = nil,
                            width: Int, height: Int, xLabel: String) -> String {
        var lo = min(0, values.min() ?? 0), hi = max(0, values.max() ?? 0)
        if let split { lo = min(lo, split.map(\.0).min() ?? 0); hi = max(hi, split.map(\.1).max() ?? 0) }
        if hi <= lo { hi = 1; lo = -1 }
        let pad = (hi - lo) * 0.05
        let f = Frame(x: 110, y: 26, w: Double(width) - 130, h: Double(height) - 66, xMin: lo - pad, xMax: hi + pad, yMin: 0, yMax: 1)
        var s = open(width, height, title: title)
        s += "<rect x=\"\(num(f.x))\" y=\"\(num(f.y))\" width=\"\(num(f.w))\" height=\"\(num(f.h))\" fill=\"none\" stroke=\"#999\"/>"
        for t in ticks(f.xMin, f.xMax) {
            s += "<text x=\"\(num(f.px(t)))\" y=\"\(num(f.y + f.h + 14))\" text-anchor=\"middle\" font-size=\"11\">\(esc(label(t)))</text>"
        }
        s += "<text x=\"\(num(f.x + f.w / 2))\" y=\"\(num(f.y + f.h + 30))\" text-anchor=\"middle\" font-size=\"11\">\(esc(xLabel))</text>"
        let row = f.h / Double(max(labels.count, 1))
        let z = f.px(0)
        s += "<line x1=\"\(num(z))\" x2=\"\(num(z))\" y1=\"\(num(f.y))\" y2=\"\(num(f.y + f.h))\" stroke=\"#000\"/>"
        for (i, name) in labels.enumerated() {
            let y = f.y + Double(i) * row + row * 0.15, bh = row * 0.7
            s += "<text x=\"\(num(f.x - 4))\" y=\"\(num(y + bh / 2 + 4))\" text-anchor=\"end\" font-size=\"11\">\(esc(name))</text>"
            func bar(_ a: Double, _ b: Double, _ color: String, _ what: String) {
                let x0 = min(f.px(a), f.px(b)), x1 = max(f.px(a), f.px(b))
                s += "<rect class=\"bar\" data-value=\"\(b)\" x=\"\(num(x0))\" y=\"\(num(y))\" width=\"\(num(max(0.5, x1 - x0)))\" height=\"\(num(bh))\" fill=\"\(color)\"><title>\(esc(name)): \(what) \(label(b))</title></rect>"
            }
            if let split {
                bar(0, split[i].0, "#2c7bb6", "helping")
                bar(0, split[i].1, "#d7191c", "hurting")
                // the net value (helping + hurting) as a black tick
                let xn = f.px(values[i])
                s += "<line class=\"net\" x1=\"\(num(xn))\" x2=\"\(num(xn))\" y1=\"\(num(y - 2))\" y2=\"\(num(y + bh + 2))\" stroke=\"#000\" stroke-width=\"2\"><title>\(esc(name)): net \(label(values[i]))</title></line>"
            } else {
                bar(0, values[i], values[i] < 0 ? "#2c7bb6" : "#d7191c", "net")
            }
        }
        return s + "</svg>"
    }

    /// Diverging colour centred on zero: blue negative (helped), red positive.
    public static func diverging(_ v: Double, scale: Double) -> String {
        guard scale > 0, v.isFinite else { return "#ffffff" }
        let t = max(-1, min(1, v / scale))
        let q = (t * 10).rounded() / 10   // 21 levels, so that equal neighbours merge
        let a = abs(q)
        let (r, g, b): (Double, Double, Double) = q < 0 ? (255 - a * (255 - 33), 255 - a * (255 - 102), 255 - a * (255 - 172))
                                                        : (255 - a * (255 - 178), 255 - a * (255 - 24), 255 - a * (255 - 43))
        return String(format: "#%02x%02x%02x", Int(r), Int(g), Int(b))
    }

    /// Rows × columns heat map of envelopes (each cell: the value of largest
    /// magnitude in its column), diverging colours centred on zero; with
    /// `perRow` each row is scaled to its own largest |value|.
    public static func heatMap(title: String, rows: [(String, Envelope)], columns: Int, width: Int, height: Int,
                               perRow: Bool) -> String {
        let all = rows.flatMap { $0.1.buckets }
        let xMin = all.map(\.x0).min() ?? 0, xMax = max(all.map(\.x1).max() ?? 1, xMin + 1)
        let f = Frame(x: 110, y: 26, w: Double(width) - 130, h: Double(height) - 66, xMin: xMin, xMax: xMax, yMin: 0, yMax: 1)
        let n = max(1, min(columns, Int(f.w)))
        let cells = rows.map { $0.1.columns(n, xMin: xMin, xMax: xMax) }
        let grid = cells.map { $0.map(\.extreme) }
        let global = grid.flatMap { $0 }.map(abs).max() ?? 0
        var s = open(width, height, title: title)
        let rh = f.h / Double(max(rows.count, 1))
        let step = (xMax - xMin) / Double(max(1, all.count / max(1, rows.count)))
        let fx = Frame(x: f.x, y: f.y, w: f.w, h: f.h, xMin: xMin, xMax: xMax + step, yMin: 0, yMax: 1)
        for (i, (name, _)) in rows.enumerated() {
            let y = f.y + Double(i) * rh
            let scale = perRow ? (grid[i].map(abs).max() ?? 0) : global
            let every = max(1, Int((11 / rh).rounded(.up)))
            if i % every == 0 {
                s += "<text x=\"\(num(f.x - 4))\" y=\"\(num(y + min(rh, 12) / 2 + 4))\" text-anchor=\"end\" font-size=\"\(rh < 11 ? 9 : 11)\">\(esc(name))</text>"
            }
            var j = 0
            let row = cells[i]
            while j < row.count {
                let colour = diverging(grid[i][j], scale: scale)
                var k = j + 1
                while k < row.count && diverging(grid[i][k], scale: scale) == colour { k += 1 }
                let x0 = fx.px(row[j].x0)
                let x1 = k < row.count ? fx.px(row[k].x0) : f.x + f.w
                s += "<rect x=\"\(num(x0))\" y=\"\(num(y))\" width=\"\(num(x1 - x0 + 0.3))\" height=\"\(num(rh + 0.3))\" fill=\"\(colour)\"/>"
                j = k
            }
        }
        s += "<rect x=\"\(num(f.x))\" y=\"\(num(f.y))\" width=\"\(num(f.w))\" height=\"\(num(f.h))\" fill=\"none\" stroke=\"#999\"/>"
        for t in ticks(xMin, xMax) {
            s += "<text x=\"\(num(fx.px(t)))\" y=\"\(num(f.y + f.h + 14))\" text-anchor=\"middle\" font-size=\"11\">\(esc(label(t)))</text>"
        }
        s += "<text x=\"\(num(f.x + f.w / 2))\" y=\"\(num(f.y + f.h + 30))\" text-anchor=\"middle\" font-size=\"11\">iteration — blue: helped (LCA &lt; 0), red: hurt; \(perRow ? "each row scaled to its own largest |LCA|" : "one scale, ±\(esc(label(global)))")</text>"
        return s + "</svg>"
    }

    /// A histogram of counts over bins [edge_k, edge_k + binWidth).
    public static func histogram(title: String, counts: [Int], binWidth: Int, width: Int, height: Int, xLabel: String) -> String {
        let maxCount = Double(counts.max() ?? 1)
        let xMax = Double(counts.count * binWidth)
        let f = Frame(x: 64, y: 26, w: Double(width) - 80, h: Double(height) - 66, xMin: 0, xMax: max(xMax, 1), yMin: 0, yMax: max(maxCount, 1) * 1.05)
        var s = open(width, height, title: title) + axes(f, xLabel: xLabel, yLabel: "parameters")
        for (k, c) in counts.enumerated() where c > 0 {
            let x0 = f.px(Double(k * binWidth)), x1 = f.px(Double((k + 1) * binWidth))
            s += "<rect class=\"bin\" data-count=\"\(c)\" x=\"\(num(x0))\" y=\"\(num(f.py(Double(c))))\" width=\"\(num(max(0.5, x1 - x0 - 0.5)))\" height=\"\(num(f.py(0) - f.py(Double(c))))\" fill=\"#4a7\"><title>\(k * binWidth)–\((k + 1) * binWidth - 1) iterations: \(c)</title></rect>"
        }
        return s + "</svg>"
    }

    /// Sequential colour for a strength in [0, 1]: white to dark purple.
    public static func sequential(_ t: Double) -> String {
        let a = max(0, min(1, t.isFinite ? t : 1))
        let q = (a * 10).rounded() / 10
        let (r, g, b) = (255 - q * (255 - 63), 255 - q * (255 - 0), 255 - q * (255 - 125))
        return String(format: "#%02x%02x%02x", Int(r), Int(g), Int(b))
    }

    /// A square matrix of cells (row i, column j): each cell's colour from
    /// `strength` in [0, 1] (nil: grey, e.g. the diagonal), its text drawn
    /// inside when it fits, its tip as a hover title.
    public static func matrix(title: String, labels: [String], strength: [[Double?]], text: [[String]], tips: [[String]],
                              width: Int, height: Int, legend: String) -> String {
        let n = max(1, labels.count)
        let left = 130.0, top = 30.0
        let side = max(4, min((Double(width) - left - 20) / Double(n), (Double(height) - top - 110) / Double(n)))
        var s = open(width, height, title: title)
        for i in 0..<labels.count {
            let y = top + Double(i) * side
            s += "<text x=\"\(num(left - 4))\" y=\"\(num(y + side / 2 + 4))\" text-anchor=\"end\" font-size=\"11\">\(esc(labels[i]))</text>"
            let x = left + Double(i) * side + side / 2
            let yl = top + Double(n) * side + 6
            s += "<text transform=\"translate(\(num(x + 4)),\(num(yl))) rotate(60)\" font-size=\"11\">\(esc(labels[i]))</text>"
            for j in 0..<labels.count {
                let x0 = left + Double(j) * side
                let v = strength[i][j]
                s += "<rect class=\"cell\" x=\"\(num(x0))\" y=\"\(num(y))\" width=\"\(num(side))\" height=\"\(num(side))\" fill=\"\(v.map(sequential) ?? "#dddddd")\" stroke=\"#fff\"><title>\(esc(tips[i][j]))</title></rect>"
                if side >= 28 && !text[i][j].isEmpty {
                    let dark = (v ?? 0) > 0.55
                    s += "<text x=\"\(num(x0 + side / 2))\" y=\"\(num(y + side / 2 + 4))\" text-anchor=\"middle\" font-size=\"\(side >= 44 ? 11 : 9)\" fill=\"\(dark ? "#fff" : "#222")\">\(esc(text[i][j]))</text>"
                }
            }
        }
        s += "<text x=\"\(num(left))\" y=\"\(height - 8)\" font-size=\"11\" fill=\"#333\">\(esc(legend))</text>"
        return s + "</svg>"
    }

    /// Lines of text (monospace), e.g. a small table.
    public static func textBlock(title: String, lines: [(String, Bool)], width: Int, height: Int) -> String {
        var s = open(width, height, title: title)
        var y = 40
        for (text, bold) in lines {
            s += "<text x=\"20\" y=\"\(y)\" font-size=\"12\" font-family=\"monospace\" xml:space=\"preserve\"\(bold ? " font-weight=\"bold\"" : "")>\(esc(text))</text>"
            y += 16
        }
        return s + "</svg>"
    }

    /// The distribution of |LCA| by sign over fixed log-spaced bins, counts
    /// on a log scale: helping (LCA < 0) mirrored on the left, from the
    /// largest |LCA| at the far left to the floor at the centre; hurting on
    /// the right. `overall` as bars, `perTensor` as step lines.
    public static func signedHistogram(title: String, overall: (helping: [UInt64], hurting: [UInt64]),
                                       perTensor: [(name: String, color: String, helping: [UInt64], hurting: [UInt64])],
                                       binLabels: [String], width: Int, height: Int) -> String {
        let bins = overall.helping.count
        let all = overall.helping + overall.hurting + perTensor.flatMap { $0.helping + $0.hurting }
        let top = log10(Double(max(1, all.max() ?? 1)))
        let legendRows = (perTensor.count + 4) / 5
        let f = Frame(x: 64, y: 26, w: Double(width) - 80, h: Double(height) - 80 - Double(legendRows) * 14,
                      xMin: 0, xMax: Double(2 * bins), yMin: 0, yMax: max(1, (top + 0.3).rounded(.up)))
        var s = open(width, height, title: title)
        s += "<rect x=\"\(num(f.x))\" y=\"\(num(f.y))\" width=\"\(num(f.w))\" height=\"\(num(f.h))\" fill=\"none\" stroke=\"#999\"/>"
        for d in stride(from: 0, through: Int(f.yMax), by: max(1, Int(f.yMax) / 6)) {
            let y = f.py(Double(d))
            s += "<line x1=\"\(num(f.x))\" x2=\"\(num(f.x + f.w))\" y1=\"\(num(y))\" y2=\"\(num(y))\" stroke=\"#eee\"/>"
            s += "<text x=\"\(num(f.x - 4))\" y=\"\(num(y + 4))\" text-anchor=\"end\" font-size=\"11\">1e\(d)</text>"
        }
        // slot of bin k: helping at bins − 1 − k, hurting at bins + k
        func slot(_ k: Int, helping: Bool) -> Double { Double(helping ? bins - 1 - k : bins + k) }
        let z = f.px(Double(bins))
        s += "<line x1=\"\(num(z))\" x2=\"\(num(z))\" y1=\"\(num(f.y))\" y2=\"\(num(f.y + f.h))\" stroke=\"#000\"/>"
        for (k, (h, u)) in zip(overall.helping, overall.hurting).enumerated() {
            for (c, helping) in [(h, true), (u, false)] where c > 0 {
                let x0 = f.px(slot(k, helping: helping)), x1 = f.px(slot(k, helping: helping) + 1)
                let y = f.py(log10(Double(c)))
                s += "<rect class=\"bin\" data-count=\"\(c)\" x=\"\(num(x0 + 0.5))\" y=\"\(num(y))\" width=\"\(num(max(0.5, x1 - x0 - 1)))\" height=\"\(num(max(0.5, f.py(0) - y)))\" fill=\"\(helping ? "#2c7bb6" : "#d7191c")\" fill-opacity=\"0.55\"><title>\(helping ? "helping, |LCA| in " : "hurting, LCA in ")\(esc(binLabels[k])): \(c)</title></rect>"
            }
        }
        for t in perTensor {
            var points: [String] = []
            for slotIndex in 0..<(2 * bins) {
                let helping = slotIndex < bins
                let k = helping ? bins - 1 - slotIndex : slotIndex - bins
                let c = helping ? t.helping[k] : t.hurting[k]
                let y = c > 0 ? f.py(log10(Double(c))) : f.py(0)
                points.append("\(num(f.px(Double(slotIndex)))),\(num(y)) \(num(f.px(Double(slotIndex + 1)))),\(num(y))")
            }
            s += "<polyline class=\"series\" data-name=\"\(esc(t.name))\" points=\"\(points.joined(separator: " "))\" fill=\"none\" stroke=\"\(t.color)\" stroke-width=\"1.2\"><title>\(esc(t.name))</title></polyline>"
        }
        // x labels at bin edges: edge j (|LCA| = 10^(-14 + j/2)) lies at
        // slot bins − 1 − j on the helping side and bins + 1 + j on the
        // hurting side; the centre is the floor.
        for (j, text) in [(28, "1"), (22, "1e-3"), (14, "1e-7"), (6, "1e-11"), (0, "1e-14")] where j < bins - 1 {
            for helping in [true, false] {
                let x = f.px(Double(helping ? bins - 1 - j : bins + 1 + j))
                let anchor = j == 0 ? (helping ? "end" : "start") : "middle"
                s += "<line x1=\"\(num(x))\" x2=\"\(num(x))\" y1=\"\(num(f.y + f.h))\" y2=\"\(num(f.y + f.h + 4))\" stroke=\"#333\"/>"
                s += "<text x=\"\(num(x))\" y=\"\(num(f.y + f.h + 14))\" text-anchor=\"\(anchor)\" font-size=\"11\">\(helping ? "−" : "")\(text)</text>"
            }
        }
        s += "<text x=\"\(num(f.x + f.w / 2))\" y=\"\(num(f.y + f.h + 30))\" text-anchor=\"middle\" font-size=\"11\">per-parameter, per-iteration LCA (log |LCA|, two bins per decade; left, blue: helped; right, red: hurt; values within the floor not counted)</text>"
        s += "<text transform=\"translate(\(num(f.x - 48)),\(num(f.y + f.h / 2))) rotate(-90)\" text-anchor=\"middle\" font-size=\"11\">count (log scale)</text>"
        var lx = f.x, ly = f.y + f.h + 48
        for (i, t) in perTensor.enumerated() {
            if i > 0 && i % 5 == 0 { lx = f.x; ly += 14 }
            s += "<rect x=\"\(num(lx))\" y=\"\(num(ly - 8))\" width=\"10\" height=\"3\" fill=\"\(t.color)\"/><text x=\"\(num(lx + 14))\" y=\"\(num(ly))\" font-size=\"11\">\(esc(t.name))</text>"
            lx += f.w / 5
        }
        return s + "</svg>"
    }

    /// A placeholder figure with a message.
    public static func note(title: String, text: String, width: Int, height: Int) -> String {
        open(width, height, title: title) + "<text x=\"\(width / 2)\" y=\"\(height / 2)\" text-anchor=\"middle\" font-size=\"13\" fill=\"#777\">\(esc(text))</text></svg>"
    }
}
