"""Verification in the field's standard formats: VNNLIB properties in, VNN-COMP answers out.

Layout (imports flow downwards): :mod:`.solvers` (benchmark instances, data examples) → :mod:`.runner` (many
instances, results.csv, score, resume, sharding) and :mod:`.instances` (benchmark folders) → :mod:`.result_file`
(VNN-COMP result files) → :mod:`.verifier` (``verify``: attack, bounds, the complete step, one deadline) →
:mod:`.falsify` (PGD with surrogate gradients), :mod:`.recheck` (counterexamples re-checked by the model and
onnxruntime), :mod:`.incomplete` (CROWN / α-CROWN from :mod:`mistered.certify.bounds`), :mod:`.complete` (the
branch-and-bound hook) → :mod:`.network`, :mod:`.deadline` → :mod:`.vnnlib` / :mod:`.sexpr` (the parser) →
:mod:`.property` (the typed property).

Example:
    >>> prop = read_vnnlib("prop_0_0.05.vnnlib")
    >>> result = verify(load_model("mnist-net_256x2.onnx"), prop, timeout=60)
    >>> result.status                      # "sat", "unsat", "timeout" or "unknown"
    >>> write_result_file("out.txt", result)
"""

from .complete import CompleteOutcome, CompleteStep, OpenRegion
from .deadline import Deadline
from .falsify import AttackOptions, Falsifier
from .instances import Instance, find_instances, read_expected
from .network import Network, prepare_network
from .property import Conjunction, Property, Region, robustness_property
from .recheck import Counterexample, CounterexampleChecker
from .result_file import format_result, parse_result, write_result_file
from .runner import Job, run_jobs, summarize
from .solvers import BenchmarkSolver, ExampleSolver
from .verifier import STATUSES, VerificationResult, VerifyOptions, verify
from .vnnlib import VnnlibError, parse_vnnlib, read_vnnlib

__all__ = [
    "Conjunction", "Region", "Property", "robustness_property", "VnnlibError", "parse_vnnlib", "read_vnnlib",
    "Network", "prepare_network", "Deadline", "AttackOptions", "Falsifier", "Counterexample",
    "CounterexampleChecker", "CompleteStep", "CompleteOutcome", "OpenRegion", "STATUSES", "VerifyOptions",
    "VerificationResult", "verify", "format_result", "parse_result", "write_result_file", "Instance",
    "find_instances", "read_expected", "Job", "run_jobs", "summarize", "BenchmarkSolver", "ExampleSolver",
]
