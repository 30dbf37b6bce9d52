"""Small networks, ONNX files and VNNLIB texts made inside the verification tests (nothing downloaded or copied)."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn


def mlp(sizes: list[int], seed: int = 0, flatten: bool = False) -> nn.Module:
    """A ReLU MLP ``sizes[0] -> ... -> sizes[-1]`` with fixed random weights (float32, eval mode)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval()


def export_onnx(net: nn.Module, path: Path, input_shape: tuple[int, ...], dynamic: bool = True) -> Path:
    """``net`` as an ONNX file taking ``(B, *input_shape)`` (a fixed batch of 1 unless ``dynamic``)."""
    axes = {"x": {0: "batch"}, "y": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, *input_shape),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes=axes)
    return path


def vnnlib(lower: list[float], upper: list[float], outputs: int, disjuncts: list[list[str]]) -> str:
    """A VNNLIB text: the box ``lower <= X <= upper`` and the disjunction of conjunctions of the comparisons given
    (e.g. ``[["(>= Y_1 Y_0)"], ["(>= Y_2 Y_0)"]]``)."""
    lines = [f"(declare-const X_{i} Real)" for i in range(len(lower))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(outputs)]
    for i, (lo, hi) in enumerate(zip(lower, upper)):
        lines += [f"(assert (>= X_{i} {lo!r}))", f"(assert (<= X_{i} {hi!r}))"]
    terms = " ".join(f"(and {' '.join(c)})" for c in disjuncts)
    lines.append(f"(assert (or {terms}))")
    return "\n".join(lines) + "\n"


def grid_min(net: nn.Module, lower: list[float], upper: list[float], row: torch.Tensor, steps: int = 401) -> float:
    """Brute force over a 2-D box: the least ``row @ net(x)`` on a ``steps x steps`` grid (float64)."""
    a = torch.linspace(lower[0], upper[0], steps, dtype=torch.float64)
    b = torch.linspace(lower[1], upper[1], steps, dtype=torch.float64)
    points = torch.cartesian_prod(a, b)
    with torch.no_grad():
        return float((copy.deepcopy(net).double()(points) @ row.double()).min())
