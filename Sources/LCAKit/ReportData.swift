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

    /// Per tensor: whether any record counted a parameter of it as helped or
    /// hurt (false: its LCA was zero, or within the v2 floor, throughout:
    /// "no effect").
    public private(set) var hasEffect: [Bool]
    /// The weight tensors (rank ≥ 2) of figure 8, and their whole
    /// per-iteration LCA series (T doubles each: the one part of the report
    /// that grows with the run, 8 bytes × iterations × weight tensors, e.g.
    /// 17.6 MB for 100,000 iterations of ResNet-20's 22 weight tensors).
    public let syncTensors: [Int]
    public private(set) var syncSeries: [[Double]]

    // Log version 2 (nil / empty for a v1 log).
    /// Records that carried the v2 fields.
    public private(set) var version2Records = 0
    /// Smallest and largest per-record floor seen.
    public private(set) var floorRange: (min: Double, max: Double)?
    /// Per tensor: Σ over records of the helping (negative) and the
    /// hurting (positive) part of its LCA.
    public private(set) var helpingTotals: [Double], hurtingTotals: [Double]
    /// Per tensor then overall: share of parameters that did not move.
    public var shareUnmoved: [Envelope]
    public private(set) var sawUnmoved = false
    /// The run's |LCA| histogram by sign, summed over records.
    public private(set) var histogram: LCAHistogram

    // Loss groups (issue 15; empty without groups).
    /// The group names (the header's).
    public let groupNames: [String]
    /// The model's layers (GroupFields.layers).
    public let groupLayers: [(name: String, tensors: [Int])]
    /// Whether the group heat map has a row block per layer (true) or per
    /// tensor (false, the default).
    public let groupHeatByLayer: Bool
    /// Per heat-map part (tensor or layer) then group: the group's
    /// per-iteration LCA of that part.
    public var groupHeat: [[Envelope]]
    /// Per layer then group: the group's cumulative LCA of that layer.
    public var groupCumulative: [[Envelope]]
    /// Per layer then group: Σ over records of the group's LCA.
    public private(set) var groupLayerTotals: [[Double]]
    /// Records that carried group fields.
    public private(set) var groupRecords = 0

    /// - Parameter width: the plot width in pixel columns; series keep up to
    ///   2 × width buckets.
    /// - Parameter groupLayers: the group heat map per layer instead of per
    ///   tensor.
    public init(header: LogHeader, width: Int = 800, groupLayers: Bool = false) {
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
        hasEffect = Array(repeating: false, count: t)
        syncTensors = header.tensors.indices.filter { header.tensors[$0].shape.count >= 2 }
        syncSeries = Array(repeating: [], count: syncTensors.count)
        helpingTotals = totals
        hurtingTotals = totals
        shareUnmoved = make(t + 1)
        histogram = LCAHistogram(tensors: t)
        groupNames = GroupFields.names(header)
        let layers = groupNames.isEmpty ? [] : GroupFields.layers(header.tensors)
        self.groupLayers = layers
        groupHeatByLayer = groupLayers
        // the heat map draws at most 300 columns: 600 buckets keep them all
        let g = groupNames.count
        let heatParts = groupNames.isEmpty ? 0 : (groupLayers ? layers.count : t)
        groupHeat = Array(repeating: Array(repeating: Envelope(capacity: min(capacity, 600)), count: g), count: heatParts)
        groupCumulative = Array(repeating: make(g), count: layers.count)
        groupLayerTotals = Array(repeating: Array(repeating: 0, count: g), count: layers.count)
    }

    /// Whether the log carried the v2 fields (every record did).
    public var isVersion2: Bool { records > 0 && version2Records == records }

    public var threshold: Double { header.config?.lcaThreshold ?? 0 }

    /// Whole-run conservation error: (L_end − L_0) − Σ LCA.
    public var conservationError: Double? {
        guard let l0 = initialLoss, let l1 = finalLoss else { return nil }
        return (l1 - l0) - lcaSum
    }

    /// The log-version-2 fields of one record's training view.
    public struct Version2Fields: Sendable {
        public var floor: Double
        public var helping: [Double], hurting: [Double]
        public var unmoved: [UInt64]
        public var histogram: [UInt32]

        public init(floor: Double, helping: [Double], hurting: [Double], unmoved: [UInt64], histogram: [UInt32]) {
            self.floor = floor; self.helping = helping; self.hurting = hurting; self.unmoved = unmoved; self.histogram = histogram
        }

        /// nil for a v1 record.
        public init?(_ v: ViewRecord) {
            guard let floor = v.lcaFloor else { return nil }
            self.init(floor: floor, helping: v.tensorHelping, hurting: v.tensorHurting, unmoved: v.tensorUnmoved, histogram: v.tensorHistogram)
        }
    }

    public func add(_ r: IterationRecord) { add(r, version2: Version2Fields(r.train)) }

    /// Adds a record with its v2 fields given apart (tests feed synthetic
    /// ones this way).
    public func add(_ r: IterationRecord, version2: Version2Fields?) {
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
            helped &+= h; hurt &+= u; zero &+= z
            if h + u > 0 { hasEffect[i] = true }
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
        for (k, i) in syncTensors.enumerated() { syncSeries[k].append(i < v.tensorLCA.count ? v.tensorLCA[i] : 0) }
        if let version2 { addVersion2(x: x, version2) }
        addGroups(x: x, v)
    }

    private func addGroups(x: Double, _ v: ViewRecord) {
        let g = groupNames.count, t = header.tensors.count
        guard g > 0, v.groupCount == g, v.groupLCA.count == g * t, v.tensorLCA.count == t else { return }
        groupRecords += 1
        for (l, layer) in groupLayers.enumerated() {
            for k in 0..<g {
                let value = layer.tensors.reduce(0) { $0 + v.groupLCA[k * t + $1] }
                groupLayerTotals[l][k] += value
                groupCumulative[l][k].add(x, groupLayerTotals[l][k])
                if groupHeatByLayer { groupHeat[l][k].add(x, value) }
            }
        }
        if !groupHeatByLayer {
            for i in 0..<t {
                for k in 0..<g { groupHeat[i][k].add(x, v.groupLCA[k * t + i]) }
            }
        }
    }

    private func addVersion2(x: Double, _ v2: Version2Fields) {
        let (floor, helping, hurting, unmoved, h) = (v2.floor, v2.helping, v2.hurting, v2.unmoved, v2.histogram)
        let t = header.tensors.count
        version2Records += 1
        floorRange = floorRange.map { (min($0.min, floor), max($0.max, floor)) } ?? (floor, floor)
        if helping.count == t && hurting.count == t {
            for i in 0..<t { helpingTotals[i] += helping[i]; hurtingTotals[i] += hurting[i] }
        }
        if unmoved.count == t {
            sawUnmoved = true
            var all: UInt64 = 0
            for i in 0..<t {
                all += unmoved[i]
                shareUnmoved[i].add(x, Double(unmoved[i]) / Double(max(1, header.tensors[i].count)))
            }
            shareUnmoved[t].add(x, Double(all) / Double(max(1, header.model.parameters)))
        }
        histogram.add(h)
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
    public static func read(path: String, width: Int = 800, groupLayers: Bool = false) throws -> ReportData {
        let stream = try LogStream(path: path)
        let data = ReportData(header: stream.header, width: width, groupLayers: groupLayers)
        let tensors = stream.header.tensors
        let helpedField = stream.header.fields.first { $0.name == "helped" }?.offset ?? 0
        var index = 0
        while let r = try stream.next() {
            // Counts the figures divide by: a damaged record is refused here,
            // naming its byte offset (lca verify checks every field).
            for (i, t) in tensors.enumerated() where i < r.train.tensorHelped.count && i < r.train.tensorHurt.count && i < r.train.tensorZero.count {
                let (a, o1) = r.train.tensorHelped[i].addingReportingOverflow(r.train.tensorHurt[i])
                let (b, o2) = a.addingReportingOverflow(r.train.tensorZero[i])
                if o1 || o2 || b > UInt64(t.count) {
                    throw LCAError.log(.badRecord, path: path, offset: stream.headerBytes.count + index * stream.header.recordSize + helpedField + 8 * i,
                                       "record \(index) (iteration \(r.iteration)): tensor \(t.name): helped \(r.train.tensorHelped[i]) + hurt \(r.train.tensorHurt[i]) + zero \(r.train.tensorZero[i]) exceeds its \(t.count) parameters (lca verify checks every field)")
                }
            }
            data.add(r)
            index += 1
        }
        return data
    }
}

/// The distribution of per-parameter |LCA| by sign (figure 6), summed over
/// records from each record's fixed log-spaced histogram (log version 2):
/// per tensor 2 × 30 counts, helping then hurting; bin 0 is (floor, 1e-14),
/// bins 1 … 28 are [10^(−14 + (k−1)/2), 10^(−14 + k/2)) (two per decade),
/// bin 29 is [1, ∞).
public struct LCAHistogram: Sendable, Hashable {
    public static let bins = 30
    /// The 29 finite edges 1e-14, 10^-13.5, …, 1.
    public static let edges: [Double] = (0...28).map { pow(10, -14 + Double($0) / 2) }

    public let tensors: Int
    /// tensors × 2 × bins counts, tensor-major, helping then hurting.
    public private(set) var counts: [UInt64]
    /// Records added (those whose histogram had the right length).
    public private(set) var records = 0

    public init(tensors: Int) {
        self.tensors = tensors
        counts = Array(repeating: 0, count: tensors * 2 * Self.bins)
    }

    /// Adds one record's histogram (ignored unless it has T × 2 × 30 counts).
    public mutating func add(_ h: [UInt32]) {
        guard h.count == counts.count, !h.isEmpty else { return }
        for k in h.indices { counts[k] += UInt64(h[k]) }
        records += 1
    }

    public func helping(_ tensor: Int) -> [UInt64] { Array(counts[(tensor * 2 * Self.bins)..<(tensor * 2 * Self.bins + Self.bins)]) }
    public func hurting(_ tensor: Int) -> [UInt64] { Array(counts[(tensor * 2 * Self.bins + Self.bins)..<((tensor + 1) * 2 * Self.bins)]) }

    /// Summed over the given tensors.
    public func helping(of tensors: [Int]) -> [UInt64] {
        tensors.reduce(into: [UInt64](repeating: 0, count: Self.bins)) { s, i in for (k, c) in helping(i).enumerated() { s[k] += c } }
    }

    public func hurting(of tensors: [Int]) -> [UInt64] {
        tensors.reduce(into: [UInt64](repeating: 0, count: Self.bins)) { s, i in for (k, c) in hurting(i).enumerated() { s[k] += c } }
    }

    /// A bin's range as text.
    public static func binLabel(_ k: Int) -> String {
        if k == 0 { return "(floor, 1e-14)" }
        if k == bins - 1 { return "[1, ∞)" }
        return String(format: "[%.3g, %.3g)", edges[k - 1], edges[k])
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
        guard (0...Int(UInt32.max)).contains(iterations) else {
            throw LCAError(code: .format, message: "\(totalPath): metadata lca.iteration is \(iterations), expected 0 to \(UInt32.max)")
        }
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
