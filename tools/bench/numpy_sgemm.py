#!/usr/bin/env python3
"""OpenBLAS SGEMM (through numpy's np.matmul, float32) on the GEMMs of one
evaluation-set gradient pass of an MLP: for each of the N/chunk chunks and
each dense layer (in → out), the forward X·Wᵀ (chunk×in · in×out), the weight
gradient dYᵀ·X (out×chunk · chunk×in) and, for every layer but the first, the
input gradient dY·W (chunk×out · out×in). Counted as 2·m·n·k FLOP each, the
same count eval_pass_bench.c uses for the pass, so the two GFLOP/s compare
directly (this one is the GEMM work alone: no bias, ReLU, softmax or data
conversion).

    python3 tools/bench/numpy_sgemm.py --threads 2 [--repeats 5] [--widths 784-100-50-10]

Prints one JSON object: GFLOP, best and median seconds and GFLOP/s, and the
BLAS library threadpoolctl sees (library, version, architecture = the OpenBLAS
kernel in use). Run it with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (see
run_bench.py): where they are set, current OpenBLAS runs an older, slower kernel.
"""

import argparse
import json
import os
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--widths", default="784-100-50-10")
    ap.add_argument("--examples", type=int, default=55000)
    ap.add_argument("--chunk", type=int, default=1000)
    args = ap.parse_args()
    widths = [int(w) for w in args.widths.split("-")]
    rng = np.random.default_rng(0)
    chunk = args.chunk
    chunks = -(-args.examples // chunk)
    layers = []
    for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append({
            "first": index == 0,
            "x": rng.random((chunk, fan_in), dtype=np.float32),
            "w": rng.standard_normal((fan_out, fan_in), dtype=np.float32),
            "dy": rng.standard_normal((chunk, fan_out), dtype=np.float32),
            "y": np.empty((chunk, fan_out), np.float32),
            "dw": np.empty((fan_out, fan_in), np.float32),
            "dx": np.empty((chunk, fan_in), np.float32),
        })
    flop_per_chunk = sum(2 * chunk * l["w"].size * (2 if l["first"] else 3) for l in layers)
    gflop = flop_per_chunk * chunks * 1e-9

    def one_pass():
        for _ in range(chunks):
            for l in layers:
                np.matmul(l["x"], l["w"].T, out=l["y"])      # forward
                np.matmul(l["dy"].T, l["x"], out=l["dw"])    # weight gradient
                if not l["first"]:
                    np.matmul(l["dy"], l["w"], out=l["dx"])  # input gradient

    with threadpool_limits(limits=args.threads, user_api="blas"):
        blas = [
            {k: info.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                       "threading_layer")}
            for info in threadpool_info() if info.get("user_api") == "blas"
        ]
        one_pass()  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            one_pass()
            times.append(time.perf_counter() - start)
    best, median = min(times), statistics.median(times)
    print(json.dumps({
        "threads": args.threads, "widths": args.widths, "examples": args.examples, "chunk": chunk,
        "gflop": round(gflop, 4), "repeats": args.repeats,
        "best_s": round(best, 5), "median_s": round(median, 5),
        "gflops_best": round(gflop / best, 2), "gflops_median": round(gflop / median, 2),
        "blas": blas, "numpy": np.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
    }))


if __name__ == "__main__":
    main()
