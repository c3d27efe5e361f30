import Foundation
import LCAKit
#if LCA_MPI
import CMPI
#endif

/// MPI for the command (docs/mpi.md): initialised only when `mpirun` (or
/// another MPI launcher) started this process, finalised at the end of a
/// command that succeeded; a command that fails on any rank aborts the job
/// (`MPI_Abort` with its exit status), so that no rank waits forever for
/// one that has stopped. The library itself never initialises MPI.
enum Ranks {
    /// Whether this process runs under an MPI launcher and MPI is initialised.
    nonisolated(unsafe) private(set) static var launched = false

    /// Initialises MPI when an MPI launcher started this process (Open MPI
    /// sets OMPI_COMM_WORLD_SIZE; PMIx and PMI launchers PMIX_RANK or
    /// PMI_RANK); a plain `lca` never touches MPI.
    static func start() {
        #if LCA_MPI
        let environment = ProcessInfo.processInfo.environment
        guard ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"].contains(where: { environment[$0] != nil }) else { return }
        guard lca_mpi_init() == 0 else {
            Output.error("MPI_Init failed")
            exit(1)
        }
        launched = true
        #endif
    }

    /// The end of a command that succeeded on this rank.
    static func finish() {
        #if LCA_MPI
        if launched { _ = lca_mpi_finalize() }
        launched = false
        #endif
    }

    /// Ends the whole job with `status` (this rank failed).
    static func abort(_ status: Int32) -> Never {
        #if LCA_MPI
        if launched, Core.rankCount > 1 { _ = lca_mpi_abort(status) }
        #endif
        finish()
        exit(status)
    }

    /// Rank 0 writes the outputs, the others nothing.
    static var writes: Bool { Core.rank == 0 }

    /// "rank 2: " on ranks other than 0 of a job of several, else "".
    static var prefix: String { Core.rankCount > 1 && Core.rank != 0 ? "rank \(Core.rank): " : "" }
}
