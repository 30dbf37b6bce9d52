"""LPIPS in a network's own features (Laidlaw et al. 2021): the model's ("lpips-self") and a user's ("lpips-net")."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mistered.errors import InvalidInputError
from mistered.metrics import FeatureDistance, ModelActivations, distance, feature_layers, reference_distance
from mistered.models import Normalized


def _classifier() -> nn.Module:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 4, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(6 * 7 * 7, 16), nn.ReLU(), nn.Linear(16, 10))
    return Normalized(body, [0.1307], [0.3081]).eval()


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 14, 14, generator=torch.Generator().manual_seed(seed))


def _by_hand(activations_x: list[torch.Tensor], activations_y: list[torch.Tensor]) -> torch.Tensor:
    """Laidlaw et al.'s distance written out loop by loop, per example (float64)."""
    out = []
    for b in range(activations_x[0].shape[0]):
        total = 0.0
        for fx, fy in zip(activations_x, activations_y):
            fx, fy = fx[b].detach().double(), fy[b].detach().double()
            if fx.dim() == 1:
                fx, fy = fx[:, None, None], fy[:, None, None]
            height, width = fx.shape[1:]
            for i in range(height):
                for j in range(width):
                    nx = fx[:, i, j] / (fx[:, i, j].norm() + 1e-10)
                    ny = fy[:, i, j] / (fy[:, i, j].norm() + 1e-10)
                    total += float(((nx - ny) ** 2).sum()) / (height * width)
        out.append(math.sqrt(total))
    return torch.tensor(out, dtype=torch.float64)


def test_self_reads_every_relu_of_the_model_in_order():
    assert feature_layers(_classifier()) == ["net.1", "net.3", "net.6"]


def test_self_equals_laidlaw_et_al_written_out_by_hand():
    model = _classifier()
    x, y = _images(3, 1), _images(3, 2)
    body = model.net
    normalized = lambda v: (v - 0.1307) / 0.3081  # noqa: E731
    acts = []
    for images in (x, y):
        h1 = body[1](body[0](normalized(images)))
        h2 = body[3](body[2](h1))
        h3 = body[6](body[5](body[4](h2)))
        acts.append([h1, h2, h3])
    expected = _by_hand(*acts)
    torch.testing.assert_close(distance("lpips-self", x, y, features=model).double(), expected, atol=1e-5, rtol=1e-5)


def test_net_takes_a_users_extractor_returning_a_list_or_one_tensor():
    conv = nn.Conv2d(1, 3, 3)
    x, y = _images(2, 3), _images(2, 4)
    single = distance("lpips-net", x, y, features=conv)
    as_list = distance("lpips-net", x, y, features=nn.Sequential(conv, _AsList()))
    torch.testing.assert_close(single, as_list)
    torch.testing.assert_close(single.double(), _by_hand([conv(x)], [conv(y)]), atol=1e-5, rtol=1e-5)


class _AsList(nn.Module):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x]


def test_feature_distance_is_zero_for_identical_images_with_a_finite_gradient():
    model = _classifier()
    x = _images(2, 5).requires_grad_(True)
    value = distance("lpips-self", x, x.detach(), features=model)
    assert torch.equal(value, torch.zeros(2))
    value.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_reference_distance_computes_the_reference_features_once_and_agrees():
    model = _classifier()
    x, y = _images(4, 6), _images(4, 7)
    rows = torch.tensor([2, 0])
    measure = reference_distance("lpips-self", x, features=model)
    torch.testing.assert_close(measure(y, None), distance("lpips-self", x, y, features=model))
    torch.testing.assert_close(measure(y[rows], rows), distance("lpips-self", x[rows], y[rows], features=model))


def test_missing_network_is_one_error_saying_what_to_pass():
    with pytest.raises(InvalidInputError, match="lpips-self measures in the activations of the attacked model"):
        distance("lpips-self", _images(1, 8), _images(1, 9))
    with pytest.raises(InvalidInputError, match="--lpips-net file.py:Name"):
        distance("lpips-net", _images(1, 8), _images(1, 9))


def test_a_failing_extractor_is_one_error_quoting_its_first_line():
    wrong = nn.Conv2d(3, 4, 3)  # expects RGB
    with pytest.raises(InvalidInputError, match=r"fails on images of shape \(2, 1, 14, 14\): RuntimeError: .*channels"):
        distance("lpips-net", _images(2, 8), _images(2, 9), features=wrong)


@pytest.mark.parametrize("output", [lambda x: 3.0, lambda x: [], lambda x: x[0], lambda x: [x.flatten()]])
def test_an_extractor_returning_no_batch_of_features_is_one_error(output):
    class Odd(nn.Module):
        def forward(self, x):
            return output(x)

    with pytest.raises(InvalidInputError, match="must return a tensor or a list of tensors"):
        FeatureDistance(Odd())(_images(2, 1), _images(2, 2))


def test_a_model_without_activation_modules_is_refused_for_self():
    with pytest.raises(InvalidInputError, match="no activation module"):
        ModelActivations(nn.Sequential(nn.Flatten(), nn.Linear(196, 10)))
