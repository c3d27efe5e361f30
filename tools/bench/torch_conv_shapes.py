#!/usr/bin/env python3
"""oneDNN (PyTorch's CPU convolutions) on the convolution and dense shapes of
one evaluation-set gradient pass of LeNet or ResNet-20: for each weighted
layer (tools/bench/flops.py, in order), on a chunk of examples, the forward
product, the weight gradient and, for every layer but the first, the input
gradient (aten.convolution_backward with only those outputs; dense layers as
float32 matmuls), on operands already in place: the product work alone,
without batch norm, ReLU, pooling, softmax or autograd's bookkeeping. Both
memory formats; the faster is the peer's figure. GFLOP/s in needed
arithmetic (the count of flops.py), directly comparable with the pass's.

    python3 tools/bench/torch_conv_shapes.py --model resnet20 --examples 1000 --chunk 250 --threads 2

Prints one JSON object: per format, the best seconds of a whole pass's
products (sum over layers of the best of --repeats rounds per layer, a
round timing the pass's calls of that layer back to back, at least 4) and
its GFLOP/s, and per layer the seconds and GFLOP/s.
"""

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flops  # noqa: E402


def best_of(fn, repeats, calls):
    """Seconds per call: the best of `repeats` rounds, each timing `calls`
    calls back to back (one call alone is too short to time on a shared VM:
    single calls came out faster than the FMA ceiling allows)."""
    fn()  # warm-up: oneDNN creates its primitive
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - started) / calls)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["lenet", "resnet20"], default="resnet20")
    ap.add_argument("--examples", type=int, default=1000, help="examples of the pass")
    ap.add_argument("--chunk", type=int, default=250, help="examples per product call")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--formats", default="contiguous,channels_last")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    chunk = min(args.chunk, args.examples)
    chunks = args.examples / chunk  # a pass = this many chunk-sized product calls
    calls = max(4, round(chunks))
    layers = [p for p in flops.products(args.model) if p["macs"]]
    result = {"torch": torch.__version__, "model": args.model, "examples": args.examples,
              "chunk": chunk, "threads": args.threads, "repeats": args.repeats,
              "gflop": flops.pass_flop(args.model) * args.examples * 1e-9, "formats": {}}
    for fmt_name in args.formats.split(","):
        fmt = torch.channels_last if fmt_name == "channels_last" else torch.contiguous_format
        rows, total = [], 0.0
        for index, layer in enumerate(layers):
            first = index == 0
            if layer["kind"] == "conv":
                c, h, w, oc, k, stride, oh, ow = layer["shape"]
                pad = 0 if k == 1 else k // 2
                x = torch.rand(chunk, c, h, w).contiguous(memory_format=fmt)
                wt = torch.randn(oc, c, k, k).contiguous(memory_format=fmt)
                b = torch.randn(oc)
                dy = torch.randn(chunk, oc, oh, ow).contiguous(memory_format=fmt)

                def forward():
                    F.conv2d(x, wt, b, stride=stride, padding=pad)

                def backward():
                    torch.ops.aten.convolution_backward(
                        dy, x, wt, [oc], [stride, stride], [pad, pad], [1, 1], False, [0, 0], 1,
                        [not first, True, False])
            else:
                out_features = layer["parameters"] - layer["macs"]  # parameters = in·out + out
                fan_in = layer["macs"] // out_features
                x = torch.rand(chunk, fan_in)
                wt = torch.randn(out_features, fan_in)
                b = torch.randn(out_features)
                dy = torch.randn(chunk, out_features)

                def forward():
                    F.linear(x, wt, b)

                def backward():
                    torch.mm(dy.t(), x)  # weight gradient
                    if not first:
                        torch.mm(dy, wt)  # input gradient

            fwd_s, bwd_s = best_of(forward, args.repeats, calls), best_of(backward, args.repeats, calls)
            seconds = (fwd_s + bwd_s) * chunks
            flop = 2 * layer["macs"] * (2 if first else 3) * args.examples
            rows.append({"kind": layer["kind"], "shape": layer.get("shape"), "seconds": seconds,
                         "forward_s": fwd_s, "backward_s": bwd_s,
                         "gflops": flop / seconds * 1e-9})
            total += seconds
        result["formats"][fmt_name] = {"seconds": total, "gflops": result["gflop"] / total, "layers": rows}
    best = min(result["formats"], key=lambda f: result["formats"][f]["seconds"])
    result["best_format"] = best
    result["best_seconds"] = result["formats"][best]["seconds"]
    result["best_gflops"] = result["formats"][best]["gflops"]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
