"""Tests of training, evaluation (the gate) and promotion, end to end for each task type and rule by rule."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import pytest
from sklearn.pipeline import Pipeline

from mlpipe import layout
from mlpipe.contracts import FeatureSet, PromotionResult, Snapshot, TrainedCandidate, Verdict
from mlpipe.errors import ArtifactIntegrityError, ChampionChangedError, RegistryError
from mlpipe.registry import ModelVersion, Registry
from mlpipe.spec import LoadedSpec, PipelineSpec, load_spec
from mlpipe.stages.evaluate import evaluate_candidates, judge, load_verdict
from mlpipe.stages.features import build_features, read_split
from mlpipe.stages.promote import (
    PromotionError,
    approval_answer,
    lineage_of,
    promote_model,
    result_key,
)
from mlpipe.stages.train import load_model, train_candidate
from mlpipe.storage import LocalStore, run_key

TASK_SPECS: dict[str, dict[str, Any]] = {
    "binary": {},
    "multiclass": {
        "target": {"column": "y", "task": "multiclass"},
        "candidates": [
            {"name": "logreg", "estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 300}},
            {"name": "forest", "estimator": "sklearn.ensemble.RandomForestClassifier", "params": {"n_estimators": 5}},
        ],
        "metrics": {"primary": "log_loss", "secondary": ["accuracy", "f1_macro"]},
        "gate": {"min_primary": 5.0, "max_regression": {"accuracy": 0.05}},
    },
    "regression": {
        "target": {"column": "y", "task": "regression"},
        "candidates": [
            {"name": "ridge", "estimator": "sklearn.linear_model.Ridge"},
            {"name": "gbr", "estimator": "sklearn.ensemble.GradientBoostingRegressor", "params": {"n_estimators": 10}},
        ],
        "metrics": {"primary": "rmse", "secondary": ["r2", "mae"]},
        "gate": {"min_primary": 100.0, "max_regression": {"r2": 0.1}},
    },
}


@dataclass
class Run:
    """What one training run produced, stage by stage, as the operators pass it on (contracts)."""

    run_id: str
    key: str
    snapshot: Snapshot
    features: FeatureSet
    trained: list[TrainedCandidate]
    verdict: Verdict


class Pipe:
    """A tiny pipeline of one task type: its spec, store and registry, and a way to run it."""

    def __init__(self, loaded: LoadedSpec, store: LocalStore, registry: Registry, frame: Any, tmp: Path) -> None:
        self.loaded, self.store, self.registry, self.frame, self.tmp = loaded, store, registry, frame, tmp

    @property
    def name(self) -> str:
        return self.loaded.spec.name

    def run(self, run_id: str) -> Run:
        key = run_key(run_id)
        path = self.tmp / f"{key}.parquet"
        self.frame.to_parquet(path, index=False)
        art = self.store.put_file(layout.snapshot_key(self.name, key), path)
        snapshot = Snapshot(art.key, art.uri, art.sha256, len(self.frame), list(self.frame.columns), "x", False, 0.0)
        features = build_features(
            self.loaded, self.store, run_key=key, snapshot_key=art.key, snapshot_sha256=art.sha256
        )
        trained = [
            train_candidate(
                self.loaded,
                self.store,
                run_key=key,
                candidate=c.name,
                train_key=features.train_key,
                train_sha256=features.train_sha256,
            )
            for c in self.loaded.spec.candidates
        ]
        seq = self.registry.champion_seq(self.name)
        verdict = evaluate_candidates(
            self.loaded,
            self.store,
            run_id=run_id,
            run_key=key,
            holdout_key=features.holdout_key,
            holdout_sha256=features.holdout_sha256,
            trained=trained,
            champion=self.registry.champion(self.name),
            champion_seq=seq,
        )
        return Run(run_id, key, snapshot, features, trained, verdict)

    def promote(
        self, run: Run, verdict: Verdict | None = None, force_reason: str | None = None, **by_hand: Any
    ) -> PromotionResult:
        return promote_model(
            self.registry,
            self.store,
            verdict=replace(verdict or run.verdict, force_reason=force_reason),
            trained=run.trained,
            snapshot=run.snapshot,
            spec_sha256=self.loaded.sha256(),
            code_version="test",
            run_id=run.run_id,
            lineage=lineage_of(run.snapshot, run.features, {"kind": "manual"}),
            actor="tests",
            **by_hand,
        )

    def model_files(self) -> list[str]:
        return self.store.list(f"{self.name}/models")


@pytest.fixture
def make_pipe(include_tree, make_spec, make_frame, store, sqlite_registry, tmp_path):
    def make(task: str = "binary") -> Pipe:
        loaded = load_spec(include_tree(make_spec(**TASK_SPECS[task])))
        return Pipe(loaded, store, sqlite_registry, make_frame(task), tmp_path)

    return make


# -- end to end, per task type ---------------------------------------------------------------------


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_each_task_type_end_to_end(make_pipe, task: str) -> None:
    pipe = make_pipe(task)

    first = pipe.run("manual__2026-01-01T00:00:00+00:00")

    v = first.verdict
    assert (v.blessed, v.decision, v.champion_status, v.champion_seq) == (True, "first", "none", 0)
    assert set(v.candidates) == {c.name for c in pipe.loaded.spec.candidates}
    primary = pipe.loaded.spec.primary_metric
    assert all(not math.isnan(m[primary]) for m in v.candidates.values())
    assert load_verdict(pipe.store, pipe.name, first.key)["blessed"] is True
    # The evaluation report is kept with the run, where the verdict says, with its task's plots.
    report = f"{pipe.name}/runs/{first.key}/evaluate/report"
    assert (
        v.report_uri
        == pipe.store.uri(f"{report}/index.html")
        == load_verdict(pipe.store, pipe.name, first.key)["report_uri"]
    )
    plots = {k.rsplit("/", 1)[1] for k in pipe.store.list(report) if k.endswith(".png")}
    curves = (
        {"predicted_actual.png", "residuals.png"} if task == "regression" else {"roc.png", "pr.png", "confusion.png"}
    )
    assert curves | {"importance.png"} <= plots

    result = pipe.promote(first)

    assert (result.promoted, result.action, result.version, result.previous_version) == (True, "first", 1, None)
    champion = pipe.registry.champion(pipe.name)
    assert champion.version == 1 and champion.run_id == first.run_id
    assert champion.candidate == v.best_candidate
    assert champion.data_sha256 == first.snapshot.sha256
    assert champion.lineage["features"]["train_rows"] == first.features.train_rows
    assert pipe.model_files() == [f"{pipe.name}/models/v1/{first.key}/model.joblib"]
    model = load_model(pipe.store, champion.artifact_key, champion.artifact_sha256)
    holdout = read_split(pipe.store, first.features.holdout_key, first.features.holdout_sha256)
    assert len(model.predict(holdout.drop(columns=["y"]))) == len(holdout)

    # Same data, same seeds: the next run ties the champion, and a tie does not replace it.
    second = pipe.run("scheduled__2026-01-02T00:00:00+00:00")

    assert second.verdict.champion_status == "scored"
    assert second.verdict.champion_seq == 1
    assert second.verdict.champion_metrics == pytest.approx(v.candidates[v.best_candidate], nan_ok=True)
    assert (second.verdict.blessed, second.verdict.decision) == (False, "reject")
    skipped = pipe.promote(second)
    assert (skipped.promoted, skipped.action) == (False, "skipped")
    assert [m.version for m in pipe.registry.list_versions(pipe.name)] == [1]


# -- training ------------------------------------------------------------------------------------


class TestTrain:
    def test_model_is_a_pipeline_verified_on_load(self, make_pipe) -> None:
        pipe = make_pipe()
        run = pipe.run("manual__a")
        t = run.trained[0]

        model = load_model(pipe.store, t.model_key, t.model_sha256)

        assert isinstance(model, Pipeline)
        assert [name for name, _ in model.steps] == ["features", "model"]
        assert t.model_key == f"tiny/runs/{run.key}/train/{t.candidate}/model.joblib"
        assert t.train_rows == run.features.train_rows
        assert t.params["max_iter"] == 200
        with open(pipe.store.path(t.model_key), "ab") as fh:
            fh.write(b"tampered")
        with pytest.raises(ArtifactIntegrityError, match="does not match its recorded sha256"):
            load_model(pipe.store, t.model_key, t.model_sha256)

    def test_load_model_refuses_what_is_not_a_pipeline(self, store: LocalStore, tmp_path: Path) -> None:
        path = tmp_path / "x.joblib"
        joblib.dump({"not": "a pipeline"}, path)
        art = store.put_file("tiny/models/v1/x/model.joblib", path)

        with pytest.raises(ArtifactIntegrityError, match="is not a scikit-learn Pipeline"):
            load_model(store, art.key, art.sha256)

    def test_a_finished_result_is_reused(self, make_pipe) -> None:
        pipe = make_pipe()
        run = pipe.run("manual__a")
        first = run.trained[1]
        model_path = pipe.store.path(first.model_key)
        stamp = model_path.stat().st_mtime_ns

        again = train_candidate(
            pipe.loaded,
            pipe.store,
            run_key=run.key,
            candidate=first.candidate,
            train_key=run.features.train_key,
            train_sha256=run.features.train_sha256,
        )

        assert again == first
        assert model_path.stat().st_mtime_ns == stamp

    def test_a_damaged_result_is_refitted(self, make_pipe) -> None:
        pipe = make_pipe()
        run = pipe.run("manual__a")
        first = run.trained[0]
        pipe.store.put_bytes(first.model_key, b"damaged")

        again = train_candidate(
            pipe.loaded,
            pipe.store,
            run_key=run.key,
            candidate=first.candidate,
            train_key=run.features.train_key,
            train_sha256=run.features.train_sha256,
        )

        assert again.model_sha256 == pipe.store.sha256(first.model_key)
        assert isinstance(load_model(pipe.store, again.model_key, again.model_sha256), Pipeline)


# -- the gate --------------------------------------------------------------------------------------


def gate_spec(make_spec, task: str = "binary", **gate: Any) -> PipelineSpec:
    changes = dict(TASK_SPECS[task])
    changes["gate"] = gate
    return PipelineSpec.model_validate(make_spec(**changes))


def champion_version(version: int = 3) -> ModelVersion:
    return ModelVersion(
        pipeline="tiny",
        version=version,
        run_id="manual__old",
        candidate="logreg",
        estimator="sklearn.linear_model.LogisticRegression",
        params={},
        metrics={},
        data_sha256="d" * 64,
        data_rows=10,
        spec_sha256="s" * 64,
        code_version="old",
        artifact_key="file:///nowhere/model.joblib",
        artifact_sha256="a" * 64,
    )


def verdict_of(spec: PipelineSpec, scores, champion_metrics=None, *, champion=True, error=None) -> Verdict:
    return judge(
        spec,
        run_id="manual__new",
        scores=scores,
        champion=champion_version() if champion else None,
        champion_seq=4 if champion else 0,
        champion_metrics=champion_metrics,
        champion_error=error,
        holdout_rows=10,
    )


def rule(verdict: Verdict, name: str):
    return next(r for r in verdict.rules if r.rule == name)


def binary_scores(auc: float, log_loss: float = 0.5, brier: float = 0.2) -> dict[str, float]:
    return {"roc_auc": auc, "log_loss": log_loss, "brier": brier}


class TestJudge:
    def test_first_run_is_blessed_when_the_floor_passes(self, make_spec) -> None:
        spec = gate_spec(make_spec, min_primary=0.6)

        v = verdict_of(spec, {"logreg": binary_scores(0.7), "hgb": binary_scores(0.65)}, champion=False)

        assert (v.blessed, v.decision, v.best_candidate, v.champion_status) == (True, "first", "logreg", "none")
        assert rule(v, "floor").passed and rule(v, "champion").passed
        assert v.reasons == [r.detail for r in v.rules]

    def test_floor_fail(self, make_spec) -> None:
        spec = gate_spec(make_spec, min_primary=0.8)

        v = verdict_of(spec, {"logreg": binary_scores(0.7), "hgb": binary_scores(0.75)}, champion=False)

        assert (v.blessed, v.decision, v.best_candidate) == (False, "reject", "hgb")
        assert rule(v, "floor").passed is False
        assert v.reasons == ["hgb roc_auc=0.7500 misses the floor 0.8"]

    def test_floor_of_a_minimize_metric(self, make_spec) -> None:
        spec = gate_spec(make_spec, "regression", min_primary=1.0)
        ok = {"ridge": {"rmse": 0.9, "r2": 0.5, "mae": 0.5}, "gbr": {"rmse": 1.5, "r2": 0.1, "mae": 1.0}}
        bad = {"ridge": {"rmse": 1.1, "r2": 0.5, "mae": 0.5}, "gbr": {"rmse": 1.5, "r2": 0.1, "mae": 1.0}}

        assert verdict_of(spec, ok, champion=False).best_candidate == "ridge"
        assert verdict_of(spec, ok, champion=False).blessed is True
        assert verdict_of(spec, bad, champion=False).blessed is False

    @pytest.mark.parametrize(
        ("candidate", "champion", "min_improvement", "blessed"),
        [
            (0.80, 0.70, 0.0, True),
            (0.80, 0.70, 0.05, True),
            (0.80, 0.78, 0.05, False),  # better, but not by enough
            (0.70, 0.70, 0.0, False),  # a tie does not promote
            (0.65, 0.70, 0.0, False),  # worse
        ],
    )
    def test_improvement(self, make_spec, candidate, champion, min_improvement, blessed) -> None:
        spec = gate_spec(make_spec, min_improvement=min_improvement)

        v = verdict_of(spec, {"logreg": binary_scores(candidate), "hgb": binary_scores(0.5)}, binary_scores(champion))

        assert v.blessed is blessed
        assert v.decision == ("promote" if blessed else "reject")
        assert rule(v, "improvement").passed is blessed
        assert v.champion_status == "scored"
        assert v.champion_seq == 4 and v.champion_version == 3

    @pytest.mark.parametrize(
        ("task", "primary", "candidate", "champion", "blessed"),
        [
            ("multiclass", "log_loss", 0.40, 0.50, True),  # lower log loss is better
            ("multiclass", "log_loss", 0.50, 0.40, False),
            ("regression", "rmse", 1.0, 2.0, True),
            ("regression", "rmse", 2.0, 1.0, False),
        ],
    )
    def test_minimize_metrics(self, make_spec, task, primary, candidate, champion, blessed) -> None:
        spec = gate_spec(make_spec, task)
        names = [spec.primary_metric, *spec.secondary_metrics]
        base = {n: 0.5 for n in names}
        cand_names = [c.name for c in spec.candidates]
        scores = {cand_names[0]: {**base, primary: candidate}, cand_names[1]: {**base, primary: candidate * 3}}

        v = verdict_of(spec, scores, {**base, primary: champion})

        assert v.best_candidate == cand_names[0]  # the lower value wins
        assert v.blessed is blessed
        assert rule(v, "improvement").figures["gain"] == pytest.approx(champion - candidate)

    def test_secondary_regression_beyond_tolerance_fails(self, make_spec) -> None:
        spec = gate_spec(make_spec, max_regression={"log_loss": 0.05, "brier": 0.01})
        champion = binary_scores(0.70, log_loss=0.50, brier=0.20)

        within = verdict_of(spec, {"logreg": binary_scores(0.8, 0.54, 0.19), "hgb": binary_scores(0.5)}, champion)
        beyond = verdict_of(spec, {"logreg": binary_scores(0.8, 0.60, 0.19), "hgb": binary_scores(0.5)}, champion)

        assert within.blessed is True
        assert rule(within, "regression:log_loss").passed is True
        assert beyond.blessed is False
        assert rule(beyond, "regression:log_loss").passed is False
        assert rule(beyond, "regression:log_loss").figures["worsening"] == pytest.approx(0.10)
        assert rule(beyond, "regression:brier").passed is True  # improved: no worsening
        assert any("log_loss" in reason and "tolerance 0.05" in reason for reason in beyond.reasons)

    def test_secondary_regression_of_a_maximize_metric(self, make_spec) -> None:
        spec = gate_spec(make_spec, "regression", max_regression={"r2": 0.05})
        champion = {"rmse": 2.0, "r2": 0.80, "mae": 1.0}

        v = verdict_of(spec, {"ridge": {"rmse": 1.0, "r2": 0.70, "mae": 1.0}, "gbr": champion}, champion)

        assert rule(v, "improvement").passed is True
        assert rule(v, "regression:r2").passed is False
        assert v.blessed is False

    def test_champion_unavailable_is_not_blessed_with_the_reason(self, make_spec) -> None:
        spec = gate_spec(make_spec)

        v = verdict_of(
            spec,
            {"logreg": binary_scores(0.99), "hgb": binary_scores(0.5)},
            None,
            error="ArtifactIntegrityError: artifact file:///x does not match its recorded sha256",
        )

        assert (v.blessed, v.decision, v.champion_status) == (False, "reject", "unavailable")
        assert v.champion_version == 3
        assert len(v.reasons) == 1
        assert "champion v3 could not be scored (ArtifactIntegrityError" in v.reasons[0]
        assert "force the promotion" in v.reasons[0]

    def test_undefined_primary_everywhere_is_rejected(self, make_spec) -> None:
        spec = gate_spec(make_spec)

        v = verdict_of(spec, {"logreg": binary_scores(math.nan), "hgb": binary_scores(math.nan)}, champion=False)

        assert (v.blessed, v.best_candidate) == (False, None)
        assert v.to_xcom()["candidates"]["logreg"]["roc_auc"] is None  # NaN is not JSON

    def test_an_undefined_candidate_is_skipped_and_ties_go_to_the_first_listed(self, make_spec) -> None:
        spec = gate_spec(make_spec)
        assert verdict_of(spec, {"logreg": binary_scores(math.nan), "hgb": binary_scores(0.6)}, champion=False)\
            .best_candidate == "hgb"  # fmt: skip
        assert verdict_of(spec, {"logreg": binary_scores(0.6), "hgb": binary_scores(0.6)}, champion=False)\
            .best_candidate == "logreg"  # fmt: skip


def tamper_champion(pipe: Pipe) -> None:
    """Append a byte to the champion's artifact: its sha256 no longer matches the registry's."""
    champion = pipe.registry.champion(pipe.name)
    with open(pipe.store.path(champion.artifact_key), "ab") as fh:
        fh.write(b"!")


# -- evaluation against a champion -----------------------------------------------------------------


class TestEvaluate:
    def test_a_tampered_champion_is_unavailable(self, make_pipe) -> None:
        pipe = make_pipe()
        pipe.promote(pipe.run("manual__a"))
        tamper_champion(pipe)

        v = pipe.run("manual__b").verdict

        assert (v.blessed, v.champion_status, v.champion_metrics) == (False, "unavailable", None)
        assert "ArtifactIntegrityError" in v.reasons[0]

    def test_each_model_predicts_the_holdout_once_and_a_byte_identical_champion_not_at_all(
        self, make_pipe, monkeypatch, caplog
    ) -> None:
        from mlpipe.stages import metrics

        pipe = make_pipe()
        first = pipe.run("manual__a")
        pipe.promote(first)
        passes: list[int] = []
        real = metrics.predict
        monkeypatch.setattr(metrics, "predict", lambda spec, model, X: passes.append(len(X)) or real(spec, model, X))
        caplog.set_level("INFO", logger="mlpipe.stages.evaluate")

        v = pipe.run("manual__b").verdict  # same data, same seeds: the same models, byte for byte

        holdout = first.features.holdout_rows
        assert passes == [holdout, holdout], "one pass per candidate; the champion is a candidate's twin"
        assert f"champion v1 is candidate {v.best_candidate}'s artifact (same sha256): its predictions reused" in (
            caplog.text
        )
        assert v.champion_status == "scored" and v.champion_metrics == v.candidates[v.best_candidate]
        for step in ("budget", f"candidate {v.best_candidate} predicted", "report written", "done in"):
            assert step in caplog.text, step

    def test_a_missing_trained_candidate_is_an_error(self, make_pipe) -> None:
        pipe = make_pipe()
        run = pipe.run("manual__a")

        with pytest.raises(ArtifactIntegrityError, match=r"no trained model for candidate\(s\) \['hgb'\]"):
            evaluate_candidates(
                pipe.loaded,
                pipe.store,
                run_id=run.run_id,
                run_key=run.key,
                holdout_key=run.features.holdout_key,
                holdout_sha256=run.features.holdout_sha256,
                trained=run.trained[:1],
                champion=None,
                champion_seq=0,
            )


# -- promotion -------------------------------------------------------------------------------------


class TestPromote:
    def test_nothing_happens_when_not_blessed(self, make_pipe) -> None:
        pipe = make_pipe()
        run = pipe.run("manual__a")
        verdict = replace(run.verdict, blessed=False, decision="reject", reasons=["floor missed"])

        result = pipe.promote(run, verdict)

        assert (result.promoted, result.action, result.version) == (False, "skipped", None)
        assert "floor missed" in result.message
        assert pipe.registry.list_versions(pipe.name) == []
        assert pipe.registry.champion_seq(pipe.name) == 0
        assert pipe.model_files() == []
        assert pipe.store.exists(result_key(pipe.name, run.run_id))

    def test_idempotent_per_run(self, make_pipe) -> None:
        pipe = make_pipe()
        run = pipe.run("manual__a")
        first = pipe.promote(run)

        again = pipe.promote(run)

        assert (again.promoted, again.action, again.version) == (False, "already_done", 1)
        assert again.artifact_uri == first.artifact_uri
        assert [m.version for m in pipe.registry.list_versions(pipe.name)] == [1]
        assert len(pipe.registry.champion_history(pipe.name)) == 1
        assert pipe.model_files() == [f"tiny/models/v1/{run.key}/model.joblib"]

    def test_replaces_a_champion_when_better(self, make_pipe) -> None:
        pipe = make_pipe()
        pipe.promote(pipe.run("manual__a"))
        run = pipe.run("manual__b")
        verdict = replace(run.verdict, blessed=True, decision="promote", reasons=["better"])

        result = pipe.promote(run, verdict)

        assert (result.promoted, result.action, result.version, result.previous_version) == (True, "promote", 2, 1)
        history = pipe.registry.champion_history(pipe.name)
        assert [(e.version, e.previous_version, e.action) for e in history] == [(1, None, "first"), (2, 1, "promote")]

    def test_forced_promotion_of_an_unblessed_model(self, make_pipe) -> None:
        pipe = make_pipe()
        run = pipe.run("manual__a")
        verdict = replace(run.verdict, blessed=False, decision="reject", reasons=["floor missed"])

        result = pipe.promote(run, verdict, force_reason="the floor is too strict for January")

        assert (result.promoted, result.action, result.version) == (True, "force", 1)
        (event,) = pipe.registry.champion_history(pipe.name)
        assert (event.action, event.previous_version) == ("force", None)
        assert event.reason == "the floor is too strict for January (forced; the gate said: floor missed)"

    def test_forcing_past_a_champion_that_cannot_be_scored(self, make_pipe) -> None:
        pipe = make_pipe()
        pipe.promote(pipe.run("manual__a"))
        tamper_champion(pipe)
        run = pipe.run("manual__b")
        assert run.verdict.champion_status == "unavailable" and not run.verdict.blessed

        result = pipe.promote(run, force_reason="v1's artifact is corrupt")

        assert (result.action, result.version, result.previous_version) == ("force", 2, 1)
        assert pipe.registry.champion(pipe.name).version == 2

    def test_forcing_needs_a_reason_and_a_defined_metric(self, make_pipe) -> None:
        pipe = make_pipe()
        run = pipe.run("manual__a")
        verdict = replace(run.verdict, blessed=False, decision="reject", reasons=["floor missed"])
        with pytest.raises(PromotionError, match="needs a reason"):
            pipe.promote(run, verdict, force_reason="  ")
        undefined = replace(verdict, best_candidate=None, reasons=["no candidate has a defined roc_auc"])
        with pytest.raises(PromotionError, match="cannot force the promotion of tiny: no candidate has a defined"):
            pipe.promote(run, undefined, force_reason="please")
        assert pipe.registry.champion_history(pipe.name) == [] and pipe.model_files() == []

    def test_a_rejected_approval_writes_nothing(self, make_pipe) -> None:
        pipe = make_pipe()
        run = pipe.run("manual__a")
        event = {
            "chosen_options": ["Reject"],
            "params_input": {"reason": "not before the audit"},
            "responded_by_user": {"id": "7", "name": "bob"},
            "responded_at": datetime(2026, 5, 1, tzinfo=UTC),
        }
        answer = approval_answer(event)
        assert answer.to_xcom() == {
            "asked": True,
            "approved": False,
            "by": "bob",
            "reason": "not before the audit",
            "responded_at": "2026-05-01T00:00:00+00:00",
        }

        result = pipe.promote(run, approval=answer)

        assert (result.promoted, result.action) == (False, "rejected")
        assert result.message == "rejected by bob: not before the audit"
        assert pipe.registry.champion_history(pipe.name) == [] and pipe.model_files() == []
        approved = approval_answer({**event, "chosen_options": ["Approve"]})
        assert pipe.promote(pipe.run("manual__b"), approval=approved).action == "first"
        assert approval_answer(None).asked is False

    def test_champion_changed_since_evaluation(self, make_pipe) -> None:
        pipe = make_pipe()
        slow = pipe.run("manual__slow")  # evaluated with no champion: champion_seq 0
        fast = pipe.run("manual__fast")
        pipe.promote(fast)  # meanwhile another run became champion
        files_before = pipe.model_files()

        with pytest.raises(ChampionChangedError):
            pipe.promote(slow)

        assert pipe.registry.version_for_run(pipe.name, slow.run_id) is None
        assert [m.run_id for m in pipe.registry.list_versions(pipe.name)] == [fast.run_id]
        assert len(pipe.registry.champion_history(pipe.name)) == 1
        assert pipe.model_files() == files_before
        assert not any(slow.key in path for path in pipe.model_files())

    def test_a_second_attempt_of_the_same_run_leaves_no_copy(self, make_pipe, sqlite_registry) -> None:
        pipe = make_pipe()
        run = pipe.run("manual__a")
        other_attempt = Pipe(pipe.loaded, pipe.store, Registry(sqlite_registry.engine), pipe.frame, pipe.tmp)
        # This attempt checks "already registered?" just before the other attempt of the run commits.
        pipe.registry = CommitsAfterFirstCheck(sqlite_registry.engine, lambda: other_attempt.promote(run))

        with pytest.raises(RegistryError):  # the champion changed, and the run has its version
            pipe.promote(run)

        assert [m.version for m in sqlite_registry.list_versions(pipe.name)] == [1]
        assert pipe.model_files() == [f"tiny/models/v1/{run.key}/model.joblib"]


class CommitsAfterFirstCheck(Registry):
    """A real registry whose first ``version_for_run`` answer is taken just before ``commit`` runs:
    the interleaving of two attempts of one run that both got past the idempotency check."""

    def __init__(self, engine: Any, commit: Any) -> None:
        super().__init__(engine)
        self._commit = commit

    def version_for_run(self, pipeline: str, run_id: str) -> ModelVersion | None:
        seen = super().version_for_run(pipeline, run_id)
        if self._commit is not None:
            commit, self._commit = self._commit, None
            commit()
        return seen
