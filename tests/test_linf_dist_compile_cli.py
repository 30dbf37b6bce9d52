"""``--compile/--no-compile``: on by default for ``mistered train``, opt-in for ``certify`` and ``evaluate``; same results."""

import json
import shutil

import pytest
from click.testing import CliRunner

from mistered.models.linf_dist import nets as linf_dist_nets
from mistered.models.linf_dist.nets import LinfDistNet
from mistered.cli import main
from mistered.io import safe_torch_load


@pytest.fixture
def switched(monkeypatch):
    """``(model class, enabled)`` of every call of ``set_linf_dist_compiled`` (which still runs)."""
    calls = []
    original = linf_dist_nets.set_linf_dist_compiled

    def spy(model, enabled):
        calls.append((type(model), enabled))
        return original(model, enabled)

    monkeypatch.setattr(linf_dist_nets, "set_linf_dist_compiled", spy)
    return calls


# Justified skip: without a C++ compiler the command falls back to the eager kernel (tested in
# test_linf_dist_kernel.py); this test checks that the compiled kernel really runs with --compile.
@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler")
def test_certify_with_compile_uses_the_compiled_kernel_and_gives_the_eager_radii(tmp_path, compiled_calls):
    args = ["certify", "--method", "linf-dist", "--n", "30", "--batch-size", "16"]
    compiled = CliRunner().invoke(main, [*args, "--compile", "--out", str(tmp_path / "compiled")])
    assert compiled.exit_code == 0, compiled.output
    assert {call[0] for call in compiled_calls} == {16, 14}  # every layer of both batches (16 and the partial 14) ran compiled
    compiled_calls.clear()
    eager = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "eager")])  # the default: eager
    assert eager.exit_code == 0, eager.output
    assert compiled_calls == []
    records = [json.loads((tmp_path / name / "results.json").read_text()) for name in ("compiled", "eager")]
    assert [r["settings"]["compile"] for r in records] == [True, False]
    radii = [[e["radius"] for e in r["examples"]] for r in records]
    assert radii[0] == radii[1]


@pytest.mark.parametrize("flag, enabled", [([], True), (["--no-compile"], False)])
def test_train_switches_the_linf_dist_layers_and_saves_no_flag(tmp_path, switched, flag, enabled):
    result = CliRunner().invoke(main, [
        "train", "--method", "linf-dist", "--width", "8", "--depth", "2", "--n-train", "32", "--batch-size", "16",
        "--epochs", "1", "--eval-n", "0", "--device", "cpu", "--no-progress", *flag, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert switched == [(LinfDistNet, enabled)]
    saved = safe_torch_load(tmp_path / "model.pt")
    assert "compile" not in saved["meta"] and not any("compiled" in key for key in saved["state_dict"])


@pytest.mark.parametrize("flag, enabled", [([], False), (["--compile"], True)])
def test_evaluate_passes_its_compile_choice_to_the_model(tmp_path, switched, flag, enabled):
    result = CliRunner().invoke(main, [
        "evaluate", "--model", "mnist-linf-dist", "--n", "2", "--threats", "linf", "--eps", "linf=0.1",
        "--certify", "linf-dist", "--steps", "1", "--autoattack", "off", "--square-queries", "0", *flag,
        "--device", "cpu", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert switched == [(LinfDistNet, enabled)]
