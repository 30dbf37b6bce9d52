"""Run any torchattacks attack as an attack on an :class:`~mistered.threats.Additive` threat."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError
from ..threats.additive import Additive
from ..threats.base import Perturbation, Threat
from .base import Attack, SearchOutput
from .losses import LossFn

__all__ = ["TorchattacksAttack"]

_NORMS = {"linf": "Linf", "l2": "L2"}


def _build(name: str, model: nn.Module, threat: Additive, seed: int, num_classes: int, options: dict[str, Any]):
    import torchattacks

    cls = getattr(torchattacks, name, None)
    if name not in getattr(torchattacks, "__all__", ()) or not (inspect.isclass(cls) and issubclass(cls, torchattacks.attack.Attack)):
        raise InvalidInputError(f"torchattacks has no attack named {name!r}; see torchattacks.__all__ (e.g. 'PGD', 'AutoAttack')")
    accepted = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {"eps": threat.eps, "norm": _NORMS[threat.norm], "seed": seed, "n_classes": num_classes}
    kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    unknown = set(options) - set(accepted)
    if unknown:
        raise InvalidInputError(f"torchattacks.{name} takes no option(s) {sorted(unknown)}; it takes {sorted(accepted)[1:]}")
    return cls(model, **{**kwargs, **options})


class TorchattacksAttack(Attack):
    """Adapter: a torchattacks attack (an instance, or a class name such as ``"PGD"``, ``"AutoAttack"``) on an additive threat.

    Built from a name (on the first batch), the attack gets ``eps`` (and ``norm``, ``seed``, ``n_classes``
    where it takes them) from the threat, the seed and the model's output, plus any extra ``options``; note that torchattacks' step sizes (``alpha``) are absolute.
    Its output is clamped to ``[0, 1]`` and projected into the threat's budget, and the result has the
    same type and guarantees as every mistered attack. torchattacks draws random starts from the global
    RNG: the adapter runs it inside ``torch.random.fork_rng`` seeded with ``seed``, so the caller's RNG
    state is left untouched.

    Example:
        >>> from mistered.threats import Additive
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> adapter = TorchattacksAttack(net, Additive("linf", 0.1), "PGD", options={"alpha": 0.02, "steps": 5})
        >>> adapter(torch.rand(2, 1, 2, 2), torch.tensor([0, 1])).success.shape
        torch.Size([2])
    """

    def __init__(self, model: nn.Module, threat: Threat, attack: Any = "PGD", *,
                 options: dict[str, Any] | None = None, **kwargs) -> None:
        if not isinstance(threat, Additive):
            raise InvalidInputError(f"torchattacks attacks run only on additive threats (linf/l2), got {threat}")
        super().__init__(model, threat, **kwargs)
        self.name, self.options = (attack, dict(options or {})) if isinstance(attack, str) else (type(attack).__name__, {})
        if isinstance(attack, str):
            _build(attack, model, threat, self.seed, 10, self.options)  # fail early on a bad name or option
        self.torchattack = None if isinstance(attack, str) else attack

    def _search(self, perturbation: Perturbation, x: torch.Tensor, goal: torch.Tensor, loss_fn: LossFn,
                targeted: bool, generator: torch.Generator) -> SearchOutput:
        if targeted:
            raise InvalidInputError("the torchattacks adapter runs untargeted attacks only; call it without target")
        if self.torchattack is None:
            self.torchattack = _build(self.name, self.model, self.threat, self.seed, self.predict(x[:1]).shape[1], self.options)
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        # torchattacks draws from the global RNG: seed it from our generator inside fork_rng, which restores the
        # caller's global state afterwards, so no global seeding leaks out of the library
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=x.device)))
            x_adv = self.torchattack(x, goal)
        with torch.no_grad():
            perturbation.delta.copy_(x_adv.clamp(0.0, 1.0) - x)
        perturbation.project_()
        return None
