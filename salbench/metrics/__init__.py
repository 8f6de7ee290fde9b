"""Faithfulness and localization metrics (SPEC 5): a registry of model- and CPU-stage metrics."""

from __future__ import annotations

from salbench.metrics.registry import REGISTRY, MetricSpec, get, register


def names() -> list[str]:
    """Registered metric names."""
    return REGISTRY.names()


from salbench.metrics import (  # noqa: E402,F401
    cam_confidence,
    completeness,
    complexity,
    concentration,
    faithfulness,
    infidelity,
    irof,
    localisation_quantus,
    localization,
    mprt,
    perturbation,
    pic,
    randomisation,
    regions,
    road,
    robustness,
    sensitivity,
    similarity,
    sufficiency,
)

__all__ = ["MetricSpec", "REGISTRY", "get", "names", "register"]
