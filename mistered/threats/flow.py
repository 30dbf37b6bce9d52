"""Spatial flow perturbations (stAdv, Xiao et al. 2018): a per-pixel displacement field, bilinearly resampled."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InvalidInputError
from ..validation import check_nonnegative
from .base import Perturbation, Threat
from .naming import format_number
from .sampling import identity_grid, sample

__all__ = ["Flow", "FlowPerturbation", "flow_smoothness", "smooth_field", "warp_by_flow"]


@dataclass(frozen=True)
class Flow(Threat):
    """Move every pixel's sampling location by its own displacement: ``x_adv[p] = x[p + f(p)]``.

    Units: the field ``f`` of shape ``(B, 2, H, W)`` (channel 0 horizontal, 1 vertical) is in
    **normalised grid units with** ``align_corners=True`` semantics: the image spans ``[-1, 1]`` from
    the first to the last pixel centre, so a displacement ``eps`` is ``eps * (W - 1) / 2`` pixels
    horizontally (``eps * (H - 1) / 2`` vertically), i.e. ``eps / 2`` of the image extent. This is
    mister_ed's convention (its flow lives on ``affine_grid`` coordinates); ``flow(0.05)`` moves a
    28×28 digit by at most 0.675 pixels per coordinate. Sampling is bilinear with border padding
    (coordinates are clamped to the image, as stAdv does).

    Budgets, both hard:
        * ``|f| <= eps`` on each component of each pixel (L∞);
        * if ``smoothness`` is given, :func:`flow_smoothness` ``(f) <= smoothness``: the stAdv flow
          loss (sum over neighbouring pixel pairs of the Euclidean norm of the flow difference)
          divided by ``H * W``, in grid units per pixel. It is positively homogeneous of degree 1,
          so projection onto it is a closed-form per-example scaling.

    With a smoothness bound, steps and random starts are smooth fields (the gradient, or uniform
    noise, blurred by a Gaussian of one pixel and scaled so its largest component moves by the step):
    a sign step is the roughest field there is, and the projection would scale it down to almost
    nothing (PGD success on the bundled CNN at ``flow(0.05,smoothness=0.01)``: 24% with sign steps,
    38% with smooth ones).

    Args:
        eps: per-pixel L∞ bound on the displacement, grid units.
        smoothness: bound on the per-pixel flow smoothness loss, or ``None`` for no bound.

    Example:
        >>> threat = Flow(0.05, smoothness=0.01)
        >>> x = torch.rand(2, 1, 12, 12)
        >>> field = threat.perturbation(x).random_init_()
        >>> bool(field.within_budget().all()), torch.equal(threat.perturbation(x)(x), x)
        (True, True)
    """

    eps: float = 0.05
    smoothness: float | None = None

    def __post_init__(self) -> None:
        check_nonnegative(self.eps, "flow eps")
        if self.smoothness is not None:
            check_nonnegative(self.smoothness, "flow smoothness")

    def perturbation(self, x: torch.Tensor) -> FlowPerturbation:
        return FlowPerturbation(self, x)

    @property
    def name(self) -> str:
        if self.smoothness is None:
            return f"flow({format_number(self.eps)})"
        return f"flow({format_number(self.eps)},smoothness={format_number(self.smoothness)})"


def flow_smoothness(flow: torch.Tensor) -> torch.Tensor:
    """The stAdv flow loss per pixel, ``(B,)``, for a field of shape ``(B, 2, H, W)``.

    ``sum over horizontally and vertically adjacent pixel pairs (p, q) of ||f(p) - f(q)||_2``,
    divided by ``H * W``; each pair counts once (stAdv sums over the 4-neighbourhood, which counts
    each pair twice). Non-differentiable where a difference is exactly zero, like any norm.
    """
    height, width = flow.shape[-2:]
    total = 0.0
    for step in (flow[..., :, 1:] - flow[..., :, :-1], flow[..., 1:, :] - flow[..., :-1, :]):
        # the two components spelled out: a norm over the short channel dimension is ~50x slower on CPU
        total = total + (step[:, 0].square() + step[:, 1].square()).sqrt().flatten(1).sum(dim=1)
    return total / (height * width)


def smooth_field(field: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Each channel of ``field`` ``(B, C, H, W)`` blurred by a Gaussian of ``sigma`` pixels (replicate padding).

    Computed as ``M_H @ field @ M_W^T`` with banded blur matrices (the padding folded into their edges):
    two small matrix products, much faster on CPU than a grouped convolution.
    """
    height, width = field.shape[-2:]
    rows = _blur_matrix(height, sigma, field.dtype, field.device)
    cols = _blur_matrix(width, sigma, field.dtype, field.device)
    return rows @ field @ cols.T


@functools.lru_cache(maxsize=16)
def _blur_matrix(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(size, size)``: 1-D Gaussian blur (taps within ``3 sigma``) with replicate padding, as a matrix."""
    radius = max(1, int(round(3 * sigma)))
    taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float64).square() / (2 * sigma**2))
    taps = taps / taps.sum()
    matrix = torch.zeros(size, size, dtype=torch.float64)
    positions = torch.arange(size)
    for offset, weight in zip(range(-radius, radius + 1), taps):
        matrix[positions, (positions + offset).clamp(0, size - 1)] += weight
    return matrix.to(dtype=dtype, device=device)


def _peak_normalized(field: torch.Tensor) -> torch.Tensor:
    """``field`` divided per example by its largest absolute entry (a zero field stays zero)."""
    peak = field.abs().flatten(1).amax(dim=1).clamp_min(1e-12)
    return field / peak.view(-1, *([1] * (field.dim() - 1)))


def warp_by_flow(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Bilinear backward warp ``out[p] = x[p + flow(p)]`` with border padding; exact at zero flow.

    Args:
        x: images ``(B, C, H, W)``.
        flow: displacements ``(B, 2, H, W)`` in grid units (see :class:`Flow`).

    Returns:
        ``(B, C, H, W)``, ``grid_sample(x, identity_grid + flow, padding_mode="border",
        align_corners=True)``, and bit for bit ``x`` for an example whose flow is zero.
    """
    grid = identity_grid(*x.shape[-2:], flow) + flow.permute(0, 2, 3, 1)
    return sample(x, grid, "border", still=~flow.detach().flatten(1).any(dim=1))


class FlowPerturbation(Perturbation):
    """Holds ``flow`` of shape ``(B, 2, H, W)``, grid units."""

    threat: Flow

    def __init__(self, threat: Flow, x: torch.Tensor) -> None:
        super().__init__(threat, x)
        if x.dim() != 4:
            raise InvalidInputError(f"flow needs images of shape (B, C, H, W), got {tuple(x.shape)}")
        self.flow = nn.Parameter(x.new_zeros(x.shape[0], 2, *x.shape[-2:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return warp_by_flow(x, self.flow).clamp(0.0, 1.0)

    @torch.no_grad()
    def random_init_(self, generator: torch.Generator | None = None) -> FlowPerturbation:
        """Uniform in the L∞ box (smoothed first, if there is a smoothness bound), then projected."""
        noise = 2 * torch.rand(self.flow.shape, generator=generator, device=self.flow.device, dtype=self.flow.dtype) - 1
        if self.threat.smoothness is not None:
            noise = _peak_normalized(smooth_field(noise))
        self.flow.copy_(noise * self.threat.eps)
        return self.project_()

    @torch.no_grad()
    def project_(self) -> FlowPerturbation:
        """Clamp to the L∞ box, then scale into the smoothness bound (clamping never increases smoothness)."""
        self.flow.clamp_(-self.threat.eps, self.threat.eps)
        if self.threat.smoothness is not None:
            loss = flow_smoothness(self.flow)
            factor = (self.threat.smoothness / loss.clamp_min(1e-12)).clamp(max=1.0)
            self.flow.mul_(factor.view(-1, 1, 1, 1))
        return self

    def sizes(self) -> dict[str, torch.Tensor]:
        flow = self.flow.detach()
        sizes = {"flow_linf": flow.abs().flatten(1).amax(dim=1)}
        if self.threat.smoothness is not None:
            sizes["flow_smoothness"] = flow_smoothness(flow)
        return sizes

    def budgets(self) -> dict[str, float]:
        budgets = {"flow_linf": self.threat.eps}
        if self.threat.smoothness is not None:
            budgets["flow_smoothness"] = self.threat.smoothness
        return budgets

    @torch.no_grad()
    def scale_(self, t: torch.Tensor) -> FlowPerturbation:
        self.flow.mul_(t.to(self.flow).view(-1, 1, 1, 1))
        return self

    @torch.no_grad()
    def step_(self, lr: float) -> FlowPerturbation:
        """A sign step (L∞ geometry); with a smoothness bound, the smoothed gradient scaled to a peak of 1 (see :class:`Flow`)."""
        grad = self.flow.grad
        if grad is None:
            return self
        direction = grad.sign() if self.threat.smoothness is None else _peak_normalized(smooth_field(grad))
        self.flow.add_(direction, alpha=lr * self.threat.eps)
        return self
