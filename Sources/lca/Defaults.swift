import LCAKit

/// The defaults the help texts quote, read from the one place that defines
/// them (`TrainingConfiguration()`, the core's `lca_config_default()`), so
/// a changed default changes the help with it.
enum Defaults {
    /// The core's defaults.
    static let configuration = TrainingConfiguration()

    /// The loss when --loss is not given.
    static let loss = Loss.crossEntropy

    /// What --data accepts (lca train and lca attribute): one sentence for both.
    static let dataSources = "Data: 'digits' (embedded), 'fashion-mnist' (Debian's dataset-fashion-mnist), a folder with train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz], an IDX images file (with --labels), or CIFAR-10 binary batches: a folder of data_batch_N.bin, one .bin file, or 'cifar10' with LCA_CIFAR10=FOLDER."

    /// The data when --data is not given (lca train).
    static let data = "digits"

    /// Epochs when neither --epochs nor --iterations is given: a few passes
    /// over the small embedded digits, one over anything else.
    static func epochs(data: String) -> Int { data == Defaults.data ? 5 : 1 }

    /// "(default: x)", the suffix every help text uses.
    static func note(_ value: CustomStringConvertible) -> String { "(default: \(value))" }

    /// "(default: x)" for a number, in its shortest %g form (0, 0.001, 0.9).
    static func note(_ value: Double) -> String { note(number(value)) }

    /// A double as the help prints it: 0 → "0", 0.001 → "0.001".
    static func number(_ value: Double) -> String { String(format: "%g", value) }

    /// A byte count as the command line spells it: 1073741824 → "1G".
    static func bytes(_ count: Int) -> String {
        for (suffix, shift) in [("G", 30), ("M", 20), ("K", 10)] where count > 0 && count % (1 << shift) == 0 {
            return "\(count >> shift)\(suffix)"
        }
        return String(count)
    }
}
