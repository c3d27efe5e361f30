// A sweep over learning rates that prints each tensor's total LCA side by
// side: which layers learn (or hurt) more as the step grows.
//
//   swift run lr-sweep [--iterations N] [--rates 0.003,0.01,0.03,0.1]
import Foundation
import LCAKit

var iterations = 35
var rates = [0.003, 0.01, 0.03, 0.1]
let arguments = CommandLine.arguments
if let flag = arguments.firstIndex(of: "--iterations"), flag + 1 < arguments.count {
    iterations = Int(arguments[flag + 1]) ?? iterations
}
if let flag = arguments.firstIndex(of: "--rates"), flag + 1 < arguments.count {
    rates = arguments[flag + 1].split(separator: ",").compactMap { Double($0) }
}

do {
    let network = Network.mlp([64, 32, 10])
    var columns: [(rate: Double, summary: RunSummary)] = []
    for rate in rates {
        var configuration = TrainingConfiguration()
        configuration.iterations = iterations
        configuration.learningRate = rate
        let run = try TrainingRun(recipe: RunRecipe(data: DataSource(source: "digits"), network: network,
                                                    configuration: configuration))
        columns.append((rate, try run.run()))
    }
    func row(_ label: String, _ cells: [String]) -> String {
        label.padding(toLength: 12, withPad: " ", startingAt: 0)
            + cells.map { String(repeating: " ", count: max(16 - $0.count, 0)) + $0 }.joined()
    }
    print("total LCA per tensor over \(iterations) iterations, by learning rate")
    print(row("tensor", columns.map { "lr \($0.rate)" }))
    for (index, tensor) in columns[0].summary.train!.tensors.enumerated() {
        print(row(tensor.name, columns.map { String(format: "%+.5e", $0.summary.train!.tensors[index].lca) }))
    }
    print(row("total", columns.map { String(format: "%+.5e", $0.summary.train!.lcaTotal) }))
    print(row("final loss", columns.map { String(format: "%.6f", $0.summary.train!.lossLast) }))
} catch {
    FileHandle.standardError.write(Data("lr-sweep: error: \(error)\n".utf8))
    exit(1)
}
