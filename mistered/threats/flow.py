"""Spatial flow perturbations (stAdv, Xiao et al. 2018): a per-pixel displacement field, bilinearly resampled."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InvalidInputError
from ..validation import check_nonnegative
from .base import Perturbation, Threat
from .naming import format_number
from .sampling import bilinear_sample

__all__ = ["Flow", "FlowPerturbation", "flow_smoothness", "warp_by_flow"]


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
    right = (flow[..., :, 1:] - flow[..., :, :-1]).norm(dim=1).flatten(1).sum(dim=1)
    down = (flow[..., 1:, :] - flow[..., :-1, :]).norm(dim=1).flatten(1).sum(dim=1)
    return (right + down) / (height * width)


def warp_by_flow(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Bilinear backward warp ``out[p] = x[p + flow(p)]`` with border padding; exact at zero flow.

    Args:
        x: images ``(B, C, H, W)``.
        flow: displacements ``(B, 2, H, W)`` in grid units (see :class:`Flow`).

    Returns:
        ``(B, C, H, W)``, equal to ``grid_sample(x, identity_grid + flow, padding_mode="border",
        align_corners=True)`` up to round-off, and bit-for-bit ``x`` for a zero field.
    """
    height, width = x.shape[-2:]
    rows = torch.arange(height, device=x.device, dtype=flow.dtype).view(1, height, 1)
    cols = torch.arange(width, device=x.device, dtype=flow.dtype).view(1, 1, width)
    px = cols + flow[:, 0] * ((width - 1) / 2)
    py = rows + flow[:, 1] * ((height - 1) / 2)
    return bilinear_sample(x, px, py, padding="border")


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
        """Uniform in the L∞ box, then scaled down per example into the smoothness bound if there is one."""
        noise = torch.rand(self.flow.shape, generator=generator, device=self.flow.device, dtype=self.flow.dtype)
        self.flow.copy_((2 * noise - 1) * self.threat.eps)
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
        if self.flow.grad is not None:
            self.flow.add_(self.flow.grad.sign(), alpha=lr * self.threat.eps)
        return self
