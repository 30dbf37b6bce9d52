"""Sharding: ``torchrun --nproc_per_node 2`` (gloo, CPU) gives attack and evaluate records identical to one
process's; the batches are dealt out round-robin and merged back in order."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from mistered.sharding import SINGLE, batch_positions, merge_batches, owned_batches, run_on_main, share_size

ATTACK = ["attack", "--model", "mnist-fc", "--threat", "linf", "--n", "7", "--batch-size", "2", "--steps", "3",
          "--restarts", "2"]
EVALUATE = ["evaluate", "--model", "mnist-fc", "--threat", "l2", "--threat", "linf(0.1)", "--eps", "l2=1", "--n", "5",
            "--batch-size", "2", "--steps", "2", "--autoattack", "fast", "--square-queries", "5", "--certify", "lmt"]


def test_batches_are_dealt_round_robin_and_cover_every_example_once():
    n, size, world = 11, 2, 3
    shares = [owned_batches(n, size, rank, world) for rank in range(world)]
    assert shares == [[0, 3], [1, 4], [2, 5]]
    positions = [p for rank in range(world) for p in batch_positions(shares[rank], n, size)]
    assert sorted(positions) == list(range(n))
    assert batch_positions([5], n, size) == [10]
    assert [share_size(n, size, type("G", (), {"rank": r, "world_size": world})()) for r in range(world)] == [4, 4, 3]


def test_merged_batches_are_in_order_and_a_gap_or_a_double_is_a_bug():
    assert merge_batches([{0: "a", 2: "c"}, {1: "b"}], 3) == ["a", "b", "c"]
    with pytest.raises(RuntimeError, match="no process"):
        merge_batches([{0: "a"}], 2)
    with pytest.raises(RuntimeError, match="two processes"):
        merge_batches([{0: "a"}, {0: "a"}], 1)


def test_work_on_the_main_process_runs_directly_in_one_process():
    assert run_on_main(lambda: 42, SINGLE) == 42


def _run(args: list[str], out, processes: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                "-m", "mistered", "--"] if processes > 1 else [sys.executable, "-m", "mistered"]
    done = subprocess.run([*launcher, *args, "--device", "cpu", "--out", str(out), "--quiet"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def _same_tensors(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_tensors(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.slow
@pytest.mark.parametrize("args", [ATTACK, EVALUATE], ids=["attack", "evaluate"])
def test_two_gloo_processes_give_the_record_of_one(args, tmp_path):
    one, two = _run(args, tmp_path / "one", 1), _run(args, tmp_path / "two", 2)
    assert one["summary"] == two["summary"] and one["examples"] == two["examples"]
    assert [row["index"] for row in two["examples"]] == list(range(len(two["examples"])))
    saved = [torch.load(tmp_path / name / "adversarial.pt", weights_only=True) for name in ("one", "two")]
    assert _same_tensors(*saved)
