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
/// Version 2 adds (`checkVersion2`): `lca_floor` finite and ≥ 0;
/// `lca_helping` ≤ 0 and `lca_hurting` ≥ 0 (0 when nothing helped or
/// hurt); the within-floor rest `lca − lca_helping − lca_hurting` at most
/// `zero · lca_floor` plus the rounding of the three float64 sums;
/// `unmoved ≤ zero`; each tensor's helping (hurting) bins add up to its
/// `helped` (`hurt`) count, bins wholly inside the floor are empty, and
/// the sums lie within what the bins' edges allow. With loss groups
/// (`checkGroups`, issue 15): the header's group counts add up to the
/// evaluation set (and validation split); per tensor Σ_g `group_lca`
/// equals `lca` within `GroupFields.sumBound` (relative); per group the
/// recorded residual equals (n_g/N)·(L_g after − L_g before) − Σ_t
/// `group_lca` within `GroupFields.residualBound`, |residual| is above the
/// threshold exactly when its flag is set, `group_loss_before` chains to
/// the previous record's `group_loss_after` bit for bit, and Σ_g (n_g/N)
/// L_g equals the view's loss within `GroupFields.lossBound`; a group with
/// no examples has zero LCA and residual.
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
        /// Loss groups of the log (0 without groups).
        public var groups = 0
        /// Largest |Σ_g group_lca − lca| / its scale over tensors, records
        /// and views (the quantity `GroupFields.sumBound` bounds).
        public var maxGroupSumError = 0.0
        /// Largest |group_residual| (training view).
        public var maxAbsGroupResidual = 0.0
        /// Group residuals flagged above the threshold (groups × records,
        /// training view).
        public var groupsFlagged = 0
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
        report.groups = header.groups?.names.count ?? 0
        var previous: IterationRecord?
        if let problem = GroupFields.headerProblem(header) {
            report.failure = Failure(iteration: 0, message: "header: " + problem)
            return report
        }
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
                if let message = checkVersion2(v, header: header) { return fail(name + message) }
                if report.groups > 0 {
                    if let message = checkGroups(v, previous: before, header: header, validation: !name.isEmpty,
                                                 threshold: threshold, report: &report) {
                        return fail(name + message)
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

    /// The loss-group invariants of one view (see the type's comment), or
    /// nil; updates the report's group statistics.
    static func checkGroups(_ v: ViewRecord, previous: ViewRecord?, header: LogHeader, validation: Bool,
                            threshold: Double?, report: inout Report) -> String? {
        let names = GroupFields.names(header), g = names.count, t = header.tensors.count
        let field = (validation ? "val_" : "")
        guard v.groupCount == g, v.groupLCA.count == g * t, v.groupResidual.count == g, v.groupFlags.count == g else {
            // the training view must carry them; a validation view may not
            return validation && v.groupCount == 0 ? nil
                : "the header lists \(g) groups but the record has no \(field)group fields for them"
        }
        let examples = GroupFields.examples(header, validation: validation)
        // Σ_g group_lca = lca, per tensor
        for (index, tensor) in header.tensors.enumerated() {
            var sum = 0.0, magnitude = 0.0
            for k in 0..<g {
                let value = v.groupLCA[k * t + index]
                guard value.isFinite else { return "\(field)group_lca of group \(names[k]), \(tensor.name) is \(value)" }
                sum += value
                magnitude += abs(value)
            }
            let lca = v.tensorLCA[index]
            var scale = max(abs(lca), magnitude)
            if index < v.tensorHelping.count, index < v.tensorHurting.count {
                scale = max(scale, v.tensorHurting[index] - v.tensorHelping[index])
            }
            let error = abs(sum - lca)
            let relative = scale > 0 ? error / scale : (error == 0 ? 0 : .infinity)
            report.maxGroupSumError = max(report.maxGroupSumError, relative)
            // a tensor whose LCA is rounding throughout (a conv bias before
            // batch norm) may differ by rounding of rounding: allowed too
            let slack = Double(tensor.count) * (v.lcaFloor ?? 0) * GroupFields.floorSlack
            if !(relative <= GroupFields.sumBound) && !(error <= GroupFields.sumBound * scale + slack) {
                return "\(tensor.name): Σ over groups of \(field)group_lca \(sum) != lca \(lca) (difference \(sum - lca), "
                    + "\(relative) of the tensor's scale \(scale), allowed \(GroupFields.sumBound))"
            }
        }
        let n = examples ?? []
        let total = n.reduce(0, +)
        var weighted = (before: 0.0, after: 0.0)
        for (k, group) in names.enumerated() {
            let residual = v.groupResidual[k], flagged = v.groupResidualAboveThreshold(k)
            let lcaSum = v.groupTotalLCA(k)
            if k < n.count, n[k] == 0 {
                if lcaSum != 0 || residual != 0 || v.groupTensorLCA(k).contains(where: { $0 != 0 }) {
                    return "group \(group) has no examples but \(field)group_lca Σ \(lcaSum) and residual \(residual)"
                }
                continue
            }
            let before = v.groupLossBefore[k], after = v.groupLossAfter[k]
            guard before.isFinite, after.isFinite, residual.isFinite else {
                return "group \(group): \(field)group_loss_before \(before), group_loss_after \(after), group_residual \(residual): not finite"
            }
            if let previous, k < previous.groupLossAfter.count, previous.groupLossAfter[k] != before {
                return "group \(group): \(field)group_loss_before \(before) != previous group_loss_after \(previous.groupLossAfter[k])"
            }
            if let threshold {
                let above = abs(residual) > threshold
                if above && !flagged { return "group \(group): |\(field)group_residual| \(abs(residual)) > threshold \(threshold) and not flagged" }
                if flagged && !above { return "group \(group): flagged above the threshold \(threshold) with |\(field)group_residual| \(abs(residual))" }
            }
            guard k < n.count, total > 0 else { continue }
            let w = Double(n[k]) / Double(total)
            let recomputed = w * (after - before) - lcaSum
            let magnitude = w * (abs(after) + abs(before)) + v.groupTensorLCA(k).reduce(0) { $0 + abs($1) }
            if !(abs(recomputed - residual) <= GroupFields.residualBound * magnitude) {
                return "group \(group): \(field)group_residual \(residual) != (n_g/N)·(L_g after − L_g before) − Σ group_lca = \(recomputed) "
                    + "(n_g/N = \(n[k])/\(total))"
            }
            weighted.before += w * before
            weighted.after += w * after
            if !validation {
                report.maxAbsGroupResidual = max(report.maxAbsGroupResidual, abs(residual))
                if flagged { report.groupsFlagged += 1 }
            }
        }
        if total > 0 {
            for (what, sum, loss) in [("loss_before", weighted.before, v.lossBefore), ("loss_after", weighted.after, v.lossAfter)] {
                if !(abs(sum - loss) <= GroupFields.lossBound * max(abs(loss), abs(sum))) {
                    return "Σ_g (n_g/N)·\(field)group_\(what) \(sum) != \(field)\(what) \(loss) (difference \(sum - loss))"
                }
            }
        }
        return nil
    }

    /// The version-2 invariants of one view, or nil (also nil for a
    /// version-1 record, which has none of these fields).
    static func checkVersion2(_ v: ViewRecord, header: LogHeader) -> String? {
        guard let floor = v.lcaFloor else { return nil }
        guard floor.isFinite, floor >= 0 else { return "lca_floor \(floor) is not a finite number >= 0" }
        let t = header.tensors.count
        guard v.tensorHelping.count == t, v.tensorHurting.count == t, v.tensorUnmoved.count == t else {
            return "a version-2 record without lca_helping, lca_hurting or unmoved for each tensor"
        }
        let epsilon = Double.ulpOfOne / 2
        let bins = header.lcaHistogram?.bins ?? ViewRecord.histogramBins
        let edges = header.lcaHistogram?.edges ?? []
        for (index, tensor) in header.tensors.enumerated() {
            let helping = v.tensorHelping[index], hurting = v.tensorHurting[index]
            let helped = v.tensorHelped[index], hurt = v.tensorHurt[index], zero = v.tensorZero[index]
            guard helping <= 0, hurting >= 0 else {
                return "\(tensor.name): lca_helping \(helping) must be <= 0 and lca_hurting \(hurting) >= 0"
            }
            // a sum of negative doubles is negative: 0 exactly when none helped
            if (helped == 0) != (helping == 0) {
                return "\(tensor.name): lca_helping \(helping) with \(helped) parameters helped"
            }
            if (hurt == 0) != (hurting == 0) {
                return "\(tensor.name): lca_hurting \(hurting) with \(hurt) parameters hurt"
            }
            // |rest| ≤ zero·f, plus the rounding of three sums of at most
            // count terms each (n·ε of their absolute sums)
            let rest = v.tensorLCA[index] - helping - hurting
            let inside = Double(zero) * floor
            let absolute = hurting - helping + inside
            let allowed = inside + 3 * (Double(tensor.count) + 2) * epsilon * absolute
            if !(abs(rest) <= allowed) {
                return "\(tensor.name): lca − lca_helping − lca_hurting = \(rest), more than the \(zero) parameters within the floor \(floor) can hold (\(allowed) with rounding)"
            }
            if v.tensorUnmoved[index] > zero {
                return "\(tensor.name): unmoved \(v.tensorUnmoved[index]) > zero \(zero) (an unmoved parameter has LCA 0)"
            }
            guard !v.tensorHistogram.isEmpty else { continue }
            guard v.tensorHistogram.count == t * 2 * bins, edges.count == bins - 1 else {
                return "lca_histogram has \(v.tensorHistogram.count) counts, expected \(t * 2 * bins)"
            }
            for (side, count, sum) in [(0, helped, -helping), (1, hurt, hurting)] {
                let first = (2 * index + side) * bins
                let counts = v.tensorHistogram[first..<(first + bins)]
                let total = counts.reduce(UInt64(0)) { $0 + UInt64($1) }
                let what = side == 0 ? "helping" : "hurting"
                if total != count {
                    return "\(tensor.name): the \(what) histogram bins add up to \(total), expected \(side == 0 ? "helped" : "hurt") \(count)"
                }
                // bin b holds values in [lower_b, upper_b): lower_0 is the
                // floor (exclusive), upper_{B-1} is infinite
                var low = 0.0, high = 0.0
                for (b, n) in counts.enumerated() where n > 0 {
                    let lower = b == 0 ? floor : edges[b - 1]
                    let upper = b == bins - 1 ? Double.infinity : edges[b]
                    if upper <= floor {
                        return "\(tensor.name): \(what) histogram bin \(b) (below \(upper)) holds \(n) parameters, inside the floor \(floor)"
                    }
                    low += Double(n) * max(lower, floor)
                    high += Double(n) * upper
                }
                let slack = (Double(tensor.count) + 2) * epsilon * max(sum, low)
                if !(sum >= low - slack && sum <= high + slack) {
                    return "\(tensor.name): |lca_\(what)| \(sum) is outside [\(low), \(high)], what its histogram bins allow"
                }
            }
        }
        return nil
    }
}
