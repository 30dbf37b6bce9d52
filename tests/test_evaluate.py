"""``mistered.evaluate``: bounds in the right order, reproducible verdicts, resume, soundness and sanity checks."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mistered.certify.certificate import Certificate
from mistered.data.labeled import LabeledImages
from mistered.errors import InvalidInputError, UnsoundResultError
from mistered.evaluate import CERTIFIERS, CertifierSpec, EvaluateConfig, evaluate
from mistered.evaluate.sanity import check_model_outputs
from mistered.io import safe_torch_load

LIGHT = {"steps": 5, "square_queries": 10, "batch_size": 3, "exact_time": 30.0}


def _tiny_net(seed: int = 0) -> nn.Module:
    """A 36-8-8-3 ReLU net on 1x6x6 images: small enough for GeoCert to finish exactly."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


def _data(model: nn.Module, n: int = 6, seed: int = 1) -> LabeledImages:
    """Random images labelled by the model itself (clean accuracy 1), with the first one mislabelled."""
    images = torch.rand(n, 1, 6, 6, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        labels = model(images).argmax(dim=1)
    labels[0] = (labels[0] + 1) % 3
    return LabeledImages(images, labels, 3, "random-6x6")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    model = _tiny_net()
    data = _data(model)
    out = tmp_path_factory.mktemp("eval")
    config = EvaluateConfig(eps={"linf": (0.02, 0.05, 0.1, 0.2), "l2": (0.05, 0.2, 0.5, 1.0)}, exact_n=6, **LIGHT)
    record = evaluate(model, data, out, config, model_name="tiny")
    return model, data, out, record


def test_empirical_is_above_exact_which_is_above_certified_at_every_eps(tiny_run):
    _, _, _, record = tiny_run
    for point in record["summary"]["points"]:
        exact = point["exact"]
        assert exact is not None and exact["undecided"] == 0 and exact["n"] == 6, point
        assert point["robust_accuracy"] >= exact["accuracy"] - 1e-9, point
        for method, certified in point["certified"].items():
            assert certified["n"] == 6 and certified["accuracy"] <= exact["accuracy"] + 1e-9, (method, point)
    methods = {m for p in record["summary"]["points"] for m in p["certified"]}
    assert methods == {"lmt", "exact"}


def test_the_bounds_are_not_vacuous_on_the_tiny_net(tiny_run):
    accuracies = [p["robust_accuracy"] for p in tiny_run[3]["summary"]["points"]]
    assert max(accuracies) > 0 and min(accuracies) < max(accuracies)


def test_reported_accuracies_equal_rerunning_the_model_on_saved_adversarial_examples(tiny_run):
    model, data, out, record = tiny_run
    saved = safe_torch_load(out / "adversarial.pt")
    assert torch.equal(saved["x"], data.images) and torch.equal(saved["labels"], data.labels)
    with torch.no_grad():
        for point in record["summary"]["points"]:
            x_adv = saved["x_adv"][point["threat"]]
            assert int((model(x_adv).argmax(dim=1) == data.labels).sum()) / len(data.labels) == point["robust_accuracy"]
        for level in record["summary"]["union"]:
            x_adv = saved["union"][f"level{level['level']}"]
            assert int((model(x_adv).argmax(dim=1) == data.labels).sum()) / len(data.labels) == level["robust_accuracy"]


def test_saved_adversarial_examples_stay_inside_their_budgets(tiny_run):
    _, data, out, record = tiny_run
    saved = safe_torch_load(out / "adversarial.pt")
    for point in record["summary"]["points"]:
        delta = (saved["x_adv"][point["threat"]] - data.images).flatten(1)
        norms = delta.abs().amax(dim=1) if point["norm"] == "linf" else delta.norm(dim=1)
        assert bool((norms <= point["eps"] * (1 + 1e-5) + 1e-6).all()), point["threat"]


def test_union_is_robust_only_where_every_threat_is(tiny_run):
    _, _, _, record = tiny_run
    rows = record["examples"]
    for level in record["summary"]["union"]:
        expected = sum(all(r["robust"][t] for t in level["threats"]) for r in rows) / len(rows)
        assert level["robust_accuracy"] == pytest.approx(expected)


def test_outputs_are_written(tiny_run):
    out = tiny_run[2]
    for name in ("results.json", "robustness.png", "examples.png", "adversarial.pt"):
        assert (out / name).stat().st_size > 500, name
    assert json.loads((out / "results.json").read_text())["command"] == "evaluate"


def _comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("timings", "created")}


class _Interrupt(Exception):
    pass


def test_an_interrupted_run_resumes_to_the_same_results_without_redoing_chunks(tmp_path):
    model = _tiny_net(3)
    data = _data(model, n=6, seed=4)
    config = EvaluateConfig(eps={"linf": (0.05, 0.2), "l2": (1.0,)}, certify=("lmt",), **LIGHT)
    whole = evaluate(model, data, tmp_path / "whole", config)

    def stop(key: str) -> None:
        raise _Interrupt(key)

    with pytest.raises(_Interrupt):
        evaluate(model, data, tmp_path / "cut", config, on_chunk=stop)
    redone: list[str] = []
    resumed = evaluate(model, data, tmp_path / "cut", config, resume=True, on_chunk=redone.append)
    assert _comparable(resumed) == _comparable(whole)
    saved_chunks = len(list((tmp_path / "whole" / "state").glob("*.pt")))
    assert len(redone) == saved_chunks - 1


def test_resume_refuses_different_settings(tmp_path):
    model = _tiny_net()
    data = _data(model, n=3)
    config = EvaluateConfig(threats=("linf",), eps={"linf": (0.1,), "l2": (1.0,)}, certify=(), **LIGHT)
    evaluate(model, data, tmp_path, config)
    with pytest.raises(InvalidInputError, match="steps"):
        evaluate(model, data, tmp_path, EvaluateConfig(**{**config.__dict__, "steps": 6}), resume=True)
    with pytest.raises(InvalidInputError, match="--resume"):
        evaluate(model, data, tmp_path, config)


def test_a_certificate_above_the_empirical_accuracy_is_a_hard_error(tmp_path):
    def overclaim(model, norm, time_limit):
        def certify(x, y):
            pred = model(x).argmax(dim=1)
            return Certificate("overclaim", norm, torch.full((x.shape[0],), 10.0), torch.full((x.shape[0],), float("inf")),
                               ["certified"] * x.shape[0], pred, y, 0.0)
        return certify

    specs = {**CERTIFIERS, "overclaim": CertifierSpec("overclaim", ("linf",), lambda m, s: None, overclaim)}
    model = _tiny_net()
    config = EvaluateConfig(threats=("linf",), eps={"linf": (0.3,), "l2": (1.0,)}, certify=("overclaim",), **LIGHT)
    with pytest.raises(UnsoundResultError, match="overclaim"):
        evaluate(model, _data(model), tmp_path, config, certifiers=specs)


def test_bundled_lmt_model_keeps_empirical_above_certified(tmp_path):
    from mistered.data import load_dataset
    from mistered.models import load_model

    model = load_model("mnist-lmt")
    data = load_dataset("mnist-5k", "test").subset(6)
    config = EvaluateConfig(threats=("l2",), eps={"linf": (0.1,), "l2": (0.5, 1.5)}, certify=("lmt", "exact"),
                            steps=5, square_queries=0, cw=False, autoattack="off", batch_size=6)
    record = evaluate(model, data, tmp_path, config, model_name="mnist-lmt")
    for point in record["summary"]["points"]:
        assert point["certified"]["lmt"]["accuracy"] <= point["robust_accuracy"]
    assert record["summary"]["points"][0]["certified"]["lmt"]["accuracy"] > 0
    exact = [p for p in record["summary"]["certifiers"] if p["method"] == "exact"]
    assert exact and not exact[0]["applies"] and "ReLUs" in exact[0]["reason"]


def test_bundled_linf_dist_model_keeps_empirical_above_certified(tmp_path):
    from mistered.data import load_dataset
    from mistered.models import load_model

    model = load_model("mnist-linf-dist")
    data = load_dataset("mnist-5k", "test").subset(8)
    config = EvaluateConfig(threats=("linf",), eps={"linf": (0.05, 0.2), "l2": (1.0,)}, certify=("linf-dist", "lmt"),
                            steps=5, square_queries=0, cw=False, autoattack="off", batch_size=8)
    record = evaluate(model, data, tmp_path, config, model_name="mnist-linf-dist")
    for point in record["summary"]["points"]:
        assert point["certified"]["linf-dist"]["accuracy"] <= point["robust_accuracy"]
    assert record["summary"]["points"][0]["certified"]["linf-dist"]["accuracy"] > 0
    lmt = [p for p in record["summary"]["certifiers"] if p["method"] == "lmt"]
    assert lmt and not lmt[0]["applies"]


class _Softmaxed(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).softmax(dim=1)


class _Constant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([1.0, 0.0, 0.0]))

    def forward(self, x):
        return self.bias.expand(x.shape[0], 3) + 0 * x.flatten(1)[:, :1]


class _Noisy(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x + 0.01 * torch.randn_like(x))


def test_probability_outputs_are_warned_about():
    net = _tiny_net()
    data = _data(net)
    warnings = check_model_outputs(_Softmaxed(net), data.images, data.labels, 3)
    assert any("probabilities" in w for w in warnings) and len(warnings) == 1


def test_a_constant_model_is_warned_about():
    data = _data(_tiny_net())
    assert any("constant" in w for w in check_model_outputs(_Constant(), data.images, data.labels, 3))


def test_a_randomised_model_is_warned_about():
    net = _tiny_net()
    data = _data(net)
    assert any("randomised" in w for w in check_model_outputs(_Noisy(net), data.images, data.labels, 3))


def test_a_sound_deterministic_model_gets_no_warning():
    net = _tiny_net()
    data = _data(net)
    assert check_model_outputs(net, data.images, data.labels, 3) == []
