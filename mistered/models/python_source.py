"""Models defined in Python: ``path/to/file.py:Name`` or ``package.module:Name``.

``Name`` is an ``nn.Module`` class or a function returning an ``nn.Module``; it is called with the
``model_args`` keyword arguments. A file is imported from its path with importlib under a module name
derived from the path (``_mistered_user_<stem>_<hash>``), with its own folder on ``sys.path`` while it
is imported and called, so that it can import its sibling modules. Importing runs the file's code:
load only files you trust. Every mistake in the user's code becomes one line naming the file and line.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from ..errors import InvalidInputError
from .sources import PythonSpec

__all__ = ["load_python_model"]


@contextlib.contextmanager
def _folder_on_path(folder: Path | None) -> Iterator[None]:
    """``folder`` at the front of ``sys.path`` for the duration (unless it is there already)."""
    entry = str(folder) if folder is not None else None
    added = entry is not None and entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def _user_line(error: BaseException, filename: str | None) -> str:
    """``" (at net.py:12)"``: the last traceback line in the user's file, or ``""``."""
    if filename is None:
        return ""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename) == Path(filename)]
    return f" (at {Path(filename).name}:{frames[-1].lineno})" if frames else ""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _module_name(path: Path) -> str:
    stem = re.sub(r"\W", "_", path.stem) or "model"
    return f"_mistered_user_{stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise InvalidInputError(f"model file {str(path)!r} does not exist")
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidInputError(f"model file {str(path)!r} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with _folder_on_path(path.parent):
            spec.loader.exec_module(module)
    except SyntaxError as error:
        del sys.modules[name]
        raise InvalidInputError(f"{path}:{error.lineno}: syntax error in the model file: {error.msg}") from None
    except Exception as error:  # noqa: BLE001 - any failure of the user's code becomes one line
        del sys.modules[name]
        raise InvalidInputError(
            f"importing the model file {str(path)!r} failed: {_first_line(error)}{_user_line(error, str(path))}"
        ) from None
    return module


def _import_module(target: str) -> ModuleType:
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as error:
        if error.name is not None and (target == error.name or target.startswith(error.name + ".")):
            raise InvalidInputError(
                f"cannot import the model module {target!r}: no module named {error.name!r} "
                "(is it installed, or is its folder on PYTHONPATH? a file is given as path/to/file.py:Name)"
            ) from None
        raise InvalidInputError(f"importing the model module {target!r} failed: {_first_line(error)}") from None
    except Exception as error:  # noqa: BLE001 - any failure of the user's code becomes one line
        raise InvalidInputError(f"importing the model module {target!r} failed: {_first_line(error)}") from None


def _candidates(module: ModuleType) -> list[str]:
    """Names defined in ``module`` that could be given: ``nn.Module`` subclasses and functions."""
    found = []
    for name, value in vars(module).items():
        if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
            continue
        if (inspect.isclass(value) and issubclass(value, nn.Module)) or inspect.isfunction(value):
            found.append(name)
    return found


def _lookup(module: ModuleType, spec: PythonSpec, where: str) -> Any:
    if not hasattr(module, spec.name):
        names = _candidates(module)
        listed = f"it defines {', '.join(names)}" if names else "it defines no nn.Module class or function"
        raise InvalidInputError(f"{where} has no {spec.name!r}; {listed}")
    value = getattr(module, spec.name)
    if isinstance(value, nn.Module):
        raise InvalidInputError(
            f"{where}: {spec.name!r} is an nn.Module instance; give its class or a function that returns it"
        )
    if inspect.isclass(value) and not issubclass(value, nn.Module):
        raise InvalidInputError(f"{where}: {spec.name!r} is a class but not a subclass of torch.nn.Module")
    if not callable(value):
        raise InvalidInputError(
            f"{where}: {spec.name!r} is of type {type(value).__name__}, "
            "not an nn.Module class or a function returning one"
        )
    return value


def _check_arguments(factory: Any, spec: PythonSpec, model_args: dict[str, Any], where: str) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: the call itself will tell
        return
    try:
        signature.bind(**model_args)
    except TypeError as error:
        raise InvalidInputError(
            f"{where}: {spec.name}{signature} cannot be called with model_args {model_args}: {error} "
            "(give keyword arguments with --model-args JSON)"
        ) from None


def load_python_model(spec: PythonSpec, model_args: dict[str, Any]) -> tuple[nn.Module, Path | None]:
    """Import ``spec`` and call ``Name(**model_args)``.

    Returns:
        The model (in whatever mode ``Name`` left it) and the resolved ``.py`` file (``None`` for a module).

    Raises:
        InvalidInputError: a missing file or module, a syntax error or exception while importing it, no
            ``Name`` (the message lists what it defines), ``Name`` neither an ``nn.Module`` class nor a
            function, ``model_args`` it does not accept, an exception raised by ``Name(...)``, or a
            result that is not an ``nn.Module``. Each message names the file and, where known, the line.
    """
    path = Path(spec.target).resolve() if spec.is_file else None
    module = _import_file(path) if path is not None else _import_module(spec.target)
    where = f"model file {str(path)!r}" if path is not None else f"model module {spec.target!r}"
    factory = _lookup(module, spec, where)
    _check_arguments(factory, spec, model_args, where)
    filename = str(path) if path is not None else getattr(module, "__file__", None)
    try:
        with _folder_on_path(path.parent if path is not None else None):
            model = factory(**model_args)
    except Exception as error:  # noqa: BLE001 - any failure of the user's code becomes one line
        raise InvalidInputError(
            f"{where}: {spec.name}(**{model_args}) raised {_first_line(error)}{_user_line(error, filename)}"
        ) from None
    if not isinstance(model, nn.Module):
        raise InvalidInputError(
            f"{where}: {spec.name}(**{model_args}) returned a {type(model).__name__}, not an nn.Module"
        )
    return model, path
