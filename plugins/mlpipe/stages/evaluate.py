"""Evaluation and the gate: score every candidate and the champion on one holdout, write a verdict.

The verdict (TFX would call it a blessing) lists every rule with its figures and pass/fail; the
promotion stage obeys it and does nothing for a model it does not bless. :func:`judge` applies the
rules to figures already measured (pure, so each rule is tested on constructed figures);
:func:`evaluate_candidates` measures them: the metrics, the spec's slices (:func:`measure_slices`)
and how the champion's input columns differ from this run's (:func:`feature_change_of`). The edge
cases (first run, a champion that cannot be loaded or read this holdout, ties, slices too small
to judge) are rules of their own, described in docs/spec.md, section ``gate``.

Each model (every candidate, the champion) is applied to the holdout exactly once
(:func:`predict_holdout`); every metric, slice and plot derives from those stored predictions
(:class:`HoldoutPredictions`) through :func:`metric_value` / :func:`metric_values`, which take a
subset of row positions and call no model, so resampling them (a bootstrap) is cheap. The only
further model calls are the report's permutation importance, bounded by the evaluation's budget
(:func:`evaluation_budget`, docs/benchmarks.md section 10).
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from mlpipe.contracts import Rule, TrainedCandidate, Verdict
from mlpipe.errors import ArtifactIntegrityError, FeatureError
from mlpipe.layout import report_prefix, verdict_key
from mlpipe.registry import ModelVersion
from mlpipe.spec import LoadedSpec, PipelineSpec, SliceSpec
from mlpipe.stages.features import read_split
from mlpipe.stages.metrics import (
    HoldoutPredictions,
    metric_value,
    predict_timed,
)
from mlpipe.stages.predict import Predictions
from mlpipe.stages.train import load_model
from mlpipe.stages.uncertainty import Interval, PairedUncertainty, SliceRows, paired_bootstrap
from mlpipe.storage import ArtifactStore

FLOAT_SLACK = 1e-12
WORST_SLICES_SHOWN = 3
# The evaluation's budget (docs/benchmarks.md, section 10): the larger of this share of the run's
# training time and BUDGET_SECONDS per BUDGET_ROWS holdout rows (never less than BUDGET_SECONDS).
TRAINING_SHARE = 0.30
BUDGET_SECONDS = 20.0
BUDGET_ROWS = 10_000

log = logging.getLogger(__name__)


def evaluation_budget(training_seconds: float, holdout_rows: int) -> float:
    """Seconds the whole evaluation may take: 30 % of the run's training time, or 20 s per 10,000
    holdout rows (at least 20 s), whichever is larger."""
    return max(TRAINING_SHARE * training_seconds, BUDGET_SECONDS * max(1.0, holdout_rows / BUDGET_ROWS))


def better(direction: str, a: float, b: float) -> float:
    """How much ``a`` improves on ``b`` (positive = better), whatever the metric's direction."""
    return (a - b) if direction == "maximize" else (b - a)


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


def slice_labels(values: pd.Series) -> pd.Series:
    """The slice each row belongs to, as text; missing values form the slice ``(missing)``."""
    labels = values.astype(object).map(str)
    return labels.where(values.notna().to_numpy(), "(missing)")


def slice_groups(values: pd.Series, max_slices: int) -> tuple[list[tuple[str, np.ndarray]], int, int]:
    """The rows of each slice of one column: ``(value, row positions)`` for the ``max_slices`` most
    frequent values (equal counts by value), and the number of other values and of their rows."""
    labels = slice_labels(values.reset_index(drop=True))
    codes, uniques = pd.factorize(labels, sort=False)
    counts = np.bincount(codes, minlength=len(uniques))
    order = sorted(range(len(uniques)), key=lambda i: (-counts[i], uniques[i]))
    groups = [(str(uniques[i]), np.flatnonzero(codes == i)) for i in order[:max_slices]]
    rest = order[max_slices:]
    return groups, len(rest), int(sum(counts[i] for i in rest))


def measure_slices(
    spec: PipelineSpec, X: pd.DataFrame, y: pd.Series, best: Predictions, champion: Predictions | None
) -> list[SliceMeasure]:
    """The best candidate's and the champion's slice metric on each slice of ``spec.gate.slices``.

    Slices smaller than ``min_rows`` are listed without figures; a metric a slice cannot define (AUC
    on one class) is NaN with a note. ``best``/``champion`` are predictions for every row of ``X``:
    no model is called here.
    """
    from sklearn.exceptions import UndefinedMetricWarning

    y_all = np.asarray(y)
    out: list[SliceMeasure] = []
    for s in spec.gate.slices:
        metric = s.metric or spec.primary_metric
        groups, other_values, other_rows = slice_groups(X[s.column], s.max_slices)
        rows = []
        for value, where in groups:
            n = len(where)
            row: dict[str, Any] = {"value": value, "rows": n, "candidate": math.nan, "champion": None, "note": ""}
            if champion is not None:
                row["champion"] = math.nan
            if n >= s.min_rows:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UndefinedMetricWarning)
                    row["candidate"] = metric_value(spec, metric, y_all, best, where)
                    if champion is not None:
                        row["champion"] = metric_value(spec, metric, y_all, champion, where)
                if math.isnan(row["candidate"]) or (champion is not None and math.isnan(row["champion"])):
                    one_class = spec.target.task != "regression" and len(set(y_all[where].tolist())) < 2
                    row["note"] = f"{metric} undefined on this slice" + (" (one class only)" if one_class else "")
            rows.append(row)
        out.append(SliceMeasure(s.column, metric, rows, other_values, other_rows))
    return out


def paired_uncertainty(
    spec: PipelineSpec,
    X: pd.DataFrame,
    y: pd.Series,
    best: Predictions,
    champion: Predictions,
    slices: list[SliceMeasure],
    metrics: list[str] | None = None,
) -> PairedUncertainty:
    """The best candidate's paired intervals against the champion at ``gate.confidence``.

    Every spec metric (or only ``metrics``), and every slice large enough to be judged (its ``min_rows``).
    """
    assert spec.gate.confidence is not None
    config = {s.column: s for s in spec.gate.slices}
    rows = []
    for m in slices:
        cfg = config[m.column]
        judged = {r["value"] for r in m.rows if r["rows"] >= cfg.min_rows and not r["note"]}
        groups = slice_groups(X[m.column], cfg.max_slices)[0]
        rows.append(SliceRows(m.column, m.metric, {v: where for v, where in groups if v in judged}))
    confidence = spec.gate.confidence
    return paired_bootstrap(spec, np.asarray(y), best, champion, confidence=confidence, metrics=metrics, slices=rows)


def _slice_rules(
    spec: PipelineSpec,
    measures: list[SliceMeasure],
    champion: ModelVersion | None,
    status: str,
    uncertainty: PairedUncertainty | None = None,
) -> tuple[list[Rule], list[dict[str, Any]]]:
    """One ``slice:<column>`` rule per measured column, and the verdict's flat list of slices."""
    config = {s.column: s for s in spec.gate.slices}
    rules: list[Rule] = []
    flat: list[dict[str, Any]] = []
    for m in measures:
        items = _judge_slices(spec, m, config[m.column], status, uncertainty)
        rules.append(_slice_rule(m, config[m.column], items, champion, status, uncertainty))
        flat += items
    return rules, flat


def _judge_slices(
    spec: PipelineSpec, m: SliceMeasure, cfg: SliceSpec, status: str, uncertainty: PairedUncertainty | None = None
) -> list[dict[str, Any]]:
    """Each measured slice with its worsening and pass/fail, or why it is not judged.

    With intervals (``gate.confidence``), a slice fails only when the lower bound of its worsening
    exceeds the tolerance, and a slice without a usable interval is reported, not judged.
    """
    direction = spec.direction(m.metric)
    items = []
    for row in m.rows:
        item = {"column": m.column, "value": row["value"], "rows": row["rows"], "metric": m.metric}
        item |= {"candidate": row["candidate"], "champion": row["champion"], "worsening": None}
        if uncertainty is not None:
            item |= {"worsening_low": None, "worsening_high": None}
        item |= {"judged": False, "passed": True, "note": row["note"]}
        interval = uncertainty.slices.get((m.column, row["value"])) if uncertainty is not None else None
        if row["rows"] < cfg.min_rows:
            item["note"] = f"too small (< {cfg.min_rows} rows), not judged"
        elif row["note"]:
            item["note"] += ", not judged"
        elif status == "scored" and uncertainty is not None:
            worsening = -better(direction, row["candidate"], row["champion"]) + 0.0  # no -0.0
            item["worsening"] = worsening
            if interval is None or not interval.usable:
                defined = f"{interval.defined:.0%}" if interval is not None else "none"
                item["note"] = (
                    f"no usable {uncertainty.confidence:.0%} interval ({m.metric} defined in {defined} of "
                    f"{uncertainty.resamples} resamples), not judged"
                )
            else:
                low, high = interval.worsening
                item |= {"worsening_low": low, "worsening_high": high, "judged": True}
                item["passed"] = low <= cfg.max_regression + FLOAT_SLACK
        elif status == "scored":
            worsening = -better(direction, row["candidate"], row["champion"]) + 0.0  # no -0.0
            item |= {"worsening": worsening, "judged": True, "passed": worsening <= cfg.max_regression + FLOAT_SLACK}
        else:
            item["note"] = "no champion scored on this holdout, not judged"
        items.append(item)
    return items


def _slice_rule(
    m: SliceMeasure,
    cfg: SliceSpec,
    items: list[dict[str, Any]],
    champion: ModelVersion | None,
    status: str,
    uncertainty: PairedUncertainty | None = None,
) -> Rule:
    """``slice:<column>`` fails when any judged slice is worse than the champion beyond the tolerance.

    With intervals, "worse beyond the tolerance" means the lower bound of the worsening is; the worst
    slices are then ordered by that lower bound.
    """
    ranked = "worsening_low" if uncertainty is not None else "worsening"
    judged = sorted((i for i in items if i["judged"]), key=lambda i: -i[ranked])
    failed = [i for i in judged if not i["passed"]]
    small = sum(i["rows"] < cfg.min_rows for i in items)
    unusable = sum("no usable" in i["note"] for i in items)
    undefined = sum(not i["judged"] and i["rows"] >= cfg.min_rows for i in items) if status == "scored" else 0
    undefined -= unusable
    unjudged = [f"{small} too small (< {cfg.min_rows} rows)"] if small else []
    unjudged += [f"{undefined} with {m.metric} undefined"] if undefined else []
    unjudged += [f"{unusable} without a usable interval"] if unusable else []
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
            {k: i[k] for k in ("value", "rows", "candidate", "champion", "worsening", *_INTERVAL_KEYS) if k in i}
            for i in judged[:WORST_SLICES_SHOWN]
        ],
    }
    if uncertainty is not None:
        figures["confidence"] = uncertainty.confidence
    name = f"slice:{m.column}"
    if status != "scored":
        why = "first run, no champion" if champion is None else f"champion v{champion.version} not scored"
        detail = f"{m.column}: {why} to compare slices with; {len(items)} slice(s) reported, none judged"
        return Rule(name, True, detail + suffix, figures)
    credibly = "credibly " if uncertainty is not None else ""
    if failed:
        listed = "; ".join(_slice_text(i) for i in failed[:WORST_SLICES_SHOWN])
        more = f"; {len(failed) - WORST_SLICES_SHOWN} more" if len(failed) > WORST_SLICES_SHOWN else ""
        detail = (
            f"{m.column}: {len(failed)} of {len(judged)} judged slice(s) {credibly}worse than the champion by more "
            f"than {cfg.max_regression} {m.metric}: {listed}{more}"
        )
    elif judged and uncertainty is not None:
        detail = (
            f"{m.column}: {len(judged)} judged slice(s) not credibly worse than the champion by more than "
            f"{cfg.max_regression} {m.metric} (lower bound of the worsening, {uncertainty.confidence:.0%} interval); "
            f"worst {_slice_text(judged[0])}"
        )
    elif judged:
        detail = (
            f"{m.column}: {len(judged)} judged slice(s) within {cfg.max_regression} {m.metric} of the champion; "
            f"worst {_slice_text(judged[0])}"
        )
    else:
        detail = f"{m.column}: no slice could be judged"
    return Rule(name, not failed, detail + suffix, figures)


_INTERVAL_KEYS = ("worsening_low", "worsening_high")


def _slice_text(item: dict[str, Any]) -> str:
    head = f"{item['column']}={item['value']} {item['candidate']:.4f} vs {item['champion']:.4f}"
    if item.get("worsening_low") is not None:
        span = _span(item["worsening_low"], item["worsening_high"])
        return f"{head} (worsening {item['worsening']:+.4f} {span}, {item['rows']:,} rows)"
    worse = f"worse by {item['worsening']:.4f}" if item["worsening"] > FLOAT_SLACK else "not worse"
    return f"{head} ({worse})"


def _span(low: float, high: float) -> str:
    return f"[{low:+.4f}, {high:+.4f}]"


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
    uncertainty: PairedUncertainty | None = None,
) -> Verdict:
    """Apply the gate to candidates' and champion's holdout metrics. Pure: no I/O.

    ``feature_change`` compares the champion's inputs with this run's features (None: not known or
    no champion); ``slices`` are the measured slices of ``spec.gate.slices`` (None: none measured);
    ``uncertainty`` the paired intervals of the best candidate against the champion, which
    ``gate.confidence`` requires whenever the champion was scored (None: judged on point values).
    """
    if spec.gate.confidence is None:
        uncertainty = None
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
        if spec.gate.confidence is not None and uncertainty is None:
            raise ValueError("gate.confidence is set: judge() needs the paired intervals (uncertainty)")
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
        interval = uncertainty.metrics.get(metric) if uncertainty is not None else None
        rules.append(_improvement_rule(spec, best, value, champion, champion_metrics[metric], interval))
        for sec, tolerance in gate.max_regression.items():
            cand_v, champ_v = scores[best][sec], champion_metrics.get(sec, math.nan)
            if math.isnan(champ_v):
                rules.append(Rule(f"regression:{sec}", True, f"champion has no {sec}; not compared"))
                continue
            worsening = -better(spec.direction(sec), cand_v, champ_v) + 0.0  # no -0.0
            if uncertainty is not None:
                rules.append(_regression_rule(sec, cand_v, champ_v, worsening, tolerance, uncertainty))
                continue
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
        slice_rules, flat = _slice_rules(spec, slices, champion, status, uncertainty if status == "scored" else None)
        rules += slice_rules
    verdict = _verdict(
        spec, run_id, best, scores, champion, champion_seq, champion_metrics, status, rules, holdout_rows
    )
    scored = uncertainty is not None and status == "scored"
    return replace(
        verdict, slices=flat, confidence=spec.gate.confidence, uncertainty=uncertainty.figures() if scored else None
    )


def _improvement_rule(
    spec: PipelineSpec,
    best: str,
    value: float,
    champion: ModelVersion,
    champ: float,
    interval: Interval | None = None,
) -> Rule:
    """Does the best candidate beat the champion by ``gate.min_improvement``? A tie never does.

    With an interval (``gate.confidence``), the *lower bound* of the gain must reach
    ``min_improvement`` and be above zero: the improvement must be credible, not only measured.
    """
    metric, need = spec.primary_metric, spec.gate.min_improvement
    gain = better(spec.direction(metric), value, champ) if not math.isnan(champ) else math.inf
    # Metric arithmetic is floating point: a gain of exactly min_improvement must count.
    ok = gain > FLOAT_SLACK and gain >= need - FLOAT_SLACK
    figures = {"candidate": value, "champion": champ, "gain": gain, "min_improvement": need}
    if interval is not None and math.isfinite(gain) and abs(gain) > FLOAT_SLACK:
        conf = f"{spec.gate.confidence:.0%}"
        figures |= {"gain_low": interval.low, "gain_high": interval.high, "confidence": spec.gate.confidence}
        head = f"{best} {metric}={value:.4f} vs champion v{champion.version} {champ:.4f}: gain {gain:+.4f} "
        if not interval.usable:
            detail = f"{head}with no usable {conf} interval ({metric} defined in {interval.defined:.0%} of resamples)"
            return Rule("improvement", False, detail + ": fail", figures)
        ok = interval.low > FLOAT_SLACK and interval.low >= need - FLOAT_SLACK
        sign = "\u2265" if ok else "<"
        detail = f"{head}{_span(interval.low, interval.high)} ({conf} interval), lower bound {sign} {need}"
        return Rule("improvement", ok, detail + (": pass" if ok else ": fail, not a credible improvement"), figures)
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


def _regression_rule(
    sec: str, cand_v: float, champ_v: float, worsening: float, tolerance: float, uncertainty: PairedUncertainty
) -> Rule:
    """``regression:<metric>`` with intervals: fails only when the worsening's lower bound exceeds the tolerance."""
    interval = uncertainty.metrics.get(sec)
    figures = {"candidate": cand_v, "champion": champ_v, "worsening": worsening, "tolerance": tolerance}
    head = f"{sec}: candidate {cand_v:.4f} vs champion {champ_v:.4f}, worsening {worsening:+.4f}"
    if interval is None or not interval.usable:
        defined = f"{interval.defined:.0%}" if interval is not None else "none"
        detail = f"{head}; no usable interval ({sec} defined in {defined} of the resamples), not judged"
        return Rule(f"regression:{sec}", True, detail, figures)
    low, high = interval.worsening
    figures |= {"worsening_low": low, "worsening_high": high, "confidence": uncertainty.confidence}
    ok = low <= tolerance + FLOAT_SLACK
    verdict, sign = ("pass", "\u2264") if ok else ("fail, credibly worse", ">")
    detail = (
        f"{head} {_span(low, high)} ({uncertainty.confidence:.0%} interval), lower bound "
        f"{sign} tolerance {tolerance}: {verdict}"
    )
    return Rule(f"regression:{sec}", ok, detail, figures)


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


def evaluate_candidates(
    loaded: LoadedSpec,
    store: ArtifactStore,
    *,
    run_id: str,
    run_key: str,
    holdout_key: str,
    holdout_sha256: str,
    trained: list[TrainedCandidate],
    champion: ModelVersion | None,
    champion_seq: int,
) -> Verdict:
    """Score every trained candidate and the champion on this run's holdout; save the verdict.

    Each model predicts the holdout once; metrics, slices and the report's plots derive from those
    predictions. The whole call keeps to :func:`evaluation_budget` (the report's permutation
    importance is sized to what remains of it, or skipped with a note). Progress goes to the log.
    """
    spec = loaded.spec
    started = time.perf_counter()
    holdout = read_split(store, holdout_key, holdout_sha256)
    y = holdout[spec.target.column]
    X = holdout.drop(columns=[spec.target.column])
    by_name = {t.candidate: t for t in trained}
    missing = [c.name for c in spec.candidates if c.name not in by_name]
    if missing:
        raise ArtifactIntegrityError(f"no trained model for candidate(s) {missing} in this run")
    for i, s in enumerate(spec.gate.slices):
        if s.column not in X.columns:
            raise FeatureError(
                f"gate.slices[{i}].column: {s.column!r} is not in this run's holdout; it has {list(X.columns)}"
            )
    training_seconds = sum(float(by_name[c.name].fit_seconds) for c in spec.candidates)
    budget = evaluation_budget(training_seconds, len(holdout))
    log.info(
        "Evaluate: %d candidate(s)%s on %s holdout rows; budget %.1f s (training took %.1f s)",
        len(spec.candidates),
        " and the champion" if champion is not None else "",
        f"{len(holdout):,}",
        budget,
        training_seconds,
    )
    scores, models = {}, {}
    answers = HoldoutPredictions(np.asarray(y), {})
    for cand in spec.candidates:
        t = by_name[cand.name]
        models[cand.name] = load_model(store, t.model_key, t.model_sha256)
        who = f"candidate {cand.name}"
        answers.candidates[cand.name], answers.seconds[cand.name] = predict_timed(spec, models[cand.name], X, who)
        scores[cand.name] = answers.metrics(spec, cand.name)
        log.info("Evaluate: %s: %s", who, _brief(scores[cand.name]))
    champion_metrics, champion_error, champ_model, change = None, None, None, None
    champion_incident = False
    if champion is not None:
        who = f"champion v{champion.version}"
        # A candidate byte-identical to the champion (unchanged data and spec) answers for it, once
        # the champion's stored artifact is checked to be those bytes (a tampered one must fail).
        twins = [c.name for c in spec.candidates if by_name[c.name].model_sha256 == champion.artifact_sha256]
        same = None
        try:
            try:
                key = store.key_of(champion.artifact_key)
                if twins and store.exists(key) and store.sha256(key) == champion.artifact_sha256:
                    same = twins[0]
                    champ_model = models[same]
                else:
                    champ_model = load_model(store, key, champion.artifact_sha256)
            except Exception:
                # Tampered, missing or unreadable: an incident, which fails the run once the verdict is kept.
                champion_incident = True
                raise
            change = feature_change_of(spec, champ_model, X)
            if change is not None and change.missing:
                champ_model = None  # it cannot read this holdout; the verdict's feature_set rule says why
                log.info("Evaluate: %s reads %s, missing here: not scored", who, change.missing)
            elif same is not None:
                answers.champion, answers.seconds["champion"] = answers.candidates[same], 0.0
                log.info("Evaluate: %s is candidate %s's artifact (same sha256): its predictions reused", who, same)
            else:
                answers.champion, answers.seconds["champion"] = predict_timed(spec, champ_model, X, who)
            if answers.champion is not None:
                champion_metrics = answers.metrics(spec, None)
                log.info("Evaluate: %s: %s", who, _brief(champion_metrics))
        except Exception as exc:  # any failure to load or score it means "cannot compare"
            champion_error = f"{type(exc).__name__}: {exc}"
            champ_model, answers.champion = None, None
            log.warning("Evaluate: champion v%s could not be scored: %s", champion.version, champion_error)
    best, _ = _pick_best(spec, scores)
    slices, uncertainty = None, None
    if spec.gate.slices and best is not None:
        step = time.perf_counter()
        slices = measure_slices(spec, X, y, answers.candidates[best], answers.champion)
        log.info("Evaluate: %d slice column(s) measured in %.2f s", len(slices), time.perf_counter() - step)
    if spec.gate.confidence is not None and best is not None and answers.champion is not None:
        uncertainty = paired_uncertainty(spec, X, y, answers.candidates[best], answers.champion, slices or [])
        log.info(
            "Evaluate: paired bootstrap (%d resamples, %d slice(s)) in %.2f s",
            uncertainty.resamples,
            len(uncertainty.slices),
            uncertainty.seconds,
        )
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
        uncertainty=uncertainty,
    )
    log.info("Evaluate: verdict %s (best %s)", verdict.decision, verdict.best_candidate)
    from mlpipe.stages.evaluation_report import save_evaluation_report

    step = time.perf_counter()
    report_uri = save_evaluation_report(
        store,
        spec,
        verdict.to_xcom(),
        models,
        champ_model,
        X,
        y,
        prefix=report_prefix(spec.name, run_key),
        predictions=answers,
        deadline=started + budget,
    )
    log.info("Evaluate: report written in %.2f s", time.perf_counter() - step)
    verdict = replace(verdict, report_uri=report_uri, seconds=round(time.perf_counter() - started, 3))
    store.put_bytes(verdict_key(spec.name, run_key), json.dumps(verdict.to_xcom(), indent=2).encode())
    log.info("Evaluate: done in %.2f s (budget %.1f s)", verdict.seconds, budget)
    return verdict


def _brief(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def load_verdict(store: ArtifactStore, pipeline: str, run_key: str) -> dict[str, Any]:
    return json.loads(store.get_bytes(verdict_key(pipeline, run_key)))
