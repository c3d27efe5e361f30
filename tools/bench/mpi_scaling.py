#!/usr/bin/env python3
"""Data-parallel scaling of `lca train` over MPI ranks, and a cost model.

Measures, on this machine, `mpirun -np N lca train` for N = 1 … 4 ranks with
one thread each (oversubscribed when N exceeds the cores) for FC, LeNet and
ResNet-20 on small evaluation sets, from the rank line the command prints
under mpirun ("lca: N ranks: P evaluation passes, X s on the slowest rank of
each, Y s on rank 0") and its summary's wall time. Then a model of the cost
of one iteration on a real cluster (docs/performance.md, "Data-parallel
LCA over MPI"):

    T(R) = s + P · ( c · A · ⌈U / R⌉  +  t_comm(R) )

    s       the replicated training step and the rest of the iteration
            (measured at one rank: the CPU time of the whole command minus
            the evaluation's, per iteration; an upper bound, since start-up,
            data loading and saves are in it)
    P       evaluation passes per iteration (2 without refinement)
    c       seconds per example per pass on one core (measured at one rank,
            as CPU time: the work, not what a loaded machine gave it)
    A, U    examples per accumulation unit (512 for an MLP, the batch-norm
            group, 250, for a net with batch norm; LeNet: 512) and units in
            the evaluation set: U = ⌈E / A⌉; a rank evaluates ⌈U / R⌉ units
    t_comm  4 allreduces a pass (the 24-byte state, hi, lo, the loss's
            digits): 4 · 2·log2(R) · α  +  2·(R − 1)/R · B / β, with
            B = 16·K + 536 bytes (the two int64 limbs of K parameters and
            67 int64 digits), a ring's bandwidth term and a tree's latency
    α, β    10 Gb/s: α = 25 µs (TCP over Ethernet), β = 1.25 GB/s;
            100 Gb/s: α = 2 µs (RDMA), β = 12.5 GB/s

Scaling "stops" at the largest R ≤ U whose parallel efficiency
T(1) / (R · T(R)) is still at least 50 %, and for good at R = U (one unit
a rank: more ranks have nothing to do).

    tools/bench/mpi_scaling.py [--quick] [--json build/bench/mpi_scaling.json]
    tools/bench/mpi_scaling.py --model-only build/bench/mpi_scaling.json

Needs the MPI build (swift build -c release --traits MPI --build-path
.build-mpi) and mpirun; makes build/bench/cifar-like with
tools/make_cifar_like.py for ResNet-20. Prints Markdown tables.
"""
import argparse
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name, spec, data, parameters K, unit A, full evaluation set E (the paper's
# training splits: MNIST 55,000 after 5,000 validation; CIFAR-10 45,000)
NETS = [
    ("FC", "fc", "mnist5k", 89_610, 512, 55_000),
    ("LeNet", "lenet", "mnist5k", 808_970, 512, 55_000),
    ("ResNet-20", "resnet20", "cifar-like", 273_066, 250, 45_000),
]
# measurement: evaluation subset, iterations, batch-norm group (units of
# the subset: at least 4, so that 4 ranks each have work)
MEASURE = {
    "FC": (2048, 20, None),
    "LeNet": (2048, 3, None),
    "ResNet-20": (128, 1, 32),
}
NETWORKS = [("10 Gb/s", 25e-6, 1.25e9), ("100 Gb/s", 2e-6, 12.5e9)]


def data_path(name):
    if name == "mnist5k":
        return os.path.join(ROOT, "Tests/data/mnist5k-images-idx3-ubyte.gz"), \
            os.path.join(ROOT, "Tests/data/mnist5k-labels-idx1-ubyte.gz")
    folder = os.path.join(ROOT, "build/bench/cifar-like")
    if not os.path.exists(os.path.join(folder, "data_batch_1.bin")):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools/make_cifar_like.py"), folder,
                        "--batches", "1", "--per-batch", "1000", "--test-records", "0", "--seed", "1"],
                       check=True)
    return folder, None


def measure(lca, ranks, name, spec, data, subset, iterations, bn_group):
    images, labels = data_path(data)
    with tempfile.TemporaryDirectory() as work:
        command = ["mpirun", "--oversubscribe", "--allow-run-as-root", "--bind-to", "none", "-np", str(ranks),
                   lca, "train", "--model", spec, "--data", images, "--iterations", str(iterations),
                   "--lca-subset", str(subset), "--threads", "1", "-o", os.path.join(work, "run")]
        if labels:
            command += ["--labels", labels]
        if bn_group:
            command += ["--bn-group", str(bn_group)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(command, capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # CPU of mpirun and every rank (start-up, data, saves included)
        cpu_all = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    line = re.search(r"(\d+) ranks: (\d+) evaluation passes, ([\d.]+) s on the slowest rank of each, ([\d.]+) s on rank 0, "
                     r"([\d.]+) s of CPU on the busiest", done.stderr)
    wall = re.search(r"wall time\s+([\d.]+) s", done.stdout)
    if not line or not wall:
        raise SystemExit(f"no rank line or wall time in the output of {' '.join(command)}:\n{done.stderr}\n{done.stdout}")
    return {"net": name, "ranks": ranks, "passes": int(line.group(2)), "slowest": float(line.group(3)),
            "own": float(line.group(4)), "cpu": float(line.group(5)), "cpu_all": cpu_all, "wall": float(wall.group(1)), "iterations": iterations,
            "examples": subset}


def model_rows(measured):
    rows = []
    for name, _, _, k, a, e in NETS:
        one = next((m for m in measured if m["net"] == name and m["ranks"] == 1), None)
        if not one:
            continue
        # CPU time: the work, whatever else shares this machine's cores
        c = one.get("cpu", one["slowest"]) / (one["passes"] * one["examples"])
        # the rest of an iteration, from CPU time too (an upper bound: the
        # process's start-up, data loading and saves are in it)
        if "cpu_all" in one:
            s = max(one["cpu_all"] - one["cpu"], 0.0) / one["iterations"]
        else:
            s = max(one["wall"] - one["slowest"], 0.0) / one["iterations"]
        units = math.ceil(e / a)
        b = 16 * k + 536
        for network, alpha, beta in NETWORKS:
            def t(r):
                comm = 0.0 if r == 1 else 4 * 2 * math.log2(r) * alpha + 2 * (r - 1) / r * b / beta
                return s + 2 * (c * a * math.ceil(units / r) + comm)
            t1 = t(1)
            # ranks past U have no unit: only R ≤ U count
            stop = max(r for r in range(1, units + 1) if t1 / (r * t(r)) >= 0.5)
            rows.append({"net": name, "network": network, "K": k, "bytes": b, "units": units,
                         "c_us": c * 1e6, "s": s, "t1": t1,
                         "t": {r: t(r) for r in (16, 64, 256)}, "stop": stop,
                         "compute_256": 2 * c * a * math.ceil(units / 256),
                         "comm_256": 2 * (4 * 2 * math.log2(256) * alpha + 2 * 255 / 256 * b / beta)})
    return rows


def print_tables(measured, rows):
    print("Measured on this machine (ranks × 1 thread, oversubscribed past the cores; time per iteration):\n")
    print("| net | examples | ranks | wall s/it | evaluation s/it, slowest rank | its speed-up | "
          "evaluation CPU s/it, busiest rank | its speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for m in measured:
        base = next(x for x in measured if x["net"] == m["net"] and x["ranks"] == 1)
        print(f"| {m['net']} | {m['examples']} | {m['ranks']} | {m['wall'] / m['iterations']:.3f} | "
              f"{m['slowest'] / m['iterations']:.3f} | {base['slowest'] / m['slowest']:.2f}× | "
              f"{m['cpu'] / m['iterations']:.3f} | {base['cpu'] / m['cpu']:.2f}× |")
    print("\nModel for the full evaluation set (one core a rank, P = 2 passes an iteration; seconds per iteration):\n")
    print("| net | network | K | bytes a pass | units | c µs/example·pass | step s | 1 rank | 16 | 64 | 256 | "
          "at 256: compute / comm a it | efficiency ≥ 50 % up to (of U useful) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        print(f"| {r['net']} | {r['network']} | {r['K']:,} | {r['bytes']:,} | {r['units']} | {r['c_us']:.1f} | "
              f"{r['s']:.3f} | {r['t1']:.2f} | {r['t'][16]:.3f} | {r['t'][64]:.3f} | {r['t'][256]:.3f} | "
              f"{r['compute_256'] * 1e3:.1f} ms / {r['comm_256'] * 1e3:.2f} ms | {r['stop']} ranks (of {r['units']}) |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default=os.path.join(ROOT, "build/bench/mpi_scaling.json"))
    parser.add_argument("--model-only", metavar="JSON", help="model from saved measurements")
    parser.add_argument("--quick", action="store_true", help="FC only")
    parser.add_argument("--lca", default=os.path.join(ROOT, ".build-mpi/release/lca"))
    args = parser.parse_args()
    if args.model_only:
        with open(args.model_only) as f:
            measured = json.load(f)
    else:
        measured = []
        for name, spec, data, _, _, _ in NETS:
            if args.quick and name != "FC":
                continue
            subset, iterations, bn_group = MEASURE[name]
            for ranks in (1, 2, 3, 4):
                m = measure(args.lca, ranks, name, spec, data, subset, iterations, bn_group)
                print(f"{name} at {ranks} ranks: {m}", file=sys.stderr)
                measured.append(m)
        os.makedirs(os.path.dirname(args.json), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(measured, f, indent=1)
    print_tables(measured, model_rows(measured))


if __name__ == "__main__":
    main()
