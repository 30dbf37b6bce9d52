"""Bad input that reaches the CLI is one ``Error: ...`` line and exit code 2, in every command, before any work:
an unknown or missing device, an empty selection, a model that fails on the data's shape or has too few classes.
``--n`` larger than the data is a note, not an error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mistered.cli import main

#: enough options for each command to run quickly on 28x28 grey images with the bundled mnist-fc
QUICK = {
    "attack": ["--model", "mnist-fc", "--threat", "linf", "--steps", "1"],
    "evaluate": ["--model", "mnist-fc", "--threat", "linf", "--eps", "linf=0.1", "--steps", "1", "--autoattack", "off",
                 "--square-queries", "0", "--certify", ""],
    "certify": ["--method", "lmt", "--model", "mnist-fc"],
    "lipschitz": ["--model", "mnist-fc", "--methods", "naive"],
    "train": ["--model", "mnist-fc", "--epochs", "1", "--eval-n", "0", "--batch-size", "4"],
}
COMMANDS = list(QUICK)


def _run(command: str, *args: str):
    return CliRunner().invoke(main, [command, *QUICK[command], *args])


def _one_error_line(result, *needles: str) -> None:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], result.output


def _npz(path, channels: int = 1, n: int = 6, classes: int = 10) -> str:
    images = np.random.default_rng(0).random((n, channels, 28, 28), dtype=np.float32)
    np.savez(path, images=images, labels=np.arange(n) % classes)
    return str(path)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("device, needle", [("gpu", "unknown device"), ("mps", "mps"), ("cuda:7", "cuda:7")])
def test_an_unknown_or_missing_device_is_one_error_line(command, device, needle, tmp_path):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        # Justified skip: on a machine with eight GPUs cuda:7 exists, so it is no bad input there
        pytest.skip("this machine has a cuda:7")
    _one_error_line(_run(command, "--device", device, "--out", str(tmp_path / "out")), needle, "available here")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_an_empty_selection_is_one_error_line(command, tmp_path):
    empty = tmp_path / "none.txt"
    empty.write_text("# no indices\n")
    _one_error_line(_run(command, "--indices", str(empty), "--out", str(tmp_path / "out")), "empty")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_model_that_fails_on_the_data_shape_is_one_error_line(command, tmp_path):
    rgb = _npz(tmp_path / "rgb.npz", channels=3)
    _one_error_line(_run(command, "--data", rgb, "--out", str(tmp_path / "out")), "the model fails on", "(3, 28, 28)")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_model_with_too_few_classes_is_one_error_line(command, tmp_path):
    model = tmp_path / "net.py"
    model.write_text("import torch\n\n"
                     "def Net():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 5))\n")
    args = [*QUICK[command], "--model", f"{model}:Net", "--out", str(tmp_path / "out")]
    _one_error_line(CliRunner().invoke(main, [command, *args]), "5 logits", "10 classes")


@pytest.mark.parametrize("command", ["attack", "certify", "lipschitz", "evaluate"])
def test_n_larger_than_the_data_is_a_note_saying_how_many_are_used(command, tmp_path):
    data = _npz(tmp_path / "six.npz", n=6)
    result = _run(command, "--data", data, "--n", "50", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "note: --n 50 is larger than the 6 examples: all 6 are used" in result.output
    record = json.loads((tmp_path / "out" / "results.json").read_text())
    assert record["inputs"]["n"] == 6 and len(record["examples"]) == 6


def test_commands_that_do_not_shard_refuse_torchrun(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    _one_error_line(_run("certify", "--out", str(tmp_path / "out")), "runs in one process")
