"""What every static HTML report of mlpipe shares: the stylesheet, escaping, badges, small PNG plots, the page.

A report is a folder: ``index.html`` with inline CSS (no JavaScript, no CDN, nothing fetched) and its
PNG plots next to it, so it can be kept as an artifact, mailed or opened from a bucket. Plots are
drawn on bare matplotlib ``Figure``s with Agg canvases (never pyplot), and the page is written last
and atomically, so a reader never sees a page whose plots are missing.
"""

from __future__ import annotations

import html
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1 { margin-bottom: 0.1em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.subtitle { color: #555; margin-top: 0; }
.badge { display: inline-block; padding: 0.15em 0.6em; border-radius: 0.3em; font-weight: 600; }
.verdict { font-size: 1.3em; }
.ok { background: #d4edda; color: #155724; } .warn { background: #fff3cd; color: #856404; }
.act { background: #f8d7da; color: #721c24; } .na { background: #e2e3e5; color: #383d41; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.score td { border-top: 2px solid #999; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } figcaption { color: #555; font-size: 0.9em; max-width: 540px; }
.muted { color: #777; }
"""


def e(value: Any) -> str:
    """``value`` as HTML text, quotes included (safe in attributes too)."""
    return html.escape(str(value), quote=True)


def badge(status: str, *, extra: str = "") -> str:
    """A coloured status label; ``extra`` adds classes (say, ``" verdict"``)."""
    return f'<span class="badge {BADGE_CLASSES.get(status.lower(), "na")}{extra}">{e(status)}</span>'


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


def img(file: str, *, alt: str, caption: str, anchor: str = "", figsize: tuple[float, float] = FIGSIZE) -> str:
    """A ``<figure>`` showing the PNG ``file`` (relative to the page) with its caption."""
    anchor_attr = f' id="{e(anchor)}"' if anchor else ""
    return (
        f'<figure{anchor_attr}><img src="{e(file)}" alt="{e(alt)}" width="{int(figsize[0] * DPI)}" '
        f'height="{int(figsize[1] * DPI)}"><figcaption>{e(caption)}</figcaption></figure>'
    )


def page(*, title: str, subtitle: str, body: str) -> str:
    """A whole self-contained page: the stylesheet inline, ``body`` (already HTML) under the title."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>{e(title)}</h1>
{f'<p class="subtitle">{e(subtitle)}</p>' if subtitle else ""}
{body}
</body>
</html>
"""


def write_index(out_dir: Path, text: str) -> Path:
    """Write ``out_dir/index.html`` atomically (temp file + rename); call it after the plots are saved."""
    index = out_dir / INDEX_FILE
    tmp = out_dir / f".{INDEX_FILE}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, index)
    return index
