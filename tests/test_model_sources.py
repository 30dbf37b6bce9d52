"""load_model from every source: Python files and modules, TorchScript, torch.export, ONNX, weights, folding.

Every file a test needs is written in the test; loaded models are compared with the networks they came from
(ONNX also with onnxruntime).
"""

import importlib.util
import sys
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mistered.errors import CheckpointError, InvalidInputError
from mistered.models import (
    EXTERNAL_ARCH,
    ModelSource,
    Normalized,
    build_model,
    bundled_models,
    check_model_on_data,
    load_model,
    read_checkpoint,
    save_model,
)
from mistered.models.sources import file_sha256, parse_python_spec

NETS_SOURCE = '''
import torch
from torch import nn


class SmallNet(nn.Module):
    """Conv + ReLU + Linear on (B, 1, 8, 8)."""

    def __init__(self, num_classes=3, width=4):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.fc = nn.Linear(width * 8 * 8, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class ResidualNet(nn.Module):
    """A residual block with batch norm and dropout on (B, 1, 8, 8)."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 8 * 8, num_classes)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.bn(self.conv(h)))
        return self.fc(self.drop(h.flatten(1)))


def make_small(num_classes=3):
    return SmallNet(num_classes=num_classes)


def broken_factory(num_classes=3):
    raise ValueError("num_classes must be even")


def make_list():
    return [SmallNet()]


class NotAModule:
    pass


WIDTH = 4
'''


def write_nets(folder):
    """Write ``nets.py`` into ``folder`` and import it (for the reference networks); returns (path, module)."""
    path = folder / "nets.py"
    path.write_text(NETS_SOURCE)
    spec = importlib.util.spec_from_file_location(f"_test_nets_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return path, module


def residual(nets):
    """A ResidualNet with non-trivial batch-norm statistics, in eval mode."""
    torch.manual_seed(0)
    net = nets.ResidualNet()
    net.bn.running_mean.uniform_(-0.5, 0.5)
    net.bn.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.fixture
def nets(tmp_path):
    return write_nets(tmp_path)


def _x(batch=2, seed=1):
    return torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


# ---- Python sources -------------------------------------------------------------------------------------------


def test_python_file_class_with_model_args_and_state_dict_weights_reproduces_the_net(nets, tmp_path):
    path, module = nets
    torch.manual_seed(0)
    original = module.SmallNet(num_classes=5).eval()
    torch.save(original.state_dict(), tmp_path / "w.pt")
    model = load_model(f"{path}:SmallNet", model_args={"num_classes": 5}, weights=tmp_path / "w.pt", device="cpu")
    assert torch.equal(model(_x()), original(_x())) and not model.training
    source = model.mistered_source
    assert (source.kind, source.path, source.sha256) == ("python", str(path.resolve()), file_sha256(path))
    assert source.model_args == {"num_classes": 5} and source.weights_sha256 == file_sha256(tmp_path / "w.pt")


def test_python_factory_with_safetensors_weights_reproduces_the_net(nets, tmp_path):
    path, module = nets
    torch.manual_seed(0)
    original = module.make_small(4).eval()
    save_file(original.state_dict(), str(tmp_path / "w.safetensors"))
    model = load_model(f"{path}:make_small", model_args={"num_classes": 4}, weights=tmp_path / "w.safetensors")
    assert torch.equal(model.cpu()(_x()), original(_x()))


def test_package_module_spec_with_a_mistered_checkpoint_as_weights_equals_the_bundled_model():
    bundled = load_model("mnist-fc", device="cpu")
    weights = bundled.mistered_source.path
    model = load_model("mistered.models.architectures:mnist_fc", weights=weights, device="cpu")
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model(x), bundled(x))
    assert model.mistered_source.kind == "python" and model.mistered_source.path is None


def test_python_file_may_import_its_sibling_modules(tmp_path):
    (tmp_path / "blocks_for_net.py").write_text("from torch import nn\nWIDTH = 7\n")
    (tmp_path / "net_with_sibling.py").write_text(
        "from torch import nn\nfrom blocks_for_net import WIDTH\n\n"
        "class Net(nn.Sequential):\n    def __init__(self):\n"
        "        super().__init__(nn.Flatten(), nn.Linear(64, WIDTH))\n"
    )
    model = load_model(f"{tmp_path / 'net_with_sibling.py'}:Net", device="cpu")
    assert model(_x()).shape == (2, 7) and str(tmp_path) not in sys.path


def test_parse_python_spec_splits_at_the_last_colon():
    assert parse_python_spec(r"C:\nets\net.py:Net").name == "Net"
    assert parse_python_spec("pkg.mod:make").is_file is False
    assert parse_python_spec("mnist-cnn") is None and parse_python_spec("a.py:not-an-identifier") is None


# ---- TorchScript ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["trace", "script"])
def test_torchscript_archive_reproduces_the_net(nets, tmp_path, how):
    original = residual(nets[1])
    scripted = torch.jit.trace(original, _x()) if how == "trace" else torch.jit.script(original)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(scripted, str(tmp_path / "net.ts"))
    model = load_model(tmp_path / "net.ts", device="cpu")
    assert torch.allclose(model(_x(5)), original(_x(5)), atol=1e-6)
    assert model.mistered_source.kind == "torchscript"


def test_torchscript_takes_weights_too(nets, tmp_path):
    torch.manual_seed(0)
    first, second = nets[1].SmallNet().eval(), nets[1].SmallNet().eval()
    torch.jit.save(torch.jit.script(first), str(tmp_path / "net.ts"))
    torch.save(second.state_dict(), tmp_path / "w.pt")
    model = load_model(tmp_path / "net.ts", weights=tmp_path / "w.pt", device="cpu")
    assert torch.allclose(model(_x()), second(_x()), atol=1e-6)


# ---- ONNX ------------------------------------------------------------------------------------------------------


def _onnx(net, path, dynamic):
    axes = {"x": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (_x(),), str(path), dynamo=False, input_names=["x"], dynamic_axes=axes)
    return path


@pytest.mark.parametrize("dynamic", [True, False])
def test_onnx_model_equals_onnxruntime_and_the_net(nets, tmp_path, dynamic):
    import onnxruntime

    original = residual(nets[1])
    path = _onnx(original, tmp_path / "net.onnx", dynamic)
    model = load_model(path, device="cpu")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _x(2)
    expected = session.run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(model(x).detach().numpy(), expected, atol=1e-5)
    x5 = _x(5, seed=2)  # a static batch of 2 runs in chunks of 2, the last one padded
    torch.testing.assert_close(model(x5), original(x5), atol=1e-5, rtol=1e-5)
    assert model.mistered_source.kind == "onnx" and model.batch_sizes == ((1, None) if dynamic else (2, 2))


def test_onnx_operators_onnx2torch_cannot_convert_are_all_named(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Relu", ["x"], ["h"]),
        helper.make_node("FancyOp", ["h"], ["g"], domain="com.example"),
        helper.make_node("Identity", ["g"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(tmp_path / "custom.onnx"))
    with pytest.raises(CheckpointError, match=r"cannot convert the ONNX operator\(s\) com\.example::FancyOp \(at opset 17"):
        load_model(tmp_path / "custom.onnx", device="cpu")


def test_onnx_operator_versions_onnx2torch_lacks_are_converted_down(tmp_path):
    """torch.onnx.export writes opset 20, whose AveragePool (version 19) onnx2torch has no converter for."""
    import onnxruntime

    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(48, 4))
    path = _onnx(net.eval(), tmp_path / "pool.onnx", dynamic=True)
    model = load_model(path, device="cpu")
    x = _x(3, seed=4)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(model(x).detach().numpy(), session.run(None, {"x": x.numpy()})[0], atol=1e-5)


# ---- folding, bundled, checkpoints, provenance -----------------------------------------------------------------


def test_mean_and_std_are_folded_in_front_and_recorded(nets):
    path, module = nets
    model = load_model(f"{path}:SmallNet", mean=[0.5], std=[0.25], device="cpu")
    assert isinstance(model, Normalized)
    x = _x()
    assert torch.equal(model(x), model.net((x - 0.5) / 0.25))
    assert (model.mistered_source.mean, model.mistered_source.std) == ((0.5,), (0.25,))


def test_bundled_model_records_its_file_and_hash():
    model = load_model("mnist-fc", device="cpu")
    source = model.mistered_source
    assert source.kind == "bundled" and source.sha256 == file_sha256(source.path)
    assert model.mistered_meta["dataset"] == "mnist-5k" and "mnist-fc" in bundled_models()


def test_checkpoint_file_is_recognised_by_content_whatever_its_name(tmp_path):
    torch.manual_seed(0)
    net = build_model("mnist-fc", hidden=8)
    path = save_model(tmp_path / "weights.onnx", net, "mnist-fc", {"hidden": 8}, {"note": "odd name"})
    model = load_model(path, device="cpu")
    assert model.mistered_source.kind == "checkpoint" and model.mistered_meta == {"note": "odd name"}


def test_model_source_json_round_trip_and_command_line():
    source = ModelSource("net.py:Net", "python", "/abs/net.py", "ab" * 32, model_args={"k": 3}, mean=(0.5,), std=(0.2,))
    assert ModelSource.from_json(source.to_json()) == source
    expected = "--model net.py:Net --model-args '{\"k\": 3}' --mean 0.5 --std 0.2 --weights w.pt"
    assert source.command_line(weights="w.pt") == expected
    assert "net.py:Net (python, sha256 abababababab)" in source.describe()


def test_external_checkpoint_round_trips_through_spec_and_weights(nets, tmp_path):
    path, _ = nets
    spec = f"{path}:SmallNet"
    model = load_model(spec, model_args={"num_classes": 4}, mean=[0.5], std=[0.25], device="cpu")
    with torch.no_grad():
        model.net.fc.bias.add_(1.0)  # "trained"
    saved = save_model(tmp_path / "trained.pt", model, EXTERNAL_ARCH, {}, {"epochs": 1})
    checkpoint = read_checkpoint(saved)
    assert checkpoint["arch"] == "external" and checkpoint["meta"]["source"]["spec"] == spec
    assert set(checkpoint["state_dict"]) == set(model.net.state_dict())
    with pytest.raises(CheckpointError, match=rf"this checkpoint holds weights for {spec}; load it with --model {spec} "
                       r"--model-args '\{\"num_classes\": 4\}' --mean 0.5 --std 0.25 --weights .*trained\.pt"):
        load_model(saved)
    again = load_model(spec, model_args={"num_classes": 4}, mean=[0.5], std=[0.25], weights=saved, device="cpu")
    assert torch.equal(again(_x()), model(_x()))


def test_save_model_external_needs_a_source(tmp_path):
    with pytest.raises(InvalidInputError, match="needs meta\\['source'\\]"):
        save_model(tmp_path / "m.pt", nn.Linear(2, 2), EXTERNAL_ARCH, {}, {})


# ---- the dry run -----------------------------------------------------------------------------------------------


def test_dry_run_accepts_a_fitting_model_and_leaves_its_mode_and_statistics(nets):
    net = residual(nets[1]).train()
    before = net.bn.running_mean.clone()
    check_model_on_data(net, (1, 8, 8), num_classes=3)
    assert net.training and torch.equal(net.bn.running_mean, before)


def test_dry_run_reports_a_model_that_fails_on_the_data_shape(nets):
    with pytest.raises(InvalidInputError, match=r"fails on a batch of images of shape \(3, 8, 8\).*RuntimeError"):
        check_model_on_data(nets[1].SmallNet(), (3, 8, 8), num_classes=3)


def test_dry_run_reports_fewer_logits_than_classes(nets):
    with pytest.raises(InvalidInputError, match="gives 3 logits per image but the data has 10 classes"):
        check_model_on_data(nets[1].SmallNet(), (1, 8, 8), num_classes=10)


class _Log(nn.Module):
    def forward(self, x):
        return torch.log(x - x)


class _Pair(nn.Module):
    def forward(self, x):
        return x.flatten(1), x


@pytest.mark.parametrize(
    "net, message",
    [
        (nn.Conv2d(1, 2, 3), r"returns shape \(2, 2, 6, 6\).*expected logits of shape \(2, K\)"),
        (_Pair(), "returns a tuple of 2 items"),
        (nn.Sequential(nn.Flatten(), nn.Linear(64, 3), nn.Softplus(threshold=-1.0), _Log()), "NaN or infinite"),
    ],
)
def test_dry_run_reports_outputs_that_are_not_logits(net, message):
    with pytest.raises(InvalidInputError, match=message):
        check_model_on_data(net, (1, 8, 8), num_classes=2)
