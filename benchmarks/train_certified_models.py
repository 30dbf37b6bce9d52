"""Regenerate the bundled certifiable models (and run the longer L∞-dist recipe) with the library's training loop.

    python benchmarks/train_certified_models.py lmt          # -> mistered/models/weights/mnist-lmt.pt
    python benchmarks/train_certified_models.py linf-dist    # -> mistered/models/weights/mnist-linf-dist.pt
    python benchmarks/train_certified_models.py linf-dist --data fashion-mnist --depth 5 --width 5120 \\
        --epochs 450 --batch-size 512 --out fmnist-linf-dist.pt   # the full v2 recipe (needs a GPU)

Each run prints the test clean and certified accuracies and records them (and this command) in the
checkpoint's ``meta``. Uses ``mistered.train.fit`` with the objectives of ``mistered.train.lmt`` and
``mistered.train.linf_dist``; equivalent to ``mistered train --method lmt|linf-dist`` with these settings.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from mistered.certify.linf_dist_nets import certify_linf_dist
from mistered.certify.lmt import LMTCertifier
from mistered.data import load_dataset
from mistered.device import resolve_device
from mistered.models import build_model, save_model
from mistered.train import TrainConfig, fit
from mistered.train.linf_dist import LinfDistObjective
from mistered.train.lmt import LMTObjective

WEIGHTS = Path(__file__).resolve().parents[1] / "mistered" / "models" / "weights"


def _certify(certify, model, data, eps_list, batch=500) -> dict[str, float]:
    certs = [certify(model, data.images[i : i + batch], data.labels[i : i + batch]) for i in range(0, len(data.labels), batch)]
    correct = torch.cat([c.predictions == c.labels for c in certs])
    radius = torch.cat([c.radius for c in certs])
    result = {"clean_acc": float(correct.float().mean())}
    result.update({f"certified_acc@{eps:g}": float((correct & (radius > eps)).float().mean()) for eps in eps_list})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method", choices=["lmt", "linf-dist"])
    parser.add_argument("--data", default="mnist-5k")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--depth", type=int, default=3, help="linf-dist: L∞-dist layers")
    parser.add_argument("--width", type=int, default=None, help="linf-dist: hidden width [256]; lmt: CNN width [16]")
    parser.add_argument("--eps-train", type=float, default=0.3, help="linf-dist: training radius")
    parser.add_argument("--c", type=float, default=1.0, help="lmt: target L2 radius")
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--half", action="store_true", help="store the weights in float16 (smaller file)")
    parser.add_argument("--out", default=None, help="checkpoint path [default: the bundled weights file]")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    train_set, test_set = load_dataset(args.data, "train"), load_dataset(args.data, "test")
    if args.n_train:
        train_set = train_set.subset(args.n_train)
    torch.manual_seed(0)
    if args.method == "lmt":
        arch, arch_kwargs = "mnist-cnn", {"num_classes": train_set.num_classes, "width": args.width or 16, "hidden": 100}
        objective = LMTObjective(c=args.c, warmup=0.2)
        config = TrainConfig(epochs=args.epochs or 10, batch_size=args.batch_size or 64, lr=args.lr or 1e-3,
                             optimizer="adam", weight_decay=0.0, eval_n=0)
        certify = lambda m, x, y: LMTCertifier(m).certify(x.to(device), y.to(device))  # noqa: E731
        eps_list, name = (0.1, 0.3, 0.5, 1.0), "mnist-lmt"
    else:
        shape = train_set.images.shape[1:]
        arch, arch_kwargs = "linf-dist-net", {"in_channels": shape[0], "image_size": shape[1],
                                               "num_classes": train_set.num_classes, "depth": args.depth, "width": args.width or 256}
        objective = LinfDistObjective(eps=args.eps_train)
        config = TrainConfig(epochs=args.epochs or 20, batch_size=args.batch_size or 128, lr=args.lr or 0.01,
                             optimizer="adam", weight_decay=0.0, eval_n=0)
        certify = lambda m, x, y: certify_linf_dist(m, x.to(device), y.to(device))  # noqa: E731
        eps_list, name = (0.1, 0.2, 0.3), "mnist-linf-dist"
    model = build_model(arch, **arch_kwargs).to(device)
    start = time.perf_counter()
    result = fit(model, objective, (train_set.images, train_set.labels), (test_set.images, test_set.labels), config,
                 progress=False)
    seconds = time.perf_counter() - start
    model = result.model.eval()
    if args.method == "lmt":
        certifier = LMTCertifier(model)
        certify = lambda m, x, y: certifier.certify(x.to(device), y.to(device))  # noqa: E731
    metrics = _certify(certify, model, test_set, eps_list)
    meta = {"data": args.data, "n_train": len(train_set.labels), "method": args.method, "train_seconds": round(seconds, 1),
            "command": "python benchmarks/train_certified_models.py " + " ".join(sys.argv[1:]),
            "test": {k: round(v, 4) for k, v in metrics.items()}, "device": str(device)}
    if args.half:
        model = model.half()
    out = Path(args.out) if args.out else WEIGHTS / f"{name}.pt"
    save_model(out, model.cpu(), arch, arch_kwargs, meta)
    print(f"{out}: {meta}")


if __name__ == "__main__":
    main()
