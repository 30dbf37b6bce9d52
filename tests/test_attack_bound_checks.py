"""Every example `mistered attack` returns is re-checked against its threat's budgets (results.json says how many
lie outside: 0), and `evaluate`'s ensemble adds the perceptual attack where the threat has a perceptual bound."""

import json

import pytest
import torch
from click.testing import CliRunner

from mistered.attacks import AttackResult
from mistered.cli import main
from mistered.evaluate.empirical import build_ensemble
from mistered.models import build_model
from mistered.threats import parse_threat


@pytest.mark.parametrize("attack, threat", [("pgd", "linf(0.1)"), ("pgd", "combined"), ("lpa", "combined")])
def test_results_json_counts_the_examples_outside_their_budget(tmp_path, attack, threat):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["attack", "--attack", attack, "--threat", threat, "--n", "4", "--steps", "2",
                                       "--batch-size", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "results.json").read_text())["summary"]["bound_violations"] == 0


def _result(violations: int | None) -> AttackResult:
    x = torch.zeros(2, 1, 2, 2)
    info = {} if violations is None else {"bound_violations": violations, "note": "per batch"}
    return AttackResult(x=x, x_adv=x, labels=torch.zeros(2, dtype=torch.long), logits=torch.zeros(2, 3),
                        clean_logits=torch.zeros(2, 3), success=torch.zeros(2, dtype=torch.bool), distances={},
                        sizes={}, alternative=torch.zeros(2, dtype=torch.long), info=info)


def test_concatenated_results_sum_the_counts_of_their_batches():
    merged = AttackResult.cat([_result(1), _result(None), _result(2)])
    assert merged.info == {"bound_violations": 3}


def test_the_ensemble_adds_lpa_only_where_every_alternative_has_a_perceptual_bound():
    model = build_model("mnist-fc").eval()
    names = lambda spec: [m.name for m in build_ensemble(model, parse_threat(spec), 10, autoattack="off",  # noqa: E731
                                                         square_queries=0)]
    assert names("combined") == ["pgd", "lpa"]
    assert names("flow(0.05)") == ["pgd"]
    assert names("linf(0.1)|lpips<=0.02") == ["pgd", "lpa"]
