"""The DAGs' docs (``doc_md``) and one-line descriptions, as text built from a pipeline's spec.

Pure text builders for :mod:`mlpipe.dag_factory`: no Airflow import and nothing heavy, as they run
at DAG-parse time. Each role's builder writes that DAG's own part; :func:`dag_doc` puts it between
what every pipeline DAG shows (what it predicts, the gate, the triggers, where the results are), and
:func:`manual_run_doc` adds how to start the DAG by hand with its Params.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlpipe import urls
from mlpipe.sources import describe
from mlpipe.spec import PipelineSpec

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


def dag_doc(spec: PipelineSpec, role: str, body: str, base_path: str = "") -> str:
    """A pipeline DAG's docs: what the pipeline predicts and from what, the role's own ``body``, the
    gate, the triggers, and where its results are shown (the Models view under ``base_path``, the path
    of Airflow's ``[api] base_url``). Built from the spec for every role."""
    target = spec.target
    positive = f", positive class `{target.positive_class}`" if target.positive_class is not None else ""
    models = urls.in_airflow_ui(urls.pipeline(spec.name), base_path)
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


def manual_run_doc(dag: Any) -> str:
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


def train_doc(spec: PipelineSpec) -> str:
    """``<name>_train``: its tasks in order, the holdout, the metrics, the approval, and the candidates."""
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


def rollback_doc(spec: PipelineSpec) -> str:
    """``<name>_rollback``: what its Params do, and the same from a terminal."""
    return f"""Trigger it with the **version** to go back to and the **reason**: `roll_back_champion`
appends a `rollback` event to the champion log (who triggered the run, when, why, and from which
version; the log is never edited) and emits `{spec.name}.champion`, which starts
`{spec.name}_score` with that version. The same from a terminal, without Airflow running:
`python -m mlpipe registry rollback {spec.name} VERSION --reason "..."`.
"""


def watch_description(spec: PipelineSpec) -> str:
    """``<name>_watch`` in a line: the new objects or rows that start training."""
    info = describe(spec.source)
    if info.unit == "objects":
        return f"New objects under {info.watches} start {spec.name}_train"
    return f"New rows of {info.watches} past the watermark start {spec.name}_train"


def watch_doc(spec: PipelineSpec) -> str:
    """``<name>_watch``: what it waits for, how often and how long, and the event it emits."""
    watch, info = spec.watch, describe(spec.source)
    assert watch is not None
    if info.unit == "objects":
        waits_for = f"""Waits until at least **{watch.min_new_objects}** object(s) under `{info.watches}` are newer
than the watermark kept in the registry (by LastModified, one LIST per check)"""
    else:
        waits_for = f"""Waits until at least **{watch.min_new_rows}** row(s) of `{info.watches}` have
`{spec.source.watermark_column}` past the watermark kept in the registry"""
    return f"""{waits_for} (checking every
{watch.poke_interval} s, up to {watch.timeout} s; in the triggerer when deferrable), then moves the
watermark and emits the `{spec.name}.new_data` asset event (new watermark and count in its
extra), which starts `{spec.name}_train`. The same data never announces twice.
"""


def monitor_description(spec: PipelineSpec) -> str:
    """``<name>_monitor`` in a line: the window it checks against the champion."""
    monitor = spec.monitor
    assert monitor is not None
    return f"Drift of the newest {monitor.window_days:g} days of {describe(spec.source).window_of} vs the champion"


def monitor_doc(spec: PipelineSpec) -> str:
    """``<name>_monitor``: the window, the drift figures with their thresholds, and the event it emits."""
    monitor = spec.monitor
    assert monitor is not None
    window_by = describe(spec.source).window_by
    return f"""Compares the newest **{monitor.window_days:g} days** of the source ({window_by})
with the champion's training snapshot: PSI (warn {monitor.psi_warn},
act {monitor.psi_act}) and KS for numeric features, Jensen-Shannon distance (act {monitor.js_act}) for
categorical ones, PSI of the champion's scores, and the champion's `{spec.primary_metric}` on labelled
new rows (tolerance {monitor.performance_tolerance}). No verdict below {monitor.min_sample} rows. Drift
when ≥ {monitor.drifted_share:.0%} of the features or the score act, or the metric drops; then
`announce_drift` emits `{spec.name}.drift` (figures in its extra), once per window, which starts
`{spec.name}_train`. Every check is kept in the registry's drift history, with an HTML report.
"""


def score_doc(spec: PipelineSpec, events: list[Any]) -> str:
    """``<name>_score``: which rows it scores with the champion, where the predictions go, and when it runs
    (``events``: the assets that start it)."""
    score = spec.score
    assert score is not None
    where = (
        f"table `{score.table or spec.name + '_predictions'}` (rejects: "
        f"`{score.rejects_table or spec.name + '_prediction_rejects'}`) via connection "
        f"`{score.connection_id or spec.source.connection_id}`"
        if score.output == "table"
        else f"Parquet under `{spec.name}/predictions/<run>/` in the artifact store"
    )
    return f"""Scores, with the current champion, every row of
`include/sql/{score.query or spec.source.query}` (bound to the run's as-of time) whose key
`{score.key}` that champion has not scored yet, in chunks of {score.chunk_rows:,} rows, into {where}.
Each prediction carries the model version, the score, the predicted
{"value" if spec.target.task == "regression" else "label"} and the run's as-of time.
A re-run replaces its run's rows in one transaction; rows that break the feature contract are set
aside with their reasons (nulls: {score.missing}). Runs when the champion changes
({", ".join(f"`{a.name}`" for a in events)}){f" and on `{score.schedule}` (UTC)" if score.schedule else ""};
skips while there is no champion.
"""


def error_doc(path: Path, message: str) -> str:
    """The placeholder DAG of a spec that fails validation: its error, and where to fix it."""
    return (
        f"### This pipeline's spec is invalid\n\n```\n{message}\n```\n\nFix `{path.name}`; "
        "the fields are described in `docs/spec.md`."
    )
