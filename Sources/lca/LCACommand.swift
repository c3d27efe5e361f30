import ArgumentParser
import Foundation
import LCAKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// `lca`: train small networks while measuring Loss Change Allocation, and
/// attribute the loss change between two checkpoints.
@main
struct LCACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lca",
        abstract: "Train neural networks and measure Loss Change Allocation (LCA) while they train.",
        discussion: """
            LCA (Lan et al., NeurIPS 2019) splits the change of the loss on a fixed evaluation set \
            into one term per parameter at every iteration. Negative LCA: the parameter helped.
            Exit status: 0 success, 1 failure, 64 usage error. Data goes to stdout, progress to \
            stderr only when it is a terminal; NO_COLOR turns colour off; a closed output pipe \
            ends a command quietly. LCA_KERNEL=avx512|avx2|portable forces a kernel family \
            (default: the best this CPU runs); the summary names the one used.
            """,
        version: Core.version,
        subcommands: [Train.self, Show.self, Export.self, Verify.self, Attribute.self, ReportCommand.self, PlotCommand.self],
        defaultSubcommand: Train.self
    )

    /// Ignores SIGPIPE so that a closed output pipe shows up as an EPIPE
    /// write error, which the commands treat as a quiet stop; LCA_KERNEL's
    /// check and the dispatch over MPI ranks are Ranks.main's.
    static func main() {
        signal(SIGPIPE, SIG_IGN)
        Ranks.main(Array(CommandLine.arguments.dropFirst()))
    }
}

/// Reporting shared by the subcommands: failures as `lca: error: …` with
/// exit status 1; a closed pipe as a quiet, successful stop.
enum Report {
    /// Runs `body`; turns an LCAError (or any other error) into the message
    /// on stderr and exit status 1, and a broken pipe into exit status 0.
    static func failures(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch let error as LCAError where error.isBrokenPipe {
            throw ExitCode.success
        } catch let error as LCAError {
            Output.error(error.description)
            throw ExitCode.failure
        } catch let error as ExitCode {
            throw error
        } catch let error as ValidationError {
            throw error   // a usage error: ArgumentParser prints it with the usage, exit 64
        } catch {
            Output.error("\(error)")
            throw ExitCode.failure
        }
    }
}

/// Writing to the standard streams without buffering surprises.
enum Output {
    /// Writes text to stdout; a closed pipe ends the command quietly, any
    /// other failure (a full disk, /dev/full) is an error: `stdout: <reason>`,
    /// exit 1, so that no output is lost silently.
    static func stdout(_ text: String) throws {
        guard Ranks.writes else { return } // MPI: rank 0 speaks for the job
        if !write(text, to: STDOUT_FILENO) {
            let saved = errno
            if saved == EPIPE { throw ExitCode.success }
            throw LCAError(code: .io, message: "stdout: \(String(cString: strerror(saved)))", systemError: saved)
        }
    }

    /// Writes text to stderr (failures are ignored: nowhere left to report).
    /// Under MPI only rank 0 writes (the others' notices are the same),
    /// except errors (`always`), which name the rank.
    static func stderr(_ text: String, always: Bool = false) {
        guard Ranks.writes || always else { return }
        _ = write(text, to: STDERR_FILENO)
    }

    /// `lca: error: <message>` on stderr (`lca: rank N: error: …` on a
    /// rank other than 0 of an MPI job).
    static func error(_ message: String) {
        stderr("lca: \(Ranks.prefix)\(colored("error:", .red, stream: .stderr)) \(message)\n", always: true)
    }

    enum Color: String {
        case red = "31", green = "32"
    }

    enum Stream { case stdout, stderr }

    /// text in colour when the stream is a terminal, no MPI launcher started
    /// this process (Ranks.underLauncher) and NO_COLOR is unset
    /// (https://no-color.org: any value, even empty, turns colour off).
    static func colored(_ text: String, _ color: Color, stream: Stream) -> String {
        let fd = stream == .stdout ? STDOUT_FILENO : STDERR_FILENO
        guard isatty(fd) == 1, !Ranks.underLauncher, ProcessInfo.processInfo.environment["NO_COLOR"] == nil,
              ProcessInfo.processInfo.environment["TERM"] != "dumb" else { return text }
        return "\u{1B}[\(color.rawValue)m\(text)\u{1B}[0m"
    }

    /// Whether stderr is a terminal (progress goes there only then); never
    /// under an MPI launcher, whose streams are its own.
    static var stderrIsTerminal: Bool { isatty(STDERR_FILENO) == 1 && !Ranks.underLauncher }

    /// Writes all of text; false when the reader has gone (EPIPE) or the
    /// write failed otherwise.
    private static func write(_ text: String, to fd: Int32) -> Bool {
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { raw in
                systemWrite(fd, raw.baseAddress! + offset, raw.count - offset)
            }
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += n
        }
        bytes.removeAll()
        return true
    }
}

#if canImport(Glibc)
private let systemWrite = Glibc.write
#elseif canImport(Musl)
private let systemWrite = Musl.write
#else
private let systemWrite = Darwin.write
#endif

/// Set by SIGINT: the run stops after the current iteration and still
/// saves and prints its summary. A second Ctrl-C ends the process.
nonisolated(unsafe) var interruptRequested: sig_atomic_t = 0

/// `lca train`'s handlers: SIGINT, SIGTERM and SIGHUP each stop the run
/// after the current record; it saves and exits 128 + the signal (130, 143,
/// 129). `interruptRequested` holds the signal's number. A second signal
/// ends the process at once (what was saved before stays intact).
func installRunSignalHandlers() {
    for number in [SIGINT, SIGTERM, SIGHUP] {
        signal(number) { received in
            if interruptRequested != 0 { _exit(128 + received) }
            interruptRequested = received
        }
    }
}

/// The name of a signal number ("SIGINT").
func signalName(_ number: Int32) -> String {
    switch number {
    case SIGINT: return "SIGINT"
    case SIGTERM: return "SIGTERM"
    case SIGHUP: return "SIGHUP"
    default: return "signal \(number)"
    }
}

func installInterruptHandler() {
    signal(SIGINT) { _ in
        if interruptRequested != 0 { _exit(130) }
        interruptRequested = 1
    }
}
