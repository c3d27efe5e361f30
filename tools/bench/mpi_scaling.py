#!/usr/bin/env python3
"""Data-parallel scaling of `lca train` over MPI ranks, and a cost model.

Measures, on this machine, `mpirun -np N lca train` for N = 1 … 4 ranks with
one thread each (oversubscribed when N exceeds the cores) for FC, LeNet and
ResNet-20 on small evaluation sets, from the rank line the command prints
under mpirun ("lca: N ranks: P evaluation passes, X s on the slowest rank of
each, Y s on rank 0") and its summary's wall time. Then a model of the cost
of one iteration on a real cluster (docs/performance.md, "Data-parallel
LCA over MPI"):

    T(R) = s + t_stop(R) + P · ( c · A · ⌈U / R⌉  +  t_comm(R) )

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
    t_comm  4 allreduces a pass (CCore/ranks.c: the 32-byte state, four
            int64 of MPI_MAX; the hi limbs; the lo limbs; the loss's 67
            digits): 4 · 2·log2(R) · α  +  2·(R − 1)/R · B / β, with
            B = 16·K + 568 bytes (8·K a limb, 536 of digits, 32 of state),
            a ring's bandwidth term and a tree's latency
    t_stop  the one-int MPI_MAX of the stop signal after every iteration
            (Sources/lca/Train.swift): 2·log2(R) · α
    α, β    10 Gb/s: α = 25 µs (TCP over Ethernet), β = 1.25 GB/s;
            100 Gb/s: α = 2 µs (RDMA), β = 12.5 GB/s

Scaling "stops" at the largest R ≤ U whose parallel efficiency
T(1) / (R · T(R)) is still at least 50 %, and for good at R = U (one unit
a rank: more ranks have nothing to do).

    tools/bench/mpi_scaling.py [--quick] [--rounds 2] [--json build/bench/mpi_scaling.json] [--docs PATH | --no-docs]
    tools/bench/mpi_scaling.py --model-only build/bench/mpi_scaling.json

Needs the MPI build (swift build -c release --traits MPI --build-path
.build-mpi) and mpirun; writes 1,000 CIFAR-10 records of seeded noise to
build/bench/cifar-noise for ResNet-20. Prints the Markdown block
and writes it between the markers mpi-scaling:begin and mpi-scaling:end of
docs/performance.md, keeping the rest of the page; the block says when and
how it was measured and how loaded the machine was (wall times on a shared
machine say little; the CPU columns are the work). Standard library only.
"""
import argparse
import datetime
import json
import math
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name, spec, data, parameters K, unit A, full evaluation set E (the paper's
# training splits: MNIST 55,000 after 5,000 validation; CIFAR-10 45,000)
NETS = [
    ("FC", "fc", "mnist5k", 89_610, 512, 55_000),
    ("LeNet", "lenet", "mnist5k", 808_970, 512, 55_000),
    ("ResNet-20", "resnet20", "cifar-noise", 273_066, 250, 45_000),
]
# measurement: evaluation subset, iterations, batch-norm group (units of
# the subset: at least 4, so that 4 ranks each have work)
MEASURE = {
    "FC": (2048, 20, None),
    "LeNet": (2048, 3, None),
    "ResNet-20": (128, 1, 32),
}
NETWORKS = [("10 Gb/s", 25e-6, 1.25e9), ("100 Gb/s", 2e-6, 12.5e9)]
# all-reduced a pass (CCore/ranks.c): two int64 limbs a parameter, the
# loss's 67 int64 digits, and the pass's state (four int64, MPI_MAX)
LIMB_BYTES, DIGIT_BYTES, STATE_BYTES = 16, 67 * 8, 4 * 8
ALLREDUCES_PER_PASS = 4
BEGIN, END = "<!-- mpi-scaling:begin -->", "<!-- mpi-scaling:end -->"


def pass_bytes(k):
    """Bytes a rank all-reduces in one evaluation pass of a K-parameter net."""
    return LIMB_BYTES * k + DIGIT_BYTES + STATE_BYTES


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(v) for v in f.read().split()[:3]]


def data_path(name):
    if name == "mnist5k":
        return os.path.join(ROOT, "Tests/data/mnist5k-images-idx3-ubyte.gz"), \
            os.path.join(ROOT, "Tests/data/mnist5k-labels-idx1-ubyte.gz")
    folder = os.path.join(ROOT, "build/bench/cifar-noise")
    batch = os.path.join(folder, "data_batch_1.bin")
    if not os.path.exists(batch):
        # 1,000 CIFAR-10 records of seeded noise: the time of a pass does not
        # depend on what the pixels show, and this needs no numpy
        os.makedirs(folder, exist_ok=True)
        r = random.Random(1)
        with open(batch + ".tmp", "wb") as f:
            for i in range(1000):
                f.write(bytes([i % 10]) + r.randbytes(3072))
        os.replace(batch + ".tmp", batch)
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
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True)
        job_wall = time.monotonic() - started
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
            "own": float(line.group(4)), "cpu": float(line.group(5)), "cpu_all": cpu_all, "wall": float(wall.group(1)), "job_wall": job_wall,
            "iterations": iterations, "examples": subset}


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
        b = pass_bytes(k)
        for network, alpha, beta in NETWORKS:
            def comm(r):
                if r == 1:
                    return 0.0
                return ALLREDUCES_PER_PASS * 2 * math.log2(r) * alpha + 2 * (r - 1) / r * b / beta

            def t(r):
                stop = 0.0 if r == 1 else 2 * math.log2(r) * alpha
                return s + stop + 2 * (c * a * math.ceil(units / r) + comm(r))
            t1 = t(1)
            # ranks past U have no unit: only R ≤ U count
            stop = max(r for r in range(1, units + 1) if t1 / (r * t(r)) >= 0.5)
            rows.append({"net": name, "network": network, "K": k, "bytes": b, "units": units,
                         "c_us": c * 1e6, "s": s, "t1": t1,
                         "t": {r: t(r) for r in (16, 64, 256)}, "stop": stop,
                         "compute_256": 2 * c * a * math.ceil(units / 256),
                         "comm_256": 2 * comm(256) + 2 * math.log2(256) * alpha})
    return rows


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def block(run, measured, rows):
    """The Markdown block written between the markers: the run, the measured
    table, the model's table and its predictions."""
    out = [f"Generated by `{run['command']}` on {run['started']} – {run['finished']} UTC; rerun it to "
           "refresh this block (the text outside it is written by hand).", ""]
    out.append(f"- Machine: {run['cpu']}, {run['cpus']} CPUs; release MPI build (`swift build -c release "
               "--traits MPI --build-path .build-mpi`), `--threads 1` a rank, `mpirun --oversubscribe --bind-to none`.")
    if run.get("rounds", 1) > 1:
        out.append(f"- {run['rounds']} rounds of 1, 2, 3 and 4 ranks in turn; each row is the round whose busiest "
                   "rank used the least evaluation CPU (the one least disturbed by other jobs).")
    before, after = run["load_before"], run["load_after"]
    shared = max(before[0], after[0], max(m.get("load", 0.0) for m in measured)) >= 0.5
    out.append(f"- Load average (1, 5, 15 min) before: {' '.join(f'{v:.2f}' for v in before)}; after: "
               f"{' '.join(f'{v:.2f}' for v in after)}. " + (
                   f"**The machine was shared** (other jobs on its {run['cpus']} cores: the load column gives "
                   "the 1-minute load just before each run), so the wall-clock columns say little; the CPU "
                   "columns are the work, whatever else ran." if shared else
                   "The machine was quiet."))
    out.append("")
    out.append("Measured on this machine (ranks × 1 thread, oversubscribed past the cores; time per iteration; "
               "speed-ups against 1 rank):")
    out.append("")
    out.append("| net | examples | ranks | load | job wall s/it | evaluation wall s/it, slowest rank | its speed-up | "
               "evaluation CPU s/it, busiest rank | its speed-up | CPU s/it, all ranks |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in measured:
        base = next(x for x in measured if x["net"] == m["net"] and x["ranks"] == 1)
        it = m["iterations"]
        job_wall = m.get("job_wall", m["wall"])
        out.append(f"| {m['net']} | {m['examples']} | {m['ranks']} | {m.get('load', float('nan')):.2f} | "
                   f"{job_wall / it:.3f} | {m['slowest'] / it:.3f} | {base['slowest'] / m['slowest']:.2f}× | "
                   f"{m['cpu'] / it:.3f} | {base['cpu'] / m['cpu']:.2f}× | {m.get('cpu_all', float('nan')) / it:.3f} |")
    out.append("")
    out.append("Model for the full evaluation set (one core a rank, P = 2 passes an iteration; seconds per "
               "iteration; `bytes a pass` = 16·K + 568):")
    out.append("")
    out.append("| net | network | K | bytes a pass | units | c µs/example·pass | step s | 1 rank | 16 | 64 | 256 | "
               "at 256: compute / comm a it | efficiency ≥ 50 % up to (of U useful) |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        out.append(f"| {r['net']} | {r['network']} | {r['K']:,} | {r['bytes']:,} | {r['units']} | {r['c_us']:.1f} | "
                   f"{r['s']:.3f} | {r['t1']:.2f} | {r['t'][16]:.3f} | {r['t'][64]:.3f} | {r['t'][256]:.3f} | "
                   f"{r['compute_256'] * 1e3:.1f} ms / {r['comm_256'] * 1e3:.2f} ms | {r['stop']} ranks (of {r['units']}) |")
    out.append("")
    for network, _, _ in NETWORKS:
        parts = [f"{r['net']} " + " / ".join(f"{r['t'][n]:.3g}" for n in (16, 64, 256))
                 for r in rows if r["network"] == network]
        out.append(f"Predicted seconds per iteration at 16 / 64 / 256 ranks, {network}: " + "; ".join(parts) + ".")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def splice(page, text):
    """page with the text between its one pair of markers replaced; a page
    without exactly one pair is refused (ValueError), never overwritten."""
    if page.count(BEGIN) != 1 or page.count(END) != 1 or page.index(BEGIN) > page.index(END):
        raise ValueError(f"expected one '{BEGIN}' … '{END}' pair")
    head, rest = page.split(BEGIN, 1)
    return head + BEGIN + "\n" + text + END + rest.split(END, 1)[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default=os.path.join(ROOT, "build/bench/mpi_scaling.json"))
    parser.add_argument("--model-only", metavar="JSON", help="model from saved measurements")
    parser.add_argument("--quick", action="store_true", help="FC only")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each rank count; the least disturbed is kept (2)")
    parser.add_argument("--lca", default=os.path.join(ROOT, ".build-mpi/release/lca"))
    parser.add_argument("--docs", default=os.path.join(ROOT, "docs/performance.md"),
                        help="the page whose mpi-scaling block is replaced (docs/performance.md)")
    parser.add_argument("--no-docs", action="store_true", help="print the block only")
    args = parser.parse_args()
    if args.model_only:
        with open(args.model_only) as f:
            saved = json.load(f)
        # the first version saved the measurements alone
        run, measured = (saved["run"], saved["measured"]) if isinstance(saved, dict) else (None, saved)
        if run is None:
            run = {"command": "tools/bench/mpi_scaling.py", "started": "?", "finished": "?", "cpu": cpu_model(),
                   "cpus": os.cpu_count(), "load_before": [0.0] * 3, "load_after": [0.0] * 3}
    else:
        utc = datetime.timezone.utc
        run = {"command": " ".join(["tools/bench/mpi_scaling.py"] + sys.argv[1:]),
               "started": datetime.datetime.now(utc).strftime("%Y-%m-%d %H:%M"), "cpu": cpu_model(),
               "cpus": os.cpu_count(), "load_before": loadavg(), "rounds": args.rounds}
        measured = []
        for name, spec, data, _, _, _ in NETS:
            if args.quick and name != "FC":
                continue
            subset, iterations, bn_group = MEASURE[name]
            best = {}
            # rounds of 1, 2, 3, 4 ranks in turn; each row the round whose
            # busiest rank used the least CPU (the least disturbed by others)
            for round_ in range(args.rounds):
                for ranks in (1, 2, 3, 4):
                    load = loadavg()[0]
                    m = measure(args.lca, ranks, name, spec, data, subset, iterations, bn_group)
                    m["load"] = load
                    print(f"{name} at {ranks} ranks, round {round_ + 1}: {m}", file=sys.stderr)
                    if ranks not in best or m["cpu"] < best[ranks]["cpu"]:
                        best[ranks] = m
            measured += [best[ranks] for ranks in (1, 2, 3, 4)]
        run["finished"] = datetime.datetime.now(utc).strftime("%H:%M")
        run["load_after"] = loadavg()
        os.makedirs(os.path.dirname(args.json), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"run": run, "measured": measured}, f, indent=1)
    text = block(run, measured, model_rows(measured))
    print(text)
    if not args.no_docs:
        with open(args.docs) as f:
            page = f.read()
        try:
            page = splice(page, text)
        except ValueError as e:
            raise SystemExit(f"mpi_scaling: {args.docs}: {e}; not written (add the markers)") from None
        with open(args.docs, "w") as f:
            f.write(page)
        print(f"wrote the block into {args.docs}", file=sys.stderr)


if __name__ == "__main__":
    main()
