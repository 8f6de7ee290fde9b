"""The ranking view (LATEC, Klein et al. 2024): methods ranked per metric, and how far the
metrics agree on the ranking. Pure functions on the summary table (``summary.parquet``).

For each model and each metric column with a direction (higher or lower is better; neutral
columns and method diagnostics rank nothing), the methods with a finite mean are ranked by
it, best first (ties share the better rank: 1, 1, 3). Each keeps its mean and 95% interval
from the summary, and ``overlaps_best`` says whether that interval overlaps the best
method's (True: the data do not separate it from the best; NA where either has no
interval, e.g. a dataset-level aggregate or fewer than two values).

Rank agreement: for each model and each pair of metrics, Kendall's tau-b between their
scores over the methods both rank, each metric oriented so that larger is better (a lower-
is-better metric's means are negated): +1 the same order, -1 the reverse, ties counted as
tau-b counts them. NaN with fewer than two common methods or when one metric ties them all.

``rankings.parquet`` (next to ``summary.parquet``) holds both, one row each, told apart by
``kind``: ``"rank"`` rows fill ``method``, ``rank``, ``mean``, ``ci95_low``,
``ci95_high``, ``n``, ``overlaps_best``; ``"agreement"`` rows fill ``other_metric``,
``kendall_tau`` and ``n`` (the methods both metrics rank). :func:`split_rankings` gives the
two tables back.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd

from salbench.metrics.registry import direction as registry_direction

RANK_COLUMNS = ["model", "metric", "direction", "method", "rank", "mean", "ci95_low",
                "ci95_high", "n", "overlaps_best"]
AGREEMENT_COLUMNS = ["model", "metric", "other_metric", "kendall_tau", "n"]
RANKINGS_COLUMNS = ["kind", "model", "metric", "direction", "method", "other_metric", "rank",
                    "mean", "ci95_low", "ci95_high", "n", "overlaps_best", "kendall_tau"]


def rank_methods(summary: pd.DataFrame,
                 direction: Callable[[str], str] = registry_direction) -> pd.DataFrame:
    """The methods ranked per model x metric (:data:`RANK_COLUMNS`; see the module
    docstring). ``summary``: rows with ``model``, ``method``, ``metric``, ``mean``,
    ``ci95_low``, ``ci95_high``, ``n``; ``direction(metric)``: "higher", "lower" or
    "neutral" (the metric registry's by default)."""
    out: list[pd.DataFrame] = []
    dirs = {m: direction(m) for m in summary["metric"].unique()}
    keep = summary[summary["metric"].map(dirs).isin(("higher", "lower"))
                   & np.isfinite(summary["mean"].astype(float))]
    for (model, metric), g in keep.groupby(["model", "metric"], sort=False):
        sign = 1.0 if dirs[metric] == "higher" else -1.0
        score = sign * g["mean"].to_numpy(np.float64)
        rank = (score[None, :] > score[:, None]).sum(axis=1) + 1  # 1 + methods better
        lo, hi = g["ci95_low"].to_numpy(np.float64), g["ci95_high"].to_numpy(np.float64)
        best = int(np.argmax(score))
        known = np.isfinite(lo) & np.isfinite(hi) & math.isfinite(lo[best]) \
            & math.isfinite(hi[best])
        overlap = (lo <= hi[best]) & (lo[best] <= hi)
        out.append(pd.DataFrame({
            "model": model, "metric": metric, "direction": dirs[metric],
            "method": g["method"].to_numpy(), "rank": rank.astype(np.int64),
            "mean": g["mean"].to_numpy(np.float64), "ci95_low": lo, "ci95_high": hi,
            "n": g["n"].to_numpy(np.int64),
            "overlaps_best": pd.array([bool(o) if k else pd.NA
                                       for o, k in zip(overlap, known, strict=True)],
                                      dtype="boolean"),
        }).sort_values(["rank", "method"], kind="stable"))
    if not out:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in RANK_COLUMNS})
    return pd.concat(out, ignore_index=True)[RANK_COLUMNS]


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b of paired scores x, y (1-D, same length): (C - D) / sqrt((C + D +
    T_x) (C + D + T_y)) over the pairs (C concordant, D discordant, T_x tied in x only,
    T_y tied in y only); NaN with fewer than two pairs or when x or y is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2:
        return math.nan
    i, j = np.triu_indices(len(x), k=1)
    dx, dy = np.sign(x[j] - x[i]), np.sign(y[j] - y[i])
    s = dx * dy
    c, d = int((s > 0).sum()), int((s < 0).sum())
    tx, ty = int(((dx == 0) & (dy != 0)).sum()), int(((dy == 0) & (dx != 0)).sum())
    denom = math.sqrt((c + d + tx) * (c + d + ty))
    return (c - d) / denom if denom > 0 else math.nan


def rank_agreement(ranks: pd.DataFrame) -> pd.DataFrame:
    """Kendall's tau-b between every pair of metrics (the diagonal included) per model, over
    the methods both rank (:data:`AGREEMENT_COLUMNS`); ``ranks`` from :func:`rank_methods`."""
    rows: list[dict[str, object]] = []
    for model, g in ranks.groupby("model", sort=False):
        sign = np.where(g["direction"] == "higher", 1.0, -1.0)
        scores = g.assign(score=sign * g["mean"].to_numpy(np.float64)).pivot(
            index="method", columns="metric", values="score")
        names = list(dict.fromkeys(g["metric"]))
        for a in names:
            for b in names:
                both = scores[[a, b]].dropna() if a != b else scores[[a]].dropna()
                x = both[a].to_numpy()
                y = both[b].to_numpy() if a != b else x
                rows.append({"model": model, "metric": a, "other_metric": b,
                             "kendall_tau": kendall_tau_b(x, y), "n": len(both)})
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in AGREEMENT_COLUMNS})
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def rankings_table(summary: pd.DataFrame,
                   direction: Callable[[str], str] = registry_direction) -> pd.DataFrame:
    """``rankings.parquet``: :func:`rank_methods` and :func:`rank_agreement` in one table
    (:data:`RANKINGS_COLUMNS`, told apart by ``kind``)."""
    ranks = rank_methods(summary, direction)
    agreement = rank_agreement(ranks)
    with warnings.catch_warnings():  # concat of empty or all-NA columns: dtypes are set below
        warnings.simplefilter("ignore", FutureWarning)
        table = pd.concat([ranks.assign(kind="rank"),
                           agreement.assign(kind="agreement")], ignore_index=True)
    table = table.reindex(columns=RANKINGS_COLUMNS)
    return table.astype({c: _dtype(c) for c in RANKINGS_COLUMNS})


def split_rankings(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``rankings.parquet``'s table back as (ranks, agreement)."""
    ranks = table[table["kind"] == "rank"][RANK_COLUMNS].reset_index(drop=True)
    agreement = table[table["kind"] == "agreement"][AGREEMENT_COLUMNS].reset_index(drop=True)
    return ranks, agreement


def _dtype(column: str) -> str:
    if column in ("rank", "n"):
        return "Int64"
    if column == "overlaps_best":
        return "boolean"
    if column in ("mean", "ci95_low", "ci95_high", "kendall_tau"):
        return "float64"
    return "object"
