import Foundation

/// Reads a binary LCA log (docs/log-format.md) back into records: the
/// 24-byte preamble, the JSON header, then fixed-size records whose layout
/// the header's "fields" list gives.
///
/// ```swift
/// let log = try LogReader(path: "runs/x/lca.log")
/// for record in log.records { print(record.iteration, record.train.lcaTotal) }
/// ```
public struct LogReader: Sendable {
    /// The log's JSON header, decoded (the parts LCAKit uses).
    public struct Header: Sendable, Decodable {
        /// "lca-log".
        public var format: String
        /// Format version.
        public var version: Int
        /// The model the run trained.
        public var model: ModelDescription
        /// The model's tensors, in record order.
        public var tensors: [TensorInfo]
        /// Bytes per record.
        public var recordSize: Int
        /// Record layout.
        public var fields: [Field]

        /// The model part of the header.
        public struct ModelDescription: Sendable, Decodable {
            /// Canonical spec.
            public var spec: String
            /// "softmax_cross_entropy" or "mean_squared_error".
            public var loss: String
            /// Number of parameters.
            public var parameters: Int
        }

        /// One field of the record layout.
        public struct Field: Sendable, Decodable {
            /// Field name ("lca_total", "val_lca").
            public var name: String
            /// numpy type string ("<f8", "<u8", "<u4").
            public var type: String
            /// Byte offset inside a record.
            public var offset: Int
            /// Elements (1, or the tensor count).
            public var count: Int
        }

        enum CodingKeys: String, CodingKey {
            case format, version, model, tensors, fields
            case recordSize = "record_size"
        }
    }

    /// The file's path.
    public let path: String
    /// The decoded header.
    public let header: Header
    /// The header's raw JSON text.
    public let headerText: String
    /// Every complete record, in order (a partial last record is ignored).
    public let records: [IterationRecord]

    static let magic: [UInt8] = [0x89, 0x4C, 0x43, 0x41, 0x0D, 0x0A, 0x1A, 0x0A]
    static let preambleSize = 24

    /// Reads and validates a whole log.
    public init(path: String) throws {
        self.path = path
        let bytes: [UInt8]
        do {
            bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw LCAError(code: .io, message: "\(path): cannot read: \(error.localizedDescription)")
        }
        func fail(_ offset: Int, _ what: String) -> LCAError {
            LCAError(code: .format, message: "\(path): byte \(offset): \(what)")
        }
        guard bytes.count >= Self.preambleSize, Array(bytes[0..<8]) == Self.magic else {
            throw fail(0, "expected the LCA log magic 89 4C 43 41 0D 0A 1A 0A")
        }
        let version = Self.u32(bytes, 8), jsonLength = Int(Self.u32(bytes, 12)), recordSize = Int(Self.u32(bytes, 16))
        guard version == 1 else { throw fail(8, "expected log version 1, found \(version)") }
        guard bytes.count >= Self.preambleSize + jsonLength else {
            throw fail(12, "header of \(jsonLength) bytes runs past the end of the file (\(bytes.count) bytes)")
        }
        let jsonBytes = bytes[Self.preambleSize..<(Self.preambleSize + jsonLength)]
        headerText = String(decoding: jsonBytes, as: UTF8.self)
        do {
            header = try JSONDecoder().decode(Header.self, from: Data(jsonBytes))
        } catch {
            throw fail(Self.preambleSize, "header is not the expected JSON: \(error)")
        }
        guard header.recordSize == recordSize, recordSize > 0 else {
            throw fail(16, "record size \(recordSize) differs from the header's \(header.recordSize)")
        }
        let tensorCount = header.tensors.count
        var layout: [String: Header.Field] = [:]
        for field in header.fields { layout[field.name] = field }
        for field in header.fields where field.offset + field.count * Self.width(field.type) > recordSize {
            throw fail(Self.preambleSize, "field \(field.name) runs past the \(recordSize)-byte record")
        }
        let start = Self.preambleSize + jsonLength
        let count = (bytes.count - start) / recordSize
        var records: [IterationRecord] = []
        records.reserveCapacity(count)
        for index in 0..<count {
            let base = start + index * recordSize
            func scalar(_ name: String) -> Double {
                guard let field = layout[name] else { return 0 }
                return Self.value(bytes, base + field.offset, field.type)
            }
            func array(_ name: String) -> [Double] {
                guard let field = layout[name] else { return [Double](repeating: 0, count: tensorCount) }
                let width = Self.width(field.type)
                return (0..<field.count).map { Self.value(bytes, base + field.offset + $0 * width, field.type) }
            }
            func integer(_ name: String) -> UInt64 {
                guard let field = layout[name] else { return 0 }
                return Self.integer(bytes, base + field.offset, field.type)
            }
            func integers(_ name: String) -> [UInt64] {
                guard let field = layout[name] else { return [UInt64](repeating: 0, count: tensorCount) }
                let width = Self.width(field.type)
                return (0..<field.count).map { Self.integer(bytes, base + field.offset + $0 * width, field.type) }
            }
            func view(_ prefix: String) -> ViewRecord {
                ViewRecord(lossBefore: scalar(prefix + "loss_before"), lossAfter: scalar(prefix + "loss_after"),
                           lcaTotal: scalar(prefix + "lca_total"), firstOrderTotal: scalar(prefix + "first_order_total"),
                           residual: scalar(prefix + "residual"), subintervals: Int(integer(prefix + "subintervals")),
                           residualAboveThreshold: integer(prefix + "flags") & 1 != 0,
                           tensorLCA: array(prefix + "lca"), tensorFirstOrder: array(prefix + "first_order"),
                           tensorHelped: integers(prefix + "helped"), tensorHurt: integers(prefix + "hurt"),
                           tensorZero: integers(prefix + "zero"))
            }
            records.append(IterationRecord(iteration: integer("iteration"), epoch: Int(integer("epoch")),
                                           batchLoss: scalar("batch_loss"), train: view(""),
                                           validation: layout["val_lca_total"] != nil ? view("val_") : nil))
        }
        self.records = records
    }

    private static func width(_ type: String) -> Int { Int(type.dropFirst(2)) ?? 8 }

    private static func u32(_ b: [UInt8], _ at: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[at + $1]) << (8 * UInt32($1)) }
    }

    private static func u64(_ b: [UInt8], _ at: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[at + $1]) << (8 * UInt64($1)) }
    }

    private static func integer(_ b: [UInt8], _ at: Int, _ type: String) -> UInt64 {
        type.hasSuffix("4") ? UInt64(u32(b, at)) : u64(b, at)
    }

    private static func value(_ b: [UInt8], _ at: Int, _ type: String) -> Double {
        switch type {
        case "<f8": return Double(bitPattern: u64(b, at))
        case "<f4": return Double(Float(bitPattern: u32(b, at)))
        default: return Double(integer(b, at, type))
        }
    }
}
