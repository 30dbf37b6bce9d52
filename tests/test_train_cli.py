"""``mistered train``: writes its files, wires the methods, and turns bad options into one-line errors."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from mistered.cli import main
from mistered.models import load_model
from mistered.train import load_checkpoint

QUICK = ["--model", "mnist-fc", "--n-train", "64", "--batch-size", "32", "--epochs", "1", "--eval-n", "8",
         "--device", "cpu", "--no-progress"]


def test_train_writes_model_log_curves_record_and_checkpoint(tmp_path):
    result = CliRunner().invoke(main, ["train", "--threat", "linf(0.1)", "--attack-steps", "1", *QUICK, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in ("model.pt", "log.json", "curves.png", "results.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (tmp_path / name).is_file(), name
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["settings"]["method"] == "adversarial" and record["summary"]["robust_acc"] is not None
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 2
    assert load_model(str(tmp_path / "model.pt"))(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_lmt_method_trains_through_the_same_command(tmp_path):
    result = CliRunner().invoke(main, ["train", "--method", "lmt", "--c", "0.1", *QUICK, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "results.json").read_text())["settings"]["c"] == 0.1


def test_resume_without_out_is_a_one_line_error():
    result = CliRunner().invoke(main, ["train", "--resume"])
    assert result.exit_code == 2
    assert result.output.strip() == "Error: --resume needs --out DIR: the folder of the run to continue"


def test_lmt_option_without_lmt_method_is_a_one_line_error():
    result = CliRunner().invoke(main, ["train", "--pairwise"])
    assert result.exit_code == 2 and "add --method lmt" in result.output and len(result.output.strip().splitlines()) == 1


def test_data_the_architecture_cannot_take_is_one_error_line(tmp_path, monkeypatch):
    import torch
    from click.testing import CliRunner

    from mistered.cli import main
    from mistered.data import LabeledImages
    import mistered.data

    rgb = LabeledImages(torch.rand(8, 3, 32, 32), torch.arange(8) % 10, 10, "rgb")
    monkeypatch.setattr(mistered.data, "load_dataset", lambda name, split: rgb)
    result = CliRunner().invoke(main, ["train", "--epochs", "1", "--out", str(tmp_path / "run")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "cannot take rgb images" in lines[0], result.output
