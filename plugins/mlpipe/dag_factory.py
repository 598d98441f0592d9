"""Builds every pipeline's DAGs from include/pipelines/*.yaml.

Runs at DAG-parse time in the dag-processor, every 30 s: it reads YAML and wires operators, and
imports nothing heavy (no pandas, scikit-learn, GX, boto3 or SQLAlchemy) and touches no database.
A spec that fails validation yields a placeholder DAG carrying the error, so the other pipelines
still load and the user sees the message in the UI.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Asset, AssetAny, AssetOrTimeSchedule, CronTriggerTimetable
from airflow.sdk.exceptions import AirflowFailException

from mlpipe import dag_docs, notify
from mlpipe.assets import champion_asset, drift_asset, new_data_asset
from mlpipe.errors import SpecError
from mlpipe.operators.base import train_param_specs
from mlpipe.operators.links import base_path
from mlpipe.operators.monitor import DriftAnnounceOperator, DriftCheckOperator
from mlpipe.operators.promotion import (
    ChampionRollbackOperator,
    PromotionApproveOperator,
    RunParamsCheckOperator,
    approval_args,
    rollback_param_specs,
)
from mlpipe.operators.score import BatchScoreOperator
from mlpipe.operators.training import (
    CandidatesEvaluateOperator,
    CandidateTrainOperator,
    FeaturesBuildOperator,
    ModelPromoteOperator,
    SnapshotExtractOperator,
    SnapshotValidateOperator,
)
from mlpipe.operators.watch import NewDataPublishOperator
from mlpipe.sensors.new_data import NewDataSensor
from mlpipe.spec import LoadedSpec, PipelineSpec, load_spec, spec_paths

log = logging.getLogger(__name__)

RETRY_DELAY = timedelta(seconds=30)
MAX_RETRY_DELAY = timedelta(minutes=10)
# The watch's and the monitor's tasks are short checks that decide whether training starts: when
# executor slots are scarce they go before queued training tasks (whose "downstream" weights are at
# most one per task of the DAG). A deferrable watch then takes a slot only for its first check, and a
# drift verdict is drawn against the champion of the moment rather than after a retraining lands.
CHECK_PRIORITY = {"priority_weight": 100, "weight_rule": "absolute"}


def _cron(expression: str | None) -> CronTriggerTimetable | None:
    return CronTriggerTimetable(expression, timezone="UTC") if expression else None


def _pipeline_dag(
    spec: PipelineSpec, role: str, *, description: str, doc_md: str, schedule: object, params: dict | None = None
) -> DAG:
    """``<name>_<role>`` with what every pipeline DAG shares: owner, retries, tags, no catch-up, one run at a
    time, and docs built from the spec around ``doc_md`` (the role's own part; see :func:`dag_docs.dag_doc`)."""
    return DAG(
        params=params,
        dag_id=f"{spec.name}_{role}",
        description=description[:300],
        doc_md=dag_docs.dag_doc(spec, role, doc_md, base_path()),
        schedule=schedule,
        start_date=spec.start_date,
        catchup=False,
        max_active_runs=1,
        tags=sorted({"mlpipe", role, spec.name, *spec.tags}),
        default_args={
            "owner": spec.owner,
            "retries": spec.retries,
            "retry_delay": RETRY_DELAY,
            "retry_exponential_backoff": 2.0,
            "max_retry_delay": MAX_RETRY_DELAY,
            **notify.failure_callbacks(spec, role),
        },
    )


def _schedule(cron_expression: str | None, events: list[Asset]) -> object:
    """Runs on ``cron_expression`` (if any) and on any of ``events`` (if any)."""
    cron = _cron(cron_expression)
    if not events:
        return cron
    assets = events[0] if len(events) == 1 else AssetAny(*events)
    return AssetOrTimeSchedule(timetable=cron, assets=assets) if cron else assets


def _train_schedule(loaded: LoadedSpec) -> object:
    spec = loaded.spec
    events = [new_data_asset(spec.name)] if spec.watch else []
    events += [drift_asset(spec.name)] if spec.monitor else []
    return _schedule(spec.schedule, events)


def build_train_dag(loaded: LoadedSpec) -> DAG:
    """``<name>_train``: extract → (validate ∥ build_features) → train[candidates] → evaluate → promote."""
    spec = loaded.spec
    with _pipeline_dag(
        spec,
        "train",
        description=spec.description,
        doc_md=dag_docs.train_doc(spec),
        schedule=_train_schedule(loaded),
        params=train_param_specs(spec),
    ) as dag:
        common = {"pipeline": spec.name}
        check = RunParamsCheckOperator(task_id="check_params", **common)
        extract = SnapshotExtractOperator(task_id="extract_snapshot", **common)
        check >> extract
        # Validation and the split side by side: the split needs the snapshot, not its verdict; training
        # (and all after it) waits for both, so nothing trains on data that failed validation.
        validate = SnapshotValidateOperator(task_id="validate_snapshot", snapshot=extract.output, **common)
        features = FeaturesBuildOperator(task_id="build_features", snapshot=extract.output, **common)
        train = CandidateTrainOperator.partial(
            task_id="train_candidates",
            features=features.output,
            validation=validate.output,
            map_index_template="{{ task.candidate }}",
            **common,
        ).expand(candidate=check.output)  # the run's Param candidates (default: all)
        evaluate = CandidatesEvaluateOperator(
            task_id="evaluate_candidates", features=features.output, trained=train.output, **common
        )
        approval = None
        if spec.approval.required:
            approval = PromotionApproveOperator(
                task_id="approve_promotion",
                verdict=evaluate.output,
                notifiers=notify.approval_notifiers(spec),
                **approval_args(spec),
                **common,
            ).output
        ModelPromoteOperator(
            task_id="promote_model",
            verdict=evaluate.output,
            trained=train.output,
            snapshot=extract.output,
            features=features.output,
            approval=approval,
            outlets=[champion_asset(spec.name)],
            **notify.outcome_callbacks(spec, "train", "promote_model"),
            **common,
        )
    return dag


def build_rollback_dag(loaded: LoadedSpec) -> DAG:
    """``<name>_rollback``: make an earlier model version champion again, with a reason."""
    spec = loaded.spec
    with _pipeline_dag(
        spec,
        "rollback",
        description=f"Make an earlier {spec.name} model version champion again",
        doc_md=dag_docs.rollback_doc(spec),
        schedule=None,
        params=rollback_param_specs(),
    ) as dag:
        ChampionRollbackOperator(
            task_id="roll_back_champion",
            pipeline=spec.name,
            outlets=[champion_asset(spec.name)],
            **notify.outcome_callbacks(spec, "rollback", "roll_back_champion"),
        )
    return dag


def build_watch_dag(loaded: LoadedSpec) -> DAG:
    """``<name>_watch``: wait for rows past the watermark, then announce them as ``new_data``."""
    spec = loaded.spec
    watch = spec.watch
    assert watch is not None
    sensor_args: dict[str, object] = {}
    if watch.deferrable is not None:
        sensor_args["deferrable"] = watch.deferrable
    with _pipeline_dag(
        spec,
        "watch",
        description=dag_docs.watch_description(spec),
        doc_md=dag_docs.watch_doc(spec),
        schedule=_cron(watch.schedule),
    ) as dag:
        found = NewDataSensor(
            task_id="wait_for_new_data",
            pipeline=spec.name,
            poke_interval=watch.poke_interval,
            timeout=watch.timeout,
            mode="reschedule",
            soft_fail=True,
            **sensor_args,
            **CHECK_PRIORITY,
        )
        NewDataPublishOperator(
            task_id="publish_new_data",
            pipeline=spec.name,
            found=found.output,
            outlets=[new_data_asset(spec.name)],
            **CHECK_PRIORITY,
        )
    return dag


def build_monitor_dag(loaded: LoadedSpec) -> DAG:
    """``<name>_monitor``: drift of the newest window vs the champion; a breach emits ``drift`` once."""
    spec = loaded.spec
    monitor = spec.monitor
    assert monitor is not None
    with _pipeline_dag(
        spec,
        "monitor",
        description=dag_docs.monitor_description(spec),
        doc_md=dag_docs.monitor_doc(spec),
        schedule=_cron(monitor.schedule),
    ) as dag:
        check = DriftCheckOperator(task_id="check_drift", pipeline=spec.name, **CHECK_PRIORITY)
        DriftAnnounceOperator(
            task_id="announce_drift",
            pipeline=spec.name,
            check=check.output,
            outlets=[drift_asset(spec.name)],
            **notify.outcome_callbacks(spec, "monitor", "announce_drift"),
            **CHECK_PRIORITY,
        )
    return dag


def build_score_dag(loaded: LoadedSpec) -> DAG:
    """``<name>_score``: the champion's predictions for the rows it has not scored yet."""
    spec = loaded.spec
    score = spec.score
    assert score is not None
    events = [champion_asset(spec.name)] + ([new_data_asset(spec.name)] if spec.watch else [])
    with _pipeline_dag(
        spec,
        "score",
        description=f"Predictions of the {spec.name} champion for rows it has not scored yet",
        doc_md=dag_docs.score_doc(spec, events),
        schedule=_schedule(score.schedule, events),
    ) as dag:
        BatchScoreOperator(task_id="score_batch", pipeline=spec.name)
    return dag


def _dag_id_for(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem) + "_train"


def build_error_dag(path: Path, error: SpecError) -> DAG:
    """A placeholder under the pipeline's own DAG id whose docs and only task carry the spec error."""
    message = str(error)

    def _raise() -> None:
        raise AirflowFailException(message)

    from airflow.providers.standard.operators.python import PythonOperator

    with DAG(
        dag_id=_dag_id_for(path),
        description=f"INVALID SPEC: {error.problems[0]}"[:300],
        doc_md=dag_docs.error_doc(path, message),
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        tags=["mlpipe", "spec-error"],
        default_args={"retries": 0},
    ) as dag:
        PythonOperator(task_id="report_spec_error", python_callable=_raise)
    return dag


BUILDERS = {
    "train": build_train_dag,
    "rollback": build_rollback_dag,
    "watch": build_watch_dag,
    "monitor": build_monitor_dag,
    "score": build_score_dag,
}


def build_dags(pipelines_dir: Path | None = None, *, only: str | None = None) -> dict[str, DAG]:
    """Every pipeline's DAGs by dag id; one bad spec never stops the others from loading.

    ``only``: the DAG id Airflow parses the file for (a task's process sets it: the dags file passes
    ``get_parsing_context().dag_id``). Then only the spec whose name it starts with is read and only
    that DAG built, so a task's start-up does not grow with the number of pipelines; every DAG is
    built when no spec yields it.
    """
    paths = spec_paths(pipelines_dir)
    if only:
        mine = [path for path in paths if _may_yield(path, only)]
        dags = _build(mine, only)
        if only in dags:
            return {only: dags[only]}
    return _build(paths, None)


def _may_yield(path: Path, dag_id: str) -> bool:
    stem = path.stem
    return dag_id == _dag_id_for(path) or (dag_id.startswith(f"{stem}_") and dag_id[len(stem) + 1 :] in BUILDERS)


def _build(paths: list[Path], only: str | None) -> dict[str, DAG]:
    dags: dict[str, DAG] = {}
    for path in paths:
        try:
            loaded = load_spec(path)
        except SpecError as exc:
            log.error("%s", exc)
            built = [build_error_dag(path, exc)]
        else:
            roles = loaded.spec.dag_ids()
            built = [BUILDERS[role](loaded) for role, dag_id in roles.items() if only is None or dag_id == only]
        dags.update((dag.dag_id, dag) for dag in built)
    for dag in dags.values():
        if "spec-error" not in dag.tags:
            dag.doc_md = f"{dag.doc_md}\n{dag_docs.manual_run_doc(dag)}"
    return dags
