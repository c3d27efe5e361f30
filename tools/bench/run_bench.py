#!/usr/bin/env python3
"""The benchmark of issue 13: `lca` against PyTorch at its best, on FC, LeNet
and ResNet-20, both x86 kernel families in one run.

    build/venv/bin/python tools/bench/run_bench.py           # the full run, writes docs/performance.md
    build/venv/bin/python tools/bench/run_bench.py --quick   # a short smoke run (writes nothing unless -o)

(tools/python-venv makes build/venv; the script runs the PyTorch peers with
build/venv/bin/python when it exists, else with the interpreter running it.)

What it measures, at each thread count (default 2, the issue's):
  1. The evaluation-set gradient pass (what LCA repeats 2-32 times per
     iteration) of FC on the 55,000-example Fashion-MNIST training split,
     LeNet on 5,000 of its examples and ResNet-20 (batch-norm groups of 250)
     on 1,000 CIFAR-format images from tools/make_cifar_like.py:
       - lca: tools/bench/eval_pass_bench (the integrator's lca_evaluator),
         once with the default kernel and once with LCA_KERNEL=avx2; the
         kernel that ran is read back, and a request without effect is
         reported as "not yet forced", never as the kernel asked for;
       - PyTorch at its best: tools/bench/torch_lca.py --sweep-chunks, the
         same pass at every chunk (250 … 11,000 and the whole set, where
         memory allows) × memory format (contiguous, channels_last), the
         fastest configuration is the peer (the sweep table is shown);
       - the products alone in a library: oneDNN through torch on the same
         convolution/dense shapes (torch_conv_shapes.py), OpenBLAS SGEMM on
         FC's GEMMs (numpy_sgemm.py);
       - the FMA ceiling (fma_peak.c, AVX2 and AVX-512);
     all in GFLOP/s of needed arithmetic (tools/bench/flops.py).
  2. FC end to end: time per LCA iteration of `lca train` (both kernels)
     against torch_lca.py at the chunk its sweep found fastest.
  3. ResNet-20 with LCA on 1,000 images: peak resident memory of `lca train`
     at the default memory budget and at --memory-budget 64M (and whether the
     two logs' records are the same bytes) against torch_lca.py at its
     fastest configuration.
  4. The targets of issue 13 with verdicts, never lowered; perf's top
     symbols of the ResNet-20 pass.
Pass measurements go in rounds (--rounds); each figure is the best run of all
rounds (the least disturbed on a shared machine), the end-to-end FC runs are
interleaved and their medians reported. Other processes' load is recorded
beside every measurement, and the time spent per stage.

Duration: the defaults are chosen for a full run of about 12-16 minutes on
a quiet 2-core machine (an estimate from the per-stage times of --quick runs
and the pass times in docs/kernels.md and issue 13), plus a release build if
.build has none: 2 rounds, 5 runs per lca pass, 2 timed passes per PyTorch
configuration after a warm-up, the second round re-measuring only PyTorch's
configurations within 2x of its fastest so far (--resweep-within; 0 = all)
and the product peers in their faster memory format, 3 rounds per layer in
the product peers, 3 interleaved end-to-end FC runs. Most of it is PyTorch's
LeNet and ResNet-20 sweeps. The log and the report give the time spent per
stage; a loaded machine takes longer, and the script waits up to
--wait-idle seconds for quiet before each measurement. --rounds 3
--sweep-repeats 3 --resweep-within 0 --fc-repeats 5 gives steadier figures
in about twice the time.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BENCH = os.path.join(ROOT, "tools", "bench")
BUILD = os.path.join(ROOT, "build", "bench")
LCA = os.path.join(ROOT, ".build", "release", "lca")
LCA_RUN = LCA  # the copy that is measured (set by build)

sys.path.insert(0, BENCH)
import flops  # noqa: E402  (tools/bench/flops.py: the needed FLOP per example)

# the Python of the peers: the project's venv (tools/python-venv) when present
VENV_PYTHON = os.path.join(ROOT, "build", "venv", "bin", "python")
PYTHON = VENV_PYTHON if os.path.exists(VENV_PYTHON) else sys.executable


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(command, env=None, cwd=ROOT, check=True):
    result = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"command failed ({result.returncode}): {shlex.join(command)}\n"
                           f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_times():
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal
    return (total - idle) / hz, total / hz


def busy_cores(seconds=1.0):
    """Cores kept busy by everything on the machine during a short window."""
    b0, t0 = cpu_times()
    time.sleep(seconds)
    b1, t1 = cpu_times()
    return (b1 - b0) / (t1 - t0) * os.cpu_count() if t1 > t0 else 0.0


WAIT_IDLE = {"seconds": 60.0, "max_busy": 0.3}


# where the run's time goes: seconds inside the measured programs per stage,
# and seconds spent waiting for a quiet machine (reported, and what the
# duration of a full run on a quiet machine is estimated from)
SPENT = {"stage": "other", "measuring": {}, "waiting": 0.0}


def stage(name):
    SPENT["stage"] = name


def wait_for_quiet():
    """Before a measurement: wait (up to WAIT_IDLE seconds) until other processes
    keep fewer than max_busy cores busy, so that fewer runs are disturbed.
    Returns the busy cores seen last."""
    started = time.monotonic()
    deadline = started + WAIT_IDLE["seconds"]
    while True:
        busy = busy_cores(1.0)
        if busy <= WAIT_IDLE["max_busy"] or time.monotonic() >= deadline:
            SPENT["waiting"] += time.monotonic() - started
            return busy


# ------------------------------------------------------------------ build

def build(args):
    if not args.no_build:
        for attempt in range(1, args.build_attempts + 1):
            log(f"swift build -c release (attempt {attempt})")
            result = run(["swift", "build", "-c", "release"], check=False)
            if result.returncode == 0:
                break
            if attempt == args.build_attempts:
                raise RuntimeError("swift build -c release failed:\n" + result.stdout[-3000:] +
                                   result.stderr[-3000:])
            log("build failed (the tree may be mid-edit); retrying in 120 s")
            time.sleep(120)
    if not os.path.exists(LCA):
        raise RuntimeError(f"{LCA} missing: run swift build -c release")
    os.makedirs(BUILD, exist_ok=True)
    # measure a private copy: another engineer's rebuild must not swap the binary mid-benchmark
    global LCA_RUN
    shutil.copy2(LCA, os.path.join(BUILD, "lca"))
    LCA_RUN = os.path.join(BUILD, "lca")
    for attempt in range(1, args.build_attempts + 1):
        result = run(["make", "BUILD=build/bench", "build/bench/liblca.a"], check=False)
        if result.returncode == 0:
            break
        if attempt == args.build_attempts:
            raise RuntimeError("make build/bench/liblca.a failed:\n" + result.stderr[-3000:])
        log("make failed; retrying in 120 s")
        time.sleep(120)
    cc = shutil.which("clang") or shutil.which("cc")
    # what the Makefile links (libomp when it found OpenMP, docs/threads.md)
    omp_libs = run(["make", "-s", "BUILD=build/bench", "ldlibs"]).stdout.split()
    run([cc, "-std=c11", "-O2", "-Wall", "-Wextra", "-ICCore/include", "-ICCore", "-c",
         "tools/bench/eval_pass_bench.c", "-o", f"{BUILD}/eval_pass_bench.o"])
    run([cc, f"{BUILD}/eval_pass_bench.o", f"{BUILD}/liblca.a", "-lz", "-lm", *omp_libs,
         "-o", f"{BUILD}/eval_pass_bench"])
    run([cc, "-std=c11", "-O2", "-Wall", "-pthread", "tools/bench/fma_peak.c", "-o",
         f"{BUILD}/fma_peak"])


# ------------------------------------------------------------- measuring

def time_v(command, env=None):
    """Run under /usr/bin/time -v: (stdout, peak RSS in bytes, elapsed seconds,
    cores used by OTHER processes on average during the run)."""
    b0, _ = cpu_times()
    result = run(["/usr/bin/time", "-v", *command], env=env)
    b1, _ = cpu_times()
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    elapsed = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", result.stderr)
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", result.stderr).group(1))
    system = float(re.search(r"System time \(seconds\): ([\d.]+)", result.stderr).group(1))
    seconds = 0.0
    for part in elapsed.group(1).split(":"):
        seconds = seconds * 60 + float(part)
    others = max(0.0, (b1 - b0) - user - system) / seconds if seconds > 0 else 0.0
    SPENT["measuring"][SPENT["stage"]] = SPENT["measuring"].get(SPENT["stage"], 0.0) + seconds
    return result.stdout, int(rss.group(1)) * 1024, seconds, others


def read_lca_log(path):
    """(header, records as dicts with subintervals and residual, raw bytes,
    header end) of an lca log, through the project's numpy reader
    (tools/python/lca_log.py, which follows the log format's versions)."""
    sys.path.insert(0, os.path.join(ROOT, "tools", "python"))
    import lca_log  # noqa: E402  (numpy: imported only where a log is read)
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "rb") as f:
        header, start = lca_log.read_header(f, path)
    _, array = lca_log.open_log(path)
    names = array.dtype.names or ()

    def column(word):  # "subintervals" / "residual", or a later version's train_… name
        name = word if word in names else next((n for n in names if n.endswith(word)), None)
        return [0] * len(array) if name is None else [x.item() for x in array[name]]

    records = [{"subintervals": int(n), "residual": float(r)}
               for n, r in zip(column("subintervals"), column("residual"))]
    return header, records, raw, start


KERNELS = [("default", None), ("avx2", "avx2")]  # (label, LCA_KERNEL value)
KEEP_ALL_BUDGET = 1 << 30  # ResNet-20 keeps every activation at it (689M suffices, docs/memory.md)


def pass_variants(model):
    """The lca passes measured per model: (label, LCA_KERNEL value, memory
    budget or None for lca's default). ResNet-20 recomputes its blocks at
    the default budget (512M) and keeps every activation at 1G, lca's
    fastest configuration: both are measured, with both kernels."""
    out = [(label, kernel, None) for label, kernel in KERNELS]
    if model == "resnet20":
        out += [(f"kept, {label}", kernel, KEEP_ALL_BUDGET) for label, kernel in KERNELS]
    return out


def kernel_env(value):
    env = dict(os.environ)
    env.pop("LCA_KERNEL", None)
    if value:
        env["LCA_KERNEL"] = value
    return env


def forced(label, requested, ran):
    """How a kernel request turned out: 'default' rows are whatever the CPU
    picks; a forced row either ran the kernel asked for or says it was not
    forced (the core ignored LCA_KERNEL), never passing one off as the other."""
    if requested is None:
        return "default"
    return "forced" if ran.startswith(requested) else f"not yet forced (asked {requested}, ran {ran})"


def run_lca_train(args, model, iterations, workdir, tag, kernel=None, extra=()):
    """One `lca train` run under /usr/bin/time -v: the JSON summary, the
    kernel its summary names, peak RSS, the log's bytes."""
    out = os.path.join(workdir, f"lca-{model}-{tag}")
    shutil.rmtree(out, ignore_errors=True)
    t = max(args.threads)
    if model == "fc":
        command = [LCA_RUN, "train", "--data", "fashion-mnist", "--model", "fc", "--validation", "5000"]
    else:
        command = [LCA_RUN, "train", "--data", args.cifar, "--model", model,
                   "--lca-subset", str(args.resnet_lca_examples)]
    command += ["--batch-size", "250", "--iterations", str(iterations), "--threads", str(t),
                "-o", out, "--quiet", "--json", *extra]
    load = loadavg()
    wait_for_quiet()
    stdout, rss, elapsed, others = time_v(command, env=kernel_env(kernel))
    summary = json.loads(stdout)
    with open(os.path.join(out, "summary.txt")) as f:
        m = re.search(r"matrix kernel (\S+)", f.read())
    header, records, raw, start = read_lca_log(os.path.join(out, "lca.log"))
    return {
        "command": command, "kernel_asked": kernel, "kernel": m.group(1) if m else "?",
        "seconds_per_iteration": summary["wall_seconds"] / summary["iterations"],
        "loop_seconds": summary["wall_seconds"], "process_seconds": elapsed, "peak_rss": rss,
        "self_peak": summary.get("peak_memory_bytes"), "core_memory": summary.get("core_memory_bytes"),
        "passes": 1 + sum(r["subintervals"] for r in records),
        # the chunk is not in the log header since the exact sum (it no longer sets the bytes)
        "eval_chunk": summary.get("eval_chunk") or header["config"].get("eval_chunk"),
        "accumulation_unit": summary.get("accumulation_unit") or header["config"].get("accumulation_unit"),
        "evaluation": header["data"]["evaluation"],
        "records_sha": hashlib.sha256(raw[start:]).hexdigest(),
        "log_sha": hashlib.sha256(raw).hexdigest(),
        "max_residual": max(abs(r["residual"]) for r in records),
        "subintervals": [r["subintervals"] for r in records],
        "init": os.path.join(out, "checkpoint-000000.safetensors"), "load": load, "others": others,
    }


def run_torch_lca(args, model, iterations, chunk, fmt, init, workdir):
    out = os.path.join(workdir, f"torch-{model}.json")
    t = max(args.threads)
    command = [PYTHON, os.path.join(BENCH, "torch_lca.py"), "--model", model, "--iterations",
               str(iterations), "--threads", str(t), "--batch-size", "250", "--eval-chunk", str(chunk),
               "--json", out, "--quiet"]
    if model == "fc":
        command += ["--validation", "5000"]
    else:
        command += ["--data", args.cifar, "--lca-subset", str(args.resnet_lca_examples),
                    "--memory-format", fmt]
    if init and os.path.exists(init):
        command += ["--init", init]
    load = loadavg()
    wait_for_quiet()
    _, rss, elapsed, others = time_v(command, env=torch_env(t))
    with open(out) as f:
        result = json.load(f)
    return {
        "command": command, "seconds_per_iteration": result["seconds_per_iteration"],
        "loop_seconds": result["loop_seconds"], "process_seconds": elapsed, "peak_rss": rss,
        "passes": result["evaluation_passes"], "eval_chunk": chunk, "format": fmt,
        "max_residual": max(abs(r["residual"]) for r in result["records"]),
        "subintervals": [r["subintervals"] for r in result["records"]],
        "torch": result["torch"], "load": load, "others": others,
    }


def torch_env(threads):
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


# the evaluation sets of the passes: (model, data, examples) per model
def pass_sets(args):
    return {"fc": ("fashion-mnist", args.fc_examples), "lenet": ("fashion-mnist", args.lenet_examples),
            "resnet20": (args.cifar, args.resnet_examples)}


def lca_pass(args, model, threads, kernel, budget=None):
    data, examples = pass_sets(args)[model]
    command = [f"{BUILD}/eval_pass_bench", str(threads), str(args.pass_repeats), model, "0",
               "--data", data, "--examples", str(examples), "--no-kernels"]
    if budget:
        command += ["--memory-budget", str(budget)]
    wait_for_quiet()
    stdout, _, _, others = time_v(command, env=kernel_env(kernel))
    r = json.loads(stdout)
    gflop = flops.pass_flop(model) * r["examples"] * 1e-9
    return dict(r, gflop=gflop, gflops_best=gflop / r["pass_best_s"], others=others,
                kernel_asked=kernel, command=command)


def contenders(rounds, model, threads, within):
    """The configurations of PyTorch's sweep worth measuring again: those
    whose best so far is within `within` × the fastest of any configuration
    (None = all of them: no round yet, or within 0)."""
    if not rounds or not within:
        return None
    best = {}
    for r in rounds:
        for row in r["sweep"][model][threads]["rows"]:
            if "best_s" in row:
                key = (row["chunk"], row["format"])
                best[key] = min(best.get(key, row["best_s"]), row["best_s"])
    fastest = min(best.values())
    return sorted(key for key, s in best.items() if s <= within * fastest)


def torch_sweep(args, model, threads, workdir, only=None):
    data, examples = pass_sets(args)[model]
    out = os.path.join(workdir, f"sweep-{model}-{threads}.json")
    command = [PYTHON, os.path.join(BENCH, "torch_lca.py"), "--model", model, "--threads", str(threads),
               "--sweep-chunks", args.sweep_chunks, "--sweep-repeats", str(args.sweep_repeats),
               "--json", out, "--quiet"]
    if only:
        command += ["--sweep-only", ",".join(f"{c}:{f}" for c, f in only)]
    if model == "resnet20":
        command += ["--data", data, "--lca-subset", str(examples)]
    else:
        command += ["--validation", "5000"]
        if examples < 55000:
            command += ["--lca-subset", str(examples)]
    wait_for_quiet()
    _, rss, _, others = time_v(command, env=torch_env(threads))
    with open(out) as f:
        r = json.load(f)
    gflop = flops.pass_flop(model) * r["examples"] * 1e-9
    for row in r["rows"]:
        if "best_s" in row:
            row["gflops"] = gflop / row["best_s"]
    return dict(r, gflop=gflop, gflops_best=gflop / r["best"]["best_s"], others=others,
                process_peak_rss=rss, command=command)


def product_peer(args, model, threads, chunk, formats=None):
    """oneDNN (conv nets) or OpenBLAS (FC) on the pass's products alone
    (conv nets: in both memory formats, or in `formats` only)."""
    data, examples = pass_sets(args)[model]
    wait_for_quiet()
    if model == "fc":
        env = dict(os.environ)
        env.pop("OPENBLAS_CORETYPE", None)  # for this measurement only: see .library/env README
        env.pop("OPENBLAS_L2_SIZE", None)
        command = [PYTHON, os.path.join(BENCH, "numpy_sgemm.py"), "--threads", str(threads),
                   "--repeats", str(args.peer_repeats), "--examples", str(examples), "--chunk", str(chunk)]
        stdout, _, _, others = time_v(command, env=env)
        r = json.loads(stdout)
        arch = r["blas"][0]["architecture"] if r["blas"] else "?"
        return {"library": f"OpenBLAS SGEMM ({arch})", "gflops_best": r["gflops_best"],
                "seconds": r["best_s"], "chunk": chunk, "others": others, "raw": r}
    command = [PYTHON, os.path.join(BENCH, "torch_conv_shapes.py"), "--model", model, "--examples",
               str(examples), "--chunk", str(chunk), "--threads", str(threads),
               "--repeats", str(args.peer_repeats)]
    if formats:
        command += ["--formats", formats]
    stdout, _, _, others = time_v(command, env=torch_env(threads))
    r = json.loads(stdout)
    return {"library": f"oneDNN via torch ({r['best_format']})", "best_format": r["best_format"],
            "gflops_best": r["best_gflops"],
            "seconds": r["best_seconds"], "chunk": r["chunk"], "others": others,
            "formats": {f: v["gflops"] for f, v in r["formats"].items()}}


def fma_peak(threads, runs):
    wait_for_quiet()
    stdout, _, _, others = time_v([f"{BUILD}/fma_peak", str(threads), str(runs)])
    return dict(json.loads(stdout), others=others)


def pass_round(args, results, workdir):
    """One round of every pass measurement at every thread count: lca with
    each kernel, PyTorch's sweep, the product peer at PyTorch's best chunk,
    the FMA ceiling. Kept in results['rounds']."""
    row = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
           "lca": {}, "sweep": {}, "peer": {}, "fma": {}}
    for t in sorted(set(args.threads) | {1}):  # 1 thread always: T × it bounds a disturbed T-thread run
        log(f"round {len(results['rounds']) + 1}, {t} threads: FMA ceiling")
        stage("FMA ceilings")
        row["fma"][t] = fma_peak(t, args.pass_repeats)
    for t in args.threads:
        for model in args.models:
            stage(f"lca {model} passes")
            for label, kernel, budget in pass_variants(model):
                r = lca_pass(args, model, t, kernel, budget)
                row["lca"].setdefault(model, {}).setdefault(t, {})[label] = r
                log(f"  lca {model} ({label}: {r['kernel']}) {r['pass_best_s']:.3f} s, "
                    f"{r['gflops_best']:.1f} GFLOP/s")
            stage(f"PyTorch {model} sweep")
            only = contenders(results["rounds"], model, t, args.resweep_within)
            sw = torch_sweep(args, model, t, workdir, only)
            sw["only"] = only
            row["sweep"].setdefault(model, {})[t] = sw
            b = sw["best"]
            log(f"  PyTorch {model} best: chunk {b['chunk']} {b['format']} {b['best_s']:.3f} s")
            stage(f"{model} products alone")
            # later rounds: the memory format that was faster in round 1 only
            first = results["rounds"][0]["peer"][model][t] if results["rounds"] else None
            peer = product_peer(args, model, t, b["chunk"], first.get("best_format") if first else None)
            row["peer"].setdefault(model, {})[t] = peer
            log(f"  {peer['library']} {peer['gflops_best']:.1f} GFLOP/s")
    results["rounds"].append(row)


def best_of_rounds(results, args):
    """Per model, thread count and kernel: lca's fastest pass of all rounds;
    PyTorch's sweep rows each at their fastest of all rounds (its best = the
    fastest row); the peer's fastest; the FMA ceiling per ISA the highest of
    any round, and never below T × the 1-thread figure."""
    rounds = results["rounds"]
    out = {"lca": {}, "sweep": {}, "peer": {}, "fma": {}}
    for t in sorted(set(args.threads) | {1}):
        fma = {"avx2": None, "avx512": None, "others": 0.0}
        for r in rounds:
            for isa in ("avx2", "avx512"):
                v = r["fma"][t].get(isa)
                if v and (fma[isa] is None or v > fma[isa]):
                    fma[isa] = v
            fma["others"] = max(fma["others"], r["fma"][t].get("others", 0))
        out["fma"][t] = fma
    for t in args.threads:  # a disturbed T-thread ceiling must not lower the bar
        one = out["fma"].get(1)
        if one:
            for isa in ("avx2", "avx512"):
                if out["fma"][t][isa] and one[isa]:
                    out["fma"][t][isa] = max(out["fma"][t][isa], t * one[isa])
    for model in args.models:
        for t in args.threads:
            for label, _, _ in pass_variants(model):
                runs = [r["lca"][model][t][label] for r in rounds]
                best = min(runs, key=lambda x: x["pass_best_s"])
                out["lca"].setdefault(model, {}).setdefault(t, {})[label] = dict(
                    best, others=max(x["others"] for x in runs), rounds=[x["pass_best_s"] for x in runs])
            sweeps = [r["sweep"][model][t] for r in rounds]
            rows, counts = {}, {}
            for sw in sweeps:
                for row in sw["rows"]:
                    key = (row["chunk"], row["format"])
                    if "best_s" not in row:
                        rows.setdefault(key, row)
                        continue
                    counts[key] = counts.get(key, 0) + 1
                    if key not in rows or "best_s" not in rows[key] or row["best_s"] < rows[key]["best_s"]:
                        rows[key] = row
            rows = {k: dict(r, rounds_measured=counts[k]) if k in counts else r for k, r in rows.items()}
            measured = [r for r in rows.values() if "best_s" in r]
            best = min(measured, key=lambda r: r["best_s"])
            out["sweep"].setdefault(model, {})[t] = dict(
                sweeps[0], rows=sorted(rows.values(), key=lambda r: (r["chunk"], r["format"])), best=best,
                gflops_best=sweeps[0]["gflop"] / best["best_s"], others=max(s["others"] for s in sweeps))
            peers = [r["peer"][model][t] for r in rounds]
            out["peer"].setdefault(model, {})[t] = max(peers, key=lambda p: p["gflops_best"])
    results["best"] = out


def ceiling_for(fma, kernel):
    """The FMA ceiling of the ISA a kernel runs on."""
    if kernel and kernel.startswith("avx2"):  # "avx2" ("avx2-fma" before issue 13)
        return fma["avx2"], "AVX2"
    if kernel and kernel.startswith("avx512"):
        return fma["avx512"], "AVX-512"
    wide = fma["avx512"] or fma["avx2"]
    return wide, "AVX-512" if fma["avx512"] else "AVX2"


def perf_profile(args, workdir):
    """perf record on the ResNet-20 pass (default kernel): where the time goes."""
    if not shutil.which("perf"):
        return None
    data_src, examples = pass_sets(args)["resnet20"]
    t = max(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        command = ["perf", "record", "-F", "499", "-o", data, "--", f"{BUILD}/eval_pass_bench", str(t),
                   "3", "resnet20", "0", "--data", data_src, "--examples", str(examples), "--no-kernels"]
        result = run(command, check=False)
        if result.returncode != 0:
            return {"command": command, "error": result.stderr[-500:]}
        report = run(["perf", "report", "-i", data, "--stdio", "--sort", "dso,symbol",
                      "--percent-limit", "0.5"], check=False).stdout
        rows = []
        for line in report.splitlines():
            m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[([.kH])\]\s+(\S+)", line)
            if m:
                symbol = "(kernel)" if m.group(3) == "k" else m.group(4)
                rows.append((float(m.group(1)), m.group(2), symbol))
        event = re.search(r"of event '([^']+)'", report)
        return {"command": ["perf", "record", "-F", "499", "--"] + command[command.index("--") + 1:],
                "rows": rows[:15], "event": event.group(1) if event else "?"}


# ---------------------------------------------------------------- report

def display(command):
    """A command as a reader would type it: repository-relative, temporary paths elided."""
    out = []
    for word in command:
        if word in (LCA, LCA_RUN, os.path.join(BUILD, "lca")):
            word = ".build/release/lca"
        elif word.startswith(tempfile.gettempdir() + "/"):
            word = "<tmp>"
        elif word.startswith(ROOT + "/"):
            word = os.path.relpath(word, ROOT)
        out.append(word)
    return shlex.join(out)


def disturbed(runs):
    """A note for a verdict measured while other processes were busy."""
    if not runs:
        return ""
    others = med([r["others"] for r in runs])
    return f" (disturbed: others kept {others:.2f} cores busy)" if others > 0.25 else ""


def med(values):
    return statistics.median(values)


def fmt_ratio(x):
    return f"{x:.2f}×"


def verdict(value, limit, higher_is_better=False, unit="×"):
    met = value >= limit if higher_is_better else value <= limit
    shown = f"{value:.0f}%" if unit == "%" else f"{value:.2f}{unit}"
    need = f"{limit:g}{unit}"
    if met:
        return f"**met** ({shown})"
    if higher_is_better:
        return f"**missed** by {limit / value:.2f}× (need ≥ {need}, got {shown})"
    return f"**missed** by {value / limit:.2f}× (need ≤ {need}, got {shown})"


def machine():
    info = {}
    try:
        out = run(["lscpu"]).stdout
        for key in ("Model name", "CPU(s)", "Core(s) per socket", "Thread(s) per core",
                    "Socket(s)", "L2 cache", "L3 cache", "Hypervisor vendor", "Flags"):
            m = re.search(rf"^{re.escape(key)}:\s+(.+)$", out, re.M)
            if m:
                info[key] = m.group(1).strip()
    except Exception:  # noqa: BLE001 - best effort
        pass
    flags = info.pop("Flags", "").split()
    info["SIMD"] = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags)
    with open("/proc/meminfo") as f:
        info["Memory"] = f"{int(f.readline().split()[1]) / 2**20:.1f} GiB"
    info["Kernel"] = platform.release()
    return info


def write_report(args, results, started_load, finished_load, started, finished, profile):
    t_hi = max(args.threads)
    best = results["best"]
    lines = []
    add = lines.append
    add("Generated by `tools/bench/run_bench.py` (issue 13); rerun it to refresh this block. Everything "
        "in it comes from one run of that script. (The issue-5 page this replaces, FC and LeNet at "
        "lca's own chunk, is in the git history of this file.)\n")
    add("## Run\n")
    add(f"- Command: `{args.command_line}`")
    add(f"- Date: {started.strftime('%Y-%m-%d %H:%M')} – {finished.strftime('%H:%M')} UTC "
        f"({(finished - started).total_seconds() / 60:.0f} min)")
    m = results["machine"]
    add(f"- Machine: {m.get('Model name', '?')}, {m.get('CPU(s)', '?')} CPUs "
        f"({m.get('Core(s) per socket', '?')} cores × {m.get('Thread(s) per core', '?')} thread), "
        f"L2 {m.get('L2 cache', '?')}, L3 {m.get('L3 cache', '?')}, {m.get('Memory')}, "
        f"{m.get('SIMD')}, hypervisor {m.get('Hypervisor vendor', 'none')}, Linux {m.get('Kernel')}")
    add(f"- Software: torch {results.get('torch_version', '?')} (oneDNN), numpy "
        f"{results.get('numpy_version', '?')} with {results.get('openblas', '?')}, lca built with "
        "`swift build -c release` (`lca train`) and `make` (`liblca.a` for the pass bench)")
    spent = results.get("spent")
    if spent:
        measuring = sum(spent["measuring"].values())
        add(f"- Time: {spent['total'] / 60:.1f} min in all, {measuring / 60:.1f} min inside the measured "
            f"programs (" + ", ".join(f"{n} {v / 60:.1f}" for n, v in
                                     sorted(spent["measuring"].items(), key=lambda kv: -kv[1])) +
            f"), {spent['waiting'] / 60:.1f} min waiting for a quiet machine, the rest building and "
            "generating data")
    add(f"- Load average (1, 5, 15 min) before: {started_load}; after: {finished_load} "
        "(the machine may be shared: other processes' load is recorded per measurement as 'others')")
    add(f"- Threads: {', '.join(map(str, args.threads))}; targets at {t_hi}. Passes, sweeps, product "
        f"peers and FMA ceilings in {len(results['rounds'])} round(s), each figure the **best** of "
        f"{args.pass_repeats} runs (PyTorch's sweep: {args.sweep_repeats} after a warm-up pass, product "
        f"peers: {args.peer_repeats}) of all rounds; end-to-end FC runs "
        f"{args.fc_repeats}× interleaved (lca default kernel, lca AVX2, PyTorch), **medians** (min "
        f"in brackets). Before each measurement the script waits (up to {args.wait_idle:.0f} s) "
        f"until other processes keep at most {args.max_busy} cores busy.")
    add(f"- Kernels: every lca pass and FC end-to-end measurement twice, with the default kernel and with "
        "`LCA_KERNEL=avx2`; the kernel that ran is read back (the pass bench prints "
        "`lca_gemm_kernel_name()`, `lca train` names it in summary.txt). A row whose request did not "
        "take effect says **not yet forced** and its target is not judged.\n")

    # ---------------------------------------------------------------- targets
    add("## Targets of issue 13\n")
    add("| target | kernel | measured | verdict |")
    add("|---|---|---|---|")
    verdicts = []

    def lca_row(model, label):
        return best["lca"][model][t_hi][label]

    for model, name in (("resnet20", "ResNet-20"), ("lenet", "LeNet")):
        if model not in best["lca"]:
            continue
        sw = best["sweep"][model][t_hi]
        for label, asked, _ in pass_variants(model):
            r = lca_row(model, label)
            status = forced(label, asked, r["kernel"])
            kname = f"{r['kernel']} ({status})" + (
                "; budget 1G, every activation kept" if label.startswith("kept") else
                "; default budget, blocks recomputed" if r.get("recomputes") else "")
            speed = sw["best"]["best_s"] / r["pass_best_s"]
            ceiling, isa = ceiling_for(best["fma"][t_hi], r["kernel"])
            share = r["gflops_best"] / ceiling if ceiling else float("nan")
            for target, value, text in (
                    (f"{name} pass ≥ 2× faster than PyTorch's best", speed,
                     f"{speed:.2f}× ({r['pass_best_s']:.3f} s vs {sw['best']['best_s']:.3f} s, chunk "
                     f"{sw['best']['chunk']} {sw['best']['format']})"),
                    (f"{name} pass ≥ 50% of the {isa} FMA ceiling", share * 100,
                     f"{share:.0%} ({r['gflops_best']:.1f} of {ceiling:.1f} GFLOP/s)")):
                if status.startswith("not yet"):
                    v = "not measured: kernel not forced"
                elif "2×" in target:
                    v = verdict(value, 2.0, higher_is_better=True)
                else:
                    v = verdict(value, 50, higher_is_better=True, unit="%")
                add(f"| {target} | {kname} | {text} | {v} |")
                verdicts.append((target, label, v))
    fc = results.get("fc_e2e")
    if fc:
        b = med([r["seconds_per_iteration"] for r in fc["torch"]])
        for label, asked in KERNELS:
            runs = fc["lca"][label]
            a = med([r["seconds_per_iteration"] for r in runs])
            status = forced(label, asked, runs[0]["kernel"])
            v = "not measured: kernel not forced" if status.startswith("not yet") else verdict(a / b, 0.5)
            add(f"| FC time per LCA iteration ≤ 0.5× PyTorch's best configuration | "
                f"{runs[0]['kernel']} ({status}) | {a / b:.2f}× ({a:.3f} s vs {b:.3f} s, PyTorch chunk "
                f"{fc['torch'][0]['eval_chunk']}) | {v} |")
    mem = results.get("resnet_memory")
    if mem:
        # PyTorch's least peak of its runs (its fastest configuration, and chunk 250 when that differs)
        peer = min((mem[k] for k in ("torch", "torch_small") if k in mem), key=lambda r: r["peak_rss"])
        a, b = mem["lca_default"]["peak_rss"], peer["peak_rss"]
        add(f"| ResNet-20, LCA on {mem['lca_default']['evaluation']:,} images, default budget: peak memory "
            f"≤ 0.3× PyTorch's | {mem['lca_default']['kernel']} | {a / b:.2f}× ({a / 2**20:.0f} MB vs "
            f"{b / 2**20:.0f} MB, PyTorch at chunk {peer['eval_chunk']}) | {verdict(a / b, 0.3)} |")
        same_log = mem["lca_default"]["log_sha"] == mem["lca_budget"]["log_sha"]
        same = mem["lca_default"]["records_sha"] == mem["lca_budget"]["records_sha"]
        what = "whole log identical" if same_log else (
            "records identical, header differs" if same else "records DIFFER")
        add(f"| … with `--memory-budget {args.small_budget}`: the same log bytes as at the default budget | "
            f"{mem['lca_budget']['kernel']} | {what} (chunk {mem['lca_default']['eval_chunk']} vs "
            f"{mem['lca_budget']['eval_chunk']}, unit {mem['lca_default']['accumulation_unit']}; peak "
            f"{mem['lca_budget']['peak_rss'] / 2**20:.0f} MB) | {'**met**' if same_log else '**missed**'} |")
    add("| Correctness unchanged (tests, JAX reference, thread-count determinism, fast vs naive "
        "convolution) | all | not measured here | run `tools/test` |")
    add("")

    # ---------------------------------------------------------------- passes
    add("## Evaluation-set gradient passes\n")
    add("One pass = the mean loss over the evaluation set and its gradient, what an LCA iteration "
        "repeats 2 to 32 times. Needed arithmetic per example (`tools/bench/flops.py`: 2 FLOP per "
        "multiply-add of every dense layer, convolution and projection, once forward, once for the "
        "weight gradient, once for the input gradient except the first layer's; batch norm, ReLU, "
        "pooling, softmax not counted): " + ", ".join(
            f"{n} {flops.pass_flop(m) / 1e6:,.3f} MFLOP" for m, n in
            (("fc", "FC"), ("lenet", "LeNet"), ("resnet20", "ResNet-20"))) +
        " (the issue's ≈ 246 for ResNet-20 also counted the first convolution's input gradient, "
        "which no pass needs).\n")
    add("- `lca`: `tools/bench/eval_pass_bench` (the integrator's own `lca_evaluator`: the examples in "
        "fixed accumulation units — 512 examples, or the batch-norm group of 250 for ResNet-20 — each "
        "unit's float32 gradient added into the exact, order-independent sum; chunk as `lca train` "
        "resolves it at the default memory budget), on the first N examples of lca's training split.")
    add("- PyTorch: `tools/bench/torch_lca.py --sweep-chunks` — the same pass (flat parameter leaf, "
        "autograd per chunk, uint8 data gathered per chunk, ResNet-20 batch norm per group of 250 in "
        "training-mode statistics) at every chunk × memory format; its **best** row is the peer.")
    add("- Products alone: oneDNN through torch (`tools/bench/torch_conv_shapes.py`: the pass's "
        "convolutions and dense products, forward, weight and input gradients, operands in place, "
        "at PyTorch's best chunk, the faster memory format of round 1, which later rounds measure "
        "again) or OpenBLAS SGEMM through numpy "
        "(`numpy_sgemm.py`) for FC: what the library's kernels give on these shapes, a bar for the "
        "kernels rather than a peer program.")
    add("- FMA ceiling: `fma_peak.c`, independent FMA chains on every thread, AVX2 and AVX-512.\n")
    for model, name in (("fc", "FC"), ("lenet", "LeNet"), ("resnet20", "ResNet-20")):
        if model not in best["lca"]:
            continue
        add(f"### {name}\n")
        add("| threads | program | kernel / configuration | seconds | GFLOP/s | % of the ceiling of its ISA | "
            "PyTorch best / this | others |")
        add("|---|---|---|---|---|---|---|---|")
        for t in args.threads:
            sw = best["sweep"][model][t]
            fma = best["fma"][t]
            for label, asked, _ in pass_variants(model):
                r = best["lca"][model][t][label]
                ceiling, isa = ceiling_for(fma, r["kernel"])
                layout = ("every activation kept (budget 1G); " if label.startswith("kept") else
                          "blocks recomputed (default budget); " if r.get("recomputes") else "")
                add(f"| {t} | lca ({label}) | {r['kernel']}, {forced(label, asked, r['kernel'])}; {layout}"
                    f"chunk {r['chunk']}, unit {r.get('accumulation_unit', '?')}, {r['examples']:,} examples | "
                    f"{r['pass_best_s']:.3f} | "
                    f"{r['gflops_best']:.1f} | {r['gflops_best'] / ceiling:.0%} ({isa}) | "
                    f"{sw['best']['best_s'] / r['pass_best_s']:.2f}× | {r['others']:.2f} |")
            wide, isa = ceiling_for(fma, None)
            add(f"| {t} | PyTorch, best of the sweep | chunk {sw['best']['chunk']}, "
                f"{sw['best']['format']}, {sw['examples']:,} examples | {sw['best']['best_s']:.3f} | "
                f"{sw['gflops_best']:.1f} | {sw['gflops_best'] / wide:.0%} ({isa}) | 1.00× | "
                f"{sw['others']:.2f} |")
            p = best["peer"][model][t]
            add(f"| {t} | products alone | {p['library']}, chunk {p['chunk']} | {p['seconds']:.3f} | "
                f"{p['gflops_best']:.1f} | {p['gflops_best'] / wide:.0%} ({isa}) | — | {p['others']:.2f} |")
        add("")
        resweep = getattr(args, "resweep_within", 0)
        add(f"PyTorch's sweep ({name}; seconds per pass, best of {args.sweep_repeats} per round, best "
            "of all rounds; **bold** = its best" +
            (f"; rounds after the first measure again only the configurations within {resweep:g}× of "
             "the fastest so far, the others (marked ¹) were measured in round 1 only"
             if resweep and len(results["rounds"]) > 1 else "") + "):\n")
        for t in args.threads:
            sw = best["sweep"][model][t]
            formats = sorted({r["format"] for r in sw["rows"]})
            add(f"| chunk ({t} threads) | " + " | ".join(formats) + " |")
            add("|---|" + "---|" * len(formats))
            for chunk in sorted({r["chunk"] for r in sw["rows"]}):
                cells = []
                for fmt in formats:
                    row = next((r for r in sw["rows"] if r["chunk"] == chunk and r["format"] == fmt), None)
                    if row is None:
                        cells.append("—")
                    elif "best_s" not in row:
                        cells.append(f"skipped ({row['skipped']})")
                    else:
                        once = len(results["rounds"]) > 1 and row.get("rounds_measured", 0) == 1
                        cell = f"{row['best_s']:.3f} s ({row['gflops']:.0f} GFLOP/s)" + ("¹" if once else "")
                        cells.append(f"**{cell}**" if row is sw["best"] or (row["chunk"], row["format"]) ==
                                     (sw["best"]["chunk"], sw["best"]["format"]) else cell)
                label = f"{chunk:,}" + (" (whole set)" if chunk == sw["examples"] else "")
                add(f"| {label} | " + " | ".join(cells) + " |")
            add("")

    add("### FMA ceilings\n")
    add("| threads | AVX2+FMA GFLOP/s | AVX-512 GFLOP/s | others |")
    add("|---|---|---|---|")
    for t in sorted(best["fma"]):
        f = best["fma"][t]
        add(f"| {t} | {f['avx2'] or float('nan'):.1f} | "
            f"{f['avx512'] if f['avx512'] else float('nan'):.1f} | {f['others']:.2f} |")
    add("\n(best of every round; at T threads never below T × the 1-thread figure, measured in every "
        "round, so that a run disturbed by other processes does not lower the bar)\n")

    if len(results["rounds"]) > 1:
        add("### Each round (lca pass seconds, PyTorch best seconds)\n")
        cols = [(m, label) for m in args.models for label, _, _ in pass_variants(m)]
        add("| round | started (UTC) | " + " | ".join(f"lca {m} {label}" for m, label in cols) + " | " +
            " | ".join(f"PyTorch {m}" for m in args.models) + " |")
        add("|---|---|" + "---|" * (len(cols) + len(args.models)))
        for i, r in enumerate(results["rounds"], 1):
            cells = [f"{r['lca'][m][t_hi][label]['pass_best_s']:.3f}" for m, label in cols]
            cells += [f"{r['sweep'][m][t_hi]['best']['best_s']:.3f}" for m in args.models]
            add(f"| {i} | {r['started'][11:19]} | " + " | ".join(cells) + " |")
        add("")

    # ---------------------------------------------------------------- end to end
    if fc:
        add("## FC end to end: time per LCA iteration\n")
        add(f"`lca train` FC 784-100-50-10 on Fashion-MNIST (55,000 training examples, LCA on all of "
            f"them, batch 250, SGD momentum 0.9, lr 0.01, Simpson threshold 0.001, cap 32), "
            f"{args.fc_iterations} iterations; time per iteration = training-loop wall time / "
            "iterations (setup excluded, the initial gradient included). PyTorch runs "
            "`torch_lca.py` at the chunk its sweep found fastest, from lca's initial weights. "
            "Both evaluate the same probe points (the `passes` column), but lca's passes inside a step "
            "interpolate the first layer's pre-activations from the step's ends instead of computing "
            "its product (docs/method.md, \"The first layer along the step\"), so an lca iteration costs "
            "less than its passes times the pass above; `torch_lca.py` computes every pass in full.\n")
        add("| program | kernel | chunk | s / iteration | peak RSS MB | passes | others |")
        add("|---|---|---|---|---|---|---|")
        for label, asked in KERNELS:
            runs = fc["lca"][label]
            add(f"| lca ({label}) | {runs[0]['kernel']} ({forced(label, asked, runs[0]['kernel'])}) | "
                f"{runs[0]['eval_chunk']} | {med([r['seconds_per_iteration'] for r in runs]):.3f} "
                f"({min(r['seconds_per_iteration'] for r in runs):.3f}) | "
                f"{med([r['peak_rss'] for r in runs]) / 2**20:.0f} | {runs[0]['passes']} | "
                f"{med([r['others'] for r in runs]):.2f} |")
        runs = fc["torch"]
        add(f"| PyTorch | oneDNN/MKL | {runs[0]['eval_chunk']} | "
            f"{med([r['seconds_per_iteration'] for r in runs]):.3f} "
            f"({min(r['seconds_per_iteration'] for r in runs):.3f}) | "
            f"{med([r['peak_rss'] for r in runs]) / 2**20:.0f} | {runs[0]['passes']} | "
            f"{med([r['others'] for r in runs]):.2f} |")
        add("")
    if mem:
        add(f"## ResNet-20 with LCA on {mem['lca_default']['evaluation']:,} images: memory\n")
        add(f"`lca train --model resnet20` on CIFAR-format data from `tools/make_cifar_like.py` "
            f"({args.cifar_records:,} records, lca's default validation split), `--lca-subset "
            f"{args.resnet_lca_examples}`, batch 250, {args.resnet_iterations} iteration(s), batch norm "
            "groups of 250; PyTorch the same at its fastest configuration of the sweep and, when that "
            "chunk is larger, at chunk 250 (its least memory; the target is judged against the lower "
            "peak), from lca's initial weights. Peak memory = maximum resident set size (`/usr/bin/time -v`), the "
            "whole process (PyTorch's includes about 220 MB for `import torch`).\n")
        add("'log' = the SHA-256 of the whole log file, 'records' of the records after its header "
            "(since the exact sum the header names the accumulation unit, not the chunk or the "
            "budget, so the whole files should be equal).\n")
        add("| program | budget | chunk (unit) | peak RSS MB | core allocations MB | s / iteration | passes | "
            "log / records (SHA-256, first 12) |")
        add("|---|---|---|---|---|---|---|---|")
        for key, budget in (("lca_default", "default"), ("lca_budget", args.small_budget)):
            r = mem[key]
            add(f"| lca ({r['kernel']}) | {budget} | {r['eval_chunk']} ({r.get('accumulation_unit', '?')}) | "
                f"{r['peak_rss'] / 2**20:.0f} | {(r['core_memory'] or 0) / 2**20:.0f} | "
                f"{r['seconds_per_iteration']:.2f} | {r['passes']} | "
                f"`{r.get('log_sha', '?')[:12]}` / `{r['records_sha'][:12]}` |")
        for key in ("torch", "torch_small"):
            if key in mem:
                r = mem[key]
                add(f"| PyTorch{' (its fastest)' if key == 'torch' else ' (one BN group per chunk)'} | — | "
                    f"{r['eval_chunk']} {r['format']} | {r['peak_rss'] / 2**20:.0f} | — | "
                    f"{r['seconds_per_iteration']:.2f} | {r['passes']} | — |")
        add("")

    if profile and profile.get("rows"):
        add("## Where the ResNet-20 pass spends its time\n")
        add(f"`{display(profile['command'])}`, then `perf report --sort dso,symbol` (self time, event "
            f"`{profile['event']}`, rows of 0.5% and more):\n")
        add("| self % | object | symbol |")
        add("|---|---|---|")
        for pct, dso, sym in profile["rows"]:
            add(f"| {pct:.1f} | {dso} | `{sym}` |")
        add("")

    add("## Raw end-to-end runs\n")
    add("| run | kernel | s / iteration | loop s | process s | peak RSS MB | passes | load (1 min) | others |")
    add("|---|---|---|---|---|---|---|---|---|")
    raw = []
    if fc:
        for label, _ in KERNELS:
            raw += [(f"lca fc ({label})", r) for r in fc["lca"][label]]
        raw += [("PyTorch fc", r) for r in fc["torch"]]
    if mem:
        raw += [(f"lca resnet20 ({k})", mem[k]) for k in ("lca_default", "lca_budget")]
        raw += [(f"PyTorch resnet20 (chunk {mem[k]['eval_chunk']})", mem[k]) for k in ("torch", "torch_small")
                if k in mem]
    for name, r in raw:
        add(f"| {name} | {r.get('kernel', '—')} | {r['seconds_per_iteration']:.3f} | {r['loop_seconds']:.2f} | "
            f"{r['process_seconds']:.2f} | {r['peak_rss'] / 2**20:.0f} | {r['passes']} | "
            f"{r['load'].split()[0]} | {r['others']:.2f} |")
    add("")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------- the page

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
PAGE_TOP = (
    "# Performance: `lca` against PyTorch at its best\n\n"
    "The block between the markers `bench:begin` and `bench:end` (the run, the targets of issue 13 "
    "and the tables) is written by `tools/bench/run_bench.py` and replaced whenever it runs; "
    "everything outside the block is written by hand and kept as it is.\n\n")


def splice(page, block):
    """The page with its generated block replaced by block; page None = a new
    page (the title and the note above, then the block). A page without
    exactly one pair of markers is refused (ValueError) rather than
    overwritten, so that hand-written sections are never lost."""
    inner = f"{BEGIN}\n{block.rstrip()}\n{END}\n"
    if page is None:
        return PAGE_TOP + inner
    if page.count(BEGIN) != 1 or page.count(END) != 1 or page.index(BEGIN) > page.index(END):
        raise ValueError(f"expected one '{BEGIN}' … '{END}' block")
    head, rest = page.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    return head + inner + (tail[1:] if tail.startswith("\n") else tail)


def write_page(output, block):
    """Write the generated block into output (docs/performance.md), keeping
    the rest of the page."""
    page = None
    if os.path.exists(output):
        with open(output) as f:
            page = f.read()
    try:
        text = splice(page, block)
    except ValueError as e:
        raise SystemExit(f"run_bench: {output}: {e}; the report was not written "
                         f"(add the markers around the generated part)") from None
    with open(output, "w") as f:
        f.write(text)


# ------------------------------------------------------------------ main

def int_keys(value):
    """JSON turned the thread-count keys into strings: turn them back."""
    if isinstance(value, dict):
        return {(int(k) if isinstance(k, str) and k.isdigit() else k): int_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [int_keys(v) for v in value]
    return value


SAVED_ARGS = ("threads", "models", "rounds", "pass_repeats", "sweep_repeats", "sweep_chunks", "resweep_within",
              "peer_repeats", "fc_repeats",
              "fc_iterations", "fc_examples", "lenet_examples", "resnet_examples", "resnet_lca_examples",
              "resnet_iterations", "cifar_records", "small_budget", "wait_idle", "max_busy")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="2", help="thread counts, e.g. 1,2 (default 2; targets at the highest)")
    ap.add_argument("--models", default="fc,lenet,resnet20", help="passes of these models")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds of the pass measurements (best of all; default 2, 1 with --quick)")
    ap.add_argument("--pass-repeats", type=int, default=5, help="runs of each pass / peer / ceiling per round")
    ap.add_argument("--peer-repeats", type=int, default=3,
                    help="rounds of each layer's products in the oneDNN / OpenBLAS peers (best kept)")
    ap.add_argument("--sweep-chunks", default="250,500,1000,2500,5000,11000,all",
                    help="PyTorch's evaluation chunks ('all' = the whole set)")
    ap.add_argument("--sweep-repeats", type=int, default=2,
                    help="timed passes per PyTorch configuration and round, after a warm-up pass")
    ap.add_argument("--resweep-within", type=float, default=2.0,
                    help="rounds after the first measure again only PyTorch's configurations whose "
                         "best so far is within this factor of its fastest (0 = every configuration "
                         "in every round)")
    ap.add_argument("--fc-repeats", type=int, default=3, help="end-to-end FC runs (median)")
    ap.add_argument("--fc-iterations", type=int, default=20)
    ap.add_argument("--fc-examples", type=int, default=55000, help="FC pass: examples (the training split)")
    ap.add_argument("--lenet-examples", type=int, default=5000)
    ap.add_argument("--resnet-examples", type=int, default=1000, help="ResNet-20 pass: examples")
    ap.add_argument("--resnet-lca-examples", type=int, default=1000, help="ResNet-20 LCA run: --lca-subset")
    ap.add_argument("--resnet-iterations", type=int, default=1)
    ap.add_argument("--cifar-records", type=int, default=2200,
                    help="records of the generated CIFAR-format set (10%% held out for validation)")
    ap.add_argument("--small-budget", default="64M", help="the small --memory-budget of the ResNet-20 run")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end FC and ResNet-20 LCA runs")
    ap.add_argument("--no-perf", action="store_true", help="skip the perf profile")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 round (unless --rounds), 2 repeats, chunks 250,1000,all, FC 2 iterations once, "
                         "LeNet 1,000 and ResNet-20 500 examples, no perf (writes nothing unless -o)")
    ap.add_argument("--no-build", action="store_true", help="use the existing release build")
    ap.add_argument("--wait-idle", type=float, default=None,
                    help="before each measurement, wait up to this many seconds for other processes "
                         "to keep at most --max-busy cores busy (0 = do not wait; default 30, 5 "
                         "with --quick)")
    ap.add_argument("--max-busy", type=float, default=0.3)
    ap.add_argument("--build-attempts", type=int, default=3)
    ap.add_argument("--report-only", metavar="RESULTS_JSON",
                    help="only write the report from a saved results file (build/bench/results.json)")
    ap.add_argument("-o", "--output", help="report file (default docs/performance.md; none for --quick)")
    args = ap.parse_args()
    args.command_line = "python3 tools/bench/run_bench.py" + "".join(" " + shlex.quote(a) for a in sys.argv[1:])
    args.threads = sorted({int(t) for t in args.threads.split(",")})
    args.models = [m for m in args.models.split(",") if m]
    if args.quick:
        args.rounds = args.rounds or 1
        args.pass_repeats, args.sweep_repeats, args.peer_repeats = 2, 1, 2
        args.sweep_chunks = "250,1000,all"
        args.fc_repeats, args.fc_iterations = 1, 2
        args.lenet_examples, args.resnet_examples, args.resnet_lca_examples = 1000, 500, 500
        args.cifar_records = 1000
        args.no_perf = True
    args.rounds = args.rounds or 2
    if args.wait_idle is None:
        args.wait_idle = 5.0 if args.quick else 30.0
    WAIT_IDLE.update(seconds=args.wait_idle, max_busy=args.max_busy)
    output = args.output or (None if args.quick else os.path.join(ROOT, "docs", "performance.md"))
    if not os.path.exists("/usr/bin/time") and os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing GNU time (apt-get install time) for peak-memory measurements")
        run(["apt-get", "install", "-y", "-q", "time"], check=False)
    if not os.path.exists("/usr/bin/time"):
        raise SystemExit("run_bench: /usr/bin/time missing: apt-get install time")

    if args.report_only:
        with open(args.report_only) as f:
            saved = json.load(f)
        results = int_keys(saved["results"])
        args.command_line = saved["command_line"]
        for key in SAVED_ARGS:  # a file from before an argument existed keeps its default
            setattr(args, key, saved["args"].get(key, getattr(args, key, None)))
        report = write_report(args, results, saved["started_load"], saved["finished_load"],
                              datetime.datetime.fromisoformat(saved["started"]),
                              datetime.datetime.fromisoformat(saved["finished"]), saved["profile"])
        print(report)
        if output:
            write_page(output, report)
        return

    missing = [m for m in ("torch", "numpy", "threadpoolctl")
               if subprocess.run([PYTHON, "-c", f"import {m}"], capture_output=True).returncode]
    if missing:
        raise SystemExit(f"run_bench: {PYTHON} lacks Python packages {missing}: tools/python-venv, then "
                         "build/venv/bin/python -m pip install threadpoolctl")
    if not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        raise SystemExit("run_bench: Fashion-MNIST missing: apt-get install dataset-fashion-mnist")

    started = datetime.datetime.now(datetime.timezone.utc)
    started_load = loadavg()
    log(f"load average {started_load}; Python for the peers: {PYTHON}")
    build(args)
    args.cifar = os.path.join(BUILD, f"cifar-{args.cifar_records}")
    if not os.path.exists(os.path.join(args.cifar, "data_batch_1.bin")):
        run([PYTHON, os.path.join(ROOT, "tools", "make_cifar_like.py"), args.cifar, "--batches", "1",
             "--per-batch", str(args.cifar_records), "--test-records", "0", "--seed", "1"])

    results = {"machine": machine(), "rounds": []}
    workdir = tempfile.mkdtemp(prefix="lca-bench-")
    profile = None
    try:
        for rnd in range(args.rounds):
            pass_round(args, results, workdir)
        best_of_rounds(results, args)
        sw = results["rounds"][0]["sweep"]
        results["torch_version"] = sw[args.models[0]][args.threads[0]]["torch"]
        if not args.no_e2e:
            fc_chunk = results["best"]["sweep"]["fc"][max(args.threads)]["best"]["chunk"] \
                if "fc" in results["best"]["sweep"] else 2500
            fc = {"lca": {label: [] for label, _ in KERNELS}, "torch": []}
            stage("FC end to end")
            for rep in range(args.fc_repeats):
                init = None
                for label, kernel in KERNELS:
                    log(f"FC end to end, repeat {rep + 1}/{args.fc_repeats}: lca ({label})")
                    r = run_lca_train(args, "fc", args.fc_iterations, workdir, label, kernel)
                    init = init or r["init"]
                    fc["lca"][label].append(r)
                    log(f"  {r['seconds_per_iteration']:.3f} s/iteration ({r['kernel']})")
                log(f"  PyTorch, chunk {fc_chunk}")
                r = run_torch_lca(args, "fc", args.fc_iterations, fc_chunk, "contiguous", init, workdir)
                fc["torch"].append(r)
                log(f"  {r['seconds_per_iteration']:.3f} s/iteration")
            results["fc_e2e"] = fc
            log(f"ResNet-20 LCA on {args.resnet_lca_examples} images: lca at the default budget")
            stage("ResNet-20 memory")
            mem = {"lca_default": run_lca_train(args, "resnet20", args.resnet_iterations, workdir, "default")}
            log(f"  {mem['lca_default']['peak_rss'] / 2**20:.0f} MB; lca --memory-budget {args.small_budget}")
            mem["lca_budget"] = run_lca_train(args, "resnet20", args.resnet_iterations, workdir, "budget",
                                              extra=("--memory-budget", args.small_budget))
            if "resnet20" in results["best"]["sweep"]:
                b = results["best"]["sweep"]["resnet20"][max(args.threads)]["best"]
                chunk, fmt = b["chunk"], b["format"]
            else:
                chunk, fmt = 250, "channels_last"
            chunk = max(250, chunk - chunk % 250)
            log(f"  {mem['lca_budget']['peak_rss'] / 2**20:.0f} MB; PyTorch, chunk {chunk} {fmt}")
            mem["torch"] = run_torch_lca(args, "resnet20", args.resnet_iterations, chunk, fmt,
                                         mem["lca_default"]["init"], workdir)
            log(f"  {mem['torch']['peak_rss'] / 2**20:.0f} MB")
            if chunk != 250:  # PyTorch at its best for memory too: its smallest chunk, one BN group
                log(f"  PyTorch, chunk 250 {fmt} (its least memory)")
                mem["torch_small"] = run_torch_lca(args, "resnet20", args.resnet_iterations, 250, fmt,
                                                   mem["lca_default"]["init"], workdir)
                log(f"  {mem['torch_small']['peak_rss'] / 2**20:.0f} MB")
            results["resnet_memory"] = mem
        s = results["best"]["peer"].get("fc", {}).get(args.threads[0])
        if s:
            raw = s["raw"]
            results["numpy_version"] = raw["numpy"]
            results["openblas"] = (f"OpenBLAS {raw['blas'][0]['version']}, kernel {raw['blas'][0]['architecture']}"
                                   if raw["blas"] else "?")
        if not args.no_perf and "resnet20" in args.models:
            log("perf record on the ResNet-20 pass")
            profile = perf_profile(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    finished = datetime.datetime.now(datetime.timezone.utc)
    finished_load = loadavg()
    log(f"load average {finished_load}")
    results["spent"] = {"measuring": dict(SPENT["measuring"]), "waiting": SPENT["waiting"],
                        "total": (finished - started).total_seconds()}
    for name, seconds in sorted(SPENT["measuring"].items(), key=lambda kv: -kv[1]):
        log(f"  {seconds:7.1f} s  {name}")
    log(f"  {sum(SPENT['measuring'].values()):7.1f} s measuring, {SPENT['waiting']:.1f} s waiting for "
        f"quiet, {(finished - started).total_seconds():.1f} s in all")
    with open(os.path.join(BUILD, "results.json"), "w") as f:
        json.dump({"command_line": args.command_line, "args": {k: getattr(args, k) for k in SAVED_ARGS},
                   "started": started.isoformat(), "finished": finished.isoformat(),
                   "started_load": started_load, "finished_load": finished_load, "profile": profile,
                   "results": results}, f, indent=1)
    log(f"raw results in {os.path.relpath(os.path.join(BUILD, 'results.json'), ROOT)}")
    report = write_report(args, results, started_load, finished_load, started, finished, profile)
    print(report)
    if output:
        write_page(output, report)
        log(f"wrote {os.path.relpath(output, ROOT)}")


if __name__ == "__main__":
    main()
