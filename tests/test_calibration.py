"""Calibration: nearest-neighbour distributions, benign changes, the presets' budgets against the bundled digits, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from mistered.calibrate import calibrate, percentiles
from mistered.calibrate.pairwise import benign_changes, pairwise_distances
from mistered.calibrate.report import check_presets, preset_budgets
from mistered.data import load_dataset
from mistered.metrics import distance
from mistered.threats import PRESETS

#: The fixed subset the presets are checked on: the first bundled test digits.
SUBSET = 300


def _toy() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(8, 1, 4, 4, generator=g)
    images = torch.nn.functional.interpolate(coarse, size=(12, 12), mode="bilinear", align_corners=False)
    return images, torch.tensor([0, 0, 1, 1, 1, 2, 2, 0])


def test_nearest_neighbours_and_pairs_match_brute_force():
    images, labels = _toy()
    result = calibrate(images, labels, ["l2"])["l2"]
    n = images.shape[0]
    d = torch.tensor([[float(distance("l2", images[i:i + 1], images[j:j + 1])) for j in range(n)] for i in range(n)],
                     dtype=torch.float64)
    for i in range(n):
        other = [d[i, j] for j in range(n) if labels[j] != labels[i]]
        same = [d[i, j] for j in range(n) if labels[j] == labels[i] and j != i]
        assert float(result.nearest_different[i]) == pytest.approx(float(min(other)), rel=1e-5)
        assert float(result.nearest_same[i]) == pytest.approx(float(min(same)), rel=1e-5)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    assert result.same_pairs.numel() == sum(labels[i] == labels[j] for i, j in pairs)
    assert result.different_pairs.numel() == sum(labels[i] != labels[j] for i, j in pairs)
    assert result.largest_budget == pytest.approx(float(torch.quantile(result.nearest_different, 0.01)))


@pytest.mark.parametrize("metric", ["dssim", "lpips", "linf", "ms-dssim"])
def test_pairwise_matrix_equals_the_distance_of_each_pair(metric):
    images = load_dataset("mnist-5k", "test").images[:7]
    matrix = pairwise_distances(metric, images)
    rows, cols = torch.triu_indices(7, 7, offset=1)
    torch.testing.assert_close(matrix[rows, cols].float(), distance(metric, images[rows], images[cols]),
                               atol=1e-5, rtol=1e-4)
    assert torch.equal(matrix, matrix.T) and bool((matrix.diagonal() == 0).all())


def test_benign_half_pixel_shift_averages_neighbouring_pixels_and_brightness_scales():
    images = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    changes = benign_changes(images)
    shifted = changes["shift +0.5px x"]
    torch.testing.assert_close(shifted[..., :-1], (images[..., :-1] + images[..., 1:]) / 2, atol=1e-6, rtol=0)
    torch.testing.assert_close(changes["brightness -2%"], images * 0.98)
    assert float(changes["brightness +2%"].max()) <= 1.0


def test_similarities_are_measured_by_their_distance_and_say_so():
    images, labels = _toy()
    result = calibrate(images, labels, ["ssim"])["ssim"]
    assert result.metric == "dssim" and result.similarity == "ssim"
    summary = result.to_json()
    assert summary["smallest_similarity"] == pytest.approx(1 - result.largest_budget)


def test_percentiles_are_ordered():
    values = percentiles(torch.arange(101.0))
    assert values["p1"] == pytest.approx(1.0) and values["p50"] == pytest.approx(50.0) and values["max"] == 100.0


@pytest.fixture(scope="module")
def bundled() -> dict:
    data = load_dataset("mnist-5k", "test").subset(SUBSET)
    metrics = sorted({entry.metric for entry in preset_budgets()})
    return calibrate(data.images, data.labels, metrics)


def test_every_preset_budget_lies_below_the_first_percentile_of_nearest_other_class_digits(bundled):
    rows = check_presets(bundled, [name for name in PRESETS if not name.startswith("cifar-")])
    assert {row["preset"] for row in rows} >= {"linf", "linf-small", "l2", "combined"}
    for row in rows:
        assert row["below"], row


def test_the_combined_lpips_budget_allows_most_half_pixel_shifts(bundled):
    combined = next(b for b in preset_budgets(["combined"]) if b.metric == "lpips").budget
    assert float(torch.quantile(bundled["lpips"].benign_all, 0.5)) < combined


def test_too_few_classes_is_one_clear_error():
    from mistered.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="two different classes"):
        calibrate(torch.rand(3, 1, 12, 12), torch.zeros(3, dtype=torch.long), ["l2"])


# --- the command ----------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch):
    import mistered.cli as commands

    monkeypatch.setitem(commands._COMMANDS, "calibrate", ("mistered.cli.calibrate", "calibrate", "Calibrate budgets."))
    return lambda *args: CliRunner().invoke(commands.main, ["calibrate", *args])


def test_command_writes_a_table_results_json_and_a_histogram_png(cli, tmp_path):
    result = cli("--n", "60", "--metric", "lpips", "--metric", "ssim", "--metric", "l2", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "largest budget" in result.output and "preset combined: lpips <= 0.015" in result.output
    record = json.loads((tmp_path / "results.json").read_text())
    assert set(record["summary"]["metrics"]) == {"lpips", "ssim", "l2"}
    assert record["summary"]["metrics"]["ssim"]["metric"] == "dssim"
    assert (tmp_path / "histograms.png").stat().st_size > 10_000


@pytest.mark.parametrize("args, message", [
    (["--metric", "psnr"], "unknown distance 'psnr'"),
    (["--metric", "lpips-net"], "needs --lpips-net file.py:Name"),
    (["--n", "1"], "--n must be at least 2"),
])
def test_bad_options_are_one_error_line_and_exit_code_2(cli, tmp_path, args, message):
    result = cli(*args, "--out", str(tmp_path))
    assert result.exit_code == 2
    assert message in result.output and result.output.count("Error:") == 1


def test_a_users_feature_extractor_is_used_and_a_failing_one_is_one_error(cli, tmp_path):
    source = tmp_path / "feats.py"
    source.write_text("import torch.nn as nn\n"
                      "class Good(nn.Sequential):\n"
                      "    def __init__(self):\n"
                      "        super().__init__(nn.Conv2d(1, 4, 3), nn.ReLU())\n"
                      "class Bad(nn.Sequential):\n"
                      "    def __init__(self):\n"
                      "        super().__init__(nn.Conv2d(3, 4, 3), nn.ReLU())\n")
    good = cli("--n", "30", "--metric", "lpips-net", "--lpips-net", f"{source}:Good", "--out", str(tmp_path / "good"))
    assert good.exit_code == 0, good.output
    bad = cli("--n", "30", "--metric", "lpips-net", "--lpips-net", f"{source}:Bad", "--out", str(tmp_path / "bad"))
    assert bad.exit_code == 2 and "the feature extractor of lpips-net fails on images of shape" in bad.output


def test_calibrate_takes_the_shared_config_and_quiet_options(cli, tmp_path):
    config = tmp_path / "calibrate.yaml"
    config.write_text("n: 20\nmetric: [l2, linf]\nbatch-size: 8\n")
    result = cli("--config", str(config), "--quiet", "--out", str(tmp_path / "first"))
    assert result.exit_code == 0, result.output
    assert "calibrating" not in result.output  # no progress with --quiet
    record = json.loads((tmp_path / "first" / "results.json").read_text())
    assert record["settings"]["n"] == 20 and set(record["summary"]["metrics"]) == {"l2", "linf"}
    replay = cli("--config", str(tmp_path / "first" / "config.yaml"), "--n", "10", "--out", str(tmp_path / "second"))
    assert replay.exit_code == 0, replay.output
    assert "calibrating l2, linf on 10 images" in replay.output  # progress without --quiet
    second = json.loads((tmp_path / "second" / "results.json").read_text())
    assert second["settings"]["n"] == 10 and second["settings"]["metrics"] == ["l2", "linf"]  # the command line wins


def test_calibrate_config_with_an_unknown_key_is_one_error_line(cli, tmp_path):
    config = tmp_path / "calibrate.yaml"
    config.write_text("n: 20\nsteps: 3\n")
    result = cli("--config", str(config), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and result.output.count("Error:") == 1 and "unknown option(s) steps" in result.output
