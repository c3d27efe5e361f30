import Foundation
import XCTest
@testable import lca

/// The progress line of lca train fits the terminal: never wider than
/// width - 1 (so it cannot wrap and leave a stale row per redraw), the most
/// important fields kept longest.
final class ProgressLineTests: XCTestCase {
    let state = ProgressLine.State(iteration: 1234, total: 4500, batchLoss: 2.302585, evalLoss: 2.2913,
                                   lca: -1.234567e-2, residual: 3.2e-5, helpingPercent: 51.234, secondsLeft: 3725)

    func testFitsEveryWidth() {
        for width in [1, 10, 20, 40, 60, 80, 200] + Array(20...130) {
            let line = ProgressLine.render(state, width: width)
            XCTAssertLessThanOrEqual(line.count, max(width - 1, 1), "width \(width): \"\(line)\"")
            XCTAssertFalse(line.contains("\n"))
            let redraw = ProgressLine.redraw(line, previousWidth: 500, terminalWidth: width)
            XCTAssertLessThanOrEqual(redraw.count - 1, max(width - 1, 1), "redraw at width \(width) pads past the terminal")
        }
    }

    func testDropsByPriority() {
        let wide = ProgressLine.render(state, width: 200)
        XCTAssertEqual(wide, "iteration 1234/4500  batch loss 2.3026  eval loss 2.2913  LCA -1.235e-02  residual +3.2e-05  helping 51.2%  left 3725 s")
        let eighty = ProgressLine.render(state, width: 80)
        XCTAssertTrue(eighty.hasPrefix("1234/4500 "), eighty)
        XCTAssertTrue(eighty.contains("LCA"), eighty)
        let sixty = ProgressLine.render(state, width: 60)
        XCTAssertTrue(sixty.hasPrefix("1234/4500 "), sixty)
        XCTAssertTrue(sixty.contains("LCA"), sixty)
        XCTAssertTrue(sixty.hasSuffix("3725s"), sixty)
        let forty = ProgressLine.render(state, width: 40)
        XCTAssertTrue(forty.hasPrefix("1234/4500 "), forty)
        XCTAssertTrue(forty.contains("LCA -1.2e-02"), forty)
        XCTAssertTrue(forty.contains("3725s"), forty)
        XCTAssertFalse(forty.contains("res"), forty)
        print("progress line at 200, 80, 60, 40 columns:\n\(wide)\n\(eighty)\n\(sixty)\n\(forty)")
    }

    func testWithoutLCA() {
        var noLCA = state
        noLCA.evalLoss = nil; noLCA.lca = nil; noLCA.residual = nil; noLCA.helpingPercent = nil
        XCTAssertEqual(ProgressLine.render(noLCA, width: 80), "iteration 1234/4500  batch loss 2.3026  left 3725 s")
    }

    /// End to end: `lca train` on a pseudo-terminal (util-linux `script`)
    /// whose width is only known from COLUMNS. Every row it draws between
    /// carriage returns fits, so nothing wraps and no stale row is left.
    func testTrainOnATerminalNeverWraps() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/script") else {
            throw XCTSkip("util-linux script is not installed: no pseudo-terminal to draw on")
        }
        let lca = try CLI.executable()
        let folder = try temporaryFolder("progress-tty", testCase: self)
        for width in [40, 60, 80, 200] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/script")
            process.arguments = ["-qec", "'\(lca.path)' train -o run\(width) --iterations 20 > /dev/null", "/dev/null"]
            process.currentDirectoryURL = folder
            var environment = ProcessInfo.processInfo.environment
            environment["COLUMNS"] = String(width)
            environment["NO_COLOR"] = "1"
            process.environment = environment
            let out = Pipe()
            process.standardOutput = out
            process.standardInput = FileHandle.nullDevice
            try process.run()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            XCTAssertEqual(process.terminationStatus, 0, text)
            XCTAssertTrue(text.contains("20/20"), "the last iteration is drawn at \(width) columns: \(text.debugDescription)")
            for row in text.components(separatedBy: CharacterSet(charactersIn: "\r\n")) {
                XCTAssertLessThan(row.count, width, "a row of \(row.count) characters on a \(width)-column terminal: \(row.debugDescription)")
            }
        }
    }
}
