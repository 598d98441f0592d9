"""Tests of the paired bootstrap (stages/uncertainty.py) and the gate's interval rules (``gate.confidence``).

Metrics from resample weights are checked against scikit-learn's (with ``sample_weight``); the
rules are judged on constructed predictions whose differences are known: a latent signal ``z``
drives the label, the champion scores ``z`` plus noise, and the candidate scores ``z`` with less
noise (a real improvement), a little extra noise (a noise-sized change), or extra noise on one
slice's rows (a slice regression).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from mlpipe.contracts import Verdict
from mlpipe.errors import SpecError
from mlpipe.spec import PipelineSpec, parse_spec
from mlpipe.stages.evaluate import judge, measure_slices, paired_uncertainty
from mlpipe.stages.metrics import metric_values, spec_metrics
from mlpipe.stages.predict import Predictions
from mlpipe.stages.uncertainty import (
    RESAMPLES,
    SliceRows,
    paired_bootstrap,
    resample_counts,
    scorer,
)
from unit.conftest import spec_dict
from unit.test_train_evaluate_promote import champion_version, rule

SLICES = [{"column": "cat", "max_regression": 0.02, "min_rows": 100}]


def gate_spec(confidence: float | None = 0.95, **gate: Any) -> PipelineSpec:
    base = {"min_primary": 0.5, "min_improvement": 0.001, "max_regression": {"log_loss": 0.05}, "slices": SLICES}
    return parse_spec(spec_dict(gate={**base, "confidence": confidence, **gate}), Path("tiny.yaml"))


def probabilities(logit: np.ndarray) -> Predictions:
    p = 1 / (1 + np.exp(-logit))
    return Predictions((p > 0.5).astype(int), p, np.c_[1 - p, p], [0, 1], 1)


def constructed(
    sizes: dict[str, int],
    *,
    seed: int = 0,
    better: float = 0.0,
    extra_noise: float = 0.0,
    worse: dict[str, float] | None = None,
    positives: dict[str, int] | None = None,
) -> tuple[pd.DataFrame, pd.Series, Predictions, Predictions]:
    """Holdout (X with slice column ``cat``, y) and the candidate's and champion's predictions.

    ``better`` shrinks the candidate's noise (0.3: 30 % less), ``extra_noise`` adds independent noise
    to it, ``worse`` adds noise of that size on one slice's rows, ``positives`` fixes a slice's positives.
    """
    rng = np.random.default_rng(seed)
    cat = np.repeat(list(sizes), list(sizes.values()))
    z = rng.normal(0, 1, len(cat))
    y = (rng.random(len(cat)) < 1 / (1 + np.exp(-(2 * z - 1.5)))).astype(int)
    for value, k in (positives or {}).items():
        rows = np.flatnonzero(cat == value)
        y[rows], y[rows[:k]] = 0, 1
    noise = rng.normal(0, 1.2, len(cat))
    champion = z + noise
    candidate = z + noise * (1 - better) + rng.normal(0, extra_noise, len(cat))
    for value, sd in (worse or {}).items():
        rows = cat == value
        candidate[rows] += rng.normal(0, sd, rows.sum())
    return pd.DataFrame({"cat": cat}), pd.Series(y), probabilities(candidate), probabilities(champion)


def judged_pair(spec: PipelineSpec, X: pd.DataFrame, y: pd.Series, cand: Predictions, champ: Predictions) -> Verdict:
    """The verdict on the candidate against the champion, measured and judged as evaluate_candidates does."""
    slices = measure_slices(spec, X, y, cand, champ)
    uncertainty = paired_uncertainty(spec, X, y, cand, champ, slices) if spec.gate.confidence else None
    return judge(
        spec,
        run_id="manual__new",
        scores={"logreg": metric_values(spec, spec_metrics(spec), y, cand), "hgb": {"roc_auc": 0.5, "log_loss": 1.0}},
        champion=champion_version(),
        champion_seq=4,
        champion_metrics=metric_values(spec, spec_metrics(spec), y, champ),
        champion_error=None,
        holdout_rows=len(y),
        slices=slices,
        uncertainty=uncertainty,
    )


def slice_of(v: Verdict, value: str) -> dict[str, Any]:
    return next(s for s in v.slices or [] if s["value"] == value)


# -- metrics from resample weights ------------------------------------------------------------------

TASKS: dict[str, dict[str, Any]] = {
    "binary": {
        "metrics": {
            "primary": "roc_auc",
            "secondary": [
                "average_precision",
                "log_loss",
                "brier",
                "accuracy",
                "balanced_accuracy",
                "f1",
                "precision",
                "recall",
            ],
        },
    },
    "multiclass": {
        "target": {"column": "y", "task": "multiclass"},
        "metrics": {
            "primary": "accuracy",
            "secondary": ["balanced_accuracy", "f1_macro", "f1_weighted", "log_loss", "roc_auc_ovr"],
        },
        "gate": {},
    },
    "regression": {
        "target": {"column": "y", "task": "regression"},
        "metrics": {"primary": "rmse", "secondary": ["mae", "r2", "mape", "median_ae"]},
        "gate": {},
        "candidates": [{"name": "lin", "estimator": "sklearn.linear_model.LinearRegression"}],
    },
}


def task_data(task: str, n: int = 600, seed: int = 1) -> tuple[np.ndarray, Predictions]:
    rng = np.random.default_rng(seed)
    if task == "binary":
        y = (rng.random(n) < 0.3).astype(int)
        # Rounded scores: ties, which every ranking metric must count as sklearn does.
        score = np.round(np.clip(0.3 + 0.2 * (y - 0.3) + rng.normal(0, 0.2, n), 0.001, 0.999), 2)
        return y, Predictions((score > 0.5).astype(int), score, np.c_[1 - score, score], [0, 1], 1)
    if task == "multiclass":
        classes = ["a", "b", "c"]
        y = rng.choice(classes, n)
        proba = rng.dirichlet([1, 1, 1], n)
        proba[np.arange(n), pd.Series(y).map({"a": 0, "b": 1, "c": 2}).to_numpy()] += 0.5
        proba /= proba.sum(axis=1, keepdims=True)
        labels = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
        return y, Predictions(labels, proba.max(axis=1), proba, classes)
    y = rng.normal(5, 2, n)
    pred = y + rng.normal(0, 1, n)
    return y, Predictions(pred, pred, None, None)


@pytest.mark.parametrize("task", list(TASKS))
def test_every_metric_from_weights_equals_sklearns(task: str) -> None:
    spec = parse_spec(spec_dict(**TASKS[task]), Path("tiny.yaml"))
    y, p = task_data(task)
    expected = metric_values(spec, spec_metrics(spec), pd.Series(y), p)
    weights = np.random.default_rng(2).poisson(1.0, len(y))

    for metric, value in expected.items():
        fn = scorer(spec, metric, y, p)
        assert fn(np.ones((1, len(y))))[0] == pytest.approx(value, abs=1e-12), metric
        # Two resamples at once, in float32 as the bootstrap feeds them: each is its own weighted metric.
        both = fn(np.vstack([weights, np.ones(len(y))]).astype(np.float32))
        assert both[1] == pytest.approx(value, abs=1e-6), metric  # float32 ratios
        assert not np.isnan(both[0]), metric


@pytest.mark.parametrize(
    ("metric", "reference"),
    [
        ("roc_auc", lambda y, p, w: skm.roc_auc_score(y, p.score, sample_weight=w)),
        ("average_precision", lambda y, p, w: skm.average_precision_score(y, p.score, sample_weight=w)),
        ("log_loss", lambda y, p, w: skm.log_loss(y, p.score, sample_weight=w)),
        ("balanced_accuracy", lambda y, p, w: skm.balanced_accuracy_score(y, p.prediction, sample_weight=w)),
    ],
)
def test_a_resample_is_sklearns_metric_with_sample_weights(metric: str, reference: Any) -> None:
    spec = parse_spec(spec_dict(**TASKS["binary"]), Path("tiny.yaml"))
    y, p = task_data("binary")
    weights = np.random.default_rng(3).poisson(1.0, len(y)).astype(np.float32)

    assert scorer(spec, metric, y, p)(weights[None])[0] == pytest.approx(reference(y, p, weights), abs=1e-6)


def test_median_ae_of_a_resample_is_the_median_of_the_drawn_rows() -> None:
    spec = parse_spec(spec_dict(**TASKS["regression"]), Path("tiny.yaml"))
    y, p = task_data("regression", n=301)
    counts = np.random.default_rng(4).poisson(1.0, len(y))

    drawn = np.repeat(np.abs(p.prediction - y), counts)
    assert scorer(spec, "median_ae", y, p)(counts[None].astype(np.float32))[0] == pytest.approx(np.median(drawn))


def test_resamples_keep_each_class_count_and_depend_on_the_seed_only() -> None:
    strata = np.r_[np.zeros(70, int), np.ones(30, int)]

    first = np.vstack(list(resample_counts(strata, 50, seed=7)))
    again = np.vstack(list(resample_counts(strata, 50, seed=7)))
    other = np.vstack(list(resample_counts(strata, 50, seed=8)))

    assert first.shape == (50, 100)
    assert (first[:, :70].sum(axis=1) == 70).all() and (first[:, 70:].sum(axis=1) == 30).all()
    assert (first == again).all() and not (first == other).all()


# -- the rules, on constructed predictions ----------------------------------------------------------


class TestIntervalRules:
    def test_a_clear_improvement_passes_with_its_interval_in_the_detail(self) -> None:
        v = judged_pair(gate_spec(), *constructed({"a": 3000, "b": 300}, better=0.3))

        r = rule(v, "improvement")
        assert r.passed and v.blessed and v.decision == "promote"
        low, high = r.figures["gain_low"], r.figures["gain_high"]
        assert 0.001 < low < r.figures["gain"] < high
        assert (
            f"gain {r.figures['gain']:+.4f} [{low:+.4f}, {high:+.4f}] (95% interval), lower bound \u2265 0.001: pass"
            in r.detail
        )
        assert v.confidence == 0.95
        assert v.uncertainty["resamples"] == RESAMPLES and v.uncertainty["seed"] == 42
        assert v.uncertainty["metrics"]["roc_auc"]["low"] == low
        assert "stratified by class" in v.uncertainty["method"]

    def test_a_noise_sized_gain_passes_the_point_gate_but_not_the_interval_gate(self) -> None:
        data = constructed({"a": 1500, "b": 300}, seed=2, extra_noise=0.2, better=0.03)

        point, interval = judged_pair(gate_spec(None), *data), judged_pair(gate_spec(), *data)

        assert rule(point, "improvement").figures["gain"] >= 0.001
        assert rule(point, "improvement").passed and point.blessed
        r = rule(interval, "improvement")
        assert r.figures["gain_low"] < 0.001 < r.figures["gain_high"]
        assert not r.passed and not interval.blessed
        assert "lower bound < 0.001: fail, not a credible improvement" in r.detail

    def test_a_slice_regression_inside_the_noise_passes(self) -> None:
        data = constructed({"a": 3000, "b": 300}, seed=1, better=0.3, worse={"b": 1.0})

        point, interval = judged_pair(gate_spec(None), *data), judged_pair(gate_spec(), *data)

        b = slice_of(interval, "b")
        assert b["worsening"] > 0.02 and not slice_of(point, "b")["passed"]  # the point gate rejects it
        assert b["worsening_low"] < 0.02 < b["worsening_high"]
        assert b["judged"] and b["passed"]
        assert rule(interval, "slice:cat").passed and interval.blessed
        assert "not credibly worse than the champion by more than 0.02 roc_auc" in rule(interval, "slice:cat").detail

    def test_a_credible_slice_regression_fails(self) -> None:
        v = judged_pair(gate_spec(), *constructed({"a": 3000, "b": 2000}, seed=1, better=0.3, worse={"b": 2.0}))

        b = slice_of(v, "b")
        assert b["worsening_low"] > 0.02 and (b["judged"], b["passed"]) == (True, False)
        r = rule(v, "slice:cat")
        assert not r.passed and not v.blessed
        assert "1 of 2 judged slice(s) credibly worse than the champion by more than 0.02 roc_auc" in r.detail
        assert f"cat=b {b['candidate']:.4f} vs {b['champion']:.4f} (worsening {b['worsening']:+.4f} [" in r.detail
        assert r.figures["worst"][0]["value"] == "b" and r.figures["worst"][0]["worsening_low"] == b["worsening_low"]

    def test_a_secondary_metric_fails_only_on_a_credible_regression(self) -> None:
        data = constructed({"a": 3000, "b": 2000}, seed=1, better=0.3, worse={"b": 2.0})

        v = judged_pair(gate_spec(max_regression={"log_loss": 0.01, "brier": 0.05}), *data)

        log_loss, brier = rule(v, "regression:log_loss"), rule(v, "regression:brier")
        assert log_loss.figures["worsening_low"] > 0.01 and not log_loss.passed
        assert "lower bound > tolerance 0.01: fail, credibly worse" in log_loss.detail
        assert brier.figures["worsening_low"] <= 0.05 and brier.passed

    def test_a_slice_too_small_for_an_interval_is_reported_not_judged(self) -> None:
        # 120 rows (over min_rows) but 2 positives: its AUC is undefined in ~1 resample in 8.
        v = judged_pair(gate_spec(), *constructed({"a": 3000, "c": 120}, better=0.3, positives={"c": 2}))

        c = slice_of(v, "c")
        assert (c["judged"], c["passed"], c["worsening_low"]) == (False, True, None)
        assert c["note"].startswith("no usable 95% interval (roc_auc defined in ") and c["note"].endswith("not judged")
        assert c["candidate"] is not None and c["worsening"] is not None  # reported with its point figures
        assert "1 without a usable interval" in rule(v, "slice:cat").detail
        assert rule(v, "slice:cat").figures["judged"] == 1

    def test_identical_models_are_a_tie_that_promotes_nothing(self) -> None:
        X, y, _, champ = constructed({"a": 2000, "b": 300})

        v = judged_pair(gate_spec(), X, y, champ, champ)

        r = rule(v, "improvement")
        assert not r.passed and r.detail.startswith("tie with champion")
        assert v.uncertainty["metrics"]["roc_auc"] == {"gain": 0.0, "low": 0.0, "high": 0.0, "defined": 1.0}
        assert rule(v, "slice:cat").passed

    def test_the_same_seed_gives_the_same_verdict_and_another_seed_another_interval(self) -> None:
        data = constructed({"a": 2000, "b": 300}, seed=5, better=0.1)
        spec = gate_spec()

        first, again = judged_pair(spec, *data), judged_pair(spec, *data)
        reseeded = spec.model_copy(update={"split": spec.split.model_copy(update={"seed": 43})})
        other = judged_pair(reseeded, *data)

        assert first.uncertainty.pop("seconds") >= 0 and again.uncertainty.pop("seconds") >= 0
        assert first.to_xcom() == again.to_xcom()
        assert first.uncertainty["metrics"] != other.uncertainty["metrics"]
        assert first.uncertainty["metrics"]["roc_auc"]["gain"] == other.uncertainty["metrics"]["roc_auc"]["gain"]

    def test_without_confidence_the_verdict_has_no_interval(self) -> None:
        v = judged_pair(gate_spec(None), *constructed({"a": 2000, "b": 300}, better=0.3))

        assert (v.confidence, v.uncertainty) == (None, None)
        assert "gain_low" not in rule(v, "improvement").figures
        assert "worsening_low" not in v.slices[0]

    def test_judge_refuses_to_apply_a_confidence_without_intervals(self) -> None:
        _, y, cand, champ = constructed({"a": 500})
        spec = gate_spec(slices=[])

        with pytest.raises(ValueError, match=r"gate\.confidence is set: judge\(\) needs the paired intervals"):
            judge(
                spec,
                run_id="r",
                scores={"logreg": metric_values(spec, spec_metrics(spec), y, cand), "hgb": {"roc_auc": 0.5}},
                champion=champion_version(),
                champion_seq=1,
                champion_metrics=metric_values(spec, spec_metrics(spec), y, champ),
                champion_error=None,
                holdout_rows=len(y),
            )


@pytest.mark.parametrize("bad", [0.5, 1.0, 1.2, "high"])
def test_a_confidence_outside_the_open_interval_is_refused_naming_the_field(bad: Any) -> None:
    with pytest.raises(SpecError, match=r"gate\.confidence"):
        gate_spec(bad)


def test_the_bootstrap_of_10000_rows_2_metrics_and_20_slices_costs_at_most_2_cpu_seconds() -> None:
    """The issue's budget: 1,000 resamples shared by the primary metric, one secondary and 20 slices."""
    rng = np.random.default_rng(0)
    n = 10_000
    y = (rng.random(n) < 0.2).astype(int)
    z = rng.normal(0, 1, n) + y
    cand, champ = (probabilities(z + rng.normal(0, 0.5, n)) for _ in range(2))
    spec = parse_spec(spec_dict(metrics={"primary": "roc_auc", "secondary": ["log_loss"]}), Path("tiny.yaml"))
    cat = rng.integers(0, 20, n)
    slices = [SliceRows("cat", "roc_auc", {str(k): np.flatnonzero(cat == k) for k in range(20)})]

    paired_bootstrap(spec, y, cand, champ, confidence=0.95, resamples=10)  # warm-up
    started = time.process_time()
    u = paired_bootstrap(spec, y, cand, champ, confidence=0.95, slices=slices)
    cpu = time.process_time() - started

    assert u.resamples == 1_000 and len(u.metrics) == 2 and len(u.slices) == 20
    assert cpu <= 2.0, f"{cpu:.2f} CPU s for the bootstrap (budget 2 s)"
