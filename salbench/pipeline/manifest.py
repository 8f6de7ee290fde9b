"""``manifest.json``: what ran, with what, on which data, how long (SPEC 6)."""

from __future__ import annotations

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
