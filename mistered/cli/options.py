"""The options every command shares, declared once: the same names, types and help text everywhere.

* :func:`model_options`: ``--model SOURCE --weights FILE --model-args JSON --mean LIST --std LIST``;
* :func:`data_options`: ``--data SOURCE --download --split --n N --indices FILE --image-size N``;
* :func:`run_options`: ``--device --out DIR --resume [DIR] --config FILE --quiet --seed --batch-size``
  (:func:`config_option` and :func:`quiet_option` alone for commands without the rest);
* :func:`lpips_net_option`: ``--lpips-net FILE.py:Name``, the feature extractor of ``lpips-net`` distances;
* :func:`eps_option` (a radius; comma list and/or repeated) and :func:`threat_option` (repeatable; a spec
  with commas is one threat).

``--config file.yaml`` holds options by name (``batch-size`` or ``batch_size``); options given on the command
line win over the file, unknown keys are an error naming them. :func:`resolved_config` is what a run writes to
``config.yaml``: replaying it with ``--config`` repeats the run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import yaml

from ..errors import InvalidInputError
from ..evaluate.points import parse_number

__all__ = [
    "model_options", "data_options", "run_options", "config_option", "quiet_option", "lpips_net_option",
    "eps_option", "threat_option", "parse_radii",
    "parse_channels", "parse_model_args", "split_top_level", "resume_folder", "resolved_config", "write_config",
    "HELP", "RUN_KEYS",
]

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

#: Options that say where a run writes or how it talks, not what it computes: never written to config.yaml.
RUN_KEYS = ("config", "out", "resume", "quiet")

_RESUME_IN_OUT = "\0out"  # --resume given without a folder: the --out folder


def _stack(*decorators: Decorator) -> Decorator:
    def apply(function: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


#: The help of every shared option: each command's help starts with this text (a default or a note may follow).
HELP: dict[str, str] = {
    "model": "The model: a bundled name, a mistered checkpoint, file.py:Name or package.module:Name (with --weights), "
             "a TorchScript, torch.export .pt2 or ONNX file",
    "weights": "Weights for --model: a state_dict (.pt/.pth, read with weights_only=True), a .safetensors file or a "
               "mistered checkpoint.",
    "model_args": "Keyword arguments (a JSON object) for --model file.py:Name, e.g. '{\"width\": 64}'.",
    "mean": "Per-channel mean the model expects its inputs normalised with, e.g. 0.485,0.456,0.406; folded in front "
            "of the model (threats and budgets stay in [0, 1] pixels).",
    "std": "Per-channel standard deviation of that normalisation, e.g. 0.229,0.224,0.225.",
    "data": "The data: a bundled name, a torchvision name with --download (mnist, fashion-mnist, cifar10, cifar100, "
            "svhn), an image folder, an .npz or a .pt file of images and labels.",
    "download": "Download a torchvision data set that is not on this machine yet.",
    "split": "Which split of --data to use.",
    "n": "Number of examples: the first N of the split, or of --indices",
    "indices": "A file listing the indices of the examples to use (in that order): one per line, a JSON list or .npy.",
    "image_size": "Resize the images of an image folder to N x N pixels.",
    "batch_size": "Examples per batch (per process under torchrun).",
    "seed": "Seed of the run's randomness (random starts, sampling, initial weights).",
    "device": "cpu, cuda, cuda:N or auto (CUDA when present).",
    "out": "Output folder, new or empty [default: ./mistered-out/<command>-<time>-<random>/].",
    "resume": "Continue the interrupted run saved in DIR (alone: in --out); same options required.",
    "config": "A YAML file of options (keys: the option names); the command line wins over it.",
    "quiet": "No progress bar and no progress lines.",
    "eps": "Radius in pixels of [0, 1] images; a comma list and/or repeated for several.",
    "lpips_net": "Feature extractor of the lpips-net distance (budgets such as '...|lpips-net<=0.5'): file.py:Name "
                 "or package.module:Name, an nn.Module taking (B, C, H, W) images in [0, 1] and returning a tensor "
                 "or a list of activations.",
    "threat": "Threat preset or spec, e.g. linf, stadv, 'flow(0.05)>>affine(10deg,0.1)>>linf(0.3)|lpips<=0.1' (a spec "
              "with commas is one threat); repeat for several.",
}


def model_options(default: str = "mnist-cnn") -> Decorator:
    """``--model``, ``--weights``, ``--model-args``, ``--mean``, ``--std``; ``default`` is shown in the help."""
    return _stack(
        click.option("--model", metavar="SOURCE", default=None, help=f"{HELP['model']} [default: {default}]."),
        click.option("--weights", metavar="FILE", default=None, help=HELP["weights"]),
        click.option("--model-args", metavar="JSON", default=None, help=HELP["model_args"]),
        click.option("--mean", metavar="LIST", default=None, help=HELP["mean"]),
        click.option("--std", metavar="LIST", default=None, help=HELP["std"]),
    )


def data_options(n_default: int | None, split_default: str = "test", n_note: str = "") -> Decorator:
    """``--data``, ``--download``, ``--split``, ``--n``, ``--indices``, ``--image-size``."""
    shown = "all" if n_default is None else str(n_default)
    return _stack(
        click.option("--data", metavar="SOURCE", default="mnist-5k", show_default=True, help=HELP["data"]),
        click.option("--download", is_flag=True, default=False, help=HELP["download"]),
        click.option("--split", type=click.Choice(["train", "test"]), default=split_default, show_default=True,
                     help=HELP["split"]),
        click.option("--n", type=int, default=n_default, help=f"{HELP['n']} [default: {shown}{n_note}]."),
        click.option("--indices", metavar="FILE", default=None, help=HELP["indices"]),
        click.option("--image-size", type=int, default=None, help=HELP["image_size"]),
    )


def run_options(batch_size: int) -> Decorator:
    """``--device``, ``--out``, ``--resume``, ``--config``, ``--quiet``, ``--seed``, ``--batch-size``."""
    return _stack(
        click.option("--batch-size", type=int, default=batch_size, show_default=True, help=HELP["batch_size"]),
        click.option("--seed", type=int, default=0, show_default=True, help=HELP["seed"]),
        click.option("--device", default="auto", show_default=True, help=HELP["device"]),
        click.option("--out", metavar="DIR", default=None, help=HELP["out"]),
        click.option("--resume", metavar="[DIR]", is_flag=False, flag_value=_RESUME_IN_OUT, default=None,
                     help=HELP["resume"]),
        config_option(),
        quiet_option(),
    )


def config_option() -> Decorator:
    """``--config FILE``: a YAML file of the command's options (read first; the command line wins)."""
    return click.option("--config", metavar="FILE", is_eager=True, expose_value=False, callback=_load_config,
                        help=HELP["config"])


def quiet_option() -> Decorator:
    """``--quiet``: no progress bar and no progress lines."""
    return click.option("--quiet", is_flag=True, default=False, help=HELP["quiet"])


def lpips_net_option() -> Decorator:
    """``--lpips-net FILE.py:Name``: the feature extractor of ``lpips-net`` distances and budgets."""
    return click.option("--lpips-net", metavar="FILE.py:Name", default=None, help=HELP["lpips_net"])


def eps_option(default: str | None = None, extra_help: str = "") -> Decorator:
    """``--eps``: a radius in pixels of [0, 1] images; a comma list and/or repeated."""
    shown = f" [default: {default}]" if default else ""
    return click.option("--eps", multiple=True, metavar="LIST", help=f"{HELP['eps']}{extra_help}{shown}")


def threat_option(default: Sequence[str] = (), extra_help: str = "") -> Decorator:
    """``--threat``: repeatable; each value is one threat, commas and all."""
    shown = f" [default: {' '.join(default)}]" if default else ""
    return click.option("--threat", multiple=True, metavar="SPEC", help=f"{HELP['threat']}{extra_help}{shown}")


# -- parsing ---------------------------------------------------------------------------------------------------


def parse_radii(values: Sequence[str] | str | None, option: str = "--eps") -> tuple[float, ...]:
    """Finite non-negative radii (``0.1``, ``8/255``) from comma lists and/or repeated values, in the order given."""
    if values is None:
        return ()
    texts = [values] if isinstance(values, str) else list(values)
    radii = []
    for text in texts:
        for part in str(text).split(","):
            if not part.strip():
                continue
            try:
                value = parse_number(part)
            except (ValueError, ZeroDivisionError):
                raise InvalidInputError(f"{option} must be numbers such as 0.1,0.3 or 8/255, got {text!r}") from None
            if not (value >= 0 and math.isfinite(value)):
                raise InvalidInputError(f"{option} needs finite non-negative radii such as 0.1,0.3, got {text!r}")
            radii.append(value)
    return tuple(radii)


def parse_channels(text: str | None, option: str) -> tuple[float, ...] | None:
    """``--mean``/``--std``: comma-separated finite numbers (``None`` when not given)."""
    if text is None:
        return None
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InvalidInputError(f"{option} must be comma-separated numbers, one per channel, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise InvalidInputError(f"{option} must be finite numbers, one per channel, got {text!r}")
    return values


def parse_model_args(text: str | None) -> dict[str, Any] | None:
    """``--model-args``: a JSON object (``None`` when not given)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"--model-args must be a JSON object such as '{{\"width\": 64}}': {error}") from None
    if not isinstance(value, dict):
        raise InvalidInputError(f"--model-args must be a JSON object such as '{{\"width\": 64}}', got {text!r}")
    return value


def split_top_level(text: str) -> list[str]:
    """Split on the commas outside parentheses: ``"linf,affine(10deg,0.1)"`` -> ``["linf", "affine(10deg,0.1)"]``."""
    parts, depth, current = [], 0, []
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def resume_folder(resume: str | None, out: str | None) -> tuple[str | None, bool]:
    """``(folder, resuming)`` from ``--resume [DIR]`` and ``--out``: ``--resume`` alone continues ``--out``.

    Raises:
        InvalidInputError: ``--resume DIR`` and a different ``--out``.
    """
    if resume is None:
        return out, False
    if resume == _RESUME_IN_OUT:
        return out, True
    if out is not None and Path(out) != Path(resume):
        raise InvalidInputError(f"--resume {resume} and --out {out} name different folders; give one of them")
    return resume, True


# -- --config and config.yaml ------------------------------------------------------------------------------------


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Read ``--config`` into ``ctx.default_map``: the file's values become the defaults the command line overrides."""
    if value is None:
        return
    try:
        loaded = yaml.safe_load(Path(value).read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidInputError(f"--config {value!r} cannot be read ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        first = str(error).strip().splitlines()[0]
        raise InvalidInputError(f"--config {value!r} is not valid YAML: {first}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise InvalidInputError(f"--config {value!r} must hold a mapping of option names to values")
    params = {p.name: p for p in ctx.command.params if isinstance(p, click.Option) and p.expose_value}
    unknown = [str(k) for k in loaded if str(k).replace("-", "_") not in params]
    if unknown:
        raise InvalidInputError(f"--config {value!r}: unknown option(s) {', '.join(unknown)}; the keys are the "
                                f"options of 'mistered {ctx.info_name}' (see --help)")
    defaults = {}
    for key, item in loaded.items():
        param = params[str(key).replace("-", "_")]
        defaults[param.name] = _config_value(param, item)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


def _config_value(param: click.Option, value: Any) -> Any:
    """A YAML value in the form the option's type takes (lists for repeatable options, text for text options)."""
    if param.multiple:
        items = value if isinstance(value, list) else [value]
        return [_text(v) if isinstance(param.type, click.types.StringParamType) else v for v in items]
    if isinstance(param.type, click.types.StringParamType) and value is not None:
        return _text(value)
    return value


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def resolved_config(ctx: click.Context, resolved: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's options as config.yaml keys: every exposed, visible option but :data:`RUN_KEYS`, with the
    command's ``resolved`` values (defaults it filled in, deprecated aliases folded) taking precedence."""
    resolved = resolved or {}
    config: dict[str, Any] = {}
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or not param.expose_value or param.hidden or param.name in RUN_KEYS:
            continue
        value = resolved.get(param.name, ctx.params.get(param.name))
        config[param.name.replace("_", "-")] = _plain(value)
    return config


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def write_config(out_dir: str | Path, config: dict[str, Any]) -> Path:
    """Atomically write ``config`` to ``out_dir/config.yaml``; returns the path."""
    from ..io import atomic_write_text

    text = ("# The resolved options of this run: `mistered <command> --config config.yaml --out NEW_DIR` repeats it.\n"
            + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return atomic_write_text(Path(out_dir) / "config.yaml", text)
