import Foundation
import XCTest
@testable import lca
@testable import LCAKit

/// What a data-parallel rank other than 0 does with a run folder, and the
/// progress line's rank field (docs/mpi.md). The runs under mpirun
/// themselves are tools/mpi-test's.
final class RanksTests: XCTestCase {
    /// One process is rank 0 of 1, and a collective is its own value.
    func testOneProcessIsRankZeroOfOne() {
        XCTAssertEqual(Core.rank, 0)
        XCTAssertEqual(Core.rankCount, 1)
        XCTAssertEqual(Core.maxOverRanks(0), 0)
        XCTAssertEqual(Core.maxOverRanks(15), 15)
        XCTAssertTrue(["none", "mpi"].contains(Core.rankBackend))
    }

    /// A rank that does not write resumes a folder another process holds
    /// locked, trains the same steps, and leaves every file as it was.
    func testResumeWithoutWritingLeavesTheFolderAlone() throws {
        let folder = try temporaryFolder("ranks", testCase: self)
        var recipe = RunRecipe(data: DataSource(source: "digits"))
        recipe.configuration.iterations = 4
        recipe.configuration.batchSize = 200
        recipe.saveEvery = 2
        let run = RunFolder(path: folder.appendingPathComponent("run").path)
        var steps = 0
        try TrainingRun(recipe: recipe, outputs: RunOutputs(folder: run)).run { _, control in
            steps += 1
            if steps >= 2 { control.stop() }
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: run.path).sorted()
        var before: [String: Data] = [:]
        for name in names { before[name] = try Data(contentsOf: URL(fileURLWithPath: run.path + "/" + name)) }

        let writer = try TrainingRun(resuming: run) // rank 0: holds the lock
        let reader = try TrainingRun(resuming: run, writes: false)
        XCTAssertNil(reader.folder)
        XCTAssertNil(reader.logPath)
        XCTAssertEqual(reader.trainer.iteration, 2)
        try reader.run()
        XCTAssertEqual(reader.trainer.iteration, 4)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: run.path).sorted(), names)
        for name in names {
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: run.path + "/" + name)), before[name],
                           "\(name) changed")
        }
        // the writer's run is the one that writes, with the reader's weights
        try writer.run()
        XCTAssertEqual(writer.model.parameters, reader.model.parameters)
    }

    /// Under mpirun, train and attribute run on every rank and every other
    /// subcommand on rank 0 alone: every subcommand of `lca` is classified,
    /// here and in Ranks.placements, so a new one cannot slip through.
    func testEverySubcommandIsPlacedOnRanks() {
        let expected: [String: Ranks.Placement] = [
            "train": .everyRank, "attribute": .everyRank,
            "show": .rankZero, "export": .rankZero, "verify": .rankZero, "report": .rankZero, "plot": .rankZero,
        ]
        let names = LCACommand.configuration.subcommands.map { $0._commandName }
        XCTAssertEqual(Set(names), Set(expected.keys), "subcommands of lca vs the test's list: classify the new one here")
        XCTAssertEqual(Set(names), Set(Ranks.placements.keys), "subcommands of lca vs Ranks.placements: classify the new one there")
        for command in LCACommand.configuration.subcommands {
            XCTAssertEqual(Ranks.placement(of: command), expected[command._commandName], command._commandName)
        }
        // `lca` alone is `lca train`, which runs on every rank
        XCTAssertEqual(LCACommand.configuration.defaultSubcommand?._commandName, "train")
    }

    /// The launcher's rank and size from its environment, before MPI_Init.
    func testLauncherFromEnvironment() {
        XCTAssertNil(Ranks.launcher(in: [:]))
        XCTAssertNil(Ranks.launcher(in: ["OMPI_COMM_WORLD_SIZE": "4"]), "a size without a rank is no launch")
        XCTAssertEqual(Ranks.launcher(in: ["OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4", "PMIX_RANK": "2"]),
                       Ranks.Launcher(rank: 2, size: 4))
        XCTAssertEqual(Ranks.launcher(in: ["PMIX_RANK": "0"]), Ranks.Launcher(rank: 0, size: nil))
        XCTAssertEqual(Ranks.launcher(in: ["PMI_RANK": "3", "PMI_SIZE": "8"]), Ranks.Launcher(rank: 3, size: 8))
        // this test process: no launcher, rank 0, writes
        XCTAssertFalse(Ranks.underLauncher)
        XCTAssertEqual(Ranks.rank, 0)
        XCTAssertTrue(Ranks.writes)
        XCTAssertEqual(Ranks.prefix, "")
    }

    func testProgressLineNamesTheSlowestRank() {
        var state = ProgressLine.State(iteration: 12, total: 100, batchLoss: 2.3, evalLoss: 2.2, lca: -0.01,
                                       residual: 1e-5, helpingPercent: 50, secondsLeft: 30)
        XCTAssertFalse(ProgressLine.render(state, width: 300).contains("ranks"))
        state.ranks = (4, 1.234)
        let line = ProgressLine.render(state, width: 300)
        XCTAssertTrue(line.contains("4 ranks, slowest 1.23 s/it"), line)
        XCTAssertLessThanOrEqual(ProgressLine.render(state, width: 40).count, 39)
        state.ranks = (2, 0.00172)
        XCTAssertTrue(ProgressLine.render(state, width: 300).contains("2 ranks, slowest 1.7 ms/it"))
    }
}
