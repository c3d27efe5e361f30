#!/usr/bin/env python3
"""Write CIFAR-10-format files of synthetic images, for tests and demos.

The binary CIFAR-10 format (the one CCore/data.c reads): each file is a
sequence of 3,073-byte records, a label byte 0..9 then 3,072 pixel bytes:
1,024 red, 1,024 green, 1,024 blue, each a 32x32 plane in row-major order.
There is no header.

The images are learnable but not trivial: each class has its own colour and
blob size; a blob (a soft disc) of that colour sits at a random place on a
noisy background of a random dull colour, and a second, smaller blob of a
random other class's colour is added as a distractor. A small network learns
them well above chance; nothing is saturated.

    python3 tools/make_cifar_like.py OUTDIR --batches 2 --per-batch 500 --seed 1

writes OUTDIR/data_batch_1.bin ... data_batch_B.bin, OUTDIR/test_batch.bin
(--test-records, default --per-batch; 0 for none) and batches.meta.txt (one
class name a line, as in the real archive). The same arguments give the same
bytes. Needs numpy only.
"""
import argparse
import os
import sys

import numpy as np

CLASSES = 10
SIDE = 32
RECORD = 1 + 3 * SIDE * SIDE  # 3,073 bytes

# One colour (R, G, B in 0..255) and blob radius (pixels) per class.
CLASS_COLOURS = np.array(
    [
        (230, 40, 40),    # red
        (40, 200, 60),    # green
        (50, 70, 230),    # blue
        (235, 220, 40),   # yellow
        (210, 60, 210),   # magenta
        (40, 210, 220),   # cyan
        (245, 140, 30),   # orange
        (130, 60, 200),   # purple
        (240, 240, 240),  # white
        (120, 80, 40),    # brown
    ],
    dtype=np.float64,
)
CLASS_NAMES = ["red", "green", "blue", "yellow", "magenta", "cyan", "orange", "purple",
               "white", "brown"]
CLASS_RADII = np.array([5, 6, 7, 8, 9, 5, 6, 7, 8, 9], dtype=np.float64)


def make_records(count, rng):
    """count records as a (count, 3073) uint8 array; labels cycle through the
    classes in a shuffled order so every class is (nearly) equally common."""
    labels = np.resize(np.arange(CLASSES), count)
    rng.shuffle(labels)
    rows, cols = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64)  # (32, 32) each

    def blob(colour, radius, centre):
        """(count, 3, 32, 32) soft disc of colour with weight in [0, 1]."""
        distance = np.sqrt((rows[None] - centre[:, 0, None, None]) ** 2 +
                           (cols[None] - centre[:, 1, None, None]) ** 2)   # (N, 32, 32)
        weight = np.clip(radius[:, None, None] + 0.5 - distance, 0.0, 1.0)  # (N, 32, 32)
        return weight[:, None], colour[:, :, None, None]                    # (N,1,..), (N,3,1,1)

    background = rng.uniform(40, 140, size=(count, 3, 1, 1))               # a dull colour
    images = background + rng.normal(0.0, 18.0, size=(count, 3, SIDE, SIDE))

    # Distractor first (so the class blob is drawn over it): a small blob
    # in another class's colour.
    other = (labels + rng.integers(1, CLASSES, size=count)) % CLASSES
    centre = rng.uniform(4, SIDE - 4, size=(count, 2))
    weight, colour = blob(CLASS_COLOURS[other], np.full(count, 3.0), centre)
    images = images * (1 - weight) + colour * weight

    radius = CLASS_RADII[labels] + rng.uniform(-1.0, 1.0, size=count)
    margin = radius[:, None]
    centre = margin + rng.uniform(0, 1, size=(count, 2)) * (SIDE - 1 - 2 * margin)
    jitter = rng.normal(0.0, 12.0, size=(count, 3))                         # colour variation
    weight, colour = blob(CLASS_COLOURS[labels] + jitter, radius, centre)
    images = images * (1 - weight) + colour * weight

    pixels = np.clip(np.rint(images), 0, 255).astype(np.uint8)              # (N, 3, 32, 32)
    records = np.empty((count, RECORD), dtype=np.uint8)
    records[:, 0] = labels
    records[:, 1:] = pixels.reshape(count, -1)  # channels-first, row-major: the file's order
    return records


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", help="folder to write (created if missing)")
    parser.add_argument("--batches", type=int, default=5,
                        help="training batches data_batch_1.bin ... (default 5)")
    parser.add_argument("--per-batch", type=int, default=10000,
                        help="records per training batch (default 10,000, as CIFAR-10)")
    parser.add_argument("--test-records", type=int, default=None,
                        help="records in test_batch.bin (default --per-batch; 0 writes none)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.batches < 1 or args.per_batch < 1:
        parser.error("--batches and --per-batch must be at least 1")
    test_records = args.per_batch if args.test_records is None else args.test_records
    if test_records < 0:
        parser.error("--test-records must be 0 or more")

    os.makedirs(args.outdir, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    files = [(f"data_batch_{b}.bin", args.per_batch) for b in range(1, args.batches + 1)]
    if test_records:
        files.append(("test_batch.bin", test_records))
    for name, count in files:
        records = make_records(count, rng)
        path = os.path.join(args.outdir, name)
        with open(path, "wb") as f:
            f.write(records.tobytes())
        print(f"{path}: {count} records, {count * RECORD} bytes")
    with open(os.path.join(args.outdir, "batches.meta.txt"), "w") as f:
        f.write("\n".join(CLASS_NAMES) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
