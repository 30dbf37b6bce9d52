"""Affine perturbations: per-example rotation, translation and isotropic scaling (kornia's conventions)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InvalidInputError
from ..validation import check_nonnegative
from .base import Perturbation, Threat
from .naming import format_number
from .sampling import affine_grid, sample

__all__ = ["Affine", "AffinePerturbation"]


@dataclass(frozen=True)
class Affine(Threat):
    """Rotate, translate and scale each image about its centre, within per-quantity budgets.

    The warp is what ``kornia.geometry.transform.warp_affine`` computes for the matrix of
    ``kornia.geometry.transform.get_rotation_matrix2d`` (plus the shift), with bilinear
    interpolation, ``align_corners=True`` (pixel centres at integer coordinates, rotation centre at
    ``((W - 1) / 2, (H - 1) / 2)``) and **zero padding**: pixels moved in from outside the image are
    black, the usual background for MNIST-style geometric attacks (Engstrom et al., 2019). It is
    computed as an affine grid + ``grid_sample`` (:func:`~mistered.threats.sampling.sample`),
    which agrees with kornia to float round-off and is bit-exact at the identity.

    Conventions:
        * a **positive angle rotates counter-clockwise as displayed** (y axis pointing down), so
          ``+90`` degrees agrees with ``torch.rot90(x, 1, dims=(2, 3))`` up to interpolation error;
        * translation ``(tx, ty)`` is a fraction of the image width/height (``0.1`` moves by 10% of
          ``W`` pixels horizontally, 10% of ``H`` vertically), bounded per coordinate (L∞);
        * the scale factor ``s`` obeys ``|log s| <= log(1 + max_scale)``, i.e.
          ``s`` in ``[1 / (1 + max_scale), 1 + max_scale]``.

    A zero budget disables its quantity: no parameter is made for it.

    Args:
        max_angle_deg: largest rotation, degrees.
        max_translation: largest shift per coordinate, fraction of the image size.
        max_scale: largest relative scaling (``0.1`` allows zooming by up to 10%).

    Example:
        >>> threat = Affine(max_angle_deg=10.0, max_translation=0.1)
        >>> x = torch.rand(4, 1, 28, 28)
        >>> warp = threat.perturbation(x).random_init_()
        >>> warp(x).shape, bool(warp.within_budget().all())
        (torch.Size([4, 1, 28, 28]), True)
    """

    max_angle_deg: float = 10.0
    max_translation: float = 0.1
    max_scale: float = 0.0

    def __post_init__(self) -> None:
        check_nonnegative(self.max_angle_deg, "affine max_angle_deg")
        check_nonnegative(self.max_translation, "affine max_translation")
        check_nonnegative(self.max_scale, "affine max_scale")
        if self.max_angle_deg > 180.0:
            raise InvalidInputError(f"affine max_angle_deg must be at most 180 degrees, got {self.max_angle_deg}")

    @property
    def max_log_scale(self) -> float:
        """The bound on ``|log s|``: ``log(1 + max_scale)``."""
        return math.log1p(self.max_scale)

    def perturbation(self, x: torch.Tensor) -> AffinePerturbation:
        return AffinePerturbation(self, x)

    @property
    def name(self) -> str:
        angle, shift, scale = self.max_angle_deg, self.max_translation, self.max_scale
        if shift == 0 and scale == 0 and angle > 0:
            return f"rotation({format_number(angle)}deg)"
        if angle == 0 and scale == 0 and shift > 0:
            return f"translation({format_number(shift)})"
        if angle == 0 and shift == 0 and scale > 0:
            return f"scale({format_number(scale)})"
        text = f"affine({format_number(angle)}deg,{format_number(shift)}"
        return text + (f",{format_number(scale)})" if scale > 0 else ")")


class AffinePerturbation(Perturbation):
    """Holds ``angle`` ``(B,)`` in degrees, ``translation`` ``(B, 2)`` as ``(tx, ty)`` fractions and ``log_scale`` ``(B,)``.

    Only the quantities with a positive budget exist as parameters.
    """

    threat: Affine

    def __init__(self, threat: Affine, x: torch.Tensor) -> None:
        super().__init__(threat, x)
        batch = x.shape[0]
        if threat.max_angle_deg > 0:
            self.angle = nn.Parameter(x.new_zeros(batch))
        if threat.max_translation > 0:
            self.translation = nn.Parameter(x.new_zeros(batch, 2))
        if threat.max_log_scale > 0:
            self.log_scale = nn.Parameter(x.new_zeros(batch))

    def _bounded(self) -> list[tuple[nn.Parameter, float]]:
        """Each existing parameter with its bound, in the parameter's units."""
        pairs = [("angle", self.threat.max_angle_deg), ("translation", self.threat.max_translation),
                 ("log_scale", self.threat.max_log_scale)]
        return [(getattr(self, key), bound) for key, bound in pairs if hasattr(self, key)]

    def _value(self, key: str, shape: tuple[int, ...]) -> torch.Tensor:
        param = getattr(self, key, None)
        return param if param is not None else self.reference.new_zeros(shape)

    def theta(self) -> torch.Tensor:
        """``(B, 2, 3)``: the map from output to source positions in ``[-1, 1]`` grid coordinates (as ``F.affine_grid`` takes).

        In pixels it is the inverse of ``p_out = c + s * R(angle) (p_src - c) + shift`` with ``c`` the
        image centre, ``R`` kornia's counter-clockwise rotation ``[[cos, sin], [-sin, cos]]`` (y axis
        down) and ``shift = (tx * W, ty * H)``; a grid coordinate is ``(p - c) / c`` per axis.
        """
        _, _, height, width = self.reference.shape
        batch = self.batch_size
        radians = torch.deg2rad(self._value("angle", (batch,)))
        inverse_scale = (-self._value("log_scale", (batch,))).exp()
        shift = self._value("translation", (batch, 2))
        half_w, half_h = max(width - 1, 1) / 2.0, max(height - 1, 1) / 2.0
        cos, sin = radians.cos() * inverse_scale, radians.sin() * inverse_scale
        dx, dy = shift[:, 0] * width, shift[:, 1] * height  # pixels
        first = torch.stack((cos, -sin * (half_h / half_w), (-cos * dx + sin * dy) / half_w), dim=1)
        second = torch.stack((sin * (half_w / half_h), cos, (-sin * dx - cos * dy) / half_h), dim=1)
        return torch.stack((first, second), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._bounded():
            return x
        height, width = x.shape[-2:]
        theta = self.theta()
        still = ~torch.cat([param.detach().reshape(param.shape[0], -1) for param, _ in self._bounded()], dim=1).any(dim=1)
        return sample(x, affine_grid(theta, height, width), "zeros", still).clamp(0.0, 1.0)

    @torch.no_grad()
    def random_init_(self, generator: torch.Generator | None = None) -> AffinePerturbation:
        for param, bound in self._bounded():
            noise = torch.rand(param.shape, generator=generator, device=param.device, dtype=param.dtype)
            param.copy_((2 * noise - 1) * bound)
        return self

    @torch.no_grad()
    def project_(self) -> AffinePerturbation:
        for param, bound in self._bounded():
            param.clamp_(-bound, bound)
        return self

    def sizes(self) -> dict[str, torch.Tensor]:
        batch = self.batch_size
        translation = self._value("translation", (batch, 2)).detach().abs().amax(dim=1)
        return {
            "angle_deg": self._value("angle", (batch,)).detach().abs(),
            "translation": translation,
            "log_scale": self._value("log_scale", (batch,)).detach().abs(),
        }

    def budgets(self) -> dict[str, float]:
        threat = self.threat
        return {"angle_deg": threat.max_angle_deg, "translation": threat.max_translation,
                "log_scale": threat.max_log_scale}

    @torch.no_grad()
    def scale_(self, t: torch.Tensor) -> AffinePerturbation:
        for param, _ in self._bounded():
            param.mul_(t.to(param).view(-1, *([1] * (param.dim() - 1))))
        return self

    @torch.no_grad()
    def step_(self, lr: float) -> AffinePerturbation:
        for param, bound in self._bounded():
            if param.grad is not None:
                param.add_(param.grad.sign(), alpha=lr * bound)
        return self
