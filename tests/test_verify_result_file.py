"""VNN-COMP result files: the format, exact values, finite numbers; a written counterexample passes an independent
check (onnxruntime on the file's X values, the VNNLIB constraints on its Y values)."""

import json

import numpy as np
import pytest
import torch

from _verify_nets import export_onnx, mlp, vnnlib
from mistered.certify.verify import format_result, parse_result, parse_vnnlib, verify, write_result_file
from mistered.models import load_model
from mistered.errors import InvalidInputError


def test_sat_lists_every_input_then_every_output_exactly():
    x = torch.tensor([0.05000000074505806, -1e-7, 3.0], dtype=torch.float64)
    y = torch.tensor([0.1, -2.5], dtype=torch.float64)
    text = format_result("sat", x, y)
    assert text.splitlines()[:3] == ["sat", "((X_0 0.05000000074505806)", " (X_1 -1e-07)"]
    assert text.rstrip().endswith("(Y_1 -2.5))")
    status, x2, y2 = parse_result(text)
    assert status == "sat" and x2 == x.tolist() and y2 == y.tolist()


@pytest.mark.parametrize("status", ["unsat", "timeout", "unknown"])
def test_other_answers_are_one_line(status):
    assert format_result(status) == f"{status}\n" and parse_result(f"{status}\n") == (status, [], [])


def test_vnncomp_2021_words_are_read_too():
    assert parse_result("holds\n")[0] == "unsat" and parse_result("violated\n((X_0 1)\n (Y_0 2))")[0] == "sat"


@pytest.mark.parametrize("args, message", [
    (("maybe",), "status must be one of"),
    (("sat",), "needs the counterexample"),
    (("unsat", torch.zeros(1), torch.zeros(1)), "only a sat result"),
    (("sat", torch.tensor([float("nan")]), torch.zeros(1)), "finite"),
])
def test_bad_results_are_refused(args, message):
    with pytest.raises(InvalidInputError, match=message):
        format_result(*args)


def test_parse_refuses_gaps_and_unknown_words():
    with pytest.raises(InvalidInputError, match="X assignments"):
        parse_result("sat\n((X_0 1)\n (X_2 1)\n (Y_0 0))")
    with pytest.raises(InvalidInputError, match="starts with one of"):
        parse_result("proved\n")


def test_a_written_counterexample_passes_an_independent_onnxruntime_check(tmp_path):
    import onnxruntime

    net = mlp([4, 16, 3], seed=5, flatten=True)
    path = export_onnx(net, tmp_path / "net.onnx", (1, 2, 2), dynamic=False)
    text = vnnlib([0.0] * 4, [1.0] * 4, 3, [["(>= Y_1 Y_0)", "(>= Y_1 Y_2)"], ["(>= Y_2 Y_0)", "(>= Y_2 Y_1)"]])
    prop = parse_vnnlib(text)
    result = verify(load_model(path, device="cpu"), prop, 30)
    assert result.status == "sat"  # an output other than Y_0 is largest somewhere in the unit cube
    write_result_file(tmp_path / "out.txt", result)
    status, x, y = parse_result((tmp_path / "out.txt").read_text())
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"x": np.array(x, dtype=np.float32).reshape(1, 1, 2, 2)})[0].reshape(-1)
    assert ours.astype(np.float64).tolist() == y  # the outputs written are onnxruntime's, exactly
    assert all(0.0 <= v <= 1.0 for v in x)
    assert (ours[1] >= ours[0] and ours[1] >= ours[2]) or (ours[2] >= ours[0] and ours[2] >= ours[1])
    json.dumps(result.to_json(), allow_nan=False)
