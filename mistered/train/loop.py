"""The training loop: generic over an :class:`~mistered.train.objectives.Objective`, resumable, distributed.

:func:`fit` trains a model on tensors of images and labels. Each epoch visits a permutation drawn
from ``(seed, epoch)`` (split across processes under torch.distributed); the learning rate follows
a per-step schedule; after each epoch the held-out clean accuracy and the accuracy under the
evaluation threat are measured and appended to ``log.json`` and ``curves.png`` in ``out_dir``.
Checkpoints (``checkpoints/last.pt``, and ``best.pt`` for the best held-out accuracy) are written at
every epoch end and every ``checkpoint_every`` steps; ``resume=True`` continues from ``last.pt``
and, on the same machine and settings, ends with bit-identical weights to an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError
from ..io import atomic_write_json
from ..threats.base import Threat
from ..validation import check_images, check_labels
from .augment import random_shift
from .checkpoint import capture_rng, check_config, load_checkpoint, restore_rng, save_checkpoint
from .curves import plot_learning_curves
from .distributed import DistContext, all_gather_tensors, all_reduce_sum, shard_indices, wrap_model
from .evaluation import held_out_accuracy
from .objectives import Objective, load_objective_state, objective_state

__all__ = ["TrainConfig", "TrainResult", "fit", "make_optimizer", "make_scheduler"]

logger = logging.getLogger(__name__)

#: settings that may change between a run and its resumption (they do not change the weights)
_RESUMABLE_CHANGES = ("checkpoint_every", "eval_n", "eval_attack_steps")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run.

    Attributes:
        epochs: passes over the training set. batch_size: examples per step *per process*.
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
    """What :func:`fit` returns: the trained (unwrapped) model, per-epoch history, steps taken."""

    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    best_metric: float = float("-inf")


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum or Adam over the model's parameters, as configured."""
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step learning-rate schedule (stepped after every optimizer step)."""
    total = max(total_steps, 1)

    def factor(step: int) -> float:
        if config.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        if config.schedule == "multistep":
            return config.gamma ** sum(step >= m * total for m in config.milestones)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _progress_bar(enabled: bool, total: int, completed: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    progress = Progress(*columns, disable=not enabled)
    task = progress.add_task("training", total=total, completed=completed)
    return progress, task


def _check_data(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    check_images(x, name=f"{name} images")
    check_labels(y, x.shape[0])
    if x.shape[0] == 0:
        raise InvalidInputError(f"the {name} set is empty")


def _epoch_record(
    net: nn.Module, epoch: int, step: int, optimizer: torch.optim.Optimizer, totals: torch.Tensor,
    held_out: tuple[torch.Tensor, torch.Tensor], eval_threat: Threat | None, config: TrainConfig, ctx: DistContext,
) -> dict[str, Any]:
    """The log entry of a finished epoch: training loss/accuracy (from the summed ``totals``) and held-out accuracies."""
    n_eval = min(config.eval_n, held_out[0].shape[0])
    robust = None
    if eval_threat is not None and n_eval > 0:
        x, y = held_out[0][:n_eval], held_out[1][:n_eval]
        robust = held_out_accuracy(net, x, y, eval_threat, config.eval_attack_steps, seed=config.seed, ctx=ctx)
    return {
        "epoch": epoch + 1,
        "step": step,
        "lr": optimizer.param_groups[0]["lr"],
        "train_loss": float(totals[0] / totals[2]),
        "train_acc": float(totals[1] / totals[2]),
        "clean_acc": held_out_accuracy(net, *held_out, ctx=ctx, seed=config.seed),
        "robust_acc": robust,
        "robust_n": n_eval if robust is not None else 0,
    }


def fit(
    model: nn.Module,
    objective: Objective,
    train: tuple[torch.Tensor, torch.Tensor],
    held_out: tuple[torch.Tensor, torch.Tensor],
    config: TrainConfig = TrainConfig(),
    out_dir: str | os.PathLike | None = None,
    *,
    eval_threat: Threat | None = None,
    run_info: dict[str, Any] | None = None,
    resume: bool = False,
    ctx: DistContext | None = None,
    generator: torch.Generator | None = None,
    progress: bool | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place by minimising ``objective``.

    Args:
        model: classifier ``(B, C, H, W)`` in ``[0, 1]`` -> logits ``(B, K)``; moved to ``ctx.device``.
        objective: the loss (standard, adversarial, LMT, L∞-dist ...).
        train: ``(images (N, C, H, W) in [0, 1], labels (N,))``; held_out: the same for evaluation.
        config: the run's settings. out_dir: where checkpoints, ``log.json`` and ``curves.png``
            go (only the main process writes); ``None`` writes nothing (and cannot resume).
        eval_threat: each epoch's held-out accuracy is also measured under this threat (PGD).
        run_info: further settings that define the run (data, architecture, method, threat ...),
            stored in checkpoints and checked on resume.
        resume: continue from ``out_dir/checkpoints/last.pt`` when it exists.
        ctx: the process's place in torch.distributed (default: one process on the model's device).
        generator: the loop's random stream (e.g. the one the objective draws threats from);
            its state is checkpointed. Default: a fresh generator seeded with ``config.seed``.
        progress: show a rich progress bar (default: when stderr is a terminal); main process only.
        on_step: called with the global step number after every step (and its checkpoint).

    Returns:
        A :class:`TrainResult`; ``result.model`` is ``model``, trained.

    Raises:
        CheckpointError: resuming from a damaged checkpoint or one written with other settings.
    """
    ctx = ctx or DistContext(device=next(model.parameters()).device)
    _check_data(*train, "training")
    _check_data(*held_out, "held-out")
    out = Path(out_dir) if out_dir is not None else None
    last_path = out / "checkpoints" / "last.pt" if out else None
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}
    fingerprint = {k: v for k, v in settings.items() if k not in _RESUMABLE_CHANGES} | dict(run_info or {})
    generator = generator if generator is not None else torch.Generator().manual_seed(config.seed)

    model.to(ctx.device)
    net = wrap_model(model, ctx)
    optimizer = make_optimizer(model, config)
    n_train = train[0].shape[0]
    batches_per_epoch = math.ceil(math.ceil(n_train / ctx.world_size) / config.batch_size)
    total_steps = config.epochs * batches_per_epoch
    scheduler = make_scheduler(optimizer, config, total_steps)
    epoch, step, step_in_epoch = 0, 0, 0
    sums = torch.zeros(3, dtype=torch.float64)  # loss * n, correct, n over this process's steps this epoch
    result = TrainResult(model)

    if resume and last_path is not None and last_path.is_file():
        state = load_checkpoint(last_path, map_location=ctx.device)
        check_config(state["config"], fingerprint, last_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"], generator, ctx)
        load_objective_state(objective, state.get("objective", {}))
        epoch, step, step_in_epoch = int(state["epoch"]), int(state["step"]), int(state["step_in_epoch"])
        sums = state["epoch_sums"][ctx.rank].to(torch.float64).cpu().clone()
        result.history, result.best_metric = list(state["history"]), float(state["best_metric"])
        logger.info("resumed from %s at epoch %d, step %d", last_path, epoch, step)
    elif resume:
        logger.warning("no checkpoint at %s: starting a fresh run", last_path)

    def checkpoint(best: bool = False) -> None:
        if out is None:
            return
        rng = capture_rng(generator, ctx)  # collective: every process takes part
        all_sums = all_gather_tensors(sums, ctx)
        if ctx.is_main:
            state = {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng, "epoch": epoch, "step": step, "step_in_epoch": step_in_epoch, "epoch_sums": all_sums,
                "history": result.history, "best_metric": result.best_metric, "config": fingerprint,
                "objective": objective_state(objective),
            }
            save_checkpoint(last_path, state)
            if best:
                save_checkpoint(out / "checkpoints" / "best.pt", state)
        ctx.barrier()

    show = ctx.is_main and (progress if progress is not None else sys.stderr.isatty())
    bar, task = _progress_bar(show, total_steps, step)
    with bar:
        while epoch < config.epochs:
            order = shard_indices(n_train, config.seed, epoch, ctx).split(config.batch_size)
            net.train()
            for index in order[step_in_epoch:]:
                xb = random_shift(train[0][index], config.shift, generator).to(ctx.device)
                yb = train[1][index].to(ctx.device)
                optimizer.zero_grad(set_to_none=True)
                loss, logits = objective(net, xb, yb, step / total_steps)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step, step_in_epoch = step + 1, step_in_epoch + 1
                loss_value, correct = float(loss.detach()), float((logits.argmax(1) == yb).sum())
                sums += torch.tensor([loss_value * len(yb), correct, len(yb)], dtype=torch.float64)
                bar.update(task, completed=step, description=f"epoch {epoch + 1}/{config.epochs} loss {loss_value:.3f}")
                if config.checkpoint_every and step % config.checkpoint_every == 0 and step_in_epoch < len(order):
                    checkpoint()
                if on_step is not None:
                    on_step(step)
            record = _epoch_record(net, epoch, step, optimizer, all_reduce_sum(sums, ctx), held_out, eval_threat, config, ctx)
            metric = record["robust_acc"] if record["robust_acc"] is not None else record["clean_acc"]
            is_best = metric > result.best_metric
            result.best_metric = max(result.best_metric, metric)
            result.history.append(record)
            logger.info("epoch %d: %s", epoch + 1, record)
            epoch, step_in_epoch = epoch + 1, 0
            sums = torch.zeros(3, dtype=torch.float64)
            checkpoint(best=is_best)
            if out is not None and ctx.is_main:
                atomic_write_json(out / "log.json", {"settings": fingerprint, "history": result.history})
                title = str((run_info or {}).get("method", "training"))
                plot_learning_curves(result.history, out / "curves.png", title=title)
    result.steps = step
    return result
