"""The drift monitor: the newest window of source data against the champion's training snapshot.

Per-feature drift (PSI, JS, KS: see stages/drift.py), drift of the champion's predicted scores, and
where the window carries labels, the champion's primary metric on it against the one it was
promoted with. Every check goes to the registry's drift history; a breach emits once per window.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlpipe import layout
from mlpipe.contracts import DriftCheck, json_safe
from mlpipe.errors import MlpipeError
from mlpipe.registry import ModelVersion, Registry
from mlpipe.sources import reader_for
from mlpipe.spec import LoadedSpec, PipelineSpec
from mlpipe.stages.drift import DriftThresholds, drift_report
from mlpipe.stages.evaluate import better
from mlpipe.stages.extract import read_snapshot
from mlpipe.stages.metrics import compute_metrics
from mlpipe.stages.predict import predict
from mlpipe.stages.train import load_model
from mlpipe.storage import ArtifactStore


def thresholds_of(spec: PipelineSpec) -> DriftThresholds:
    m = spec.monitor
    assert m is not None
    return DriftThresholds(
        psi_warn=m.psi_warn,
        psi_act=m.psi_act,
        js_act=m.js_act,
        drifted_share_act=m.drifted_share,
        min_sample=m.min_sample,
    )


def read_window(loaded: LoadedSpec, source: Any, *, days: float) -> tuple[pd.DataFrame, str | None, str | None]:
    """The newest ``days`` of the source, through its reader: by the watermark column through the spec's
    query for a SQL source (``source`` an engine), by partition date or LastModified for an S3 source
    (a boto3 client)."""
    return reader_for(loaded, source).window(days)


def _scores(spec: PipelineSpec, model: Any, frame: pd.DataFrame) -> np.ndarray:
    return predict(spec, model, frame[spec.features.columns]).score


def _performance(spec: PipelineSpec, model: Any, window: pd.DataFrame, champion: ModelVersion) -> dict[str, Any] | None:
    """The champion's primary metric on the labelled part of the window, against its promotion figure."""
    monitor = spec.monitor
    target = spec.target.column
    if target not in window.columns:
        return None
    labelled = window[window[target].notna()]
    metric = spec.primary_metric
    promoted = champion.metrics.get(metric)
    if len(labelled) < monitor.min_sample or promoted is None:
        return {"metric": metric, "rows": len(labelled), "verdict": "insufficient_data"}
    value = compute_metrics(spec, model, labelled[spec.features.columns], labelled[target])[metric]
    drop = -better(spec.direction(metric), value, promoted)
    breach = not math.isnan(value) and drop > monitor.performance_tolerance
    return {
        "metric": metric,
        "rows": len(labelled),
        "value": value,
        "promoted": promoted,
        "drop": drop,
        "tolerance": monitor.performance_tolerance,
        "verdict": "degraded" if breach else "ok",
    }


def check_drift(
    loaded: LoadedSpec,
    store: ArtifactStore,
    registry: Registry,
    source: Any,
    *,
    run_id: str,
    report_prefix: str,
) -> DriftCheck:
    """Compare the newest window with the champion's training snapshot and record the result.

    ``source`` is what the spec's source kind reads through: a SQLAlchemy engine or a boto3 S3 client.
    """
    spec = loaded.spec
    monitor = spec.monitor
    if monitor is None:
        raise MlpipeError(f"pipeline {spec.name!r} has no monitor section in {loaded.path}")
    started = time.perf_counter()
    champion = registry.champion(spec.name)
    if champion is None:
        return DriftCheck(
            spec.name,
            "no_champion",
            False,
            False,
            None,
            None,
            0,
            None,
            None,
            None,
            None,
            ["no champion yet: nothing to compare against"],
            None,
            0.0,
        )
    snapshot = champion.lineage.get("snapshot") or {}
    reference = read_snapshot(store, store.key_of(snapshot.get("key") or snapshot["uri"]), snapshot.get("sha256"))
    if len(reference) > monitor.max_reference_rows:
        reference = reference.sample(n=monitor.max_reference_rows, random_state=spec.split.seed)
    window, start, end = read_window(loaded, source, days=monitor.window_days)
    model = load_model(store, store.key_of(champion.artifact_key), champion.artifact_sha256)
    numeric = list(spec.features.numeric)
    categorical = list(spec.features.categorical)
    scored = len(window) > 0
    report = drift_report(
        reference,
        window if scored else reference.head(0),
        numeric=numeric,
        categorical=categorical,
        thresholds=thresholds_of(spec),
        score_reference=_scores(spec, model, reference) if scored else None,
        score_current=_scores(spec, model, window) if scored else None,
        seed=spec.split.seed,
    )
    performance = _performance(spec, model, window, champion) if scored else None
    reasons = list(report.reasons)
    breach = report.verdict == "drift"
    if performance and performance.get("verdict") == "degraded":
        breach = True
        reasons.append(
            f"champion {performance['metric']} on {performance['rows']} labelled new rows is "
            f"{performance['value']:.4f}, {performance['drop']:.4f} below its {performance['promoted']:.4f}"
        )
    report_uri = _save_report(store, report_prefix, report, reference, window, spec, champion, start, end)
    figures = {"drift": report.as_dict(), "performance": json_safe(performance), "report_uri": report_uri}
    emit = registry.record_drift(
        spec.name,
        window_start=start or "",
        window_end=end or "",
        champion_version=champion.version,
        verdict=report.verdict,
        breach=breach,
        figures=json.loads(json.dumps(json_safe(figures), default=str)),
        run_id=run_id,
    )
    return DriftCheck(
        pipeline=spec.name,
        verdict=report.verdict,
        breach=breach,
        emit=emit,
        window_start=start,
        window_end=end,
        window_rows=len(window),
        champion_version=champion.version,
        drifted_share=report.drifted_share,
        score_psi=report.score.psi if report.score else None,
        performance=performance,
        reasons=reasons,
        report_uri=report_uri,
        seconds=round(time.perf_counter() - started, 3),
    )


def _save_report(
    store: ArtifactStore,
    prefix: str,
    report: Any,
    reference: pd.DataFrame,
    window: pd.DataFrame,
    spec: PipelineSpec,
    champion: ModelVersion,
    start: str | None,
    end: str | None,
) -> str:
    """The drift report (HTML + PNG plots) and its figures as JSON, kept under ``prefix``."""
    from mlpipe.stages.drift_report import render_drift_report

    store.put_bytes(f"{prefix}/{layout.DRIFT_FILE}", json.dumps(report.as_dict(), indent=2).encode())
    with tempfile.TemporaryDirectory(prefix="mlpipe-drift-") as tmp:
        index = render_drift_report(
            report,
            reference,
            window,
            Path(tmp),
            title=f"{spec.name}: drift of {start} .. {end}",
            subtitle=f"against the training data of champion v{champion.version}",
        )
        store.put_tree(f"{prefix}/{layout.REPORT_DIR}", index.parent)
    return store.uri(f"{prefix}/{layout.REPORT_DIR}/{index.name}")
