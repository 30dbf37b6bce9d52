"""``mistered train``: writes its files, wires the methods, and turns bad options into one-line errors."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from mistered.cli import main
from mistered.models import load_model
from mistered.train import load_checkpoint

QUICK = ["--model", "mnist-fc", "--n", "64", "--batch-size", "32", "--epochs", "1", "--eval-n", "8",
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
    assert result.output.strip() == "Error: --resume needs the folder of the run to continue: --resume DIR or --out DIR"


def test_lmt_option_without_lmt_method_is_a_one_line_error():
    result = CliRunner().invoke(main, ["train", "--pairwise"])
    assert result.exit_code == 2 and "add --method lmt" in result.output and len(result.output.strip().splitlines()) == 1


def test_data_the_architecture_cannot_take_is_one_error_line(tmp_path):
    rgb = tmp_path / "rgb.pt"
    torch.save({"images": torch.rand(8, 3, 32, 32), "labels": torch.arange(8) % 10}, rgb)
    result = CliRunner().invoke(main, ["train", "--data", str(rgb), "--epochs", "1", "--out", str(tmp_path / "run")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "the model fails on" in lines[0], result.output
    assert not (tmp_path / "run").exists()  # the folder made for the run is removed again


def test_resume_dir_may_raise_the_epochs_and_config_yaml_records_the_resolved_options(tmp_path):
    assert CliRunner().invoke(main, ["train", *QUICK, "--out", str(tmp_path)]).exit_code == 0
    result = CliRunner().invoke(main, ["train", *QUICK, "--epochs", "2", "--resume", str(tmp_path)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["summary"]["epochs"] == 2 and record["inputs"]["n"] == 64
    import yaml

    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["epochs"] == 2 and config["n"] == 64 and config["optimizer"] == "sgd" and config["lr"] == 0.05
