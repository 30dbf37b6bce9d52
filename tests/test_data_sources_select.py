"""Selecting examples (--n, --indices), streaming them (make_loader, rank shards), materialize, the dataset base."""

import hashlib
import json
import pickle

import numpy as np
import pytest
import torch

from mistered.data import (
    DataSource,
    LabeledDataset,
    LabeledImages,
    Selection,
    indices_hash,
    iterate_batches,
    load_dataset,
    make_loader,
    materialize,
    select,
)
from mistered.errors import InvalidInputError


@pytest.fixture
def toy() -> LabeledImages:
    """13 examples whose label is their position, so batches show which examples they hold."""
    images = torch.rand(13, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    return LabeledImages(images, torch.arange(13), 13, "toy")


@pytest.fixture
def npz_data(tmp_path) -> LabeledDataset:
    pixels = np.random.default_rng(0).integers(0, 256, (13, 4, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=pixels, labels=np.arange(13))
    return load_dataset(tmp_path / "d.npz")


def _ids(batches) -> list[int]:
    return [int(y) for _, ys in batches for y in ys]


# ---------------------------------------------------------------- select


def test_select_n_takes_the_first_n(toy):
    chosen = select(toy, n=5)
    assert isinstance(chosen, Selection) and chosen.indices == [0, 1, 2, 3, 4] and chosen.parent is toy
    assert len(chosen) == 5 and chosen.labels.tolist() == [0, 1, 2, 3, 4] and chosen.notes == ()


def test_select_n_larger_than_the_dataset_uses_all_and_says_how_many(toy):
    chosen = select(toy, n=50)
    assert len(chosen) == 13 and chosen.notes == ("--n 50 is larger than the 13 examples: all 13 are used",)


def test_select_indices_keeps_their_order_and_n_cuts_them(toy):
    chosen = select(toy, n=2, indices=[7, 3, 9])
    assert chosen.indices == [7, 3] and torch.equal(materialize(chosen).images, toy.images[[7, 3]])


def test_select_of_a_selection_indexes_the_loaded_dataset(toy):
    inner = select(toy, indices=[10, 11, 12])
    outer = select(inner, indices=[2, 0])
    assert outer.parent is toy and outer.indices == [12, 10]


@pytest.mark.parametrize(
    ("indices", "words"),
    [
        ([1, -2, 3], "index -2 at position 1 is negative"),
        ([1, 13, -1], r"index 13 at position 1 is out of range for the 13 examples of toy \(0..12\)"),
        ([4, 2, 4, 2], "index 4 appears twice, at positions 0 and 2"),
        ([1, 2.5], "index 2.5 at position 1 is not an integer"),
        ([], "selection from toy is empty"),
    ],
    ids=["negative", "out-of-range", "duplicate", "float", "empty"],
)
def test_select_refuses_bad_indices_naming_the_first(toy, indices, words):
    with pytest.raises(InvalidInputError, match=words):
        select(toy, indices=indices)


@pytest.mark.parametrize("n", [0, -1, 2.0, True])
def test_select_refuses_n_that_is_not_a_positive_integer(toy, n):
    with pytest.raises(InvalidInputError, match="n must be a positive integer"):
        select(toy, n=n)


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("i.txt", lambda p: p.write_text("# chosen\n5\n\n2\n 8 \n")),
        ("i.json", lambda p: p.write_text(json.dumps([5, 2, 8]))),
        ("i.npy", lambda p: np.save(p, np.array([5, 2, 8], dtype=np.int32))),
    ],
    ids=["text", "json", "npy"],
)
def test_select_reads_indices_files(toy, tmp_path, name, write):
    write(tmp_path / name)
    assert select(toy, indices=tmp_path / name).indices == [5, 2, 8]
    assert select(toy, indices=str(tmp_path / name)).indices == [5, 2, 8]


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("i.txt", "1\nx\n", "i.txt: line 2 is not an integer: 'x'"),
        ("i.json", "[1, 2.0]", "entry 1 of the JSON list is not an integer"),
        ("i.json", "[1, 2", "not a valid JSON list"),
        ("i.txt", "# nothing\n", "selection from toy is empty"),
        ("i.txt", "3\n99\n", "index 99 at position 1 is out of range"),
    ],
    ids=["text", "json-float", "json-broken", "empty", "range"],
)
def test_select_refuses_bad_indices_files(toy, tmp_path, name, content, words):
    (tmp_path / name).write_text(content)
    with pytest.raises(InvalidInputError, match=words):
        select(toy, indices=tmp_path / name)


def test_select_refuses_a_missing_or_float_indices_file(toy, tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        select(toy, indices=tmp_path / "none.txt")
    np.save(tmp_path / "f.npy", np.array([1.0, 2.0]))
    with pytest.raises(InvalidInputError, match="1-D integer array"):
        select(toy, indices=tmp_path / "f.npy")


def test_indices_hash_is_sha256_of_little_endian_int64_and_depends_on_order():
    assert indices_hash([0, 1, 2]) == hashlib.sha256(b"".join(i.to_bytes(8, "little") for i in (0, 1, 2))).hexdigest()
    assert indices_hash([0, 1, 2]) != indices_hash([2, 1, 0]) and indices_hash(np.arange(3)) == indices_hash([0, 1, 2])


# ---------------------------------------------------------------- make_loader


def test_loader_batches_are_float32_images_and_int64_labels(npz_data):
    batches = list(make_loader(npz_data, 5))
    assert [len(y) for _, y in batches] == [5, 5, 3] and len(make_loader(npz_data, 5)) == 3
    x, y = batches[0]
    assert x.shape == (5, 3, 4, 4) and x.dtype == torch.float32 and y.dtype == torch.int64


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("world_size", [2, 3, 5])
def test_rank_shards_are_disjoint_cover_all_and_interleave_the_single_process_order(toy, shuffle, world_size):
    def loader(rank, world):
        return make_loader(toy, 2, shuffle=shuffle, generator=torch.Generator().manual_seed(3), rank=rank,
                           world_size=world)

    single = _ids(loader(0, 1))
    shards = [_ids(loader(r, world_size)) for r in range(world_size)]
    assert sorted(sum(shards, [])) == list(range(13))  # disjoint and complete: no padding
    for r, shard in enumerate(shards):
        assert shard == single[r::world_size]
    merged = [shards[i % world_size][i // world_size] for i in range(13)]
    assert merged == single


def test_shuffle_is_reproducible_with_a_seed_and_differs_between_seeds_and_epochs(toy):
    def epochs(seed):
        loader = make_loader(toy, 4, shuffle=True, generator=torch.Generator().manual_seed(seed))
        return _ids(loader), _ids(loader)

    first, second = epochs(0)
    assert (first, second) == epochs(0) and first != second and epochs(1)[0] != first
    assert sorted(first) == list(range(13))


def test_shuffle_matches_the_old_iterate_batches_order(toy):
    old = torch.randperm(13, generator=torch.Generator().manual_seed(1)).tolist()
    assert _ids(iterate_batches(toy, 5, shuffle=True, generator=torch.Generator().manual_seed(1))) == old


def test_a_rank_beyond_the_examples_gets_nothing(toy):
    small = select(toy, n=3)
    assert [_ids(make_loader(small, 2, rank=r, world_size=4)) for r in range(4)] == [[0], [1], [2], []]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"batch_size": 2, "rank": 2, "world_size": 2}, "rank must lie in"),
        ({"batch_size": 2, "shuffle": True, "rank": 0, "world_size": 2}, "seeded alike on every rank"),
    ],
    ids=["batch", "rank", "shuffle"],
)
def test_loader_refuses_bad_options(toy, kwargs, words):
    with pytest.raises(InvalidInputError, match=words):
        make_loader(toy, **kwargs)


def test_loader_streams_a_selection_of_a_file(npz_data):
    chosen = select(npz_data, indices=[12, 0, 5])
    x, y = next(iter(make_loader(chosen, 8)))
    assert y.tolist() == [12, 0, 5] and torch.equal(x, npz_data.get_batch([12, 0, 5])[0])


# ---------------------------------------------------------------- materialize, the base class


def test_materialize_holds_every_example_in_order(npz_data):
    whole = materialize(npz_data)
    assert isinstance(whole, LabeledImages) and whole.images.shape == (13, 3, 4, 4)
    assert torch.equal(whole.images, torch.stack([npz_data[i][0] for i in range(13)]))
    assert whole.source is npz_data.source and materialize(whole) is whole


def test_the_first_n_of_a_streamed_dataset_materialize_in_memory_with_images(npz_data):
    small = materialize(select(npz_data, n=4))
    assert isinstance(small, LabeledImages) and small.images.shape == (4, 3, 4, 4)
    assert small.labels.tolist() == [0, 1, 2, 3]


def test_getitem_gives_one_chw_image_and_an_int_label(npz_data):
    image, label = npz_data[-1]
    assert image.shape == (3, 4, 4) and label == 12 and isinstance(label, int)
    with pytest.raises(IndexError, match="out of range"):
        npz_data[13]


def test_get_batch_takes_lists_arrays_and_tensors_alike(npz_data):
    batches = [npz_data.get_batch(i) for i in ([4, 1], np.array([4, 1]), torch.tensor([4, 1]))]
    assert all(torch.equal(x, batches[0][0]) and y.tolist() == [4, 1] for x, y in batches)


def test_get_batch_refuses_an_out_of_range_index(npz_data):
    with pytest.raises(InvalidInputError, match="index 13 is out of range"):
        npz_data.get_batch([0, 13])


def test_labeled_images_is_a_labeled_dataset_with_a_memory_source(toy):
    assert isinstance(toy, LabeledDataset) and toy.sample_shape == (1, 2, 2)
    assert toy.source == DataSource("memory", "toy", "") and toy[2][1] == 2


def test_a_streamed_dataset_pickles_for_worker_processes(npz_data):
    npz_data.get_batch([0])  # opens the file
    again = pickle.loads(pickle.dumps(npz_data))
    assert torch.equal(again.get_batch([3, 4])[0], npz_data.get_batch([3, 4])[0])
    batches = torch.utils.data.DataLoader(again, batch_size=5)
    assert torch.equal(torch.cat([y for _, y in batches]), torch.arange(13))
