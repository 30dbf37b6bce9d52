"""Benchmark folders (VNN-COMP 2021 and 2022+ layouts, gzip'd files), ``mistered verify`` in its three forms, the
results.csv / score / resume of a benchmark run, and sharding over two torchrun processes (gloo, CPU)."""

import csv
import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from _verify_nets import export_onnx, grid_min, mlp, vnnlib
from mistered import cli
from mistered.certify.verify import find_instances, read_expected
from mistered.errors import InvalidInputError

LOWER, UPPER = [-1.0, -0.5], [1.0, 1.5]
COMMAND = ("mistered.cli.verify", "verify", "Verify properties.")  # the line mistered/cli/__init__.py gains
STATUSES = ["sat", "unsat", "timeout", "sat"]


@pytest.fixture
def main(monkeypatch):
    monkeypatch.setitem(cli._COMMANDS, "verify", COMMAND)
    return cli.main


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A 2022-layout benchmark: a gzip'd model and a fixed-batch one, a gzip'd property; answers sat, unsat, timeout
    (holds, but no bound proves it), and a sat whose expected answer in expected.csv is wrong."""
    root = tmp_path_factory.mktemp("bench")
    folder = root / "bench"
    (folder / "onnx").mkdir(parents=True)
    (folder / "vnnlib").mkdir()
    net = mlp([2, 32, 32, 2], seed=0)
    export_onnx(net, root / "a.onnx", (2,))
    (folder / "onnx" / "a.onnx.gz").write_bytes(gzip.compress((root / "a.onnx").read_bytes()))
    export_onnx(net, folder / "onnx" / "b.onnx", (2,), dynamic=False)
    best = grid_min(net, LOWER, UPPER, torch.tensor([1.0, -1.0]))
    for name, c in (("sat", best + 0.3), ("unsat", best - 3.0), ("hard", best - 1e-4)):
        text = vnnlib(LOWER, UPPER, 2, [[f"(<= (- Y_0 Y_1) {c!r})"]])
        if name == "unsat":
            (folder / "vnnlib" / "unsat.vnnlib.gz").write_bytes(gzip.compress(text.encode()))
        else:
            (folder / "vnnlib" / f"{name}.vnnlib").write_text(text)
    (folder / "instances.csv").write_text("onnx/a.onnx,vnnlib/sat.vnnlib,20\nonnx/a.onnx,vnnlib/unsat.vnnlib,20\n"
                                          "onnx/a.onnx,vnnlib/hard.vnnlib,1\n\nonnx/b.onnx,vnnlib/sat.vnnlib,20\n")
    (root / "expected.csv").write_text("model,property,answer\n./bench/a.onnx,sat.vnnlib,sat\na.onnx,unsat.vnnlib,"
                                       "holds\na.onnx,hard.vnnlib,unsat\nb.onnx,sat.vnnlib,unsat\n")
    return folder


def _snapshot(folder):
    return sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def _statuses(out):
    return [row["status"] for row in csv.DictReader((out / "results.csv").open())]


def test_the_2022_layout_finds_every_instance_gzipped_or_not(bench):
    instances = find_instances(bench)
    assert [(i.model, i.property, i.timeout) for i in instances] == [
        ("onnx/a.onnx", "vnnlib/sat.vnnlib", 20.0), ("onnx/a.onnx", "vnnlib/unsat.vnnlib", 20.0),
        ("onnx/a.onnx", "vnnlib/hard.vnnlib", 1.0), ("onnx/b.onnx", "vnnlib/sat.vnnlib", 20.0)]
    assert instances[0].model_path.name == "a.onnx.gz" and instances[1].property_path.name == "unsat.vnnlib.gz"
    assert find_instances(bench / "instances.csv")[3].index == 3


def test_the_2021_flat_layout_reads_every_name_instances_csv(tmp_path):
    for name in ("n.onnx", "p.vnnlib", "q.vnnlib"):
        (tmp_path / name).write_text("x")
    (tmp_path / "a_instances.csv").write_text("n.onnx,p.vnnlib,120\n")
    (tmp_path / "b_instances.csv").write_text("n.onnx,q.vnnlib,300\n")
    assert [(i.index, i.property, i.timeout) for i in find_instances(tmp_path)] == [(0, "p.vnnlib", 120.0),
                                                                                     (1, "q.vnnlib", 300.0)]


@pytest.mark.parametrize("csv_text, message", [
    (None, "not a VNN-COMP benchmark folder"),
    ("n.onnx,p.vnnlib\n", "instances.csv:1: expected 'model,property,timeout'"),
    ("n.onnx,p.vnnlib,abc\n", "instances.csv:1: the timeout 'abc' is not a number"),
    ("n.onnx,p.vnnlib,120\nn.onnx,p.vnnlib,-1\n", "instances.csv:2: the timeout must be positive"),
    ("n.onnx,missing.vnnlib,120\n", "missing.vnnlib is not in"),
])
def test_bad_benchmark_folders_are_one_clear_error(tmp_path, csv_text, message):
    (tmp_path / "n.onnx").write_text("x")
    (tmp_path / "p.vnnlib").write_text("x")
    if csv_text is not None:
        (tmp_path / "instances.csv").write_text(csv_text)
    with pytest.raises(InvalidInputError, match=message):
        find_instances(tmp_path)


def test_expected_answers_match_by_file_name_and_read_2021_words(bench):
    expected = read_expected(bench.parent / "expected.csv")
    assert expected == {("a.onnx", "sat.vnnlib"): "sat", ("a.onnx", "unsat.vnnlib"): "unsat",
                        ("a.onnx", "hard.vnnlib"): "unsat", ("b.onnx", "sat.vnnlib"): "unsat"}


def test_a_benchmark_run_writes_results_summary_and_score_and_leaves_the_benchmark_untouched(main, bench, tmp_path):
    before = _snapshot(bench)
    out = tmp_path / "run"
    args = ["verify", "--benchmark", str(bench), "--expected", str(bench.parent / "expected.csv"), "--out", str(out)]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    assert _snapshot(bench) == before
    assert _statuses(out) == STATUSES
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert (summary["verified"], summary["falsified"], summary["timeout"], summary["wrong"]) == (1, 2, 1, 1)
    assert summary["score"] == 10 + 10 + 0 - 150
    assert (out / "instances" / "0000-a-sat.txt").read_text().startswith("sat\n((X_0 ")
    assert (out / "instances" / "0001-a-unsat.txt").read_text() == "unsat\n"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert rows[3]["wrong"] == "True" and "expected answer looks wrong" in rows[3]["message"]
    assert float(rows[2]["timeout"]) == 1.0 and float(rows[2]["lower_bound"]) < 0 < float(rows[2]["upper_bound"])

    (out / "instances" / "0001-a-unsat.json").unlink()  # as if interrupted before instance 1 was written
    resumed = CliRunner().invoke(main, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "[2/4]" in resumed.output and "[1/4]" not in resumed.output and "[3/4]" not in resumed.output
    assert _statuses(out) == STATUSES

    other = CliRunner().invoke(main, [*args, "--resume", "--timeout", "5"])
    assert other.exit_code == 2 and "other settings (instances, timeout_cap)" in other.output


def test_two_torchrun_processes_share_the_instances_and_merge_their_results(bench, tmp_path):
    launcher = tmp_path / "launch.py"
    launcher.write_text(f"from mistered import cli\ncli._COMMANDS['verify'] = {COMMAND!r}\ncli.main()\n")
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(launcher),
               "verify", "--benchmark", str(bench), "--device", "cpu", "--out", str(out), "--quiet"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _statuses(out) == STATUSES
    record = json.loads((out / "results.json").read_text())
    assert record["settings"]["world_size"] == 2 and len(list((out / "instances").glob("*.json"))) == 4 + 1


def test_one_instance_writes_the_result_file_and_the_record_beside_it(main, bench, tmp_path):
    shutil.copy(bench / "onnx" / "b.onnx", tmp_path / "b.onnx")
    out = tmp_path / "res" / "result.txt"
    done = CliRunner().invoke(main, ["verify", str(bench / "onnx" / "a.onnx.gz"), str(bench / "vnnlib" / "sat.vnnlib"),
                                     "--timeout", "20", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines()[0] == "sat" and out.read_text().startswith("sat\n")
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["command"] == "verify" and record["summary"]["status"] == "sat"
    assert record["summary"]["counterexample"]["checks"].keys() == {"torch", "onnxruntime"}
    assert record["inputs"]["property"]["sha256"]


@pytest.mark.parametrize("args, message", [
    (["{bad}"], "bad.vnnlib:3:17: unknown name 'Q'"),
    (["{sat}", "--out", "{tmp}"], "--out names the result file"),
    (["{sat}", "--eps", "0.1"], "drop --eps/--model"),
    (["{sat}", "--resume"], "--resume applies to"),
    (["--expected", "{sat}"], "--expected scores a --benchmark run"),
    (["{sat}", "--timeout", "-1"], "--timeout must be positive seconds"),
])
def test_mistakes_on_the_command_line_are_one_error_line(main, bench, tmp_path, args, message):
    (tmp_path / "bad.vnnlib").write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= Y_0 Q))\n")
    names = {"bad": str(tmp_path / "bad.vnnlib"), "sat": str(bench / "vnnlib" / "sat.vnnlib"), "tmp": str(tmp_path)}
    filled = [a.format(**names) for a in args]
    done = CliRunner().invoke(main, ["verify", str(bench / "onnx" / "b.onnx"), *filled])
    assert done.exit_code == 2 and message in done.output
    assert len(done.output.strip().splitlines()) == 1 and "Traceback" not in done.output


def test_eps_on_data_examples_runs_the_same_engine(main, tmp_path):
    out = tmp_path / "run"
    done = CliRunner().invoke(main, ["verify", "--model", "mnist-fc", "--eps", "0.001,0.3", "--n", "2", "--timeout",
                                     "10", "--out", str(out), "--quiet"])
    assert done.exit_code == 0, done.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["property"].split(" linf")[0] for r in rows] == ["example 0", "example 1"] * 2
    assert all(r["status"] == "unsat" for r in rows[:2]) and all(r["status"] == "sat" for r in rows[2:])
    assert json.loads((out / "results.json").read_text())["inputs"]["model"]["spec"] == "mnist-fc"
