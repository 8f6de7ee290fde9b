"""Content keys of result cells, for incremental reruns (``salbench run --reuse``).

A row of the per-sample table (sample x model x method, with every metric's columns) is
keyed by ``cell_key(sample_key, model_key, method_key, metrics_key)``:

- ``sample_key`` (:func:`salbench.datasets.base.sample_key`, computed by the read stage):
  the sample's content: its encoded image bytes, label and boxes;
- ``model_key``: the model's registry name, input geometry, every parameter and buffer
  tensor (the weights themselves, not the file name) and its numeric settings (precision,
  channels-last, compile, deterministic: :mod:`salbench.models.numerics`), so that a bf16
  run never reuses an fp32 run's cells;
- ``method_key``: the method's registry name, the parameters it runs with (defaults, profile
  and overrides merged, seed included), the run's map reduction, and the version of the code
  (``salbench.__version__`` and a hash of the source of the module defining the method, so
  editing a method's code invalidates its cells);
- ``metrics_key``: the same for every configured metric together, plus ``save_maps``: a row
  holds all metrics' columns, so changing one metric recomputes the rows.

Keys are 16 hex digits of SHA-256; they are pure functions of their inputs, so the driver and
every actor compute the same keys independently.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

import salbench
from salbench import methods, metrics
from salbench.datasets.base import KEY_CHARS
from salbench.datasets.base import digest as _digest
from salbench.models.numerics import Numerics

#: Parameters that change how work is batched, not what it computes: not part of any key.
NOT_IN_KEYS = frozenset({"internal_batch_size"})
DEFAULT_NUMERICS = Numerics()


def _params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in NOT_IN_KEYS}


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, default=str).encode()


def model_key(name: str, model: torch.nn.Module, input_size: tuple[int, int],
              crop_fraction: float, numerics: Numerics = DEFAULT_NUMERICS) -> str:
    """Key of a loaded model: name, input geometry, every parameter and buffer tensor, and
    the numeric settings it runs with (``RunConfig.model_numerics``; default: fp32)."""
    h = hashlib.sha256(_json([name, list(input_size), crop_fraction, numerics.as_dict()]))
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:KEY_CHARS]


@functools.lru_cache(maxsize=256)
def _module_source_hash(module_name: str) -> str:
    module = sys.modules.get(module_name)
    try:
        source = inspect.getsource(module) if module is not None else module_name
    except (OSError, TypeError):  # built in C or without source: its name stands for it
        source = module_name
    return _digest(source.encode())


def code_version(fn: Any) -> str:
    """``salbench.__version__`` and a hash of the code behind ``fn``: for a built-in method or
    metric every loaded module of its subpackage (``salbench.methods.*``; the path engine,
    PIC's modules and the shared helpers live beside the registered function), for a
    plugin the module defining it."""
    module = getattr(inspect.unwrap(fn), "__module__", "") or ""
    parts = module.split(".")
    if parts[0] == "salbench" and len(parts) > 2:
        digest = _package_source_hash(".".join(parts[:2]))
    else:
        digest = _module_source_hash(module)
    return f"{salbench.__version__}+{digest}"


@functools.lru_cache(maxsize=16)
def _package_source_hash(package: str) -> str:
    """Hash of every ``.py`` file of a salbench subpackage on disk (whatever is imported)."""
    root = Path(importlib.import_module(package).__path__[0])
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:KEY_CHARS]


def method_key(config: Any, comp: Any) -> str:
    """Key of a configured method (``comp``: a Component of ``config.methods``)."""
    spec = methods.get(comp.name)
    params = _params(config.params_for(comp, spec))
    reduce = config.map_reduce_for(comp, spec)
    return _digest(_json({"name": comp.name, "params": params, "map_reduce": reduce,
                          "profile": config.profile, "code": code_version(spec.fn)}))


def metrics_key(config: Any) -> str:
    """Key of the run's metric set (every metric's name, parameters and code) + save_maps."""
    parts = []
    for comp in config.metrics:
        spec = metrics.get(comp.name)
        fns = [f for f in (spec.fn, spec.prepare, spec.finalize) if f is not None]
        parts.append({"label": comp.label, "name": comp.name,
                      "params": _params(config.params_for(comp, spec)),
                      "code": [code_version(f) for f in fns]})
    return _digest(_json({"metrics": parts, "save_maps": config.save_maps,
                          "profile": config.profile}))


def cell_key(sample: str, model: str, method: str, metric_set: str) -> str:
    """Key of one result row: sample x model x method, under one metric set."""
    return _digest(sample.encode(), model.encode(), method.encode(), metric_set.encode())


def contains(sorted_keys: np.ndarray, candidates: list[str]) -> np.ndarray:
    """Which ``candidates`` are in ``sorted_keys`` (sorted ``S16`` array): bool [len]."""
    if len(sorted_keys) == 0 or not candidates:
        return np.zeros(len(candidates), dtype=bool)
    c = np.asarray([k.encode() for k in candidates], dtype=f"S{KEY_CHARS}")
    i = np.minimum(np.searchsorted(sorted_keys, c), len(sorted_keys) - 1)
    return sorted_keys[i] == c
