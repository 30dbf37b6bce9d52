"""``mistered train``: standard, adversarial (any threat, several at once), LMT or L∞-dist training.

``--model`` is a model source like everywhere: an architecture name from the registry trains a new model of
that architecture (``--width``/``--depth``); any other source (``file.py:Name`` with ``--weights``, a checkpoint,
TorchScript, ONNX ..., or a registry name with ``--weights``) is loaded and fine-tuned. ``--data``/``--split``/
``--n``/``--indices`` select the training examples; the other split of ``--data`` is held out.

Works the same under ``torchrun --nproc_per_node N -m mistered train ...`` (DistributedDataParallel;
only rank 0 writes files and prints).
"""

from __future__ import annotations

import shlex
import sys
import time
from typing import Any

import click
import torch

from ..errors import InvalidInputError
from .common import check_positive, start_run
from .options import data_options, eps_option, model_options, parse_radii, run_options, threat_option

__all__ = ["train"]

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


@click.command("train")
@threat_option(extra_help=" Implies --method adversarial.")
@click.option("--strategy", type=click.Choice(["random", "avg", "max"]), default="max", show_default=True,
              help="How several threats (or a Union's alternatives) combine per batch.")
@click.option("--sigma", type=float, default=None, help="smoothing: the Gaussian noise level (pixel units of [0, 1] images).")
@click.option("--method", type=click.Choice(["standard", "adversarial", "pat", "lmt", "linf-dist", "linf-dist-hybrid",
                                            "smoothing"]),
              default=None, help="Training method [default: adversarial with --threat, else standard]. pat: perceptual "
                                 "adversarial training (Fast-LPA; --threat with a perceptual bound, default "
                                 "'linf(0.3)|lpips-self<=0.5'). linf-dist with --model linf-dist-hybrid is "
                                 "linf-dist-hybrid (IBP loss on the head).")
@click.option("--epochs", type=int, default=3, show_default=True,
              help="Epochs to train (with --resume: may be raised to extend the run).")
@click.option("--width", type=int, default=None,
              help="Architecture width (hidden units or channels) of a new model [default: the architecture's].")
@click.option("--depth", type=int, default=None,
              help="Architecture depth (hidden layers) of a new model [default: the architecture's].")
@click.option("--lr", type=float, default=None, help="Peak learning rate [default: 0.05; lmt 1e-3; linf-dist 0.01].")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default=None,
              help="[default: sgd; adam for lmt and linf-dist]")
@click.option("--weight-decay", type=float, default=None,
              help="L2 penalty of the optimizer [default: 5e-4; 0 for lmt and linf-dist].")
@click.option("--shift", type=int, default=0, show_default=True, help="Augment: random translations of up to N pixels.")
@click.option("--schedule", type=click.Choice(["cosine", "multistep", "constant"]), default="cosine", show_default=True)
@click.option("--attack-steps", type=int, default=7, show_default=True,
              help="PGD steps of adversarial training (pat: Fast-LPA steps).")
@click.option("--checkpoint-every", type=int, default=0, show_default=True,
              help="Also checkpoint every N steps (0: epoch ends only).")
@click.option("--n-train", type=int, default=None, hidden=True, help="Deprecated: --n.")
@click.option("--eval-n", type=int, default=200, show_default=True, help="Held-out examples attacked each epoch.")
@click.option("--eval-threat", default=None, metavar="SPEC",
              help="Threat of the per-epoch robust accuracy [default: the training threat].")
@click.option("--c", type=float, default=None, help="LMT: target L2 radius c.")
@click.option("--pairwise", is_flag=True, help="LMT: the tighter pairwise last-layer bound.")
@eps_option(extra_help=" Here one value: the L-inf-dist training radius of its hinge loss (of the interval bounds "
                       "for the hybrid).")
@click.option("--progress/--no-progress", default=None, hidden=True, help="Deprecated: --quiet.")
@click.option("--compile/--no-compile", "compile", default=True, show_default=True,
              help="L-inf-dist layers: the compiled p = inf kernel (~2.5x faster on CPU, same results; falls back to "
                   "the eager kernel with a warning when no C++ compiler works).")
@model_options(default="mnist-cnn; linf-dist-net for --method linf-dist, linf-dist-hybrid for --method "
                       "linf-dist-hybrid")
@data_options(n_default=None, split_default="train", n_note="; the training examples")
@run_options(batch_size=64)
def train(**options: Any) -> None:
    """Train a model and write model.pt, checkpoints/, log.json, curves.png, results.json and config.yaml."""
    from ..models.linf_dist.nets import set_linf_dist_compiled
    from ..threats import Union, parse_threat
    from ..train import TrainConfig, build_objective, default_method, fit
    from ..train.pat import DEFAULT_PAT_THREAT

    parsed = [parse_threat(spec) for spec in options["threat"]]
    method = options["method"] or default_method(parsed)
    if method == "pat" and not parsed:
        parsed = [parse_threat(DEFAULT_PAT_THREAT)]
    if method == "linf-dist" and options["model"] == "linf-dist-hybrid":
        method = "linf-dist-hybrid"  # the hybrid's L-inf-dist training: the p-relaxation plus IBP through the head
    objective_options = _objective_options(method, options)
    n = _training_n(options)
    check_positive(n=n, batch_size=options["batch_size"], epochs=options["epochs"])
    defaults = _OPTIMIZER_DEFAULTS.get(method, _OPTIMIZER_DEFAULTS["standard"])
    config = TrainConfig(
        epochs=options["epochs"], batch_size=options["batch_size"],
        lr=defaults["lr"] if options["lr"] is None else options["lr"],
        optimizer=options["optimizer"] or defaults["optimizer"], schedule=options["schedule"], seed=options["seed"],
        weight_decay=defaults["weight_decay"] if options["weight_decay"] is None else options["weight_decay"],
        shift=options["shift"], checkpoint_every=options["checkpoint_every"], eval_n=options["eval_n"],
        eval_attack_steps=max(options["attack_steps"], 1))
    evaluated = parse_threat(options["eval_threat"]) if options["eval_threat"] is not None else (
        parsed[0] if len(parsed) == 1 else (Union(tuple(parsed)) if parsed else None))
    source = options["model"] or _DEFAULT_ARCH.get(method, "mnist-cnn")
    with start_run("train", options, shard=True) as run:
        train_set = run.load_data(n=n)
        held_out = run.load_data(split="test" if options["split"] == "train" else "train", n=None, indices=False)
        torch.manual_seed(options["seed"])  # the initial weights of a new model
        model, arch, arch_kwargs = _model(run, source, train_set, options)
        run.check(model, train_set)
        run.inputs.setdefault("model", {"kind": "architecture", "spec": source, "arch_kwargs": arch_kwargs})
        set_linf_dist_compiled(model, options["compile"])  # a runtime choice: not in run_info or --resume checks
        generator = torch.Generator().manual_seed(options["seed"])
        objective = build_objective(method, threats=parsed, strategy=options["strategy"],
                                    attack_steps=options["attack_steps"], generator=generator, **objective_options)
        run_info = {"data": options["data"], "split": options["split"], "n_train": len(train_set), "model": source,
                    "method": method, "threats": [t.name for t in parsed], "strategy": options["strategy"],
                    "attack_steps": options["attack_steps"], "world_size": run.group.world_size, **objective_options,
                    "inputs": run.inputs}
        progress = not run.quiet if options["progress"] is None else options["progress"] and not run.quiet
        start = time.perf_counter()
        result = fit(model, objective, train_set, held_out, config, run.out, eval_threat=evaluated, run_info=run_info,
                     resume=run.resuming, ctx=run.group, generator=generator, progress=progress)
        if run.group.is_main:
            resolved = {"model": source, "method": method, "n": n, "lr": config.lr, "optimizer": config.optimizer,
                        "weight_decay": config.weight_decay,
                        "eps": [objective_options["eps"]] if "eps" in objective_options else []}
            _report(run, result, arch, arch_kwargs, run_info, config, evaluated, time.perf_counter() - start, resolved)


def _training_n(options: dict[str, Any]) -> int | None:
    """``--n`` (or the deprecated ``--n-train``)."""
    if options["n"] is not None and options["n_train"] is not None:
        raise InvalidInputError("--n-train is the old name of --n; give one of them")
    return options["n"] if options["n"] is not None else options["n_train"]


def _objective_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The method's own options: LMT's ``c``/``pairwise``, L∞-dist's ``eps``, smoothing's ``sigma``; refused for other
    methods."""
    if options["sigma"] is not None:
        if method != "smoothing":
            raise InvalidInputError(f"--sigma is the smoothing option; add --method smoothing (method is {method!r})")
        return {"sigma": options["sigma"]}
    if options["c"] is not None or options["pairwise"]:
        if method != "lmt":
            raise InvalidInputError(f"--c and --pairwise are LMT options; add --method lmt (method is {method!r})")
        return {k: v for k, v in (("c", options["c"]), ("pairwise", options["pairwise"] or None)) if v is not None}
    radii = parse_radii(options["eps"])
    if radii:
        if method not in ("linf-dist", "linf-dist-hybrid"):
            raise InvalidInputError(f"--eps is the L-inf-dist option; add --method linf-dist (method is {method!r})")
        if len(radii) > 1:
            raise InvalidInputError(f"train takes one --eps radius, got {len(radii)}")
        return {"eps": radii[0]}
    return {}


def _model(run, source: str, data, options: dict[str, Any]) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """``(model, arch, arch_kwargs)``: a new registry architecture, or a loaded model to fine-tune (``arch`` is
    then its checkpoint's architecture, or ``"external"`` for other sources)."""
    from ..models import ARCHITECTURES, EXTERNAL_ARCH, build_model, read_checkpoint

    loaded = options["weights"] is not None or options["model_args"] is not None or source not in ARCHITECTURES
    if not loaded:
        if options["mean"] is not None or options["std"] is not None:
            raise InvalidInputError("--mean/--std fold a normalisation into a loaded model; a new architecture "
                                    "learns from [0, 1] pixels")
        arch_kwargs = _arch_kwargs(source, data, width=options["width"], depth=options["depth"])
        return build_model(source, **arch_kwargs).to(run.device), source, arch_kwargs
    for name in ("width", "depth"):
        if options[name] is not None:
            raise InvalidInputError(f"--{name} shapes a new architecture; --model {source} is loaded as it is")
    model = run.load_model(source)
    origin = model.mistered_source
    if origin.kind in ("bundled", "checkpoint") and origin.weights is None and origin.mean is None:
        checkpoint = read_checkpoint(origin.path)  # fine-tuned weights of a mistered architecture stay loadable
        return model, checkpoint["arch"], checkpoint["arch_kwargs"]
    return model, EXTERNAL_ARCH, {}


def _arch_kwargs(arch: str, data, width: int | None, depth: int | None) -> dict:
    """Builder arguments: the class count, the input shape where the builder takes it, and --width/--depth."""
    import inspect

    from ..models.registry import get_builder

    accepted = inspect.signature(get_builder(arch)).parameters
    channels, size = data.sample_shape[0], data.sample_shape[-1]
    kwargs = {"num_classes": data.num_classes}
    kwargs.update({k: v for k, v in (("in_channels", channels), ("image_size", size)) if k in accepted})
    for name, value in (("width", width), ("depth", depth)):
        if value is None:
            continue
        if name not in accepted:
            raise InvalidInputError(f"architecture {arch!r} has no {name!r}; it takes {', '.join(accepted)}")
        check_positive(**{name: value})
        kwargs[name] = value
    return kwargs


def _report(run, result, arch, arch_kwargs, run_info, config, evaluated, seconds, resolved) -> None:
    """Rank 0: save the final model, write results.json and config.yaml, print the per-epoch table."""
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from ..models import save_model
    from ..results import make_record

    last = result.history[-1] if result.history else {}
    meta = {**{k: v for k, v in run_info.items() if k != "inputs"}, "command": "mistered " + shlex.join(sys.argv[1:]),
            "epochs": len(result.history), "train_examples": run_info["n_train"], "dataset": run_info["data"],
            "test_accuracy": last.get("clean_acc"), "robust_accuracy": last.get("robust_acc"),
            "eval_threat": evaluated.name if evaluated is not None else None, "torch": torch.__version__}
    save_model(run.out / "model.pt", result.model.cpu(), arch, arch_kwargs, meta)
    settings = {**run.settings(resolved), **{k: v for k, v in run_info.items() if k != "inputs"},
                **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
                "eval_threat": meta["eval_threat"]}
    summary = {"clean_acc": last.get("clean_acc"), "robust_acc": last.get("robust_acc"), "steps": result.steps,
               "epochs": len(result.history)}
    record = make_record("train", settings, run.device, {"total": seconds}, summary, history=result.history,
                         inputs=run.inputs)
    run.write(record, resolved)
    table = Table(title=f"mistered train: {run_info['method']} on {run_info['data']}")
    for column in ("epoch", "loss", "train acc", "held-out clean", f"under {meta['eval_threat'] or '-'}"):
        table.add_column(column, justify="right")
    for h in result.history:
        robust = "-" if h.get("robust_acc") is None else f"{h['robust_acc']:.3f}"
        table.add_row(str(h["epoch"]), f"{h['train_loss']:.4f}", f"{h['train_acc']:.3f}", f"{h['clean_acc']:.3f}",
                      robust)
    console = Console()
    console.print(table)
    console.print(f"model: {run.out / 'model.pt'}  curves: {run.out / 'curves.png'}  "
                  f"record: {run.out / 'results.json'}")
