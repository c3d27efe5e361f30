"""Read LCA logs (docs/log-format.md) with numpy only.

    import lca_log
    header, records = lca_log.open_log("runs/x/lca.log")   # memory-mapped: opens instantly
    records["lca_total"], records["lca"][:, 0]               # structured array, one row per iteration
    table = lca_log.table(header, records)                   # {"fc1.weight.lca": array, ...}
    # pandas.DataFrame(table) gives one named column per value

A pipe (lca train -o - | python3 script.py) is read in chunks:

    stream = lca_log.LogStream(sys.stdin.buffer)
    for chunk in stream:                                      # structured arrays of up to 4096 records
        ...

Versions 1 and 2 are read alike (fields go by name). Version 2 adds, per
view, lca_floor, the per-tensor lca_helping, lca_hurting and unmoved, and
lca_histogram as a (T, 2, 30) array (tensor, helping/hurting, bin), with
the bins' edges in header["lca_histogram"]["edges"] (None when the run left
it out); histogram_counts(header, records) checks and returns it.

Loss groups (issue 15, `lca train --groups`): group_names(header),
group_lca(header, records) as a (records, G, T) array, and
check_groups(header, records), the checks of `lca verify` with the same
bounds (SUM_BOUND, RESIDUAL_BOUND, LOSS_BOUND).

A partial last record (a run still writing, or killed) is left out; a file
that is not an LCA log raises LogFormatError naming the byte offset and
what was expected.
"""
import json
import os
import sys

import numpy as np

MAGIC = b"\x89LCA\r\n\x1a\n"
PREAMBLE = 24
VERSIONS = (1, 2)
_TENSOR_FIELDS = ["lca", "first_order", "helped", "hurt", "zero", "lca_helping", "lca_hurting", "unmoved"]
PER_TENSOR = set(_TENSOR_FIELDS) | {"val_" + name for name in _TENSOR_FIELDS}
PER_UNIT = {"unit_lca", "val_unit_lca"}
PER_BIN = {"lca_histogram", "val_lca_histogram"}           # (T, 2, B)
_GROUP_FIELDS = ["group_loss_before", "group_loss_after", "group_residual", "group_flags"]
PER_GROUP = set(_GROUP_FIELDS) | {"val_" + name for name in _GROUP_FIELDS}
PER_GROUP_TENSOR = {"group_lca", "val_group_lca"}          # (G, T), issue 15
# the bounds of lca verify (Sources/LCAKit/GroupFields.swift, docs/log-format.md)
SUM_BOUND = 2.0 ** -30        # |Σ_g group_lca − lca| / the tensor's scale
FLOOR_SLACK = 2.0 ** -20      # plus count · lca_floor · this (a tensor whose LCA is all rounding)
RESIDUAL_BOUND = 2.0 ** -40   # group_residual against its definition, relative to the magnitudes added
LOSS_BOUND = 2.0 ** -30       # |Σ_g (n_g/N) L_g − L| / |L|


class LogFormatError(ValueError):
    """The bytes are not an LCA log: the message names the file, the byte
    offset and what was expected."""


def _read_exactly(f, n):
    chunks, got = [], 0
    while got < n:
        chunk = f.read(n - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_header(f, name="log"):
    """Read the preamble and JSON header from a binary file object; returns
    (header dict, bytes consumed)."""
    pre = _read_exactly(f, PREAMBLE)
    if len(pre) < 8 and pre == MAGIC[:len(pre)]:
        raise LogFormatError(f"{name}: byte {len(pre)}: the file ends inside the 24-byte preamble")
    if pre[:8] != MAGIC:
        raise LogFormatError(f"{name}: byte 0: expected the LCA log magic 89 4C 43 41 0D 0A 1A 0A, "
                             f"found {pre[:8].hex(' ').upper()}")
    if len(pre) < PREAMBLE:
        raise LogFormatError(f"{name}: byte {len(pre)}: the file ends inside the 24-byte preamble")
    version, length, record_size = np.frombuffer(pre[8:20], "<u4")
    if version not in VERSIONS:
        raise LogFormatError(f"{name}: byte 8: expected log version 1 or 2, found {version}")
    raw = _read_exactly(f, int(length))
    if len(raw) < length:
        raise LogFormatError(f"{name}: byte {PREAMBLE + len(raw)}: the file ends inside the {length}-byte JSON header")
    try:
        header = json.loads(raw)
    except ValueError as error:
        raise LogFormatError(f"{name}: byte {PREAMBLE}: the JSON header does not parse: {error}") from None
    if not isinstance(header, dict) or header.get("format") != "lca-log" or "fields" not in header:
        raise LogFormatError(f"{name}: byte {PREAMBLE}: the JSON header is not an LCA log header")
    if header.get("record_size") != int(record_size):
        raise LogFormatError(f"{name}: byte 16: record size {record_size} in the preamble differs from "
                             f"the header's record_size {header.get('record_size')}")
    try:
        dtype = record_dtype(header)
    except (KeyError, TypeError, ValueError) as error:
        raise LogFormatError(f"{name}: byte {PREAMBLE}: the header's fields are not a record layout: {error}") from None
    if dtype.itemsize != record_size:
        raise LogFormatError(f"{name}: byte {PREAMBLE}: the header's fields add up to {dtype.itemsize} bytes, "
                             f"records are {record_size}")
    return header, PREAMBLE + int(length)


def record_dtype(header):
    """The numpy structured dtype of one record, from the header's fields
    (per-tensor and per-unit fields are arrays even with one element; the
    histogram is (T, 2, B), group_lca (G, T)). A field whose count does not
    match what the header says it holds raises ValueError."""
    tensors = len(header.get("tensors", []))
    histogram = header.get("lca_histogram")
    bins = histogram["bins"] if isinstance(histogram, dict) else None
    groups = len((header.get("groups") or {}).get("names", []))
    fields = []
    for f in header["fields"]:
        name, count = f["name"], f["count"]
        if name in PER_BIN:
            if bins is None or count != tensors * 2 * bins:
                raise ValueError(f"field {name} has {count} elements, expected tensors × 2 × bins "
                                 f"({tensors} × 2 × {bins})")
            fields.append((name, f["type"], (tensors, 2, bins)))
        elif name in PER_GROUP_TENSOR and groups and count == groups * tensors:
            fields.append((name, f["type"], (groups, tensors)))
        elif name in PER_TENSOR and count != tensors:
            raise ValueError(f"field {name} has {count} elements for {tensors} tensors")
        elif count != 1 or name in PER_TENSOR or name in PER_UNIT or name in PER_GROUP:
            fields.append((name, f["type"], (count,)))
        else:
            fields.append((name, f["type"]))
    return np.dtype(fields)


def histogram_counts(header, records, prefix=""):
    """The |LCA| histogram of a version-2 log as a (records, T, 2, B) array
    (prefix "val_" for the validation view), after checking that each
    tensor's helping bins add up to its helped count and its hurting bins to
    its hurt count; None when the log has no histogram."""
    name = prefix + "lca_histogram"
    if name not in records.dtype.names:
        return None
    counts = records[name]
    sums = counts.sum(axis=3, dtype=np.uint64)
    helped, hurt = records[prefix + "helped"], records[prefix + "hurt"]
    bad = np.nonzero((sums[:, :, 0] != helped) | (sums[:, :, 1] != hurt))
    if len(bad[0]):
        raise LogFormatError(f"record {bad[0][0]}, tensor {bad[1][0]}: the {name} bins do not add up to the "
                             f"helped and hurt counts")
    return counts


def group_names(header):
    """The loss groups' names ([] without groups)."""
    return list((header.get("groups") or {}).get("names", []))


def group_lca(header, records, prefix=""):
    """Per record, group and tensor, the group's LCA (a (records, G, T)
    float64 array; prefix "val_" for the validation view). Raises KeyError
    when the log has no group fields."""
    name = prefix + "group_lca"
    if name not in (records.dtype.names or ()):
        raise KeyError(f"the log has no {name} field (train with --groups)")
    g, t = len(group_names(header)), len(header["tensors"])
    return np.asarray(records[name], dtype=np.float64).reshape(len(records), g, t)


def check_groups(header, records, prefix=""):
    """The loss-group invariants of lca verify (docs/log-format.md) over
    every record of one view, vectorised: per tensor Σ_g group_lca = lca
    within SUM_BOUND of the tensor's scale; each group residual equals
    (n_g/N)(L_g after − L_g before) − Σ_t group_lca within RESIDUAL_BOUND;
    |residual| > threshold exactly when flagged; group losses chain; their
    (n_g/N)-weighted sum is the loss within LOSS_BOUND; a group without
    examples has zero LCA and residual. Raises LogFormatError naming the
    first failing record (0-based) and group or tensor; returns the worst
    figures: {"groups", "max_sum_error", "max_abs_residual", "flagged"}."""
    names = group_names(header)
    if not names:
        raise LogFormatError("the header lists no loss groups")
    tensors = [t["name"] for t in header["tensors"]]
    key = "validation_examples" if prefix else "examples"
    n = np.array(header["groups"].get(key) or [], dtype=np.int64)
    data = header.get("data") or {}
    expected = data.get("validation" if prefix else "evaluation")
    if len(n) and expected is not None and int(n.sum()) != expected:
        raise LogFormatError(f"groups.{key} add up to {int(n.sum())}, the view has {expected} examples")
    result = {"groups": len(names), "max_sum_error": 0.0, "max_abs_residual": 0.0, "flagged": 0}
    if len(records) == 0:
        return result
    ga = group_lca(header, records, prefix)
    lca = np.asarray(records[prefix + "lca"], dtype=np.float64).reshape(len(records), len(tensors))
    scale = np.maximum(np.abs(lca), np.abs(ga).sum(axis=1))
    if prefix + "lca_helping" in records.dtype.names:
        spread = (np.asarray(records[prefix + "lca_hurting"], dtype=np.float64)
                  - np.asarray(records[prefix + "lca_helping"], dtype=np.float64)).reshape(scale.shape)
        scale = np.maximum(scale, spread)
    error = np.abs(ga.sum(axis=1) - lca)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(scale > 0, error / scale, np.where(error == 0, 0.0, np.inf))
    slack = 0.0
    if prefix + "lca_floor" in records.dtype.names:
        counts = np.array([t["count"] for t in header["tensors"]], dtype=np.float64)
        slack = np.asarray(records[prefix + "lca_floor"], dtype=np.float64)[:, None] * counts[None, :] * FLOOR_SLACK
    bad = np.argwhere(~(relative <= SUM_BOUND) & ~(error <= SUM_BOUND * scale + slack))
    if len(bad):
        r, t = bad[0]
        raise LogFormatError(f"record {r}, {tensors[t]}: Σ over groups of {prefix}group_lca {float(ga[r, :, t].sum())!r} "
                             f"!= lca {float(lca[r, t])!r} ({relative[r, t]:.3g} of the scale, allowed {SUM_BOUND:.3g})")
    result["max_sum_error"] = float(relative.max())
    before = np.asarray(records[prefix + "group_loss_before"], dtype=np.float64)
    after = np.asarray(records[prefix + "group_loss_after"], dtype=np.float64)
    residual = np.asarray(records[prefix + "group_residual"], dtype=np.float64)
    flags = np.asarray(records[prefix + "group_flags"]) & 1
    present = n > 0 if len(n) else np.ones(len(names), dtype=bool)
    empty = np.argwhere(~present[None, :] & ((np.abs(ga).sum(axis=2) != 0) | (residual != 0)))
    if len(empty):
        r, g = empty[0]
        raise LogFormatError(f"record {r}: group {names[g]} has no examples but nonzero {prefix}group_lca or residual")
    threshold = (header.get("config") or {}).get("lca_threshold")
    if threshold is not None:
        above = np.abs(residual) > threshold
        bad = np.argwhere((above != (flags == 1)) & present[None, :])
        if len(bad):
            r, g = bad[0]
            raise LogFormatError(f"record {r}: group {names[g]}: |{prefix}group_residual| {abs(residual[r, g]):.3g} and flag "
                                 f"{flags[r, g]} disagree with the threshold {threshold}")
    chain = np.argwhere((before[1:] != after[:-1]) & present[None, :])
    if len(chain):
        r, g = chain[0]
        raise LogFormatError(f"record {r + 1}: group {names[g]}: {prefix}group_loss_before does not chain to the previous group_loss_after")
    if len(n) and n.sum() > 0:
        w = n / n.sum()
        lca_g = ga.sum(axis=2)
        recomputed = w * (after - before) - lca_g
        magnitude = w * (np.abs(after) + np.abs(before)) + np.abs(ga).sum(axis=2)
        bad = np.argwhere(~(np.abs(recomputed - residual) <= RESIDUAL_BOUND * magnitude) & present[None, :])
        if len(bad):
            r, g = bad[0]
            raise LogFormatError(f"record {r}: group {names[g]}: {prefix}group_residual {float(residual[r, g])!r} != "
                                 f"(n_g/N)(L_g after − L_g before) − Σ group_lca = {float(recomputed[r, g])!r}")
        for what in ("loss_before", "loss_after"):
            mine = np.where(present[None, :], w * (before if what == "loss_before" else after), 0).sum(axis=1)
            loss = np.asarray(records[prefix + what], dtype=np.float64)
            bad = np.argwhere(~(np.abs(mine - loss) <= LOSS_BOUND * np.maximum(np.abs(loss), np.abs(mine))))
            if len(bad):
                r = bad[0][0]
                raise LogFormatError(f"record {r}: Σ_g (n_g/N) {prefix}group_{what} {float(mine[r])!r} != {prefix}{what} {float(loss[r])!r}")
    result["max_abs_residual"] = float(np.abs(residual).max())
    result["flagged"] = int(flags.sum())
    return result


def open_log(path):
    """(header, records): records is a read-only memory-mapped structured
    array of every complete record, so a 10 GB log opens instantly."""
    with open(path, "rb") as f:
        header, start = read_header(f, path)
    dtype = record_dtype(header)
    size = os.path.getsize(path)
    count = (size - start) // dtype.itemsize
    if count <= 0:
        return header, np.zeros(0, dtype)
    return header, np.memmap(path, dtype=dtype, mode="r", offset=start, shape=(count,))


class LogStream:
    """Reads a log from a binary file object (a pipe, stdin) in chunks of
    structured arrays; `header` is read at construction."""

    def __init__(self, f, chunk_records=4096, name="stdin"):
        self.file = f
        self.header, _ = read_header(f, name)
        self.dtype = record_dtype(self.header)
        self.chunk_records = chunk_records
        self.partial_bytes = 0

    def __iter__(self):
        size = self.dtype.itemsize
        pending = b""
        while True:
            data = self.file.read(size * self.chunk_records - len(pending))
            if not data:
                self.partial_bytes = len(pending)
                return
            pending += data
            whole = len(pending) // size * size
            if whole:
                yield np.frombuffer(pending[:whole], self.dtype).copy()
                pending = pending[whole:]

    def read_all(self):
        """Every remaining record in one array."""
        chunks = list(self)
        return np.concatenate(chunks) if chunks else np.zeros(0, self.dtype)


def table(header, records):
    """Named columns, one value per iteration, for pandas.DataFrame: the
    scalar fields by name, per-tensor fields as "<tensor>.<field>", per-unit
    fields as "<group>.unit<u>.lca" / ".val_lca", loss-group fields as
    "<group>.<tensor>.group_lca" and "<group>.group_residual", … (the names
    of lca export --to csv, which also leaves the histogram out: use
    histogram_counts)."""
    tensors = [t["name"] for t in header["tensors"]]
    groups = group_names(header)
    units = [f"{g['group']}.unit{u}" for g in header.get("units", []) for u in range(g["units"])]
    columns = {}
    for f in header["fields"]:
        name = f["name"]
        values = records[name]
        if name in PER_TENSOR:
            for i, tensor in enumerate(tensors):
                columns[f"{tensor}.{name}"] = values[:, i]
        elif name in PER_BIN:
            continue  # not a column: records[name] is (records, T, 2, B), as lca export --to csv
        elif name in PER_UNIT:
            suffix = "lca" if name == "unit_lca" else "val_lca"
            for i, unit in enumerate(units):
                columns[f"{unit}.{suffix}"] = values[:, i]
        elif name in PER_GROUP_TENSOR and values.ndim == 3:
            for g, group in enumerate(groups):
                for i, tensor in enumerate(tensors):
                    columns[f"{group}.{tensor}.{name}"] = values[:, g, i]
        elif name in PER_GROUP and len(groups) == values.shape[-1]:
            for g, group in enumerate(groups):
                columns[f"{group}.{name}"] = values[:, g]
        elif values.ndim > 1:
            for i in range(values.shape[1]):
                columns[f"{name}[{i}]"] = values[:, i]
        else:
            columns[name] = values
    return columns


def main(argv):
    if len(argv) != 2:
        print("usage: lca_log.py LOG|-", file=sys.stderr)
        return 64
    if argv[1] == "-":
        stream = LogStream(sys.stdin.buffer)
        header, records = stream.header, stream.read_all()
    else:
        header, records = open_log(argv[1])
    print(f"{len(records)} records of model {header['model']['spec']}")
    for i, t in enumerate(header["tensors"]):
        print(f"{t['name']:<12} total LCA {records['lca'][:, i].sum():+.6e}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except BrokenPipeError:
        sys.exit(0)
    except LogFormatError as error:
        print(f"lca_log: error: {error}", file=sys.stderr)
        sys.exit(1)
