import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The JSON header of an LCA log (docs/log-format.md), decoded: the parts
/// readers and the `lca` commands use. Unknown keys are ignored.
public struct LogHeader: Sendable, Decodable, Hashable {
    /// "lca-log".
    public var format: String
    /// Format version.
    public var version: Int
    /// The model the run trained.
    public var model: ModelDescription
    /// The model's tensors, in record order.
    public var tensors: [TensorInfo]
    /// The unit groups of the per-unit fields (`unit_lca`), when the run had
    /// per-unit views on; nil otherwise.
    public var units: [UnitGroup]?
    /// Where the examples came from.
    public var data: DataDescription?
    /// The run's settings (the parts readers need).
    public var config: ConfigDescription?
    /// Bytes per record.
    public var recordSize: Int
    /// Record layout.
    public var fields: [Field]
    /// The zero floor of `helped`/`hurt`/`zero` (version 2); nil in a
    /// version-1 log.
    public var zeroFloor: ZeroFloor?
    /// The |LCA| histogram's bins (version 2); nil in a version-1 log or
    /// when the run left the histogram out (`"lca_histogram": null`).
    public var lcaHistogram: HistogramDescription?
    /// The loss groups of the `group_*` fields (issue 15, `--groups`); nil
    /// when the run had none.
    public var groups: GroupsDescription?

    /// The header's `zero_floor`: f_t = ratio · max_i |LCA_{t,i}|.
    public struct ZeroFloor: Sendable, Decodable, Hashable {
        /// 2⁻³⁰.
        public var ratio: Double
        /// What the ratio multiplies.
        public var relativeTo: String?

        enum CodingKeys: String, CodingKey {
            case ratio
            case relativeTo = "relative_to"
        }
    }

    /// The header's `lca_histogram`: B bins, B − 1 finite edges.
    public struct HistogramDescription: Sendable, Decodable, Hashable {
        /// Bins per tensor and sign (30).
        public var bins: Int
        /// The finite edges, ascending (1e-14 … 1).
        public var edges: [Double]
    }

    /// The header's `groups` (issue 15).
    public struct GroupsDescription: Sendable, Decodable, Hashable {
        /// "class" or "file:PATH".
        public var source: String?
        /// One name per group; G = names.count.
        public var names: [String]
        /// Evaluation examples per group.
        public var examples: [Int]?
        /// Validation examples per group.
        public var validationExamples: [Int]?

        enum CodingKeys: String, CodingKey {
            case source, names, examples
            case validationExamples = "validation_examples"
        }
    }

    /// The model part of the header.
    public struct ModelDescription: Sendable, Decodable, Hashable {
        /// Canonical spec.
        public var spec: String
        /// "softmax_cross_entropy" or "mean_squared_error".
        public var loss: String
        /// Number of parameters.
        public var parameters: Int
    }

    /// The data part of the header.
    public struct DataDescription: Sendable, Decodable, Hashable {
        /// "digits", a path, …
        public var source: String
        /// Examples in the training split.
        public var training: Int
        /// Examples held out for validation.
        public var validation: Int
        /// Examples whose loss LCA allocates.
        public var evaluation: Int
    }

    /// The configuration part of the header.
    public struct ConfigDescription: Sendable, Decodable, Hashable {
        /// Iterations the run was meant to take.
        public var iterations: Int
        /// Whether LCA was computed.
        public var lca: Bool
        /// LCA subset size (0 = whole training split).
        public var lcaSubset: Int
        /// Whether the validation view was on.
        public var lcaValidationView: Bool
        /// Residual threshold in nats.
        public var lcaThreshold: Double
        /// Per-unit views (absent in logs written before they existed).
        public var lcaUnits: Bool?

        enum CodingKeys: String, CodingKey {
            case iterations, lca
            case lcaSubset = "lca_subset"
            case lcaValidationView = "lca_validation_view"
            case lcaThreshold = "lca_threshold"
            case lcaUnits = "lca_units"
        }
    }

    /// One field of the record layout.
    public struct Field: Sendable, Decodable, Hashable {
        /// Field name ("lca_total", "val_lca").
        public var name: String
        /// numpy type string ("<f8", "<u8", "<u4").
        public var type: String
        /// Byte offset inside a record.
        public var offset: Int
        /// Elements (1, the tensor count, or the unit count).
        public var count: Int

        /// Bytes of one element.
        public var width: Int { Int(type.dropFirst(2)) ?? 8 }
    }

    /// The unit count of the per-unit fields (0 without them).
    public var unitCount: Int { units?.reduce(0) { $0 + $1.units } ?? 0 }
    /// Whether records carry the validation view.
    public var hasValidation: Bool { fields.contains { $0.name == "val_lca_total" } }

    enum CodingKeys: String, CodingKey {
        case format, version, model, tensors, units, data, config, fields, groups
        case recordSize = "record_size"
        case zeroFloor = "zero_floor"
        case lcaHistogram = "lca_histogram"
    }
}

/// Reads an LCA log record by record, from a file or from a pipe (standard
/// input), in constant memory: one read buffer, whatever the log's length.
///
/// A partial last record (a run still writing, or killed) ends the stream
/// without error; `partialBytes` says how much of it there was. With
/// `follow`, the stream waits at the end of a regular file for more records,
/// until the run's configured number of iterations is read or `shouldStop`
/// returns true.
///
/// ```swift
/// let stream = try LogStream(path: "-")          // standard input
/// while let record = try stream.next() { print(record.iteration, record.train.lcaTotal) }
/// ```
public final class LogStream {
    /// The path given ("-" = standard input).
    public let path: String
    /// The decoded header.
    public let header: LogHeader
    /// The header's JSON text.
    public let headerText: String
    /// The preamble and header as they are in the file (24 + H bytes).
    public let headerBytes: [UInt8]
    /// The format version of the preamble: 1 or 2.
    public let formatVersion: Int
    /// The versions a reader accepts.
    public static let supportedVersions: ClosedRange<UInt32> = 1...2
    /// Records returned so far.
    public private(set) var recordsRead = 0
    /// Bytes of an incomplete record left at the end of the stream (0 when
    /// the stream ended on a record boundary or has not ended yet).
    public private(set) var partialBytes = 0
    /// Keep waiting for records at the end of a regular file.
    public var follow: Bool
    /// Polled while following; true ends the stream.
    public var shouldStop: () -> Bool = { false }
    /// Time between polls while following, in microseconds.
    public var pollMicroseconds: UInt32 = 100_000

    static let magic: [UInt8] = [0x89, 0x4C, 0x43, 0x41, 0x0D, 0x0A, 0x1A, 0x0A]
    static let preambleSize = 24
    /// The largest record a reader accepts (256 MiB), so that a damaged
    /// preamble cannot make it allocate gigabytes.
    public static let maximumRecordSize = 1 << 28

    private let fd: Int32
    private let ownsDescriptor: Bool
    private let isRegularFile: Bool
    private var buffer: [UInt8]
    private var start = 0, end = 0
    private var atEnd = false
    private var position = 0   // bytes consumed from the stream
    private let plan: RecordPlan

    /// Opens a log file, or standard input for "-".
    public convenience init(path: String, follow: Bool = false) throws {
        let descriptor: Int32
        if path == "-" {
            descriptor = STDIN_FILENO
        } else {
            descriptor = open(path, O_RDONLY | O_CLOEXEC)
            if descriptor < 0 {
                let saved = errno
                throw LCAError.log(.unreadable, path: path, offset: 0,
                                   "cannot open: \(String(cString: strerror(saved)))", systemError: saved)
            }
        }
        do {
            try self.init(descriptor: descriptor, name: path, owns: path != "-", follow: follow)
        } catch {
            if path != "-" { close(descriptor) }
            throw error
        }
    }

    /// Reads from an open file descriptor (not closed by the stream).
    public convenience init(fileDescriptor: Int32, name: String, follow: Bool = false) throws {
        try self.init(descriptor: fileDescriptor, name: name, owns: false, follow: follow)
    }

    private init(descriptor: Int32, name: String, owns: Bool, follow: Bool) throws {
        fd = descriptor
        ownsDescriptor = owns
        path = name
        self.follow = follow
        var info = stat()
        isRegularFile = fstat(descriptor, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
        buffer = [UInt8](repeating: 0, count: 1 << 16)

        func fail(_ kind: LCAError.Kind, _ offset: Int, _ message: String) -> LCAError {
            LCAError.log(kind, path: name, offset: offset, message)
        }
        var preamble = [UInt8](repeating: 0, count: Self.preambleSize)
        let got = try Self.readFully(descriptor, into: &preamble, name: name)
        guard got >= 8, Array(preamble[0..<8]) == Self.magic else {
            if got < 8 && Array(preamble[0..<got]) == Array(Self.magic[0..<got]) {
                throw fail(.truncatedHeader, got, "the file ends after \(got) bytes, inside the 24-byte preamble")
            }
            throw fail(.badMagic, 0, "expected the LCA log magic 89 4C 43 41 0D 0A 1A 0A, found "
                       + preamble[0..<min(got, 8)].map { String(format: "%02X", $0) }.joined(separator: " "))
        }
        guard got == Self.preambleSize else {
            throw fail(.truncatedHeader, got, "the file ends after \(got) bytes, inside the 24-byte preamble")
        }
        let version = Self.u32(preamble, 8), jsonLength = Int(Self.u32(preamble, 12))
        let recordSize = Int(Self.u32(preamble, 16))
        guard Self.supportedVersions.contains(version) else {
            throw fail(.unsupportedVersion, 8, "expected log version 1 or 2, found \(version)")
        }
        guard jsonLength > 0, jsonLength < 1 << 26 else {
            throw fail(.badHeader, 12, "header length \(jsonLength) is not between 1 byte and 64 MB")
        }
        var json = [UInt8](repeating: 0, count: jsonLength)
        let gotJSON = try Self.readFully(descriptor, into: &json, name: name)
        guard gotJSON == jsonLength else {
            throw fail(.truncatedHeader, Self.preambleSize + gotJSON,
                       "the file ends inside the \(jsonLength)-byte JSON header")
        }
        let decoded: LogHeader
        do {
            decoded = try JSONDecoder().decode(LogHeader.self, from: Data(json))
        } catch {
            throw fail(.badHeader, Self.preambleSize, "the JSON header does not parse as an LCA log header: \(Self.describe(error))")
        }
        guard decoded.format == "lca-log" else {
            throw fail(.badHeader, Self.preambleSize, "header \"format\" is \"\(decoded.format)\", expected \"lca-log\"")
        }
        guard decoded.version == Int(version) else {
            throw fail(.badHeader, Self.preambleSize, "header \"version\" is \(decoded.version), the preamble says \(version)")
        }
        guard recordSize <= Self.maximumRecordSize else {
            throw fail(.recordSizeMismatch, 16, "record size \(recordSize) is more than the \(Self.maximumRecordSize) bytes a reader accepts "
                       + "(a record of 10 million per-unit values is 80 MB)")
        }
        guard decoded.recordSize == recordSize, recordSize > 0 else {
            throw fail(.recordSizeMismatch, 16, "record size \(recordSize) in the preamble differs from the header's record_size \(decoded.recordSize)")
        }
        // every size and count from the header is checked before it is used
        // to allocate or index: no overflow, nothing outside the record
        if let problem = Self.layoutProblem(decoded) {
            throw fail(.badHeader, Self.preambleSize, problem)
        }
        let layoutEnd = decoded.fields.map { $0.offset + $0.count * $0.width }.max() ?? 0
        let layoutBytes = decoded.fields.reduce(0) { $0 + $1.count * $1.width }
        guard layoutEnd == recordSize, layoutBytes == recordSize else {
            throw fail(.recordSizeMismatch, Self.preambleSize, "the header's fields cover \(layoutBytes) bytes ending at \(layoutEnd), but records are \(recordSize) bytes")
        }
        do {
            plan = try RecordPlan(header: decoded)
        } catch let message as PlanError {
            throw fail(.badHeader, Self.preambleSize, message.text)
        }
        header = decoded
        headerText = String(decoding: json, as: UTF8.self)
        headerBytes = preamble + json
        formatVersion = Int(version)
        position = Self.preambleSize + jsonLength
        if buffer.count < 2 * recordSize { buffer = [UInt8](repeating: 0, count: 2 * recordSize) }
    }

    deinit {
        if ownsDescriptor { close(fd) }
    }

    /// What is wrong with the header's sizes and counts, or nil: field
    /// offsets and counts non-negative and inside the record (products and
    /// sums checked for overflow), tensor and unit counts non-negative,
    /// unit groups inside the unit count, no more units or tensors than a
    /// record has bytes.
    static func layoutProblem(_ header: LogHeader) -> String? {
        let recordSize = header.recordSize
        for field in header.fields {
            guard ["<f8", "<u8", "<u4", "<f4"].contains(field.type) else {
                return "field \(field.name) has type \(field.type), expected <f8, <u8, <u4 or <f4"
            }
            guard field.offset >= 0, field.count >= 0 else {
                return "field \(field.name) has offset \(field.offset) and count \(field.count), expected both >= 0"
            }
            let (bytes, o1) = field.count.multipliedReportingOverflow(by: field.width)
            let (end, o2) = field.offset.addingReportingOverflow(bytes)
            guard !o1, !o2, end <= recordSize else {
                return "field \(field.name) (offset \(field.offset), \(field.count) × \(field.width) bytes) "
                    + "does not fit in the \(recordSize)-byte record"
            }
        }
        guard header.tensors.count <= recordSize else {
            return "the header lists \(header.tensors.count) tensors, more than a \(recordSize)-byte record can hold"
        }
        var parameters = 0
        for tensor in header.tensors {
            let (sum, overflow) = parameters.addingReportingOverflow(max(tensor.count, 0))
            guard !overflow else { return "the tensors' counts add up to more than \(Int.max)" }
            parameters = sum
            guard tensor.count >= 0, tensor.offset >= 0, tensor.shape.allSatisfy({ $0 >= 0 }) else {
                return "tensor \(tensor.name) has count \(tensor.count), offset \(tensor.offset) and shape \(tensor.shape), expected values >= 0"
            }
        }
        guard header.model.parameters >= 0 else {
            return "model.parameters is \(header.model.parameters), expected >= 0"
        }
        var units = 0
        for group in header.units ?? [] {
            let (sum, overflow) = units.addingReportingOverflow(group.units)
            guard group.units >= 0, !overflow, sum <= recordSize else {
                return "unit group \(group.group) has \(group.units) units; the groups must add up to at most "
                    + "what a \(recordSize)-byte record can hold"
            }
            units = sum
        }
        for group in header.units ?? [] {
            guard group.offset >= 0, group.offset <= units - group.units else {
                return "unit group \(group.group) starts at unit \(group.offset) with \(group.units) units, "
                    + "outside the \(units) units of the header"
            }
        }
        if let histogram = header.lcaHistogram {
            guard histogram.bins >= 2, histogram.bins <= recordSize, histogram.edges.count == histogram.bins - 1 else {
                return "lca_histogram has \(histogram.bins) bins and \(histogram.edges.count) edges, expected 2 or more bins and one edge fewer"
            }
            guard histogram.edges.allSatisfy({ $0.isFinite && $0 > 0 }),
                  zip(histogram.edges, histogram.edges.dropFirst()).allSatisfy({ $0 < $1 }) else {
                return "lca_histogram's edges are not positive, finite and ascending"
            }
        }
        if let floor = header.zeroFloor, !(floor.ratio >= 0 && floor.ratio < 1) {
            return "zero_floor.ratio is \(floor.ratio), expected a number in [0, 1)"
        }
        if let groups = header.groups, groups.names.count > recordSize {
            return "the header lists \(groups.names.count) groups, more than a \(recordSize)-byte record can hold"
        }
        if let config = header.config, config.iterations < 0 {
            return "config.iterations is \(config.iterations), expected >= 0"
        }
        return nil
    }

    /// Byte offset of the next record in the stream.
    public var offset: Int { position }

    /// The next complete record, or nil at the end of the log (a partial
    /// last record is not an error).
    public func next() throws -> IterationRecord? {
        guard try fill(header.recordSize) else { return nil }
        try checkSequence()
        let record = buffer.withUnsafeBytes { plan.decode(UnsafeRawPointer($0.baseAddress.unsafelyUnwrapped) + start) }
        consume(header.recordSize)
        return record
    }

    /// The iteration of the record after the last one returned (nil before
    /// the first).
    private var expectedIteration: UInt64?

    /// Records are numbered 1, 2, 3, …: one that does not follow the
    /// previous record (garbage appended, two logs concatenated, a counter
    /// near 2⁶⁴) is an error naming its byte offset.
    private func checkSequence() throws {
        let iteration = buffer.withUnsafeBytes { plan.iteration(UnsafeRawPointer($0.baseAddress.unsafelyUnwrapped) + start) }
        let expected = expectedIteration ?? 1
        guard iteration == expected else {
            throw LCAError.log(.badRecord, path: path, offset: position,
                               "record \(recordsRead) is numbered \(iteration), expected \(expected)"
                               + (recordsRead > 0 ? " (the iteration after the previous record's)" : "")
                               + ": records after this point are not part of this run")
        }
        expectedIteration = expected == UInt64.max ? nil : expected + 1
        if let problem = buffer.withUnsafeBytes({ plan.problem(UnsafeRawPointer($0.baseAddress.unsafelyUnwrapped) + start) }) {
            throw LCAError.log(.badRecord, path: path, offset: position + problem.offset,
                               "record \(recordsRead): \(problem.message)")
        }
    }

    /// The next complete record's bytes, exactly as in the file, or nil at
    /// the end of the log.
    public func nextRawRecord() throws -> ArraySlice<UInt8>? {
        guard try fill(header.recordSize) else { return nil }
        try checkSequence()
        let bytes = buffer[start..<(start + header.recordSize)]
        consume(header.recordSize)
        return bytes
    }

    /// Decodes a record's bytes (as returned by `nextRawRecord`).
    public func decode(_ raw: ArraySlice<UInt8>) -> IterationRecord {
        precondition(raw.count == header.recordSize, "a record of this log has \(header.recordSize) bytes")
        return raw.withUnsafeBytes { plan.decode($0.baseAddress!) }
    }

    private func consume(_ count: Int) {
        start += count
        position += count
        recordsRead += 1
    }

    /// Makes `count` bytes available at buffer[start...]; false at the end.
    private func fill(_ count: Int) throws -> Bool {
        while end - start < count {
            if start > 0 {
                buffer.withUnsafeMutableBytes { raw in
                    _ = memmove(raw.baseAddress!, raw.baseAddress! + start, end - start)
                }
                end -= start
                start = 0
            }
            let n = buffer.withUnsafeMutableBytes { raw in
                read(fd, raw.baseAddress! + end, raw.count - end)
            }
            if n < 0 {
                if errno == EINTR { continue }
                let saved = errno
                throw LCAError.log(.unreadable, path: path, offset: position + end - start,
                                   "read failed: \(String(cString: strerror(saved)))", systemError: saved)
            }
            if n == 0 {
                // a pipe's end is final; a regular file may still grow
                if follow && isRegularFile && !runComplete && !shouldStop() {
                    usleep(pollMicroseconds)
                    continue
                }
                partialBytes = end - start
                atEnd = true
                return false
            }
            end += n
        }
        partialBytes = 0
        return true
    }

    /// True once the run's configured number of records has been read.
    private var runComplete: Bool {
        guard let iterations = header.config?.iterations, iterations > 0 else { return false }
        return recordsRead >= iterations
    }

    private static func readFully(_ fd: Int32, into bytes: inout [UInt8], name: String) throws -> Int {
        var got = 0
        while got < bytes.count {
            let n = bytes.withUnsafeMutableBytes { raw in read(fd, raw.baseAddress! + got, raw.count - got) }
            if n < 0 {
                if errno == EINTR { continue }
                let saved = errno
                throw LCAError.log(.unreadable, path: name, offset: got,
                                   "read failed: \(String(cString: strerror(saved)))", systemError: saved)
            }
            if n == 0 { break }
            got += n
        }
        return got
    }

    static func u32(_ b: [UInt8], _ at: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[at + $1]) << (8 * UInt32($1)) }
    }

    private static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, let context):
            return "missing key \"\((context.codingPath + [key]).map(\.stringValue).joined(separator: "."))\""
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            return "wrong type at \"\(context.codingPath.map(\.stringValue).joined(separator: "."))\""
        case DecodingError.dataCorrupted(let context):
            return "not valid JSON (\(context.debugDescription))"
        default:
            return "\(error)"
        }
    }
}

private struct PlanError: Error { var text: String }

/// Where each known field sits in a record, computed once from the header.
private struct RecordPlan {
    struct Slot { var offset: Int; var count: Int; var type: String }
    let tensorCount: Int
    let unitCount: Int
    let slots: [String: Slot]
    let hasValidation: Bool
    let bins: Int
    /// Loss groups of the group fields (0 without them).
    let groupCount: Int
    /// Per view prefix: the slots a record's consistency check reads (all
    /// present, or the view has no histogram).
    let checked: [(helped: Slot, hurt: Slot, histogram: Slot)]

    init(header: LogHeader) throws {
        tensorCount = header.tensors.count
        unitCount = header.unitCount
        bins = header.lcaHistogram?.bins ?? ViewRecord.histogramBins
        let groupCount = header.groups?.names.count ?? 0
        var slots: [String: Slot] = [:]
        for field in header.fields {
            guard ["<f8", "<u8", "<u4", "<f4"].contains(field.type) else {
                throw PlanError(text: "field \(field.name) has type \(field.type), expected <f8, <u8, <u4 or <f4")
            }
            slots[field.name] = Slot(offset: field.offset, count: field.count, type: field.type)
        }
        guard slots["iteration"] != nil else { throw PlanError(text: "the fields list has no \"iteration\"") }
        for name in ["lca", "first_order", "helped", "hurt", "zero"] {
            for prefix in ["", "val_"] {
                if let slot = slots[prefix + name], slot.count != tensorCount {
                    throw PlanError(text: "field \(prefix + name) has \(slot.count) elements for \(tensorCount) tensors")
                }
            }
        }
        for name in ["unit_lca", "val_unit_lca"] {
            if let slot = slots[name], slot.count != unitCount {
                throw PlanError(text: "field \(name) has \(slot.count) elements, the header's units add up to \(unitCount)")
            }
        }
        // version 2: what each field must hold follows from the header
        // (tensors, histogram bins, groups); a field a header does not
        // explain is refused
        var expected: [String: (count: Int, why: String)] = [
            "lca_floor": (1, "a scalar"),
            "lca_helping": (tensorCount, "one per tensor"), "lca_hurting": (tensorCount, "one per tensor"),
            "unmoved": (tensorCount, "one per tensor"),
        ]
        let tensorBins = tensorCount.multipliedReportingOverflow(by: 2 * bins)
        if slots["lca_histogram"] != nil || slots["val_lca_histogram"] != nil {
            guard header.lcaHistogram != nil else {
                throw PlanError(text: "the record has an lca_histogram field but the header's lca_histogram is absent or null")
            }
            guard !tensorBins.overflow else { throw PlanError(text: "lca_histogram: \(tensorCount) tensors × 2 × \(bins) bins overflow") }
            expected["lca_histogram"] = (tensorBins.partialValue, "tensors × 2 × \(bins) bins")
        }
        let hasGroupFields = slots.keys.contains(where: GroupFields.isGroupField)
        if hasGroupFields {
            guard groupCount > 0 else { throw PlanError(text: "the record has group fields but the header lists no groups") }
            let groupTensors = groupCount.multipliedReportingOverflow(by: tensorCount)
            guard !groupTensors.overflow else { throw PlanError(text: "group_lca: \(groupCount) groups × \(tensorCount) tensors overflow") }
            expected[GroupFields.groupLCA] = (groupTensors.partialValue, "groups × tensors")
            for name in GroupFields.perGroup {
                expected[name] = (groupCount, "one per group")
            }
            expected[GroupFields.reserved] = (1, "a u32 after an odd number of group flags")
            // a view's group fields come whole or not at all
            for prefix in ["", "val_"] {
                let names = GroupFields.names(prefix: prefix).dropLast()
                let present = names.filter { slots[$0] != nil }
                if !present.isEmpty && present.count != names.count {
                    throw PlanError(text: "the record has \(present.joined(separator: ", ")) but not \(names.filter { slots[$0] == nil }.joined(separator: ", "))")
                }
            }
        }
        self.groupCount = hasGroupFields ? groupCount : 0
        // in the header's field order, so that the message names the same
        // field every time (a dictionary's order changes from run to run)
        for field in header.fields {
            let name = field.name.hasPrefix("val_") ? String(field.name.dropFirst(4)) : field.name
            if let rule = expected[name], let slot = slots[field.name], slot.count != rule.count {
                throw PlanError(text: "field \(field.name) has \(slot.count) elements, expected \(rule.count) (\(rule.why))")
            }
        }
        self.slots = slots
        hasValidation = slots["val_lca_total"] != nil
        var checked: [(helped: Slot, hurt: Slot, histogram: Slot)] = []
        for prefix in ["", "val_"] {
            if let helped = slots[prefix + "helped"], let hurt = slots[prefix + "hurt"],
               let histogram = slots[prefix + "lca_histogram"] {
                checked.append((helped, hurt, histogram))
            }
        }
        self.checked = checked
    }

    /// A record's first inconsistency (its byte offset inside the record and
    /// what is wrong), or nil: each tensor's helping bins add up to its
    /// `helped` count and its hurting bins to `hurt`.
    func problem(_ base: UnsafeRawPointer) -> (offset: Int, message: String)? {
        func integer(_ slot: Slot, _ index: Int) -> UInt64 {
            switch slot.type {
            case "<u4": return UInt64(UInt32(littleEndian: base.loadUnaligned(fromByteOffset: slot.offset + 4 * index, as: UInt32.self)))
            case "<u8": return UInt64(littleEndian: base.loadUnaligned(fromByteOffset: slot.offset + 8 * index, as: UInt64.self))
            case "<f8":
                let value = Double(bitPattern: UInt64(littleEndian: base.loadUnaligned(fromByteOffset: slot.offset + 8 * index, as: UInt64.self)))
                return value >= 0 && value < 1.8e19 ? UInt64(value) : UInt64.max
            default:
                let value = Double(Float(bitPattern: UInt32(littleEndian: base.loadUnaligned(fromByteOffset: slot.offset + 4 * index, as: UInt32.self))))
                return value >= 0 && value < 1.8e19 ? UInt64(value) : UInt64.max
            }
        }
        for (helped, hurt, histogram) in checked {
            let width = histogram.type == "<u4" || histogram.type == "<f4" ? 4 : 8
            for t in 0..<tensorCount {
                for (sign, counts) in [(0, helped), (1, hurt)] {
                    let first = (2 * t + sign) * bins
                    var sum: UInt64 = 0
                    for b in 0..<bins { sum &+= integer(histogram, first + b) }
                    let expected = integer(counts, t)
                    if sum != expected {
                        let name = histogram.offset == slots["lca_histogram"]?.offset ? "lca_histogram" : "val_lca_histogram"
                        return (histogram.offset + width * first,
                                "\(name) of tensor \(t): the \(sign == 0 ? "helping" : "hurting") bins add up to \(sum), "
                                + "expected the record's \(sign == 0 ? "helped" : "hurt") count \(expected)")
                    }
                }
            }
        }
        return nil
    }

    /// The record's iteration counter.
    func iteration(_ base: UnsafeRawPointer) -> UInt64 {
        guard let slot = slots["iteration"] else { return 0 }
        if slot.type == "<u4" {
            return UInt64(UInt32(littleEndian: base.loadUnaligned(fromByteOffset: slot.offset, as: UInt32.self)))
        }
        if slot.type == "<u8" {
            return UInt64(littleEndian: base.loadUnaligned(fromByteOffset: slot.offset, as: UInt64.self))
        }
        let value = slot.type == "<f8"
            ? Double(bitPattern: UInt64(littleEndian: base.loadUnaligned(fromByteOffset: slot.offset, as: UInt64.self)))
            : Double(Float(bitPattern: UInt32(littleEndian: base.loadUnaligned(fromByteOffset: slot.offset, as: UInt32.self))))
        return value >= 0 && value < 1.8e19 ? UInt64(value) : 0
    }

    func decode(_ base: UnsafeRawPointer) -> IterationRecord {
        func load(_ slot: Slot, _ index: Int) -> (double: Double, integer: UInt64) {
            switch slot.type {
            case "<f8":
                let bits = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: slot.offset + 8 * index, as: UInt64.self))
                let value = Double(bitPattern: bits)
                return (value, value >= 0 && value < 1.8e19 ? UInt64(value) : 0)
            case "<f4":
                let bits = UInt32(littleEndian: base.loadUnaligned(fromByteOffset: slot.offset + 4 * index, as: UInt32.self))
                let value = Double(Float(bitPattern: bits))
                return (value, value >= 0 && value < 1.8e19 ? UInt64(value) : 0)
            case "<u4":
                let value = UInt64(UInt32(littleEndian: base.loadUnaligned(fromByteOffset: slot.offset + 4 * index, as: UInt32.self)))
                return (Double(value), value)
            default:
                let value = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: slot.offset + 8 * index, as: UInt64.self))
                return (Double(value), value)
            }
        }
        func scalar(_ name: String) -> Double { slots[name].map { load($0, 0).double } ?? 0 }
        func integer(_ name: String) -> UInt64 { slots[name].map { load($0, 0).integer } ?? 0 }
        func doubles(_ name: String, _ count: Int) -> [Double] {
            guard let slot = slots[name] else { return [Double](repeating: 0, count: count) }
            return (0..<slot.count).map { load(slot, $0).double }
        }
        func integers(_ name: String) -> [UInt64] {
            guard let slot = slots[name] else { return [UInt64](repeating: 0, count: tensorCount) }
            return (0..<slot.count).map { load(slot, $0).integer }
        }
        func counts32(_ name: String) -> [UInt32] {
            guard let slot = slots[name] else { return [] }
            return (0..<slot.count).map { UInt32(clamping: load(slot, $0).integer) }
        }
        func present(_ name: String, _ count: Int) -> [Double] { slots[name] != nil ? doubles(name, count) : [] }
        func present(_ name: String) -> [Double] { present(name, tensorCount) }
        func view(_ prefix: String) -> ViewRecord {
            ViewRecord(lossBefore: scalar(prefix + "loss_before"), lossAfter: scalar(prefix + "loss_after"),
                       lcaTotal: scalar(prefix + "lca_total"), firstOrderTotal: scalar(prefix + "first_order_total"),
                       residual: scalar(prefix + "residual"), subintervals: Int(clamping: integer(prefix + "subintervals")),
                       residualAboveThreshold: integer(prefix + "flags") & 1 != 0,
                       tensorLCA: doubles(prefix + "lca", tensorCount),
                       tensorFirstOrder: doubles(prefix + "first_order", tensorCount),
                       tensorHelped: integers(prefix + "helped"), tensorHurt: integers(prefix + "hurt"),
                       tensorZero: integers(prefix + "zero"),
                       unitLCA: slots[prefix + "unit_lca"] != nil ? doubles(prefix + "unit_lca", unitCount) : [],
                       lcaFloor: slots[prefix + "lca_floor"] != nil ? scalar(prefix + "lca_floor") : nil,
                       tensorHelping: present(prefix + "lca_helping"), tensorHurting: present(prefix + "lca_hurting"),
                       tensorUnmoved: slots[prefix + "unmoved"] != nil ? integers(prefix + "unmoved") : [],
                       tensorHistogram: counts32(prefix + "lca_histogram"),
                       groupLCA: present(prefix + GroupFields.groupLCA, groupCount * tensorCount),
                       groupLossBefore: present(prefix + "group_loss_before", groupCount),
                       groupLossAfter: present(prefix + "group_loss_after", groupCount),
                       groupResidual: present(prefix + "group_residual", groupCount),
                       groupFlags: counts32(prefix + "group_flags"))
        }
        return IterationRecord(iteration: integer("iteration"), epoch: Int(clamping: integer("epoch")),
                               batchLoss: scalar("batch_loss"), train: view(""),
                               validation: hasValidation ? view("val_") : nil)
    }
}

/// Reads a whole LCA log into memory: the header and every complete record
/// (a partial last record is ignored). For long logs or pipes, use
/// `LogStream`, which holds one record at a time.
///
/// ```swift
/// let log = try LogReader(path: "runs/x/lca.log")
/// for record in log.records { print(record.iteration, record.train.lcaTotal) }
/// ```
public struct LogReader: Sendable {
    /// The file's path.
    public let path: String
    /// The decoded header.
    public let header: LogHeader
    /// The header's raw JSON text.
    public let headerText: String
    /// Every complete record, in order.
    public let records: [IterationRecord]
    /// The log's format version (1 or 2).
    public let formatVersion: Int

    /// The |LCA| histogram's finite edges (29 for the 30 bins), or nil when
    /// the log has no histogram (version 1, or `--no-lca-histogram`).
    public var histogramEdges: [Double]? { header.lcaHistogram?.edges }

    /// Reads and validates a whole log. Errors are `LCAError`s with code
    /// `.format` (or `.io`), a `kind`, the file and the byte offset.
    public init(path: String) throws {
        self.path = path
        let stream = try LogStream(path: path)
        header = stream.header
        headerText = stream.headerText
        formatVersion = stream.formatVersion
        var records: [IterationRecord] = []
        while let record = try stream.next() { records.append(record) }
        self.records = records
    }
}
