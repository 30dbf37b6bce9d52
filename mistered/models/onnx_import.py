"""ONNX models, converted to PyTorch by onnx2torch.

Every operator is checked against onnx2torch's converters before converting, so that a model with
operators it cannot convert gets one error naming all of them. onnx2torch registers converters per
operator version and lags behind the exporters (``torch.onnx.export`` writes opset 20, whose
``AveragePool`` version 19 it lacks), so a model with missing converters is first moved down to older
opsets with ONNX's own version converter, newest first, until every operator converts. An input that declares a fixed batch
size (``[1, 3, 224, 224]`` rather than ``["batch", 3, 224, 224]``) is honoured: the converted graph is
run in chunks of that size (:mod:`~mistered.models.batching`), because constant reshapes inside such a
graph may hold the batch size. Re-export with a dynamic batch axis to run whole batches at once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CheckpointError
from .batching import ChunkedModule

if TYPE_CHECKING:
    import onnx

__all__ = ["load_onnx", "unsupported_operators"]

logger = logging.getLogger(__name__)


def unsupported_operators(model: onnx.ModelProto) -> list[str]:
    """The operators of ``model``'s graph that onnx2torch cannot convert, as ``"Op"`` or ``"domain::Op"``
    (sorted, each once), taking the model's opset versions into account."""
    from onnx2torch.node_converters import get_converter

    opsets = {opset.domain: opset.version for opset in model.opset_import}
    missing = set()
    for node in model.graph.node:
        name = f"{node.domain}::{node.op_type}" if node.domain else node.op_type
        if node.domain not in opsets:
            missing.add(name)
            continue
        try:
            get_converter(operation_type=node.op_type, version=opsets[node.domain], domain=node.domain)
        except NotImplementedError:
            missing.add(name)
    return sorted(missing)


#: The oldest default-domain opset tried when moving a model down to convertible operator versions.
OLDEST_OPSET = 11


def _convertible(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """``model``, or the same model moved down to the newest older opset whose operators onnx2torch
    converts (ONNX's version converter keeps the semantics); an error naming the operators otherwise."""
    from onnx import version_converter

    missing = unsupported_operators(model)
    if not missing:
        return model
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    for target in range((opset or OLDEST_OPSET) - 1, OLDEST_OPSET - 1, -1):
        try:
            candidate = version_converter.convert_version(model, target)
        except Exception:  # noqa: BLE001 - the converter refuses some operators at some versions
            continue
        if not unsupported_operators(candidate):
            logger.info("%s: converted from opset %s to opset %d for onnx2torch", where, opset, target)
            return candidate
    raise CheckpointError(
        f"{where}: onnx2torch cannot convert the ONNX operator(s) {', '.join(missing)} (at opset {opset} or any "
        f"older opset down to {OLDEST_OPSET}); re-export the model without them, or as TorchScript or torch.export"
    )


def _batch_range(model: onnx.ModelProto, where: str) -> tuple[int, int | None]:
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise CheckpointError(
            f"{where} has {len(inputs)} inputs and {len(model.graph.output)} outputs; a mistered model takes one "
            "batch of images (B, C, H, W) and returns one tensor of logits (B, K)"
        )
    dims = inputs[0].type.tensor_type.shape.dim
    if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
        size = int(dims[0].dim_value)
        logger.info("%s declares a fixed batch of %d: it runs in chunks of %d examples", where, size, size)
        return size, size
    return 1, None


def load_onnx(path: Path, where: str) -> ChunkedModule:
    """Convert the ONNX model at ``path`` into a :class:`ChunkedModule` (on CPU, in training mode).

    Raises:
        CheckpointError: the file cannot be read, an operator cannot be converted (all are named), the
            graph does not take one input and give one output, or onnx2torch fails on a node.
    """
    import onnx

    from .._compat import import_torchvision

    import_torchvision()  # onnx2torch imports torchvision
    from onnx2torch import convert

    try:
        model = onnx.load(str(path))
    except Exception as error:  # noqa: BLE001 - protobuf and external-data errors vary; one line for the user
        raise CheckpointError(f"{where} is an ONNX model that cannot be read: {error}") from None
    model = _convertible(model, where)
    low, high = _batch_range(model, where)
    try:
        module = convert(model)
    except Exception as error:  # noqa: BLE001 - a converter may refuse a node's attributes
        text = str(error).strip().splitlines()
        raise CheckpointError(
            f"{where}: onnx2torch failed to convert it: {type(error).__name__}" + (f": {text[0]}" if text else "")
        ) from None
    return ChunkedModule(module, low, high)
