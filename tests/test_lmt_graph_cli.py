"""``mistered train --method lmt`` and ``mistered certify --method lmt`` on a residual CNN with BatchNorm (the
registry's cifar-resnet: not an nn.Sequential), end to end on a small generated image folder."""

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from mistered.cli import main


def _image_folder(root):
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("test", 2)):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    return root


def test_lmt_trains_and_certifies_a_residual_batchnorm_cnn(tmp_path):
    images = _image_folder(tmp_path / "images")
    train = ["train", "--method", "lmt", "--model", "cifar-resnet", "--width", "4", "--data", str(images), "--epochs",
             "1", "--batch-size", "4", "--eval-n", "2", "--quiet", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, train)
    assert result.exit_code == 0, result.output
    certify = ["certify", "--method", "lmt", "--model", str(tmp_path / "run" / "model.pt"), "--data", str(images),
               "--n", "4", "--eps", "0.001,0.01", "--quiet", "--out", str(tmp_path / "cert")]
    result = CliRunner().invoke(main, certify)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "cert" / "results.json").read_text())["summary"]
    assert summary["lipschitz"] > 0 and set(summary["certified_accuracy"]) == {"0.001", "0.01"}
