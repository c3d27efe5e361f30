import ArgumentParser
import Foundation
import LCAKit

extension ReportFigure: ExpressibleByArgument {}

/// A run folder or a log: the log to stream and the folder's totals.
struct ReportInput {
    let log: String
    let folder: String?

    init(_ path: String) throws {
        var isDirectory: ObjCBool = false
        if path != "-", FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            let log = (path as NSString).appendingPathComponent("lca.log")
            guard FileManager.default.fileExists(atPath: log) else {
                throw LCAError(code: .io, message: "\(path): is a folder but holds no lca.log (give a run folder written by lca train -o DIR, or a log file)")
            }
            self.log = log
            folder = path
        } else {
            log = path
            folder = nil
        }
    }

    func builder(width: Int, perRow: Bool, syncWindow: Int, analyseSync: Bool = true, groupLayers: Bool = false) throws -> ReportBuilder {
        let data = try ReportData.read(path: log, width: width, groupLayers: groupLayers)
        let totals = try folder.flatMap { try RunTotals.read(folder: $0, tensors: data.header.tensors) }
        return ReportBuilder(data: data, totals: totals, perRowScaling: perRow, sync: .init(window: syncWindow), analyseSync: analyseSync)
    }
}

/// `lca report`: every figure of a run in one self-contained HTML page.
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Draw a run's LCA figures into one self-contained HTML page.",
        discussion: """
            Reads RUN (a run folder of lca train -o DIR: its lca.log and per-parameter totals) or \
            LOG (a log file, or - for standard input; the figures from the totals are then left \
            out, saying so) once, in constant memory, and writes one HTML file with inline SVG and \
            CSS (no network, no script needed): the evaluation loss against L0 + sum of LCA and \
            the residual, cumulative LCA per tensor, total LCA per tensor, the share of parameters \
            helping, iterations helped per parameter, the distribution of per-parameter LCA (log \
            version 2), heat maps of per-iteration LCA, the synchronisation of learning peaks \
            across weight tensors (with exact, random-shift and hypergeometric p-values), the most \
            helping and hurting parameters; with loss groups (lca train --groups), a groups × \
            iterations heat map per tensor (per layer with --group-layers) and each group's \
            cumulative LCA per layer with the share each layer carries. Figures a log cannot give \
            are named, with the reason. \
            Long series are reduced to the pixel width by a \
            min/max envelope per column, so peaks are kept. Each figure's numbers are embedded as \
            JSON (script type application/json, class figure-data).
            Examples: lca report runs/x; lca report runs/x/lca.log -o x.html
            """
    )

    @Argument(help: ArgumentHelp("A run folder, or a log file (- for standard input).", valueName: "input"))
    var input: String

    @Option(name: [.short, .long], help: ArgumentHelp("The HTML file to write (- for standard output).", valueName: "path"))
    var output = "report.html"

    @Flag(help: "Scale each heat-map row to its own largest |LCA|.")
    var perRowScaling = false

    @Option(help: ArgumentHelp("Figure 8: peaks of two tensors coincide when at most this many iterations apart.", valueName: "w"))
    var syncWindow = 0

    @Flag(help: "Figure 10: one block of groups × iterations per layer instead of per tensor.")
    var groupLayers = false

    func validate() throws {
        guard (0...1000).contains(syncWindow) else { throw ValidationError("--sync-window must be 0 to 1000 iterations, not \(syncWindow)") }
    }

    func run() throws {
        try Report.failures {
            let source = try ReportInput(input)
            let builder = try source.builder(width: 836, perRow: perRowScaling, syncWindow: syncWindow, groupLayers: groupLayers)
            let out = output == "-" ? BufferedOutput() : try BufferedOutput(path: output, protecting: [source.log])
            try out.write(builder.html(source: input))
            try out.close()
            if output != "-" && Output.stderrIsTerminal { Output.stderr("wrote \(output)\n") }
        }
    }
}

/// `lca plot`: one figure alone, as SVG or PNG.
struct PlotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plot",
        abstract: "Draw one LCA figure of a run as SVG (or PNG through rsvg-convert).",
        discussion: """
            Figures: \(ReportFigure.allCases.map(\.rawValue).joined(separator: ", ")) (those of \
            lca report). iterations-helped and top need a run folder (its per-parameter totals); \
            units needs a log written with --units; lca-histogram needs log version 2; \
            group-heatmap and group-cumulative need a log written with --groups; \
            synchronisation needs two weight tensors. A FILE ending in .png is rasterised by rsvg-convert (Debian's \
            librsvg2-bin), looked up in PATH when needed.
            Examples: lca plot runs/x --figure cumulative -o cumulative.svg; \
            lca plot runs/x/lca.log --figure helping -o helping.png --width 1200
            """
    )

    @Argument(help: ArgumentHelp("A run folder, or a log file (- for standard input).", valueName: "input"))
    var input: String

    @Option(help: ArgumentHelp("The figure to draw.", valueName: "name"))
    var figure: ReportFigure

    @Option(name: [.short, .long], help: ArgumentHelp("The file to write: FILE.svg or FILE.png.", valueName: "file"))
    var output: String

    @Option(help: ArgumentHelp("Width in pixels (default: 900).", valueName: "w"))
    var width: Int = 900

    @Option(help: ArgumentHelp("Height in pixels (default: the figure's own).", valueName: "h"))
    var height: Int?

    @Flag(help: "Scale each heat-map row to its own largest |LCA|.")
    var perRowScaling = false

    @Option(help: ArgumentHelp("Figure 8: peaks of two tensors coincide when at most this many iterations apart.", valueName: "w"))
    var syncWindow = 0

    @Flag(help: "Figure 10: one block of groups × iterations per layer instead of per tensor.")
    var groupLayers = false

    func validate() throws {
        let ext = (output as NSString).pathExtension.lowercased()
        guard ext == "svg" || ext == "png" else { throw ValidationError("-o must name a .svg or .png file, not '\(output)'") }
        guard (100...20000).contains(width) else { throw ValidationError("--width must be 100 to 20000 pixels, not \(width)") }
        if let height, !(60...20000).contains(height) { throw ValidationError("--height must be 60 to 20000 pixels, not \(height)") }
        guard (0...1000).contains(syncWindow) else { throw ValidationError("--sync-window must be 0 to 1000 iterations, not \(syncWindow)") }
    }

    func run() throws {
        try Report.failures {
            let source = try ReportInput(input)
            let builder = try source.builder(width: max(8, width - 64), perRow: perRowScaling, syncWindow: syncWindow,
                                             analyseSync: figure == .synchronisation, groupLayers: groupLayers)
            if let why = builder.unavailable(figure) {
                throw LCAError(code: .invalidArgument, message: "\(input): figure \(figure.rawValue): \(why)")
            }
            let svg = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" + builder.svg(figure, width: width, height: height) + "\n"
            if (output as NSString).pathExtension.lowercased() == "svg" {
                let out = try BufferedOutput(path: output, protecting: [source.log])
                try out.write(svg)
                try out.close()
                return
            }
            try Self.rasterise(svg, to: output)
        }
    }

    /// Writes `svg` as PNG through rsvg-convert.
    static func rasterise(_ svg: String, to path: String) throws {
        let search = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        guard let tool = search.map({ "\($0)/rsvg-convert" }).first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw LCAError(code: .io, message: "\(path): cannot write PNG: rsvg-convert is not in PATH; install it (Debian, Ubuntu: apt-get install librsvg2-bin) or write .svg")
        }
        let temporary = FileManager.default.temporaryDirectory.appendingPathComponent("lca-plot-\(UUID().uuidString).svg")
        defer { try? FileManager.default.removeItem(at: temporary) }
        try Data(svg.utf8).write(to: temporary)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = ["-f", "png", "-o", path, temporary.path]
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw LCAError(code: .io, message: "\(path): rsvg-convert failed (status \(process.terminationStatus)): \(message.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }
}
