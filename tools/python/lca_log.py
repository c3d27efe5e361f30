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
PER_TENSOR = {"lca", "first_order", "helped", "hurt", "zero",
              "val_lca", "val_first_order", "val_helped", "val_hurt", "val_zero"}
PER_UNIT = {"unit_lca", "val_unit_lca"}


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
    if version != 1:
        raise LogFormatError(f"{name}: byte 8: expected log version 1, found {version}")
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
    dtype = record_dtype(header)
    if dtype.itemsize != record_size:
        raise LogFormatError(f"{name}: byte {PREAMBLE}: the header's fields add up to {dtype.itemsize} bytes, "
                             f"records are {record_size}")
    return header, PREAMBLE + int(length)


def record_dtype(header):
    """The numpy structured dtype of one record, from the header's fields
    (per-tensor and per-unit fields are arrays even with one element)."""
    fields = []
    for f in header["fields"]:
        if f["count"] != 1 or f["name"] in PER_TENSOR or f["name"] in PER_UNIT:
            fields.append((f["name"], f["type"], (f["count"],)))
        else:
            fields.append((f["name"], f["type"]))
    return np.dtype(fields)


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
    fields as "<group>.unit<u>.lca" / ".val_lca" (the names of lca export)."""
    tensors = [t["name"] for t in header["tensors"]]
    units = [f"{g['group']}.unit{u}" for g in header.get("units", []) for u in range(g["units"])]
    columns = {}
    for f in header["fields"]:
        name = f["name"]
        values = records[name]
        if name in PER_TENSOR:
            for i, tensor in enumerate(tensors):
                columns[f"{tensor}.{name}"] = values[:, i]
        elif name in PER_UNIT:
            suffix = "lca" if name == "unit_lca" else "val_lca"
            for i, unit in enumerate(units):
                columns[f"{unit}.{suffix}"] = values[:, i]
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
