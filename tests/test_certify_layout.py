"""certify/ is laid out by concept and its imports flow one way; the old flat module paths still import, warned."""

import ast
import importlib
import warnings
from pathlib import Path

import pytest

import mistered
from mistered.certify._moved import MOVED_MODULES

PACKAGE = Path(mistered.__file__).parent
CERTIFY = PACKAGE / "certify"

#: part -> the certify/ parts it may import (besides itself and certify's top-level certificate.py)
ALLOWED = {
    "solvers": set(),
    "graph": set(),
    "bounds": {"graph", "solvers"},
    "exact": {"bounds", "graph", "solvers", "lipschitz"},
    "lipschitz": {"bounds", "graph", "solvers"},
    "smoothing": set(),
    "verify": {"bounds", "graph", "solvers", "exact"},
    "bab": {"bounds", "graph", "solvers", "exact", "verify"},  # its step plugs into the verifier's protocol
}


def _certify_imports(path: Path) -> set[str]:
    """The certify/ parts (first component under certify) that ``path`` imports, resolving relative imports."""
    module = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module[:-1] if path.name != "__init__.py" else module[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            else:
                base = (node.module or "").split(".")
            names = [base + [alias.name] for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        else:
            continue
        for name in names:
            if name[:2] == ["mistered", "certify"] and len(name) > 2:
                found.add(name[2])
    return found


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_the_parts_below_it(part):
    allowed = ALLOWED[part] | {part, "certificate", "_moved"}
    offending = {
        str(path.relative_to(CERTIFY)): sorted(_certify_imports(path) - allowed)
        for path in (CERTIFY / part).rglob("*.py")
    }
    assert {k: v for k, v in offending.items() if v} == {}


def test_models_never_import_certify():
    offending = [str(p) for p in (PACKAGE / "models").rglob("*.py") if _certify_imports(p)]
    assert offending == []


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_an_old_module_path_imports_the_new_module_with_a_deprecation_warning(old):
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=MOVED_MODULES[old].replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED_MODULES[old])


def test_the_new_paths_import_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for new in sorted(set(MOVED_MODULES.values())):
            importlib.import_module(new)
