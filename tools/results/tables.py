#!/usr/bin/env python3
"""The numbers of docs/results.md, from the run folders (numpy + scipy).

    python3 tools/results/tables.py share RUN...          # finding 1: share of parameters helping
    python3 tools/results/tables.py tensors RUN...        # finding 2: per-tensor totals
    python3 tools/results/tables.py layers RUN            # Σ LCA per layer (ResNet-20)
    python3 tools/results/tables.py unmoved RUN IMAGES    # fc1.weight never moving vs blank pixels
    python3 tools/results/tables.py paired DIR            # last layer frozen / slowed: DIR/fz-{base,freeze,slow}-SEED
    python3 tools/results/tables.py integrators [--first=N] RUN...   # first order vs Simpson vs adaptive Simpson
    python3 tools/results/tables.py groups RUN            # finding 7: per loss group (class), when and where it is learnt
    python3 tools/results/tables.py png64 IN.png OUT.png  # a figure reduced to 64 colours for docs/

Each prints a Markdown table (the rows of docs/results.md). RUN is a run folder of `lca train`
(its lca.log, and lca-total.safetensors for `unmoved`).
"""
import glob
import gzip
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import lca_log  # noqa: E402


def load(run):
    return lca_log.open_log(os.path.join(run, "lca.log"))


def counts(header):
    return np.array([t["count"] for t in header["tensors"]], dtype=np.float64)


def share(runs):
    print("| run | helped / all, mean over iterations (min–max) | iterations below 50% "
          "| helped / (helped + hurt) | zero (within the floor) | unmoved |")
    print("|---|---|---|---|---|---|")
    notes = []
    for run in runs:
        h, r = load(run)
        total = counts(h).sum()
        helped = r["helped"].sum(1).astype(np.float64)
        hurt = r["hurt"].sum(1).astype(np.float64)
        zero = r["zero"].sum(1).astype(np.float64)
        unmoved = r["unmoved"].sum(1).astype(np.float64)
        s = helped / total
        print(f"| {os.path.basename(run)} ({len(r)} it.) | {100 * s.mean():.1f}% ({100 * s.min():.1f}–{100 * s.max():.1f}%) "
              f"| {(s < 0.5).sum()} of {len(r)} | {100 * (helped / (helped + hurt)).mean():.1f}% "
              f"| {100 * (zero / total).mean():.1f}% | {100 * (unmoved / total).mean():.1f}% |")
        per = r["helped"] / counts(h)
        notes.append(f"{os.path.basename(run)}, per tensor, helped / all: " + ", ".join(
            f"{t['name']} {100 * per[:, i].mean():.1f}%" for i, t in enumerate(h["tensors"])))
    print("\n" + "\n".join(notes))


def tensors(runs):
    for run in runs:
        h, r = load(run)
        n = counts(h)
        print(f"\n{os.path.basename(run)}: L {r['loss_before'][0]:.4f} → {r['loss_after'][-1]:.4f}, "
              f"Σ LCA {r['lca_total'].sum():.5f}, {len(r)} iterations\n")
        print("| tensor | Σ LCA | helping part | hurting part | per parameter | iterations with LCA > 0 |")
        print("|---|---|---|---|---|---|")
        for i, t in enumerate(h["tensors"]):
            lca = r["lca"][:, i]
            print(f"| {t['name']} | {lca.sum():+.4f} | {r['lca_helping'][:, i].sum():.4f} "
                  f"| {r['lca_hurting'][:, i].sum():+.4f} | {lca.sum() / n[i]:+.1e} | {(lca > 0).sum()} of {len(r)} |")
        path = os.path.join(run, "lca-total.safetensors")
        if os.path.exists(path):
            totals = safetensors(path)
            helping = min(totals, key=lambda k: totals[k].min())
            hurting = max(totals, key=lambda k: totals[k].max())
            for name, pick, label in ((helping, np.argmin, "most helping"), (hurting, np.argmax, "most hurting")):
                index = np.unravel_index(pick(totals[name]), totals[name].shape)
                print(f"\n{label} parameter: {name}{list(map(int, index))} at {totals[name][index]:+.4g}", end="")
            print()


def layers(run):
    """Σ LCA per layer (the tensors sharing a name before the dot), in model order; the
    layers whose total is above zero (hurt overall) are listed after the table."""
    h, r = load(run)
    names, totals, hurts = [], {}, {}
    for i, t in enumerate(h["tensors"]):
        layer = t["name"].split(".")[0]
        if layer not in totals:
            names.append(layer)
            totals[layer], hurts[layer] = 0.0, np.zeros(len(r))
        totals[layer] += r["lca"][:, i].sum()
        hurts[layer] = hurts[layer] + r["lca"][:, i]
    total = r["loss_after"][-1] - r["loss_before"][0]
    print(f"{os.path.basename(run)}: L {r['loss_before'][0]:.4f} → {r['loss_after'][-1]:.4f} "
          f"(ΔL {total:+.4f}), Σ LCA {r['lca_total'].sum():+.4f}, {len(r)} iterations, "
          f"flagged {(r['flags'] & 1).sum()}, largest |residual| {np.abs(r['residual']).max():.3g}\n")
    print("| layer | Σ LCA | iterations with LCA > 0 |")
    print("|---|---|---|")
    for layer in names:
        print(f"| {layer} | {totals[layer]:+.4f} | {(hurts[layer] > 0).sum()} of {len(r)} |")
    print("\nhurting overall: " + (", ".join(f"{k} {totals[k]:+.4f}" for k in names if totals[k] > 0) or "none"))


def safetensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    head = json.loads(data[8:8 + n])
    kinds = {"F64": "<f8", "F32": "<f4", "U32": "<u4"}
    out = {}
    for name, v in head.items():
        if name == "__metadata__":
            continue
        s, e = v["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + s:8 + n + e], kinds[v["dtype"]]).reshape(v["shape"])
    return out


def unmoved(run, images):
    """fc1.weight entries whose total LCA is exactly 0 (never moved, since a weight that moves
    once has a nonzero LCA in that iteration almost surely), split into blank-pixel columns
    and dead-unit rows."""
    h, r = load(run)
    w = safetensors(os.path.join(run, "lca-total.safetensors"))["fc1.weight"]
    never = w == 0
    raw = gzip.open(images).read() if images.endswith(".gz") else open(images, "rb").read()
    img = np.frombuffer(raw[16:], np.uint8).reshape(-1, w.shape[1])
    cols = never.all(0)
    rows = never.all(1)
    per_it = r["unmoved"][:, 0] / w.size
    print(f"fc1.weight: {never.mean() * 100:.2f}% of {w.size} never move over {len(r)} iterations "
          f"({never.sum()} weights; {never.sum() / counts(h).sum() * 100:.2f}% of all parameters); "
          f"columns (pixels) never moving: {cols.sum()} of {w.shape[1]} ({cols.mean() * 100:.2f}%); "
          f"rows (units) never moving: {rows.sum()}; "
          f"pixels 0 in every image of the file: {(img.max(0) == 0).sum()}; "
          f"unmoved per iteration (fc1.weight): mean {per_it.mean() * 100:.2f}%, "
          f"min {per_it.min() * 100:.2f}%, max {per_it.max() * 100:.2f}%")


def sign_test(d):
    """Two-sided exact sign test on the nonzero differences."""
    from scipy.stats import binomtest
    d = d[d != 0]
    k = int((d > 0).sum())
    return k, len(d), binomtest(k, len(d), 0.5).pvalue


def paired(folder):
    from scipy.stats import ttest_rel
    arms = {}
    for arm in ("base", "freeze", "slow"):
        rows = []
        runs = [p for p in glob.glob(os.path.join(folder, f"fz-{arm}-*")) if os.path.isdir(p)]
        for run in sorted(runs, key=lambda p: int(p.rsplit("-", 1)[1])):
            if not os.path.exists(os.path.join(run, "summary.txt")):
                continue
            h, r = load(run)
            rows.append((int(run.rsplit("-", 1)[1]), r["loss_after"][-1], r["val_loss_after"][-1],
                         r["lca"][:, -2:].sum()))  # fc3.weight + fc3.bias
        arms[arm] = {seed: (train, val, last) for seed, train, val, last in rows}
    seeds = sorted(set(arms["base"]) & set(arms["freeze"]) & set(arms["slow"]))
    print("| seed | train loss: baseline | frozen | lr × 0.1 | validation loss: baseline | frozen | lr × 0.1 "
          "| Σ LCA of fc3 (baseline) |")
    print("|---|---|---|---|---|---|---|---|")
    for s in seeds:
        b, f, w = arms["base"][s], arms["freeze"][s], arms["slow"][s]
        print(f"| {s} | {b[0]:.4f} | {f[0]:.4f} | {w[0]:.4f} | {b[1]:.4f} | {f[1]:.4f} | {w[1]:.4f} | {b[2]:+.4f} |")
    print()
    print("| comparison | loss | mean difference (arm − baseline) | arm lower in | paired t-test p | sign test p |")
    print("|---|---|---|---|---|---|")
    for arm, label in (("freeze", "frozen fc3"), ("slow", "fc3 lr × 0.1")):
        for k, loss in ((0, "train"), (1, "validation")):
            a = np.array([arms[arm][s][k] for s in seeds])
            b = np.array([arms["base"][s][k] for s in seeds])
            d = a - b
            t = ttest_rel(a, b)
            up, n, p_sign = sign_test(d)
            print(f"| {label} | {loss} | {d.mean():+.4f} (sd {d.std(ddof=1):.4f}) | {n - up} of {len(seeds)} "
                  f"| {t.pvalue:.2g} | {p_sign:.2g} |")


def integrators(runs, first=None):
    """Share of the loss change left unexplained, per iteration and over the run, by
    first-order LCA (first_order_total) and by the run's Simpson LCA (lca_total); with
    first, over the first iterations only (to compare with a run stopped early)."""
    print("| run | integrator (settings) | whole run: (ΔL − Σ LCA) / ΔL | Σ \\|ΔL_t − LCA_t\\| / Σ \\|ΔL_t\\| "
          "| largest \\|ΔL_t − LCA_t\\| | iterations refined (> 2 sub-intervals) | sub-intervals max | flagged |")
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        h, r = load(run)
        r = r[:first]
        cfg = h["config"]
        dl = r["loss_after"] - r["loss_before"]
        total = r["loss_after"][-1] - r["loss_before"][0]
        name = os.path.basename(run)
        fo = dl - r["first_order_total"]
        if cfg["lca_max_subintervals"] == 32 and cfg["lca_threshold"] == 0.001:
            print(f"| {name} | first order (from the same log) | {fo.sum() / total * 100:.2f}% "
                  f"| {np.abs(fo).sum() / np.abs(dl).sum() * 100:.2f}% | {np.abs(fo).max():.2e} | | | |")
        res = r["residual"]
        label = f"Simpson, cap {cfg['lca_max_subintervals']}, threshold {cfg['lca_threshold']:g}"
        print(f"| {name} | {label} | {res.sum() / total * 100:.4f}% | {np.abs(res).sum() / np.abs(dl).sum() * 100:.4f}% "
              f"| {np.abs(res).max():.2e} | {(r['subintervals'] > 2).sum()} of {len(r)} | {r['subintervals'].max()} "
              f"| {(r['flags'] & 1).sum()} |")


FASHION_MNIST = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def halfway(cumulative):
    """The first iteration (1-based) at which a cumulative series reaches half
    its final value (the final value's sign decides the direction)."""
    final = cumulative[-1]
    reached = cumulative <= final / 2 if final < 0 else cumulative >= final / 2
    return int(np.argmax(reached)) + 1


def groups(run):
    """Per loss group: examples, Σ LCA, the iteration at which its cumulative LCA reaches half
    (and 90%) of its final, its loss first → last, and the share of its Σ LCA carried by each
    layer; rows in the order the groups are learnt (half-way iteration, then Σ LCA). The log is
    checked first with lca_log.check_groups (lca verify's group checks)."""
    h, r = load(run)
    check = lca_log.check_groups(h, r)
    names = lca_log.group_names(h)
    data = h.get("data") or {}
    if "fashion" in str(data.get("source", "")) and names == [str(k) for k in range(10)]:
        names = [f"{k} {FASHION_MNIST[k]}" for k in range(10)]
    ga = lca_log.group_lca(h, r)                                # (records, G, T)
    layers = []
    for i, t in enumerate(h["tensors"]):
        layer = t["name"].split(".")[0]
        if not layers or layers[-1][0] != layer:
            layers.append((layer, []))
        layers[-1][1].append(i)
    per_group = ga.sum(axis=2)                                  # (records, G)
    cumulative = np.cumsum(per_group, axis=0)
    total = cumulative[-1]
    n = h["groups"].get("examples") or [0] * len(names)
    before, after = r["group_loss_before"], r["group_loss_after"]
    print(f"{os.path.basename(run)}: {len(names)} groups ({h['groups'].get('source')}), {len(r)} iterations; "
          f"Σ_g group LCA = LCA within {check['max_sum_error']:.1e} of each tensor's scale (bound {lca_log.SUM_BOUND:.1e}), "
          f"largest |group residual| {check['max_abs_residual']:.2g}, {check['flagged']} flagged\n")
    order = sorted(range(len(names)), key=lambda g: (halfway(cumulative[:, g]), total[g]))
    print("| group | examples | Σ LCA | half-way iteration | 90% iteration | iterations hurt | L_g first → last | "
          + " | ".join(f"{layer} share" for layer, _ in layers) + " |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(layers))
    shares = {}
    for g in order:
        part = [ga[:, g, idx].sum() / total[g] for _, idx in layers]
        shares[g] = part
        final = cumulative[-1, g]
        ninety = int(np.argmax(cumulative[:, g] <= 0.9 * final if final < 0 else cumulative[:, g] >= 0.9 * final)) + 1
        print(f"| {names[g]} | {n[g]} | {total[g]:+.4f} | {halfway(cumulative[:, g])} | {ninety} | {(per_group[:, g] > 0).sum()} "
              f"| {before[0, g]:.3f} → {after[-1, g]:.3f} | " + " | ".join(f"{100 * x:.0f}%" for x in part) + " |")
    whole = [ga[:, :, idx].sum() / total.sum() for _, idx in layers]
    every = np.cumsum(per_group.sum(axis=1))
    late = int(np.argmax(every <= 0.9 * every[-1] if every[-1] < 0 else every >= 0.9 * every[-1])) + 1
    print(f"| all groups | {sum(n)} | {total.sum():+.4f} | {halfway(every)} | {late} | {(per_group.sum(axis=1) > 0).sum()} | "
          f"{r['loss_before'][0]:.3f} → {r['loss_after'][-1]:.3f} | " + " | ".join(f"{100 * x:.0f}%" for x in whole) + " |")
    first, last = order[0], order[-1]
    print(f"\nlearnt first: {names[first]} (half-way at iteration {halfway(cumulative[:, first])}); "
          f"last: {names[last]} (iteration {halfway(cumulative[:, last])})")
    for l, (layer, _) in enumerate(layers):
        top = max(range(len(names)), key=lambda g: shares[g][l])
        low = min(range(len(names)), key=lambda g: shares[g][l])
        print(f"{layer}: carries {100 * whole[l]:.0f}% overall, most of {names[top]} ({100 * shares[top][l]:.0f}%), "
              f"least of {names[low]} ({100 * shares[low][l]:.0f}%)")
    # after the run's 90% iteration: which groups' per-iteration LCA move against each other
    if len(r) - late >= 3 and len(names) >= 2:
        c = np.corrcoef(per_group[late:].T)
        pairs = sorted((c[a, b], a, b) for a in range(len(names)) for b in range(a + 1, len(names)))
        print(f"\nper-iteration group LCA after iteration {late} (the run's 90%), most negative correlations: "
              + "; ".join(f"{names[a]} / {names[b]} {x:+.2f}" for x, a, b in pairs[:3])
              + f"; most positive: {names[pairs[-1][1]]} / {names[pairs[-1][2]]} {pairs[-1][0]:+.2f}")


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    what, args = argv[1], argv[2:]
    if what == "share":
        share(args)
    elif what == "tensors":
        tensors(args)
    elif what == "layers":
        layers(args[0])
    elif what == "unmoved":
        unmoved(*args)
    elif what == "paired":
        paired(args[0])
    elif what == "integrators":
        first = None
        if args[0].startswith("--first="):
            first, args = int(args[0].split("=")[1]), args[1:]
        integrators(args, first)
    elif what == "groups":
        groups(args[0])
    elif what == "png64":
        from PIL import Image
        Image.open(args[0]).convert("RGB").quantize(64).save(args[1], optimize=True)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
