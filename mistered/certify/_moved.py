"""Old module paths of the flat ``certify/`` layout, still importable with a ``DeprecationWarning`` naming the new one.

``import mistered.certify.geocert`` returns :mod:`mistered.certify.exact.geocert` itself (one module object, so
``isinstance`` checks and monkeypatching agree). Remove an entry once a release has shipped the warning.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

__all__ = ["MOVED_MODULES", "install"]

#: old dotted path -> new dotted path
MOVED_MODULES = {
    "mistered.certify.plnet": "mistered.certify.graph.piecewise",
    "mistered.certify.interval": "mistered.certify.bounds.chain_interval",
    "mistered.certify.linear_bounds": "mistered.certify.bounds.chain_linear",
    "mistered.certify.lp_bounds": "mistered.certify.bounds.chain_lp",
    "mistered.certify.relaxation_model": "mistered.certify.solvers.triangle",
    "mistered.certify.l2_cut_relaxation": "mistered.certify.solvers.l2_cuts",
    "mistered.certify.polytope_qp": "mistered.certify.solvers.polytope_qp",
    "mistered.certify.projection": "mistered.certify.solvers.projection",
    "mistered.certify.mindist_mip": "mistered.certify.exact.mip",
    "mistered.certify.halfspace": "mistered.certify.exact.halfspace",
    "mistered.certify.boundary_search": "mistered.certify.exact.boundary_search",
    "mistered.certify.region_search": "mistered.certify.exact.region_search",
    "mistered.certify.geocert": "mistered.certify.exact",  # geocert and its batch entry point's old name
    "mistered.certify.branch_distance": "mistered.certify.exact.branch",
    "mistered.certify.lmt": "mistered.certify.lipschitz.lmt",
    "mistered.certify.local_lipschitz": "mistered.certify.lipschitz.local",
    "mistered.certify.linf_dist": "mistered.models.linf_dist.layers",
    "mistered.certify.linf_dist_kernel": "mistered.models.linf_dist.kernel",
    "mistered.certify.linf_dist_nets": "mistered.models.linf_dist",
    "mistered.certify.linf_dist_hybrid": "mistered.models.linf_dist",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, new_name: str) -> None:
        self.new_name = new_name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {self.new_name}; import it from there", DeprecationWarning, stacklevel=3)
        module = importlib.import_module(self.new_name)
        sys.modules[spec.name] = module
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module is the new one, already executed."""


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        old = next((o for o in MOVED_MODULES if name == o or name.startswith(o + ".")), None)
        if old is None:
            return None
        new_name = MOVED_MODULES[old] + name[len(old):]
        return importlib.util.spec_from_loader(name, _Alias(new_name))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
