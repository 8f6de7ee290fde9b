"""The report's ranking view (LATEC): per model, the methods' rank under each metric with
its mean and 95% interval, and Kendall's tau between metrics
(:mod:`salbench.results.rankings` computes both from the summary)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from salbench.report.format import fmt
from salbench.report.tables import Cell, Table
from salbench.results.rankings import rank_agreement, rank_methods

RANK_CAPTION = (
    "Rank of each method under each metric with a direction (1 = best; ties share the "
    "better rank), its mean and 95% interval from the summary. * : its interval overlaps the "
    "best method's, so the data do not separate it from the best. With few images nearly "
    "every method overlaps the best: the ranking is then not evidence of an order."
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
        detail += f" [{fmt(float(row.ci95_low))}, {fmt(float(row.ci95_high))}]"
    return Cell(f"{rank}{mark}", detail, strong=rank == 1)


def ranking_tables(summary: pd.DataFrame, methods: list[str]) -> list[Table]:
    """Per model: the rank table (metrics x methods, in ``methods`` order) and the Kendall
    tau matrix (metrics x metrics). No table for a model without ranked metrics."""
    ranks = rank_methods(summary)
    agreement = rank_agreement(ranks)
    tables: list[Table] = []
    for model, g in ranks.groupby("model", sort=False):
        names = [m for m in methods if m in set(g["method"])]
        names += sorted(set(g["method"]) - set(names))
        by = {(r.metric, r.method): r for r in g.itertuples(index=False)}
        metric_names = list(dict.fromkeys(g["metric"]))
        rows = []
        for metric in metric_names:
            cells = [Cell(metric), Cell(str(g.loc[g["metric"] == metric, "direction"].iloc[0]))]
            for method in names:
                cells.append(_rank_cell(by.get((metric, method))))
            rows.append(cells)
        tables.append(Table(f"Method ranks, {model}", ["metric", "better", *names], rows,
                            RANK_CAPTION, key="ranking"))
        tau = agreement[agreement["model"] == model].set_index(["metric", "other_metric"])
        matrix = []
        for a in metric_names:
            cells = [Cell(a)]
            for b in metric_names:
                t = tau.loc[(a, b)]
                cells.append(Cell(fmt(float(t["kendall_tau"]), 2), f"n={int(t['n'])}"))
            matrix.append(cells)
        tables.append(Table(f"Rank agreement (Kendall's tau over methods), {model}",
                            ["metric", *metric_names], matrix, TAU_CAPTION, key="ranking"))
    return tables
