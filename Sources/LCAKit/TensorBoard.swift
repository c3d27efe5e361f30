import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes TensorBoard event files of a run's LCA, one event per iteration
/// with no down-sampling: per-tensor LCA, cumulative LCA and % of
/// parameters helped; the totals, losses, residual and sub-intervals; the
/// same for the validation view when present.
///
/// The file is a TFRecord stream (each record: u64 length, masked CRC32C of
/// the length, the bytes, masked CRC32C of the bytes) of `tensorflow.Event`
/// protobuf messages, encoded here by hand: no protobuf or TensorFlow
/// dependency. Every event is written with one `write` call, so a running
/// TensorBoard sees each iteration as it happens.
///
/// Tags: `loss/batch`, `loss/evaluation`, `lca/total`, `lca/first_order`,
/// `residual`, `subintervals`, `lca/<tensor>`, `lca_cumulative/<tensor>`,
/// `lca_cumulative/total`, `helped_percent/<tensor>`, `helped_percent/total`,
/// from a version-2 log also `lca_helping/<tensor>`, `lca_hurting/<tensor>`
/// and `unmoved_percent/<tensor>`, and `validation/…` for the validation
/// view. With the |LCA| histogram, a TensorBoard histogram per tensor,
/// `lca_histogram/<tensor>`, of the signed LCA: the 30 helping bins
/// (negated edges), one bucket (−floor, floor] of the parameters within the
/// floor, the 30 hurting bins (each bucket's right edge as its limit; the
/// min, max and sum are the outer edges of the occupied bins and the
/// tensor's LCA, as the log holds no more). With loss groups (`lca train
/// --groups`), per group g and tensor: `group_lca/<g>/<tensor>` and
/// `group_lca_cumulative/<g>/<tensor>`, and per group
/// `group_lca/<g>/total`, `group_lca_cumulative/<g>/total`,
/// `group_loss/<g>` (L_g after the step) and `group_residual/<g>`
/// (TensorBoard groups the charts by the tag's first part).
///
/// ```swift
/// let board = try TensorBoardWriter(directory: "tb/run1", tensors: model.tensors)
/// try board.write(record)
/// try board.close()
/// ```
/// then `tensorboard --logdir tb`.
public final class TensorBoardWriter {
    /// The event file's path.
    public let path: String
    private var fd: Int32
    /// Where the events go until `close` when the file is written whole
    /// (an export): no "tfevents" in its name, so TensorBoard ignores it.
    private let temporary: String?
    private let tensors: [TensorInfo]
    private var cumulative: [Double]
    private var cumulativeTotal = 0.0
    private var validationCumulative: [Double]
    private var validationCumulativeTotal = 0.0
    /// The loss groups' names (empty without groups) and their running
    /// sums, G · T then G totals, per view.
    private let groups: [String]
    private var groupCumulative: [Double], validationGroupCumulative: [Double]

    /// Creates `directory` (and its parents) and a new event file in it,
    /// named `events.out.tfevents.<seconds>.<host>.lca`, starting with the
    /// file-version event. An existing file is never written over.
    ///
    /// With `whole` (an export, where nobody watches the file grow), the
    /// events go to a hidden temporary file in the folder that `close`
    /// syncs and moves to `path`: an export that fails or is interrupted
    /// leaves no partial event file behind. Without it (a training run),
    /// every event reaches `path` as it is written, for a running
    /// TensorBoard.
    public init(directory: String, tensors: [TensorInfo], wallTime: Double = Date().timeIntervalSince1970,
                whole: Bool = false, groups: [String] = []) throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw LCAError(code: .io, message: "\(directory): cannot create the TensorBoard folder: \(LCAError.fileSystemText(error, path: directory, writing: true))")
        }
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count - 1)
        let hostName = String(cString: host).replacingOccurrences(of: "/", with: "_")
        var candidate = "\(directory)/events.out.tfevents.\(Int(wallTime)).\(hostName.isEmpty ? "localhost" : hostName).lca"
        var suffix = 2
        while FileManager.default.fileExists(atPath: candidate) {
            candidate = "\(directory)/events.out.tfevents.\(Int(wallTime)).\(hostName.isEmpty ? "localhost" : hostName).lca\(suffix)"
            suffix += 1
        }
        path = candidate
        temporary = whole ? "\(directory)/.lca-export.tmp-\(getpid())" : nil
        fd = open(temporary ?? candidate, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            let saved = errno
            throw LCAError(code: .io, message: "\(temporary ?? candidate): cannot create: \(String(cString: strerror(saved)))", systemError: saved)
        }
        self.tensors = tensors
        cumulative = [Double](repeating: 0, count: tensors.count)
        validationCumulative = cumulative
        self.groups = groups
        groupCumulative = [Double](repeating: 0, count: groups.count * (tensors.count + 1))
        validationGroupCumulative = groupCumulative
        var event = Protobuf()
        event.double(1, wallTime)
        event.string(3, "brain.Event:2")
        try writeRecord(event.bytes)
    }

    deinit {
        if fd >= 0 { _ = POSIX.close(fd) }
        if let temporary, !finished { unlink(temporary) }
    }
    private var finished = false

    /// Appends the event of one iteration (step = the record's iteration).
    public func write(_ record: IterationRecord, wallTime: Double = Date().timeIntervalSince1970) throws {
        try writeEvent(record, wallTime: wallTime)
    }

    /// Appends the event of the iteration just run, read in place from the
    /// core (as `TrainingRun` does).
    public func write(_ record: RecordView, wallTime: Double = Date().timeIntervalSince1970) throws {
        try writeEvent(record, wallTime: wallTime)
    }

    private func writeEvent<Record: RecordValues>(_ record: Record, wallTime: Double) throws {
        var values: [(String, Double)] = [("loss/batch", record.batchLoss)]
        let v = record.train
        if v.subintervals > 0 {
            values += scalars(v, prefix: "", cumulative: &cumulative, total: &cumulativeTotal)
            values += groupScalars(v, prefix: "", cumulative: &groupCumulative)
        }
        if let validation = record.validation {
            values += scalars(validation, prefix: "validation/", cumulative: &validationCumulative,
                              total: &validationCumulativeTotal)
            values += groupScalars(validation, prefix: "validation/", cumulative: &validationGroupCumulative)
        }
        var summary = Protobuf()
        for (tag, value) in values {
            var entry = Protobuf()
            entry.string(1, tag)
            entry.float(2, Float(value))
            summary.message(1, entry)
        }
        if v.subintervals > 0 { histograms(v, prefix: "", into: &summary) }
        if let validation = record.validation, validation.subintervals > 0 {
            histograms(validation, prefix: "validation/", into: &summary)
        }
        var event = Protobuf()
        event.double(1, wallTime)
        event.varint(2, record.iteration)
        event.message(5, summary)
        try writeRecord(event.bytes)
    }

    /// Closes the file; when written whole, syncs it and moves it to
    /// `path` (refusing to replace a file that appeared there meanwhile).
    public func close() throws {
        guard fd >= 0 else { return }
        let descriptor = fd
        fd = -1
        func failure(_ file: String, _ what: String) -> LCAError {
            let saved = errno
            return LCAError(code: .io, message: "\(file): \(what): \(String(cString: strerror(saved)))", systemError: saved)
        }
        if let temporary, fsync(descriptor) != 0, errno != EINVAL {
            let error = failure(temporary, "write failed")
            _ = POSIX.close(descriptor)
            throw error
        }
        if POSIX.close(descriptor) != 0 { throw failure(temporary ?? path, "close failed") }
        if let temporary {
            // link fails where a file exists: nothing is ever replaced (a
            // file system without hard links gets a rename onto a free name)
            if link(temporary, path) == 0 {
                unlink(temporary)
            } else if errno == EEXIST || access(path, F_OK) == 0 || rename(temporary, path) != 0 {
                throw failure(path, "cannot create")
            }
            finished = true
        }
    }

    private func scalars<View: ViewValues>(_ v: View, prefix: String, cumulative: inout [Double], total: inout Double) -> [(String, Double)] {
        var values: [(String, Double)] = [
            (prefix + "loss/evaluation", v.lossAfter), (prefix + "lca/total", v.lcaTotal),
            (prefix + "lca/first_order", v.firstOrderTotal), (prefix + "residual", v.residual),
            (prefix + "subintervals", Double(v.subintervals)),
        ]
        var helped: UInt64 = 0, parameters = 0
        for (index, tensor) in tensors.enumerated() where index < v.tensorLCA.count {
            cumulative[index] += v.tensorLCA[index]
            values.append((prefix + "lca/" + tensor.name, v.tensorLCA[index]))
            values.append((prefix + "lca_cumulative/" + tensor.name, cumulative[index]))
            values.append((prefix + "helped_percent/" + tensor.name,
                           tensor.count > 0 ? 100 * Double(v.tensorHelped[index]) / Double(tensor.count) : 0))
            if index < v.tensorHelping.count, index < v.tensorHurting.count {
                values.append((prefix + "lca_helping/" + tensor.name, v.tensorHelping[index]))
                values.append((prefix + "lca_hurting/" + tensor.name, v.tensorHurting[index]))
            }
            if index < v.tensorUnmoved.count {
                values.append((prefix + "unmoved_percent/" + tensor.name,
                               tensor.count > 0 ? 100 * Double(v.tensorUnmoved[index]) / Double(tensor.count) : 0))
            }
            helped += v.tensorHelped[index]
            parameters += tensor.count
        }
        total += v.lcaTotal
        values.append((prefix + "lca_cumulative/total", total))
        values.append((prefix + "helped_percent/total", parameters > 0 ? 100 * Double(helped) / Double(parameters) : 0))
        return values
    }

    /// The loss groups' scalars (none when the view has no group fields).
    private func groupScalars<View: ViewValues>(_ v: View, prefix: String, cumulative: inout [Double]) -> [(String, Double)] {
        let t = tensors.count, g = groups.count
        guard g > 0, v.groupLCA.count == g * t, v.groupLossAfter.count == g, v.groupResidual.count == g else { return [] }
        var values: [(String, Double)] = []
        values.reserveCapacity(2 * g * (t + 2))
        for (k, name) in groups.enumerated() {
            var total = 0.0
            for (index, tensor) in tensors.enumerated() {
                let value = v.groupLCA[k * t + index]
                total += value
                cumulative[k * t + index] += value
                values.append((prefix + "group_lca/\(name)/\(tensor.name)", value))
                values.append((prefix + "group_lca_cumulative/\(name)/\(tensor.name)", cumulative[k * t + index]))
            }
            cumulative[g * t + k] += total
            values.append((prefix + "group_lca/\(name)/total", total))
            values.append((prefix + "group_lca_cumulative/\(name)/total", cumulative[g * t + k]))
            values.append((prefix + "group_loss/\(name)", v.groupLossAfter[k]))
            values.append((prefix + "group_residual/\(name)", v.groupResidual[k]))
        }
        return values
    }

    /// `lca_histogram/<tensor>` as `HistogramProto`s (Summary.Value field 5).
    private func histograms<View: ViewValues>(_ v: View, prefix: String, into summary: inout Protobuf) {
        let bins = ViewRecord.histogramBins, edges = ViewRecord.histogramEdges
        guard let floor = v.lcaFloor, v.tensorHistogram.count == tensors.count * 2 * bins, v.tensorZero.count == tensors.count else { return }
        // ascending right edges: helping bins 29 … 0, the floor bucket, hurting bins 0 … 29
        // (bins wholly inside the floor are empty: their limits collapse
        // onto ±floor, so that the limits stay ascending)
        var limits: [Double] = []
        for b in stride(from: bins - 1, through: 0, by: -1) { limits.append(b == 0 ? -floor : -max(edges[b - 1], floor)) }
        limits.append(floor)
        for b in 0..<bins { limits.append(b == bins - 1 ? Double.greatestFiniteMagnitude : max(edges[b], floor)) }
        for (index, tensor) in tensors.enumerated() {
            let first = index * 2 * bins
            var counts: [Double] = []
            for b in stride(from: bins - 1, through: 0, by: -1) { counts.append(Double(v.tensorHistogram[first + b])) }
            counts.append(Double(v.tensorZero[index]))
            for b in 0..<bins { counts.append(Double(v.tensorHistogram[first + bins + b])) }
            guard let low = counts.firstIndex(where: { $0 > 0 }), let high = counts.lastIndex(where: { $0 > 0 }) else { continue }
            var histogram = Protobuf()
            histogram.double(1, low == 0 ? limits[0] : limits[low - 1])
            histogram.double(2, high == limits.count - 1 ? limits[high - 1] : limits[high])
            histogram.double(3, counts.reduce(0, +))
            histogram.double(4, v.tensorLCA[index])
            histogram.double(5, 0)
            histogram.packedDoubles(6, limits)
            histogram.packedDoubles(7, counts)
            var entry = Protobuf()
            entry.string(1, prefix + "lca_histogram/" + tensor.name)
            entry.message(5, histogram)
            summary.message(1, entry)
        }
    }

    /// One TFRecord, written with a single write call.
    private func writeRecord(_ data: [UInt8]) throws {
        var length: [UInt8] = []
        let count = UInt64(data.count)
        for i in 0..<8 { length.append(UInt8(truncatingIfNeeded: count >> (8 * UInt64(i)))) }
        var bytes = length
        bytes += Self.littleEndian(CRC32C.masked(length))
        bytes += data
        bytes += Self.littleEndian(CRC32C.masked(data))
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { POSIX.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                let saved = errno
                throw LCAError(code: .io, message: "\(temporary ?? path): write failed: \(String(cString: strerror(saved)))", systemError: saved)
            }
            offset += n
        }
    }

    private static func littleEndian(_ value: UInt32) -> [UInt8] {
        (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * UInt32($0))) }
    }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord uses
/// it, with TensorFlow's mask: ((crc >> 15) | (crc << 17)) + 0xA282EAD8.
public enum CRC32C {
    private static let table: [UInt32] = (0..<256).map { index -> UInt32 in
        var crc = UInt32(index)
        for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        return crc
    }

    /// The CRC-32C of bytes ("123456789" gives 0xE3069283).
    public static func checksum<Bytes: Sequence>(_ bytes: Bytes) -> UInt32 where Bytes.Element == UInt8 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }

    /// The masked CRC-32C that TFRecord stores.
    public static func masked<Bytes: Sequence>(_ bytes: Bytes) -> UInt32 where Bytes.Element == UInt8 {
        let crc = checksum(bytes)
        return ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
    }
}

/// The few protobuf wire-format encodings an Event needs.
struct Protobuf {
    var bytes: [UInt8] = []

    mutating func key(_ field: Int, _ wireType: UInt64) { raw(UInt64(field) << 3 | wireType) }

    mutating func raw(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func varint(_ field: Int, _ value: UInt64) {
        key(field, 0)
        raw(value)
    }

    mutating func double(_ field: Int, _ value: Double) {
        key(field, 1)
        let bits = value.bitPattern
        for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: bits >> (8 * UInt64(i)))) }
    }

    mutating func float(_ field: Int, _ value: Float) {
        key(field, 5)
        let bits = value.bitPattern
        for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: bits >> (8 * UInt32(i)))) }
    }

    mutating func packedDoubles(_ field: Int, _ values: [Double]) {
        key(field, 2)
        raw(UInt64(8 * values.count))
        for value in values {
            let bits = value.bitPattern
            for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: bits >> (8 * UInt64(i)))) }
        }
    }

    mutating func string(_ field: Int, _ text: String) {
        key(field, 2)
        let utf8 = Array(text.utf8)
        raw(UInt64(utf8.count))
        bytes += utf8
    }

    mutating func message(_ field: Int, _ inner: Protobuf) {
        key(field, 2)
        raw(UInt64(inner.bytes.count))
        bytes += inner.bytes
    }
}
