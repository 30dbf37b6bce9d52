"""Robust accuracy against the budget of any threat: named budgets, --sweep, curves of --threat values, the plot."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mistered.cli import main
from mistered.errors import InvalidInputError
from mistered.evaluate import build_points, parse_eps, parse_sweeps, union_levels
from mistered.evaluate.budgets import threat_budgets, varying_budget, with_budget
from mistered.evaluate.report import robustness_figure
from mistered.threats import parse_threat

EPS = parse_eps([])


# --- named budgets ----------------------------------------------------------------------------------------------


def test_every_budget_of_the_combined_preset_has_a_name_unit_and_value():
    budgets = {b.name: (b.value, b.unit) for b in threat_budgets(parse_threat("combined"))}
    assert budgets["smoothness"] == (0.01, "grid units per pixel")
    assert budgets["angle"] == (3.0, "degrees") and budgets["linf"][0] == 0.1 and budgets["lpips"][0] == 0.015
    assert list(budgets) == ["flow", "smoothness", "angle", "translation", "scale", "linf", "lpips"]


def test_with_budget_changes_that_budget_only_and_keeps_the_structure():
    threat = parse_threat("combined")
    changed = with_budget(threat, "lpips", 0.03)
    assert changed == parse_threat("flow(0.05,smoothness=0.01)>>affine(3deg,0.03)>>linf(0.1)|lpips<=0.03")
    union = parse_threat("linf(0.1)||rotation(5deg)")
    assert with_budget(union, "angle", 7) == parse_threat("linf(0.1)||rotation(7deg)")


@pytest.mark.parametrize("spec, name, value, message", [
    ("combined", "eps", 0.1, "has no budget called 'eps' (its budgets: flow, smoothness"),
    ("linf(0.1)>>linf(0.2)", "linf", 0.1, "has 2 budgets called 'linf'"),
    ("rotation(5deg)", "angle", 500, "at most 180 degrees"),
])
def test_an_unknown_ambiguous_or_out_of_range_budget_is_an_error(spec, name, value, message):
    with pytest.raises(InvalidInputError, match="--sweep") as error:
        with_budget(parse_threat(spec), name, value)
    assert message in str(error.value)


def test_varying_budget_finds_the_one_budget_two_threats_differ_in():
    assert varying_budget(parse_threat("rotation(5deg)"), parse_threat("rotation(10deg)")).name == "angle"
    assert varying_budget(parse_threat("rotation(5deg)"), parse_threat("affine(10deg,0.1)")) is None  # two budgets
    assert varying_budget(parse_threat("linf(0.1)"), parse_threat("l2(0.2)")) is None  # another threat
    assert varying_budget(parse_threat("stadv"), parse_threat("stadv")) is None


# --- evaluation points --------------------------------------------------------------------------------------------


def test_sweep_makes_one_curve_over_the_named_budget():
    points = build_points(["stadv", "rotation"], EPS, parse_sweeps(["smoothness=0.02,0.005,0.01"]))
    curve = [p for p in points if p.series == "stadv"]
    assert [p.axis.value for p in curve] == [0.005, 0.01, 0.02]
    assert [p.label for p in curve][0] == "flow(0.05,smoothness=0.005)"
    assert {p.axis.name for p in curve} == {"smoothness"}
    assert points[-1].series is None and points[-1].axis is None  # rotation: one point of its own


def test_threat_values_that_differ_in_one_budget_form_one_curve():
    points = build_points(["rotation(10deg)", "rotation(5deg)", "linf(0.1)", "stadv"], EPS)
    assert [(p.series, p.axis.name, p.axis.value) for p in points[:2]] == [("rotation(10deg)", "angle", 10.0),
                                                                           ("rotation(10deg)", "angle", 5.0)]
    assert points[2].series is None and points[3].series is None
    # union level 0 takes the curve's smallest angle, level 1 its largest
    assert [[points[i].label for i in level] for level in union_levels(points)] == [
        ["rotation(5deg)", "linf(0.1)", "flow(0.05,smoothness=0.01)"],
        ["rotation(10deg)", "linf(0.1)", "flow(0.05,smoothness=0.01)"]]


def test_a_fixed_additive_point_keeps_its_radius_for_the_certifiers():
    (point,) = build_points(["l2(1)"], EPS)
    assert point.eps == 1.0 and point.norm == "l2" and point.series is None


@pytest.mark.parametrize("threats, sweeps, message", [
    (["rotation"], ["smoothness=0.1"], "no --threat has a budget called that"),
    (["linf"], ["linf=0.1"], "is swept by --eps linf"),
    (["stadv"], ["smoothness"], "expected NAME=v1,v2"),
    (["stadv"], ["smoothness=a,b"], "comma-separated numbers"),
    (["stadv"], ["smoothness=-0.1"], "non-negative"),
    (["combined"], ["angle=1,2", "lpips=0.01"], "has both budgets"),
    (["linf", "linf(0.1)"], [], "evaluated twice"),
])
def test_bad_sweeps_are_errors(threats, sweeps, message):
    with pytest.raises(InvalidInputError) as error:
        build_points(threats, EPS, parse_sweeps(sweeps))
    assert message in str(error.value)


# --- the plot -----------------------------------------------------------------------------------------------------


def _summary(points):
    base = {"threat": "t", "entry": "e", "eps": None, "norm": None, "certified": {}, "exact": None}
    return {"clean_accuracy": 1.0, "points": [{**base, **p} for p in points], "union": []}


def test_the_plot_draws_accuracy_against_a_non_lp_budget():
    points = [{"series": "stadv", "axis": "smoothness", "axis_unit": "grid units per pixel", "budget": b,
               "robust_accuracy": a} for b, a in ((0.02, 0.2), (0.005, 0.9), (0.01, 0.5))]
    fig = robustness_figure(_summary(points))
    (ax,) = fig.axes
    curves = [line for line in ax.lines if line.get_label() == "empirical (attacks)"]
    assert len(curves) == 1
    assert list(curves[0].get_xdata()) == [0.005, 0.01, 0.02] and list(curves[0].get_ydata()) == [0.9, 0.5, 0.2]
    assert ax.get_xlabel() == "smoothness (grid units per pixel)"


def test_the_plot_has_one_panel_per_curve_and_none_for_single_points():
    points = [{"series": "linf", "axis": "linf", "axis_unit": "pixels", "budget": 0.1, "robust_accuracy": 0.5,
               "eps": 0.1, "norm": "linf", "certified": {"lmt": {"accuracy": 0.25}}},
              {"series": "rotation(5deg)", "axis": "angle", "axis_unit": "degrees", "budget": 5.0,
               "robust_accuracy": 0.8},
              {"series": None, "axis": None, "axis_unit": None, "budget": None, "robust_accuracy": 0.3}]
    fig = robustness_figure(_summary(points))
    assert [ax.get_xlabel() for ax in fig.axes] == ["linf (pixels)", "angle (degrees)"]
    assert any(line.get_label() == "certified (lmt)" for line in fig.axes[0].lines)


# --- the command --------------------------------------------------------------------------------------------------

ATTACKS = ["--model", "mnist-fc", "--n", "4", "--steps", "2", "--autoattack", "off", "--square-queries", "0", "--quiet"]
SMALL = [*ATTACKS, "--certify", ""]


def test_evaluate_sweeps_a_flow_smoothness_and_records_the_curve(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", *SMALL, "--threat", "stadv", "--sweep", "smoothness=0.005,0.02",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "results.json").read_text())
    points = record["summary"]["points"]
    assert [(p["series"], p["axis"], p["budget"]) for p in points] == [("stadv", "smoothness", 0.005),
                                                                       ("stadv", "smoothness", 0.02)]
    assert record["settings"]["sweep"] == {"smoothness": [0.005, 0.02]}
    assert (tmp_path / "robustness.png").stat().st_size > 5_000


def test_a_bad_sweep_is_one_error_line_and_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", *SMALL, "--threat", "rotation", "--sweep", "lpips=0.1",
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and result.output.startswith("Error: --sweep lpips")


def test_a_fixed_additive_threat_is_certified_at_its_own_radius(tmp_path):
    """``--threat 'l2(1)'`` with a certifier used to stop with a TypeError (its ε was None)."""
    result = CliRunner().invoke(main, ["evaluate", *ATTACKS, "--certify", "lmt", "--threat", "l2(1)",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (point,) = json.loads((tmp_path / "results.json").read_text())["summary"]["points"]
    assert point["eps"] == 1.0 and point["certified"]["lmt"]["accuracy"] <= point["robust_accuracy"]
