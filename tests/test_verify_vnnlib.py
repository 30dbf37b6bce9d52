"""The VNNLIB parser: every construct of VNN-COMP 2021-2024 files, gzip, and one clear error per mistake."""

import gzip
import re

import pytest
import torch

from mistered.certify.verify import Property, VnnlibError, parse_vnnlib, read_vnnlib
from mistered.errors import InvalidInputError

HEAD = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
BOX = "(assert (>= X_0 0.25))\n(assert (<= X_0 0.5))\n(assert (<= X_1 1))\n(assert (>= X_1 -1))\n"


def _rows(prop: Property, region: int = 0):
    return [(c.coef.tolist(), c.rhs.tolist()) for c in prop.regions[region].disjuncts]


def test_box_and_one_output_constraint_are_read_exactly():
    prop = parse_vnnlib(HEAD + BOX + "(assert (<= Y_0 Y_1))\n")
    assert (prop.num_inputs, prop.num_outputs, len(prop.regions)) == (2, 2, 1)
    region = prop.regions[0]
    assert region.lower.tolist() == [0.25, -1.0] and region.upper.tolist() == [0.5, 1.0]
    assert region.lower.dtype == torch.float64
    assert _rows(prop) == [([[1.0, -1.0]], [0.0])]


def test_the_box_is_the_files_own_bounds_never_clipped_to_pixels():
    prop = parse_vnnlib(HEAD + "(assert (>= X_0 -3.5))(assert (<= X_0 7))(assert (>= X_1 2))(assert (<= X_1 2))"
                        "(assert (>= Y_0 Y_1))")
    assert prop.regions[0].lower.tolist() == [-3.5, 2.0] and prop.regions[0].upper.tolist() == [7.0, 2.0]


def test_decimal_digits_are_kept_to_float64():
    text = HEAD + "(assert (>= X_0 0.05000000074505806))(assert (<= X_0 0.1))" + BOX[BOX.index("(assert (<= X_1"):]
    prop = parse_vnnlib(text + "(assert (>= Y_0 Y_1))")
    assert prop.regions[0].lower[0].item() == 0.05000000074505806


@pytest.mark.parametrize("atom, row, rhs", [
    ("(<= Y_0 Y_1)", [1.0, -1.0], 0.0),
    ("(>= Y_0 Y_1)", [-1.0, 1.0], 0.0),
    ("(< Y_0 0.5)", [1.0, 0.0], 0.5),
    ("(> 0.5 Y_1)", [0.0, 1.0], 0.5),
    ("(<= (+ Y_0 (* 2 Y_1) 1) 3)", [1.0, 2.0], 2.0),
    ("(<= (- Y_0 Y_1 1.5) (- 2))", [1.0, -1.0], -0.5),
    ("(>= (* Y_1 -0.5) -1e-3)", [0.0, 0.5], 1e-3),
    ("(<= (/ Y_0 4) 1)", [0.25, 0.0], 1.0),
])
def test_linear_output_terms_become_rows(atom, row, rhs):
    prop = parse_vnnlib(HEAD + BOX + f"(assert {atom})")
    [(coef, d)] = _rows(prop)
    assert coef == [row] and d == pytest.approx([rhs])


def test_equality_and_chains_give_one_row_per_side():
    assert _rows(parse_vnnlib(HEAD + BOX + "(assert (= Y_0 Y_1))")) == [([[1.0, -1.0], [-1.0, 1.0]], [0.0, 0.0])]
    assert _rows(parse_vnnlib(HEAD + BOX + "(assert (<= 0 Y_0 Y_1))")) == [([[-1.0, 0.0], [1.0, -1.0]], [0.0, 0.0])]


def test_output_disjunction_of_conjunctions_is_one_region_with_several_conjunctions():
    text = HEAD + BOX + "(assert (or (and (>= Y_0 Y_1) (<= Y_0 3)) (and (>= Y_1 0.5))))"
    prop = parse_vnnlib(text)
    assert len(prop.regions) == 1
    assert _rows(prop) == [([[-1.0, 1.0], [1.0, 0.0]], [0.0, 3.0]), ([[0.0, -1.0]], [-0.5])]


def test_several_input_regions_each_keep_their_own_output_conjunctions():
    text = HEAD + """(assert (or
        (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (<= Y_0 Y_1))
        (and (>= X_0 2) (<= X_0 3) (>= X_1 0) (<= X_1 1) (>= Y_0 5))
        (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (>= Y_1 7))))"""
    prop = parse_vnnlib(text)
    assert [r.lower.tolist() for r in prop.regions] == [[0.0, 0.0], [2.0, 0.0]]
    assert _rows(prop, 0) == [([[1.0, -1.0]], [0.0]), ([[0.0, -1.0]], [-7.0])]
    assert _rows(prop, 1) == [([[-1.0, 0.0]], [-5.0])]


def test_top_level_asserts_combine_as_a_product():
    inputs = ("(assert (or (and (>= X_0 0) (<= X_0 1)) (and (>= X_0 2) (<= X_0 3))))"
              "(assert (>= X_1 0))(assert (<= X_1 1))")
    prop = parse_vnnlib(HEAD + inputs + "(assert (or (<= Y_0 0) (<= Y_1 0)))")
    assert len(prop.regions) == 2 and all(len(r.disjuncts) == 2 for r in prop.regions)


def test_comments_blank_lines_and_smtlib_commands_are_ignored():
    text = "; a property\n\n" + HEAD + "; inputs\n" + BOX + "(assert (<= Y_0 Y_1)) ; output\n(check-sat)\n(get-model)\n"
    assert len(parse_vnnlib(text).regions) == 1


def test_a_disjunct_with_an_empty_box_is_dropped():
    text = HEAD + "(assert (>= X_1 0))(assert (<= X_1 1))(assert (or (and (>= X_0 1) (<= X_0 0)) (and (>= X_0 0) " \
                  "(<= X_0 1))))(assert (<= Y_0 0))"
    prop = parse_vnnlib(text)
    assert len(prop.regions) == 1 and prop.regions[0].upper[0].item() == 1.0


def test_plain_and_gzipped_files_are_read_alike(tmp_path):
    text = HEAD + BOX + "(assert (<= Y_0 Y_1))\n"
    (tmp_path / "p.vnnlib").write_text(text)
    (tmp_path / "p.vnnlib.gz").write_bytes(gzip.compress(text.encode()))
    plain, packed = read_vnnlib(tmp_path / "p.vnnlib"), read_vnnlib(tmp_path / "p.vnnlib.gz")
    assert torch.equal(plain.regions[0].lower, packed.regions[0].lower) and _rows(plain) == _rows(packed)


def test_an_unreadable_file_is_one_error(tmp_path):
    with pytest.raises(InvalidInputError, match="cannot be read"):
        read_vnnlib(tmp_path / "missing.vnnlib")
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b" + b"not gzip")
    with pytest.raises(InvalidInputError, match="corrupt gzip"):
        read_vnnlib(tmp_path / "bad.gz")


@pytest.mark.parametrize("text, where, message", [
    (HEAD + "(assert (<= X_0 1)", "5:1", "never closed"),
    (HEAD + "(assert (<= X_0 1)))", "5:20", "without a matching"),
    (HEAD + "(assert (<= X_2 1))", "5:13", "X_2 is used before it is declared"),
    (HEAD + "(assert (<= X_0 abc))", "5:17", "unknown name 'abc'"),
    (HEAD + "(declare-const X_2 Int)", "5:20", "must be declared Real"),
    (HEAD + "(declare-const Z_0 Real)", "5:16", "named X_i"),
    (HEAD + "(declare-const Y_1 Real)", "5:16", "declared twice"),
    (HEAD + BOX + "(assert (<= X_0 Y_0))", "9:9", "mixes inputs X and outputs Y"),
    (HEAD + BOX + "(assert (<= (* Y_0 Y_1) 1))", "9:13", "not linear"),
    (HEAD + BOX + "(assert (<= (* 2 X_0) 1))", "9:9", "bound one input"),
    (HEAD + BOX + "(assert (not (<= Y_0 1)))", "9:9", "expected a comparison"),
    (HEAD + BOX + "(push 1)", "9:1", "expected (declare-const"),
    (HEAD + BOX + "(assert (<= Y_0 inf))", "9:17", "unknown name 'inf'"),
    (HEAD + BOX + "(assert (<= Y_0 1e999))", "9:17", "not finite"),
    (HEAD + BOX + "(assert (<= (/ Y_0 0) 1))", "9:13", "division by zero"),
    (HEAD + BOX + "(assert (<= Y_0))", "9:9", "at least two"),
    (HEAD + BOX + "(assert (or))", "9:9", "at least one formula"),
])
def test_each_mistake_is_one_error_naming_line_and_column(text, where, message):
    with pytest.raises(VnnlibError) as error:
        parse_vnnlib(text, "p.vnnlib")
    assert str(error.value).startswith(f"p.vnnlib:{where}: ") and message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("text, message", [
    (HEAD + "(assert (>= X_0 0))(assert (<= X_0 1))(assert (>= X_1 0))(assert (<= Y_0 1))", "X_1 has no upper bound"),
    ("(declare-const X_1 Real)(declare-const Y_0 Real)(assert (<= Y_0 1))", "X_0 is not declared"),
    ("(declare-const X_0 Real)(assert (>= X_0 0))(assert (<= X_0 1))", "no Y_i variables"),
    (HEAD + "(assert (>= X_0 1))(assert (<= X_0 0))(assert (>= X_1 0))(assert (<= X_1 1))(assert (<= Y_0 1))",
     "no input satisfies"),
    (HEAD + BOX + "(assert (<= 2 1))", "constant comparison is false"),
])
def test_whole_file_mistakes_name_the_file(text, message):
    with pytest.raises(VnnlibError, match=re.escape(message)) as error:
        parse_vnnlib(text, "p.vnnlib")
    assert str(error.value).startswith("p.vnnlib: ")


def test_a_constant_comparison_that_holds_is_dropped():
    assert _rows(parse_vnnlib(HEAD + BOX + "(assert (<= 1 2))(assert (<= Y_0 1))")) == [([[1.0, 0.0]], [1.0])]


def test_a_property_without_output_constraints_is_a_conjunction_without_rows():
    prop = parse_vnnlib(HEAD + BOX)
    assert prop.regions[0].disjuncts[0].rows == 0
    assert prop.regions[0].violation(torch.zeros(3, 2)).tolist() == [[float("-inf")]] * 3
