"""``salbench report`` / ``compare --report``: the tables agree with the Parquet tables, the
papers' layouts (IDGI pairing, deltas, directions), curves, gallery, errors, offline HTML
(also rendered in headless Chromium when it is installed), and the pipeline's stored crops.

Most runs here are written by hand with the pipeline's own table code (no Ray); one test
runs the real pipeline on the tiny model.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import json
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from salbench import methods
from salbench.cli import main
from salbench.config import parse_config
from salbench.report import write_compare_report, write_report
from salbench.report.compare import classify
from salbench.report.data import read_run
from salbench.report.gallery import NORMALISATION, normalise
from salbench.report.tables import idgi_pairs, idgi_tables, tables_markdown
from salbench.results import tables
from salbench.results.summary import summarize

SIZE = 32
N = 6
CONFIG: dict[str, Any] = {
    "name": "rep", "seed": 0, "profile": "fast", "out": "runs",
    "dataset": {"kind": "synthetic", "n": N, "size": SIZE},
    "models": ["tiny_cnn"],
    "methods": ["vg", {"name": "ig", "score": "prob"}, "idgi_ig",
                {"name": "gig", "score": "prob"}, "idgi_gig"],
    "metrics": ["insertion", "deletion", "sic", "wsol", "pointing_game", "pixel_flip"],
    "save_maps": True,
}
BAD_IMAGE = N - 1          # every method of this sample is a bad_image row
METHOD_ERROR = (3, "gig")  # one method_error row


def _values(rng: np.random.Generator, cols: dict[str, str], i: int, method: str,
            shift: dict[str, float], skip: set[str]) -> dict[str, Any]:
    """Per-sample values: IDGI on IG better on insertion and MAE, IDGI on GIG worse;
    ``skip``: other methods' diagnostics."""
    out: dict[str, Any] = {}
    for col, kind in cols.items():
        if col in skip:
            continue
        if kind == "curve":
            n = 101 if col.startswith("sic") else 11
            out[col] = np.sort(rng.uniform(0, 1, n)).tolist()
        else:
            out[col] = float(rng.uniform(0.2, 0.6))
    base = 0.3 + 0.05 * i
    bonus = {"idgi_ig": 0.1, "gig": 0.05, "vg": -0.05}.get(method, 0.0)
    out["insertion_auc"] = base + bonus + 0.005 * rng.standard_normal() + shift.get(method, 0)
    out["wsol_mae"] = 0.3 - bonus
    if i == 0:  # SIC skipped for sample 0, WSOL without a box for sample 1
        out.update(sic_auc=float("nan"), sic_skipped=1.0)
    else:
        out["sic_skipped"] = 0.0
    if i == 1:
        for col in ("wsol_f1", "wsol_iou", "wsol_mae", "wsol_roc_auc"):
            out[col] = float("nan")
    return out


def make_run(root: Path, run_id: str, config: dict[str, Any] | None = None,
             shift: dict[str, float] | None = None, errors: bool = True) -> Path:
    """A finished run directory written with the pipeline's table code (rows as the actors
    emit them: JSON values, float16 maps, uint8 crops), summary.parquet and manifest.json."""
    cfg = parse_config(config or CONFIG)
    rng = np.random.default_rng(0)
    cols = cfg.value_columns()
    diagnostics = {c for comp in cfg.methods for c in methods.get(comp.name).info_columns}
    rows = []
    for i in range(N):
        crop = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        for comp in cfg.methods:
            method = comp.label
            skip = diagnostics - set(methods.get(comp.name).info_columns)
            bad = errors and i == BAD_IMAGE
            failed = errors and (i, method) == METHOD_ERROR
            status = "bad_image" if bad else ("method_error" if failed else "ok")
            m = rng.standard_normal((SIZE, SIZE)).astype(np.float16)
            if method != "vg":
                m = np.abs(m)
            ok = status == "ok"
            rows.append({
                "shard": 0, "index": i, "sample_id": f"s{i}", "model": "tiny_cnn",
                "method": method, "status": status,
                "error": "" if ok else f"{status}: broken on purpose {i}",
                "label": -1, "target": -1 if bad else 3, "pred": -1 if bad else 3,
                "target_prob": float("nan") if bad else 0.5 + 0.01 * i,
                "values": json.dumps(
                    _values(rng, cols, i, method, shift or {}, skip) if ok else {}),
                "map": m.tobytes() if ok else b"", "crop": crop.tobytes() if ok else b"",
                "height": SIZE if ok else 0, "width": SIZE if ok else 0,
            })
    run_dir = root / run_id
    tables.write_shard(run_dir, 0, tables.rows_to_table(rows, cfg, run_id))
    samples = tables.read_samples(run_dir)
    tables.write_table(summarize(samples, cfg), run_dir / "summary.parquet")
    manifest = {"run_id": run_id, "status": "complete", "config": cfg.to_dict(),
                "config_hash": cfg.hash(), "packages": {"salbench": "0.1.0"},
                "git_commit": "abc1234", "dataset": {"rows": N, "fingerprint": "f00d"},
                "shards": 1, "timings": {"method_seconds_per_image": {"tiny_cnn/ig": 0.01}}}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return run_dir


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A hand-written run with its report; returns the run directory."""
    run_dir = make_run(tmp_path_factory.mktemp("rep"), "rep-a")
    write_report(run_dir)
    return run_dir


def md_rows(md: str, title: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the markdown table under ``### <title>``."""
    block = md.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    split = [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines]
    return split[0], split[2:]


def md_table(md: str, title: str) -> list[dict[str, str]]:
    """The rows of the markdown table under ``### <title>`` (header -> cell text)."""
    header, rows = md_rows(md, title)
    return [dict(zip(header, r, strict=True)) for r in rows]


def first_float(text: str) -> float:
    return float(re.search(r"-?\d+\.\d+(e[-+]\d+)?", text).group(0))


def test_markdown_metric_tables_equal_the_summary(report):
    md = (report / "report" / "tables.md").read_text()
    summary = pd.read_parquet(report / "summary.parquet")
    checked = 0
    for metric, arrow in (("insertion_auc", "↑"), ("wsol_mae", "↓"), ("sic_aggregate_auc", "↑"),
                          ("deletion_auc", "↓"), ("completeness_error", None)):
        title = f"{metric} ({arrow})" if arrow else metric
        for row in md_table(md, title):
            s = summary[(summary["model"] == row["model"]) & (summary["method"] == row["method"])
                        & (summary["metric"] == metric)].iloc[0]
            assert first_float(row["mean"].strip("*")) == pytest.approx(s["mean"], abs=6e-4)
            assert int(row["n"]) == s["n"] and int(row["errors"]) == s["n_error"]
            assert int(row["skipped"]) == s["n_rows"] - s["n_error"] - s["n"]
            if math.isfinite(s["ci95_low"]):
                low, high = map(float, re.findall(r"-?\d+\.\d+", row["95% CI"]))
                assert (low, high) == pytest.approx((s["ci95_low"], s["ci95_high"]), abs=6e-4)
            else:
                assert row["95% CI"] == "–"
            checked += 1
    assert checked == 4 * 5 + 4  # completeness_error: ig, idgi_ig, gig, idgi_gig (not vg)
    by = {r["method"]: r for r in md_table(md, "sic_aggregate_auc (↑)")}
    assert by["ig"]["skipped"] == "1" and by["ig"]["n"] == "4"   # sample 0 skipped, 5 bad
    wsol = {r["method"]: r for r in md_table(md, "wsol_mae (↓)")}
    assert wsol["gig"]["n"] == "3" and wsol["gig"]["errors"] == "2"  # 1 no box, 2 errors
    assert wsol["idgi_ig"]["mean"].startswith("**")                # lowest MAE in bold


def test_interval_is_the_student_t_interval_of_the_samples(report):
    s = tables.read_samples(report)
    v = s[(s["method"] == "ig") & (s["status"] == "ok")]["insertion_auc"].to_numpy()
    low, high = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    row = {r["method"]: r for r in md_table((report / "report" / "tables.md").read_text(),
                                            "insertion_auc (↑)")}["ig"]
    assert tuple(map(float, re.findall(r"-?\d+\.\d+", row["95% CI"]))) == pytest.approx(
        (low, high), abs=6e-4)


def test_idgi_table_pairs_methods_and_highlights_the_better(report):
    run = read_run(report)
    assert idgi_pairs(run) == [("ig", "idgi_ig"), ("gig", "idgi_gig")]
    md = (report / "report" / "tables.md").read_text()
    title = "IDGI paper, Table 1: Insertion score with probability (↑) — insertion_auc"
    header, (cells,) = md_rows(md, title)
    assert header == ["model", "IG", "+IDGI", "GIG", "+IDGI", "Other (vg)"]
    s = tables.read_samples(report)  # the run's own files, read independently of the report
    for (base, idgi), (cb, ci) in zip(idgi_pairs(run), [(1, 2), (3, 4)], strict=True):
        a = s[(s.method == base) & (s.status == "ok")].set_index("sample_id")["insertion_auc"]
        b = s[(s.method == idgi) & (s.status == "ok")].set_index("sample_id")["insertion_auc"]
        diff = (b - a).dropna()          # paired: only samples both scored (gig lost s3)
        delta = re.search(r"Δ ([-+]\d+\.\d+)(\*?)", cells[ci])
        assert float(delta.group(1)) == pytest.approx(diff.mean(), abs=6e-4)
        low, high = stats.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=stats.sem(diff))
        assert delta.group(2) == ("*" if low > 0 or high < 0 else "")
        better_is_idgi = diff.mean() > 0
        assert cells[ci].startswith("**") == better_is_idgi
        assert cells[cb].startswith("**") == (not better_is_idgi)
    assert cells[2].startswith("**") and "*)" in cells[2]     # IDGI improves IG, significant
    assert cells[3].startswith("**")                           # GIG beats its IDGI form
    _, (mae,) = md_rows(md, "IDGI paper, Table 4: MAE (↓) — wsol_mae")
    assert mae[2].startswith("**") and not mae[1].startswith("**")  # lower MAE is better
    assert "n=5, 1 err" in cells[1] and "n=4, 2 err" in cells[3]  # counts under each mean


def test_idgi_pairs_on_different_scores_are_not_comparable(report):
    """IG on the logit vs IDGI-IG on the probability: no delta and no bold (the delta would
    contain the change of score), its +IDGI column marked; one note for all the IDGI
    tables says which pair differs and why, no cell does; GIG / IDGI-GIG, both on the
    probability, keep their delta."""
    run = read_run(report)
    manifest = copy.deepcopy(run.manifest)
    manifest["config"]["methods"][1] = "ig"  # the logit, salbench's default
    mixed = dataclasses.replace(run, manifest=manifest)
    idgi = idgi_tables(mixed)
    table = next(t for t in idgi if t.title.endswith("insertion_auc"))
    assert table.header == ["model", "IG", "+IDGI †", "GIG", "+IDGI", "Other (vg)"]
    (row,) = table.rows
    cells = [c.text for c in row]
    assert "Δ" not in cells[2] and "Δ" in cells[4]
    assert not row[1].strong and not row[2].strong    # idgi_ig's higher mean is not "better"
    assert all(len(c.text) < 30 for t in idgi for r in t.rows for c in r)  # no note in a cell
    md = "\n".join(tables_markdown(idgi))
    assert md.count("Not comparable") == 1 and len(idgi) > 3   # once for the whole group
    assert "ig took gradients of the logit, idgi_ig of the probability" in md
    assert "gig took" not in md


def test_idgi_metric_without_values_gets_no_table(report):
    """A metric the summary lists with no value for any IDGI table's method (n = 0, as when
    every row skipped it) gets no table of dashes."""
    run = read_run(report)
    titles = [t.title for t in idgi_tables(run)]
    assert any(t.endswith("— wsol_mae") for t in titles)
    summary = run.summary.copy()
    gone = summary["metric"] == "wsol_mae"
    summary.loc[gone, ["n", "mean"]] = [0, float("nan")]
    emptied = [t.title for t in idgi_tables(dataclasses.replace(run, summary=summary))]
    assert emptied == [t for t in titles if not t.endswith("— wsol_mae")]


def test_html_is_offline_and_every_reference_exists(report):
    out = report / "report"
    html = (out / "index.html").read_text()
    refs = references(html)
    assert refs and not [r for r in refs if re.match(r"^(https?:)?//", r)]
    pngs = [r for r in refs if r.endswith(".png")]
    for ref in refs:
        if not ref.startswith("#"):
            assert (out / ref).is_file(), ref
    for ref in pngs:
        Image.open(out / ref).verify()
    for column in ("insertion_curve", "deletion_curve", "sic_curve", "pixel_flip_lerf_curve",
                   "pixel_flip_morf_curve"):
        assert f"plots/curves-tiny_cnn-{column}.png" in refs
    assert "<script" not in html and "@import" not in html
    for anchor in ("overview", "paper", "curves", "gallery", "metrics", "errors", "manifest"):
        assert f'id="{anchor}"' in html
    assert "abc1234" in html and "tiny_cnn/ig" in html       # manifest: commit, timings


def references(html: str) -> list[str]:
    """Every src / href of an HTML document."""
    found: list[str] = []

    class Refs(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.extend(v for k, v in attrs if k in ("src", "href") and v)

    Refs().feed(html)
    return found


def test_errors_table_lists_every_error_row(report):
    md = (report / "report" / "tables.md").read_text()
    listed = {(r["sample_id"], r["method"], r["status"]) for r in md_table(md, "Error rows")}
    s = tables.read_samples(report)
    err = s[s["status"] != "ok"]
    assert listed == {(r.sample_id, r.method, r.status) for r in err.itertuples()}
    assert len(listed) == 5 + 1
    counts = md_table(md, "Error counts")
    assert sum(int(r["rows"]) for r in counts) == len(err)
    assert "broken on purpose 3" in (report / "report" / "index.html").read_text()


def test_gallery_shows_crops_maps_and_errors(report):
    out = report / "report"
    html = (out / "index.html").read_text()
    s = tables.read_samples(report)
    # one stored crop per sample x model (on its first row), written out unchanged
    crops = s[s["input_png"].notna()]
    assert len(crops) == N - 1 and crops.groupby("sample_id").size().max() == 1
    for r in crops.itertuples():
        assert (out / "gallery" / f"tiny_cnn-{r.sample_id}-input.png").read_bytes() == r.input_png
    assert escape_html(NORMALISATION) in html
    assert "method_error: method_error: broken on purpose 3" in html   # the error tile
    assert "s5: bad_image" in html                                       # caption, no crop
    maps = sorted((out / "gallery").glob("tiny_cnn-s0-*.png"))
    assert len(maps) == 1 + 5
    # the displayed map keeps the pixel order of the stored map
    row = s[(s["sample_id"] == "s0") & (s["method"] == "ig")].iloc[0]
    stored = np.frombuffer(row["map"], np.float16).astype(np.float32).reshape(SIZE, SIZE)
    shown = np.asarray(Image.open(out / "gallery" / "tiny_cnn-s0-ig.png"))
    assert shown.max() == 255 and shown.min() == 128     # non-negative map: white..red half
    assert shown.flat[stored.argmax()] == 255 and shown.flat[stored.argmin()] == 128
    order = np.argsort(stored.ravel(), kind="stable")
    assert (np.diff(shown.ravel()[order].astype(int)) >= 0).all()


def escape_html(text: str) -> str:
    from html import escape

    return escape(text)


def test_gallery_score_labels_are_unique():
    from salbench.report.gallery import SCORES

    labels = [label for _, label in SCORES]
    assert len(set(labels)) == len(labels), labels


def test_normalise_signed_and_unsigned_maps():
    pos = np.linspace(0, 10, 1000, dtype=np.float32).reshape(40, 25)
    n = normalise(pos)
    assert n.min() == 0 and n.max() == 1 and np.isclose(n.flat[500], 0.5, atol=0.01)
    signed = pos - 5
    ns = normalise(signed)
    assert ns.min() == -1 and ns.max() == 1 and np.sign(ns.flat[100]) == -1
    assert (normalise(np.zeros((4, 4))) == 0).all()


def test_many_methods_few_metrics_no_maps(tmp_path):
    cfg = {**CONFIG, "save_maps": False, "metrics": ["pointing_game", "insertion"],
           "methods": [{"name": "vg", "alias": f"m{k:02d}"} for k in range(20)]}
    run_dir = make_run(tmp_path, "many", cfg, errors=False)
    index = write_report(run_dir)
    html = index.read_text()
    assert "This run has no saved maps" in html and not (index.parent / "gallery").exists()
    md = (index.parent / "tables.md").read_text()
    overview = md_table(md, "Overview: tiny_cnn")
    assert [r["method"] for r in overview] == [f"m{k:02d}" for k in range(20)]
    assert "paper, Table" not in md                   # no paper layout applies
    plot = Image.open(index.parent / "plots" / "curves-tiny_cnn-insertion_curve.png")
    assert plot.size[1] > 4 * 200                     # 20 panels: 4 rows of 5
    (run_dir / "summary.parquet").unlink()            # an interrupted run: summary recomputed
    assert "Overview: tiny_cnn" in write_report(run_dir).read_text()


def test_compare_report_lists_regressions_and_improvements(tmp_path, capsys):
    cfg = {**CONFIG, "metrics": ["insertion", "deletion"]}
    a = make_run(tmp_path, "run-a", cfg)
    b = make_run(tmp_path, "run-b", cfg, shift={"ig": -0.2, "idgi_gig": 0.2})
    write_report(a)
    assert main(["compare", str(a), str(b), "--report"]) == 0
    out = capsys.readouterr().out
    path = Path(out.split("comparison report: ")[1].strip())
    assert path == b / "report" / "compare-run-a" / "index.html" and path.is_file()
    html = path.read_text()
    assert "Regressions (1)" in html and "Improvements (1)" in html
    md = (path.parent / "compare.md").read_text()
    (reg,) = md_table(md, "Regressions (1)")
    assert (reg["method"], reg["metric"]) == ("ig", "insertion_auc (↑)")
    assert first_float(reg["delta B - A"].strip("*")) == pytest.approx(-0.2, abs=1e-3)
    (imp,) = md_table(md, "Improvements (1)")
    assert imp["method"] == "idgi_gig"
    for ref in references(html):
        assert ref.startswith("#") or (path.parent / ref).is_file(), ref
    assert "../../../run-a/report/index.html" in references(html)
    other = write_compare_report(a, b, out_dir=tmp_path / "cmp")
    assert other == tmp_path / "cmp" / "index.html" and other.is_file()
    table = pd.DataFrame({"metric": ["deletion_auc", "ascent_gain", "x"], "only_in": ["", "", "b"],
                          "significant": [True, True, False], "delta": [0.1, 0.1, math.nan]})
    assert list(classify(table)) == ["regression", "change", "only in B"]


def test_cli_report(tmp_path, capsys):
    run_dir = make_run(tmp_path, "cli", {**CONFIG, "metrics": ["pointing_game"]})
    assert main(["report", str(run_dir), "--gallery-samples", "2"]) == 0
    path = Path(capsys.readouterr().out.split("report: ")[1].strip())
    assert path == run_dir / "report" / "index.html"
    assert len(list((run_dir / "report" / "gallery").glob("*-input.png"))) == 2
    assert "Showing the first 2 of 6 samples" in path.read_text()
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "not a salbench run directory" in capsys.readouterr().err


#: The headless browser: chromium on PATH, or Debian's package's binary.
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
#: CI installs chromium and sets this, so that a missing browser fails there, never skips.
REQUIRE_BROWSER = os.environ.get("SALBENCH_REQUIRE_BROWSER") == "1"


def chromium_args(profile: Path) -> list[str]:
    """Headless Chromium with its own profile and no network: without the
    background-networking flags Chromium keeps dialling out."""
    return [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--virtual-time-budget=10000"]


@pytest.mark.skipif(BROWSER is None and not REQUIRE_BROWSER, reason="needs chromium")
def test_report_renders_in_headless_chromium(report, tmp_path):
    """Chromium loads the page: every image decodes (checked by a script in a copy of the
    page, since the report has none), and a screenshot is not blank."""
    if BROWSER is None:
        pytest.fail("SALBENCH_REQUIRE_BROWSER=1 but no chromium (PATH, /usr/bin/chromium)")
    out = report / "report"
    probe = out / "_probe.html"
    script = ("<script>window.addEventListener('load', () => { const bad = [...document.images]"
              ".filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src'));"
              " document.body.setAttribute('data-broken', JSON.stringify(bad));"
              " document.body.setAttribute('data-images', String(document.images.length)); });"
              "</script></body>")
    probe.write_text((out / "index.html").read_text().replace("</body>", script))
    args = [*chromium_args(tmp_path / "profile"), "--hide-scrollbars"]
    try:
        dom = subprocess.run([*args, "--dump-dom", probe.as_uri()], capture_output=True,
                             text=True, timeout=120, check=True).stdout
        shot = tmp_path / "shot.png"
        subprocess.run([*args, "--window-size=1300,2400", f"--screenshot={shot}",
                        (out / "index.html").as_uri()], capture_output=True, timeout=120,
                       check=True)
    finally:
        probe.unlink()
    images = int(re.search(r'data-images="(\d+)"', dom).group(1))
    assert images == len([r for r in references((out / "index.html").read_text())
                          if r.endswith(".png")]) > 30
    assert re.search(r'data-broken="\[\]"', dom), re.search(r'data-broken="[^"]*"', dom)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2400, 1300) and pixels.std() > 10   # text and tables, not blank


@pytest.mark.usefixtures("ray_session")
def test_demo_stores_input_crops_and_ends_with_the_report(tmp_path, capsys):
    """``salbench demo`` (shrunk to the tiny model) saves maps and crops, writes the report
    and prints its path."""
    import salbench
    from salbench.datasets import open_dataset

    dataset = {"kind": "synthetic", "n": 3, "size": 40, "seed": 5}
    assert main(["demo", "--quiet", "--out", str(tmp_path), "--set", "models=[tiny_cnn]",
                 "--set", f"dataset={json.dumps(dataset)}", "--set", "methods=[vg, gxi]",
                 "--set", "metrics=[insertion]", "--set", "resources.batch_size=2",
                 "--set", "resources.shard_size=2", "--set", "resources.torch_threads=1"]) == 0
    out = capsys.readouterr().out
    run_dir = Path(out.split("run directory: ")[1].splitlines()[0])
    index = Path(out.split("report: ")[1].strip())
    assert out.rstrip().endswith(str(index)) and index == run_dir / "report" / "index.html"
    s = tables.read_samples(run_dir)
    crops = s[s["input_png"].notna()]
    assert list(crops["method"]) == ["gxi"] * 3          # first method row of each sample
    model = salbench.models.load("tiny_cnn")
    rows = {r["sample_id"]: r for r in open_dataset(dataset).read(0, 3)}
    for r in crops.itertuples():
        stored = np.asarray(Image.open(io.BytesIO(r.input_png)))
        assert (stored == model.crop(rows[r.sample_id]["image"])).all()
    assert len(list((index.parent / "gallery").glob("*-input.png"))) == 3


def test_report_removes_its_group_files(tmp_path, temp_dirs):
    spill, made = temp_dirs
    run_dir = make_run(tmp_path, "r")
    made.clear()
    write_report(run_dir)
    assert [Path(m).name.startswith("salbench-groups-") for m in made] == [True]
    assert not list(spill.iterdir())


def _built_in_methods() -> list[str]:
    """The registered methods salbench ships (other tests register methods of their own)."""
    def built_in(name: str) -> bool:
        fn = methods.get(name).fn
        return getattr(fn, "__wrapped__", fn).__module__.startswith("salbench.")

    return [m for m in methods.names() if built_in(m)]


@pytest.fixture(scope="module")
def wide_report(tmp_path_factory) -> Path:
    """The report of a hand-written run with every built-in method on its defaults (as the
    demo runs them: IG on the logit, IDGI on the probability) and the metrics of every
    paper layout; returns its index.html. Built without the curve plots (images that scale
    to the page; drawing 35 panels per curve would take most of a minute)."""
    cfg = {**CONFIG, "save_maps": False, "methods": _built_in_methods(),
           "metrics": ["insertion", "deletion", "pointing_game", "wsol", "sic", "pixel_flip",
                       "deletion_igos", "insertion_igos"]}
    run_dir = make_run(tmp_path_factory.mktemp("wide"), "wide", cfg, errors=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("salbench.report.build.write_curve_plots", lambda run, out: [])
        return Path(write_report(run_dir))


def _help_texts() -> list[str]:
    """``salbench --help`` and every subcommand's (nested ones too) help."""
    from salbench.cli import build_parser

    texts, parsers = [], [build_parser()]
    while parsers:
        p = parsers.pop()
        texts.append(p.format_help())
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    return texts


def test_user_facing_text_names_papers_not_numbers(wide_report, capsys):
    """No "paper 00x" and no "SPEC n" in what a user reads: the command line's help, the
    descriptions `salbench list` prints, the report (page, tables.md, plot titles); each
    paper's short name in the report is defined once, by its reference."""
    from salbench.report.plots import CURVES

    helps = _help_texts()
    assert len(helps) > 8 and any("weights" in h for h in helps)
    for what in ("methods", "metrics", "models", "datasets"):
        assert main(["list", what]) == 0
    listing = capsys.readouterr().out
    assert "IDGI on the straight IG path (IDGI paper)" in listing
    html = wide_report.read_text()
    md = (wide_report.parent / "tables.md").read_text()
    plot_titles = "\n".join(title for title, _, _ in CURVES.values())
    for name, text in [*(("help", h) for h in helps), ("list", listing), ("index.html", html),
                       ("tables.md", md), ("plot titles", plot_titles)]:
        assert not re.search(r"paper 00\d", text, re.IGNORECASE), (name, text)
        assert "SPEC " not in text, (name, text)
    for short, where in (("IDGI paper", "Yang, Wang & Bilgic"), ("I-GOS paper", "Qi, Khorram"),
                         ("DGA paper", "Jeon, Jeong & Choi"),
                         ("SAMP paper", "Zhang, Zheng, Zhou & Lu")):
        if f"### {short}," in md:        # a table of that paper: its reference, once
            assert md.count(f"{short}: {where}") == 1, short
    assert md.count("### IDGI paper, Table") >= 4 and "### DGA paper," in md


def test_shared_captions_print_once_per_section(wide_report):
    """The text the tables of a section share (how the figures are computed, the papers'
    legends) is printed once before the section's tables; a table's caption keeps only what
    is its own (here: which interval a metric's CI is)."""
    from salbench.report.tables import METRIC_LEAD, OVERVIEW_LEAD

    md = (wide_report.parent / "tables.md").read_text()
    html = wide_report.read_text()
    metric_tables = md.split("## Metrics\n", 1)[1].split("\n## ", 1)[0]
    assert metric_tables.count("\n### ") > 10 and metric_tables.count(METRIC_LEAD) == 1
    assert metric_tables.count("95% CI: Student t interval of the mean") >= 1
    assert md.count(OVERVIEW_LEAD) == 1
    paper = md.split("## Paper-style tables\n", 1)[1].split("\n## ", 1)[0]
    assert paper.count("Mean with its 95% interval and n") == 1      # the IDGI tables' legend
    assert paper.count("Not comparable") == 1
    assert paper.count("\n### IDGI paper, Table") == 6
    # once each on the page: overview, IDGI, I-GOS, DGA tables, metrics, method diagnostics,
    # and the rank and the tau tables (each split into several by their metric columns)
    assert html.count('<div class="lead">') == 8
    assert html.count(escape_html(METRIC_LEAD)) == 2


@pytest.mark.skipif(BROWSER is None and not REQUIRE_BROWSER, reason="needs chromium")
def test_wide_report_fits_a_1400_px_window(wide_report, tmp_path):
    """Every built-in method and the metrics of every paper layout, at a 1400 px wide
    window (scroll bars shown): the page has no horizontal overflow, and the overview, the
    paper tables and the ranking tables fit without scrolling inside their containers."""
    if BROWSER is None:
        pytest.fail("SALBENCH_REQUIRE_BROWSER=1 but no chromium (PATH, /usr/bin/chromium)")
    probe = wide_report.parent / "_probe.html"
    script = (
        "<script>window.addEventListener('load', () => { const d = document.documentElement;"
        " const title = e => { let h = e.previousElementSibling;"
        " while (h && h.tagName !== 'H3') { h = h.previousElementSibling; }"
        " return h ? h.textContent : '?'; };"
        " const boxes = [...document.querySelectorAll('#overview .scroll, #paper .scroll')];"
        " const ranks = [...document.querySelectorAll('#rankings .scroll')];"
        " const wide = [...boxes, ...ranks].filter(e => e.scrollWidth > e.clientWidth)"
        ".map(e => title(e) + ': ' + e.scrollWidth + ' px');"
        " document.body.setAttribute('data-doc', d.scrollWidth + ' ' + d.clientWidth + ' '"
        " + window.innerWidth);"
        " document.body.setAttribute('data-tables', String(boxes.length));"
        " document.body.setAttribute('data-ranks', String(ranks.length));"
        " document.body.setAttribute('data-wide', JSON.stringify(wide)); });</script></body>")
    probe.write_text(wide_report.read_text().replace("</body>", script))
    try:
        dom = subprocess.run([*chromium_args(tmp_path / "profile"), "--window-size=1400,900",
                              "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                             timeout=120, check=True).stdout
    finally:
        probe.unlink()
    doc_width, client, viewport = map(int, re.search(r'data-doc="([^"]*)"', dom).group(1).split())
    assert viewport == 1400 and doc_width <= client <= 1400, (doc_width, client)
    # the overview, 6 IDGI tables (Tables 1, 2, 4), I-GOS and DGA (one model)
    assert int(re.search(r'data-tables="(\d+)"', dom).group(1)) == 1 + 6 + 2
    # the rank and tau tables, split by metric columns (more than 8 ranked metrics here)
    assert int(re.search(r'data-ranks="(\d+)"', dom).group(1)) >= 3
    assert re.search(r'data-wide="\[\]"', dom), re.search(r'data-wide="[^"]*"', dom)


def test_share_captions_prints_a_repeated_caption_once():
    """Per model a rank table and a tau table (as ranking_tables makes them): the repeated
    captions become leads, the rank tables come first, then the tau tables; a caption no
    other table has stays the table's own."""
    from salbench.report.tables import Table, leads, share_captions

    made = [Table(f"{kind} {model}", ["x"], [], caption=f"{kind} caption")
            for model in ("m1", "m2") for kind in ("ranks", "tau")]
    shared = share_captions([*made, Table("alone", ["x"], [], caption="its own")])
    assert [t.title for t in shared] == ["ranks m1", "ranks m2", "tau m1", "tau m2", "alone"]
    assert [t.caption for t in shared] == ["", "", "", "", "its own"]
    assert leads(shared) == ["ranks caption", "", "tau caption", "", ""]
