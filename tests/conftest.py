"""Fixtures shared by several test files."""

import pytest

from mistered.certify import linf_dist_kernel


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
