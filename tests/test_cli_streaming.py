"""Streaming: every command reads its examples batch by batch (never the whole selection at once), each once."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from mistered.cli import main
from mistered.data.arrays import ArrayDataset

N, BATCH = 10, 4
COMMANDS = {
    "attack": ["--model", "mnist-fc", "--threat", "linf", "--steps", "1"],
    "evaluate": ["--model", "mnist-fc", "--threat", "linf", "--eps", "linf=0.1", "--steps", "1", "--autoattack", "off",
                 "--square-queries", "0", "--certify", "lmt"],
    "certify": ["--method", "lmt", "--model", "mnist-fc"],
    "lipschitz": ["--model", "mnist-fc", "--methods", "naive"],
}


@pytest.fixture
def reads(monkeypatch):
    """The number of images of every read from an .npz data set."""
    sizes: list[int] = []
    original = ArrayDataset.images_at

    def spy(self, index):
        sizes.append(int(index.numel()))
        return original(self, index)

    monkeypatch.setattr(ArrayDataset, "images_at", spy)
    return sizes


@pytest.mark.parametrize("command", COMMANDS)
def test_the_examples_stream_in_batches_and_are_read_once(command, reads, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(50, 28, 28, 1), dtype=np.uint8)  # no range check to read
    np.savez(tmp_path / "data.npz", images=images, labels=np.arange(50) % 10)
    args = [command, *COMMANDS[command], "--data", str(tmp_path / "data.npz"), "--n", str(N), "--batch-size",
            str(BATCH), "--quiet", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert reads == [4, 4, 2]
