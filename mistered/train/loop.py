"""The training loop: generic over an :class:`~mistered.train.objectives.Objective`, streamed, resumable, distributed.

:func:`fit` trains a model (any ``nn.Module``) on a labelled data set, read one mini-batch at a time
(:mod:`mistered.train.batches`): memory does not grow with the data set. Each epoch visits a
permutation drawn from ``(seed, epoch)`` (each process its DistributedSampler-style share under
torch.distributed); the learning rate is a function of the step and the run's length
(:func:`lr_factor`); after each epoch the held-out clean accuracy and the accuracy under the
evaluation threat are measured and appended to ``log.json`` and ``curves.png`` in ``out_dir``.

Checkpoints (``checkpoints/last.pt``, and ``best.pt`` for the best held-out accuracy) are written at
every epoch end and every ``checkpoint_every`` steps. ``resume=True`` continues from ``last.pt``: with
the same settings it ends with weights bitwise equal to an uninterrupted run (on the same machine and
software), even after a SIGKILL mid-epoch. A larger ``epochs`` *extends* the run (see
:mod:`mistered.train.resume` for what else may change): the schedule and the objective's ``progress``
are recomputed for the new total from the step reached, so the steps after the resume follow exactly
what a run of the new length does at those steps, while the steps before keep the old schedule. With a
``constant`` schedule and an objective that ignores ``progress`` (standard, adversarial training) the
extended run therefore equals a run made for the new length from the start, bit for bit; with
``cosine`` or ``multistep`` it cannot (the first run's learning rate had already decayed to its end),
and the log records the extension.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError
from ..io import atomic_write_json
from ..progress import Progress
from ..threats.base import Threat
from ..validation import model_dtype
from .augment import random_shift
from .batches import as_dataset, count_logits, load_batch
from .checkpoint import capture_rng, load_checkpoint, remove_stale_temporaries, restore_rng, save_checkpoint
from .curves import plot_learning_curves
from .distributed import DistContext, all_gather_tensors, all_reduce_sum, shard_indices, wrap_model
from .evaluation import held_out_accuracy
from .objectives import Objective, load_objective_state, objective_state
from .resume import plan_resume, run_fingerprint

__all__ = ["TrainConfig", "TrainResult", "fit", "make_optimizer", "lr_factor"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run.

    Attributes:
        epochs: passes over the training set (a resumed run may raise it: see :func:`fit`).
        batch_size: examples per step *per process*.
        lr: peak learning rate. optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"``.
        weight_decay: L2 penalty. schedule: ``"cosine"`` (to 0 over the run), ``"multistep"``
            (times ``gamma`` at each fraction of training in ``milestones``) or ``"constant"``.
        seed: data order, the loop's generator and the model-independent randomness.
        checkpoint_every: also checkpoint every this many steps (0: only at epoch ends).
        eval_n: held-out examples evaluated under the threat each epoch (clean accuracy uses all).
        eval_attack_steps: PGD steps of that evaluation.
        shift: augmentation, random translations of up to this many pixels (0: none).
    """

    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    seed: int = 0
    checkpoint_every: int = 0
    eval_n: int = 200
    eval_attack_steps: int = 10
    shift: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise InvalidInputError(f"lr must be a positive number, got {self.lr}")
        if self.optimizer not in ("sgd", "adam"):
            raise InvalidInputError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "multistep", "constant"):
            raise InvalidInputError(f"schedule must be 'cosine', 'multistep' or 'constant', got {self.schedule!r}")
        if any(not 0 < m < 1 for m in self.milestones):
            raise InvalidInputError(f"milestones are fractions of training in (0, 1), got {self.milestones}")
        if self.checkpoint_every < 0 or self.eval_n < 0 or self.shift < 0 or self.eval_attack_steps < 1:
            raise InvalidInputError(
                f"checkpoint_every, eval_n and shift must be >= 0 and eval_attack_steps >= 1, got "
                f"{self.checkpoint_every}, {self.eval_n}, {self.shift}, {self.eval_attack_steps}"
            )


@dataclass
class TrainResult:
    """What :func:`fit` returns.

    Attributes:
        model: the trained (unwrapped) model. history: one record per finished epoch.
        steps: optimizer steps taken over the whole run. best_metric: the best epoch's held-out accuracy.
        already_complete: the resumed run had finished all its epochs; nothing was trained.
        extended: when this call extended the run: ``{"from_epochs", "to_epochs", "epoch", "step", ...}``.
    """

    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    best_metric: float = float("-inf")
    already_complete: bool = False
    extended: dict[str, Any] | None = None


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum or Adam over the model's parameters, as configured."""
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def lr_factor(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of step ``step`` (0-based) of a ``total_steps`` run, as a fraction of ``config.lr``:
    cosine from 1 to 0, ``gamma`` per passed milestone, or 1."""
    total = max(total_steps, 1)
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    if config.schedule == "multistep":
        return config.gamma ** sum(step >= m * total for m in config.milestones)
    return 1.0


class _Run:
    """One run's moving parts and position; :func:`fit` drives it epoch by epoch."""

    def __init__(self, model: nn.Module, objective: Objective, train: Any, held_out: Any, config: TrainConfig,
                 out: Path | None, run_info: dict[str, Any], ctx: DistContext, generator: torch.Generator) -> None:
        self.model, self.objective, self.train, self.held_out = model, objective, train, held_out
        self.config, self.out, self.ctx, self.generator = config, out, ctx, generator
        self.title = str(run_info.get("method", "training"))
        self.fingerprint = run_fingerprint(config, {"world_size": ctx.world_size, **run_info}, model, train, held_out)
        self.dtype = model_dtype(model)
        self.num_classes = count_logits(model, train, self.dtype, ctx.device)
        self.net = wrap_model(model, ctx)
        self.optimizer = make_optimizer(model, config)
        self.batches_per_epoch = math.ceil(math.ceil(len(train) / ctx.world_size) / config.batch_size)
        self.total_steps = config.epochs * self.batches_per_epoch
        self.epoch = self.step = self.step_in_epoch = 0
        self.sums = torch.zeros(3, dtype=torch.float64)  # loss * n, correct, n over this process's steps this epoch
        self.extensions: list[dict[str, Any]] = []
        self.result = TrainResult(model)

    def resume(self, path: Path) -> None:
        """Continue from the checkpoint at ``path`` (refusing other settings; extending to more epochs)."""
        state = load_checkpoint(path, map_location=self.ctx.device)
        extended_from = plan_resume(state["config"], self.fingerprint, int(state["epoch"]), path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"], self.generator, self.ctx)
        load_objective_state(self.objective, state.get("objective", {}))
        self.epoch, self.step, self.step_in_epoch = int(state["epoch"]), int(state["step"]), int(state["step_in_epoch"])
        self.sums = state["epoch_sums"][self.ctx.rank].to(torch.float64).cpu().clone()
        self.result.history, self.result.best_metric = list(state["history"]), float(state["best_metric"])
        self.extensions = list(state.get("extensions", []))
        if self.ctx.is_main:
            remove_stale_temporaries(path.parent)
        logger.info("resumed from %s at epoch %d, step %d", path, self.epoch, self.step)
        if extended_from is not None:
            self._extend(extended_from)
        elif self.epoch >= self.config.epochs:
            self.result.already_complete = True
            logger.info("the run in %s is already complete (%d epochs); nothing to train (raise epochs to extend it)",
                        self.out, self.epoch)

    def _extend(self, from_epochs: int) -> None:
        """Record (log, ``log.json``, the next checkpoints) that the run now lasts ``config.epochs`` epochs."""
        config = self.config
        note = (f"extended from {from_epochs} to {config.epochs} epochs at epoch {self.epoch}, step {self.step}: "
                f"the {config.schedule} learning-rate schedule and the objective's progress are recomputed for "
                f"{self.total_steps} steps from step {self.step} on")
        self.result.extended = {"from_epochs": from_epochs, "to_epochs": config.epochs, "epoch": self.epoch,
                                "step": self.step, "total_steps": self.total_steps, "note": note}
        self.extensions.append(self.result.extended)
        logger.warning("%s", note)
        self._write_log()

    def checkpoint(self, best: bool = False) -> None:
        """Write ``last.pt`` (and ``best.pt``); collective under torch.distributed, files from rank 0 only."""
        if self.out is None:
            return
        rng = capture_rng(self.generator, self.ctx)
        all_sums = all_gather_tensors(self.sums, self.ctx)
        if self.ctx.is_main:
            state = {
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "rng": rng,
                "epoch": self.epoch, "step": self.step, "step_in_epoch": self.step_in_epoch, "epoch_sums": all_sums,
                "history": self.result.history, "best_metric": self.result.best_metric, "config": self.fingerprint,
                "objective": objective_state(self.objective), "extensions": self.extensions,
            }
            save_checkpoint(self.out / "checkpoints" / "last.pt", state)
            if best:
                save_checkpoint(self.out / "checkpoints" / "best.pt", state)
        self.ctx.barrier()

    def train_epoch(self, progress: Progress, on_step: Callable[[int], None] | None) -> None:
        """The rest of the current epoch, from ``step_in_epoch`` on."""
        config, ctx = self.config, self.ctx
        order = shard_indices(len(self.train), config.seed, self.epoch, ctx).split(config.batch_size)
        self.net.train()
        for index in order[self.step_in_epoch:]:
            x, y = load_batch(self.train, index, self.num_classes, self.dtype, ctx.device)
            x = random_shift(x, config.shift, self.generator)
            for group in self.optimizer.param_groups:
                group["lr"] = config.lr * lr_factor(config, self.step, self.total_steps)
            self.optimizer.zero_grad(set_to_none=True)
            loss, logits = self.objective(self.net, x, y, self.step / self.total_steps)
            loss.backward()
            self.optimizer.step()
            self.step, self.step_in_epoch = self.step + 1, self.step_in_epoch + 1
            loss_value, correct = float(loss.detach()), float((logits.argmax(1) == y).sum())
            self.sums += torch.tensor([loss_value * len(y), correct, len(y)], dtype=torch.float64)
            progress.describe(f"epoch {self.epoch + 1}/{config.epochs} loss {loss_value:.3f}")
            progress.advance()
            if config.checkpoint_every and self.step % config.checkpoint_every == 0 and self.step_in_epoch < len(order):
                self.checkpoint()
            if on_step is not None:
                on_step(self.step)

    def end_epoch(self, eval_threat: Threat | None) -> None:
        """Evaluate, log and checkpoint the epoch just finished."""
        config, ctx = self.config, self.ctx
        totals = all_reduce_sum(self.sums, ctx)
        robust = None
        if eval_threat is not None and config.eval_n > 0:
            robust = held_out_accuracy(self.net, self.held_out, eval_threat, config.eval_attack_steps,
                                       seed=config.seed, ctx=ctx, n=config.eval_n)
        record = {
            "epoch": self.epoch + 1, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": float(totals[0] / totals[2]), "train_acc": float(totals[1] / totals[2]),
            "clean_acc": held_out_accuracy(self.net, self.held_out, ctx=ctx, seed=config.seed),
            "robust_acc": robust, "robust_n": min(config.eval_n, len(self.held_out)) if robust is not None else 0,
        }
        metric = record["robust_acc"] if record["robust_acc"] is not None else record["clean_acc"]
        is_best = metric > self.result.best_metric
        self.result.best_metric = max(self.result.best_metric, metric)
        self.result.history.append(record)
        logger.info("epoch %d: %s", self.epoch + 1, record)
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self.sums = torch.zeros(3, dtype=torch.float64)
        self.checkpoint(best=is_best)
        self._write_log()
        if self.out is not None and ctx.is_main:
            plot_learning_curves(self.result.history, self.out / "curves.png", title=self.title)

    def _write_log(self) -> None:
        if self.out is not None and self.ctx.is_main:
            log = {"settings": self.fingerprint, "history": self.result.history, "extensions": self.extensions}
            atomic_write_json(self.out / "log.json", log)


def _checkpoint_to_resume(out: Path | None, resume: bool) -> Path | None:
    """``out/checkpoints/last.pt`` when resuming from it; refuses to start afresh over an existing run."""
    if out is None:
        if resume:
            raise InvalidInputError("resuming needs the run's output folder (out_dir, --out)")
        return None
    last = out / "checkpoints" / "last.pt"
    if resume and not last.is_file():
        logger.warning("no checkpoint at %s: starting a fresh run", last)
    if not resume and last.is_file():
        raise InvalidInputError(f"{str(out)!r} already holds a training run (checkpoints/last.pt); resume it "
                                f"(--resume) or choose another output folder")
    return last if resume and last.is_file() else None


def fit(
    model: nn.Module,
    objective: Objective,
    train: Any,
    held_out: Any,
    config: TrainConfig = TrainConfig(),
    out_dir: str | os.PathLike | None = None,
    *,
    eval_threat: Threat | None = None,
    run_info: dict[str, Any] | None = None,
    resume: bool = False,
    ctx: DistContext | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place by minimising ``objective``.

    Args:
        model: any classifier ``nn.Module`` (registry architecture, the user's class, TorchScript,
            ONNX-converted ...), ``(B, C, H, W)`` in ``[0, 1]`` -> logits ``(B, K)``; moved to ``ctx.device``.
        objective: the loss (standard, adversarial, LMT, L∞-dist ...).
        train, held_out: labelled data sets (:class:`mistered.data.LabeledDataset`, streamed batch by batch)
            or ``(images (N, C, H, W) in [0, 1], labels (N,))`` pairs of tensors.
        config: the run's settings. out_dir: where checkpoints, ``log.json`` and ``curves.png``
            go (only the main process writes); ``None`` writes nothing (and cannot resume).
        eval_threat: each epoch's held-out accuracy is also measured under this threat (PGD).
        run_info: further settings that define the run (data and model sources, method, threats ...),
            stored in checkpoints and checked on resume (JSON-like values).
        resume: continue from ``out_dir/checkpoints/last.pt`` when it exists (see the module docstring
            for what may change); without it, an ``out_dir`` that holds a run is refused.
        ctx: the process's place in torch.distributed (default: one process on the model's device).
        generator: the loop's random stream (e.g. the one the objective draws threats from);
            its state is checkpointed. Default: a fresh generator seeded with ``config.seed``.
        progress: report progress (main process only; :class:`mistered.progress.Progress`: a bar on a
            terminal, a line every few seconds otherwise). on_step: called with the global step number
            after every step (and its checkpoint).

    Returns:
        A :class:`TrainResult`; ``result.model`` is ``model``, trained.

    Raises:
        InvalidInputError: bad data, a model that cannot take it, or resuming with other settings (every
            difference listed) or fewer epochs. CheckpointError: a damaged checkpoint.
    """
    if not any(p.requires_grad for p in model.parameters()):
        raise InvalidInputError(f"the model ({type(model).__name__}) has no trainable parameters")
    ctx = ctx or DistContext(device=next(model.parameters()).device)
    train_set, held_out_set = as_dataset(train, "training"), as_dataset(held_out, "held-out")
    out = Path(out_dir) if out_dir is not None else None
    last = _checkpoint_to_resume(out, resume)
    model.to(ctx.device)
    generator = generator if generator is not None else torch.Generator().manual_seed(config.seed)
    run = _Run(model, objective, train_set, held_out_set, config, out, dict(run_info or {}), ctx, generator)
    if last is not None:
        run.resume(last)
    with Progress("training", total=run.total_steps, unit="steps", quiet=not (progress and ctx.is_main)) as bar:
        bar.advance(run.step)
        while run.epoch < config.epochs:
            run.train_epoch(bar, on_step)
            run.end_epoch(eval_threat)
    run.result.steps = run.step
    return run.result
