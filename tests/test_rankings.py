"""The ranking view (salbench.results.rankings): ranks, intervals and Kendall's tau-b,
against values computed by hand on a small summary table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from salbench.results.rankings import (
    kendall_tau_b,
    rank_agreement,
    rank_methods,
    rankings_table,
    split_rankings,
)
from salbench.results.tables import write_table

DIRS = {"m1": "higher", "m2": "lower", "m3": "higher", "m4": "higher",
        "target_prob": "neutral"}
NAN = math.nan


def _summary() -> pd.DataFrame:
    """Methods A-E; m1 (higher): B > C > D > A, E NaN; m2 (lower): the same order;
    m3 (higher): D > A = B > C; m4: A alone; target_prob: neutral (never ranked)."""
    rows = [  # method, metric, mean, low, high, n
        ("A", "m1", 0.1, NAN, NAN, 1), ("B", "m1", 0.4, 0.35, 0.45, 9),
        ("C", "m1", 0.3, 0.25, 0.36, 9), ("D", "m1", 0.2, 0.15, 0.25, 9),
        ("E", "m1", NAN, NAN, NAN, 0),
        ("A", "m2", 0.9, 0.8, 1.0, 9), ("B", "m2", 0.2, 0.1, 0.3, 9),
        ("C", "m2", 0.5, 0.4, 0.6, 9), ("D", "m2", 0.6, 0.5, 0.7, 9),
        ("A", "m3", 0.5, 0.4, 0.6, 9), ("B", "m3", 0.5, 0.4, 0.6, 9),
        ("C", "m3", 0.1, 0.0, 0.2, 9), ("D", "m3", 0.9, 0.8, 1.0, 9),
        ("A", "m4", 0.7, 0.6, 0.8, 9),
        ("A", "target_prob", 0.3, 0.2, 0.4, 9), ("B", "target_prob", 0.8, 0.7, 0.9, 9),
    ]
    return pd.DataFrame([{"model": "net", "method": m, "metric": k, "mean": v,
                          "ci95_low": lo, "ci95_high": hi, "n": n}
                         for m, k, v, lo, hi, n in rows])


def test_ranks_and_intervals():
    ranks = rank_methods(_summary(), DIRS.get)
    assert set(ranks["metric"]) == {"m1", "m2", "m3", "m4"}  # the neutral column ranks nothing
    m1 = ranks[ranks["metric"] == "m1"]
    assert m1["method"].tolist() == ["B", "C", "D", "A"]  # E has no mean: not ranked
    assert m1["rank"].tolist() == [1, 2, 3, 4]
    # C's interval [0.25, 0.36] overlaps B's [0.35, 0.45]; D's [0.15, 0.25] does not; A has
    # no interval
    assert m1["overlaps_best"].tolist() == [True, True, False, pd.NA]
    m2 = ranks[ranks["metric"] == "m2"]  # lower is better
    assert m2["method"].tolist() == ["B", "C", "D", "A"] and (m2["direction"] == "lower").all()
    m3 = ranks[ranks["metric"] == "m3"].set_index("method")["rank"]
    assert m3.to_dict() == {"D": 1, "A": 2, "B": 2, "C": 4}  # ties share the better rank
    m4 = ranks[ranks["metric"] == "m4"]
    assert m4[["method", "rank"]].values.tolist() == [["A", 1]]


def test_kendall_tau_by_hand():
    """m1 vs m3 over A-D: concordant A-D, B-C; discordant A-C, B-D, C-D; A-B tied in m3
    only: tau_b = (2 - 3) / sqrt((2 + 3 + 0) (2 + 3 + 1)) = -1 / sqrt(30)."""
    agreement = rank_agreement(rank_methods(_summary(), DIRS.get))
    tau = agreement.set_index(["metric", "other_metric"])
    assert tau.loc[("m1", "m3"), "kendall_tau"] == pytest.approx(-1 / math.sqrt(30))
    assert tau.loc[("m3", "m1"), "kendall_tau"] == pytest.approx(-1 / math.sqrt(30))
    assert tau.loc[("m1", "m3"), "n"] == 4
    # m2 is lower-is-better with the same order as m1: full agreement
    assert tau.loc[("m1", "m2"), "kendall_tau"] == pytest.approx(1.0)
    assert tau.loc[("m1", "m1"), "kendall_tau"] == pytest.approx(1.0)
    # a metric with one method agrees with nothing measurable
    for other in ("m1", "m2", "m3", "m4"):
        assert math.isnan(tau.loc[("m4", other), "kendall_tau"])
        assert tau.loc[("m4", other), "n"] == 1
    assert len(agreement) == 16


def test_kendall_tau_b_hand_cases():
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # x ties one pair, y none: C = 2 (pairs 1-3, 2-3), D = 0, T_x = 1: 2 / sqrt(2 * 3)
    assert kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))  # x ranks nothing
    assert math.isnan(kendall_tau_b([1], [2]))


def test_rankings_parquet_round_trip(tmp_path):
    table = rankings_table(_summary(), DIRS.get)
    assert set(table["kind"]) == {"rank", "agreement"}
    path = tmp_path / "rankings.parquet"
    write_table(table, path)
    back = pd.read_parquet(path)
    ranks, agreement = split_rankings(back)
    want_ranks = rank_methods(_summary(), DIRS.get)
    assert ranks["method"].tolist() == want_ranks["method"].tolist()
    assert ranks["rank"].astype(int).tolist() == want_ranks["rank"].tolist()
    np.testing.assert_allclose(agreement["kendall_tau"].to_numpy(float),
                               rank_agreement(want_ranks)["kendall_tau"].to_numpy(float))
    empty = rankings_table(_summary()[lambda s: s["metric"] == "target_prob"], DIRS.get)
    assert len(empty) == 0
    assert pa.Table.from_pandas(empty, preserve_index=False).num_columns == len(table.columns)


def test_report_tables():
    """The report's rank table (a row per method, a column per metric with its direction)
    marks the best (strong) and the methods whose interval overlaps the best's (*); the tau
    matrix is square over the ranked metrics."""
    from salbench.report.rankings import ranking_tables

    names = {"m1": "insertion_auc", "m2": "deletion_auc", "m3": "pointing_game_hit",
             "m4": "sparseness"}
    summary = _summary().replace({"metric": names})
    ranks_t, tau_t = ranking_tables(summary, ["D", "C", "B", "A", "E"])
    assert ranks_t.header == ["method", "insertion_auc (↑)", "deletion_auc (↓)",
                              "pointing_game_hit (↑)", "sparseness (↑)"]
    assert [r[0].text for r in ranks_t.rows] == ["D", "C", "B", "A"]
    column = [r[1] for r in ranks_t.rows]                   # insertion_auc
    assert [c.text for c in column] == ["3", "2*", "1", "4"]
    assert [c.strong for c in column] == [False, False, True, False]
    assert column[1].detail == "0.300\n[0.250, 0.360]"
    assert tau_t.header == ["metric", "insertion_auc", "deletion_auc", "pointing_game_hit",
                            "sparseness"]
    tau = {r[0].text: [c.text for c in r[1:]] for r in tau_t.rows}
    assert tau["insertion_auc"] == ["1.00", "1.00", "-0.18", "–"]


def test_report_tables_split_many_metrics_into_tables_that_fit(monkeypatch):
    """20 ranked metrics: the rank tables take at most RANK_METRICS_PER_TABLE metric columns
    each, the tau tables at most TAU_METRICS_PER_TABLE, split evenly, every metric once and
    in order, each table titled with the metrics it shows."""
    import salbench.report.rankings as report_rankings
    from salbench.report.rankings import (
        RANK_METRICS_PER_TABLE,
        TAU_METRICS_PER_TABLE,
        ranking_tables,
    )

    monkeypatch.setattr(report_rankings, "rank_methods",
                        lambda s: rank_methods(s, lambda metric: "higher"))

    base = _summary()
    base = base[base["metric"] == "m1"]
    metrics = [f"k{i:02d}" for i in range(20)]
    summary = pd.concat([base.assign(metric=m) for m in metrics], ignore_index=True)
    tables = ranking_tables(summary, ["A", "B", "C", "D"])
    ranks = [t for t in tables if t.title.startswith("Method ranks")]
    taus = [t for t in tables if t.title.startswith("Rank agreement")]
    assert [len(t.header) - 1 for t in ranks] == [7, 7, 6]
    assert max(len(t.header) - 1 for t in ranks) <= RANK_METRICS_PER_TABLE
    assert [len(t.header) - 1 for t in taus] == [10, 10]
    assert max(len(t.header) - 1 for t in taus) <= TAU_METRICS_PER_TABLE
    assert [h.split(" ")[0] for t in ranks for h in t.header[1:]] == metrics
    assert [h for t in taus for h in t.header[1:]] == metrics
    assert all(len(t.rows) == 20 for t in taus) and all(len(t.rows) == 4 for t in ranks)
    assert ranks[1].title.endswith("(metrics 8-14 of 20)")
    assert taus[1].title.endswith("(metrics 11-20 of 20)")
