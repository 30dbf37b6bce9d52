"""The shared plumbing: input validation, atomic writes, safe checkpoint loading, the CLI's error contract."""


import pytest
import torch
from click.testing import CliRunner

from mistered.cli import main
from mistered.errors import CheckpointError, InvalidInputError
from mistered.io import atomic_torch_save, atomic_write, safe_torch_load
from mistered.validation import check_images, check_labels


def test_check_images_accepts_valid_batch():
    x = torch.rand(2, 1, 4, 4)
    assert check_images(x, channels=1) is x


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (torch.rand(1, 4, 4), "shape"),
        (torch.rand(2, 3, 4, 4), "channel"),
        (torch.full((1, 1, 2, 2), float("nan")), "NaN"),
        (torch.full((1, 1, 2, 2), 1.5), "[0, 1]"),
        (torch.zeros(1, 1, 2, 2, dtype=torch.long), "floating"),
    ],
)
def test_check_images_rejects_bad_input_with_a_clear_message(bad, fragment):
    with pytest.raises(InvalidInputError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        check_images(bad, channels=1)


def test_check_labels_rejects_out_of_range():
    with pytest.raises(InvalidInputError, match="labels"):
        check_labels(torch.tensor([0, 10]), batch_size=2, num_classes=10)


class _Hostile:
    def __reduce__(self):
        return (print, ("pwned",))


def test_safe_load_refuses_hostile_pickle(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": _Hostile()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        safe_torch_load(path)


def test_safe_load_reports_corrupt_and_missing_files(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        safe_torch_load(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        safe_torch_load(tmp_path / "missing.pt")


def test_safe_load_round_trips_weights(tmp_path):
    state = {"w": torch.arange(3.0), "meta": {"epoch": 2}}
    atomic_torch_save(tmp_path / "ok.pt", state)
    loaded = safe_torch_load(tmp_path / "ok.pt")
    assert torch.equal(loaded["w"], state["w"]) and loaded["meta"] == {"epoch": 2}


def test_atomic_write_keeps_the_old_file_when_the_writer_dies(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"good")

    def dies_half_way(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies_half_way)
    assert path.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_cli_help_runs():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "mistered" in result.output


def test_cli_unknown_command_exits_2():
    result = CliRunner().invoke(main, ["no-such-command"])
    assert result.exit_code == 2


def test_atomic_write_honours_the_umask(tmp_path):
    path = atomic_write(tmp_path / "readable.bin", lambda f: f.write(b"x"))
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
