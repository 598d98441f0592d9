"""Evaluation and the gate: score every candidate and the champion on one holdout, write a verdict.

The verdict (TFX would call it a blessing) lists every rule with its figures and pass/fail; the
promotion stage obeys it and does nothing for a model it does not bless. :func:`judge` applies the
rules to figures already measured (pure, so each rule is tested on constructed figures);
:func:`evaluate_candidates` measures them: the metrics, the spec's slices (:func:`measure_slices`)
and how the champion's input columns differ from this run's (:func:`feature_change_of`). The edge
cases (first run, a champion that cannot be loaded or read this holdout, ties, slices too small
to judge) are rules of their own, described in docs/spec.md, section ``gate``.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlpipe.errors import ArtifactIntegrityError, FeatureError
from mlpipe.registry import ModelVersion
from mlpipe.spec import LoadedSpec, PipelineSpec, SliceSpec
from mlpipe.stages.features import read_split
from mlpipe.stages.predict import Predictions, predict
from mlpipe.stages.train import load_model
from mlpipe.storage import ArtifactStore

VERDICT_FILE = "verdict.json"
FLOAT_SLACK = 1e-12
WORST_SLICES_SHOWN = 3


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
    slices: list[dict[str, Any]] | None = None  # one flat dict per slice; None when the spec has none
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


def _pick_best(spec: PipelineSpec, scores: dict[str, dict[str, float]]) -> tuple[str | None, list[str]]:
    """Best by the primary metric, and every candidate tied with it (best first, empty without a tie).

    Ties go to the candidate listed first in the spec.
    """
    metric = spec.primary_metric
    direction = spec.direction(metric)
    best: str | None = None
    for cand in spec.candidates:
        value = scores[cand.name][metric]
        if math.isnan(value):
            continue
        if best is None or better(direction, value, scores[best][metric]) > 0:
            best = cand.name
    if best is None:
        return None, []
    tied = [c.name for c in spec.candidates if abs(scores[c.name][metric] - scores[best][metric]) <= FLOAT_SLACK]
    return best, tied if len(tied) > 1 else []


@dataclass(frozen=True)
class FeatureChange:
    """The raw columns the champion reads against this run's feature columns, by name."""

    champion_columns: list[str]
    run_columns: list[str]
    missing: list[str]  # what the champion reads and this run's holdout lacks: it cannot be scored

    @property
    def added(self) -> list[str]:
        return [c for c in self.run_columns if c not in self.champion_columns]

    @property
    def removed(self) -> list[str]:
        return [c for c in self.champion_columns if c not in self.run_columns]

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)

    def describe(self) -> str:
        return " ".join([*(f"+{c}" for c in self.added), *(f"\u2212{c}" for c in self.removed)])

    def figures(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed, "missing": self.missing}


def model_input_columns(model: Any) -> list[str] | None:
    """The raw columns a fitted model pipeline reads (those its feature transformer uses); None if unknown."""
    steps = getattr(model, "named_steps", None) or {}
    fitted = getattr(steps.get("features"), "transformers_", None)
    if fitted is None:
        names = getattr(model, "feature_names_in_", None)
        return [str(c) for c in names] if names is not None else None
    columns: list[str] = []
    for name, transformer, cols in fitted:
        if name != "remainder" and not (isinstance(transformer, str) and transformer == "drop"):
            columns += [c for c in cols if isinstance(c, str) and c not in columns]
    return columns


def feature_change_of(spec: PipelineSpec, model: Any, X: pd.DataFrame) -> FeatureChange | None:
    """How the champion's inputs differ from this run's features (None when the model does not say)."""
    reads = model_input_columns(model)
    if reads is None:
        return None
    return FeatureChange(reads, list(spec.features.columns), [c for c in reads if c not in X.columns])


@dataclass
class SliceMeasure:
    """One slice column's figures on the holdout, before the gate judges them.

    ``rows`` holds one dict per value judged or listed (``value``, ``rows``, ``candidate``,
    ``champion``, ``note``), most frequent first; values beyond ``max_slices`` are only counted.
    """

    column: str
    metric: str
    rows: list[dict[str, Any]]
    other_values: int = 0
    other_rows: int = 0


class Answered:
    """A model stand-in that gives back predictions already made, so a metric costs no second pass."""

    def __init__(self, answer: Predictions) -> None:
        self.answer = answer
        if answer.classes is not None:
            self.classes_ = np.asarray(answer.classes)
            if answer.proba is not None:
                self.predict_proba = lambda X: answer.proba

    def predict(self, X: Any) -> np.ndarray:
        return self.answer.prediction

    def decision_function(self, X: Any) -> np.ndarray:
        return self.answer.score


def metric_only(spec: PipelineSpec, metric: str) -> PipelineSpec:
    """``spec`` with ``metric`` as its only metric, so :func:`compute_metrics` computes just that one."""
    return spec.model_copy(update={"metrics": spec.metrics.model_copy(update={"primary": metric, "secondary": []})})


def _rows_of(p: Predictions, mask: np.ndarray) -> Predictions:
    proba = p.proba[mask] if p.proba is not None else None
    return Predictions(p.prediction[mask], p.score[mask], proba, p.classes, p.positive)


def slice_labels(values: pd.Series) -> pd.Series:
    """The slice each row belongs to, as text; missing values form the slice ``(missing)``."""
    labels = values.astype(object).map(str)
    return labels.where(values.notna().to_numpy(), "(missing)")


def measure_slices(
    spec: PipelineSpec, X: pd.DataFrame, y: pd.Series, best: Predictions, champion: Predictions | None
) -> list[SliceMeasure]:
    """The best candidate's and the champion's slice metric on each slice of ``spec.gate.slices``.

    Slices smaller than ``min_rows`` are listed without figures; a metric a slice cannot define (AUC
    on one class) is NaN with a note. ``best``/``champion`` are predictions for every row of ``X``.
    """
    from sklearn.exceptions import UndefinedMetricWarning

    y = y.reset_index(drop=True)
    out: list[SliceMeasure] = []
    for s in spec.gate.slices:
        metric = s.metric or spec.primary_metric
        only = metric_only(spec, metric)
        labels = slice_labels(X[s.column].reset_index(drop=True))
        counts = sorted(labels.value_counts().items(), key=lambda kv: (-kv[1], kv[0]))
        rows = []
        for value, n in counts[: s.max_slices]:
            row: dict[str, Any] = {"value": value, "rows": int(n), "candidate": math.nan, "champion": None, "note": ""}
            if champion is not None:
                row["champion"] = math.nan
            if n >= s.min_rows:
                mask = (labels == value).to_numpy()
                y_s, X_s = y[mask], X.iloc[np.flatnonzero(mask)]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UndefinedMetricWarning)
                    row["candidate"] = compute_metrics(only, Answered(_rows_of(best, mask)), X_s, y_s)[metric]
                    if champion is not None:
                        row["champion"] = compute_metrics(only, Answered(_rows_of(champion, mask)), X_s, y_s)[metric]
                if math.isnan(row["candidate"]) or (champion is not None and math.isnan(row["champion"])):
                    one_class = spec.target.task != "regression" and y_s.nunique() < 2
                    row["note"] = f"{metric} undefined on this slice" + (" (one class only)" if one_class else "")
            rows.append(row)
        rest = counts[s.max_slices :]
        out.append(SliceMeasure(s.column, metric, rows, len(rest), int(sum(n for _, n in rest))))
    return out


def _slice_rules(
    spec: PipelineSpec, measures: list[SliceMeasure], champion: ModelVersion | None, status: str
) -> tuple[list[Rule], list[dict[str, Any]]]:
    """One ``slice:<column>`` rule per measured column, and the verdict's flat list of slices."""
    config = {s.column: s for s in spec.gate.slices}
    rules: list[Rule] = []
    flat: list[dict[str, Any]] = []
    for m in measures:
        items = _judge_slices(spec, m, config[m.column], status)
        rules.append(_slice_rule(m, config[m.column], items, champion, status))
        flat += items
    return rules, flat


def _judge_slices(spec: PipelineSpec, m: SliceMeasure, cfg: SliceSpec, status: str) -> list[dict[str, Any]]:
    """Each measured slice with its worsening and pass/fail, or why it is not judged."""
    direction = spec.direction(m.metric)
    items = []
    for row in m.rows:
        item = {"column": m.column, "value": row["value"], "rows": row["rows"], "metric": m.metric}
        item |= {"candidate": row["candidate"], "champion": row["champion"], "worsening": None}
        item |= {"judged": False, "passed": True, "note": row["note"]}
        if row["rows"] < cfg.min_rows:
            item["note"] = f"too small (< {cfg.min_rows} rows), not judged"
        elif row["note"]:
            item["note"] += ", not judged"
        elif status == "scored":
            worsening = -better(direction, row["candidate"], row["champion"]) + 0.0  # no -0.0
            item |= {"worsening": worsening, "judged": True, "passed": worsening <= cfg.max_regression + FLOAT_SLACK}
        else:
            item["note"] = "no champion scored on this holdout, not judged"
        items.append(item)
    return items


def _slice_rule(
    m: SliceMeasure, cfg: SliceSpec, items: list[dict[str, Any]], champion: ModelVersion | None, status: str
) -> Rule:
    """``slice:<column>`` fails when any judged slice is worse than the champion beyond the tolerance."""
    judged = sorted((i for i in items if i["judged"]), key=lambda i: -i["worsening"])
    failed = [i for i in judged if not i["passed"]]
    small = sum(i["rows"] < cfg.min_rows for i in items)
    undefined = sum(not i["judged"] and i["rows"] >= cfg.min_rows for i in items) if status == "scored" else 0
    unjudged = [f"{small} too small (< {cfg.min_rows} rows)"] if small else []
    unjudged += [f"{undefined} with {m.metric} undefined"] if undefined else []
    if m.other_values:
        unjudged.append(f"{m.other_values} rarer values beyond max_slices {cfg.max_slices} ({m.other_rows:,} rows)")
    suffix = f"; not judged: {', '.join(unjudged)}" if unjudged else ""
    figures = {
        "metric": m.metric,
        "max_regression": cfg.max_regression,
        "min_rows": cfg.min_rows,
        "judged": len(judged),
        "failed": len(failed),
        "not_judged": len(items) - len(judged) + m.other_values,
        "worst": [
            {k: i[k] for k in ("value", "rows", "candidate", "champion", "worsening")}
            for i in judged[:WORST_SLICES_SHOWN]
        ],
    }
    name = f"slice:{m.column}"
    if status != "scored":
        why = "first run, no champion" if champion is None else f"champion v{champion.version} not scored"
        detail = f"{m.column}: {why} to compare slices with; {len(items)} slice(s) reported, none judged"
        return Rule(name, True, detail + suffix, figures)
    if failed:
        listed = "; ".join(_slice_text(i) for i in failed[:WORST_SLICES_SHOWN])
        more = f"; {len(failed) - WORST_SLICES_SHOWN} more" if len(failed) > WORST_SLICES_SHOWN else ""
        detail = (
            f"{m.column}: {len(failed)} of {len(judged)} judged slice(s) worse than the champion by more "
            f"than {cfg.max_regression} {m.metric}: {listed}{more}"
        )
    elif judged:
        detail = (
            f"{m.column}: {len(judged)} judged slice(s) within {cfg.max_regression} {m.metric} of the champion; "
            f"worst {_slice_text(judged[0])}"
        )
    else:
        detail = f"{m.column}: no slice could be judged"
    return Rule(name, not failed, detail + suffix, figures)


def _slice_text(item: dict[str, Any]) -> str:
    worse = f"worse by {item['worsening']:.4f}" if item["worsening"] > FLOAT_SLACK else "not worse"
    return f"{item['column']}={item['value']} {item['candidate']:.4f} vs {item['champion']:.4f} ({worse})"


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
    champion_incident: bool = False,
    feature_change: FeatureChange | None = None,
    slices: list[SliceMeasure] | None = None,
) -> Verdict:
    """Apply the gate to candidates' and champion's holdout metrics. Pure: no I/O.

    ``feature_change`` compares the champion's inputs with this run's features (None: not known or
    no champion); ``slices`` are the measured slices of ``spec.gate.slices`` (None: none measured).
    """
    metric = spec.primary_metric
    direction = spec.direction(metric)
    gate = spec.gate
    rules: list[Rule] = []
    best, tied = _pick_best(spec, scores)
    if best is None:
        rules.append(Rule("primary_defined", False, f"no candidate has a defined {metric} on the holdout"))
        return _verdict(
            spec, run_id, best, scores, champion, champion_seq, champion_metrics, "none", rules, holdout_rows
        )
    value = scores[best][metric]
    if tied:
        rules.append(
            Rule(
                "tie",
                True,
                f"{', '.join(tied)} tie on {metric}={value:.4f}: {best}, listed first in the spec, is taken",
                {"tied": tied, "value": value},
            )
        )
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
    elif feature_change is not None and feature_change.missing:
        status = "unavailable"
        rules.append(
            Rule(
                "feature_set",
                False,
                f"feature set changed since champion v{champion.version} ({feature_change.describe()}): it reads "
                f"{feature_change.missing}, which this run's holdout lacks, so it cannot be scored on this holdout "
                "and no comparison is possible (if the new feature set is intended, force the promotion)",
                {"champion_version": champion.version, **feature_change.figures()},
            )
        )
    elif champion_metrics is None:
        status = "unavailable"
        rules.append(
            Rule(
                "champion",
                False,
                f"champion v{champion.version} could not be scored ({champion_error}); refusing to replace a model "
                "that cannot be compared (fix the artifact, roll back, or force the promotion)",
                {"champion_version": champion.version, "error": champion_error, "incident": champion_incident},
            )
        )
    else:
        status = "scored"
        if feature_change is not None and feature_change.changed:
            rules.append(
                Rule(
                    "feature_set",
                    True,
                    f"feature set changed since champion v{champion.version}: {feature_change.describe()}; the "
                    "champion still finds every column it reads and was scored on this holdout",
                    {"champion_version": champion.version, **feature_change.figures()},
                )
            )
        rules.append(_improvement_rule(spec, best, value, champion, champion_metrics[metric]))
        for sec, tolerance in gate.max_regression.items():
            cand_v, champ_v = scores[best][sec], champion_metrics.get(sec, math.nan)
            if math.isnan(champ_v):
                rules.append(Rule(f"regression:{sec}", True, f"champion has no {sec}; not compared"))
                continue
            worsening = -better(spec.direction(sec), cand_v, champ_v) + 0.0  # no -0.0
            ok = worsening <= tolerance + FLOAT_SLACK
            rules.append(
                Rule(
                    f"regression:{sec}",
                    ok,
                    f"{sec}: candidate {cand_v:.4f} vs champion {champ_v:.4f}, worse by {max(0.0, worsening):.4f} "
                    f"(tolerance {tolerance})",
                    {"candidate": cand_v, "champion": champ_v, "worsening": worsening, "tolerance": tolerance},
                )
            )
    flat = None
    if slices is not None:
        slice_rules, flat = _slice_rules(spec, slices, champion, status)
        rules += slice_rules
    verdict = _verdict(
        spec, run_id, best, scores, champion, champion_seq, champion_metrics, status, rules, holdout_rows
    )
    verdict.slices = flat
    return verdict


def _improvement_rule(spec: PipelineSpec, best: str, value: float, champion: ModelVersion, champ: float) -> Rule:
    """Does the best candidate beat the champion by ``gate.min_improvement``? A tie never does."""
    metric, need = spec.primary_metric, spec.gate.min_improvement
    gain = better(spec.direction(metric), value, champ) if not math.isnan(champ) else math.inf
    # Metric arithmetic is floating point: a gain of exactly min_improvement must count.
    ok = gain > FLOAT_SLACK and gain >= need - FLOAT_SLACK
    figures = {"candidate": value, "champion": champ, "gain": gain, "min_improvement": need}
    if abs(gain) <= FLOAT_SLACK:
        detail = (
            f"tie with champion: {best} {metric}={value:.4f} equals champion v{champion.version}'s; "
            f"a tie is not an improvement (needed > 0 and >= {need})"
        )
        return Rule("improvement", False, detail, figures)
    detail = (
        f"{best} {metric}={value:.4f} vs champion v{champion.version} {champ:.4f}: "
        f"gain {gain:+.4f}, needed > 0 and >= {need}"
    )
    return Rule("improvement", ok, detail, figures)


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
    for i, s in enumerate(spec.gate.slices):
        if s.column not in X.columns:
            raise FeatureError(
                f"gate.slices[{i}].column: {s.column!r} is not in this run's holdout; it has {list(X.columns)}"
            )
    scores, models = {}, {}
    for cand in spec.candidates:
        t = by_name[cand.name]
        models[cand.name] = load_model(store, t["model_key"], t["model_sha256"])
        scores[cand.name] = compute_metrics(spec, models[cand.name], X, y)
    champion_metrics, champion_error, champ_model, change = None, None, None, None
    champion_incident = False
    if champion is not None:
        try:
            try:
                champ_model = load_model(store, store.key_for_uri(champion.artifact_uri), champion.artifact_sha256)
            except Exception:
                # Tampered, missing or unreadable: an incident, which fails the run once the verdict is kept.
                champion_incident = True
                raise
            change = feature_change_of(spec, champ_model, X)
            if change is not None and change.missing:
                champ_model = None  # it cannot read this holdout; the verdict's feature_set rule says why
            else:
                champion_metrics = compute_metrics(spec, champ_model, X, y)
        except Exception as exc:  # any failure to load or score it means "cannot compare"
            champion_error = f"{type(exc).__name__}: {exc}"
            champ_model = None
    best, _ = _pick_best(spec, scores)
    slices = None
    if spec.gate.slices and best is not None:
        champ_answer = predict(spec, champ_model, X) if champ_model is not None else None
        slices = measure_slices(spec, X, y, predict(spec, models[best], X), champ_answer)
    verdict = judge(
        spec,
        run_id=run_id,
        scores=scores,
        champion=champion,
        champion_seq=champion_seq,
        champion_metrics=champion_metrics,
        champion_error=champion_error,
        champion_incident=champion_incident,
        holdout_rows=len(holdout),
        feature_change=change,
        slices=slices,
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
