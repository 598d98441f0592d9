"""The drift report as a static HTML page: verdict, thresholds, per-feature figures and one plot per feature.

:func:`render_drift_report` turns a :class:`~mlpipe.stages.drift.DriftReport` and the two samples it
was computed from into ``out_dir/index.html`` plus one PNG per feature (and one for the scores)
next to it. The page needs nothing else: inline CSS, no JavaScript, no CDN, so it can be stored as
an artifact, attached to a mail or opened from a bucket.

The plots show the very shares the figures are computed from: a numeric feature's bars are its
shares in the PSI bins (the reference's quantile bins of :func:`~mlpipe.stages.drift.reference_edges`,
missing values as one more bin), a categorical feature's bars its category shares. Shares are
counted with numpy / pandas, so matplotlib only ever draws a few dozen bars, whatever the row count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlpipe.stages.drift import (
    DEFAULT_BINS,
    DriftReport,
    DriftThresholds,
    FeatureDrift,
    _bin_shares,
    _columns,
    _float_array,
    _numeric_column,
    reference_edges,
)
from mlpipe.stages.html_page import (
    fmt,
    new_figure,
    plot_item,
    render_page,
    save_figure,
    slug,
    unique_slug,
    write_index,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SCORE_PLOT = "score.png"
DEFAULT_TOP_CATEGORIES = 10
LABEL_CHARS = 18

REFERENCE_COLOUR = "#4c72b0"
CURRENT_COLOUR = "#dd8452"
UNSEEN_COLOUR = "#c44e52"

# What each threshold means, in the order the page lists them.
THRESHOLD_NOTES = {
    "psi_warn": "PSI at or above this: numeric feature / score 'warn'",
    "psi_act": "PSI at or above this: numeric feature / score 'act'; score at 'act' means drift",
    "js_warn": "JS distance (base 2) at or above this: categorical feature 'warn' (none: no warn tier)",
    "js_act": "JS distance (base 2) at or above this: categorical feature 'act'",
    "ks_pvalue": "KS p-value below this ...",
    "ks_statistic": "... with KS D at least this: 'warn' even when PSI is below psi_warn",
    "drifted_share_act": "share of features at 'act' from which the verdict is drift",
    "min_sample": "fewer rows than this in either sample: no status, no verdict",
}


@dataclass(frozen=True)
class _Plot:
    """One plot of the page: the row it shows, its file name and its anchor id."""

    row: FeatureDrift
    file: str
    anchor: str


def render_drift_report(
    report: DriftReport,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    out_dir: Path,
    *,
    title: str,
    subtitle: str = "",
    score_reference: Any = None,
    score_current: Any = None,
    bins: int = DEFAULT_BINS,
    top_categories: int = DEFAULT_TOP_CATEGORIES,
) -> Path:
    """Write ``out_dir/index.html`` and one PNG per feature (plus ``score.png``) for ``report``; return the index.

    ``reference`` / ``current`` are the frames ``report`` was computed from (every feature of the
    report must be a column of both), ``score_reference`` / ``score_current`` the champion's scores
    on each, and ``bins`` the ``bins`` given to :func:`~mlpipe.stages.drift.drift_report`, so the
    plotted bins are the PSI's. ``title`` and ``subtitle`` (say, the window and the champion) head
    the page. A numeric feature (and the score) is drawn as reference vs current shares in each
    quantile bin, one equal-width slot per bin: the open-ended outer bins are clipped to one slot,
    labelled with the smallest / largest value seen, and missing values get a slot of their own
    when either side has some. A categorical feature is drawn as the shares of its
    ``top_categories`` most common categories (by the larger of the two shares), the rest pooled
    into '(other)' and '(other unseen)', with categories the reference never saw in red.

    Plot files are ``feature-<slug>.png`` (slugs are lower-case ``[a-z0-9_-]``, made unique) and
    ``score.png``; existing files of the same names are replaced, and ``index.html`` is written
    last and atomically, so a reader never sees a page whose plots are missing. All text is
    HTML-escaped. No pyplot figure is created (Agg canvases only), so nothing is left open.

    Raises FeatureError when a feature of the report is missing from a frame (or a numeric one
    holds non-numbers), ValueError when only one score sample is given, or score samples are given
    for a report without a score row.
    """
    if (score_reference is None) != (score_current is None):
        raise ValueError("give both score_reference and score_current, or neither")
    if score_reference is not None and report.score is None:
        raise ValueError("score samples given but the report has no score row: pass them to drift_report too")
    if top_categories < 1:
        raise ValueError(f"top_categories must be at least 1, got {top_categories}")
    for kind in ("numeric", "categorical"):
        names = [row.feature for row in report.features if row.kind == kind]
        _columns(reference, names, kind, "reference")
        _columns(current, names, kind, "current")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    plots: dict[int, _Plot] = {}
    for row in report.features:
        stem = unique_slug(f"feature-{slug(row.feature)}", taken)
        plot = _Plot(row, f"{stem}.png", f"plot-{stem}")
        if row.kind == "numeric":
            figure = _numeric_figure(
                row,
                _numeric_column(reference, row.feature, "reference"),
                _numeric_column(current, row.feature, "current"),
                bins=bins,
            )
        else:
            figure = _categorical_figure(row, reference[row.feature], current[row.feature], top=top_categories)
        save_figure(figure, out_dir / plot.file)
        plots[id(row)] = plot
    if report.score is not None and score_reference is not None:
        plot = _Plot(report.score, SCORE_PLOT, "plot-score")
        figure = _numeric_figure(report.score, _float_array(score_reference), _float_array(score_current), bins=bins)
        save_figure(figure, out_dir / plot.file)
        plots[id(report.score)] = plot

    return write_index(out_dir, _page(report, plots, title=title, subtitle=subtitle))


# --- plots ------------------------------------------------------------------------------------


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of ``values`` in the PSI bins and the missing bin; all zero for an empty sample."""
    if values.size == 0:
        return np.zeros(edges.size + 2)
    return _bin_shares(values, edges)


def _numeric_figure(row: FeatureDrift, ref: np.ndarray, cur: np.ndarray, *, bins: int) -> Figure:
    """Reference vs current shares in each PSI bin (equal-width slots), and of missing values if any."""
    import matplotlib

    edges = reference_edges(ref, bins=bins)
    r, c = _shares(ref, edges), _shares(cur, edges)
    n_bins = edges.size + 1
    with_missing = bool(r[-1] > 0 or c[-1] > 0)
    if not with_missing:
        r, c = r[:-1], c[:-1]
    x = np.arange(r.size, dtype="float64")
    if with_missing:
        x[-1] += 0.5  # set the missing slot apart from the value bins

    with matplotlib.rc_context({"text.parse_math": False}):
        figure = new_figure()
        ax = figure.add_subplot()
        ax.bar(x - 0.2, r, width=0.4, color=REFERENCE_COLOUR, label=f"reference (n={row.n_ref:,})")
        ax.bar(x + 0.2, c, width=0.4, color=CURRENT_COLOUR, label=f"current (n={row.n_cur:,})")
        if with_missing:
            # Hatch the missing slot: it is not a range of values.
            ax.bar(x[-1:] - 0.2, r[-1:], width=0.4, color=REFERENCE_COLOUR, hatch="//", edgecolor="white")
            ax.bar(x[-1:] + 0.2, c[-1:], width=0.4, color=CURRENT_COLOUR, hatch="//", edgecolor="white")

        # Ticks on the slot boundaries: the interior edges, and the observed extremes at the open ends.
        both = np.concatenate([ref, cur])
        finite = both[np.isfinite(both)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (math.nan, math.nan)
        positions = np.arange(n_bins + 1) - 0.5
        labels = [fmt(low, ".3g") if finite.size and (edges.size == 0 or low < edges[0]) else "", *_edge_labels(edges)]
        labels.append(fmt(high, ".3g") if finite.size and (edges.size == 0 or high >= edges[-1]) else "")
        if with_missing:
            positions = np.append(positions, x[-1])
            labels.append("missing")
        ax.set_xticks(positions, labels, fontsize=7, rotation=30, ha="right", rotation_mode="anchor")
        ax.set_xlim(-0.7, x[-1] + 0.7)
        _share_axis(ax, max(r.max(initial=0), c.max(initial=0)))
        ax.set_title(
            f"{row.feature} — PSI {fmt(row.psi, '.3f')} · KS D {fmt(row.ks_statistic, '.3f')} · {row.status}",
            fontsize=9,
        )
        ax.legend(fontsize=7, frameon=False, loc="upper center", ncols=2)
    return figure


def _edge_labels(edges: np.ndarray) -> list[str]:
    """Tick labels of the interior bin edges, with enough digits to tell neighbours apart."""
    for digits in (3, 4, 6):
        labels = [format(float(e), f".{digits}g") for e in edges]
        if len(set(labels)) == len(labels):
            return labels
    return [repr(float(e)) for e in edges]


def _category_counts(values: pd.Series) -> tuple[pd.Series, int]:
    """(counts of each non-missing category observed, count of missing values)."""
    missing = int(values.isna().sum())
    counts = values.value_counts(dropna=True, sort=False)
    return counts[counts > 0], missing


def _categorical_figure(row: FeatureDrift, ref: pd.Series, cur: pd.Series, *, top: int) -> Figure:
    """Shares of the ``top`` largest categories, reference vs current; the rest pooled; unseen ones in red."""
    import matplotlib
    from matplotlib.patches import Patch

    ref_counts, ref_missing = _category_counts(ref)
    cur_counts, cur_missing = _category_counts(cur)
    both = pd.concat([ref_counts.rename("ref"), cur_counts.rename("cur")], axis=1).fillna(0)
    r = both["ref"].to_numpy(dtype="float64") / max(len(ref), 1)
    c = both["cur"].to_numpy(dtype="float64") / max(len(cur), 1)
    unseen = both["ref"].to_numpy() == 0
    order = np.argsort(-np.maximum(r, c), kind="stable")
    shown, rest = order[:top], order[top:]

    labels = [_short(str(both.index[i])) for i in shown]
    ref_bars, cur_bars, flagged = list(r[shown]), list(c[shown]), list(unseen[shown])
    for name, pool in (("(other)", rest[~unseen[rest]]), ("(other unseen)", rest[unseen[rest]])):
        if pool.size:
            labels.append(name)
            ref_bars.append(float(r[pool].sum()))
            cur_bars.append(float(c[pool].sum()))
            flagged.append(name == "(other unseen)")
    if ref_missing or cur_missing:
        labels.append("(missing)")
        ref_bars.append(ref_missing / max(len(ref), 1))
        cur_bars.append(cur_missing / max(len(cur), 1))
        flagged.append(False)

    with matplotlib.rc_context({"text.parse_math": False}):
        figure = new_figure()
        ax = figure.add_subplot()
        x = np.arange(len(labels), dtype="float64")
        ax.bar(x - 0.2, ref_bars, width=0.4, color=REFERENCE_COLOUR)
        ax.bar(x + 0.2, cur_bars, width=0.4, color=[UNSEEN_COLOUR if f else CURRENT_COLOUR for f in flagged])
        # Explicit handles: the current bars mix two colours, the legend must show both.
        handles = [Patch(color=REFERENCE_COLOUR), Patch(color=CURRENT_COLOUR)]
        names = [f"reference (n={row.n_ref:,})", f"current (n={row.n_cur:,})"]
        if any(flagged):
            handles.append(Patch(color=UNSEEN_COLOUR))
            names.append("current, unseen in reference")
        ax.set_xticks(x, labels, fontsize=7, rotation=30, ha="right", rotation_mode="anchor")
        for tick, f in zip(ax.get_xticklabels(), flagged, strict=True):
            if f:
                tick.set_color(UNSEEN_COLOUR)
        _share_axis(ax, max([*ref_bars, *cur_bars], default=0.0))
        unseen_note = ""
        if row.unseen:
            unseen_note = f" · unseen {row.unseen} ({fmt(row.unseen_share, '.1%')} of current)"
        ax.set_title(f"{row.feature} — JS {fmt(row.js, '.3f')}{unseen_note} · {row.status}", fontsize=9)
        ax.legend(handles, names, fontsize=7, frameon=False, loc="upper center", ncols=len(handles))
    return figure


def _share_axis(ax: Any, highest: float) -> None:
    from matplotlib.ticker import PercentFormatter

    # Headroom above the tallest bar for the legend, which would otherwise sit on the bars.
    ax.set_ylim(0, max(float(highest), 0.01) * 1.3)

    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_ylabel("share of rows", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


# --- the page ---------------------------------------------------------------------------------


def _row(row: FeatureDrift, plot: _Plot | None) -> dict[str, Any]:
    """One line of the features table: the feature (linked to its plot), its figures as text, status, reasons."""
    unseen, examples = "—", ""
    if row.kind == "categorical":
        distance = f"JS {fmt(row.js, '.3f')}"
        ks_d = ks_p = "—"
        if row.unseen is not None:
            unseen = f"{row.unseen} ({fmt(row.unseen_share, '.1%')})"
            examples = ", ".join(row.unseen_examples or [])
    else:
        distance = f"PSI {fmt(row.psi, '.3f')}"
        ks_d, ks_p = fmt(row.ks_statistic, ".3f"), fmt(row.ks_pvalue, ".2g")
    missing = f"{fmt(row.missing_ref, '.1%')} → {fmt(row.missing_cur, '.1%')}"
    return {
        "feature": row.feature,
        "anchor": plot.anchor if plot is not None else "",
        "kind": row.kind,
        "numbers": [f"{row.n_ref:,}", f"{row.n_cur:,}", missing, distance, ks_d, ks_p],
        "unseen": unseen,
        "unseen_examples": examples,
        "status": row.status,
        "reasons": list(row.reasons),
    }


def _thresholds(t: DriftThresholds) -> list[dict[str, Any]]:
    return [
        {"name": name, "value": "none" if getattr(t, name) is None else getattr(t, name), "note": note}
        for name, note in THRESHOLD_NOTES.items()
    ]


def _figure(plot: _Plot) -> dict[str, Any]:
    row = plot.row
    caption = (
        f"{row.kind} feature {row.feature}: share of rows per PSI bin (the reference's quantile bins)"
        if row.kind == "numeric"
        else f"categorical feature {row.feature}: share of rows per category"
        if row.kind == "categorical"
        else "champion's predicted scores: share of rows per PSI bin"
    )
    return plot_item(plot.file, alt=f"distribution of {row.feature}", caption=caption, anchor=plot.anchor)


def _page(report: DriftReport, plots: dict[int, _Plot], *, title: str, subtitle: str) -> str:
    share = report.drifted_share
    summary = (
        f"{report.n_ref:,} reference rows, {report.n_cur:,} current rows"
        + (f"; share of features at 'act': {share:.2f}" if share is not None else "")
        + f"; {len(report.features)} feature(s)"
    )
    ordered = [plots[id(row)] for row in report.features if id(row) in plots]
    if report.score is not None and id(report.score) in plots:
        ordered.append(plots[id(report.score)])
    return render_page(
        "drift.html",
        title=title,
        subtitle=subtitle,
        verdict=report.verdict,
        summary=summary,
        reasons=list(report.reasons),
        features=[_row(row, plots.get(id(row))) for row in report.features],
        score=_row(report.score, plots.get(id(report.score))) if report.score is not None else None,
        thresholds=_thresholds(report.thresholds),
        plots=[_figure(plot) for plot in ordered],
    )
