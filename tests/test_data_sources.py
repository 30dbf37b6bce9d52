"""Data from anywhere: .npz, .pt, image folders and torchvision names, each format and each way it can be refused."""

import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from mistered._compat import import_torchvision
from mistered.data import LabeledDataset, LabeledImages, load_dataset, materialize, write_idx
from mistered.data.npz import StoredArray
from mistered.errors import DatasetNotFoundError, InvalidInputError


class Payload:
    """An object ``torch.load(weights_only=True)`` must refuse."""


def _pixels(n=12, shape=(8, 8, 3), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _labels(n=12, k=3) -> np.ndarray:
    return np.arange(n) % k


def _chw(hwc: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, C)`` -> the float32 ``(N, C, H, W)`` a loader must return."""
    return torch.from_numpy(hwc).permute(0, 3, 1, 2).float() / 255


def _all(dataset: LabeledDataset) -> torch.Tensor:
    return materialize(dataset).images


def _npz(path, compressed=False, **arrays):
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


# ---------------------------------------------------------------- npz


def test_npz_uint8_hwc_is_scaled_transposed_and_said(tmp_path):
    pixels = _pixels()
    data = load_dataset(_npz(tmp_path / "d.npz", images=pixels, labels=_labels()))
    assert isinstance(data, LabeledDataset) and len(data) == 12 and data.sample_shape == (3, 8, 8)
    assert data.num_classes == 3 and data.labels.dtype == torch.int64
    assert torch.equal(_all(data), _chw(pixels))
    assert data.source.kind == "npz" and any("uint8 HWC detected, scaled by 1/255" in n for n in data.source.notes)


def test_npz_uint8_nhw_becomes_one_channel(tmp_path):
    pixels = _pixels(shape=(8, 8))
    data = load_dataset(_npz(tmp_path / "d.npz", x=pixels, y=_labels()))
    assert data.sample_shape == (1, 8, 8) and torch.equal(_all(data), _chw(pixels[..., None]))
    assert any("uint8 HW detected" in n for n in data.source.notes)


def test_npz_uint8_nchw_is_detected_by_its_channel_count(tmp_path):
    pixels = _pixels()
    data = load_dataset(_npz(tmp_path / "d.npz", images=pixels.transpose(0, 3, 1, 2), labels=_labels()))
    assert torch.equal(_all(data), _chw(pixels)) and any("uint8 CHW" in n for n in data.source.notes)


def test_npz_float_chw_in_unit_interval_is_used_as_is(tmp_path):
    images = np.random.default_rng(1).random((12, 3, 8, 8), dtype=np.float32)
    data = load_dataset(_npz(tmp_path / "d.npz", images=images, labels=_labels()))
    assert torch.equal(_all(data), torch.from_numpy(images)) and any("float32 CHW" in n for n in data.source.notes)


def test_npz_float_hwc_is_detected_by_its_channel_count(tmp_path):
    images = np.random.default_rng(1).random((12, 8, 8, 3), dtype=np.float32)
    data = load_dataset(_npz(tmp_path / "d.npz", images=images, labels=_labels()))
    assert torch.equal(_all(data), torch.from_numpy(images).permute(0, 3, 1, 2))
    assert any("float32 HWC" in n for n in data.source.notes)


def test_npz_float64_becomes_float32_and_says_so(tmp_path):
    images = np.random.default_rng(1).random((12, 3, 8, 8))
    data = load_dataset(_npz(tmp_path / "d.npz", images=images, labels=_labels()))
    assert _all(data).dtype == torch.float32 and torch.equal(_all(data), torch.from_numpy(images).float())
    assert any("converted to float32" in n for n in data.source.notes)


def test_npz_big_endian_floats_are_read(tmp_path):
    images = np.random.default_rng(1).random((12, 3, 8, 8), dtype=np.float32)
    data = load_dataset(_npz(tmp_path / "d.npz", images=images.astype(">f4"), labels=_labels()))
    assert torch.equal(_all(data), torch.from_numpy(images))


def test_npz_ambiguous_channel_axis_is_resolved_and_said(tmp_path):
    pixels = _pixels(shape=(3, 3, 3))
    data = load_dataset(_npz(tmp_path / "d.npz", images=pixels, labels=_labels()))
    assert torch.equal(_all(data), _chw(pixels)) and any("HWC assumed" in n for n in data.source.notes)


@pytest.mark.parametrize("keys", [("images", "labels"), ("x", "y"), ("X", "Y"), ("data", "targets")])
def test_npz_accepts_the_usual_key_names(tmp_path, keys):
    data = load_dataset(_npz(tmp_path / "d.npz", **{keys[0]: _pixels(), keys[1]: _labels()}))
    assert len(data) == 12 and any(f"from {keys[0]!r}" in n for n in data.source.notes)


def test_npz_split_specific_keys_pick_the_split(tmp_path):
    path = _npz(tmp_path / "d.npz", x_train=_pixels(10), y_train=_labels(10), x_test=_pixels(4, seed=2),
                y_test=_labels(4))
    train, test = load_dataset(path, "train"), load_dataset(path, "test")
    assert (len(train), len(test)) == (10, 4) and torch.equal(_all(test), _chw(_pixels(4, seed=2)))
    assert any("'x_test'" in n for n in test.source.notes)


def test_npz_missing_keys_error_lists_the_keys_found(tmp_path):
    path = _npz(tmp_path / "d.npz", pictures=_pixels(), classes=_labels())
    with pytest.raises(InvalidInputError, match=r"no images array.*'pictures', 'classes'"):
        load_dataset(path)


def test_npz_compressed_is_loaded_whole_and_said(tmp_path):
    pixels = _pixels()
    data = load_dataset(_npz(tmp_path / "d.npz", compressed=True, images=pixels, labels=_labels()))
    assert torch.equal(_all(data), _chw(pixels)) and any("loaded whole" in n for n in data.source.notes)


def test_npz_uncompressed_streams_and_equals_an_in_memory_load(tmp_path):
    pixels = _pixels(40)
    streamed = load_dataset(_npz(tmp_path / "s.npz", images=pixels, labels=_labels(40)))
    whole = load_dataset(_npz(tmp_path / "w.npz", compressed=True, images=pixels, labels=_labels(40)))
    assert isinstance(streamed._images, StoredArray) and not isinstance(whole._images, StoredArray)
    index = [7, 3, 4, 5, 39, 0, 5]  # unsorted, with a run and a repeat
    for a, b in zip(streamed.get_batch(index), whole.get_batch(index)):
        assert torch.equal(a, b)
    assert torch.equal(_all(streamed), _all(whole)) and torch.equal(streamed.labels, whole.labels)


def test_npz_stream_reads_only_the_rows_asked_for(tmp_path, monkeypatch):
    data = load_dataset(_npz(tmp_path / "d.npz", images=_pixels(40), labels=_labels(40)))
    reads = []
    original = StoredArray._read_into

    def spy(self, first, buffer):
        reads.append((first, len(buffer) // self.row_bytes))
        original(self, first, buffer)

    monkeypatch.setattr(StoredArray, "_read_into", spy)
    data.get_batch([30, 2, 3, 4])
    assert reads == [(2, 3), (30, 1)]  # one read per run of consecutive rows, nothing else


def test_npz_labels_int32_become_int64(tmp_path):
    data = load_dataset(_npz(tmp_path / "d.npz", images=_pixels(), labels=_labels().astype(np.int32)))
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == _labels().tolist()


def test_npz_column_labels_are_flattened_and_said(tmp_path):
    data = load_dataset(_npz(tmp_path / "d.npz", images=_pixels(), labels=_labels()[:, None]))
    assert data.labels.shape == (12,) and any("flattened" in n for n in data.source.notes)


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        (_labels().astype(np.float32), "integer class indices, got dtype float32"),
        (np.eye(3, dtype=np.int64)[_labels()], "one-hot"),
        (_labels(10), "12 images but 10 labels"),
        (_labels() - 1, "non-negative.*-1 at 0"),
    ],
    ids=["float", "one-hot", "count", "negative"],
)
def test_npz_bad_labels_are_refused(tmp_path, labels, words):
    with pytest.raises(InvalidInputError, match=words):
        load_dataset(_npz(tmp_path / "d.npz", images=_pixels(), labels=labels))


@pytest.mark.parametrize(
    ("images", "words"),
    [
        (np.full((12, 3, 8, 8), 2.0, dtype=np.float32), r"\[0, 1\].*\[2, 2\].*uint8"),
        (np.full((12, 3, 8, 8), np.nan, dtype=np.float32), "NaN"),
        (_pixels().astype(np.int16), "uint8.*or floating point.*int16"),
        (_pixels(shape=(8, 8, 8)), "cannot tell the channel axis"),
        (_pixels(shape=(8,)), r"\(N, H, W\)"),
    ],
    ids=["range", "nan", "int16", "channels", "shape"],
)
def test_npz_bad_images_are_refused(tmp_path, images, words):
    with pytest.raises(InvalidInputError, match=words):
        load_dataset(_npz(tmp_path / "d.npz", images=images, labels=_labels()))


def test_npz_that_is_not_a_zip_is_refused(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"not a zip")
    with pytest.raises(InvalidInputError, match="not a readable .npz"):
        load_dataset(tmp_path / "d.npz")


def test_npz_truncated_member_is_refused(tmp_path):
    path = _npz(tmp_path / "d.npz", images=_pixels(), labels=_labels())
    with zipfile.ZipFile(path) as archive:  # rewrite the images member 100 bytes short, still a valid zip
        members = {n: archive.read(n) for n in archive.namelist()}
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload[:-100] if name == "images.npy" else payload)
    with pytest.raises(InvalidInputError, match="truncated"):
        load_dataset(path)


# ---------------------------------------------------------------- pt


def test_pt_dict_is_memory_mapped_and_read_like_npz(tmp_path):
    pixels = _pixels()
    torch.save({"images": torch.from_numpy(pixels), "labels": torch.from_numpy(_labels())}, tmp_path / "d.pt")
    data = load_dataset(tmp_path / "d.pt", "train")
    assert data.source.kind == "pt" and torch.equal(_all(data), _chw(pixels)) and data.num_classes == 3
    assert any("memory-mapped" in n for n in data.source.notes)


def test_pt_tuple_of_images_and_labels(tmp_path):
    images = torch.rand(12, 1, 8, 8)
    torch.save((images, torch.from_numpy(_labels())), tmp_path / "d.pth")
    assert torch.equal(_all(load_dataset(tmp_path / "d.pth")), images)


def test_pt_legacy_format_is_loaded_whole_and_said(tmp_path):
    torch.save({"x": torch.from_numpy(_pixels()), "y": torch.from_numpy(_labels())}, tmp_path / "d.pt",
               _use_new_zipfile_serialization=False)
    data = load_dataset(tmp_path / "d.pt")
    assert len(data) == 12 and any("legacy" in n for n in data.source.notes)


def test_pt_with_arbitrary_objects_is_refused(tmp_path):
    torch.save({"images": torch.rand(2, 1, 4, 4), "labels": torch.zeros(2, dtype=torch.int64),
                "extra": Payload()}, tmp_path / "d.pt")
    with pytest.raises(InvalidInputError, match="weights_only=True.*Unsupported global.*Payload"):
        load_dataset(tmp_path / "d.pt")


def test_pt_garbage_is_refused(tmp_path):
    (tmp_path / "d.pt").write_bytes(b"garbage")
    with pytest.raises(InvalidInputError, match="corrupt"):
        load_dataset(tmp_path / "d.pt")


def test_pt_with_other_contents_is_refused(tmp_path):
    torch.save([torch.rand(2, 1, 4, 4)] * 3, tmp_path / "d.pt")
    with pytest.raises(InvalidInputError, match="got a list of 3"):
        load_dataset(tmp_path / "d.pt")


def test_pt_missing_keys_error_lists_the_keys_found(tmp_path):
    torch.save({"images": torch.rand(2, 1, 4, 4), "classes": torch.zeros(2)}, tmp_path / "d.pt")
    with pytest.raises(InvalidInputError, match=r"no labels array.*'images', 'classes'"):
        load_dataset(tmp_path / "d.pt")


# ---------------------------------------------------------------- image folders


def _folder(root, pixels, labels, classes="abc", size=None):
    """Write ``pixels[i]`` as ``root/<classes[labels[i]]>/<i:02d>.png``; returns the files in loader order."""
    files = []
    for i, (image, label) in enumerate(zip(pixels, labels)):
        path = root / classes[label] / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
        (picture.resize(size) if size else picture).save(path)
        files.append((label, i))
    return [i for _, i in sorted(files)]


def test_image_folder_reads_pngs_with_sorted_classes(tmp_path):
    pixels, labels = _pixels(), _labels()
    order = _folder(tmp_path / "pets", pixels, labels)
    data = load_dataset(tmp_path / "pets")
    assert data.source.kind == "imagefolder" and data.num_classes == 3 and data.sample_shape == (3, 8, 8)
    assert torch.equal(_all(data), _chw(pixels[order])) and data.labels.tolist() == labels[order].tolist()
    assert any("one split" in n for n in data.source.notes)


def test_image_folder_grayscale_has_one_channel(tmp_path):
    pixels = _pixels(shape=(8, 8, 1))
    order = _folder(tmp_path / "d", pixels, _labels())
    data = load_dataset(tmp_path / "d")
    assert data.sample_shape == (1, 8, 8) and torch.equal(_all(data), _chw(pixels[order]))


def test_image_folder_train_and_test_subfolders_share_class_indices(tmp_path):
    _folder(tmp_path / "d" / "train", _pixels(6), [0, 1, 2, 0, 1, 2])
    _folder(tmp_path / "d" / "test", _pixels(2), [2, 2])  # no 'a' or 'b' in test
    train, test = load_dataset(tmp_path / "d", "train"), load_dataset(tmp_path / "d", "test")
    assert (len(train), len(test)) == (6, 2) and test.num_classes == 3 and test.labels.tolist() == [2, 2]
    assert any("class 'a' has no images" in n for n in test.source.notes)


def test_image_folder_with_train_but_no_test_is_refused(tmp_path):
    _folder(tmp_path / "d" / "train", _pixels(3), [0, 1, 2])
    with pytest.raises(InvalidInputError, match="has train/ but no test/"):
        load_dataset(tmp_path / "d")


def test_image_folder_of_mixed_sizes_names_two_files_and_suggests_image_size(tmp_path):
    _folder(tmp_path / "d", _pixels(2), [0, 0])
    Image.fromarray(_pixels(1, (10, 12, 3))[0]).save(tmp_path / "d" / "a" / "99.png")
    with pytest.raises(InvalidInputError, match=r"a/00.png is 8x8 but a/99.png is 10x12.*--image-size"):
        load_dataset(tmp_path / "d")


def test_image_folder_image_size_resizes_every_image(tmp_path):
    _folder(tmp_path / "d", _pixels(2), [0, 1])
    Image.fromarray(_pixels(1, (10, 12, 3))[0]).save(tmp_path / "d" / "a" / "99.png")
    data = load_dataset(tmp_path / "d", image_size=4)
    images = _all(data)
    assert data.sample_shape == (3, 4, 4) and images.shape == (3, 3, 4, 4)
    assert 0 <= float(images.min()) and float(images.max()) <= 1 and any("resized" in n for n in data.source.notes)


def test_image_folder_without_images_is_refused(tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "a" / "readme.txt").write_text("no images")
    with pytest.raises(InvalidInputError, match="no images found"):
        load_dataset(tmp_path / "d")


def test_image_folder_without_class_subfolders_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    Image.fromarray(_pixels(1)[0]).save(tmp_path / "d" / "x.png")
    with pytest.raises(InvalidInputError, match="one subfolder per class"):
        load_dataset(tmp_path / "d")


def test_image_folder_mixed_modes_convert_to_the_majority_and_say_so(tmp_path):
    _folder(tmp_path / "d", _pixels(3), [0, 1, 2])
    Image.fromarray(_pixels(1, (8, 8))[0]).save(tmp_path / "d" / "a" / "gray.png")
    data = load_dataset(tmp_path / "d")
    assert data.sample_shape == (3, 8, 8) and _all(data).shape == (4, 3, 8, 8)
    assert any("1 of 4 images are grayscale (e.g. a/gray.png)" in n and "RGB" in n for n in data.source.notes)


def test_image_folder_mostly_grayscale_reads_as_grayscale(tmp_path):
    _folder(tmp_path / "d", _pixels(3, (8, 8, 1)), [0, 1, 2])
    Image.fromarray(_pixels(1)[0]).save(tmp_path / "d" / "a" / "rgb.png")
    data = load_dataset(tmp_path / "d")
    assert data.sample_shape == (1, 8, 8) and any("colour" in n and "grayscale" in n for n in data.source.notes)


def test_image_folder_16_bit_images_are_refused(tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 1000, dtype=np.uint16)).save(tmp_path / "d" / "a" / "deep.png")
    with pytest.raises(InvalidInputError, match="16-bit"):
        load_dataset(tmp_path / "d")


def test_image_folder_unreadable_image_is_named(tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InvalidInputError, match="cannot read image a/broken.png"):
        load_dataset(tmp_path / "d")


# ---------------------------------------------------------------- names, paths, torchvision


def test_unknown_name_lists_the_names_and_file_kinds():
    with pytest.raises(InvalidInputError, match="unknown dataset 'imagenet'.*cifar100.*svhn.*image folder.*npz"):
        load_dataset("imagenet")


def test_missing_path_is_dataset_not_found(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset(tmp_path / "nothing.npz")


def test_unsupported_file_type_is_refused(tmp_path):
    (tmp_path / "d.csv").write_text("1,2")
    with pytest.raises(InvalidInputError, match="cannot read .*d.csv"):
        load_dataset(tmp_path / "d.csv")


def test_root_with_a_path_source_is_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="root is only used with torchvision names"):
        load_dataset(_npz(tmp_path / "d.npz", images=_pixels(), labels=_labels()), root=tmp_path)


@pytest.mark.parametrize("size", [0, (8,), "8", (4, -1)])
def test_bad_image_size_is_refused(size):
    with pytest.raises(InvalidInputError, match="image_size"):
        load_dataset("mnist-5k", image_size=size)


def test_image_size_resizes_bundled_mnist_as_it_is_read():
    data = load_dataset("mnist-5k", image_size=(32, 30))
    x, y = data.get_batch([0, 1])
    assert data.sample_shape == (1, 32, 30) and x.shape == (2, 1, 32, 30) and y.tolist() == data.labels[:2].tolist()
    assert any("resized from 28x28 to 32x30" in n for n in data.source.notes)


def test_bundled_mnist_is_in_memory_and_says_where_it_came_from():
    data = load_dataset("mnist-5k", "test")
    assert isinstance(data, LabeledImages) and data.source.to_json() == {
        "kind": "bundled", "spec": "mnist-5k", "split": "test", "path": None, "notes": []}


@pytest.mark.parametrize(
    ("name", "where"),
    [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
     ("svhn", "test_32x32.mat")],
)
def test_missing_torchvision_files_say_download_and_where_they_go(tmp_path, name, where):
    with pytest.raises(DatasetNotFoundError, match=f"--download.*{where}"):
        load_dataset(name, root=tmp_path)


def test_torchvision_mnist_is_read_lazily_from_its_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    pixels = {"train": _pixels(6, (8, 8), seed=1), "t10k": _pixels(4, (8, 8), seed=2)}
    for prefix, images in pixels.items():
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", _labels(len(images)).astype(np.uint8))
    data = load_dataset("mnist", "test", root=tmp_path)
    assert not isinstance(data, LabeledImages) and data.source.kind == "torchvision" and data.num_classes == 10
    assert torch.equal(_all(data), _chw(pixels["t10k"][..., None])) and data.labels.tolist() == [0, 1, 2, 0]


def test_svhn_gets_its_split_argument_and_chw_pixels(monkeypatch, tmp_path):
    calls = []

    class FakeSVHN:
        def __init__(self, root, split, download):
            calls.append(split)
            self.data, self.labels = _pixels(4).transpose(0, 3, 1, 2), np.array([0, 9, 1, 2])

    monkeypatch.setattr(import_torchvision().datasets, "SVHN", FakeSVHN)
    train, test = load_dataset("svhn", "train", root=tmp_path), load_dataset("svhn", "test", root=tmp_path)
    assert calls == ["train", "test"] and test.num_classes == 10 and torch.equal(_all(test), _chw(_pixels(4)))
    assert train.name == "svhn/train"
