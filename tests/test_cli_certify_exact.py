"""``mistered certify --method exact --search regions|branch|mip``: names that say what runs, the deprecated
``--method geocert`` alias, one-line errors."""

import json

import pytest
from click.testing import CliRunner

from mistered.cli import main


def _run(tmp_path, *args):
    return CliRunner().invoke(main, ["certify", "--n", "1", "--time-limit", "2", "--out", str(tmp_path), *args])


@pytest.mark.parametrize("search", ["mip", "regions"])
def test_exact_records_the_search_that_ran(tmp_path, search):
    result = _run(tmp_path, "--method", "exact", "--norm", "linf", "--search", search)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["settings"]["method"] == "exact" and record["settings"]["search"] == search
    example = record["examples"][0]
    assert example["status"] in ("exact", "timeout") and example["radius"] <= example["upper"]


def test_exact_search_defaults_to_auto(tmp_path):
    result = _run(tmp_path, "--method", "exact", "--norm", "linf")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "results.json").read_text())["settings"]["search"] == "branch"


def test_geocert_warns_with_the_new_spelling_and_runs_regions(tmp_path):
    result = _run(tmp_path, "--method", "geocert", "--norm", "linf")
    assert result.exit_code == 0, result.output
    assert "--method exact --search regions" in result.output and "deprecated" in result.output
    assert json.loads((tmp_path / "results.json").read_text())["settings"]["search"] == "regions"


@pytest.mark.parametrize("args,match", [
    (["--method", "exact", "--norm", "l2", "--search", "mip"], "MIQP"),
    (["--method", "crown", "--search", "branch"], "--search applies to --method exact"),
    (["--method", "exact", "--eps", "0.1"], "--eps does not apply"),
])
def test_bad_exact_options_fail_in_one_line(tmp_path, args, match):
    result = _run(tmp_path, *args)
    assert result.exit_code == 2 and match in result.output
    assert len(result.output.strip().splitlines()) == 1
