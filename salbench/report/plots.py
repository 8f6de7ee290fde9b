"""Curve plots (matplotlib, PNG): per model and curve column, one panel per method with the
aggregated curve and its band, the other methods' curves in grey behind it for comparison.

Aggregation follows each metric's protocol: the median with its interquartile band for SIC
(PAIR aggregates SIC by the median), the mean with a 95% band otherwise that stays inside
what the curve can take (:mod:`salbench.report.intervals`: Wilson for 0 / 1 curves such as
AIC, Student t clipped to the range for bounded curves, plain Student t otherwise).
Only rows with a map (ok, or metric_error for another metric) and a finite curve count; PIC
curves of skipped samples are left out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from salbench.report.data import RunTables
from salbench.report.intervals import CurveMoments, band_kind, moments_band
from salbench.results.samples import RunSamples
from salbench.results.tables import MAP_STATUSES

#: Curve column -> (title, x label, y label). Unknown curve columns get generic labels.
CURVES = {
    "insertion_curve": ("Insertion (IDGI protocol)", "fraction of pixels inserted", "p(target)"),
    "deletion_curve": ("Deletion (IDGI protocol)", "fraction of pixels deleted", "p(target)"),
    "insertion_igos_curve": ("Insertion (I-GOS protocol, blurred base)",
                             "fraction of pixels inserted", "p(target)"),
    "deletion_igos_curve": ("Deletion (I-GOS protocol, blurred base)",
                            "fraction of pixels deleted", "p(target)"),
    "insertion_samp_curve": ("Insertion (SAMP protocol)", "fraction of pixels inserted",
                             "logit / peak"),
    "deletion_samp_curve": ("Deletion (SAMP protocol)", "fraction of pixels deleted",
                            "logit / peak"),
    "pixel_flip_lerf_curve": ("LeRF (least relevant first)", "fraction of pixels flipped",
                              "p(target)"),
    "pixel_flip_morf_curve": ("MoRF (most relevant first)", "fraction of pixels flipped",
                              "p(target)"),
    "sic_curve": ("SIC (softmax information curve)", "normalised information (WebP)",
                  "p / p(original)"),
    "aic_curve": ("AIC (accuracy information curve)", "normalised information (WebP)",
                  "top-1 accuracy"),
    "sic_msssim_curve": ("SIC, MS-SSIM information level", "MS-SSIM to the original",
                         "p / p(original)"),
    "aic_msssim_curve": ("AIC, MS-SSIM information level", "MS-SSIM to the original",
                         "top-1 accuracy"),
    "pic_blur_sic_curve": ("SIC (the IDGI paper's blur base)", "normalised information (WebP)",
                           "p / p(original)"),
    "pic_blur_aic_curve": ("AIC (the IDGI paper's blur base)", "normalised information (WebP)",
                           "top-1 accuracy"),
    "sensitivity_n_curve": ("Sensitivity-N", "subset size (log grid, small to large)",
                            "Pearson r"),
    "mprt_spearman_curve": ("Model randomisation (cascading)", "randomisation step",
                            "Spearman to the original map"),
    "mprt_ssim_curve": ("Model randomisation (cascading)", "randomisation step",
                        "SSIM to the original map"),
}
#: Curve columns that are raw points for another aggregation, not curves to plot.
NOT_PLOTTED = frozenset({"pic_blur_levels", "pic_blur_prob_ratio", "pic_blur_top1"})
COLUMNS_PER_ROW = 5


@dataclass(frozen=True)
class Plot:
    """A written figure: its file (relative to the report folder) and a caption."""

    model: str
    column: str
    title: str
    path: str
    caption: str


def _skip_column(column: str) -> str | None:
    """The ``*_skipped`` column of a PIC curve column."""
    return column[: -len("_curve")] + "_skipped" if column.endswith("_curve") else None


def method_aggregate(samples: RunSamples, model: str, method: str, column: str
                     ) -> tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
    """(curves, (centre, low, high) per point) of the finite, not-skipped curves of
    model x method's rows that have a map (status ok, or metric_error for another metric),
    of the longest length; None without curves. SIC columns: the median and quartiles
    (exact, over the group's curves held at once); others: the mean and its 95% band
    (:func:`salbench.report.intervals.moments_band`), summed block by block."""
    skip = _skip_column(column)
    if "sic" in column:
        curves = samples.curves(model, method, column, MAP_STATUSES, skip)
        if not curves.size:
            return None
        q = np.quantile(curves, [0.5, 0.25, 0.75], axis=0)
        return len(curves), (q[0], q[1], q[2])
    by_length: dict[int, CurveMoments] = {}
    for block in samples.curve_blocks(model, method, column, MAP_STATUSES, skip):
        by_length.setdefault(block.shape[1], CurveMoments()).add(block)
    if not by_length:
        return None
    acc = by_length[max(by_length)]
    return acc.n, moments_band(acc, column)


def band_name(column: str) -> str:
    """What the centre line and band of ``column``'s plot are."""
    return ("median, band: interquartile range" if "sic" in column
            else f"mean, band: {band_kind(column)}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _margins(fig: Figure, nrows: int) -> None:
    """Fixed margins in inches for a grid of panels with shared axes (tick labels on the
    outer panels only): room for the two-line title, the panel titles, the outer tick
    labels and axis labels. Computed, not measured: ``tight_layout`` measures every tick
    label of every panel, which cost most of a 40-panel figure's time."""
    width, height = fig.get_size_inches()
    panel_h = (height - 1.25) / nrows
    fig.subplots_adjust(left=0.62 / width, right=1 - 0.12 / width, top=1 - 0.72 / height,
                        bottom=0.53 / height, wspace=0.12,
                        hspace=0.38 / max(panel_h - 0.38, 0.5))


def curve_plot(run: RunTables, model: str, column: str, path: Path) -> Plot | None:
    """One figure: a panel per method of ``model`` for ``column``; None without curves.
    One method's curves are held at a time (reduced to their centre line and band)."""
    data: dict[str, int] = {}  # method -> curves drawn
    centres: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for m in run.methods:
        got = method_aggregate(run.samples, model, m, column)
        if got is not None:
            data[m], centres[m] = got
    if not data:
        return None
    title, xlabel, ylabel = CURVES.get(column, (column, "point (evenly spaced)", "value"))
    ncols = min(COLUMNS_PER_ROW, len(data))
    nrows = math.ceil(len(data) / ncols)
    fig = Figure(figsize=(max(6.0, 2.6 * ncols + 0.4), 2.2 * nrows + 1.1), dpi=100)
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    for ax in axes.ravel()[len(data):]:
        ax.set_visible(False)
    for ax, (method, n) in zip(axes.ravel(), data.items(), strict=False):
        c, low, high = centres[method]
        x = np.linspace(0.0, 1.0, len(c))
        others = [np.column_stack([np.linspace(0.0, 1.0, len(line)), line])
                  for other, (line, _, _) in centres.items() if other != method]
        if others:  # one artist for the other methods' lines: one draw call, not one each
            ax.add_collection(LineCollection(others, colors="0.82", linewidths=0.8, zorder=1))
        ax.fill_between(x, low, high, color="tab:blue", alpha=0.25, lw=0, zorder=2)
        ax.plot(x, c, color="tab:blue", lw=1.6, zorder=3)
        auc = float(np.trapezoid(c, x))
        # y given: matplotlib skips placing the title above top-side tick labels (there are
        # none), which measures the panel's ticks again; the same pixels, ~5 % less time
        ax.set_title(f"{method} (n={n}, AUC {auc:.3f})", fontsize=8.5, y=1.0)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, lw=0.5)
    for ax in axes[-1]:
        ax.set_xlabel(xlabel, fontsize=7.5)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel, fontsize=7.5)
    fig.suptitle(f"{title} — {model}\n{band_name(column)}", fontsize=10)
    fig.text(0.995, 0.005, f"salbench run {run.run_id}", ha="right", va="bottom",
             fontsize=6.5, color="0.45")
    _margins(fig, nrows)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    caption = (f"{title}, {model}: one panel per method, {band_name(column)}; grey: the other "
               f"methods' curves. AUC in each title is that of the plotted centre line.")
    return Plot(model, column, title, str(path.name), caption)


def write_curve_plots(run: RunTables, out_dir: Path) -> list[Plot]:
    """Every curve column x model of the run as ``out_dir/curves-<model>-<column>.png``.
    Returned paths are relative to ``out_dir.parent`` (the report folder)."""
    plots = []
    for column in run.samples.curve_columns():
        if column in NOT_PLOTTED:
            continue
        for model in run.models:
            name = f"curves-{_slug(model)}-{_slug(column)}.png"
            p = curve_plot(run, model, column, out_dir / name)
            if p is not None:
                plots.append(Plot(p.model, p.column, p.title, f"{out_dir.name}/{name}",
                                  p.caption))
    return plots
