"""Train the bundled MNIST models reproducibly and write ``mistered/models/weights/<name>.pt``.

Usage::

    python scripts/train_bundled.py                # both models
    python scripts/train_bundled.py mnist-fc       # one of them

Deterministic on CPU: one thread, fixed seeds, ``torch.use_deterministic_algorithms(True)``. Trains
on the 4,000 bundled training digits (``mnist-5k/train``) with Adam and a cosine learning-rate
schedule, random shifts of up to 2 pixels as augmentation, and records the accuracy on the 1,000
held-out test digits in the checkpoint's ``meta``.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mistered.data import iterate_batches, load_dataset
from mistered.models import accuracy, build_model, save_model

WEIGHTS = Path(__file__).resolve().parents[1] / "mistered" / "models" / "weights"
SETTINGS = {
    "mnist-cnn": {"arch_kwargs": {}, "epochs": 20, "lr": 2e-3, "weight_decay": 1e-4, "shift": 2},
    "mnist-fc": {"arch_kwargs": {}, "epochs": 20, "lr": 3e-3, "weight_decay": 1e-4, "shift": 0},
}
SEED = 0
BATCH_SIZE = 64

log = logging.getLogger("train_bundled")


def random_shift(x: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image of ``(B, C, H, W)`` by up to ``shift`` pixels (zero fill)."""
    if shift == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift))
    offsets = torch.randint(0, 2 * shift + 1, (b, 2), generator=generator)
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])


def train(name: str) -> None:
    config = SETTINGS[name]
    train_data, test_data = load_dataset("mnist-5k", "train"), load_dataset("mnist-5k", "test")
    torch.manual_seed(SEED)
    model = build_model(name, **config["arch_kwargs"])
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    steps = config["epochs"] * -(-len(train_data) // BATCH_SIZE)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config["lr"], total_steps=steps)
    generator = torch.Generator().manual_seed(SEED)
    start = time.perf_counter()
    for epoch in range(config["epochs"]):
        model.train()
        for x, y in iterate_batches(train_data, BATCH_SIZE, shuffle=True, generator=generator):
            loss = F.cross_entropy(model(random_shift(x, config["shift"], generator)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        model.eval()
        test_accuracy = accuracy(model, test_data)
        log.info("%s epoch %d: last loss %.4f, test accuracy %.4f", name, epoch + 1, loss.item(), test_accuracy)
    seconds = time.perf_counter() - start
    meta = {
        "dataset": "mnist-5k",
        "train_examples": len(train_data),
        "test_examples": len(test_data),
        "train_accuracy": accuracy(model, train_data),
        "test_accuracy": accuracy(model, test_data),
        "epochs": config["epochs"],
        "batch_size": BATCH_SIZE,
        "optimizer": f"Adam(lr={config['lr']}, weight_decay={config['weight_decay']}), one-cycle schedule",
        "augmentation": f"random shift up to {config['shift']} px" if config["shift"] else "none",
        "seed": SEED,
        "torch": str(torch.__version__),
        "train_seconds": round(seconds, 1),
        "command": f"python scripts/train_bundled.py {name}",
    }
    path = save_model(WEIGHTS / f"{name}.pt", model, name, config["arch_kwargs"], meta)
    log.info("%s: wrote %s (%d bytes), test accuracy %.4f", name, path, path.stat().st_size, meta["test_accuracy"])


def main(names: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for name in names or list(SETTINGS):
        if name not in SETTINGS:
            raise SystemExit(f"unknown bundled model {name!r}; choose from {', '.join(SETTINGS)}")
        train(name)


if __name__ == "__main__":
    main(sys.argv[1:])
