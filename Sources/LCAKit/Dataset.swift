internal import CLCA

/// A data set held in memory: uint8 pixels (scaled to [0, 1] on use) with
/// integer labels, or float inputs with float targets for regression.
///
/// A `Dataset` is immutable once opened, so it may be shared between
/// threads.
///
/// ```swift
/// let digits = try Dataset(source: "digits")      // 1,797 × 64, 10 classes
/// let mnist = try Dataset(source: "train-images-idx3-ubyte.gz",
///                         labels: "train-labels-idx1-ubyte.gz")
/// ```
public final class Dataset: @unchecked Sendable {
    let handle: OpaquePointer

    /// Opens a data set.
    /// - Parameters:
    ///   - source: "digits" (the embedded UCI 8×8 digits), "fashion-mnist"
    ///     (Debian's dataset-fashion-mnist), a folder holding
    ///     `train-images-idx3-ubyte[.gz]` and `train-labels-idx1-ubyte[.gz]`,
    ///     or an IDX images file (plain or gzip).
    ///   - labels: the IDX labels file when `source` is an images file.
    public init(source: String, labels: String? = nil) throws {
        var pointer: OpaquePointer?
        try check(lca_dataset_open(&pointer, source, labels))
        handle = pointer!
    }

    /// Makes a labelled data set from arrays (copied).
    /// - Parameters:
    ///   - pixels: `labels.count × features` bytes, row-major.
    ///   - labels: one label per example, in [0, classes).
    public init(pixels: [UInt8], labels: [Int32], features: Int, classes: Int) throws {
        guard pixels.count == labels.count * features else {
            throw LCAError.invalid("Dataset: \(pixels.count) pixels do not make \(labels.count) examples of \(features) features")
        }
        var pointer: OpaquePointer?
        try pixels.withUnsafeBufferPointer { p in
            try labels.withUnsafeBufferPointer { l in
                try check(lca_dataset_from_arrays(&pointer, p.baseAddress, l.baseAddress, labels.count,
                                                  features, Int32(classes)))
            }
        }
        handle = pointer!
    }

    /// Makes a regression data set (for `Loss.meanSquaredError`) from float
    /// inputs (`count × features`) and targets (`count × outputs`), copied.
    public init(inputs: [Float], targets: [Float], features: Int, outputs: Int) throws {
        guard features > 0, outputs > 0, inputs.count % features == 0,
              targets.count == inputs.count / features * outputs else {
            throw LCAError.invalid("Dataset: \(inputs.count) inputs and \(targets.count) targets do not fit \(features) features and \(outputs) outputs")
        }
        let count = inputs.count / features
        var pointer: OpaquePointer?
        try inputs.withUnsafeBufferPointer { x in
            try targets.withUnsafeBufferPointer { y in
                try check(lca_dataset_from_float_arrays(&pointer, x.baseAddress, y.baseAddress, count,
                                                        features, outputs))
            }
        }
        handle = pointer!
    }

    deinit { lca_dataset_free(handle) }

    /// Number of examples.
    public var count: Int { Int(lca_dataset_count(handle)) }
    /// Inputs per example.
    public var features: Int { Int(lca_dataset_features(handle)) }
    /// Number of classes (max label + 1), or 0 for regression data.
    public var classes: Int { Int(lca_dataset_classes(handle)) }
    /// Number of distinct labels that occur (fewer than `classes` when labels have gaps), or 0
    /// for regression data.
    public var labelCount: Int { Int(lca_dataset_label_count(handle)) }
    /// A one-line notice when the class count is not what a user would expect (more than 10
    /// classes, or labels with gaps): "data set X: 256 classes (labels 0 … 255), of which 3
    /// occur; …"; nil otherwise.
    public var classNotice: String? {
        let length = lca_dataset_class_notice(handle, nil, 0)
        if length == 0 { return nil }
        var buffer = [CChar](repeating: 0, count: length + 1)
        _ = lca_dataset_class_notice(handle, &buffer, buffer.count)
        return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    /// Where the data came from ("digits", a path).
    public var source: String { String(cString: lca_dataset_source(handle)) }

    /// The spec of the default model for this data: the paper's "fc" net
    /// (784-100-50-10) for 784 features, otherwise one hidden layer of 32
    /// ("64-32-10" for the digits).
    public var defaultModelSpec: String {
        if features == 784 { return "fc" }
        return "\(features)-32-\(max(classes, 1))"
    }

    /// Examples `indices` as float inputs scaled to [0, 1] (row-major,
    /// `indices.count × features`) and their labels.
    public func gather(_ indices: [UInt32]) -> (inputs: [Float], labels: [Int32]) {
        var inputs = [Float](repeating: 0, count: indices.count * features)
        var labels = [Int32](repeating: 0, count: indices.count)
        indices.withUnsafeBufferPointer { i in
            inputs.withUnsafeMutableBufferPointer { x in
                labels.withUnsafeMutableBufferPointer { y in
                    lca_dataset_gather(handle, i.baseAddress, i.count, x.baseAddress,
                                       classes > 0 ? y.baseAddress : nil, nil)
                }
            }
        }
        return (inputs, labels)
    }
}
