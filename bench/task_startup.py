"""Per-task start-up under real executors: the train DAG under LocalExecutor and CeleryExecutor, per task.

Under a scheduler each task instance is a fresh process (its supervisor forks it), which starts the
task SDK, parses the DAG file and gets the run's context before our operator gets control; then the
operator imports what its stage needs. This benchmark measures that per task, on the whole year:

For each executor, the native stack of bench/stack.py (tests/integration/airflow_stack.py: api-server,
scheduler, dag-processor, triggerer, a Celery worker of concurrency 2; metadata DB, registry and
source in fresh PostgreSQL databases, all 336,776 flights; Redis broker; artifacts on moto's S3)
with ``AIRFLOW__CORE__EXECUTOR`` set to LocalExecutor or CeleryExecutor (parallelism 4; the idle
Celery worker stays up under LocalExecutor), single-threaded as bench/overhead.py
(``MLPIPE_TRAIN_THREADS=1``, one OpenMP/BLAS thread). One run triggered through the REST API with
``fresh_training``, timed from the call to the run's end. Per task instance, from Airflow's records
(queued, start, end), the stages' artifacts (their own work, as in section 3) and the task log's
``mlpipe operator start:`` line (:meth:`mlpipe.operators.base.PipelineOperator.pre_execute`: the
seconds from the task process's creation to the operator's control):

* **queued**: queued to started (broker, executor pick-up);
* **start-up**: process start to operator start (SDK, DAG parse, context: Airflow's, per task);
* **stage work**: what the stage recorded for itself;
* **rest**: the task's duration less the two (imports inside execute(), Connections, XCom, exit).

Then, on the last stack, with its components stopped and the registry emptied: ``airflow dags test``
with the same environment and bench/bare_job.py reading the same PostgreSQL source. A report.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import check_child, markdown_table, mib, out_dir, run_child
from bench.demo_stages import STAGE_WORK, TASK_ORDER
from bench.overhead import PYCACHE, SINGLE_THREADED, dag_log_figures
from bench.stack import _airflow_stack, _run_bounds, _task_instances

NAME = "startup"
DAG_ID = "flights_delay_train"
EXECUTORS = ("LocalExecutor", "CeleryExecutor")
RUN_TIMEOUT = 2400
_MARK = re.compile(r"mlpipe operator start: ([\d.]+) s after the task process started")


def _startup(log_text: str) -> float | None:
    m = _MARK.search(log_text)
    return float(m.group(1)) if m else None


def _work(stack: Any, run_id: str) -> dict[tuple[str, int], float]:
    """The stage work of each task instance ((task_id, map_index) -> seconds) from the run's artifacts."""
    prefix = f"artifacts/flights_delay/runs/{stack.run_key(run_id)}"
    keys = stack.objects(f"{prefix}/")
    out: dict[tuple[str, int], float] = {}
    for task, (name, field) in STAGE_WORK.items():
        if "{candidate}" in name:
            continue
        key = f"{prefix}/{name}"
        if key in keys:
            out[(task, -1)] = float(json.loads(stack.s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read())[field])
    return out


def _candidate_work(stack: Any, run_id: str, candidate: str) -> float | None:
    name, field = STAGE_WORK["train_candidates"]
    key = f"artifacts/flights_delay/runs/{stack.run_key(run_id)}/{name.format(candidate=candidate)}"
    try:
        return float(json.loads(stack.s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read())[field])
    except Exception:
        return None


def measure_run(stack: Any, run_id: str, started: float) -> dict[str, Any]:
    """Per task instance: queued, start-up, stage work and the rest, from the stack's records and logs."""
    _, run_end, state = _run_bounds(stack, run_id)
    work = _work(stack, run_id)
    rendered = dict(
        ((t, m), r)
        for t, m, r in stack.query(
            "SELECT task_id, map_index, rendered_map_index FROM task_instance WHERE dag_id = %s AND run_id = %s",
            DAG_ID,
            run_id,
        )
    )
    tasks = []
    for ti in _task_instances(stack, run_id):
        if ti["start"] is None or ti["end"] is None:
            continue
        label = rendered.get((ti["task_id"], ti["map_index"]))
        duration = ti["end"] - ti["start"]
        startup = _startup(stack.task_log(DAG_ID, run_id, ti["task_id"], ti["try_number"], ti["map_index"]))
        own = (
            _candidate_work(stack, run_id, label)
            if ti["task_id"] == "train_candidates" and label
            else work.get((ti["task_id"], -1))
        )
        tasks.append(
            {
                "task": ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{label or ti['map_index']}]",
                "task_id": ti["task_id"],
                "queued_seconds": round(ti["start"] - ti["queued"], 2) if ti["queued"] else None,
                "startup_seconds": startup,
                "stage_work_seconds": round(own, 2) if own is not None else None,
                "duration_seconds": round(duration, 2),
                "rest_seconds": round(duration - (startup or 0.0) - (own or 0.0), 2),
            }
        )
    order = {t: i for i, t in enumerate(TASK_ORDER)}
    tasks.sort(key=lambda t: (order.get(t["task_id"], 99), t["task"]))
    startups = [t["startup_seconds"] for t in tasks if t["startup_seconds"] is not None]
    return {
        "run_id": run_id,
        "state": state,
        "wall_seconds": round(run_end - started, 1),
        "task_instances": len(tasks),
        "startup_sum_seconds": round(sum(startups), 1),
        "startup_max_seconds": max(startups) if startups else None,
        "rest_sum_seconds": round(sum(t["rest_seconds"] for t in tasks), 1),
        "stage_work_sum_seconds": round(sum(t["stage_work_seconds"] or 0.0 for t in tasks), 1),
        "tasks": tasks,
    }


def _compare_in_one_process(stack: Any, tmp: Path) -> dict[str, Any]:
    """``airflow dags test`` and the bare job on the stack's data, its components stopped."""
    stack.stop()
    stack.reset_registry()
    log = out_dir() / "startup-dags-test.log"
    log.write_text("")
    cmd = [sys.executable, "-m", "airflow", "dags", "test", DAG_ID, "-c", json.dumps({"fresh_training": True})]
    started = time.time()
    test = run_child(cmd, env=stack.env, log=log, timeout=RUN_TIMEOUT)
    ended = time.time()
    check_child(test, f"airflow dags test {DAG_ID}", log)
    source = stack.env["AIRFLOW_CONN_MLPIPE_SOURCE"]
    out = tmp / "bare.json"
    bare = check_child(
        run_child(
            [sys.executable, "-m", "bench.bare_job", "--source-url", source, "--out", str(out)],
            env=stack.env,
            log=log,
            timeout=RUN_TIMEOUT,
        ),
        "bench.bare_job",
        log,
    )
    return {
        "dags_test": {
            "wall_seconds": test.seconds,
            "peak_rss_mib": mib(test.max_rss_kib),
            **dag_log_figures(log, started, ended),
        },
        "bare_job": {
            "wall_seconds": bare.seconds,
            "peak_rss_mib": mib(bare.max_rss_kib),
            **json.loads(out.read_text()),
        },
    }


def run(executors: tuple[str, ...] = EXECUTORS) -> dict[str, Any]:
    stacks = _airflow_stack()
    if reason := stacks.unreachable(redis=True):
        raise RuntimeError(f"the start-up benchmark needs PostgreSQL and Redis on loopback: {reason}")
    # Bytecode cached as in bench/overhead.py (an empty PYTHONDONTWRITEBYTECODE is unset for Python).
    pycache = str(out_dir() / PYCACHE)
    settings = {**SINGLE_THREADED, "PYTHONPYCACHEPREFIX": pycache, "PYTHONDONTWRITEBYTECODE": ""}
    results: dict[str, Any] = {}
    for i, executor in enumerate(executors):
        with (
            tempfile.TemporaryDirectory(prefix="mlpipe-bench-startup-") as tmp,
            stacks.celery_stack(Path(tmp), seed_until=None, **settings, AIRFLOW__CORE__EXECUTOR=executor) as stack,
        ):
            started = time.time()
            run_id = stack.trigger(DAG_ID, conf={"fresh_training": True})
            stack.wait_run_done(DAG_ID, run_id, timeout=RUN_TIMEOUT)
            results[executor] = measure_run(stack, run_id, started)
            results[executor]["setup_seconds"] = {what: round(t, 1) for what, t in stack.timings}
            if i == len(executors) - 1:
                results["one_process"] = _compare_in_one_process(stack, Path(tmp))
    return {"command": f"{DAG_ID} under {', '.join(executors)}, then airflow dags test and the bare job", **results}


def table(result: dict[str, Any]) -> str:
    executors = [e for e in EXECUTORS if e in result]
    labels = [t["task"] for t in result[executors[0]]["tasks"]]
    rows = []
    for label in labels:
        row: list[Any] = [label]
        for e in executors:
            t = next((x for x in result[e]["tasks"] if x["task"] == label), {})
            row += [
                t.get("queued_seconds"),
                t.get("startup_seconds"),
                t.get("stage_work_seconds"),
                t.get("rest_seconds"),
                t.get("duration_seconds"),
            ]
        rows.append(row)
    head = ["task"]
    for e in executors:
        short = e.removesuffix("Executor")
        head += [
            f"{short}: queued s",
            f"{short}: start-up s",
            f"{short}: stage work s",
            f"{short}: rest s",
            f"{short}: task s",
        ]
    per_task = markdown_table(head, rows)
    summary_rows = [
        (
            e,
            result[e]["state"],
            result[e]["wall_seconds"],
            result[e]["task_instances"],
            result[e]["startup_sum_seconds"],
            result[e]["stage_work_sum_seconds"],
            result[e]["rest_sum_seconds"],
        )
        for e in executors
    ]
    one = result.get("one_process")
    if one:
        d, b = one["dags_test"], one["bare_job"]
        summary_rows.append(
            (
                "`airflow dags test` (same stack, stopped)",
                "success",
                d["wall_seconds"],
                None,
                d["startup_seconds"],
                None,
                None,
            )
        )
        summary_rows.append(
            (
                "bare job (same PostgreSQL source)",
                b["decision"],
                b["wall_seconds"],
                None,
                b["seconds"]["imports"],
                None,
                None,
            )
        )
    summary = markdown_table(
        ("run", "state", "wall s", "task instances", "start-up s (sum)", "stage work s (sum)", "rest s (sum)"),
        summary_rows,
    )
    return summary + "\n\n" + per_task
