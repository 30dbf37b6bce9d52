"""Progress: a bar on a terminal, plain lines every few seconds when stderr is a file, nothing with --quiet."""

from __future__ import annotations

import io

from click.testing import CliRunner

from mistered.cli import main
from mistered.progress import Progress

ATTACK = ["attack", "--model", "mnist-fc", "--threat", "linf", "--n", "6", "--batch-size", "2", "--steps", "1"]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_every_interval_and_at_the_end_when_not_a_terminal():
    stream, clock = io.StringIO(), _Clock()
    with Progress("attack", 1000, stream=stream, interval=10.0, clock=clock) as progress:
        for _ in range(10):
            clock.now += 4.0
            progress.advance(100)
    lines = stream.getvalue().splitlines()
    assert lines == ["attack: 300/1000 examples, 12.0 s", "attack: 600/1000 examples, 24.0 s",
                     "attack: 900/1000 examples, 36.0 s", "attack: 1000/1000 examples, 40.0 s"]


def test_quiet_writes_nothing():
    stream = io.StringIO()
    with Progress("attack", 10, stream=stream, quiet=True, interval=0.0) as progress:
        progress.advance(10)
    assert stream.getvalue() == ""


def test_a_terminal_gets_a_bar_not_lines():
    stream = _Terminal()
    with Progress("attack", 10, stream=stream, interval=0.0) as progress:
        progress.describe("attack: linf")
        progress.advance(10)
    assert "examples," not in stream.getvalue()  # no plain line; the (transient) bar was drawn instead


def test_an_unknown_total_and_other_units_read_naturally():
    stream = io.StringIO()
    with Progress("training", None, unit="steps", stream=stream) as progress:
        progress.advance(7)
    assert stream.getvalue().startswith("training: 7 steps, ")


def test_the_cli_writes_progress_lines_to_a_non_terminal_and_none_with_quiet(tmp_path):
    result = CliRunner().invoke(main, [*ATTACK, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "pgd on linf(0.3): 6/6 examples" in result.stderr
    quiet = CliRunner().invoke(main, [*ATTACK, "--quiet", "--out", str(tmp_path / "b")])
    assert quiet.exit_code == 0 and quiet.stderr == "", quiet.stderr
