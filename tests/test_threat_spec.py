"""The threat spec grammar and presets: what parses to what, round trips, and errors with a caret."""

import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mistered.errors import ThreatSpecError
from mistered.threats import PRESETS, Additive, Affine, Flow, PerceptualBudget, Sequence, Union, parse_threat

LINF = Additive("linf", 0.3)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("linf(0.3)", LINF),
        ("l2(2.0)", Additive("l2", 2.0)),
        ("linf(8/255)", Additive("linf", 8 / 255)),
        ("linf(eps=1e-2)", Additive("linf", 0.01)),
        ("affine(10deg,0.1)", Affine(10.0, 0.1, 0.0)),
        ("affine(angle=10deg, translation=0.1, scale=0.1)", Affine(10.0, 0.1, 0.1)),
        ("affine(5, scale=0.2)", Affine(5.0, 0.1, 0.2)),
        ("rotation(30deg)", Affine(30.0, 0.0, 0.0)),
        ("translation(0.1)", Affine(0.0, 0.1, 0.0)),
        ("scale(0.2)", Affine(0.0, 0.0, 0.2)),
        ("flow(0.05)", Flow(0.05)),
        ("flow(0.05, smoothness=0.01)", Flow(0.05, 0.01)),
        (" flow( 0.05 ) >> linf( 0.3 ) ", Sequence((Flow(0.05), LINF))),
        ("linf(0.3)||l2(2)", Union((LINF, Additive("l2", 2.0)))),
        ("stadv>>linf-small", Sequence((Flow(0.05, 0.01), Additive("linf", 0.1)))),
        ("linf(0.3)|dssim<=0.05", PerceptualBudget(LINF, "dssim", 0.05)),
        ("linf(0.3)|ms-dssim<=0.05", PerceptualBudget(LINF, "ms-dssim", 0.05)),
        ("linf(0.3)|lpips-vgg<=0.1", PerceptualBudget(LINF, "lpips-vgg", 0.1)),
        ("linf(0.3)|lpips-self<=0.5", PerceptualBudget(LINF, "lpips-self", 0.5)),
    ],
)
def test_spec_parses_to_the_threat(spec, expected):
    assert parse_threat(spec) == expected


def test_sequence_binds_tighter_than_union():
    a, b, c = Flow(0.05), LINF, Affine(10.0, 0.1)
    assert parse_threat("flow(0.05)>>linf(0.3)||affine(10deg,0.1)") == Union((Sequence((a, b)), c))
    assert parse_threat("flow(0.05)>>(linf(0.3)||affine(10deg,0.1))") == Sequence((a, Union((b, c))))


def test_perceptual_suffix_bounds_the_whole_chain():
    threat = parse_threat("flow(0.05)>>affine(10deg,0.1)>>linf(0.3)|lpips<=0.1")
    assert threat == PerceptualBudget(Sequence((Flow(0.05), Affine(10.0, 0.1), LINF)), "lpips", 0.1)


def test_perceptual_suffix_binds_tighter_than_union():
    assert parse_threat("linf(0.3)||flow(0.05)|dssim<=0.05") == Union((LINF, PerceptualBudget(Flow(0.05), "dssim", 0.05)))
    bounded_union = parse_threat("(linf(0.3)||flow(0.05))|dssim<=0.05")
    assert bounded_union == PerceptualBudget(Union((LINF, Flow(0.05))), "dssim", 0.05)


def test_ssim_bound_still_parses_as_the_dissimilarity_with_a_warning_saying_what_it_means():
    with pytest.warns(FutureWarning, match=r"it means dssim = 1 - SSIM .* so 'ssim<=b' allows SSIM >= 1 - b; write 'dssim<=b'"):
        threat = parse_threat("linf(0.3)|ssim<=0.05")
    assert threat == PerceptualBudget(LINF, "dssim", 0.05) and threat.name == "linf(0.3)|dssim<=0.05"


def test_the_new_names_parse_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse_threat("combined")
        parse_threat("linf(0.3)|dssim<=0.05|lpips<=0.02")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_parses_and_its_name_round_trips(name):
    threat = parse_threat(name)
    assert threat == parse_threat(PRESETS[name])
    assert parse_threat(threat.name) == threat


def test_combined_preset_is_smooth_flow_then_affine_then_linf_under_lpips():
    threat = parse_threat("combined")
    assert isinstance(threat, PerceptualBudget) and threat.metric == "lpips"
    assert [type(c) for c in threat.threat.components] == [Flow, Affine, Additive]
    assert threat.threat.components[0].smoothness is not None


def test_stadv_preset_bounds_the_flow_smoothness():
    assert parse_threat("stadv").smoothness is not None


@pytest.mark.parametrize(
    "spec, fragment, caret",
    [
        ("foo", "unknown threat preset 'foo'; presets: linf,", 0),
        ("linf(0.3)>>bogus(1)", "unknown threat function 'bogus'", 11),
        ("linf(-0.3)", "must be non-negative", 5),
        ("flow(0.05)>>linf(0.3)|lpips<=-0.1", "bound must be non-negative", 29),
        ("linf(0.3", "expected ',' or ')'", 8),
        ("linf(0.3)>>", "expected a threat", 11),
        ("linf(0.3))", "expected '>>', '||', '|' or the end", 9),
        ("linf()", "needs its 'eps' argument", 0),
        ("linf(3deg)", "takes no unit", 5),
        ("flow(0.05, eps=0.1)", "given twice", 11),
        ("flow(0.05, radius=0.1)", "has no argument 'radius'", 11),
        ("flow(smoothness=0.1, 0.2)", "positional argument after a keyword", 21),
        ("affine(1,2,3,4)", "too many arguments", 13),
        ("linf(1/0)", "non-zero number after '/'", 7),
        ("linf(0.3)|psnr<=3", "expected a distance after '|'", 10),
        ("linf(0.3)|ms-ssim<=0.1", "a similarity: bound its distance 'ms-dssim'", 10),
        ("linf(0.3)|dssim<=3", "a dssim bound must lie in [0, 2]", 10),
        ("linf(0.3)|linf<=1.5", "a linf bound must lie in [0, 1]", 10),
        ("linf(0.3) & l2(1)", "unexpected character '&'", 10),
        ("rotation(270deg)", "at most 180", 0),
        ("linf", None, None),  # a preset: no error
    ],
)
def test_bad_specs_raise_one_line_marking_the_offending_position(spec, fragment, caret):
    if fragment is None:
        parse_threat(spec)
        return
    with pytest.raises(ThreatSpecError) as info:
        parse_threat(spec)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    marked = spec[:caret] + "\u2192" + spec[caret:]
    assert message.endswith(f"(at position {caret} of the spec: {marked!r})")


@pytest.mark.parametrize("spec", ["", "   ", None, 3.0])
def test_empty_or_non_string_specs_are_rejected(spec):
    with pytest.raises(ThreatSpecError):
        parse_threat(spec)


def test_deep_nesting_is_rejected_not_a_recursion_error():
    with pytest.raises(ThreatSpecError, match="nested deeper"):
        parse_threat("(" * 200 + "linf(0.1)" + ")" * 200)


_budget = st.floats(min_value=0.0, max_value=10.0, allow_nan=False, allow_infinity=False)
_angle = st.floats(min_value=0.0, max_value=180.0, allow_nan=False)
_leaf = st.one_of(
    st.builds(Additive, st.sampled_from(["linf", "l2"]), _budget),
    st.builds(Affine, _angle, _budget, _budget),
    st.builds(Flow, _budget, st.none() | _budget),
)
_threats = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda items: Sequence(tuple(items))),
        st.lists(inner, min_size=1, max_size=3).map(Union),
        st.builds(PerceptualBudget, inner, st.sampled_from(["lpips", "lpips-vgg", "l2"]), _budget),
        st.builds(PerceptualBudget, inner, st.sampled_from(["dssim", "ms-dssim", "linf"]),
                  st.floats(min_value=0.0, max_value=1.0, allow_nan=False)),
    ),
    max_leaves=6,
)


def _canonical(threat) -> bool:
    """No one-member Sequence/Union anywhere (those print, and so parse, as their only member)."""
    if isinstance(threat, Sequence):
        return len(threat.components) > 1 and all(map(_canonical, threat.components))
    if isinstance(threat, Union):
        return len(threat.choices) > 1 and all(map(_canonical, threat.choices))
    if isinstance(threat, PerceptualBudget):
        return _canonical(threat.threat)
    return True


@settings(max_examples=80, deadline=None)
@given(_threats)
def test_the_name_of_any_threat_parses_back_to_an_equal_threat(threat):
    parsed = parse_threat(threat.name)
    assert parsed.name == threat.name and parse_threat(parsed.name) == parsed
    if _canonical(threat):
        assert parsed == threat


_spec_alphabet = st.sampled_from(list("()<>|=,/.-+ e") + ["linf", "l2", "flow", "affine", "rotation", "deg",
                                                         "lpips", "ssim", "dssim", "lpips-vgg", "smoothness",
                                                         "0.1", "8", "255",
                                                         "combined", "stadv", ">>", "||", "<=", "\t", "é", "٣"])


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=30), st.lists(_spec_alphabet, max_size=14).map("".join)))
def test_garbage_never_raises_anything_but_a_threat_spec_error(text):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "ssim<=" is deprecated, not an error
            parse_threat(text)
    except ThreatSpecError:
        pass
