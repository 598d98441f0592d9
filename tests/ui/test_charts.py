"""The Models view's SVG charts: scaled points, gaps, thresholds, escaping, the champion's colour."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from mlpipe.ui import charts
from mlpipe.ui.charts import Chart, Series, Threshold, render

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, or this raises


def points(root: ET.Element) -> list[tuple[float, float]]:
    return [(float(c.get("cx")), float(c.get("cy"))) for c in root.iter(f"{SVG}circle")]


def test_points_are_placed_by_value_and_gaps_break_the_line() -> None:
    root = parse(render(Chart("t", ["a", "b", "c", "d"], [Series("s", [0.5, None, 0.7, 0.9])])))
    xy = points(root)
    assert len(xy) == 3
    assert xy[0][0] < xy[1][0] < xy[2][0]
    assert xy[0][1] > xy[1][1] > xy[2][1]  # higher values are drawn higher up
    (line,) = root.iter(f"{SVG}polyline")  # only c-d are joined; a stands alone after the gap
    assert len(line.get("points").split()) == 2


def test_thresholds_are_drawn_at_their_value_and_extend_the_range() -> None:
    chart = Chart("psi", ["1", "2"], [Series("x", [0.01, 0.02])], thresholds=[Threshold(0.2, "act")])
    root = parse(render(chart))
    (group,) = [g for g in root.iter(f"{SVG}g") if g.get("class") == "threshold"]
    line = group.find(f"{SVG}line")
    y_threshold = float(line.get("y1"))
    assert all(y > y_threshold for _, y in points(root))  # both points lie below the act line
    assert "act 0.2" in "".join(group.itertext())


def test_text_is_escaped() -> None:
    svg = render(Chart("<script>alert(1)</script>", ["<b>"], [Series("a&b", [1.0])]))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    parse(svg)


def test_constant_and_empty_series_still_render() -> None:
    parse(render(Chart("flat", ["v1", "v2"], [Series("m", [0.4, 0.4])])))
    root = parse(render(Chart("empty", [], [Series("m", [])])))
    assert points(root) == []


def test_ticks_are_round_and_cover_the_range() -> None:
    ticks = charts._ticks(0.713, 0.752)
    assert ticks[0] >= 0.713 and ticks[-1] <= 0.752 and 3 <= len(ticks) <= 6
    assert all(re.fullmatch(r"0\.7\d{1,2}", f"{t:g}") for t in ticks)


def test_metric_charts_mark_the_champion() -> None:
    versions = [
        {"version": 1, "candidate": "a", "is_champion": False, "metrics": {"auc": 0.7, "loss": 0.5}},
        {"version": 2, "candidate": "b", "is_champion": True, "metrics": {"auc": 0.72, "loss": None}},
    ]
    first, second = charts.metric_charts(versions, ["auc", "loss"], {"auc": "maximize", "loss": "minimize"})
    fills = [c.get("fill") for c in parse(first).iter(f"{SVG}circle")]
    assert fills[1] == charts.CHAMPION_COLOR and fills[0] != charts.CHAMPION_COLOR
    assert "higher is better" in first and "lower is better" in second
    assert len(points(parse(second))) == 1  # the missing loss is not drawn


def test_drift_charts_colour_points_by_status() -> None:
    drift = {
        "labels": ["03-01 06:00", "03-02 06:00"],
        "features": [
            {
                "feature": "distance",
                "kind": "numeric",
                "statistic": "psi",
                "values": [0.05, 0.4],
                "statuses": ["ok", "act"],
                "thresholds": {"warn": 0.1, "act": 0.2},
            }
        ],
    }
    (svg,) = charts.drift_charts(drift)
    root = parse(svg)
    assert [c.get("fill") for c in root.iter(f"{SVG}circle")] == [
        charts.STATUS_COLORS["ok"],
        charts.STATUS_COLORS["act"],
    ]
    assert len([g for g in root.iter(f"{SVG}g") if g.get("class") == "threshold"]) == 2
