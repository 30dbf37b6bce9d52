"""Checkpoints of the training loop: lossless resume, atomic writes, refusal of bad files."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from mistered.cli import main
from mistered.errors import CheckpointError, InvalidInputError
from mistered.train import AdversarialObjective, StandardObjective, TrainConfig, fit, load_checkpoint
from mistered.threats import Additive


class _Stop(Exception):
    """Stands for the process being killed."""


def _data(n: int = 96, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 6, 6, generator=g)
    y = (x[:, 0, :3].mean((1, 2)) > x[:, 0, 3:].mean((1, 2))).long()
    return x, y


def _net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 12), nn.ReLU(), nn.Linear(12, 2))


def _stop_at(step: int):
    def hook(current: int) -> None:
        if current == step:
            raise _Stop

    return hook


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


CONFIG = TrainConfig(epochs=3, batch_size=16, lr=0.1, checkpoint_every=4, eval_n=16, eval_attack_steps=2, shift=1)


def _run(out, objective_factory, resume=False, on_step=None):
    generator = torch.Generator().manual_seed(CONFIG.seed)
    x, y = _data()
    return fit(_net(), objective_factory(generator), (x, y), (x[:32], y[:32]), CONFIG, out,
               eval_threat=Additive("linf", 0.1), resume=resume, generator=generator, on_step=on_step, progress=False)


def _adversarial(generator: torch.Generator) -> AdversarialObjective:
    return AdversarialObjective(Additive("linf", 0.1), steps=2, generator=generator)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    return _run(tmp_path_factory.mktemp("whole"), _adversarial)


@pytest.mark.parametrize("kill_at", [5, 6, 8])  # between checkpoints, before an epoch-end checkpoint, right after one
def test_resume_after_kill_ends_with_bitwise_identical_weights(tmp_path, reference, kill_at):
    with pytest.raises(_Stop):
        _run(tmp_path, _adversarial, on_step=_stop_at(kill_at))
    resumed = _run(tmp_path, _adversarial, resume=True)
    assert resumed.steps == reference.steps == 18
    for a, b in zip(_weights(reference.model), _weights(resumed.model)):
        assert torch.equal(a, b)
    assert resumed.history == reference.history


def test_resume_refuses_a_checkpoint_written_with_other_settings(tmp_path):
    x, y = _data()
    fit(_net(), StandardObjective(), (x, y), (x, y), TrainConfig(epochs=1, batch_size=32), tmp_path, progress=False)
    with pytest.raises(InvalidInputError, match=r"lr: 0\.05 -> 0\.5"):
        fit(_net(), StandardObjective(), (x, y), (x, y), TrainConfig(epochs=1, batch_size=32, lr=0.5), tmp_path,
            resume=True, progress=False)


def test_crash_while_writing_a_checkpoint_keeps_the_last_good_one(tmp_path, monkeypatch):
    objective = lambda g: StandardObjective()  # noqa: E731
    with pytest.raises(_Stop):
        _run(tmp_path, objective, on_step=_stop_at(5))
    last = tmp_path / "checkpoints" / "last.pt"
    good = last.read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):  # writes part of the file, then the process "dies"
        real_save(obj, f, *args, **kwargs)
        f.truncate(100)
        raise _Stop

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(_Stop):
        _run(tmp_path, objective, resume=True)
    monkeypatch.undo()
    assert last.read_bytes() == good
    assert load_checkpoint(last)["step"] == 4
    assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]


class _Hostile:
    def __reduce__(self):
        return (print, ("this would run code",))


def test_hostile_checkpoint_is_refused_with_checkpoint_error(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    path.parent.mkdir()
    torch.save({"format": "x", "payload": _Hostile()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)


def test_truncated_checkpoint_is_refused_with_checkpoint_error(tmp_path):
    x, y = _data()
    fit(_net(), StandardObjective(), (x, y), (x, y), TrainConfig(epochs=1, batch_size=32), tmp_path, progress=False)
    last = tmp_path / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:200])
    with pytest.raises(CheckpointError):
        load_checkpoint(last)


def test_a_model_file_is_not_taken_for_a_training_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a mistered training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_cli_resume_from_corrupt_checkpoint_exits_2_with_one_line(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint at all")
    result = CliRunner().invoke(main, ["train", "--model", "mnist-fc", "--n-train", "16", "--epochs", "1",
                                       "--out", str(tmp_path), "--resume", "--no-progress"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: checkpoint")


def _lmt(generator: torch.Generator):
    from mistered.train.lmt import LMTObjective

    return LMTObjective(c=0.1, warmup=0.0)


def test_lmt_resume_restores_its_power_iteration_vectors_bitwise(tmp_path):
    whole = _run(tmp_path / "whole", _lmt)
    with pytest.raises(_Stop):
        _run(tmp_path / "cut", _lmt, on_step=_stop_at(6))
    resumed = _run(tmp_path / "cut", _lmt, resume=True)
    for a, b in zip(_weights(whole.model), _weights(resumed.model)):
        assert torch.equal(a, b)
