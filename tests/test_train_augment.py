"""Random-shift augmentation: every output image is its input translated by at most ``shift`` pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mistered.train.augment import random_shift


@settings(max_examples=15, deadline=None)
@given(shift=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_each_image_is_a_translation_of_its_input_within_the_shift(shift, seed):
    x = torch.rand(5, 2, 7, 6, generator=torch.Generator().manual_seed(seed))
    out = random_shift(x, shift, torch.Generator().manual_seed(seed))
    padded = F.pad(x, (shift,) * 4)
    for i in range(x.shape[0]):
        crops = [padded[i, :, dy : dy + 7, dx : dx + 6] for dy in range(2 * shift + 1) for dx in range(2 * shift + 1)]
        assert any(torch.equal(out[i], crop) for crop in crops)


def test_zero_shift_is_the_identity_and_draws_nothing():
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    x = torch.rand(2, 1, 4, 4)
    assert random_shift(x, 0, generator) is x
    assert torch.equal(generator.get_state(), state)
