"""One validation rule at every certifier and estimator entry point (issue #14, item 7): labels against the
model's classes, label dtypes, empty batches, float64 images, and models whose layers cannot be read."""

import pytest
import torch
from torch import nn

from mistered.certify.exact import certify_geocert, geocert
from mistered.models.linf_dist.hybrid import LinfDistHybrid
from mistered.certify.lipschitz.linf_dist import certify_linf_dist_hybrid, hybrid_margin_lower_bound
from mistered.models.linf_dist.nets import LinfDistNet
from mistered.certify.lipschitz.linf_dist import certify_linf_dist
from mistered.certify.lipschitz.lmt import LMTCertifier, certify_lmt
from mistered.certify.lipschitz.local import estimate_lipschitz
from mistered.certify.exact.mip import mindist_mip
from mistered.errors import InvalidInputError, UnsupportedLayerError
from mistered.models.normalized import Normalized

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

K = 10


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, K)).eval()


def _linf_dist_net() -> nn.Module:
    torch.manual_seed(0)
    return LinfDistNet((1, 2, 2), K, depth=2, width=6)


def _hybrid() -> nn.Module:
    torch.manual_seed(0)
    return LinfDistHybrid((1, 2, 2), K, depth=1, width=6, head_hidden=4)


def _batch(n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 2, 2, generator=g), torch.randint(0, K, (n,), generator=g)


#: name -> certify(x, y): every certifier entry point that takes labels
CERTIFY = {
    "lmt": lambda x, y: LMTCertifier(_net()).certify(x, y),
    "lmt-pairwise": lambda x, y: certify_lmt(_net(), x, y, pairwise=True),
    "linf-dist": lambda x, y: certify_linf_dist(_linf_dist_net(), x, y),
    "linf-dist-hybrid": lambda x, y: certify_linf_dist_hybrid(_hybrid(), x, y, bisection_steps=4),
    "geocert": lambda x, y: certify_geocert(_net(), x, y, norm="linf", seed_search=False),
}


@pytest.mark.parametrize("name", CERTIFY)
def test_label_11_on_a_10_class_model_is_an_error_not_a_certificate(name):
    x, y = _batch()
    y[1] = 11
    with pytest.raises(InvalidInputError, match=r"labels must lie in \[0, 10\) for a model with 10 classes"):
        CERTIFY[name](x, y)


def test_hybrid_margin_bound_refuses_label_11():
    x, y = _batch()
    y[0] = 11
    with pytest.raises(InvalidInputError, match=r"\[0, 10\)"):
        hybrid_margin_lower_bound(_hybrid(), x, y, 0.1)


@pytest.mark.parametrize("name", CERTIFY)
@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.uint8])
def test_integer_labels_of_any_dtype_certify_as_int64(name, dtype):
    x, y = _batch()
    reference, cert = CERTIFY[name](x, y), CERTIFY[name](x, y.to(dtype))
    assert torch.equal(cert.radius, reference.radius) and cert.status == reference.status
    assert cert.labels.dtype == torch.int64


@pytest.mark.parametrize("name", CERTIFY)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_labels_that_are_not_integers_are_refused(name, dtype):
    x, y = _batch()
    with pytest.raises(InvalidInputError, match="integer class indices"):
        CERTIFY[name](x, y.to(dtype))


@pytest.mark.parametrize("name", CERTIFY)
def test_batch_size_disagreement_is_refused(name):
    x, y = _batch()
    with pytest.raises(InvalidInputError, match=r"labels must have shape \(3,\)"):
        CERTIFY[name](x, y[:2])


@pytest.mark.parametrize("name", CERTIFY)
def test_nan_images_are_refused(name):
    x, y = _batch()
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(InvalidInputError, match="finite"):
        CERTIFY[name](x, y)


@pytest.mark.parametrize("name", CERTIFY)
def test_an_empty_batch_gives_an_empty_certificate(name):
    cert = CERTIFY[name](torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.long))
    assert cert.radius.shape == cert.upper.shape == cert.predictions.shape == cert.labels.shape == (0,)
    assert cert.status == [] and cert.to_json() == []


@pytest.mark.parametrize("name", CERTIFY)
def test_float64_images_give_the_float32_certificate(name):
    x, y = _batch()
    reference, cert = CERTIFY[name](x, y), CERTIFY[name](x.double(), y)
    assert torch.equal(cert.radius, reference.radius) and cert.status == reference.status


@pytest.mark.parametrize("make, words", [
    (lambda net: torch.jit.script(net), "a TorchScript module"),
    (lambda net: torch.jit.trace(net, torch.rand(1, 1, 2, 2)), "a TorchScript module"),
    (lambda net: torch.fx.symbolic_trace(net), "a torch.fx / torch.export GraphModule"),
    (lambda net: torch.export.export(net, (torch.rand(2, 1, 2, 2),)).module(), "a torch.fx / torch.export GraphModule"),
    (lambda net: Normalized(torch.jit.script(net), [0.5], [0.25]), "a TorchScript module .* inside Normalized"),
])
def test_lmt_refuses_a_model_whose_layers_it_cannot_read(make, words):
    with pytest.raises(UnsupportedLayerError, match=f"LMT needs an nn.Module made of .*; got {words}"):
        LMTCertifier(make(_net()))


def test_lmt_refuses_an_exported_program():
    program = torch.export.export(_net(), (torch.rand(2, 1, 2, 2),))
    with pytest.raises(UnsupportedLayerError, match="LMT needs .*; got a torch.export ExportedProgram"):
        LMTCertifier(program)


def test_lmt_still_names_an_unsupported_layer():
    with pytest.raises(UnsupportedLayerError, match="layer 'model.1' .*GELU"):
        LMTCertifier(nn.Sequential(nn.Flatten(), nn.GELU(), nn.Linear(4, K))).certify(*_batch())


def test_geocert_and_the_estimators_refuse_a_torchscript_model():
    x, y = _batch()
    scripted = torch.jit.script(_net())
    with pytest.raises(UnsupportedLayerError, match="GeoCert.*; got a TorchScript module"):
        certify_geocert(scripted, x, y, norm="linf")
    with pytest.raises(UnsupportedLayerError, match="LipMIP.*; got a TorchScript module"):
        estimate_lipschitz(scripted, x, 0.1, method="naive")


def test_linf_dist_names_a_torchscript_model():
    with pytest.raises(UnsupportedLayerError, match="got a TorchScript module"):
        certify_linf_dist(torch.jit.script(_net()), *_batch())


def test_the_evaluation_plan_gives_reasons_for_a_torchscript_model_instead_of_crashing():
    from mistered.evaluate.plan import plan_certifiers

    plans = plan_certifiers(torch.jit.script(_net()), (1, 2, 2), ["l2", "linf"], ["lmt", "linf-dist", "exact"])
    reasons = {(p.method, p.norm): p.reason for p in plans if not p.applies}
    assert "TorchScript" in reasons[("lmt", "l2")] and "TorchScript" in reasons[("exact", "linf")]
    assert "TorchScript" in reasons[("linf-dist", "linf")]


def test_exact_distances_refuse_nan_and_out_of_domain_points():
    net = _net()
    for bad, words in [(torch.full((1, 2, 2), float("nan")), "finite"), (torch.full((1, 2, 2), 2.0), r"\[0, 1\]")]:
        with pytest.raises(InvalidInputError, match=words):
            mindist_mip(net, bad)
        with pytest.raises(InvalidInputError, match=words):
            geocert(net, bad, norm="linf")


def test_geocert_refuses_an_x_adv_of_another_shape():
    x, y = _batch()
    with pytest.raises(InvalidInputError, match="x_adv must have the shape of x"):
        certify_geocert(_net(), x, y, norm="linf", x_adv=x[:2])


@pytest.mark.parametrize("method", ["naive", "fastlip", "lipmip"])
def test_the_lipschitz_estimators_take_an_empty_batch_and_refuse_nan(method):
    assert estimate_lipschitz(_net(), torch.zeros(0, 1, 2, 2), 0.1, method=method).value.shape == (0,)
    with pytest.raises(InvalidInputError, match="x0 must be finite"):
        estimate_lipschitz(_net(), torch.full((1, 1, 2, 2), float("nan")), 0.1, method=method)
