"""The README's "Your own model and data" commands run as written on a user's files.

The files the README names are made here: ``net.py`` with ``class Net`` (a conv net with BatchNorm and
average pooling on 3x8x8 images), its ``weights.pt``, its ONNX export ``net.onnx`` (opset 20, as
``torch.onnx.export`` writes it) and ``images/`` with train/ and test/ folders of three classes. Lines with a
placeholder (``<time>``) and the ``torchrun`` line (tested in tests/test_sharding.py) are skipped.
"""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from mistered.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
NET_PY = '''
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self, width=8, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width * 4 * 4, classes)

    def forward(self, x):
        return self.fc(F.avg_pool2d(F.relu(self.bn(self.conv(x))), 2).flatten(1))
'''


def _readme_commands() -> list[list[str]]:
    text = README.read_text()
    section = text.split("## Your own model and data", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)[0]
    lines = [line.split("  #")[0].strip() for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("mistered ") and "<" not in line]


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme-user")
    (folder / "net.py").write_text(NET_PY)
    namespace: dict = {}
    exec(NET_PY, namespace)
    torch.manual_seed(0)
    net = namespace["Net"]().eval()
    torch.save(net.state_dict(), folder / "weights.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(1, 3, 8, 8),), str(folder / "net.onnx"), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 3)):
        for label in range(3):
            (folder / "images" / split / f"class{label}").mkdir(parents=True)
            for i in range(count):
                pixels = (rng.random((8, 8, 3)) * 80 + 80 * label).astype(np.uint8)
                Image.fromarray(pixels).save(folder / "images" / split / f"class{label}" / f"{i}.png")
    return folder


def test_the_readme_lists_the_open_world_commands():
    commands = [args[0] for args in _readme_commands()]
    assert {"attack", "train", "evaluate", "certify"} <= set(commands)


@pytest.mark.parametrize("args", _readme_commands(), ids=lambda args: " ".join(args[:3]))
def test_each_readme_command_runs_as_written(user_folder, monkeypatch, args):
    monkeypatch.chdir(user_folder)
    result = CliRunner().invoke(main, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
