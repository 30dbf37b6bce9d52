"""Bad model sources get one clear error: weights-only files, hostile and corrupt files, misfitting weights,
mistakes in the user's Python file. Hostile payloads would create a file; none may appear."""

import io
import os
import pickle
import zipfile

import pytest
import torch
from safetensors.torch import save_file
from test_model_sources import _x, write_nets

from mistered.errors import CheckpointError, InvalidInputError
from mistered.models import build_model, load_model, read_weights, save_model


@pytest.fixture
def nets(tmp_path):
    return write_nets(tmp_path)


class _Payload:
    """Unpickling this runs ``os.system("touch <marker>")``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---- weights only where a model is needed --------------------------------------------------------------------

WEIGHTS_ONLY = r"this file holds weights only; give the architecture with --model file\.py:Class --weights FILE"


def test_a_state_dict_given_as_the_model_asks_for_the_architecture(nets, tmp_path):
    torch.save(nets[1].SmallNet().state_dict(), tmp_path / "sd.pth")
    with pytest.raises(CheckpointError, match=WEIGHTS_ONLY):
        load_model(tmp_path / "sd.pth")


def test_a_safetensors_file_given_as_the_model_asks_for_the_architecture(nets, tmp_path):
    save_file(nets[1].SmallNet().state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match=WEIGHTS_ONLY):
        load_model(tmp_path / "w.safetensors")


def test_a_whole_model_given_as_weights_is_named(nets, tmp_path):
    torch.jit.save(torch.jit.script(nets[1].SmallNet()), str(tmp_path / "net.ts"))
    with pytest.raises(CheckpointError, match="is a TorchScript archive, a whole model, not weights"):
        read_weights(tmp_path / "net.ts")


def test_a_training_checkpoint_dict_given_as_weights_says_which_entries_are_not_tensors(nets, tmp_path):
    torch.save({"model": nets[1].SmallNet().state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match="entries 'model', 'epoch' are not tensors.*save that entry on its own"):
        read_weights(tmp_path / "ckpt.pt")


# ---- hostile files are refused and never run --------------------------------------------------------------------


def _hostile(kind, path, marker):
    if kind == "torch.save":
        torch.save({"weight": torch.zeros(2), "x": _Payload(marker)}, path)
    elif kind == "legacy":
        torch.save({"x": _Payload(marker)}, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(_Payload(marker), protocol=4))
    return path


@pytest.mark.parametrize("kind", ["torch.save", "legacy", "pickle"])
@pytest.mark.parametrize("role", ["model", "weights"])
def test_a_hostile_pickle_is_refused_without_running_it(nets, tmp_path, kind, role):
    marker = tmp_path / "pwned"
    path = _hostile(kind, tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match="refused: it holds pickled Python objects \\((posix|nt)\\.system\\)"):
        if role == "model":
            load_model(path)
        else:
            load_model(f"{nets[0]}:SmallNet", weights=path)
    assert not marker.exists()


def test_a_whole_pickled_module_is_refused_naming_its_classes(nets, tmp_path):
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), tmp_path / "whole.pt")
    with pytest.raises(CheckpointError, match=r"refused.*torch\.nn\.modules\.container\.Sequential.*state_dict"):
        load_model(tmp_path / "whole.pt")


def test_a_pt2_archive_with_a_hostile_payload_is_refused_before_torch_export_loads_it(tmp_path):
    marker = tmp_path / "pwned"
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(net, (_x(),)), str(good))
    payload = io.BytesIO()
    torch.save({"x": _Payload(marker)}, payload)
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(evil, "w") as target:
        for item in source.infolist():
            data = payload.getvalue() if item.filename.endswith("sample_inputs/model.pt") else source.read(item)
            target.writestr(item, data)
    assert load_model(good, device="cpu")(_x()).shape == (2, 3)
    with pytest.raises(CheckpointError, match=r"member .*sample_inputs/model\.pt.* refused.*system"):
        load_model(evil)
    assert not marker.exists()


# ---- corrupt files say corrupt -------------------------------------------------------------------------------------


def _truncated_checkpoint(path):
    save_model(path, build_model("mnist-fc"), "mnist-fc", {}, {})
    path.write_bytes(path.read_bytes()[:-300])


def _flipped_pickle(path):
    torch.save(build_model("mnist-fc").state_dict(), path)
    data = bytearray(path.read_bytes())
    start = data.index(b"data.pkl") + 40
    data[start : start + 20] = b"\xff" * 20
    path.write_bytes(bytes(data))


def _truncated_pickle(path):
    path.write_bytes(pickle.dumps({"a": [1, 2, 3]}, protocol=4)[:-5])


def _truncated_safetensors(path):
    save_file({"w": torch.zeros(100)}, str(path))
    path.write_bytes(path.read_bytes()[:60])


def _truncated_onnx(path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        torch.onnx.export(net, (_x(),), str(path), dynamo=False)
    path.write_bytes(path.read_bytes()[:-100])


def _truncated_pt2(path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    torch.export.save(torch.export.export(net, (_x(),)), str(path))
    path.write_bytes(path.read_bytes()[:-500])


@pytest.mark.parametrize(
    "make",
    [
        _truncated_checkpoint,
        _flipped_pickle,
        _truncated_pickle,
        _truncated_safetensors,
        _truncated_onnx,
        _truncated_pt2,
    ],
)
def test_a_corrupt_file_is_called_corrupt_not_hostile(tmp_path, make):
    path = tmp_path / "broken.bin"
    make(path)
    with pytest.raises(CheckpointError, match="corrupt") as raised:
        load_model(path)
    assert "refused" not in str(raised.value) and "hostile" not in str(raised.value)


def test_an_unknown_file_format_lists_what_is_accepted(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="a file of unknown format, not a model mistered can load"):
        load_model(tmp_path / "notes.txt")


# ---- weights that do not fit -----------------------------------------------------------------------------------


def test_misfitting_weights_name_the_first_key_and_both_shapes(nets, tmp_path):
    torch.save(nets[1].SmallNet(num_classes=5).state_dict(), tmp_path / "w.pt")
    with pytest.raises(
        CheckpointError,
        match=r"does not fit the model .*:SmallNet: size mismatch for 'fc\.weight': the weights have \(5, 256\), "
        r"the model has \(3, 256\) \(1 more size mismatches\)$",
    ):
        load_model(f"{nets[0]}:SmallNet", weights=tmp_path / "w.pt")


def test_missing_and_unexpected_keys_are_listed_with_a_prefix_hint(nets, tmp_path):
    state = {f"module.{k}": v for k, v in nets[1].SmallNet().state_dict().items()}
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(
        CheckpointError,
        match=r"Missing keys \(4\): 'conv\.weight', 'conv\.bias', 'fc\.weight' and 1 more; Unexpected keys \(4\): "
        r"'module\.conv\.weight'.*every key of the weights has the extra prefix 'module\.'",
    ):
        load_model(f"{nets[0]}:SmallNet", weights=tmp_path / "w.pt")


# ---- mistakes in a Python source -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, args, message",
    [
        ("Nope", None, r"has no 'Nope'; it defines SmallNet, ResidualNet, make_small, broken_factory, make_list"),
        ("WIDTH", None, "'WIDTH' is of type int, not an nn.Module class or a function returning one"),
        ("NotAModule", None, "'NotAModule' is a class but not a subclass of torch.nn.Module"),
        ("make_list", None, r"make_list\(\*\*\{\}\) returned a list, not an nn.Module"),
        ("SmallNet", {"classes": 3}, r"SmallNet\(num_classes=3, width=4\) cannot be called with model_args"),
        ("broken_factory", None, r"broken_factory\(\*\*\{\}\) raised ValueError: num_classes must be even "
                                 r"\(at nets\.py:\d+\)$"),
    ],
)
def test_mistakes_in_the_users_python_are_one_line_each(nets, name, args, message):
    with pytest.raises(InvalidInputError, match=message):
        load_model(f"{nets[0]}:{name}", model_args=args)


def test_a_syntax_error_names_the_file_and_line(tmp_path):
    (tmp_path / "bad.py").write_text("import torch\n\ndef net(:\n    pass\n")
    with pytest.raises(InvalidInputError, match=r"bad\.py:3: syntax error in the model file"):
        load_model(f"{tmp_path / 'bad.py'}:net")


def test_an_exception_while_importing_names_the_file_and_line(tmp_path):
    (tmp_path / "needs.py").write_text("x = 1\nimport not_a_real_package_xyz\n")
    with pytest.raises(InvalidInputError, match=r"importing the model file .*ModuleNotFoundError.*\(at needs\.py:2\)"):
        load_model(f"{tmp_path / 'needs.py'}:Net")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("missing_dir/net.py:Net", "model file .*net.py' does not exist"),
        ("not_a_module_xyz.sub:Net", "cannot import the model module 'not_a_module_xyz.sub': no module named"),
        ("no-such-model", "neither a bundled model .*nor an existing file"),
    ],
)
def test_sources_that_do_not_exist_are_named(spec, message):
    with pytest.raises((InvalidInputError, CheckpointError), match=message):
        load_model(spec)


def test_a_python_file_without_a_name_asks_for_one(nets):
    with pytest.raises(InvalidInputError, match=r"is a Python file: name the model class or function, as .*py:Name"):
        load_model(nets[0])


def test_model_args_are_refused_for_sources_that_take_none():
    with pytest.raises(InvalidInputError, match="model_args apply to file.py:Name and package.module:Name sources"):
        load_model("mnist-fc", model_args={"hidden": 3})


def test_mean_without_std_is_refused():
    with pytest.raises(InvalidInputError, match="give both mean and std"):
        load_model("mnist-fc", mean=[0.5])
