"""What every static HTML report of mlpipe shares: small PNG plots, figures as text, the rendered page.

A report is a folder: ``index.html`` with inline CSS (no JavaScript, no CDN, nothing fetched) and its
PNG plots next to it, so it can be kept as an artifact, mailed or opened from a bucket. Plots are
drawn on bare matplotlib ``Figure``s with Agg canvases (never pyplot), and the page is written last
and atomically, so a reader never sees a page whose plots are missing.

The pages are Jinja2 templates under ``mlpipe/templates/reports`` (``_page.html``: the layout and
stylesheet; ``_macros.html``: badges and figures), rendered by :func:`render_page` through
:func:`mlpipe.templating.environment`: autoescaped, so every name and value from the data is text.
The report modules compute the figures and tables; the templates only lay them out. The run summary
(``mlpipe.summary``, plain text) is a template of the same folder, ``summary.txt``, got with
:func:`report_template`.
"""

from __future__ import annotations

import math
import os
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe.templating import REPORTS, environment

if TYPE_CHECKING:
    from jinja2 import Environment
    from matplotlib.figure import Figure

INDEX_FILE = "index.html"
FIGSIZE = (6.0, 3.0)
DPI = 90

# Status words -> badge colour class.
BADGE_CLASSES = {
    "ok": "ok",
    "pass": "ok",
    "blessed": "ok",
    "warn": "warn",
    "act": "act",
    "fail": "act",
    "drift": "act",
    "not blessed": "act",
    "n/a": "na",
    "insufficient_data": "na",
    "not judged": "na",
}


def badge_class(status: str) -> str:
    """The colour class of a status word's badge ('na' for a word it does not know)."""
    return BADGE_CLASSES.get(str(status).lower(), "na")


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec``; 'n/a' for None, NaN and infinities."""
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def slug(name: str, default: str = "feature") -> str:
    """``name`` as a short, lower-case file-name part of ``[a-z0-9_-]`` (``default`` if nothing is left)."""
    cleaned = re.sub(r"[^a-z0-9_-]+", "_", str(name).lower()).strip("_-")
    return cleaned[:60] or default


def unique_slug(stem: str, taken: set[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3``… if already taken (two names can share a slug); marks it taken."""
    candidate, n = stem, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}-{n}"
    taken.add(candidate)
    return candidate


def new_figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    """A bare Figure on an Agg canvas: no pyplot, so no global figure registry to leak into and no
    GUI backend to pick, whatever backend the calling process (a notebook, say) has selected."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: Path) -> None:
    """Write ``figure`` as a PNG at ``path`` and free its drawing."""
    import matplotlib

    # Feature and category names are data: a '$' in one must not be parsed as mathtext.
    with matplotlib.rc_context({"text.parse_math": False}):
        figure.savefig(path, format="png", dpi=DPI)
    figure.clear()


def plot_item(
    file: str, *, alt: str, caption: str, anchor: str = "", figsize: tuple[float, float] = FIGSIZE
) -> dict[str, Any]:
    """What ``_macros.html``'s ``figure`` shows of the PNG ``file``: its text and its size in pixels."""
    return {
        "file": file,
        "alt": alt,
        "caption": caption,
        "anchor": anchor,
        "width": int(figsize[0] * DPI),
        "height": int(figsize[1] * DPI),
    }


@cache
def _environment() -> Environment:
    return environment(REPORTS, filters={"badge_class": badge_class, "fmt": fmt})


def report_template(name: str) -> Any:
    """The report template ``name`` (its macros are ``.module``'s attributes)."""
    return _environment().get_template(name)


def render_page(template: str, *, title: str, subtitle: str = "", **context: Any) -> str:
    """A whole self-contained page from the report template ``template`` (which extends ``_page.html``)."""
    return report_template(template).render(title=title, subtitle=subtitle, **context)


def write_index(out_dir: Path, text: str) -> Path:
    """Write ``out_dir/index.html`` atomically (temp file + rename); call it after the plots are saved."""
    index = out_dir / INDEX_FILE
    tmp = out_dir / f".{INDEX_FILE}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, index)
    return index
