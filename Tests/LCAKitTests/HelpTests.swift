import Foundation
import XCTest

/// Help that cannot drift: the `--help` of every command against committed
/// snapshots, the README's flag tables against the commands' flags, and the
/// README's output blocks against what the commands print.
///
/// Regenerate the snapshots after a deliberate change of a help text:
///
///     swift build && LCA_UPDATE_SNAPSHOTS=1 swift test --disable-swift-testing --filter HelpTests
///
/// and the README's output blocks with `tools/readme_outputs.py`.
final class HelpTests: XCTestCase {
    /// The width the snapshots are wrapped at (COLUMNS; argument-parser
    /// reads it before asking the terminal).
    static let columns = "100"

    /// Every command, as the words after `lca`.
    static let commands: [[String]] = [[], ["train"], ["attribute"], ["show"], ["export"], ["verify"], ["report"], ["plot"]]

    static var root: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    static var snapshots: URL { root.appendingPathComponent("Tests/snapshots/help") }

    /// Runs `lca arguments` with a fixed COLUMNS and colour off.
    static func run(_ arguments: [String], environment extra: [String: String] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
        let result = try CLI.run(arguments, environment: extra.merging(["COLUMNS": columns]) { first, _ in first })
        return (result.status, String(decoding: result.stdout, as: UTF8.self), result.stderr)
    }

    /// `diff -u expected actual` of two texts, for a failure message.
    static func diff(_ expected: String, _ actual: String, label: String) throws -> String {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lca-help-diff-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let a = folder.appendingPathComponent("snapshot"), b = folder.appendingPathComponent("lca-output")
        try expected.write(to: a, atomically: true, encoding: .utf8)
        try actual.write(to: b, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["diff", "-u", "--label", "\(label) (snapshot)", "--label", "\(label) (lca prints)", a.path, b.path]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    func testHelpMatchesSnapshots() throws {
        let update = ProcessInfo.processInfo.environment["LCA_UPDATE_SNAPSHOTS"] != nil
        for command in Self.commands {
            let name = (["lca"] + command).joined(separator: "-")
            let result = try Self.run(command + ["--help"])
            XCTAssertEqual(result.status, 0, "lca \(command.joined(separator: " ")) --help: \(result.stderr)")
            let file = Self.snapshots.appendingPathComponent("\(name).txt")
            if update {
                try FileManager.default.createDirectory(at: Self.snapshots, withIntermediateDirectories: true)
                try result.stdout.write(to: file, atomically: true, encoding: .utf8)
                print("wrote \(file.path)")
                continue
            }
            guard let expected = try? String(contentsOf: file, encoding: .utf8) else {
                XCTFail("\(file.path) is missing; LCA_UPDATE_SNAPSHOTS=1 swift test --filter HelpTests writes it")
                continue
            }
            if expected != result.stdout {
                let difference = try Self.diff(expected, result.stdout, label: "\(name).txt")
                XCTFail("`lca \(command.joined(separator: " ")) --help` differs from Tests/snapshots/help/\(name).txt:\n\(difference)"
                        + "If the change is intended: LCA_UPDATE_SNAPSHOTS=1 swift test --disable-swift-testing --filter HelpTests")
            }
        }
    }

    /// The snapshots are wrapped at COLUMNS: a test that would pass at any
    /// width would not pin the text.
    func testHelpFollowsColumns() throws {
        let narrow = try Self.run(["train", "--help"], environment: ["COLUMNS": "60"])
        let longest = narrow.stdout.split(separator: "\n").map(\.count).max() ?? 0
        XCTAssertLessThanOrEqual(longest, 60)
        XCTAssertNotEqual(narrow.stdout, try Self.run(["train", "--help"]).stdout)
    }

    /// Every flag (long name, and short name where there is one) of each
    /// command, from argument-parser's own description of the commands.
    static func commandFlags() throws -> [String: Set<String>] {
        let dump = try run(["--experimental-dump-help"])
        XCTAssertEqual(dump.status, 0, dump.stderr)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(dump.stdout.utf8)) as? [String: Any])
        let root = try XCTUnwrap(json["command"] as? [String: Any])
        var flags: [String: Set<String>] = [:]
        for command in (root["subcommands"] as? [[String: Any]]) ?? [] {
            let name = try XCTUnwrap(command["commandName"] as? String)
            guard name != "help" else { continue }
            var names: Set<String> = []
            for argument in (command["arguments"] as? [[String: Any]]) ?? [] {
                if argument["kind"] as? String == "positional" {
                    names.insert((argument["valueName"] as? String ?? "").uppercased())
                }
                for entry in (argument["names"] as? [[String: String]]) ?? [] {
                    switch entry["kind"] {
                    case "long": names.insert("--" + entry["name"]!)
                    case "short": names.insert("-" + entry["name"]!)
                    default: break
                    }
                }
            }
            flags[name] = names.subtracting(["--help", "-h", "--version"])
        }
        return flags
    }

    /// The flags in the first column of each README table marked
    /// `<!-- flags: COMMAND -->`, and positional arguments written in
    /// capitals (`LOG`).
    static func readmeFlags() throws -> [String: Set<String>] {
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let lines = readme.components(separatedBy: "\n")
        let flag = try NSRegularExpression(pattern: "(?<![\\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z](?![\\w-]))")
        let positional = try NSRegularExpression(pattern: "^\\s*`([A-Z]+)`\\s*$")
        var tables: [String: Set<String>] = [:]
        for (index, line) in lines.enumerated() {
            guard line.hasPrefix("<!-- flags: "), let end = line.range(of: " -->") else { continue }
            let command = String(line[line.index(line.startIndex, offsetBy: 12)..<end.lowerBound])
            var names: Set<String> = []
            // The table: the header row, the rule, then the rows.
            for row in lines[(index + 1)...].prefix(while: { $0.hasPrefix("|") }).dropFirst(2) {
                let cell = row.split(separator: "|", omittingEmptySubsequences: false).dropFirst().first.map(String.init) ?? ""
                let range = NSRange(cell.startIndex..., in: cell)
                for match in flag.matches(in: cell, range: range) {
                    names.insert(String(cell[Range(match.range(at: 1), in: cell)!]))
                }
                if let match = positional.firstMatch(in: cell, range: range) {
                    names.insert(String(cell[Range(match.range(at: 1), in: cell)!]))
                }
            }
            XCTAssertFalse(names.isEmpty, "README.md: the table after <!-- flags: \(command) --> lists no flags")
            tables[command, default: []].formUnion(names)
        }
        return tables
    }

    func testReadmeTablesListEveryFlag() throws {
        let commands = try Self.commandFlags()
        let readme = try Self.readmeFlags()
        XCTAssertEqual(Set(commands.keys), ["train", "attribute", "show", "export", "verify", "report", "plot"])
        for (command, flags) in commands.sorted(by: { $0.key < $1.key }) {
            guard let documented = readme[command] else {
                XCTFail("README.md has no table marked <!-- flags: \(command) -->")
                continue
            }
            let undocumented = flags.subtracting(documented).sorted()
            let unknown = documented.subtracting(flags).sorted()
            XCTAssert(undocumented.isEmpty, "lca \(command) has flags the README's table does not list: \(undocumented)")
            XCTAssert(unknown.isEmpty, "the README's table for lca \(command) lists flags the command does not have: \(unknown)")
        }
        for command in readme.keys where commands[command] == nil {
            XCTFail("README.md has a flag table for \(command), which is not a command")
        }
    }

    /// The README's rows give the same defaults as the help, which reads
    /// them from TrainingConfiguration(): for every option whose help says
    /// "(default: X)" with a one-word X, the README row naming the flag
    /// contains X.
    func testReadmeDefaultsMatchHelp() throws {
        let dump = try Self.run(["--experimental-dump-help"])
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(dump.stdout.utf8)) as? [String: Any])
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
            .components(separatedBy: "\n")
        let pattern = try NSRegularExpression(pattern: "\\(default: ([^ ()<]+)\\)")
        var checked = 0
        for command in ((json["command"] as? [String: Any])?["subcommands"] as? [[String: Any]]) ?? [] {
            let name = command["commandName"] as? String ?? ""
            guard let marker = readme.firstIndex(of: "<!-- flags: \(name) -->") else { continue }
            let rows = readme[(marker + 1)...].prefix(while: { $0.hasPrefix("|") })
            for argument in (command["arguments"] as? [[String: Any]]) ?? [] {
                let abstract = argument["abstract"] as? String ?? ""
                guard let match = pattern.firstMatch(in: abstract, range: NSRange(abstract.startIndex..., in: abstract)),
                      let long = ((argument["names"] as? [[String: String]]) ?? []).first(where: { $0["kind"] == "long" })?["name"]
                else { continue }
                let value = String(abstract[Range(match.range(at: 1), in: abstract)!])
                let flag = "--" + long
                guard let row = rows.first(where: { row in
                    let cell = row.split(separator: "|").first.map(String.init) ?? ""
                    return cell.range(of: "`\(flag)[ `,]", options: .regularExpression) != nil
                        || cell.contains(", \(flag) ") || cell.contains(", \(flag)`")
                }) else {
                    XCTFail("README.md: no row of the lca \(name) table names \(flag)")
                    continue
                }
                XCTAssertTrue(row.contains(value), "README.md: the row of lca \(name) \(flag) does not give the default \(value) the help gives:\n\(row)")
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 10, "the defaults of at least the main train options are checked")
    }

    /// tools/readme_outputs.py --check: every output block of the README is
    /// what the commands print now.
    func testReadmeOutputsAreCurrent() throws {
        let lca = try CLI.executable()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Self.root.appendingPathComponent("tools/readme_outputs.py").path, "--check",
                             "--bin", lca.deletingLastPathComponent().path]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try process.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        print(text)
        if process.terminationStatus == 77 { throw XCTSkip("SKIPPED LOUDLY: \(text)") }
        XCTAssertEqual(process.terminationStatus, 0, "README.md's output blocks are out of date:\n\(text)")
    }
}
