#!/usr/bin/env python3
"""The needed arithmetic of one evaluation-set gradient pass, per example, for
the models the benchmark measures (docs/models.md): the FLOP count that
run_bench.py turns a pass time into GFLOP/s with.

Counted (2 FLOP per multiply-add), per example:
  - forward: every dense layer (in·out), every convolution and projection
    shortcut (OC·OH·OW·C·K·K);
  - weight gradient: the same count again for each of them;
  - input gradient: the same count again for each of them except the first
    layer that reads the input (no gradient is needed for the data).
Not counted: biases, batch norm, ReLU, pooling, residual adds, softmax (they
are O(activations), not O(activations × fan-in)), nor anything a kernel adds
on top (im2col copies, padding, Winograd transforms).

    python3 tools/bench/flops.py            # the table for fc, lenet, resnet20
    python3 tools/bench/flops.py --check    # the self-test (exit 1 on a mismatch)

The walker reads the subset of lca's spec language the three models use
(input, dense, conv, bn, relu, maxpool, avgpool, gap, dropout, flatten,
block); it also counts parameters so that --check can compare with the
counts of docs/models.md, a check that the shapes it derives are lca's.
"""

import argparse
import re
import sys

SPECS = {
    "fc": "input(784) dense(100) relu dense(50) relu dense(10)",
    "lenet": "input(1,28,28) conv(20,5) relu maxpool(2) conv(40,5) relu maxpool(2) dropout(0.25) "
             "dense(400) relu dropout(0.5) dense(10)",
    "resnet20": "input(3,32,32) conv(16,3) bn relu block(16) block(16) block(16) block(32,stride=2) "
                "block(32) block(32) block(64,stride=2) block(64) block(64) gap dense(10)",
}

# docs/models.md, "Built-in names"
PARAMETERS = {"fc": 84_060, "lenet": 808_970, "resnet20": 273_066}


def _args(text):
    """'16,3,stride=2' -> ([16, 3], {'stride': 2}); flags such as 'valid' -> {'valid': True}."""
    positional, named = [], {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" in part:
            key, value = part.split("=", 1)
            named[key] = int(value)
        elif re.fullmatch(r"[0-9.]+", part):
            positional.append(float(part) if "." in part else int(part))
        else:
            named[part] = True
    return positional, named


def products(model):
    """The weighted layers of a model in order: dicts with kind ('dense',
    'conv'), macs (multiply-adds per example of the forward product),
    parameters, and for convolutions the shape (C, H, W, OC, K, S, OH, OW)."""
    spec = SPECS.get(model, model)
    layers = re.findall(r"(\w+)(?:\(([^)]*)\))?", spec)
    out = []
    c = h = w = None

    def conv(oc, k, stride=1, valid=False):
        nonlocal c, h, w
        pad = 0 if valid else k // 2
        oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        out.append({"kind": "conv", "macs": oc * oh * ow * c * k * k,
                    "parameters": oc * c * k * k + oc, "shape": (c, h, w, oc, k, stride, oh, ow)})
        c, h, w = oc, oh, ow

    for name, text in layers:
        pos, named = _args(text or "")
        if name == "input":
            c, h, w = (pos + [1, 1])[:3] if len(pos) == 1 else pos
        elif name in ("dense", "fc"):
            fan_in = c * h * w
            out.append({"kind": "dense", "macs": fan_in * pos[0], "parameters": fan_in * pos[0] + pos[0]})
            c, h, w = pos[0], 1, 1
        elif name == "conv":
            conv(pos[0], pos[1], named.get("stride", 1), named.get("valid", False))
        elif name == "bn":
            out.append({"kind": "bn", "macs": 0, "parameters": 2 * c})
        elif name in ("maxpool", "avgpool"):
            k = pos[0]
            s = named.get("stride", k)
            h, w = (h - k) // s + 1, (w - k) // s + 1
        elif name == "gap":
            h = w = 1
        elif name == "block":
            oc, stride = pos[0], named.get("stride", 1)
            c_in, h_in, w_in = c, h, w
            conv(oc, 3, stride)
            out.append({"kind": "bn", "macs": 0, "parameters": 2 * oc})
            conv(oc, 3, 1)
            out.append({"kind": "bn", "macs": 0, "parameters": 2 * oc})
            if (c_in, h_in, w_in) != (c, h, w):  # projection shortcut: 1×1 conv with bias, stride S
                oh, ow = (h_in - 1) // stride + 1, (w_in - 1) // stride + 1
                out.append({"kind": "conv", "macs": oc * oh * ow * c_in, "parameters": oc * c_in + oc,
                            "shape": (c_in, h_in, w_in, oc, 1, stride, oh, ow), "projection": True})
        elif name in ("relu", "dropout", "flatten"):
            pass
        else:
            raise ValueError(f"flops.py: layer {name!r} not handled")
    return out


def pass_flop(model):
    """Needed FLOP per example of one evaluation-set gradient pass (forward,
    weight gradients, input gradients but the first layer's)."""
    weighted = [p for p in products(model) if p["macs"]]
    forward = sum(p["macs"] for p in weighted)
    return 2 * (3 * forward - weighted[0]["macs"])


def forward_flop(model):
    return 2 * sum(p["macs"] for p in products(model))


def parameter_count(model):
    return sum(p["parameters"] for p in products(model))


# hand counts (docs in the module string and docs/performance.md)
EXPECTED_PASS = {
    "fc": 2 * (2 * (784 * 100 + 100 * 50 + 50 * 10) + 100 * 50 + 50 * 10),   # 346,600
    "lenet": 2 * (3 * (28 * 28 * 20 * 25 + 14 * 14 * 40 * 500 + 1960 * 400 + 400 * 10)
                  - 28 * 28 * 20 * 25),                                       # 29,816,000
}


def check():
    failures = []
    for model, expected in PARAMETERS.items():
        got = parameter_count(model)
        if got != expected:
            failures.append(f"{model}: {got} parameters, docs/models.md says {expected}")
    for model, expected in EXPECTED_PASS.items():
        if pass_flop(model) != expected:
            failures.append(f"{model}: {pass_flop(model)} FLOP per example, hand count {expected}")
    # ResNet-20: 40,813,184 multiply-adds forward (stem 442,368; 18 3×3 convs of 2,359,296 but
    # the two stride-2 ones of 1,179,648; projections 131,072 each; dense 640)
    resnet_macs = 442_368 + 16 * 2_359_296 + 2 * 1_179_648 + 2 * 131_072 + 640
    if forward_flop("resnet20") != 2 * resnet_macs:
        failures.append(f"resnet20: forward {forward_flop('resnet20')} FLOP, hand count {2 * resnet_macs}")
    if pass_flop("resnet20") != 2 * (3 * resnet_macs - 442_368):
        failures.append(f"resnet20: pass {pass_flop('resnet20')} FLOP")
    for f in failures:
        print("flops.py check FAILED: " + f, file=sys.stderr)
    if not failures:
        print("flops.py check: parameter counts of docs/models.md and the hand FLOP counts agree")
    return 0 if not failures else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    if args.check:
        return check()
    print(f"{'model':<10}{'parameters':>12}{'forward MFLOP':>15}{'pass MFLOP':>12}")
    for model in SPECS:
        print(f"{model:<10}{parameter_count(model):>12,}{forward_flop(model) / 1e6:>15.3f}"
              f"{pass_flop(model) / 1e6:>12.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
