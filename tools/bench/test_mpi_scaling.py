#!/usr/bin/env python3
"""The MPI scaling benchmark's own arithmetic, without running anything: the
bytes a pass all-reduces (against CCore/ranks.c's collectives, counted by
hand), the cost model on made-up measurements (against the formula of
mpi_scaling.py's docstring worked by hand), where scaling stops, and that
the page keeps everything outside its mpi-scaling block.

    python3 tools/bench/test_mpi_scaling.py      # unittest; exit 0 when every check passes

Standard library only.
"""
import math
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mpi_scaling as ms  # noqa: E402


def close(a, b, tolerance=1e-12):
    return abs(a - b) <= tolerance * max(1.0, abs(a), abs(b))


class Checks(unittest.TestCase):
    def test_bytes(self):
        test_bytes(self.assertTrue)

    def test_model(self):
        test_model(self.assertTrue)

    def test_page(self):
        test_page(self.assertTrue)


def test_bytes(check):
    # ranks.c: int64 local[4] (MPI_MAX), then sum_int64 of hi[K], lo[K] and
    # the loss's LCA_EXACT_SCALAR_DIGITS = 67 digits
    check(ms.STATE_BYTES == 32, "the state allreduce is four int64: 32 bytes")
    check(ms.pass_bytes(0) == 32 + 67 * 8, "a pass of no parameters: state and digits")
    check(ms.pass_bytes(89_610) == 1_434_328, "FC: 16·K + 568 bytes")
    check(ms.pass_bytes(273_066) == 16 * 273_066 + 568, "ResNet-20: 16·K + 568 bytes")


def one_rank(net, cpu, cpu_all, passes, examples, iterations):
    return {"net": net, "ranks": 1, "passes": passes, "slowest": cpu * 1.5, "own": cpu * 1.5, "cpu": cpu,
            "cpu_all": cpu_all, "wall": cpu_all, "iterations": iterations, "examples": examples}


def test_model(check):
    # FC: 2 s of evaluation CPU over 40 passes of 1,000 examples: c = 50 µs;
    # 3 s in all over 20 iterations: s = 0.05 s
    rows = ms.model_rows([one_rank("FC", 2.0, 3.0, 40, 1000, 20)])
    check(len(rows) == 2, f"two networks for FC, got {len(rows)}")
    k, a, e = 89_610, 512, 55_000
    units = math.ceil(e / a)
    b = 16 * k + 568
    for row, (name, alpha, beta) in zip(rows, ms.NETWORKS):
        check(row["network"] == name, f"network {name}")
        check(close(row["c_us"], 50.0), f"{name}: c = 50 µs, got {row['c_us']}")
        check(close(row["s"], 0.05), f"{name}: s = 0.05 s, got {row['s']}")
        check(row["units"] == units == 108, f"{name}: 108 units")
        check(close(row["t1"], 0.05 + 2 * 50e-6 * a * units), f"{name}: T(1) has no communication")
        for r in (16, 64, 256):
            lg = math.log2(r)
            by_hand = (0.05 + 2 * lg * alpha
                       + 2 * (50e-6 * a * math.ceil(units / r) + 4 * 2 * lg * alpha + 2 * (r - 1) / r * b / beta))
            check(close(row["t"][r], by_hand), f"{name}: T({r}) = {row['t'][r]} against {by_hand} by hand")
        # the stop: the largest R ≤ U at 50 % efficiency, and R + 1 (when ≤ U) below it
        t = lambda r: (0.05 + (0 if r == 1 else 2 * math.log2(r) * alpha)  # noqa: E731
                       + 2 * (50e-6 * a * math.ceil(units / r)
                              + (0 if r == 1 else 4 * 2 * math.log2(r) * alpha + 2 * (r - 1) / r * b / beta)))
        stop = row["stop"]
        check(1 <= stop <= units, f"{name}: stop {stop} within 1..U")
        check(t(1) / (stop * t(stop)) >= 0.5, f"{name}: efficiency at the stop ≥ 50 %")
        check(all(t(1) / (r * t(r)) < 0.5 for r in range(stop + 1, units + 1)),
              f"{name}: no larger R ≤ U is at 50 %")
    check(rows[0]["t"][256] > rows[1]["t"][256], "10 Gb/s is slower than 100 Gb/s at 256 ranks")


def test_page(check):
    measured = [one_rank("FC", 2.0, 3.0, 40, 1000, 20)]
    for r in (2, 3, 4):
        m = dict(measured[0], ranks=r, cpu=2.0 / r, load=0.1)
        measured.append(m)
    measured[0]["load"] = 0.1
    run = {"command": "tools/bench/mpi_scaling.py", "started": "2026-12-03 14:00", "finished": "14:04",
           "cpu": "a CPU", "cpus": 2, "load_before": [0.1, 0.1, 0.1], "load_after": [0.2, 0.1, 0.1]}
    text = ms.block(run, measured, ms.model_rows(measured))
    check("The machine was quiet." in text, "a quiet run says so")
    check("| FC | 1000 | 4 | 0.10 |" in text and "| 4.00× |" in text, "the 4-rank row and its CPU speed-up")
    check("Predicted seconds per iteration at 16 / 64 / 256 ranks, 100 Gb/s: FC " in text, "the predictions")
    loaded = ms.block(dict(run, load_before=[3.0, 2.0, 1.0]), measured, ms.model_rows(measured))
    check("**The machine was shared**" in loaded, "a loaded run says the machine was shared")
    page = "# top\n\nhand\n\n" + ms.BEGIN + "\nold\n" + ms.END + "\n\nafter\n"
    new = ms.splice(page, text)
    check(new.startswith("# top\n\nhand\n\n" + ms.BEGIN + "\n" + text) and new.endswith(ms.END + "\n\nafter\n"),
          "splice replaces the block and keeps the rest")
    check(ms.splice(new, "x\n").count(ms.BEGIN) == 1, "splice twice keeps one block")
    for bad in ("no markers\n", ms.END + ms.BEGIN, ms.BEGIN + ms.BEGIN + ms.END):
        try:
            ms.splice(bad, text)
            check(False, f"splice refused {bad!r}")
        except ValueError:
            pass


if __name__ == "__main__":
    unittest.main(verbosity=2)
