"""Models: architectures, the Normalized wrapper, checkpoints (round trip, hostile, mismatched), bundled weights."""

import pytest
import torch
from torch import nn

from mistered.data import load_dataset
from mistered.errors import CheckpointError, InvalidInputError
from mistered.io import atomic_torch_save
from mistered.models import (
    ARCHITECTURES,
    Normalized,
    accuracy,
    build_model,
    bundled_models,
    load_model,
    predict,
    read_checkpoint,
    save_model,
)
from mistered.models.checkpoint import CHECKPOINT_FORMAT


@pytest.fixture(scope="module")
def mnist_test():
    return load_dataset("mnist-5k", "test")


def _checkpoint(**overrides):
    model = build_model("mnist-fc")
    base = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "arch": "mnist-fc",
        "arch_kwargs": {},
        "state_dict": model.state_dict(),
        "meta": {},
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    "arch, shape", [("mnist-cnn", (3, 1, 28, 28)), ("mnist-fc", (3, 1, 28, 28)), ("cifar-resnet", (3, 3, 32, 32))]
)
def test_every_registered_architecture_maps_images_to_ten_logits(arch, shape):
    torch.manual_seed(0)
    model = build_model(arch).eval()
    assert model(torch.rand(shape)).shape == (3, 10)


def test_registry_lists_the_three_base_architectures():
    assert {"mnist-cnn", "mnist-fc", "cifar-resnet"} <= set(ARCHITECTURES)


def test_mnist_fc_is_the_784_20_20_10_sequential_without_normalisation():
    model = build_model("mnist-fc")
    assert [type(m) for m in model] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    shapes = [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)]
    assert shapes == [(784, 20), (20, 20), (20, 10)]


def test_mnist_cnn_is_a_normalized_sequential_of_piecewise_linear_layers():
    model = build_model("mnist-cnn")
    assert isinstance(model, Normalized) and isinstance(model.net, nn.Sequential)
    assert all(isinstance(m, (nn.Conv2d, nn.Linear, nn.ReLU, nn.Flatten)) for m in model.net)


def test_normalized_standardises_each_channel_before_the_net():
    model = Normalized(nn.Identity(), mean=[0.5, 0.25], std=[0.5, 0.25])
    x = torch.rand(2, 2, 3, 3)
    expected = torch.stack([(x[:, 0] - 0.5) / 0.5, (x[:, 1] - 0.25) / 0.25], dim=1)
    torch.testing.assert_close(model(x), expected)


def test_normalized_refuses_non_positive_std():
    with pytest.raises(InvalidInputError, match="std"):
        Normalized(nn.Identity(), mean=[0.0], std=[0.0])


def test_normalized_moves_mean_and_std_with_the_model():
    model = Normalized(nn.Identity(), mean=[0.1], std=[0.3]).to(torch.float64)
    assert model.mean.dtype == torch.float64 and "mean" in model.state_dict()


def test_unknown_architecture_lists_the_registered_names():
    with pytest.raises(InvalidInputError, match="unknown architecture 'vgg99'.*mnist-cnn"):
        build_model("vgg99")


def test_build_model_refuses_arguments_the_architecture_does_not_take():
    with pytest.raises(InvalidInputError, match="mnist-fc.*depthh"):
        build_model("mnist-fc", depthh=3)


def test_save_then_load_gives_identical_outputs_and_keeps_meta(tmp_path):
    torch.manual_seed(0)
    model = build_model("mnist-fc", hidden=8, depth=3)
    path = save_model(tmp_path / "m.pt", model, "mnist-fc", {"hidden": 8, "depth": 3}, {"note": "round trip"})
    loaded = load_model(str(path), device="cpu")
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(loaded(x), model.eval()(x))
    assert loaded.mistered_meta == {"note": "round trip"} and not loaded.training


def test_save_model_refuses_meta_that_is_not_json_like(tmp_path):
    with pytest.raises(InvalidInputError, match="meta"):
        save_model(tmp_path / "m.pt", build_model("mnist-fc"), "mnist-fc", {}, {"fn": print})


class _Hostile:
    def __reduce__(self):
        return (print, ("pwned",))


def test_hostile_pickle_checkpoint_is_refused_without_running_it(tmp_path, capsys):
    path = tmp_path / "hostile.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "payload": _Hostile()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_model(str(path))
    assert "pwned" not in capsys.readouterr().out


def test_corrupt_checkpoint_raises_checkpoint_error(tmp_path):
    path = save_model(tmp_path / "m.pt", build_model("mnist-fc"), "mnist-fc", {}, {})
    path.write_bytes(path.read_bytes()[: 200])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(str(path))


def test_plain_state_dict_is_refused_as_not_a_mistered_checkpoint(tmp_path):
    path = tmp_path / "sd.pt"
    atomic_torch_save(path, build_model("mnist-fc").state_dict())
    with pytest.raises(CheckpointError, match="not a mistered model checkpoint"):
        load_model(str(path))


def test_checkpoint_of_an_unknown_architecture_names_it(tmp_path):
    path = atomic_torch_save(tmp_path / "m.pt", _checkpoint(arch="resnet1000"))
    with pytest.raises(CheckpointError, match="'resnet1000'"):
        load_model(str(path))


def test_checkpoint_from_a_newer_format_version_asks_to_upgrade(tmp_path):
    path = atomic_torch_save(tmp_path / "m.pt", _checkpoint(version=2))
    with pytest.raises(CheckpointError, match="upgrade"):
        read_checkpoint(path)


def test_weights_of_the_wrong_shape_are_refused_naming_the_parameter(tmp_path):
    wrong = build_model("mnist-fc", hidden=16).state_dict()
    path = atomic_torch_save(tmp_path / "m.pt", _checkpoint(state_dict=wrong))
    with pytest.raises(CheckpointError, match=r"does not fit architecture 'mnist-fc'.*1\.weight"):
        load_model(str(path))


def test_weights_with_missing_parameters_are_refused(tmp_path):
    partial = {k: v for k, v in build_model("mnist-fc").state_dict().items() if not k.startswith("5.")}
    path = atomic_torch_save(tmp_path / "m.pt", _checkpoint(state_dict=partial))
    with pytest.raises(CheckpointError, match=r"Missing key.*5\.weight"):
        load_model(str(path))


def test_unknown_model_name_lists_the_bundled_models():
    with pytest.raises(CheckpointError, match="neither a bundled model.*mnist-cnn"):
        load_model("no-such-model")


def test_architecture_without_bundled_weights_says_so():
    with pytest.raises(CheckpointError, match="'cifar-resnet' has no bundled weights"):
        load_model("cifar-resnet")


def test_bundled_models_include_the_cnn_and_the_fc_net():
    assert {"mnist-cnn", "mnist-fc"} <= set(bundled_models())


def test_default_model_is_the_bundled_cnn_in_eval_mode():
    model = load_model(device="cpu")
    assert isinstance(model, Normalized) and not model.training
    assert model.mistered_meta["dataset"] == "mnist-5k"


def test_bundled_cnn_reaches_at_least_95_percent_on_the_held_out_digits(mnist_test):
    assert accuracy(load_model("mnist-cnn", device="cpu"), mnist_test) >= 0.95


def test_bundled_models_reproduce_the_accuracy_recorded_in_their_meta(mnist_test):
    for name in ("mnist-cnn", "mnist-fc"):
        model = load_model(name, device="cpu")
        assert accuracy(model, mnist_test) == pytest.approx(model.mistered_meta["test_accuracy"], abs=2e-3)


def test_predict_batches_give_the_same_classes_as_one_pass():
    torch.manual_seed(0)
    model = build_model("mnist-fc").eval()
    x = torch.rand(7, 1, 28, 28)
    assert torch.equal(predict(model, x, batch_size=3), model(x).argmax(1))


def test_saved_meta_with_str_subclasses_and_tuples_loads_weights_only(tmp_path):
    meta = {"torch": torch.__version__, "shape": (1, 28, 28)}
    path = save_model(tmp_path / "m.pt", build_model("mnist-fc"), "mnist-fc", {}, meta)
    assert read_checkpoint(path)["meta"] == {"torch": str(torch.__version__), "shape": [1, 28, 28]}


def test_save_model_refuses_an_unregistered_architecture(tmp_path):
    with pytest.raises(InvalidInputError, match="unknown architecture 'mlp'"):
        save_model(tmp_path / "m.pt", build_model("mnist-fc"), "mlp", {}, {})
