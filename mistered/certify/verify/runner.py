"""Running many verification instances: per-instance files, ``results.csv``, a summary with VNN-COMP's score,
resuming an interrupted run, and sharding over ``torchrun`` processes.

Each finished instance is written at once (atomically) to ``OUT/instances/NNNN-<model>-<property>.json`` (its
row and full result) and ``OUT/instances/NNNN-<model>-<property>.txt`` (the VNN-COMP result file);
``OUT/results.csv`` is rewritten from them, so an interrupted run loses at most the instance it was working on, and
a resumed one skips every instance already there. The settings the answers depend on are saved in
``OUT/instances/settings.json``; resuming with other settings is an error naming them.

With ``W`` processes, rank ``r`` takes instances ``r, r + W, r + 2W, ...`` (of the whole list, so every rank
agrees whichever are already done); the rows are gathered on rank 0, which writes the merged ``results.csv``.

Score (VNN-COMP's): +10 per ``sat``/``unsat`` answer, -150 per answer contradicting a known expected answer
(``wrong``); ``timeout``, ``unknown`` and ``error`` score 0. A ``sat`` always carries a re-checked counterexample.

Example:
    >>> rows = run_jobs(jobs, solve, Path("out"), settings={"timeout": 60})
    >>> summarize(rows)["score"]
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import InvalidInputError, MisteredError
from ...io import atomic_write_json, atomic_write_text
from ...sharding import SINGLE, ProcessGroup, gather_objects
from .result_file import result_text
from .verifier import VerificationResult

__all__ = ["Job", "COLUMNS", "run_jobs", "summarize", "write_results_csv", "SCORE_CORRECT", "SCORE_WRONG"]

logger = logging.getLogger(__name__)

SCORE_CORRECT, SCORE_WRONG = 10, -150

#: The columns of results.csv.
COLUMNS = ("index", "model", "property", "timeout", "status", "seconds", "expected", "wrong", "score", "lower_bound",
           "upper_bound", "result_file", "message")


@dataclass(frozen=True)
class Job:
    """One instance to run: ``index`` (its position), the ``model`` and ``property`` as the user named them, its
    ``timeout`` in seconds and its ``expected`` answer (``"sat"``/``"unsat"`` or ``None``)."""

    index: int
    model: str
    property: str
    timeout: float
    expected: str | None = None


def _stem(name: str) -> str:
    """A file-name-safe short form of a model or property name: no folders, no .onnx/.vnnlib/.gz."""
    base = re.sub(r"(\.(onnx|vnnlib|gz))+$", "", name.replace("\\", "/").rsplit("/", 1)[-1])
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base)[:60] or "instance"


def _row(job: Job, status: str, seconds: float, result_file: str, message: str,
         result: VerificationResult | None) -> dict[str, Any]:
    decided = status in ("sat", "unsat")
    wrong = decided and job.expected in ("sat", "unsat") and status != job.expected
    low, high = (result.lower_bound, result.upper_bound) if result is not None else (None, None)
    finite = lambda v: v if v is not None and abs(v) != float("inf") else None  # noqa: E731
    return {"index": job.index, "model": job.model, "property": job.property, "timeout": job.timeout,
            "status": status, "seconds": round(seconds, 4), "expected": job.expected or "", "wrong": wrong,
            "score": SCORE_WRONG if wrong else SCORE_CORRECT if decided else 0, "lower_bound": finite(low),
            "upper_bound": finite(high), "result_file": result_file, "message": message}


def _run_one(job: Job, solve: Callable[[Job], VerificationResult], folder: Path) -> dict[str, Any]:
    name = f"{job.index:04d}-{_stem(job.model)}-{_stem(job.property)}"
    started = time.perf_counter()
    result, message, text_file = None, "", ""
    try:
        result = solve(job)
        status = result.status
        atomic_write_text(folder / f"{name}.txt", result_text(result))
        text_file = f"instances/{name}.txt"
        if status in ("sat", "unsat") and job.expected in ("sat", "unsat") and status != job.expected:
            message = ("counterexample re-checked; the expected answer looks wrong" if status == "sat" else
                       f"expected {job.expected}")
    except MisteredError as error:
        status, message = "error", str(error)
    except Exception as error:  # noqa: BLE001 - one instance's bug must not end a benchmark run; it is recorded
        logger.warning("instance %d failed:\n%s", job.index, traceback.format_exc())
        status, message = "error", f"{type(error).__name__}: {error}"
    seconds = result.seconds if result is not None else time.perf_counter() - started
    row = _row(job, status, seconds, text_file, message, result)
    atomic_write_json(folder / f"{name}.json", {"row": row, "result": result.to_json() if result else None})
    return row


def _load_done(folder: Path, jobs: list[Job]) -> dict[int, dict[str, Any]]:
    done = {}
    for path in sorted(folder.glob("*.json")):
        if path.name == "settings.json":
            continue
        row = json.loads(path.read_text(encoding="utf-8"))["row"]
        index = int(row["index"])
        if index >= len(jobs) or (row["model"], row["property"]) != (jobs[index].model, jobs[index].property):
            raise InvalidInputError(f"{path} is instance {index} of another benchmark ({row['model']}, "
                                    f"{row['property']}); resume in the folder of this benchmark's run")
        done[index] = row
    return done


def _check_settings(folder: Path, settings: dict[str, Any], resume: bool) -> None:
    path = folder / "settings.json"
    settings = json.loads(json.dumps(settings))
    if resume and path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        differ = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if differ:
            raise InvalidInputError(f"cannot resume: the run in {folder.parent} used other settings "
                                    f"({', '.join(differ)}); repeat its options or choose a new --out")
    atomic_write_json(path, settings)


def write_results_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` (sorted by index) as ``results.csv`` with :data:`COLUMNS` (atomically)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: r["index"]):
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})
    return atomic_write_text(path, buffer.getvalue())


def run_jobs(jobs: list[Job], solve: Callable[[Job], VerificationResult], out: Path, *, settings: dict[str, Any],
             resume: bool = False, group: ProcessGroup = SINGLE,
             on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run this process's share of ``jobs`` with ``solve`` and return every row (on rank 0: merged, in order).

    Args:
        jobs: the instances, ``jobs[i].index == i``.
        solve: runs one job within its ``timeout`` (raising :class:`MisteredError` for bad input: recorded as
            ``error``, and the run goes on).
        out: the run's folder (``instances/``, ``results.csv``).
        settings: what the answers depend on (checked on resume).
        resume: skip the instances already in ``out``; group: the processes sharing the work.
        on_row: called with each row this process finishes (progress).
    """
    folder = out / "instances"
    if group.rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        _check_settings(folder, settings, resume)
    gather_objects(None, group)  # every rank waits for rank 0's checks
    done = _load_done(folder, jobs) if resume else {}
    rows = []
    for job in jobs[group.rank :: group.world_size]:
        if job.index in done:
            continue
        row = _run_one(job, solve, folder)
        rows.append(row)
        if on_row is not None:
            on_row(row)
        if group.rank == 0:
            write_results_csv(out / "results.csv", list({**done, **{r["index"]: r for r in rows}}.values()))
    merged = dict(done)
    for share in gather_objects(rows, group):
        merged.update({r["index"]: r for r in share})
    ordered = [merged[i] for i in sorted(merged)]
    if group.rank == 0:
        write_results_csv(out / "results.csv", ordered)
    return ordered


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts (``verified`` = unsat, ``falsified`` = sat, ``timeout``, ``unknown``, ``error``), ``wrong``, the VNN-COMP
    ``score``, times (median and total of decided instances, the largest overrun of a time limit) and where the
    expected answers were known."""
    count = lambda s: sum(r["status"] == s for r in rows)  # noqa: E731
    decided = [r for r in rows if r["status"] in ("sat", "unsat")]
    times = [float(r["seconds"]) for r in decided]
    return {
        "instances": len(rows), "verified": count("unsat"), "falsified": count("sat"), "timeout": count("timeout"),
        "unknown": count("unknown"), "error": count("error"), "decided": len(decided),
        "wrong": sum(bool(r["wrong"]) for r in rows), "expected_known": sum(bool(r["expected"]) for r in rows),
        "score": sum(int(r["score"]) for r in rows),
        "median_seconds_decided": statistics.median(times) if times else None,
        "total_seconds": sum(float(r["seconds"]) for r in rows),
        "max_overrun_seconds": max([0.0] + [float(r["seconds"]) - float(r["timeout"]) for r in rows]),
    }
