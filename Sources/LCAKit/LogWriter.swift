internal import CLCA

/// Writes the binary LCA log of a run (format: docs/log-format.md): a
/// header describing the trainer's run, then one fixed-size record per
/// iteration, each written with a single write call.
///
/// ```swift
/// let log = try LogWriter(path: "run/lca.log", trainer: trainer)
/// try log.write(try trainer.step())
/// try log.close()
/// ```
public final class LogWriter {
    private var handle: OpaquePointer?
    private let tensorCount: Int
    // Staging storage for the per-tensor arrays of the C record, allocated
    // once: [train lca, train first order, validation lca, validation first
    // order] and [train helped, hurt, zero, validation helped, hurt, zero].
    private let doubles: UnsafeMutablePointer<Double>
    private let counts: UnsafeMutablePointer<UInt64>
    private let unitCount: Int
    private let units: UnsafeMutablePointer<Double>   // [train units, validation units]

    /// The path the log was opened at ("-" = standard output).
    public let path: String

    /// Opens the log at `path` ("-" = standard output) and writes its
    /// header. An existing file is replaced only once the header is
    /// complete.
    public convenience init(path: String, trainer: Trainer) throws {
        try self.init(path: path, trainer: trainer, open: lca_log_open)
    }

    /// Reopens the log of a run being resumed, to append to it. Its header
    /// must be the one this trainer would write, and it must hold at least
    /// `trainer.iteration` complete records; later records are cut off,
    /// since the resumed run writes them again, byte for byte.
    public convenience init(resuming path: String, trainer: Trainer) throws {
        try self.init(path: path, trainer: trainer, open: lca_log_resume)
    }

    /// Opens through `open` (new log or resumed one) and sizes the buffers
    /// that carry a record's arrays to the core.
    private init(path: String, trainer: Trainer,
                 open: (UnsafeMutablePointer<OpaquePointer?>?, UnsafePointer<CChar>?, OpaquePointer?) -> lca_status) throws {
        var pointer: OpaquePointer?
        try check(open(&pointer, path, trainer.handle))
        handle = pointer
        self.path = path
        tensorCount = trainer.model.tensors.count
        doubles = .allocate(capacity: max(4 * tensorCount, 1))
        counts = .allocate(capacity: max(6 * tensorCount, 1))
        unitCount = trainer.configuration.lcaUnits ? trainer.model.unitCount : 0
        units = .allocate(capacity: max(2 * unitCount, 1))
    }

    deinit {
        if let handle { lca_log_close(handle) }
        doubles.deallocate()
        counts.deallocate()
        units.deallocate()
    }

    /// Appends one record.
    public func write(_ record: IterationRecord) throws {
        guard let handle else { throw LCAError(code: .state, message: "\(path): log already closed") }
        var c = lca_record()
        c.iteration = record.iteration
        c.epoch = UInt32(clamping: record.epoch)
        c.batch_loss = record.batchLoss
        c.train = stage(record.train, slot: 0)
        if let validation = record.validation {
            c.has_validation = 1
            c.validation = stage(validation, slot: 1)
        }
        try check(lca_log_write(handle, &c))
    }

    /// Flushes and closes the log; later writes fail.
    public func close() throws {
        guard let handle else { return }
        self.handle = nil
        try check(lca_log_close(handle))
    }

    private func stage(_ view: ViewRecord, slot: Int) -> lca_view_record {
        let n = tensorCount
        precondition(view.tensorLCA.count == n, "record has \(view.tensorLCA.count) tensors, log expects \(n)")
        let lca = doubles + (2 * slot) * n
        let firstOrder = doubles + (2 * slot + 1) * n
        let helped = counts + (3 * slot) * n
        let hurt = counts + (3 * slot + 1) * n
        let zero = counts + (3 * slot + 2) * n
        for i in 0..<n {
            lca[i] = view.tensorLCA[i]
            firstOrder[i] = view.tensorFirstOrder[i]
            helped[i] = view.tensorHelped[i]
            hurt[i] = view.tensorHurt[i]
            zero[i] = view.tensorZero[i]
        }
        var v = lca_view_record()
        v.loss_before = view.lossBefore
        v.loss_after = view.lossAfter
        v.lca_total = view.lcaTotal
        v.first_order_total = view.firstOrderTotal
        v.residual = view.residual
        v.subintervals = UInt32(clamping: view.subintervals)
        v.flags = view.residualAboveThreshold ? UInt32(LCA_FLAG_RESIDUAL_ABOVE_THRESHOLD) : 0
        v.tensor_lca = UnsafePointer(lca)
        v.tensor_first_order = UnsafePointer(firstOrder)
        v.tensor_helped = UnsafePointer(helped)
        v.tensor_hurt = UnsafePointer(hurt)
        v.tensor_zero = UnsafePointer(zero)
        if unitCount > 0 {
            precondition(view.unitLCA.count == unitCount, "record has \(view.unitLCA.count) units, log expects \(unitCount)")
            let destination = units + slot * unitCount
            for i in 0..<unitCount { destination[i] = view.unitLCA[i] }
            v.unit_lca = UnsafePointer(destination)
        }
        return v
    }
}
