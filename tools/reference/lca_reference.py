#!/usr/bin/env python3
"""Independent float64 reference for Loss Change Allocation, in JAX.

Given two checkpoints A and B of the same network and an evaluation set, this
computes, for the straight segment θ(s) = θ_A + s·Δθ, Δθ = θ_B − θ_A:

    L(θ_B) − L(θ_A) = Σ_i Δθ_i · ∫_0^1 ∂L/∂θ_i (θ(s)) ds
    LCA_i           = Δθ_i · ḡ_i,   ḡ ≈ ∫_0^1 ∇L(θ(s)) ds   (composite Simpson)

and prints, as JSON, the losses, the total and per-tensor LCA, the first-order
variant (ḡ = ∇L(θ_A)), the residual L(θ_B) − L(θ_A) − Σ LCA and the number of
Simpson sub-intervals used. The method (Lan, Liu, Zhou, Yosinski, NeurIPS 2019)
is specified in docs/method.md and the models in docs/models.md; this file is
written from those texts, in float64 throughout, with gradients from jax.grad
rather than hand-written backpropagation, so that it is independent of the C
core it checks.

    python3 tools/reference/lca_reference.py \\
        --from run/checkpoint-000000.safetensors --to run/checkpoint-000020.safetensors \\
        --images mnist5k-images-idx3-ubyte.gz --labels mnist5k-labels-idx1-ubyte.gz
    python3 tools/reference/lca_reference.py --from A --to B --images cifar-folder/

Models (docs/models.md): the built-in names fc, lenet and resnet20, MLPs as
widths joined by '-', and layer lists such as
"input(3,32,32) conv(16,3) bn relu block(32,stride=2) gap dense(10)".
Activations are channels first (N, C, H, W); convolution weights (OC, C, K, K);
'same' pads K//2 on every side as PyTorch; dense layers read the activations
flattened in C, H, W order. Dropout is the identity (evaluation).

Batch norm: every example of the data given is evaluated, in file order; the
examples are cut into consecutive groups of --bn-group (default 250, the last
group holds the remainder), each group is normalised with its own mean and
biased variance per channel over N·H·W (ε = 1e-5), the gradient flows through
the group statistics, and the loss is the mean over all examples. Gradient
chunks are whole numbers of groups, so the chunk size changes only rounding.

Loss groups (--groups class|FILE; docs/method.md "Groups"): one group id per
example (the labels, or an IDX file of type 0x08 or 0x0C, or a .npy of uint8,
int32 or int64). Each group's share of the loss, Σ_{i∈g} ℓ_i / N, gets its own
gradient: the summed loss with weight 1 on the group's examples and 0 on the
others (with batch norm the others still shape the group statistics), one
pass per group. The refinement doubles n while the total residual or any
group's residual is above the threshold. The output then has "groups": one
entry per group with its examples, own mean losses before and after, residual
and per-tensor LCA; the totals are the sums over the groups.

Files are read with numpy only:
  safetensors: u64 little-endian header length N, N bytes of JSON
               {"__metadata__": {...}, name: {"dtype", "shape", "data_offsets": [begin, end]}},
               then the data; offsets are relative to the end of the header.
  IDX:         0, 0, type (0x08 = uint8), rank; rank big-endian u32 dimensions; the values.
  CIFAR-10:    binary version: records of 1 label byte (0..9) + 3,072 pixel bytes
               (red, green, blue 32x32 planes, row-major), no header; a FILE.bin or a
               folder with data_batch_1.bin, data_batch_2.bin, … (read in order up to
               the first one missing, at most 5).
  All of them optionally gzip-compressed. Pixels are divided by 255.
"""

import argparse
import gzip
import json
import os
import re
import struct
import sys

import numpy as np

import jax
import jax.numpy as jnp
from jax import lax

jax.config.update("jax_enable_x64", True)

BUILTIN_MODELS = {  # docs/models.md, "Built-in names"
    "fc": "784-100-50-10",
    "lenet": "input(1,28,28) conv(20,5) relu maxpool(2) conv(40,5) relu maxpool(2) dropout(0.25) "
             "dense(400) relu dropout(0.5) dense(10)",
    "resnet20": "input(3,32,32) conv(16,3) bn relu block(16) block(16) block(16) block(32,stride=2) "
                "block(32) block(32) block(64,stride=2) block(64) block(64) gap dense(10)",
}
MODEL_ALIASES = BUILTIN_MODELS  # the name earlier versions used
LOSSES = ("softmax_cross_entropy", "mean_squared_error")
LOSS_ALIASES = {"ce": "softmax_cross_entropy", "mse": "mean_squared_error"}  # as `lca --loss`
BN_EPSILON = 1e-5
DEFAULT_BN_GROUP = 250
CIFAR_RECORD = 1 + 3 * 32 * 32


# ------------------------------------------------------------------- files

SAFETENSORS_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2"}


def read_safetensors(path):
    """Returns (tensors: name -> float64 array, metadata: dict of str)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: {len(blob)} bytes, too short for a safetensors header length")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if 8 + header_len > len(blob):
        raise ValueError(f"{path}: header length {header_len} runs past the end of the file")
    header = json.loads(blob[8:8 + header_len].decode("utf-8"))
    data = blob[8 + header_len:]
    metadata = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        dtype = SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * np.dtype(dtype).itemsize or end > len(data):
            raise ValueError(f"{path}: tensor {name}: data_offsets {begin}..{end} do not fit "
                             f"shape {list(shape)} {info['dtype']} in {len(data)} data bytes")
        values = np.frombuffer(data, dtype=dtype, count=count, offset=begin)
        tensors[name] = values.astype(np.float64).reshape(shape)
    return tensors, metadata


def read_idx(path):
    """Returns the uint8 array of an IDX file (gzip or plain)."""
    with open(path, "rb") as f:
        blob = f.read()
    if blob[:2] == b"\x1f\x8b":
        blob = gzip.decompress(blob)
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0:
        raise ValueError(f"{path}: not an IDX file (first bytes {blob[:4].hex()})")
    if blob[2] != 0x08:
        raise ValueError(f"{path}: IDX element type 0x{blob[2]:02x}, expected 0x08 (uint8)")
    rank = blob[3]
    dims = struct.unpack(f">{rank}I", blob[4:4 + 4 * rank])
    offset = 4 + 4 * rank
    count = int(np.prod(dims, dtype=np.int64))
    if len(blob) - offset != count:
        raise ValueError(f"{path}: {len(blob) - offset} data bytes, dimensions {list(dims)} need {count}")
    return np.frombuffer(blob, dtype=np.uint8, offset=offset).reshape(dims)


def read_maybe_gzip(path):
    with open(path, "rb") as f:
        blob = f.read()
    return gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob


def read_cifar(path):
    """(images (N, 3072) uint8, labels (N,) uint8) of a CIFAR-10 binary file."""
    blob = read_maybe_gzip(path)
    if len(blob) == 0 or len(blob) % CIFAR_RECORD:
        raise ValueError(f"{path}: {len(blob)} bytes, not a whole number of CIFAR-10 records "
                         f"of {CIFAR_RECORD} bytes")
    records = np.frombuffer(blob, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    if records[:, 0].max() >= 10:
        bad = int(np.argmax(records[:, 0] >= 10))
        raise ValueError(f"{path}: record {bad}: label {records[bad, 0]}, expected 0..9")
    return records[:, 1:], records[:, 0]


def find_file(folder, name):
    for candidate in (name, name + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def load_data(images_path, labels_path=None):
    """Pixels scaled to [0, 1] in float64, one flat row per example (in the
    file's order: C, H, W for CIFAR-10), and integer labels. images_path is an
    IDX images file (with labels_path), a CIFAR-10 binary file (.bin[.gz]), or
    a folder holding data_batch_1.bin … (CIFAR-10) or train-images-idx3-ubyte
    and train-labels-idx1-ubyte (IDX)."""
    is_dir = os.path.isdir(images_path)
    if labels_path is not None and (is_dir or re.search(r"\.bin(\.gz)?$", images_path)):
        raise ValueError(f"{images_path}: --labels is for an IDX images file only "
                         f"(CIFAR-10 records and data folders carry their labels)")
    if is_dir:
        first = find_file(images_path, "data_batch_1.bin")
        if first:
            parts = []
            for batch in range(1, 6):
                path = find_file(images_path, f"data_batch_{batch}.bin")
                if path is None:
                    break
                parts.append(read_cifar(path))
            images = np.concatenate([p[0] for p in parts])
            labels = np.concatenate([p[1] for p in parts])
        else:
            images_file = find_file(images_path, "train-images-idx3-ubyte")
            labels_file = find_file(images_path, "train-labels-idx1-ubyte")
            if not images_file or not labels_file:
                raise ValueError(f"{images_path}: a folder without data_batch_1.bin (CIFAR-10) or "
                                 f"train-images-idx3-ubyte and train-labels-idx1-ubyte (IDX)")
            return load_data(images_file, labels_file)
    elif re.search(r"\.bin(\.gz)?$", images_path):
        images, labels = read_cifar(images_path)
    else:
        if labels_path is None:
            raise ValueError(f"{images_path}: an IDX images file needs --labels")
        images = read_idx(images_path)
        labels = read_idx(labels_path)
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"{labels_path}: labels of shape {list(labels.shape)} do not match "
                             f"{images.shape[0]} images")
    x = images.reshape(images.shape[0], -1).astype(np.float64) / 255.0
    return x, labels.astype(np.int64)


# ------------------------------------------------------------------- model
#
# A parsed model is a list of operations on channels-first activations
# (N, C, H, W); dense outputs are (N, O, 1, 1), so every operation sees 4-D
# arrays. Operations are tuples:
#   ("conv", name, stride, pad)          name.weight (OC, C, K, K), name.bias (OC)
#   ("dense", name)                      name.weight (O, C·H·W), name.bias (O)
#   ("bn", name)                         name.weight = γ (C), name.bias = β (C)
#   ("relu",), ("gap",)
#   ("maxpool", K, S), ("avgpool", K, S)
#   ("block", main_ops, shortcut)        shortcut None (identity) or ("conv", projN, S, 0)
# Dropout and flatten are the identity in evaluation and are not kept.


class Model:
    def __init__(self, spec, input_shape, ops, params, output_shape):
        self.spec = spec
        self.input_shape = input_shape      # (C, H, W)
        self.ops = ops
        self.params = params                # [(name, shape)] in order of appearance
        self.output_shape = output_shape    # (C, H, W) of the last layer
        self.outputs = int(np.prod(output_shape))
        self.has_bn = any(name.startswith("bn") for name, _ in params)


LAYER = re.compile(r"\s*([A-Za-z]+)\s*(?:\(([^()]*)\))?\s*")


def _split_layers(spec):
    layers, pos = [], 0
    while pos < len(spec):
        match = LAYER.match(spec, pos)
        if not match or match.end() == pos:
            raise ValueError(f"model spec {spec!r}: cannot read a layer at character {pos}")
        args = [a.strip() for a in match.group(2).split(",")] if match.group(2) is not None else None
        layers.append((match.group(1), args))
        pos = match.end()
    return layers


def _int(spec, layer, text, minimum=1):
    if not re.fullmatch(r"\d+", text or "") or int(text) < minimum:
        raise ValueError(f"model spec {spec!r}: {layer}: expected an integer >= {minimum}, got {text!r}")
    return int(text)


def _options(spec, layer, args, allowed):
    """Splits key=value and bare-word options off the positional arguments."""
    positional, options = [], {}
    for arg in args:
        if "=" in arg:
            key, value = arg.split("=", 1)
            if key not in allowed:
                raise ValueError(f"model spec {spec!r}: {layer}: unknown option {key!r}")
            options[key] = value
        elif arg in allowed:
            options[arg] = True
        else:
            if options:
                raise ValueError(f"model spec {spec!r}: {layer}: {arg!r} after an option")
            positional.append(arg)
    return positional, options


def parse_model(spec):
    """A model spec of docs/models.md -> Model (ops, tensor names and shapes)."""
    spec = spec.strip()
    text = BUILTIN_MODELS.get(spec, spec)
    if re.fullmatch(r"\d+(-\d+)+", text):
        widths = [int(w) for w in text.split("-")]
        if min(widths) < 1:
            raise ValueError(f"model spec {spec!r}: widths must be positive")
        layers = [f"input({widths[0]})"]
        for i, w in enumerate(widths[1:]):
            layers.append(f"dense({w})")
            if i < len(widths) - 2:
                layers.append("relu")
        text = " ".join(layers)
    elif re.fullmatch(r"[\d\s-]*", text):
        raise ValueError(f"model spec {spec!r}: an MLP needs at least two positive widths joined by '-'")

    counters = {"conv": 0, "fc": 0, "bn": 0, "proj": 0}
    params = []

    def new_name(kind):
        counters[kind] += 1
        return f"{kind}{counters[kind]}"

    def conv(shape, oc, k, stride, pad, kind="conv"):
        c, h, w = shape
        oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        if h + 2 * pad < k or w + 2 * pad < k:
            raise ValueError(f"model spec {spec!r}: a {k}x{k} convolution does not fit a "
                             f"{h}x{w} input (padding {pad})")
        name = new_name(kind)
        params.extend([(f"{name}.weight", (oc, c, k, k)), (f"{name}.bias", (oc,))])
        return ("conv", name, stride, pad), (oc, oh, ow)

    def bn(shape):
        name = new_name("bn")
        params.extend([(f"{name}.weight", (shape[0],)), (f"{name}.bias", (shape[0],))])
        return ("bn", name)

    layers = _split_layers(text)
    if not layers or layers[0][0] != "input":
        raise ValueError(f"model spec {spec!r}: a layer list starts with input(C,H,W) or input(F)")
    name, args = layers[0]
    if args is None or len(args) not in (1, 3):
        raise ValueError(f"model spec {spec!r}: input takes (features) or (channels,height,width)")
    input_shape = tuple(_int(spec, "input", a) for a in args)
    if len(input_shape) == 1:
        input_shape = (input_shape[0], 1, 1)
    shape = input_shape
    ops = []
    for layer, args in layers[1:]:
        if layer in ("relu", "gap", "bn", "flatten") and args is not None:
            raise ValueError(f"model spec {spec!r}: {layer} takes no arguments")
        if layer in ("dense", "fc", "conv", "maxpool", "avgpool", "dropout", "block") and not args:
            raise ValueError(f"model spec {spec!r}: {layer} needs arguments")
        if layer in ("dense", "fc"):
            if len(args) != 1:
                raise ValueError(f"model spec {spec!r}: dense takes (outputs)")
            o = _int(spec, layer, args[0])
            name = new_name("fc")
            params.extend([(f"{name}.weight", (o, int(np.prod(shape)))), (f"{name}.bias", (o,))])
            ops.append(("dense", name))
            shape = (o, 1, 1)
        elif layer == "conv":
            pos, opt = _options(spec, layer, args, ("stride", "same", "valid"))
            if len(pos) != 2 or ("same" in opt and "valid" in opt):
                raise ValueError(f"model spec {spec!r}: conv takes (channels,kernel[,stride=S][,same|valid])")
            oc, k = _int(spec, layer, pos[0]), _int(spec, layer, pos[1])
            stride = _int(spec, layer, opt.get("stride", "1"))
            if "valid" in opt:
                pad = 0
            else:
                if k % 2 == 0:
                    raise ValueError(f"model spec {spec!r}: same padding needs an odd kernel size")
                pad = k // 2
            op, shape = conv(shape, oc, k, stride, pad)
            ops.append(op)
        elif layer == "relu":
            ops.append(("relu",))
        elif layer in ("maxpool", "avgpool"):
            pos, opt = _options(spec, layer, args, ("stride",))
            if len(pos) != 1:
                raise ValueError(f"model spec {spec!r}: pooling takes (window[,stride=S])")
            k = _int(spec, layer, pos[0])
            stride = _int(spec, layer, opt.get("stride", str(k)))
            c, h, w = shape
            if h < k or w < k:
                raise ValueError(f"model spec {spec!r}: a {k}x{k} pool does not fit a {h}x{w} input")
            ops.append((layer, k, stride))
            shape = (c, (h - k) // stride + 1, (w - k) // stride + 1)
        elif layer == "gap":
            ops.append(("gap",))
            shape = (shape[0], 1, 1)
        elif layer == "bn":
            ops.append(bn(shape))
        elif layer == "dropout":
            if len(args) != 1:
                raise ValueError(f"model spec {spec!r}: dropout takes (probability)")
            p = float(args[0])
            if not 0.0 <= p < 1.0:
                raise ValueError(f"model spec {spec!r}: dropout probability {p} not in [0, 1)")
            # evaluation: the identity
        elif layer == "flatten":
            pass  # activations are read in C, H, W order by dense anyway
        elif layer == "block":
            pos, opt = _options(spec, layer, args, ("stride",))
            if len(pos) != 1:
                raise ValueError(f"model spec {spec!r}: block takes (channels[,stride=S])")
            oc = _int(spec, layer, pos[0])
            stride = _int(spec, layer, opt.get("stride", "1"))
            block_input = shape
            main = []
            op, shape = conv(shape, oc, 3, stride, 1)
            main.append(op)
            main.append(bn(shape))
            main.append(("relu",))
            op, shape = conv(shape, oc, 3, 1, 1)
            main.append(op)
            main.append(bn(shape))
            # the add: the projection is named here, after the block's convs and bns
            shortcut = None
            if shape != block_input:
                shortcut, projected = conv(block_input, oc, 1, stride, 0, kind="proj")
                assert projected == shape, (projected, shape)
            ops.append(("block", main, shortcut))
        else:
            raise ValueError(f"model spec {spec!r}: unknown layer {layer!r} (input, dense, fc, conv, "
                             f"relu, maxpool, avgpool, gap, bn, dropout, flatten, block)")
    if not params:
        raise ValueError(f"model spec {spec!r}: no layer with parameters")
    return Model(spec, input_shape, ops, params, shape)


def tensor_names(model):
    """Parameter tensors in model order, with their shapes (PyTorch layout)."""
    if not isinstance(model, Model):
        model = parse_model(model)
    return list(model.params)


def _conv(h, weight, bias, stride, pad):
    out = lax.conv_general_dilated(h, weight, window_strides=(stride, stride),
                                   padding=((pad, pad), (pad, pad)),
                                   dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                   precision=lax.Precision.HIGHEST)
    return out + bias[None, :, None, None]


def _apply(ops, params, h):
    for op in ops:
        kind = op[0]
        if kind == "conv":
            _, name, stride, pad = op
            h = _conv(h, params[f"{name}.weight"], params[f"{name}.bias"], stride, pad)
        elif kind == "dense":
            name = op[1]
            y = h.reshape(h.shape[0], -1) @ params[f"{name}.weight"].T + params[f"{name}.bias"]
            h = y[:, :, None, None]
        elif kind == "bn":
            name = op[1]
            # batch statistics of this group: mean and biased variance over N, H, W
            mean = jnp.mean(h, axis=(0, 2, 3), keepdims=True)
            var = jnp.mean((h - mean) ** 2, axis=(0, 2, 3), keepdims=True)
            gamma = params[f"{name}.weight"][None, :, None, None]
            beta = params[f"{name}.bias"][None, :, None, None]
            h = (h - mean) / jnp.sqrt(var + BN_EPSILON) * gamma + beta
        elif kind == "relu":
            h = jax.nn.relu(h)
        elif kind == "maxpool":
            _, k, s = op
            h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, k, k), (1, 1, s, s), "VALID")
        elif kind == "avgpool":
            _, k, s = op
            h = lax.reduce_window(h, 0.0, lax.add, (1, 1, k, k), (1, 1, s, s), "VALID") / (k * k)
        elif kind == "gap":
            h = jnp.mean(h, axis=(2, 3), keepdims=True)
        elif kind == "block":
            _, main, shortcut = op
            y = _apply(main, params, h)
            s = h if shortcut is None else _apply([shortcut], params, h)
            h = jax.nn.relu(y + s)
        else:
            raise AssertionError(op)
    return h


def forward(params, x, model):
    """Logits (N, outputs) of one batch-norm group x (N, C, H, W) (or (N, C·H·W))."""
    x = x.reshape((x.shape[0],) + model.input_shape)
    return _apply(model.ops, params, x).reshape(x.shape[0], -1)


def summed_loss_of_logits(logits, labels, loss):
    """Sum over the examples; the caller divides by the total count, so that
    the mean does not depend on how the data are chunked."""
    if loss == "softmax_cross_entropy":
        log_probs = jax.nn.log_softmax(logits, axis=1)
        return -jnp.sum(jnp.take_along_axis(log_probs, labels[:, None], axis=1))
    # mean squared error against one-hot labels: the mean is over examples and
    # outputs, so a chunk's share is its sum divided by the output width
    onehot = jax.nn.one_hot(labels, logits.shape[1], dtype=logits.dtype)
    return jnp.sum((logits - onehot) ** 2) / logits.shape[1]


_COMPILED = {}
_COMPILED_WEIGHTED = {}


def compiled_weighted(model, loss):
    """jit-compiled value_and_grad of the weighted summed loss of one chunk
    (weights (G, g), one per example: a loss group's mask)."""
    key = (model.spec, loss)
    if key not in _COMPILED_WEIGHTED:
        def per_example(logits, labels):
            if loss == "softmax_cross_entropy":
                log_probs = jax.nn.log_softmax(logits, axis=1)
                return -jnp.take_along_axis(log_probs, labels[:, None], axis=1)[:, 0]
            onehot = jax.nn.one_hot(labels, logits.shape[1], dtype=logits.dtype)
            return jnp.sum((logits - onehot) ** 2, axis=1) / logits.shape[1]

        def chunk_loss(params, xg, yg, wg):
            logits = jax.vmap(lambda xs: forward(params, xs, model))(xg)
            return jnp.sum(per_example(logits.reshape(-1, logits.shape[-1]), yg.reshape(-1)) * wg.reshape(-1))
        _COMPILED_WEIGHTED[key] = jax.jit(jax.value_and_grad(chunk_loss))
    return _COMPILED_WEIGHTED[key]


def compiled(model, loss):
    """jit-compiled (value_and_grad, value) of the summed loss of one chunk
    x (G, g, C, H, W), labels (G, g): G groups of g examples, each group run
    through the network on its own. Kept per (spec, loss), so that evaluators
    of the same model share XLA's compilations."""
    key = (model.spec, loss)
    if key not in _COMPILED:
        def chunk_loss(params, xg, yg):
            logits = jax.vmap(lambda xs: forward(params, xs, model))(xg)
            return summed_loss_of_logits(logits.reshape(-1, logits.shape[-1]), yg.reshape(-1), loss)
        _COMPILED[key] = (jax.jit(jax.value_and_grad(chunk_loss)), jax.jit(chunk_loss))
    return _COMPILED[key]


class Evaluator:
    """L(θ) and ∇L(θ) on every example of the evaluation set, in float64.

    The examples are cut into consecutive batch-norm groups of bn_group (the
    last holds the remainder); a chunk is a whole number of groups, and each
    group is run through the network on its own (jax.vmap over the groups of a
    chunk), so that batch norm sees exactly one group's statistics. Without
    batch norm the grouping changes nothing but the order of summation."""

    def __init__(self, model, loss, x, labels, chunk_size, bn_group=DEFAULT_BN_GROUP):
        if bn_group < 1 or chunk_size < 1:
            raise ValueError("bn_group and chunk_size must be positive")
        self.model = model
        self.loss = loss
        self.count = x.shape[0]
        self.bn_group = bn_group
        self.groups_per_chunk = max(1, chunk_size // bn_group)
        self.chunk_size = self.groups_per_chunk * bn_group
        x = x.reshape((x.shape[0],) + model.input_shape)
        full = self.count // bn_group
        self.chunks = []  # (x (G, g, C, H, W), labels (G, g))
        for first in range(0, full, self.groups_per_chunk):
            last = min(first + self.groups_per_chunk, full)
            xs, ys = x[first * bn_group:last * bn_group], labels[first * bn_group:last * bn_group]
            self.chunks.append((jnp.asarray(xs.reshape((last - first, bn_group) + xs.shape[1:])),
                                jnp.asarray(ys.reshape(last - first, bn_group))))
        if self.count % bn_group:
            xs, ys = x[full * bn_group:], labels[full * bn_group:]
            self.chunks.append((jnp.asarray(xs[None]), jnp.asarray(ys[None])))

        self.value_and_grad, self.value = compiled(model, loss)
        self.evaluations = 0
        self.group_masks = None

    def set_groups(self, ids, group_count):
        """Loss groups: ids[i] in [0, group_count) for example i (evaluation order)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.shape != (self.count,):
            raise ValueError(f"{ids.size} group ids for {self.count} examples")
        self.group_count = group_count
        self.group_examples = np.bincount(ids, minlength=group_count)
        # per group, per chunk: its mask in the chunk's (G, g) layout, or None when empty
        self.group_masks = []
        for g in range(group_count):
            masks, first = [], 0
            for _, labels in self.chunks:
                size = int(np.prod(labels.shape))
                mask = (ids[first:first + size] == g).astype(np.float64).reshape(labels.shape)
                masks.append(jnp.asarray(mask) if mask.any() else None)
                first += size
            self.group_masks.append(masks)
        self.weighted = compiled_weighted(self.model, self.loss)

    def groups(self, params):
        """Per group: its share Σ_{i∈g} ℓ_i / N and that share's gradient."""
        params = {name: jnp.asarray(value) for name, value in params.items()}
        shares, gradients = [], []
        for masks in self.group_masks:
            total = 0.0
            grads = {name: np.zeros(value.shape) for name, value in params.items()}
            for (x, labels), mask in zip(self.chunks, masks):
                if mask is None:
                    continue
                value, grad = self.weighted(params, x, labels, mask)
                total += float(value)
                for name in grads:
                    grads[name] += np.asarray(grad[name])
            shares.append(total / self.count)
            gradients.append({name: g / self.count for name, g in grads.items()})
        self.evaluations += 1
        return shares, gradients

    def loss_only(self, params):
        params = {name: jnp.asarray(value) for name, value in params.items()}
        return sum(float(self.value(params, x, y)) for x, y in self.chunks) / self.count

    def __call__(self, params):
        params = {name: jnp.asarray(value) for name, value in params.items()}
        total = 0.0
        grads = {name: np.zeros(value.shape) for name, value in params.items()}
        for x, labels in self.chunks:
            value, grad = self.value_and_grad(params, x, labels)
            total += float(value)
            for name in grads:
                grads[name] += np.asarray(grad[name])
        self.evaluations += 1
        return total / self.count, {name: g / self.count for name, g in grads.items()}


# --------------------------------------------------------------------- LCA

def simpson_weights(n):
    """Composite Simpson weights on s = 0, 1/n, …, 1: [1, 4, 2, 4, …, 2, 4, 1] / (3n)."""
    weights = np.full(n + 1, 2.0)
    weights[1::2] = 4.0
    weights[0] = weights[-1] = 1.0
    return weights / (3.0 * n)


def loss_change_allocation(theta_a, theta_b, evaluate, threshold=1e-3, max_subintervals=32):
    """Per-tensor LCA over the segment θ_A → θ_B with adaptive composite Simpson.

    evaluate(params) -> (loss, grads). Starts with n = 2 (s = 0, ½, 1; weights
    1/6, 4/6, 1/6) and, while |residual| > threshold and n < max_subintervals,
    doubles n, evaluating only the new (odd) points.
    """
    names = list(theta_a)
    delta = {name: theta_b[name] - theta_a[name] for name in names}

    def point(s):
        # the endpoints are the checkpoints themselves, not θ_A + 1·Δθ rounded
        if s == 0.0:
            return theta_a
        if s == 1.0:
            return theta_b
        return {name: theta_a[name] + s * delta[name] for name in names}

    # gradients keyed by s = k/n, exact in binary since n is a power of two,
    # so a point of one n is found again at the next
    loss_a, grad_a = evaluate(point(0.0))
    loss_b, grad_b = evaluate(point(1.0))
    grads = {0.0: grad_a, 1.0: grad_b}

    first_order = {name: float(np.sum(delta[name] * grad_a[name])) for name in names}

    n = 1
    while True:
        n *= 2
        for k in range(1, n, 2):  # the points new at this n
            grads[k / n] = evaluate(point(k / n))[1]
        weights = simpson_weights(n)
        lca = {}
        for name in names:
            mean_grad = sum(weights[k] * grads[k / n][name] for k in range(n + 1))
            lca[name] = float(np.sum(delta[name] * mean_grad))
        lca_total = sum(lca[name] for name in names)
        residual = (loss_b - loss_a) - lca_total
        if abs(residual) <= threshold or n >= max_subintervals:
            break

    return {
        "loss_before": loss_a,
        "loss_after": loss_b,
        "lca_total": lca_total,
        "first_order_total": sum(first_order[name] for name in names),
        "residual": residual,
        "subintervals": n,
        "residual_above_threshold": bool(abs(residual) > threshold),
        "tensors": [{"name": name, "shape": list(theta_a[name].shape),
                     "count": int(theta_a[name].size),
                     "lca": lca[name], "first_order": first_order[name]} for name in names],
    }


def group_loss_change_allocation(theta_a, theta_b, evaluator, threshold=1e-3, max_subintervals=32):
    """loss_change_allocation per loss group (evaluator.set_groups first): each
    group's share of the loss along the segment, refined while the total
    residual or any group's is above the threshold; totals are sums over
    the groups."""
    names = list(theta_a)
    delta = {name: theta_b[name] - theta_a[name] for name in names}
    G = evaluator.group_count

    def point(s):
        if s == 0.0:
            return theta_a
        if s == 1.0:
            return theta_b
        return {name: theta_a[name] + s * delta[name] for name in names}

    shares_a, grads_a = evaluator.groups(point(0.0))
    shares_b, grads_b = evaluator.groups(point(1.0))
    grads = {0.0: grads_a, 1.0: grads_b}
    first_order = {name: float(sum(np.sum(delta[name] * grads_a[g][name]) for g in range(G))) for name in names}
    n = 1
    while True:
        n *= 2
        for k in range(1, n, 2):
            grads[k / n] = evaluator.groups(point(k / n))[1]
        weights = simpson_weights(n)
        group_lca = []
        for g in range(G):
            lca = {}
            for name in names:
                mean_grad = sum(weights[k] * grads[k / n][g][name] for k in range(n + 1))
                lca[name] = float(np.sum(delta[name] * mean_grad))
            group_lca.append(lca)
        residuals = [(shares_b[g] - shares_a[g]) - sum(group_lca[g][name] for name in names) for g in range(G)]
        lca = {name: sum(group_lca[g][name] for g in range(G)) for name in names}
        lca_total = sum(lca[name] for name in names)
        loss_a, loss_b = sum(shares_a), sum(shares_b)
        residual = (loss_b - loss_a) - lca_total
        above = abs(residual) > threshold or any(abs(r) > threshold for r in residuals)
        if not above or n >= max_subintervals:
            break
    examples = evaluator.group_examples
    count = evaluator.count
    return {
        "loss_before": loss_a,
        "loss_after": loss_b,
        "lca_total": lca_total,
        "first_order_total": sum(first_order[name] for name in names),
        "residual": residual,
        "subintervals": n,
        "residual_above_threshold": bool(abs(residual) > threshold),
        "tensors": [{"name": name, "shape": list(theta_a[name].shape),
                     "count": int(theta_a[name].size),
                     "lca": lca[name], "first_order": first_order[name]} for name in names],
        "groups": [{"name": str(g), "examples": int(examples[g]),
                    "loss_before": shares_a[g] * count / examples[g] if examples[g] else 0.0,
                    "loss_after": shares_b[g] * count / examples[g] if examples[g] else 0.0,
                    "lca": sum(group_lca[g][name] for name in names),
                    "residual": residuals[g],
                    "residual_above_threshold": bool(abs(residuals[g]) > threshold),
                    "tensor_lca": [group_lca[g][name] for name in names]} for g in range(G)],
    }


def read_groups(groups, labels, count):
    """(ids, G) of --groups: "class" (the labels; G = their max + 1), an IDX file
    (type 0x08 or 0x0C, one dimension) or a .npy file (uint8, int32, int64)."""
    if groups == "class":
        ids = np.asarray(labels, dtype=np.int64)
    elif groups.endswith(".npy"):
        ids = np.load(groups).astype(np.int64)
    else:
        blob = read_maybe_gzip(groups)
        if len(blob) < 8 or blob[0] != 0 or blob[1] != 0 or blob[2] not in (0x08, 0x0C) or blob[3] != 1:
            raise ValueError(f"{groups}: not a one-dimensional IDX file of type 0x08 or 0x0c")
        (n,) = struct.unpack(">I", blob[4:8])
        dtype = np.uint8 if blob[2] == 0x08 else ">i4"
        ids = np.frombuffer(blob, dtype=dtype, count=n, offset=8).astype(np.int64)
    if ids.ndim != 1 or ids.size != count:
        raise ValueError(f"{groups}: {ids.size} group ids for {count} examples")
    if ids.min() < 0:
        raise ValueError(f"{groups}: negative group id")
    return ids, int(ids.max()) + 1


def load_parameters(path, model):
    """The model's parameter tensors of a checkpoint, as float64, checked
    against the model's names and shapes. Batch-norm running statistics are
    buffers, not parameters: they are ignored silently."""
    tensors, metadata = read_safetensors(path)
    params = {}
    for name, shape in model.params:
        if name not in tensors:
            raise ValueError(f"{path}: no tensor {name} (model {model.spec})")
        if tuple(tensors[name].shape) != tuple(shape):
            raise ValueError(f"{path}: tensor {name} has shape {list(tensors[name].shape)}, "
                             f"expected {list(shape)}")
        params[name] = tensors[name]
    extra = sorted(name for name in set(tensors) - set(params)
                   if not name.endswith((".running_mean", ".running_var")))
    if extra:
        print(f"note: {path}: ignoring tensors not in the model: {', '.join(extra)}", file=sys.stderr)
    return params, metadata


def attribute(from_path, to_path, images_path, labels_path=None, threshold=1e-3,
              max_subintervals=32, model=None, loss=None, chunk_size=10000,
              bn_group=DEFAULT_BN_GROUP, groups=None):
    """The whole command as a function: returns the JSON-ready dict. groups:
    "class" or a file of group ids (see read_groups), or None."""
    _, metadata = read_safetensors(from_path)
    spec = model or metadata.get("lca.model")
    if not spec:
        raise ValueError(f"{from_path}: no lca.model in __metadata__; pass --model")
    loss = loss or metadata.get("lca.loss", "softmax_cross_entropy")
    loss = LOSS_ALIASES.get(loss, loss)
    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r}: expected one of {', '.join(LOSSES)}")
    net = parse_model(spec)
    theta_a, _ = load_parameters(from_path, net)
    theta_b, _ = load_parameters(to_path, net)
    x, labels = load_data(images_path, labels_path)
    features = int(np.prod(net.input_shape))
    if x.shape[1] != features:
        raise ValueError(f"{images_path}: {x.shape[1]} values per example, model takes {features} "
                         f"({'x'.join(map(str, net.input_shape))})")
    if labels.max() >= net.outputs:
        raise ValueError(f"{labels_path or images_path}: label {labels.max()} >= {net.outputs} outputs")
    evaluate = Evaluator(net, loss, x, labels, chunk_size, bn_group)
    if groups is not None:
        ids, group_count = read_groups(groups, labels, x.shape[0])
        evaluate.set_groups(ids, group_count)
        result = group_loss_change_allocation(theta_a, theta_b, evaluate, threshold, max_subintervals)
    else:
        result = loss_change_allocation(theta_a, theta_b, evaluate, threshold, max_subintervals)
    header = {"from": from_path, "to": to_path,
              "model": BUILTIN_MODELS["fc"] if spec == "fc" else spec,
              "loss": loss, "examples": int(x.shape[0]),
              "bn_group": bn_group,
              "chunk_size": evaluate.chunk_size,
              "gradient_evaluations": evaluate.evaluations}
    return {**header, **result}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="from_path", required=True, help="checkpoint A (safetensors)")
    parser.add_argument("--to", dest="to_path", required=True, help="checkpoint B (safetensors)")
    parser.add_argument("--images", "--data", dest="images", required=True,
                        help="IDX images file (.gz or plain, with --labels), CIFAR-10 binary file "
                             "(.bin), or a folder (data_batch_1.bin …, or train-*-idx*-ubyte)")
    parser.add_argument("--labels", help="IDX labels file (.gz or plain), with an IDX images file")
    parser.add_argument("--threshold", type=float, default=1e-3, help="|residual| in nats (default 0.001)")
    parser.add_argument("--max-subintervals", type=int, default=32, help="cap on n (default 32)")
    parser.add_argument("--model", help="model spec, overriding the checkpoint's lca.model")
    parser.add_argument("--loss", choices=LOSSES + tuple(LOSS_ALIASES), help="overriding the checkpoint's lca.loss")
    parser.add_argument("--chunk-size", type=int, default=10000,
                        help="examples per gradient chunk, rounded down to a multiple of --bn-group "
                             "(at least one group) (default 10000)")
    parser.add_argument("--bn-group", type=int, default=DEFAULT_BN_GROUP,
                        help=f"examples per batch-norm group in evaluation (default {DEFAULT_BN_GROUP})")
    parser.add_argument("--groups", help="loss groups: 'class' or a file of one group id per example "
                                         "(IDX type 0x08/0x0c, or .npy uint8/int32/int64)")
    args = parser.parse_args(argv)
    if args.max_subintervals < 2 or args.max_subintervals & (args.max_subintervals - 1):
        parser.error("--max-subintervals must be a power of two >= 2")
    if args.chunk_size < 1 or args.bn_group < 1:
        parser.error("--chunk-size and --bn-group must be positive")
    try:
        result = attribute(args.from_path, args.to_path, args.images, args.labels, args.threshold,
                           args.max_subintervals, args.model, args.loss, args.chunk_size, args.bn_group,
                           args.groups)
    except (ValueError, OSError) as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
