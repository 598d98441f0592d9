"""The demo's two-run story under the interval gate (issue 12), with the real stages on the real flights.

The browser test's small demo trains ``flights_delay`` on the flights before 2013-01-22, then again
after 7 more days arrive. The second candidate gains over +0.03 ROC AUC over the first champion and
improves every airport, while a carrier slice measures slightly worse than the champion (with the
weather features: UA, by 0.017, inside the spec's 0.02). Held to a 0.01 tolerance, the point gate
rejects it for that slice, while the interval gate (``confidence: 0.95``) sees that the worsening
is inside its noise, and promotes; a re-run on unchanged data is still a tie that promotes nothing.

Extract (flights_delay.sql's selection), features, training (logreg's grid search, hgb), evaluation
and promotion are the real stage functions on a real store and SQLite registry, without Airflow
(the whole DAG runs the same spec in test_train_dag.py and the browser test's small demo).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from unit.test_train_evaluate_promote import Pipe, rule

from mlpipe.demo import extract_frame
from mlpipe.registry import Registry
from mlpipe.spec import load_spec
from mlpipe.stages import evaluation_report
from mlpipe.stages.evaluate import SliceMeasure, evaluate_candidates, judge
from mlpipe.storage import LocalStore, run_key

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
FIRST_UNTIL, SECOND_UNTIL = "2013-01-22", "2013-01-29"  # small_demo.py: --until 2013-01-22, --feed-days 7
TIGHT = 0.01  # a slice tolerance under the worsening the second run's worst carrier measures


def source_rows(flights: Any, until: str) -> Any:
    """What flights_delay.sql returns from a source holding the flights (and weather) before ``until``."""
    return extract_frame(flights[flights["time_hour"] < until])


@pytest.fixture(scope="module")
def story(flights_frame, tmp_path_factory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("gate_story")
    loaded = load_spec(REPO / "include" / "pipelines" / "flights_delay.yaml")
    registry = Registry.from_url(f"sqlite:///{tmp / 'registry.db'}")
    pipe = Pipe(loaded, LocalStore(tmp / "artifacts"), registry, source_rows(flights_frame, FIRST_UNTIL), tmp)
    with pytest.MonkeyPatch.context() as mp:
        # The evaluation report (plots, permutation importance) is not this story; the verdicts are.
        mp.setattr(evaluation_report, "save_evaluation_report", lambda *a, prefix, **k: prefix)
        first = pipe.run("manual__2013-01-22T00:00:00+00:00")
        pipe.promote(first)
        pipe.frame = source_rows(flights_frame, SECOND_UNTIL)
        second = pipe.run("manual__2013-01-29T00:00:00+00:00")
        promoted = pipe.promote(second)
        # A re-run on unchanged data trains the same models (training is deterministic: the train DAG
        # test checks it), so it is the evaluation of run 2's models against the new champion.
        rerun = evaluate_candidates(
            loaded,
            pipe.store,
            run_id="manual__2013-01-29T06:00:00+00:00",
            run_key=run_key("manual__2013-01-29T06:00:00+00:00"),
            holdout_key=second.features.holdout_key,
            holdout_sha256=second.features.holdout_sha256,
            trained=second.trained,
            champion=registry.champion(pipe.name),
            champion_seq=registry.champion_seq(pipe.name),
        )
    yield {"pipe": pipe, "first": first, "second": second, "promoted": promoted, "rerun": rerun}
    registry.dispose()


def test_the_demo_spec_judges_on_intervals(story) -> None:
    assert story["pipe"].loaded.spec.gate.confidence == 0.95
    assert story["first"].verdict.decision == "first"


def test_a_big_gain_with_a_small_slice_slightly_down_is_promoted(story) -> None:
    v = story["second"].verdict

    improvement = rule(v, "improvement")
    assert improvement.figures["gain"] > 0.03 and improvement.figures["gain_low"] >= 0.001, improvement.detail
    # Some judged slice measures worse than the champion, yet inside its noise: the interval's lower
    # bound is within the tolerance (and below TIGHT, which the next test holds both gates to).
    down = [s for s in v.slices if s["judged"] and s["worsening"] > TIGHT]
    assert down, [(s["value"], s["worsening"]) for s in v.slices if s["judged"]]
    assert all(s["passed"] and s["worsening_low"] <= TIGHT < s["worsening_high"] for s in down), down
    assert (v.blessed, v.decision) == (True, "promote"), v.reasons
    assert story["promoted"].action == "promote"
    assert story["pipe"].registry.champion(story["pipe"].name).version == 2


def test_the_point_gate_would_have_rejected_it_on_that_slice(story) -> None:
    """The same figures, every slice held to a ``TIGHT`` tolerance: judged with ``confidence: null``
    (the point gate) the slice rule fails; on intervals it would pass, since no slice's whole
    interval of worsening lies beyond ``TIGHT`` (the verdict's intervals, judged at the demo's 0.95)."""
    second = story["second"]
    v = second.verdict
    spec = story["pipe"].loaded.spec
    slices = [s.model_copy(update={"max_regression": TIGHT}) for s in spec.gate.slices]
    gate = spec.gate.model_copy(update={"slices": slices, "confidence": None})
    point = spec.model_copy(update={"gate": gate})

    again = judge(
        point,
        run_id=v.run_id,
        scores=v.candidates,
        champion=story["pipe"].registry.get_version(story["pipe"].name, 1),
        champion_seq=v.champion_seq,
        champion_metrics=v.champion_metrics,
        champion_error=None,
        holdout_rows=v.holdout_rows,
        slices=_measures_of(v),
    )
    failed = [r.rule for r in again.rules if not r.passed]
    assert failed and all(r.startswith("slice:") for r in failed) and not again.blessed
    assert all(s["worsening_low"] <= TIGHT for s in v.slices if s["judged"]), "the interval gate would pass"


def test_a_rerun_on_unchanged_data_is_a_tie_that_promotes_nothing(story) -> None:
    v = story["rerun"]

    assert v.champion_status == "scored" and v.champion_version == 2
    improvement = rule(v, "improvement")
    assert not improvement.passed and improvement.detail.startswith("tie with champion")
    assert v.uncertainty["metrics"][v.primary_metric] == {"gain": 0.0, "low": 0.0, "high": 0.0, "defined": 1.0}
    assert all(s["worsening"] == 0 for s in v.slices if s["judged"])
    assert (v.blessed, v.decision) == (False, "reject")
    assert story["pipe"].registry.champion(story["pipe"].name).version == 2


def _measures_of(v: Any) -> list[Any]:
    """The verdict's flat slices back as the measured slices judge() takes."""
    out: dict[str, SliceMeasure] = {}
    for s in v.slices:
        m = out.setdefault(s["column"], SliceMeasure(s["column"], s["metric"], []))
        note = s["note"] if "undefined" in s["note"] else ""
        m.rows.append({k: s[k] for k in ("value", "rows", "candidate", "champion")} | {"note": note})
    return list(out.values())
