"""The Models view stays flat as history grows: overview and pipeline page with 1,000 runs on S3.

One pipeline (``flights_delay``, the repo's spec) gets 1,000 nightly training runs in an S3 artifact
store on moto's server (loopback HTTP, the real boto3 client of ``S3Store``) and a SQLite registry:
each run's ``run.json`` in the bucket and its row in the run index (written in bulk, as the runs
would have upserted them one by one), plus 40 promoted model versions. Then, in this process:

* the overview (``views.overview``: every spec of include/pipelines/) and the pipeline page
  (``views.pipeline_detail``), median of a few repeats after one warm-up: both read the index;
* the full scan of the store that every page made before the index (``reindex``: one listing of
  ``<pipeline>/runs/`` and every run's records), for comparison: it grows with every night.

Requirement: overview and pipeline page each ≤ 0.3 s.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import markdown_table, requirement, requirements_table

NAME = "runindex"
RUNS = 1000
VERSIONS = 40
REPEATS = 5
LIMIT_SECONDS = 0.3
PIPELINE = "flights_delay"
START = datetime(2024, 1, 1, 2, 0, tzinfo=UTC)


@contextmanager
def moto_endpoint() -> Any:
    """moto's S3 as an HTTP server on a free loopback port (the tests' session fixture does the same)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def run_id_of(index: int) -> str:
    return f"scheduled__{(START + timedelta(days=index)).isoformat()}"


def build_history(store: Any, registry: Any, runs: int = RUNS, versions: int = VERSIONS) -> None:
    """``runs`` nightly runs of PIPELINE: run.json in the store, index rows in bulk, ``versions`` champions."""
    from mlpipe import layout
    from mlpipe.layout import RUN_FILE, VALIDATION_SUMMARY, VERDICT, run_key
    from mlpipe.registry import ModelVersion

    rows = []
    records = {}
    promote_every = max(1, runs // versions)
    for i in range(runs):
        run_id = run_id_of(i)
        key = run_key(run_id)
        as_of = (START + timedelta(days=i)).isoformat()
        record = {"trigger": "schedule", "run_id": run_id, "dag_id": f"{PIPELINE}_train", "as_of": as_of}
        records[layout.run_record(PIPELINE, key)] = json.dumps(record).encode()
        promoted = i % promote_every == 0 and i // promote_every < versions
        rows.append(
            {
                **record,
                "run_key": key,
                "data_sha256": f"{i:064x}",
                "spec_sha256": "5" * 64,
                "code_version": "bench",
                "files": [RUN_FILE, VALIDATION_SUMMARY, VERDICT],
                "verdict": {
                    "decision": "promote" if promoted else "reject",
                    "blessed": promoted,
                    "best_candidate": "hgb",
                    "primary_metric": "roc_auc",
                    "primary_value": 0.65 + i * 1e-5,
                    "champion_version": None,
                    "reasons": ["roc_auc improves by 0.0010" if promoted else "tie with the champion"],
                },
                "promotion": {"promoted": promoted, "action": "promote" if promoted else "skipped"},
            }
        )
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda kv: store.put_bytes(*kv), records.items()))
    registry.replace_run_index(PIPELINE, rows)
    for number in range(1, versions + 1):
        row = rows[(number - 1) * promote_every]
        new = ModelVersion(
            pipeline=PIPELINE,
            version=number,
            run_id=row["run_id"],
            candidate="hgb",
            estimator="sklearn.ensemble.HistGradientBoostingClassifier",
            params={},
            metrics={"roc_auc": row["verdict"]["primary_value"]},
            data_sha256=row["data_sha256"],
            data_rows=1000,
            spec_sha256="5" * 64,
            code_version="bench",
            artifact_key=layout.model_key(PIPELINE, number, row["run_key"]),
            artifact_sha256="0" * 64,
            lineage={"trigger": {"trigger": "schedule"}},
        )
        registry.register_and_promote(
            new, expected_seq=number - 1, action="first" if number == 1 else "promote", reason="bench", actor="bench"
        )


def _timed(fn: Any, repeats: int, requests: list[str]) -> dict[str, Any]:
    fn()  # warm-up: connections, templates, first queries
    requests.clear()
    fn()
    sent = list(requests)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return {
        "median_s": round(statistics.median(seconds), 4),
        "max_s": round(max(seconds), 4),
        "all_s": seconds,
        "s3_requests": len(sent),
        "s3_operations": sorted(set(sent)),
    }


def measure(endpoint: str, *, runs: int = RUNS, repeats: int = REPEATS, scan: bool = True) -> dict[str, Any]:
    """Build the history on ``endpoint`` (a fresh bucket) and time the pages (with the S3 requests one
    view sends) and, with ``scan``, the full scan of the store the pages made before the index."""
    from bench.extract_memory import _s3_client
    from mlpipe.registry import Registry
    from mlpipe.stages.runs import reindex
    from mlpipe.storage import S3Store
    from mlpipe.ui import views

    client = _s3_client(endpoint)
    requests: list[str] = []
    client.meta.events.register("before-call.s3.*", lambda model, **_: requests.append(model.name))
    bucket = f"mlpipe-bench-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    store = S3Store(bucket, "team/mlpipe", client)
    with tempfile.TemporaryDirectory(prefix="mlpipe-runindex-") as tmp:
        registry = Registry.from_url(f"sqlite:///{Path(tmp) / 'registry.db'}")
        try:
            started = time.perf_counter()
            build_history(store, registry, runs)
            setup_s = time.perf_counter() - started
            pipeline = views.find_pipeline(PIPELINE)
            overview = _timed(lambda: views.overview(store, registry), repeats, requests)
            detail = _timed(lambda: views.pipeline_detail(pipeline, store, registry), repeats, requests)
            page = views.pipeline_detail(pipeline, store, registry)
            scan_s, indexed = None, None
            if scan:
                started = time.perf_counter()
                indexed = reindex(registry, store, PIPELINE)
                scan_s = round(time.perf_counter() - started, 3)
        finally:
            registry.dispose()
    return {
        "runs": runs,
        "versions": len(page["version_history"]),
        "runs_shown": len(page["runs"]),
        "setup_seconds": round(setup_s, 2),
        "overview": overview,
        "pipeline_page": detail,
        "full_scan_seconds": scan_s,
        "reindexed_runs": indexed,
    }


def run() -> dict[str, Any]:
    with moto_endpoint() as endpoint:
        result = measure(endpoint)
    result["requirements"] = [
        requirement("overview (median)", result["overview"]["median_s"], LIMIT_SECONDS, "s"),
        requirement("pipeline page (median)", result["pipeline_page"]["median_s"], LIMIT_SECONDS, "s"),
    ]
    return result


def table(result: dict[str, Any]) -> str:
    rows = [
        [label, f"{result[k]['median_s']:.3f}", f"{result[k]['max_s']:.3f}", result[k]["s3_requests"]]
        for label, k in (("overview (every spec)", "overview"), ("pipeline page", "pipeline_page"))
    ]
    rows.append(["full scan of the store (what each page did before)", f"{result['full_scan_seconds']}", "-", "-"])
    head = (
        f"{result['runs']:,} runs and {result['versions']} versions of {PIPELINE} on S3 (moto), "
        f"SQLite registry; set-up {result['setup_seconds']} s\n\n"
    )
    views = markdown_table(["view", "median s", "max s", "S3 requests"], rows)
    return head + views + "\n\n" + requirements_table(result["requirements"])
