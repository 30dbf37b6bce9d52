"""Gaussian noise streams whose draws do not depend on how they are batched.

Every example gets its own stream, a ``torch.Generator`` on the model's device seeded with one 62-bit key. The
stream always draws in chunks of :data:`CHUNK` samples (``randn(CHUNK, *shape)``) and hands them out in any
portions, so the ``j``-th draw of an example is a function of its key and ``j`` only: neither the number of draws
per forward pass nor the other examples in a batch change it. The keys come from the caller's generator, one
:func:`draw_keys` call per example, so certifying a batch at once or in parts gives the same noise too.
"""

from __future__ import annotations

import torch

__all__ = ["CHUNK", "NoiseStream", "draw_keys", "gaussian_noise"]

#: Samples per draw from a stream's generator (fixed: it is part of what the noise is).
CHUNK = 64

_KEY_RANGE = 2**62


def draw_keys(generator: torch.Generator, examples: int, streams: int) -> list[list[int]]:
    """``examples`` lists of ``streams`` independent seeds, drawn one example at a time from ``generator``."""
    return [
        torch.randint(_KEY_RANGE, (streams,), generator=generator, device=generator.device).tolist()
        for _ in range(examples)
    ]


def gaussian_noise(shape: tuple[int, ...], sigma: float, seed: int, device: torch.device | str,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``sigma * N(0, I)`` of ``shape``, drawn on ``device`` from a generator seeded with ``seed``."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(shape, generator=generator, device=device, dtype=dtype).mul_(sigma)


class NoiseStream:
    """The noise draws ``sigma * N(0, I)`` of one example, in order.

    Args:
        key: the stream's seed. shape: the shape of one input (e.g. ``(C, H, W)``).
        sigma: the noise standard deviation (pixel units). device, dtype: where and how the noise is made.
    """

    def __init__(self, key: int, shape: tuple[int, ...], sigma: float, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.shape, self.sigma, self.device, self.dtype = tuple(shape), float(sigma), device, dtype
        self.generator = torch.Generator(device=device).manual_seed(key)
        self._left = torch.empty((0, *self.shape), device=device, dtype=dtype)

    def take(self, count: int) -> torch.Tensor:
        """The next ``count`` draws, ``(count, *shape)``."""
        parts, need = [], count
        while need > 0:
            if not len(self._left):
                self._left = torch.randn((CHUNK, *self.shape), generator=self.generator, device=self.device,
                                         dtype=self.dtype).mul_(self.sigma)
            part, self._left = self._left[:need], self._left[need:]
            parts.append(part)
            need -= len(part)
        return parts[0] if len(parts) == 1 else torch.cat(parts)
