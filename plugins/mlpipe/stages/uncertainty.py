"""Paired bootstrap intervals for the gate: candidate minus champion on the same resampled holdout rows.

The candidate and the champion are scored on one holdout, so their difference is paired: both are
measured on each resample of the same rows, and the interval is the spread of the *difference*
(candidate - champion, in the metric's "better" direction: positive = the candidate is better),
which is far narrower than the two metrics' own intervals would suggest.

One resampling serves every metric and slice: ``resamples`` draws of the holdout's row indices
(with replacement, stratified by class for classification so each resample keeps the holdout's
class counts, seeded from ``split.seed``), held as per-row counts; each metric is computed from
those counts as weights, vectorised over a chunk of resamples, and a slice is the counts of its
rows (so a slice's size varies between resamples, as a random subgroup's does). The interval is
the percentile interval of the resampled differences (numpy's percentile; scipy.stats.bootstrap's
BCa needs a jackknife of n statistics, quadratic in the holdout size, and it cannot stratify).

A difference that is undefined in too many resamples (an AUC of a slice that often draws one class
only) has no usable interval: such a slice is reported, not judged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlpipe.spec import PipelineSpec
from mlpipe.stages.predict import Predictions, positive_label, rows_of

# Resamples of the holdout, shared by the primary metric, the secondary ones and every slice.
RESAMPLES = 1_000
# An interval is usable when the difference is defined in at least this share of the resamples.
MIN_DEFINED = 0.99
# Count matrices are built this many cells at a time (resamples x rows): small enough for the CPU caches.
CHUNK_CELLS = 500_000
# sklearn's log_loss clips probabilities to [eps, 1 - eps] of float64.
_EPS = float(np.finfo(np.float64).eps)

Scorer = Callable[[np.ndarray], np.ndarray]  # (resamples, rows) weights -> one value per resample


@dataclass(frozen=True)
class Interval:
    """A paired difference: its point value on the holdout and its bootstrap interval (gain: + is better)."""

    gain: float
    low: float
    high: float
    defined: float  # share of resamples in which the difference was defined

    @property
    def usable(self) -> bool:
        return self.defined >= MIN_DEFINED and math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def worsening(self) -> tuple[float, float]:
        """The interval of the worsening (champion - candidate in the better direction), low first."""
        return -self.high + 0.0, -self.low + 0.0

    def as_dict(self) -> dict[str, float]:
        return {"gain": self.gain, "low": self.low, "high": self.high, "defined": self.defined}


@dataclass(frozen=True)
class SliceRows:
    """The row positions of each value of one slice column, to be given intervals on ``metric``."""

    column: str
    metric: str
    rows: dict[str, np.ndarray]


@dataclass
class PairedUncertainty:
    """Intervals of candidate - champion for each metric and each (slice column, value)."""

    confidence: float
    resamples: int
    seed: int
    stratified: bool
    metrics: dict[str, Interval]
    slices: dict[tuple[str, str], Interval] = field(default_factory=dict)
    seconds: float = 0.0

    def figures(self) -> dict[str, Any]:
        """The verdict's record of how the intervals were made, with the metrics' intervals."""
        return {
            "method": "paired bootstrap, percentile interval" + (", stratified by class" if self.stratified else ""),
            "confidence": self.confidence,
            "resamples": self.resamples,
            "seed": self.seed,
            "seconds": round(self.seconds, 3),
            "metrics": {name: i.as_dict() for name, i in self.metrics.items()},
        }


def paired_bootstrap(
    spec: PipelineSpec,
    y: Any,
    candidate: Predictions,
    champion: Predictions,
    *,
    confidence: float,
    metrics: list[str] | None = None,
    slices: list[SliceRows] = (),  # type: ignore[assignment]
    resamples: int = RESAMPLES,
    seed: int | None = None,
) -> PairedUncertainty:
    """Intervals of ``candidate`` - ``champion`` on holdout labels ``y``, for ``metrics`` and ``slices``.

    ``metrics`` defaults to the spec's primary and secondary metrics; predictions are for every row
    of ``y``; ``seed`` defaults to ``spec.split.seed``. Deterministic for a given seed.
    """
    started = time.perf_counter()
    names = metrics if metrics is not None else [spec.primary_metric, *spec.secondary_metrics]
    truth = np.asarray(y)
    n = len(truth)
    seed = spec.split.seed if seed is None else seed
    stratified = spec.target.task != "regression"
    strata = np.unique(truth, return_inverse=True)[1] if stratified else np.zeros(n, dtype=np.int64)
    # Every scorer is prepared once (sorting, per-row losses), then fed each chunk of counts.
    jobs: list[tuple[Any, str, np.ndarray | None, Scorer, Scorer]] = []
    for name in names:
        jobs.append((name, name, None, scorer(spec, name, truth, candidate), scorer(spec, name, truth, champion)))
    for s in slices:
        for value, rows in s.rows.items():
            rows = np.asarray(rows)
            cand, champ = rows_of(candidate, rows), rows_of(champion, rows)
            key = (s.column, value)
            fns = scorer(spec, s.metric, truth[rows], cand), scorer(spec, s.metric, truth[rows], champ)
            jobs.append((key, s.metric, rows, *fns))
    diffs = {key: np.empty(resamples) for key, *_ in jobs}
    done = 0
    for counts in resample_counts(strata, resamples, seed):
        weights = counts.astype(np.float32)  # exact for counts; scorers accumulate in float64
        part = slice(done, done + len(counts))
        for key, metric, rows, cand_fn, champ_fn in jobs:
            w = weights if rows is None else weights[:, rows]
            diffs[key][part] = _better(spec, metric, cand_fn(w), champ_fn(w))
        done += len(counts)
    ones = np.ones((1, n))
    intervals: dict[Any, Interval] = {}
    for key, metric, rows, cand_fn, champ_fn in jobs:
        w = ones if rows is None else ones[:, : len(rows)]
        point = float(_better(spec, metric, cand_fn(w), champ_fn(w))[0])
        intervals[key] = _interval(point, diffs[key], confidence)
    return PairedUncertainty(
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        stratified=stratified,
        metrics={k: v for k, v in intervals.items() if isinstance(k, str)},
        slices={k: v for k, v in intervals.items() if isinstance(k, tuple)},
        seconds=time.perf_counter() - started,
    )


def resample_counts(strata: np.ndarray, resamples: int, seed: int) -> Any:
    """Yield (chunk, rows) matrices: how often each row is drawn in each resample.

    Each stratum is resampled within itself (its size kept), from one seeded generator, so the
    draws depend on the seed and the strata only.
    """
    rng = np.random.default_rng(seed)
    n = len(strata)
    groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    chunk = max(1, min(resamples, CHUNK_CELLS // max(n, 1)))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        offsets = (np.arange(size, dtype=np.int64) * n)[:, None]
        drawn = [offsets + g[rng.integers(0, len(g), size=(size, len(g)))] for g in groups if len(g)]
        flat = np.concatenate([d.ravel() for d in drawn]) if drawn else np.empty(0, dtype=np.int64)
        yield np.bincount(flat, minlength=size * n).reshape(size, n)


def _interval(point: float, diffs: np.ndarray, confidence: float) -> Interval:
    finite = diffs[np.isfinite(diffs)]
    defined = len(finite) / len(diffs) if len(diffs) else 0.0
    if not len(finite):
        return Interval(point, math.nan, math.nan, defined)
    alpha = (1 - confidence) / 2
    low, high = np.percentile(finite, [100 * alpha, 100 * (1 - alpha)])
    return Interval(point, float(low), float(high), defined)


def _better(spec: PipelineSpec, metric: str, cand: np.ndarray, champ: np.ndarray) -> np.ndarray:
    return cand - champ if spec.direction(metric) == "maximize" else champ - cand


# -- metrics from per-row weights, vectorised over resamples -------------------------------------------


def scorer(spec: PipelineSpec, metric: str, y: np.ndarray, p: Predictions) -> Scorer:
    """A function of (resamples, rows) weights giving ``metric`` of ``p`` on ``y`` in each resample.

    With weights of 1 it equals :func:`mlpipe.stages.metrics.compute_metrics`'s value (sklearn's).
    """
    task = spec.target.task
    if task == "regression":
        return _regression(metric, np.asarray(y, dtype=np.float64), np.asarray(p.prediction, dtype=np.float64))
    classes = list(p.classes or [])
    if task == "binary":
        positive = p.positive if p.positive is not None else positive_label(spec, classes)
        truth = (y == positive).astype(np.float64)
        predicted = (p.prediction == positive).astype(np.float64)
        return _binary(metric, truth, predicted, np.asarray(p.score, dtype=np.float64), p.proba is not None)
    return _multiclass(metric, y, p, classes)


def _mean(values: np.ndarray) -> Scorer:
    return lambda w: _ratio(_matvec(w, values), w.sum(axis=1, dtype=np.float64))


def _matvec(w: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``w @ values`` in float64 through BLAS (a float32 by float64 product would take numpy's slow loop)."""
    return w.astype(np.float64, copy=False) @ values


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _binary(metric: str, truth: np.ndarray, predicted: np.ndarray, score: np.ndarray, prob_like: bool) -> Scorer:
    if metric == "roc_auc":
        return _auc(truth, score)
    if metric == "average_precision":
        return _average_precision(truth, score)
    if metric in ("log_loss", "brier") and not prob_like:
        return lambda w: np.full(len(w), np.nan)
    if metric == "log_loss":
        p = np.clip(score, _EPS, 1 - _EPS)
        return _mean(-(truth * np.log(p) + (1 - truth) * np.log1p(-p)))
    if metric == "brier":
        return _mean((score - truth) ** 2)
    if metric == "accuracy":
        return _mean((predicted == truth).astype(np.float64))
    tp_v, fp_v = truth * predicted, (1 - truth) * predicted
    fn_v, tn_v = truth * (1 - predicted), (1 - truth) * (1 - predicted)

    def confusion(w: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(_matvec(w, v) for v in (tp_v, fp_v, fn_v, tn_v))

    def zero_division(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.nan_to_num(_ratio(num, den), nan=0.0)

    if metric == "balanced_accuracy":

        def balanced(w: np.ndarray) -> np.ndarray:
            tp, fp, fn, tn = confusion(w)
            return (_ratio(tp, tp + fn) + _ratio(tn, tn + fp)) / 2

        return balanced
    if metric == "precision":
        return lambda w: (lambda tp, fp, fn, tn: zero_division(tp, tp + fp))(*confusion(w))
    if metric == "recall":
        return lambda w: (lambda tp, fp, fn, tn: zero_division(tp, tp + fn))(*confusion(w))
    if metric == "f1":
        return lambda w: (lambda tp, fp, fn, tn: zero_division(2 * tp, 2 * tp + fp + fn))(*confusion(w))
    raise ValueError(f"no bootstrap for binary metric {metric!r}")


def _tie_groups(score: np.ndarray, descending: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows' order by score, and where each run of equal scores starts in that order (None: no ties)."""
    order = np.argsort(-score if descending else score, kind="mergesort")
    ordered = score[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return order, (None if len(starts) == len(score) else starts)


def _grouped(ordered: np.ndarray, starts: np.ndarray | None) -> np.ndarray:
    """Weights summed over each run of tied scores (no runs: as they are)."""
    return ordered if starts is None else np.add.reduceat(ordered, starts, axis=1)


def _dot_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products, accumulated in float64 whatever the inputs' precision."""
    return np.einsum("ij,ij->i", a, b, dtype=np.float64)


def _auc(truth: np.ndarray, score: np.ndarray) -> Scorer:
    """ROC AUC with weights: for each positive, the weight of negatives scored lower (ties count half).

    Counts are small integers, so the float32 weights of a resample sum exactly (below 2**24 rows).
    """
    order, starts = _tie_groups(score)

    def auc(w: np.ndarray) -> np.ndarray:
        ordered = w[:, order]
        positive = truth[order].astype(w.dtype)
        pos = _grouped(ordered * positive, starts)
        neg = _grouped(ordered, starts) - pos
        below = np.cumsum(neg, axis=1)
        below -= 0.5 * neg
        return _ratio(_dot_rows(pos, below), pos.sum(axis=1, dtype=np.float64) * neg.sum(axis=1, dtype=np.float64))

    return auc


def _average_precision(truth: np.ndarray, score: np.ndarray) -> Scorer:
    """sklearn's average precision with weights: precision at each threshold, weighted by the recall it adds."""
    order, starts = _tie_groups(score, descending=True)

    def ap(w: np.ndarray) -> np.ndarray:
        ordered = w[:, order]
        positive = truth[order].astype(w.dtype)
        pos = _grouped(ordered * positive, starts)
        seen = np.cumsum(_grouped(ordered, starts), axis=1)
        precision = np.nan_to_num(_ratio(np.cumsum(pos, axis=1), seen), nan=0.0)
        return _ratio(_dot_rows(pos, precision), pos.sum(axis=1, dtype=np.float64))

    return ap


def _multiclass(metric: str, y: np.ndarray, p: Predictions, classes: list[Any]) -> Scorer:
    k = len(classes)
    index = {c: i for i, c in enumerate(classes)}
    true_code = np.array([index.get(v, -1) for v in y])
    pred_code = np.array([index.get(v, -1) for v in p.prediction])
    if metric == "accuracy":
        return _mean((true_code == pred_code).astype(np.float64))
    if metric == "log_loss":
        if p.proba is None:
            return lambda w: np.full(len(w), np.nan)
        proba = np.clip(p.proba, _EPS, 1 - _EPS)
        proba = proba / proba.sum(axis=1, keepdims=True)
        picked = proba[np.arange(len(y)), np.clip(true_code, 0, k - 1)]
        return _mean(-np.log(picked))
    if metric == "roc_auc_ovr":
        if p.proba is None:
            return lambda w: np.full(len(w), np.nan)
        per_class = [_auc((true_code == i).astype(np.float64), p.proba[:, i]) for i in range(k)]
        return lambda w: np.mean([fn(w) for fn in per_class], axis=0)
    is_true = (true_code[:, None] == np.arange(k)).astype(np.float64)
    is_pred = (pred_code[:, None] == np.arange(k)).astype(np.float64)
    hit = is_true * is_pred

    def per_class(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _matvec(w, hit), _matvec(w, is_true), _matvec(w, is_pred)

    if metric == "balanced_accuracy":

        def balanced(w: np.ndarray) -> np.ndarray:
            tp, actual, _ = per_class(w)
            # sklearn averages the recall of the classes present in the (resampled) truth.
            return np.nanmean(_ratio(tp, actual), axis=1)

        return balanced
    if metric in ("f1_macro", "f1_weighted"):

        def f1(w: np.ndarray) -> np.ndarray:
            tp, actual, guessed = per_class(w)
            scores = np.nan_to_num(_ratio(2 * tp, actual + guessed), nan=0.0)
            if metric == "f1_weighted":
                return _ratio((scores * actual).sum(axis=1), actual.sum(axis=1))
            present = (actual + guessed) > 0
            return _ratio((scores * present).sum(axis=1), present.sum(axis=1))

        return f1
    raise ValueError(f"no bootstrap for multiclass metric {metric!r}")


def _regression(metric: str, y: np.ndarray, pred: np.ndarray) -> Scorer:
    error = pred - y
    if metric == "rmse":
        mse = _mean(error**2)
        return lambda w: np.sqrt(mse(w))
    if metric == "mae":
        return _mean(np.abs(error))
    if metric == "mape":
        return _mean(np.abs(error) / np.maximum(np.abs(y), _EPS))
    if metric == "r2":

        def r2(w: np.ndarray) -> np.ndarray:
            total = w.sum(axis=1, dtype=np.float64)
            mean = _ratio(_matvec(w, y), total)
            spread = _matvec(w, y**2) - total * mean**2
            spread = np.where(spread > 1e-12 * np.maximum(_matvec(w, y**2), 1.0), spread, 0.0)
            return 1 - _ratio(_matvec(w, error**2), spread)

        return r2
    if metric == "median_ae":
        order = np.argsort(np.abs(error), kind="mergesort")
        ordered = np.abs(error)[order]

        def median(w: np.ndarray) -> np.ndarray:
            cum = np.cumsum(w[:, order], axis=1)
            total = cum[:, -1]
            # The middle one or two of the drawn rows, in order of their error (1-based positions).
            lower = (cum >= np.floor((total + 1) / 2)[:, None]).argmax(axis=1)
            upper = (cum >= np.floor(total / 2 + 1)[:, None]).argmax(axis=1)
            value = (ordered[lower] + ordered[upper]) / 2
            return np.where(total > 0, value, np.nan)

        return median
    raise ValueError(f"no bootstrap for regression metric {metric!r}")
