#!/usr/bin/env python3
"""Independent float64 reference for Loss Change Allocation, in JAX.

Given two checkpoints A and B of the same dense network and an evaluation set,
this computes, for the straight segment θ(s) = θ_A + s·Δθ, Δθ = θ_B − θ_A:

    L(θ_B) − L(θ_A) = Σ_i Δθ_i · ∫_0^1 ∂L/∂θ_i (θ(s)) ds
    LCA_i           = Δθ_i · ḡ_i,   ḡ ≈ ∫_0^1 ∇L(θ(s)) ds   (composite Simpson)

and prints, as JSON, the losses, the total and per-tensor LCA, the first-order
variant (ḡ = ∇L(θ_A)), the residual L(θ_B) − L(θ_A) − Σ LCA and the number of
Simpson sub-intervals used. The method (Lan, Liu, Zhou, Yosinski, NeurIPS 2019)
is specified in shared/method.md; this file is written from that text, in
float64 throughout, with gradients from jax.grad rather than hand-written
backpropagation, so that it is independent of the C core it checks.

    python3 tools/reference/lca_reference.py \\
        --from run/checkpoint-000000.safetensors --to run/checkpoint-000020.safetensors \\
        --images mnist5k-images-idx3-ubyte.gz --labels mnist5k-labels-idx1-ubyte.gz

Files are read with numpy only:
  safetensors: u64 little-endian header length N, N bytes of JSON
               {"__metadata__": {...}, name: {"dtype", "shape", "data_offsets": [begin, end]}},
               then the data; offsets are relative to the end of the header.
  IDX:         0, 0, type (0x08 = uint8), rank; rank big-endian u32 dimensions; the values.
               Optionally gzip-compressed.
"""

import argparse
import gzip
import json
import struct
import sys

import numpy as np

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

MODEL_ALIASES = {"fc": "784-100-50-10"}  # the paper's MNIST MLP
LOSSES = ("softmax_cross_entropy", "mean_squared_error")
LOSS_ALIASES = {"ce": "softmax_cross_entropy", "mse": "mean_squared_error"}  # as `lca --loss`


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


def load_data(images_path, labels_path):
    """Pixels scaled to [0, 1] in float64, one row per example; integer labels."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"{labels_path}: labels of shape {list(labels.shape)} do not match "
                         f"{images.shape[0]} images")
    x = images.reshape(images.shape[0], -1).astype(np.float64) / 255.0
    return x, labels.astype(np.int64)


# ------------------------------------------------------------------- model

def parse_model(spec):
    """'784-32-10' -> [784, 32, 10]; 'fc' -> [784, 100, 50, 10]."""
    spec = MODEL_ALIASES.get(spec, spec)
    sizes = [int(part) for part in spec.split("-")]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"model spec {spec!r}: need at least two positive sizes")
    return sizes


def tensor_names(sizes):
    """Parameter tensors in model order, with their shapes (PyTorch layout)."""
    names = []
    for layer in range(1, len(sizes)):
        fan_in, fan_out = sizes[layer - 1], sizes[layer]
        names.append((f"fc{layer}.weight", (fan_out, fan_in)))
        names.append((f"fc{layer}.bias", (fan_out,)))
    return names


def forward(params, x, layers):
    """Dense layers y = x Wᵀ + b, ReLU between them, none after the last."""
    h = x
    for layer in range(1, layers + 1):
        h = h @ params[f"fc{layer}.weight"].T + params[f"fc{layer}.bias"]
        if layer < layers:
            h = jax.nn.relu(h)
    return h


def summed_loss(params, x, labels, layers, loss):
    """Sum over the examples of a chunk; the caller divides by the total count,
    so that the mean does not depend on how the data are chunked."""
    logits = forward(params, x, layers)
    if loss == "softmax_cross_entropy":
        log_probs = jax.nn.log_softmax(logits, axis=1)
        return -jnp.sum(jnp.take_along_axis(log_probs, labels[:, None], axis=1))
    # mean squared error against one-hot labels: the mean is over examples and
    # outputs, so a chunk's share is its sum divided by the output width
    onehot = jax.nn.one_hot(labels, logits.shape[1], dtype=logits.dtype)
    return jnp.sum((logits - onehot) ** 2) / logits.shape[1]


class Evaluator:
    """L(θ) and ∇L(θ) on every example of the evaluation set, in float64."""

    def __init__(self, sizes, loss, x, labels, chunk_size):
        self.layers = len(sizes) - 1
        self.loss = loss
        self.chunks = [(jnp.asarray(x[i:i + chunk_size]), jnp.asarray(labels[i:i + chunk_size]))
                       for i in range(0, x.shape[0], chunk_size)]
        self.count = x.shape[0]
        self.value_and_grad = jax.jit(jax.value_and_grad(summed_loss),
                                      static_argnames=("layers", "loss"))
        self.evaluations = 0

    def __call__(self, params):
        params = {name: jnp.asarray(value) for name, value in params.items()}
        total = 0.0
        grads = {name: np.zeros(value.shape) for name, value in params.items()}
        for x, labels in self.chunks:
            value, grad = self.value_and_grad(params, x, labels, layers=self.layers, loss=self.loss)
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


def load_parameters(path, sizes):
    tensors, metadata = read_safetensors(path)
    params = {}
    for name, shape in tensor_names(sizes):
        if name not in tensors:
            raise ValueError(f"{path}: no tensor {name} (model {'-'.join(map(str, sizes))})")
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{path}: tensor {name} has shape {list(tensors[name].shape)}, "
                             f"expected {list(shape)}")
        params[name] = tensors[name]
    extra = sorted(set(tensors) - set(params))
    if extra:
        print(f"note: {path}: ignoring tensors not in the model: {', '.join(extra)}", file=sys.stderr)
    return params, metadata


def attribute(from_path, to_path, images_path, labels_path, threshold=1e-3,
              max_subintervals=32, model=None, loss=None, chunk_size=10000):
    """The whole command as a function: returns the JSON-ready dict."""
    _, metadata = read_safetensors(from_path)
    model = model or metadata.get("lca.model")
    if not model:
        raise ValueError(f"{from_path}: no lca.model in __metadata__; pass --model")
    loss = loss or metadata.get("lca.loss", "softmax_cross_entropy")
    loss = LOSS_ALIASES.get(loss, loss)
    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r}: expected one of {', '.join(LOSSES)}")
    sizes = parse_model(model)
    theta_a, _ = load_parameters(from_path, sizes)
    theta_b, _ = load_parameters(to_path, sizes)
    x, labels = load_data(images_path, labels_path)
    if x.shape[1] != sizes[0]:
        raise ValueError(f"{images_path}: {x.shape[1]} values per example, model takes {sizes[0]}")
    if labels.max() >= sizes[-1]:
        raise ValueError(f"{labels_path}: label {labels.max()} >= {sizes[-1]} outputs")
    evaluate = Evaluator(sizes, loss, x, labels, chunk_size)
    result = loss_change_allocation(theta_a, theta_b, evaluate, threshold, max_subintervals)
    header = {"from": from_path, "to": to_path, "model": "-".join(map(str, sizes)),
              "loss": loss, "examples": int(x.shape[0]), "gradient_evaluations": evaluate.evaluations}
    return {**header, **result}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="from_path", required=True, help="checkpoint A (safetensors)")
    parser.add_argument("--to", dest="to_path", required=True, help="checkpoint B (safetensors)")
    parser.add_argument("--images", required=True, help="IDX images, .gz or plain")
    parser.add_argument("--labels", required=True, help="IDX labels, .gz or plain")
    parser.add_argument("--threshold", type=float, default=1e-3, help="|residual| in nats (default 0.001)")
    parser.add_argument("--max-subintervals", type=int, default=32, help="cap on n (default 32)")
    parser.add_argument("--model", help="model spec, overriding the checkpoint's lca.model")
    parser.add_argument("--loss", choices=LOSSES + tuple(LOSS_ALIASES), help="overriding the checkpoint's lca.loss")
    parser.add_argument("--chunk-size", type=int, default=10000, help="examples per gradient chunk")
    args = parser.parse_args(argv)
    if args.max_subintervals < 2 or args.max_subintervals & (args.max_subintervals - 1):
        parser.error("--max-subintervals must be a power of two >= 2")
    result = attribute(args.from_path, args.to_path, args.images, args.labels, args.threshold,
                       args.max_subintervals, args.model, args.loss, args.chunk_size)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
