"""A pipeline with a history, written through the real registry and artifact store for the Models view tests.

``flights_delay`` (the repo's spec) gets four training runs and three drift checks:

- run 1 (manual): first champion v1; run 2 (schedule): v2 beats it; run 3 (new_data): rejected
  by the gate; run 4 (drift): v3 beats v2 and has an evaluation report with a plot; then a
  rollback makes v2 champion again. Verdicts come from the real gate (``judge``).
- drift checks 1..3 against the champion: real ``drift_report`` figures of synthetic windows
  that move further each time, each with its HTML report and PNG plots (``render_drift_report``).

Nothing is trained: the view reads records, so the records are what matters here; the browser
test runs the real DAGs instead.
"""

from __future__ import annotations

import json
import struct
import tempfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlpipe import layout
from mlpipe.contracts import PromotionResult
from mlpipe.registry import ChampionEvent, ModelVersion, Registry, champion_log
from mlpipe.spec import LoadedSpec
from mlpipe.stages.evaluate import better, judge, verdict_key
from mlpipe.stages.promote import result_key
from mlpipe.stages.runs import record_run, run_prefix
from mlpipe.stages.uncertainty import Interval, PairedUncertainty
from mlpipe.storage import LocalStore, run_key

PIPELINE = "flights_delay"
START = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
SECONDARY = {"average_precision": 0.40, "log_loss": 0.55, "brier": 0.18}


def tiny_png(width: int = 4, height: int = 3, rgb: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """A valid PNG of one colour (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@dataclass
class TrainingRun:
    run_id: str
    trigger: str
    scores: dict[str, float]  # candidate -> roc_auc
    at: datetime

    @property
    def key(self) -> str:
        return run_key(self.run_id)


RUNS = [
    TrainingRun("manual__2026-03-01T02:00:00+00:00", "manual", {"logreg": 0.70, "hgb": 0.72}, START),
    TrainingRun(
        "scheduled__2026-03-02T02:00:00+00:00", "schedule", {"logreg": 0.71, "hgb": 0.73}, START + timedelta(days=1)
    ),
    TrainingRun(
        "asset_triggered__2026-03-03T02:00:00+00:00", "new_data", {"logreg": 0.70, "hgb": 0.7305}, START + timedelta(2)
    ),
    TrainingRun(
        "asset_triggered__2026-03-04T02:00:00+00:00", "drift", {"logreg": 0.72, "hgb": 0.75}, START + timedelta(days=3)
    ),
]
ROLLBACK_RUN = "manual__2026-03-05T09:00:00+00:00"
ROLLBACK_REASON = "v3 scores late flights as on time since the schedule change; back to v2"


def _metrics(roc_auc: float) -> dict[str, float]:
    return {"roc_auc": roc_auc, **SECONDARY}


def _intervals(spec: Any, scores: dict[str, dict[str, float]], champion: dict[str, float] | None) -> Any:
    """Paired intervals of the best candidate against the champion, +-0.005 around each gain (the demo
    spec's gate has a confidence); None without a champion or a confidence."""
    if champion is None or spec.gate.confidence is None:
        return None
    best = max(scores.values(), key=lambda m: m[spec.primary_metric])
    gains = {m: better(spec.direction(m), best[m], champion[m]) for m in best}
    return PairedUncertainty(
        confidence=spec.gate.confidence,
        resamples=1000,
        seed=spec.split.seed,
        stratified=True,
        metrics={m: Interval(g, g - 0.005, g + 0.005, 1.0) for m, g in gains.items()},
    )


def _write_validation(store: LocalStore, run: TrainingRun) -> None:
    prefix = f"{run_prefix(PIPELINE, run.key)}/validate"
    page = f"{prefix}/data_docs/validations/flights_delay/{run.key}/result.html"
    store.put_bytes(page, f"<html><body><h1>Validation of {run.key}</h1><p>41/41 passed</p></body></html>".encode())
    summary = {
        "success": True,
        "suite": "flights_delay",
        "suite_file": "flights_delay.json",
        "statistics": {"evaluated_expectations": 41, "successful_expectations": 41},
        "failures": [],
        "rows": 1000,
        "data_docs_uri": store.uri(page),
    }
    store.put_bytes(f"{prefix}/summary.json", json.dumps(summary).encode())


def build_history(loaded: LoadedSpec, store: LocalStore, registry: Registry) -> dict[str, Any]:
    """Write the runs, versions, champion log and drift checks described in the module docstring."""
    spec = loaded.spec
    champion: ModelVersion | None = None
    seq = 0
    versions: dict[int, ModelVersion] = {}
    for run in RUNS:
        record_run(
            store,
            PIPELINE,
            run.key,
            {"trigger": run.trigger, "run_id": run.run_id, "dag_id": f"{PIPELINE}_train", "as_of": run.at.isoformat()},
        )
        _write_validation(store, run)
        scores = {name: _metrics(value) for name, value in run.scores.items()}
        champion_metrics = champion.metrics if champion else None
        verdict = judge(
            spec,
            run_id=run.run_id,
            scores=scores,
            champion=champion,
            champion_seq=seq,
            champion_metrics=champion_metrics,
            champion_error=None,
            holdout_rows=200,
            uncertainty=_intervals(spec, scores, champion_metrics),
        ).to_xcom()
        if run.trigger == "drift":
            report = f"{run_prefix(PIPELINE, run.key)}/evaluate/report"
            store.put_bytes(f"{report}/roc.png", tiny_png(rgb=(30, 90, 200)))
            store.put_bytes(
                f"{report}/index.html",
                b'<html><body><h1>Evaluation report</h1><img id="roc" src="roc.png" alt="ROC"></body></html>',
            )
            verdict["report_uri"] = store.uri(f"{report}/index.html")
            verdict["slices"] = [
                {
                    "column": "origin",
                    "value": "JFK",
                    "rows": 80,
                    "metric": "roc_auc",
                    "candidate": 0.74,
                    "champion": 0.73,
                    "worsening": 0.0,
                    "judged": False,
                    "passed": True,
                    "note": "too small",
                }
            ]
        store.put_bytes(verdict_key(PIPELINE, run.key), json.dumps(verdict).encode())
        if not verdict["blessed"]:
            result = PromotionResult(False, None, champion.version if champion else None, "skipped", "not blessed")
        else:
            number = len(versions) + 1
            model = store.put_bytes(layout.model_key(PIPELINE, number, run.key), b"not a real model")
            new = ModelVersion(
                pipeline=PIPELINE,
                version=number,
                run_id=run.run_id,
                candidate=verdict["best_candidate"],
                estimator=spec.candidate(verdict["best_candidate"]).estimator,
                params={"max_iter": 300},
                metrics=scores[verdict["best_candidate"]],
                data_sha256="d" * 64,
                data_rows=1000 + 100 * number,
                spec_sha256="s" * 64,
                code_version="test",
                artifact_key=model.key,
                artifact_sha256=model.sha256,
                lineage={"trigger": {"trigger": run.trigger, "run_id": run.run_id}},
            )
            action = verdict["decision"]
            reason = "; ".join(verdict["reasons"])
            event = registry.register_and_promote(
                new, expected_seq=seq, action=action, reason=reason, actor="airflow:test", at=run.at
            )
            seq, champion, versions[number] = event.seq, new, new
            result = PromotionResult(True, number, event.previous_version, action, f"v{number} is champion")
        store.put_bytes(result_key(PIPELINE, run.run_id), json.dumps(result.to_xcom()).encode())

    rollback_at = START + timedelta(days=4, hours=7)
    # A rollback DAG's run: its record sits with the training runs' but is not one of them.
    rollback = {"trigger": "manual", "run_id": ROLLBACK_RUN, "dag_id": f"{PIPELINE}_rollback"}
    record_run(store, PIPELINE, run_key(ROLLBACK_RUN), {**rollback, "as_of": rollback_at.isoformat()})
    event = ChampionEvent(
        PIPELINE, seq + 1, 2, 3, "rollback", ROLLBACK_REASON, "airflow:rollback", ROLLBACK_RUN, rollback_at
    )
    with registry.engine.begin() as conn:
        conn.execute(champion_log.insert().values(**{**event.as_dict(), "created_at": rollback_at}))

    checks = _drift_checks(loaded, store, registry)
    return {"versions": versions, "runs": RUNS, "checks": checks}


def _drift_checks(loaded: LoadedSpec, store: LocalStore, registry: Registry) -> list[dict[str, Any]]:
    import numpy as np
    import pandas as pd

    from mlpipe.stages.drift import drift_report
    from mlpipe.stages.drift_report import render_drift_report
    from mlpipe.stages.monitor import thresholds_of

    spec = loaded.spec
    rng = np.random.default_rng(7)
    n = 600

    def frame(shift: float, jfk_share: float) -> pd.DataFrame:
        origins = rng.choice(["EWR", "JFK", "LGA"], size=n, p=[(1 - jfk_share) / 2, jfk_share, (1 - jfk_share) / 2])
        out = pd.DataFrame(
            {
                "distance": rng.normal(1000 + shift, 300, n),
                "carrier": rng.choice(["UA", "B6", "EV", "DL"], size=n),
                "origin": origins,
                "dest": rng.choice(["ATL", "ORD", "LAX", "BOS", "MCO"], size=n),
            }
        )
        for column in spec.features.numeric:  # the other readings (the weather): drifting with the shift too
            if column not in out:
                out[column] = rng.normal(50 + shift / 30, 10, n)
        return out

    reference = frame(0, 1 / 3)
    out = []
    for index, (shift, jfk) in enumerate([(0, 1 / 3), (150, 0.45), (900, 0.9)]):
        current = frame(shift, jfk)
        report = drift_report(
            reference,
            current,
            numeric=list(spec.features.numeric),
            categorical=list(spec.features.categorical),
            thresholds=thresholds_of(spec),
            score_reference=rng.beta(2, 5, n),
            score_current=rng.beta(2 + index, 5, n),
        )
        run_id = f"scheduled__2026-03-0{5 + index}T06:00:00+00:00"
        prefix = layout.monitor_prefix(PIPELINE, run_key(run_id))
        store.put_bytes(f"{prefix}/drift.json", json.dumps(report.as_dict()).encode())
        with tempfile.TemporaryDirectory() as tmp:
            render_drift_report(report, reference, current, Path(tmp), title=f"drift check {index + 1}")
            store.put_tree(f"{prefix}/report", Path(tmp))
        end = START + timedelta(days=4 + index, hours=4)
        report_uri = store.uri(f"{prefix}/report/index.html")
        emitted = registry.record_drift(
            PIPELINE,
            window_start=(end - timedelta(days=7)).isoformat(),
            window_end=end.isoformat(),
            champion_version=2,
            verdict=report.verdict,
            breach=report.verdict == "drift",
            figures={"drift": report.as_dict(), "performance": None, "report_uri": report_uri},
            run_id=run_id,
            at=end + timedelta(hours=2),
        )
        out.append({"run_id": run_id, "verdict": report.verdict, "emitted": emitted})
    return out


def token_for(role: str | None, username: str = "someone") -> str:
    """A JWT of Airflow's auth manager for a simple-auth-manager user with ``role``."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=role))
