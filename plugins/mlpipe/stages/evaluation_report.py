"""The evaluation report of a training run: a static HTML page with its PNG plots next to it.

:func:`render_evaluation_report` draws, from the run's holdout and the fitted models, what a reviewer
needs to see why a model was or was not promoted: the verdict with every rule and its figures, the
candidates against the champion, per-slice figures when the verdict has them, and plots:

* classification: ROC and precision-recall curves (every candidate and the champion; one curve per
  class of the best candidate for multiclass), calibration (best candidate and champion) and the
  best candidate's confusion matrix;
* regression: predicted against actual values and the residuals of the best candidate and champion;
* every task: permutation importance of the raw input columns for the best candidate (a one-hot
  encoded or categorical column counts once, as the user's input), on a bounded, seeded sample of
  the holdout, in units of the primary metric.

Every plot is drawn from the predictions the evaluation made once per model
(:class:`~mlpipe.stages.metrics.HoldoutPredictions`); the only model calls here are permutation
importance's, one per input column on all its shuffles at once, sized to what the evaluation's
budget leaves (fewer rows, fewer shuffles, or skipped, and the page says so).

The page follows the drift report (:mod:`mlpipe.stages.html_page`): inline CSS, no JavaScript, PNGs
drawn on Agg canvases, the page written last and atomically. This module computes the figures and
tables; the template ``templates/reports/evaluation.html`` (its sections in ``_evaluation.html``)
lays them out, autoescaped.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlpipe.spec import PipelineSpec
from mlpipe.stages.html_page import fmt, new_figure, plot_item, render_page, report_template, save_figure, write_index
from mlpipe.stages.metrics import HoldoutPredictions, metric_value, predict_holdout
from mlpipe.stages.predict import Predictions, predict
from mlpipe.storage import ArtifactStore

if TYPE_CHECKING:
    from matplotlib.axes import Axes

CURVE_SIZE = (5.0, 3.8)
IMPORTANCE_ROWS = 2_000
IMPORTANCE_REPEATS = 5
# When the budget is short: fewer shuffles first (down to this), then fewer rows (down to this), then skipped.
IMPORTANCE_MIN_REPEATS = 3
IMPORTANCE_MIN_ROWS = 200
# Permutation importance may take this share of what the evaluation's budget leaves when it starts
# (its estimate can be off on a busy machine; the rest is the margin), less the seconds kept for
# drawing its figure and writing the page.
IMPORTANCE_SHARE = 0.75
REPORT_RESERVE = 1.0
SCATTER_POINTS = 5_000
MAX_CLASSES_SHOWN = 12
CALIBRATION_BINS = 10
CHAMPION_STYLE = {"color": "#555555", "linestyle": "--"}

log = logging.getLogger(__name__)

# File name, alt text and caption of each plot the page may show, in page order.
PLOT_TEXT = {
    "roc.png": ("ROC curves", "ROC curve: true-positive rate against false-positive rate as the threshold moves"),
    "pr.png": ("precision-recall curves", "precision against recall as the threshold moves"),
    "calibration.png": (
        "calibration",
        "mean predicted probability against the observed share of positives, per quantile bin of the score",
    ),
    "confusion.png": (
        "confusion matrix",
        "best candidate: holdout rows per actual (rows) and predicted (columns) label",
    ),
    "predicted_actual.png": ("predicted against actual", "each point a holdout row; on the diagonal, exact"),
    "residuals.png": ("residuals", "actual minus predicted, against the prediction; and their distribution"),
    "gain.png": (
        "best candidate against the champion",
        "the best candidate's gain over the champion per metric (positive = better) with its paired bootstrap "
        "interval as whiskers; red ticks: where the gate's threshold lies (min_improvement, minus a tolerance)",
    ),
    "slices.png": (
        "slices against the champion",
        "each judged slice's worsening against the champion (positive = worse) with its paired bootstrap interval "
        "as whiskers; red ticks: the slice tolerance (a slice fails when its whole interval lies beyond it)",
    ),
    "importance.png": (
        "permutation importance",
        "how much the primary metric worsens when one input column is shuffled (best candidate)",
    ),
}


@dataclass(frozen=True)
class Curve:
    """One model's predictions on the holdout, labelled for the legends."""

    label: str
    predictions: Predictions
    champion: bool = False


@dataclass(frozen=True)
class Importance:
    """Permutation importance of the best candidate's input columns, and how it was measured.

    ``frame`` (index: input column; ``mean``, ``std`` over shuffles; most important first) is None
    when importance was not measured: ``note`` says why (undefined metric, no time left).
    ``note`` also says when the sample or the shuffles were reduced, or columns left out, to keep
    to the budget.
    """

    frame: pd.DataFrame | None
    rows: int
    holdout_rows: int
    repeats: int
    note: str = ""


def render_evaluation_report(
    spec: PipelineSpec,
    verdict: dict[str, Any],
    models: dict[str, Any],
    champion_model: Any | None,
    X: pd.DataFrame,
    y: pd.Series,
    out_dir: Path,
    *,
    title: str,
    subtitle: str = "",
    importance_rows: int = IMPORTANCE_ROWS,
    importance_repeats: int = IMPORTANCE_REPEATS,
    predictions: HoldoutPredictions | None = None,
    deadline: float | None = None,
) -> Path:
    """Write ``out_dir/index.html`` and its PNG plots for one run's verdict; return the index's path.

    ``verdict`` is the verdict as a dict (:meth:`~mlpipe.contracts.Verdict.to_xcom`; a
    ``slices`` list is shown when present), ``models`` the fitted candidates by name, and
    ``champion_model`` the champion when it could be loaded. ``X``/``y`` are the holdout every one
    of them was scored on, and ``predictions`` their predictions on it (made here when not given).
    ``deadline`` (a :func:`time.perf_counter` value) bounds permutation importance, which runs last.
    Plots a model cannot have (calibration without probabilities, curves on a holdout with one
    class) are left out with a note saying why.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if predictions is None:
        predictions = predict_holdout(spec, models, champion_model, X, y)
    best = verdict.get("best_candidate")
    by_name = {
        name: Curve(f"{name} (best)" if name == best else name, answer)
        for name, answer in predictions.candidates.items()
    }
    curves = list(by_name.values())
    if predictions.champion is not None:
        label = f"champion v{verdict.get('champion_version')}"
        curves.append(Curve(label, predictions.champion, champion=True))
    best_curve = by_name.get(best) if best is not None else None
    y_values = np.asarray(y)

    plots: dict[str, tuple[float, float]] = {}
    notes: list[str] = []
    figures: list[tuple[str, Any]] = []
    if spec.target.task == "regression":
        if best_curve is not None:
            shown = [best_curve, *(c for c in curves if c.champion)]
            figures += [("predicted_actual.png", _predicted_actual(shown, y_values, spec.split.seed))]
            figures += [("residuals.png", _residuals(shown, y_values, spec.split.seed))]
    elif best_curve is not None:
        figures += _classification_figures(spec, curves, best_curve, y_values, notes)
    figures += interval_figures(spec, verdict)
    for file, figure in figures:
        width, height = figure.get_size_inches()
        save_figure(figure, out_dir / file)
        plots[file] = (float(width), float(height))
    importance = None
    if best is not None and best in models:
        step = time.perf_counter()
        importance = permutation_importance_of(
            spec,
            models[best],
            X,
            y,
            importance_rows,
            importance_repeats,
            baseline=predictions.candidates.get(best),
            holdout_seconds=predictions.seconds.get(best),
            budget=None if deadline is None else IMPORTANCE_SHARE * (deadline - step) - REPORT_RESERVE,
        )
        log.info(
            "Evaluate: permutation importance of %s on %s rows x %d shuffles in %.2f s%s",
            best,
            f"{importance.rows:,}",
            importance.repeats,
            time.perf_counter() - step,
            f" ({importance.note})" if importance.note else "",
        )
        if importance.frame is not None:
            figure = _importance_figure(importance.frame, spec.primary_metric)
            width, height = figure.get_size_inches()
            save_figure(figure, out_dir / "importance.png")
            plots["importance.png"] = (float(width), float(height))
        else:
            notes.append(f"permutation importance: {importance.note}")

    text = render_page(
        "evaluation.html",
        title=title,
        subtitle=subtitle,
        verdict=_verdict(verdict),
        metrics=_metrics_table(spec, verdict, models),
        slices=_slice_rows(verdict.get("slices")),
        importance=_importance(importance, spec.primary_metric),
        holdout=_holdout_text(spec, y_values),
        plots=[
            plot_item(f, alt=alt, caption=caption, figsize=plots[f])
            for f, (alt, caption) in PLOT_TEXT.items()
            if f in plots
        ],
        notes=notes,
    )
    return write_index(out_dir, text)


def save_evaluation_report(
    store: ArtifactStore,
    spec: PipelineSpec,
    verdict: dict[str, Any],
    models: dict[str, Any],
    champion_model: Any | None,
    X: pd.DataFrame,
    y: pd.Series,
    *,
    prefix: str,
    predictions: HoldoutPredictions | None = None,
    deadline: float | None = None,
) -> str:
    """Render the run's evaluation report and keep it under ``prefix``; return the page's URI.

    ``verdict`` is the verdict as a dict (:meth:`~mlpipe.contracts.Verdict.to_xcom`).
    ``predictions`` and ``deadline``: see :func:`render_evaluation_report`.
    """
    about = f"{spec.target.task}, target {spec.target.column}, primary metric {spec.primary_metric}"
    with tempfile.TemporaryDirectory(prefix="mlpipe-report-") as tmp:
        index = render_evaluation_report(
            spec,
            verdict,
            models,
            champion_model,
            X,
            y,
            Path(tmp),
            title=f"{spec.name}: evaluation of run {verdict['run_id']}",
            subtitle=f"{about}: {verdict['holdout_rows']:,} holdout rows",
            predictions=predictions,
            deadline=deadline,
        )
        store.put_tree(prefix, index.parent)
    return store.uri(f"{prefix}/{index.name}")


# --- figures ------------------------------------------------------------------------------------


def _classification_figures(
    spec: PipelineSpec, curves: list[Curve], best: Curve, y: np.ndarray, notes: list[str]
) -> list[tuple[str, Any]]:
    from sklearn.metrics import confusion_matrix

    out: list[tuple[str, Any]] = []
    classes = best.predictions.classes or []
    present = set(pd.unique(y).tolist())
    if spec.target.task == "binary":
        positive = best.predictions.positive
        y_bin = (y == positive).astype(int)
        if y_bin.min() == y_bin.max():
            notes.append("ROC, precision-recall and calibration: the holdout holds one class only")
        else:
            out.append(("roc.png", _roc_figure([(c.label, y_bin, c.predictions.score, c.champion) for c in curves])))
            prevalence = float(y_bin.mean())
            pr = [(c.label, y_bin, c.predictions.score, c.champion) for c in curves]
            out.append(("pr.png", _pr_figure(pr, prevalence, f"positive class {positive!r}")))
            calibrated = [c for c in curves if c.predictions.proba is not None]
            if calibrated:
                pairs = [(c.label, y_bin, c.predictions.score, c.champion) for c in calibrated]
                out.append(("calibration.png", _calibration_figure(pairs, "P(positive)")))
            else:
                notes.append("calibration: no model gives probabilities")
    else:
        proba = best.predictions.proba
        shown = [k for k in classes if k in present][:MAX_CLASSES_SHOWN]
        if proba is None or len(present) < 2:
            notes.append("ROC, precision-recall and calibration: need class probabilities and two classes present")
        else:
            per_class = [
                (f"{k} vs rest", (y == k).astype(int), proba[:, classes.index(k)], False)
                for k in shown
                if 0 < (y == k).sum() < len(y)
            ]
            out.append(("roc.png", _roc_figure(per_class, title=f"{best.label}: one vs rest")))
            out.append(("pr.png", _pr_figure(per_class, None, f"{best.label}: one vs rest")))
            # Top-label calibration: the predicted class's probability against how often it is right.
            pairs = [
                (c.label, (c.predictions.prediction == y).astype(int), c.predictions.score, c.champion)
                for c in curves
                if c.predictions.proba is not None
            ]
            out.append(("calibration.png", _calibration_figure(pairs, "probability of the predicted class")))
    labels = [k for k in classes if k in present or k in set(best.predictions.prediction.tolist())]
    labels = labels[:MAX_CLASSES_SHOWN] if len(labels) > MAX_CLASSES_SHOWN else labels
    matrix = confusion_matrix(y, best.predictions.prediction, labels=labels)
    out.append(("confusion.png", _confusion_figure(matrix, labels, best.label)))
    return out


def _curve_axes(figsize: tuple[float, float] = CURVE_SIZE) -> tuple[Any, Axes]:
    figure = new_figure(figsize)
    return figure, figure.add_subplot()


def _style(champion: bool) -> dict[str, Any]:
    return dict(CHAMPION_STYLE) if champion else {}


def _finish(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False, loc="best")


def _roc_figure(series: Sequence[tuple[str, np.ndarray, np.ndarray, bool]], title: str = "ROC") -> Any:
    from sklearn.metrics import roc_auc_score, roc_curve

    figure, ax = _curve_axes()
    for label, truth, score, champion in series:
        fpr, tpr, _ = roc_curve(truth, score)
        ax.plot(fpr, tpr, linewidth=1.4, label=f"{label} (AUC {roc_auc_score(truth, score):.3f})", **_style(champion))
    ax.plot([0, 1], [0, 1], color="#bbbbbb", linewidth=0.8, linestyle=":")
    _finish(ax, title, "false-positive rate", "true-positive rate")
    return figure


def _pr_figure(series: Sequence[tuple[str, np.ndarray, np.ndarray, bool]], prevalence: float | None, title: str) -> Any:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    figure, ax = _curve_axes()
    for label, truth, score, champion in series:
        precision, recall, _ = precision_recall_curve(truth, score, drop_intermediate=True)
        ap = average_precision_score(truth, score)
        ax.plot(recall, precision, linewidth=1.4, label=f"{label} (AP {ap:.3f})", **_style(champion))
    if prevalence is not None:
        ax.axhline(prevalence, color="#bbbbbb", linewidth=0.8, linestyle=":", label=f"base rate {prevalence:.3f}")
    ax.set_ylim(0, 1.02)
    _finish(ax, f"precision-recall, {title}", "recall", "precision")
    return figure


def _calibration_figure(series: Sequence[tuple[str, np.ndarray, np.ndarray, bool]], what: str) -> Any:
    figure, ax = _curve_axes()
    for label, truth, score, champion in series:
        mean_score, observed = _calibration_bins(truth, score)
        ax.plot(mean_score, observed, marker="o", markersize=3, linewidth=1.2, label=label, **_style(champion))
    ax.plot([0, 1], [0, 1], color="#bbbbbb", linewidth=0.8, linestyle=":", label="perfectly calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    _finish(ax, f"calibration of {what}", f"mean {what} (quantile bins)", "observed share")
    return figure


def _calibration_bins(truth: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean score and observed share per quantile bin of the score (bins of equal row counts)."""
    order = np.argsort(score, kind="stable")
    bins = [b for b in np.array_split(order, min(CALIBRATION_BINS, len(order))) if b.size]
    return np.array([score[b].mean() for b in bins]), np.array([truth[b].mean() for b in bins])


def _confusion_figure(matrix: np.ndarray, labels: list[Any], who: str) -> Any:
    size = max(3.2, min(6.0, 1.2 + 0.45 * len(labels)))
    figure = new_figure((size + 0.8, size))
    ax = figure.add_subplot()
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype="float64"), where=totals > 0)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            colour = "white" if shares[i, j] > 0.6 else "#222222"
            ax.text(j, i, f"{matrix[i, j]:,}\n{shares[i, j]:.0%}", ha="center", va="center", fontsize=7, color=colour)
    names = [str(k) for k in labels]
    ax.set_xticks(range(len(names)), names, fontsize=7, rotation=30, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("actual", fontsize=8)
    ax.set_title(f"confusion matrix, {who} (share of each actual row)", fontsize=9)
    return figure


def _scatter_sample(n: int, seed: int) -> np.ndarray:
    if n <= SCATTER_POINTS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=SCATTER_POINTS, replace=False))


def _predicted_actual(curves: Sequence[Curve], y: np.ndarray, seed: int) -> Any:
    figure, ax = _curve_axes()
    rows = _scatter_sample(len(y), seed)
    for curve in curves:
        colour = CHAMPION_STYLE["color"] if curve.champion else None
        ax.scatter(y[rows], curve.predictions.prediction[rows], s=6, alpha=0.5, color=colour, label=curve.label)
    low = float(min(y.min(), *(c.predictions.prediction.min() for c in curves)))
    high = float(max(y.max(), *(c.predictions.prediction.max() for c in curves)))
    ax.plot([low, high], [low, high], color="#bbbbbb", linewidth=0.8, linestyle=":", label="exact")
    shown = f" ({len(rows):,} of {len(y):,} rows)" if len(rows) < len(y) else ""
    _finish(ax, f"predicted against actual{shown}", "actual", "predicted")
    return figure


def _residuals(curves: Sequence[Curve], y: np.ndarray, seed: int) -> Any:
    figure = new_figure((7.0, 3.0))
    scatter, hist = figure.subplots(1, 2, width_ratios=[3, 2])
    rows = _scatter_sample(len(y), seed)
    residuals = [y - curve.predictions.prediction for curve in curves]
    edges = np.histogram_bin_edges(np.concatenate(residuals), bins=30)  # one set of bins: comparable bars
    for curve, residual in zip(curves, residuals, strict=True):
        colour = CHAMPION_STYLE["color"] if curve.champion else None
        scatter.scatter(curve.predictions.prediction[rows], residual[rows], s=6, alpha=0.5, color=colour)
        hist.hist(residual, bins=edges, alpha=0.55, color=colour, label=curve.label)
    scatter.axhline(0, color="#bbbbbb", linewidth=0.8, linestyle=":")
    scatter.set_xlabel("predicted", fontsize=8)
    scatter.set_ylabel("actual - predicted", fontsize=8)
    scatter.tick_params(labelsize=7)
    scatter.grid(alpha=0.3)
    scatter.set_title("residual against prediction", fontsize=9)
    _finish(hist, "distribution of residuals", "actual - predicted", "rows")
    return figure


def _importance_figure(importance: pd.DataFrame, metric: str) -> Any:
    figure = new_figure((6.0, max(2.2, 0.9 + 0.28 * len(importance))))
    ax = figure.add_subplot()
    ordered = importance.iloc[::-1]
    ax.barh(ordered.index.astype(str), ordered["mean"], xerr=ordered["std"], color="#4c72b0", capsize=2)
    ax.axvline(0, color="#888888", linewidth=0.8)
    ax.set_xlabel(f"worsening of {metric} when shuffled", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("permutation importance (best candidate)", fontsize=9)
    return figure


def permutation_importance_of(
    spec: PipelineSpec,
    model: Any,
    X: pd.DataFrame,
    y: pd.Series,
    rows: int,
    repeats: int,
    *,
    baseline: Predictions | None = None,
    holdout_seconds: float | None = None,
    budget: float | None = None,
) -> Importance:
    """Mean and standard deviation, over ``repeats`` seeded shuffles, of how much the primary metric
    worsens when one raw input column is shuffled, on at most ``rows`` seeded holdout rows.

    Positive means the model relies on the column. The columns are the model's raw inputs, so a
    column it one-hot encodes is shuffled (and reported) as one. The model predicts once per column,
    on all of its shuffles at once; the unshuffled figure comes from ``baseline`` (the model's
    predictions on every row of ``X``) when given. With a ``budget`` (seconds) and
    ``holdout_seconds`` (the time the model took to predict every row of ``X``), the cost of one
    column is priced as a call's fixed cost (timed on one row) plus the rest of that pass per row,
    and fewer shuffles (down to ``IMPORTANCE_MIN_REPEATS``), then fewer rows (down to
    ``IMPORTANCE_MIN_ROWS``) are used to fit the budget, or none when even that would not fit;
    columns not reached if the budget still runs out are left out. The note says what was cut.
    """
    from sklearn.exceptions import UndefinedMetricWarning

    metric = spec.primary_metric
    sign = 1.0 if spec.direction(metric) == "maximize" else -1.0
    columns = list(X.columns)
    n = min(rows, len(X))
    r = repeats
    notes: list[str] = []
    if budget is not None and holdout_seconds is not None:
        started = time.perf_counter()
        predict(spec, model, X.iloc[:1])
        per_call = time.perf_counter() - started
        per_row = max(holdout_seconds - per_call, 0.0) / max(len(X), 1)
        budget -= per_call

        def cost(n_: int, r_: int) -> float:
            return len(columns) * (per_call + r_ * n_ * per_row)

        while r > min(IMPORTANCE_MIN_REPEATS, repeats) and cost(n, r) > budget:
            r -= 1
        if cost(n, r) > budget:
            room = budget / len(columns) - per_call
            n = int(room / (r * per_row)) if room > 0 and per_row > 0 else (0 if room <= 0 else n)
        if n < min(IMPORTANCE_MIN_ROWS, len(X)):
            why = (
                f"skipped: it would take about {cost(min(rows, len(X)), repeats):.1f} s, more than the "
                f"{max(budget, 0.0):.1f} s the evaluation budget leaves"
            )
            return Importance(None, 0, len(X), 0, why)
        if (n, r) != (min(rows, len(X)), repeats):
            notes.append(
                f"reduced from {min(rows, len(X)):,} rows and {repeats} shuffles to fit the evaluation budget "
                f"({max(budget, 0.0):.1f} s left)"
            )
    rng = np.random.default_rng(spec.split.seed)
    sample = np.sort(rng.choice(len(X), size=n, replace=False)) if n < len(X) else np.arange(len(X))
    y_all = np.asarray(y)
    with warnings.catch_warnings():
        # An undefined metric (one class in the sample) is reported below as "no importance", once.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        if baseline is not None:
            base = metric_value(spec, metric, y_all, baseline, sample)
        else:
            base = metric_value(spec, metric, y_all[sample], predict(spec, model, X.iloc[sample]))
        if not np.isfinite(base):
            return Importance(None, n, len(X), r, "the primary metric is undefined on the sample")
        rows_x = X.iloc[sample].reset_index(drop=True)
        batch = pd.concat([rows_x] * r, ignore_index=True)
        y_batch = np.tile(y_all[sample], r)
        blocks = [np.arange(k * n, (k + 1) * n) for k in range(r)]
        means, stds, done = [], [], []
        started = time.perf_counter()
        for i, column in enumerate(columns):
            spent = time.perf_counter() - started
            if budget is not None and i and spent + spent / i > budget:
                notes.append(f"{len(columns) - i} column(s) not measured, the budget ran out: {columns[i:]}")
                break
            original = batch[column]
            shuffled = [rows_x[column].iloc[rng.permutation(n)] for _ in range(r)]
            batch[column] = pd.concat(shuffled, ignore_index=True)
            answer = predict(spec, model, batch)
            batch[column] = original
            drops = np.array([sign * (base - metric_value(spec, metric, y_batch, answer, b)) for b in blocks])
            if not np.isfinite(drops).all():
                return Importance(None, n, len(X), r, "the primary metric is undefined on the sample")
            means.append(drops.mean())
            stds.append(drops.std())
            done.append(column)
    frame = pd.DataFrame({"mean": means, "std": stds}, index=done)
    return Importance(frame.sort_values("mean", ascending=False), n, len(X), r, "; ".join(notes))


# --- the page's tables (laid out by templates/reports/evaluation.html) ------------------------------


def _verdict(verdict: dict[str, Any]) -> dict[str, Any]:
    """The verdict's head line and its rules, each rule's figures as one text."""
    rules = [
        {
            "rule": rule.get("rule"),
            "passed": bool(rule.get("passed")),
            "detail": rule.get("detail"),
            "figures": ", ".join(f"{k} {_number(v)}" for k, v in (rule.get("figures") or {}).items()),
        }
        for rule in verdict.get("rules", [])
    ]
    return {
        "state": "blessed" if verdict.get("blessed") else "not blessed",
        "decision": verdict.get("decision"),
        "best": verdict.get("best_candidate"),
        "champion": _champion_text(verdict),
        "rules": rules,
    }


def _champion_text(verdict: dict[str, Any]) -> str:
    version, status = verdict.get("champion_version"), verdict.get("champion_status")
    if version is None:
        return "none before this run"
    return f"v{version} ({'scored on this holdout' if status == 'scored' else 'could not be scored'})"


def _number(value: Any) -> str:
    """A rule's figure as text: numbers to 4 significant digits, lists (a slice rule's worst slices) item by item."""
    if isinstance(value, list):
        return "[" + "; ".join(_number(v) for v in value) + "]"
    if isinstance(value, dict):
        return " ".join(f"{k} {_number(v)}" for k, v in value.items())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return json.dumps(value) if not isinstance(value, str) else value
    return fmt(float(value), ".4g")


def _metrics_table(spec: PipelineSpec, verdict: dict[str, Any], models: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every metric of the candidates and the champion (primary first), the best's gain with its interval
    when the gate has a confidence, and each candidate's tuning when one was searched."""
    candidates: dict[str, dict[str, Any]] = verdict.get("candidates") or {}
    champion = verdict.get("champion_metrics")
    best = verdict.get("best_candidate")
    metrics = [verdict.get("primary_metric") or spec.primary_metric]
    for values in candidates.values():
        metrics += [m for m in values if m not in metrics]
    columns = [f"{name} (best)" if name == best else name for name in candidates]
    if champion:
        columns.append(f"champion v{verdict.get('champion_version')}")
    intervals = (verdict.get("uncertainty") or {}).get("metrics") or {}
    if intervals:
        columns.append(f"gain of the best ({verdict['uncertainty']['confidence']:.0%} interval)")
    rows = []
    for metric in metrics:
        cells = [_value(scores.get(metric)) for scores in candidates.values()]
        if champion:
            cells.append(_value(champion.get(metric)))
        if intervals:
            cells.append(_interval_text(intervals.get(metric) or {}, "gain", "low", "high"))
        rows.append(
            {
                "metric": metric,
                "primary": metric == metrics[0],
                "better": "↑ higher" if spec.direction(metric) == "maximize" else "↓ lower",
                "cells": cells,
            }
        )
    searches = {name: getattr((models or {}).get(name), "mlpipe_search_", None) for name in candidates}
    tuned = any(searches.values())
    return {
        "columns": columns,
        "rows": rows,
        "tuning": [_search_text(s) for s in searches.values()] if tuned else None,
        "tuning_blanks": int(bool(champion)) + int(bool(intervals)),
    }


def _metrics_section(spec: PipelineSpec, verdict: dict[str, Any], models: dict[str, Any] | None = None) -> str:
    """The page's section of :func:`_metrics_table`, as HTML."""
    return str(report_template("_evaluation.html").module.metrics_section(_metrics_table(spec, verdict, models)))


def _search_text(search: dict[str, Any] | None) -> str | None:
    """A candidate's search in one cell: the setting it chose, its cross-validated score, its cost (None: fixed)."""
    if not search:
        return None
    best = ", ".join(f"{k}={_number(v)}" for k, v in search["best_params"].items())
    return (
        f"{search['method']}: {best}; {search['metric']} {fmt(float(search['best_metric']), '.4f')} "
        f"over {search['cv']} ({search['n_fits']} fits"
        + (f", {fmt(float(search['search_seconds']), '.1f')} s)" if "search_seconds" in search else ")")
    )


def _value(value: Any) -> str:
    return fmt(float(value), ".4f") if isinstance(value, (int, float)) else "n/a"


def interval_figures(spec: PipelineSpec, verdict: dict[str, Any]) -> list[tuple[str, Any]]:
    """With ``gate.confidence``: the gains over the champion and the slices' worsening, each with its whiskers."""
    uncertainty = verdict.get("uncertainty")
    if not uncertainty:
        return []
    rules = {r.get("rule"): r for r in verdict.get("rules", [])}
    rows = []
    for metric, i in uncertainty["metrics"].items():
        if metric == verdict.get("primary_metric"):
            threshold = spec.gate.min_improvement
        else:
            tolerance = (rules.get(f"regression:{metric}") or {}).get("figures", {}).get("tolerance")
            threshold = -tolerance if tolerance is not None else None
        rows.append((metric, i["gain"], i["low"], i["high"], threshold))
    level = f"{uncertainty['confidence']:.0%}"
    out = [("gain.png", _whiskers(rows, f"gain over the champion ({level} interval)", "candidate - champion"))]
    tolerances = {s.column: s.max_regression for s in spec.gate.slices}
    judged = [s for s in verdict.get("slices") or [] if s.get("worsening_low") is not None]
    if judged:
        rows = [
            (
                f"{s['column']}={s['value']}",
                s["worsening"],
                s["worsening_low"],
                s["worsening_high"],
                tolerances.get(s["column"]),
            )
            for s in judged
        ]
        out.append(("slices.png", _whiskers(rows, f"slice worsening ({level} interval)", "champion - candidate")))
    return out


def _whiskers(rows: list[tuple[str, float, float, float, float | None]], title: str, xlabel: str) -> Any:
    """One row per (label, value, low, high, threshold): a point with its interval, and a red threshold tick."""
    fig = new_figure((6.0, 1.2 + 0.3 * len(rows)))
    ax = fig.add_subplot()
    ys = np.arange(len(rows))[::-1]
    values = np.array([r[1] for r in rows], dtype=float)
    spans = np.array([[r[1] - r[2], r[3] - r[1]] for r in rows], dtype=float).T
    ax.errorbar(values, ys, xerr=np.clip(spans, 0, None), fmt="o", color="#1f77b4", capsize=3, markersize=4)
    for y_at, row in zip(ys, rows, strict=True):
        if row[4] is not None:
            ax.plot([row[4], row[4]], [y_at - 0.35, y_at + 0.35], color="#c62828", linewidth=2)
    ax.axvline(0.0, color="#555555", linewidth=0.8)
    ax.set_yticks(ys, [r[0] for r in rows], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    return fig


def _interval_text(item: dict[str, Any], value: str, low: str, high: str) -> str:
    """A figure with its interval, ``+0.0123 [-0.0040, +0.0290]``, when the item has one."""
    if item.get(low) is None:
        return _value(item.get(value))
    return f"{item[value]:+.4f} [{item[low]:+.4f}, {item[high]:+.4f}]"


def _slice_rows(slices: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """One row per slice the gate looked at; None when the gate computed no slices (no section)."""
    if slices is None:
        return None
    rows = []
    for s in slices:
        judged = bool(s.get("judged"))
        numbers = [f"{int(s.get('rows') or 0):,}", *(_value(s.get(k)) for k in ("candidate", "champion"))]
        numbers.append(_interval_text(s, "worsening", "worsening_low", "worsening_high"))
        rows.append(
            {
                "column": s.get("column"),
                "value": s.get("value"),
                "numbers": numbers,
                "state": ("pass" if s.get("passed") else "FAIL") if judged else "not judged",
                "metric": s.get("metric") or "",
                "note": s.get("note") or "",
            }
        )
    return rows


def _importance(importance: Importance | None, metric: str) -> dict[str, Any] | None:
    """The importance table and how it was measured; None when it was not (the plots' notes say why)."""
    if importance is None or importance.frame is None:
        return None
    about = (
        f"On {importance.rows:,} of {importance.holdout_rows:,} holdout rows (seeded sample), "
        f"{importance.repeats} shuffles per input column" + (f"; {importance.note}" if importance.note else "") + "."
    )
    rows = [
        {"column": name, "mean": fmt(row["mean"], ".4f"), "std": fmt(row["std"], ".4f")}
        for name, row in importance.frame.iterrows()
    ]
    return {"about": about, "metric": metric, "rows": rows}


def _holdout_text(spec: PipelineSpec, y: np.ndarray) -> str:
    if spec.target.task == "regression":
        low, mean, high, std = (fmt(float(f(y)), ".4g") for f in (np.min, np.mean, np.max, np.std))
        return f"{len(y):,} rows; target {spec.target.column}: mean {mean}, std {std}, range {low} .. {high}"
    counts = pd.Series(y).value_counts().sort_index()
    return f"{len(y):,} rows; {spec.target.column}: " + ", ".join(f"{k}: {v:,}" for k, v in counts.items())
