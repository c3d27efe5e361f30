internal import CLCA

/// The LCA of one iteration on one evaluation set (the training split, or
/// the validation split), with its per-tensor values copied into Swift
/// arrays indexed like `Model.tensors`.
public struct ViewRecord: Sendable, Hashable, Codable {
    /// L(θ_t): evaluation-set loss before the step.
    public var lossBefore: Double
    /// L(θ_{t+1}): evaluation-set loss after the step.
    public var lossAfter: Double
    /// Σ_i LCA_{t,i}, equal to the sum of `tensorLCA` (same float64 order).
    public var lcaTotal: Double
    /// Σ_i Δθ_i · ∇L(θ_t)_i, the cheap first-order estimate.
    public var firstOrderTotal: Double
    /// lossAfter − lossBefore − lcaTotal, in nats.
    public var residual: Double
    /// Simpson sub-intervals used: 2 … 32.
    public var subintervals: Int
    /// True when refinement reached its cap and |residual| stayed above the
    /// threshold.
    public var residualAboveThreshold: Bool
    /// LCA summed per tensor (negative = the tensor helped).
    public var tensorLCA: [Double]
    /// First-order LCA summed per tensor.
    public var tensorFirstOrder: [Double]
    /// Parameters that helped, per tensor: LCA < −`lcaFloor` (log version
    /// 2), LCA < 0 in a version-1 log.
    public var tensorHelped: [UInt64]
    /// Parameters that hurt, per tensor: LCA > `lcaFloor` (LCA > 0 in
    /// version 1).
    public var tensorHurt: [UInt64]
    /// Parameters within the floor, per tensor: |LCA| ≤ `lcaFloor`, exact
    /// zeros included (LCA == 0 in version 1).
    public var tensorZero: [UInt64]
    /// The zero floor f_t = 2⁻³⁰ · max_i |LCA_{t,i}| of the iteration and
    /// view (docs/log-format.md, version 2); nil for a version-1 log.
    public var lcaFloor: Double?
    /// Per tensor: Σ of the LCA_{t,i} < −f_t (≤ 0), the helping part of
    /// `tensorLCA`; empty when absent (a version-1 log).
    public var tensorHelping: [Double]
    /// Per tensor: Σ of the LCA_{t,i} > f_t (≥ 0); `tensorLCA −
    /// tensorHelping − tensorHurting` is the within-floor rest. Empty when
    /// absent.
    public var tensorHurting: [Double]
    /// Per tensor: parameters with Δθ_i = 0 exactly (a subset of
    /// `tensorZero`); empty when absent.
    public var tensorUnmoved: [UInt64]
    /// Counts of |LCA_{t,i}| beyond the floor in the 30 absolute bins of
    /// `LogReader.histogramEdges`: T · 2 · 30 values, tensor-major, each
    /// tensor's 30 helping bins then its 30 hurting bins. Empty when absent
    /// (a version-1 log, or `TrainingConfiguration.lcaHistogram` false).
    public var tensorHistogram: [UInt32]
    /// Per-unit LCA (neurons, channels: incoming weights plus bias), indexed
    /// like `Model.unitGroups` (group `g`'s unit `u` at `offset + u`), when
    /// the run has per-unit views on (`TrainingConfiguration.lcaUnits`);
    /// empty otherwise.
    public var unitLCA: [Double]
    /// Loss groups (issue 15, `TrainingConfiguration.exampleGroups`): per
    /// group g and tensor t, at `g * T + t` (group-major, G · T values), the
    /// LCA of the group's share (n_g/N)·L_g of the loss; Σ over groups is
    /// `tensorLCA` within rounding. Empty without groups.
    public var groupLCA: [Double]
    /// Each group's own mean loss L_g before and after the step (0 for a
    /// group without examples in the view); empty without groups.
    public var groupLossBefore: [Double]
    public var groupLossAfter: [Double]
    /// Per group: (n_g/N)(L_g after − L_g before) − Σ_t group LCA.
    public var groupResidual: [Double]
    /// Per group: bit 0 = its |residual| is above the threshold.
    public var groupFlags: [UInt32]

    /// G: the number of loss groups (0 without).
    public var groupCount: Int { groupLossBefore.count }

    /// Group g's LCA per tensor (T values), or nil when there is no such group.
    public func groupLCA(group g: Int) -> ArraySlice<Double>? {
        let t = tensorLCA.count
        guard g >= 0, g < groupCount, (g + 1) * t <= groupLCA.count else { return nil }
        return groupLCA[(g * t)..<((g + 1) * t)]
    }

    /// lossAfter − lossBefore.
    public var lossChange: Double { lossAfter - lossBefore }

    /// Number of parameters that helped (`tensorHelped`), over all tensors.
    public var helpedCount: UInt64 { tensorHelped.reduce(0, &+) }

    init(_ v: lca_view_record, tensorCount: Int, unitCount: Int = 0) {
        lossBefore = v.loss_before
        lossAfter = v.loss_after
        lcaTotal = v.lca_total
        firstOrderTotal = v.first_order_total
        residual = v.residual
        subintervals = Int(v.subintervals)
        residualAboveThreshold = v.flags & UInt32(LCA_FLAG_RESIDUAL_ABOVE_THRESHOLD) != 0
        func copy<T: Numeric>(_ pointer: UnsafePointer<T>?) -> [T] {
            guard let pointer else { return [T](repeating: 0, count: tensorCount) }
            return Array(UnsafeBufferPointer(start: pointer, count: tensorCount))
        }
        tensorLCA = copy(v.tensor_lca)
        tensorFirstOrder = copy(v.tensor_first_order)
        tensorHelped = copy(v.tensor_helped)
        tensorHurt = copy(v.tensor_hurt)
        tensorZero = copy(v.tensor_zero)
        lcaFloor = v.lca_floor
        // version-2 arrays: empty when the core gave none (lca_attribute)
        func present<T: Numeric>(_ pointer: UnsafePointer<T>?) -> [T] {
            pointer.map { Array(UnsafeBufferPointer(start: $0, count: tensorCount)) } ?? []
        }
        tensorHelping = present(v.tensor_helping)
        tensorHurting = present(v.tensor_hurting)
        tensorUnmoved = present(v.tensor_unmoved)
        if let histogram = v.tensor_histogram {
            tensorHistogram = Array(UnsafeBufferPointer(start: histogram, count: tensorCount * 2 * ViewRecord.histogramBins))
        } else {
            tensorHistogram = []
        }
        if let units = v.unit_lca, unitCount > 0 {
            unitLCA = Array(UnsafeBufferPointer(start: units, count: unitCount))
        } else {
            unitLCA = []
        }
        let groups = Int(v.group_count)
        func grouped<T>(_ pointer: UnsafePointer<T>?, _ count: Int) -> [T] {
            guard let pointer, groups > 0 else { return [] }
            return Array(UnsafeBufferPointer(start: pointer, count: count))
        }
        groupLCA = grouped(v.group_lca, groups * tensorCount)
        groupLossBefore = grouped(v.group_loss_before, groups)
        groupLossAfter = grouped(v.group_loss_after, groups)
        groupResidual = grouped(v.group_residual, groups)
        groupFlags = grouped(v.group_flags, groups)
    }

    /// Makes a record from its values (for tests and tools).
    public init(lossBefore: Double, lossAfter: Double, lcaTotal: Double, firstOrderTotal: Double,
                residual: Double, subintervals: Int, residualAboveThreshold: Bool,
                tensorLCA: [Double], tensorFirstOrder: [Double], tensorHelped: [UInt64],
                tensorHurt: [UInt64], tensorZero: [UInt64], unitLCA: [Double] = [],
                lcaFloor: Double? = nil, tensorHelping: [Double] = [], tensorHurting: [Double] = [],
                tensorUnmoved: [UInt64] = [], tensorHistogram: [UInt32] = [],
                groupLCA: [Double] = [], groupLossBefore: [Double] = [], groupLossAfter: [Double] = [],
                groupResidual: [Double] = [], groupFlags: [UInt32] = []) {
        self.lossBefore = lossBefore
        self.lossAfter = lossAfter
        self.lcaTotal = lcaTotal
        self.firstOrderTotal = firstOrderTotal
        self.residual = residual
        self.subintervals = subintervals
        self.residualAboveThreshold = residualAboveThreshold
        self.tensorLCA = tensorLCA
        self.tensorFirstOrder = tensorFirstOrder
        self.tensorHelped = tensorHelped
        self.tensorHurt = tensorHurt
        self.tensorZero = tensorZero
        self.unitLCA = unitLCA
        self.lcaFloor = lcaFloor
        self.tensorHelping = tensorHelping
        self.tensorHurting = tensorHurting
        self.tensorUnmoved = tensorUnmoved
        self.tensorHistogram = tensorHistogram
        self.groupLCA = groupLCA
        self.groupLossBefore = groupLossBefore
        self.groupLossAfter = groupLossAfter
        self.groupResidual = groupResidual
        self.groupFlags = groupFlags
    }

    /// Bins per tensor and sign of `tensorHistogram` (30).
    public static let histogramBins = Int(LCA_HISTOGRAM_BINS)
    /// The core's 29 finite bin edges, 1e-14, 10^-13.5, …, 1 (the same
    /// doubles as a version-2 header's `lca_histogram.edges`): bin 0 is
    /// (floor, 1e-14), bin k is [edges[k-1], edges[k]), bin 29 is [1, ∞).
    public static let histogramEdges: [Double] = Array(UnsafeBufferPointer(start: lca_histogram_edges(), count: histogramBins - 1))

    /// Tensor `t`'s 30 helping bins (`hurting` false) or hurting bins, or
    /// nil without a histogram.
    public func histogram(tensor t: Int, hurting: Bool) -> ArraySlice<UInt32>? {
        let b = ViewRecord.histogramBins
        let start = (2 * t + (hurting ? 1 : 0)) * b
        guard t >= 0, start + b <= tensorHistogram.count else { return nil }
        return tensorHistogram[start..<(start + b)]
    }
}

/// What one training iteration produced: record t describes the step
/// θ_{t−1} → θ_t.
public struct IterationRecord: Sendable, Hashable, Codable {
    /// 1-based iteration number.
    public var iteration: UInt64
    /// 0-based epoch of the minibatch.
    public var epoch: Int
    /// Minibatch data loss at θ_{t−1}, before the step.
    public var batchLoss: Double
    /// LCA on the evaluation set (the training split or its subset).
    public var train: ViewRecord
    /// LCA on the validation split, when that view is on.
    public var validation: ViewRecord?

    init(_ r: lca_record, tensorCount: Int, unitCount: Int = 0) {
        iteration = r.iteration
        epoch = Int(r.epoch)
        batchLoss = r.batch_loss
        train = ViewRecord(r.train, tensorCount: tensorCount, unitCount: unitCount)
        validation = r.has_validation != 0
            ? ViewRecord(r.validation, tensorCount: tensorCount, unitCount: unitCount) : nil
    }

    /// Makes a record from its values (for tests and tools).
    public init(iteration: UInt64, epoch: Int, batchLoss: Double, train: ViewRecord, validation: ViewRecord?) {
        self.iteration = iteration
        self.epoch = epoch
        self.batchLoss = batchLoss
        self.train = train
        self.validation = validation
    }
}

/// The record of the iteration just run, borrowed from the core: what the
/// core wrote to the log, read in place with no copy. Valid only while the
/// callback that received it runs (the next step overwrites it); `copy()`
/// makes an `IterationRecord` to keep.
public struct RecordView {
    let r: UnsafePointer<lca_record>
    /// The model's tensors, in record order.
    public let tensors: [TensorInfo]
    /// The unit groups of `unitLCA` (empty without per-unit views).
    public let unitGroups: [UnitGroup]

    /// 1-based iteration number.
    public var iteration: UInt64 { r.pointee.iteration }
    /// 0-based epoch of the minibatch.
    public var epoch: Int { Int(r.pointee.epoch) }
    /// Minibatch data loss at θ_{t−1}.
    public var batchLoss: Double { r.pointee.batch_loss }
    /// LCA on the evaluation set (the training split or its subset).
    public var train: View { view(r.pointee.train) }
    /// LCA on the validation split, when that view is on.
    public var validation: View? { r.pointee.has_validation != 0 ? view(r.pointee.validation) : nil }

    private func view(_ v: lca_view_record) -> View {
        View(v: v, tensorCount: tensors.count, unitCount: unitGroups.reduce(0) { $0 + $1.units })
    }

    /// The training view's LCA of the tensor with this name, or nil.
    public subscript(lca tensor: String) -> Double? {
        tensors.firstIndex { $0.name == tensor }.map { train.tensorLCA[$0] }
    }

    /// The training view's LCA per tensor name.
    public var lcaByTensor: [String: Double] {
        Dictionary(uniqueKeysWithValues: zip(tensors.map(\.name), train.tensorLCA))
    }

    /// The training view's per-unit LCA of one layer ("fc1"), when per-unit
    /// views are on.
    public func unitLCA(group name: String) -> [Double]? {
        guard let group = unitGroups.first(where: { $0.group == name }) else { return nil }
        let units = train.unitLCA
        guard units.count >= group.offset + group.units else { return nil }
        return Array(units[group.offset..<(group.offset + group.units)])
    }

    /// The record's values in Swift arrays, to keep after the callback.
    public func copy() -> IterationRecord {
        IterationRecord(r.pointee, tensorCount: tensors.count, unitCount: unitGroups.reduce(0) { $0 + $1.units })
    }

    /// One view of a borrowed record: the core's values read in
    /// place, its per-tensor arrays as buffers into the core's memory. Valid
    /// only while the callback that received it runs; `copy()` keeps it.
    public struct View {
        let v: lca_view_record
        let tensorCount: Int
        let unitCount: Int

        /// L(θ_t): evaluation-set loss before the step.
        public var lossBefore: Double { v.loss_before }
        /// L(θ_{t+1}): evaluation-set loss after the step.
        public var lossAfter: Double { v.loss_after }
        /// Σ_i LCA_{t,i}.
        public var lcaTotal: Double { v.lca_total }
        /// Σ_i Δθ_i · ∇L(θ_t)_i.
        public var firstOrderTotal: Double { v.first_order_total }
        /// lossAfter − lossBefore − lcaTotal.
        public var residual: Double { v.residual }
        /// Simpson sub-intervals used (0 when LCA is off).
        public var subintervals: Int { Int(v.subintervals) }
        /// True when refinement reached its cap above the threshold.
        public var residualAboveThreshold: Bool { v.flags & UInt32(LCA_FLAG_RESIDUAL_ABOVE_THRESHOLD) != 0 }
        /// LCA summed per tensor, in `Model.tensors` order.
        public var tensorLCA: UnsafeBufferPointer<Double> { buffer(v.tensor_lca, tensorCount) }
        /// First-order LCA per tensor.
        public var tensorFirstOrder: UnsafeBufferPointer<Double> { buffer(v.tensor_first_order, tensorCount) }
        /// Parameters with LCA < −`lcaFloor`, per tensor.
        public var tensorHelped: UnsafeBufferPointer<UInt64> { buffer(v.tensor_helped, tensorCount) }
        /// Parameters with LCA > `lcaFloor`, per tensor.
        public var tensorHurt: UnsafeBufferPointer<UInt64> { buffer(v.tensor_hurt, tensorCount) }
        /// Parameters with |LCA| ≤ `lcaFloor`, per tensor.
        public var tensorZero: UnsafeBufferPointer<UInt64> { buffer(v.tensor_zero, tensorCount) }
        /// The zero floor f_t of the iteration and view (the core always
        /// writes version 2).
        public var lcaFloor: Double? { v.lca_floor }
        /// Σ of the LCA < −f_t per tensor (count 0 when absent).
        public var tensorHelping: UnsafeBufferPointer<Double> { buffer(v.tensor_helping, tensorCount) }
        /// Σ of the LCA > f_t per tensor (count 0 when absent).
        public var tensorHurting: UnsafeBufferPointer<Double> { buffer(v.tensor_hurting, tensorCount) }
        /// Parameters with Δθ_i = 0 exactly, per tensor (count 0 when absent).
        public var tensorUnmoved: UnsafeBufferPointer<UInt64> { buffer(v.tensor_unmoved, tensorCount) }
        /// The |LCA| histogram, T · 2 · 30 counts as in
        /// `ViewRecord.tensorHistogram` (count 0 when off).
        public var tensorHistogram: UnsafeBufferPointer<UInt32> {
            buffer(v.tensor_histogram, tensorCount * 2 * ViewRecord.histogramBins)
        }
        /// Per-unit LCA (empty without per-unit views).
        public var unitLCA: UnsafeBufferPointer<Double> { buffer(v.unit_lca, unitCount) }
        /// G, the number of loss groups (0 without).
        public var groupCount: Int { Int(v.group_count) }
        /// Per group and tensor (G · T, group-major), as `ViewRecord.groupLCA`.
        public var groupLCA: UnsafeBufferPointer<Double> { buffer(v.group_lca, groupCount * tensorCount) }
        /// Each group's mean loss before and after, its residual and flags.
        public var groupLossBefore: UnsafeBufferPointer<Double> { buffer(v.group_loss_before, groupCount) }
        public var groupLossAfter: UnsafeBufferPointer<Double> { buffer(v.group_loss_after, groupCount) }
        public var groupResidual: UnsafeBufferPointer<Double> { buffer(v.group_residual, groupCount) }
        public var groupFlags: UnsafeBufferPointer<UInt32> { buffer(v.group_flags, groupCount) }
        /// Number of parameters that helped (`tensorHelped`), over all tensors.
        public var helpedCount: UInt64 { tensorHelped.reduce(0, &+) }

        private func buffer<T>(_ pointer: UnsafePointer<T>?, _ count: Int) -> UnsafeBufferPointer<T> {
            UnsafeBufferPointer(start: pointer, count: pointer == nil ? 0 : count)
        }

        /// The view's values in Swift arrays.
        public func copy() -> ViewRecord { ViewRecord(v, tensorCount: tensorCount, unitCount: unitCount) }
    }
}

/// What the summary and TensorBoard read of a view:
/// met by the kept `ViewRecord` and the borrowed `RecordView.View`, so each
/// reader has one implementation for both.
protocol ViewValues {
    associatedtype Doubles: RandomAccessCollection<Double> where Doubles.Index == Int
    associatedtype Counts: RandomAccessCollection<UInt64> where Counts.Index == Int
    associatedtype Bins: RandomAccessCollection<UInt32> where Bins.Index == Int
    var lossBefore: Double { get }
    var lossAfter: Double { get }
    var lcaTotal: Double { get }
    var firstOrderTotal: Double { get }
    var residual: Double { get }
    var subintervals: Int { get }
    var residualAboveThreshold: Bool { get }
    var tensorLCA: Doubles { get }
    var tensorFirstOrder: Doubles { get }
    var tensorHelped: Counts { get }
    var tensorHelping: Doubles { get }
    var tensorHurting: Doubles { get }
    var tensorUnmoved: Counts { get }
    var tensorZero: Counts { get }
    var tensorHistogram: Bins { get }
    var lcaFloor: Double? { get }
    var groupLCA: Doubles { get }
    var groupLossAfter: Doubles { get }
    var groupResidual: Doubles { get }
}

/// What the readers read of a record (see `ViewValues`).
protocol RecordValues {
    associatedtype View: ViewValues
    var iteration: UInt64 { get }
    var batchLoss: Double { get }
    var train: View { get }
    var validation: View? { get }
}

extension ViewRecord: ViewValues {}
extension RecordView.View: ViewValues {}
extension IterationRecord: RecordValues {}
extension RecordView: RecordValues {}
