#!/usr/bin/env python3
"""The cost of loss groups (issue 15): `lca train` with and without
`--groups class` (10 classes), time and memory, best of N alternating runs.

    nice python3 tools/bench/groups_overhead.py --lca .build/release/lca --cifar build/cifar-like [--runs 3] [--only FC]

Each configuration runs N times without and N times with --groups, in
alternation (so that a busy period of a shared machine hits both), each into
a fresh run folder; per run it reads the summary (`--json`): the training
loop's wall time and the process's peak resident memory, and the core's own
allocation. Prints a Markdown table of the best (smallest) of each.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile


def configurations(cifar):
    return [
        ("FC 784-100-50-10, Fashion-MNIST, LCA on all 55,000, 10 iterations",
         ["--data", "fashion-mnist", "--model", "fc", "--iterations", "10"]),
        ("LeNet, Fashion-MNIST, --lca-subset 5000, 4 iterations",
         ["--data", "fashion-mnist", "--model", "lenet", "--iterations", "4", "--lca-subset", "5000"]),
        ("ResNet-20, CIFAR-like (tools/make_cifar_like.py), --lca-subset 500, 2 iterations",
         ["--data", cifar, "--model", "resnet20", "--iterations", "2", "--lca-subset", "500"]),
    ]


def run_once(lca, arguments, folder):
    if os.path.exists(folder):
        shutil.rmtree(folder)
    done = subprocess.run([lca, "train"] + arguments + ["-o", folder, "--quiet", "--json"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"lca train {' '.join(arguments)} exited {done.returncode}: {done.stderr[-2000:]}")
    summary = json.loads(done.stdout)

    def key(*names):
        for name in names:
            if name in summary:
                return summary[name]
        raise KeyError(names)
    seconds = key("wall_seconds", "wallSeconds")
    peak = key("peak_memory_bytes", "peakMemoryBytes")
    core = key("core_memory_bytes", "coreMemoryBytes")
    return seconds, peak, core


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lca", required=True)
    parser.add_argument("--cifar", required=True, help="a folder of CIFAR-10 binary batches")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", help="run only the configurations whose label starts with this (FC, LeNet, ResNet-20)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lca-groups-bench-") as tmp:
        for label, arguments in configurations(args.cifar):
            if args.only and not label.startswith(args.only):
                continue
            results = {False: [], True: []}
            for r in range(args.runs):
                for grouped in (False, True):
                    extra = ["--groups", "class"] if grouped else []
                    results[grouped].append(run_once(args.lca, arguments + extra, os.path.join(tmp, "run")))
                    s, p, c = results[grouped][-1]
                    print(f"{label} {'with' if grouped else 'without'} groups, run {r + 1}: "
                          f"{s:.3f} s, peak {p / 2**20:.1f} MiB, core {c / 2**20:.1f} MiB", file=sys.stderr)
            best = {g: (min(x[0] for x in results[g]), min(x[1] for x in results[g]), min(x[2] for x in results[g]))
                    for g in results}
            rows.append((label, " ".join(arguments), best[False], best[True]))
    print("| configuration | without groups | with `--groups class` (10) | time × | core memory + |")
    print("|---|---|---|---|---|")
    for label, arguments, a, b in rows:
        print(f"| {label} | {a[0]:.2f} s, peak {a[1] / 2**20:.0f} MiB (core {a[2] / 2**20:.1f} MiB) "
              f"| {b[0]:.2f} s, peak {b[1] / 2**20:.0f} MiB (core {b[2] / 2**20:.1f} MiB) "
              f"| {b[0] / a[0]:.2f} | {(b[2] - a[2]) / 2**20:.1f} MiB |")
    print()
    for label, arguments, _, _ in rows:
        print(f"- {label}: `lca train {arguments} [--groups class]`")


if __name__ == "__main__":
    main()
