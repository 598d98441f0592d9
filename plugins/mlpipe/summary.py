"""What a training run did, read back from its artifacts and the registry: the demo summary, and where
a model version's reports are (``python -m mlpipe report open``)."""

from __future__ import annotations

from typing import Any

from mlpipe.errors import MlpipeError
from mlpipe.registry import Registry
from mlpipe.stages.runs import (
    RUN_FILE,
    describe_trigger,
    indexed_runs,
    read_json,
    reused_from,
    run_prefix,
    validation_failed,
)
from mlpipe.storage import ArtifactStore, run_key


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
    prefix = run_prefix(pipeline, runs[-1]["run_key"])
    run = {**runs[-1], **(read_json(store, f"{prefix}/{RUN_FILE}") or {})}
    snap = read_json(store, f"{prefix}/extract/snapshot.json")
    validation = read_json(store, f"{prefix}/validate/summary.json")
    features = read_json(store, f"{prefix}/features/manifest.json")
    verdict = read_json(store, f"{prefix}/evaluate/verdict.json")
    promotion = read_json(store, f"{prefix}/promote/result.json")

    lines = [f"== {pipeline}: run {run.get('run_id')} =="]
    lines.append(f"trigger     {describe_trigger(run)}; data as of {run.get('as_of')}")
    if snap:
        lines.append(f"data        {snap['rows']:,} rows, sha256 {snap['sha256'][:16]}…")
    if validation:
        stats = validation.get("statistics", {})
        state = "passed" if validation.get("success") else "FAILED"
        lines.append(
            f"validation  {state}: {stats.get('successful_expectations')}/{stats.get('evaluated_expectations')} "
            f"expectations of suite {validation.get('suite')}"
        )
        for failure in validation.get("failures", [])[:10]:
            lines.append(
                f"            - {failure.get('expectation')} on {failure.get('column') or 'table'}: "
                f"observed {failure.get('observed')}"
            )
        reference = validation.get("reference")
        if reference:
            lines.append(f"reference   {reference.get('line')}")
            lines += [f"            - {failure.get('detail')}" for failure in reference.get("failures", [])[:10]]
    else:
        lines.append("validation  not reached")
    if features:
        # The split runs beside validation: after a failed one it exists, and nothing used it.
        failed = validation is not None and validation_failed(validation)
        lines.append(
            f"split       {features['split']}: {features['train_rows']:,} train / "
            f"{features['holdout_rows']:,} holdout rows" + (" (unused: the data failed validation)" if failed else "")
        )
    if verdict:
        metrics = [
            verdict["primary_metric"],
            *[m for m in next(iter(verdict["candidates"].values()), {}) if m != verdict["primary_metric"]],
        ]
        lines.append("metrics     " + "".join(f"{m:>18}" for m in ["on holdout", *metrics]))
        for name, values in verdict["candidates"].items():
            mark = " (best)" if name == verdict["best_candidate"] else ""
            lines.append("            " + f"{name + mark:>18}" + "".join(f"{_fmt(values.get(m)):>18}" for m in metrics))
        if verdict.get("champion_metrics"):
            label = f"champion v{verdict['champion_version']}"
            lines.append(
                "            "
                + f"{label:>18}"
                + "".join(f"{_fmt(verdict['champion_metrics'].get(m)):>18}" for m in metrics)
            )
        elif verdict.get("champion_version"):
            lines.append(f"            champion v{verdict['champion_version']}: could not be scored")
        else:
            lines.append("            champion: none before this run")
        lines.append(f"verdict     {'BLESSED' if verdict['blessed'] else 'not blessed'} ({verdict['decision']})")
        if verdict.get("reused_from"):
            lines.append(
                f"            reused the evaluation of run {verdict['reused_from']} (same data, spec and code, "
                "champion unchanged since)"
            )
        for rule in verdict["rules"]:
            lines.append(f"            [{'pass' if rule['passed'] else 'FAIL'}] {rule['rule']}: {rule['detail']}")
    reused = {
        name: reused_from(store, pipeline, runs[-1]["run_key"], name) for name in (verdict or {}).get("candidates", {})
    }
    origins = sorted({o["run_id"] for o in reused.values() if o})
    if origins:
        saved = sum(float(o.get("fit_seconds") or 0) for o in reused.values() if o)
        lines.append(
            f"training    reused {', '.join(n for n, o in reused.items() if o)} of run {', '.join(origins)}: same "
            f"snapshot sha256, spec and code version, no training ({saved:.1f}s of fits saved)"
        )
    if promotion:
        lines.append(f"promotion   {promotion['message']}")
    champ = registry.champion(pipeline)
    lines.append(
        f"champion    now v{champ.version} ({champ.candidate}), artifact {champ.artifact_uri}"
        if champ
        else "champion    none"
    )
    lines.append(f"artifacts   {store.uri(prefix)}/")
    if verdict and verdict.get("report_uri"):
        lines.append(f"report      {verdict['report_uri']}")
    if validation and validation.get("data_docs_uri"):
        lines.append(f"data docs   {validation['data_docs_uri']}")
    if validation and (validation.get("reference") or {}).get("html_uri"):
        lines.append(f"ref report  {validation['reference']['html_uri']}")
    return "\n".join(lines)


def report_locations(
    pipeline: str, store: ArtifactStore, registry: Registry, version: int | None = None
) -> dict[str, Any]:
    """URIs of the reports of model ``version`` (default: the champion): the evaluation report of the
    run that trained it, and where they exist its run's GX Data Docs and its latest drift report.

    Raises MlpipeError naming what is missing: no champion, no such version, no evaluation report.
    """
    from mlpipe.stages.evaluation_report import report_prefix  # (pulls in scikit-learn: only when asked)

    if version is None:
        model = registry.champion(pipeline)
        if model is None:
            raise MlpipeError(f"pipeline {pipeline!r} has no champion yet: give a VERSION, or run {pipeline}_train")
    else:
        model = registry.get_version(pipeline, version)
    key = run_key(model.run_id)
    report = f"{report_prefix(pipeline, key)}/index.html"
    verdict = read_json(store, f"{run_prefix(pipeline, key)}/evaluate/verdict.json") or {}
    if verdict.get("reused_from") and verdict.get("report_uri") and not store.exists(report):
        report = store.key_for_uri(verdict["report_uri"])  # a reused evaluation: the report of its run
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
    validation = read_json(store, f"{run_prefix(pipeline, key)}/validate/summary.json") or {}
    out["data_docs"] = validation.get("data_docs_uri")
    checks = [c for c in registry.drift_checks(pipeline) if c["champion_version"] == model.version]
    drift = next((c for c in reversed(checks) if (c.get("figures") or {}).get("report_uri")), None)
    if drift is not None:
        out["drift_report"] = drift["figures"]["report_uri"]
        out["drift_window"] = f"{drift['window_start']} .. {drift['window_end']}"
    return out
