"""The ``mistered`` command line: a thin click layer over the library.

Each command lives in its own module (``mistered/cli/<name>.py``) and is imported only when it runs,
so ``mistered --help`` stays fast. Any :class:`~mistered.errors.MisteredError` (bad input, a bad
checkpoint, an unknown threat) becomes one ``Error: ...`` line on stderr and exit code 2, and so does a
command's usage error (an unknown option, a value of the wrong type). The options every command shares are
declared once, in :mod:`mistered.cli.options`.
"""

from __future__ import annotations

import importlib
import logging

import click

from ..errors import MisteredError

__all__ = ["main"]

#: command name -> (module, function, one-line help)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "attack": ("mistered.cli.attack", "attack", "Attack a model under a threat model and report robust accuracy."),
    "train": ("mistered.cli.train", "train", "Train a model: standard, adversarial, LMT or L-inf-dist."),
    "certify": ("mistered.cli.certify", "certify", "Certify robustness: LMT, L-inf-dist, GeoCert, smoothing, IBP/CROWN/alpha-CROWN."),
    "lipschitz": ("mistered.cli.lipschitz", "lipschitz", "Compare Lipschitz estimators, LipMIP included."),
    "evaluate": ("mistered.cli.evaluate", "evaluate", "Empirical vs certified robustness in one report."),
    "calibrate": ("mistered.cli.calibrate", "calibrate",
                  "Measure a data set's perceptual distances: which budgets mean the same image."),
    "verify": ("mistered.cli.verify", "verify",
               "Verify VNNLIB properties and VNN-COMP benchmarks: sat / unsat with checked counterexamples."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (module, _, _) in _COMMANDS.items() if importlib.util.find_spec(module) is not None]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module_name, attribute, _ = _COMMANDS[name]
        if importlib.util.find_spec(module_name) is None:
            return None
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MisteredError as error:
            click.echo(f"Error: {error}", err=True)
            ctx.exit(2)
        except click.UsageError as error:  # a command's bad option: one line too, naming the help
            command = f"{ctx.command_path} {ctx.invoked_subcommand}" if ctx.invoked_subcommand else ctx.command_path
            click.echo(f"Error: {error.format_message()} (see '{command} --help')", err=True)
            ctx.exit(error.exit_code)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="mistered")
def main(verbose: int) -> None:
    """mistered: how can this model be fooled, and what can we prove it resists?"""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
