"""HTML rendering: one self-contained page (inline CSS, no scripts, images by relative
path), tables with highlighted cells, the curve figures and the gallery."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from salbench.report.gallery import Gallery
from salbench.report.plots import Plot
from salbench.report.tables import Table, leads

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 0 auto; padding: 0 24px 48px; max-width: 1500px; color: #1d1d1f; }
header { border-bottom: 1px solid #ddd; margin-bottom: 12px; }
h1 { font-size: 22px; margin: 18px 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #eee; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
nav a { margin-right: 14px; }
.meta { color: #555; margin: 4px 0 12px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 6px 0 4px; font-size: 12.5px; }
th, td { border: 1px solid #d6d6d6; padding: 3px 5px; text-align: right; vertical-align: top;
         white-space: nowrap; }
th { background: #f3f3f5; white-space: normal; min-width: 40px; }
td:first-child, th:first-child, td.text { text-align: left; }
td.wrap { white-space: normal; text-align: left; max-width: 640px; }
td.strong { background: #e3f1e3; font-weight: 600; }
.detail { display: block; color: #666; font-size: 11px; font-weight: normal; }
.caption, .note { color: #555; font-size: 12.5px; max-width: 1100px; }
.lead { color: #444; font-size: 12.5px; max-width: 1100px; border-left: 3px solid #ccd;
        padding: 0 0 0 10px; margin: 10px 0; }
.lead p { margin: 4px 0; }
details { margin: 6px 0; }
summary { cursor: pointer; font-weight: 600; }
figure.plot { margin: 10px 0 22px; }
figure.plot img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 12.5px; }
.sample { margin: 14px 0 22px; }
.sample h3 { font-size: 13.5px; font-weight: 600; }
.tiles { display: flex; flex-wrap: wrap; gap: 8px; }
.tile { width: 132px; margin: 0; }
.tile img { width: 128px; height: 128px; display: block; border: 1px solid #ccc; }
.tile .missing { width: 128px; height: 128px; border: 1px dashed #bbb; color: #a33;
                 font-size: 10.5px; overflow: hidden; padding: 4px; box-sizing: border-box; }
.tile figcaption { font-size: 11px; line-height: 1.3; color: #222; }
.tile figcaption b { display: block; font-size: 11.5px; }
.tile .scores { font-family: ui-monospace, Menlo, Consolas, monospace; color: #444; }
.colorbar { display: inline-block; width: 220px; height: 12px; vertical-align: middle;
            border: 1px solid #ccc; background: linear-gradient(to right, %s); }
.regress td.strong { background: #f7dede; }
pre { background: #f7f7f9; padding: 8px; overflow-x: auto; font-size: 12px; }
.empty { color: #a33; font-weight: 600; }
"""


def _css(colorbar: str) -> str:
    return CSS.replace("%s", colorbar)


def table_html(table: Table, wrap_columns: Iterable[int] = ()) -> str:
    """A :class:`Table` as HTML (highlighted cells get class ``strong``)."""
    wrap = set(wrap_columns)
    # a heading may break after "_" (metric names), so columns are as narrow as their values
    head = "".join(f"<th>{escape(h).replace('_', '_<wbr>')}</th>" for h in table.header)
    body = []
    for row in table.rows:
        cells = []
        for i, c in enumerate(row):
            classes = (["strong"] if c.strong else []) + (["wrap"] if i in wrap else [])
            cls = f' class="{" ".join(classes)}"' if classes else ""
            detail = "".join(f'<span class="detail">{escape(line)}</span>'
                             for line in c.detail.splitlines())
            cells.append(f"<td{cls}>{escape(c.text)}{detail}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    caption = f'<p class="caption">{escape(table.caption)}</p>' if table.caption else ""
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in table.notes)
    return (f"<h3>{escape(table.title)}</h3>{caption}<div class=\"scroll\"><table>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
            f"{notes}")


def tables_html(tables: Sequence[Table], wrap_columns: Iterable[int] = (),
                collapsed: bool = False) -> str:
    """Tables in order, the text a run of them shares (:attr:`Table.lead`) once before the
    first of the run; ``collapsed``: each table in a closed ``<details>``."""
    wrap = list(wrap_columns)
    out = []
    for table, lead in zip(tables, leads(tables), strict=True):
        if lead:
            out.append('<div class="lead">' + "".join(f"<p>{escape(para)}</p>"
                                                      for para in lead.splitlines()) + "</div>")
        body = table_html(table, wrap)
        out.append(collapsible(table.title, body) if collapsed else body)
    return "".join(out)


def plots_html(plots: list[Plot]) -> str:
    """The curve figures with captions."""
    if not plots:
        return '<p class="note">This run has no curve columns (no curve metric configured).</p>'
    return "".join(
        f'<figure class="plot"><img src="{escape(p.path)}" alt="{escape(p.title)} '
        f'{escape(p.model)}"><figcaption>{escape(p.caption)}</figcaption></figure>'
        for p in plots)


def gallery_html(gallery: Gallery) -> str:
    """The gallery: notes, a colour bar, and per sample a row of tiles."""
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in gallery.notes)
    if not gallery.rows:
        return f'<p class="empty">{escape(gallery.notes[0])}</p>' + "".join(
            f'<p class="note">{escape(n)}</p>' for n in gallery.notes[1:])
    legend = ", ".join(f"{short} = {col}" for col, short in gallery.legend)
    bar = ('<p class="note">-1 <span class="colorbar"></span> +1 (normalised map value)'
           + (f". Scores under each map: {escape(legend)}." if legend else "") + "</p>")
    out = [notes, bar]
    model = None
    for row in gallery.rows:
        if row.model != model:
            model = row.model
            out.append(f"<h3>Model {escape(model)}</h3>")
        tiles = []
        if row.input_image:
            tiles.append(f'<figure class="tile"><img src="{escape(row.input_image)}" '
                         f'alt="input {escape(row.sample_id)}"><figcaption><b>input</b>'
                         f'model crop</figcaption></figure>')
        else:
            tiles.append('<figure class="tile"><div class="missing">input crop not stored'
                         '</div><figcaption><b>input</b></figcaption></figure>')
        for t in row.tiles:
            scores = "<br>".join(f"{escape(k)} {escape(v)}" for k, v in t.scores)
            body = (f'<img src="{escape(t.image)}" alt="{escape(t.method)} map">' if t.image
                    else f'<div class="missing">{escape(t.message)}</div>')
            msg = (f'<br><span class="detail">{escape(t.message)}</span>'
                   if t.image and t.message else "")
            tiles.append(f'<figure class="tile">{body}<figcaption><b>{escape(t.method)}</b>'
                         f'<span class="scores">{scores}</span>{msg}</figcaption></figure>')
        out.append(f'<div class="sample"><h3>{escape(row.caption)}</h3>'
                   f'<div class="tiles">{"".join(tiles)}</div></div>')
    return "".join(out)


def section(anchor: str, title: str, body: str) -> str:
    """An ``<h2>`` section with an anchor."""
    return f'<section id="{escape(anchor)}"><h2>{escape(title)}</h2>{body}</section>'


def collapsible(summary: str, body: str, open_: bool = False) -> str:
    """A ``<details>`` block."""
    return (f"<details{' open' if open_ else ''}><summary>{escape(summary)}</summary>"
            f"{body}</details>")


def page(title: str, meta: str, nav: list[tuple[str, str]], body: str,
         colorbar: str = "#fff, #fff") -> str:
    """A complete HTML document."""
    links = "".join(f'<a href="{escape(href)}">{escape(text)}</a>' for href, text in nav)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{escape(title)}</title><style>{_css(colorbar)}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p class=\"meta\">{meta}</p><nav>{links}</nav>"
        f"</header>{body}</body></html>\n")
