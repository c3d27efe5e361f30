import ArgumentParser
import Foundation
import LCAKit
#if LCA_MPI
import CMPI
#endif

/// The command under an MPI launcher (docs/mpi.md). `lca train` and `lca
/// attribute` split their evaluation over the ranks, so they run on every
/// rank; every other subcommand reads or writes files that one process
/// should handle, so it runs on rank 0 alone and the other ranks exit 0 at
/// once. Help, `--version` and usage errors are the same on every rank:
/// rank 0 prints them, the others exit 0 (a non-zero exit of another rank
/// could make mpirun end rank 0 before it has spoken). MPI is initialised
/// only for the commands that run on every rank, finalised at the end of a
/// command that succeeded; a command that fails on any rank aborts the job
/// (`MPI_Abort` with its exit status), so that no rank waits forever for
/// one that has stopped. The library itself never initialises MPI.
enum Ranks {
    /// Where a subcommand runs when a launcher started several processes.
    enum Placement: Equatable {
        /// On every rank, splitting the evaluation (MPI is initialised).
        case everyRank
        /// On rank 0 alone, as a plain process; the other ranks exit 0.
        case rankZero
    }

    /// Every subcommand of `lca` by name. A subcommand missing here runs on
    /// rank 0 alone (it never writes twice); RanksTests fails until it is added.
    static let placements: [String: Placement] = [
        "train": .everyRank, "attribute": .everyRank,
        "show": .rankZero, "export": .rankZero, "verify": .rankZero, "report": .rankZero, "plot": .rankZero,
    ]

    static func placement(of command: ParsableCommand.Type) -> Placement {
        placements[command._commandName] ?? .rankZero
    }

    /// What a launcher tells a process before MPI is initialised: its rank
    /// and, when it says so, the job's size.
    struct Launcher: Equatable {
        var rank: Int
        var size: Int?
    }

    /// The launcher's variables: Open MPI's OMPI_COMM_WORLD_RANK and _SIZE,
    /// PMIx's PMIX_RANK, PMI's (MPICH, Slurm) PMI_RANK and PMI_SIZE; nil for
    /// a process no launcher started.
    static func launcher(in environment: [String: String]) -> Launcher? {
        func number(_ names: [String]) -> Int? {
            names.lazy.compactMap { environment[$0].flatMap { Int($0) } }.first
        }
        guard let rank = number(["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"]) else { return nil }
        return Launcher(rank: rank, size: number(["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]))
    }

    /// This process's launcher, or nil: a plain `lca`, which never touches MPI.
    static let environmentLauncher = launcher(in: ProcessInfo.processInfo.environment)

    /// Whether a launcher started this process. Its streams are then the
    /// launcher's: Open MPI gives stdout a pseudo-terminal even when mpirun's
    /// own output goes to a file, and forwards stderr through a pipe, so
    /// colour and a redrawn progress line would garble what mpirun prints.
    static var underLauncher: Bool { environmentLauncher != nil }

    /// Whether MPI is initialised (a command that runs on every rank, in an MPI build).
    nonisolated(unsafe) private(set) static var launched = false

    /// This process's rank: MPI's once initialised, else the launcher's, else 0.
    static var rank: Int { launched ? Core.rank : environmentLauncher?.rank ?? 0 }

    /// Rank 0 writes the outputs, the others nothing.
    static var writes: Bool { rank == 0 }

    /// "rank 2: " on ranks other than 0, else "".
    static var prefix: String { rank != 0 ? "rank \(rank): " : "" }

    /// Runs the command line: as ArgumentParser's `main` for a plain process;
    /// under a launcher, parsed once here and dispatched by `placement(of:)`.
    static func main(_ arguments: [String]) -> Never {
        // LCA_KERNEL=avx512|avx2|portable forces a kernel family; a value the
        // core cannot use is a usage error, never silently ignored
        guard let launcher = environmentLauncher else {
            if let problem = Core.kernelRequestError {
                Output.error(problem)
                exit(64)
            }
            LCACommand.main(arguments)
            exit(0)
        }
        // LCA_KERNEL reaches every rank alike (mpirun -x): rank 0 says it
        if let problem = Core.kernelRequestError {
            guard launcher.rank == 0 else { exit(0) }
            Output.error(problem)
            exit(64)
        }
        var command: ParsableCommand
        do {
            command = try LCACommand.parseAsRoot(arguments)
        } catch {
            guard launcher.rank == 0 else { exit(0) }
            LCACommand.exit(withError: error)
        }
        if placement(of: type(of: command)) == .rankZero {
            guard launcher.rank == 0 else { exit(0) }
            runAlone(&command)
        }
        #if LCA_MPI
        runOnEveryRank(&command)
        #else
        // a build without MPI would run the whole command once a rank, each
        // writing the same folder
        if launcher.rank != 0 || (launcher.size ?? 1) > 1 {
            guard launcher.rank == 0 else { exit(0) }
            Output.error("this lca was built without MPI, so \(type(of: command)._commandName) cannot be split "
                         + "over \(launcher.size.map(String.init) ?? "several") ranks; build it with "
                         + "`swift build -c release --traits MPI` (docs/mpi.md), or run it without mpirun")
            exit(1)
        }
        runAlone(&command)
        #endif
    }

    /// One process, MPI never initialised: what ArgumentParser's `main` does after parsing.
    private static func runAlone(_ command: inout ParsableCommand) -> Never {
        do {
            try command.run()
        } catch {
            LCACommand.exit(withError: error)
        }
        LCACommand.exit()
    }

    #if LCA_MPI
    /// Every rank, MPI initialised: MPI_Finalize on success, MPI_Abort on
    /// any rank's failure.
    private static func runOnEveryRank(_ command: inout ParsableCommand) -> Never {
        guard lca_mpi_init() == 0 else {
            Output.error("MPI_Init failed")
            exit(1)
        }
        launched = true
        do {
            try command.run()
        } catch {
            let status = LCACommand.exitCode(for: error)
            // success, or a signal's stop (128 + n): every rank stopped after
            // the same iteration (Train), so every rank finalises
            if status.isSuccess || status.rawValue >= 128 {
                finish()
                LCACommand.exit(withError: error)
            }
            let message = LCACommand.fullMessage(for: error)
            if status.rawValue == 64, rank != 0 {
                // a usage error found while running is every rank's: rank 0
                // reports it and aborts; this rank aborts too if it must
                sleep(2)
            } else if !message.isEmpty {
                Output.stderr(prefix + message + "\n", always: true)
            }
            abort(status.rawValue)
        }
        finish()
        LCACommand.exit()
    }
    #endif

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
}
