#!/usr/bin/env python3
"""The PyTorch round trip of docs/checkpoints.md, run and checked.

Runs the built `lca` (LCA_BIN, default .build/debug/lca) and PyTorch
(torch==2.13.0, CPU) with safetensors:

1. Executes the code blocks of docs/checkpoints.md from "## Tensor names" on,
   in order, in an empty folder: ```python blocks in one namespace (given
   `images`, `labels`: the embedded digits, read from CCore/data_digits.c),
   ```sh blocks with bash (lca on PATH); a ```text block after a command is
   the error that command must print, compared verbatim. So the doc's code
   cannot rot.
2. Checks the numbers against an independent float64 reference (numpy, not
   torch, not lca): the mean softmax cross-entropy of the same weights on the
   same digits (x = p / 255 in float32, as lca and torch compute it).
   - lca checkpoint -> torch: torch's loss of the loaded module and the
     reference equal lca attribute's loss_before;
   - torch state dict (F32, F64, BF16, F16; no lca metadata) -> lca attribute
     --model: loss_before equals the reference of the weights as F32 (F64
     rounded to nearest by numpy, BF16/F16 widened exactly);
   - the conversion note on stderr (once per file, naming it and the dtypes,
     the rounded count equal to numpy's), --init from a BF16 file holding the
     weights bit for bit, a small conv net both ways, and the errors: no
     --model, --model disagreeing with the metadata, NaN in an F64 file.
   Tolerance: 1e-6 relative for every loss (lca's float32 forward against a
   float64 reference; observed ~1e-7); the worst differences are printed.

Without torch, safetensors or numpy it prints SKIPPED loudly and exits 0.
"""
import gzip
import json
import os
import re
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LCA = os.environ.get("LCA_BIN", os.path.join(ROOT, ".build", "debug", "lca"))
DOC = os.path.join(ROOT, "docs", "checkpoints.md")
TOLERANCE = 1e-6  # relative, on losses

try:
    import numpy as np
    import torch
    import safetensors.torch  # noqa: F401
    from safetensors.torch import load_file, save_file
except ImportError as error:
    print("#" * 72)
    print(f"SKIPPED: {error.name} is not installed (pip install torch==2.13.0 safetensors numpy);")
    print("SKIPPED: the PyTorch checkpoint round trip of docs/checkpoints.md did NOT run")
    print("#" * 72)
    sys.exit(0)

failures = []
worst = {}  # what -> worst relative difference


def check(condition, what, detail=""):
    print(("ok   " if condition else "FAIL ") + what + (f": {detail}" if detail else ""))
    if not condition:
        failures.append(what)


def check_close(value, reference, what, tolerance=TOLERANCE):
    relative = abs(value - reference) / abs(reference)
    group = what.split(":")[0]
    worst[group] = max(worst.get(group, 0.0), relative)
    check(relative <= tolerance, what,
          f"{value:.17g} vs reference {reference:.17g}, relative {relative:.2e} <= {tolerance:.0e}")


# ---------------------------------------------------------------- the data

def embedded_idx(name):
    """An IDX file embedded in CCore/data_digits.c as gzip bytes."""
    text = open(os.path.join(ROOT, "CCore", "data_digits.c")).read()
    match = re.search(r"const uint8_t " + name + r"\[\d+\] = \{([^}]*)\}", text)
    data = gzip.decompress(bytes(int(b, 16) for b in re.findall(r"0x([0-9a-fA-F]{2})", match.group(1))))
    rank = data[3]
    dims = struct.unpack(">" + "I" * rank, data[4:4 + 4 * rank])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * rank).reshape(dims)


IMAGES = embedded_idx("lca_digits_images_gz").reshape(-1, 64)
LABELS = embedded_idx("lca_digits_labels_gz").astype(np.int64)
X32 = IMAGES.astype(np.float32) / np.float32(255)  # as lca (pixels.c) and torch compute it


def reference_loss(weights, layers, x=X32):
    """Mean softmax cross-entropy in float64 of an MLP fc1 … fcL (ReLU
    between), y = x·Wᵀ + b; weights: name -> float32 numpy array."""
    h = x.astype(np.float64)
    for i in range(1, layers + 1):
        h = h @ weights[f"fc{i}.weight"].astype(np.float64).T + weights[f"fc{i}.bias"].astype(np.float64)
        if i < layers:
            h = np.maximum(h, 0)
    top = h.max(axis=1, keepdims=True)
    log_softmax = h - top - np.log(np.exp(h - top).sum(axis=1, keepdims=True))
    return float(-log_softmax[np.arange(len(LABELS)), LABELS].mean())


def as_f32(state):
    """A state dict's tensors as float32 numpy arrays, F64 rounded to nearest
    by numpy, BF16/F16 widened (exact)."""
    out = {}
    for k, v in state.items():
        if v.dtype == torch.float64:
            out[k] = v.numpy().astype(np.float32)
        else:
            out[k] = v.float().numpy()
    return out


def lca(args, cwd, expect_ok=True):
    process = subprocess.run([LCA] + args, cwd=cwd, capture_output=True, text=True)
    if expect_ok and process.returncode != 0:
        check(False, "lca " + " ".join(args), process.stderr.strip())
    return process


def attribute_loss(path, cwd, spec="64-32-10", to=None):
    process = lca(["attribute", "--from", path, "--to", to or path, "--model", spec, "--data", "digits",
                   "--json"], cwd)
    return json.loads(process.stdout)["loss_before"] if process.returncode == 0 else float("nan"), process.stderr


# ------------------------------------------------------- the doc's blocks

def doc_blocks():
    text = open(DOC).read()
    text = text[text.index("## Tensor names"):]
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w+)\n(.*?)```", text, re.S)]


def run_doc(work):
    namespace = {"images": IMAGES.copy(), "labels": LABELS.copy(), "__name__": "doc"}
    env = dict(os.environ, PATH=os.path.dirname(os.path.abspath(LCA)) + os.pathsep + os.environ["PATH"])
    blocks = doc_blocks()
    check(len(blocks) >= 8, "docs/checkpoints.md has the round-trip blocks", f"{len(blocks)} blocks")
    for index, (language, code) in enumerate(blocks):
        following = blocks[index + 1] if index + 1 < len(blocks) else (None, None)
        first = code.strip().splitlines()[0]
        if language == "python":
            try:
                os.chdir(work)  # the blocks use paths relative to the folder, as the sh blocks do
                exec(compile(code, f"docs/checkpoints.md block {index}", "exec"), namespace)
                check(True, f"doc python block {index} runs", first)
            except Exception as error:  # a failing block is a failing test, with the reason
                check(False, f"doc python block {index} runs", f"{first}: {type(error).__name__}: {error}")
        elif language == "sh":
            process = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=work, env=env,
                                     capture_output=True, text=True)
            if following[0] == "text":  # the command must fail with exactly that message
                check(process.returncode == 1 and process.stderr.strip() == following[1].strip(),
                      f"doc sh block {index} fails with the message shown", f"exit {process.returncode}, "
                      f"stderr {process.stderr.strip()[:300]!r}")
            else:
                check(process.returncode == 0, f"doc sh block {index} runs", f"{first}: {process.stderr.strip()[-500:]}")
    return namespace


# ------------------------------------------------------------------ checks

def check_lca_to_torch(work, ns):
    lca_json = json.load(open(os.path.join(work, "lca.json")))
    weights = {k: v.numpy() for k, v in load_file(os.path.join(work, "run/checkpoint-000040.safetensors")).items()}
    reference = reference_loss(weights, 2)
    check_close(lca_json["loss_before"], reference, "lca -> torch: lca attribute loss_before, checkpoint-000040")
    check_close(ns["loss"], reference, "lca -> torch: torch's float32 cross-entropy of the loaded module")
    check(lca_json["loss_before"] == lca_json["loss_after"], "lca -> torch: zero step, loss_after = loss_before")
    # and the start: checkpoint-000000 through torch as well
    start = {k: v.numpy() for k, v in load_file(os.path.join(work, "run/checkpoint-000000.safetensors")).items()}
    before, _ = attribute_loss("run/checkpoint-000000.safetensors", work)
    check_close(before, reference_loss(start, 2), "lca -> torch: loss_before, checkpoint-000000")


def check_torch_to_lca(work, ns):
    weights = ns["weights"]  # F64
    check(all(v.dtype == torch.float64 for v in weights.values()), "torch -> lca: the doc's weights are F64")
    for name, dtype in [("f32", torch.float32), ("f64", torch.float64), ("bf16", torch.bfloat16)]:
        value = json.load(open(os.path.join(work, f"{name}.json")))["loss_before"]
        state = {k: v.to(dtype) for k, v in weights.items()}
        check_close(value, reference_loss(as_f32(state), 2), f"torch -> lca: {name.upper()} state dict, loss_before")
    f32, f64 = (json.load(open(os.path.join(work, f"{n}.json")))["loss_before"] for n in ("f32", "f64"))
    check(f32 == f64, "torch -> lca: lca's F64 -> F32 rounding is torch's (.float()): the same loss, bit for bit",
          f"{f32!r} vs {f64!r}")
    # F64 reference without the rounding, for scale: how much rounding to F32 moved the loss
    exact = reference_loss({k: v.numpy() for k, v in weights.items()}, 2)
    print(f"note: the F64 weights unrounded give loss {exact:.17g}; rounded to F32, "
          f"{reference_loss(as_f32(weights), 2):.17g}")
    # F16 too (not in the doc)
    save_file({k: v.half() for k, v in weights.items()}, os.path.join(work, "torch-f16.safetensors"))
    value, stderr = attribute_loss("torch-f16.safetensors", work)
    check_close(value, reference_loss(as_f32({k: v.half() for k, v in weights.items()}), 2),
                "torch -> lca: F16 state dict, loss_before")
    check("4 F16 tensors (exact)" in stderr, "torch -> lca: F16 note", stderr.strip())
    # the note: once per file, naming it, the dtype and the rounding count numpy finds
    value, stderr = attribute_loss("torch-f64.safetensors", work)
    rounded = sum(int((v.numpy().astype(np.float32).astype(np.float64) != v.numpy()).sum()) for v in weights.values())
    check(rounded > 2000, "torch -> lca: most F64 values need rounding", f"{rounded} of 2410")
    want = (f"lca: note: torch-f64.safetensors: converted to F32 on load: 4 F64 tensors (rounded to nearest: "
            f"{rounded} of 2410 values changed)")
    notes = [line for line in stderr.splitlines() if "converted to F32" in line]
    check(notes == [want], "torch -> lca: one F64 note for --from and --to (the same file)", repr(notes))
    _, stderr = attribute_loss("torch-bf16.safetensors", work, to="run/checkpoint-000040.safetensors")
    notes = [line for line in stderr.splitlines() if "converted to F32" in line]
    check(notes == ["lca: note: torch-bf16.safetensors: converted to F32 on load: 4 BF16 tensors (exact)"],
          "torch -> lca: one BF16 note, none for lca's own F32 file", repr(notes))
    _, stderr = attribute_loss("torch-f32.safetensors", work)
    check("note" not in stderr, "torch -> lca: no note for F32", repr(stderr))
    # --init from the BF16 file: checkpoint-000000 holds its weights bit for bit, with lca metadata
    start = load_file(os.path.join(work, "from-torch/checkpoint-000000.safetensors"))
    same = all(torch.equal(start[k], weights[k].bfloat16().float()) for k in weights)
    check(not all(torch.equal(weights[k].bfloat16().float(), weights[k].float()) for k in weights),
          "torch -> lca: the BF16 weights differ from the F32 ones (the check can fail)")
    check(same and set(start) == set(weights), "torch -> lca: --init BF16 file, checkpoint-000000 = the weights exactly")
    with open(os.path.join(work, "from-torch/checkpoint-000000.safetensors"), "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    check(header["__metadata__"].get("lca.model") == "64-32-10", "torch -> lca: --init run records lca.model",
          str(header["__metadata__"]))


def check_names(work, ns):
    seq = {k: v.numpy() for k, v in ns["seq"].state_dict().items()}
    reference = reference_loss({"fc1.weight": seq["0.weight"], "fc1.bias": seq["0.bias"],
                                "fc2.weight": seq["2.weight"], "fc2.bias": seq["2.bias"]}, 2)
    value = json.load(open(os.path.join(work, "renamed.json")))["loss_before"]
    check_close(value, reference, "names: renamed nn.Sequential, loss_before")


def check_errors(work):
    process = lca(["attribute", "--from", "torch-f32.safetensors", "--to", "torch-f32.safetensors",
                   "--data", "digits"], work, expect_ok=False)
    check(process.returncode == 1 and "lca.model" in process.stderr and "--model" in process.stderr,
          "errors: no metadata and no --model asks for --model", process.stderr.strip())
    for args in (["attribute", "--from", "run/checkpoint-000040.safetensors", "--to",
                  "run/checkpoint-000040.safetensors", "--data", "digits", "--model", "64-16-10"],
                 ["train", "--init", "run/checkpoint-000040.safetensors", "--model", "64-16-10", "-o", "bad",
                  "--iterations", "1", "--quiet"]):
        process = lca(args, work, expect_ok=False)
        check(process.returncode == 1 and '"64-16-10"' in process.stderr and '"64-32-10"' in process.stderr,
              f"errors: lca {args[0]} --model disagreeing with the metadata names both", process.stderr.strip())
    process = lca(["train", "--init", "torch-f32.safetensors", "-o", "bad2", "--iterations", "1", "--quiet"], work,
                  expect_ok=False)
    check(process.returncode == 1 and "--model" in process.stderr,
          "errors: lca train --init without metadata or --model asks for --model", process.stderr.strip())
    bad = {k: v.double().clone() for k, v in load_file(os.path.join(work, "torch-f32.safetensors")).items()}
    bad["fc2.bias"][3] = float("nan")
    save_file(bad, os.path.join(work, "nan.safetensors"))
    process = lca(["attribute", "--from", "nan.safetensors", "--to", "nan.safetensors", "--model", "64-32-10",
                   "--data", "digits"], work, expect_ok=False)
    check(process.returncode == 1 and '"fc2.bias"' in process.stderr and "NaN" in process.stderr,
          "errors: NaN in an F64 file names the tensor", process.stderr.strip())
    bad["fc2.bias"][3] = 1e39
    save_file(bad, os.path.join(work, "big.safetensors"))
    process = lca(["attribute", "--from", "big.safetensors", "--to", "big.safetensors", "--model", "64-32-10",
                   "--data", "digits"], work, expect_ok=False)
    check(process.returncode == 1 and '"fc2.bias"' in process.stderr and "range" in process.stderr,
          "errors: an F64 value beyond F32's range names the tensor", process.stderr.strip())


class ConvNet(torch.nn.Module):
    """lca's input(1,8,8) conv(4,3) relu maxpool(2) dense(10)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc1 = torch.nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        h = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x.reshape(-1, 1, 8, 8))), 2)
        return self.fc1(torch.flatten(h, 1))


def check_conv(work):
    spec = "input(1,8,8) conv(4,3) relu maxpool(2) dense(10)"
    x = torch.from_numpy(X32).double()
    y = torch.from_numpy(LABELS)
    # lca -> torch
    lca(["train", "-o", "conv", "--model", spec, "--iterations", "20", "--quiet"], work)
    net = ConvNet().double()
    net.load_state_dict({k: v.double() for k, v in load_file(os.path.join(work, "conv/checkpoint-000020.safetensors")).items()})
    with torch.no_grad():
        reference = torch.nn.functional.cross_entropy(net(x), y).item()  # float64 throughout
    value, _ = attribute_loss("conv/checkpoint-000020.safetensors", work, spec=spec)
    check_close(value, reference, "conv: lca checkpoint -> torch (float64), loss_before")
    # torch -> lca, F64
    torch.manual_seed(1)
    theirs = ConvNet()
    save_file({k: v.double() for k, v in theirs.state_dict().items()}, os.path.join(work, "conv-f64.safetensors"))
    rounded = ConvNet().double()
    rounded.load_state_dict({k: v.float().double() for k, v in theirs.state_dict().items()})
    with torch.no_grad():
        reference = torch.nn.functional.cross_entropy(rounded(x), y).item()
    value, stderr = attribute_loss("conv-f64.safetensors", work, spec=spec)
    check_close(value, reference, "conv: torch F64 state dict -> lca, loss_before")


def main():
    if not os.path.exists(LCA):
        print(f"FAIL the lca executable {LCA} is missing: run swift build first")
        return 1
    print(f"torch {torch.__version__}, digits {IMAGES.shape[0]} x {IMAGES.shape[1]}")
    with tempfile.TemporaryDirectory(prefix="lca-torch-") as work:
        ns = run_doc(work)
        os.chdir(ROOT)
        if failures:
            print(f"the doc's blocks failed ({len(failures)}); the checks after them would only repeat it")
        else:
            check_lca_to_torch(work, ns)
            check_torch_to_lca(work, ns)
            check_names(work, ns)
            check_errors(work)
            check_conv(work)
        os.chdir(ROOT)
    for group, value in worst.items():
        print(f"worst relative loss difference, {group}: {value:.2e} (tolerance {TOLERANCE:.0e})")
    print(f"test_torch_checkpoints: {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
