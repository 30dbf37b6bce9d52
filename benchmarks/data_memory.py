"""Peak memory of streaming a data set through ``make_loader``, against loading it into memory first.

Generates CIFAR-size data sets (uint8 3x32x32, random pixels, 10 classes) of 1,000 and 50,000 images in a
temporary folder (never in the repository), as an uncompressed ``.npz`` (``np.savez``), a ``.pt``
(``torch.save``) and an image folder of PNGs. Each is then loaded and streamed once, in batches of 256, in a
fresh child process that reports the growth of its peak resident memory (``mistered.memory.peak_rss_growth``:
VmHWM after minus VmRSS before, so the interpreter and torch themselves are not counted). The child first
streams a small data set of the same format (512 images), so that code paths run for the first time (torch's
kernels, PIL's decoders: their pages of shared libraries count as resident memory) are not counted either.
The baseline is what every loader did before: read the ``.npz`` whole and convert it to one float32 tensor
(:class:`~mistered.data.LabeledImages`), then iterate over it.

Run: ``OMP_NUM_THREADS=1 python benchmarks/data_memory.py`` (prints a Markdown table; ``--sizes`` and
``--folder-sizes`` choose the data set sizes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _report import machine_description, update_section

from mistered.data import LabeledImages, iterate_batches, load_dataset, make_loader
from mistered.memory import peak_rss_growth

BATCH = 256
SHAPE = (32, 32, 3)
MODES = ("in-memory", "npz", "pt", "imagefolder")
WARM_UP = 512


def generate(folder: Path, n: int, with_images: bool) -> dict[str, Path]:
    """Write the data set of ``n`` images in every format (below ``folder``); returns ``{mode: path}``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    pixels = rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.int64)
    paths = {"npz": folder / f"cifar-{n}.npz", "pt": folder / f"cifar-{n}.pt"}
    np.savez(paths["npz"], images=pixels, labels=labels)
    torch.save({"images": torch.from_numpy(pixels), "labels": torch.from_numpy(labels)}, paths["pt"])
    paths["in-memory"] = paths["npz"]
    if with_images:
        paths["imagefolder"] = folder / f"cifar-{n}-png"
        for i, (image, label) in enumerate(zip(pixels, labels)):
            target = paths["imagefolder"] / f"class{label}" / f"{i:05d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(target, compress_level=1)
    return paths


def _in_memory(path: Path) -> LabeledImages:
    with np.load(path) as archive:
        pixels, labels = archive["images"], archive["labels"]
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    return LabeledImages(images, torch.from_numpy(labels), 10, "in-memory")


def child(mode: str, warm_up: Path, path: Path) -> dict:
    """Stream ``warm_up``, then load ``path`` the ``mode`` way and stream it once: peak RSS growth (bytes), seconds."""
    seen = {}

    def run(path: Path) -> None:
        if mode == "in-memory":
            data = _in_memory(path)
            batches = iterate_batches(data, BATCH)
        else:
            data = load_dataset(path)
            batches = make_loader(data, BATCH)
        total, count = 0.0, 0
        for x, y in batches:
            total += float(x.sum())
            count += len(y)
        seen.update(n=count, checksum=total)

    run(warm_up)
    start = time.perf_counter()
    growth = peak_rss_growth(lambda: run(path))
    return {"growth": growth, "seconds": time.perf_counter() - start, **seen}


def measure(mode: str, warm_up: Path, path: Path) -> dict:
    """Run :func:`child` in a fresh interpreter (so no earlier peak or cache is counted)."""
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(warm_up), str(path)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,50000", help="data set sizes (comma list)")
    parser.add_argument("--folder-sizes", default="1000,50000", help="sizes also written as image folders")
    parser.add_argument("--record", action="store_true", help="write the table to benchmarks/RESULTS.md")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "WARM_UP", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), Path(args.child[2]))))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    folder_sizes = {int(s) for s in args.folder_sizes.split(",") if s}
    rows = []
    with tempfile.TemporaryDirectory(prefix="mistered-data-memory-") as tmp:
        warm = generate(Path(tmp) / "warm-up", WARM_UP, True)
        for n in sizes:
            start = time.perf_counter()
            paths = generate(Path(tmp) / str(n), n, n in folder_sizes)
            print(f"generated {n} images in {time.perf_counter() - start:.1f} s", file=sys.stderr)
            results = {mode: measure(mode, warm[mode], paths[mode]) for mode in MODES if mode in paths}
            base = results["in-memory"]
            for mode, result in results.items():
                assert result["n"] == n and abs(result["checksum"] - base["checksum"]) <= 1e-6 * abs(base["checksum"])
                rows.append(f"| {n:,} | {mode} | {_mb(result['growth'])} | {result['growth'] / base['growth']:.3f} "
                            f"| {result['seconds']:.2f} |")
    float_mb = _mb(4 * np.prod(SHAPE) * max(sizes))
    text = "\n".join([
        f"Peak RSS growth while loading and streaming once (batches of {BATCH}); {machine_description()}.",
        f"Float32 pixels of {max(sizes):,} images: {float_mb} MB.",
        "",
        "| images | how | peak RSS growth (MB) | ratio to in-memory | seconds |",
        "|---:|---|---:|---:|---:|",
        *rows,
    ])
    print(text)
    if args.record:
        update_section("data_memory", "## Streaming data: peak memory vs data set size (`benchmarks/data_memory.py`)\n\n"
                       + text + "\n")


if __name__ == "__main__":
    main()
