"""``manifest.json``: what ran, with what, on which data, how long (SPEC 6)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from salbench import storage

PACKAGES = ("salbench", "torch", "torchvision", "ray", "numpy", "pyarrow", "pandas", "timm",
            "scikit-image", "pillow")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that change results."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The git commit of the salbench source tree, or None when it is not a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


#: Files of the installed package whose content is hashed (code and bundled configs/data).
SOURCE_SUFFIXES = (".py", ".yaml", ".json")


def source_hash(root: Path | None = None) -> str:
    """SHA-256 (first 16 hex digits) of the salbench package's source files as installed.

    Covers every ``.py`` / ``.yaml`` / ``.json`` file under the package directory (``root``,
    default: the imported package), by relative path and content in sorted order, so it
    is the same for a git checkout, an editable install and ``pip install .`` of the same
    code, and differs when any of those files differ. ``__pycache__`` is left out.
    """
    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix not in SOURCE_SUFFIXES or "__pycache__" in path.parts:
            continue
        if not path.is_file():
            continue
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def provenance() -> dict[str, Any]:
    """What identifies the code of a run: package version, source hash, git commit (or
    None outside a git checkout, e.g. after ``pip install .``)."""
    try:
        version: str | None = metadata.version("salbench")
    except metadata.PackageNotFoundError:
        version = None
    return {"salbench_version": version, "source_hash": source_hash(),
            "git_commit": git_commit()}


def host_info() -> dict[str, Any]:
    """Machine facts recorded with every run."""
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count()}


def write_manifest(run_dir: storage.Location, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` whole (local: temp + rename; object store: one upload)."""
    text = json.dumps(manifest, indent=2, sort_keys=True, default=str)
    storage.write_text(storage.join(run_dir, "manifest.json"), text)


def read_manifest(run_dir: storage.Location) -> dict[str, Any]:
    """The manifest of a run directory (a path or a URI)."""
    return json.loads(storage.read_text(storage.join(run_dir, "manifest.json")))
def attempts(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The finished attempts recorded in a run's manifest (``{}``: none), oldest first.

    A manifest written before attempts were recorded counts as one attempt, rebuilt from
    its ``started`` / ``finished`` / ``wall_seconds`` / ``timings``.
    """
    if "attempts" in manifest:
        return list(manifest["attempts"])
    if manifest.get("status") != "complete":
        return []
    counts = manifest.get("counts") or {}
    return [{"started": manifest.get("started"), "finished": manifest.get("finished"),
             "wall_seconds": manifest.get("wall_seconds", 0.0),
             "shards_run": counts.get("shards_run_now"),
             "cells_reused": counts.get("cells_reused_now"),
             "timings": manifest.get("timings") or {}}]


def merge_timings(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``timings`` entry for the attempts of a run (each ``{"timings": {...}}``).

    ``execute_seconds``: summed. ``method_seconds_per_image``: the mean over all images
    (each attempt weighted by ``method_images``, its image count per model/method; 1 when
    an older attempt lacks it). ``stages``: those of the only attempt that ran the graph;
    with several, per operator the sums of ``time_total_s``, ``rows`` and ``bytes`` (their
    clock positions belong to their own attempt and stay in ``attempts``).
    """
    timed = [a.get("timings") or {} for a in runs]
    timed = [t for t in timed if t]
    if not timed:
        return {}
    if len(timed) == 1:
        return dict(timed[0])
    out: dict[str, Any] = {"execute_seconds": round(sum(t.get("execute_seconds", 0.0)
                                                        for t in timed), 3)}
    total: dict[str, float] = {}
    weight: dict[str, float] = {}
    for t in timed:
        images = t.get("method_images") or {}
        for key, sec in (t.get("method_seconds_per_image") or {}).items():
            w = float(images.get(key, 1))
            total[key] = total.get(key, 0.0) + float(sec) * w
            weight[key] = weight.get(key, 0.0) + w
    out["method_seconds_per_image"] = {k: round(total[k] / weight[k], 4) for k in sorted(total)}
    out["method_images"] = {k: int(weight[k]) for k in sorted(weight)}
    staged = [t["stages"] for t in timed if t.get("stages")]
    if len(staged) == 1:
        out["stages"] = staged[0]
    elif staged:
        summed: dict[str, dict[str, float]] = {}
        for stages in staged:
            for op, entry in stages.items():
                acc = summed.setdefault(op, {})
                for key in ("time_total_s", "rows", "bytes"):
                    if key in entry:
                        acc[key] = round(acc.get(key, 0) + entry[key], 4)
        out["stages"] = summed
    executors = {t["executor"] for t in timed if "executor" in t}
    if executors:
        out["executor"] = "/".join(sorted(executors))
    return out
