#!/usr/bin/env python3
"""Compares `lca attribute` with the independent JAX float64 reference.

    python3 tools/reference/test_reference.py

1. Self-checks of the reference (lca_reference.py) against closed forms, so
   that the reference is itself tested:
   - least squares on a linear model ("784-10", mean squared error): the loss
     is quadratic along the segment, so Simpson is exact: residual < 1e-12 at
     n = 2, and per-tensor LCA equals Δθ·(g_A + g_B)/2 with g from the
     hand-derived gradient 2/(N·C)·(XWᵀ + b − Y)ᵀ[X, 1] (numpy, no JAX);
   - cross-entropy MLP: losses equal a numpy forward pass, and the
     first-order total equals the directional derivative dL/ds at s = 0 by
     central finite differences;
   - softmax regression (smooth, not polynomial): each doubling of the
     Simpson sub-intervals shrinks the residual about 16x (error ∝ h⁴).
2. Trains a 784-32-10 MLP with `lca train` on the MNIST 5k subset, then runs
   `lca attribute --json` and the reference on checkpoints 0 → 20 and
   10 → 20 over all 5,000 examples, and 0 → 20 once more allocating the mean
   squared error (`--loss mse`) instead, and compares per tensor:
       |lca_ours − lca_ref|         ≤ 1e-4 · max over tensors |lca_ref|
       |first_ours − first_ref|     ≤ 1e-4 · max over tensors |first_ref|
       losses                       within 1e-5 relative
Prints a table, the worst relative difference, and a last line
"reference: N passed, N failed[, N skipped]". Exits non-zero on any failure.

Environment: LCA_BIN (the lca executable; default: swift build --show-bin-path
from the repo root, building the product when missing), LCA_SHARED (default
../shared from the repo root).
"""

import json
import os
import subprocess
import sys
import tempfile
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHARED = os.environ.get("LCA_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
IMAGES = os.path.join(SHARED, "data", "mnist5k-images-idx3-ubyte.gz")
LABELS = os.path.join(SHARED, "data", "mnist5k-labels-idx1-ubyte.gz")

LCA_TOLERANCE = 1e-4    # per tensor, relative to the largest |LCA| over tensors
LOSS_TOLERANCE = 1e-5   # relative

results = {"passed": 0, "failed": 0, "skipped": 0}
worst = {"value": 0.0, "where": "none"}


def record(name, ok, detail=""):
    results["passed" if ok else "failed"] += 1
    print(f"{'PASS' if ok else 'FAIL'}: {name}{' (' + detail + ')' if detail else ''}")


def note_worst(value, where):
    if value > worst["value"]:
        worst["value"], worst["where"] = value, where


def finish():
    print(f"worst relative difference ours vs reference: {worst['value']:.3e} ({worst['where']})")
    line = f"reference: {results['passed']} passed, {results['failed']} failed"
    if results["skipped"]:
        line += f", {results['skipped']} skipped"
    print(line)
    sys.exit(1 if results["failed"] else 0)


# ------------------------------------------------------- files for self-checks

def write_safetensors(path, tensors, metadata):
    """F32 safetensors, tensors in the given order."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, value in tensors.items():
        data = np.ascontiguousarray(value, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(value.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def random_mlp(rng, sizes, scale=1.0):
    params = {}
    for layer in range(1, len(sizes)):
        fan_in, fan_out = sizes[layer - 1], sizes[layer]
        params[f"fc{layer}.weight"] = rng.normal(0, scale * np.sqrt(2.0 / fan_in), (fan_out, fan_in))
        params[f"fc{layer}.bias"] = rng.normal(0, 0.1 * scale, fan_out)
    return {k: v.astype(np.float32) for k, v in params.items()}


def perturbed(rng, params, step):
    return {k: (v + step * rng.normal(0, 1, v.shape) * (np.abs(v).mean() + 1e-3)).astype(np.float32)
            for k, v in params.items()}


# ----------------------------------------------------------------- self-checks

def self_check_quadratic(ref, tmp, x, labels):
    """MSE on a linear model: Simpson is exact; compare with hand-derived gradients."""
    rng = np.random.default_rng(11)
    sizes = [784, 10]
    theta_a = random_mlp(rng, sizes)
    theta_b = perturbed(rng, theta_a, 0.5)
    meta = {"lca.model": "784-10", "lca.loss": "mean_squared_error", "lca.iteration": "0"}
    a, b = os.path.join(tmp, "quad-a.safetensors"), os.path.join(tmp, "quad-b.safetensors")
    write_safetensors(a, theta_a, meta)
    write_safetensors(b, theta_b, {**meta, "lca.iteration": "1"})
    out = ref.attribute(a, b, IMAGES, LABELS, threshold=0.0, max_subintervals=2)

    # numpy, float64, no JAX: L = mean over N·C of (XWᵀ + b − Y)²
    n, c = x.shape[0], 10
    y = np.eye(c)[labels]

    def loss_grad(p):
        w, bias = p["fc1.weight"].astype(np.float64), p["fc1.bias"].astype(np.float64)
        r = x @ w.T + bias - y
        return np.mean(r ** 2), {"fc1.weight": 2.0 / (n * c) * r.T @ x,
                                 "fc1.bias": 2.0 / (n * c) * r.sum(axis=0)}

    la, ga = loss_grad(theta_a)
    lb, gb = loss_grad(theta_b)
    exact = {k: float(np.sum((theta_b[k].astype(np.float64) - theta_a[k]) * (ga[k] + gb[k]) / 2))
             for k in ga}
    first = {k: float(np.sum((theta_b[k].astype(np.float64) - theta_a[k]) * ga[k])) for k in ga}
    scale = max(abs(v) for v in exact.values())
    lca_diff = max(abs(t["lca"] - exact[t["name"]]) for t in out["tensors"]) / scale
    first_diff = max(abs(t["first_order"] - first[t["name"]]) for t in out["tensors"]) / scale
    loss_diff = max(abs(out["loss_before"] - la) / la, abs(out["loss_after"] - lb) / lb)
    print(f"  quadratic: loss {la:.6f} -> {lb:.6f}, lca_total {out['lca_total']:.6e}, "
          f"residual {out['residual']:.3e} at n = {out['subintervals']}")
    print(f"  quadratic: vs closed form: lca {lca_diff:.2e}, first order {first_diff:.2e}, "
          f"loss {loss_diff:.2e} (relative)")
    record("self-check quadratic: Simpson residual < 1e-12 at n = 2",
           abs(out["residual"]) < 1e-12 and out["subintervals"] == 2, f"{out['residual']:.3e}")
    record("self-check quadratic: per-tensor LCA = Δθ·(g_A+g_B)/2 (hand gradient) within 1e-10",
           lca_diff < 1e-10 and first_diff < 1e-10 and loss_diff < 1e-12,
           f"{max(lca_diff, first_diff):.2e}")


def self_check_cross_entropy(ref, tmp, x, labels):
    """Cross-entropy MLP: loss = numpy forward; first order = dL/ds(0) by finite differences."""
    rng = np.random.default_rng(12)
    sizes = [784, 16, 10]
    theta_a = random_mlp(rng, sizes)
    theta_b = perturbed(rng, theta_a, 0.3)
    meta = {"lca.model": "784-16-10", "lca.loss": "softmax_cross_entropy", "lca.iteration": "0"}
    a, b = os.path.join(tmp, "ce-a.safetensors"), os.path.join(tmp, "ce-b.safetensors")
    write_safetensors(a, theta_a, meta)
    write_safetensors(b, theta_b, meta)
    out = ref.attribute(a, b, IMAGES, LABELS)

    # numpy forward pass only, float64: central difference of L(θ_A + sΔθ) at s = 0
    def loss_at(s):
        p = {k: theta_a[k].astype(np.float64) + s * (theta_b[k].astype(np.float64) - theta_a[k])
             for k in theta_a}
        h = np.maximum(x @ p["fc1.weight"].T + p["fc1.bias"], 0.0)
        z = h @ p["fc2.weight"].T + p["fc2.bias"]
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(z)), labels]))

    eps = 1e-5
    directional = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    fd_diff = abs(out["first_order_total"] - directional) / abs(directional)
    loss_diff = max(abs(out["loss_before"] - loss_at(0.0)), abs(out["loss_after"] - loss_at(1.0)))
    print(f"  cross-entropy MLP: loss {out['loss_before']:.6f} -> {out['loss_after']:.6f} "
          f"(numpy forward: |diff| {loss_diff:.1e}); residual {out['residual']:.3e} at n = {out['subintervals']}")
    print(f"  cross-entropy MLP: first order {out['first_order_total']:.9e} vs central difference "
          f"{directional:.9e} (rel {fd_diff:.1e})")
    record("self-check cross-entropy MLP: first order = dL/ds(0) by central differences within 1e-6",
           fd_diff < 1e-6, f"{fd_diff:.2e}")
    record("self-check cross-entropy MLP: losses match a numpy forward pass within 1e-12",
           loss_diff < 1e-12, f"{loss_diff:.1e}")

    # adaptive refinement stops at the first n in 2, 4, …, 32 with |residual| <= threshold
    fixed = {n: ref.attribute(a, b, IMAGES, LABELS, threshold=0.0, max_subintervals=n)["residual"]
             for n in (2, 4, 8, 16, 32)}
    threshold = abs(fixed[2]) / 2
    expected = next((n for n in fixed if abs(fixed[n]) <= threshold), 32)
    adaptive = ref.attribute(a, b, IMAGES, LABELS, threshold=threshold)
    print(f"  cross-entropy MLP: residual at n = {', '.join(f'{n}: {r:.2e}' for n, r in fixed.items())}; "
          f"threshold {threshold:.2e} -> adaptive n = {adaptive['subintervals']}")
    record("self-check cross-entropy MLP: adaptive refinement stops at the first n below the threshold",
           adaptive["subintervals"] == expected and adaptive["residual"] == fixed[expected],
           f"n = {adaptive['subintervals']}, expected {expected}")


def self_check_simpson_order(ref, tmp, x, labels):
    """Softmax regression ("784-10"): smooth, not polynomial along the segment, so
    each doubling of n shrinks the composite Simpson residual about 16× (h⁴).
    (A ReLU net's gradient jumps where units switch on or off along the segment,
    so there the error falls more slowly and not monotonically.)"""
    rng = np.random.default_rng(13)
    theta_a = random_mlp(rng, [784, 10])
    theta_b = perturbed(rng, theta_a, 0.3)
    meta = {"lca.model": "784-10", "lca.loss": "softmax_cross_entropy", "lca.iteration": "0"}
    a, b = os.path.join(tmp, "lin-a.safetensors"), os.path.join(tmp, "lin-b.safetensors")
    write_safetensors(a, theta_a, meta)
    write_safetensors(b, theta_b, meta)
    residuals = [ref.attribute(a, b, IMAGES, LABELS, threshold=0.0, max_subintervals=n)["residual"]
                 for n in (2, 4, 8)]
    ratios = [abs(residuals[i] / residuals[i + 1]) for i in range(2)]
    print(f"  softmax regression: residual n = 2, 4, 8: "
          f"{', '.join(f'{r:.3e}' for r in residuals)}; ratios {', '.join(f'{q:.1f}' for q in ratios)}")
    record("self-check softmax regression: each doubling of n shrinks |residual| 12-20x",
           all(12 < q < 20 for q in ratios) and abs(residuals[0]) > 1e-12,
           ", ".join(f"{q:.1f}" for q in ratios))


# ----------------------------------------------------------- ours vs reference

def find_lca():
    if os.environ.get("LCA_BIN"):
        return os.environ["LCA_BIN"]
    bin_path = subprocess.run(["swift", "build", "--show-bin-path"], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout.strip()
    lca = os.path.join(bin_path, "lca")
    if not os.path.exists(lca):
        print("building lca: swift build --product lca")
        build = subprocess.run(["swift", "build", "--product", "lca"], cwd=REPO,
                               capture_output=True, text=True)
        if build.returncode != 0:
            raise RuntimeError("swift build --product lca failed:\n" + build.stdout[-3000:] + build.stderr[-3000:])
    return lca


def run(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def compare(label, ours, ref):
    print(f"\n{label}: {ref['examples']} examples, model {ref['model']}")
    ok = True
    failures = []
    if ours.get("examples") != ref["examples"]:
        failures.append(f"examples {ours.get('examples')} != {ref['examples']}")
    for key in ("loss_before", "loss_after"):
        rel = abs(ours[key] - ref[key]) / abs(ref[key])
        note_worst(rel, f"{label} {key}")
        print(f"  {key:<12} ours {ours[key]:.10f}  ref {ref[key]:.10f}  rel diff {rel:.2e}")
        if rel > LOSS_TOLERANCE:
            failures.append(f"{key} rel diff {rel:.2e} > {LOSS_TOLERANCE:g}")
    by_name = {t["name"]: t for t in ours["tensors"]}
    names_ours, names_ref = [t["name"] for t in ours["tensors"]], [t["name"] for t in ref["tensors"]]
    if sorted(names_ours) != sorted(names_ref):
        failures.append(f"tensor names differ: ours {names_ours}, ref {names_ref}")
    for key in ("lca", "first_order"):
        scale = max(abs(t[key]) for t in ref["tensors"])
        print(f"  {key}: tolerance {LCA_TOLERANCE:g} x max |ref| = {LCA_TOLERANCE * scale:.3e}")
        print(f"    {'tensor':<12} {'ours':>16} {'reference':>16} {'|diff|':>10} {'rel to max':>10}")
        for t in ref["tensors"]:
            mine = by_name.get(t["name"])
            if mine is None:
                continue
            if key == "lca" and "count" in mine:
                counts = [mine.get(k) for k in ("helped", "hurt", "zero")]
                if mine["count"] != t["count"] or (None not in counts and sum(counts) != t["count"]):
                    failures.append(f"{t['name']} count {mine['count']}, helped+hurt+zero "
                                    f"{counts}, expected {t['count']} parameters")
            diff = abs(mine[key] - t[key])
            note_worst(diff / scale, f"{label} {t['name']} {key}")
            print(f"    {t['name']:<12} {mine[key]:>16.9e} {t[key]:>16.9e} {diff:>10.3e} {diff / scale:>10.2e}")
            if diff > LCA_TOLERANCE * scale:
                failures.append(f"{t['name']} {key} diff {diff:.3e} > {LCA_TOLERANCE * scale:.3e}")
        total_key = "lca_total" if key == "lca" else "first_order_total"
        diff = abs(ours[total_key] - ref[total_key])
        print(f"    {'(total)':<12} {ours[total_key]:>16.9e} {ref[total_key]:>16.9e} "
              f"{diff:>10.3e} {diff / scale:>10.2e}")
        if diff > LCA_TOLERANCE * scale:
            failures.append(f"{total_key} diff {diff:.3e} > {LCA_TOLERANCE * scale:.3e}")
    print(f"  residual     ours {ours['residual']:.3e} (n = {ours['subintervals']})  "
          f"ref {ref['residual']:.3e} (n = {ref['subintervals']})")
    if ours.get("residual_above_threshold"):
        print("  note: lca attribute reports its residual above the threshold")
    if ours["subintervals"] != ref["subintervals"]:
        print(f"  note: sub-interval counts differ ({ours['subintervals']} vs {ref['subintervals']})")
    for f in failures:
        print(f"  mismatch: {f}")
    ok = not failures
    record(f"{label}: lca attribute matches the reference", ok,
           f"{len(failures)} mismatches" if failures else "")


def compare_with_cli(ref, tmp):
    lca = find_lca()
    print(f"lca: {lca}")
    rundir = os.path.join(tmp, "run")
    run([lca, "train", "--data", IMAGES, "--labels", LABELS, "--model", "784-32-10",
         "--iterations", "20", "--batch-size", "100", "--lr", "0.05", "--save-every", "10",
         "--seed", "3", "-o", rundir, "--quiet"])
    checkpoints = {i: os.path.join(rundir, f"checkpoint-{i:06d}.safetensors") for i in (0, 10, 20)}
    missing = [p for p in checkpoints.values() if not os.path.exists(p)]
    if missing:
        raise RuntimeError(f"lca train did not write {', '.join(missing)}; run folder holds "
                           f"{sorted(os.listdir(rundir)) if os.path.isdir(rundir) else 'nothing'}")
    for start, end, loss in ((0, 20, None), (10, 20, None), (0, 20, "mean_squared_error")):
        label = f"checkpoint {start} -> {end}" + (f" ({loss})" if loss else "")
        try:
            ours = json.loads(run([lca, "attribute", "--from", checkpoints[start], "--to", checkpoints[end],
                                   "--data", IMAGES, "--labels", LABELS, "--json"]
                                  + (["--loss", "mse"] if loss else [])))
            if loss:
                ref_out = ref.attribute(checkpoints[start], checkpoints[end], IMAGES, LABELS, loss=loss)
            elif start == 0:
                # once through the command line, to test the tool as people run it
                ref_out = json.loads(run([sys.executable, os.path.join(HERE, "lca_reference.py"),
                                          "--from", checkpoints[start], "--to", checkpoints[end],
                                          "--images", IMAGES, "--labels", LABELS]))
            else:
                ref_out = ref.attribute(checkpoints[start], checkpoints[end], IMAGES, LABELS)
            compare(label, ours, ref_out)
        except Exception:
            traceback.print_exc()
            record(f"{label}: lca attribute matches the reference", False, "error, see above")


def main():
    try:
        import jax  # noqa: F401
    except ImportError:
        print("\n".join([
            "WARNING: " + "=" * 68,
            "WARNING: JAX is not installed (pip install 'jax[cpu]==0.10.2').",
            "WARNING: the independent reference comparison was NOT run:",
            "WARNING: lca attribute has NOT been checked against a second autodiff library.",
            "WARNING: " + "=" * 68]))
        print("reference: 0 passed, 0 failed, 1 skipped")
        sys.exit(0)
    sys.path.insert(0, HERE)
    import lca_reference as ref

    from_idx = ref.load_data(IMAGES, LABELS)
    with tempfile.TemporaryDirectory(prefix="lca-reference-") as tmp:
        print("self-checks of the reference (float64, closed forms):")
        for check in (self_check_quadratic, self_check_cross_entropy, self_check_simpson_order):
            try:
                check(ref, tmp, *from_idx)
            except Exception:
                traceback.print_exc()
                record(f"{check.__name__}", False, "error, see above")
        print("\nlca attribute vs reference:")
        try:
            compare_with_cli(ref, tmp)
        except Exception:
            traceback.print_exc()
            record("lca train + attribute available", False, "error, see above")
    finish()


if __name__ == "__main__":
    main()
