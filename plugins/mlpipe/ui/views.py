"""What the Models view shows, read from the specs, the registry and the artifact store as plain dicts.

No Airflow and no HTTP here: the FastAPI app (``mlpipe.ui.app``) authenticates, calls these and
renders the result as pages or JSON; tests call them with a real registry and store.

Where things are: model versions, the champion log, drift history and the run index in the
registry; each training run under ``<pipeline>/runs/<run_key>/`` (``run.json``,
``evaluate/verdict.json``, ``evaluate/report/``, ``validate/summary.json`` and
``validate/data_docs/``, ``promote/result.json``); each drift check's report under
``<pipeline>/monitor/<run_key>/report/``. Lists of runs come from the run index (one query, flat
in the history's length); only one run's page reads that run's files from the store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpipe import layout, urls
from mlpipe.errors import MlpipeError, SpecError
from mlpipe.layout import EVALUATION_REPORT, PROMOTION, RUN_FILE, VALIDATION_SUMMARY, VERDICT, run_key, run_prefix
from mlpipe.registry import ChampionEvent, ModelVersion, Registry
from mlpipe.spec import LoadedSpec, PipelineSpec, load_spec, spec_paths
from mlpipe.stages.runs import indexed_runs, read_json, verdict_brief
from mlpipe.storage import ArtifactStore, check_key

RUNS_SHOWN = 25
DRIFT_CHECKS_SHOWN = 25
DRIFT_CHECKS_CHARTED = 60


class NotFound(MlpipeError):
    """The page asks for a pipeline, version, run or artifact that does not exist."""


@dataclass(frozen=True)
class Pipeline:
    """One spec file of include/pipelines/: its loaded spec, or why it does not load."""

    name: str
    path: Path
    loaded: LoadedSpec | None
    error: str | None

    @property
    def spec(self) -> PipelineSpec:
        """The valid spec; :class:`NotFound` for an invalid one (it has no pages beyond its error)."""
        if self.loaded is None:
            raise NotFound(f"pipeline {self.name!r} has an invalid spec: {self.error}")
        return self.loaded.spec

    def dag_ids(self) -> dict[str, str]:
        if self.loaded is None:
            return {"train": f"{self.name}_train"}
        return self.loaded.spec.dag_ids()


def pipelines(pipelines_dir: Path | None = None) -> list[Pipeline]:
    """Every pipeline spec, valid or not, by name (the file's stem, which a valid spec's name equals)."""
    out = []
    for path in spec_paths(pipelines_dir):
        try:
            out.append(Pipeline(path.stem, path, load_spec(path), None))
        except SpecError as exc:
            out.append(Pipeline(path.stem, path, None, str(exc)))
    return out


def find_pipeline(name: str, pipelines_dir: Path | None = None) -> Pipeline:
    for pipeline in pipelines(pipelines_dir):
        if pipeline.name == name:
            return pipeline
    raise NotFound(f"no pipeline {name!r}")


# -- reading runs --------------------------------------------------------------------------------


def run_files(store: ArtifactStore, pipeline: str, key: str) -> set[str]:
    """The files of one run (relative to the run), from a listing of that run only."""
    prefix = run_prefix(pipeline, key)
    return {k.removeprefix(f"{prefix}/") for k in store.list(prefix)}


def training_runs(
    store: ArtifactStore, registry: Registry, pipeline: str, newest: int | None = None
) -> list[dict[str, Any]]:
    """The index rows of the pipeline's training DAG, oldest first (other DAGs of the pipeline may keep
    records too); the ``newest`` few when given."""
    return indexed_runs(registry, store, pipeline, dag_id=f"{pipeline}_train", newest=newest)


def _run_links(pipeline: str, key: str, files: set[str]) -> dict[str, str]:
    links = {"run": urls.run(pipeline, key)}
    if VALIDATION_SUMMARY in files:
        links["data_docs"] = urls.data_docs(pipeline, key)
    if EVALUATION_REPORT in files:
        links["evaluation_report"] = urls.evaluation_report(pipeline, key)
    return links


def _shown_brief(brief: dict[str, Any] | None) -> dict[str, Any] | None:
    """An index row's verdict brief as pages show it (the report is a link of its own)."""
    return None if brief is None else {k: v for k, v in brief.items() if k != "report_uri"}


def _run_summary(pipeline: str, row: dict[str, Any]) -> dict[str, Any]:
    """A run as lists show it, from its index row."""
    key = row["run_key"]
    return {
        "run_key": key,
        "run_id": row.get("run_id"),
        "dag_id": row.get("dag_id"),
        "trigger": row.get("trigger"),
        "as_of": row.get("as_of"),
        "verdict": _shown_brief(row.get("verdict")),
        "promotion": row.get("promotion"),
        "links": _run_links(pipeline, key, set(row.get("files") or [])),
    }


def _trigger_of(event: ChampionEvent, champion: ModelVersion | None, registry: Registry) -> str | None:
    """What started the run that made this champion change (its indexed record, else the version's lineage)."""
    if event.run_id is not None:
        record = registry.indexed_run(event.pipeline, run_key(event.run_id))
        if record is not None and record.get("trigger"):
            return str(record["trigger"])
    if champion is not None and champion.run_id == event.run_id:
        return (champion.lineage.get("trigger") or {}).get("trigger")
    return None


def _champion(
    pipeline: str, registry: Registry, history: list[ChampionEvent], metric: str | None
) -> dict[str, Any] | None:
    champion = registry.champion(pipeline)
    if champion is None or not history:
        return None
    event = history[-1]
    return {
        "version": champion.version,
        "candidate": champion.candidate,
        "estimator": champion.estimator,
        "primary_metric": metric,
        "primary_value": champion.metrics.get(metric) if metric else None,
        "metrics": champion.metrics,
        "promoted_at": event.created_at.isoformat(),
        "action": event.action,
        "reason": event.reason,
        "actor": event.actor,
        "run_id": event.run_id,
        "trigger": _trigger_of(event, champion, registry),
        "links": {"version": urls.version(pipeline, champion.version)},
    }


def _drift_brief(pipeline: str, check: dict[str, Any]) -> dict[str, Any]:
    figures = check.get("figures") or {}
    drift = figures.get("drift") or {}
    key = run_key(check["run_id"])
    return {
        "created_at": check["created_at"],
        "window_start": check["window_start"],
        "window_end": check["window_end"],
        "champion_version": check["champion_version"],
        "verdict": check["verdict"],
        "breach": bool(check["breach"]),
        "emitted": bool(check["emitted"]),
        "drifted_share": drift.get("drifted_share"),
        "reasons": list(drift.get("reasons") or []),
        "run_id": check["run_id"],
        "run_key": key,
        "links": {"drift_report": urls.drift_report(pipeline, key)} if figures.get("report_uri") else {},
    }


def _spec_brief(pipeline: Pipeline) -> dict[str, Any]:
    out: dict[str, Any] = {"name": pipeline.name, "spec_file": pipeline.path.name, "error": pipeline.error}
    out["dags"] = pipeline.dag_ids()
    if pipeline.loaded is None:
        return out
    spec = pipeline.loaded.spec
    out.update(
        description=spec.description,
        owner=spec.owner,
        target=spec.target.column,
        task=spec.target.task,
        primary_metric=spec.primary_metric,
        secondary_metrics=list(spec.secondary_metrics),
        schedule=spec.schedule,
    )
    return out


# -- the pages -----------------------------------------------------------------------------------


def pipeline_summary(pipeline: Pipeline, store: ArtifactStore, registry: Registry) -> dict[str, Any]:
    """One row of the overview: champion, last training run and its verdict, last drift check."""
    out = _spec_brief(pipeline)
    if pipeline.loaded is None:
        return {**out, "champion": None, "versions": 0, "last_run": None, "last_drift": None}
    name = pipeline.name
    last = training_runs(store, registry, name, newest=1)
    history = registry.champion_history(name)
    checks = registry.drift_checks(name)
    champion = _champion(name, registry, history, out["primary_metric"])
    last_run = _run_summary(name, last[-1]) if last else None
    return {
        **out,
        "champion": champion,
        "incident": _incident(champion, last_run),
        "versions": registry.next_version(name) - 1,
        "last_run": last_run,
        "last_drift": _drift_brief(name, checks[-1]) if checks else None,
        "links": {"pipeline": urls.pipeline(name)},
    }


def _incident(champion: dict[str, Any] | None, last_run: dict[str, Any] | None) -> dict[str, Any] | None:
    """The champion's artifact failed its integrity check in the last training run, and it is still champion."""
    verdict = (last_run or {}).get("verdict") or {}
    if champion is None or not verdict.get("incident") or verdict.get("champion_version") != champion["version"]:
        return None
    return {"version": champion["version"], "error": verdict["incident"], "links": last_run["links"]}


def overview(store: ArtifactStore, registry: Registry, names: set[str] | None = None) -> list[dict[str, Any]]:
    """Every pipeline's summary (only those in ``names`` when given: the ones the user may read)."""
    return [pipeline_summary(p, store, registry) for p in pipelines() if names is None or p.name in names]


def _version_row(
    pipeline: str, version: ModelVersion, champion: int | None, ever: set[int], runs: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """One model version; ``runs`` maps run keys to index rows (the version's run's files give its links)."""
    key = run_key(version.run_id)
    return {
        "version": version.version,
        "candidate": version.candidate,
        "estimator": version.estimator,
        "metrics": version.metrics,
        "data_rows": version.data_rows,
        "created_at": version.created_at.isoformat() if version.created_at else None,
        "run_id": version.run_id,
        "run_key": key,
        "trigger": (version.lineage.get("trigger") or {}).get("trigger"),
        "is_champion": version.version == champion,
        "was_champion": version.version in ever,
        "links": {
            "version": urls.version(pipeline, version.version),
            **_run_links(pipeline, key, set((runs.get(key) or {}).get("files") or [])),
        },
    }


def _event_row(pipeline: str, event: ChampionEvent) -> dict[str, Any]:
    return {
        **event.as_dict(),
        "links": {"version": urls.version(pipeline, event.version)},
    }


def drift_series(checks: list[dict[str, Any]]) -> dict[str, Any]:
    """Per feature (and the score), its drift statistic over the checks, with the thresholds in force.

    Numeric features and the score are measured by PSI, categorical ones by JS distance, as in
    ``stages/drift.py``; a check too small to judge carries its figures with status 'n/a'.
    """
    checks = checks[-DRIFT_CHECKS_CHARTED:]
    labels = [_short_time(c.get("window_end") or c["created_at"]) for c in checks]
    features: dict[str, dict[str, Any]] = {}
    thresholds: dict[str, Any] = {}
    for index, check in enumerate(checks):
        drift = (check.get("figures") or {}).get("drift") or {}
        thresholds = drift.get("thresholds") or thresholds
        rows = list(drift.get("features") or [])
        if drift.get("score"):
            rows.append(drift["score"])
        for row in rows:
            stat = "js" if row.get("kind") == "categorical" else "psi"
            entry = features.setdefault(
                row["feature"],
                {
                    "feature": row["feature"],
                    "kind": row.get("kind"),
                    "statistic": stat,
                    "values": [None] * len(checks),
                    "statuses": [None] * len(checks),
                },
            )
            value = row.get(stat)
            entry["values"][index] = value if isinstance(value, int | float) and math.isfinite(value) else None
            entry["statuses"][index] = row.get("status")
    for entry in features.values():
        if entry["statistic"] == "psi":
            entry["thresholds"] = {"warn": thresholds.get("psi_warn"), "act": thresholds.get("psi_act")}
        else:
            entry["thresholds"] = {"warn": thresholds.get("js_warn"), "act": thresholds.get("js_act")}
    ordered = sorted(features.values(), key=lambda e: (e["kind"] == "score", e["kind"] or "", e["feature"]))
    return {"labels": labels, "features": ordered}


def _short_time(value: str) -> str:
    """'2026-03-07T06:00:00+00:00' -> '03-07 06:00': a chart's axis label."""
    return value[5:16].replace("T", " ") if len(value) >= 16 else value


def pipeline_detail(pipeline: Pipeline, store: ArtifactStore, registry: Registry) -> dict[str, Any]:
    """The pipeline page: versions with their metrics, the champion log, runs, drift history."""
    summary = pipeline_summary(pipeline, store, registry)
    name = pipeline.name
    spec = pipeline.spec
    history = registry.champion_history(name)
    champion = history[-1].version if history else None
    ever = {e.version for e in history}
    listed = registry.list_versions(name)
    by_key = {r["run_key"]: r for r in registry.indexed_runs(name, run_keys={run_key(v.run_id) for v in listed})}
    versions = [_version_row(name, v, champion, ever, by_key) for v in listed]
    runs = training_runs(store, registry, name, newest=RUNS_SHOWN)
    checks = registry.drift_checks(name)
    return {
        **summary,
        "metric_names": [spec.primary_metric, *spec.secondary_metrics],
        "directions": {m: spec.direction(m) for m in [spec.primary_metric, *spec.secondary_metrics]},
        "gate": spec.gate.model_dump(),
        "candidates": [{"name": c.name, "estimator": c.estimator, "params": c.params} for c in spec.candidates],
        "version_history": versions,
        "champion_log": [_event_row(name, e) for e in history],
        "rollbacks": [_event_row(name, e) for e in history if e.action == "rollback"],
        "runs": [_run_summary(name, r) for r in reversed(runs)],
        "drift_checks": [_drift_brief(name, c) for c in reversed(checks[-DRIFT_CHECKS_SHOWN:])],
        "drift": drift_series(checks),
        "monitor": spec.monitor.model_dump() if spec.monitor else None,
    }


def version_detail(pipeline: Pipeline, store: ArtifactStore, registry: Registry, number: int) -> dict[str, Any]:
    """One model version: metrics, parameters, lineage, its champion events and its run's reports."""
    name = pipeline.spec.name
    try:
        version = registry.get_version(name, number)
    except MlpipeError:
        raise NotFound(f"pipeline {name!r} has no model version {number}") from None
    history = registry.champion_history(name)
    champion = history[-1].version if history else None
    key = run_key(version.run_id)
    indexed = registry.indexed_run(name, key)
    row = _version_row(name, version, champion, {e.version for e in history}, {key: indexed} if indexed else {})
    return {
        **row,
        "pipeline": name,
        "pipeline_link": urls.pipeline(name),
        "params": version.params,
        "lineage": version.lineage,
        "data_sha256": version.data_sha256,
        "spec_sha256": version.spec_sha256,
        "code_version": version.code_version,
        "artifact_key": version.artifact_key,
        "artifact_uri": store.uri_of(version.artifact_key),
        "artifact_sha256": version.artifact_sha256,
        "events": [_event_row(name, e) for e in history if number in (e.version, e.previous_version)],
    }


def run_detail(pipeline: Pipeline, store: ArtifactStore, registry: Registry, key: str) -> dict[str, Any]:
    """One training run: what started it, the gate's verdict rule by rule, what promotion did."""
    name = pipeline.spec.name
    files = run_files(store, name, check_run_key(key))
    if RUN_FILE not in files:
        raise NotFound(f"pipeline {name!r} has no recorded run {key!r}")
    record = {**(read_json(store, layout.run_record(name, key)) or {}), "run_key": key}
    verdict = read_json(store, layout.verdict_key(name, key)) if VERDICT in files else None
    validation = read_json(store, layout.validation_summary(name, key)) if VALIDATION_SUMMARY in files else None
    promotion = read_json(store, layout.promotion_key(name, key)) if PROMOTION in files else None
    version = registry.version_for_run(name, record["run_id"]) if record.get("run_id") else None
    brief = verdict_brief(verdict)
    if brief and brief.get("report_uri"):
        files.add(EVALUATION_REPORT)  # a reused evaluation's report lives in the run it came from
    row = {**record, "files": sorted(files), "verdict": brief, "promotion": promotion}
    return {
        **_run_summary(name, row),
        "pipeline": name,
        "pipeline_link": urls.pipeline(name),
        "version_link": urls.version(name, version.version) if version else None,
        "asset_events": record.get("asset_events") or [],
        "conf": record.get("conf") or {},
        "verdict_full": verdict,
        "slices": _table((verdict or {}).get("slices")),
        "validation": validation,
        "version": version.version if version else None,
    }


def _table(rows: Any) -> dict[str, Any] | None:
    """A list of flat dicts (the verdict's slices, say) as columns and rows; None for anything else."""
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        return None
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns and not isinstance(row[k], dict | list))
    return {"columns": columns, "rows": [[row.get(c) for c in columns] for row in rows]}


def check_run_key(key: str) -> str:
    """A run key from a URL: one safe path part (no '/', no '..')."""
    try:
        if "/" in key or check_key(key) != key:
            raise MlpipeError(key)
    except MlpipeError:
        raise NotFound(f"invalid run key {key!r}") from None
    return key


# -- what the report links resolve to ------------------------------------------------------------


def data_docs_key(store: ArtifactStore, pipeline: str, key: str) -> str:
    """The GX Data Docs page of a run's validation (the one its summary names)."""
    summary = read_json(store, layout.validation_summary(pipeline, check_run_key(key)))
    uri = (summary or {}).get("data_docs_uri")
    if not uri:
        raise NotFound(f"run {key!r} of {pipeline!r} has no Data Docs (validation did not run)")
    return _own_key(store, pipeline, uri)


def evaluation_report_key(store: ArtifactStore, pipeline: str, key: str) -> str:
    """The evaluation report of a training run (the verdict's ``report_uri`` when it names one)."""
    key = check_run_key(key)
    verdict = read_json(store, layout.verdict_key(pipeline, key)) or {}
    report = _own_key(store, pipeline, verdict["report_uri"]) if verdict.get("report_uri") else None
    report = report or layout.evaluation_report(pipeline, key)
    if not store.exists(report):
        raise NotFound(f"run {key!r} of {pipeline!r} has no evaluation report")
    return report


def drift_report_key(store: ArtifactStore, pipeline: str, key: str) -> str:
    """The HTML report of a drift check (monitor run ``key``)."""
    report = layout.drift_report(pipeline, check_run_key(key))
    if not store.exists(report):
        raise NotFound(f"monitor run {key!r} of {pipeline!r} has no drift report")
    return report


def _own_key(store: ArtifactStore, pipeline: str, uri: str) -> str:
    """The store key behind ``uri``, which must be in this store and this pipeline's part of it."""
    try:
        key = store.key_of(uri)
    except (FileNotFoundError, MlpipeError):
        raise NotFound(f"{uri} is not in this artifact store") from None
    parsed = layout.try_parse_key(key)
    if parsed is None or parsed.pipeline != pipeline:
        raise NotFound(f"{uri} is not an artifact of pipeline {pipeline!r}")
    return key
