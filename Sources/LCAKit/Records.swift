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
    /// Parameters with LCA < 0, per tensor.
    public var tensorHelped: [UInt64]
    /// Parameters with LCA > 0, per tensor.
    public var tensorHurt: [UInt64]
    /// Parameters with LCA == 0, per tensor.
    public var tensorZero: [UInt64]
    /// Per-unit LCA (neurons, channels: incoming weights plus bias), indexed
    /// like `Model.unitGroups` (group `g`'s unit `u` at `offset + u`), when
    /// the run has per-unit views on (`TrainingConfiguration.lcaUnits`);
    /// empty otherwise.
    public var unitLCA: [Double]

    /// lossAfter − lossBefore.
    public var lossChange: Double { lossAfter - lossBefore }

    /// Number of parameters with LCA < 0, over all tensors.
    public var helpedCount: UInt64 { tensorHelped.reduce(0, +) }

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
        if let units = v.unit_lca, unitCount > 0 {
            unitLCA = Array(UnsafeBufferPointer(start: units, count: unitCount))
        } else {
            unitLCA = []
        }
    }

    /// Makes a record from its values (for tests and tools).
    public init(lossBefore: Double, lossAfter: Double, lcaTotal: Double, firstOrderTotal: Double,
                residual: Double, subintervals: Int, residualAboveThreshold: Bool,
                tensorLCA: [Double], tensorFirstOrder: [Double], tensorHelped: [UInt64],
                tensorHurt: [UInt64], tensorZero: [UInt64], unitLCA: [Double] = []) {
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
