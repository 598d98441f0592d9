"""Builds every pipeline's DAGs from include/pipelines/*.yaml.

Runs at DAG-parse time in the dag-processor, every 30 s: it reads YAML and wires operators, and
imports nothing heavy (no pandas, scikit-learn, GX, boto3 or SQLAlchemy) and touches no database.
A spec that fails validation yields a placeholder DAG carrying the error, so the other pipelines
still load and the user sees the message in the UI.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Asset, AssetAny, AssetOrTimeSchedule, CronTriggerTimetable
from airflow.sdk.exceptions import AirflowFailException

from mlpipe import notify
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
from mlpipe.sources import describe
from mlpipe.spec import LoadedSpec, PipelineSpec, load_spec, spec_paths
from mlpipe.ui import paths

log = logging.getLogger(__name__)

RETRY_DELAY = timedelta(seconds=30)
MAX_RETRY_DELAY = timedelta(minutes=10)
# The watch's and the monitor's tasks are short checks that decide whether training starts: when
# executor slots are scarce they go before queued training tasks (whose "downstream" weights are at
# most one per task of the DAG). A deferrable watch then takes a slot only for its first check, and a
# drift verdict is drawn against the champion of the moment rather than after a retraining lands.
CHECK_PRIORITY = {"priority_weight": 100, "weight_rule": "absolute"}


ROLE_TITLES = {
    "train": "training",
    "watch": "new-data watch",
    "monitor": "drift and performance monitor",
    "score": "batch scoring",
    "rollback": "rollback",
}


def _features_md(spec: PipelineSpec) -> str:
    parts = []
    if spec.features.numeric:
        parts.append("numeric " + ", ".join(f"`{c}`" for c in spec.features.numeric))
    if spec.features.categorical:
        parts.append("categorical " + ", ".join(f"`{c}`" for c in spec.features.categorical))
    for d in spec.features.datetime:
        parts.append(f"`{d.column}` (" + ", ".join(f"`{p}`" for p in d.parts) + f" in `{d.timezone}`)")
    return "; ".join(parts)


def _gate_md(spec: PipelineSpec) -> str:
    gate = spec.gate
    metric = spec.primary_metric
    rules = [f"- floor: `{metric}` ≥ {gate.min_primary}"] if gate.min_primary is not None else []
    rules.append(f"- beat the champion's `{metric}` by ≥ {gate.min_improvement} (ties never promote)")
    rules += [f"- `{m}` may not worsen by more than {tol}" for m, tol in gate.max_regression.items()]
    rules.append("- no champion yet: the best candidate that meets the floor becomes the first one")
    return "\n".join(rules)


def _source_md(spec: PipelineSpec) -> str:
    """The source in a sentence of DAG docs: its SQL file and table, or its objects under an S3 prefix."""
    return describe(spec.source).summary


def _new_data_md(spec: PipelineSpec) -> str:
    """What the watch waits for."""
    info, watch = describe(spec.source), spec.watch
    minimum = {"rows": watch.min_new_rows, "objects": watch.min_new_objects}[info.unit]
    return f"≥ {minimum} {info.new_data}"


def _triggers_md(spec: PipelineSpec) -> str:
    """What starts each of the pipeline's DAGs, and how they feed each other."""
    name = spec.name
    train = f"`{name}_train`: " + (f"cron `{spec.schedule}` (UTC)" if spec.schedule else "no schedule")
    events = [f"`{name}.new_data` from `{name}_watch`"] if spec.watch else []
    events += [f"`{name}.drift` from `{name}_monitor`"] if spec.monitor else []
    lines = [train + (", or the asset event " + " or ".join(events) if events else "") + ", or by hand"]
    if spec.watch:
        lines.append(
            f"`{name}_watch`: cron `{spec.watch.schedule or 'none'}`; waits for {_new_data_md(spec)}, "
            f"then emits `{name}.new_data`"
        )
    if spec.monitor:
        lines.append(
            f"`{name}_monitor`: cron `{spec.monitor.schedule or 'none'}`; a drifted window emits `{name}.drift` once"
        )
    lines.append(
        f"`{name}_rollback`: by hand only (Params `version`, `reason`); like a promotion, emits `{name}.champion`"
    )
    if spec.score:
        events = f"`{name}.champion` (a promotion or rollback)" + (f" or `{name}.new_data`" if spec.watch else "")
        cron = f"cron `{spec.score.schedule}` (UTC), or " if spec.score.schedule else ""
        lines.append(f"`{name}_score`: {cron}the asset event {events}, or by hand")
    return "\n".join(f"- {line}" for line in lines)


def _dag_doc(spec: PipelineSpec, role: str, body: str) -> str:
    """A pipeline DAG's docs: what the pipeline predicts and from what, the role's own ``body``, the
    gate, the triggers, and where its results are shown. Built from the spec for every role."""
    target = spec.target
    positive = f", positive class `{target.positive_class}`" if target.positive_class is not None else ""
    models = paths.in_airflow_ui(paths.pipeline(spec.name), base_path())
    return f"""### {spec.name}: {ROLE_TITLES.get(role, role)}
{spec.description}

- **Predicts** `{target.column}` ({target.task}{positive}) from {_features_md(spec)}
- **Source** {_source_md(spec)}
- **Owner** {spec.owner} · **Spec** `include/pipelines/{spec.name}.yaml` (fields: `docs/spec.md`)

{body.strip()}

#### Promotion gate (primary metric `{spec.primary_metric}`)
{_gate_md(spec)}

#### Triggers
{_triggers_md(spec)}

#### Results
The [Models view]({models}) (top navigation, **Models**) shows the champion, every version with its metrics,
the champion log, the training runs with their verdicts, and the drift history. Task buttons link there too:
`validate_snapshot` → Data Docs, `evaluate_candidates` → evaluation report, `promote_model` → model version,
`check_drift` → drift report.
"""


def manual_run_doc(dag: DAG) -> str:
    """How to start ``dag`` from the UI's trigger form, listing its Params with their descriptions."""
    lines = [
        "#### Run it by hand",
        "Press **Trigger** (▶) on this DAG's page. "
        + (
            (
                "The form shows the parameters below, each with what it does; fill in the required ones."
                if any(not dag.params.get_param(k).has_value for k in dag.params)
                else "The form shows the parameters below, each with what it does; leave them at their defaults "
                "for an ordinary run. Runs started by the schedule or an asset event use the defaults."
            )
            if dag.params
            else "This DAG has no parameters: the form only asks for the logical date (the run's as-of time)."
        ),
    ]
    if dag.params:
        lines += ["", "| Parameter | Default | What it does |", "|---|---|---|"]
        for key in dag.params:
            param = dag.params.get_param(key)
            text = (param.description or "**undocumented**").replace("|", "\\|").replace("\n", " ")
            default = f"`{param.value!r}`" if param.has_value else "**required**"
            lines.append(f"| `{key}` | {default} | {text} |")
    lines += [
        "",
        f"From a terminal: `airflow dags trigger {dag.dag_id}`, or run it in one process with "
        f"`airflow dags test {dag.dag_id}`.",
    ]
    return "\n".join(lines) + "\n"


def _cron(expression: str | None) -> CronTriggerTimetable | None:
    return CronTriggerTimetable(expression, timezone="UTC") if expression else None


def _pipeline_dag(
    spec: PipelineSpec, role: str, *, description: str, doc_md: str, schedule: object, params: dict | None = None
) -> DAG:
    """``<name>_<role>`` with what every pipeline DAG shares: owner, retries, tags, no catch-up, one run at a
    time, and docs built from the spec around ``doc_md`` (the role's own part; see :func:`_dag_doc`)."""
    return DAG(
        params=params,
        dag_id=f"{spec.name}_{role}",
        description=description[:300],
        doc_md=_dag_doc(spec, role, doc_md),
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


def _train_doc(spec: PipelineSpec) -> str:
    cands = "\n".join(
        f"- `{c.name}`: `{c.estimator}`" + (f" `{json.dumps(c.params)}`" if c.params else "") for c in spec.candidates
    )
    split = spec.split
    how = (
        f"the latest {split.holdout_fraction:.0%} by `{split.time_column}`"
        if split.method == "time"
        else f"a random {split.holdout_fraction:.0%} (seed {split.seed})"
    )
    metrics = ", ".join(f"`{m}`" for m in [spec.primary_metric, *spec.secondary_metrics])
    deadline = (
        f"; without an answer within {spec.approval.timeout_text} it is {spec.approval.default.rstrip('e')}ed"
        if spec.approval.timeout is not None
        else ""
    )
    approve = (
        "`approve_promotion` (**approval required**: a person approves or rejects the blessed or forced model "
        f"under *Required actions* in the Airflow UI{deadline}; a rejection promotes nothing) → "
        if spec.approval.required
        else ""
    )
    return f"""`check_params` (the run's Params, below) → `extract_snapshot` → side by side
`validate_snapshot` (GX suite `include/expectations/{spec.validation.suite}`, then the champion's training
snapshot as the reference: `validation.reference`) and `build_features` (holdout: {how})
→ `train_candidates` (one mapped task per candidate; waits for both, so a snapshot that fails validation
trains, evaluates and promotes nothing) →
`evaluate_candidates` (candidates and the champion on the same holdout; metrics {metrics}) →
{approve}`promote_model` (registers the blessed candidate as a new version and makes it champion, in one
compare-and-swap; nothing when the gate says no, unless the run forces it with a reason). A champion
change emits `{spec.name}.champion`, which starts `{spec.name}_score`; `{spec.name}_rollback` goes back
to an earlier version.

**Candidates**
{cands}
"""


def build_train_dag(loaded: LoadedSpec) -> DAG:
    """``<name>_train``: extract → (validate ∥ build_features) → train[candidates] → evaluate → promote."""
    spec = loaded.spec
    with _pipeline_dag(
        spec,
        "train",
        description=spec.description,
        doc_md=_train_doc(spec),
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
        doc_md=f"""Trigger it with the **version** to go back to and the **reason**: `roll_back_champion`
appends a `rollback` event to the champion log (who triggered the run, when, why, and from which
version; the log is never edited) and emits `{spec.name}.champion`, which starts
`{spec.name}_score` with that version. The same from a terminal, without Airflow running:
`python -m mlpipe registry rollback {spec.name} VERSION --reason "..."`.
""",
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
    info = describe(spec.source)
    if info.unit == "objects":
        description = f"New objects under {info.watches} start {spec.name}_train"
        waits_for = f"""Waits until at least **{watch.min_new_objects}** object(s) under `{info.watches}` are newer
than the watermark kept in the registry (by LastModified, one LIST per check)"""
    else:
        description = f"New rows of {info.watches} past the watermark start {spec.name}_train"
        waits_for = f"""Waits until at least **{watch.min_new_rows}** row(s) of `{info.watches}` have
`{spec.source.watermark_column}` past the watermark kept in the registry"""
    with _pipeline_dag(
        spec,
        "watch",
        description=description,
        doc_md=f"""{waits_for} (checking every
{watch.poke_interval} s, up to {watch.timeout} s; in the triggerer when deferrable), then moves the
watermark and emits the `{spec.name}.new_data` asset event (new watermark and count in its
extra), which starts `{spec.name}_train`. The same data never announces twice.
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
    info = describe(spec.source)
    window_of, window_by = info.window_of, info.window_by
    with _pipeline_dag(
        spec,
        "monitor",
        description=f"Drift of the newest {monitor.window_days:g} days of {window_of} vs the champion",
        doc_md=f"""Compares the newest **{monitor.window_days:g} days** of the source ({window_by})
with the champion's training snapshot: PSI (warn {monitor.psi_warn},
act {monitor.psi_act}) and KS for numeric features, Jensen-Shannon distance (act {monitor.js_act}) for
categorical ones, PSI of the champion's scores, and the champion's `{spec.primary_metric}` on labelled
new rows (tolerance {monitor.performance_tolerance}). No verdict below {monitor.min_sample} rows. Drift
when ≥ {monitor.drifted_share:.0%} of the features or the score act, or the metric drops; then
`announce_drift` emits `{spec.name}.drift` (figures in its extra), once per window, which starts
`{spec.name}_train`. Every check is kept in the registry's drift history, with an HTML report.
""",
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
    where = (
        f"table `{score.table or spec.name + '_predictions'}` (rejects: "
        f"`{score.rejects_table or spec.name + '_prediction_rejects'}`) via connection "
        f"`{score.connection_id or spec.source.connection_id}`"
        if score.output == "table"
        else f"Parquet under `{spec.name}/predictions/<run>/` in the artifact store"
    )
    with _pipeline_dag(
        spec,
        "score",
        description=f"Predictions of the {spec.name} champion for rows it has not scored yet",
        doc_md=f"""Scores, with the current champion, every row of
`include/sql/{score.query or spec.source.query}` (bound to the run's as-of time) whose key
`{score.key}` that champion has not scored yet, in chunks of {score.chunk_rows:,} rows, into {where}.
Each prediction carries the model version, the score, the predicted
{"value" if spec.target.task == "regression" else "label"} and the run's as-of time.
A re-run replaces its run's rows in one transaction; rows that break the feature contract are set
aside with their reasons (nulls: {score.missing}). Runs when the champion changes
({", ".join(f"`{a.name}`" for a in events)}){f" and on `{score.schedule}` (UTC)" if score.schedule else ""};
skips while there is no champion.
""",
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


BUILDERS = {
    "train": build_train_dag,
    "rollback": build_rollback_dag,
    "watch": build_watch_dag,
    "monitor": build_monitor_dag,
    "score": build_score_dag,
}


def build_dags(pipelines_dir: Path | None = None) -> dict[str, DAG]:
    """Every pipeline's DAGs by dag id; one bad spec never stops the others from loading."""
    dags: dict[str, DAG] = {}
    for path in spec_paths(pipelines_dir):
        try:
            loaded = load_spec(path)
        except SpecError as exc:
            log.error("%s", exc)
            built = [build_error_dag(path, exc)]
        else:
            built = [BUILDERS[role](loaded) for role in loaded.spec.dag_ids()]
        dags.update((dag.dag_id, dag) for dag in built)
    for dag in dags.values():
        if "spec-error" not in dag.tags:
            dag.doc_md = f"{dag.doc_md}\n{manual_run_doc(dag)}"
    return dags
