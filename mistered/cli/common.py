"""What every command does around its own work, in one place.

:func:`start_run` resolves the device (joining the ``torchrun`` process group where the command shards its
work), checks the out folder before anything else happens (a file, an unwritable folder or one already holding
files without ``--resume`` is a one-line error, exit code 2), and returns a :class:`Run`. :meth:`Run.load_inputs`
loads the model and the data from their sources, selects the examples, prints the notes (e.g. "--n 5000 is larger
than the 1000 examples: all 1000 are used") and runs the dry run of the model on the data's shape before any
attack or certificate; :meth:`Run.load_lpips_net` loads ``--lpips-net`` and tries it on the data's shape.
:meth:`Run.write` writes ``results.json`` and the resolved ``config.yaml`` (rank 0 only).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import click
import torch
from torch import nn

from ..errors import InvalidInputError
from ..progress import Progress
from .options import parse_channels, parse_model_args, resolved_config, resume_folder, write_config

if TYPE_CHECKING:
    from ..threats import Threat

__all__ = ["Run", "start_run", "check_positive", "check_lpips_net", "load_feature_extractor", "FROM_OPTIONS"]

#: ``Run.load_data(n=FROM_OPTIONS)``: take ``--n`` as given.
FROM_OPTIONS = object()


def check_positive(**values: int | None) -> None:
    """Raise :class:`InvalidInputError` for the first option (``batch_size=...``) below 1 (``None`` is skipped)."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise InvalidInputError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def check_lpips_net(threats: Iterable[Threat], spec: str | None) -> None:
    """Raise :class:`InvalidInputError` when a threat has an ``lpips-net`` budget and ``--lpips-net`` is missing, or
    ``--lpips-net`` is given and no threat has one."""
    from ..evaluate.budgets import threat_budgets

    uses = any(b.name == "lpips-net" for threat in threats for b in threat_budgets(threat))
    if uses and spec is None:
        raise InvalidInputError("an lpips-net budget measures in a feature extractor's activations: give it with "
                                "--lpips-net file.py:Name")
    if spec is not None and not uses:
        raise InvalidInputError("--lpips-net is only used by lpips-net budgets, "
                                "e.g. --threat 'linf(0.3)|lpips-net<=0.5'")


def load_feature_extractor(spec: str, device: torch.device) -> nn.Module:
    """The network of ``--lpips-net file.py:Name`` (or ``package.module:Name``), frozen, in eval mode, on ``device``.

    Raises:
        InvalidInputError: not of that form, or the file/module/name cannot be loaded (one line naming why).
    """
    from ..models.python_source import load_python_model
    from ..models.sources import parse_python_spec

    parsed = parse_python_spec(spec)
    if parsed is None:
        raise InvalidInputError(f"--lpips-net takes file.py:Name or package.module:Name, got {spec!r}")
    try:
        net = load_python_model(parsed, {})[0]
    except InvalidInputError as error:
        raise InvalidInputError(f"--lpips-net {spec}: {error}") from None
    return net.to(device).eval().requires_grad_(False)


@dataclass
class Run:
    """One command's run: its options, process group, device and checked out folder.

    Use it as a context manager: a folder the run created is removed again when the run fails before writing
    anything into it.
    """

    command: str
    options: dict[str, Any]
    group: Any  # mistered.train.distributed.DistContext
    out: Path
    resuming: bool
    created: bool
    inputs: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return self.group.device

    @property
    def quiet(self) -> bool:
        """No progress and notes: ``--quiet``, or a process other than rank 0."""
        return bool(self.options.get("quiet")) or not self.group.is_main

    def note(self, text: str) -> None:
        """Tell the user something about the inputs (stderr; silent when :attr:`quiet`)."""
        if not self.quiet:
            click.echo(f"note: {text}", err=True)

    def progress(self, description: str, total: int | None) -> Progress:
        """A :class:`~mistered.progress.Progress` (silent when :attr:`quiet`)."""
        return Progress(description, total, quiet=self.quiet)

    def load_model(self, default: str) -> nn.Module:
        """The model of ``--model --weights --model-args --mean --std`` (``default`` without ``--model``), on the
        run's device."""
        from ..models import load_model

        opts = self.options
        return load_model(opts.get("model") or default, weights=opts.get("weights"),
                          model_args=parse_model_args(opts.get("model_args")),
                          mean=parse_channels(opts.get("mean"), "--mean"), std=parse_channels(opts.get("std"), "--std"),
                          device=self.device)

    def load_data(self, *, split: str | None = None, n: int | None | object = FROM_OPTIONS,
                  indices: bool = True) -> Any:
        """The selected examples of ``--data --download --split --n --indices --image-size`` (a
        :class:`~mistered.data.Selection`); ``split``/``n`` replace ``--split``/``--n`` where the command resolved
        them itself (``n=None``: all); ``indices=False`` ignores ``--indices``. Its notes are told by :meth:`check`."""
        from ..data import load_dataset, select

        opts = self.options
        dataset = load_dataset(opts["data"], split or opts["split"], download=bool(opts.get("download")),
                               image_size=opts.get("image_size"))
        selection = select(dataset, n=opts.get("n") if n is FROM_OPTIONS else n,
                           indices=opts.get("indices") if indices else None)
        self.notes += [t for t in (*dataset.source.notes, *selection.notes) if t not in self.notes]
        return selection

    def check(self, model: nn.Module, data: Any) -> None:
        """The dry run: ``model`` takes the data's images and gives logits for all its classes (one line if not);
        records the sources of both for the record (:attr:`inputs`)."""
        from ..models import check_model_on_data
        from ..results import input_record

        check_model_on_data(model, tuple(data.sample_shape), data.num_classes, device=self.device)
        self.inputs = input_record(model, data)
        for text in self.notes:  # told once the inputs are known to work: a failing run prints one error line
            self.note(text)

    def load_inputs(self, default_model: str, *, n: int | None | object = FROM_OPTIONS) -> tuple[nn.Module, Any]:
        """:meth:`load_model`, :meth:`load_data` and :meth:`check`: ``(model, selection)``, ready to work on."""
        model = self.load_model(default_model)
        data = self.load_data(n=n)
        self.check(model, data)
        return model, data

    def load_lpips_net(self, data: Any) -> nn.Module | None:
        """The extractor of ``--lpips-net`` (``None`` without it), tried on two blank images of the data's shape so
        that one that fails on them is a one-line error before any work."""
        spec = self.options.get("lpips_net")
        if spec is None:
            return None
        from ..metrics import FeatureDistance

        net = load_feature_extractor(spec, self.device)
        blank = torch.zeros(2, *data.sample_shape, device=self.device)
        with torch.no_grad():
            FeatureDistance(net)(blank, blank)
        return net

    def settings(self, resolved: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        """The record's settings: the resolved options (underscore keys) plus ``extra``."""
        config = resolved_config(click.get_current_context(), resolved)
        return {**{k.replace("-", "_"): v for k, v in config.items()}, **extra}

    def write_config(self, resolved: dict[str, Any] | None = None) -> Path:
        """Write ``config.yaml``: the resolved options, ``resolved`` (what the command filled in) first."""
        return write_config(self.out, resolved_config(click.get_current_context(), resolved))

    def write(self, record: dict[str, Any], resolved: dict[str, Any] | None = None) -> Path:
        """Write ``results.json`` and ``config.yaml`` into the out folder (rank 0); returns the json path."""
        from ..results import write_record

        self.write_config(resolved)
        return write_record(self.out, record)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if kind is None:
            from ..train.distributed import shutdown_distributed

            shutdown_distributed(self.group)
            return
        if self.created and self.group.is_main:
            try:
                self.out.rmdir()  # only succeeds while the folder is still empty
            except OSError:
                pass


def start_run(command: str, options: dict[str, Any], *, shard: bool = False) -> Run:
    """Resolve the device and check the out folder (before any work); see the module docstring.

    Args:
        command: names the default out folder ``mistered-out/<command>-<time>-<random>/``.
        options: the command's click parameters.
        shard: the command splits its work over ``torchrun`` processes; other commands refuse to run under
            ``torchrun`` rather than repeat the same work in every process.
    """
    from ..train.distributed import DistContext, init_distributed

    if not shard and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        name = click.get_current_context().info_name
        raise InvalidInputError(f"'mistered {name}' runs in one process; start it without torchrun")
    if shard:
        group = init_distributed(options.get("device"))
    else:
        from ..device import resolve_device

        group = DistContext(device=resolve_device(options.get("device")))
    folder, resuming = resume_folder(options.get("resume"), options.get("out"))
    out, created = _shared_out_dir(folder, command, resuming, group)
    return Run(command, options, group, out, resuming, created)


def _shared_out_dir(folder: str | None, command: str, resuming: bool, group: Any) -> tuple[Path, bool]:
    """Rank 0 checks (and creates) the out folder; every rank gets ``(path, created)``, or rank 0's error."""
    from ..results import prepare_out_dir
    from ..sharding import run_on_main

    def make() -> tuple[str, bool]:
        existed = folder is not None and Path(folder).is_dir()
        return str(prepare_out_dir(folder, command, resume=resuming)), not existed

    path, created = run_on_main(make, group)
    return Path(path), created
