internal import CLCA
import Foundation

/// Loss groups (issue 15, docs/method.md "Groups"): one group id per
/// example of the data set. The evaluation set and the validation view pick
/// their examples' ids; every record then carries the LCA of each group's
/// share of the loss (`ViewRecord.groupLCA`).
///
/// ```swift
/// let data = try Dataset(source: "digits")
/// var configuration = TrainingConfiguration()
/// configuration.exampleGroups = try ExampleGroups.classes(of: data)   // 10 groups, "0" … "9"
/// ```
public struct ExampleGroups: Sendable, Hashable {
    /// Where the ids came from: "class" or "file:PATH" (the log header's
    /// `groups.source`).
    public var source: String
    /// The group of each example of the data, in [0, count).
    public var ids: [UInt32]
    /// G, the number of groups: the largest id + 1 (the number of classes
    /// for "class").
    public var count: Int

    /// The most groups a run may have (the core's `LCA_MAX_GROUPS`).
    public static let maximumCount = Int(LCA_MAX_GROUPS)

    /// Groups from explicit ids; G = the largest id + 1 unless given.
    public init(source: String, ids: [UInt32], count: Int? = nil) throws {
        let largest = ids.max().map { Int($0) + 1 } ?? 0
        let groups = count ?? largest
        guard groups >= 1, groups >= largest else {
            throw LCAError.invalid("loss groups (\(source)): \(groups) groups for ids up to \(largest - 1)")
        }
        guard groups <= ExampleGroups.maximumCount else {
            throw LCAError.invalid("loss groups (\(source)): \(groups) groups, more than the \(ExampleGroups.maximumCount) a run may have")
        }
        self.source = source
        self.ids = ids
        self.count = groups
    }

    /// The group names, "0" … "G−1" (the log header's `groups.names`).
    public var names: [String] { (0..<count).map(String.init) }

    /// One group per class: the labels of `data` (G = its classes).
    public static func classes(of data: Dataset) throws -> ExampleGroups {
        guard data.classes > 0 else {
            throw LCAError.invalid("--groups class needs class labels, but \(data.source) holds regression targets: give a groups FILE")
        }
        var ids: [UInt32] = []
        ids.reserveCapacity(data.count)
        let chunk = 4096
        var start = 0
        while start < data.count {
            let end = min(data.count, start + chunk)
            ids += data.gather((start..<end).map { UInt32($0) }).labels.map { UInt32($0) }
            start = end
        }
        return try ExampleGroups(source: "class", ids: ids, count: data.classes)
    }

    /// The groups of a `--groups` argument: "class", or a FILE of one id per
    /// example of the data (IDX unsigned byte or int, or `.npy` of dtype
    /// u1, i4 or i8).
    public static func parse(_ argument: String, data: Dataset) throws -> ExampleGroups {
        if argument == "class" { return try classes(of: data) }
        return try load(file: argument, exampleCount: data.count)
    }

    /// Reads a groups file (see `parse`); its ids must number
    /// `exampleCount`, be ≥ 0 and below `maximumCount`. Errors name the file
    /// and the byte offset or field at fault.
    public static func load(file path: String, exampleCount: Int) throws -> ExampleGroups {
        let bytes: Data
        do {
            bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw LCAError(code: .io, message: "cannot read the groups file: \(LCAError.fileSystemText(error, path: path))", path: path)
        }
        let values = path.hasSuffix(".npy") ? try npy(bytes, path: path) : try idx(bytes, path: path)
        guard values.ids.count == exampleCount else {
            throw LCAError(code: .mismatch, message: "holds \(values.ids.count) group ids, but the data has \(exampleCount) examples (one id per example of the data, in its order)", path: path)
        }
        var ids = [UInt32](repeating: 0, count: values.ids.count)
        for (i, id) in values.ids.enumerated() {
            guard id >= 0 else {
                throw LCAError(code: .format, message: "group id \(id) of example \(i) is negative", path: path,
                               offset: values.offset + i * values.width)
            }
            guard id < Int64(ExampleGroups.maximumCount) else {
                throw LCAError(code: .invalidArgument, message: "group id \(id) of example \(i): too many groups (ids must be below \(ExampleGroups.maximumCount))",
                               path: path, offset: values.offset + i * values.width)
            }
            ids[i] = UInt32(id)
        }
        return try ExampleGroups(source: "file:" + DataSource.absolute(path), ids: ids)
    }

    /// The ids of an IDX file: magic 0 0 type 1 (one dimension), type 0x08
    /// (unsigned byte) or 0x0C (big-endian int32).
    static func idx(_ bytes: Data, path: String) throws -> (ids: [Int64], offset: Int, width: Int) {
        let b = [UInt8](bytes)
        guard b.count >= 8 else {
            throw LCAError(code: .format, message: "expected an IDX header of 8 bytes (or a .npy file), found \(b.count) bytes", path: path, offset: 0)
        }
        guard b[0] == 0, b[1] == 0 else {
            throw LCAError(code: .format, message: "expected the IDX magic 0x00 0x00 (or a file named .npy), found 0x\(String(format: "%02x 0x%02x", b[0], b[1]))", path: path, offset: 0)
        }
        let width: Int
        switch b[2] {
        case 0x08: width = 1
        case 0x0C: width = 4
        default:
            throw LCAError(code: .format, message: "IDX type 0x\(String(format: "%02x", b[2])): group ids must be unsigned bytes (0x08) or 32-bit integers (0x0c)", path: path, offset: 2)
        }
        guard b[3] == 1 else {
            throw LCAError(code: .format, message: "IDX with \(b[3]) dimensions: group ids are one dimension (one per example)", path: path, offset: 3)
        }
        let count = Int(b[4]) << 24 | Int(b[5]) << 16 | Int(b[6]) << 8 | Int(b[7])
        guard b.count == 8 + count * width else {
            throw LCAError(code: .format, message: "IDX header says \(count) ids of \(width) byte(s), so \(8 + count * width) bytes, but the file has \(b.count)", path: path, offset: min(b.count, 8 + count * width))
        }
        var ids = [Int64](repeating: 0, count: count)
        for i in 0..<count {
            let p = 8 + i * width
            ids[i] = width == 1 ? Int64(b[p]) : Int64(Int32(bitPattern: UInt32(b[p]) << 24 | UInt32(b[p + 1]) << 16 | UInt32(b[p + 2]) << 8 | UInt32(b[p + 3])))
        }
        return (ids, 8, width)
    }

    /// The ids of a `.npy` file (version 1 to 3): one dimension, C order,
    /// dtype u1, i4 or i8 (little-endian, or "|" for bytes).
    static func npy(_ bytes: Data, path: String) throws -> (ids: [Int64], offset: Int, width: Int) {
        let b = [UInt8](bytes)
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard b.count >= 10, Array(b[0..<6]) == magic else {
            throw LCAError(code: .format, message: "expected the .npy magic \\x93NUMPY", path: path, offset: 0)
        }
        let major = b[6]
        let headerLength: Int, start: Int
        switch major {
        case 1:
            headerLength = Int(b[8]) | Int(b[9]) << 8
            start = 10
        case 2, 3:
            guard b.count >= 12 else { throw LCAError(code: .format, message: "the .npy header ends early", path: path, offset: b.count) }
            headerLength = Int(b[8]) | Int(b[9]) << 8 | Int(b[10]) << 16 | Int(b[11]) << 24
            start = 12
        default:
            throw LCAError(code: .format, message: ".npy version \(major) (expected 1, 2 or 3)", path: path, offset: 6)
        }
        guard b.count >= start + headerLength else {
            throw LCAError(code: .format, message: "the .npy header of \(headerLength) bytes ends early", path: path, offset: b.count)
        }
        let header = String(decoding: b[start..<(start + headerLength)], as: UTF8.self)
        func field(_ name: String) -> String? {
            guard let key = header.range(of: "'\(name)':") else { return nil }
            let rest = header[key.upperBound...].drop { $0 == " " }
            if rest.first == "(" { return rest.firstIndex(of: ")").map { String(rest[...$0]) } }
            return rest.prefix { $0 != "," && $0 != "}" }.trimmingCharacters(in: .whitespaces)
        }
        guard let descr = field("descr")?.trimmingCharacters(in: CharacterSet(charactersIn: "'\"")) else {
            throw LCAError(code: .format, message: "the .npy header has no 'descr' field", path: path, offset: start)
        }
        let width: Int
        switch descr {
        case "|u1", "u1", "<u1": width = 1
        case "<i4": width = 4
        case "<i8": width = 8
        default:
            throw LCAError(code: .format, message: "field 'descr' is \(descr): group ids must be uint8 (|u1), int32 (<i4) or int64 (<i8)", path: path, offset: start)
        }
        guard let shape = field("shape") else {
            throw LCAError(code: .format, message: "the .npy header has no 'shape' field", path: path, offset: start)
        }
        let dimensions = shape.trimmingCharacters(in: CharacterSet(charactersIn: "() ")).split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard dimensions.count == 1, let count = Int(dimensions[0]) else {
            throw LCAError(code: .format, message: "field 'shape' is \(shape): group ids are one dimension (one per example)", path: path, offset: start)
        }
        let offset = start + headerLength
        guard b.count == offset + count * width else {
            throw LCAError(code: .format, message: "'shape' \(shape) of \(width)-byte ids needs \(count * width) data bytes, but the file has \(b.count - offset)", path: path, offset: min(b.count, offset + count * width))
        }
        var ids = [Int64](repeating: 0, count: count)
        for i in 0..<count {
            let p = offset + i * width
            var value: UInt64 = 0
            for k in 0..<width { value |= UInt64(b[p + k]) << (8 * UInt64(k)) }
            switch width {
            case 1: ids[i] = Int64(value)
            case 4: ids[i] = Int64(Int32(bitPattern: UInt32(value)))
            default: ids[i] = Int64(bitPattern: value)
            }
        }
        return (ids, offset, width)
    }

    /// A readable description with a hash of the ids, for the run's
    /// fingerprint: resuming with other groups is refused.
    var fingerprint: String {
        var hash = Hash64()
        ids.withUnsafeBufferPointer { hash.add(UnsafeRawBufferPointer($0)) }
        return "\(source): \(count) groups over \(ids.count) examples, hash \(RunFingerprint.hex(hash.value))"
    }
}
