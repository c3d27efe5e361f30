import Foundation

/// Turns the records of a log into rows with named columns, for CSV, JSON
/// Lines and `.npy` exports. Works from the header's field list and the
/// records' raw bytes, so every field of the log is exported exactly as
/// stored, including fields this version of LCAKit does not know.
///
/// Column names: a scalar field keeps its name (`iteration`, `lca_total`,
/// `val_residual`); a per-tensor field becomes `<tensor>.<field>`
/// (`fc1.weight.lca`, `fc1.weight.val_helped`); a per-unit field becomes
/// `<group>.unit<u>.lca` or `<group>.unit<u>.val_lca`. Version 2: the
/// histogram becomes two array columns per tensor,
/// `<tensor>.lca_histogram.helping` and `<tensor>.lca_histogram.hurting`
/// (B counts each), in JSON Lines only (CSV leaves them out); the group
/// fields of issue 15 become `<group>.<tensor>.group_lca` and
/// `<group>.group_loss_before`, ….
public struct LogColumns: Sendable {
    /// One column: its name and where its value sits in a record.
    public struct Column: Sendable, Hashable {
        /// The column's name.
        public var name: String
        /// numpy type string of the value.
        public var type: String
        /// Byte offset inside the record.
        public var offset: Int
        /// Elements: 1 for a value, more for an array column (JSON Lines
        /// only).
        public var count: Int = 1
    }

    /// The columns, in record order.
    public let columns: [Column]
    /// The header they were made from.
    public let header: LogHeader

    /// Field names whose elements are per tensor.
    static let perTensor: Set<String> = {
        let names = ["lca", "first_order", "helped", "hurt", "zero", "lca_helping", "lca_hurting", "unmoved"]
        return Set(names + names.map { "val_" + $0 })
    }()
    /// Field names whose elements are per unit.
    static let perUnit: Set<String> = ["unit_lca", "val_unit_lca"]
    /// Per tensor, 2 × B histogram bins (version 2).
    static let perBin: Set<String> = ["lca_histogram", "val_lca_histogram"]
    /// Per group (issue 15).
    static let perGroup: Set<String> = Set(GroupFields.perGroup + GroupFields.perGroup.map { "val_" + $0 })
    /// Per group and tensor, group-major (issue 15).
    static let perGroupTensor: Set<String> = [GroupFields.groupLCA, "val_" + GroupFields.groupLCA]

    /// The scalar columns (CSV's; JSON Lines adds the array columns).
    public var scalarColumns: [Column] { columns.filter { $0.count == 1 } }

    /// The columns of a log.
    public init(header: LogHeader) {
        self.header = header
        var columns: [Column] = []
        let unitNames: [String] = (header.units ?? []).flatMap { group in
            (0..<group.units).map { "\(group.group).unit\($0)" }
        }
        let tensorNames = header.tensors.map(\.name)
        let groupNames = header.groups?.names ?? []
        let bins = header.lcaHistogram?.bins ?? ViewRecord.histogramBins
        for field in header.fields {
            let width = field.width
            if Self.perBin.contains(field.name), field.count == tensorNames.count * 2 * bins {
                let suffix = field.name == "lca_histogram" ? "lca_histogram" : "val_lca_histogram"
                for (t, tensor) in tensorNames.enumerated() {
                    for (side, sign) in ["helping", "hurting"].enumerated() {
                        columns.append(Column(name: "\(tensor).\(suffix).\(sign)", type: field.type,
                                              offset: field.offset + ((2 * t + side) * bins) * width, count: bins))
                    }
                }
                continue
            }
            for index in 0..<field.count {
                let name: String
                if Self.perTensor.contains(field.name), index < header.tensors.count {
                    name = header.tensors[index].name + "." + field.name
                } else if Self.perUnit.contains(field.name), index < unitNames.count {
                    name = unitNames[index] + "." + (field.name == "unit_lca" ? "lca" : "val_lca")
                } else if Self.perGroup.contains(field.name), index < groupNames.count {
                    name = groupNames[index] + "." + field.name
                } else if Self.perGroupTensor.contains(field.name), !tensorNames.isEmpty,
                          index < groupNames.count * tensorNames.count {
                    name = groupNames[index / tensorNames.count] + "." + tensorNames[index % tensorNames.count] + "." + field.name
                } else if field.count == 1 {
                    name = field.name
                } else {
                    name = "\(field.name)[\(index)]"
                }
                columns.append(Column(name: name, type: field.type, offset: field.offset + index * width))
            }
        }
        self.columns = columns
    }

    /// The value of one column of a record's bytes, as text: integers in
    /// decimal, floats in the shortest form that reads back to the same
    /// double (so a correctly rounding parser recovers every bit);
    /// non-finite floats as `nan`, `inf`, `-inf` (or `null` when `json`).
    /// An array column is a JSON array of its elements.
    public func text(_ column: Column, in record: ArraySlice<UInt8>, json: Bool = false) -> String {
        if column.count != 1 {
            let width = Int(column.type.dropFirst(2)) ?? 8
            return "[" + (0..<column.count).map { index in
                var element = column
                element.offset += index * width
                element.count = 1
                return text(element, in: record, json: true)
            }.joined(separator: ", ") + "]"
        }
        return record.withUnsafeBytes { raw in
            switch column.type {
            case "<f8", "<f4":
                let value = column.type == "<f8"
                    ? Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: column.offset, as: UInt64.self)))
                    : Double(Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: column.offset, as: UInt32.self))))
                if value.isFinite { return "\(value)" }
                if json { return "null" }
                return value.isNaN ? "nan" : (value > 0 ? "inf" : "-inf")
            case "<u4":
                return String(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: column.offset, as: UInt32.self)))
            default:
                return String(UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: column.offset, as: UInt64.self)))
            }
        }
    }

    /// The CSV header line (with a newline): the scalar columns.
    public var csvHeader: String { scalarColumns.map { Self.csvQuoted($0.name) }.joined(separator: ",") + "\n" }

    /// One CSV line (with a newline) for a record's bytes.
    public func csvLine(_ record: ArraySlice<UInt8>) -> String {
        scalarColumns.map { text($0, in: record) }.joined(separator: ",") + "\n"
    }

    /// One JSON object on one line (with a newline) for a record's bytes,
    /// keys in column order.
    public func jsonLine(_ record: ArraySlice<UInt8>) -> String {
        "{" + columns.map { "\(JSONText.string($0.name)): \(text($0, in: record, json: true))" }.joined(separator: ", ") + "}\n"
    }

    static func csvQuoted(_ text: String) -> String {
        text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" })
            ? "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : text
    }

    /// The numpy dtype description of a record, as the `.npy` header
    /// writes it: `[('iteration', '<u8'), …, ('lca', '<f8', (4,)), …]`.
    /// Per-tensor and per-unit fields are arrays even with one element.
    /// The histogram is `(T, 2, B)` (tensor, helping/hurting, bin) and
    /// `group_lca` `(G, T)`.
    public var numpyDescription: String {
        let t = header.tensors.count, g = header.groups?.names.count ?? 0
        let bins = header.lcaHistogram?.bins ?? ViewRecord.histogramBins
        return "[" + header.fields.map { field in
            if Self.perBin.contains(field.name), t > 0, field.count == t * 2 * bins {
                return "('\(field.name)', '\(field.type)', (\(t), 2, \(bins)))"
            }
            if Self.perGroupTensor.contains(field.name), t > 0, g > 0, field.count == g * t {
                return "('\(field.name)', '\(field.type)', (\(g), \(t)))"
            }
            let array = field.count != 1 || Self.perTensor.contains(field.name) || Self.perUnit.contains(field.name)
                || Self.perGroup.contains(field.name)
            return array ? "('\(field.name)', '\(field.type)', (\(field.count),))" : "('\(field.name)', '\(field.type)')"
        }.joined(separator: ", ") + "]"
    }
}

/// Writes a log's records as a NumPy `.npy` file (format version 1.0): a
/// structured array with the log's record dtype, one element per record,
/// the bytes of every record copied unchanged. The record count is written
/// into the header when the file is closed, so a pipe can be exported
/// without knowing its length in advance.
///
/// ```python
/// records = numpy.load("run.npy")      # records["lca_total"], records["lca"][:, 0]
/// ```
public final class NpyWriter {
    private let file: OutputFile
    private var fd: Int32 { file.fd }
    private let path: String
    private let description: String
    private let headerLength: Int
    /// Records written so far.
    public private(set) var count = 0

    /// Creates (or replaces) the file and writes a header for zero records.
    public init(path: String, header: LogHeader, protecting inputs: [String] = []) throws {
        self.path = path
        description = LogColumns(header: header).numpyDescription
        // room for a 20-digit count, padded so that the data starts at a multiple of 64
        let longest = 10 + Self.dictionary(description, count: "99999999999999999999").utf8.count + 1
        headerLength = (longest + 63) / 64 * 64
        file = try OutputFile(path: path, protecting: inputs)
        try writeHeader()
    }

    /// Appends one record's bytes (exactly `recordSize` bytes).
    public func write(_ record: ArraySlice<UInt8>) throws {
        try record.withUnsafeBytes { try writeAll($0) }
        count += 1
    }

    /// Writes the final count into the header and closes the file.
    public func close() throws {
        guard lseek(fd, 0, SEEK_SET) == 0 else {
            throw LCAError(code: .io, message: "\(path): cannot seek to rewrite the .npy header (is it a pipe?)", systemError: errno)
        }
        try writeHeader()
        try file.commit()
    }

    private static func dictionary(_ description: String, count: String) -> String {
        "{'descr': \(description), 'fortran_order': False, 'shape': (\(count),), }"
    }

    private func writeHeader() throws {
        var text = Self.dictionary(description, count: String(count))
        text += String(repeating: " ", count: headerLength - 10 - text.utf8.count - 1) + "\n"
        let length = UInt16(text.utf8.count)
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(length & 0xFF), UInt8(length >> 8)]
        bytes += Array(text.utf8)
        try bytes.withUnsafeBytes { try writeAll($0) }
    }

    private func writeAll(_ raw: UnsafeRawBufferPointer) throws {
        try file.write(raw)
    }
}

/// An output file written safely: never the file a command reads (same
/// device and inode, so a symlink or hard link to the input is caught),
/// and, for a regular file, written to a temporary file beside it and
/// renamed over it only by `commit()`, so a failed command leaves an
/// existing output untouched. A device or FIFO (/dev/null, a named pipe)
/// is written directly.
public final class OutputFile {
    /// The path as given.
    public let path: String
    /// The descriptor to write to.
    public private(set) var fd: Int32
    private let temporary: String?
    private let destination: String

    /// Opens `path` for writing; `inputs` are the files the command reads
    /// ("-" = standard input), which the output must not be.
    public init(path: String, protecting inputs: [String] = []) throws {
        self.path = path
        var target = stat()
        let exists = stat(path, &target) == 0
        if exists {
            for input in inputs {
                var source = stat()
                let found = input == "-" ? fstat(STDIN_FILENO, &source) == 0 : stat(input, &source) == 0
                if found && source.st_dev == target.st_dev && source.st_ino == target.st_ino {
                    throw LCAError(code: .invalidArgument,
                                   message: "\(path) is the input \(input == "-" ? "(standard input)" : input) itself (the same file): "
                                   + "writing it would destroy what is being read; choose another output")
                }
            }
        }
        if exists && (target.st_mode & S_IFMT) != S_IFREG {
            temporary = nil
            destination = path
            fd = open(path, O_WRONLY | O_CLOEXEC)
        } else {
            // a symlink to a regular file: replace the file it points to
            var resolved = path
            if exists, let real = realpath(path, nil) {
                resolved = String(cString: real)
                free(real)
            }
            destination = resolved
            let url = URL(fileURLWithPath: resolved)
            let name = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())").path
            temporary = name
            fd = open(name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            // a replaced file keeps its permissions
            if fd >= 0 && exists { _ = fchmod(fd, target.st_mode & 0o7777) }
        }
        guard fd >= 0 else {
            let saved = errno
            throw LCAError(code: .io, message: "\(path): cannot create: \(String(cString: strerror(saved)))", systemError: saved)
        }
    }

    deinit {
        if fd >= 0 { _ = POSIX.close(fd) }
        if let temporary, !temporaryRenamed { unlink(temporary) }
    }

    /// Writes all of `raw`.
    public func write(_ raw: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < raw.count {
            let n = POSIX.write(fd, raw.baseAddress.unsafelyUnwrapped + offset, raw.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                let saved = errno
                throw LCAError(code: .io, message: "\(path): write failed: \(String(cString: strerror(saved)))", systemError: saved)
            }
            offset += n
        }
    }

    /// Closes the file and puts it in place (the temporary file renamed over
    /// the output).
    public func commit() throws {
        let descriptor = fd
        fd = -1
        func failure(_ what: String) -> LCAError {
            let saved = errno
            return LCAError(code: .io, message: "\(path): \(what): \(String(cString: strerror(saved)))", systemError: saved)
        }
        if temporary != nil && fsync(descriptor) != 0 && errno != EINVAL {
            let error = failure("write failed"); _ = POSIX.close(descriptor); throw error
        }
        if POSIX.close(descriptor) != 0 { throw failure("write failed") }
        if let temporary {
            if rename(temporary, destination) != 0 { throw failure("cannot replace") }
            self.temporaryRenamed = true
        }
    }
    private var temporaryRenamed = false
}

/// The system calls whose names the writers' own methods shadow.
enum POSIX {
    static func close(_ fd: Int32) -> Int32 { systemClose(fd) }
    static func write(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int { systemWrite(fd, bytes, count) }
}

#if canImport(Glibc)
import Glibc
private let systemClose = Glibc.close
private let systemWrite = Glibc.write
#elseif canImport(Musl)
import Musl
private let systemClose = Musl.close
private let systemWrite = Musl.write
#else
import Darwin
private let systemClose = Darwin.close
private let systemWrite = Darwin.write
#endif
