import Foundation

/// What a run was started with, stored in its `config.json` so that
/// `--resume` refuses to continue on anything else: a data file replaced
/// or edited, a model built differently (another lca version), options
/// edited in `config.json`, or a changed `--init` checkpoint. Each part is
/// a readable description ending in a 64-bit hash, so the error can say
/// what changed.
public struct RunFingerprint: Sendable, Hashable, Codable {
    /// The examples: count, features, classes and a hash of every input
    /// value and label, in order.
    public var data: String
    /// The model: spec, tensors and their shapes, parameter count (and the
    /// hash of the `--init` checkpoint's bytes).
    public var model: String
    /// A hash of the recipe (all options) as written to `config.json`,
    /// without this fingerprint.
    public var options: String
    /// The loss groups (issue 15): source, count and a hash of the ids; nil
    /// for a run without (and for runs fingerprinted before groups existed).
    public var groups: String?

    /// The fingerprint of a run about to start (or being resumed).
    static func of(recipe: RunRecipe, data: Dataset, model: Model) throws -> RunFingerprint {
        RunFingerprint(data: describe(data), model: try describe(model, initCheckpoint: recipe.initCheckpoint),
                       options: try options(of: recipe), groups: recipe.configuration.exampleGroups?.fingerprint)
    }

    /// Throws `.mismatch` naming what differs from `stored`.
    func check(against stored: RunFingerprint, config: String, recipe: RunRecipe) throws {
        var changes: [String] = []
        if data != stored.data {
            changes.append("the data (\(recipe.data.source)\(recipe.data.labels.map { ", " + $0 } ?? "")) changed: the run started with \(stored.data), it now holds \(data)")
        }
        if model != stored.model {
            changes.append("the model changed: the run started with \(stored.model), it is now \(model)")
        }
        if groups != stored.groups {
            changes.append("the loss groups changed: the run started with \(stored.groups ?? "no groups"), they are now \(groups ?? "none")")
        }
        if options != stored.options {
            changes.append("the options differ from those the run started with (\(stored.options), now \(options)): config.json was edited")
        }
        if !changes.isEmpty {
            throw LCAError(code: .mismatch, message: "cannot resume: " + changes.joined(separator: "; ") + "; a resumed run would not be the run that started. Restore the original input, or start a new run with -o", path: config)
        }
    }

    static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    static func describe(_ data: Dataset) -> String {
        var hash = Hash64()
        let chunk = 4096
        var start = 0
        while start < data.count {
            let end = min(data.count, start + chunk)
            let (inputs, labels) = data.gather((start..<end).map { UInt32($0) })
            inputs.withUnsafeBufferPointer { hash.add(UnsafeRawBufferPointer($0)) }
            labels.withUnsafeBufferPointer { hash.add(UnsafeRawBufferPointer($0)) }
            start = end
        }
        return "\(data.count) examples of \(data.features) features, \(data.classes) classes, hash \(hex(hash.value))"
    }

    static func describe(_ model: Model, initCheckpoint: String?) throws -> String {
        var hash = Hash64()
        for tensor in model.tensors {
            hash.add(Data(tensor.name.utf8))
            hash.add(Data(tensor.shape.map(String.init).joined(separator: "x").utf8))
        }
        var text = "\(model.spec): \(model.tensors.count) tensors, \(model.parameterCount) parameters, hash \(hex(hash.value))"
        if let initCheckpoint {
            var file = Hash64()
            do {
                file.add(try Data(contentsOf: URL(fileURLWithPath: initCheckpoint)))
            } catch {
                throw LCAError(code: .io, message: "cannot read the initial checkpoint: \(error.localizedDescription)", path: initCheckpoint)
            }
            text += ", from \(initCheckpoint) (hash \(hex(file.value)))"
        }
        return text
    }

    static func options(of recipe: RunRecipe) throws -> String {
        var recipe = recipe
        recipe.fingerprint = nil
        var hash = Hash64()
        hash.add(try JSONFormat.encoder().encode(recipe))
        return "hash " + hex(hash.value)
    }
}

/// A fast 64-bit hash (FNV-1a over 64-bit words, then a final mix); not
/// cryptographic: it tells a changed input, not a forged one.
struct Hash64 {
    private(set) var state: UInt64 = 0xCBF2_9CE4_8422_2325
    private var length: UInt64 = 0

    mutating func add(_ bytes: UnsafeRawBufferPointer) {
        let words = bytes.count / 8
        var h = state
        for i in 0..<words {
            h = (h ^ bytes.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)) &* 0x0000_0100_0000_01B3
            h ^= h >> 29
        }
        for i in (words * 8)..<bytes.count {
            h = (h ^ UInt64(bytes[i])) &* 0x0000_0100_0000_01B3
        }
        state = h
        length &+= UInt64(bytes.count)
    }

    mutating func add(_ data: Data) {
        data.withUnsafeBytes { add($0) }
    }

    var value: UInt64 {
        var z = state ^ length
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
