"""Finding and reading local weight files (SPEC 3: offline by rule).

Nothing here downloads. ``find_weights`` resolves a file name to a path on disk, searching, in
order: an explicit ``weights=PATH``, the ``$SALBENCH_WEIGHTS`` directory, and the torch hub
checkpoint directory (``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``,
where torchvision and timm put the files they download). ``load_state_dict_file`` reads a file
with ``torch.load(..., weights_only=True)`` or safetensors and checks it really is a state dict.
Weight files are treated as hostile input: no pickled code runs, and anything that is not a
``str -> Tensor`` mapping is refused with a :class:`SalbenchError`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from salbench.errors import SalbenchError, WeightsNotFoundError

#: Special ``weights`` value: skip loading and keep a seeded random initialisation.
RANDOM = "random"

#: Container keys that checkpoints commonly wrap the state dict in, tried in this order.
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "model_ema", "net")


def search_dirs() -> list[Path]:
    """Directories searched for weight files, in order: ``$SALBENCH_WEIGHTS`` (when it is a
    local directory), torch hub cache."""
    dirs: list[Path] = []
    env = os.environ.get("SALBENCH_WEIGHTS")
    if env and "://" not in env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path(torch.hub.get_dir()).expanduser() / "checkpoints")
    return dirs


def find_weights(
    filename: str | Sequence[str],
    weights: str | os.PathLike[str] | None,
    model_name: str,
    extra_dirs: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Path of the weight file for ``model_name``.

    Args:
        filename: the expected file name (or several accepted names, tried in order), e.g.
            ``"resnet50-11ad3fa6.pth"``.
        weights: an explicit path given by the user (``load(name, weights=PATH)``); when set it
            is the only place looked at and must exist.
        model_name: used in error messages.
        extra_dirs: more directories to search after the standard ones.

    Raises:
        WeightsNotFoundError: naming the expected file, every directory searched, and how to
            pass ``weights=PATH``.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            what = "is a directory, not a file" if path.is_dir() else "does not exist"
            raise WeightsNotFoundError(
                f"weights file for model {model_name!r} {what}: {str(path)!r}"
            )
        return path
    names = [filename] if isinstance(filename, str) else list(filename)
    from_store = _from_store(names)
    if from_store is not None:
        return from_store
    dirs = search_dirs() + [Path(d).expanduser() for d in extra_dirs]
    for d in dirs:
        for name in names:
            candidate = d / name
            if candidate.is_file():
                return candidate
    expected = " or ".join(repr(n) for n in names)
    searched = "\n".join(f"  - {d}" for d in dirs)
    raise WeightsNotFoundError(
        f"no weights for model {model_name!r}: expected a file named {expected} in one of:\n"
        f"{searched}\n"
        f"Put the file in one of these directories (e.g. export SALBENCH_WEIGHTS=/path/to/dir), "
        f"or pass it explicitly: salbench.models.load({model_name!r}, weights=PATH) "
        f"(in a config: models: [{{name: {model_name}, weights: PATH}}]). "
        "Runs never download weights; `salbench weights pull "
        f"{model_name}` fetches published ones on purpose."
    )


def _from_store(names: Sequence[str]) -> Path | None:
    """With ``$SALBENCH_WEIGHTS`` an object-store prefix (``s3://bucket/weights``, where
    ``salbench weights pull`` put them): the first of ``names`` found there, copied to a
    local cache (``<tmp>/salbench-weights/``, reused while its size agrees); else None.
    The project's own store, not the internet: runs still never download."""
    env = os.environ.get("SALBENCH_WEIGHTS")
    if not env or "://" not in env:
        return None
    from salbench import storage

    cache = Path(tempfile.gettempdir()) / "salbench-weights"
    for name in names:
        remote = storage.join(env, name)
        if not storage.is_file(remote):
            continue
        local = cache / name
        if not local.is_file() or local.stat().st_size != storage.size(remote):
            cache.mkdir(parents=True, exist_ok=True)
            storage.write_bytes(local, storage.read_bytes(remote))
        return local
    return None


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` on CPU.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(path, map_location="cpu", weights_only=True)``. Checkpoints that wrap the
    state dict (``{"state_dict": ...}``, ``{"model": ...}``, ...) are unwrapped, and a
    ``module.`` prefix left by DataParallel is removed.

    Returns:
        ``{name: tensor}`` with the file's dtypes (see :func:`to_float32`).

    Raises:
        WeightsNotFoundError: the file does not exist.
        SalbenchError: the file cannot be read or does not hold a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file does not exist: {str(path)!r}")
    if path.stat().st_size == 0:
        raise SalbenchError(f"weights file {str(path)!r} is empty (0 bytes)")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise SalbenchError(
                f"cannot read {str(path)!r} as safetensors: {type(exc).__name__}: {exc}"
            ) from exc
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...
            raise SalbenchError(
                f"cannot read weights file {str(path)!r} with torch.load(weights_only=True): "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. "
                "It must be a PyTorch state dict (torch.save(model.state_dict(), path)) or a "
                ".safetensors file; pickled modules or other objects are refused."
            ) from exc
    return _as_state_dict(obj, str(path))


def _as_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """Unwrap containers and check that ``obj`` is a non-empty ``str -> Tensor`` mapping."""
    for _ in range(3):  # {"model": {"state_dict": {...}}} at most a few levels deep
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if isinstance(obj, nn.Module):  # cannot happen with weights_only, kept for direct calls
        obj = obj.state_dict()
    if not isinstance(obj, Mapping) or not obj:
        raise SalbenchError(
            f"{where}: expected a state dict (a mapping of parameter names to tensors), "
            f"got {type(obj).__name__}" + (" (empty)" if isinstance(obj, Mapping) else "")
        )
    bad = [
        (k, type(v).__name__)
        for k, v in obj.items()
        if not isinstance(k, str) or not isinstance(v, torch.Tensor)
    ]
    if bad:
        key, kind = bad[0]
        raise SalbenchError(
            f"{where}: not a state dict: entry {key!r} is a {kind}, not a tensor "
            f"({len(bad)} such entries; top-level keys: {list(obj)[:8]})"
        )
    sd = dict(obj)
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def to_float32(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating-point tensors cast to float32 (half-precision files), others unchanged."""
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def check_state_dict(
    net: nn.Module, sd: Mapping[str, torch.Tensor], model_name: str, source: str
) -> None:
    """Check that ``sd`` has exactly ``net``'s keys and shapes (works on meta modules too).

    Raises:
        SalbenchError: listing the missing and unexpected keys and the shape mismatches.
    """
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {missing[:5]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[:5]})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (first: {shapes[:3]})")
        raise SalbenchError(
            f"weights {source!r} do not fit model {model_name!r}: " + "; ".join(parts) + ". "
            "Is this the right file for this architecture?"
        )


def build_random(ctor: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """``ctor()`` with its random initialisation seeded by ``seed``.

    The global RNG state is saved and restored (``torch.random.fork_rng``), so the result does
    not depend on it and calling this does not change it.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ctor()


def build_with_state_dict(
    ctor: Callable[[], nn.Module],
    sd: Mapping[str, torch.Tensor],
    model_name: str,
    source: str,
) -> nn.Module:
    """Build ``ctor()`` and load ``sd`` into it strictly (float tensors cast to float32).

    The module is first built on the meta device (no wasted random initialisation: a VGG-16
    takes 2 s to initialise on CPU) and clones of the tensors are assigned to it, so the
    module shares no storage with ``sd`` (which may be cached) and every tensor has its own
    freshly allocated, aligned storage (tensors read from safetensors may sit at unaligned
    offsets, which changes CPU kernels' float rounding). Modules with non-persistent buffers
    (left on meta) are rebuilt on CPU and loaded by copy.

    Raises:
        SalbenchError: keys or shapes do not match (see :func:`check_state_dict`).
    """
    sd = to_float32(sd)
    with torch.device("meta"):
        net = ctor()
    check_state_dict(net, sd, model_name, source)
    net.load_state_dict(
        {k: v.clone(memory_format=torch.contiguous_format) for k, v in sd.items()},
        strict=True,
        assign=True,
    )
    if any(t.is_meta for t in list(net.parameters()) + list(net.buffers())):
        net = build_random(ctor)
        net.load_state_dict(sd, strict=True)
    return net


def load_into(
    net: nn.Module, sd: Mapping[str, torch.Tensor], model_name: str, source: str
) -> None:
    """``net.load_state_dict(sd, strict=True)`` (floats cast to float32) with a clear error.

    Raises:
        SalbenchError: missing or unexpected keys, or a tensor whose shape differs.
    """
    check_state_dict(net, sd, model_name, source)
    net.load_state_dict(to_float32(sd), strict=True)
