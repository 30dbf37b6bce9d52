"""``mistered train``: standard, adversarial (any threat, several at once), LMT or L∞-dist training.

Works the same under ``torchrun --nproc_per_node N -m mistered train ...`` (DistributedDataParallel;
only rank 0 writes files and prints).
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import click
import torch

__all__ = ["train"]


@click.command("train")
@click.option("--threat", "threats", multiple=True, metavar="SPEC",
              help="Train against this threat (preset or spec); repeat for several. Implies --method adversarial.")
@click.option("--strategy", type=click.Choice(["random", "avg", "max"]), default="max", show_default=True,
              help="How several threats (or a Union's alternatives) combine per batch.")
@click.option("--method", type=click.Choice(["standard", "adversarial", "lmt", "linf-dist", "linf-dist-hybrid"]), default=None,
              help="Training method [default: adversarial with --threat, else standard]. linf-dist with "
                   "--model linf-dist-hybrid is linf-dist-hybrid (IBP loss on the head).")
@click.option("--data", default="mnist-5k", show_default=True, help="Dataset name (mnist-5k, fashion-mnist, mnist, cifar10).")
@click.option("--model", "arch", default=None,
              help="Architecture name from the model registry [default: mnist-cnn; linf-dist-net for --method linf-dist, "
                   "linf-dist-hybrid for --method linf-dist-hybrid].")
@click.option("--epochs", type=int, default=3, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True, help="Examples per step per process.")
@click.option("--width", type=int, default=None, help="Architecture width (hidden units or channels) [default: the architecture's].")
@click.option("--depth", type=int, default=None, help="Architecture depth (hidden layers) [default: the architecture's].")
@click.option("--lr", type=float, default=None, help="Peak learning rate [default: 0.05; lmt 1e-3; linf-dist 0.01].")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default=None,
              help="[default: sgd; adam for lmt and linf-dist]")
@click.option("--weight-decay", type=float, default=None,
              help="L2 penalty of the optimizer [default: 5e-4; 0 for lmt and linf-dist].")
@click.option("--shift", type=int, default=0, show_default=True, help="Augment: random translations of up to N pixels.")
@click.option("--schedule", type=click.Choice(["cosine", "multistep", "constant"]), default="cosine", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder [default: mistered-out/train-<time>].")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out from its last checkpoint.")
@click.option("--attack-steps", type=int, default=7, show_default=True, help="PGD steps of adversarial training.")
@click.option("--checkpoint-every", type=int, default=0, show_default=True, help="Also checkpoint every N steps (0: epoch ends only).")
@click.option("--n-train", type=int, default=None, help="Train on the first N training examples only.")
@click.option("--eval-n", type=int, default=200, show_default=True, help="Held-out examples attacked each epoch.")
@click.option("--eval-threat", default=None, metavar="SPEC", help="Threat of the per-epoch robust accuracy [default: the training threat].")
@click.option("--c", "lmt_c", type=float, default=None, help="LMT: target L2 radius c.")
@click.option("--pairwise", is_flag=True, help="LMT: the tighter pairwise last-layer bound.")
@click.option("--eps", "dist_eps", type=float, default=None,
              help="L-inf-dist: the training radius of its hinge loss (of the interval bounds for the hybrid).")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: when stderr is a terminal].")
@click.option("--compile/--no-compile", "compile_kernel", default=True, show_default=True,
              help="L-inf-dist layers: the compiled p = inf kernel (~2.5x faster on CPU, same results; falls back to "
                   "the eager kernel with a warning when no C++ compiler works).")
def train(threats, strategy, method, data, arch, epochs, batch_size, width, depth, lr, optimizer, weight_decay, shift, schedule, seed, device, out_dir,
          resume, attack_steps, checkpoint_every, n_train, eval_n, eval_threat, lmt_c, pairwise, dist_eps, progress, compile_kernel) -> None:
    """Train a model and write model.pt, checkpoints/, log.json, curves.png and results.json to --out."""
    from ..certify.linf_dist_nets import set_linf_dist_compiled
    from ..data import load_dataset
    from ..errors import InvalidInputError
    from ..models import build_model
    from ..results import default_out_dir
    from ..threats import Union, parse_threat
    from ..train import TrainConfig, build_objective, default_method, fit, init_distributed, shutdown_distributed

    if resume and out_dir is None:
        raise InvalidInputError("--resume needs --out DIR: the folder of the run to continue")
    parsed = [parse_threat(spec) for spec in threats]
    method = method or default_method(parsed)
    if method == "linf-dist" and arch == "linf-dist-hybrid":
        method = "linf-dist-hybrid"  # the hybrid's L-inf-dist training: the p-relaxation plus IBP through the head
    options = {}
    if lmt_c is not None or pairwise:
        if method != "lmt":
            raise InvalidInputError(f"--c and --pairwise are LMT options; add --method lmt (method is {method!r})")
        options = {k: v for k, v in (("c", lmt_c), ("pairwise", pairwise or None)) if v is not None}
    if dist_eps is not None:
        if method not in ("linf-dist", "linf-dist-hybrid"):
            raise InvalidInputError(f"--eps is the L-inf-dist option; add --method linf-dist (method is {method!r})")
        options = {"eps": dist_eps}
    arch = arch or _DEFAULT_ARCH.get(method, "mnist-cnn")
    if n_train is not None and n_train < 1:
        raise InvalidInputError(f"--n-train must be >= 1, got {n_train}")
    defaults = _OPTIMIZER_DEFAULTS.get(method, _OPTIMIZER_DEFAULTS["standard"])
    optimizer = optimizer or defaults["optimizer"]
    lr = defaults["lr"] if lr is None else lr
    weight_decay = defaults["weight_decay"] if weight_decay is None else weight_decay
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
                         schedule=schedule, seed=seed, shift=shift, checkpoint_every=checkpoint_every, eval_n=eval_n,
                         eval_attack_steps=max(attack_steps, 1))
    ctx = init_distributed(device)
    try:
        train_set, test_set = load_dataset(data, "train"), load_dataset(data, "test")
        if n_train is not None:
            train_set = train_set.subset(n_train)
        torch.manual_seed(seed)  # the model's initial weights
        arch_kwargs = _arch_kwargs(arch, train_set, width=width, depth=depth)
        model = build_model(arch, **arch_kwargs)
        _check_fits(model, arch, train_set)
        set_linf_dist_compiled(model, compile_kernel)  # a runtime choice: not in run_info, checkpoints or --resume checks
        generator = torch.Generator().manual_seed(seed)
        objective = build_objective(method, threats=parsed, strategy=strategy, attack_steps=attack_steps,
                                    generator=generator, **options)
        if eval_threat is not None:
            evaluated = parse_threat(eval_threat)
        else:
            evaluated = parsed[0] if len(parsed) == 1 else (Union(parsed) if parsed else None)
        out = Path(out_dir) if out_dir is not None else default_out_dir("train")
        run_info = {"data": data, "n_train": len(train_set), "model": arch, "method": method,
                    "threats": [t.name for t in parsed], "strategy": strategy, "attack_steps": attack_steps,
                    "world_size": ctx.world_size, **options}
        start = time.perf_counter()
        result = fit(model, objective, (train_set.images, train_set.labels), (test_set.images, test_set.labels),
                     config, out, eval_threat=evaluated, run_info=run_info, resume=resume, ctx=ctx,
                     generator=generator, progress=progress)
        seconds = time.perf_counter() - start
        if ctx.is_main:
            _report(result, out, arch, arch_kwargs, run_info, config, evaluated, ctx, seconds)
    finally:
        shutdown_distributed(ctx)


#: Optimiser defaults per method (an explicit --optimizer/--lr/--weight-decay wins). L∞-dist follows
#: Zhang et al. 2022 (Adam, lr 0.01 on [0, 1] pixels, no weight decay); LMT uses Adam as in Tsuzuku et al.
_OPTIMIZER_DEFAULTS = {
    "standard": {"optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4},
    "lmt": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0},
    "linf-dist": {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.0},
    "linf-dist-hybrid": {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.0},
}
#: The architecture a method trains when --model is not given.
_DEFAULT_ARCH = {"linf-dist": "linf-dist-net", "linf-dist-hybrid": "linf-dist-hybrid"}


def _arch_kwargs(arch: str, data, width: int | None, depth: int | None) -> dict:
    """Builder arguments: the class count, the input shape where the builder takes it, and --width/--depth."""
    import inspect

    from ..errors import InvalidInputError
    from ..models.registry import get_builder

    accepted = inspect.signature(get_builder(arch)).parameters
    channels, size = data.images.shape[1], data.images.shape[-1]
    kwargs = {"num_classes": data.num_classes}
    kwargs.update({k: v for k, v in (("in_channels", channels), ("image_size", size)) if k in accepted})
    for name, value in (("width", width), ("depth", depth)):
        if value is None:
            continue
        if name not in accepted:
            raise InvalidInputError(f"architecture {arch!r} has no {name!r}; it takes {', '.join(accepted)}")
        if value < 1:
            raise InvalidInputError(f"--{name} must be >= 1, got {value}")
        kwargs[name] = value
    return kwargs


def _check_fits(model: torch.nn.Module, arch: str, data) -> None:
    """One forward pass on one training image, so data the architecture cannot take is a clear error."""
    from ..errors import InvalidInputError

    model.eval()
    try:
        with torch.no_grad():
            model(data.images[:1])
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[0]
        raise InvalidInputError(
            f"architecture {arch!r} cannot take {data.name} images of shape {tuple(data.images.shape[1:])} "
            f"({reason}); choose an architecture for this data with --model"
        ) from None
    finally:
        model.train()


def _report(result, out, arch, arch_kwargs, run_info, config, evaluated, ctx, seconds) -> None:
    """Rank 0: save the final model, write results.json and print the per-epoch table."""
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from ..models import save_model
    from ..results import make_record, write_record

    last = result.history[-1] if result.history else {}
    meta = {**run_info, "command": "mistered " + shlex.join(sys.argv[1:]), "epochs": len(result.history),
            "train_examples": run_info["n_train"], "dataset": run_info["data"], "test_accuracy": last.get("clean_acc"),
            "robust_accuracy": last.get("robust_acc"), "eval_threat": evaluated.name if evaluated is not None else None,
            "torch": torch.__version__}
    save_model(out / "model.pt", result.model.cpu(), arch, arch_kwargs, meta)
    settings = {**run_info, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
                "eval_threat": meta["eval_threat"]}
    summary = {"clean_acc": last.get("clean_acc"), "robust_acc": last.get("robust_acc"), "steps": result.steps,
               "epochs": len(result.history)}
    record = make_record("train", settings, ctx.device, {"total": seconds}, summary, history=result.history)
    write_record(out, record)
    table = Table(title=f"mistered train: {run_info['method']} on {run_info['data']}")
    for column in ("epoch", "loss", "train acc", "held-out clean", f"under {meta['eval_threat'] or '-'}"):
        table.add_column(column, justify="right")
    for h in result.history:
        robust = "-" if h.get("robust_acc") is None else f"{h['robust_acc']:.3f}"
        table.add_row(str(h["epoch"]), f"{h['train_loss']:.4f}", f"{h['train_acc']:.3f}", f"{h['clean_acc']:.3f}", robust)
    console = Console()
    console.print(table)
    console.print(f"model: {out / 'model.pt'}  curves: {out / 'curves.png'}  record: {out / 'results.json'}")
