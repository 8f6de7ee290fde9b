"""What a report reads from a run directory, and what it knows about metric columns.

Everything comes from the run's own files (``samples/*.parquet``, ``summary.parquet``,
``manifest.json``), so a report can be rebuilt later on another machine. The registries are
consulted only for names and directions of columns, never for numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from salbench import storage
from salbench.report.format import sign
from salbench.results.samples import RunSamples, load_run
from salbench.results.summary import summarize_run

#: Headline metrics, in the order tables and galleries show them.
HEADLINE = (
    "insertion_auc", "deletion_auc", "insertion_ratio_auc", "sic_aggregate_auc",
    "aic_aggregate_auc", "sic_msssim_aggregate_auc", "aic_msssim_aggregate_auc",
    "insertion_igos_auc", "deletion_igos_auc", "pixel_flip_lerf_auc", "pixel_flip_morf_auc",
    "insertion_samp_auc", "deletion_samp_auc", "pointing_game_hit", "wsol_f1", "wsol_roc_auc",
    "wsol_mae", "sensitivity_n", "concentration_gini", "similarity_pearson",
    "similarity_ssim", "mprt_spearman", "mprt_ssim", "completeness_error",
)


@dataclass(frozen=True)
class RunTables:
    """One run's tables as the report uses them."""

    path: Path | str
    manifest: dict[str, Any]
    samples: RunSamples  # read from the shards as needed, never whole
    summary: pd.DataFrame

    @property
    def run_id(self) -> str:
        """The manifest's ``run_id``, else the directory name."""
        return str(self.manifest.get("run_id") or storage.basename(self.path))

    @property
    def config(self) -> dict[str, Any]:
        """The run's config as recorded in the manifest (``{}`` when absent)."""
        cfg = self.manifest.get("config")
        return cfg if isinstance(cfg, dict) else {}

    @property
    def models(self) -> list[str]:
        """Model labels in table order."""
        return self.samples.models

    @property
    def methods(self) -> list[str]:
        """Method labels in config order (then any others, sorted)."""
        present = self.samples.methods
        ordered = [m for m in method_names(self.config) if m in present]
        return ordered + sorted(present - set(ordered))

    @property
    def has_maps(self) -> bool:
        """True when the per-sample table holds saliency maps (config ``save_maps``)."""
        return self.samples.has_values("map")

    def summary_value(self, model: str, method: str, metric: str) -> pd.Series | None:
        """The summary row of model x method x metric, or None."""
        s = self.summary
        hit = s[(s["model"] == model) & (s["method"] == method) & (s["metric"] == metric)]
        return None if hit.empty else hit.iloc[0]


def method_names(config: dict[str, Any]) -> dict[str, str]:
    """Method label -> registry name from a recorded config (in config order)."""
    out: dict[str, str] = {}
    raw = config.get("methods")
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, str):
            out[item] = item
        elif isinstance(item, dict) and "name" in item:
            out[str(item.get("alias", item["name"]))] = str(item["name"])
    return out


def read_run(run_dir: Path | str) -> RunTables:
    """Read a run directory for a report (:func:`salbench.results.samples.load_run`, the
    reader ``salbench compare`` uses too); a ConfigError naming it when it is not one.

    ``summary.parquet`` is used when present; a run without it (interrupted) gets the
    summary recomputed from its finished shards and recorded config.
    """
    run = load_run(run_dir)
    summary = run.summary
    if summary is None:
        from salbench.config import parse_config

        summary = summarize_run(run.samples.groups, parse_config(run.manifest["config"]))[0]
    return RunTables(run.path, run.manifest, run.samples, summary)


def direction(metric: str) -> int:
    """+1 when higher is better, -1 when lower is better, 0 for diagnostics and neutral
    columns: the metric registry's direction (the one ``salbench compare`` uses)."""
    from salbench.metrics.registry import direction as registry_direction

    if not is_metric(metric):
        return 0
    return sign(registry_direction(metric))


def metric_columns() -> set[str]:
    """Every scalar column a registered metric writes."""
    from salbench import metrics

    return {c for n in metrics.names() for c, kind in metrics.get(n).columns.items()
            if kind == "float"}


def is_metric(column: str) -> bool:
    """True for a registered metric's score (not ``*_skipped``, not a method diagnostic)."""
    if column.endswith("_skipped"):
        return False
    return column in metric_columns() or column.endswith(("_aggregate_auc",
                                                          "_class_mean_hit"))


def skipped(row: pd.Series) -> int:
    """Rows of a summary row that have a map but no value (e.g. SIC's skipped samples)."""
    return (int(row["n_rows"]) - int(row["n_error"]) - int(row["n"])
            - degenerate(row))


def degenerate(row: pd.Series) -> int:
    """Rows of a summary row whose map was constant or non-finite (0 for summaries written
    before the count existed)."""
    value = row.get("n_degenerate", 0)
    return 0 if pd.isna(value) else int(value)


