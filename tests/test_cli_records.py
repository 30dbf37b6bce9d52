"""Records a user can trust: the out folder is checked before any work and never overwritten silently; default
folders are unique; results.json says where the model and data came from; attack saves adversarial.pt."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest
import torch
from click.testing import CliRunner

import mistered.attacks
from mistered.cli import main
from mistered.data import indices_hash
from mistered.models import build_model, load_model
from mistered.results import default_out_dir, git_info, prepare_out_dir
from mistered.errors import InvalidInputError

QUICK = ["--model", "mnist-fc", "--threat", "linf", "--n", "5", "--steps", "2", "--batch-size", "2", "--quiet"]


def _attack(*args: str):
    return CliRunner().invoke(main, ["attack", *QUICK, *args])


@pytest.fixture
def no_attack(monkeypatch):
    """Fail the test if an attack is built: the checks under test must come before any work."""
    def refuse(*args, **kwargs):
        raise AssertionError("the attack was built before the out folder was checked")

    monkeypatch.setattr(mistered.attacks, "build_attack", refuse)


def _one_error_line(result, needle: str) -> None:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert needle in lines[0], result.output


@pytest.mark.parametrize("command", ["attack", "evaluate", "certify", "lipschitz", "train"])
def test_an_out_path_that_is_a_file_is_one_error_before_any_work(tmp_path, no_attack, command):
    path = tmp_path / "results.txt"
    path.write_text("keep me")
    _one_error_line(CliRunner().invoke(main, [command, "--out", str(path)]), "is a file")
    assert path.read_text() == "keep me"


def test_an_unwritable_out_folder_is_one_error_before_any_work(tmp_path, no_attack):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(folder, os.W_OK):  # root writes anywhere: use a folder the kernel keeps read-only
            if not os.path.isdir("/sys"):
                # Justified skip: as root with no /sys there is no folder this process cannot write to
                pytest.skip("running as root without a read-only file system to test with")
            folder = "/sys"
        _one_error_line(_attack("--out", str(folder)), "cannot be written")
    finally:
        (tmp_path / "read-only").chmod(stat.S_IRWXU)


def test_an_out_folder_inside_a_file_is_one_error(tmp_path, no_attack):
    (tmp_path / "file").write_text("")
    _one_error_line(_attack("--out", str(tmp_path / "file" / "out")), "cannot be written")


def test_an_existing_run_is_never_overwritten_without_resume(tmp_path, no_attack):
    (tmp_path / "results.json").write_text('{"mine": true}')
    _one_error_line(_attack("--out", str(tmp_path)), "already holds files")
    assert json.loads((tmp_path / "results.json").read_text()) == {"mine": True}


def test_default_out_folders_of_runs_started_in_the_same_second_differ(tmp_path):
    folders = {default_out_dir("attack", root=tmp_path) for _ in range(20)}
    assert len(folders) == 20 and all(f.is_dir() for f in folders)
    with pytest.raises(InvalidInputError, match="--resume needs"):
        prepare_out_dir(None, "attack", resume=True)


def test_two_cli_runs_without_out_write_two_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert _attack().exit_code == 0
    runs = sorted((tmp_path / "mistered-out").iterdir())
    assert len(runs) == 2 and all((r / "results.json").is_file() for r in runs)


def test_a_failed_run_leaves_no_empty_default_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _one_error_line(_attack("--data", "no-such-data"), "no-such-data")
    assert not list((tmp_path / "mistered-out").iterdir())


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    """An attack on a user checkpoint, on chosen indices, with a normalisation folded in."""
    folder = tmp_path_factory.mktemp("records")
    torch.manual_seed(0)
    weights = folder / "weights.pt"
    torch.save(build_model("mnist-fc").state_dict(), weights)
    indices = folder / "indices.txt"
    indices.write_text("7\n3\n11\n2\n5\n")
    out = folder / "run"
    result = CliRunner().invoke(main, ["attack", *QUICK, "--weights", str(weights), "--indices", str(indices),
                                       "--mean", "0.1", "--std", "0.9", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, weights, [7, 3, 11, 2, 5]


def test_results_record_the_model_source_and_its_sha256(attacked):
    out, weights, _ = attacked
    model = json.loads((out / "results.json").read_text())["inputs"]["model"]
    assert model["spec"] == "mnist-fc" and model["weights"] == str(weights)
    assert model["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert model["mean"] == [0.1] and model["std"] == [0.9]


def test_results_record_the_data_source_and_the_hash_of_the_selected_indices(attacked):
    out, _, indices = attacked
    record = json.loads((out / "results.json").read_text())
    assert record["inputs"]["data"]["spec"] == "mnist-5k" and record["inputs"]["data"]["split"] == "test"
    assert record["inputs"]["indices_sha256"] == indices_hash(indices) and record["inputs"]["n"] == 5
    assert [row["index"] for row in record["examples"]] == indices


def test_results_record_git_commit_versions_and_device(attacked):
    record = json.loads((attacked[0] / "results.json").read_text())
    assert record["git"] == git_info()
    if record["git"] is not None:  # run from a checkout
        assert len(record["git"]["commit"]) == 40 and isinstance(record["git"]["dirty"], bool)
    assert record["versions"]["torch"] == torch.__version__ and record["device"]["name"].startswith("cpu")


def test_attack_saves_adversarial_examples_that_reproduce_the_record(attacked):
    out, weights, indices = attacked
    saved = torch.load(out / "adversarial.pt", weights_only=True)
    record = json.loads((out / "results.json").read_text())
    assert saved["indices"].tolist() == indices
    model = load_model("mnist-fc", weights=weights, mean=[0.1], std=[0.9])
    with torch.no_grad():
        predictions = model(saved["x_adv"]).argmax(dim=1)
    assert torch.equal(predictions, saved["adversarial_predictions"])
    assert predictions.tolist() == [row["adversarial_prediction"] for row in record["examples"]]
    assert saved["labels"].tolist() == [row["label"] for row in record["examples"]]
    assert saved["clean_predictions"].tolist() == [row["clean_prediction"] for row in record["examples"]]
    assert bool(((saved["x_adv"] >= 0) & (saved["x_adv"] <= 1)).all())


def test_an_interrupted_attack_resumes_to_the_same_record(tmp_path, monkeypatch):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert _attack("--out", str(whole)).exit_code == 0
    from mistered.evaluate.state import RunState

    original, saved = RunState.save, []

    def save_then_stop(self, key, value):
        original(self, key, value)
        saved.append(key)
        if len(saved) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunState, "save", save_then_stop)
    assert _attack("--out", str(cut)).exit_code != 0
    monkeypatch.setattr(RunState, "save", original)
    result = _attack("--out", str(cut), "--resume")
    assert result.exit_code == 0, result.output
    first, second = (json.loads((d / "results.json").read_text()) for d in (whole, cut))
    assert first["summary"] == second["summary"] and first["examples"] == second["examples"]
    _one_error_line(_attack("--steps", "3", "--resume", str(cut)), "different settings")
