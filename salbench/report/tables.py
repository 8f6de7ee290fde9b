"""Report tables: a small table model (cells with a highlight flag), markdown rendering, and
the tables of a run: overview, one table per metric, the errors, and the papers' layouts
(paper 001 Tables 1-4, paper 002 Tables 1-2, paper 003 supplement Tables 1-3, paper 004
Table 1). Numbers come from ``summary.parquet`` (means, 95% intervals, counts) and, for
paired deltas and paper 001's binned PIC, from the per-sample table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from salbench.catalog import PAPER_REFS
from salbench.report.columns import paper_layout
from salbench.report.data import (
    HEADLINE,
    RunTables,
    degenerate,
    direction,
    is_metric,
    method_names,
    skipped,
)
from salbench.report.format import arrow, fmt, fmt_signed
from salbench.report.intervals import kind as interval_kind
from salbench.results.compare import paired_interval
from salbench.results.groups import GroupCounts
from salbench.results.tables import MAP_STATUSES

#: Derived metrics computed from the per-sample table: paper 001's binned PIC (pic_blur).
BINNED = {"pic_blur_sic_binned_auc": ("sic", "pic_blur_prob_ratio"),
          "pic_blur_aic_binned_auc": ("aic", "pic_blur_top1")}
ERROR_ROWS_SHOWN = 200
OVERVIEW_COLUMNS = 10
OVERVIEW_LEAD = (
    "Means over ok rows; each metric's columns side by side, a dataset-level aggregate AUC "
    "(SIC / AIC: the AUC of the aggregated curve) right after the mean of its per-sample "
    "AUCs. The best value of each column in bold (↑ higher is better, ↓ lower is better).")
METRIC_LEAD = (
    "One table per metric: model x method. 95% CI: the interval named under each table's "
    "title (– when n < 2 or for a dataset-level figure); n: values used; skipped: ok rows "
    "without a value; errors: rows whose status is not ok. The best mean per model in bold "
    "(for a metric with a better direction).")


@dataclass
class Cell:
    """One table cell: ``text``, a smaller ``detail`` (interval, n; lines separated by
    newlines), ``strong`` = highlighted."""

    text: str
    detail: str = ""
    strong: bool = False


@dataclass
class Table:
    """A titled table with a caption; ``key`` groups tables in the report.

    ``lead``: the text this table shares with the tables next to it (a legend, how the
    figures were computed; paragraphs separated by newlines), printed once before the first
    table of such a run (:func:`leads`); ``caption``: only what is this table's own."""

    title: str
    header: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    key: str = ""
    notes: list[str] = field(default_factory=list)
    lead: str = ""


def leads(tables: Sequence[Table]) -> list[str]:
    """Per table, the shared text to print before it: its ``lead`` where the table before
    it has another one, else ""."""
    out, previous = [], None
    for t in tables:
        out.append(t.lead if t.lead and t.lead != previous else "")
        previous = t.lead
    return out


@dataclass(frozen=True)
class Stat:
    """A model x method x metric figure: mean, 95% interval, counts."""

    mean: float
    low: float
    high: float
    n: int
    skipped: int
    errors: int
    degenerate: int = 0

    def cell(self, strong: bool = False, extra: str = "") -> Cell:
        """The mean as text; interval, n and skipped as detail."""
        counts = [f"n={self.n}"]
        if self.skipped:
            counts.append(f"{self.skipped} skipped")
        if self.errors:
            counts.append(f"{self.errors} err")
        if self.degenerate:
            counts.append(f"{self.degenerate} degenerate")
        lines = [f"[{fmt(self.low)}, {fmt(self.high)}]"] if math.isfinite(self.low) else []
        lines.append(", ".join(counts))
        text = fmt(self.mean) + (f" {extra}" if extra else "")
        return Cell(text, "\n".join(lines), strong)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def share_captions(tables: Sequence[Table]) -> list[Table]:
    """``tables`` with each caption that several of them have made their shared ``lead``,
    and the tables that share one moved together (in the order of their first table):
    e.g. per model a rank table and a tau table -> every rank table, then every tau table."""
    counts: dict[str, int] = {}
    for t in tables:
        counts[t.caption] = counts.get(t.caption, 0) + 1
    first = {c: i for i, c in reversed(list(enumerate(t.caption for t in tables)))}
    out = [replace(t, lead=t.caption, caption="") if t.caption and counts[t.caption] > 1 else t
           for t in tables]
    return sorted(out, key=lambda t: first[t.lead or t.caption])


def tables_markdown(tables: Sequence[Table]) -> list[str]:
    """The tables as markdown, each run of tables sharing a ``lead`` after that text once."""
    return [(lead.replace("\n", "\n\n") + "\n\n" if lead else "") + to_markdown(t)
            for t, lead in zip(tables, leads(tables), strict=True)]


def to_markdown(table: Table) -> str:
    """The table as GitHub markdown (highlighted cells in bold, details after the text)."""
    def cell(c: Cell) -> str:
        text = f"**{c.text}**" if c.strong and c.text else c.text
        return _md_escape(f"{text} {c.detail}".strip())

    lines = [f"### {table.title}", ""]
    if table.caption:
        lines += [table.caption, ""]
    lines.append("| " + " | ".join(_md_escape(h) for h in table.header) + " |")
    lines.append("|" + "---|" * len(table.header))
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    lines += [f"\n{n}" for n in table.notes]
    return "\n".join(lines) + "\n"


def stat(run: RunTables, model: str, method: str, metric: str) -> Stat | None:
    """The figure of model x method x metric from the summary (or :data:`BINNED`)."""
    if metric in BINNED:
        return _binned(run, model, method, metric)
    row = run.summary_value(model, method, metric)
    if row is None or (int(row["n"]) == 0 and not math.isfinite(float(row["mean"]))):
        return None
    return Stat(float(row["mean"]), float(row["ci95_low"]), float(row["ci95_high"]),
                int(row["n"]), skipped(row), int(row["n_error"]), degenerate(row))


def _binned(run: RunTables, model: str, method: str, metric: str) -> Stat | None:
    """Paper 001's dataset-level PIC: all samples' (level, value) pairs in 100 bins."""
    from salbench.metrics.pic import aggregate_binned

    kind, values_col = BINNED[metric]
    s = run.samples
    if "pic_blur_levels" not in s.columns:
        return None
    g = s.group(model, method, ["status", "pic_blur_levels", values_col])
    ok = g[g["status"].isin(MAP_STATUSES) & g["pic_blur_levels"].notna()]
    pairs = [(np.asarray(lv, np.float64), np.asarray(v, np.float64))
             for lv, v in zip(ok["pic_blur_levels"], ok[values_col], strict=True)
             if v is not None and np.isfinite(lv).all() and np.isfinite(v).all()]
    if not pairs:
        return None
    _, _, auc = aggregate_binned(np.stack([p[0] for p in pairs]),
                                 np.stack([p[1] for p in pairs]), kind=kind)
    # the group's counts, as the summary's: constant maps are degenerate, not errors
    counts = s.counts[(model, method)]
    degenerate_maps = counts.statuses.get("degenerate_map", 0)
    return Stat(auc, math.nan, math.nan, len(pairs),
                counts.rows - counts.errors - degenerate_maps - len(pairs), counts.errors,
                degenerate_maps)


def paired_delta(run: RunTables, model: str, base: str, other: str,
                 metric: str) -> tuple[float, float, float] | None:
    """(mean delta other - base, 95% low, high) over the samples both have ok and finite
    (paired t); None when the metric is not a per-sample column or fewer than 2 pairs."""
    s = run.samples
    if metric not in s.columns:
        return None
    cols = ["sample_id", "status", metric]
    a = s.group(model, base, cols)[cols]
    b = s.group(model, other, cols)[cols]
    m = a.merge(b, on="sample_id", suffixes=("_a", "_b"))
    m = m[m["status_a"].isin(MAP_STATUSES) & m["status_b"].isin(MAP_STATUSES)]
    va, vb = m[f"{metric}_a"].to_numpy(np.float64), m[f"{metric}_b"].to_numpy(np.float64)
    keep = np.isfinite(va) & np.isfinite(vb)
    diff = vb[keep] - va[keep]
    if len(diff) < 2:
        return None
    low, high = paired_interval(diff)
    return float(diff.mean()), low, high


def interval_caption(metric: str) -> str:
    """How the 95% interval of ``metric`` is computed, for a caption."""
    kind = interval_kind(metric)
    if kind == "wilson":
        return "Wilson score interval of the rate"
    if kind.startswith("t, clipped to "):
        return f"Student t interval of the mean, clipped to {kind[14:]} (the metric's range)"
    return "Student t interval of the mean"


def _label(metric: str) -> str:
    return f"{metric}{arrow(direction(metric))}"


def _best(values: dict[str, float], sign: int) -> set[str]:
    finite = {k: v for k, v in values.items() if math.isfinite(v)}
    if sign == 0 or len(finite) < 2:
        return set()
    target = max(finite.values()) if sign > 0 else min(finite.values())
    return {k for k, v in finite.items() if v == target}


def present_metrics(run: RunTables) -> list[str]:
    """Summary metrics with at least one value: metrics (headline order first), then
    method diagnostics; ``*_skipped`` columns are left out (they are the skipped counts)."""
    s = run.summary
    have = [m for m in s["metric"].unique()
            if not m.endswith("_skipped") and (s.loc[s["metric"] == m, "n"] > 0).any()]
    metrics = [m for m in HEADLINE if m in have and is_metric(m)]
    metrics += sorted(m for m in have if is_metric(m) and m not in metrics)
    return metrics + sorted(m for m in have if not is_metric(m))


def pair_aggregates(metrics: list[str]) -> list[str]:
    """``metrics`` grouped by the metric that writes them (a group where its first column
    stands), each per-sample AUC (``sic_auc``) right before its dataset-level aggregate
    (``sic_aggregate_auc``): e.g. insertion_auc, insertion_ratio_auc, deletion_auc, ..."""
    owner = _owners()

    def group(m: str) -> str:
        if m.endswith("_aggregate_auc"):
            m = m[: -len("_aggregate_auc")] + "_auc"
        return owner.get(m, m)

    out: list[str] = []
    for m in metrics:
        if m in out:
            continue
        for col in (c for c in metrics if group(c) == group(m) and c not in out):
            if col.endswith("_aggregate_auc"):
                per_sample = col[: -len("_aggregate_auc")] + "_auc"
                if per_sample in metrics and per_sample not in out:
                    out.append(per_sample)
            if col not in out:
                out.append(col)
    return out


def _owners() -> dict[str, str]:
    """Metric column -> the registered metric that writes it."""
    from salbench import metrics

    return {col: name for name in metrics.names() for col in metrics.get(name).columns}


def overview_tables(run: RunTables) -> list[Table]:
    """Per model: methods x headline metrics (means; the best of each column in bold); up
    to :data:`OVERVIEW_COLUMNS` metrics, the headline ones first (every metric has its own
    table in :func:`metric_tables`)."""
    metrics = pair_aggregates([m for m in present_metrics(run) if is_metric(m)])
    metrics = metrics[:OVERVIEW_COLUMNS]
    out = []
    for model in run.models:
        means = {m: {meth: (st.mean if (st := stat(run, model, meth, m)) else math.nan)
                     for meth in run.methods} for m in metrics}
        best = {m: _best(means[m], direction(m)) for m in metrics}
        rows = []
        for meth in run.methods:
            g = run.samples.counts.get((model, meth), GroupCounts())
            rows.append([Cell(meth), Cell(str(g.rows)), Cell(str(g.errors))] + [
                Cell(fmt(means[m][meth]), strong=meth in best[m]) for m in metrics])
        out.append(Table(
            f"Overview: {model}", ["method", "rows", "errors", *map(_label, metrics)], rows,
            key="overview", lead=OVERVIEW_LEAD))
    return out


def metric_tables(run: RunTables) -> list[Table]:
    """One table per metric and per method diagnostic: model x method with mean, 95% CI,
    median, std, n (values used), skipped (ok rows without a value) and errors. Diagnostic
    tables list only the methods that report the diagnostic."""
    out = []
    for metric in present_metrics(run):
        sub = run.summary[run.summary["metric"] == metric]
        if not is_metric(metric):  # a diagnostic of some methods: leave the others out
            sub = sub[sub["n"] > 0]
        rows = []
        best = {}
        for model in run.models:
            vals = {r.method: float(r.mean) for r in sub[sub["model"] == model].itertuples()}
            best[model] = _best(vals, direction(metric))
        order = {m: i for i, m in enumerate(run.methods)}
        sub = sub.assign(_o=sub["method"].map(order)).sort_values(["model", "_o"])
        for r in sub.itertuples(index=False):
            ci = f"[{fmt(r.ci95_low)}, {fmt(r.ci95_high)}]" if math.isfinite(r.ci95_low) else "–"
            rows.append([Cell(r.model), Cell(r.method),
                         Cell(fmt(r.mean), strong=r.method in best[r.model]), Cell(ci),
                         Cell(fmt(r.median)), Cell(fmt(r.std)), Cell(str(int(r.n))),
                         Cell(str(int(r.n_rows) - int(r.n_error) - int(r.n))),
                         Cell(str(int(r.n_error)))])
        kind = "metric" if is_metric(metric) else "diagnostic"
        out.append(Table(_label(metric), ["model", "method", "mean", "95% CI", "median", "std",
                                          "n", "skipped", "errors"], rows,
                         f"95% CI: {interval_caption(metric)}.", key=kind, lead=METRIC_LEAD))
    return out


# ----------------------------------------------------------------------- paper layouts

IDGI_ROWS = [  # (metric, the paper's name, table)
    ("insertion_auc", "Insertion score with probability", "Table 1"),
    ("insertion_ratio_auc", "Insertion score with probability ratio", "Table 1"),
    ("aic_aggregate_auc", "AUC AIC, normalised entropy (PAIR bokeh)", "Table 2"),
    ("sic_aggregate_auc", "AUC SIC, normalised entropy (PAIR bokeh)", "Table 2"),
    ("pic_blur_aic_binned_auc", "AUC AIC, normalised entropy (paper's blur base, 100 bins)",
     "Table 2"),
    ("pic_blur_sic_binned_auc", "AUC SIC, normalised entropy (paper's blur base, 100 bins)",
     "Table 2"),
    ("aic_msssim_aggregate_auc", "AUC AIC, MS-SSIM", "Table 3"),
    ("sic_msssim_aggregate_auc", "AUC SIC, MS-SSIM", "Table 3"),
    ("wsol_f1", "F1", "Table 4"),
    ("wsol_roc_auc", "ROC AUC", "Table 4"),
    ("wsol_mae", "MAE", "Table 4"),
]
IDGI_BASES = ("ig", "gig", "blurig")
BASE_TITLES = {"ig": "IG", "gig": "GIG", "blurig": "BlurIG"}


def idgi_pairs(run: RunTables) -> list[tuple[str, str]]:
    """(base label, IDGI label) for each IDGI method of the run whose base method is there
    too, in the paper's order (IG, Guided IG, Blur IG, then others)."""
    names = method_names(run.config) or {m: m for m in run.methods}
    present = set(run.methods)
    pairs = []
    for label, name in names.items():
        if label not in present or not name.startswith("idgi_"):
            continue
        base = [lb for lb, n in names.items() if n == name[5:] and lb in present]
        if base:
            pairs.append((label[5:] if label[5:] in base else base[0], label))
    rank = {b: i for i, b in enumerate(IDGI_BASES)}
    return sorted(pairs, key=lambda p: (rank.get(names.get(p[0], p[0]), 99), p[0]))


def method_score(config: dict, label: str) -> str | None:
    """The score (``logit`` / ``prob``) a method of a recorded config took gradients of:
    its own ``score`` parameter, else its registered default; None for a method without
    one or not in the config."""
    from salbench import methods

    for item in config.get("methods") or []:
        comp = {"name": item} if isinstance(item, str) else item
        if not isinstance(comp, dict) or str(comp.get("alias", comp.get("name"))) != label:
            continue
        try:
            default = methods.get(str(comp["name"])).defaults.get("score")
        except Exception:  # a plugin this process cannot import: only its own parameter
            default = None
        return comp.get("score", default)
    return None


def _metric_present(run: RunTables, metric: str) -> bool:
    if metric in BINNED:
        return "pic_blur_levels" in run.samples.columns
    return bool((run.summary["metric"] == metric).any())


#: A method's ``score`` parameter in words.
SCORE_WORDS = {"logit": "the logit", "prob": "the probability", None: "an unknown score"}
NOT_COMPARABLE = "†"


def not_comparable_note(run: RunTables, pairs: list[tuple[str, str]]) -> str:
    """One sentence on the (base, IDGI) ``pairs`` whose methods took gradients of different
    scores (their columns are marked :data:`NOT_COMPARABLE`); "" when every pair agrees."""
    differ: dict[tuple[str | None, str | None], list[tuple[str, str]]] = {}
    for base, idgi in pairs:
        scores = method_score(run.config, base), method_score(run.config, idgi)
        if scores[0] != scores[1]:
            differ.setdefault(scores, []).append((base, idgi))
    if not differ:
        return ""
    parts = [f"{', '.join(b for b, _ in group)} took gradients of {SCORE_WORDS.get(sa, sa)}, "
             f"{', '.join(i for _, i in group)} of {SCORE_WORDS.get(sb, sb)}"
             for (sa, sb), group in differ.items()]
    return (f"{NOT_COMPARABLE} Not comparable: {'; '.join(parts)}. A Δ would include the "
            "change of score, so these pairs show both values without Δ or bold; give both "
            "methods of a pair the same score to compare them (configs/paper-idgi.yaml puts "
            "score: prob on the base methods).")


def idgi_tables(run: RunTables) -> list[Table]:
    """Paper 001 Tables 1-4: per metric, models x (base, +IDGI) pairs and VG; the better of
    each pair in bold, the IDGI cell with delta = IDGI - base (``*``: the paired 95% interval
    excludes 0). A pair whose methods took gradients of different scores gets neither: its
    +IDGI column is marked :data:`NOT_COMPARABLE` and the tables' shared lead says why. A
    metric without any value gets no table."""
    pairs = idgi_pairs(run)
    if not pairs:
        return []
    names = method_names(run.config) or {m: m for m in run.methods}
    other = next((lb for lb, n in names.items() if n == "vg" and lb in run.methods), None)
    apart = {(b, i) for b, i in pairs
             if method_score(run.config, b) != method_score(run.config, i)}
    header = ["model"]
    for base, idgi in pairs:
        mark = f" {NOT_COMPARABLE}" if (base, idgi) in apart else ""
        header += [BASE_TITLES.get(names.get(base, base), base), f"+IDGI{mark}"]
    if other:
        header.append(f"Other ({other})")
    short, ref_text = PAPER_REFS["001"]
    lead = " ".join((
        f"{short}: {ref_text}; its Tables 1-4, one table per metric.",
        "Mean with its 95% interval and n (values used); the better of each base / +IDGI "
        "pair in bold; Δ = IDGI - base over the samples both scored (* the paired 95% "
        "interval excludes 0; no * for dataset-level figures, which have no interval).",
        "Like the paper, only images each model classifies correctly (dataset.filter: "
        "correct)." if run.config.get("dataset", {}).get("filter") == "correct" else
        "The paper averages over the images each model classifies correctly; this run uses "
        "all its images (dataset.filter: all)."))
    if note := not_comparable_note(run, pairs):
        lead += "\n" + note
    out = []
    for metric, title, ref in IDGI_ROWS:
        if not _metric_present(run, metric):
            continue
        if all(stat(run, model, meth, metric) is None for model in run.models
               for meth in [*(m for pair in pairs for m in pair), *([other] if other else [])]):
            continue
        sign = direction(metric) or 1
        rows = []
        for model in run.models:
            row = [Cell(model)]
            for base, idgi in pairs:
                a, b = stat(run, model, base, metric), stat(run, model, idgi, metric)
                if (base, idgi) in apart:
                    row += [a.cell() if a else Cell("–"), b.cell() if b else Cell("–")]
                    continue
                better = (a is not None and b is not None
                          and (b.mean - a.mean) * sign > 0)
                worse = (a is not None and b is not None
                         and (b.mean - a.mean) * sign < 0)
                row.append(a.cell(strong=worse) if a else Cell("–"))
                extra = ""
                if a is not None and b is not None:
                    delta = paired_delta(run, model, base, idgi, metric)
                    d = delta[0] if delta else b.mean - a.mean
                    star = "*" if delta and (delta[1] > 0 or delta[2] < 0) else ""
                    extra = f"(Δ {fmt_signed(d)}{star})"
                row.append(b.cell(strong=better, extra=extra) if b else Cell("–"))
            if other:
                o = stat(run, model, other, metric)
                row.append(o.cell() if o else Cell("–"))
            rows.append(row)
        better = "↑" if sign > 0 else "↓"
        out.append(Table(f"{short}, {ref}: {title} ({better}) — {metric}", header, rows,
                         key="paper", lead=lead))
    return out


def _methods_table(run: RunTables, tables: str, columns: Sequence[tuple[str, str]],
                   caption: str, paper: str, std: bool = False) -> list[Table]:
    """Per model: methods x the given (metric, heading) columns; best per column in bold.
    No table unless one of the first two columns (the protocol's own metrics) is present.
    Methods in ``paper``'s order, named as in its tables (:mod:`salbench.report.columns`).
    ``tables``: which of the paper's tables ("Tables 1-2"); ``caption``: the protocol, in
    the tables' shared lead after the paper's reference."""
    if not any(_metric_present(run, m) for m, _ in columns[:2]):
        return []
    columns = [(m, h) for m, h in columns if _metric_present(run, m)]
    order, names, legend = paper_layout(paper, run.config, list(run.methods))
    short, ref_text = PAPER_REFS[paper]
    lead = f"{short}: {ref_text}; its {tables}, one table per model. {caption} {legend}"
    out = []
    for model in run.models:
        stats = {m: {meth: stat(run, model, meth, m) for meth in run.methods}
                 for m, _ in columns}
        best = {m: _best({k: v.mean for k, v in stats[m].items() if v}, direction(m))
                for m, _ in columns}
        rows = []
        for meth in order:
            row = [Cell(names[meth])]
            for m, _ in columns:
                st = stats[m][meth]
                if st is None:
                    row.append(Cell("–"))
                elif std:
                    sd = run.summary_value(model, meth, m)
                    sd_text = fmt(float(sd["std"])) if sd is not None else "–"
                    row.append(Cell(f"{fmt(st.mean)} ({sd_text})", f"n={st.n}",
                                    meth in best[m]))
                else:
                    row.append(st.cell(strong=meth in best[m]))
            rows.append(row)
        heads = [f"{h} ({'↑' if direction(m) > 0 else '↓'})" for m, h in columns]
        out.append(Table(f"{short}, {tables}: {model}", ["method", *heads], rows, key="paper",
                         lead=lead.strip()))
    return out


def igos_tables(run: RunTables) -> list[Table]:
    """Paper 002 Tables 1-2 (and Table 5's pointing game): deletion / insertion with the
    blurred base, per method."""
    return _methods_table(
        run, "Tables 1-2",
        [("deletion_igos_auc", "Deletion"), ("insertion_igos_auc", "Insertion"),
         ("pointing_game_hit", "Pointing game")],
        "Deletion and insertion with a highly blurred image as the base (softmax probability "
        "AUC); pointing game: hit rate of the map's maximum in a box (Table 5 reports it on "
        "MSCOCO / VOC07). Maps are scored at 224 x 224 (the paper also scores masks at their "
        "own resolution). Best of each column in bold.", paper="002")


def dga_tables(run: RunTables) -> list[Table]:
    """Paper 003 supplement Tables 1-3: LeRF (↑) and MoRF (↓) pixel flipping, per model
    methods x (LeRF, MoRF): the paper's tables put methods in columns, which a run of
    many methods cannot fit on a screen."""
    return _methods_table(
        run, "supplement Tables 1-3",
        [("pixel_flip_lerf_auc", "LeRF"), ("pixel_flip_morf_auc", "MoRF")],
        "AUC of the target probability while pixels are replaced (black) least- (LeRF) or "
        "most-relevant (MoRF) first. Best of each column in bold.", paper="003")


def samp_tables(run: RunTables) -> list[Table]:
    """Paper 004 Table 1: deletion / insertion (logits, peak-normalised) as mean (std), with
    Sensitivity-N and the concentration measures."""
    return _methods_table(
        run, "Table 1",
        [("deletion_samp_auc", "Deletion"), ("insertion_samp_auc", "Insertion"),
         ("sensitivity_n", "Sensitivity-N"), ("concentration_gini", "Gini"),
         ("concentration_top5", "Top-5% share")],
        "Mean (std) over images, as the paper reports: deletion with a zero base, insertion "
        "with a blurred base (Gaussian k31 s5), target logit, curves peak-normalised; "
        "Sensitivity-N: mean Pearson correlation of summed attribution and output drop; "
        "Gini and top-5% share: the Concentration Principle. Best per column in bold.",
        std=True, paper="004")


def paper_tables(run: RunTables) -> list[Table]:
    """Every paper layout the run's metrics allow."""
    return idgi_tables(run) + igos_tables(run) + dga_tables(run) + samp_tables(run)


def errors_tables(run: RunTables) -> list[Table]:
    """Error rows: counts per status x model x method, then the rows themselves (first
    :data:`ERROR_ROWS_SHOWN`)."""
    s = run.samples
    counts = [(status, model, method, n) for (model, method), g in sorted(s.counts.items())
              for status, n in sorted(g.statuses.items()) if status != "ok"]
    total = sum(n for *_, n in counts)
    if not counts:
        return [Table("Errors", ["status", "rows"], [[Cell("ok"), Cell(str(len(s)))]],
                      "No error rows.", key="errors")]
    counts.sort()
    t1 = Table("Error counts", ["status", "model", "method", "rows"],
               [[Cell(status), Cell(model), Cell(method), Cell(str(n))]
                for status, model, method, n in counts],
               f"{total} of {len(s)} rows are not ok.", key="errors")
    shown = s.error_rows(["ok"], ERROR_ROWS_SHOWN,
                         ["index", "sample_id", "model", "method", "status", "error"])
    shown = shown.sort_values(["index", "model", "method"], kind="stable")
    t2 = Table("Error rows", ["sample_id", "model", "method", "status", "error"],
               [[Cell(str(r.sample_id)), Cell(r.model), Cell(r.method), Cell(r.status),
                 Cell(str(r.error or "")[:300])] for r in shown.itertuples(index=False)],
               key="errors")
    if total > len(shown):
        t2.notes.append(f"{total - len(shown)} more error rows are in the samples table.")
    return [t1, t2]


def stage_rows(stages: dict[str, dict[str, float]]) -> list[dict[str, float]]:
    """Per Ray Data operator, in the order they started: ``operator``, ``work_s``,
    ``start_s``, ``end_s``, ``span_s``, ``rows``, ``bytes`` (NaN when unknown); start / end
    in seconds after the first operator started. Reads both the relative ``start_s`` /
    ``end_s`` of current manifests and the raw clock readings (``earliest_start_time`` /
    ``latest_end_time``) of older ones."""
    raw = [v["earliest_start_time"] for v in stages.values() if "earliest_start_time" in v]
    origin = min(raw) if raw else 0.0
    out = []
    for op, v in stages.items():
        start = v.get("start_s", v.get("earliest_start_time", math.nan) - origin)
        end = v.get("end_s", v.get("latest_end_time", math.nan) - origin)
        out.append({"operator": op, "work_s": v.get("time_total_s", math.nan),
                    "start_s": start, "end_s": end, "span_s": end - start,
                    "rows": v.get("rows", math.nan), "bytes": v.get("bytes", math.nan)})
    return sorted(out, key=lambda r: (not math.isfinite(r["start_s"]), r["start_s"]))


def stage_table(stages: dict[str, dict[str, float]]) -> Table:
    """The Ray Data stage table of a manifest's timings (see :func:`stage_rows`)."""
    def num(v: float, digits: int = 1) -> str:
        return "–" if not math.isfinite(float(v)) else f"{float(v):,.{digits}f}"

    rows = [[Cell(r["operator"]), Cell(num(r["work_s"])), Cell(num(r["start_s"])),
             Cell(num(r["end_s"])), Cell(num(r["span_s"])), Cell(num(r["rows"], 0)),
             Cell(num(r["bytes"] / 1e6, 2))] for r in stage_rows(stages)]
    return Table("Ray Data stages", ["operator", "work s", "start s", "end s", "span s", "rows",
                                     "MB out"], rows,
                 "work: seconds spent in the operator's tasks (summed over workers); start / "
                 "end: its first start and last end in seconds after the first operator "
                 "started; span = end - start; rows and MB it produced. Summed over "
                 "attempts when the run was resumed (start / end then per attempt, in "
                 "manifest.json).", key="manifest")


def manifest_tables(run: RunTables) -> list[Table]:
    """The run's facts, package versions and timings from its manifest."""
    m = run.manifest
    ds = m.get("dataset") or {}
    counts = m.get("counts") or {}
    host = m.get("host") or {}
    facts = [("run_id", run.run_id), ("status", m.get("status")),
             *([("status note", m["status_note"])] if m.get("status_note") else []),
             ("config_hash", m.get("config_hash")),
             ("salbench_version", m.get("salbench_version")),
             ("source_hash", m.get("source_hash")), ("git_commit", m.get("git_commit")),
             ("started", m.get("started")), ("finished", m.get("finished")),
             ("wall_seconds", m.get("wall_seconds")), ("dataset", ds.get("spec")),
             ("dataset rows", ds.get("rows")), ("dataset fingerprint", ds.get("fingerprint")),
             ("seed", m.get("seed")), ("shards", m.get("shards")),
             ("rows / ok / errors", "/".join(str(counts.get(k, "?"))
                                             for k in ("rows", "ok", "errors"))),
             *((f"host.{k}", v) for k, v in sorted(host.items()))]
    out = [Table("Run", ["key", "value"],
                 [[Cell(k), Cell(str(v))] for k, v in facts if v is not None], key="manifest")]
    pk = m.get("packages") or {}
    if pk:
        out.append(Table("Package versions", ["package", "version"],
                         [[Cell(k), Cell(str(v))] for k, v in sorted(pk.items())],
                         key="manifest"))
    timings = (m.get("timings") or {}).get("method_seconds_per_image") or {}
    if timings:
        out.append(Table("Method seconds per image (model/method)", ["model/method", "seconds"],
                         [[Cell(k), Cell(fmt(float(v)))] for k, v in timings.items()],
                         "Wall time of the method call divided by the images in its batch.",
                         key="manifest"))
    runs = m.get("attempts") or []
    if len(runs) > 1:
        out.append(Table("Attempts", ["#", "started", "finished", "wall s", "shards run"],
                         [[Cell(str(i + 1)), Cell(str(a.get("started", ""))[:19]),
                           Cell(str(a.get("finished", ""))[:19]),
                           Cell(fmt(float(a.get("wall_seconds") or math.nan), 1)),
                           Cell(str(a.get("shards_run", "")))] for i, a in enumerate(runs)],
                         "Each time the run was started or resumed with work to do; the "
                         "timings above merge them.", key="manifest"))
    stages = (m.get("timings") or {}).get("stages") or {}
    if stages:
        out.append(stage_table(stages))
    return out

