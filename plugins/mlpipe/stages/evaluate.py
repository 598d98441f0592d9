"""Evaluation and the gate: score every candidate and the champion on one holdout, write a verdict.

The verdict (TFX would call it a blessing) lists every rule with its figures and pass/fail; the
promotion stage obeys it and does nothing for a model it does not bless.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlpipe.errors import ArtifactIntegrityError
from mlpipe.registry import ModelVersion
from mlpipe.spec import LoadedSpec, PipelineSpec
from mlpipe.stages.features import read_split
from mlpipe.stages.train import load_model
from mlpipe.storage import ArtifactStore

VERDICT_FILE = "verdict.json"
FLOAT_SLACK = 1e-12


def compute_metrics(spec: PipelineSpec, model: Any, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """The spec's primary and secondary metrics of ``model`` on (X, y)."""
    from sklearn import metrics as skm

    names = [spec.primary_metric, *spec.secondary_metrics]
    task = spec.target.task
    out: dict[str, float] = {}
    if task == "regression":
        pred = model.predict(X)
        fns = {
            "rmse": lambda: skm.root_mean_squared_error(y, pred),
            "mae": lambda: skm.mean_absolute_error(y, pred),
            "r2": lambda: skm.r2_score(y, pred),
            "mape": lambda: skm.mean_absolute_percentage_error(y, pred),
            "median_ae": lambda: skm.median_absolute_error(y, pred),
        }
        return {n: float(fns[n]()) for n in names}
    classes = list(model.classes_)
    proba = model.predict_proba(X) if hasattr(model, "predict_proba") else None
    pred = model.predict(X)
    if task == "binary":
        positive = spec.target.positive_class if spec.target.positive_class is not None else classes[-1]
        if positive not in classes:
            positive = classes[-1]
        pos_idx = classes.index(positive)
        y_bin = (np.asarray(y) == positive).astype(int)
        pred_bin = (np.asarray(pred) == positive).astype(int)
        score = proba[:, pos_idx] if proba is not None else np.asarray(model.decision_function(X), dtype=float)
        prob_like = proba is not None
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
        fns = {
            "accuracy": lambda: skm.accuracy_score(y, pred),
            "balanced_accuracy": lambda: skm.balanced_accuracy_score(y, pred),
            "f1_macro": lambda: skm.f1_score(y, pred, average="macro", zero_division=0),
            "f1_weighted": lambda: skm.f1_score(y, pred, average="weighted", zero_division=0),
            "log_loss": lambda: skm.log_loss(y, proba, labels=classes) if proba is not None else math.nan,
            "roc_auc_ovr": lambda: _multiclass_auc(skm, y, proba, classes),
        }
    for n in names:
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


def better(direction: str, a: float, b: float) -> float:
    """How much ``a`` improves on ``b`` (positive = better), whatever the metric's direction."""
    return (a - b) if direction == "maximize" else (b - a)


@dataclass
class Rule:
    rule: str
    passed: bool
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class Verdict:
    pipeline: str
    run_id: str
    blessed: bool
    decision: str  # "promote" | "first" | "reject"
    best_candidate: str | None
    primary_metric: str
    candidates: dict[str, dict[str, float]]
    champion_version: int | None
    champion_seq: int
    champion_metrics: dict[str, float] | None
    champion_status: str  # "none" | "scored" | "unavailable"
    rules: list[Rule]
    reasons: list[str]
    holdout_rows: int
    seconds: float = 0.0
    report_uri: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def json_safe(value: Any) -> Any:
    """NaN (an undefined metric) is not JSON: verdict files and XComs carry None instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _pick_best(spec: PipelineSpec, scores: dict[str, dict[str, float]]) -> str | None:
    """Best by the primary metric; ties go to the candidate listed first in the spec."""
    metric = spec.primary_metric
    direction = spec.direction(metric)
    best: str | None = None
    for cand in spec.candidates:
        value = scores[cand.name][metric]
        if math.isnan(value):
            continue
        if best is None or better(direction, value, scores[best][metric]) > 0:
            best = cand.name
    return best


def judge(
    spec: PipelineSpec,
    *,
    run_id: str,
    scores: dict[str, dict[str, float]],
    champion: ModelVersion | None,
    champion_seq: int,
    champion_metrics: dict[str, float] | None,
    champion_error: str | None,
    holdout_rows: int,
) -> Verdict:
    """Apply the gate to candidates' and champion's holdout metrics. Pure: no I/O."""
    metric = spec.primary_metric
    direction = spec.direction(metric)
    gate = spec.gate
    rules: list[Rule] = []
    best = _pick_best(spec, scores)
    if best is None:
        rules.append(Rule("primary_defined", False, f"no candidate has a defined {metric} on the holdout"))
        return _verdict(
            spec, run_id, best, scores, champion, champion_seq, champion_metrics, "none", rules, holdout_rows
        )
    value = scores[best][metric]
    if gate.min_primary is not None:
        ok = better(direction, value, gate.min_primary) >= 0
        rules.append(
            Rule(
                "floor",
                ok,
                f"{best} {metric}={value:.4f} {'meets' if ok else 'misses'} the floor {gate.min_primary}",
                {"value": value, "floor": gate.min_primary},
            )
        )
    if champion is None:
        status = "none"
        rules.append(Rule("champion", True, "no champion yet: first model, promoted if the floor passes"))
    elif champion_metrics is None:
        status = "unavailable"
        rules.append(
            Rule(
                "champion",
                False,
                f"champion v{champion.version} could not be scored ({champion_error}); refusing to replace a model "
                "that cannot be compared (fix the artifact, roll back, or force the promotion)",
                {"champion_version": champion.version},
            )
        )
    else:
        status = "scored"
        champ = champion_metrics[metric]
        gain = better(direction, value, champ) if not math.isnan(champ) else math.inf
        need = gate.min_improvement
        # Metric arithmetic is floating point: a gain of exactly min_improvement must count.
        ok = gain > FLOAT_SLACK and gain >= need - FLOAT_SLACK
        rules.append(
            Rule(
                "improvement",
                ok,
                f"{best} {metric}={value:.4f} vs champion v{champion.version} {champ:.4f}: "
                f"gain {gain:+.4f}, needed > 0 and >= {need}",
                {"candidate": value, "champion": champ, "gain": gain, "min_improvement": need},
            )
        )
        for sec, tolerance in gate.max_regression.items():
            cand_v, champ_v = scores[best][sec], champion_metrics.get(sec, math.nan)
            if math.isnan(champ_v):
                rules.append(Rule(f"regression:{sec}", True, f"champion has no {sec}; not compared"))
                continue
            worsening = -better(spec.direction(sec), cand_v, champ_v)
            ok = worsening <= tolerance + FLOAT_SLACK
            rules.append(
                Rule(
                    f"regression:{sec}",
                    ok,
                    f"{sec}: candidate {cand_v:.4f} vs champion {champ_v:.4f}, worse by {max(worsening, 0):.4f} "
                    f"(tolerance {tolerance})",
                    {"candidate": cand_v, "champion": champ_v, "worsening": worsening, "tolerance": tolerance},
                )
            )
    return _verdict(spec, run_id, best, scores, champion, champion_seq, champion_metrics, status, rules, holdout_rows)


def _verdict(
    spec: PipelineSpec,
    run_id: str,
    best: str | None,
    scores: dict[str, dict[str, float]],
    champion: ModelVersion | None,
    champion_seq: int,
    champion_metrics: dict[str, float] | None,
    status: str,
    rules: list[Rule],
    holdout_rows: int,
) -> Verdict:
    blessed = best is not None and all(r.passed for r in rules)
    decision = "reject" if not blessed else ("first" if champion is None else "promote")
    reasons = [r.detail for r in rules if not r.passed] if not blessed else [r.detail for r in rules]
    return Verdict(
        pipeline=spec.name,
        run_id=run_id,
        blessed=blessed,
        decision=decision,
        best_candidate=best,
        primary_metric=spec.primary_metric,
        candidates=scores,
        champion_version=champion.version if champion else None,
        champion_seq=champion_seq,
        champion_metrics=champion_metrics,
        champion_status=status,
        rules=rules,
        reasons=reasons,
        holdout_rows=holdout_rows,
    )


def verdict_key(pipeline: str, run_key: str) -> str:
    return f"{pipeline}/runs/{run_key}/evaluate/{VERDICT_FILE}"


def evaluate_candidates(
    loaded: LoadedSpec,
    store: ArtifactStore,
    *,
    run_id: str,
    run_key: str,
    holdout_key: str,
    holdout_sha256: str,
    trained: list[dict[str, Any]],
    champion: ModelVersion | None,
    champion_seq: int,
) -> Verdict:
    """Score every trained candidate and the champion on this run's holdout; save the verdict."""
    spec = loaded.spec
    started = time.perf_counter()
    holdout = read_split(store, holdout_key, holdout_sha256)
    y = holdout[spec.target.column]
    X = holdout.drop(columns=[spec.target.column])
    by_name = {t["candidate"]: t for t in trained}
    missing = [c.name for c in spec.candidates if c.name not in by_name]
    if missing:
        raise ArtifactIntegrityError(f"no trained model for candidate(s) {missing} in this run")
    scores, models = {}, {}
    for cand in spec.candidates:
        t = by_name[cand.name]
        models[cand.name] = load_model(store, t["model_key"], t["model_sha256"])
        scores[cand.name] = compute_metrics(spec, models[cand.name], X, y)
    champion_metrics, champion_error, champ_model = None, None, None
    if champion is not None:
        try:
            champ_model = load_model(store, store.key_for_uri(champion.artifact_uri), champion.artifact_sha256)
            champion_metrics = compute_metrics(spec, champ_model, X, y)
        except Exception as exc:  # any failure to load or score it means "cannot compare"
            champion_error = f"{type(exc).__name__}: {exc}"
            champ_model = None
    verdict = judge(
        spec,
        run_id=run_id,
        scores=scores,
        champion=champion,
        champion_seq=champion_seq,
        champion_metrics=champion_metrics,
        champion_error=champion_error,
        holdout_rows=len(holdout),
    )
    from mlpipe.stages.evaluation_report import report_prefix, save_evaluation_report

    verdict.report_uri = save_evaluation_report(
        store, spec, verdict, models, champ_model, X, y, prefix=report_prefix(spec.name, run_key)
    )
    verdict.seconds = round(time.perf_counter() - started, 3)
    store.put_bytes(verdict_key(spec.name, run_key), json.dumps(verdict.as_dict(), indent=2).encode())
    return verdict


def load_verdict(store: ArtifactStore, pipeline: str, run_key: str) -> dict[str, Any]:
    return json.loads(store.get_bytes(verdict_key(pipeline, run_key)))
