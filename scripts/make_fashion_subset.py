#!/usr/bin/env python3
"""Regenerate src/vitune/quickstart/fashion_mnist_subset.npz from the official Fashion-MNIST files.

    apt-get install dataset-fashion-mnist        # Debian: /usr/share/datasets/fashion-mnist/*-ubyte.gz
    python scripts/make_fashion_subset.py        # writes the file; --check compares with the committed one

The subset is class-balanced and taken in file order: the first 300 images of each class from the official
training file (3,000) and the first 100 of each class from the official test file (1,000). No randomness, so
the arrays are the same on every machine. The file is a NumPy ``.npz`` (a ZIP of ``.npy`` arrays, no pickle)
written with fixed member order and timestamps, so it is also the same byte for byte wherever zlib compresses
the same way (``--check`` reports the arrays and the bytes separately).

Arrays: ``train_images`` (3000, 28, 28) uint8, ``train_labels`` (3000,) uint8, ``train_index`` (3000,) int32
(the row in the official training file), and the same three for ``test``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

SOURCE = Path("/usr/share/datasets/fashion-mnist")
OUT = Path(__file__).resolve().parent.parent / "src" / "vitune" / "quickstart" / "fashion_mnist_subset.npz"
PER_CLASS = {"train": 300, "test": 100}
FILES = {"train": "train", "test": "t10k"}
NUM_CLASSES = 10


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format: big-endian header, then uint8 data), gzip-compressed."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\0\0" or data[2] != 0x08:
        raise SystemExit(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise SystemExit(f"{path}: {array.size} bytes of data for shape {shape}")
    return array.reshape(shape)


def select(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Rows of the first `per_class` images of each class, in file order."""
    rows = [np.flatnonzero(labels == c)[:per_class] for c in range(NUM_CLASSES)]
    if any(len(r) < per_class for r in rows):
        raise SystemExit(f"fewer than {per_class} images in some class")
    return np.sort(np.concatenate(rows)).astype(np.int32)


def build(source: Path) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for split, prefix in FILES.items():
        images = read_idx(source / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz")
        rows = select(labels, PER_CLASS[split])
        arrays[f"{split}_images"] = np.ascontiguousarray(images[rows])
        arrays[f"{split}_labels"] = np.ascontiguousarray(labels[rows])
        arrays[f"{split}_index"] = rows
    return arrays


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive whose bytes depend only on the arrays (sorted members, fixed timestamps)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, arrays[name], allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue(), compresslevel=9)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=SOURCE, help=f"folder of the *-ubyte.gz files ({SOURCE})")
    parser.add_argument("--out", type=Path, default=OUT, help="the .npz to write (default: the packaged one)")
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        print(f"{args.source}: not found; on Debian: apt-get install dataset-fashion-mnist", file=sys.stderr)
        return 2
    arrays = build(args.source)
    data = npz_bytes(arrays)
    if args.check:
        with np.load(args.out, allow_pickle=False) as stored:
            same_arrays = set(stored.files) == set(arrays) and all(
                stored[k].dtype == v.dtype and np.array_equal(stored[k], v) for k, v in arrays.items()
            )
        same_bytes = args.out.read_bytes() == data
        print(f"{args.out}: arrays {'identical' if same_arrays else 'DIFFER'}, "
              f"bytes {'identical' if same_bytes else 'differ'}")
        return 0 if same_arrays else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(args.out)
    print(f"wrote {args.out}: {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
