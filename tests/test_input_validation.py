"""One validation rule at every entry point: the shared helpers, devices, and the attacks (issue #14, item 7)."""

import logging

import pytest
import torch
from torch import nn

from mistered.attacks import FGSM, PGD, AttackResult, CarliniWagnerL2
from mistered.device import available_devices, resolve_device
from mistered.errors import InvalidInputError, UnsupportedLayerError
from mistered.threats import Additive
from mistered.validation import (
    _log_lossy_cast,
    check_batch,
    check_labels,
    check_layered_model,
    check_logits,
    model_dtype,
)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

K = 10


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, K)).eval()


def _batch(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, K, (n,), generator=g)


def _pgd(net: nn.Module, **kwargs) -> PGD:
    return PGD(net, Additive("linf", 0.2), steps=5, seed=3, **kwargs)


# -- the shared helper --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8])
def test_check_batch_turns_integer_labels_of_any_dtype_into_int64(dtype):
    x, y = _batch()
    _, labels = check_batch(x, y.to(dtype), num_classes=K)
    assert labels.dtype == torch.int64 and torch.equal(labels, y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_check_batch_refuses_labels_that_are_not_integers(dtype):
    x, y = _batch()
    with pytest.raises(InvalidInputError, match=f"integer class indices, got dtype {dtype}"):
        check_batch(x, y.to(dtype))


@pytest.mark.parametrize("labels, fragment", [
    (torch.zeros(5, dtype=torch.long), r"shape \(6,\)"),
    (torch.zeros(6, 1, dtype=torch.long), r"shape \(6,\)"),
    ([0, 1, 2, 3, 4, 5], "torch.Tensor"),
    (torch.tensor([0, 1, 2, 3, 4, -1]), r"\[0, 10\)"),
])
def test_check_batch_refuses_labels_of_the_wrong_shape_type_or_range(labels, fragment):
    x, _ = _batch()
    with pytest.raises(InvalidInputError, match=fragment):
        check_batch(x, labels, num_classes=K)


def test_check_batch_casts_images_to_the_requested_dtype_and_logs_a_lossy_cast_once(caplog):
    _log_lossy_cast.cache_clear()
    x, y = _batch()
    with caplog.at_level(logging.WARNING, logger="mistered.validation"):
        first, _ = check_batch(x.double(), y, dtype=torch.float32)
        second, _ = check_batch(x.double(), y, dtype=torch.float32)
        check_batch(x.half().float(), y, dtype=torch.float64)  # an exact up-cast: nothing to say
    assert first.dtype == second.dtype == torch.float32 and torch.equal(first, x)
    assert [r.getMessage() for r in caplog.records] == [
        "inputs of dtype torch.float64 are cast to torch.float32, the dtype the model computes in"
    ]


@pytest.mark.parametrize("images, fragment", [
    (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), "1/255"),
    (torch.full((2, 1, 4, 4), float("inf")), "finite"),
    (torch.full((2, 1, 4, 4), -0.1), r"\[0, 1\]"),
    (torch.rand(2, 16), r"\(B, C, H, W\)"),
])
def test_check_batch_refuses_bad_images(images, fragment):
    with pytest.raises(InvalidInputError, match=fragment):
        check_batch(images, torch.zeros(2, dtype=torch.long))


def test_check_batch_accepts_an_empty_batch():
    x, y = check_batch(torch.zeros(0, 1, 4, 4), torch.zeros(0, dtype=torch.int32), num_classes=K)
    assert x.shape == (0, 1, 4, 4) and y.dtype == torch.int64 and y.shape == (0,)


def test_check_logits_learns_k_and_checks_the_labels_against_it():
    logits = torch.zeros(3, K)
    assert check_logits(logits, torch.tensor([0, 5, 9])) == K
    with pytest.raises(InvalidInputError, match=r"\[0, 10\) for a model with 10 classes, got values in \[0, 11\]"):
        check_logits(logits, torch.tensor([0, 5, 11]))
    with pytest.raises(InvalidInputError, match=r"logits of shape \(B, K\)"):
        check_logits(torch.zeros(3, 1, K), torch.tensor([0, 5, 9]))


def test_check_labels_still_returns_the_labels_validated():
    assert check_labels(torch.tensor([1, 2], dtype=torch.int16), 2, num_classes=3).dtype == torch.int64


def test_model_dtype_is_the_parameter_dtype():
    assert model_dtype(_net()) == torch.float32 and model_dtype(_net().double()) == torch.float64
    assert model_dtype(nn.ReLU()) == torch.float32


@pytest.mark.parametrize("make, words", [
    (lambda net: torch.jit.script(net), "a TorchScript module"),
    (lambda net: torch.jit.trace(net, torch.rand(1, 1, 4, 4)), "a TorchScript module"),
    (lambda net: torch.fx.symbolic_trace(net), "GraphModule"),
    (lambda net: nn.Sequential(torch.jit.script(net)), "inside Sequential"),
    (lambda net: net.forward, "not an nn.Module"),
])
def test_check_layered_model_refuses_models_whose_layers_cannot_be_read(make, words):
    with pytest.raises(UnsupportedLayerError, match=words):
        check_layered_model(make(_net()), "X", "Linear layers")


# -- devices ------------------------------------------------------------------------------------------------
def _missing_devices() -> list[str]:
    names = ["gpu", "cuda:7" if torch.cuda.device_count() < 8 else "cuda:99"]
    if not torch.cuda.is_available():
        names.append("cuda")
    if not torch.backends.mps.is_available():
        names.append("mps")
    return names


@pytest.mark.parametrize("device", _missing_devices())
def test_a_device_this_machine_lacks_is_an_error_naming_it_and_what_is_available(device):
    with pytest.raises(InvalidInputError) as info:
        resolve_device(device)
    message = str(info.value)
    assert repr(device) in message and "available here: auto, cpu" in message and "\n" not in message


def test_attacks_refuse_a_missing_device_at_construction():
    with pytest.raises(InvalidInputError, match="'mps'" if not torch.backends.mps.is_available() else "'gpu'"):
        _pgd(_net(), device="mps" if not torch.backends.mps.is_available() else "gpu")


def test_available_devices_start_with_the_cpu_and_resolve():
    devices = available_devices()
    assert devices[0] == "cpu"
    assert all(resolve_device(d) == torch.device(d) for d in devices)
    assert resolve_device("auto") == resolve_device(None)


# -- attacks --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.uint8])
def test_pgd_gives_the_same_result_for_integer_labels_of_any_dtype(dtype):
    net, (x, y) = _net(), _batch()
    reference, result = _pgd(net)(x, y), _pgd(net)(x, y.to(dtype))
    assert torch.equal(result.x_adv, reference.x_adv) and torch.equal(result.success, reference.success)
    assert result.labels.dtype == torch.int64


def test_a_targeted_attack_takes_integer_targets_of_any_dtype():
    net, (x, y) = _net(), _batch()
    target = (y + 1) % K
    reference, result = _pgd(net)(x, y, target), _pgd(net)(x, y.int(), target.short())
    assert torch.equal(result.x_adv, reference.x_adv) and result.targets.dtype == torch.int64


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_pgd_refuses_labels_that_are_not_integers(dtype):
    x, y = _batch()
    with pytest.raises(InvalidInputError, match="integer class indices"):
        _pgd(_net())(x, y.to(dtype))


def test_pgd_refuses_label_11_on_a_10_class_model():
    x, y = _batch()
    y[2] = 11
    with pytest.raises(InvalidInputError, match=r"labels must lie in \[0, 10\) for a model with 10 classes"):
        _pgd(_net())(x, y)


def test_a_targeted_attack_refuses_a_target_beyond_the_classes():
    x, y = _batch()
    with pytest.raises(InvalidInputError, match=r"target labels must lie in \[0, 10\)"):
        _pgd(_net())(x, y, torch.full_like(y, K))


def test_an_attack_refuses_a_model_whose_output_is_not_logits():
    x, y = _batch()
    with pytest.raises(InvalidInputError, match=r"logits of shape \(B, K\)"):
        _pgd(nn.Sequential(_net(), nn.Unflatten(1, (1, K))))(x, y)


@pytest.mark.parametrize("attack", [
    lambda net: PGD(net, Additive("linf", 0.2), steps=3),
    lambda net: FGSM(net, Additive("linf", 0.2)),
    lambda net: CarliniWagnerL2(net, Additive("l2", 0.5), steps=3),
])
def test_an_empty_batch_gives_an_empty_consistent_attack_result(attack):
    net = _net()
    result = attack(net)(torch.zeros(0, 1, 4, 4), torch.zeros(0, dtype=torch.int32))
    assert result.x_adv.shape == (0, 1, 4, 4) and result.logits.shape == (0, K)
    assert result.clean_logits.shape == (0, K) and result.success.shape == (0,) and result.labels.dtype == torch.int64
    assert all(v.shape == (0,) for v in (*result.distances.values(), *result.sizes.values(), result.alternative))
    assert result.to_json() == [] and result.robust.shape == (0,)
    x, y = _batch(2)
    combined = AttackResult.cat([result, attack(net)(x, y)])
    assert combined.x_adv.shape == (2, 1, 4, 4) and combined.success.shape == (2,)


def test_pgd_casts_float64_images_to_the_model_dtype_with_the_same_result():
    net, (x, y) = _net(), _batch()
    reference, result = _pgd(net)(x, y), _pgd(net)(x.double(), y)
    assert result.x_adv.dtype == torch.float32
    assert torch.equal(result.x_adv, reference.x_adv) and torch.equal(result.success, reference.success)


def test_pgd_runs_on_a_torchscript_model():
    net, (x, y) = _net(), _batch()
    reference, result = _pgd(net)(x, y), _pgd(torch.jit.script(net))(x, y)
    assert torch.allclose(result.x_adv, reference.x_adv, atol=1e-6)
