"""``salbench compare``'s text output: the manifest differences, the delta table and what got
worse or better (the statistics are :func:`salbench.results.compare.compare_runs`')."""

from __future__ import annotations

import math

import pandas as pd

from salbench.report.format import sig
from salbench.results.compare import GROUP


def format_comparison(table: pd.DataFrame) -> str:
    """A readable text table of :func:`compare_runs`' result (no manifest differences)."""
    if table.empty:
        return "(nothing to compare)"
    header = ["model", "method", "metric", "mean A", "mean B", "delta", "95% CI", "n A",
              "n B", "paired", ""]
    lines = []
    for r in table.itertuples(index=False):
        if r.only_in:
            delta, ci = f"only in {r.only_in.upper()}", ""
        else:
            delta = sig(r.delta, signed=True)
            ci = (f"[{sig(r.ci95_low, True)}, {sig(r.ci95_high, True)}]"
                  if math.isfinite(r.ci95_low) else "-")
        lines.append([r.model, r.method, r.metric, sig(r.mean_a), sig(r.mean_b), delta, ci,
                      str(r.n_a), str(r.n_b), "yes" if r.paired else "no",
                      "*" if r.significant else ""])
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    left = {0, 1, 2, 9, 10}

    def fmt(row: list[str]) -> str:
        cells = [c.ljust(w) if i in left else c.rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(cells).rstrip()

    return "\n".join([fmt(header), *(fmt(row) for row in lines)])


def comparison_report(table: pd.DataFrame, path_a: str = "", path_b: str = "") -> str:
    """The ``salbench compare`` output: runs, manifest differences, table, error counts."""
    attrs = table.attrs
    out = [f"A: {attrs.get('run_a', '?')}  {path_a}".rstrip(),
           f"B: {attrs.get('run_b', '?')}  {path_b}".rstrip()]
    diffs = attrs.get("differences", [])
    if diffs:
        out.append(f"differences between the runs ({len(diffs)}):")
        out += [f"  {d}" for d in diffs]
    else:
        out.append("no differences in config, dataset fingerprint, package versions or "
                   "git commit")
    out += ["", format_comparison(table)]
    errors = table[table["only_in"] == ""].drop_duplicates(GROUP)
    errors = errors[errors["n_error_a"] != errors["n_error_b"]]
    for r in errors.itertuples(index=False):
        out.append(f"error rows {r.model}/{r.method}: {r.n_error_a} in A, {r.n_error_b} in B")
    n_sig = int(table["significant"].sum())
    n_only = int((table["only_in"] != "").sum())
    out += ["", f"{len(table)} rows, {n_sig} significant (*: the 95% CI of delta = B - A "
            "excludes 0; paired t on common samples, else Welch t), "
            f"{n_only} in one run only"]
    for change, title in (("worse", "worse (significant, in the metric's worse direction)"),
                          ("better", "better (significant improvements)"),
                          ("changed", "changed (diagnostics with no better direction)")):
        hit = table[table["change"] == change]
        if len(hit):
            out += [f"{title}: {len(hit)}"] + [
                f"  {r.model}/{r.method} {r.metric}: {sig(r.mean_a)} -> {sig(r.mean_b)} "
                f"({sig(r.delta, signed=True)})" for r in hit.itertuples(index=False)]
    return "\n".join(out)
