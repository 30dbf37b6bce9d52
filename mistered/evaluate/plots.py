"""Image grids shared by the commands: originals, adversarial images and their magnified differences."""

from __future__ import annotations

from pathlib import Path

import torch

from ..attacks.result import AttackResult

__all__ = ["plot_examples"]


def plot_examples(result: AttackResult, path: Path, count: int = 8) -> Path:
    """Save a grid: originals, adversarial images and ``|x_adv - x|`` magnified to full scale (successes first).

    ``result`` needs ``x``, ``x_adv`` ``(B, C, H, W)``, ``labels``, ``predictions``, ``clean_correct`` and ``success``
    (an :class:`~mistered.attacks.AttackResult`); at most ``count`` columns; PNG written with the Agg backend.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = torch.argsort((result.clean_correct & result.success).float(), descending=True, stable=True)[:count]
    cols = max(int(order.numel()), 1)
    fig, axes = plt.subplots(3, cols, figsize=(1.6 * cols, 5.0), squeeze=False)
    for row, title in enumerate(("original", "adversarial", "|difference|")):
        axes[row][0].set_ylabel(title)
    for col, i in enumerate(order.tolist()):
        diff = (result.x_adv[i] - result.x[i]).abs()
        scale = float(diff.max())
        images = (result.x[i], result.x_adv[i], diff / scale if scale > 0 else diff)
        for row, image in enumerate(images):
            array = image.detach().cpu().permute(1, 2, 0).numpy()
            axes[row][col].imshow(array[..., 0] if array.shape[2] == 1 else array, cmap="gray", vmin=0, vmax=1)
        label = f"{int(result.labels[i])}→{int(result.predictions[i])}"
        axes[0][col].set_title(label + (f"\n×{1 / scale:.0f}" if scale > 0 else ""), fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
