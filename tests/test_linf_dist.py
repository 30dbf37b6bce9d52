"""L∞-dist layers and nets: exact gradients, bounded memory, sound certificates, the v2 objective's schedules."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mistered.models.linf_dist import kernel as linf_dist_kernel
from mistered.models.linf_dist.layers import LinfDistConv2d, LinfDistLinear, MeanShift, fast_p, linf_dist
from mistered.models.linf_dist.nets import LinfDistNet
from mistered.certify.lipschitz.linf_dist import certify_linf_dist, linf_dist_radius
from mistered.errors import InvalidInputError, UnsupportedLayerError
from mistered.models import build_model
from mistered.train.linf_dist import LinfDistObjective
from mistered.memory import LargestTensor


def _naive(x: torch.Tensor, w: torch.Tensor, p: float) -> torch.Tensor:
    diff = (x[:, None, :] - w[None]).abs()
    return diff.amax(dim=-1) if math.isinf(p) else diff.pow(p).sum(dim=-1).pow(1 / p)


@pytest.mark.parametrize("p", [2.0, 8.0, 37.5, math.inf])
def test_layer_values_and_gradients_match_naive_broadcast(p):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 9, generator=gen, requires_grad=True)
    w = torch.randn(5, 9, generator=gen, requires_grad=True)
    g = torch.randn(6, 5, generator=gen)
    ours = linf_dist(x, w, p, chunk_elements=20)  # several chunks
    grads = torch.autograd.grad((ours * g).sum(), (x, w))
    naive = _naive(x, w, p)
    expected = torch.autograd.grad((naive * g).sum(), (x, w))
    assert torch.allclose(ours, naive, atol=1e-5)
    for mine, theirs in zip(grads, expected):
        assert torch.allclose(mine, theirs, atol=1e-5)


@pytest.mark.parametrize("p", [3.0, 8.0])
def test_gradcheck_in_float64(p):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: linf_dist(a, b, p, chunk_elements=5), (x, w))


def _float64_reference_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs with zero differences (x equal to a weight row in some coordinates) and ties (equal |d| twice)."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    w = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    w[0, :2] = x[0, :2]  # zero differences
    w[1, 3], w[1, 4] = x[1, 3] - 0.7, x[1, 4] + 0.7  # a tie in magnitude
    return x.requires_grad_(), w.requires_grad_()


@pytest.mark.parametrize("p", [8.0, 16.0, 24.5, 64.0, 512.0])
def test_fast_path_matches_float64_broadcast_with_ties_and_zero_differences(p):
    x, w = _float64_reference_case()
    g = torch.randn(3, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ours = linf_dist(x, w, p, chunk_elements=10)
    naive = _naive(x, w, p)
    assert torch.allclose(ours, naive, rtol=1e-12)
    for mine, theirs in zip(torch.autograd.grad((ours * g).sum(), (x, w)), torch.autograd.grad((naive * g).sum(), (x, w))):
        assert torch.allclose(mine, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("p", [8.0, 16.0, 24.5, 64.0, 512.0, 7.0])
def test_fast_path_gradcheck_with_ties_and_zero_differences(p):
    x, w = _float64_reference_case()
    assert torch.autograd.gradcheck(lambda a, b: linf_dist(a, b, p, chunk_elements=10), (x, w))


def test_p_1000_in_float32_stays_finite_and_close_to_float64():
    gen = torch.Generator().manual_seed(4)
    x, w = torch.randn(4, 50, generator=gen) * 30, torch.randn(6, 50, generator=gen) * 30
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = linf_dist(xg, wg, 1000.0, chunk_elements=100)
    y.sum().backward()
    diff = (x.double()[:, None, :] - w.double()[None]).abs()
    top = diff.amax(dim=-1, keepdim=True)
    reference = top.squeeze(-1) * (diff / top).pow(1000.0).sum(dim=-1).pow(1e-3)  # rescaled: 60^1000 overflows float64
    assert torch.isfinite(y).all() and torch.isfinite(xg.grad).all() and torch.isfinite(wg.grad).all()
    assert torch.allclose(y.double(), reference, rtol=1e-5)


def test_fast_p_rounds_to_an_integer_norm_and_keeps_infinity():
    assert fast_p(24.5) in (24.0, 25.0) and fast_p(8.3) == 8.0 and fast_p(1.2) == 1.0
    assert fast_p(math.inf) == math.inf


def test_large_p_does_not_overflow():
    x = torch.full((2, 3), 5.0)
    w = torch.zeros(4, 3)
    y = linf_dist(x, w, 900.0)
    assert torch.isfinite(y).all() and torch.allclose(y, torch.full((2, 4), 5.0), rtol=1e-2)


@pytest.mark.parametrize("p", [8.0, math.inf])
def test_forward_and_backward_never_form_the_batch_out_in_tensor(p):
    batch, out, inp, budget = 4, 64, 4096, 1 << 16  # B*out*in = 1M values, 16x the chunk budget
    x = torch.randn(batch, inp, requires_grad=True)
    w = torch.randn(out, inp, requires_grad=True)
    with LargestTensor() as mode:
        linf_dist(x, w, p, chunk_elements=budget).sum().backward()
    assert mode.numel <= max(budget, out * inp)  # a chunk, or the weight-sized gradient
    assert mode.numel < batch * out * inp


def _first_argmax(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    diff = (x[:, None, :] - w[None]).abs()
    hits = diff == diff.amax(dim=-1, keepdim=True)
    return torch.where(hits, torch.arange(x.shape[1]), x.shape[1]).amin(dim=-1)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 9), out=st.integers(1, 9), inp=st.integers(1, 13),
    chunk=st.integers(1, 200), integer=st.booleans(), seed=st.integers(0, 2**16),
)
def test_p_inf_values_equal_cdist_bit_for_bit_and_index_is_first_argmax(batch, out, inp, chunk, integer, seed):
    gen = torch.Generator().manual_seed(seed)
    x, w = torch.randn(batch, inp, generator=gen), torch.randn(out, inp, generator=gen)
    if integer:  # small integers: ties everywhere
        x, w = x.mul(2).round(), w.mul(2).round()
    values, index = linf_dist_kernel._max_abs_diff(x, w, chunk, with_index=True)
    assert torch.equal(values, torch.cdist(x, w, p=math.inf))
    assert torch.equal(index, _first_argmax(x, w))
    assert torch.equal(linf_dist(x, w, math.inf, chunk), values)  # the no-grad path


def test_p_inf_gradcheck_in_float64():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(5, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: linf_dist(a, b, math.inf, chunk_elements=30), (x, w))


@pytest.mark.parametrize("chunk", [1, 500, 1 << 20])
def test_p_inf_gradients_equal_cdist_gradients_in_float32(chunk):
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(16, 50, generator=gen, requires_grad=True)
    w = torch.randn(24, 50, generator=gen, requires_grad=True)
    g = torch.randn(16, 24, generator=gen)
    ours = torch.autograd.grad((linf_dist(x, w, math.inf, chunk) * g).sum(), (x, w))
    theirs = torch.autograd.grad((torch.cdist(x, w, p=math.inf) * g).sum(), (x, w))
    for mine, reference in zip(ours, theirs):
        assert torch.allclose(mine, reference, atol=1e-6)


def test_p_inf_tie_sends_the_gradient_to_the_first_argmax_and_zero_distance_gets_none():
    x = torch.tensor([[0.0, 1.0, -1.0], [2.0, 2.0, 2.0]], requires_grad=True)
    w = torch.tensor([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]], requires_grad=True)
    y = linf_dist(x, w)
    assert torch.equal(y.detach(), torch.tensor([[1.0, 3.0], [2.0, 0.0]]))
    (y[0, 0] + y[1, 0] + y[1, 1]).backward()  # |d| = (0, 1, 1), (2, 2, 2) with w_0; (0, 0, 0) with w_1
    assert torch.equal(x.grad, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))  # the first of the ties only
    assert torch.equal(w.grad, torch.tensor([[-1.0, -1.0, 0.0], [0.0, 0.0, 0.0]]))  # zero distance: zero, as cdist


def test_identity_initialisation_passes_inputs_through():
    layer = LinfDistLinear(5, 8, mean_shift=False, identity_val=10.0, std=0.1)
    x = torch.rand(3, 5)
    expected = x[:, torch.arange(8) % 5] + 10.0
    assert torch.allclose(layer(x), expected, atol=1e-5)


def test_mean_shift_uses_batch_mean_in_training_and_running_mean_in_eval():
    shift = MeanShift(2, momentum=1.0)
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    assert torch.allclose(shift(x).mean(dim=0), torch.zeros(2))
    shift.eval()
    assert torch.allclose(shift(torch.zeros(1, 2)), -torch.tensor([[2.0, 4.0]]))


def test_conv_layer_equals_dense_layer_on_patches():
    torch.manual_seed(0)
    conv = LinfDistConv2d(2, 3, 3, stride=2, padding=1, mean_shift=False)
    x = torch.rand(2, 2, 5, 5)
    y = conv(x)
    patches = nn.functional.unfold(x, 3, padding=1, stride=2)  # (B, 18, 9)
    expected = _naive(patches.transpose(1, 2).reshape(-1, 18), conv.weight, math.inf).view(2, 9, 3).transpose(1, 2)
    assert y.shape == (2, 3, 3, 3)
    assert torch.allclose(y.reshape(2, 3, 9), expected, atol=1e-6)


def _trained_small_net(seed: int) -> LinfDistNet:
    torch.manual_seed(seed)
    net = LinfDistNet((1, 4, 4), num_classes=3, depth=3, width=20)
    net.train()
    for _ in range(3):  # populate the running means
        net(torch.rand(16, 1, 4, 4))
    return net.eval()


def _linf_attack_success(net, x, y, eps, restarts=16, steps=40) -> torch.Tensor:
    """Batched L∞ PGD (sign steps) on the CW margin at per-example radii ``eps`` ``(B,)``, images in ``[0, 1]``."""
    batch = x.shape[0]
    generator = torch.Generator().manual_seed(0)
    xs, ys = x.repeat(restarts, 1, 1, 1), y.repeat(restarts)
    radius = eps.repeat(restarts).view(-1, 1, 1, 1)
    delta = (2 * torch.rand(xs.shape, generator=generator) - 1) * radius
    found = torch.zeros(xs.shape[0], dtype=torch.bool)
    for _ in range(steps):
        delta.requires_grad_(True)
        logits = net.raw((xs + delta).clamp(0, 1))
        margin = logits.scatter(1, ys[:, None], float("-inf")).amax(dim=1) - logits.gather(1, ys[:, None]).squeeze(1)
        found |= (margin > 0).detach()
        (grad,) = torch.autograd.grad(margin.sum(), delta)
        with torch.no_grad():
            delta = torch.maximum(torch.minimum(delta + 0.1 * radius * grad.sign(), radius), -radius)
    with torch.no_grad():
        found |= net.raw((xs + delta).clamp(0, 1)).argmax(dim=1) != ys
    return found.view(restarts, batch).any(dim=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pgd_never_succeeds_inside_certified_linf_radius(seed):
    net = _trained_small_net(seed)
    x = torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = net(x).argmax(dim=1)
    cert = certify_linf_dist(net, x, y)
    assert bool((cert.radius > 0).all())
    assert not bool(_linf_attack_success(net, x, y, cert.radius * (1 - 1e-4)).any())


def test_linf_attack_succeeds_beyond_four_times_the_radius_somewhere():
    net = _trained_small_net(0)
    x = torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net(x).argmax(dim=1)
    cert = certify_linf_dist(net, x, y)
    assert bool(_linf_attack_success(net, x, y, cert.radius * 4).any())


def test_radius_is_half_the_margin():
    raw = torch.tensor([[1.0, 0.2, -3.0], [0.0, 2.0, 1.5]])
    assert torch.allclose(linf_dist_radius(raw), torch.tensor([0.4, 0.25]))


def test_certification_restores_training_mode_and_p():
    net = _trained_small_net(0).train()
    for layer in net.modules():
        if isinstance(layer, LinfDistLinear):
            layer.p = 8.0
    certify_linf_dist(net, torch.rand(2, 1, 4, 4), torch.zeros(2, dtype=torch.long))
    assert net.training and all(m.p == 8.0 for m in net.modules() if isinstance(m, LinfDistLinear))


def test_certifying_another_model_says_why_not():
    with pytest.raises(UnsupportedLayerError, match="L∞-dist net"):
        certify_linf_dist(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.rand(1, 1, 2, 2), torch.zeros(1, dtype=torch.long))


def test_registry_builds_v2_family_for_mnist_and_cifar_shapes():
    mnist = build_model("linf-dist-net", depth=3, width=16)
    cifar = build_model("linf-dist-net", in_channels=3, image_size=32, depth=2, width=8)
    assert mnist(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert cifar(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_objective_p_schedule_rises_from_8_to_infinity():
    objective = LinfDistObjective(p_phase=(0.1, 0.5))
    assert objective.p_at(0.0) == 8.0
    values = [objective.p_at(t / 10) for t in range(1, 5)]
    assert values == sorted(values) and 8.0 <= values[0] < values[-1] < 1000.0
    assert objective.p_at(0.5) == math.inf and objective.p_at(1.0) == math.inf
    assert objective.lam_at(0.0) == pytest.approx(0.05) and objective.lam_at(1.0) == pytest.approx(0.0002)


def test_objective_hinge_vanishes_when_certified_at_eps():
    net = _trained_small_net(0).train()
    x = torch.rand(8, 1, 4, 4)
    with torch.no_grad():
        net.eval()
        y = net(x).argmax(dim=1)
        radius = certify_linf_dist(net, x, y).radius
    objective = LinfDistObjective(eps=float(radius.min()) * 0.5, lam_start=1e-9, lam_end=1e-9)
    net.eval()  # eval mode: the same function as certified
    loss, _ = objective(net, x, y, progress=1.0)
    assert float(loss.detach()) < 1e-6


def test_objective_rounds_the_scheduled_p_to_the_integer_the_fast_path_computes():
    net = _trained_small_net(0).train()
    objective = LinfDistObjective(p_phase=(0.0, 1.0))
    assert objective.p_at(0.3) != round(objective.p_at(0.3))
    objective(net, torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.long), 0.3)
    assert all(m.p == round(objective.p_at(0.3)) for m in net.modules() if isinstance(m, LinfDistLinear))


def test_objective_sets_p_on_every_layer_and_refuses_other_models():
    net = _trained_small_net(0).train()
    LinfDistObjective(p_phase=(0.5, 1.0))(net, torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.long), 0.0)
    assert all(m.p == 8.0 for m in net.modules() if isinstance(m, LinfDistLinear))
    with pytest.raises(UnsupportedLayerError):
        LinfDistObjective()(nn.Linear(2, 2), torch.rand(1, 2), torch.zeros(1, dtype=torch.long), 0.0)
    with pytest.raises(InvalidInputError):
        LinfDistObjective(eps=0.0)
