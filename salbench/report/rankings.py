"""The report's ranking view (LATEC): per model, the methods' rank under each metric with
its mean and 95% interval, and Kendall's tau between metrics
(:mod:`salbench.results.rankings` computes both from the summary)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from salbench.report.format import arrow, fmt, sign
from salbench.report.tables import Cell, Table
from salbench.results.rankings import rank_agreement, rank_methods

#: Metric columns per rank table (a cell: rank, mean, interval) and per tau table: more
#: metrics than that take several tables, so that each fits a 1400 px window.
RANK_METRICS_PER_TABLE = 8
TAU_METRICS_PER_TABLE = 14
RANK_CAPTION = (
    "Rank of each method under each metric with a direction (↑ higher, ↓ lower is better; "
    "1 = best; ties share the better rank), its mean and 95% interval from the summary. "
    "* : its interval overlaps the best method's, so the data do not separate it from the "
    "best. With few images nearly every method overlaps the best: the ranking is then not "
    "evidence of an order."
)
TAU_CAPTION = (
    "Kendall's tau-b between two metrics' scores over the methods both rank (each metric "
    "oriented so that better is larger): +1 the same order, -1 the reverse, – undefined "
    "(fewer than two common methods, or one metric ties them all); n = common methods."
)


def _rank_cell(row: Any) -> Cell:
    """A rank row (a :func:`rank_methods` row as a named tuple, or None) as a cell."""
    if row is None:
        return Cell("–")
    rank = int(row.rank)
    mark = "*" if rank > 1 and not pd.isna(row.overlaps_best) and bool(row.overlaps_best) \
        else ""
    detail = fmt(float(row.mean))
    if math.isfinite(float(row.ci95_low)):
        detail += f"\n[{fmt(float(row.ci95_low))}, {fmt(float(row.ci95_high))}]"
    return Cell(f"{rank}{mark}", detail, strong=rank == 1)


def _columns(names: list[str], per: int) -> list[list[str]]:
    """``names`` in runs of at most ``per``, as even as possible (20 by 8: 7, 7, 6)."""
    parts = max(1, math.ceil(len(names) / per))
    size = math.ceil(len(names) / parts)
    return [names[i:i + size] for i in range(0, len(names), size)]


def _part(title: str, part: list[str], parts: list[list[str]], everything: list[str]) -> str:
    """``title``, and which of the metrics a table shows when they take several tables."""
    if len(parts) == 1:
        return title
    first = everything.index(part[0]) + 1
    return f"{title} (metrics {first}-{first + len(part) - 1} of {len(everything)})"


def ranking_tables(summary: pd.DataFrame, methods: list[str]) -> list[Table]:
    """Per model: the rank table (methods x metrics, methods in ``methods`` order) and the
    Kendall tau matrix (metrics x metrics); each split into tables of at most
    :data:`RANK_METRICS_PER_TABLE` / :data:`TAU_METRICS_PER_TABLE` metric columns so that
    they fit a 1400 px window. No table for a model without ranked metrics."""
    ranks = rank_methods(summary)
    agreement = rank_agreement(ranks)
    tables: list[Table] = []
    for model, g in ranks.groupby("model", sort=False):
        names = [m for m in methods if m in set(g["method"])]
        names += sorted(set(g["method"]) - set(names))
        by = {(r.metric, r.method): r for r in g.itertuples(index=False)}
        metric_names = list(dict.fromkeys(g["metric"]))
        arrows = {m: arrow(sign(d)) for m, d in zip(g["metric"], g["direction"], strict=True)}
        parts = _columns(metric_names, RANK_METRICS_PER_TABLE)
        for part in parts:
            rows = [[Cell(method), *(_rank_cell(by.get((metric, method))) for metric in part)]
                    for method in names]
            tables.append(Table(_part(f"Method ranks, {model}", part, parts, metric_names),
                                ["method", *(f"{m}{arrows[m]}" for m in part)], rows,
                                RANK_CAPTION, key="ranking"))
        tau = agreement[agreement["model"] == model].set_index(["metric", "other_metric"])
        parts = _columns(metric_names, TAU_METRICS_PER_TABLE)
        for part in parts:
            matrix = []
            for a in metric_names:
                cells = [Cell(a)]
                for b in part:
                    t = tau.loc[(a, b)]
                    cells.append(Cell(fmt(float(t["kendall_tau"]), 2), f"n={int(t['n'])}"))
                matrix.append(cells)
            tables.append(Table(_part(f"Rank agreement (Kendall's tau over methods), {model}",
                                      part, parts, metric_names),
                                ["metric", *part], matrix, TAU_CAPTION, key="ranking"))
    return tables
