"""``--lpips-net file.py:Name`` in attack and evaluate: a user's feature extractor bounds lpips-net budgets."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mistered.cli import main

EXTRACTORS = """
import torch.nn as nn
class Good(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(1, 4, 3), nn.ReLU())
class ThreeChannels(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 4, 3), nn.ReLU())
class Broken(nn.Module):
    def __init__(self):
        raise ValueError("no weights here")
"""
THREAT = "linf(0.3)|lpips-net<=0.3"
ATTACK = ["attack", "--model", "mnist-fc", "--n", "4", "--steps", "3", "--quiet"]
EVALUATE = ["evaluate", "--model", "mnist-fc", "--n", "4", "--steps", "2", "--autoattack", "off", "--square-queries",
            "0", "--certify", "", "--quiet"]


@pytest.fixture
def extractors(tmp_path):
    path = tmp_path / "feats.py"
    path.write_text(EXTRACTORS)
    return path


def test_attack_keeps_every_example_inside_the_users_lpips_net_bound(extractors, tmp_path):
    result = CliRunner().invoke(main, [*ATTACK, "--threat", THREAT, "--lpips-net", f"{extractors}:Good",
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "results.json").read_text())
    sizes = [row["sizes"]["lpips-net"] for row in record["examples"] if row["sizes"].get("lpips-net") is not None]
    assert sizes and max(sizes) <= 0.3 * (1 + 1e-5)
    assert "lpips-net" in (tmp_path / "out" / "config.yaml").read_text()


def test_evaluate_sweeps_the_users_lpips_net_bound(extractors, tmp_path):
    result = CliRunner().invoke(main, [*EVALUATE, "--threat", THREAT, "--sweep", "lpips-net=0.1,0.3", "--lpips-net",
                                       f"{extractors}:Good", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    points = json.loads((tmp_path / "out" / "results.json").read_text())["summary"]["points"]
    assert [(p["axis"], p["budget"]) for p in points] == [("lpips-net", 0.1), ("lpips-net", 0.3)]


@pytest.mark.parametrize("command", [ATTACK, EVALUATE])
@pytest.mark.parametrize("threat, net, message", [
    (THREAT, "ThreeChannels", "the feature extractor of lpips-net fails on images of shape (2, 1, 28, 28)"),
    (THREAT, "Broken", "Broken(**{}) raised ValueError: no weights here"),
    (THREAT, "Missing", "no 'Missing'"),
    (THREAT, None, "give it with --lpips-net file.py:Name"),
    ("linf(0.3)", "Good", "--lpips-net is only used by lpips-net budgets"),
])
def test_a_bad_extractor_is_one_error_line_and_exit_2(extractors, tmp_path, command, threat, net, message):
    args = [*command, "--threat", threat, "--out", str(tmp_path / "out")]
    args += ["--lpips-net", f"{extractors}:{net}"] if net else []
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error:") and result.output.count("\n") == 1, result.output
    assert message in result.output
    assert not (tmp_path / "out").exists()
