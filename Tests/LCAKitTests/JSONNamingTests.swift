import Foundation
import LCAKit
import XCTest

/// One JSON naming convention for every output (JSONFormat): snake_case
/// keys in `lca train --json`, `lca show --json` (also with --follow),
/// `lca attribute --json` and a run folder's config.json; and the
/// camelCase config.json of a run folder written before the convention
/// still resumes, to the same bytes.
final class JSONNamingTests: XCTestCase {
    /// Every key of a JSON value, at any depth.
    static func keys(_ value: Any) -> [String] {
        if let object = value as? [String: Any] {
            return object.keys.sorted() + object.values.flatMap(keys)
        }
        if let array = value as? [Any] { return array.flatMap(keys) }
        return []
    }

    /// Keys that break the convention: anything but lower case, digits and
    /// '_' (and '.', which joins a tensor name to a column in the log's
    /// named columns: "fc1.weight.lca").
    static func offending(_ json: Data) throws -> [String] {
        let value = try JSONSerialization.jsonObject(with: json)
        return keys(value).filter { $0.range(of: "^[a-z0-9_.]+$", options: .regularExpression) == nil }
    }

    func testEveryJSONOutputIsSnakeCase() throws {
        let folder = try temporaryFolder("json-naming", testCase: self)
        // --groups class: the loss groups' keys too (show --json's "groups", the columns of --follow)
        let train = try CLI.run(["train", "-o", "run", "--iterations", "4", "--lca-validation", "--units", "--groups", "class", "--quiet", "--json"], in: folder)
        XCTAssertEqual(train.status, 0, train.stderr)
        XCTAssertEqual(try Self.offending(train.stdout), [], "lca train --json")
        XCTAssertNotNil((try JSONSerialization.jsonObject(with: train.stdout) as? [String: Any])?["wall_seconds"])

        let config = try contents(folder.appendingPathComponent("run/config.json"))
        XCTAssertEqual(try Self.offending(config), [], "config.json")
        let recipe = try JSONSerialization.jsonObject(with: config) as? [String: Any]
        XCTAssertNotNil(recipe?["learning_rate_scales"], String(decoding: config, as: UTF8.self))

        let show = try CLI.run(["show", "run/lca.log", "--json"], in: folder)
        XCTAssertEqual(show.status, 0, show.stderr)
        XCTAssertEqual(try Self.offending(show.stdout), [], "lca show --json")
        XCTAssertNotNil((try JSONSerialization.jsonObject(with: show.stdout) as? [String: Any])?["groups"], "lca show --json has no groups")
        // the summary of show --json decodes as what train --json printed
        let shown = try JSONFormat.decoder().decode(RunSummary.self, from: show.stdout)
        let trained = try JSONFormat.decoder().decode(RunSummary.self, from: train.stdout)
        XCTAssertEqual(shown.train?.tensors, trained.train?.tensors)

        let follow = try CLI.run(["show", "run/lca.log", "--json", "--follow"], in: folder)
        XCTAssertEqual(follow.status, 0, follow.stderr)
        let lines = follow.stdoutText.split(separator: "\n")
        XCTAssertEqual(lines.count, 5)
        for line in lines { XCTAssertEqual(try Self.offending(Data(line.utf8)), [], "lca show --json --follow: \(line.prefix(80))") }

        let attribute = try CLI.run(["attribute", "--from", "run/checkpoint-000000.safetensors", "--to", "run/checkpoint-000004.safetensors",
                                     "--data", "digits", "--json"], in: folder)
        XCTAssertEqual(attribute.status, 0, attribute.stderr)
        XCTAssertEqual(try Self.offending(attribute.stdout), [], "lca attribute --json")
    }

    /// A key as lca wrote it before snake_case: "learning_rate_scales" →
    /// "learningRateScales".
    static func camelCase(_ key: String) -> String {
        let parts = key.split(separator: "_")
        guard let first = parts.first else { return key }
        return String(first) + parts.dropFirst().map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined()
    }

    static func renamingKeys(_ value: Any, _ rename: (String) -> String) -> Any {
        if let object = value as? [String: Any] {
            return Dictionary(uniqueKeysWithValues: object.map { (rename($0.key), renamingKeys($0.value, rename)) })
        }
        if let array = value as? [Any] { return array.map { renamingKeys($0, rename) } }
        return value
    }

    /// Resume rebuilds the trainer from config.json and refuses a log whose
    /// header differs from the rebuilt run's, so a resume that succeeds
    /// read every setting back (non-default ones here: a key decoded as its
    /// default would fail it, as the renamed key below shows).
    func testOldCamelCaseConfigStillResumes() throws {
        let folder = try temporaryFolder("json-old-config", testCase: self)
        let run = try CLI.run(["train", "--batch-size", "100", "--save-every", "10", "--seed", "3", "--lr-scale", "fc2.bias=0.5",
                               "--lca-threshold", "0.0005", "--iterations", "30", "--quiet", "-o", "old"], in: folder)
        XCTAssertEqual(run.status, 0, run.stderr)
        let names = ["lca.log", "checkpoint-000030.safetensors", "state.safetensors", "lca-total.safetensors"]
        let before = try names.map { try contents(folder.appendingPathComponent("old/" + $0)) }

        // config.json as an older lca wrote it: camelCase keys.
        let path = folder.appendingPathComponent("old/config.json")
        let snake = try JSONSerialization.jsonObject(with: contents(path))
        func write(_ rename: (String) -> String) throws {
            try JSONSerialization.data(withJSONObject: Self.renamingKeys(snake, rename), options: [.prettyPrinted, .sortedKeys]).write(to: path)
        }
        try write(Self.camelCase)
        let camel = try JSONSerialization.jsonObject(with: contents(path)) as? [String: Any]
        XCTAssertNotNil((camel?["configuration"] as? [String: Any])?["learningRate"], "the rewrite produced camelCase keys")
        XCTAssertNotNil(camel?["learningRateScales"])

        let resumed = try CLI.run(["train", "--resume", "old", "--quiet"], in: folder)
        XCTAssertEqual(resumed.status, 0, "a camelCase config.json must still resume: \(resumed.stderr)")
        for (name, bytes) in zip(names, before) {
            XCTAssertEqual(try contents(folder.appendingPathComponent("old/" + name)), bytes, "\(name) changed by resuming a finished run")
        }

        // The check has teeth: a key that is not read back (decoded as the default) is refused.
        try write { Self.camelCase($0) == "batchSize" ? "batchSIZE" : Self.camelCase($0) }
        let refused = try CLI.run(["train", "--resume", "old", "--quiet"], in: folder)
        XCTAssertEqual(refused.status, 1, refused.stderr)
        // refused by the fingerprint of the options (issue 12) before the log header is compared
        XCTAssertTrue(refused.stderr.contains("header differs") || refused.stderr.contains("the options differ from those the run started with"), refused.stderr)
    }

    /// A config.json that is not a run configuration is refused with the
    /// file's name, not resumed with defaults.
    func testBrokenConfigIsAClearError() throws {
        let folder = try temporaryFolder("json-broken-config", testCase: self)
        let run = try CLI.run(["train", "--iterations", "2", "-o", "run", "--quiet"], in: folder)
        XCTAssertEqual(run.status, 0, run.stderr)
        try Data(#"{"data": {"source": "digits"}, "loss": "ce", "configuration": {"batch_size": "many"}}"#.utf8)
            .write(to: folder.appendingPathComponent("run/config.json"))
        let resumed = try CLI.run(["train", "--resume", "run", "--quiet"], in: folder)
        XCTAssertEqual(resumed.status, 1)
        XCTAssertTrue(resumed.stderr.contains("run/config.json"), resumed.stderr)
        XCTAssertTrue(resumed.stderr.contains("batch_size") || resumed.stderr.contains("batchSize"), resumed.stderr)
    }
}
