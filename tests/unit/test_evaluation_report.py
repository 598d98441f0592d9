"""Tests of mlpipe.stages.evaluation_report: the page, its PNG plots per task, the verdict, slices, importance."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest

from mlpipe.spec import PipelineSpec, parse_spec
from mlpipe.stages.evaluation_report import permutation_importance_of, render_evaluation_report
from mlpipe.stages.metrics import compute_metrics
from mlpipe.stages.predict import predict
from mlpipe.stages.train import build_model
from unit.conftest import spec_dict, tiny_frame
from unit.test_train_evaluate_promote import TASK_SPECS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<script>alert(1)</script>"

PLOTS = {
    "binary": {"roc.png", "pr.png", "calibration.png", "confusion.png", "importance.png"},
    "multiclass": {"roc.png", "pr.png", "calibration.png", "confusion.png", "importance.png"},
    "regression": {"predicted_actual.png", "residuals.png", "importance.png"},
}
SLICES = [
    {"column": "cat", "value": "a", "rows": 40, "candidate": 0.71, "champion": 0.75, "worsening": 0.04, "judged": True,
     "passed": False},
    {"column": "cat", "value": HOSTILE, "rows": 3, "candidate": None, "champion": None, "worsening": None,
     "judged": False, "passed": True},
]  # fmt: skip


class Case:
    """A tiny fitted pipeline of one task: spec, candidates, a 'champion' and a holdout."""

    def __init__(self, task: str, n: int = 160) -> None:
        self.spec: PipelineSpec = parse_spec(spec_dict(**TASK_SPECS[task]), Path("tiny.yaml"))
        frame = tiny_frame(task, n, seed=1)
        X, y = frame[self.spec.features.columns], frame["y"]
        cut = int(n * 0.7)
        self.models = {c.name: build_model(self.spec, c).fit(X[:cut], y[:cut]) for c in self.spec.candidates}
        self.X, self.y = X[cut:].reset_index(drop=True), y[cut:].reset_index(drop=True)
        self.names = list(self.models)

    def verdict(self, **changes: Any) -> dict[str, Any]:
        scores = {n: compute_metrics(self.spec, m, self.X, self.y) for n, m in self.models.items()}
        verdict = {
            "pipeline": "tiny",
            "run_id": "manual__1",
            "blessed": False,
            "decision": "reject",
            "best_candidate": self.names[1],
            "primary_metric": self.spec.primary_metric,
            "candidates": scores,
            "champion_version": 4,
            "champion_status": "scored",
            "champion_metrics": scores[self.names[0]],
            "rules": [
                {"rule": "floor", "passed": True, "detail": f"met {HOSTILE}", "figures": {"value": 0.9, "floor": 0.5}},
                {"rule": "improvement", "passed": False, "detail": "gain -0.0100, needed > 0", "figures": {}},
            ],
            "reasons": ["gain -0.0100, needed > 0"],
            "holdout_rows": len(self.y),
        }  # fmt: skip
        verdict.update(changes)
        return verdict

    def render(self, out: Path, verdict: dict[str, Any] | None = None, *, champion: bool = True, **kwargs: Any) -> str:
        champion_model = self.models[self.names[0]] if champion else None
        index = render_evaluation_report(
            self.spec, verdict or self.verdict(), self.models, champion_model, self.X, self.y, out, title="T", **kwargs
        )
        assert index == out / "index.html"
        return index.read_text()


@pytest.fixture(scope="module", params=list(TASK_SPECS))
def rendered(request, tmp_path_factory) -> dict[str, Any]:
    case = Case(request.param)
    out = tmp_path_factory.mktemp(f"report-{request.param}")
    return {"task": request.param, "case": case, "out": out, "page": case.render(out, case.verdict(slices=SLICES))}


def img_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def assert_real_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100, f"{path.name} is tiny: {pixels.shape}"
    assert pixels.var() > 0, f"{path.name} is blank"


def test_every_plot_of_the_task_is_a_real_png_the_page_shows(rendered) -> None:
    out, page = rendered["out"], rendered["page"]
    files = {p.name for p in out.iterdir()}
    assert files == PLOTS[rendered["task"]] | {"index.html"}, "no temp file left, no plot missing"
    assert set(img_sources(page)) == PLOTS[rendered["task"]]
    for name in PLOTS[rendered["task"]]:
        assert_real_png(out / name)
    # The img size attributes are the PNG's own, so the page lays out before the images load.
    for name, width, height in re.findall(r'<img src="([^"]+)" alt="[^"]*" width="(\d+)" height="(\d+)"', page):
        assert matplotlib.image.imread(out / name).shape[:2] == (int(height), int(width)), name


def test_page_is_self_contained_and_escapes_data(rendered) -> None:
    page = rendered["page"]
    assert page.startswith("<!doctype html>") and "<style>" in page
    assert "<script" not in page.lower(), "no JavaScript, and data is escaped"
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "nothing fetched from elsewhere"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_page_lists_verdict_rules_metrics_slices_and_importance(rendered) -> None:
    page, case = rendered["page"], rendered["case"]
    assert "not blessed" in page and "reject" in page
    assert re.search(r"<code>floor</code>.*?pass.*?<code>improvement</code>.*?FAIL", page, re.S)
    assert "gain -0.0100, needed &gt; 0" in page
    primary = case.spec.primary_metric
    best_value = compute_metrics(case.spec, case.models[case.names[1]], case.X, case.y)[primary]
    assert f"{best_value:.4f}" in page and f"{case.names[1]} (best)" in page and "champion v4" in page
    assert re.search(r"<td>cat<td>a<td class=\"num\">40<td class=\"num\">0.7100<td class=\"num\">0.7500", page)
    assert re.search(r"0.0400<td><span class=\"badge act\">FAIL", page)
    assert "not judged" in page
    assert "Permutation importance" in page and f"worsening of {primary}" in page
    for column in case.spec.features.columns:
        assert f'<tr><td>{column}<td class="num">' in page


def test_without_slices_or_champion(tmp_path: Path) -> None:
    case = Case("binary")
    page = case.render(tmp_path / "a", case.verdict(champion_version=None, champion_metrics=None), champion=False)
    assert "Slices" not in page, "no slices key: the section is left out (the gate did not compute any)"
    assert "champion v" not in page and "none before this run" in page
    assert set(img_sources(page)) == PLOTS["binary"]

    page = case.render(tmp_path / "b", case.verdict(slices=[]))
    assert "No slice was judged" in page


def test_one_class_holdout_draws_what_it_can_and_says_why(tmp_path: Path) -> None:
    case = Case("binary")
    keep = case.y == case.y.iloc[0]
    case.X, case.y = case.X[keep].reset_index(drop=True), case.y[keep].reset_index(drop=True)
    page = case.render(tmp_path, case.verdict(candidates={n: {} for n in case.names}, champion_metrics=None))
    assert "holds one class only" in page
    assert set(img_sources(page)) == {"confusion.png"}, "importance needs a defined metric; AUC has none here"
    assert "permutation importance: the primary metric is undefined" in page


class CountingModel:
    """Wraps a fitted model and records how many rows each predict call sees."""

    def __init__(self, model: Any) -> None:
        self.model, self.rows = model, []
        self.classes_ = model.classes_

    def fit(self, X: Any, y: Any) -> CountingModel:  # permutation_importance checks for it; never called
        raise AssertionError("permutation importance must not refit")

    def predict_proba(self, X: Any) -> np.ndarray:
        self.rows.append(len(X))
        return self.model.predict_proba(X)


def test_permutation_importance_is_bounded_and_seeded() -> None:
    case = Case("binary", n=400)
    counting = CountingModel(case.models["hgb"])
    first = permutation_importance_of(case.spec, counting, case.X, case.y, rows=50, repeats=3)
    again = permutation_importance_of(case.spec, case.models["hgb"], case.X, case.y, rows=50, repeats=3)
    columns = case.spec.features.columns
    assert counting.rows == [50] + [50 * 3] * len(columns), "one unshuffled pass, then one per column (3 shuffles)"
    assert first.frame.equals(again.frame), "same seed, same figures"
    assert (first.rows, first.repeats, first.note) == (50, 3, "")
    frame = first.frame
    assert list(frame.index) == sorted(frame.index, key=lambda c: -frame.loc[c, "mean"])
    assert frame.loc["num", "mean"] > 0, "the column the label depends on matters"

    # Given the model's predictions on the holdout, the unshuffled figure costs no pass: same result.
    counting.rows.clear()
    stored = permutation_importance_of(
        case.spec, counting, case.X, case.y, rows=50, repeats=3, baseline=predict(case.spec, case.models["hgb"], case.X)
    )
    assert counting.rows == [50 * 3] * len(columns)
    assert stored.frame.equals(first.frame)


def test_permutation_importance_fits_its_budget_or_says_it_was_cut(tmp_path: Path) -> None:
    case = Case("binary", n=1400)
    model, columns, h = case.models["hgb"], case.spec.features.columns, len(case.X)
    slow = 0.02 * h  # a model this slow (20 ms a row): 5 shuffles of every column would take ~2 min
    full = len(columns) * 5 * h * 0.02

    def importance(budget: float) -> Any:
        return permutation_importance_of(
            case.spec, model, case.X, case.y, rows=2000, repeats=5, holdout_seconds=slow, budget=budget
        )

    fewer = importance(full * 0.7)
    assert (fewer.rows, fewer.repeats) == (h, 3), "fewer shuffles first"
    assert f"reduced from {h} rows and 5 shuffles" in fewer.note and fewer.frame is not None
    smaller = importance(full * 0.5)
    assert smaller.repeats == 3 and 200 <= smaller.rows < h and smaller.frame is not None, "then fewer rows"
    assert len(columns) * smaller.rows * smaller.repeats * 0.02 <= full * 0.5 * 1.1, "(less the one-row call it timed)"
    skipped = importance(0.2)
    assert skipped.frame is None and skipped.note.startswith("skipped: it would take about")

    page = case.render(tmp_path, deadline=time.perf_counter() - 1)
    assert "importance.png" not in img_sources(page), "no time left: not drawn"
    assert "Not drawn: permutation importance: skipped" in page
