"""One CLI vocabulary: the shared options are the same everywhere; --eps, --threat, --resume and --config parse
the same way in every command; config.yaml replays a run."""

from __future__ import annotations

import json

import click
import pytest
import yaml
from click.testing import CliRunner

from mistered.cli import main
from mistered.cli.evaluate import threat_entries
from mistered.cli.options import HELP, parse_radii, resume_folder, split_top_level
from mistered.errors import InvalidInputError

COMMANDS = ("attack", "train", "certify", "lipschitz", "evaluate")
SHARED = ("model", "weights", "model_args", "mean", "std", "data", "download", "split", "n", "indices", "image_size",
          "device", "out", "resume", "config", "quiet", "seed", "batch_size", "eps")
COMBINED = "flow(0.05)>>affine(10deg,0.1)>>linf(0.1)|lpips<=0.05"
QUICK_ATTACK = ["attack", "--model", "mnist-fc", "--threat", "linf", "--n", "4", "--steps", "2", "--quiet"]


def _options(name: str) -> dict[str, click.Option]:
    command = main.get_command(click.Context(main), name)
    return {p.name: p for p in command.params if isinstance(p, click.Option)}


@pytest.mark.parametrize("name", SHARED)
def test_every_command_has_the_shared_option_with_the_same_flag_type_and_help(name):
    options = [_options(command)[name] for command in COMMANDS]
    first = options[0]
    for option in options:
        assert option.opts == first.opts and type(option.type) is type(first.type) and option.multiple == first.multiple
        assert option.is_flag == first.is_flag and option.help.startswith(HELP[name]), (name, option.help)


def test_threat_is_repeatable_wherever_several_make_sense():
    for command in ("attack", "train", "evaluate"):
        assert _options(command)["threat"].multiple


def test_eps_takes_comma_lists_and_repeats_in_order():
    assert parse_radii(("0.1,0.3", "0.5")) == (0.1, 0.3, 0.5)
    assert parse_radii("1") == (1.0,) and parse_radii("8/255") == (8 / 255,)
    for bad in (("abc",), ("-1",), ("inf",), ("1/0",)):
        with pytest.raises(InvalidInputError, match="--eps"):
            parse_radii(bad)


def test_a_spec_with_commas_is_one_threat_and_the_deprecated_list_splits_only_top_level_commas():
    assert split_top_level(f"linf,{COMBINED},l2") == ["linf", COMBINED, "l2"]
    assert threat_entries((COMBINED,), None) == (COMBINED,)
    assert threat_entries(("stadv",), f"{COMBINED},l2") == ("stadv", COMBINED, "l2")


def test_resume_alone_means_the_out_folder_and_resume_dir_names_it():
    assert resume_folder(None, "o") == ("o", False)
    assert resume_folder("\0out", "o") == ("o", True)
    assert resume_folder("d", None) == ("d", True)
    assert resume_folder("d", "d") == ("d", True)
    with pytest.raises(InvalidInputError, match="different folders"):
        resume_folder("d", "o")


@pytest.mark.parametrize("command", COMMANDS)
def test_resume_takes_an_optional_folder_in_every_command(command):
    option = _options(command)["resume"]
    assert not option.is_flag and option.flag_value is not None  # --resume alone, or --resume DIR


def test_config_file_keys_are_option_names_and_the_command_line_wins(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("batch-size: 2\nsteps: 3\nthreat: linf\nn: 3\nmodel_args: null\n")
    result = CliRunner().invoke(main, [*QUICK_ATTACK, "--config", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "run" / "results.json").read_text())["settings"]
    assert settings["batch_size"] == 2 and settings["steps"] == 2 and settings["n"] == 4  # the CLI's --steps, --n


def test_unknown_config_keys_are_one_error_line_listing_them(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("steps: 3\nbogus: 1\nalso-bogus: 2\n")
    result = CliRunner().invoke(main, ["attack", "--config", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("Error:") and "bogus, also-bogus" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text", ["steps: [1, 2", "- a list\n- not a mapping\n"])
def test_a_config_that_is_not_a_yaml_mapping_is_one_error_line(tmp_path, text):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    result = CliRunner().invoke(main, ["attack", "--config", str(config)])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "--config" in result.output, result.output


def test_config_yaml_written_beside_results_replays_the_run(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    result = CliRunner().invoke(main, [*QUICK_ATTACK, "--eps", "0.2", "--batch-size", "3", "--out", str(first)])
    assert result.exit_code == 0, result.output
    written = yaml.safe_load((first / "config.yaml").read_text())
    assert written["eps"] == [0.2] and written["model"] == "mnist-fc" and "out" not in written
    replay = CliRunner().invoke(main, ["attack", "--config", str(first / "config.yaml"), "--out", str(second)])
    assert replay.exit_code == 0, replay.output
    records = [json.loads((d / "results.json").read_text()) for d in (first, second)]
    assert records[0]["summary"] == records[1]["summary"] and records[0]["examples"] == records[1]["examples"]
    assert records[0]["settings"] == records[1]["settings"]


@pytest.mark.parametrize("args", [["--n", "abc"], ["--bogus"], ["--split", "validation"]])
def test_usage_errors_are_one_line_too(args):
    result = CliRunner().invoke(main, ["attack", *args])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("Error:") and "--help" in result.output


def test_evaluate_replays_from_its_config_yaml_with_fractional_radii(tmp_path):
    args = ["evaluate", "--model", "mnist-fc", "--threat", "linf", "--eps", "linf=8/255,0.1", "--n", "3", "--steps",
            "2", "--autoattack", "off", "--square-queries", "0", "--certify", "", "--quiet"]
    assert CliRunner().invoke(main, [*args, "--out", str(tmp_path / "first")]).exit_code == 0
    replay = CliRunner().invoke(main, ["evaluate", "--config", str(tmp_path / "first" / "config.yaml"), "--out",
                                       str(tmp_path / "second")])
    assert replay.exit_code == 0, replay.output
    first, second = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("first", "second"))
    assert first["summary"] == second["summary"] and first["settings"] == second["settings"]
    assert first["summary"]["points"][0]["eps"] == 8 / 255
