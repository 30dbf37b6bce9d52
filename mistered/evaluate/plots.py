"""Image grids shared by the commands: originals, adversarial images and their magnified differences."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..attacks.result import AttackResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["examples_figure", "plot_examples"]


def examples_figure(result: AttackResult, count: int = 8, distance: str | None = None) -> Figure:
    """A grid: originals above the adversarial images above ``|x_adv - x|`` magnified to full scale (successes first).

    ``result`` needs ``x``, ``x_adv`` ``(B, C, H, W)``, ``labels``, ``predictions``, ``clean_correct`` and ``success``
    (an :class:`~mistered.attacks.AttackResult`); at most ``count`` columns. Each column is titled
    ``label→prediction`` and the magnification of its difference; with ``distance`` (a key of ``result.distances``,
    e.g. ``"lpips"``) each adversarial image is captioned with its distance.
    """
    from matplotlib.figure import Figure

    order = torch.argsort((result.clean_correct & result.success).float(), descending=True, stable=True)[:count]
    cols = max(int(order.numel()), 1)
    fig = Figure(figsize=(1.6 * cols, 5.3))
    axes = fig.subplots(3, cols, squeeze=False)
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
        if distance in result.distances:
            axes[1][col].set_xlabel(f"{distance} {float(result.distances[distance][i]):.4f}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_examples(result: AttackResult, path: Path, count: int = 8, distance: str | None = None) -> Path:
    """Write :func:`examples_figure` to ``path`` (PNG, no display needed); returns ``path``."""
    fig = examples_figure(result, count, distance)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
