"""``salbench compare RUN_A RUN_B --report``: a comparison page (deltas B - A, regressions)
from :func:`salbench.results.compare.compare_runs`.

A *regression* is a significant delta (its 95% interval excludes 0) in the bad direction of
a metric (lower for higher-is-better metrics, higher for deletion, MoRF, MAE, ...); an
*improvement* one in the good direction. Significant changes of method diagnostics, which
have no good direction, are listed as changes. Dataset-level figures (SIC / AIC aggregate
AUCs) have no interval and are never significant.
"""

from __future__ import annotations

import math
import os
import re
from html import escape
from pathlib import Path

import pandas as pd

from salbench.report.data import direction
from salbench.report.format import arrow, fmt, fmt_signed
from salbench.report.html import collapsible, page, section, table_html
from salbench.report.tables import Cell, Table, to_markdown
from salbench.results.compare import compare_runs

HEADER = ["model", "method", "metric", "mean A", "mean B", "delta B - A", "95% CI", "n A",
          "n B", "paired"]


def classify(table: pd.DataFrame) -> pd.Series:
    """Per row of a comparison: "regression", "improvement", "change" (significant, no
    direction), "only in A" / "only in B", or ""."""
    def one(r: pd.Series) -> str:
        if r["only_in"]:
            return f"only in {r['only_in'].upper()}"
        if not r["significant"]:
            return ""
        d = direction(r["metric"])
        if d == 0:
            return "change"
        return "improvement" if r["delta"] * d > 0 else "regression"

    return table.apply(one, axis=1) if len(table) else pd.Series([], dtype=str)


def _rows(table: pd.DataFrame, strong: bool = False) -> list[list[Cell]]:
    rows = []
    for r in table.itertuples(index=False):
        ci = (f"[{fmt(r.ci95_low)}, {fmt(r.ci95_high)}]" if math.isfinite(r.ci95_low) else "–")
        delta = fmt_signed(r.delta)
        label = r.metric + arrow(direction(r.metric))
        rows.append([Cell(r.model), Cell(r.method), Cell(label), Cell(fmt(r.mean_a)),
                     Cell(fmt(r.mean_b)), Cell(delta, strong=strong and r.significant),
                     Cell(ci), Cell(str(r.n_a)), Cell(str(r.n_b)),
                     Cell("yes" if r.paired else "no")])
    return rows


def comparison_tables(table: pd.DataFrame) -> list[Table]:
    """Regressions, improvements, other significant changes, error-count changes, rows in
    one run only, then every delta."""
    kind = classify(table)
    out = []
    for label, title in (("regression", "Regressions"), ("improvement", "Improvements"),
                         ("change", "Significant changes of method diagnostics")):
        sub = table[kind == label]
        out.append(Table(f"{title} ({len(sub)})", HEADER, _rows(sub, strong=True),
                         "Significant: the 95% interval of delta = B - A excludes 0 (paired "
                         "t on the samples both runs share, else Welch t).", key=label))
    errs = table[table["only_in"] == ""].drop_duplicates(["model", "method"])
    errs = errs[errs["n_error_a"] != errs["n_error_b"]]
    out.append(Table(f"Error rows that changed ({len(errs)})",
                     ["model", "method", "error rows A", "error rows B"],
                     [[Cell(r.model), Cell(r.method), Cell(str(r.n_error_a)),
                       Cell(str(r.n_error_b), strong=r.n_error_b > r.n_error_a)]
                      for r in errs.itertuples(index=False)], key="errors"))
    only = table[table["only_in"] != ""]
    out.append(Table(f"In one run only ({len(only)})", ["model", "method", "metric", "run"],
                     [[Cell(r.model), Cell(r.method), Cell(r.metric),
                       Cell(r.only_in.upper())] for r in only.itertuples(index=False)],
                     key="only"))
    both = table[table["only_in"] == ""]
    out.append(Table(f"Every delta ({len(both)})", HEADER, _rows(both, strong=True),
                     "Bold: significant. ↑ higher is better, ↓ lower is better.", key="all"))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _report_link(run: Path, out_dir: Path) -> str | None:
    index = run / "report" / "index.html"
    return os.path.relpath(index, out_dir) if index.is_file() else None


def write_compare_report(run_a: Path, run_b: Path, out_dir: Path | None = None) -> Path:
    """Write the comparison of run B with run A (``index.html`` and ``compare.md``) into
    ``out_dir`` (default ``RUN_B/report/compare-<run A id>/``); returns index.html's path."""
    run_a, run_b = Path(run_a), Path(run_b)
    table = compare_runs(run_a, run_b)
    id_a, id_b = table.attrs["run_a"], table.attrs["run_b"]
    out_dir = Path(out_dir) if out_dir is not None else run_b / "report" / f"compare-{_slug(id_a)}"
    out_dir.mkdir(parents=True, exist_ok=True)
    diffs = table.attrs.get("differences", [])
    tables = comparison_tables(table)
    kinds = classify(table)
    n_reg, n_imp = int((kinds == "regression").sum()), int((kinds == "improvement").sum())

    md = [f"# salbench comparison: {id_b} (B) vs {id_a} (A)", "",
          f"A: `{run_a}`  ", f"B: `{run_b}`", "",
          f"{n_reg} regressions, {n_imp} improvements, {len(table)} rows.", "",
          "## Differences between the runs", ""]
    md += [f"- {d}" for d in diffs] or ["- none (config, dataset, versions, git commit)"]
    md += [""] + [to_markdown(t) for t in tables]
    (out_dir / "compare.md").write_text("\n".join(md))

    links = []
    for label, run in (("A", run_a), ("B", run_b)):
        href = _report_link(run, out_dir)
        links.append(f'<a href="{escape(href)}">report of {label}</a>' if href
                     else f"{label}: no report (salbench report {escape(str(run))})")
    diff_html = ("<ul>" + "".join(f"<li>{escape(d)}</li>" for d in diffs) + "</ul>" if diffs
                 else "<p>No differences in config, dataset fingerprint, package versions or "
                      "git commit.</p>")
    body = [section("differences", f"Differences between the runs ({len(diffs)})", diff_html)]
    for t in tables:
        html = table_html(t)
        if t.key == "all":
            body.append(section(t.key, "Every delta", collapsible(t.title, html)))
        else:
            body.append(section(t.key, t.title, html if t.rows else
                                '<p class="note">None.</p>'))
    meta = (f"B <b>{escape(id_b)}</b> ({escape(str(run_b))}) compared with A "
            f"<b>{escape(id_a)}</b> ({escape(str(run_a))}) · {n_reg} regressions · "
            f"{n_imp} improvements · " + " · ".join(links))
    nav = [(f"#{k}", k) for k in ("differences", "regression", "improvement", "change",
                                   "errors", "only", "all")] + [("compare.md", "compare.md")]
    index = out_dir / "index.html"
    index.write_text(page(f"salbench comparison: {id_b} vs {id_a}", meta, nav, "".join(body)))
    return index
