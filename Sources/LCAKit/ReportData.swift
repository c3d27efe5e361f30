import Foundation

/// A series reduced, as it streams, to at most `capacity` buckets: each
/// bucket keeps the minimum, the maximum and the last value of the points it
/// covers, so a peak is never lost however long the series. When the
/// buckets are full, neighbours are merged in pairs and the span (points a
/// bucket covers) doubles: constant memory, one pass.
public struct Envelope: Sendable, Hashable, Codable {
    /// One bucket: iterations `x0…x1`, `count` points.
    public struct Bucket: Sendable, Hashable, Codable {
        public var x0: Double, x1: Double
        public var min: Double, max: Double, last: Double
        public var count: Int

        mutating func merge(_ b: Bucket) {
            x1 = b.x1
            min = Swift.min(min, b.min)
            max = Swift.max(max, b.max)
            last = b.last
            count += b.count
        }

        /// The value of largest magnitude (min or max).
        public var extreme: Double { abs(min) >= abs(max) ? min : max }
    }

    public let capacity: Int
    public private(set) var span = 1
    public private(set) var buckets: [Bucket] = []

    public init(capacity: Int) { self.capacity = Swift.max(2, capacity) }

    /// Adds point (x, v); x increasing.
    public mutating func add(_ x: Double, _ v: Double) {
        if let n = buckets.indices.last, buckets[n].count < span {
            buckets[n].merge(Bucket(x0: x, x1: x, min: v, max: v, last: v, count: 1))
            return
        }
        buckets.append(Bucket(x0: x, x1: x, min: v, max: v, last: v, count: 1))
        if buckets.count > capacity {
            var merged: [Bucket] = []
            merged.reserveCapacity(capacity)
            var i = 0
            while i < buckets.count {
                var b = buckets[i]
                if i + 1 < buckets.count { b.merge(buckets[i + 1]) }
                merged.append(b)
                i += 2
            }
            buckets = merged
            span *= 2
        }
    }

    /// Overall minimum and maximum (nil when empty).
    public var range: (min: Double, max: Double)? {
        guard let first = buckets.first else { return nil }
        return buckets.reduce((first.min, first.max)) { (Swift.min($0.0, $1.min), Swift.max($0.1, $1.max)) }
    }

    /// The buckets merged into `columns` columns over [xMin, xMax] (one per
    /// pixel column): a column's min/max are those of all buckets whose
    /// start falls in it, so the reduction keeps every peak.
    public func columns(_ columns: Int, xMin: Double, xMax: Double) -> [Bucket] {
        guard columns > 0, !buckets.isEmpty else { return [] }
        let width = Swift.max(xMax - xMin, 1e-300)
        var out: [Bucket] = []
        var lastColumn = -1
        for b in buckets {
            let c = Swift.min(columns - 1, Swift.max(0, Int((b.x0 - xMin) / width * Double(columns))))
            if c == lastColumn { out[out.count - 1].merge(b) } else { out.append(b); lastColumn = c }
        }
        return out
    }
}

/// Everything the report's figures draw from a log, gathered in one pass
/// over the records in constant memory (series as `Envelope`s).
public final class ReportData {
    public let header: LogHeader
    public let capacity: Int
    public private(set) var records = 0
    public private(set) var firstIteration: Double = 0
    public private(set) var lastIteration: Double = 0
    /// L_0: the evaluation loss before the first step of the log.
    public private(set) var initialLoss: Double?
    public private(set) var finalLoss: Double?
    /// Σ_t lca_total (added in record order).
    public private(set) var lcaSum = 0.0
    public private(set) var residualSum = 0.0
    public private(set) var maxAbsResidual = 0.0
    public private(set) var residualsAboveThreshold = 0
    /// Evaluation loss after each step; L_0 + Σ LCA up to it; residual.
    public var evalLoss: Envelope, rebuiltLoss: Envelope, residual: Envelope
    /// Per tensor: cumulative LCA (training, validation), per-iteration LCA.
    public var cumulative: [Envelope], validationCumulative: [Envelope], perIteration: [Envelope]
    public private(set) var totals: [Double], validationTotals: [Double]
    public private(set) var validationLossStart: Double?, validationLossEnd: Double?
    /// Per tensor then overall (index T): share helped of all parameters,
    /// of the non-zero ones (helped / (helped + hurt)), share zero.
    public var shareAll: [Envelope], shareNonZero: [Envelope], shareZero: [Envelope]
    /// Per unit (header `units`), per-iteration LCA.
    public var units: [Envelope]
    private var runningCumulative: [Double], runningValidation: [Double]

    /// - Parameter width: the plot width in pixel columns; series keep up to
    ///   2 × width buckets.
    public init(header: LogHeader, width: Int = 800) {
        self.header = header
        let capacity = 2 * max(width, 8)
        self.capacity = capacity
        let t = header.tensors.count
        let make = { (n: Int) -> [Envelope] in Array(repeating: Envelope(capacity: capacity), count: n) }
        evalLoss = Envelope(capacity: capacity)
        rebuiltLoss = evalLoss
        residual = evalLoss
        cumulative = make(t)
        validationCumulative = header.hasValidation ? make(t) : []
        perIteration = make(t)
        shareAll = make(t + 1)
        shareNonZero = make(t + 1)
        shareZero = make(t + 1)
        units = make(header.unitCount)
        totals = Array(repeating: 0, count: t)
        validationTotals = header.hasValidation ? totals : []
        runningCumulative = totals
        runningValidation = validationTotals
    }

    public var threshold: Double { header.config?.lcaThreshold ?? 0 }

    /// Whole-run conservation error: (L_end − L_0) − Σ LCA.
    public var conservationError: Double? {
        guard let l0 = initialLoss, let l1 = finalLoss else { return nil }
        return (l1 - l0) - lcaSum
    }

    public func add(_ r: IterationRecord) {
        let x = Double(r.iteration)
        let v = r.train
        if records == 0 {
            firstIteration = x
            initialLoss = v.lossBefore
            validationLossStart = r.validation?.lossBefore
        }
        records += 1
        lastIteration = x
        finalLoss = v.lossAfter
        lcaSum += v.lcaTotal
        residualSum += v.residual
        maxAbsResidual = max(maxAbsResidual, abs(v.residual))
        if v.residualAboveThreshold { residualsAboveThreshold += 1 }
        evalLoss.add(x, v.lossAfter)
        rebuiltLoss.add(x, (initialLoss ?? 0) + lcaSum)
        residual.add(x, v.residual)
        var helped: UInt64 = 0, hurt: UInt64 = 0, zero: UInt64 = 0
        for i in header.tensors.indices {
            let value = i < v.tensorLCA.count ? v.tensorLCA[i] : 0
            runningCumulative[i] += value
            totals[i] = runningCumulative[i]
            cumulative[i].add(x, runningCumulative[i])
            perIteration[i].add(x, value)
            let h = i < v.tensorHelped.count ? v.tensorHelped[i] : 0
            let u = i < v.tensorHurt.count ? v.tensorHurt[i] : 0
            let z = i < v.tensorZero.count ? v.tensorZero[i] : 0
            helped += h; hurt += u; zero += z
            Self.shares(h, u, z, into: &shareAll[i], &shareNonZero[i], &shareZero[i], x)
        }
        let t = header.tensors.count
        Self.shares(helped, hurt, zero, into: &shareAll[t], &shareNonZero[t], &shareZero[t], x)
        if let w = r.validation, !validationCumulative.isEmpty {
            validationLossEnd = w.lossAfter
            for i in header.tensors.indices where i < w.tensorLCA.count {
                runningValidation[i] += w.tensorLCA[i]
                validationTotals[i] = runningValidation[i]
                validationCumulative[i].add(x, runningValidation[i])
            }
        }
        for u in units.indices where u < v.unitLCA.count { units[u].add(x, v.unitLCA[u]) }
    }

    private static func shares(_ h: UInt64, _ u: UInt64, _ z: UInt64, into all: inout Envelope,
                               _ nonZero: inout Envelope, _ zero: inout Envelope, _ x: Double) {
        let n = Double(h + u + z)
        guard n > 0 else { return }
        all.add(x, Double(h) / n)
        nonZero.add(x, h + u > 0 ? Double(h) / Double(h + u) : 0)
        zero.add(x, Double(z) / n)
    }

    /// Reads a whole log (streamed once) into report data.
    public static func read(path: String, width: Int = 800) throws -> ReportData {
        let stream = try LogStream(path: path)
        let data = ReportData(header: stream.header, width: width)
        while let r = try stream.next() { data.add(r) }
        return data
    }
}

/// The per-parameter totals of a run folder (`lca-total.safetensors`,
/// `lca-helped.safetensors`): the histogram of iterations helped and the
/// most helping and most hurting parameters.
public struct RunTotals: Sendable {
    public struct Parameter: Sendable, Hashable, Codable {
        public var tensor: String
        public var index: [Int]
        public var total: Double
    }
    /// Iterations included (the files' `lca.iteration`).
    public var iterations: Int
    /// histogram[k] = parameters that helped in bin k; bins of `binWidth`
    /// iterations starting at 0.
    public var histogram: [Int]
    public var binWidth: Int
    public var parameters: Int
    public var mostHelping: [Parameter]
    public var mostHurting: [Parameter]

    /// Reads the two files of `folder`; nil when they are absent.
    public static func read(folder: String, tensors: [TensorInfo], top: Int = 10, bins: Int = 50) throws -> RunTotals? {
        let totalPath = (folder as NSString).appendingPathComponent("lca-total.safetensors")
        let helpedPath = (folder as NSString).appendingPathComponent("lca-helped.safetensors")
        guard FileManager.default.fileExists(atPath: totalPath), FileManager.default.fileExists(atPath: helpedPath) else { return nil }
        let totals = try SafeTensorsFile(path: totalPath)
        let helped = try SafeTensorsFile(path: helpedPath)
        let iterations = Int(totals.metadata["lca.iteration"] ?? helped.metadata["lca.iteration"] ?? "") ?? 0
        let binWidth = max(1, Int((Double(iterations + 1) / Double(bins)).rounded(.up)))
        var histogram = Array(repeating: 0, count: iterations / binWidth + 1)
        var helping: [Parameter] = [], hurting: [Parameter] = []
        var count = 0
        func keep(_ list: inout [Parameter], _ p: Parameter, _ better: (Double, Double) -> Bool) {
            if list.count < top || better(p.total, list[list.count - 1].total) {
                let at = list.firstIndex { better(p.total, $0.total) } ?? list.count
                list.insert(p, at: at)
                if list.count > top { list.removeLast() }
            }
        }
        for tensor in tensors {
            let t: [Double] = try totals.doubles(tensor.name, count: tensor.count)
            let h: [UInt32] = try helped.uint32s(tensor.name, count: tensor.count)
            for i in 0..<tensor.count {
                count += 1
                let k = min(histogram.count - 1, Int(h[i]) / binWidth)
                histogram[k] += 1
                var index: [Int] = [], rest = i
                for d in tensor.shape.reversed() { index.insert(d > 0 ? rest % d : 0, at: 0); rest = d > 0 ? rest / d : 0 }
                let p = Parameter(tensor: tensor.name, index: index, total: t[i])
                if t[i] < 0 { keep(&helping, p, <) }
                if t[i] > 0 { keep(&hurting, p, >) }
            }
        }
        return RunTotals(iterations: iterations, histogram: histogram, binWidth: binWidth, parameters: count,
                         mostHelping: helping, mostHurting: hurting)
    }
}

/// A minimal safetensors reader (whole file) for the totals.
struct SafeTensorsFile {
    let path: String
    let bytes: Data
    let dataStart: Int
    let entries: [String: (dtype: String, begin: Int, end: Int)]
    let metadata: [String: String]

    init(path: String) throws {
        self.path = path
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LCAError(code: .io, message: "\(path): cannot read")
        }
        bytes = data
        guard data.count >= 8 else { throw LCAError(code: .format, message: "\(path): not a safetensors file (shorter than 8 bytes)") }
        var n = 0
        for k in 0..<8 { n |= Int(data[data.startIndex + k]) << (8 * k) }
        guard n > 0, n <= data.count - 8,
              let json = try? JSONSerialization.jsonObject(with: data.subdata(in: (data.startIndex + 8)..<(data.startIndex + 8 + n))) as? [String: Any] else {
            throw LCAError(code: .format, message: "\(path): not a safetensors file (bad header)")
        }
        dataStart = 8 + n
        var entries: [String: (String, Int, Int)] = [:]
        var metadata: [String: String] = [:]
        for (key, value) in json {
            if key == "__metadata__" { metadata = value as? [String: String] ?? [:]; continue }
            guard let d = value as? [String: Any], let dtype = d["dtype"] as? String,
                  let offsets = d["data_offsets"] as? [Int], offsets.count == 2 else { continue }
            entries[key] = (dtype, offsets[0], offsets[1])
        }
        self.entries = entries
        self.metadata = metadata
    }

    private func raw(_ name: String, dtype: String, width: Int, count: Int) throws -> Data {
        guard let e = entries[name], e.dtype == dtype, e.end - e.begin == width * count,
              dataStart + e.end <= bytes.count else {
            throw LCAError(code: .format, message: "\(path): has no \(dtype) tensor \"\(name)\" of \(count) elements")
        }
        return bytes.subdata(in: (bytes.startIndex + dataStart + e.begin)..<(bytes.startIndex + dataStart + e.end))
    }

    func doubles(_ name: String, count: Int) throws -> [Double] {
        let d = try raw(name, dtype: "F64", width: 8, count: count)
        return d.withUnsafeBytes { b in (0..<count).map { Double(bitPattern: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self))) } }
    }

    func uint32s(_ name: String, count: Int) throws -> [UInt32] {
        let d = try raw(name, dtype: "U32", width: 4, count: count)
        return d.withUnsafeBytes { b in (0..<count).map { UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)) } }
    }
}
