import Foundation
import LCAKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The progress line of `lca train` on stderr: rewritten in place with \r,
/// at most ten times a second, only when stderr is a terminal, and never
/// wider than the terminal (a line that wraps leaves a stale row behind
/// at every redraw). Under mpirun with several ranks, where stderr is a
/// pipe to the launcher, rank 0 writes one plain line every `lineEvery`
/// instead (docs/mpi.md), naming the slowest rank's time.
final class Progress {
    private let total: Int
    private let parameters: Int
    private let enabled: Bool
    private let clock = ContinuousClock()
    private let started: ContinuousClock.Instant
    private var lastDrawn: ContinuousClock.Instant?
    private var firstIteration: UInt64?
    private var drawnWidth = 0
    /// Plain lines (no redraw) at this interval, or nil.
    private let lineEvery: Duration?

    init(total: Int, parameters: Int, enabled: Bool, lineEvery: Duration? = nil) {
        self.total = total
        self.parameters = parameters
        self.enabled = enabled
        self.lineEvery = enabled ? nil : lineEvery
        started = clock.now
    }

    func update(_ record: RecordView) {
        guard enabled || lineEvery != nil else { return }
        if firstIteration == nil { firstIteration = record.iteration }
        let now = clock.now
        let isLast = record.iteration >= UInt64(total)
        if let lineEvery {
            if let lastDrawn, !isLast, lastDrawn.duration(to: now) < lineEvery { return }
            if lastDrawn == nil, !isLast, started.duration(to: now) < lineEvery { return }
            lastDrawn = now
            Output.stderr("lca: " + ProgressLine.render(state(record, now: now), width: 1000) + "\n")
            return
        }
        if let lastDrawn, !isLast, lastDrawn.duration(to: now) < .milliseconds(100) { return }
        lastDrawn = now
        let state = state(record, now: now)
        let width = ProgressLine.terminalWidth()
        let line = ProgressLine.render(state, width: width)
        Output.stderr(ProgressLine.redraw(line, previousWidth: drawnWidth, terminalWidth: width))
        drawnWidth = line.count
    }

    private func state(_ record: RecordView, now: ContinuousClock.Instant) -> ProgressLine.State {
        let elapsed = seconds(started.duration(to: now))
        let done = Double(record.iteration - firstIteration! + 1)
        let view = record.train
        let hasLCA = view.subintervals > 0
        return ProgressLine.State(
            iteration: record.iteration, total: total, batchLoss: record.batchLoss,
            evalLoss: hasLCA ? view.lossAfter : nil, lca: hasLCA ? view.lcaTotal : nil,
            residual: hasLCA ? view.residual : nil,
            helpingPercent: hasLCA ? Double(view.helpedCount) / Double(max(parameters, 1)) * 100 : nil,
            secondsLeft: Double(max(total - Int(record.iteration), 0)) * elapsed / done,
            ranks: Core.rankCount > 1 ? (Core.rankCount, Core.slowestRankSeconds / done) : nil)
    }

    func finish() {
        guard enabled, drawnWidth > 0 else { return }
        let width = min(drawnWidth, ProgressLine.terminalWidth() - 1)
        Output.stderr("\r" + String(repeating: " ", count: max(width, 0)) + "\r")
    }

    private func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
    }
}

/// The text of the progress line, fitted to a width: each field has a long
/// and a short form and a priority; when the line is too wide, the least
/// important fields are shortened first, then dropped, and a line that
/// still does not fit is cut. The result is at most `width - 1` characters,
/// so the cursor never reaches the last column (where some terminals wrap).
enum ProgressLine {
    /// What the line reports about one iteration.
    struct State {
        var iteration: UInt64
        var total: Int
        var batchLoss: Double
        /// nil without LCA (--no-lca).
        var evalLoss: Double?
        var lca: Double?
        var residual: Double?
        var helpingPercent: Double?
        var secondsLeft: Double
        /// Under MPI with several ranks: "4 ranks" and the evaluation time
        /// per iteration of the slowest rank (docs/mpi.md); nil otherwise.
        var ranks: (count: Int, slowestSeconds: Double)? = nil
    }

    /// One field of the line, in display order; lower priority numbers are
    /// kept longer.
    struct Field {
        var priority: Int
        var long: String
        var short: String
    }

    static func fields(_ s: State) -> [Field] {
        var fields = [Field(priority: 0, long: "iteration \(s.iteration)/\(s.total)", short: "\(s.iteration)/\(s.total)"),
                      Field(priority: 4, long: "batch loss \(String(format: "%.4f", s.batchLoss))",
                            short: "batch \(String(format: "%.3f", s.batchLoss))")]
        if let evalLoss = s.evalLoss {
            fields.append(Field(priority: 3, long: "eval loss \(String(format: "%.4f", evalLoss))",
                                short: "eval \(String(format: "%.3f", evalLoss))"))
        }
        if let lca = s.lca {
            fields.append(Field(priority: 2, long: "LCA \(String(format: "%+.3e", lca))", short: "LCA \(String(format: "%+.1e", lca))"))
        }
        if let residual = s.residual {
            fields.append(Field(priority: 6, long: "residual \(String(format: "%+.1e", residual))",
                                short: "res \(String(format: "%+.0e", residual))"))
        }
        if let helping = s.helpingPercent {
            fields.append(Field(priority: 5, long: "helping \(String(format: "%.1f", helping))%",
                                short: "help \(String(format: "%.0f", helping))%"))
        }
        if let ranks = s.ranks {
            let t = ranks.slowestSeconds
            let long = t < 1 ? String(format: "%.1f ms/it", t * 1e3) : String(format: "%.2f s/it", t)
            fields.append(Field(priority: 7, long: "\(ranks.count) ranks, slowest \(long)",
                                short: t < 1 ? String(format: "slowest %.0fms", t * 1e3) : String(format: "slowest %.1fs", t)))
        }
        let left = s.secondsLeft
        fields.append(Field(priority: 1, long: "left \(String(format: left < 60 ? "%.1f s" : "%.0f s", left))",
                            short: String(format: "%.0fs", left)))
        return fields
    }

    /// The line for `state`, at most `width - 1` characters.
    static func render(_ state: State, width: Int) -> String {
        let limit = max(width - 1, 1)
        let fields = fields(state)
        var useShort = [Bool](repeating: false, count: fields.count)
        var kept = [Bool](repeating: true, count: fields.count)
        func text() -> String {
            let separator = useShort.contains(true) ? " " : "  "
            return fields.indices.filter { kept[$0] }.map { useShort[$0] ? fields[$0].short : fields[$0].long }
                .joined(separator: separator)
        }
        // Least important first.
        let byPriority = fields.indices.sorted { fields[$0].priority > fields[$1].priority }
        for index in byPriority where text().count > limit { useShort[index] = true }
        for index in byPriority.dropLast() where text().count > limit { kept[index] = false }
        let line = text()
        return line.count > limit ? String(line.prefix(limit)) : line
    }

    /// What to write to redraw: back to the start of the row, the line, and
    /// blanks over what is left of a longer previous line (within the
    /// terminal, so the blanks cannot wrap either).
    static func redraw(_ line: String, previousWidth: Int, terminalWidth: Int) -> String {
        let padding = max(min(previousWidth, terminalWidth - 1) - line.count, 0)
        return "\r" + line + String(repeating: " ", count: padding)
    }

    /// Columns of the terminal on stderr (TIOCGWINSZ), else $COLUMNS, else 80.
    static func terminalWidth() -> Int {
        var size = winsize()
        #if canImport(Darwin)
        let status = ioctl(STDERR_FILENO, TIOCGWINSZ, &size)
        #else
        let status = ioctl(STDERR_FILENO, UInt(TIOCGWINSZ), &size)
        #endif
        if status == 0, size.ws_col > 0 { return Int(size.ws_col) }
        if let text = ProcessInfo.processInfo.environment["COLUMNS"], let columns = Int(text), columns > 0 { return columns }
        return 80
    }
}
