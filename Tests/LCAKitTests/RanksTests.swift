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
