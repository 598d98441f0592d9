"""HTML pages of the Models view, from the dicts of ``mlpipe.ui.views`` (Jinja2, autoescaped, through
:func:`mlpipe.templating.environment` as every template of mlpipe).

Pages carry their own small stylesheet and inline SVG charts: nothing is fetched from elsewhere.
Links are relative to the app's mount point (``root``), so they work under any Airflow base URL.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment
from markupsafe import Markup

from mlpipe.templating import UI, environment
from mlpipe.ui import charts

TEMPLATES = Path(__file__).with_name("templates")
NO_VALUE = "\u2013"  # an en dash stands for a missing figure


def _number(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return NO_VALUE if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return NO_VALUE if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _when(value: str | None) -> str:
    if not value:
        return NO_VALUE
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.strftime("%Y-%m-%d %H:%M") + (" UTC" if moment.utcoffset() is not None else "")


def _as_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@cache
def _environment() -> Environment:
    # Not strict: the views' dicts leave out what a page then tests with {% if %} (a run without a
    # drift report has no links.drift_report, say).
    return environment(UI, filters={"num": _number, "when": _when, "as_json": _as_json}, strict=False)


def page(template: str, *, root: str, **context: Any) -> str:
    """Render ``templates/<template>``; ``root`` is the URL path the app is mounted at."""

    def url(path: str) -> str:
        return f"{root}{path}"

    return _environment().get_template(template).render(url=url, root=root, **context)


def overview_page(rows: list[dict[str, Any]], *, root: str) -> str:
    return page("overview.html", root=root, pipelines=rows)


def pipeline_page(detail: dict[str, Any], *, root: str) -> str:
    metric_svgs = charts.metric_charts(detail["version_history"], detail["metric_names"], detail["directions"])
    drift_svgs = charts.drift_charts(detail["drift"])
    return page(
        "pipeline.html",
        root=root,
        p=detail,
        metric_charts=[Markup(svg) for svg in metric_svgs],  # built (and escaped) by charts.render
        drift_charts=[Markup(svg) for svg in drift_svgs],
    )


def version_page(detail: dict[str, Any], *, root: str) -> str:
    return page("version.html", root=root, v=detail)


def run_page(detail: dict[str, Any], *, root: str) -> str:
    return page("run.html", root=root, r=detail)


def missing_page(message: str, *, root: str, status: int) -> str:
    return page("missing.html", root=root, message=message, status=status)
