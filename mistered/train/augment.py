"""Data augmentation for the training loop, batched and driven by the loop's checkpointed generator."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["random_shift"]


def random_shift(x: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``shift`` pixels in each direction (zero fill), independently.

    Args:
        x: images ``(B, C, H, W)``.
        shift: the largest translation in pixels (``0`` returns ``x``).
        generator: a CPU generator drawing the ``(B, 2)`` offsets (so a resumed run draws the same).

    Returns:
        The shifted images, ``(B, C, H, W)``.
    """
    if shift <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift))
    offsets = torch.randint(0, 2 * shift + 1, (b, 2), generator=generator).to(x.device)
    rows = torch.arange(h, device=x.device) + offsets[:, :1]  # (B, H)
    cols = torch.arange(w, device=x.device) + offsets[:, 1:]  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
