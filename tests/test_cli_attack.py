"""``mistered attack``: runs with bundled-style defaults and writes its outputs; bad input is one line and exit 2."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from click.testing import CliRunner

from mistered.cli import main
from mistered.models import build_model, save_model

SUMMARY_KEYS = {"clean_accuracy", "robust_accuracy", "attack_success_rate", "mean_lpips", "mean_dssim"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An (untrained) mnist-fc checkpoint: the CLI only needs a loadable model of the data's shape."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "fc.pt"
    save_model(path, build_model("mnist-fc"), "mnist-fc", {}, {"note": "test"})
    return path


def _run(*args: str):
    return CliRunner().invoke(main, ["attack", *args])


def test_attack_writes_results_json_with_summary_and_examples_png(checkpoint, tmp_path):
    result = _run("--model", str(checkpoint), "--n", "6", "--steps", "2", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["schema_version"] >= 1 and SUMMARY_KEYS <= set(record["summary"])
    assert len(record["examples"]) == 6 and record["settings"]["threat"] == ["combined"]
    assert (tmp_path / "examples.png").stat().st_size > 1000


def test_bare_attack_command_runs_on_the_bundled_model(tmp_path):
    result = _run("--n", "4", "--steps", "2", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "results.json").exists() and (tmp_path / "examples.png").exists()


class _Hostile:
    def __reduce__(self):
        return (print, ("this ran at load time",))


def _bad_checkpoint(kind: str, tmp_path) -> str:
    path = tmp_path / f"{kind}.pt"
    if kind == "hostile":
        with open(path, "wb") as f:
            pickle.dump({"state_dict": _Hostile()}, f)
    elif kind == "rgb":  # a model for 3-channel images, given 1-channel MNIST
        save_model(path, build_model("cifar-resnet"), "cifar-resnet", {}, {})
    return str(path)


@pytest.mark.parametrize("args", [
    ["--threat", "no-such-preset"],
    ["--threat", "linf(0.3"],
    ["--threat", "linf(-1)"],
    ["--model", "MISSING"],
    ["--model", "HOSTILE"],
    ["--model", "RGB"],
    ["--n", "0"],
    ["--attack", "deepfool"],
    ["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "nonsense"],
])
def test_bad_input_is_one_error_line_and_exit_code_2(checkpoint, tmp_path, args):
    replace = {"MISSING": str(tmp_path / "missing.pt"), "HOSTILE": _bad_checkpoint("hostile", tmp_path),
               "RGB": _bad_checkpoint("rgb", tmp_path)}
    args = [replace.get(a, a) for a in args]
    if "--model" not in args:
        args += ["--model", str(checkpoint)]
    result = _run(*args, "--n" if "--n" not in args else "--steps", "2", "--out", str(tmp_path / "out"))
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert lines[0].startswith("Error:"), result.output
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output and "this ran at load time" not in result.output


def test_examples_png_captions_each_adversarial_image_with_its_distance():
    from mistered.attacks import PGD
    from mistered.cli.attack import _shown_distance
    from mistered.evaluate.plots import examples_figure
    from mistered.threats import parse_threat

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    threat = parse_threat("linf(0.3)|l2<=1")
    result = PGD(net, threat, steps=3, distances=("linf", "l2"))(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]))
    assert _shown_distance(threat, result.distances) == "l2"  # the perceptual bound's metric
    assert _shown_distance(parse_threat("rotation"), result.distances) == "linf"  # no LPIPS measured: L∞
    fig = examples_figure(result, count=3, distance="l2")
    shown = [result.distances["l2"][i] for i in
             torch.argsort((result.clean_correct & result.success).float(), descending=True, stable=True)[:3]]
    captions = [ax.get_xlabel() for ax in fig.axes[3:6]]  # row 2: the adversarial images
    assert captions == [f"l2 {float(v):.4f}" for v in shown]
    assert [ax.get_ylabel() for ax in fig.axes[::3]] == ["original", "adversarial", "|difference|"]
