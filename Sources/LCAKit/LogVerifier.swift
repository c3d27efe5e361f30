import Foundation

/// Checks a log's internal consistency record by record (docs/log-format.md,
/// "Invariants a reader can check"), for `lca verify` and for scripts.
///
/// For every record and view: iterations numbered 1, 2, 3, …; `lca_total`
/// equal to the per-tensor `lca` added in tensor order, bit for bit (and the
/// same for `first_order_total`); `residual` equal to `loss_after −
/// loss_before − lca_total` bit for bit; `loss_before` equal to the previous
/// record's `loss_after`; `helped + hurt + zero` equal to each tensor's
/// size; `|residual|` within the run's threshold unless flagged; the
/// sub-interval count one of 2, 4, 8, 16, 32; per-unit sums of each group
/// equal to its tensors' sum within rounding (relative 1e-9); and, when
/// `maxResidual` is given, `|residual| ≤ maxResidual` for every record.
///
/// ```swift
/// let report = try LogVerifier.verify(try LogStream(path: "run/lca.log"))
/// if let failure = report.failure { print("iteration \(failure.iteration): \(failure.message)") }
/// ```
public enum LogVerifier {
    /// The first inconsistency found.
    public struct Failure: Sendable, Hashable, Error, CustomStringConvertible {
        /// The iteration of the failing record.
        public var iteration: UInt64
        /// What does not agree.
        public var message: String
        /// "iteration N: message".
        public var description: String { "iteration \(iteration): \(message)" }
    }

    /// The outcome of a verification.
    public struct Report: Sendable, Hashable {
        /// Records checked (up to and including a failing one).
        public var records = 0
        /// Largest |residual| seen (training view).
        public var maxAbsResidual = 0.0
        /// Largest |residual| seen in the validation view.
        public var maxAbsValidationResidual = 0.0
        /// Records whose residual was flagged above the threshold.
        public var flagged = 0
        /// Bytes of a partial record at the end (ignored).
        public var partialBytes = 0
        /// The first failure, or nil when every check passed.
        public var failure: Failure?
    }

    /// Reads the stream to its end (or its first failure) and reports.
    public static func verify(_ stream: LogStream, maxResidual: Double? = nil) throws -> Report {
        let header = stream.header
        let lca = header.config?.lca ?? true
        let threshold = header.config?.lcaThreshold
        // the tensors of each unit group: those named "<group>.…"
        let groups = (header.units ?? []).map { group in
            (group, header.tensors.indices.filter { index in
                group.tensors.map { $0.contains(header.tensors[index].name) }
                    ?? header.tensors[index].name.hasPrefix(group.group + ".")
            })
        }
        var report = Report()
        var previous: IterationRecord?
        while let record = try stream.next() {
            report.records += 1
            func fail(_ message: String) -> Report {
                var failed = report
                failed.failure = Failure(iteration: record.iteration, message: message)
                return failed
            }
            if record.iteration != UInt64(report.records) {
                return fail("record \(report.records - 1) is numbered \(record.iteration), expected \(report.records)")
            }
            guard lca else { previous = record; continue }
            var views = [("", record.train, previous?.train)]
            if let validation = record.validation { views.append(("validation ", validation, previous?.validation)) }
            for (name, v, before) in views {
                let sum = v.tensorLCA.reduce(0, +)
                if sum != v.lcaTotal {
                    return fail("\(name)lca_total \(v.lcaTotal) != Σ per-tensor lca \(sum) (difference \(v.lcaTotal - sum))")
                }
                let firstOrder = v.tensorFirstOrder.reduce(0, +)
                if firstOrder != v.firstOrderTotal {
                    return fail("\(name)first_order_total \(v.firstOrderTotal) != Σ per-tensor first_order \(firstOrder)")
                }
                let residual = v.lossAfter - v.lossBefore - v.lcaTotal
                if residual != v.residual {
                    return fail("\(name)residual \(v.residual) != loss_after − loss_before − lca_total = \(residual)")
                }
                if let before, before.lossAfter != v.lossBefore {
                    return fail("\(name)loss_before \(v.lossBefore) != previous loss_after \(before.lossAfter)")
                }
                for (index, tensor) in header.tensors.enumerated() {
                    let (partial, o1) = v.tensorHelped[index].addingReportingOverflow(v.tensorHurt[index])
                    let (counted, o2) = partial.addingReportingOverflow(v.tensorZero[index])
                    if o1 || o2 {
                        return fail("\(name)\(tensor.name): helped \(v.tensorHelped[index]) + hurt \(v.tensorHurt[index]) + zero \(v.tensorZero[index]) overflows, the tensor has \(tensor.count) parameters")
                    }
                    if counted != UInt64(tensor.count) {
                        return fail("\(name)\(tensor.name): helped + hurt + zero = \(counted), the tensor has \(tensor.count) parameters")
                    }
                }
                if !Core.isValidSubintervalCap(v.subintervals) {
                    return fail("\(name)\(v.subintervals) sub-intervals, expected \(Core.subintervalChoices)")
                }
                if let threshold, !(abs(v.residual) <= threshold) && !v.residualAboveThreshold {
                    return fail("\(name)|residual| \(abs(v.residual)) > threshold \(threshold) and not flagged")
                }
                if let maxResidual, !(abs(v.residual) <= maxResidual) {
                    return fail("\(name)|residual| \(abs(v.residual)) > --max-residual \(maxResidual)")
                }
                if !v.unitLCA.isEmpty {
                    for (group, members) in groups {
                        let units = v.unitLCA[group.offset..<(group.offset + group.units)]
                        let unitSum = units.reduce(0, +), scale = units.reduce(0) { $0 + abs($1) }
                        let tensorSum = members.reduce(0) { $0 + v.tensorLCA[$1] }
                        if abs(unitSum - tensorSum) > 1e-9 * max(scale, abs(tensorSum)) {
                            return fail("\(name)Σ unit LCA of \(group.group) \(unitSum) != Σ of its tensors \(tensorSum)")
                        }
                    }
                }
                if name.isEmpty {
                    report.maxAbsResidual = max(report.maxAbsResidual, abs(v.residual))
                    if v.residualAboveThreshold { report.flagged += 1 }
                } else {
                    report.maxAbsValidationResidual = max(report.maxAbsValidationResidual, abs(v.residual))
                }
            }
            previous = record
        }
        report.partialBytes = stream.partialBytes
        return report
    }
}
