"""``torch.export`` programs (``.pt2`` archives written by ``torch.export.save``) as ordinary modules.

``ExportedProgram.module()`` refuses ``.train()``/``.eval()``, keeps the train/eval behaviour of
dropout and batch norm that the model had when it was exported, bakes devices into some operators, and
(exported with a static batch dimension) accepts only the exported batch size. :class:`ExportedModel`
fixes all four: ``.train(mode)`` rewrites the mode flag of the dropout and batch-norm operators in the
graph, ``.to(device)`` moves the weights, the lifted constants and the devices written in the graph,
and any batch size runs (see :mod:`~mistered.models.batching`).

Loading is guarded: ``torch.export.load`` would unpickle some payloads with ``weights_only=False``
(payloads marked ``use_pickle``, opaque objects, the sample inputs' fallback), so every such payload is
first checked to be weights-only loadable, and archives holding compiled code (AOTInductor) are refused.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, InvalidInputError
from .batching import ChunkedModule
from .pickles import load_weights_only
from .sniff import TORCH_LEGACY, TORCH_SAVE, archive_members, sniff_bytes

__all__ = ["ExportedModel", "check_archive", "load_exported"]

_aten = torch.ops.aten
# operator -> index of its train/eval flag argument
_MODE_FLAG = {
    _aten.dropout.default: 2,
    _aten.feature_dropout.default: 2,
    _aten.alpha_dropout.default: 2,
    _aten.feature_alpha_dropout.default: 2,
    _aten.native_dropout.default: 2,
    _aten.batch_norm.default: 5,
    _aten.native_batch_norm.default: 5,
    _aten._native_batch_norm_legit.default: 5,
}
_INFERENCE_ONLY = {_aten._native_batch_norm_legit_no_training.default}
_COMPILED = ("data/aotinductor/", "data/executorch/")
_PICKLED_CONSTANTS = ("custom_obj_", "opaque_obj_")


def _check_payload(archive: zipfile.ZipFile, member: str, where: str) -> None:
    """Raise unless ``member`` is a ``torch.save`` payload that loads with ``weights_only=True``."""
    data = archive.read(member)
    if not data:
        return
    label = f"{where} (member {member!r})"
    kind = sniff_bytes(data, label)
    if kind not in (TORCH_SAVE, TORCH_LEGACY):
        raise CheckpointError(f"{label} was refused: it is not a weights-only torch.save payload")
    load_weights_only(data, kind, label)


def _check_config(archive: zipfile.ZipFile, names: dict[str, str], config_name: str, folder: str, where: str) -> None:
    """Check the payloads a ``*_config.json`` marks as pickled (``use_pickle``, custom or opaque objects)."""
    try:
        config = json.loads(archive.read(names[config_name])).get("config", {})
    except (ValueError, AttributeError) as error:
        raise CheckpointError(f"{where} is corrupt: {config_name} does not parse ({error})") from None
    for fqn, entry in config.items():
        path_name = str(entry.get("path_name", ""))
        if path_name.startswith(_PICKLED_CONSTANTS):
            raise CheckpointError(
                f"{where} was refused: its constant {fqn!r} is a pickled Python object, "
                "and unpickling it could run code"
            )
        if entry.get("use_pickle"):
            member = names.get(folder + path_name)
            if member is None:
                raise CheckpointError(f"{where} is corrupt: {folder + path_name} is missing")
            _check_payload(archive, member, where)


def check_archive(path: Path, where: str) -> None:
    """Refuse a ``.pt2`` archive that ``torch.export.load`` could not load without running pickled code.

    Raises:
        CheckpointError: a corrupt archive, compiled code, pickled Python objects, or a payload that is
            not weights-only.
    """
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
        if bad is not None:
            raise CheckpointError(f"{where} is corrupt (member {bad!r} fails its CRC check)")
        names = dict(zip(archive_members(archive), archive.namelist()))
        for member, full in names.items():
            if member.startswith(_COMPILED) or member.endswith((".so", ".dll", ".dylib")):
                raise CheckpointError(
                    f"{where} was refused: it holds compiled code ({member}); mistered loads torch.export programs only"
                )
            if member.endswith(".pt"):
                _check_payload(archive, full, where)
            elif member.endswith("_config.json") and member.startswith(("data/weights/", "data/constants/")):
                _check_config(archive, names, member, member.rsplit("/", 1)[0] + "/", where)


def _batch_range(program: torch.export.ExportedProgram, where: str) -> tuple[int, int | None]:
    """The batch sizes the program's one input accepts, from its placeholder's shape and range constraints."""
    inputs = list(program.graph_signature.user_inputs)
    if len(inputs) != 1:
        raise CheckpointError(
            f"{where} takes {len(inputs)} inputs ({', '.join(map(str, inputs))}); a mistered model takes one "
            "batch of images (B, C, H, W)"
        )
    node = next((n for n in program.graph.nodes if n.op == "placeholder" and n.name == inputs[0]), None)
    value = node.meta.get("val") if node is not None else None
    if not isinstance(value, torch.Tensor) or value.ndim == 0:
        return 1, None
    size = value.shape[0]
    if isinstance(size, int):
        return size, size
    bounds = program.range_constraints.get(size.node.expr)
    if bounds is None:
        return 1, None
    upper = bounds.upper
    return max(1, int(bounds.lower)), (int(upper) if getattr(upper, "is_Integer", False) else None)


def _graphs(module: nn.Module) -> list[torch.fx.GraphModule]:
    return [m for m in module.modules() if isinstance(m, torch.fx.GraphModule)]


class ExportedModel(ChunkedModule):
    """An ``ExportedProgram``'s module that supports ``.train()``, ``.eval()``, ``.to()`` and any batch size.

    ``state_dict()`` keys are those of the exported model. Forward: ``(B, C, H, W)`` -> ``(B, K)``.

    Args:
        program: the loaded program (one tensor input, one tensor output).
        where: how to name it in messages.
    """

    def __init__(self, program: torch.export.ExportedProgram, where: str = "the exported program") -> None:
        low, high = _batch_range(program, where)
        super().__init__(program.module(), low, high)
        self._where = where

    def train(self, mode: bool = True) -> ExportedModel:
        """Set the mode of this module and of the dropout/batch-norm operators inside the graph.

        Raises:
            InvalidInputError: training mode asked of a program exported in inference-only form.
        """
        for graph_module in _graphs(self.wrapped_module):
            changed = False
            for node in graph_module.graph.nodes:
                if mode and node.target in _INFERENCE_ONLY:
                    raise InvalidInputError(
                        f"{self._where} computes {node.target} in inference-only form; it cannot run in training "
                        "mode (export the model in training mode, before run_decompositions)"
                    )
                index = _MODE_FLAG.get(node.target)
                if index is not None and len(node.args) > index and node.args[index] != mode:
                    node.args = (*node.args[:index], mode, *node.args[index + 1 :])
                    changed = True
            if changed:
                graph_module.recompile()
        return super().train(mode)

    def _device(self) -> torch.device | None:
        tensor = next(iter(self.parameters()), None)
        tensor = tensor if tensor is not None else next(iter(self.buffers()), None)
        return tensor.device if tensor is not None else None

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's signature
        super()._apply(fn, recurse)
        device = self._device()
        if device is None:
            return self
        for graph_module in _graphs(self.wrapped_module):
            for node in graph_module.graph.nodes:
                if isinstance(node.kwargs.get("device"), torch.device) and node.kwargs["device"] != device:
                    node.kwargs = {**node.kwargs, "device": device}
                if node.target is _aten.to.device and len(node.args) > 1:
                    node.args = (node.args[0], device, *node.args[2:])
            graph_module.recompile()
        return self


def load_exported(path: Path, where: str) -> ExportedModel:
    """Load a ``torch.export.save`` archive as an :class:`ExportedModel` (on CPU, in training mode).

    Raises:
        CheckpointError: the archive is refused (see :func:`check_archive`), cannot be loaded, or its
            program does not take exactly one input.
    """
    check_archive(path, where)
    try:
        program = torch.export.load(path)
    except Exception as error:  # noqa: BLE001 - torch.export raises many kinds; one line for the user
        text = str(error).strip().splitlines()
        raise CheckpointError(
            f"{where} is a torch.export archive that cannot be loaded: {type(error).__name__}"
            + (f": {text[0]}" if text else "")
        ) from None
    return ExportedModel(program, where)
