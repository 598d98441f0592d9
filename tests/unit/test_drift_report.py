"""Tests of mlpipe.stages.drift_report: the HTML page, its PNG plots, escaping, no figure leak, cost."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from markupsafe import escape

from mlpipe.errors import FeatureError
from mlpipe.stages.drift import DriftReport, drift_report
from mlpipe.stages.drift_report import render_drift_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<script>alert(1)</script>"
UNSEEN = "<i>Atlantis</i>"
NUMERIC = ["shifted", "stable", HOSTILE, "cost ($)", r"$\frac{$ ratio"]
CATEGORICAL = ["city", "a b", "a_b"]
CITIES = np.array(["Paris", "Lyon", "Nice", "Lille", "Brest"])


def make_frame(n: int, seed: int, *, drifted: bool) -> pd.DataFrame:
    """Numeric columns (``shifted`` moves 0.6 sd when drifted, ``stable`` has 5% missing) and categorical ones.

    When drifted, 8% of ``city`` is a category the reference never saw.
    """
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {name: rng.normal(0.0, 1.0, n) for name in NUMERIC}
    data["shifted"] = rng.normal(0.6 if drifted else 0.0, 1.0, n)
    data["stable"][rng.random(n) < 0.05] = np.nan
    for name in CATEGORICAL:
        data[name] = CITIES[rng.choice(CITIES.size, size=n, p=[0.4, 0.25, 0.15, 0.1, 0.1])].astype(object)
    if drifted:
        data["city"][rng.random(n) < 0.08] = UNSEEN
    return pd.DataFrame(data)


def render(report: DriftReport, reference: pd.DataFrame, current: pd.DataFrame, out: Path, **kwargs: Any) -> Path:
    return render_drift_report(report, reference, current, out, title="Drift of <tiny>", **kwargs)


def img_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def assert_real_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (270, 540), "6 x 3 in at 90 dpi"
    assert pixels.var() > 0, f"{path.name} is blank"


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_frame(5_000, seed=1, drifted=False), make_frame(4_000, seed=2, drifted=True)


@pytest.fixture(scope="module")
def scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.beta(2, 5, 5_000), rng.beta(3, 4, 4_000)


@pytest.fixture(scope="module")
def report(frames: tuple[pd.DataFrame, pd.DataFrame], scores: tuple[np.ndarray, np.ndarray]) -> DriftReport:
    reference, current = frames
    return drift_report(
        reference,
        current,
        numeric=NUMERIC,
        categorical=CATEGORICAL,
        score_reference=scores[0],
        score_current=scores[1],
    )


@pytest.fixture(scope="module")
def rendered(
    tmp_path_factory: pytest.TempPathFactory,
    frames: tuple[pd.DataFrame, pd.DataFrame],
    scores: tuple[np.ndarray, np.ndarray],
    report: DriftReport,
) -> tuple[Path, str]:
    plt.close("all")
    out = tmp_path_factory.mktemp("drift") / "report"
    index = render(
        report,
        *frames,
        out,
        subtitle="window 2024-05-01..2024-05-08 · champion v3 <b>",
        score_reference=scores[0],
        score_current=scores[1],
    )
    return index, index.read_text(encoding="utf-8")


class TestPage:
    def test_index_is_written_in_out_dir(self, rendered: tuple[Path, str]) -> None:
        index, page = rendered
        assert index.name == "index.html" and index.is_file()
        assert page.startswith("<!doctype html>")
        assert "<style>" in page

    def test_self_contained(self, rendered: tuple[Path, str]) -> None:
        _, page = rendered
        assert "<script" not in page.lower()
        assert "http://" not in page and "https://" not in page
        assert all("/" not in src for src in img_sources(page)), "plots are referenced next to the page"

    def test_title_subtitle_verdict_and_reasons(self, rendered: tuple[Path, str], report: DriftReport) -> None:
        _, page = rendered
        assert report.verdict == "drift"
        assert "<title>Drift of &lt;tiny&gt;</title>" in page
        assert "champion v3 &lt;b&gt;" in page
        assert '<span class="badge act verdict">drift</span>' in page
        assert report.reasons
        for reason in report.reasons:
            assert f"<li>{escape(reason)}</li>" in page
        assert str(escape("share of features at 'act'")) in page

    def test_thresholds_are_listed(self, rendered: tuple[Path, str], report: DriftReport) -> None:
        _, page = rendered
        t = report.thresholds
        for name in ("psi_warn", "psi_act", "js_act", "ks_pvalue", "ks_statistic", "drifted_share_act", "min_sample"):
            assert f'<code>{name}</code><td class="num">{getattr(t, name)}<' in page

    def test_every_feature_row_with_its_figures(self, rendered: tuple[Path, str], report: DriftReport) -> None:
        _, page = rendered
        table = page[page.index("<h2>Features</h2>") : page.index("<h2>Thresholds</h2>")]
        rows = re.findall(r"<tr(?: class=\"score\")?><td>(.*?)</tr>", table)
        assert len(rows) == len(report.features) + 1
        for row in report.features:
            (cells,) = [r for r in rows if f">{escape(row.feature)}</a>" in r]
            assert f"<td>{row.kind}<td" in cells
            assert f'<td class="num">{row.n_ref:,}<td class="num">{row.n_cur:,}' in cells
            assert f'<span class="badge {row.status}">{row.status}</span>' in cells
            if row.kind == "numeric":
                assert f"PSI {row.psi:.3f}" in cells
                assert f'<td class="num">{row.ks_statistic:.3f}<td class="num">{row.ks_pvalue:.2g}' in cells
            else:
                assert f"JS {row.js:.3f}" in cells
                assert f"<td>{row.unseen} ({row.unseen_share:.1%})" in cells
        (score_cells,) = [r for r in rows if ">score</a>" in r]
        assert report.score is not None
        assert f"PSI {report.score.psi:.3f}" in score_cells

    def test_statuses_and_unseen_category(self, rendered: tuple[Path, str], report: DriftReport) -> None:
        _, page = rendered
        assert report.feature("shifted").status == "act"
        assert report.feature("stable").status == "ok"
        city = report.feature("city")
        assert city.status == "act" and city.unseen == 1
        assert '<span class="badge act">act</span>' in page and '<span class="badge ok">ok</span>' in page
        assert f"{city.unseen_share:.1%}" in page
        assert "&lt;i&gt;Atlantis&lt;/i&gt;" in page

    def test_hostile_names_are_escaped(self, rendered: tuple[Path, str]) -> None:
        _, page = rendered
        assert HOSTILE not in page and "<i>Atlantis" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


class TestPlots:
    def test_one_real_png_per_feature_and_the_score(self, rendered: tuple[Path, str], report: DriftReport) -> None:
        index, page = rendered
        sources = img_sources(page)
        assert len(sources) == len(report.features) + 1
        assert len(set(sources)) == len(sources), "slug collisions ('a b' vs 'a_b') get distinct files"
        assert "score.png" in sources
        for src in sources:
            assert re.fullmatch(r"[a-z0-9_-]+\.png", src), f"unsafe file name {src!r}"
            assert_real_png(index.parent / src)
        assert sorted(p.name for p in index.parent.iterdir()) == sorted([*sources, "index.html"])

    def test_each_feature_links_to_its_plot(self, rendered: tuple[Path, str], report: DriftReport) -> None:
        _, page = rendered
        for row in report.features:
            anchor = re.search(rf'<a href="#([^"]+)">{re.escape(escape(row.feature))}</a>', page)
            assert anchor is not None, row.feature
            assert re.search(rf'<figure id="{anchor.group(1)}"><img src="[^"]+"', page)

    def test_no_figure_left_open(self, rendered: tuple[Path, str]) -> None:
        assert plt.get_fignums() == []

    def test_rendering_again_replaces_the_files(
        self, tmp_path: Path, frames: tuple[pd.DataFrame, pd.DataFrame], report: DriftReport
    ) -> None:
        first = render(report, *frames, tmp_path)
        second = render(report, *frames, tmp_path)
        assert first == second == tmp_path / "index.html"
        assert "score.png" not in img_sources(second.read_text(encoding="utf-8")), "no score samples, no score plot"
        assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


class TestInsufficientData:
    def test_small_window_renders_with_na_statuses(
        self, tmp_path: Path, frames: tuple[pd.DataFrame, pd.DataFrame]
    ) -> None:
        reference, current = frames
        small = current.iloc[:100]
        report = drift_report(reference, small, numeric=NUMERIC, categorical=CATEGORICAL)
        assert report.verdict == "insufficient_data"
        page = render(report, reference, small, tmp_path).read_text(encoding="utf-8")
        assert '<span class="badge na verdict">insufficient_data</span>' in page
        assert page.count('<span class="badge na">n/a</span>') == len(report.features)
        assert "current window has 100 rows &lt; min_sample 500" in page
        assert "no score drift computed" in page
        for src in img_sources(page):
            assert_real_png(tmp_path / src)
        assert plt.get_fignums() == []

    def test_empty_and_all_missing_samples_render(self, tmp_path: Path) -> None:
        reference = pd.DataFrame({"x": [np.nan] * 3, "c": [None] * 3})
        current = pd.DataFrame({"x": pd.Series([], dtype="float64"), "c": pd.Series([], dtype="object")})
        report = drift_report(reference, current, numeric=["x"], categorical=["c"])
        page = render(report, reference, current, tmp_path).read_text(encoding="utf-8")
        assert page.count("PSI n/a") == 1 and page.count("JS n/a") == 1
        assert len(img_sources(page)) == 2


class TestErrors:
    def test_missing_column_is_a_feature_error(self, tmp_path: Path, frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
        reference, current = frames
        report = drift_report(reference, current, numeric=["shifted"], categorical=[])
        with pytest.raises(FeatureError, match=r"'shifted'.*current frame"):
            render(report, reference, current.drop(columns="shifted"), tmp_path)

    def test_score_samples_must_match_the_report(
        self, tmp_path: Path, frames: tuple[pd.DataFrame, pd.DataFrame], report: DriftReport
    ) -> None:
        reference, current = frames
        with pytest.raises(ValueError, match="score_reference and score_current"):
            render(report, reference, current, tmp_path, score_reference=np.zeros(3))
        no_score = drift_report(reference, current, numeric=["shifted"], categorical=[])
        with pytest.raises(ValueError, match="no score row"):
            render(no_score, reference, current, tmp_path, score_reference=np.zeros(3), score_current=np.zeros(3))


class TestCost:
    def test_million_rows_seven_features_render_fast(self, tmp_path: Path) -> None:
        n = 1_000_000
        rng = np.random.default_rng(4)
        numeric, categorical = ["n0", "n1", "n2", "n3"], ["c0", "c1", "c2"]

        def frame(shift: float) -> pd.DataFrame:
            data: dict[str, Any] = {c: rng.normal(shift if c == "n0" else 0.0, 1.0, n) for c in numeric}
            data.update({c: CITIES[rng.integers(0, CITIES.size, n)] for c in categorical})
            return pd.DataFrame(data)

        reference, current = frame(0.0), frame(0.5)
        report = drift_report(reference, current, numeric=numeric, categorical=categorical)
        start = time.perf_counter()
        index = render(report, reference, current, tmp_path)
        elapsed = time.perf_counter() - start
        assert len(img_sources(index.read_text(encoding="utf-8"))) == 7
        assert elapsed < 10, f"rendering 7 features on 1M rows took {elapsed:.1f}s"
