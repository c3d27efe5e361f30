#!/usr/bin/env python3
"""Streaming Simpson LCA in PyTorch: the peer that `lca train` is measured against.

The same computation as `lca train` (docs/method.md, docs/models.md), written
the way one would write it in PyTorch for speed: float32 compute, chunked
evaluation-set gradients with plain autograd (no Python loop over examples),
parameters as one flat leaf tensor so a chunk's backward accumulates straight
into one gradient vector, `torch.inference_mode` for everything that needs no
gradient, and `torch.set_num_threads(T)`.

Per iteration t:
  1. training step on a minibatch (SGD with momentum, PyTorch's convention,
     dropout active for LeNet);
  2. LCA of the step on the fixed evaluation set (dropout off): gradients of
     the mean cross-entropy at θ_{t+1} and at the midpoint, the gradient at θ_t
     reused from the previous iteration (computed once, before iteration 1);
     composite Simpson, doubling the sub-intervals 2 → 4 → … → cap while
     |residual| > threshold, evaluating only the new odd points.
The Simpson sums over probe points and the LCA sums are float64 (K-sized
vectors, as in the C core); every forward and backward pass is float32.

Data: Fashion-MNIST training files (Debian's dataset-fashion-mnist), read
with numpy + gzip; a seeded 5,000-example validation split is held out
(55,000 training examples); the evaluation set is the training split, or a
seeded subset of it (--lca-subset). The data set is kept as uint8 and each
evaluation chunk gathered and converted when used, as the C core does
(--preconvert stores the evaluation chunks as float32 once instead).

    python3 tools/bench/torch_lca.py --model fc --iterations 20 --threads 2
    python3 tools/bench/torch_lca.py --model lenet --lca-subset 5000 --iterations 5 --threads 2
    python3 tools/bench/torch_lca.py --model fc --init RUN/checkpoint-000000.safetensors
    python3 tools/bench/torch_lca.py --model resnet20 --data CIFAR_FOLDER --lca-subset 1000 \
        --eval-chunk 250 --memory-format channels_last --iterations 1 --threads 2
    python3 tools/bench/torch_lca.py --model resnet20 --data CIFAR_FOLDER --lca-subset 1000 \
        --sweep-chunks 250,500,1000,all      # evaluation passes alone, every chunk × format

ResNet-20 (docs/models.md, every convolution with a bias, projection
shortcuts as 1×1 convolutions with bias): the evaluation pass normalises
consecutive groups of --bn-group examples (default 250, as lca) in
training-mode statistics (each group's mean and biased variance, the
gradient through them), PyTorch's fused batch_norm per group; the
training step normalises its minibatch as one group. Running statistics
are not kept (LCA never uses them). CIFAR-10 binary batches
(tools/make_cifar_like.py) are read as lca reads them, pixels / 255.

Prints per-iteration residuals and sub-intervals, per-tensor LCA sums and the
timing; --json FILE also writes them as JSON (read by run_bench.py). Timing
excludes imports, data loading and setup; the loop time includes the initial
evaluation-set gradient (reported separately too) and the training steps,
like `lca train --json`'s wall_seconds.
"""

import argparse
import gzip
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

DATA_DIR = "/usr/share/datasets/fashion-mnist"


# ------------------------------------------------------------------- data

def read_idx(path):
    """An IDX uint8 file (plain or .gz) as a writable numpy array, read in place
    (no second copy of the decompressed bytes)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        zero, dtype, rank = struct.unpack(">HBB", f.read(4))
        if zero != 0 or dtype != 0x08:
            raise ValueError(f"{path}: not an IDX uint8 file")
        dims = struct.unpack(">" + "I" * rank, f.read(4 * rank))
        out = np.empty(dims, dtype=np.uint8)
        view = memoryview(out.reshape(-1))
        filled = 0
        while filled < out.size:
            got = f.readinto(view[filled:filled + (1 << 20)])  # bounded: no transient copy
            if not got:
                raise ValueError(f"{path}: truncated")
            filled += got
    return out


def find(folder, name):
    for candidate in (name + ".gz", name):
        path = os.path.join(folder, candidate)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(os.path.join(folder, name))


def load_data(folder):
    """(images as N × features uint8, labels as int64): IDX training files, or
    CIFAR-10 binary batches (data_batch_*.bin: a label byte, then 3,072
    channel-first pixels per record, as CCore/data.c reads them)."""
    batches = sorted(f for f in os.listdir(folder) if f.startswith("data_batch_") and f.endswith(".bin"))
    if batches:
        records = np.concatenate([np.fromfile(os.path.join(folder, f), dtype=np.uint8).reshape(-1, 3073)
                                  for f in batches])
        return np.ascontiguousarray(records[:, 1:]), records[:, 0].astype(np.int64)
    images = read_idx(find(folder, "train-images-idx3-ubyte"))
    labels = read_idx(find(folder, "train-labels-idx1-ubyte"))
    return images.reshape(len(images), -1), labels.astype(np.int64)


def read_safetensors(path):
    """name -> numpy array (F32 only): u64 header length, JSON header, data."""
    with open(path, "rb") as f:
        raw = f.read()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    base = 8 + length
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            continue
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(raw[base + begin:base + end], dtype="<f4").reshape(info["shape"])
    return out


# ----------------------------------------------------------------- models

def model_tensors(name):
    """[(tensor name, shape, fan_in or None for a bias)] in docs/models.md order."""
    if name == "fc":
        widths = [784, 100, 50, 10]
        tensors = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]), 1):
            tensors += [(f"fc{i}.weight", (b, a), a), (f"fc{i}.bias", (b,), None)]
        return tensors
    if name == "lenet":
        return [("conv1.weight", (20, 1, 5, 5), 25), ("conv1.bias", (20,), None),
                ("conv2.weight", (40, 20, 5, 5), 500), ("conv2.bias", (40,), None),
                ("fc1.weight", (400, 1960), 1960), ("fc1.bias", (400,), None),
                ("fc2.weight", (10, 400), 400), ("fc2.bias", (10,), None)]
    if name == "resnet20":
        tensors = [("conv1.weight", (16, 3, 3, 3), 27), ("conv1.bias", (16,), None),
                   ("bn1.weight", (16,), "one"), ("bn1.bias", (16,), None)]
        conv, bn, proj, c = 1, 1, 0, 16
        for oc, stride in RESNET20_BLOCKS:
            conv += 1
            bn += 1
            tensors += [(f"conv{conv}.weight", (oc, c, 3, 3), c * 9), (f"conv{conv}.bias", (oc,), None),
                        (f"bn{bn}.weight", (oc,), "one"), (f"bn{bn}.bias", (oc,), None)]
            conv += 1
            bn += 1
            tensors += [(f"conv{conv}.weight", (oc, oc, 3, 3), oc * 9), (f"conv{conv}.bias", (oc,), None),
                        (f"bn{bn}.weight", (oc,), "one"), (f"bn{bn}.bias", (oc,), None)]
            if oc != c or stride != 1:
                proj += 1
                tensors += [(f"proj{proj}.weight", (oc, c, 1, 1), c), (f"proj{proj}.bias", (oc,), None)]
            c = oc
        return tensors + [("fc1.weight", (10, 64), 64), ("fc1.bias", (10,), None)]
    raise ValueError(f"unknown model {name!r} (fc, lenet or resnet20)")


# docs/models.md: resnet20 = conv(16,3) bn relu, nine basic blocks, gap, dense(10)
RESNET20_BLOCKS = [(16, 1)] * 3 + [(32, 2), (32, 1), (32, 1), (64, 2), (64, 1), (64, 1)]


def forward_fc(p, x, train):
    h = F.relu(F.linear(x, p[0], p[1]))
    h = F.relu(F.linear(h, p[2], p[3]))
    return F.linear(h, p[4], p[5])


CHANNELS_LAST = True  # --memory-format; oneDNN's convolutions and pooling are faster NHWC


def forward_lenet(p, x, train):
    x = x.view(-1, 1, 28, 28)
    w1, w2 = p[0], p[2]
    if CHANNELS_LAST:
        x = x.contiguous(memory_format=torch.channels_last)
        w1 = w1.contiguous(memory_format=torch.channels_last)
        w2 = w2.contiguous(memory_format=torch.channels_last)
    h = F.max_pool2d(F.relu(F.conv2d(x, w1, p[1], padding=2)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, w2, p[3], padding=2)), 2)
    h = F.dropout(h.flatten(1), 0.25, training=train)  # flatten in (C, H, W) order either way
    h = F.dropout(F.relu(F.linear(h, p[4], p[5])), 0.5, training=train)
    return F.linear(h, p[6], p[7])


BN_GROUP = 250  # --bn-group: the evaluation pass normalises consecutive groups of this many


def ghost_batch_norm(x, gamma, beta, group):
    """Batch norm in training-mode statistics over consecutive groups of
    `group` examples (the last group holds the remainder), as lca's
    evaluation pass (CCore/layers_norm.c: each group's mean and biased
    variance, ε = 1e-5), the gradient flowing through the statistics:
    PyTorch's own fused batch_norm on each group (a slice along the batch
    dimension, contiguous in either memory format), concatenated. Measured
    faster than one var_mean over a (groups, group, C, H, W) view."""
    if x.shape[0] <= group:
        return F.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5)
    return torch.cat([F.batch_norm(part, None, None, gamma, beta, training=True, eps=1e-5)
                      for part in x.split(group)])


def forward_resnet20(p, x, train):
    """lca's resnet20 (docs/models.md): every convolution with a bias, the
    projection shortcut a 1×1 convolution with bias (no batch norm). The
    training step normalises its minibatch as one group; evaluation in
    groups of BN_GROUP."""
    group = x.shape[0] if train else BN_GROUP
    x = x.view(-1, 3, 32, 32)
    fmt = torch.channels_last if CHANNELS_LAST else torch.contiguous_format
    x = x.contiguous(memory_format=fmt)
    it = iter(p)

    def conv(h, stride=1, padding=1):
        w, b = next(it), next(it)
        return F.conv2d(h, w.contiguous(memory_format=fmt), b, stride=stride, padding=padding)

    def bn(h):
        return ghost_batch_norm(h, next(it), next(it), group)

    h = F.relu(bn(conv(x)))
    c = 16
    for oc, stride in RESNET20_BLOCKS:
        y = F.relu(bn(conv(h, stride)))
        y = bn(conv(y))
        shortcut = conv(h, stride, 0) if (oc != c or stride != 1) else h
        h = F.relu(y + shortcut)
        c = oc
    h = h.mean(dim=(2, 3))
    return F.linear(h, next(it), next(it))


FORWARD = {"fc": forward_fc, "lenet": forward_lenet, "resnet20": forward_resnet20}


class FlatModel:
    """Parameters as one flat float32 leaf; per-tensor views made in the graph,
    so a backward accumulates the whole gradient into one flat vector."""

    def __init__(self, name):
        self.tensors = model_tensors(name)
        self.shapes = [shape for _, shape, _ in self.tensors]
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.names = [n for n, _, _ in self.tensors]
        self.count = sum(self.sizes)
        self.forward_fn = FORWARD[name]

    def initial(self, seed, init_path=None):
        if init_path:
            loaded = read_safetensors(init_path)
            parts = [torch.from_numpy(np.array(loaded[n], dtype=np.float32)).reshape(-1)
                     for n in self.names]
            return torch.cat(parts)
        g = torch.Generator().manual_seed(seed)
        parts = []
        for _, shape, fan_in in self.tensors:  # He-normal weights, zero biases, γ = 1
            if fan_in is None:
                parts.append(torch.zeros(math.prod(shape)))
            elif fan_in == "one":
                parts.append(torch.ones(math.prod(shape)))
            else:
                parts.append(torch.randn(math.prod(shape), generator=g) * math.sqrt(2.0 / fan_in))
        return torch.cat(parts)

    def views(self, flat):
        return [t.view(shape) for t, shape in zip(flat.split(self.sizes), self.shapes)]

    def forward(self, flat, x, train):
        return self.forward_fn(self.views(flat), x, train)

    def tensor_sums(self, values):
        """Per-tensor sums of a float64 K-vector, in tensor order."""
        return [float(v.sum()) for v in values.split(self.sizes)]


# --------------------------------------------------------------- evaluator

class Evaluator:
    """Mean cross-entropy over the evaluation set and its gradient, chunk by chunk."""

    def __init__(self, model, images_u8, labels, indices, chunk, preconvert):
        self.model = model
        self.images = images_u8
        self.count = len(indices)
        self.scale = 1.0 / self.count
        self.chunks = []  # (example indices or float32 inputs, labels)
        for first in range(0, self.count, chunk):
            index = indices[first:first + chunk]
            x = images_u8[index].to(torch.float32).div_(255.0) if preconvert else index
            self.chunks.append((x, labels[index]))
        self.probe = torch.zeros(model.count, requires_grad=True)
        self.passes = 0

    def __call__(self, theta):
        """(loss as a float, gradient as a float64 K-vector) at float32 parameters theta."""
        probe = self.probe
        with torch.no_grad():
            probe.copy_(theta)
        probe.grad = None
        loss_sum = 0.0
        for x, y in self.chunks:
            if x.dtype != torch.float32:  # gather the chunk's uint8 pixels, scale to [0, 1]
                x = self.images[x].to(torch.float32).div_(255.0)
            loss = F.cross_entropy(self.model.forward(probe, x, False), y, reduction="sum")
            (loss * self.scale).backward()
            loss_sum += loss.item()
        self.passes += 1
        with torch.inference_mode():
            return loss_sum * self.scale, probe.grad.to(torch.float64)


# ------------------------------------------------------------------ LCA

class StreamingLCA:
    def __init__(self, model, evaluate, threshold, max_subintervals):
        self.model = model
        self.evaluate = evaluate
        self.threshold = threshold
        self.cap = max_subintervals
        self.g_start = None
        self.loss_start = None
        self.initial_seconds = 0.0
        self.totals = np.zeros(len(model.sizes))
        self.first_order_totals = np.zeros(len(model.sizes))

    def step(self, before, after):
        if self.g_start is None:
            started = time.perf_counter()
            self.loss_start, self.g_start = self.evaluate(before)
            self.initial_seconds = time.perf_counter() - started
        with torch.inference_mode():
            before64 = before.to(torch.float64)
            delta = after.to(torch.float64) - before64
        loss_end, g_end = self.evaluate(after)
        with torch.inference_mode():
            sum_odd = torch.zeros_like(delta)
            sum_even = torch.zeros_like(delta)

        def add_odd(n):
            for j in range(1, n, 2):
                with torch.inference_mode():
                    probe = (before64 + (j / n) * delta).to(torch.float32)
                _, g = self.evaluate(probe)
                with torch.inference_mode():
                    sum_odd.add_(g)

        def mean_gradient(n):
            with torch.inference_mode():
                return (self.g_start + g_end + 4.0 * sum_odd + 2.0 * sum_even) * (1.0 / (3.0 * n))

        n = 2
        add_odd(n)
        change = loss_end - self.loss_start
        with torch.inference_mode():
            total = float(torch.dot(delta, mean_gradient(n)))
        while abs(change - total) > self.threshold and n < self.cap:
            with torch.inference_mode():
                sum_even.add_(sum_odd)
                sum_odd.zero_()
            n *= 2
            add_odd(n)
            with torch.inference_mode():
                total = float(torch.dot(delta, mean_gradient(n)))
        with torch.inference_mode():
            lca = delta * mean_gradient(n)
            tensor_lca = self.model.tensor_sums(lca)
            tensor_first = self.model.tensor_sums(delta * self.g_start)
        total = sum(tensor_lca)
        record = {
            "loss_before": self.loss_start, "loss_after": loss_end, "lca_total": total,
            "first_order_total": sum(tensor_first), "residual": change - total,
            "subintervals": n, "flagged": abs(change - total) > self.threshold,
            "tensor_lca": tensor_lca,
        }
        self.totals += tensor_lca
        self.first_order_totals += tensor_first
        self.g_start, self.loss_start = g_end, loss_end
        return record


# ------------------------------------------------------------------ sweep

def peak_rss():
    """Peak resident set size of this process so far, in bytes (VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def sweep(args, model, images_t, labels_t, evaluation):
    """Evaluation-set gradient passes alone (what an LCA iteration repeats
    2-32 times) at every chunk × memory format: one warm-up pass, then the
    best and median of --sweep-repeats. PyTorch at its best = the fastest
    row. Chunks run smallest first; the peak-memory growth of a chunk of c
    examples is extrapolated linearly to the larger ones, and a
    configuration whose estimate exceeds --sweep-max-bytes is skipped (and
    listed as skipped)."""
    global CHANNELS_LAST
    count = len(evaluation)
    chunks = []
    for word in args.sweep_chunks.split(","):
        c = count if word.strip() == "all" else min(int(word), count)
        bn = args.model == "resnet20"
        if bn and c % args.bn_group and c != count:  # groups never straddle chunks (as lca)
            continue
        if c not in chunks:
            chunks.append(c)
    chunks.sort()
    formats = args.sweep_formats.split(",") if args.model != "fc" else ["contiguous"]
    only = None
    if args.sweep_only:  # CHUNK:FORMAT pairs (a later round re-measuring the contenders)
        only = {(int(c), f) for c, f in (pair.split(":") for pair in args.sweep_only.split(","))}
    limit = args.sweep_max_bytes or 0.6 * mem_available()
    theta = model.initial(args.seed, args.init)
    rows, per_example, base = [], None, peak_rss()
    for chunk in chunks:
        for fmt in formats:
            if only is not None and (chunk, fmt) not in only:
                continue
            CHANNELS_LAST = fmt == "channels_last"
            estimate = base + per_example * chunk if per_example else None
            if estimate and estimate > limit:
                rows.append({"chunk": chunk, "format": fmt, "skipped":
                             f"estimated peak {estimate / 2**30:.1f} GiB > {limit / 2**30:.1f} GiB"})
                continue
            before = peak_rss()
            evaluate = Evaluator(model, images_t, labels_t, evaluation, chunk, args.preconvert)
            evaluate(theta)  # warm-up: oneDNN primitives, allocator
            times = []
            for _ in range(args.sweep_repeats):
                started = time.perf_counter()
                loss, _ = evaluate(theta)
                times.append(time.perf_counter() - started)
            grown = peak_rss() - base
            if grown > 0 and (per_example is None or grown / chunk > per_example):
                per_example = grown / chunk
            rows.append({"chunk": chunk, "format": fmt, "best_s": min(times),
                         "median_s": sorted(times)[len(times) // 2], "loss": loss,
                         "peak_rss": peak_rss(), "peak_before": before})
            if not args.quiet:
                print(f"chunk {chunk:6d} {fmt:<14} best {min(times):.4f} s", file=sys.stderr)
            del evaluate
    measured = [r for r in rows if "best_s" in r]
    best = min(measured, key=lambda r: r["best_s"])
    result = {"torch": torch.__version__, "model": args.model, "threads": args.threads,
              "examples": count, "bn_group": args.bn_group, "repeats": args.sweep_repeats,
              "preconvert": args.preconvert, "rows": rows, "best": best}
    print(f"PyTorch {torch.__version__} pass sweep, {args.model}, {count} examples, {args.threads} "
          f"threads: best chunk {best['chunk']} {best['format']} {best['best_s']:.4f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


# ------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["fc", "lenet", "resnet20"], default="fc")
    ap.add_argument("--data", default=DATA_DIR,
                    help="folder with the IDX training files or CIFAR-10 binary batches (data_batch_*.bin)")
    ap.add_argument("--bn-group", type=int, default=250,
                    help="batch-norm group of the evaluation pass (lca's --bn-group, default 250)")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--validation", type=int, default=-1,
                    help="examples held out (default as lca: min(5,000, 10%% of the set))")
    ap.add_argument("--lca-subset", type=int, default=0, help="evaluation set size (0 = training split)")
    ap.add_argument("--lca-threshold", type=float, default=1e-3)
    ap.add_argument("--lca-max-subintervals", type=int, default=32)
    ap.add_argument("--eval-chunk", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--init", help="initial weights from a safetensors checkpoint (e.g. lca's checkpoint-000000)")
    ap.add_argument("--preconvert", action="store_true",
                    help="keep the evaluation set as float32 (faster, 4x the memory) instead of uint8")
    ap.add_argument("--memory-format", choices=["channels_last", "contiguous"], default="channels_last",
                    help="activation layout of the convolutions (LeNet, ResNet-20)")
    ap.add_argument("--sweep-chunks", metavar="LIST",
                    help="instead of training: time evaluation-set gradient passes alone at each of "
                         "these chunks ('all' = the whole set in one chunk), e.g. 250,500,1000,all")
    ap.add_argument("--sweep-formats", default="contiguous,channels_last",
                    help="memory formats of the sweep (conv nets; FC has none)")
    ap.add_argument("--sweep-repeats", type=int, default=3, help="timed passes per configuration (best kept)")
    ap.add_argument("--sweep-only", metavar="PAIRS",
                    help="sweep only these configurations of the chunks × formats, as CHUNK:FORMAT "
                         "pairs (the chunk as resolved: the whole set's size for 'all'), e.g. "
                         "500:channels_last,1000:contiguous")
    ap.add_argument("--sweep-max-bytes", type=float, default=0,
                    help="skip a configuration whose estimated peak resident memory exceeds this "
                         "(0 = 60%% of MemAvailable at the start)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument("--quiet", action="store_true", help="print only the summary")
    args = ap.parse_args(argv)

    global CHANNELS_LAST, BN_GROUP
    CHANNELS_LAST = args.memory_format == "channels_last"
    BN_GROUP = args.bn_group
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass

    # ---- data loading and setup (not timed)
    images, labels = load_data(args.data)
    rng = np.random.default_rng(args.seed)
    if args.validation < 0:
        args.validation = min(5000, len(labels) // 10)
    permutation = rng.permutation(len(labels))
    training = np.sort(permutation[args.validation:])
    if args.lca_subset:
        evaluation = np.sort(rng.choice(training, size=args.lca_subset, replace=False))
    else:
        evaluation = training
    images_t = torch.from_numpy(images)
    labels_t = torch.from_numpy(labels)
    model = FlatModel(args.model)
    evaluate = Evaluator(model, images_t, labels_t, torch.from_numpy(evaluation), args.eval_chunk,
                         args.preconvert)
    if args.sweep_chunks:
        return sweep(args, model, images_t, labels_t, torch.from_numpy(evaluation))
    theta = model.initial(args.seed, args.init).requires_grad_(True)
    optimizer = torch.optim.SGD([theta], lr=args.lr, momentum=args.momentum)
    lca = StreamingLCA(model, evaluate, args.lca_threshold, args.lca_max_subintervals)
    generator = torch.Generator().manual_seed(args.seed)
    train_index = torch.from_numpy(training)
    order = train_index[torch.randperm(len(training), generator=generator)]
    position = 0
    torch.manual_seed(args.seed)  # dropout masks

    # ---- the timed loop
    records, seconds = [], []
    loop_started = time.perf_counter()
    for t in range(1, args.iterations + 1):
        started = time.perf_counter()
        if position + args.batch_size > len(order):
            order = train_index[torch.randperm(len(training), generator=generator)]
            position = 0
        batch = order[position:position + args.batch_size]
        position += args.batch_size
        x = images_t[batch].to(torch.float32).div_(255.0)
        y = labels_t[batch]
        optimizer.zero_grad(set_to_none=True)
        batch_loss = F.cross_entropy(model.forward(theta, x, True), y)
        batch_loss.backward()
        with torch.no_grad():
            before = theta.detach().clone()
        optimizer.step()
        record = lca.step(before, theta.detach())
        record["iteration"] = t
        record["batch_loss"] = batch_loss.item()
        records.append(record)
        seconds.append(time.perf_counter() - started)
        if not args.quiet:
            print(f"iteration {t:4d}  loss {record['loss_after']:.6f}  lca {record['lca_total']:+.6e}"
                  f"  residual {record['residual']:+.3e}  n {record['subintervals']:2d}"
                  f"  {seconds[-1]:.3f} s", file=sys.stderr)
    loop_seconds = time.perf_counter() - loop_started

    # ---- summary
    change = records[-1]["loss_after"] - records[0]["loss_before"]
    residuals = [r["residual"] for r in records]
    print(f"PyTorch {torch.__version__} streaming LCA: model {args.model}, {len(evaluation)} evaluation "
          f"examples in chunks of {args.eval_chunk}, {args.iterations} iterations, {args.threads} threads")
    print(f"{'tensor':<14}{'parameters':>11}{'total LCA':>16}{'first order':>16}")
    for name, size, total, first in zip(model.names, model.sizes, lca.totals, lca.first_order_totals):
        print(f"{name:<14}{size:>11}{total:>16.6e}{first:>16.6e}")
    print(f"{'total':<14}{model.count:>11}{lca.totals.sum():>16.6e}{lca.first_order_totals.sum():>16.6e}")
    print(f"loss first -> last   {records[0]['loss_before']:.6f} -> {records[-1]['loss_after']:.6f}"
          f"  (change {change:.6e}, Σ LCA + Σ residual {lca.totals.sum() + sum(residuals):.6e})")
    print("residual per iteration: " + " ".join(f"{r:+.2e}" for r in residuals))
    print("sub-intervals per iteration: " + " ".join(str(r["subintervals"]) for r in records))
    print(f"|residual| max {max(abs(r) for r in residuals):.3e} (threshold {args.lca_threshold}), "
          f"{sum(r['flagged'] for r in records)} flagged")
    print(f"time: {loop_seconds / args.iterations:.4f} s per iteration (loop {loop_seconds:.3f} s, "
          f"including the initial gradient {lca.initial_seconds:.3f} s), "
          f"{evaluate.passes} evaluation passes")
    if args.json:
        result = {
            "torch": torch.__version__, "model": args.model, "threads": args.threads,
            "iterations": args.iterations, "evaluation_examples": int(len(evaluation)),
            "eval_chunk": args.eval_chunk, "preconvert": args.preconvert, "bn_group": args.bn_group,
            "memory_format": args.memory_format,
            "loop_seconds": loop_seconds, "seconds_per_iteration": loop_seconds / args.iterations,
            "initial_gradient_seconds": lca.initial_seconds, "iteration_seconds": seconds,
            "evaluation_passes": evaluate.passes,
            "tensors": [{"name": n, "parameters": s, "lca": float(v), "first_order": float(f)}
                        for n, s, v, f in zip(model.names, model.sizes, lca.totals, lca.first_order_totals)],
            "lca_total": float(lca.totals.sum()), "loss_first": records[0]["loss_before"],
            "loss_last": records[-1]["loss_after"], "records": records,
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
