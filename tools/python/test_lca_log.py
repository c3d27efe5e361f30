"""Tests of the Python reader against the Swift reader and the exports.

Runs the built `lca` (LCA_BIN, default .build/debug/lca) to make logs, then:
  - numpy reader (memory-mapped) == lca export --to csv and --to jsonl (the
    Swift reader), every column, bit for bit (the text holds the shortest
    digits that read back to the same double);
  - numpy.load on lca export --to npy == the numpy reader, bit for bit;
  - a pipe (lca train -o - | LogStream, small chunks) == the file of the
    same run;
  - the log truncated at every byte offset of its last record reads as the
    records before it; corrupt headers raise LogFormatError naming the
    problem;
  - loss groups (the run has --groups class): group_lca is (records, G, T),
    check_groups passes on both views and refuses each kind of damage, the
    group columns equal the exports' bit for bit;
  - TensorBoard's own reader (EventAccumulator, keeping every scalar) loads
    lca export --to tensorboard with one event per iteration and the values
    of the log (as float32), and every TFRecord's masked CRC32C checks out,
    when the tensorboard package is installed (a loud SKIP otherwise).
Exit status 0 when every check passes; the worst differences are printed.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

try:
    import numpy as np
except ImportError:
    print("#" * 72)
    print("SKIPPED: numpy is not installed; the Python reader tests did not run")
    print("#" * 72)
    sys.exit(0)

import lca_log

LCA = os.environ.get("LCA_BIN", os.path.join(ROOT, ".build", "debug", "lca"))
failures = []


def check(condition, what, detail=""):
    print(("ok   " if condition else "FAIL ") + what + (f": {detail}" if detail else ""))
    if not condition:
        failures.append(what)


def run(args, cwd, **kwargs):
    return subprocess.run([LCA] + args, cwd=cwd, check=True, **kwargs)


def compare_columns(columns, reference, what):
    """columns: numpy arrays by name; reference: lists of text by name."""
    missing = [name for name in reference if name not in columns]
    extra = [name for name in columns if name not in reference]
    check(not missing and not extra, f"{what}: same column names", f"missing {missing[:3]}, extra {extra[:3]}")
    mismatched, worst = [], 0.0
    for name, texts in reference.items():
        if name not in columns:
            continue
        ours = columns[name]
        theirs = np.array([float(t) if ours.dtype.kind == "f" else int(t) for t in texts], dtype=ours.dtype)
        if ours.shape != theirs.shape or not np.array_equal(ours, theirs):
            mismatched.append(name)
            if ours.shape == theirs.shape and ours.dtype.kind == "f":
                worst = max(worst, float(np.max(np.abs(ours - theirs))))
    check(not mismatched, f"{what}: every value equal bit for bit ({len(reference)} columns)",
          f"{len(mismatched)} columns differ, e.g. {mismatched[:3]}, worst difference {worst:.3e}")


def main():
    if not os.path.exists(LCA):
        print(f"FAIL the lca executable {LCA} is missing: run swift build first")
        return 1
    work = tempfile.mkdtemp(prefix="lca-python-")
    try:
        args = ["train", "--iterations", "12", "--batch-size", "150", "--units", "--lca-validation", "--groups", "class", "--quiet"]
        run(args + ["-o", "run"], work, stdout=subprocess.DEVNULL)
        log = os.path.join(work, "run", "lca.log")
        header, records = lca_log.open_log(log)
        check(len(records) == 12 and isinstance(records, np.memmap), "open_log: 12 memory-mapped records",
              f"{len(records)} records, {type(records).__name__}")
        check(records["unit_lca"].shape == (12, 42), "per-unit field unit_lca is 12 × 42", str(records["unit_lca"].shape))
        sums = records["lca"].sum(axis=1)
        check(np.all(sums == records["lca_total"]) or
              np.max(np.abs(sums - records["lca_total"])) < 1e-15, "Σ per-tensor lca ≈ lca_total (numpy order)",
              f"worst {np.max(np.abs(sums - records['lca_total'])):.2e}")
        columns = lca_log.table(header, records)
        groups_check(header, records, columns)

        # the Swift reader, through lca export --to csv and --to jsonl
        csv = run(["export", "run/lca.log", "--to", "csv"], work, capture_output=True, text=True).stdout.splitlines()
        names = csv[0].split(",")
        rows = [line.split(",") for line in csv[1:]]
        compare_columns(columns, {n: [r[i] for r in rows] for i, n in enumerate(names)}, "csv export vs numpy reader")
        lines = run(["export", "run/lca.log", "--to", "jsonl"], work, capture_output=True, text=True).stdout.splitlines()
        objects = [json.loads(line, parse_float=str, parse_int=str) for line in lines]
        scalars = [n for n in objects[0] if not isinstance(objects[0][n], list)]
        compare_columns(columns, {n: [o[n] for o in objects] for n in scalars}, "jsonl export vs numpy reader")
        # version 2: the histogram, as arrays in JSON Lines and (T, 2, 30) in numpy
        tensors = [t["name"] for t in header["tensors"]]
        counts = lca_log.histogram_counts(header, records)
        check(counts is not None and counts.shape == (12, len(tensors), 2, 30), "histogram_counts: (12, T, 2, 30)",
              str(None if counts is None else counts.shape))
        from_json = np.array([[[[int(x) for x in o[f"{t}.lca_histogram.{side}"]] for side in ("helping", "hurting")]
                               for t in tensors] for o in objects])
        check(np.array_equal(from_json, counts), "jsonl histogram arrays == the numpy reader's")
        check(header["version"] == 2 and len(header["lca_histogram"]["edges"]) == 29, "version 2 header with 29 edges")
        rest = records["lca"] - records["lca_helping"] - records["lca_hurting"]
        check(np.all(np.abs(rest) <= records["zero"] * records["lca_floor"][:, None] * (1 + 1e-9) + 1e-15 *
                     (records["lca_hurting"] - records["lca_helping"])), "lca = helping + hurting + a rest within zero · floor")
        check(np.all(records["unmoved"] <= records["zero"]), "unmoved <= zero")
        damaged = np.array(records)
        damaged["lca_histogram"][3, 1, 0, 5] += 1
        try:
            lca_log.histogram_counts(header, damaged)
            check(False, "histogram_counts: a damaged bin is refused", "no error")
        except lca_log.LogFormatError as error:
            check("record 3, tensor 1" in str(error), "histogram_counts: a damaged bin is refused", str(error))

        # the version-1 fixture (Tests/fixtures): read as before, no version-2 fields
        fixture = os.path.join(ROOT, "Tests", "fixtures", "v1-digits-64-16-10.lca.log")
        h1, r1 = lca_log.open_log(fixture)
        check(h1["version"] == 1 and len(r1) == 6 and "lca_helping" not in r1.dtype.names
              and lca_log.histogram_counts(h1, r1) is None, "version-1 fixture: 6 records, no version-2 fields")
        csv1 = run(["export", fixture, "--to", "csv"], work, capture_output=True, text=True).stdout.splitlines()
        names1 = csv1[0].split(",")
        rows1 = [line.split(",") for line in csv1[1:]]
        compare_columns(lca_log.table(h1, r1), {n: [r[i] for r in rows1] for i, n in enumerate(names1)},
                        "version-1 fixture: csv export vs numpy reader")

        # numpy.load on the .npy export
        run(["export", "run/lca.log", "--to", "npy", "-o", "run.npy"], work)
        loaded = np.load(os.path.join(work, "run.npy"))
        check(loaded.dtype == records.dtype and loaded.shape == records.shape, "numpy.load: same dtype and shape",
              f"{len(loaded.dtype.names)} fields, shape {loaded.shape}")
        check(loaded.tobytes() == np.asarray(records).tobytes(), "numpy.load: the same bytes as the log's records")
        for name in ("lca_total", "lca", "unit_lca", "val_lca", "helped"):
            check(np.array_equal(loaded[name], records[name]), f"numpy.load: field {name} equal")

        # a pipe, read in small chunks, gives the records of the same run
        process = subprocess.Popen([LCA] + args + ["-o", "-"], cwd=work, stdout=subprocess.PIPE)
        stream = lca_log.LogStream(process.stdout, chunk_records=5)
        chunks = list(stream)
        process.wait()
        piped = np.concatenate(chunks)
        check(process.returncode == 0 and [len(c) for c in chunks] == [5, 5, 2], "pipe read in chunks of 5",
              f"chunks {[len(c) for c in chunks]}, exit {process.returncode}")
        check(piped.tobytes() == np.asarray(records).tobytes(), "pipe records == the file's records")

        # truncated at every byte offset of the last record
        data = open(log, "rb").read()
        size = records.dtype.itemsize
        start = len(data) - 12 * size
        bad = []
        for cut in range(len(data) - size, len(data)):
            path = os.path.join(work, "cut.log")
            with open(path, "wb") as f:
                f.write(data[:cut])
            h, r = lca_log.open_log(path)
            with open(path, "rb") as f:
                s = lca_log.LogStream(f, chunk_records=3)
                streamed = s.read_all()
            if len(r) != 11 or r.tobytes() != data[start:start + 11 * size] or streamed.tobytes() != r.tobytes():
                bad.append(cut)
        check(not bad, f"truncated at each of the {size} offsets of the last record: 11 records read",
              f"{len(bad)} offsets wrong, first {bad[:3]}")

        # corrupt headers
        def corrupt(name, blob, expected):
            path = os.path.join(work, name)
            with open(path, "wb") as f:
                f.write(blob)
            try:
                lca_log.open_log(path)
                check(False, f"{name}: rejected", "no error")
            except lca_log.LogFormatError as error:
                check(expected in str(error), f"{name}: rejected naming the problem", str(error))
        version = struct.unpack_from("<I", data, 12)[0]
        corrupt("magic.log", b"PK" + data[2:], "magic")
        corrupt("version.log", data[:8] + struct.pack("<I", 3) + data[12:], "version 1 or 2, found 3")
        corrupt("size.log", data[:16] + struct.pack("<I", size + 8) + data[20:], "record size")
        corrupt("json.log", data[:24] + b"{not json" + data[33:], "does not parse")
        corrupt("short.log", data[:20], "preamble")
        corrupt("shortjson.log", data[:24 + version // 2], "inside the")

        tables_groups_check(work, header, records)
        tensorboard_check(work, header, records)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"python reader tests: {'FAILED ' + str(len(failures)) if failures else 'all passed'}")
    return 1 if failures else 0


def groups_check(header, records, columns):
    """The loss-group reader: shapes, lca verify's checks (passing, and
    failing on each kind of damage), the named columns."""
    names = lca_log.group_names(header)
    tensors = [t["name"] for t in header["tensors"]]
    check(names == [str(k) for k in range(10)], "group_names: the 10 classes", str(names))
    ga = lca_log.group_lca(header, records)
    check(ga.shape == (12, 10, len(tensors)), "group_lca: (12, 10, T)", str(ga.shape))
    worst = float(np.max(np.abs(ga.sum(axis=1) - records["lca"]) / np.abs(records["lca"])))
    check(worst < lca_log.SUM_BOUND, "Σ over groups of group_lca == lca within 2^-30", f"worst relative {worst:.2e}")
    for prefix in ("", "val_"):
        try:
            result = lca_log.check_groups(header, records, prefix)
            check(result["groups"] == 10, f"check_groups({prefix or 'training'}): passes",
                  f"max sum error {result['max_sum_error']:.2e}, max |group residual| {result['max_abs_residual']:.2e}")
        except lca_log.LogFormatError as error:
            check(False, f"check_groups({prefix or 'training'}): passes", str(error))

    def damaged(what, change, expected):
        copy = np.array(records)
        change(copy)
        try:
            lca_log.check_groups(header, copy)
            check(False, f"check_groups: {what} is refused", "no error")
        except lca_log.LogFormatError as error:
            check(expected in str(error), f"check_groups: {what} is refused", str(error))
    damaged("a group's LCA off by 1e-6", lambda c: c["group_lca"].__setitem__((3, 2, 0), c["group_lca"][3, 2, 0] * (1 + 1e-6)),
            f"record 3, {tensors[0]}: Σ over groups")
    damaged("a residual off by 1e-6", lambda c: c["group_residual"].__setitem__((5, 1), c["group_residual"][5, 1] + 1e-6),
            "record 5: group 1: group_residual")
    damaged("a flag without cause", lambda c: c["group_flags"].__setitem__((4, 7), 1), "record 4: group 7")
    damaged("losses that do not chain", lambda c: c["group_loss_before"].__setitem__((6, 0), np.nextafter(c["group_loss_before"][6, 0], 9)),
            "record 6: group 0: group_loss_before does not chain")
    for name in (f"3.{tensors[0]}.group_lca", "3.group_residual", "9.val_group_loss_after", "0.group_flags"):
        check(name in columns, f"table(): column {name}")
    check(np.array_equal(columns[f"3.{tensors[1]}.group_lca"], ga[:, 3, 1]), "table(): group column == group_lca[:, g, t]")


def tables_groups_check(work, header, records):
    """tools/results/tables.py groups (docs/results.md, finding 7) against a
    plain loop over the records: each class's Σ LCA, half-way iteration,
    hurt iterations and layer shares as printed. With LCA_RESULTS_DIR (a
    folder holding the run folder fmnist-fc-groups of finding 7), every
    table line it prints must be in docs/results.md."""
    script = os.path.join(ROOT, "tools", "results", "tables.py")
    out = subprocess.run([sys.executable, script, "groups", os.path.join(work, "run")], check=True,
                         capture_output=True, text=True).stdout
    rows = {line.split(" | ")[0][2:]: line.strip("| ").split(" | ") for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| group") and not line.startswith("| all")}
    tensors = [t["name"] for t in header["tensors"]]
    layers = sorted({t.split(".")[0] for t in tensors}, key=lambda l: [t.split(".")[0] for t in tensors].index(l))
    bad = []
    for g, name in enumerate(lca_log.group_names(header)):
        per = [sum(float(records["group_lca"][i][g][t]) for t in range(len(tensors))) for i in range(len(records))]
        running, half = 0.0, None
        total = sum(per)
        for i, value in enumerate(per):
            running += value
            if half is None and (running <= total / 2 if total < 0 else running >= total / 2):
                half = i + 1
        shares = []
        for layer in layers:
            part = sum(float(records["group_lca"][i][g][t]) for i in range(len(records))
                       for t in range(len(tensors)) if tensors[t].split(".")[0] == layer)
            shares.append(f"{100 * part / total:.0f}%")
        row = rows.get(name)
        expected = [name, f"{total:+.4f}", str(half), str(sum(v > 0 for v in per))]
        if row is None or [row[0], row[2], row[3], row[5]] != expected or row[-len(layers):] != shares:
            bad.append((name, row, expected, shares))
    check(len(rows) == 10 and not bad, "tables.py groups: Σ LCA, half-way iteration, hurt iterations and layer shares "
          "of every class == a plain loop over the records", str(bad[:1]))
    results = os.environ.get("LCA_RESULTS_DIR")
    if not results or not os.path.isdir(os.path.join(results, "fmnist-fc-groups")):
        print("SKIPPED: docs/results.md's finding-7 table against tables.py (set LCA_RESULTS_DIR to the folder of fmnist-fc-groups)")
        return
    out = subprocess.run([sys.executable, script, "groups", os.path.join(results, "fmnist-fc-groups")], check=True,
                         capture_output=True, text=True, cwd=results).stdout
    page = open(os.path.join(ROOT, "docs", "results.md"), encoding="utf-8").read()
    missing = [line for line in out.splitlines() if line.strip() and line not in page]
    check(not missing, "docs/results.md finding 7 == tables.py groups fmnist-fc-groups, line for line", str(missing[:2]))


def masked_crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tensorboard_check(work, header, records):
    run(["export", "run/lca.log", "--to", "tensorboard", "-o", "tb"], work)
    files = os.listdir(os.path.join(work, "tb"))
    check(len(files) == 1 and "tfevents" in files[0], "one event file", str(files))
    blob = open(os.path.join(work, "tb", files[0]), "rb").read()
    at, events, bad = 0, 0, 0
    while at < len(blob):
        length = struct.unpack_from("<Q", blob, at)[0]
        if struct.unpack_from("<I", blob, at + 8)[0] != masked_crc32c(blob[at:at + 8]):
            bad += 1
        payload = blob[at + 12:at + 12 + length]
        if struct.unpack_from("<I", blob, at + 12 + length)[0] != masked_crc32c(payload):
            bad += 1
        at += 16 + length
        events += 1
    check(bad == 0 and at == len(blob) and events == 13, "TFRecord framing: 13 records, masked CRC32C all correct",
          f"{events} records, {bad} bad CRCs")
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError:
        print("#" * 72)
        print("SKIPPED: the tensorboard package is not installed (pip install tensorboard);")
        print("SKIPPED: TensorBoard's own reader was NOT run on our event files")
        print("#" * 72)
        return
    accumulator = event_accumulator.EventAccumulator(os.path.join(work, "tb"), size_guidance={event_accumulator.SCALARS: 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    tensors = [t["name"] for t in header["tensors"]]
    expected = {"loss/batch", "lca/total", "residual", "lca_cumulative/total"} | {f"lca/{t}" for t in tensors} \
        | {f"lca_cumulative/{t}" for t in tensors} | {f"helped_percent/{t}" for t in tensors} | {"validation/lca/total"}
    check(expected <= tags, "TensorBoard reader: the expected tags", f"missing {sorted(expected - tags)[:4]}")
    worst = 0.0
    for index, tensor in enumerate(tensors):
        events_lca = accumulator.Scalars(f"lca/{tensor}")
        events_cum = accumulator.Scalars(f"lca_cumulative/{tensor}")
        steps = [e.step for e in events_lca]
        check(steps == list(range(1, 13)), f"TensorBoard reader: lca/{tensor} at every step 1..12", str(steps))
        ours = np.array([e.value for e in events_lca], np.float32)
        worst = max(worst, float(np.max(np.abs(ours - records["lca"][:, index].astype(np.float32)))))
        cumulative = np.cumsum(records["lca"][:, index]).astype(np.float32)
        worst = max(worst, float(np.max(np.abs(np.array([e.value for e in events_cum], np.float32) - cumulative))))
    losses = np.array([e.value for e in accumulator.Scalars("loss/evaluation")], np.float32)
    worst = max(worst, float(np.max(np.abs(losses - records["loss_after"].astype(np.float32)))))
    check(worst == 0.0, "TensorBoard reader: values == the log's (as float32), per-tensor, cumulative, loss",
          f"worst difference {worst:.3e}")
    # loss groups: one scalar per group and tensor, and its running sum
    ga = lca_log.group_lca(header, records)
    worst = 0.0
    for g in (0, 5, 9):
        for index, tensor in enumerate(tensors):
            ours = np.array([e.value for e in accumulator.Scalars(f"group_lca/{g}/{tensor}")], np.float32)
            worst = max(worst, float(np.max(np.abs(ours - ga[:, g, index].astype(np.float32)))))
            cumulative = np.array([e.value for e in accumulator.Scalars(f"group_lca_cumulative/{g}/{tensor}")], np.float32)
            worst = max(worst, float(np.max(np.abs(cumulative - np.cumsum(ga[:, g, index]).astype(np.float32)))))
        residual = np.array([e.value for e in accumulator.Scalars(f"group_residual/{g}")], np.float32)
        worst = max(worst, float(np.max(np.abs(residual - records["group_residual"][:, g].astype(np.float32)))))
    check(worst == 0.0 and f"validation/group_lca/3/{tensors[0]}" in tags,
          "TensorBoard reader: group_lca/<g>/<tensor>, its cumulative and group_residual/<g> == the log's (float32)",
          f"worst difference {worst:.3e}")
    # version 2: helping/hurting scalars and one histogram per tensor (helping bins reversed, the
    # within-floor bucket, hurting bins), counts equal to the log's
    for tag in (f"lca_helping/{tensors[0]}", f"lca_hurting/{tensors[0]}", f"unmoved_percent/{tensors[0]}"):
        check(tag in tags, f"TensorBoard reader: tag {tag}")
    accumulator = event_accumulator.EventAccumulator(os.path.join(work, "tb"),
                                                     size_guidance={event_accumulator.HISTOGRAMS: 0})
    accumulator.Reload()
    histogram_tags = set(accumulator.Tags()["histograms"])
    check({f"lca_histogram/{t}" for t in tensors} <= histogram_tags, "TensorBoard reader: a histogram per tensor",
          str(sorted(histogram_tags)[:3]))
    bad = 0
    for index, tensor in enumerate(tensors):
        for event, record in zip(accumulator.Histograms(f"lca_histogram/{tensor}"), records):
            value = event.histogram_value
            expected = list(record["lca_histogram"][index, 0][::-1]) + [record["zero"][index]] + list(record["lca_histogram"][index, 1])
            limits = list(value.bucket_limit)
            if [int(c) for c in value.bucket] != [int(c) for c in expected] or limits != sorted(limits):
                bad += 1
    check(bad == 0, "TensorBoard reader: histogram buckets == the log's bins, limits ascending", f"{bad} differ")


if __name__ == "__main__":
    sys.exit(main())
