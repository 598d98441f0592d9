"""Tests of the gate's edge cases: slices, ties, a changed feature set, a champion that cannot be loaded.

Rules are judged from constructed figures (:func:`judge` is pure); the measuring and the whole
evaluation run for real on a tiny pipeline (real sklearn, a real store and SQLite registry).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from sklearn.metrics import roc_auc_score

from mlpipe.errors import FeatureError, SpecError
from mlpipe.spec import PipelineSpec, SliceSpec, load_spec, parse_spec
from mlpipe.stages import evaluation_report
from mlpipe.stages.evaluate import (
    FeatureChange,
    SliceMeasure,
    Verdict,
    evaluate_candidates,
    judge,
    load_verdict,
    measure_slices,
    model_input_columns,
    verdict_key,
)
from mlpipe.stages.metrics import compute_metrics
from mlpipe.stages.predict import predict
from mlpipe.stages.train import build_model
from mlpipe.storage import run_key
from unit.conftest import spec_dict, tiny_frame
from unit.test_train_evaluate_promote import TASK_SPECS, Pipe, binary_scores, champion_version, rule

SLICE = {"column": "cat", "max_regression": 0.02, "min_rows": 50}


def spec_with(**gate: Any) -> PipelineSpec:
    base = {"min_primary": 0.5, "max_regression": {"log_loss": 0.05}}
    return parse_spec(spec_dict(gate={**base, **gate}), Path("tiny.yaml"))


def measure(*rows: tuple[str, int, float, float | None], metric: str = "roc_auc", **kw: Any) -> SliceMeasure:
    """A measured slice column from (value, rows, candidate, champion) tuples; NaN means undefined."""
    return SliceMeasure(
        "cat",
        metric,
        [
            {"value": v, "rows": n, "candidate": c, "champion": h, "note": "" if not _nan(c, h) else "undefined"}
            for v, n, c, h in rows
        ],
        **kw,
    )


def _nan(*values: float | None) -> bool:
    return any(v is not None and math.isnan(v) for v in values)


def judged(
    spec: PipelineSpec, slices: list[SliceMeasure] | None = None, *, champion: bool = True, **kw: Any
) -> Verdict:
    kw.setdefault("champion_metrics", binary_scores(0.70) if champion else None)
    return judge(
        spec,
        run_id="manual__new",
        scores={"logreg": binary_scores(0.80), "hgb": binary_scores(0.60)},
        champion=champion_version() if champion else None,
        champion_seq=4 if champion else 0,
        champion_error=kw.pop("champion_error", None),
        holdout_rows=1000,
        slices=slices,
        **kw,
    )


# -- the spec ------------------------------------------------------------------------------------


class TestSliceSpec:
    def test_defaults(self) -> None:
        spec = spec_with(slices=[{"column": "cat", "max_regression": 0.02}])

        (s,) = spec.gate.slices
        assert (s.column, s.metric, s.max_regression, s.min_rows, s.max_slices) == ("cat", None, 0.02, 100, 50)

    @pytest.mark.parametrize(
        ("slices", "expected"),
        [
            ([{"column": "nope", "max_regression": 0.1}], ["gate.slices[0].column", "'nope' is not a feature column"]),
            ([{"column": "ts", "max_regression": 0.1}], ["gate.slices[0].column", "'ts' is a datetime feature"]),
            ([{"column": "y", "max_regression": 0.1}], ["gate.slices[0].column", "'y' is not a feature column"]),
            (
                [{"column": "cat", "max_regression": 0.1}, {"column": "cat", "max_regression": 0.2}],
                ["gate.slices[1].column", "sliced more than once"],
            ),
            (
                [{"column": "cat", "metric": "accuracy", "max_regression": 0.1}],
                ["gate.slices[0].metric", "'accuracy' is not the primary or a secondary metric"],
            ),
            ([{"column": "cat", "max_regression": -0.1}], ["gate.slices[0].max_regression", "greater than or equal"]),
            ([{"column": "cat", "max_regression": 0.1, "min_rows": 0}], ["gate.slices[0].min_rows"]),
            ([{"column": "cat"}], ["gate.slices[0].max_regression", "Field required"]),
            ([{"column": "cat", "max_regression": 0.1, "color": 1}], ["gate.slices[0].color"]),
        ],
    )
    def test_bad_slices_name_the_field(self, slices: list[dict[str, Any]], expected: list[str]) -> None:
        with pytest.raises(SpecError) as info:
            spec_with(slices=slices)
        for text in expected:
            assert text in str(info.value)


# -- slices, judged from constructed figures -----------------------------------------------------


class TestSliceRules:
    def test_a_slice_regression_is_caught_though_the_whole_holdout_improves(self) -> None:
        spec = spec_with(slices=[SLICE])

        v = judged(spec, [measure(("a", 500, 0.80, 0.79), ("b", 300, 0.70, 0.75), ("c", 200, 0.66, 0.67))])

        assert rule(v, "improvement").passed is True
        r = rule(v, "slice:cat")
        assert (r.passed, v.blessed, v.decision) == (False, False, "reject")
        assert r.figures["judged"] == 3 and r.figures["failed"] == 1
        assert [w["value"] for w in r.figures["worst"]] == ["b", "c", "a"]  # the worst first
        assert r.figures["worst"][0]["worsening"] == pytest.approx(0.05)
        assert "1 of 3 judged slice(s) worse than the champion by more than 0.02 roc_auc" in r.detail
        assert "cat=b 0.7000 vs 0.7500 (worse by 0.0500)" in r.detail
        assert v.reasons == [r.detail]
        by_value = {s["value"]: s for s in v.slices}
        assert (by_value["b"]["judged"], by_value["b"]["passed"]) == (True, False)
        assert (by_value["a"]["passed"], by_value["c"]["passed"]) == (True, True)
        assert by_value["a"]["worsening"] == pytest.approx(-0.01)  # better: negative worsening
        assert v.to_xcom()["slices"][0] == {
            "column": "cat", "value": "a", "rows": 500, "metric": "roc_auc", "candidate": 0.80, "champion": 0.79,
            "worsening": pytest.approx(-0.01), "judged": True, "passed": True, "note": "",
        }  # fmt: skip

    @pytest.mark.parametrize(
        ("candidate", "passed"),
        [(0.73, True), (0.72, True), (0.7199, False)],  # exactly the tolerance still passes
    )
    def test_tolerance_edge(self, candidate: float, passed: bool) -> None:
        v = judged(spec_with(slices=[SLICE]), [measure(("a", 500, candidate, 0.74))])

        assert rule(v, "slice:cat").passed is passed
        assert v.blessed is passed

    def test_a_minimize_metric_worsens_upwards(self) -> None:
        spec = spec_with(slices=[{**SLICE, "metric": "log_loss", "max_regression": 0.05}])

        worse = judged(spec, [measure(("a", 500, 0.60, 0.50), metric="log_loss")])
        better = judged(spec, [measure(("a", 500, 0.40, 0.50), metric="log_loss")])

        assert rule(worse, "slice:cat").passed is False
        assert worse.slices[0]["worsening"] == pytest.approx(0.10)
        assert rule(better, "slice:cat").passed is True
        assert better.slices[0]["worsening"] == pytest.approx(-0.10)

    def test_small_undefined_and_rare_slices_are_listed_not_judged(self) -> None:
        spec = spec_with(slices=[{**SLICE, "min_rows": 100, "max_slices": 3}])

        v = judged(
            spec,
            [
                measure(
                    ("a", 500, 0.80, 0.79),
                    ("b", 150, math.nan, 0.70),  # one class only: AUC undefined
                    ("c", 40, math.nan, math.nan),  # too small: not even measured
                    other_values=7,
                    other_rows=90,
                )
            ],
        )

        r = rule(v, "slice:cat")
        assert r.passed is True and v.blessed is True
        assert r.figures["judged"] == 1 and r.figures["not_judged"] == 2 + 7
        assert "not judged: 1 too small (< 100 rows), 1 with roc_auc undefined" in r.detail
        assert "7 rarer values beyond max_slices 3 (90 rows)" in r.detail
        b, c = v.slices[1], v.slices[2]
        assert (b["judged"], b["worsening"], b["note"]) == (False, None, "undefined, not judged")
        assert (c["judged"], c["note"]) == (False, "too small (< 100 rows), not judged")
        assert v.to_xcom()["slices"][1]["candidate"] is None  # NaN is not JSON

    def test_a_terrible_slice_too_small_to_judge_does_not_fail(self) -> None:
        v = judged(spec_with(slices=[SLICE]), [measure(("a", 500, 0.80, 0.79), ("tiny", 49, 0.10, 0.99))])

        assert rule(v, "slice:cat").passed is True
        assert v.slices[1]["judged"] is False

    def test_nothing_judged_says_so(self) -> None:
        v = judged(spec_with(slices=[SLICE]), [measure(("a", 10, 0.80, 0.79))])

        assert rule(v, "slice:cat").passed is True
        assert rule(v, "slice:cat").detail.startswith("cat: no slice could be judged; not judged: 1 too small")

    def test_first_run_reports_slices_without_judging(self) -> None:
        v = judged(spec_with(slices=[SLICE]), [measure(("a", 500, 0.80, None), ("b", 300, 0.10, None))], champion=False)

        assert (v.blessed, v.decision) == (True, "first")
        r = rule(v, "slice:cat")
        assert r.passed is True
        assert "first run, no champion to compare slices with; 2 slice(s) reported, none judged" in r.detail
        assert [s["judged"] for s in v.slices] == [False, False]
        assert v.slices[1]["candidate"] == 0.10 and v.slices[1]["champion"] is None

    def test_an_unavailable_champion_reports_slices_without_judging(self) -> None:
        v = judged(
            spec_with(slices=[SLICE]),
            [measure(("a", 500, 0.80, None))],
            champion_metrics=None,
            champion_error="FileNotFoundError: gone",
        )

        assert (v.blessed, v.champion_status) == (False, "unavailable")
        assert rule(v, "slice:cat").passed is True
        assert "champion v3 not scored" in rule(v, "slice:cat").detail
        assert v.reasons == [rule(v, "champion").detail]

    def test_without_slices_in_the_spec_the_verdict_has_none(self) -> None:
        assert judged(spec_with()).slices is None
        assert not [r for r in judged(spec_with()).rules if r.rule.startswith("slice:")]


# -- ties --------------------------------------------------------------------------------------


class TestTies:
    def test_a_tie_with_the_champion_is_not_an_improvement(self) -> None:
        v = judged(spec_with(), champion_metrics=binary_scores(0.80))

        r = rule(v, "improvement")
        assert (r.passed, v.blessed) == (False, False)
        assert r.detail.startswith("tie with champion: logreg roc_auc=0.8000 equals champion v3's")
        assert r.figures["gain"] == 0

    def test_tied_candidates_go_to_the_first_listed_and_the_verdict_says_so(self) -> None:
        spec = spec_with()

        v = judge(
            spec,
            run_id="r",
            scores={"logreg": binary_scores(0.75), "hgb": binary_scores(0.75)},
            champion=None,
            champion_seq=0,
            champion_metrics=None,
            champion_error=None,
            holdout_rows=10,
        )

        assert v.best_candidate == "logreg"
        assert rule(v, "tie").passed is True
        assert rule(v, "tie").detail == "logreg, hgb tie on roc_auc=0.7500: logreg, listed first in the spec, is taken"
        assert v.blessed is True

    def test_no_tie_rule_without_a_tie(self) -> None:
        assert not [r for r in judged(spec_with()).rules if r.rule == "tie"]


# -- a changed feature set -----------------------------------------------------------------------


class TestFeatureSetJudged:
    def test_changed_but_readable_is_informational(self) -> None:
        change = FeatureChange(["cat", "ts"], ["num", "cat", "ts"], missing=[])

        v = judged(spec_with(), feature_change=change)

        r = rule(v, "feature_set")
        assert r.passed is True and v.blessed is True and v.champion_status == "scored"
        assert "feature set changed since champion v3: +num;" in r.detail
        assert r.figures["added"] == ["num"] and r.figures["removed"] == []

    def test_unreadable_champion_fails_with_the_columns_and_no_crash(self) -> None:
        change = FeatureChange(["num", "cat", "ts", "old"], ["num", "cat", "ts"], missing=["old"])

        v = judged(spec_with(), feature_change=change, champion_metrics=None)

        r = rule(v, "feature_set")
        assert (r.passed, v.blessed, v.decision, v.champion_status) == (False, False, "reject", "unavailable")
        assert "(\u2212old)" in r.detail and "['old'], which this run's holdout lacks" in r.detail
        assert "force the promotion" in r.detail
        assert not [x for x in v.rules if x.rule in ("champion", "improvement")]
        assert v.reasons == [r.detail]

    def test_unchanged_feature_set_adds_no_rule(self) -> None:
        change = FeatureChange(["num", "cat", "ts"], ["num", "cat", "ts"], missing=[])

        assert not [r for r in judged(spec_with(), feature_change=change).rules if r.rule == "feature_set"]


# -- measuring, for real --------------------------------------------------------------------------


class TestMeasureSlices:
    def test_each_value_scored_on_its_own_rows(self) -> None:
        spec = spec_with(slices=[{"column": "cat", "max_regression": 0.1, "min_rows": 30, "max_slices": 4}])
        frame = tiny_frame("binary", 400, seed=3)
        frame.loc[frame.index[::7], "cat"] = None  # a (missing) slice
        X, y = frame[spec.features.columns], frame["y"]
        model = build_model(spec, spec.candidates[0]).fit(X[:250], y[:250])
        other = build_model(spec, spec.candidates[1]).fit(X[:250], y[:250])
        X, y = X[250:].reset_index(drop=True), y[250:].reset_index(drop=True)
        best, champ = predict(spec, model, X), predict(spec, other, X)

        (m,) = measure_slices(spec, X, y, best, champ)

        # Most frequent first, equal counts by value; only the first max_slices listed, the rest counted.
        counts = sorted(X["cat"].fillna("(missing)").value_counts().items(), key=lambda kv: (-kv[1], kv[0]))
        assert [(r["value"], r["rows"]) for r in m.rows] == counts[:4]
        assert (m.other_values, m.other_rows) == (len(counts) - 4, sum(n for _, n in counts[4:])) != (0, 0)
        assert m.rows[3]["value"] == "(missing)" and m.rows[3]["rows"] < 30  # listed, too small to measure
        for row in m.rows:
            mask = (X["cat"].fillna("(missing)") == row["value"]).to_numpy()
            if row["rows"] < 30:
                assert math.isnan(row["candidate"]) and math.isnan(row["champion"])
                continue
            assert row["candidate"] == pytest.approx(roc_auc_score(y[mask], best.score[mask]))
            assert row["champion"] == pytest.approx(roc_auc_score(y[mask], champ.score[mask]))

    def test_a_one_class_slice_is_undefined_with_a_note(self) -> None:
        spec = spec_with(slices=[{"column": "cat", "max_regression": 0.1, "min_rows": 5}])
        frame = tiny_frame("binary", 200, seed=2)
        X, y = frame[spec.features.columns], frame["y"].copy()
        y[X["cat"] == "b"] = 1
        model = build_model(spec, spec.candidates[0]).fit(X, y)

        (m,) = measure_slices(spec, X, y, predict(spec, model, X), None)

        by_value = {r["value"]: r for r in m.rows}
        assert math.isnan(by_value["b"]["candidate"])
        assert by_value["b"]["note"] == "roc_auc undefined on this slice (one class only)"
        assert by_value["b"]["champion"] is None
        assert not math.isnan(by_value["a"]["candidate"]) and by_value["a"]["note"] == ""


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_slices_of_other_tasks_match_scoring_the_slice_directly(task: str) -> None:
    changes = dict(TASK_SPECS[task])
    primary = changes["metrics"]["primary"]
    changes["gate"] = {**changes["gate"], "slices": [{"column": "cat", "max_regression": 0.1, "min_rows": 20}]}
    spec = parse_spec(spec_dict(**changes), Path("tiny.yaml"))
    frame = tiny_frame(task, 300, seed=5)
    X, y = frame[spec.features.columns], frame["y"]
    best = build_model(spec, spec.candidates[0]).fit(X[:200], y[:200])
    champ = build_model(spec, spec.candidates[1]).fit(X[:200], y[:200])
    X, y = X[200:].reset_index(drop=True), y[200:].reset_index(drop=True)

    (m,) = measure_slices(spec, X, y, predict(spec, best, X), predict(spec, champ, X))

    assert m.metric == primary and {r["value"] for r in m.rows} >= {"a", "b", "c"}
    for row in (r for r in m.rows if r["rows"] >= 20):
        mask = (X["cat"] == row["value"]).to_numpy()
        assert row["candidate"] == pytest.approx(compute_metrics(spec, best, X[mask], y[mask])[primary])
        assert row["champion"] == pytest.approx(compute_metrics(spec, champ, X[mask], y[mask])[primary])


def test_model_input_columns_are_what_its_transformer_reads() -> None:
    spec = spec_with()
    frame = tiny_frame("binary", 60)
    X = frame[[*spec.features.columns, "id"]]  # an extra column the model ignores
    model = build_model(spec, spec.candidates[0]).fit(X, frame["y"])

    assert sorted(model_input_columns(model)) == sorted(spec.features.columns)
    assert model_input_columns(object()) is None


# -- the whole evaluation ------------------------------------------------------------------------


@pytest.fixture
def pipe_of(include_tree, store, sqlite_registry, tmp_path, monkeypatch):
    """``pipe_of(report=False, **changes)``: a tiny binary pipeline of 240 rows; one store and registry.

    The evaluation report (plots, permutation importance: most of an evaluation's time) is drawn
    only with ``report=True``; the other tests are about the verdict.
    """
    frame = tiny_frame("binary", 240, seed=4)
    real = evaluation_report.save_evaluation_report

    def make(report: bool = False, **changes: Any) -> Pipe:
        stub = lambda *a, prefix, **k: prefix  # noqa: E731
        monkeypatch.setattr(evaluation_report, "save_evaluation_report", real if report else stub)
        loaded = load_spec(include_tree(spec_dict(**changes)))
        return Pipe(loaded, store, sqlite_registry, frame, tmp_path)

    return make


GATE = {"min_primary": 0.5, "slices": [{"column": "cat", "max_regression": 0.02, "min_rows": 10}]}


class TestEvaluateSlices:
    def test_first_run_reports_then_the_next_judges_and_the_report_shows_them(self, pipe_of) -> None:
        pipe = pipe_of(gate=GATE)

        first = pipe.run("manual__a")

        v = first.verdict
        assert (v.blessed, v.decision) == (True, "first")
        assert "first run" in rule(v, "slice:cat").detail
        assert v.slices and {s["value"] for s in v.slices} <= set(pipe.frame["cat"])
        assert all(not s["judged"] for s in v.slices)
        assert load_verdict(pipe.store, pipe.name, first.key)["slices"][0]["column"] == "cat"
        pipe.promote(first)

        pipe = pipe_of(report=True, gate=GATE)
        second = pipe.run("manual__b")  # same data and seeds: the champion ties on every slice

        v = second.verdict
        assert v.champion_status == "scored"
        judged_slices = [s for s in v.slices if s["judged"]]
        assert judged_slices and all(s["worsening"] == pytest.approx(0) for s in judged_slices)
        assert rule(v, "slice:cat").passed is True
        assert rule(v, "improvement").detail.startswith("tie with champion")
        page = Path(pipe.store.path(pipe.store.key_of(v.report_uri))).read_text()
        assert "<h2>Slices</h2>" in page and "<code>slice:cat</code>" in page
        top = judged_slices[0]
        assert f"worst [value {top['value']} rows {top['rows']} candidate " in page  # figures, not JSON
        for s in v.slices:
            assert f'<td>cat<td>{s["value"]}<td class="num">{s["rows"]:,}<td' in page
        assert "-0.0000" not in page

    def test_with_a_confidence_the_verdict_and_report_carry_the_intervals(self, pipe_of) -> None:
        gate = {**GATE, "confidence": 0.9, "max_regression": {"log_loss": 0.05}}
        pipe_of(gate=gate).promote(pipe_of(gate=gate).run("manual__a"))
        pipe = pipe_of(report=True, gate=gate, candidates=[spec_dict()["candidates"][1]])  # hgb, not logreg

        v = pipe.run("manual__b").verdict

        assert v.champion_status == "scored" and v.confidence == 0.9
        assert v.uncertainty["resamples"] == 1000 and set(v.uncertainty["metrics"]) == {"roc_auc", "log_loss", "brier"}
        improvement = rule(v, "improvement")
        i = v.uncertainty["metrics"]["roc_auc"]
        assert (improvement.figures["gain_low"], improvement.figures["gain_high"]) == (i["low"], i["high"])
        assert f"[{i['low']:+.4f}, {i['high']:+.4f}] (90% interval), lower bound" in improvement.detail
        assert "worsening_low" in rule(v, "regression:log_loss").figures
        assert all("worsening_low" in s for s in v.slices)
        saved = load_verdict(pipe.store, pipe.name, run_key("manual__b"))
        assert saved["uncertainty"]["metrics"]["roc_auc"]["low"] == pytest.approx(i["low"])
        report = Path(pipe.store.path(pipe.store.key_of(v.report_uri)))
        page = report.read_text()
        assert (report.parent / "gain.png").stat().st_size > 1000 and 'src="gain.png"' in page
        assert (
            "gain of the best (90% interval)" in page
            and f"{i['gain']:+.4f} [{i['low']:+.4f}, {i['high']:+.4f}]" in page
        )
        judged = [s for s in v.slices if s["judged"]]
        assert ('src="slices.png"' in page) is bool(judged)
        for s in judged:
            assert f"{s['worsening']:+.4f} [{s['worsening_low']:+.4f}, {s['worsening_high']:+.4f}]" in page

    def test_a_slice_column_missing_from_the_holdout_is_an_error_naming_the_field(self, pipe_of) -> None:
        pipe = pipe_of()
        run = pipe.run("manual__a")
        # The spec refuses such a column; a spec object changed after validation is the only way in.
        spec = pipe.loaded.spec
        gate = spec.gate.model_copy(update={"slices": [SliceSpec(column="id", max_regression=0.1)]})
        loaded = pipe.loaded.model_copy(update={"spec": spec.model_copy(update={"gate": gate})})

        with pytest.raises(FeatureError, match=r"gate\.slices\[0\]\.column: 'id' is not in this run's holdout"):
            evaluate_candidates(
                loaded,
                pipe.store,
                run_id="manual__b",
                run_key="manual__b",
                holdout_key=run.features.holdout_key,
                holdout_sha256=run.features.holdout_sha256,
                trained=run.trained,
                champion=None,
                champion_seq=0,
            )
        assert not pipe.store.exists(verdict_key(pipe.name, "manual__b"))


class TestEvaluateFeatureSet:
    def test_a_feature_added_since_the_champion_still_scores_it(self, pipe_of) -> None:
        narrow = {"numeric": [], "categorical": ["cat"], "datetime": spec_dict()["features"]["datetime"]}
        old = pipe_of(features=narrow)
        old.promote(old.run("manual__a"))

        v = pipe_of().run("manual__b").verdict

        assert v.champion_status == "scored" and v.champion_metrics is not None
        r = rule(v, "feature_set")
        assert r.passed is True and r.figures["added"] == ["num"] and r.figures["removed"] == []

    def test_a_feature_removed_since_the_champion_fails_clearly(self, pipe_of) -> None:
        old = pipe_of()
        old.promote(old.run("manual__a"))
        narrow = {"numeric": [], "categorical": ["cat"], "datetime": spec_dict()["features"]["datetime"]}

        v = pipe_of(features=narrow, gate=GATE).run("manual__b").verdict

        assert (v.blessed, v.champion_status, v.champion_metrics) == (False, "unavailable", None)
        r = rule(v, "feature_set")
        assert r.passed is False and r.figures["missing"] == ["num"] and r.figures["removed"] == ["num"]
        assert "cannot be scored on this holdout" in r.detail
        assert "champion v1 not scored" in rule(v, "slice:cat").detail


class TestUnloadableChampion:
    @pytest.mark.parametrize("damage", ["missing", "checksum"])
    def test_is_unavailable_with_the_reason(self, pipe_of, damage: str) -> None:
        pipe = pipe_of(gate=GATE)
        pipe.promote(pipe.run("manual__a"))
        champion = pipe.registry.champion(pipe.name)
        path = Path(pipe.store.path(champion.artifact_key))
        if damage == "missing":
            path.unlink()
        else:
            path.write_bytes(path.read_bytes() + b"!")

        v = pipe.run("manual__b").verdict

        assert (v.blessed, v.decision, v.champion_status, v.champion_metrics) == (False, "reject", "unavailable", None)
        assert v.reasons == [rule(v, "champion").detail]
        assert "champion v1 could not be scored" in v.reasons[0]
        why = "ArtifactIntegrityError: artifact" if damage == "checksum" else "FileNotFoundError: no artifact"
        assert why in v.reasons[0]
        assert ("does not match its recorded sha256" in v.reasons[0]) is (damage == "checksum")
        assert [m.version for m in pipe.registry.list_versions(pipe.name)] == [1]
        assert all(not s["judged"] for s in v.slices)
