import ArgumentParser
import Foundation
import LCAKit

/// Says on stderr (when it is a terminal) that a partial last record was
/// left out.
func notePartialRecord(_ stream: LogStream) {
    if stream.partialBytes > 0 && Output.stderrIsTerminal {
        Output.stderr("lca: note: \(stream.path): left out a partial last record (\(stream.partialBytes) of \(stream.header.recordSize) bytes): the run is still writing or was stopped\n")
    }
}

/// `lca show`: the summary table of a log.
struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the summary of an LCA log (the table lca train prints).",
        discussion: """
            Reads LOG (a file, or - for standard input) record by record in constant memory; a \
            partial last record (a run still writing, or killed) is left out; a record that cannot belong to \
            the run (garbage appended, logs concatenated) ends the summary there, with an error (exit 1). With --follow, one \
            line per iteration is printed as the run writes it, until the run's configured number \
            of iterations, the end of a pipe, or Ctrl-C; then the summary. With --json the summary \
            is one JSON object (with --follow: one JSON line per iteration, named columns as in \
            lca export --to jsonl, then a last line {"summary": …}). For a version-2 log the \
            summary ends with each tensor's Σ helping, Σ hurting, the rest within the zero floor \
            and the share of unmoved parameters ("log" in the JSON). With --groups, for a log with \
            loss groups (lca train --groups), two tables per view: each group's examples, loss first \
            and last, Σ LCA, residuals and flags; and Σ LCA per group and layer (per tensor with \
            --group-tensors) with each layer's share of the group's LCA, Σ over groups and the \
            ungrouped LCA ("groups" in the JSON, whenever the log has groups).
            Examples: lca show runs/x/lca.log; lca train -o - | lca show -; lca show --groups runs/x/lca.log
            """
    )

    @Argument(help: ArgumentHelp("The log: a file, a run folder (its lca.log), or - for standard input.", valueName: "log"))
    var log: String

    @Flag(help: "Print JSON instead of the table.")
    var json = false

    @Flag(help: "Keep reading as the run writes; print one line per iteration.")
    var follow = false

    @Flag(help: "Add the loss groups' tables: Σ LCA per group and layer (a log written with lca train --groups).")
    var groups = false

    @Flag(help: "With --groups: per tensor instead of per layer.")
    var groupTensors = false

    mutating func validate() throws {
        if groupTensors && !groups { throw ValidationError("--group-tensors needs --groups") }
    }

    func run() throws {
        try Report.failures {
            installInterruptHandler()
            let stream = try LogStream(path: ReportInput(log).log, follow: follow)
            stream.shouldStop = { interruptRequested != 0 }
            if groups && stream.header.groups == nil {
                throw LCAError(code: .invalidArgument, message: "\(log): --groups: the log has no loss groups (train with lca train --groups class|FILE)")
            }
            var groupViews = [GroupSummary(header: stream.header), GroupSummary(header: stream.header, validation: true)].compactMap { $0 }
            var summary = RunSummary(header: stream.header)
            var version2 = LogVersionSummary(header: stream.header, version: stream.formatVersion)
            let columns = LogColumns(header: stream.header)
            let out = BufferedOutput(flushEachLine: follow)
            if follow && !json {
                try out.write("iteration  epoch   batch loss    eval loss      LCA total     residual  helped\n")
            }
            let parameters = max(stream.header.model.parameters, 1)
            // A record that cannot be part of the run (garbage appended, two
            // logs concatenated) ends the reading: the records before it are
            // still summarised, then the error (exit 1).
            var readError: Error?
            var records = 0
            while true {
                let next: ArraySlice<UInt8>?
                do { next = try stream.nextRawRecord() } catch { readError = error; break }
                guard let raw = next else { break }
                records += 1
                let record = stream.decode(raw)
                summary.add(record)
                version2.add(record)
                for k in groupViews.indices {
                    if k == 0 { groupViews[k].add(record.train) } else if let v = record.validation { groupViews[k].add(v) }
                }
                guard follow else { continue }
                if json {
                    try out.write(columns.jsonLine(raw))
                } else {
                    let v = record.train
                    try out.write(String(format: "%9llu  %5d  %11.6f  %11.6f  %+.6e  %+.4e  %5.1f%%\n",
                                         record.iteration, record.epoch, record.batchLoss, v.lossAfter, v.lcaTotal,
                                         v.residual, 100 * Double(v.helpedCount) / Double(parameters)))
                }
            }
            if let readError, records == 0 { throw readError }
            if readError == nil { notePartialRecord(stream) }
            summary.finish(wallSeconds: 0)
            let logSummary = version2.finished()
            let groupSummaries = groupViews.map { $0.finished() }
            if json {
                let encoder = JSONFormat.encoder()
                let text = String(decoding: try encoder.encode(ShowJSON(summary: summary, log: logSummary,
                                                                         groups: groupSummaries.isEmpty ? nil : groupSummaries)), as: UTF8.self)
                try out.write(follow ? "{\"summary\": " + text.replacingOccurrences(of: "\n", with: " ") + "}\n" : text + "\n")
            } else {
                var text = (follow ? "\n" : "") + summary.table + logSummary.table
                if groups { text += groupSummaries.map { $0.table(byTensor: groupTensors) }.joined() }
                try out.write(text)
            }
            try out.flush()
            if let readError {
                let covered = "; the summary above covers the \(records) record\(records == 1 ? "" : "s") before it"
                guard let error = readError as? LCAError else { throw readError }
                throw LCAError(code: error.code, kind: error.kind, message: error.message + covered, path: error.path,
                               offset: error.offset, systemError: error.systemError)
            }
        }
    }
}

/// `lca export`: a log as CSV, JSON Lines, .npy or TensorBoard events.
struct Export: ParsableCommand {
    enum Target: String, ExpressibleByArgument, CaseIterable {
        case csv, jsonl, npy, tensorboard
    }

    static let configuration = CommandConfiguration(
        abstract: "Export an LCA log as CSV, JSON Lines, a NumPy .npy file, or TensorBoard event files.",
        discussion: """
            csv, jsonl: one row per iteration with named columns (iteration, …, lca_total, \
            residual, <tensor>.lca, <tensor>.first_order, <tensor>.helped, …; <group>.unit<u>.lca \
            with per-unit views; val_… and <tensor>.val_lca with the validation view; lca_floor, \
            <tensor>.lca_helping, .lca_hurting, .unmoved from a version-2 log, and in jsonl only \
            the |LCA| histogram as <tensor>.lca_histogram.helping and .hurting, arrays of 30 \
            counts); doubles in the shortest text that reads back to the same bits. Written to \
            stdout unless -o.
            npy: a structured array with the log's record layout (numpy.load reads it; every \
            record's bytes copied unchanged); needs -o FILE.
            tensorboard: an event file in -o DIR with per-tensor LCA, cumulative LCA, % helped, \
            losses and residual at every iteration (no down-sampling), and from a version-2 log \
            helping and hurting sums, % unmoved and an |LCA| histogram per tensor; tensorboard \
            --logdir DIR.
            """
    )

    @Argument(help: ArgumentHelp("The log: a file, a run folder (its lca.log), or - for standard input.", valueName: "log"))
    var log: String

    @Option(help: "Format: csv, jsonl, npy or tensorboard.")
    var to: Target

    @Option(name: [.short, .long], help: ArgumentHelp("Output file (csv, jsonl: default stdout; npy: required) or folder (tensorboard: required).", valueName: "path"))
    var output: String?

    mutating func validate() throws {
        if (to == .npy || to == .tensorboard) && (output == nil || output == "-") {
            throw ValidationError("--to \(to.rawValue) needs -o \(to == .npy ? "FILE.npy" : "DIR")")
        }
    }

    func run() throws {
        try Report.failures {
            let stream = try LogStream(path: ReportInput(log).log)
            switch to {
            case .csv, .jsonl:
                let columns = LogColumns(header: stream.header)
                let out = try output.flatMap { $0 == "-" ? nil : $0 }.map { try BufferedOutput(path: $0, protecting: [log]) } ?? BufferedOutput()
                if to == .csv { try out.write(columns.csvHeader) }
                while let raw = try stream.nextRawRecord() {
                    try out.write(to == .csv ? columns.csvLine(raw) : columns.jsonLine(raw))
                }
                try out.close()
            case .npy:
                let writer = try NpyWriter(path: output ?? "", header: stream.header, protecting: [log])
                while let raw = try stream.nextRawRecord() { try writer.write(raw) }
                try writer.close()
            case .tensorboard:
                let board = try TensorBoardWriter(directory: output ?? "", tensors: stream.header.tensors, whole: true,
                                                  groups: GroupFields.names(stream.header))
                while let raw = try stream.nextRawRecord() { try board.write(stream.decode(raw)) }
                try board.close()
                if Output.stderrIsTerminal { Output.stderr("wrote \(board.path)\nview it with: tensorboard --logdir \(output ?? "")\n") }
            }
            notePartialRecord(stream)
        }
    }
}

/// `lca verify`: the internal consistency of a log.
struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check an LCA log's internal consistency and its residual bound.",
        discussion: """
            For every record: per-tensor LCA adds up to lca_total (bit for bit), residual = \
            loss_after − loss_before − lca_total, losses chain from record to record, help/hurt/zero \
            counts cover each tensor, |residual| within the run's threshold unless flagged, \
            per-unit sums match their layer, and with --max-residual X, |residual| ≤ X; in a \
            version-2 log also helping + hurting + the within-floor rest = each tensor's LCA, \
            unmoved ≤ zero, and the histogram's bins add up to helped and hurt; with loss groups \
            (lca train --groups) the group counts cover the evaluation set, per tensor the groups' \
            LCA adds up to its LCA within 2⁻³⁰ relative, and each group's residual is recomputed, \
            within the threshold unless flagged, and its losses chain and add up to the loss. \
            Exit status 1 names the first failing iteration.
            """
    )

    @Argument(help: ArgumentHelp("The log: a file, a run folder (its lca.log), or - for standard input.", valueName: "log"))
    var log: String

    @Option(name: .customLong("max-residual"), help: ArgumentHelp("Fail when any |residual| exceeds this many nats.", valueName: "x"))
    var maxResidual: Double?

    mutating func validate() throws {
        if let maxResidual, !(maxResidual >= 0) { throw ValidationError("--max-residual must be >= 0") }
    }

    func run() throws {
        try Report.failures {
            let stream = try LogStream(path: ReportInput(log).log)
            let report = try LogVerifier.verify(stream, maxResidual: maxResidual)
            if let failure = report.failure {
                Output.error("\(log): \(Output.colored("FAILED", .red, stream: .stderr)) at \(failure)")
                throw ExitCode.failure
            }
            var text = "\(log): \(Output.colored("ok", .green, stream: .stdout)), \(report.records) records consistent; "
                + "max |residual| \(String(format: "%.3e", report.maxAbsResidual))"
            if let threshold = stream.header.config?.lcaThreshold { text += " (threshold \(String(format: "%.1e", threshold)))" }
            if let maxResidual { text += ", within --max-residual \(String(format: "%.1e", maxResidual))" }
            text += ", \(report.flagged) flagged"
            if report.groups > 0 {
                text += "; \(report.groups) groups: Σ group LCA = LCA within \(String(format: "%.1e", report.maxGroupSumError)) relative "
                    + "(bound \(String(format: "%.1e", GroupFields.sumBound))), max |group residual| \(String(format: "%.3e", report.maxAbsGroupResidual)), "
                    + "\(report.groupsFlagged) flagged"
            }
            if report.partialBytes > 0 { text += "; a partial last record of \(report.partialBytes) bytes left out" }
            try Output.stdout(text + "\n")
        }
    }
}

/// Text to stdout (or a file) in large writes; a closed pipe ends the
/// command quietly (`Output.stdout`).
final class BufferedOutput {
    private var buffer = ""
    private let flushEachLine: Bool
    private let file: OutputFile?

    init(flushEachLine: Bool = false) {
        self.flushEachLine = flushEachLine
        file = nil
    }

    /// A file output (written beside and renamed at `close`), which must not
    /// be one of `inputs`.
    init(path: String, protecting inputs: [String]) throws {
        file = try OutputFile(path: path, protecting: inputs)
        flushEachLine = false
    }

    func write(_ text: String) throws {
        buffer += text
        if flushEachLine || buffer.utf8.count >= 1 << 16 { try flush() }
    }

    func flush() throws {
        guard !buffer.isEmpty else { return }
        let text = buffer
        buffer = ""
        if let file {
            try Array(text.utf8).withUnsafeBytes { try file.write($0) }
        } else {
            try Output.stdout(text)
        }
    }

    func close() throws {
        try flush()
        try file?.commit()
    }
}

/// What `lca show` adds for a version-2 log (docs/log-format.md): per view
/// and tensor, the run's Σ helping, Σ hurting and the within-floor rest
/// (lca − helping − hurting), the mean share of unmoved parameters, and
/// the floor's range. Nothing for a version-1 log, which has none of it.
struct LogVersionSummary: Encodable {
    struct Tensor: Encodable {
        var name: String
        var helping = 0.0
        var hurting = 0.0
        var withinFloor = 0.0
        var unmovedPercent = 0.0
    }
    struct View: Encodable {
        var tensors: [Tensor]
        var floorMin = Double.infinity
        var floorMax = 0.0
        var iterations = 0
    }
    let version: Int
    var train: View?
    var validation: View?
    private let counts: [Int]

    init(header: LogHeader, version: Int) {
        self.version = version
        counts = header.tensors.map(\.count)
        guard version >= 2, header.config?.lca != false else { return }
        let empty = View(tensors: header.tensors.map { Tensor(name: $0.name) })
        train = empty
        if header.hasValidation { validation = empty }
    }

    mutating func add(_ record: IterationRecord) {
        if var view = train, Self.update(&view, record.train, counts) { train = view }
        if let v = record.validation, var view = validation, Self.update(&view, v, counts) { validation = view }
    }

    private static func update(_ view: inout View, _ v: ViewRecord, _ counts: [Int]) -> Bool {
        let t = view.tensors.count
        guard let floor = v.lcaFloor, v.tensorHelping.count == t, v.tensorHurting.count == t,
              v.tensorUnmoved.count == t, v.tensorLCA.count == t, counts.count == t else { return false }
        for index in view.tensors.indices {
            view.tensors[index].helping += v.tensorHelping[index]
            view.tensors[index].hurting += v.tensorHurting[index]
            view.tensors[index].withinFloor += v.tensorLCA[index] - v.tensorHelping[index] - v.tensorHurting[index]
            view.tensors[index].unmovedPercent += counts[index] > 0 ? 100 * Double(v.tensorUnmoved[index]) / Double(counts[index]) : 0
        }
        view.floorMin = min(view.floorMin, floor)
        view.floorMax = max(view.floorMax, floor)
        view.iterations += 1
        return true
    }

    /// Means instead of sums for the unmoved share.
    func finished() -> LogVersionSummary {
        var copy = self
        for keyPath in [\LogVersionSummary.train, \LogVersionSummary.validation] {
            guard var view = copy[keyPath: keyPath], view.iterations > 0 else { continue }
            for index in view.tensors.indices { view.tensors[index].unmovedPercent /= Double(view.iterations) }
            copy[keyPath: keyPath] = view
        }
        return copy
    }

    /// The section under the summary table (empty for version 1).
    var table: String {
        var text = ""
        for (title, view) in [("training split", train), ("validation split", validation)] {
            guard let view, view.iterations > 0 else { continue }
            text += "\nhelping and hurting on the \(title) (log version 2: |LCA| within the zero floor, 2⁻³⁰ of the "
                + "iteration's largest, is neither; floor \(String(format: "%.2e", view.floorMin)) … \(String(format: "%.2e", view.floorMax)))\n"
            let width = max(10, view.tensors.map(\.name.count).max() ?? 0)
            func pad(_ s: String) -> String { s.padding(toLength: width, withPad: " ", startingAt: 0) }
            text += pad("tensor") + "  \("Σ helping".leftPadded(13))  \("Σ hurting".leftPadded(13))  \("within floor".leftPadded(13))  unmoved\n"
            text += String(repeating: "-", count: width) + "  -------------  -------------  -------------  -------\n"
            for tensor in view.tensors {
                text += pad(tensor.name) + "  " + String(format: "%13.6e  %13.6e  %13.6e  %6.2f%%", tensor.helping, tensor.hurting,
                                                         tensor.withinFloor, tensor.unmovedPercent) + "\n"
            }
        }
        return text
    }

    enum CodingKeys: String, CodingKey { case version, train, validation }
}

private extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}

/// `lca show --json`: the run summary's keys plus `"log"`.
struct ShowJSON: Encodable {
    let summary: RunSummary
    let log: LogVersionSummary
    /// The loss groups per view (training, then validation), when the log has them.
    let groups: [GroupSummary]?

    func encode(to encoder: any Encoder) throws {
        try summary.encode(to: encoder)
        var container = encoder.container(keyedBy: Key.self)
        try container.encode(log, forKey: .log)
        try container.encodeIfPresent(groups, forKey: .groups)
    }
    enum Key: String, CodingKey { case log, groups }
}
