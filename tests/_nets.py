"""Shared builders of small random networks for the certification tests."""

import torch

from mistered.certify.plnet import PiecewiseLinearNet


def random_box_crossing_net(seed: int, sizes: tuple[int, ...]) -> PiecewiseLinearNet:
    """Random float64 ReLU net whose ReLU hyperplanes and decision boundaries cross the unit box."""
    gen = torch.Generator().manual_seed(seed)
    weights, biases = [], []
    for i in range(len(sizes) - 1):
        w = torch.randn(sizes[i + 1], sizes[i], generator=gen, dtype=torch.float64)
        b = 0.3 * torch.randn(sizes[i + 1], generator=gen, dtype=torch.float64)
        weights.append(w)
        biases.append(b - w @ torch.full((sizes[i],), 0.5, dtype=torch.float64) if i == 0 else b)
    return PiecewiseLinearNet(weights, biases, (sizes[0],))
