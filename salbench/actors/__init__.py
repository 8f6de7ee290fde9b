"""Ray Data actor classes: AttributeActor and ScoreActor (model stages), BokehActor and
FinalizeActor (CPU stages).

They load on first use, so that a process which runs only the small actors of this package
(the progress counter, the crash journal) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {"AttributeActor": "attribute", "BokehActor": "cpu", "FinalizeActor": "cpu",
          "ScoreActor": "score"}

__all__ = ["AttributeActor", "BokehActor", "FinalizeActor", "ScoreActor"]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"salbench.actors.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'salbench.actors' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
