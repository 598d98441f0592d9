"""What a training run did, read back from its artifacts and the registry: the demo summary (laid out by
``templates/reports/summary.txt``), and where a model version's reports are (``python -m mlpipe report open``)."""

from __future__ import annotations

from typing import Any

from mlpipe import layout
from mlpipe.errors import MlpipeError
from mlpipe.layout import run_key
from mlpipe.registry import Registry
from mlpipe.stages.html_page import report_template
from mlpipe.stages.runs import describe_trigger, indexed_runs, read_json, reused_from, validation_failed
from mlpipe.storage import ArtifactStore


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))


def render_summary(pipeline: str, store: ArtifactStore, registry: Registry, run_id: str | None = None) -> str:
    # The run index finds the run (one query); its own files say what it did.
    runs = indexed_runs(registry, store, pipeline, newest=1)  # (rebuilds an empty index from the store)
    if run_id is not None:
        row = registry.indexed_run(pipeline, run_key(run_id))
        runs = [row] if row is not None else []
    if not runs:
        raise MlpipeError(f"no recorded run of {pipeline!r} in {store!r}; run {pipeline}_train first")
    key = runs[-1]["run_key"]
    run = {**runs[-1], **(read_json(store, layout.run_record(pipeline, key)) or {})}
    snap = read_json(store, layout.snapshot_record(pipeline, key))
    validation = read_json(store, layout.validation_summary(pipeline, key))
    features = read_json(store, layout.features_manifest(pipeline, key))
    verdict = read_json(store, layout.verdict_key(pipeline, key))
    promotion = read_json(store, layout.promotion_key(pipeline, key))

    reused = {
        name: reused_from(store, pipeline, runs[-1]["run_key"], name) for name in (verdict or {}).get("candidates", {})
    }
    champ = registry.champion(pipeline)
    text = report_template("summary.txt").render(
        pipeline=pipeline,
        run=run,
        trigger=describe_trigger(run),
        snap=snap,
        validation=validation,
        features=features,
        # The split runs beside validation: after a failed one it exists, and nothing used it.
        split_unused=validation is not None and validation_failed(validation),
        verdict=verdict,
        metrics=_metrics_table(verdict) if verdict else None,
        reused=[name for name, origin in reused.items() if origin],
        origins=sorted({o["run_id"] for o in reused.values() if o}),
        saved=sum(float(o.get("fit_seconds") or 0) for o in reused.values() if o),
        promotion=promotion,
        champion=champ,
        champion_uri=store.uri_of(champ.artifact_key) if champ else None,
        artifacts=store.uri(layout.run_prefix(pipeline, key)),
    )
    return text.rstrip("\n")  # each line of the template ends in one, the last line's included


def _metrics_table(verdict: dict[str, Any]) -> dict[str, Any]:
    """The holdout metrics of every candidate (and the champion when scored): primary first, as text cells."""
    primary = verdict["primary_metric"]
    metrics = [primary, *[m for m in next(iter(verdict["candidates"].values()), {}) if m != primary]]
    rows = [
        (name + (" (best)" if name == verdict["best_candidate"] else ""), [_fmt(values.get(m)) for m in metrics])
        for name, values in verdict["candidates"].items()
    ]
    if verdict.get("champion_metrics"):
        rows.append(
            (f"champion v{verdict['champion_version']}", [_fmt(verdict["champion_metrics"].get(m)) for m in metrics])
        )
    return {"header": ["on holdout", *metrics], "rows": rows}


def report_locations(
    pipeline: str, store: ArtifactStore, registry: Registry, version: int | None = None
) -> dict[str, Any]:
    """URIs of the reports of model ``version`` (default: the champion): the evaluation report of the
    run that trained it, and where they exist its run's GX Data Docs and its latest drift report.

    Raises MlpipeError naming what is missing: no champion, no such version, no evaluation report.
    """
    if version is None:
        model = registry.champion(pipeline)
        if model is None:
            raise MlpipeError(f"pipeline {pipeline!r} has no champion yet: give a VERSION, or run {pipeline}_train")
    else:
        model = registry.get_version(pipeline, version)
    key = run_key(model.run_id)
    report = layout.evaluation_report(pipeline, key)
    verdict = read_json(store, layout.verdict_key(pipeline, key)) or {}
    if verdict.get("reused_from") and verdict.get("report_uri") and not store.exists(report):
        report = store.key_of(verdict["report_uri"])  # a reused evaluation: the report of its run
    if not store.exists(report):
        raise MlpipeError(
            f"{pipeline} v{model.version} has no evaluation report: its run {model.run_id} wrote none at "
            f"{store.uri(report)} (runs evaluated before reports existed have none; a new training run writes one)"
        )
    out: dict[str, Any] = {
        "pipeline": pipeline,
        "version": model.version,
        "run_id": model.run_id,
        "evaluation_report": store.uri(report),
        "data_docs": None,
        "drift_report": None,
    }
    validation = read_json(store, layout.validation_summary(pipeline, key)) or {}
    out["data_docs"] = validation.get("data_docs_uri")
    checks = [c for c in registry.drift_checks(pipeline) if c["champion_version"] == model.version]
    drift = next((c for c in reversed(checks) if (c.get("figures") or {}).get("report_uri")), None)
    if drift is not None:
        out["drift_report"] = drift["figures"]["report_uri"]
        out["drift_window"] = f"{drift['window_start']} .. {drift['window_end']}"
    return out
