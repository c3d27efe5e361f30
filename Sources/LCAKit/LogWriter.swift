internal import CLCA

/// The binary LCA log of a trainer's run (format: docs/log-format.md): a
/// header describing the run, then one fixed-size record per iteration.
/// Opening it attaches it to the trainer (`lca_trainer_set_log`): from then
/// on every `trainer.step()` has the core write its record to the log
/// straight from the core's arrays, with a single write call.
///
/// ```swift
/// let log = try LogWriter(path: "run/lca.log", trainer: trainer)
/// for _ in 0..<10 { _ = try trainer.step() }    // each step writes its record
/// try log.close()
/// ```
public final class LogWriter {
    private var handle: OpaquePointer?
    private let trainer: Trainer

    /// The path the log was opened at ("-" = standard output).
    public let path: String

    /// Opens the log at `path` ("-" = standard output), writes its header
    /// and attaches it to `trainer`. An existing file is replaced only once
    /// the header is complete.
    public convenience init(path: String, trainer: Trainer) throws {
        try self.init(path: path, trainer: trainer, open: lca_log_open)
    }

    /// Reopens the log of a run being resumed, to append to it, and attaches
    /// it to `trainer`. Its header must be the one this trainer would write,
    /// and it must hold at least `trainer.iteration` complete records; later
    /// records are cut off, since the resumed run writes them again, byte
    /// for byte.
    public convenience init(resuming path: String, trainer: Trainer) throws {
        try self.init(path: path, trainer: trainer, open: lca_log_resume)
    }

    private init(path: String, trainer: Trainer,
                 open: (UnsafeMutablePointer<OpaquePointer?>?, UnsafePointer<CChar>?, OpaquePointer?) -> lca_status) throws {
        var pointer: OpaquePointer?
        try check(open(&pointer, path, trainer.handle))
        do {
            try check(lca_trainer_set_log(trainer.handle, pointer))
        } catch {
            lca_log_close(pointer)
            throw error
        }
        handle = pointer
        self.path = path
        self.trainer = trainer
    }

    deinit {
        if let handle {
            lca_trainer_set_log(trainer.handle, nil)
            lca_log_close(handle)
        }
    }

    /// Makes what was written so far durable (fsync); nothing for stdout.
    public func sync() throws {
        guard let handle else { return }
        try check(lca_log_sync(handle))
    }

    /// With `true`, every record is fsynced as it is written.
    public func setSyncEveryRecord(_ on: Bool) {
        guard let handle else { return }
        lca_log_set_sync(handle, on ? 1 : 0)
    }

    /// Detaches the log from the trainer, flushes and closes it.
    public func close() throws {
        guard let handle else { return }
        self.handle = nil
        lca_trainer_set_log(trainer.handle, nil)
        try check(lca_log_close(handle))
    }
}
