"""The instances of a VNN-COMP benchmark folder, and the expected answers to score them against.

Layouts:

* VNN-COMP 2022 on: ``DIR/instances.csv`` with rows ``onnx/net.onnx,vnnlib/prop.vnnlib,timeout``;
* VNN-COMP 2021: flat, ``DIR/<name>_instances.csv`` (every such file, in name order) with rows
  ``net.onnx,prop.vnnlib,timeout``;
* a csv file itself (paths relative to its folder).

Paths are relative to the folder of the csv. A file the csv names may be stored gzip'd: ``net.onnx`` is found as
``net.onnx.gz`` too (and the other way round). Nothing is ever written into the benchmark folder; a gzip'd model
is decompressed into a cache folder the caller chooses (:func:`materialize`).

Example:
    >>> instances = find_instances("vnncomp2021-mnistfc")
    >>> instances[0].model, instances[0].property, instances[0].timeout
    ('mnist-net_256x2.onnx', 'prop_0_0.03.vnnlib', 120.0)
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ...errors import InvalidInputError

__all__ = ["Instance", "find_instances", "read_expected", "expected_key", "materialize"]

_ANSWERS = {"sat": "sat", "violated": "sat", "unsat": "unsat", "holds": "unsat"}


@dataclass(frozen=True)
class Instance:
    """One instance: a model, a property and a time limit.

    Attributes:
        index: its position in the benchmark (0-based).
        model, property: as the csv names them (the record's keys).
        timeout: seconds, from the csv.
        model_path, property_path: the files found (possibly ``.gz``).
    """

    index: int
    model: str
    property: str
    timeout: float
    model_path: Path
    property_path: Path

    @property
    def key(self) -> str:
        return f"{self.model},{self.property}"


def _locate(base: Path, name: str, where: str) -> Path:
    path = base / name
    candidates = [path, Path(f"{path}.gz")] + ([path.with_suffix("")] if path.suffix == ".gz" else [])
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InvalidInputError(f"{where}: {name} is not in {base} (nor gzip'd)")


def _read_csv(path: Path, start: int) -> list[Instance]:
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"{path} cannot be read ({error})") from None
    out = []
    for line, row in enumerate(rows, 1):
        row = [c.strip() for c in row]
        if not any(row):
            continue
        where = f"{path}:{line}"
        if len(row) < 3:
            raise InvalidInputError(f"{where}: expected 'model,property,timeout', got {','.join(row)!r}")
        try:
            timeout = float(row[2])
        except ValueError:
            raise InvalidInputError(f"{where}: the timeout {row[2]!r} is not a number of seconds") from None
        if not (timeout > 0 and math.isfinite(timeout)):
            raise InvalidInputError(f"{where}: the timeout must be positive seconds, got {row[2]}")
        out.append(Instance(start + len(out), row[0], row[1], timeout, _locate(path.parent, row[0], where),
                            _locate(path.parent, row[1], where)))
    return out


def find_instances(folder: str | os.PathLike) -> list[Instance]:
    """Every instance of the benchmark at ``folder`` (a folder in one of the layouts, or a csv file), in csv order.

    Raises:
        InvalidInputError: no instances file, an unreadable or malformed row (file and line named), a missing
            model or property file, or no instances at all.
    """
    path = Path(folder)
    if path.is_file():
        files = [path]
    elif (path / "instances.csv").is_file():
        files = [path / "instances.csv"]
    else:
        files = sorted(path.glob("*_instances.csv")) if path.is_dir() else []
    if not files:
        raise InvalidInputError(f"{os.fspath(folder)!r} holds no instances.csv (VNN-COMP 2022 on) nor "
                                "<name>_instances.csv (2021): not a VNN-COMP benchmark folder")
    instances: list[Instance] = []
    for file in files:
        instances += _read_csv(file, len(instances))
    if not instances:
        raise InvalidInputError(f"{', '.join(map(str, files))} lists no instances")
    return instances


def expected_key(model: str, prop: str) -> tuple[str, str]:
    """The file names of a model and a property without folders and ``.gz``: how expected answers are matched."""
    strip = lambda name: Path(name.replace("\\", "/")).name.removesuffix(".gz")  # noqa: E731
    return strip(model), strip(prop)


def read_expected(path: str | os.PathLike) -> dict[tuple[str, str], str]:
    """Expected answers from a csv of rows ``model,property,answer`` (``sat``/``unsat``, or 2021's
    ``violated``/``holds``; other answers and a header row are skipped), keyed by :func:`expected_key`.

    Raises:
        InvalidInputError: the file cannot be read, or a row has fewer than three columns.
    """
    try:
        rows = list(csv.reader(Path(path).read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"expected answers {os.fspath(path)!r} cannot be read ({error})") from None
    out = {}
    for line, row in enumerate(rows, 1):
        if not any(c.strip() for c in row):
            continue
        if len(row) < 3:
            raise InvalidInputError(f"{os.fspath(path)}:{line}: expected 'model,property,answer'")
        answer = _ANSWERS.get(row[2].strip().lower())
        if answer is not None:
            out[expected_key(row[0].strip(), row[1].strip())] = answer
    return out


def materialize(path: Path, cache: Path) -> Path:
    """``path`` itself, or for a gzip'd file its decompressed copy in ``cache`` (made once, named by the path's
    hash and its name without ``.gz``)."""
    with open(path, "rb") as file:
        if file.read(2) != b"\x1f\x8b":
            return path
    digest = hashlib.sha256(os.fsencode(path.resolve())).hexdigest()[:12]
    target = cache / f"{digest}-{path.name.removesuffix('.gz')}"
    if not target.is_file():  # several processes may do this at once: each writes its own file, then renames it
        cache.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", dir=cache)
        try:
            with gzip.open(path, "rb") as source, os.fdopen(handle, "wb") as sink:
                shutil.copyfileobj(source, sink)
            os.replace(partial, target)
        except (OSError, EOFError) as error:
            Path(partial).unlink(missing_ok=True)
            raise InvalidInputError(f"{path} is a corrupt gzip file ({error})") from None
    return target
