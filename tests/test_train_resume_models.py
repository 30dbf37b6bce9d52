"""A user's model trains and resumes bitwise whatever it is: TorchScript, an ONNX file through onnx2torch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mistered.threats import Additive
from mistered.train import AdversarialObjective, StandardObjective, TrainConfig, fit
from test_train_resume import _stop_at, _Stop

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit / the TorchScript ONNX exporter


def _plain() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))


def _torchscript(tmp_path) -> nn.Module:
    path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(_plain()), str(path))
    return torch.jit.load(str(path))


def _onnx(tmp_path) -> nn.Module:
    from mistered._compat import import_torchvision

    import_torchvision()
    import onnx2torch

    path = tmp_path / "model.onnx"
    torch.onnx.export(_plain(), torch.rand(1, 1, 6, 6), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    return onnx2torch.convert(str(path))


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 6, 6, generator=g)
    return x, (x[:, 0, :3].mean((1, 2)) > x[:, 0, 3:].mean((1, 2))).long()


CONFIG = TrainConfig(epochs=2, batch_size=8, lr=0.1, checkpoint_every=2, eval_n=4, eval_attack_steps=1)


def _run(load, tmp_path, out, resume=False, on_step=None):
    generator = torch.Generator().manual_seed(0)
    objective = AdversarialObjective(Additive("linf", 0.1), steps=2, generator=generator)
    data = _data()
    return fit(load(tmp_path), objective, data, data, CONFIG, out, eval_threat=Additive("linf", 0.1),
               resume=resume, generator=generator, on_step=on_step, progress=False)


@pytest.mark.parametrize("load", [_torchscript, _onnx], ids=["torchscript", "onnx"])
def test_a_user_model_trains_adversarially_and_resumes_to_bitwise_equal_weights(tmp_path, load):
    whole = _run(load, tmp_path, tmp_path / "whole")
    with pytest.raises(_Stop):
        _run(load, tmp_path, tmp_path / "cut", on_step=_stop_at(3))
    resumed = _run(load, tmp_path, tmp_path / "cut", resume=True)
    before = load(tmp_path).state_dict()
    assert any(not torch.equal(before[k], v) for k, v in whole.model.state_dict().items())  # it trained
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.history == whole.history


def test_a_user_model_of_float64_trains_on_float32_data():
    model = _plain().double()
    result = fit(model, StandardObjective(), _data(), _data(), TrainConfig(epochs=1, batch_size=8, eval_n=0),
                 progress=False)
    assert result.steps == 3 and next(result.model.parameters()).dtype == torch.float64
