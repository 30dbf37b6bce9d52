"""Fixtures shared by several test files."""

import os

import pytest
from hypothesis import settings

from mistered.models.linf_dist import kernel as linf_dist_kernel

# The default run (and CI) draws the same examples every time, so a red run is reproducible and a green one is not
# luck; `MISTERED_HYPOTHESIS=explore pytest` draws fresh examples on every run to hunt for new counterexamples.
settings.register_profile("deterministic", derandomize=True, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile(os.environ.get("MISTERED_HYPOTHESIS", "deterministic"))


@pytest.fixture
def compiled_calls(monkeypatch):
    """Shapes ``(B, in, out)`` of the calls the compiled kernel answered (a fallback to eager is not counted)."""
    calls = []
    original = linf_dist_kernel._compiled_max_abs_diff

    def spy(x, w):
        result = original(x, w)
        if result is not None:
            calls.append((x.shape[0], x.shape[1], w.shape[0]))
        return result

    monkeypatch.setattr(linf_dist_kernel, "_compiled_max_abs_diff", spy)
    return calls
