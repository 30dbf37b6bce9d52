"""Datasets: the bundled MNIST split, the IDX reader, the Debian Fashion-MNIST path, clear errors."""

import gzip
import hashlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mistered.data import LabeledImages, iterate_batches, load_dataset, read_idx, write_idx
from mistered.data.loaders import DEBIAN_FASHION_MNIST
from mistered.errors import DatasetNotFoundError, InvalidInputError

# SHA-256 of the test split's labels and pixels as shipped; a change means the "fixed" split moved.
_TEST_SPLIT_SHA256 = "f1892aee0e6617cf937c0cb75b18a2741d97d9d185c8e46562935f1f3ab8a2d1"


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist-5k", "train"), load_dataset("mnist-5k", "test")


def _rows(data: LabeledImages) -> set[bytes]:
    return {row.tobytes() for row in (data.images * 255).round().to(torch.uint8).flatten(1).numpy()}


def test_bundled_mnist_has_4000_train_and_1000_test_images_of_shape_1x28x28(mnist):
    train, test = mnist
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.labels.shape == (4000,) and test.labels.shape == (1000,)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert train.num_classes == test.num_classes == 10


def test_bundled_mnist_images_lie_in_unit_interval_and_use_it(mnist):
    for data in mnist:
        assert float(data.images.min()) == 0.0 and float(data.images.max()) == 1.0


def test_bundled_split_is_stratified_400_and_100_per_class(mnist):
    train, test = mnist
    assert torch.bincount(train.labels, minlength=10).tolist() == [400] * 10
    assert torch.bincount(test.labels, minlength=10).tolist() == [100] * 10


def test_bundled_split_train_and_test_images_are_disjoint(mnist):
    train, test = mnist
    assert not _rows(train) & _rows(test)


def test_bundled_split_is_fixed_across_loads(mnist):
    again = load_dataset("mnist-5k", "test")
    assert torch.equal(again.images, mnist[1].images) and torch.equal(again.labels, mnist[1].labels)


def test_bundled_test_split_matches_the_shipped_checksum(mnist):
    test = mnist[1]
    digest = hashlib.sha256(test.labels.numpy().tobytes() + (test.images * 255).round().byte().numpy().tobytes())
    assert digest.hexdigest() == _TEST_SPLIT_SHA256


def test_every_block_of_ten_holds_each_class_once(mnist):
    for data in mnist:
        blocks = data.labels.view(-1, 10).sort(dim=1).values
        assert torch.equal(blocks, torch.arange(10).expand_as(blocks))


def test_subset_takes_the_first_n_examples(mnist):
    test = mnist[1]
    small = test.subset(20)
    assert len(small) == 20 and torch.equal(small.images, test.images[:20]) and small.name == test.name


def test_iterate_batches_covers_every_example_once_when_shuffled():
    data = LabeledImages(torch.rand(23, 1, 2, 2), torch.arange(23), 23, "toy")
    batches = iterate_batches(data, 5, shuffle=True, generator=torch.Generator().manual_seed(1))
    seen = [y for _, ys in batches for y in ys]
    assert sorted(int(y) for y in seen) == list(range(23))


def test_iterate_batches_respects_the_batch_size():
    data = LabeledImages(torch.rand(23, 1, 2, 2), torch.arange(23), 23, "toy")
    assert [len(y) for _, y in iterate_batches(data, 10)] == [10, 10, 3]


def test_unknown_dataset_name_lists_the_valid_names():
    with pytest.raises(InvalidInputError, match="mnist-5k.*fashion-mnist.*cifar10"):
        load_dataset("imagenet")


def test_unknown_split_is_refused():
    with pytest.raises(InvalidInputError, match="split 'valid'"):
        load_dataset("mnist-5k", "valid")


def test_missing_torchvision_data_raises_dataset_not_found_saying_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="download=True"):
        load_dataset("mnist", root=tmp_path)


def test_missing_fashion_mnist_under_a_given_root_mentions_the_debian_package(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="dataset-fashion-mnist"):
        load_dataset("fashion-mnist", root=tmp_path)


@settings(max_examples=20, deadline=None)
@given(
    array=st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]).flatmap(
        lambda dtype: arrays(dtype, st.lists(st.integers(0, 5), min_size=1, max_size=3).map(tuple))
    ),
    compressed=st.booleans(),
)
def test_idx_write_then_read_round_trips(tmp_path_factory, array, compressed):
    path = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if compressed else "a.idx")
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_idx_reader_reads_a_hand_written_mnist_style_file(tmp_path):
    pixels = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 0x08, 3]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + (4).to_bytes(4, "big")
    path = tmp_path / "images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + pixels.tobytes()))
    np.testing.assert_array_equal(read_idx(path), pixels)


def test_idx_reader_refuses_a_truncated_file(tmp_path):
    path = tmp_path / "bad.idx"
    write_idx(path, np.zeros((4, 4), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(InvalidInputError, match="data bytes"):
        read_idx(path)


def test_idx_reader_refuses_a_file_with_a_bad_magic_number(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(InvalidInputError, match="magic"):
        read_idx(path)


# Justified skip: the Debian package needs root and apt, which the README's test command does not assume;
# the IDX reader it relies on is tested on generated files above.
@pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"Debian package dataset-fashion-mnist not installed ({DEBIAN_FASHION_MNIST} absent); "
    "apt-get install dataset-fashion-mnist to run this test",
)
def test_debian_fashion_mnist_test_split_loads_with_10000_labelled_images():
    data = load_dataset("fashion-mnist", "test")
    assert data.images.shape == (10000, 1, 28, 28) and data.images.dtype == torch.float32
    assert 0.0 <= float(data.images.min()) and float(data.images.max()) <= 1.0
    assert torch.bincount(data.labels, minlength=10).tolist() == [1000] * 10
