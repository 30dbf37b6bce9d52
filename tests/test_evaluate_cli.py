"""``mistered evaluate``: a small run writes its outputs; bad input is one line and exit 2."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from click.testing import CliRunner

from mistered.cli import main
from mistered.models import build_model, save_model

SMALL = ["--model", "mnist-fc", "--n", "4", "--threats", "l2", "--eps", "l2=1", "--steps", "2", "--autoattack", "off",
         "--square-queries", "0", "--certify", "lmt"]


def _run(*args: str):
    return CliRunner().invoke(main, ["evaluate", *args])


def test_evaluate_writes_table_json_and_plots(tmp_path):
    result = _run(*SMALL, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "results.json").read_text())
    point = record["summary"]["points"][0]
    assert point["threat"] == "l2(1)" and point["certified"]["lmt"]["accuracy"] <= point["robust_accuracy"]
    assert "l2(1)" in result.output
    for name in ("robustness.png", "examples.png", "adversarial.pt"):
        assert (tmp_path / name).stat().st_size > 500


def test_resume_of_a_finished_run_gives_the_same_summary(tmp_path):
    assert _run(*SMALL, "--out", str(tmp_path)).exit_code == 0
    first = json.loads((tmp_path / "results.json").read_text())["summary"]
    result = _run(*SMALL, "--resume", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "results.json").read_text())["summary"] == first


@pytest.mark.parametrize("args, needle", [
    (["--eps", "linf=abc"], "--eps"),
    (["--eps", "l3=0.1"], "norm"),
    (["--threats", "nonsense"], "nonsense"),
    (["--n", "0"], "--n"),
    (["--certify", "magic"], "magic"),
    (["--steps", "0"], "--steps"),
])
def test_bad_input_is_one_error_line_and_exit_2(args, needle, tmp_path):
    result = _run(*args, "--out", str(tmp_path))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and needle in lines[0], result.output


def test_resume_of_a_folder_without_state_is_an_error(tmp_path):
    result = _run(*SMALL, "--resume", str(tmp_path / "missing"))
    assert result.exit_code == 2 and "no such folder" in result.output
    result = _run(*SMALL, "--resume", str(tmp_path))
    assert result.exit_code == 2 and "no saved evaluation" in result.output


def test_a_sanity_warning_is_printed_once(tmp_path, caplog):
    constant = build_model("mnist-fc")
    torch.nn.init.zeros_(constant[-1].weight)  # the same logits for every image
    path = save_model(tmp_path / "constant.pt", constant, "mnist-fc", {}, {})
    with caplog.at_level(logging.WARNING):
        result = _run(*SMALL, "--model", str(path), "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    warnings = json.loads((tmp_path / "run" / "results.json").read_text())["summary"]["warnings"]
    assert any("constant model" in w for w in warnings)
    assert result.output.count("constant model") == 1
    assert not [r for r in caplog.records if r.name == "mistered.evaluate.sanity"]


def test_a_spec_with_commas_is_one_threat_in_threat_and_in_the_deprecated_threats(tmp_path):
    quick = ["--model", "mnist-fc", "--n", "2", "--eps", "l2=1", "--steps", "1", "--autoattack", "off",
             "--square-queries", "0", "--certify", ""]
    for name, args in (("threat", ["--threat", "affine(10deg,0.1)", "--threat", "l2"]),
                       ("threats", ["--threats", "affine(10deg,0.1),l2"])):
        result = _run(*quick, *args, "--out", str(tmp_path / name))
        assert result.exit_code == 0, result.output
        points = json.loads((tmp_path / name / "results.json").read_text())["summary"]["points"]
        assert [p["entry"] for p in points] == ["affine(10deg,0.1)", "l2"]


def test_the_deprecated_geocert_names_warn_and_run_the_exact_search(tmp_path):
    base = ["--model", "mnist-fc", "--n", "2", "--threats", "linf", "--eps", "linf=0.05", "--steps", "2",
            "--autoattack", "off", "--square-queries", "0"]
    old = _run(*base, "--certify", "geocert", "--geocert-n", "1", "--geocert-time", "3", "--out", str(tmp_path / "old"))
    new = _run(*base, "--certify", "exact", "--exact-n", "1", "--exact-time", "3", "--out", str(tmp_path / "new"))
    assert old.exit_code == 0 and new.exit_code == 0, old.output + new.output
    assert "--certify geocert is deprecated" in old.output and "--geocert-n is deprecated" in old.output
    assert "is deprecated" not in new.output
    records = [json.loads((tmp_path / name / "results.json").read_text()) for name in ("old", "new")]
    assert [[c["method"] for c in r["summary"]["certifiers"]] for r in records] == [["exact"], ["exact"]]
    assert records[0]["settings"]["exact_n"] == records[1]["settings"]["exact_n"] == 1
