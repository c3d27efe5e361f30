import Foundation
import LCAKit
import XCTest

/// A log with loss-group fields (issue 15) made from a real log without
/// them, for the readers' tests independently of the writer: the header
/// gains `groups` and the group fields of each view, every record its
/// group values, chosen to satisfy every invariant `lca verify` checks
/// (docs/log-format.md): Σ_g group_lca = lca (the last group takes the
/// rest, so only rounding separates them), group losses that chain and
/// whose (n_g/N)-weighted sum is the view's loss, residuals recomputed as
/// the format defines them. Groups learn at different rates and one can
/// hurt, so the figures have something to show.
struct GroupedLogFixture {
    /// The values written, per record and view (index 0 training, 1
    /// validation), as the reader should return them.
    struct Values: Equatable {
        var groupLCA: [Double] = [], lossBefore: [Double] = [], lossAfter: [Double] = []
        var residual: [Double] = [], flags: [UInt32] = []
    }

    var names: [String]
    /// Examples per group of the evaluation set; nil: split evenly.
    var examples: [Int]?
    /// Lets a test damage the values before they are written (record
    /// index, view index, values).
    var tamper: (Int, Int, inout Values) -> Void = { _, _, _ in }
    /// Lets a test damage the header (its `groups`, its `fields`).
    var tamperHeader: (inout [String: Any]) -> Void = { _ in }

    /// What was written: records × views.
    private(set) var written: [[Values]] = []

    /// Writes `output` from the log `input` (which must not have groups).
    mutating func write(from input: URL, to output: URL) throws {
        let stream = try LogStream(path: input.path)
        let header = stream.header
        XCTAssertNil(header.groups, "the input already has groups")
        var json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(stream.headerText.utf8)) as? [String: Any])
        let g = names.count, t = header.tensors.count
        func split(_ n: Int) -> [Int] { (0..<g).map { n / g + ($0 < n % g ? 1 : 0) } }
        let evaluation = examples ?? split(header.data?.evaluation ?? 0)
        let validation = split(header.data?.validation ?? 0)
        var groups: [String: Any] = ["source": "class", "names": names, "examples": evaluation]
        if header.hasValidation { groups["validation_examples"] = validation }
        json["groups"] = groups
        var fields = try XCTUnwrap(json["fields"] as? [[String: Any]])
        var offset = header.recordSize
        let prefixes = header.hasValidation ? ["", "val_"] : [""]
        for prefix in prefixes {
            for (name, type, count) in [("group_lca", "<f8", g * t), ("group_loss_before", "<f8", g), ("group_loss_after", "<f8", g),
                                        ("group_residual", "<f8", g), ("group_flags", "<u4", g)] + (g % 2 == 1 ? [("group_reserved", "<u4", 1)] : []) {
                fields.append(["name": prefix + name, "type": type, "offset": offset, "count": count])
                offset += count * (type == "<u4" ? 4 : 8)
            }
        }
        json["fields"] = fields
        json["record_size"] = offset
        json.removeValue(forKey: "record_dtype")
        tamperHeader(&json)
        var text = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
        while (24 + text.count) % 8 != 0 { text.append(0x20) }
        var out = Data([0x89, 0x4C, 0x43, 0x41, 0x0D, 0x0A, 0x1A, 0x0A])
        for value in [2, text.count, offset, 0] { out.append(contentsOf: (0..<4).map { UInt8((value >> (8 * $0)) & 0xFF) }) }
        out += text
        let threshold = header.config?.lcaThreshold ?? 1e-3
        var chained: [[Double]] = prefixes.map { _ in [] }
        written = []
        var index = 0
        while let raw = try stream.nextRawRecord() {
            let record = stream.decode(raw)
            out.append(contentsOf: raw)
            var views: [Values] = []
            for (viewIndex, view) in ([record.train] + (record.validation.map { [$0] } ?? [])).enumerated() {
                let n = viewIndex == 0 ? evaluation : validation
                var values = Self.values(view, examples: n, iteration: Int(record.iteration), previous: chained[viewIndex], threshold: threshold)
                chained[viewIndex] = values.lossAfter
                tamper(index, viewIndex, &values)
                var bytes = Data()
                for d in values.groupLCA + values.lossBefore + values.lossAfter + values.residual {
                    bytes.append(contentsOf: (0..<8).map { UInt8((d.bitPattern >> (8 * UInt64($0))) & 0xFF) })
                }
                for f in values.flags + (g % 2 == 1 ? [0] : []) { bytes.append(contentsOf: (0..<4).map { UInt8((f >> (8 * UInt32($0))) & 0xFF) }) }
                out += bytes
                views.append(values)
            }
            written.append(views)
            index += 1
        }
        try out.write(to: output)
    }

    /// One view's group values (before any tampering).
    static func values(_ v: ViewRecord, examples n: [Int], iteration: Int, previous: [Double], threshold: Double) -> Values {
        let g = n.count, t = v.tensorLCA.count
        let total = Double(n.reduce(0, +))
        let w = n.map { total > 0 ? Double($0) / total : 0 }
        let last = n.lastIndex { $0 > 0 } ?? 0
        var values = Values()
        values.groupLCA = [Double](repeating: 0, count: g * t)
        for tensor in 0..<t {
            var rest = v.tensorLCA[tensor]
            for k in 0..<g where n[k] > 0 && k != last {
                // group k learns early (k small) or late, and hurts now and then
                let rate = 1 + 0.8 * sin(1.7 * Double(k) + 0.9 * Double(tensor) + 0.35 * Double(iteration) * Double(k + 1) / Double(g))
                let share = w[k] * rate
                values.groupLCA[k * t + tensor] = v.tensorLCA[tensor] * share
                rest -= v.tensorLCA[tensor] * share
            }
            values.groupLCA[last * t + tensor] = rest
        }
        // the losses: a spread around the view's loss with weighted mean 0
        let spread = (0..<g).map { 0.05 * Double($0) }
        let mean = zip(w, spread).reduce(0) { $0 + $1.0 * $1.1 }
        for k in 0..<g {
            guard n[k] > 0 else {
                values.lossBefore.append(0); values.lossAfter.append(0); values.residual.append(0); values.flags.append(0)
                continue
            }
            let before = previous.isEmpty ? v.lossBefore + spread[k] - mean : previous[k]
            let lca = values.groupLCA[(k * t)..<((k + 1) * t)].reduce(0, +)
            let after = before + (lca + w[k] * v.residual) / w[k]
            let residual = w[k] * (after - before) - lca
            values.lossBefore.append(before)
            values.lossAfter.append(after)
            values.residual.append(residual)
            values.flags.append(abs(residual) > threshold ? 1 : 0)
        }
        return values
    }
}
