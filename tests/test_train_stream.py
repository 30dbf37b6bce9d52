"""fit streams its data batch by batch: any labelled data set, the same weights as in memory, bad data refused."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from mistered.errors import InvalidInputError
from mistered.train import StandardObjective, TrainConfig, fit, held_out_accuracy
from mistered.train.distributed import DistContext, shard_indices


class Streamed:
    """A data set of the data contract that makes each 5x5 image when it is read and records every read."""

    def __init__(self, n: int = 30, bad: dict[int, torch.Tensor] | None = None, labels: torch.Tensor | None = None):
        self.name = "streamed"
        self.labels = labels if labels is not None else torch.arange(n) % 3
        self.bad = bad or {}
        self.reads: list[int] = []

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        self.reads.append(i)
        if i in self.bad:
            return self.bad[i], int(self.labels[i])
        image = torch.rand(1, 5, 5, generator=torch.Generator().manual_seed(i)) * 0.5
        return image + 0.25 * int(self.labels[i]), int(self.labels[i])


def _in_memory(data: Streamed) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([data[i][0] for i in range(len(data))]), data.labels.clone()


def _net() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Flatten(), nn.Linear(25, 8), nn.ReLU(), nn.Linear(8, 3))


CONFIG = TrainConfig(epochs=2, batch_size=8, lr=0.1, shift=1, eval_n=0)


def _fit(train, held_out=None, config=CONFIG, net=None):
    held_out = held_out if held_out is not None else train
    return fit(net if net is not None else _net(), StandardObjective(), train, held_out, config, progress=False)


def test_a_streamed_data_set_trains_to_the_same_weights_as_the_same_data_in_memory():
    streamed = _fit(Streamed())
    held = _fit(_in_memory(Streamed()))
    for a, b in zip(streamed.model.state_dict().values(), held.model.state_dict().values()):
        assert torch.equal(a, b)
    assert streamed.history == held.history


def test_an_npz_file_and_a_selection_of_it_stream_to_the_same_weights_as_in_memory(tmp_path):
    import numpy as np

    from mistered.data import load_dataset, materialize, select

    x, y = _in_memory(Streamed(40))
    np.savez(tmp_path / "data.npz", images=x.numpy(), labels=y.numpy())
    dataset = load_dataset(str(tmp_path / "data.npz"), "train")
    assert not hasattr(dataset, "images")  # read in place, a batch at a time
    picked = select(dataset, indices=list(range(5, 35)))
    streamed = _fit(dataset), _fit(picked)
    held = _fit((x, y)), _fit(materialize(picked))
    for a, b in zip(streamed, held):
        for u, v in zip(a.model.state_dict().values(), b.model.state_dict().values()):
            assert torch.equal(u, v)


def test_each_epoch_reads_every_training_example_once_one_batch_at_a_time():
    train, held_out = Streamed(30), Streamed(12)
    _fit(train, held_out)
    training_reads = train.reads[1:]  # the first read is the one-example check of the model's logits
    assert sorted(training_reads) == sorted(list(range(30)) * CONFIG.epochs)
    epoch_order = shard_indices(30, CONFIG.seed, 1, DistContext()).tolist()
    assert training_reads[30:] == epoch_order  # in the loop's seeded order, not the data set's


def test_float64_images_are_converted_to_the_models_dtype_and_train_the_same():
    x, y = _in_memory(Streamed())
    single = _fit((x, y))
    double = _fit((x.double(), y))
    for a, b in zip(single.model.state_dict().values(), double.model.state_dict().values()):
        assert torch.equal(a, b)


def test_held_out_accuracy_streams_a_data_set_and_can_take_its_first_n():
    data = Streamed(20)
    model = _fit(data).model
    x, y = _in_memory(Streamed(20))
    with torch.no_grad():
        right = (model(x).argmax(1) == y).double()
    assert held_out_accuracy(model, data) == float(right.mean())
    assert held_out_accuracy(model, data, n=7) == float(right[:7].mean())


@pytest.mark.parametrize("bad, message", [
    (torch.full((1, 5, 5), float("nan")), "NaN"),
    (torch.full((1, 5, 5), 2.0), r"must lie in \[0, 1\]"),
    (torch.rand(1, 4, 4), "of one shape"),
])
def test_a_bad_example_in_the_middle_of_the_data_is_one_clear_error(bad, message):
    with pytest.raises(InvalidInputError, match=message):
        _fit(Streamed(30, bad={13: bad}), Streamed(6))


def test_labels_the_model_has_no_logit_for_are_refused_before_training():
    data = Streamed(labels=torch.tensor([0, 1, 2, 5] * 3))
    with pytest.raises(InvalidInputError, match=r"labels of streamed must lie in \[0, 3\)"):
        _fit(data)
    assert len(data.reads) == 1


def test_a_model_that_cannot_take_the_images_is_one_clear_error():
    wrong = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with pytest.raises(InvalidInputError, match=r"cannot take the images of streamed \(shape \(1, 5, 5\)\)"):
        _fit(Streamed(), net=wrong)


@pytest.mark.parametrize("data, message", [
    ((torch.rand(0, 1, 5, 5), torch.zeros(0, dtype=torch.long)), "training set is empty"),
    ([1, 2, 3], "must be a LabeledDataset"),
])
def test_no_data_or_not_a_data_set_is_one_clear_error(data, message):
    with pytest.raises(InvalidInputError, match=message):
        _fit(data, Streamed(6))


_DDP_SCRIPT = textwrap.dedent('''
    import os, sys
    import torch
    from torch import nn
    from mistered.train import StandardObjective, TrainConfig, fit, init_distributed, shutdown_distributed

    class Streamed:
        name = "streamed"
        labels = torch.arange(21) % 3
        def __init__(self):
            self.reads = []
        def __len__(self):
            return 21
        def __getitem__(self, i):
            self.reads.append(i)
            image = torch.rand(1, 5, 5, generator=torch.Generator().manual_seed(i)) * 0.5
            return image + 0.25 * int(self.labels[i]), int(self.labels[i])

    ctx = init_distributed("cpu")
    torch.manual_seed(2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(25, 8), nn.ReLU(), nn.Linear(8, 3))
    data = Streamed()
    result = fit(net, StandardObjective(), data, Streamed(), TrainConfig(epochs=2, batch_size=4, eval_n=0),
                 sys.argv[1], ctx=ctx, progress=False)
    torch.save({"reads": torch.tensor(data.reads[1:]), "weights": result.model.state_dict()},
               os.path.join(sys.argv[1], f"rank{ctx.rank}.pt"))
    shutdown_distributed(ctx)
''')


def test_two_gloo_processes_each_stream_their_distributed_sampler_share(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               str(tmp_path / "run")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / "run" / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for rank, saved in enumerate(ranks):
        shares = [shard_indices(21, 0, epoch, DistContext(rank, 2)) for epoch in range(2)]
        assert torch.equal(saved["reads"], torch.cat(shares))  # 11 examples each (21 padded to 22), in order
    for a, b in zip(ranks[0]["weights"].values(), ranks[1]["weights"].values()):
        assert torch.equal(a, b)  # DDP kept the processes in step
