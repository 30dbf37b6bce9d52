"""Learning curves of a training run as a PNG (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from ..io import atomic_write

__all__ = ["plot_learning_curves"]


def plot_learning_curves(history: list[dict[str, Any]], path: str | os.PathLike, title: str = "training") -> Path:
    """Draw per-epoch training loss and accuracies (train, held-out clean, held-out under the threat).

    Args:
        history: one dict per epoch with ``epoch``, ``train_loss``, ``train_acc``, ``clean_acc`` and
            optionally ``robust_acc`` (accuracies in ``[0, 1]``).
        path: where to write the PNG (atomically).
        title: the figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_acc.plot(epochs, [h["train_acc"] for h in history], marker="o", label="train (objective)")
    ax_acc.plot(epochs, [h["clean_acc"] for h in history], marker="o", label="held-out clean")
    if any(h.get("robust_acc") is not None for h in history):
        robust = [h.get("robust_acc") for h in history]
        ax_acc.plot(epochs, [float("nan") if r is None else r for r in robust], marker="o", label="held-out under threat")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1), title="accuracy")
    ax_acc.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))
