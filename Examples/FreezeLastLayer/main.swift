// The paper's "freeze the last layer" comparison (Lan et al. 2019, §5): train
// the same network from the same initial weights twice, once normally and
// once with the last layer frozen at its initial values, and compare the
// per-tensor LCA and the final training and validation losses.
//
//   swift run freeze-last-layer [--iterations N]     (default 35: 5 epochs of the digits)
import Foundation
import LCAKit

var iterations = 35
if let flag = CommandLine.arguments.firstIndex(of: "--iterations"), flag + 1 < CommandLine.arguments.count {
    iterations = Int(CommandLine.arguments[flag + 1]) ?? iterations
}

do {
    let network = Network.mlp([64, 32, 10])
    var configuration = TrainingConfiguration()
    configuration.iterations = iterations
    configuration.lcaValidationView = true

    var results: [(name: String, summary: RunSummary)] = []
    for freeze in [false, true] {
        let run = try TrainingRun(recipe: RunRecipe(data: DataSource(source: "digits"), network: network,
                                                    configuration: configuration))
        let last = run.model.tensors.suffix(2).map(\.name)   // fc2.weight, fc2.bias
        if freeze { for tensor in last { try run.control.freeze(tensor) } }
        results.append((freeze ? "last layer frozen" : "baseline", try run.run()))
    }

    print("total LCA per tensor over \(iterations) iterations (negative = helped)")
    print("tensor".padding(toLength: 22, withPad: " ", startingAt: 0)
          + results.map { $0.name.leftPadded(20) }.joined())
    for (index, tensor) in results[0].summary.train!.tensors.enumerated() {
        print(tensor.name.padding(toLength: 22, withPad: " ", startingAt: 0)
              + results.map { String(format: "%+.6e", $0.summary.train!.tensors[index].lca).leftPadded(20) }.joined())
    }
    print("final training loss".padding(toLength: 22, withPad: " ", startingAt: 0)
          + results.map { String(format: "%.6f", $0.summary.train!.lossLast).leftPadded(20) }.joined())
    print("final validation loss".padding(toLength: 22, withPad: " ", startingAt: 0)
          + results.map { String(format: "%.6f", $0.summary.validation!.lossLast).leftPadded(20) }.joined())
} catch {
    FileHandle.standardError.write(Data("freeze-last-layer: error: \(error)\n".utf8))
    exit(1)
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: " ", count: max(width - count, 0)) + self }
}
