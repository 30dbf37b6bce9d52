"""torch.export .pt2 archives through load_model: outputs, any batch size, gradients, train/eval, .to()."""

import pytest
import torch
from torch import nn
from test_model_sources import _x, residual, write_nets

from mistered.errors import InvalidInputError
from mistered.models import load_model
from mistered.models.batching import ChunkedModule
from mistered.models.exported import ExportedModel


@pytest.fixture
def nets(tmp_path):
    return write_nets(tmp_path)[1]


def _save(net, path, dynamic=False):
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    torch.export.save(torch.export.export(net, (_x(),), dynamic_shapes=shapes), str(path))
    return path


def test_static_batch_program_runs_any_batch_size_with_the_nets_outputs(nets, tmp_path):
    original = residual(nets)
    model = load_model(_save(original, tmp_path / "net.pt2"), device="cpu")
    assert isinstance(model, ExportedModel) and model.batch_sizes == (2, 2) and not model.training
    for batch in (1, 2, 5):
        x = _x(batch, seed=batch)
        torch.testing.assert_close(model(x), original(x))
    assert model(_x(0)).shape == (0, 3) and model.mistered_source.kind == "torch-export"


def test_padded_chunks_give_the_same_input_gradients_as_the_net(nets, tmp_path):
    original = residual(nets)
    model = load_model(_save(original, tmp_path / "net.pt2"), device="cpu")
    x = _x(3).requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[:, 0].sum(), x)
    x_ref = x.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(original(x_ref)[:, 0].sum(), x_ref)
    torch.testing.assert_close(grad, expected)


def test_dynamic_batch_program_runs_whole_batches(nets, tmp_path):
    original = residual(nets)
    model = load_model(_save(original, tmp_path / "net.pt2", dynamic=True), device="cpu")
    assert model.batch_sizes[1] is None
    torch.testing.assert_close(model(_x(7)), original(_x(7)))


def test_state_dict_keys_are_the_exported_models_and_weights_apply(nets, tmp_path):
    torch.manual_seed(0)
    first, second = nets.SmallNet().eval(), nets.SmallNet().eval()
    torch.save(second.state_dict(), tmp_path / "w.pt")
    model = load_model(_save(first, tmp_path / "net.pt2"), weights=tmp_path / "w.pt", device="cpu")
    assert list(model.state_dict()) == list(second.state_dict())
    torch.testing.assert_close(model(_x()), second(_x()))


def test_train_and_eval_switch_dropout_and_batch_norm_inside_the_graph(nets, tmp_path):
    original = residual(nets)
    model = load_model(_save(original, tmp_path / "net.pt2"), device="cpu")
    x = _x()
    model.train()
    original.train()
    torch.manual_seed(3)
    trained = model(x)
    torch.manual_seed(3)
    torch.testing.assert_close(trained, original(x))  # same dropout mask, batch statistics
    torch.testing.assert_close(model.bn.running_mean, original.bn.running_mean)  # both updated once
    model.eval()
    original.eval()
    torch.testing.assert_close(model(x), original(x))


def test_a_program_exported_in_training_mode_evaluates_in_eval_mode(nets, tmp_path):
    original = residual(nets)
    path = _save(original.train(), tmp_path / "net.pt2")
    model = load_model(path, device="cpu")
    torch.testing.assert_close(model(_x()), original.eval()(_x()))


def test_training_mode_refuses_to_pad_a_batch(nets, tmp_path):
    model = load_model(_save(residual(nets), tmp_path / "net.pt2"), device="cpu").train()
    assert model(_x(4)).shape == (4, 3)
    with pytest.raises(InvalidInputError, match="in training mode a batch of 1 cannot be padded"):
        model(_x(3))


class _WithConstant(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        offset = torch.ones(3, device=x.device) + torch.tensor([0.5, 1.0, 2.0])
        return self.fc(x.flatten(1)) * offset


def test_to_moves_weights_constants_and_devices_written_in_the_graph(tmp_path):
    torch.manual_seed(0)
    original = _WithConstant().eval()
    model = load_model(_save(original, tmp_path / "net.pt2"), device="cpu")
    torch.testing.assert_close(model.to(torch.float64)(_x().double()), original.double()(_x().double()))
    on_meta = model.to("meta")(torch.zeros(5, 1, 8, 8, device="meta", dtype=torch.float64))
    assert on_meta.device.type == "meta" and on_meta.shape == (5, 3)


def test_a_wrapped_module_whose_member_names_clash_with_the_wrapper_is_refused():
    inner = nn.Module()
    inner.batch_sizes = nn.Linear(2, 2)
    with pytest.raises(InvalidInputError, match=r"members named \['batch_sizes'\]"):
        ChunkedModule(inner)
