import Foundation
import XCTest
@testable import LCAKit

/// Checkpoints written by other tools, through the Swift API: no lca
/// metadata, F64 tensors, a spec given by the caller (docs/checkpoints.md).
/// The files are built here byte by byte, as PyTorch's save_file would
/// write them (header, then the tensors' little-endian bytes).
final class CheckpointTests: XCTestCase {
    private var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("lca-checkpoint-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: folder) // scratch files only
    }

    /// A safetensors file with the model's tensors as F64 and no metadata.
    private func writeF64(_ model: Model, values: [Double], to path: String) throws {
        var header = "{", data = Data(), offset = 0
        for (index, tensor) in model.tensors.enumerated() {
            let bytes = tensor.count * 8
            header += (index > 0 ? "," : "") + "\"\(tensor.name)\":{\"dtype\":\"F64\",\"shape\":\(tensor.shape),\"data_offsets\":[\(offset),\(offset + bytes)]}"
            for value in values[tensor.offset..<(tensor.offset + tensor.count)] {
                withUnsafeBytes(of: value.bitPattern.littleEndian) { data.append(contentsOf: $0) }
            }
            offset += bytes
        }
        header += "}"
        var file = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(contentsOf: Array(header.utf8))
        file.append(data)
        try file.write(to: URL(fileURLWithPath: path))
    }

    func testForeignF64CheckpointWithSpec() throws {
        let model = try Model(spec: "64-10")
        model.initialize(seed: 4)
        let own = folder.appendingPathComponent("own.safetensors").path
        try model.saveCheckpoint(own, iteration: 3)
        // the weights as F64, moved away from zero by a quarter of an F32 ulp (rounds back to the
        // weight) or by three quarters (rounds to the next float away from zero)
        let weights = model.parameters
        var values = weights.map(Double.init), expected = weights
        for index in values.indices where weights[index] != 0 && index % 4 != 3 {
            let away = Double(weights[index].sign == .minus ? -1 : 1) * Double(weights[index].ulp)
            values[index] += away * (index % 2 == 0 ? 0.25 : 0.75)
            if index % 2 == 1 { expected[index] = weights[index] > 0 ? weights[index].nextUp : weights[index].nextDown }
        }
        let nudged = values.indices.filter { values[$0] != Double(weights[$0]) }.count
        let foreign = folder.appendingPathComponent("foreign.safetensors").path
        try writeF64(model, values: values, to: foreign)
        // and the F32 file the rounded values make, for the attribution below
        let roundedModel = try Model(spec: "64-10")
        roundedModel.parameters = expected
        let rounded = folder.appendingPathComponent("rounded.safetensors").path
        try roundedModel.saveCheckpoint(rounded, iteration: 0)

        // no lca.model: a spec is required, and then used
        XCTAssertThrowsError(try Model.checkpointSpec(foreign, requested: nil)) { error in
            XCTAssertTrue("\(error)".contains("lca.model") && "\(error)".contains("--model"), "\(error)")
        }
        XCTAssertEqual(try Model.checkpointSpec(foreign, requested: "64-10").spec, "64-10")
        let (loaded, conversion) = try Model.load(checkpoint: foreign, spec: "64-10")
        XCTAssertEqual(loaded.parameters.map(\.bitPattern), expected.map(\.bitPattern), "F64 → F32 rounds to nearest")
        XCTAssertNotEqual(expected, weights)
        XCTAssertEqual(conversion.f64Tensors, 2)
        XCTAssertEqual(conversion.f64Values, model.parameterCount)
        XCTAssertEqual(conversion.f64Rounded, nudged)
        XCTAssertGreaterThan(nudged, 300)
        XCTAssertEqual(conversion.notice, "lca: note: \(foreign): converted to F32 on load: 2 F64 tensors (rounded to nearest: \(nudged) of 650 values changed)\n")
        // lca's own file: nothing converted, no notice; the metadata and a disagreeing spec name both
        let ownLoad = try model.loadCheckpoint(own)
        XCTAssertTrue(ownLoad.isEmpty)
        XCTAssertNil(ownLoad.notice)
        XCTAssertEqual(ownLoad.iteration, 3)
        XCTAssertThrowsError(try Model.load(checkpoint: own, spec: "64-20-10")) { error in
            XCTAssertTrue("\(error)".contains("\"64-20-10\"") && "\(error)".contains("\"64-10\""), "\(error)")
        }

        // attribute between the foreign file and lca's own: --model honoured, the same losses as
        // between two lca files, and one conversion reported
        let data = try Dataset(source: "digits")
        var reported: [CheckpointConversion] = []
        let mixed = try attribute(from: foreign, to: own, data: data, modelSpec: "64-10") { reported.append($0) }
        let plain = try attribute(from: rounded, to: own, data: data)
        XCTAssertEqual(mixed.view.lossBefore, plain.view.lossBefore)
        XCTAssertEqual(mixed.view.lossAfter, plain.view.lossAfter)
        XCTAssertEqual(mixed.view.lcaTotal, plain.view.lcaTotal)
        XCTAssertEqual(reported.map(\.path), [foreign])
        // without a spec, `to`'s lack of metadata is filled from `from`'s
        let reversed = try attribute(from: own, to: foreign, data: data)
        XCTAssertEqual(reversed.view.lossAfter, plain.view.lossBefore)
        XCTAssertThrowsError(try attribute(from: foreign, to: own, data: data)) { error in
            XCTAssertTrue("\(error)".contains("--model"), "\(error)")
        }
    }

    /// The same through the command line (runs without torch): --model honoured, one note per
    /// file on stderr, --init from the foreign file, and the errors.
    func testForeignCheckpointFromTheCommandLine() throws {
        let model = try Model(spec: "64-10")
        model.initialize(seed: 5)
        try model.saveCheckpoint(folder.appendingPathComponent("own.safetensors").path, iteration: 0)
        let values = model.parameters.map { Double($0) + Double($0.ulp) * 0.25 } // rounds back
        try writeF64(model, values: values, to: folder.appendingPathComponent("foreign.safetensors").path)

        let attributed = try CLI.run(["attribute", "--from", "foreign.safetensors", "--to", "foreign.safetensors",
                                      "--model", "64-10", "--data", "digits", "--json"], in: folder)
        XCTAssertEqual(attributed.status, 0, attributed.stderr)
        let changed = values.indices.filter { values[$0] != Double(model.parameters[$0]) }.count
        XCTAssertEqual(attributed.stderr, "lca: note: foreign.safetensors: converted to F32 on load: 2 F64 tensors (rounded to nearest: \(changed) of 650 values changed)\n")
        let own = try CLI.run(["attribute", "--from", "own.safetensors", "--to", "own.safetensors", "--data", "digits", "--json"], in: folder)
        XCTAssertEqual(own.stderr, "")
        let lossBefore = { (result: CLI.Result) -> Double? in
            (try? JSONSerialization.jsonObject(with: result.stdout) as? [String: Any])?["loss_before"] as? Double
        }
        XCTAssertEqual(lossBefore(attributed), lossBefore(own))
        XCTAssertNotNil(lossBefore(own))

        let trained = try CLI.run(["train", "--init", "foreign.safetensors", "--model", "64-10", "--iterations", "2",
                                   "-o", "run", "--quiet"], in: folder)
        XCTAssertEqual(trained.status, 0, trained.stderr)
        XCTAssertEqual(try contents(folder.appendingPathComponent("run/checkpoint-000000.safetensors")),
                       try contents(folder.appendingPathComponent("own.safetensors")),
                       "--init from the F64 file starts from the same F32 weights, byte for byte")

        let noSpec = try CLI.run(["attribute", "--from", "foreign.safetensors", "--to", "own.safetensors", "--data", "digits"], in: folder)
        XCTAssertEqual(noSpec.status, 1)
        XCTAssertTrue(noSpec.stderr.contains("lca.model") && noSpec.stderr.contains("--model"), noSpec.stderr)
        for arguments in [["attribute", "--from", "own.safetensors", "--to", "own.safetensors", "--data", "digits"],
                          ["train", "--init", "own.safetensors", "--iterations", "1", "-o", "bad", "--quiet"]] {
            let disagreeing = try CLI.run(arguments + ["--model", "64-20-10"], in: folder)
            XCTAssertEqual(disagreeing.status, 1)
            XCTAssertTrue(disagreeing.stderr.contains("\"64-20-10\"") && disagreeing.stderr.contains("\"64-10\""), disagreeing.stderr)
        }
    }
}
