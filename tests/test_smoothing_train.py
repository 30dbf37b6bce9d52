"""Gaussian noise augmentation (``--method smoothing``): registered, validated, adds N(0, sigma^2) noise, and trains
deterministically, resuming bitwise from the loop's checkpointed generator."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mistered.errors import InvalidInputError
from mistered.threats import Additive
from mistered.train import METHODS, StandardObjective, TrainConfig, build_objective, fit
from mistered.train.smoothing import GaussianNoiseObjective


class _Recording(nn.Module):
    """A linear classifier that keeps the inputs it was given."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3 * 8 * 8, 4)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.linear(x.flatten(1))


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(32, 3, 8, 8, generator=gen), torch.randint(4, (32,), generator=gen)


def test_smoothing_is_a_training_method_built_with_the_loops_generator():
    generator = torch.Generator().manual_seed(0)
    objective = build_objective("smoothing", sigma=0.25, generator=generator)
    assert "smoothing" in METHODS
    assert isinstance(objective, GaussianNoiseObjective) and objective.sigma == 0.25
    assert objective.generator is generator


@pytest.mark.parametrize("kwargs, message", [
    ({}, "needs sigma"),
    ({"sigma": -0.1}, "non-negative"),
    ({"sigma": float("inf")}, "non-negative"),
    ({"sigma": 0.25, "c": 1.0}, "does not take"),
    ({"sigma": 0.25, "threats": [Additive("linf", 0.1)]}, "does not train against a threat"),
])
def test_bad_options_are_one_clear_error(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        build_objective("smoothing", **kwargs)


def test_the_model_sees_images_plus_fresh_gaussian_noise_of_standard_deviation_sigma():
    model, (x, y) = _Recording(), _batch()
    objective = GaussianNoiseObjective(0.5, torch.Generator().manual_seed(0))
    loss, logits = objective(model, x, y, 0.0)
    objective(model, x, y, 0.5)
    first, second = (seen - x for seen in model.seen)
    assert float(first.mean()) == pytest.approx(0.0, abs=0.02) and float(first.std()) == pytest.approx(0.5, rel=0.03)
    assert not torch.equal(first, second)  # fresh noise every step
    assert (first > 0.5).any() and (first + x > 1).any()  # not clipped to the pixel box
    assert torch.equal(loss, F.cross_entropy(logits, y)) and torch.equal(logits, model.linear(model.seen[0].flatten(1)))


def test_zero_sigma_is_standard_training():
    model, (x, y) = _Recording(), _batch()
    noiseless, _ = GaussianNoiseObjective(0.0)(model, x, y, 0.0)
    standard, _ = StandardObjective()(model, x, y, 0.0)
    assert torch.equal(noiseless, standard)


def test_the_same_generator_seed_draws_the_same_noise():
    models = [_Recording(), _Recording(), _Recording()]
    x, y = _batch()
    for model, seed in zip(models, (3, 3, 4)):
        GaussianNoiseObjective(0.25, torch.Generator().manual_seed(seed))(model, x, y, 0.0)
    assert torch.equal(models[0].seen[0], models[1].seen[0]) and not torch.equal(models[0].seen[0], models[2].seen[0])


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(48, 1, 4, 4, generator=gen)
    return x, (x[:, 0, :2].mean((1, 2)) > x[:, 0, 2:].mean((1, 2))).long()


class _Stop(Exception):
    """Stands for the process being killed."""


def _train(out, resume: bool = False, stop_at: int | None = None) -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    generator = torch.Generator().manual_seed(0)
    objective = build_objective("smoothing", sigma=0.3, generator=generator)
    config = TrainConfig(epochs=2, batch_size=8, lr=0.1, checkpoint_every=2, eval_n=0)

    def stop(step: int) -> None:
        if step == stop_at:
            raise _Stop

    data = _data()
    return fit(net, objective, data, data, config, out, resume=resume, generator=generator, progress=False,
               run_info={"method": "smoothing", "sigma": 0.3}, on_step=stop).model


def test_noise_training_is_deterministic_and_resumes_bitwise_after_a_kill(tmp_path):
    first, again = _train(tmp_path / "a"), _train(tmp_path / "b")
    with pytest.raises(_Stop):
        _train(tmp_path / "cut", stop_at=9)
    resumed = _train(tmp_path / "cut", resume=True)
    for (name, a), b, c in zip(first.state_dict().items(), again.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a, c), name


def test_the_cli_trains_with_noise_and_certifies_by_smoothing(tmp_path):
    from click.testing import CliRunner

    from mistered.cli import main

    trained = CliRunner().invoke(main, ["train", "--method", "smoothing", "--sigma", "0.25", "--epochs", "1",
                                        "--n-train", "40", "--eval-n", "10", "--out", str(tmp_path / "t"), "--quiet"])
    assert trained.exit_code == 0, trained.output
    certified = CliRunner().invoke(main, ["certify", "--method", "smoothing", "--sigma", "0.25", "--n", "4",
                                          "--samples", "200", "--model", str(tmp_path / "t" / "model.pt"),
                                          "--out", str(tmp_path / "c"), "--quiet"])
    assert certified.exit_code == 0, certified.output
    record = json.loads((tmp_path / "c" / "results.json").read_text())
    assert set(record["summary"]["certified_accuracy"]) == {"0.25", "0.5", "0.75", "1"}
    missing = CliRunner().invoke(main, ["certify", "--method", "smoothing", "--n", "2", "--quiet"])
    assert missing.exit_code == 2 and "--sigma" in missing.output
