"""Any timm model by name, ``timm:<name>``, with local weights (SPEC 3).

``salbench.models.load("timm:resnet50.a1_in1k", weights=PATH)``. Without ``weights`` the file
is looked for as ``<name>.safetensors`` or ``<name>.pth`` (then the basename of timm's download
URL) in ``$SALBENCH_WEIGHTS`` and the torch hub cache, and as ``model.safetensors`` in the
Hugging Face hub cache snapshot of the model's ``hf_hub_id`` (where ``timm`` itself stores
downloads); nothing is downloaded. ``weights="random"`` keeps a random initialisation seeded
with 0. Input size, mean/std and crop fraction come from the model's ``pretrained_cfg``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from torch import nn

from salbench.errors import SalbenchError, UnknownNameError, WeightsNotFoundError
from salbench.models.base import IMAGENET_MEAN, IMAGENET_STD, Classifier
from salbench.models.weights import (
    RANDOM,
    build_random,
    build_with_state_dict,
    check_state_dict,
    find_weights,
    load_state_dict_file,
    to_float32,
)


def _hf_snapshot_dirs(hf_hub_id: str | None) -> list[Path]:
    """Snapshot directories of ``hf_hub_id`` in the local Hugging Face cache (may be [])."""
    if not hf_hub_id:
        return []
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")),
        "hub",
    )
    repo = Path(cache) / ("models--" + hf_hub_id.replace("/", "--")) / "snapshots"
    return sorted(p for p in repo.glob("*") if p.is_dir()) if repo.is_dir() else []


def _check_name(name: str) -> None:
    import timm

    if not name or ":" in name or "/" in name or not timm.is_model(name):
        hint = timm.list_models(f"*{name.split('.')[0].split(':')[-1]}*")[:20] if name else []
        raise UnknownNameError(
            f"unknown timm model {name!r} (only names from timm's registry are accepted, e.g. "
            f"'timm:resnet50' or 'timm:resnet50.a1_in1k'; hub/path sources are refused since "
            f"salbench never downloads)" + (f"; similar names: {', '.join(hint)}" if hint else "")
        )


def load_timm(name: str, weights: str | None = None, **kwargs: Any) -> Classifier:
    """timm model ``name`` (optionally with a pretrained tag) as a :class:`Classifier`.

    Args:
        name: a timm registry name, e.g. ``"resnet50"`` or ``"convnext_tiny.fb_in1k"``.
        weights: path to a state dict, ``"random"``, or None to search for a local file.
        **kwargs: passed to ``timm.create_model`` (e.g. ``num_classes``).

    Returns:
        A Classifier taking [B, 3, H, W] in [0, 1], (H, W) from ``pretrained_cfg["input_size"]``.

    Raises:
        UnknownNameError: not a timm model name.
        WeightsNotFoundError: no local file (the message lists the names and directories).
        SalbenchError: the file does not fit the architecture.
    """
    import timm

    _check_name(name)
    cfg_name = f"timm:{name}"

    def ctor() -> nn.Module:
        try:
            return timm.create_model(name, pretrained=False, **kwargs)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise UnknownNameError(f"timm model {name!r} cannot be created: {exc}") from exc

    if weights == RANDOM:
        net = build_random(ctor)
    else:
        cfg = timm.models.get_pretrained_cfg(name)
        names = [f"{name}.safetensors", f"{name}.pth"]
        url = getattr(cfg, "url", None) if cfg is not None else None
        if url:
            names.append(url.rsplit("/", 1)[-1])
        try:
            path = find_weights(names, weights, cfg_name)
        except WeightsNotFoundError as exc:
            if weights is not None:
                raise
            hf_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
            found = [
                d / "model.safetensors"
                for d in _hf_snapshot_dirs(hf_id)
                if (d / "model.safetensors").is_file()
            ]
            if not found:
                where = f" (nor model.safetensors in the Hugging Face cache of {hf_id!r})"
                raise WeightsNotFoundError(f"{exc}{where if hf_id else ''}") from None
            path = found[-1]
        sd = load_state_dict_file(path)
        try:
            net = build_with_state_dict(ctor, sd, cfg_name, str(path))
        except SalbenchError:
            # Checkpoints from original repos need the architecture's filter (as timm does).
            real = build_random(ctor)
            filt = getattr(sys.modules.get(type(real).__module__), "checkpoint_filter_fn", None)
            if filt is None:
                raise
            try:
                filtered = filt(dict(sd), real)
            except Exception:
                check_state_dict(real, sd, cfg_name, str(path))
                raise
            check_state_dict(real, filtered, cfg_name, str(path))
            real.load_state_dict(to_float32(filtered), strict=True)
            net = real
    pc: dict[str, Any] = dict(getattr(net, "pretrained_cfg", None) or {})
    _, h, w = pc.get("input_size", (3, 224, 224))
    return Classifier(
        net.eval(),
        name=cfg_name,
        input_size=(h, w),
        num_classes=int(getattr(net, "num_classes", pc.get("num_classes", 1000))),
        mean=tuple(pc.get("mean", IMAGENET_MEAN)),
        std=tuple(pc.get("std", IMAGENET_STD)),
        crop_fraction=float(pc.get("crop_pct", 0.875)),
    )
