"""Server-rendered SVG line charts for the Models view: metrics over versions, drift over checks.

Plain SVG text, built here without a plotting library or any script, so a page shows its charts
with nothing fetched from anywhere (no CDN) and nothing heavy imported in the API server. Every
value drawn carries a ``<title>`` with its figure, shown as a tooltip on hover.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
STATUS_COLORS = {"ok": "#2e7d32", "warn": "#ef6c00", "act": "#c62828", "n/a": "#9e9e9e"}
MAX_X_LABELS = 8


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]
    color: str = PALETTE[0]
    # Per point: a fill colour overriding the series colour (a status, the champion), or None.
    point_colors: Sequence[str | None] = ()
    point_notes: Sequence[str | None] = ()


@dataclass(frozen=True)
class Threshold:
    value: float
    label: str
    color: str = "#c62828"


@dataclass(frozen=True)
class Chart:
    title: str
    x_labels: Sequence[str]
    series: Sequence[Series]
    thresholds: Sequence[Threshold] = field(default_factory=tuple)
    y_label: str = ""
    width: int = 560
    height: int = 220


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000 or magnitude < 0.001:
        return f"{value:.2e}"
    return f"{value:.4g}"


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    """About ``count`` round tick values covering [low, high]."""
    span = high - low
    raw = span / count
    step = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * step:
            step *= factor
            break
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        if value >= low - step * 1e-9:
            ticks.append(round(value, 12))
        value += step
    return ticks


def _y_range(chart: Chart) -> tuple[float, float]:
    values = [v for s in chart.series for v in s.values if v is not None and math.isfinite(v)]
    values += [t.value for t in chart.thresholds]
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    if math.isclose(low, high):
        pad = abs(low) * 0.1 or 0.5
        return low - pad, high + pad
    pad = (high - low) * 0.08
    low = 0.0 if 0 <= low - pad < (high - low) * 0.3 else low - pad
    return low, high + pad


def render(chart: Chart) -> str:
    """The chart as an inline ``<svg>`` element (safe to embed: every text is escaped)."""
    left, right, top, bottom = 56, 16, 28, 44
    width, height = chart.width, chart.height
    plot_w, plot_h = width - left - right, height - top - bottom
    low, high = _y_range(chart)
    n = max(len(chart.x_labels), 1)

    def x_at(i: int) -> float:
        return left + (plot_w / 2 if n == 1 else plot_w * i / (n - 1))

    def y_at(v: float) -> float:
        return top + plot_h * (1 - (v - low) / (high - low))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-label="{escape(chart.title)}">',
        f"<title>{escape(chart.title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{left}" y="16" font-size="13" font-weight="600" fill="#1a202c">{escape(chart.title)}</text>',
    ]
    for tick in _ticks(low, high):
        y = y_at(tick)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e2e8f0"/>')
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end" fill="#4a5568">{_fmt(tick)}</text>'
        )
    out.append(
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#a0aec0"/>'
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#a0aec0"/>'
    )
    if chart.y_label:
        out.append(
            f'<text transform="translate(12 {top + plot_h / 2:.1f}) rotate(-90)" font-size="10" '
            f'text-anchor="middle" fill="#4a5568">{escape(chart.y_label)}</text>'
        )
    step = max(1, math.ceil(n / MAX_X_LABELS))
    for i, label in enumerate(chart.x_labels):
        if i % step and i != n - 1:
            continue
        # The outermost labels hang inwards so they are not cut at the chart's edges.
        anchor = "start" if i == 0 and n > 1 else "end" if i == n - 1 and n > 1 else "middle"
        out.append(
            f'<text x="{x_at(i):.1f}" y="{top + plot_h + 16}" font-size="10" text-anchor="{anchor}" '
            f'fill="#4a5568">{escape(label)}</text>'
        )
    for index, threshold in enumerate(chart.thresholds):
        y = y_at(threshold.value)
        # Alternate label sides, so two close thresholds (warn, act) keep readable labels.
        x, anchor = (left + plot_w - 2, "end") if index % 2 else (left + 4, "start")
        out.append(
            f'<g class="threshold"><line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{threshold.color}" stroke-dasharray="5 4" stroke-width="1.2"/>'
            f'<text x="{x}" y="{y - 4:.1f}" font-size="10" text-anchor="{anchor}" '
            f'fill="{threshold.color}">{escape(threshold.label)} {_fmt(threshold.value)}</text></g>'
        )
    for series in chart.series:
        out.extend(_series(series, x_at, y_at))
    out.extend(_legend(chart, left, top + plot_h + 32))
    out.append("</svg>")
    return "".join(out)


def _series(series: Series, x_at, y_at) -> list[str]:
    out = [f'<g class="series" data-name="{escape(series.name)}">']
    run: list[str] = []
    for i, value in enumerate(series.values):
        if value is None or not math.isfinite(value):
            if len(run) > 1:
                out.append(_polyline(run, series.color))
            run = []
            continue
        run.append(f"{x_at(i):.1f},{y_at(value):.1f}")
    if len(run) > 1:
        out.append(_polyline(run, series.color))
    for i, value in enumerate(series.values):
        if value is None or not math.isfinite(value):
            continue
        fill = (series.point_colors[i] if i < len(series.point_colors) else None) or series.color
        note = series.point_notes[i] if i < len(series.point_notes) else None
        tip = f"{series.name}: {_fmt(value)}" + (f" ({note})" if note else "")
        out.append(
            f'<circle class="point" cx="{x_at(i):.1f}" cy="{y_at(value):.1f}" r="4" fill="{fill}" '
            f'stroke="#ffffff" stroke-width="1"><title>{escape(tip)}</title></circle>'
        )
    out.append("</g>")
    return out


def _polyline(points: list[str], color: str) -> str:
    return f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(points)}"/>'


def _legend(chart: Chart, left: int, y: int) -> list[str]:
    if len(chart.series) < 2:
        return []
    out, x = [], left
    for series in chart.series:
        out.append(
            f'<rect x="{x}" y="{y - 8}" width="10" height="10" fill="{series.color}"/>'
            f'<text x="{x + 14}" y="{y + 1}" font-size="10" fill="#1a202c">{escape(series.name)}</text>'
        )
        x += 24 + 7 * len(series.name)
    return out


# -- the Models view's charts --------------------------------------------------------------------

CHAMPION_COLOR = "#2e7d32"
FORMER_CHAMPION_COLOR = "#1f77b4"


def metric_charts(versions: list[dict], metric_names: list[str], directions: dict[str, str]) -> list[str]:
    """One chart per metric over the model versions; the current champion's point is green."""
    labels = [f"v{v['version']}" for v in versions]
    colors = [CHAMPION_COLOR if v["is_champion"] else None for v in versions]
    notes = [", ".join(filter(None, [v["candidate"], "champion" if v["is_champion"] else None])) for v in versions]
    charts = []
    for index, metric in enumerate(metric_names):
        values = [_number(v["metrics"].get(metric)) for v in versions]
        better = "higher is better" if directions.get(metric) == "maximize" else "lower is better"
        charts.append(
            render(
                Chart(
                    title=f"{metric} ({better})",
                    x_labels=labels,
                    series=[Series(metric, values, PALETTE[index % len(PALETTE)], colors, notes)],
                    y_label=metric,
                    width=560 if index == 0 else 380,
                    height=220 if index == 0 else 180,
                )
            )
        )
    return charts


def drift_charts(drift: dict) -> list[str]:
    """One chart per feature (and the score): its PSI or JS distance per check, warn/act thresholds drawn."""
    charts = []
    for entry in drift["features"]:
        thresholds = [
            Threshold(value, label, color)
            for label, color, value in (
                ("warn", "#ef6c00", entry["thresholds"].get("warn")),
                ("act", "#c62828", entry["thresholds"].get("act")),
            )
            if value is not None
        ]
        statistic = "PSI" if entry["statistic"] == "psi" else "JS distance"
        colors = [STATUS_COLORS.get(s or "") for s in entry["statuses"]]
        notes = list(entry["statuses"])
        title = "model score" if entry["kind"] == "score" else f"{entry['feature']} ({entry['kind']})"
        charts.append(
            render(
                Chart(
                    title=f"{title}: {statistic}",
                    x_labels=drift["labels"],
                    series=[Series(entry["feature"], entry["values"], "#4a5568", colors, notes)],
                    thresholds=thresholds,
                    y_label=statistic,
                    width=380,
                    height=190,
                )
            )
        )
    return charts


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None
