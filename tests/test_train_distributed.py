"""``torchrun --nproc_per_node 2`` (gloo, CPU) trains with DDP; its model loads and evaluates; ranks agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from mistered.data import load_dataset
from mistered.models import accuracy, load_model
from mistered.train import load_checkpoint
from mistered.train.distributed import DistContext, shard_indices


def test_torchrun_two_processes_gloo_completes_and_its_model_loads_and_evaluates(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "mistered", "train", "--model", "mnist-fc", "--threat", "linf(0.1)", "--attack-steps", "2",
               "--n-train", "128", "--batch-size", "32", "--epochs", "1", "--eval-n", "16",
               "--device", "cpu", "--out", str(tmp_path), "--no-progress"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["settings"]["world_size"] == 2
    assert record["history"][0]["step"] == 2  # 128 examples / (2 processes x 32)
    assert len(load_checkpoint(tmp_path / "checkpoints" / "last.pt")["rng"]["torch"]) == 2
    model = load_model(str(tmp_path / "model.pt"))
    test = load_dataset("mnist-5k", "test")
    assert abs(accuracy(model, test) - record["summary"]["clean_acc"]) < 1e-6  # the trained weights, evaluated


def test_shards_of_an_epoch_cover_every_example_once_up_to_padding():
    n, world = 10, 3
    shards = [shard_indices(n, seed=4, epoch=2, ctx=DistContext(rank, world)) for rank in range(world)]
    assert all(len(s) == 4 for s in shards)
    assert set(torch.cat(shards).tolist()) == set(range(n))


def test_epoch_order_depends_on_seed_and_epoch_only():
    ctx = DistContext()
    assert torch.equal(shard_indices(50, 1, 3, ctx), shard_indices(50, 1, 3, ctx))
    assert not torch.equal(shard_indices(50, 1, 3, ctx), shard_indices(50, 1, 4, ctx))
