internal import CLCA

/// A network architecture as a value: its layers in the spec language of
/// docs/models.md, the spec string the core builds, and the loss.
/// `Sendable`, so a sweep can hand networks to several tasks.
///
/// Layers and spec are two faces of one value, and the core's parser is
/// the one reader of spec text: `Network(spec:)` asks the core for the
/// layers (`lca_model_layer`), and `Network(layers:)` writes the canonical
/// spec the core would print (`lca_model_spec`):
///
/// - an MLP (input(F), then dense layers with ReLU between them and none
///   after the last) is written with dashes, "64-32-10";
/// - anything else is the layer list, one name per layer, defaults left out:
///   "input(1,28,28) conv(20,5) relu maxpool(2) dense(10)";
/// - a built-in name keeps its name as the core prints it: `Network(spec:
///   "lenet").spec` is "lenet" (and "fc" is "784-100-50-10"), while its
///   `layers` are the expansion.
///
/// So `Network(spec: Network(spec: s).spec) == Network(spec: s)`, and
/// `Network(layers: l).layers == l` for layers written with resolved
/// strides (`.maxpool(2)` is `.maxpool(window: 2, stride: 2)`).
///
/// ```swift
/// let mlp = Network(layers: [.input(64), .dense(32), .relu, .dense(10)])   // "64-32-10"
/// let paper = try Network(spec: "fc")                                    // 784-100-50-10
/// let conv = Network(layers: [.input(channels: 1, height: 28, width: 28), .conv(channels: 8, kernel: 3),
///                             .relu, .maxpool(2), .dense(10)])
/// ```
public struct Network: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Padding of a convolution.
    public enum Padding: String, Sendable, Hashable, Codable {
        /// Output plane = ⌈input / stride⌉ (odd kernels only); the default.
        case same
        /// No padding.
        case valid
    }

    /// One layer of the spec language (docs/models.md).
    public enum Layer: Sendable, Hashable, Codable, CustomStringConvertible {
        /// `input(C,H,W)`, channels first; `input(F)` is F × 1 × 1. Always
        /// the first layer.
        case input(channels: Int, height: Int, width: Int)
        /// `dense(N)` (also spelled `fc(N)`): N outputs, the input flattened.
        case dense(Int)
        /// `conv(C,K[,stride=S][,same|valid])`: C output channels, K×K kernel, with bias.
        case conv(channels: Int, kernel: Int, stride: Int = 1, padding: Padding = .same)
        /// `relu`.
        case relu
        /// `maxpool(K[,stride=S])`; the stride defaults to the window.
        case maxpool(window: Int, stride: Int)
        /// `avgpool(K[,stride=S])`; the stride defaults to the window.
        case avgpool(window: Int, stride: Int)
        /// `gap`: global average pooling over a square plane.
        case gap
        /// `bn`: batch normalisation per channel.
        case batchNorm
        /// `dropout(P)`, P in [0, 1): training only. The probability is the
        /// float32 the core holds.
        case dropout(Float)
        /// `flatten`.
        case flatten
        /// `block(C[,stride=S])`: the basic residual block (two 3×3 convs
        /// with batch norm, ReLU, a 1×1 projection when shapes differ).
        case block(channels: Int, stride: Int = 1)

        /// `input(F)`: F features.
        public static func input(_ features: Int) -> Layer { .input(channels: features, height: 1, width: 1) }
        /// `maxpool(K)`: stride K.
        public static func maxpool(_ window: Int) -> Layer { .maxpool(window: window, stride: window) }
        /// `avgpool(K)`: stride K.
        public static func avgpool(_ window: Int) -> Layer { .avgpool(window: window, stride: window) }

        /// The layer as the spec language writes it, defaults left out.
        public var description: String {
            switch self {
            case let .input(c, h, w): return h == 1 && w == 1 ? "input(\(c))" : "input(\(c),\(h),\(w))"
            case let .dense(n): return "dense(\(n))"
            case let .conv(c, k, s, padding):
                return "conv(\(c),\(k)" + (s == 1 ? "" : ",stride=\(s)") + (padding == .valid ? ",valid" : "") + ")"
            case .relu: return "relu"
            case let .maxpool(k, s): return "maxpool(\(k)" + (s == k ? "" : ",stride=\(s)") + ")"
            case let .avgpool(k, s): return "avgpool(\(k)" + (s == k ? "" : ",stride=\(s)") + ")"
            case .gap: return "gap"
            case .batchNorm: return "bn"
            case let .dropout(p): return "dropout(\(p))"
            case .flatten: return "flatten"
            case let .block(c, s): return "block(\(c)" + (s == 1 ? "" : ",stride=\(s)") + ")"
            }
        }

        init(_ l: lca_layer_spec) {
            let units = Int(l.units), kernel = Int(l.kernel), stride = Int(l.stride)
            switch l.kind {
            case LCA_SPEC_INPUT: self = .input(channels: units, height: Int(l.height), width: Int(l.width))
            case LCA_SPEC_DENSE: self = .dense(units)
            case LCA_SPEC_CONV: self = .conv(channels: units, kernel: kernel, stride: stride, padding: l.valid != 0 ? .valid : .same)
            case LCA_SPEC_MAXPOOL: self = .maxpool(window: kernel, stride: stride)
            case LCA_SPEC_AVGPOOL: self = .avgpool(window: kernel, stride: stride)
            case LCA_SPEC_GAP: self = .gap
            case LCA_SPEC_BATCHNORM: self = .batchNorm
            case LCA_SPEC_DROPOUT: self = .dropout(Float(l.probability))
            case LCA_SPEC_FLATTEN: self = .flatten
            case LCA_SPEC_BLOCK: self = .block(channels: units, stride: stride)
            default: self = .relu
            }
        }
    }

    /// The model spec handed to the core, in the canonical form the core
    /// prints ("64-32-10", "lenet", a layer list).
    public let spec: String
    /// The layers, the input first.
    public let layers: [Layer]
    /// The loss the network is trained on.
    public var loss: Loss

    /// A network from a spec string: "fc", "lenet", "resnet20", widths
    /// joined by "-", or a layer list, parsed by the core.
    /// - Throws: `LCAError` `.invalidArgument` naming the character where
    ///   the spec is wrong.
    public init(spec: String, loss: Loss = .crossEntropy) throws {
        let model = try Model(spec: spec, loss: loss)
        self.spec = model.spec
        self.layers = model.layers
        self.loss = loss
    }

    /// A network from its layers (the first must be `.input`); checked when
    /// a model is built.
    public init(layers: [Layer], loss: Loss = .crossEntropy) {
        self.layers = layers
        self.spec = Network.render(layers)
        self.loss = loss
    }

    /// An MLP from its widths, input first: `mlp([64, 32, 10])` is
    /// "64-32-10" (dense layers with ReLU between them).
    public static func mlp(_ widths: [Int], loss: Loss = .crossEntropy) -> Network {
        var layers: [Layer] = [.input(widths.first ?? 0)]
        for (index, width) in widths.dropFirst().enumerated() {
            if index > 0 { layers.append(.relu) }
            layers.append(.dense(width))
        }
        return Network(layers: layers, loss: loss)
    }

    /// The canonical spec of a layer list: dashes for an MLP, else the
    /// layers joined by spaces.
    static func render(_ layers: [Layer]) -> String {
        if case let .input(features, 1, 1)? = layers.first, layers.count >= 2 {
            var widths = [features]
            var isMLP = true
            for (index, layer) in layers.dropFirst().enumerated() {
                switch (index % 2, layer) {
                case (0, .dense(let n)): widths.append(n)
                case (1, .relu): break
                default: isMLP = false
                }
            }
            if isMLP, layers.count % 2 == 0 { return widths.map(String.init).joined(separator: "-") }
        }
        return layers.map(\.description).joined(separator: " ")
    }

    /// The spec.
    public var description: String { spec }

    private enum CodingKeys: String, CodingKey { case spec, loss }

    /// Decodes `spec` and `loss`; the layers are the core's reading of the
    /// spec, so the two cannot disagree.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let spec = try c.decode(String.self, forKey: .spec)
        let loss = try c.decode(Loss.self, forKey: .loss)
        do {
            try self.init(spec: spec, loss: loss)
        } catch let error as LCAError {
            throw DecodingError.dataCorruptedError(forKey: .spec, in: c, debugDescription: error.description)
        }
    }

    /// Encodes `spec` and `loss`.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(spec, forKey: .spec)
        try c.encode(loss, forKey: .loss)
    }
}

extension Model {
    /// The model's spec-level layers, the input first (`lca_model_layer`).
    public var layers: [Network.Layer] {
        (0..<lca_model_layer_count(handle)).map { index in
            var layer = lca_layer_spec()
            _ = lca_model_layer(handle, index, &layer)   // index < count: cannot fail
            return Network.Layer(layer)
        }
    }
}
