"""``mistered certify --method lmt|linf-dist``: bare commands on the bundled models, outputs, clear errors."""

import json

import pytest
from click.testing import CliRunner

from mistered.cli import main


@pytest.mark.parametrize("method, norm", [("lmt", "l2"), ("linf-dist", "linf")])
def test_bare_command_certifies_bundled_model_and_writes_outputs(tmp_path, method, norm):
    result = CliRunner().invoke(main, ["certify", "--method", method, "--n", "50", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["command"] == "certify" and record["norm"] == norm and record["summary"]["n"] == 50
    accuracies = list(record["summary"]["certified_accuracy"].values())
    assert accuracies == sorted(accuracies, reverse=True)  # certified accuracy cannot grow with eps
    assert 0 < accuracies[0] <= record["summary"]["clean_accuracy"]
    assert len(record["examples"]) == 50
    assert (tmp_path / "certified.png").stat().st_size > 0


def test_eps_list_is_honoured(tmp_path):
    result = CliRunner().invoke(main, ["certify", "--method", "linf-dist", "--n", "20", "--eps", "0.05,0.15", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert list(json.loads((tmp_path / "results.json").read_text())["summary"]["certified_accuracy"]) == ["0.05", "0.15"]


def test_linf_dist_on_the_bundled_cnn_fails_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["certify", "--method", "linf-dist", "--model", "mnist-cnn", "--n", "5", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "L∞-dist net" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_lmt_on_an_linf_dist_net_names_the_unsupported_layer(tmp_path):
    result = CliRunner().invoke(main, ["certify", "--method", "lmt", "--model", "mnist-linf-dist", "--n", "5", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "LinfDistNet" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["--eps", "0.1,abc"], ["--eps", "-1"], ["--n", "0"], ["--norm", "linf"]])
def test_bad_options_fail_in_one_line(tmp_path, args):
    result = CliRunner().invoke(main, ["certify", "--method", "lmt", *args, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.startswith("Error") and len(result.output.strip().splitlines()) == 1


def test_geocert_searches_give_the_same_exact_radii_and_are_recorded(tmp_path):
    records = {}
    for search in ("auto", "branch"):
        result = CliRunner().invoke(main, ["certify", "--method", "geocert", "--norm", "linf", "--n", "2",
                                           "--search", search, "--out", str(tmp_path / search)])
        assert result.exit_code == 0, result.output
        records[search] = json.loads((tmp_path / search / "results.json").read_text())
    assert records["auto"]["settings"]["search"] == "branch"  # auto picks branch and bound in L-inf
    assert [e["status"] for e in records["branch"]["examples"]] == ["exact", "exact"]
    assert [e["radius"] for e in records["auto"]["examples"]] == [e["radius"] for e in records["branch"]["examples"]]
    assert (tmp_path / "branch" / "radii.png").stat().st_size > 0


@pytest.mark.parametrize("choice,recorded", [([], "regions"), (["--search", "branch"], "branch")])
def test_the_geocert_alias_searches_regions_by_default_and_branch_on_request(tmp_path, choice, recorded):
    result = CliRunner().invoke(main, ["certify", "--method", "geocert", "--norm", "l2", "--n", "1",
                                       "--time-limit", "0.5", "--out", str(tmp_path), *choice])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["settings"]["search"] == recorded
    example = record["examples"][0]
    assert example["status"] in ("exact", "timeout") and example["radius"] <= example["upper"]


def test_unknown_geocert_search_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["certify", "--method", "geocert", "--search", "bfs", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "bfs" in result.output


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_bound_engine_methods_certify_any_norm_and_keep_the_record_format(tmp_path, method, norm):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["certify", "--method", method, "--norm", norm, "--n", "3", "--eps", "0.001",
                                       "--model", "mnist-fc", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    assert record["norm"] == norm and set(record["summary"]["certified_accuracy"]) == {"0.001"}


def test_bound_engine_names_an_unsupported_operation_and_its_source_line(tmp_path):
    (tmp_path / "net.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(784, 10)\n\n"
        "    def forward(self, x):\n        return torch.sigmoid(self.fc(x.flatten(1)))\n")
    result = CliRunner().invoke(main, ["certify", "--method", "crown", "--model", f"{tmp_path / 'net.py'}:Net",
                                       "--n", "2", "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 2 and "sigmoid" in result.output and "net.py:11" in result.output, result.output
