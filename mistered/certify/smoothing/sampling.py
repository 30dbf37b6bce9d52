"""Monte-Carlo votes of a base classifier under Gaussian noise, batched over draws and over examples.

:func:`sample_counts` is Cohen et al.'s ``SampleUnderNoise``: for each example ``x_i`` it classifies ``num``
noisy copies ``x_i + delta`` (``delta ~ N(0, sigma^2 I)``, not clipped to ``[0, 1]``) and counts the votes per
class. The copies of consecutive examples are packed into forward passes of at most ``batch`` inputs, so small
``num`` (the selection draws) still fills the device; the noise comes from :class:`~.noise.NoiseStream`, so the
counts do not depend on ``batch``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ...validation import check_logits
from .noise import NoiseStream

__all__ = ["sample_counts", "evaluating"]


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode without gradients; every submodule's training flag is restored on exit."""
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for module, mode in zip(model.modules(), modes):
            module.train(mode)


class _Votes:
    """Forward passes of a filled buffer and the ``(B, K)`` vote counts they add up to."""

    def __init__(self, model: nn.Module, x: torch.Tensor, batch: int) -> None:
        self.model, self.examples = model, len(x)
        self.inputs = torch.empty((batch, *x.shape[1:]), device=x.device, dtype=x.dtype)
        self.owners = torch.empty(batch, dtype=torch.int64, device=x.device)
        self.filled = 0
        self.counts: torch.Tensor | None = None

    def add(self, index: int, x: torch.Tensor, noise: torch.Tensor) -> None:
        """Queue ``x + noise`` (``noise`` ``(m, *shape)``) as ``m`` draws of example ``index``."""
        rows = slice(self.filled, self.filled + len(noise))
        torch.add(noise, x, out=self.inputs[rows])
        self.owners[rows] = index
        self.filled = rows.stop

    @property
    def room(self) -> int:
        return len(self.inputs) - self.filled

    def flush(self) -> None:
        """Classify the queued draws and add their votes."""
        if not self.filled:
            return
        logits = self.model(self.inputs[: self.filled])
        classes = check_logits(logits, what="the base classifier")
        if self.counts is None:
            self.counts = torch.zeros(self.examples * classes, dtype=torch.int64, device=logits.device)
        slots = self.owners[: self.filled].to(logits.device) * classes + logits.argmax(dim=1)
        self.counts += torch.bincount(slots, minlength=self.counts.numel())
        self.filled = 0


def sample_counts(model: nn.Module, x: torch.Tensor, keys: Sequence[int], num: int, sigma: float,
                  batch: int) -> torch.Tensor:
    """Votes of ``model`` on ``num`` noisy copies of each example.

    Args:
        model: the base classifier ``(N, *shape) -> (N, K)`` logits, on ``x``'s device (run in eval mode
            without gradients; its training flags are restored).
        x: inputs ``(B, *shape)``; keys: ``B`` seeds, one noise stream per example.
        num: noisy copies per example (``>= 1``); sigma: the noise standard deviation (pixel units).
        batch: the largest number of inputs in one forward pass.

    Returns:
        ``(B, K)`` int64 counts on ``x``'s device, each row summing to ``num``; ``(0, 0)`` when ``B == 0``.
    """
    shape = tuple(x.shape[1:])
    votes = _Votes(model, x, max(1, min(batch, num * len(x))))
    with evaluating(model):
        for index, key in enumerate(keys):
            stream = NoiseStream(key, shape, sigma, x.device, x.dtype)
            left = num
            while left:
                taken = min(left, votes.room)
                votes.add(index, x[index], stream.take(taken))
                left -= taken
                if not votes.room:
                    votes.flush()
        votes.flush()
    if votes.counts is None:
        return torch.zeros((len(x), 0), dtype=torch.int64, device=x.device)
    return votes.counts.view(len(x), -1)
