"""Operators of the training DAG: extract, validate, build features, train, evaluate, promote.

Each one resolves its Connections, calls one stage and returns a contract (:mod:`mlpipe.contracts`:
URIs, hashes, metrics) as its XCom, and rebuilds the contracts it pulls; data itself moves through
the artifact store. Heavy libraries are imported
inside ``execute()`` only, so DAG parsing stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlpipe import config, layout
from mlpipe.errors import ArtifactIntegrityError
from mlpipe.operators.base import (
    PipelineOperator,
    actor_of,
    emit_champion_event,
    fail_fast_on_user_errors,
    materialize,
    only_candidates,
    run_info,
)
from mlpipe.operators.links import DataDocsLink, EvaluationReportLink, ModelVersionLink

if TYPE_CHECKING:
    from airflow.sdk import Context

    from mlpipe.contracts import TrainedCandidate


class SnapshotExtractOperator(PipelineOperator):
    """Stream the source's data as of the run (SQL rows before it, or the S3 objects of the run) into a snapshot."""

    template_fields: Sequence[str] = ("pipeline", "source_conn_id")

    def __init__(self, *, source_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source_conn_id = source_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from dataclasses import replace
        from datetime import datetime

        from mlpipe.hooks.source import open_source
        from mlpipe.stages.extract import extract_snapshot
        from mlpipe.stages.runs import record_run

        # The spec's and the code's hashes with the run: the run index finds earlier runs on the same inputs.
        info = {**run_info(context), "spec_sha256": self.loaded.sha256(), "code_version": config.code_version()}
        run_key = self.run_key(context)
        record_run(self.store, self.pipeline, run_key, info)
        with (
            self.indexing_run(context),
            fail_fast_on_user_errors(),
            open_source(self.loaded.spec.source, self.source_conn_id) as source,
        ):
            snap = extract_snapshot(
                self.loaded, source, self.store, run_key=run_key, as_of=datetime.fromisoformat(info["as_of"])
            )
            source_url = str(source.url) if hasattr(source, "url") else None
        self.log.info(
            "Snapshot %s: %d rows as of %s, sha256 %s%s",
            snap.uri,
            snap.rows,
            snap.as_of,
            snap.sha256,
            " (reused from an earlier attempt)" if snap.reused else "",
        )
        # The spec's hash travels with the snapshot: promotion registers the spec the run began with.
        xcom = replace(snap, spec_sha256=info["spec_sha256"]).to_xcom()
        self.lineage_result = {**xcom, "source_url": source_url}
        return xcom


class SnapshotValidateOperator(PipelineOperator):
    """Run the spec's Great Expectations suite on the snapshot, then compare it with the champion's
    training snapshot; failed expectations or reference checks stop the run."""

    template_fields: Sequence[str] = ("pipeline", "snapshot")
    operator_extra_links = (DataDocsLink(),)

    def __init__(self, *, snapshot: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.snapshot = snapshot

    def execute(self, context: Context) -> dict[str, Any]:
        from mlpipe.contracts import Snapshot
        from mlpipe.stages.validate import validate_snapshot

        # The reference is the champion's training snapshot (none on a first run).
        champion = self.registry.champion(self.loaded.spec.name)
        snapshot = Snapshot.from_xcom(self.snapshot)
        with self.indexing_run(context), fail_fast_on_user_errors():
            report = validate_snapshot(
                self.loaded,
                self.store,
                run_key=self.run_key(context),
                snapshot_key=snapshot.key,
                snapshot_sha256=snapshot.sha256,
                champion=champion,
            )
        self.log.info("Validation passed: %s; Data Docs at %s", report["statistics"], report["data_docs_uri"])
        self.log.info("Reference %s; report at %s", report["reference"]["line"], report["reference"]["html_uri"])
        return report


class FeaturesBuildOperator(PipelineOperator):
    """Split the snapshot into train and holdout and persist both.

    Runs beside validation, not after it: its split is only used by training, which waits for the
    validation too (a run whose data fails validation leaves a split nothing reads).
    """

    template_fields: Sequence[str] = ("pipeline", "snapshot")

    def __init__(self, *, snapshot: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.snapshot = snapshot

    # How long a split that failed on its data waits for the validation running beside it to say
    # whether the data is invalid (then the validation's message is the one sent).
    VALIDATION_WAIT_SECONDS = 600.0
    POLL_SECONDS = 2.0

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from mlpipe.contracts import Snapshot
        from mlpipe.errors import FeatureError
        from mlpipe.stages.features import build_features

        loaded = self.loaded  # a spec removed since the DAG was parsed fails here, at once
        snapshot = Snapshot.from_xcom(self.snapshot)
        try:
            with fail_fast_on_user_errors():
                features = build_features(
                    loaded,
                    self.store,
                    run_key=self.run_key(context),
                    snapshot_key=snapshot.key,
                    snapshot_sha256=snapshot.sha256,
                )
        except AirflowFailException as exc:
            if isinstance(exc.__context__, FeatureError) and self._validation_failed(context):
                # One stop, one message: the validation's failure names what is wrong with the data, so
                # the notifier stays silent on this one (it still fails: a skip would let the run succeed).
                exc.args = (f"{exc} (the snapshot failed validation too: see validate_snapshot)",)
                exc.told_by = "validate_snapshot"  # type: ignore[attr-defined]
            raise
        self.log.info(
            "Split %s: %d train rows, %d holdout rows", features.split, features.train_rows, features.holdout_rows
        )
        self.lineage_result = features.to_xcom()
        return self.lineage_result

    def _validation_failed(self, context: Context) -> bool:
        """Whether this run's validation failed, waiting (bounded) while it is still running beside this task."""
        import time

        from mlpipe.stages.runs import read_json, validation_failed

        key = layout.validation_summary(self.pipeline, self.run_key(context))
        deadline = time.monotonic() + self.VALIDATION_WAIT_SECONDS
        while True:
            summary = read_json(self.store, key)
            if summary is not None:
                return validation_failed(summary)
            if _task_state(context, "validate_snapshot") != "running" or time.monotonic() > deadline:
                return False
            time.sleep(self.POLL_SECONDS)


def _task_state(context: Context, task_id: str) -> str | None:
    """The state of ``task_id`` in this run, as the API server has it (None when it cannot be asked)."""
    ti, run_id = context.get("ti"), context["run_id"]
    try:
        states = ti.get_task_states(dag_id=ti.dag_id, task_ids=[task_id], run_ids=[run_id])  # type: ignore[union-attr]
        return states.get(run_id, {}).get(task_id)
    except Exception:
        return None


class CandidateTrainOperator(PipelineOperator):
    """Fit one candidate of the spec (mapped: one task instance per candidate).

    ``validation`` is the run's validation summary (``validate_snapshot``'s XCom): training needs data
    that passed, so it refuses a summary that does not say so.
    """

    template_fields: Sequence[str] = ("pipeline", "candidate", "features", "validation")

    def __init__(self, *, candidate: str, features: Any, validation: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.candidate = candidate
        self.features = features
        self.validation = validation

    def execute(self, context: Context) -> dict[str, Any]:
        if self.validation is not None and self.validation.get("success") is not True:
            from airflow.sdk.exceptions import AirflowFailException

            # Not an error of mlpipe's to classify: the validation task already failed on it; this guard
            # only keeps a cleared or hand-triggered training from using a split of invalid data.
            raise AirflowFailException(
                f"DataValidationError: the snapshot of run {context['run_id']} did not pass validation "
                f"(suite {self.validation.get('suite')!r}); nothing is trained on it"
            )
        reused = self._reuse(context)
        if reused is not None:
            return reused.to_xcom()
        from mlpipe.contracts import FeatureSet
        from mlpipe.stages.train import train_candidate

        features = FeatureSet.from_xcom(self.features)
        with fail_fast_on_user_errors():
            trained = train_candidate(
                self.loaded,
                self.store,
                run_key=self.run_key(context),
                candidate=self.candidate,
                train_key=features.train_key,
                train_sha256=features.train_sha256,
            )
        self.log.info(
            "Trained %s (%s) in %.1fs -> %s",
            trained.candidate,
            trained.estimator,
            trained.fit_seconds,
            trained.model_uri,
        )
        if trained.search is not None:
            search = trained.search
            self.log.info(
                "Search (%s, %s): best %s, cross-validated %s %.4f; %d settings, %d fits in %.1fs",
                search["method"],
                search["cv"],
                search["best_params"],
                search["metric"],
                search["best_metric"],
                search["settings_tried"],
                search["n_fits"],
                search["search_seconds"],
            )
        self.lineage_result = trained.to_xcom()
        return self.lineage_result

    def _reuse(self, context: Context) -> TrainedCandidate | None:
        """The candidate of an earlier run on the same data, spec and code (see mlpipe.stages.reuse), unless
        this run already trained it or its Params ask for a fresh training; None: train it."""
        from mlpipe.stages.reuse import reuse_candidate, reused_from, run_inputs

        key = self.run_key(context)
        if self.train_params(context).fresh_training:
            self.log.info("Param fresh_training: training %s afresh", self.candidate)
            return None
        if self.store.exists(layout.candidate_result(self.pipeline, key, self.candidate)):
            return None  # this run's own result (a retry): train_candidate takes it
        inputs = run_inputs(self.registry, self.pipeline, key)
        if inputs is None or (inputs.spec_sha256, inputs.code_version) != (self.loaded.sha256(), config.code_version()):
            return None
        reused = reuse_candidate(
            self.registry, self.store, pipeline=self.pipeline, run_key=key, candidate=self.candidate, inputs=inputs
        )
        if reused is None:
            return None
        origin = reused_from(self.store, self.pipeline, key, self.candidate) or {}
        self.log.info(
            "Reused %s (%s) trained by run %s on the same snapshot (sha256 %s), spec and code version %s: no "
            "training (its fit took %.1fs); model sha256 %s copied to %s. Trigger with fresh_training=true to "
            "train afresh.",
            reused.candidate,
            reused.estimator,
            origin.get("run_id"),
            inputs.data_sha256[:16],
            inputs.code_version,
            float(origin.get("fit_seconds") or 0.0),
            reused.model_sha256[:16],
            reused.model_uri,
        )
        return reused


class CandidatesEvaluateOperator(PipelineOperator):
    """Score every candidate and the current champion on the holdout and write the gate's verdict."""

    template_fields: Sequence[str] = ("pipeline", "features", "trained")
    operator_extra_links = (EvaluationReportLink(),)

    def __init__(self, *, features: Any, trained: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.features = features
        self.trained = trained

    def execute(self, context: Context) -> dict[str, Any]:
        from dataclasses import replace

        from mlpipe.contracts import FeatureSet, TrainedCandidate
        from mlpipe.stages.reuse import reuse_verdict

        pipeline = self.loaded.spec.name
        champion_seq = self.registry.champion_seq(pipeline)
        champion = self.registry.champion(pipeline)
        trained = [TrainedCandidate.from_xcom(t) for t in materialize(self.trained)]
        # The run's Params, worked out here once: the verdict carries force_reason to approval and promotion.
        params = self.train_params(context)
        if not params.fresh_training:
            with self.indexing_run(context):
                reused = reuse_verdict(
                    self.store,
                    pipeline=pipeline,
                    run_id=context["run_id"],
                    run_key=self.run_key(context),
                    trained=trained,
                    champion_seq=champion_seq,
                    champion=champion,
                )
            if reused is not None:
                self.log.info(
                    "Reused the evaluation of run %s: the same models on the same holdout, and the champion log "
                    "unchanged since (seq %d). Verdict: %s (best %s) - %s",
                    reused.reused_from,
                    champion_seq,
                    reused.decision,
                    reused.best_candidate,
                    "; ".join(reused.reasons),
                )
                return replace(reused, force_reason=params.force_reason).to_xcom()
        from mlpipe.stages.evaluate import evaluate_candidates

        features = FeatureSet.from_xcom(self.features)
        with self.indexing_run(context), fail_fast_on_user_errors():
            verdict = evaluate_candidates(
                only_candidates(self.loaded, [t.candidate for t in trained]),
                self.store,
                run_id=context["run_id"],
                run_key=self.run_key(context),
                holdout_key=features.holdout_key,
                holdout_sha256=features.holdout_sha256,
                trained=trained,
                champion=champion,
                champion_seq=champion_seq,
            )
        for name, metrics in verdict.candidates.items():
            self.log.info("Candidate %s: %s", name, metrics)
        if verdict.champion_metrics is not None:
            self.log.info("Champion v%s: %s", verdict.champion_version, verdict.champion_metrics)
        self.log.info(
            "Verdict: %s (best %s) - %s", verdict.decision, verdict.best_candidate, "; ".join(verdict.reasons)
        )
        return replace(verdict, force_reason=params.force_reason).to_xcom()


class ModelPromoteOperator(PipelineOperator):
    """Register and promote the blessed candidate in one compare-and-swap; no-op when unblessed.

    The run's Params can force the promotion (with a reason); ``approval`` is the answer of the
    approval task when the spec asks for one, and a rejection promotes nothing. A champion change
    emits the champion asset event (the outlets); when the champion did not change the task skips,
    so no event starts scoring. A retry whose earlier attempt promoted emits the event it owes.
    """

    template_fields: Sequence[str] = ("pipeline", "verdict", "trained", "snapshot", "features", "approval")
    operator_extra_links = (ModelVersionLink(),)

    def __init__(
        self, *, verdict: Any, trained: Any, snapshot: Any, features: Any, approval: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.verdict = verdict
        self.trained = trained
        self.snapshot = snapshot
        self.features = features
        self.approval = approval

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlpipe.contracts import Approval, FeatureSet, Snapshot, TrainedCandidate, Verdict, champion_incident
        from mlpipe.stages.promote import lineage_of, promote_model

        pipeline = self.loaded.spec.name  # a spec removed since the DAG was parsed fails here, at once
        info = run_info(context)
        verdict = Verdict.from_xcom(self.verdict)
        snapshot = Snapshot.from_xcom(self.snapshot)
        trained = [TrainedCandidate.from_xcom(t) for t in materialize(self.trained)]
        approval = None if self.approval is None else Approval.from_xcom(self.approval)
        with self.indexing_run(context), fail_fast_on_user_errors():
            result = promote_model(
                self.registry,
                self.store,
                verdict=verdict,
                trained=trained,
                snapshot=snapshot,
                # The spec the run began with (hashed at extraction); a later edit is not this model's.
                spec_sha256=snapshot.spec_sha256 or self.loaded.sha256(),
                code_version=config.code_version(),
                run_id=context["run_id"],
                lineage=lineage_of(snapshot, FeatureSet.from_xcom(self.features), info),
                actor=actor_of(context) if verdict.force_reason is not None else f"airflow:{info['dag_id']}",
                approval=approval,
            )
        self.log.info("%s", result.message)
        incident = champion_incident(verdict)
        if incident is not None and not result.promoted:
            # The verdict and this task's result are kept; the run fails so that someone looks.
            with fail_fast_on_user_errors():
                raise ArtifactIntegrityError(
                    f"champion artifact failed its integrity check: {incident}; restore it, "
                    f"roll back to another version ({pipeline}_rollback), or force the promotion"
                )
        last = self.registry.champion_history(pipeline)[-1:] if result.version is not None else []
        if not (last and last[0].run_id == context["run_id"] and last[0].version == result.version):
            raise AirflowSkipException(f"champion unchanged, no champion event: {result.message}")
        emit_champion_event(context, self.outlets, last[0])
        self.lineage_result = {
            **result.to_xcom(),
            "trained": [t.to_xcom() for t in trained],
            "model": self.registry.get_version(pipeline, result.version),
        }
        return result.to_xcom()
