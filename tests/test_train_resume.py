"""Resume: a run killed with SIGKILL resumes bitwise; more epochs extend a run; any other change is refused."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import mistered.train.loop as loop
from mistered.errors import InvalidInputError
from mistered.train import StandardObjective, TrainConfig, fit, load_checkpoint

# --- a real SIGKILL: the run is a separate process that kills itself -------------------------------------

_SCRIPT = textwrap.dedent('''
    import os, signal, sys
    import torch
    from torch import nn
    from mistered.threats import Additive
    from mistered.train import AdversarialObjective, TrainConfig, fit

    out, kill_at, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "resume"

    class Streamed:
        """40 generated 6x6 images, made one at a time when read (nothing held in memory)."""
        name = "generated"
        labels = torch.arange(40) % 2

        def __len__(self):
            return 40

        def __getitem__(self, i):
            image = torch.rand(1, 6, 6, generator=torch.Generator().manual_seed(i)) * 0.5
            return image + 0.5 * int(self.labels[i]), int(self.labels[i])

    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    generator = torch.Generator().manual_seed(0)
    objective = AdversarialObjective(Additive("linf", 0.1), steps=2, generator=generator)
    config = TrainConfig(epochs=2, batch_size=8, lr=0.1, checkpoint_every=3, eval_n=8, eval_attack_steps=2, shift=1)

    def on_step(step):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    data = Streamed()
    result = fit(net, objective, data, data, config, out, eval_threat=Additive("linf", 0.1), resume=resume,
                 generator=generator, progress=False, on_step=on_step)
    torch.save(result.model.state_dict(), os.path.join(out, "final.pt"))
''')


def _run_script(script, out, kill_at: int, resume: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    args = [sys.executable, str(script), str(out), str(kill_at), "resume" if resume else "fresh"]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("script") / "train_and_maybe_die.py"
    path.write_text(_SCRIPT)
    return path


@pytest.fixture(scope="module")
def uninterrupted(script, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    done = _run_script(script, out, kill_at=0, resume=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return torch.load(out / "final.pt", weights_only=True)


# 5 steps per epoch, checkpoints every 3 steps and at epoch ends: step 8 dies mid-epoch 2 two steps after the
# step-6 checkpoint; step 4 dies in epoch 1 one step after the step-3 checkpoint.
@pytest.mark.parametrize("kill_at", [8, 4])
def test_a_run_killed_with_sigkill_mid_epoch_resumes_to_bitwise_equal_weights(script, uninterrupted, tmp_path, kill_at):
    killed = _run_script(script, tmp_path, kill_at=kill_at, resume=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "final.pt").exists()
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert 0 < saved["step"] < kill_at and saved["step_in_epoch"] > 0  # it really resumes mid-epoch
    resumed = _run_script(script, tmp_path, kill_at=0, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    weights = torch.load(tmp_path / "final.pt", weights_only=True)
    assert weights.keys() == uninterrupted.keys()
    for name in weights:
        assert torch.equal(weights[name], uninterrupted[name]), name


# --- in-process runs (a raised exception stands for the kill) -----------------------------------------


class _Stop(Exception):
    """Stands for the process being killed."""


def _stop_at(step: int):
    def hook(current: int) -> None:
        if current == step:
            raise _Stop

    return hook


def _data(n: int = 32, seed: int = 0, flip: bool = False):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=g)
    y = (x[:, 0, :2].mean((1, 2)) > x[:, 0, 2:].mean((1, 2))).long()
    return x, (1 - y if flip else y)


def _net(hidden: int = 8) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, hidden), nn.ReLU(), nn.Linear(hidden, 2))


def _config(**changes) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 8, "lr": 0.1, "checkpoint_every": 3, "eval_n": 0, **changes})


def _fit(out, config, resume=False, net=None, data=None, run_info=None, **kwargs):
    data = data if data is not None else _data()
    return fit(net if net is not None else _net(), StandardObjective(), data, data, config, out, resume=resume,
               run_info=run_info if run_info is not None else {"method": "standard"}, progress=False, **kwargs)


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def _differ(a: nn.Module, b: nn.Module) -> bool:
    return any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


class _Recorder:
    """Records, per step, the learning rate the optimizer used and the progress the objective was given."""

    def __init__(self, monkeypatch):
        self.lrs: list[float] = []
        self.progress: list[float] = []
        self.optimizer = None
        real = loop.make_optimizer

        def make(model, config):
            self.optimizer = real(model, config)
            return self.optimizer

        monkeypatch.setattr(loop, "make_optimizer", make)

    def objective(self):
        def standard(model, x, y, progress):
            self.progress.append(progress)
            return StandardObjective()(model, x, y, progress)

        return standard

    def on_step(self, step: int) -> None:
        self.lrs.append(self.optimizer.param_groups[0]["lr"])


def test_raising_epochs_with_a_constant_schedule_equals_a_run_made_that_long_bitwise(tmp_path):
    constant = {"schedule": "constant"}
    _fit(tmp_path / "ext", _config(**constant))
    extended = _fit(tmp_path / "ext", _config(epochs=3, **constant), resume=True)
    straight = _fit(tmp_path / "straight", _config(epochs=3, **constant))
    assert extended.steps == straight.steps == 12
    _assert_same_weights(extended.model, straight.model)
    assert extended.history == straight.history


def test_raising_epochs_recomputes_the_cosine_schedule_from_the_step_reached(tmp_path, monkeypatch, caplog):
    """Extending 2 -> 3 epochs equals: the 2-epoch run, then the 3-epoch run's learning rate and progress at
    steps 8..11 (same data order). Not a straight 3-epoch run: its first 8 steps had a slower decay."""
    runs = {}
    for name, epochs, resume in (("two", 2, False), ("ext", 3, True), ("straight", 3, False)):
        recorder = _Recorder(monkeypatch)
        folder = tmp_path / ("two" if name == "ext" else name)
        with caplog.at_level(logging.INFO, logger="mistered.train"):
            result = fit(_net(), recorder.objective(), _data(), _data(), _config(epochs=epochs), folder,
                         resume=resume, on_step=recorder.on_step, progress=False)
        runs[name] = (result, recorder)
    (two, r_two), (ext, r_ext), (straight, r_straight) = runs["two"], runs["ext"], runs["straight"]
    assert r_ext.lrs == r_straight.lrs[8:] and r_ext.progress == [s / 12 for s in range(8, 12)]
    assert r_two.lrs != r_straight.lrs[:8] and r_two.progress == [s / 8 for s in range(8)]
    assert ext.history[:2] == two.history and ext.history[2]["lr"] == straight.history[2]["lr"]
    assert ext.steps == 12 and _differ(ext.model, straight.model)
    assert ext.extended["from_epochs"] == 2 and ext.extended["to_epochs"] == 3 and ext.extended["step"] == 8
    log = json.loads((tmp_path / "two" / "log.json").read_text())
    assert [e["to_epochs"] for e in log["extensions"]] == [3] and "recomputed" in log["extensions"][0]["note"]
    assert log["settings"]["epochs"] == 3
    assert "extended from 2 to 3 epochs" in caplog.text


def test_an_extended_run_killed_mid_extension_resumes_bitwise(tmp_path):
    _fit(tmp_path / "whole", _config())
    whole = _fit(tmp_path / "whole", _config(epochs=3), resume=True)
    _fit(tmp_path / "cut", _config())
    with pytest.raises(_Stop):
        _fit(tmp_path / "cut", _config(epochs=3), resume=True, on_step=_stop_at(10))
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["config"]["epochs"] == 3
    resumed = _fit(tmp_path / "cut", _config(epochs=3), resume=True)
    _assert_same_weights(whole.model, resumed.model)
    assert resumed.history == whole.history and resumed.extended is None
    log = json.loads((tmp_path / "cut" / "log.json").read_text())
    assert len(log["extensions"]) == 1  # recorded once, carried by the checkpoints


def test_resume_refuses_every_other_changed_setting_and_lists_each(tmp_path):
    _fit(tmp_path, _config(), run_info={"method": "standard", "threats": []})
    changed = _config(lr=0.2, optimizer="adam", batch_size=4, seed=3)
    with pytest.raises(InvalidInputError) as caught:
        _fit(tmp_path, changed, resume=True, net=_net(hidden=6), data=_data(flip=True),
             run_info={"method": "adversarial", "threats": ["linf(0.1)"]})
    message = str(caught.value)
    assert "\n" not in message and "9 setting(s) differ" in message
    for difference in ('lr: 0.1 -> 0.2', 'optimizer: "sgd" -> "adam"', "batch_size: 8 -> 4", "seed: 0 -> 3",
                       'method: "standard" -> "adversarial"', 'threats: [] -> ["linf(0.1)"]',
                       "train_data.labels_hash: ", "held_out_data.labels_hash: ", "model_state: "):
        assert difference in message, difference
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 8  # untouched


def test_resume_refuses_fewer_epochs_than_already_done_in_one_clear_line(tmp_path):
    _fit(tmp_path, _config(epochs=2))
    refusal = r"epochs: 2 -> 1 \(2 already done; a resumed run may only raise epochs\)"
    with pytest.raises(InvalidInputError, match=refusal):
        _fit(tmp_path, _config(epochs=1), resume=True)


def test_resuming_a_finished_run_with_the_same_epochs_says_it_is_complete_and_trains_nothing(tmp_path, caplog):
    first = _fit(tmp_path, _config())
    steps = []
    with caplog.at_level(logging.INFO, logger="mistered.train"):
        again = _fit(tmp_path, _config(), resume=True, on_step=steps.append)
    assert again.already_complete and steps == [] and again.steps == first.steps
    assert again.history == first.history
    _assert_same_weights(first.model, again.model)
    assert "already complete" in caplog.text


def test_bookkeeping_settings_may_change_on_resume(tmp_path, caplog):
    with pytest.raises(_Stop):
        _fit(tmp_path, _config(), on_step=_stop_at(5))
    with caplog.at_level(logging.INFO, logger="mistered.train"):
        resumed = _fit(tmp_path, _config(checkpoint_every=2, eval_n=4), resume=True)
    assert resumed.steps == 8
    assert "checkpoint_every: 3 -> 2" in caplog.text


def test_a_fresh_run_is_refused_where_a_run_already_is_and_resume_needs_a_folder(tmp_path):
    _fit(tmp_path, _config(epochs=1))
    with pytest.raises(InvalidInputError, match="already holds a training run"):
        _fit(tmp_path, _config(epochs=1))
    with pytest.raises(InvalidInputError, match="needs the run's output folder"):
        _fit(None, _config(epochs=1), resume=True)


def test_resume_clears_temporary_files_left_by_a_writer_killed_mid_write(tmp_path):
    with pytest.raises(_Stop):
        _fit(tmp_path, _config(), on_step=_stop_at(4))
    stale = tmp_path / "checkpoints" / ".last.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    _fit(tmp_path, _config(), resume=True)
    assert not stale.exists() and (tmp_path / "checkpoints" / "last.pt").is_file()
