"""``salbench report RUN_DIR``: write ``RUN_DIR/report/`` from the run's Parquet tables.

Output: ``index.html`` (self-contained: inline CSS, images by relative path, no scripts, no
network), ``tables.md`` (every table in markdown), ``plots/*.png`` (curves) and
``gallery/*.png`` (input crops and maps). Rebuilding replaces ``plots/`` and ``gallery/``;
comparison pages (``compare-*/``) are kept and linked.
"""

from __future__ import annotations

import shutil
import tempfile
from html import escape
from pathlib import Path

import yaml

from salbench import storage
from salbench.report import tables as T
from salbench.report.data import RunTables, read_run
from salbench.report.gallery import DEFAULT_MAX_SAMPLES, colorbar_css, write_gallery
from salbench.report.html import (
    collapsible,
    gallery_html,
    page,
    plots_html,
    section,
    tables_html,
)
from salbench.report.intervals import bounded_summary
from salbench.report.plots import Plot, write_curve_plots
from salbench.report.rankings import ranking_tables

REPORT_DIR = "report"


def _meta(run: RunTables) -> str:
    m = run.manifest
    n_samples = run.samples.n_samples()
    parts = [f"run <b>{escape(run.run_id)}</b>", f"status {escape(str(m.get('status', '?')))}",
             f"started {escape(str(m.get('started', '?'))[:19].replace('T', ' '))} UTC",
             f"profile {escape(str(run.config.get('profile', '?')))}",
             escape(_numerics(m)),
             *([escape(bokeh)] if (bokeh := pic_bokeh(run.config)) else []),
             f"{n_samples} samples x {len(run.models)} model(s) x {len(run.methods)} methods "
             f"= {len(run.samples)} rows",
             f"models: {escape(', '.join(run.models))}"]
    return " · ".join(parts) + ("<br>Built from the run's Parquet tables "
                                "(samples/*.parquet, summary.parquet) and manifest.json.")


def pic_bokeh(config: dict) -> str:
    """The PIC metrics of a recorded config that use a bokeh other than PAIR's ``interp``,
    in words ("PIC bokeh: fast (sic, aic)"); "" when none does."""
    items = [{"name": c} if isinstance(c, str) else c for c in config.get("metrics") or []]
    other = {}
    for c in items:
        if isinstance(c, dict) and c.get("bokeh", "interp") != "interp":
            other.setdefault(str(c["bokeh"]), []).append(str(c.get("alias", c.get("name"))))
    return "; ".join(f"PIC bokeh: {b} ({', '.join(labels)})" for b, labels in other.items())


def _numerics(manifest: dict) -> str:
    """The run's numeric settings in a few words: precision (per model where they differ),
    channels-last / compile when on, the model stage's torch threads."""
    rec = manifest.get("numerics")
    if not rec:
        return "precision not recorded (a run before numeric settings existed)"

    def text(key: str) -> str:
        values = {label: "torch's default" if v.get(key) is None else str(v.get(key))
                  for label, v in rec.items()}
        if len(set(values.values())) == 1:
            return next(iter(values.values()))
        return ", ".join(f"{label}: {v}" for label, v in values.items())
    parts = [f"precision {text('precision')}"]
    parts += [key.replace("_", "-") for key in ("channels_last", "compile")
              if any(v.get(key) for v in rec.values())]
    parts.append(f"torch threads {text('torch_threads')}")
    return ", ".join(parts)


def _markdown(run: RunTables, groups: list[tuple[str, list[T.Table]]],
              plots: list[Plot]) -> str:
    out = [f"# salbench report: {run.run_id}", "",
           "Built from the run's Parquet tables and manifest. Bold: the best value of a "
           "column, or the better of a base / +IDGI pair.", "",
           f"Numeric settings: {_numerics(run.manifest)}.", ""]
    for title, tables in groups:
        if not tables:
            continue
        out += [f"## {title}", ""] + T.tables_markdown(tables)
    if plots:
        out += ["## Curves", ""] + [f"![{p.title}, {p.model}]({p.path})\n" for p in plots]
    return "\n".join(out)


def _yaml(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def write_report(run_dir: Path | str, max_samples: int = DEFAULT_MAX_SAMPLES) -> Path | str:
    """Write the report of ``run_dir`` into ``run_dir/report/``; returns index.html's path.

    A URI ``run_dir`` (``s3://...``) gets its report built in a temporary local directory
    and uploaded (a URI is returned).

    ``max_samples``: samples shown in the gallery (the first by dataset order).
    """
    run = read_run(run_dir)
    try:
        if storage.is_uri(run_dir):  # built in a temporary directory, then uploaded
            with tempfile.TemporaryDirectory(prefix="salbench-report-") as tmp:
                _write_report(run, Path(tmp), max_samples)
                storage.upload_dir(Path(tmp), storage.join(run_dir, REPORT_DIR))
            return storage.join(run_dir, REPORT_DIR, "index.html")
        run = RunTables(run.path, run.manifest, run.samples,
                        bounded_summary(run.summary, run.samples))
        out = Path(run_dir) / REPORT_DIR
        out.mkdir(parents=True, exist_ok=True)
        return _write_report(run, out, max_samples)
    finally:
        run.samples.close()


def _write_report(run: RunTables, out: Path, max_samples: int) -> Path:
    for sub in ("plots", "gallery"):
        shutil.rmtree(out / sub, ignore_errors=True)

    overview = T.overview_tables(run)
    paper = T.paper_tables(run)
    per_metric = T.metric_tables(run)
    metrics = [t for t in per_metric if t.key == "metric"]
    diagnostics = [t for t in per_metric if t.key == "diagnostic"]
    rankings = T.share_captions(ranking_tables(run.summary, run.methods))
    errors = T.errors_tables(run)
    manifest = T.manifest_tables(run)
    plots = write_curve_plots(run, out / "plots")
    gallery = write_gallery(run, out / "gallery", max_samples=max_samples)

    (out / "tables.md").write_text(_markdown(run, [
        ("Overview", overview), ("Paper-style tables", paper), ("Metrics", metrics),
        ("Method diagnostics", diagnostics), ("Rankings", rankings), ("Errors", errors),
        ("Manifest", manifest),
    ], plots))

    compares = sorted(p.parent.name for p in out.glob("compare-*/index.html"))
    body = [
        section("overview", "Overview", tables_html(overview)),
        section("paper", "Paper-style tables",
                tables_html(paper) if paper else
                '<p class="note">None of the papers\' table layouts applies to this run\'s '
                "metrics (see the configs/paper-*.yaml configs).</p>"),
        section("curves", "Curves", plots_html(plots)),
        section("gallery", "Gallery", gallery_html(gallery)),
        section("metrics", "Every metric",
                tables_html(metrics, collapsed=True)
                + "<h3>Method diagnostics</h3>"
                + tables_html(diagnostics, collapsed=True)),
        section("rankings", "Rankings (LATEC)", tables_html(rankings)
                if rankings else '<p class="note">No metric with a direction has a value.</p>'),
        section("errors", "Errors", tables_html(errors, wrap_columns=[4])),
        section("manifest", "Manifest",
                tables_html(manifest)
                + collapsible("config", f"<pre>{escape(_yaml(run.config))}</pre>")),
    ]
    if compares:
        body.append(section("compare", "Comparisons", "<ul>" + "".join(
            f'<li><a href="{escape(c)}/index.html">{escape(c)}</a></li>' for c in compares)
            + "</ul>"))
    nav = [("#overview", "Overview"), ("#paper", "Paper tables"), ("#curves", "Curves"),
           ("#gallery", "Gallery"), ("#metrics", "Every metric"), ("#rankings", "Rankings"),
           ("#errors", "Errors"),
           ("#manifest", "Manifest"), ("tables.md", "tables.md")]
    if compares:
        nav.append(("#compare", "Comparisons"))
    index = out / "index.html"
    index.write_text(page(f"salbench report: {run.run_id}", _meta(run), nav, "".join(body),
                          colorbar=colorbar_css()))
    return index
