"""Affine and Flow threats, and the Sequence / Union combinators: conventions and exact behaviour."""

import math

import pytest
import torch
import torch.nn.functional as F

from mistered.errors import InvalidInputError
from mistered.threats import Additive, Affine, Flow, Sequence, Union, flow_smoothness, warp_by_flow


def _digit_like(size: int = 12) -> torch.Tensor:
    """An asymmetric test image (1, 1, size, size): a bar, a dot and a gradient, so rotations are distinguishable."""
    x = torch.zeros(1, 1, size, size)
    x[0, 0, 1:4, 2:9] = 1.0
    x[0, 0, 5:10, 3] = 0.5
    x[0, 0, 7, 8:11] = torch.linspace(0.2, 0.8, 3)
    return x


def _set(perturbation, **values):
    with torch.no_grad():
        for key, value in values.items():
            getattr(perturbation, key).copy_(torch.as_tensor(value, dtype=torch.float32))
    return perturbation


@pytest.mark.parametrize("size", [12, 28])
def test_rotation_by_plus_90_degrees_is_counter_clockwise_rot90(size):
    x = _digit_like(size)
    warp = _set(Affine(90.0, 0.0, 0.0).perturbation(x), angle=[90.0])
    assert torch.allclose(warp(x), torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)


def test_rotation_by_minus_90_degrees_is_clockwise_rot90():
    x = _digit_like()
    warp = _set(Affine(90.0, 0.0, 0.0).perturbation(x), angle=[-90.0])
    assert torch.allclose(warp(x), torch.rot90(x, -1, dims=(2, 3)), atol=1e-5)


def test_translation_is_a_fraction_of_the_image_size_with_black_fill():
    x = _digit_like(12)
    warp = _set(Affine(0.0, 0.25, 0.0).perturbation(x), translation=[[0.25, 0.0]])  # 3 pixels to the right
    out = warp(x)
    assert torch.allclose(out[..., 3:], x[..., :-3], atol=1e-5)
    assert out[..., :3].abs().max() == 0


def test_scaling_by_two_about_the_centre_magnifies_pixel_offsets():
    x = torch.zeros(1, 1, 13, 13)
    x[0, 0, 6, 7] = 1.0  # one pixel right of the centre (6, 6)
    warp = _set(Affine(0.0, 0.0, 1.0).perturbation(x), log_scale=[math.log(2.0)])
    out = warp(x)
    assert out[0, 0, 6, 8].item() == pytest.approx(1.0, abs=1e-5)  # the pixel moved to offset 2
    assert warp.sizes()["log_scale"].item() == pytest.approx(math.log(2.0))


def test_affine_makes_parameters_only_for_positive_budgets():
    x = torch.rand(2, 1, 8, 8)
    names = {name for name, _ in Affine(10.0, 0.0, 0.0).perturbation(x).named_parameters()}
    assert names == {"angle"}
    names = {name for name, _ in Affine(10.0, 0.1, 0.2).perturbation(x).named_parameters()}
    assert names == {"angle", "translation", "log_scale"}


@pytest.mark.parametrize("kwargs", [{"max_angle_deg": -1.0}, {"max_translation": -0.1}, {"max_scale": -0.5},
                                    {"max_angle_deg": 181.0}])
def test_affine_rejects_bad_budgets(kwargs):
    with pytest.raises(InvalidInputError, match="affine"):
        Affine(**kwargs)


@pytest.mark.parametrize("shape", [(3, 1, 12, 12), (2, 3, 7, 13)])
def test_zero_flow_returns_the_input_bit_for_bit(shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(Flow(0.05).perturbation(x)(x), x)


def test_flow_matches_grid_sample_with_align_corners_and_border_padding():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 2, 9, 11, generator=gen)
    flow = (torch.rand(2, 2, 9, 11, generator=gen) - 0.5) * 0.6
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 9), torch.linspace(-1, 1, 11), indexing="ij")
    grid = torch.stack([xs, ys], dim=-1) + flow.permute(0, 2, 3, 1)
    expected = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    assert torch.allclose(warp_by_flow(x, flow), expected, atol=1e-5)


def test_flow_of_one_pixel_samples_the_right_neighbour():
    x = torch.rand(1, 1, 6, 9, generator=torch.Generator().manual_seed(2))
    flow = torch.zeros(1, 2, 6, 9)
    flow[:, 0] = 2.0 / (9 - 1)  # one pixel in grid units: eps * (W - 1) / 2 pixels
    out = warp_by_flow(x, flow)
    assert torch.allclose(out[..., :-1], x[..., 1:], atol=1e-6)
    assert torch.allclose(out[..., -1], x[..., -1])  # border padding


def test_flow_smoothness_is_zero_for_a_constant_field_and_homogeneous():
    gen = torch.Generator().manual_seed(3)
    assert flow_smoothness(torch.full((2, 2, 5, 5), 0.3)).abs().max() == 0
    field = torch.randn(2, 2, 5, 5, generator=gen)
    assert torch.allclose(flow_smoothness(2.5 * field), 2.5 * flow_smoothness(field))


def test_flow_projection_meets_both_bounds_by_clamping_then_scaling():
    x = torch.rand(4, 1, 10, 10)
    field = Flow(0.05, smoothness=0.01).perturbation(x)
    with torch.no_grad():
        field.flow.copy_(torch.randn(field.flow.shape, generator=torch.Generator().manual_seed(4)))
    clamped = field.flow.detach().clamp(-0.05, 0.05)
    field.project_()
    sizes = field.sizes()
    assert (sizes["flow_linf"] <= 0.05 + 1e-7).all()
    assert torch.allclose(sizes["flow_smoothness"], torch.full((4,), 0.01), rtol=1e-5)  # active: on the boundary
    ratio = field.flow.detach().flatten(1) / clamped.flatten(1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4)  # a per-example scaling


def test_flow_smoothness_equals_the_stadv_flow_loss_computed_by_hand():
    # a 2x3 field: u (horizontal) and v (vertical) components, one example
    u = torch.tensor([[0.0, 0.3, 0.3], [0.0, 0.0, 0.4]])
    v = torch.tensor([[0.0, 0.0, 0.4], [0.3, 0.0, 0.0]])
    field = torch.stack((u, v)).unsqueeze(0)
    # horizontal pairs: (0,0)-(0,1): |(.3, 0)| = .3; (0,1)-(0,2): |(0, .4)| = .4; (1,0)-(1,1): |(0, -.3)| = .3;
    # (1,1)-(1,2): |(.4, 0)| = .4. Vertical pairs: (0,0)-(1,0): |(0, .3)| = .3; (0,1)-(1,1): |(-.3, 0)| = .3;
    # (0,2)-(1,2): |(.1, -.4)| = sqrt(.17). Sum over the 6 pixels.
    expected = (0.3 + 0.4 + 0.3 + 0.4 + 0.3 + 0.3 + 0.17**0.5) / 6
    assert float(flow_smoothness(field)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("smoothness", [0.01, 0.002])
def test_smooth_flow_steps_and_starts_stay_inside_both_bounds_and_move(smoothness):
    x = torch.nn.functional.interpolate(torch.rand(4, 1, 7, 7, generator=torch.Generator().manual_seed(5)),
                                        size=(28, 28), mode="bilinear", align_corners=False)
    field = Flow(0.05, smoothness).perturbation(x).random_init_(torch.Generator().manual_seed(6))
    assert field.within_budget().all() and (field.sizes()["flow_linf"] > 0).all()
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        before = field.flow.detach().clone()
        field.flow.grad = torch.randn(field.flow.shape, generator=gen)
        field.step_(0.25).project_()
        assert field.within_budget().all()
        assert not torch.equal(field.flow.detach(), before)


def test_a_smooth_flow_step_is_smooth_and_moves_its_largest_component_by_the_step():
    x = torch.rand(2, 1, 16, 16)
    field = Flow(0.05, smoothness=1.0).perturbation(x)  # a loose bound: the step is not scaled back
    field.flow.grad = torch.randn(field.flow.shape, generator=torch.Generator().manual_seed(8))
    field.step_(0.5)
    moved = field.flow.detach()
    assert torch.allclose(moved.abs().flatten(1).amax(dim=1), torch.full((2,), 0.025))
    rough = Flow(0.05).perturbation(x)
    rough.flow.grad = field.flow.grad
    rough.step_(0.5)
    assert (flow_smoothness(moved) < 0.5 * flow_smoothness(rough.flow.detach())).all()


def test_zero_flow_is_exact_on_single_pixel_wide_images():
    x = torch.rand(2, 1, 1, 5)
    assert torch.equal(Flow(0.05).perturbation(x)(x), x)


def test_affine_agrees_with_kornia_warp_affine():
    from kornia.geometry.transform import get_rotation_matrix2d, warp_affine

    gen = torch.Generator().manual_seed(6)
    x = torch.rand(3, 2, 11, 14, generator=gen)
    warp = Affine(30.0, 0.2, 0.3).perturbation(x).random_init_(gen)
    centre = torch.tensor([(14 - 1) / 2, (11 - 1) / 2]).expand(3, 2)
    matrix = get_rotation_matrix2d(centre, warp.angle.detach(), warp.log_scale.detach().exp()[:, None].expand(3, 2))
    matrix[:, :, 2] += warp.translation.detach() * torch.tensor([14.0, 11.0])
    expected = warp_affine(x, matrix, dsize=(11, 14), mode="bilinear", padding_mode="zeros", align_corners=True)
    assert torch.allclose(warp(x), expected, atol=1e-5)


def test_sequence_applies_the_first_component_first():
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(2, 1, 12, 12, generator=gen)
    chain = Sequence((Flow(0.1), Affine(20.0, 0.0, 0.0), Additive("linf", 0.1))).perturbation(x)
    chain.random_init_(gen)
    flow, affine, additive = chain.children_
    assert torch.equal(chain(x), additive(affine(flow(x))))


def test_sequence_keys_sizes_by_position_and_flattens_nested_sequences():
    inner = Sequence((Flow(0.05), Affine(10.0, 0.1)))
    chain = Sequence((inner, Additive("linf", 0.3)))
    assert len(chain.components) == 3
    budgets = chain.perturbation(torch.rand(1, 1, 8, 8)).budgets()
    assert budgets["0.flow_linf"] == 0.05 and budgets["1.angle_deg"] == 10.0 and budgets["2.linf"] == 0.3


def test_union_has_no_perturbation_and_says_to_use_alternatives():
    either = Union((Additive("linf", 0.3), Flow(0.05)))
    with pytest.raises(InvalidInputError, match="alternatives"):
        either.perturbation(torch.rand(1, 1, 8, 8))


def test_union_flattens_nested_unions_and_drops_duplicates():
    a, b, c = Additive("linf", 0.3), Additive("l2", 2.0), Flow(0.05)
    either = Union((a, Union((b, a)), c))
    assert either.alternatives() == (a, b, c)


def test_sequence_through_a_union_expands_into_one_sequence_per_choice():
    a, b, c = Flow(0.05), Additive("linf", 0.3), Additive("l2", 2.0)
    chain = Sequence((a, Union((b, c))))
    assert chain.alternatives() == (Sequence((a, b)), Sequence((a, c)))
    assert Union((chain,)).alternatives() == chain.alternatives()
    with pytest.raises(InvalidInputError, match="alternatives"):
        chain.perturbation(torch.rand(1, 1, 8, 8))


def test_composition_rejects_empty_and_non_threat_members():
    with pytest.raises(InvalidInputError, match="at least one"):
        Sequence(())
    with pytest.raises(InvalidInputError, match="Threat"):
        Union((Additive("linf", 0.3), "linf(0.3)"))
