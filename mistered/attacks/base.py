"""The attack contract: validate, try every alternative of the threat with restarts, keep the best per example.

Subclasses implement only :meth:`Attack._search` (optimise one perturbation in place). The public
:meth:`Attack.attack` fixes everything else for every attack:

* inputs are validated by :func:`~mistered.validation.check_batch` (shape, channel count, NaN, range; labels of
  any integer dtype become int64; images are cast to the model's dtype) and the labels (and targets) checked
  against the width ``K`` of the clean logits; an empty batch gives an empty result;
* the model runs in eval mode with its parameters frozen (``requires_grad=False``) for the duration,
  so searches get gradients w.r.t. perturbation parameters only (restored afterwards);
* the search runs for each of ``threat.alternatives()`` (a ``Union`` has several) and ``restarts``
  times, on the examples not yet fooled (early stop); per example the best candidate is kept:
  a success beats a failure, a smaller perturbation (``size()``) beats a larger success, a higher
  loss beats a lower failure;
* ``success`` is computed from one eval-mode forward pass of the model on the returned ``x_adv``,
  so running the model on ``result.x_adv`` reproduces it exactly.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import time
from collections.abc import Iterator

import torch
from torch import nn

from ..device import resolve_device
from ..errors import InvalidInputError
from ..threats import bind_features
from ..threats.base import Perturbation, Threat
from ..validation import check_batch, check_images, check_labels, check_logits, model_device, model_dtype
from .losses import LossFn, get_loss
from .result import LP_DISTANCES, AttackResult, measure_distances

__all__ = ["Attack", "attack_mode", "model_input_check"]

logger = logging.getLogger(__name__)

#: What a search may return: the final ``x_adv`` and its exact eval-mode logits, or ``None`` to let the base compute them.
SearchOutput = tuple[torch.Tensor, torch.Tensor] | None


@contextlib.contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with frozen parameters; restore both on exit."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def model_input_check(model: nn.Module, x: torch.Tensor) -> None:
    """Raise :class:`InvalidInputError` when ``x`` cannot fit the model's first Conv2d/Linear layer."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            check_images(x, channels=module.in_channels)
            return
        if isinstance(module, nn.Linear):
            values = x.shape[1:].numel()
            if values != module.in_features:
                raise InvalidInputError(
                    f"images of shape {tuple(x.shape)} have {values} values each but the model's first "
                    f"Linear layer takes {module.in_features}; use data of the shape the model was trained on"
                )
            return


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


class _Best:
    """Per-example best candidate over alternatives and restarts (starts at the clean image)."""

    def __init__(self, x: torch.Tensor, logits: torch.Tensor, success: torch.Tensor, loss: torch.Tensor) -> None:
        batch = x.shape[0]
        self.x_adv, self.logits, self.success, self.loss = x, logits, success, loss
        self.size = torch.zeros(batch, device=x.device)
        self.sizes: dict[str, torch.Tensor] = {"size": self.size.clone()}
        self.alternative = torch.full((batch,), -1, dtype=torch.long, device=x.device)
        self.exact = True  # self.logits come from one forward pass of the whole of self.x_adv

    @torch.no_grad()
    def offer(self, rows: torch.Tensor, x_adv: torch.Tensor, logits: torch.Tensor, success: torch.Tensor,
              loss: torch.Tensor, perturbation: Perturbation, alternative: int) -> None:
        size = perturbation.size().to(self.size)
        old_s, old_size, old_loss = self.success[rows], self.size[rows], self.loss[rows]
        better = (success & ~old_s) | (success & old_s & (size < old_size)) | (~success & ~old_s & (loss > old_loss))
        if not bool(better.any()):
            return
        idx = rows[better]
        whole = idx.numel() == self.x_adv.shape[0]
        if whole:  # every row replaced by one batch: keep its exact logits
            self.x_adv, self.logits = x_adv, logits
        else:
            self.x_adv = self.x_adv.clone()
            self.x_adv[idx] = x_adv[better]
            self.logits = self.logits.clone()
            self.logits[idx] = logits[better]
        self.exact = whole
        self.success[idx], self.loss[idx], self.size[idx] = success[better], loss[better], size[better]
        self.alternative[idx] = alternative
        found = {"size": size, **{k: v.to(self.size) for k, v in perturbation.sizes().items()}}
        for key in set(found) | set(self.sizes):
            column = self.sizes.setdefault(key, torch.full_like(self.size, float("nan")))
            column[idx] = found[key][better] if key in found else float("nan")


class Attack(abc.ABC):
    """Base class of every attack: ``Attack(model, threat, ...)(x, y) -> AttackResult``.

    Args:
        model: maps images ``(B, C, H, W)`` in ``[0, 1]`` to logits ``(B, K)``.
        threat: what the adversary may do (any :class:`~mistered.threats.Threat`).
        loss: ``"ce"`` (cross-entropy) or ``"margin"`` (Carlini-Wagner margin); see :mod:`.losses`.
        restarts: independent runs per alternative of the threat (``>= 1``); the best per example is kept.
        early_stop: stop searching on examples already fooled (and stop when all are).
        seed: seeds the attack's own ``torch.Generator`` (random starts); no global RNG is touched.
        distances: names of the distances to report (default ``("linf", "l2")`` plus the threat's
            perceptual metric if it has one); ``"lpips"``/``"dssim"`` use :mod:`mistered.metrics`.
        device: where to run; default: the model's device.
    """

    def __init__(self, model: nn.Module, threat: Threat, *, loss: str = "ce", restarts: int = 1,
                 early_stop: bool = True, seed: int = 0, distances: tuple[str, ...] | None = None,
                 device: str | torch.device | None = None) -> None:
        if not isinstance(threat, Threat):
            raise InvalidInputError(f"threat must be a mistered Threat, got {type(threat).__name__}")
        if int(restarts) != restarts or restarts < 1:
            raise InvalidInputError(f"restarts must be a positive integer, got {restarts!r}")
        get_loss(loss)  # validates the name
        threat = bind_features(threat, model=model)  # lpips-self budgets measure with the attacked model
        self.model, self.threat, self.loss_name = model, threat, loss
        self.restarts, self.early_stop, self.seed = int(restarts), bool(early_stop), int(seed)
        if distances is None:
            metric = getattr(threat, "metric", None)
            distances = LP_DISTANCES + ((metric,) if isinstance(metric, str) and metric not in LP_DISTANCES else ())
        self.distances = tuple(distances)
        self.device = model_device(model) if device is None else resolve_device(device)

    # -- what subclasses implement -------------------------------------------------------------------
    @abc.abstractmethod
    def _search(self, perturbation: Perturbation, x: torch.Tensor, goal: torch.Tensor, loss_fn: LossFn,
                targeted: bool, generator: torch.Generator) -> SearchOutput:
        """Optimise ``perturbation`` (made for ``x``, ``(b, C, H, W)``) in place, inside its budget.

        ``goal`` ``(b,)`` holds the true labels (or the targets when ``targeted``); ``loss_fn(logits, goal)``
        is the ``(b,)`` loss to maximise. Returns ``(x_adv, logits)`` when the search already ran the
        model (eval mode, no grad, :meth:`predict`) on exactly ``perturbation(x)``, else ``None``.
        """

    # -- shared helpers ------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode logits ``(B, K)`` of the (eager) model: the forward pass that decides ``success``."""
        return self.model(x)

    @staticmethod
    def succeeded(logits: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
        """``(B,)`` bool: the prediction equals the target (targeted) or differs from the label."""
        predictions = logits.argmax(dim=1)
        return predictions == goal if targeted else predictions != goal

    def __call__(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> AttackResult:
        return self.attack(x, y, target)

    def attack(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> AttackResult:
        """Attack the batch ``x`` ``(B, C, H, W)`` in ``[0, 1]`` with labels ``y`` ``(B,)``.

        With ``target`` ``(B,)`` the attack is targeted: success means predicting ``target``.
        """
        start = time.perf_counter()
        x, y = check_batch(x, y, dtype=model_dtype(self.model), device=self.device)
        model_input_check(self.model, x)
        targeted = target is not None
        goal = check_labels(target, x.shape[0], name="target labels").to(self.device) if targeted else y
        loss_fn = get_loss(self.loss_name, targeted)
        with attack_mode(self.model):
            try:
                clean_logits = self.predict(x)
            except RuntimeError as error:
                first = str(error).strip().splitlines()[0]
                raise InvalidInputError(f"the model cannot take images of shape {tuple(x.shape)}: {first}") from None
            num_classes = check_logits(clean_logits, y)
            if targeted:
                check_labels(goal, x.shape[0], num_classes, name="target labels")
            best = _Best(x, clean_logits, self.succeeded(clean_logits, goal, targeted), loss_fn(clean_logits, goal))
            generator = torch.Generator(device=x.device)
            generator.manual_seed(self.seed)
            everyone = torch.arange(x.shape[0], device=x.device)
            for index, alternative in enumerate(self.threat.alternatives()):
                for restart in range(self.restarts):
                    rows = everyone[~best.success] if self.early_stop else everyone
                    if rows.numel() == 0:
                        break
                    xs, gs = (x, goal) if rows.numel() == x.shape[0] else (x[rows], goal[rows])
                    perturbation = alternative.perturbation(xs)
                    found = self._search(perturbation, xs, gs, loss_fn, targeted, generator)
                    with torch.no_grad():
                        if found is None:
                            x_adv = perturbation(xs)
                            found = (x_adv, self.predict(x_adv))
                        x_adv, logits = found
                        success = self.succeeded(logits, gs, targeted)
                        best.offer(rows, x_adv, logits, success, loss_fn(logits, gs), perturbation, index)
                    logger.debug("%s on %s, restart %d: %d/%d fooled", type(self).__name__, alternative,
                                 restart, int(best.success.sum()), x.shape[0])
            logits = best.logits if best.exact else self.predict(best.x_adv)
            success = self.succeeded(logits, goal, targeted)
        return AttackResult(
            x=x, x_adv=best.x_adv.detach(), labels=y, logits=logits, clean_logits=clean_logits, success=success,
            distances=measure_distances(x, best.x_adv, self.distances, getattr(self.threat, "features", None)),
            sizes=best.sizes,
            alternative=best.alternative, targets=goal if targeted else None, seconds=time.perf_counter() - start,
        )
