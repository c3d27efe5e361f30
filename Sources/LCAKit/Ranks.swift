internal import CLCA

/// Data-parallel ranks (docs/mpi.md): in a core built with the package
/// trait MPI, once the program has called `MPI_Init` (the `lca` command
/// does when `mpirun` launched it), every evaluation pass is split over the
/// ranks and combined exactly; the results are the bytes of one process.
/// Without MPI: rank 0 of 1.
extension Core {
    /// "mpi" for a core built with the trait MPI, else "none".
    public static var rankBackend: String { String(cString: lca_rank_backend()) }
    /// This process's rank (0 … rankCount − 1).
    public static var rank: Int { Int(lca_rank()) }
    /// The number of ranks (1 without MPI).
    public static var rankCount: Int { Int(lca_rank_count()) }
    /// The evaluation passes' time so far on the slowest rank of each pass.
    public static var slowestRankSeconds: Double { lca_rank_slowest_seconds() }
    /// The largest CPU time a rank's process spent in each pass, summed:
    /// the work of the busiest rank, whatever else shares the cores.
    public static var slowestRankCPUSeconds: Double { lca_rank_slowest_cpu_seconds() }
    /// The evaluation passes' time so far on this rank.
    public static var ownRankSeconds: Double { lca_rank_own_seconds() }
    /// The evaluation passes so far (the two times above are over these).
    public static var rankPasses: UInt64 { lca_rank_passes() }
    /// The largest `value` over the ranks: a collective, every rank calls
    /// it at the same point (a run's stop decision); `value` itself on one rank.
    public static func maxOverRanks(_ value: Int32) -> Int32 { lca_rank_max(value) }
}
