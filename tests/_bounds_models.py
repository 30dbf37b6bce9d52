"""Small networks of every architecture family the bound engine supports, and attacks on their margins, shared by
the bound-engine tests (float64, fixed seeds)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mistered.models.linf_dist.layers import LinfDistConv2d
from mistered.models.linf_dist.hybrid import LinfDistHybrid
from mistered.models import Normalized

SHAPE = (2, 6, 6)  # (C, H, W) of the test images
CLASSES = 3


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(72, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(),
                                 nn.Linear(12, CLASSES))

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    """Strided, dilated and grouped convolutions, LeakyReLU, a functional flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2)
        self.fc = nn.Linear(4 * 3 * 3, CLASSES)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        h = F.leaky_relu(self.c2(h), 0.1)
        return self.fc(h.view(h.size(0), -1))


class ResidualBN(nn.Module):
    """Pre-activation residual blocks with BatchNorm (eval, non-trivial running statistics), inside Normalized."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.bn1, self.bn2 = nn.BatchNorm2d(4), nn.BatchNorm2d(4)
        self.c1, self.c2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.fc = nn.Linear(4 * 6 * 6, CLASSES)
        for bn in (self.bn1, self.bn2):
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)

    def forward(self, x):
        h = self.stem(x)
        h = h + self.c2(F.relu(self.bn2(self.c1(F.relu(self.bn1(h))))))
        return self.fc(torch.flatten(h.relu(), 1))


class Pooling(nn.Module):
    """Max and average pooling, adaptive average pooling, a transposed convolution and Hardtanh."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(2, 4, 3, padding=1)
        self.up = nn.ConvTranspose2d(4, 3, 2, stride=2)
        self.fc = nn.Linear(3 * 3 * 3, CLASSES)

    def forward(self, x):
        h = F.relu(self.c(x))
        h = F.max_pool2d(h, 3, stride=2, padding=1) + nn.functional.avg_pool2d(h, 2)  # (4, 3, 3)
        h = F.hardtanh(self.up(h), -0.5, 1.0)  # (3, 6, 6)
        h = F.adaptive_avg_pool2d(h, 3)
        return self.fc(h.flatten(1))


class Concat(nn.Module):
    """Two branches concatenated along channels, a permute and a clamp."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 3, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 1)
        self.fc = nn.Linear(5 * 6 * 6, CLASSES)

    def forward(self, x):
        h = torch.cat([self.a(x).relu(), F.relu6(self.b(x) * 3.0)], dim=1)
        h = h.permute(0, 2, 3, 1).clamp(min=-0.2)
        return self.fc(h.reshape(x.shape[0], -1))


class LinfDistConvNet(nn.Module):
    """An L∞-dist convolution in front of a ReLU head."""

    def __init__(self) -> None:
        super().__init__()
        self.dist = LinfDistConv2d(2, 3, 3, padding=1, identity_val=1.0, std=0.3)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 36, 8), nn.ReLU(), nn.Linear(8, CLASSES))

    def forward(self, x):
        return self.head(self.dist(x))


def hybrid() -> nn.Module:
    return LinfDistHybrid(SHAPE, CLASSES, depth=2, width=10, head_hidden=8, identity_val=1.0, std=0.3)


def normalized_residual() -> nn.Module:
    return Normalized(ResidualBN(), mean=[0.4, 0.5], std=[0.3, 0.2])


#: The six architecture families (name -> builder).
ARCHITECTURES = {
    "mlp": MLP, "cnn": CNN, "residual-bn": normalized_residual, "pooling": Pooling, "cat": Concat,
    "linf-dist-hybrid": hybrid, "linf-dist-conv": LinfDistConvNet,
}


def build(name: str, seed: int = 0) -> nn.Module:
    """The float64, eval-mode network ``name`` with the weights of ``seed``."""
    torch.manual_seed(seed)
    return ARCHITECTURES[name]().double().eval()


def images(n: int, seed: int = 1) -> torch.Tensor:
    """``(n, *SHAPE)`` float64 images in ``[0, 1]``, some pixels on the box's faces."""
    x = torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x[:, 0, 0, :2] = torch.tensor([0.0, 1.0], dtype=torch.float64)
    return x


def project(delta: torch.Tensor, x: torch.Tensor, eps, norm: str) -> torch.Tensor:
    """``delta`` moved into the ``norm`` ball of radius ``eps`` (a float or ``(B,)``) and then into ``[0, 1] - x``
    (still in the ball)."""
    flat = delta.flatten(1)
    eps = torch.as_tensor(eps, dtype=flat.dtype).reshape(-1, 1).expand(flat.shape[0], 1)
    if norm == "linf":
        flat = torch.maximum(torch.minimum(flat, eps), -eps)
    elif norm == "l2":
        flat = flat * (eps / torch.maximum(flat.norm(dim=1, keepdim=True), eps)).nan_to_num(0.0).clamp(max=1.0)
    else:  # l1: the sort-based projection onto the ball
        size = flat.abs()
        outside = size.sum(1) > eps[:, 0]
        ordered = size.sort(dim=1, descending=True).values
        cumulative = ordered.cumsum(1)
        ks = torch.arange(1, flat.shape[1] + 1, dtype=flat.dtype)
        count = ((ordered - (cumulative - eps) / ks) > 0).sum(1, keepdim=True)
        theta = ((cumulative.gather(1, count - 1) - eps) / count).clamp_min(0)
        flat = torch.where(outside[:, None], flat.sign() * (size - theta).clamp_min(0), flat)
    return (x + flat.reshape(delta.shape)).clamp(0, 1) - x


def sample_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str,
                   n: int = 400, seed: int = 2) -> torch.Tensor:
    """``(B, K)``: the least margin ``logit_y - logit_j`` over ``n`` random points of each set (inf at ``y``)."""
    gen = torch.Generator().manual_seed(seed)
    best = torch.full((x.shape[0], CLASSES), math.inf, dtype=x.dtype)
    for _ in range(n // 50):
        noise = torch.randn(50, *x.shape, generator=gen, dtype=x.dtype)
        if norm == "linf":
            noise = noise.sign() * eps  # corners of the box
        else:
            noise = noise * eps * 10
        points = torch.stack([x + project(d, x, eps, norm) for d in noise])
        with torch.no_grad():
            out = model(points.reshape(-1, *x.shape[1:])).reshape(50, *x.shape[:1], CLASSES)
        margins = out.gather(2, y[None, :, None].expand(50, -1, 1)) - out
        best = torch.minimum(best, margins.amin(0))
    best[torch.arange(x.shape[0]), y] = math.inf
    return best


def pgd_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps, norm: str, steps: int = 60,
                restarts: int = 2, seed: int = 3) -> torch.Tensor:
    """``(B, K)``: the least margin ``logit_y - logit_j`` PGD finds for each target ``j`` within radius ``eps`` (a
    float or ``(B,)``), inf at ``y``."""
    gen = torch.Generator().manual_seed(seed)
    eps = torch.as_tensor(eps, dtype=x.dtype).reshape(-1).expand(x.shape[0])
    scale = eps.reshape(-1, *([1] * (x.dim() - 1)))
    best = torch.full((x.shape[0], CLASSES), math.inf, dtype=x.dtype)
    for j in range(CLASSES):
        for _ in range(restarts):
            delta = project(torch.randn(x.shape, generator=gen, dtype=x.dtype) * scale, x, eps, norm)
            for step in range(steps + 1):
                delta.requires_grad_(True)
                out = model(x + delta)
                margin = out.gather(1, y[:, None])[:, 0] - out[:, j]
                best[:, j] = torch.minimum(best[:, j], margin.detach())
                if step == steps:
                    break
                (grad,) = torch.autograd.grad(margin.sum(), delta)
                size = 2.5 * scale / steps
                if norm == "linf":
                    move = grad.sign()
                else:
                    move = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-30).reshape(-1, 1, 1, 1)
                delta = project(delta.detach() - size * move, x, eps, norm)
    best[torch.arange(x.shape[0]), y] = math.inf
    return best
