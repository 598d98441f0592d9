"""A fitted model's answer for raw rows: the predicted label or value, and one score per row.

Used wherever a champion or candidate is applied to rows: batch scoring, the drift monitor's score
distribution and the evaluation report's curves. One definition of "the score", so they agree:

* binary: the probability of the positive class (``target.positive_class``, else the last class);
* multiclass: the probability of the predicted class (the most probable one);
* regression: the predicted value.

Classifiers without ``predict_proba`` (``RidgeClassifier``, hinge-loss ``SGDClassifier``) give their
``decision_function`` instead: a margin, not a probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlpipe.spec import PipelineSpec


@dataclass(frozen=True)
class Predictions:
    prediction: np.ndarray  # label (classification) or value (regression), one per row
    score: np.ndarray  # float, one per row (see the module docstring)
    proba: np.ndarray | None  # (rows, classes) class probabilities, or None
    classes: list[Any] | None  # the model's classes, in proba's column order; None for regression
    positive: Any = None  # binary: the class whose probability ``score`` is


def rows_of(p: Predictions, rows: np.ndarray) -> Predictions:
    """``p`` restricted to ``rows`` (positions, or a boolean mask over every row)."""
    proba = p.proba[rows] if p.proba is not None else None
    return Predictions(p.prediction[rows], p.score[rows], proba, p.classes, p.positive)


def positive_label(spec: PipelineSpec, classes: list[Any]) -> Any:
    """The class counted as positive in a binary task: the spec's ``positive_class`` if the model knows it."""
    wanted = spec.target.positive_class
    return wanted if wanted is not None and wanted in classes else classes[-1]


def predict(spec: PipelineSpec, model: Any, X: pd.DataFrame) -> Predictions:
    """``model``'s prediction and score for every row of ``X`` (the raw feature columns)."""
    if spec.target.task == "regression":
        values = np.asarray(model.predict(X), dtype="float64")
        return Predictions(prediction=values, score=values, proba=None, classes=None)
    classes = list(model.classes_)
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(X), dtype="float64")
        margins = None
    else:
        proba = None
        margins = np.asarray(model.decision_function(X), dtype="float64")
    if spec.target.task == "binary":
        positive = positive_label(spec, classes)
        if proba is not None:
            score = proba[:, classes.index(positive)]
            prediction = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
        else:
            # decision_function is the margin of classes_[1]; flip it when the positive class is classes_[0].
            score = margins if classes.index(positive) == 1 else -margins
            prediction = np.asarray(model.predict(X))
        return Predictions(_typed(prediction, classes), score, proba, classes, positive)
    values = proba if proba is not None else margins
    best = values.argmax(axis=1)
    prediction = np.asarray(classes, dtype=object)[best]
    return Predictions(_typed(prediction, classes), values[np.arange(len(best)), best], proba, classes)


def _typed(labels: np.ndarray, classes: list[Any]) -> np.ndarray:
    """Labels in the dtype of the model's classes (ints stay ints, not Python objects)."""
    kinds = np.asarray(classes).dtype
    # Text labels as Python str objects (not numpy.str_), which every database driver binds.
    return labels.astype(kinds) if kinds.kind in "biuf" else labels.astype(str).astype(object)
