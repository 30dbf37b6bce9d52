"""Distances and similarities: Lp against manual norms, SSIM and MS-SSIM against piq, names, ranges, deprecation."""

from __future__ import annotations

import pytest
import torch

from mistered._compat import import_torchvision
from mistered.errors import InvalidInputError
from mistered.metrics import (
    DISTANCES, METRIC_RANGES, check_bound, distance, get_distance, ms_ssim, reference_distance, similarity, ssim,
)
from mistered.metrics.ssim import MS_SSIM_WEIGHTS, ms_ssim_levels

import_torchvision()
import piq  # noqa: E402  (after import_torchvision)


def _smooth_images(batch: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """Real-looking images: low-frequency noise upsampled, with some sharp edges, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, channels, size // 4, size // 4, generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    edges = (torch.rand(batch, channels, size, size, generator=g) > 0.9).float() * 0.3
    return (smooth + edges).clamp(0, 1)


def _noisy(x: torch.Tensor, level: float, seed: int) -> torch.Tensor:
    return (x + level * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)


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


# --- names, ranges, deprecation --------------------------------------------------------------------


def test_unknown_distance_name_lists_the_known_names():
    with pytest.raises(InvalidInputError, match="lpips-vgg"):
        distance("psnr", torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(InvalidInputError, match="dssim"):
        get_distance("dists")


def test_a_similarity_is_not_a_distance_and_the_error_names_its_distance():
    with pytest.raises(InvalidInputError, match="'ms-ssim' is a similarity; its distance is 'ms-dssim'"):
        distance("ms-ssim", torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32))


def test_ssim_as_a_distance_still_means_one_minus_ssim_with_a_warning_that_says_so():
    x = _smooth_images(2, 1, 28, 1)
    y = _noisy(x, 0.1, 2)
    with pytest.warns(FutureWarning, match=r"'ssim' as a distance or budget is deprecated: it means dssim = 1 - SSIM"):
        old = distance("ssim", x, y)
    torch.testing.assert_close(old, distance("dssim", x, y))


def test_distance_modules_agree_with_functions():
    x, y = _smooth_images(3, 1, 28, 1), _smooth_images(3, 1, 28, 2)
    for name in ("linf", "l2", "l1", "dssim", "ms-dssim"):
        torch.testing.assert_close(get_distance(name, "cpu")(x, y), distance(name, x, y))


@pytest.mark.parametrize("name, bound", [("dssim", 2.5), ("ms-dssim", 1.5), ("linf", 1.2), ("lpips", -0.1),
                                         ("l2", float("nan"))])
def test_a_bound_outside_the_metric_range_is_one_clear_error(name, bound):
    with pytest.raises(InvalidInputError, match=rf"a {name} bound must lie in \["):
        check_bound(name, bound)


def test_every_distance_has_a_range_and_the_ranges_hold_on_extreme_images():
    assert set(METRIC_RANGES) == set(DISTANCES)
    black, white = torch.zeros(2, 1, 28, 28), torch.ones(2, 1, 28, 28)
    checker = (torch.arange(28).view(-1, 1) + torch.arange(28)).remainder(2).float().expand(2, 1, 28, 28)
    for name in ("linf", "dssim", "ms-dssim"):
        low, high = METRIC_RANGES[name]
        for a, b in ((black, white), (checker, 1 - checker), (checker, black)):
            value = distance(name, a, b)
            assert bool(((value >= low - 1e-6) & (value <= high + 1e-6)).all()), (name, value)


# --- SSIM and MS-SSIM: similarities, against piq --------------------------------------------------


@pytest.mark.parametrize(
    "shape, kind",
    [((4, 1, 28, 28), "smooth"), ((4, 1, 28, 28), "random"), ((3, 3, 32, 32), "random"), ((2, 3, 40, 36), "smooth"),
     ((1, 1, 400, 392), "smooth")],
)
def test_ssim_matches_piq(shape, kind):
    b, c, h, w = shape
    if kind == "smooth":
        x = _smooth_images(b, c, max(h, w), 3)[..., :h, :w]
        y = _noisy(x, 0.05, 4)
    else:
        g = torch.Generator().manual_seed(5)
        x, y = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
    torch.testing.assert_close(ssim(x, y), piq.ssim(x, y, reduction="none"), atol=1e-4, rtol=0)


@pytest.mark.parametrize("shape", [(2, 1, 161, 170), (2, 3, 200, 192)])
def test_ms_ssim_with_all_five_scales_matches_piq_defaults(shape):
    x = _smooth_images(shape[0], shape[1], max(shape[2:]), 6)[..., :shape[2], :shape[3]]
    y = _noisy(x, 0.08, 7)
    torch.testing.assert_close(ms_ssim(x, y), piq.multi_scale_ssim(x, y, reduction="none"), atol=1e-4, rtol=0)


@pytest.mark.parametrize("shape, levels", [((3, 1, 28, 28), 2), ((2, 3, 48, 44), 3)])
def test_ms_ssim_on_small_images_keeps_the_finest_scales_as_piq_computes_them(shape, levels):
    assert ms_ssim_levels(*shape[2:]) == levels
    x = _smooth_images(shape[0], shape[1], max(shape[2:]), 8)[..., :shape[2], :shape[3]]
    y = _noisy(x, 0.08, 9)
    weights = torch.tensor(MS_SSIM_WEIGHTS[:levels])
    expected = piq.multi_scale_ssim(x, y, scale_weights=weights, reduction="none")
    torch.testing.assert_close(ms_ssim(x, y), expected, atol=1e-4, rtol=0)


def test_ms_ssim_refuses_images_too_small_for_two_scales():
    with pytest.raises(InvalidInputError, match="at least 21x21"):
        ms_ssim(torch.zeros(1, 1, 20, 20), torch.zeros(1, 1, 20, 20))


def test_similarities_are_one_for_identical_images_and_their_distances_zero():
    x = _smooth_images(3, 1, 28, 10)
    for name, dissimilarity in (("ssim", "dssim"), ("ms-ssim", "ms-dssim")):
        torch.testing.assert_close(similarity(name, x, x), torch.ones(3))
        assert distance(dissimilarity, x, x).abs().max() < 1e-6


def test_similarity_decreases_and_distance_grows_with_noise():
    x = _smooth_images(2, 1, 28, 11)
    for name, dissimilarity in (("ssim", "dssim"), ("ms-ssim", "ms-dssim")):
        sims = [similarity(name, x, _noisy(x, s, 12)) for s in (0.02, 0.1, 0.3)]
        assert (sims[0] > sims[1]).all() and (sims[1] > sims[2]).all()
        torch.testing.assert_close(distance(dissimilarity, x, _noisy(x, 0.1, 12)), 1 - sims[1])


def test_ssim_and_ms_ssim_are_differentiable():
    g = torch.Generator().manual_seed(7)
    x = torch.rand(1, 1, 11, 12, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 1, 11, 12, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: ssim(a, y), (x,), fast_mode=True)
    x2 = _smooth_images(1, 1, 24, 13).double().requires_grad_(True)
    y2 = _noisy(x2.detach(), 0.05, 14)
    assert torch.autograd.gradcheck(lambda a: ms_ssim(a, y2), (x2,), fast_mode=True)


def test_ssim_refuses_images_smaller_than_the_window():
    with pytest.raises(InvalidInputError, match="11x11"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))


@pytest.mark.parametrize("name", ["dssim", "ms-dssim", "l2", "lpips", "lpips-vgg"])
def test_reference_distance_equals_distance_on_chosen_rows(name):
    x, y = _smooth_images(4, 1, 28, 19), _smooth_images(4, 1, 28, 20)
    rows = torch.tensor([3, 1])
    measure = reference_distance(name, x)
    torch.testing.assert_close(measure(y, None), distance(name, x, y), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(measure(y[rows], rows), distance(name, x[rows], y[rows]), atol=1e-6, rtol=1e-5)
