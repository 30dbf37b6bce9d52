"""Perceptual adversarial training (PAT): the loss is on Fast-LPA's examples, runs resume bitwise, and ``mistered
train --method pat`` trains and refuses bad input in one line."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from mistered.attacks import FastLPA, bound_violations
from mistered.cli import main
from mistered.errors import InvalidInputError
from mistered.threats import parse_threat
from mistered.train import TrainConfig, build_objective, fit
from mistered.train.adversarial import draw_seed
from mistered.train.pat import PerceptualAdversarialObjective

THREAT = "linf(0.3)|lpips-self<=0.3"


def _data(n: int = 32):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 6, 6, generator=g)
    y = (x[:, 0, :3].mean((1, 2)) > x[:, 0, 3:].mean((1, 2))).long()
    return x, y


def _net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 2))


def test_the_loss_is_the_cross_entropy_on_fast_lpa_examples_inside_the_bound():
    net, (x, y) = _net(), _data(16)
    generator = torch.Generator().manual_seed(5)
    objective = PerceptualAdversarialObjective(parse_threat(THREAT), steps=3, generator=generator)
    loss, logits = objective(net, x, y, 0.0)
    attack = FastLPA(net, parse_threat(THREAT), steps=3, seed=draw_seed(torch.Generator().manual_seed(5)))
    result = attack(x, y)
    assert result.info["bound_violations"] == 0 and not bool(bound_violations(result, attack.threat).any())
    assert torch.equal(logits, net(result.x_adv))
    assert torch.equal(loss, F.cross_entropy(net(result.x_adv), y))
    assert float(loss.detach()) > float(F.cross_entropy(net(x), y).detach())  # harder than the clean batch
    assert loss.requires_grad and all(p.requires_grad for p in net.parameters())  # the attack restored the model


class _Stop(Exception):
    """Stands for the process being killed."""


def _fit(out, stop_at=None, resume=False):
    generator = torch.Generator().manual_seed(0)
    objective = build_objective("pat", threats=[parse_threat(THREAT)], attack_steps=2, generator=generator)

    def on_step(step: int) -> None:
        if step == stop_at:
            raise _Stop

    config = TrainConfig(epochs=2, batch_size=8, lr=0.1, checkpoint_every=3, eval_n=0)
    return fit(_net(), objective, _data(), _data(), config, out, resume=resume, generator=generator, progress=False,
               run_info={"method": "pat", "threats": [THREAT]}, on_step=on_step)


def test_a_pat_run_interrupted_mid_epoch_resumes_to_the_same_weights(tmp_path):
    whole = _fit(tmp_path / "whole")
    with pytest.raises(_Stop):
        _fit(tmp_path / "cut", stop_at=5)
    resumed = _fit(tmp_path / "cut", resume=True)
    assert resumed.steps == whole.steps == 8
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(), _net().state_dict().values()))


@pytest.mark.parametrize("threats, strategy, needle", [([], "max", "needs a threat"),
                                                       ([parse_threat("linf(0.1)")], "max", "append one"),
                                                       ([parse_threat(THREAT)], "avg", "--strategy max")])
def test_pat_without_a_perceptual_threat_or_with_another_strategy_is_refused(threats, strategy, needle):
    with pytest.raises(InvalidInputError, match=needle.replace("-", r"\-")):
        build_objective("pat", threats=threats, strategy=strategy)


QUICK = ["--model", "mnist-fc", "--n", "32", "--batch-size", "16", "--epochs", "1", "--eval-n", "8", "--attack-steps",
         "1", "--device", "cpu", "--no-progress"]


def test_mistered_train_method_pat_trains_against_the_self_bounded_default(tmp_path):
    result = CliRunner().invoke(main, ["train", "--method", "pat", *QUICK, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "results.json").read_text())["settings"]
    assert settings["method"] == "pat" and settings["threats"] == ["linf(0.3)|lpips-self<=0.5"]


def test_mistered_train_method_pat_with_a_threat_lacking_a_bound_is_one_error_line(tmp_path):
    result = CliRunner().invoke(main, ["train", "--method", "pat", "--threat", "linf(0.1)", *QUICK,
                                       "--out", str(tmp_path / "o")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error:") and "append one" in lines[0]
