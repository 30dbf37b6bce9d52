"""A user's own model.py + weights, their ONNX export and their image folder run through every command.

The files are written here: a small ReLU net trained on normalised inputs (so ``--mean/--std`` matter), its
state_dict, its ONNX export, and an RGB image folder with train/ and test/ splits of 3 classes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from mistered.cli import main

MODEL_PY = '''
import torch
from torch import nn


def tiny_net(width=16, num_classes=3):
    """A ReLU net on (B, 3, 8, 8) normalised images."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, width), nn.ReLU(), nn.Linear(width, num_classes))


class TinyNet(nn.Module):
    """The same net behind a forward() of its own: certifiers read it through its traced graph."""

    def __init__(self, width=16, num_classes=3):
        super().__init__()
        self.net = tiny_net(width, num_classes)

    def forward(self, x):
        return self.net(x)


class SquashedNet(TinyNet):
    """The same net with a sigmoid on its logits: no certifier here bounds a sigmoid."""

    def forward(self, x):
        return torch.sigmoid(self.net(x))
'''
MEAN, STD = "0.5,0.4,0.3", "0.25,0.25,0.25"
QUICK = {
    "attack": ["--threat", "linf(0.05)", "--steps", "2"],
    "evaluate": ["--threat", "linf", "--threat", "l2", "--eps", "linf=0.02", "--eps", "l2=0.1", "--steps", "2",
                 "--autoattack", "off", "--square-queries", "0", "--certify", "lmt,exact", "--exact-n", "1"],
    "train": ["--epochs", "1", "--batch-size", "4", "--eval-n", "4", "--threat", "linf(0.02)", "--attack-steps", "1"],
    "certify": ["--method", "lmt", "--eps", "0.01,0.1"],
    "lipschitz": ["--methods", "naive,fastlip", "--eps", "0.01"],
}


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """model.py, weights.pt (a state_dict), model.onnx and an image folder (train/ and test/, 3 classes)."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "model.py").write_text(MODEL_PY)
    namespace: dict = {}
    exec(MODEL_PY, namespace)
    torch.manual_seed(0)
    net = namespace["tiny_net"](width=16).eval()
    torch.save(net.state_dict(), folder / "weights.pt")
    torch.onnx.export(net, (torch.rand(1, 3, 8, 8),), str(folder / "model.onnx"), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 4)):
        for label in ("cat", "dog", "fox"):
            (folder / "images" / split / label).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / "images" / split / label / f"{i}.png")
    return folder


def _model_args(folder, kind: str) -> list[str]:
    if kind == "python":
        return ["--model", f"{folder / 'model.py'}:tiny_net", "--model-args", '{"width": 16}',
                "--weights", str(folder / "weights.pt")]
    return ["--model", str(folder / "model.onnx")]


@pytest.mark.parametrize("kind", ["python", "onnx"])
@pytest.mark.parametrize("command", ["attack", "evaluate", "train"])
def test_the_users_model_and_image_folder_run_through_the_command(user_files, tmp_path, command, kind):
    args = [command, *_model_args(user_files, kind), "--mean", MEAN, "--std", STD, "--data",
            str(user_files / "images"), *QUICK[command], "--device", "cpu", "--quiet", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["inputs"]["data"]["kind"] == "imagefolder"
    assert record["inputs"]["model"]["kind"] == kind and record["inputs"]["model"]["mean"] == [0.5, 0.4, 0.3]
    assert (tmp_path / "run" / "config.yaml").is_file()


@pytest.mark.parametrize("kind", ["python", "onnx"])
@pytest.mark.parametrize("command", ["certify", "lipschitz"])
def test_certifiers_run_on_the_users_model_or_name_what_they_cannot_handle(user_files, tmp_path, command, kind):
    args = [command, *_model_args(user_files, kind), "--mean", MEAN, "--std", STD, "--data",
            str(user_files / "images"), *QUICK[command], "--quiet", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, args)
    if kind == "python":  # a plain nn.Module of Linear and ReLU layers: every method applies
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / "run" / "results.json").read_text())["summary"]
    else:  # converted from ONNX: it runs, or it says in one line which layer it cannot read
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 0 or (result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error:")), \
            result.output


def test_the_exact_search_certifies_the_users_model_exactly(user_files, tmp_path):
    args = ["certify", "--method", "exact", "--norm", "linf", "--n", "2", *_model_args(user_files, "python"),
            "--mean", MEAN, "--std", STD, "--data", str(user_files / "images"), "--quiet", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "results.json").read_text())["examples"]
    assert [row["status"] in ("exact", "misclassified") for row in rows] == [True, True]


def _wrapped_weights(user_files, tmp_path):
    weights = tmp_path / "wrapped.pt"
    torch.save({f"net.{k}": v for k, v in torch.load(user_files / "weights.pt", weights_only=True).items()}, weights)
    return weights


@pytest.mark.parametrize("command", ["certify", "lipschitz"])
def test_a_model_with_its_own_forward_is_certified_through_its_traced_graph(user_files, tmp_path, command):
    args = [command, "--model", f"{user_files / 'model.py'}:TinyNet", "--weights", str(_wrapped_weights(user_files, tmp_path)),
            "--data", str(user_files / "images"), *QUICK[command], "--quiet", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "results.json").read_text())["summary"]


@pytest.mark.parametrize("command", ["certify", "lipschitz"])
def test_an_operation_a_certifier_cannot_bound_is_named_in_one_line(user_files, tmp_path, command):
    args = [command, "--model", f"{user_files / 'model.py'}:SquashedNet", "--weights",
            str(_wrapped_weights(user_files, tmp_path)), "--data", str(user_files / "images"), *QUICK[command],
            "--quiet", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "sigmoid" in lines[0], result.output
