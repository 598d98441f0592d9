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

from mlpipe.errors import SpecError
from mlpipe.operators.monitor import DriftAnnounceOperator, DriftCheckOperator
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


def _doc_md(loaded: LoadedSpec) -> str:
    spec = loaded.spec
    gate = spec.gate
    cands = "\n".join(f"- `{c.name}`: `{c.estimator}` {c.params or ''}" for c in spec.candidates)
    rules = [
        f"- floor: {spec.primary_metric} ≥ {gate.min_primary}" if gate.min_primary is not None else None,
        f"- beat the champion's {spec.primary_metric} by ≥ {gate.min_improvement} (ties never promote)",
    ]
    rules += [f"- {m} may not worsen by more than {tol}" for m, tol in gate.max_regression.items()]
    return f"""### {spec.name}: training
{spec.description}

**Owner** {spec.owner} · **Target** `{spec.target.column}` ({spec.target.task}) ·
**Source** `{spec.source.kind}` via connection `{spec.source.connection_id}`, query `include/sql/{spec.source.query}` ·
**Suite** `include/expectations/{spec.validation.suite}` · **Schedule** `{spec.schedule or "manual only"}` (UTC)

**Candidates**
{cands}

**Gate** (primary metric `{spec.primary_metric}`; secondary {", ".join(spec.secondary_metrics) or "none"})
{chr(10).join(r for r in rules if r)}

Spec: `{loaded.path.name}` · spec fields are described in `docs/spec.md`.
"""


def _cron(expression: str | None) -> CronTriggerTimetable | None:
    return CronTriggerTimetable(expression, timezone="UTC") if expression else None


def _pipeline_dag(spec: PipelineSpec, role: str, *, description: str, doc_md: str, schedule: object) -> DAG:
    """``<name>_<role>`` with what every pipeline DAG shares: owner, retries, tags, no catch-up, one run at a time."""
    return DAG(
        dag_id=f"{spec.name}_{role}",
        description=description[:300],
        doc_md=doc_md,
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
        },
    )


def new_data_asset(pipeline: str) -> Asset:
    """Announced by ``<name>_watch`` when rows past the watermark arrive; starts ``<name>_train``."""
    return Asset(name=f"{pipeline}.new_data", uri=f"x-mlpipe://{pipeline}/new_data", group="mlpipe")


def drift_asset(pipeline: str) -> Asset:
    """Announced by ``<name>_monitor`` when the newest window drifts (once per window); starts training."""
    return Asset(name=f"{pipeline}.drift", uri=f"x-mlpipe://{pipeline}/drift", group="mlpipe")


def _train_schedule(loaded: LoadedSpec) -> object:
    spec = loaded.spec
    cron = _cron(spec.schedule)
    events = [new_data_asset(spec.name)] if spec.watch else []
    events += [drift_asset(spec.name)] if spec.monitor else []
    if not events:
        return cron
    assets = events[0] if len(events) == 1 else AssetAny(*events)
    return AssetOrTimeSchedule(timetable=cron, assets=assets) if cron else assets


def build_train_dag(loaded: LoadedSpec) -> DAG:
    """``<name>_train``: extract → validate → build_features → train[candidates] → evaluate → promote."""
    spec = loaded.spec
    with _pipeline_dag(
        spec, "train", description=spec.description, doc_md=_doc_md(loaded), schedule=_train_schedule(loaded)
    ) as dag:
        common = {"pipeline": spec.name}
        extract = SnapshotExtractOperator(task_id="extract_snapshot", **common)
        validate = SnapshotValidateOperator(task_id="validate_snapshot", snapshot=extract.output, **common)
        features = FeaturesBuildOperator(
            task_id="build_features", snapshot=extract.output, validation=validate.output, **common
        )
        train = CandidateTrainOperator.partial(
            task_id="train_candidates", features=features.output, map_index_template="{{ task.candidate }}", **common
        ).expand(candidate=[c.name for c in spec.candidates])
        evaluate = CandidatesEvaluateOperator(
            task_id="evaluate_candidates", features=features.output, trained=train.output, **common
        )
        ModelPromoteOperator(
            task_id="promote_model",
            verdict=evaluate.output,
            trained=train.output,
            snapshot=extract.output,
            features=features.output,
            **common,
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
        description=f"New rows of {spec.source.table} past the watermark start {spec.name}_train",
        doc_md=f"""### {spec.name}: new-data watch
Waits until at least **{watch.min_new_rows}** row(s) of `{spec.source.table}` have
`{spec.source.watermark_column}` past the watermark kept in the registry (checking every
{watch.poke_interval} s, up to {watch.timeout} s; in the triggerer when deferrable), then moves the
watermark and emits the `{spec.name}.new_data` asset event (new watermark and row count in its
extra), which starts `{spec.name}_train`. The same rows never announce twice.
""",
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
        )
        NewDataPublishOperator(
            task_id="publish_new_data", pipeline=spec.name, found=found.output, outlets=[new_data_asset(spec.name)]
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
        description=f"Drift of the newest {monitor.window_days:g} days of {spec.source.table} vs the champion",
        doc_md=f"""### {spec.name}: drift and performance monitor
Compares the newest **{monitor.window_days:g} days** of the source (by `{spec.source.watermark_column}`) with the
champion's training snapshot: PSI (warn {monitor.psi_warn}, act {monitor.psi_act}) and KS for numeric
features, Jensen-Shannon distance (act {monitor.js_act}) for categorical ones, PSI of the champion's
scores, and the champion's `{spec.primary_metric}` on labelled new rows (tolerance
{monitor.performance_tolerance}). No verdict below {monitor.min_sample} rows. Drift when
≥ {monitor.drifted_share:.0%} of the features or the score act, or the metric drops; then
`announce_drift` emits `{spec.name}.drift` (figures in its extra), once per window, which starts
`{spec.name}_train`. Every check is kept in the registry's drift history, with an HTML report.
""",
        schedule=_cron(monitor.schedule),
    ) as dag:
        check = DriftCheckOperator(task_id="check_drift", pipeline=spec.name)
        DriftAnnounceOperator(
            task_id="announce_drift", pipeline=spec.name, check=check.output, outlets=[drift_asset(spec.name)]
        )
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
        doc_md=f"### This pipeline's spec is invalid\n\n```\n{message}\n```\n\nFix `{path.name}`; "
        "the fields are described in `docs/spec.md`.",
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        tags=["mlpipe", "spec-error"],
        default_args={"retries": 0},
    ) as dag:
        PythonOperator(task_id="report_spec_error", python_callable=_raise)
    return dag


def build_dags(pipelines_dir: Path | None = None) -> dict[str, DAG]:
    """Every pipeline's DAGs by dag id; one bad spec never stops the others from loading."""
    dags: dict[str, DAG] = {}
    for path in spec_paths(pipelines_dir):
        try:
            loaded = load_spec(path)
        except SpecError as exc:
            log.error("%s", exc)
            dag = build_error_dag(path, exc)
        else:
            dag = build_train_dag(loaded)
            if loaded.spec.watch is not None:
                watch = build_watch_dag(loaded)
                dags[watch.dag_id] = watch
            if loaded.spec.monitor is not None:
                monitor = build_monitor_dag(loaded)
                dags[monitor.dag_id] = monitor
        dags[dag.dag_id] = dag
    return dags
