"""Metrics of the spec's task from predictions made once, and each model's one pass over a holdout.

The evaluation (:mod:`mlpipe.stages.evaluate`), its report (:mod:`mlpipe.stages.evaluation_report`),
monitoring and the uncertainty bootstrap all measure through :func:`metric_values`; no model is
called here except in :func:`predict_holdout` (one prediction pass per model, timed and logged).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlpipe.spec import PipelineSpec
from mlpipe.stages.predict import Predictions, predict, rows_of

# The evaluation's logger: these passes are steps of the evaluation, logged as before the move.
log = logging.getLogger("mlpipe.stages.evaluate")


def compute_metrics(spec: PipelineSpec, model: Any, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """The spec's primary and secondary metrics of ``model`` on (X, y): one prediction pass."""
    return metric_values(spec, spec_metrics(spec), y, predict(spec, model, X))


def spec_metrics(spec: PipelineSpec) -> list[str]:
    """The spec's primary metric, then its secondary metrics."""
    return [spec.primary_metric, *spec.secondary_metrics]


def metric_value(
    spec: PipelineSpec, metric: str, y_true: Any, predictions: Predictions, rows: np.ndarray | None = None
) -> float:
    """One metric of the spec's task from predictions already made; no model is called.

    ``y_true`` and ``predictions`` are aligned row by row (position i = holdout row i); ``rows``
    (positions, repeats allowed, or a boolean mask) restricts both to a subset or a resample. NaN
    when the metric is undefined there (AUC on one class, log loss without probabilities).
    """
    return metric_values(spec, [metric], y_true, predictions, rows)[metric]


def metric_values(
    spec: PipelineSpec, metrics: list[str], y_true: Any, predictions: Predictions, rows: np.ndarray | None = None
) -> dict[str, float]:
    """Several metrics of :func:`metric_value` at once (the subset is taken once)."""
    from sklearn import metrics as skm

    y = np.asarray(y_true)
    p = predictions
    if rows is not None:
        y, p = y[rows], rows_of(p, rows)
    task = spec.target.task
    if task == "regression":
        pred = p.prediction
        fns = {
            "rmse": lambda: skm.root_mean_squared_error(y, pred),
            "mae": lambda: skm.mean_absolute_error(y, pred),
            "r2": lambda: skm.r2_score(y, pred),
            "mape": lambda: skm.mean_absolute_percentage_error(y, pred),
            "median_ae": lambda: skm.median_absolute_error(y, pred),
        }
    elif task == "binary":
        y_bin = (y == p.positive).astype(int)
        pred_bin = (p.prediction == p.positive).astype(int)
        # The positive class's probability, or (no predict_proba) its decision margin.
        score, prob_like = p.score, p.proba is not None
        fns = {
            "roc_auc": lambda: skm.roc_auc_score(y_bin, score),
            "average_precision": lambda: skm.average_precision_score(y_bin, score),
            "log_loss": lambda: skm.log_loss(y_bin, score, labels=[0, 1]) if prob_like else math.nan,
            "brier": lambda: skm.brier_score_loss(y_bin, score) if prob_like else math.nan,
            "accuracy": lambda: skm.accuracy_score(y_bin, pred_bin),
            "balanced_accuracy": lambda: skm.balanced_accuracy_score(y_bin, pred_bin),
            "f1": lambda: skm.f1_score(y_bin, pred_bin, zero_division=0),
            "precision": lambda: skm.precision_score(y_bin, pred_bin, zero_division=0),
            "recall": lambda: skm.recall_score(y_bin, pred_bin, zero_division=0),
        }
    else:
        pred, proba, classes = p.prediction, p.proba, list(p.classes or [])
        fns = {
            "accuracy": lambda: skm.accuracy_score(y, pred),
            "balanced_accuracy": lambda: skm.balanced_accuracy_score(y, pred),
            "f1_macro": lambda: skm.f1_score(y, pred, average="macro", zero_division=0),
            "f1_weighted": lambda: skm.f1_score(y, pred, average="weighted", zero_division=0),
            "log_loss": lambda: skm.log_loss(y, proba, labels=classes) if proba is not None else math.nan,
            "roc_auc_ovr": lambda: _multiclass_auc(skm, y, proba, classes),
        }
    out: dict[str, float] = {}
    for n in metrics:
        try:
            out[n] = float(fns[n]())
        except ValueError:
            # e.g. AUC on a holdout with one class present: undefined, reported as NaN.
            out[n] = math.nan
    return out


def _multiclass_auc(skm: Any, y: Any, proba: Any, classes: list[Any]) -> float:
    if proba is None or len(set(y)) < 2:
        return math.nan
    return float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=classes))


@dataclass
class HoldoutPredictions:
    """Every model's predictions on one holdout, each made once; all figures derive from them.

    Row i of ``y`` and of every :class:`~mlpipe.stages.predict.Predictions` is holdout row i (by
    position, as read). ``candidates`` are by name in the spec's order; ``champion`` is None when
    there is no champion or it could not be scored on this holdout. ``seconds`` is each pass's wall
    time (``"champion"`` for the champion's), which also prices the report's permutation importance.
    """

    y: np.ndarray
    candidates: dict[str, Predictions]
    champion: Predictions | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def metrics(self, spec: PipelineSpec, name: str | None, rows: np.ndarray | None = None) -> dict[str, float]:
        """The spec's metrics of candidate ``name`` (None: the champion), optionally on ``rows`` only."""
        p = self.champion if name is None else self.candidates[name]
        if p is None:
            raise ValueError("no champion predictions on this holdout")
        return metric_values(spec, spec_metrics(spec), self.y, p, rows)


def predict_timed(spec: PipelineSpec, model: Any, X: pd.DataFrame, who: str) -> tuple[Predictions, float]:
    """``model``'s one prediction pass over ``X``, logged with its duration."""
    started = time.perf_counter()
    p = predict(spec, model, X)
    seconds = time.perf_counter() - started
    log.info("Evaluate: %s predicted %s holdout rows in %.2f s", who, f"{len(X):,}", seconds)
    return p, seconds


def predict_holdout(
    spec: PipelineSpec, models: dict[str, Any], champion_model: Any | None, X: pd.DataFrame, y: pd.Series
) -> HoldoutPredictions:
    """Apply each model to the holdout once (the champion too, when given)."""
    out = HoldoutPredictions(np.asarray(y), {})
    for name, model in models.items():
        out.candidates[name], out.seconds[name] = predict_timed(spec, model, X, f"candidate {name}")
    if champion_model is not None:
        out.champion, out.seconds["champion"] = predict_timed(spec, champion_model, X, "champion")
    return out
