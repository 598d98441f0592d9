"""The full stack, natively: the same DAGs on CeleryExecutor, PostgreSQL, Redis and S3 over HTTP.

Airflow's api-server, scheduler, dag-processor, triggerer and a Celery worker run as processes on
loopback, as the compose file runs them as containers (airflow_stack.celery_stack). A fresh
PostgreSQL database is the metadata DB (and Celery's result backend), Redis is the broker (a key
prefix and a queue of this run's own), and mlpipe's registry and source are two more fresh
databases, the source seeded by ``python -m mlpipe demo seed --target postgres``. The artifact
store is a bucket on moto's S3 server in a process of its own. Only Airflow Connections and
environment differ from the embedded default; the DAG files are the repo's.

1. A run triggered through the REST API: the champion lands in PostgreSQL, its artifacts in the
   bucket with the sha256 the registry and the object metadata both record, and every task ran in
   the Celery worker's process tree (the task processes' pids, Celery's result backend, the
   worker's log), none in the scheduler's.
2. The worker is killed (SIGKILL, its whole process tree, as a lost host) while both candidates
   train, their tries frozen first so that neither can finish before the kill; the scheduler fails
   the tries that stopped heartbeating, retries them after the backoff delay on a new worker, and
   the run still succeeds with one version, one champion change and one model copy.
   (A service down when a task starts: tests/operators/test_outages.py.)
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from airflow_stack import PIPELINE, REPO, TRAIN, CeleryStack, descendants, unreachable
from airflow_stack import celery_stack as start_celery_stack
from conftest import service_unavailable
from servers import send_signal

from bench.demo_stages import TASK_ORDER

pytestmark = [pytest.mark.stack, pytest.mark.scheduler]

SEED_UNTIL = "2013-01-15"  # two weeks of flights, ~12,000 rows: enough for the GX suite, quick to train
# Seconds without a heartbeat before the scheduler fails a task (default 300): the killed worker's tasks.
HEARTBEAT_TIMEOUT = 20
HGB_ROUNDS = 60


def _quick_candidates() -> list[dict[str, Any]]:
    """The spec's candidates with fewer boosting rounds: what runs where is under test here, not the model."""
    spec = yaml.safe_load((REPO / "include" / "pipelines" / f"{PIPELINE}.yaml").read_text())
    for candidate in spec["candidates"]:
        if candidate["estimator"].endswith("HistGradientBoostingClassifier"):
            candidate["params"]["max_iter"] = HGB_ROUNDS
    return spec["candidates"]


@pytest.fixture(scope="module")
def celery_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryStack]:
    if reason := unreachable(redis=True):
        service_unavailable(reason)
    with start_celery_stack(
        tmp_path_factory.mktemp("stack"),
        seed_until=SEED_UNTIL,
        spec_changes={"candidates": _quick_candidates()},
        AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT),
        AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL="5",
    ) as stack:
        yield stack


def _assert_in_bucket(stack: CeleryStack, uri: str, sha256: str) -> str:
    """The object behind ``uri`` holds bytes with ``sha256``, recorded the same in its metadata; its key."""
    prefix = f"s3://{stack.bucket}/"
    assert uri.startswith(prefix), uri
    key = uri[len(prefix) :]
    head = stack.s3.head_object(Bucket=stack.bucket, Key=key)
    assert head["Metadata"]["sha256"] == sha256
    assert stack.object_sha256(key) == sha256
    return key


def _print_timings(stack: CeleryStack, run_id: str, seconds: float) -> None:
    print(f"\n{TRAIN} run {run_id}: {seconds:.1f} s from the REST call to the run's end")
    for ti in stack.task_timings(run_id):
        wait = (ti["start"] - ti["queued"]).total_seconds() if ti["start"] and ti["queued"] else None
        took = (ti["end"] - ti["start"]).total_seconds() if ti["end"] and ti["start"] else None
        print(f"  {ti['task_id']}[{ti['map_index']}] try {ti['try_number']}: queued->start {wait} s, ran {took} s")
    print("\n".join(f"{t:6.1f} s  {what}" for what, t in stack.timings))


def test_a_run_on_the_distributed_stack(celery_stack: CeleryStack) -> None:
    stack = celery_stack
    worker = stack.workers[0]
    with stack.dump_on_failure(), stack.watching_pids(worker, "scheduler") as pids:
        started = time.monotonic()
        run_id = stack.trigger(TRAIN)
        state = stack.wait_run_done(TRAIN, run_id, timeout=240)
        seconds = time.monotonic() - started
    _print_timings(stack, run_id, seconds)
    assert state == "success"

    # The champion is in the PostgreSQL registry.
    assert stack.champion_log() == [(1, 1, None, "first", run_id)]
    registry = stack.registry()
    champion = registry.champion(PIPELINE)
    registry.dispose()
    assert champion.version == 1 and champion.run_id == run_id
    assert champion.data_rows > 10_000 and champion.code_version == "stack-test"

    # Its model and its training snapshot are in the bucket, with the sha256 the registry recorded.
    model_key = _assert_in_bucket(
        stack, f"s3://{stack.bucket}/artifacts/{champion.artifact_key}", champion.artifact_sha256
    )
    assert model_key.startswith(f"artifacts/{PIPELINE}/models/v1/")
    snapshot = champion.lineage["snapshot"]
    _assert_in_bucket(stack, snapshot["uri"], champion.data_sha256)
    assert snapshot["sha256"] == champion.data_sha256
    objects = stack.objects(f"artifacts/{PIPELINE}/")
    assert all(meta["sha256"] for meta in objects.values()), "every artifact carries its sha256"
    assert not (stack.env_path("MLPIPE_HOME") / "artifacts").exists(), "nothing went to the local default store"

    # Every task ran once, in the worker's process tree, and Celery says that worker ran it.
    tis = stack.task_instances(run_id)
    assert {ti["task_id"] for ti in tis} == set(TASK_ORDER) and len(tis) == len(TASK_ORDER) + 1  # two candidates
    assert all(ti["state"] == "success" and ti["try_number"] == 1 for ti in tis), tis
    assert {ti["queue"] for ti in tis} == {stack.queue}
    # Validation and the split ran side by side on the worker's two slots; training waited for both.
    by_id = {ti["task_id"]: ti for ti in tis}
    validate, features = by_id["validate_snapshot"], by_id["build_features"]
    assert validate["start_date"] < features["end_date"] and features["start_date"] < validate["end_date"], (
        "validate_snapshot and build_features did not overlap",
        validate,
        features,
    )
    first_training = min(ti["start_date"] for ti in tis if ti["task_id"] == "train_candidates")
    assert first_training >= max(validate["end_date"], features["end_date"])
    for ti in tis:
        assert ti["pid"] in pids[worker], f"{ti['task_id']} (pid {ti['pid']}) did not run under the worker"
        assert ti["pid"] not in pids["scheduler"]
    results = stack.wait_celery_done({str(ti["id"]) for ti in tis})
    assert set(results) == {str(ti["id"]) for ti in tis}
    assert {(r["status"], r["worker"], r["queue"]) for r in results.values()} == {
        ("SUCCESS", stack.worker_hostnames[worker], stack.queue)
    }
    worker_log = stack.log_text(worker)
    assert all(str(ti["id"]) in worker_log for ti in tis), "the worker logs every workload it executes"
    assert "Executing workload in Celery" not in stack.log_text("scheduler")


def test_a_worker_killed_while_training_is_replaced_and_the_run_promotes_once(celery_stack: CeleryStack) -> None:
    stack = celery_stack
    stack.reset_registry()
    lost = stack.workers[-1]
    lost_proc = stack.procs[lost]
    with stack.dump_on_failure():
        started = time.monotonic()
        # The first test's run trained on the same data, spec and code: without this Param the candidates
        # would be reused from it (docs/operations.md, "Unchanged inputs") and nothing would train.
        run_id = stack.trigger(TRAIN, {"fresh_training": True})

        def both_training() -> list[dict[str, Any]] | None:
            tis = [t for t in stack.task_instances(run_id) if t["task_id"] == "train_candidates"]
            tree = set(descendants(lost_proc.pid))
            running = [t for t in tis if t["state"] == "running" and t["pid"] in tree]
            return running if len(running) == 2 else None

        training = stack.wait_for("both candidates training on the worker", both_training, every=0.1)
        # Freeze both tries where they are: on a fast machine a fit of two weeks of flights ends within a
        # second or two, and a try that finished before the kill would test nothing. A stopped process
        # cannot report success, and SIGKILL still ends it.
        for t in training:
            for pid in [t["pid"], *descendants(t["pid"])]:
                send_signal(pid, signal.SIGSTOP, group=False)
        still = {t["map_index"]: t["state"] for t in stack.task_instances(run_id) if t["task_id"] == "train_candidates"}
        assert still == {0: "running", 1: "running"}, f"a try ended before it was frozen: {still}"
        killed = stack.kill(lost)  # the whole worker at once: as a lost host or an OOM kill
        assert {t["pid"] for t in training} <= set(killed)
        replacement = stack.start_worker()
        state = stack.wait_run_done(TRAIN, run_id, timeout=360)
    _print_timings(stack, run_id, time.monotonic() - started)
    assert state == "success"

    # The killed tries were failed by the scheduler (no heartbeat) and retried after the backoff delay.
    tis = {(t["task_id"], t["map_index"]): t for t in stack.task_instances(run_id)}
    history = stack.tries(run_id, "train_candidates")
    assert [(h["map_index"], h["try_number"]) for h in history] == [(0, 1), (1, 1)]
    final = {str(t["id"]) for t in tis.values()}
    results = stack.wait_celery_done(final)
    assert {results[ti_id]["status"] for ti_id in final} == {"SUCCESS"}
    for first in history:
        retry = tis[("train_candidates", first["map_index"])]
        assert first["pid"] in killed and retry["try_number"] == 2 and retry["state"] == "success"
        assert (retry["start_date"] - first["end_date"]).total_seconds() >= 30, "retry_delay is 30 s, backing off"
        assert results[str(retry["id"])]["worker"] == replacement
        # Celery's backend: the lost worker started the first try and never finished it.
        assert results[str(first["id"])] == {
            "status": "STARTED",
            "worker": stack.worker_hostnames[lost],
            "queue": stack.queue,
        }
    for task in ("evaluate_candidates", "promote_model"):
        assert results[str(tis[(task, -1)]["id"])]["worker"] == replacement

    # One version, one champion change, one model copy; the training artifacts exactly once each.
    assert stack.champion_log() == [(1, 1, None, "first", run_id)]
    registry = stack.registry()
    versions = registry.list_versions(PIPELINE)
    registry.dispose()
    assert [(v.version, v.run_id) for v in versions] == [(1, run_id)]
    _assert_in_bucket(stack, f"s3://{stack.bucket}/artifacts/{versions[0].artifact_key}", versions[0].artifact_sha256)
    run_key = stack.run_key(run_id)
    models = [k for k in stack.objects(f"artifacts/{PIPELINE}/models/") if run_key in k]
    assert models == [f"artifacts/{versions[0].artifact_key}"]
    train_prefix = f"artifacts/{PIPELINE}/runs/{run_key}/train/"
    trained = sorted(key.removeprefix(train_prefix) for key in stack.objects(train_prefix))
    assert trained == ["hgb/model.joblib", "hgb/result.json", "logreg/model.joblib", "logreg/result.json"]
