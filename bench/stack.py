"""The distributed run next to ``airflow dags test``: same data, same backends, one process vs the full stack.

Starts the compose file's topology as processes on loopback (tests/integration/airflow_stack.py,
the helper of the stack tests): api-server, scheduler, dag-processor, triggerer and a Celery worker
(concurrency 2) on CeleryExecutor; Airflow's metadata DB, the registry and the source in fresh
PostgreSQL databases, the source seeded with all 336,776 flights by ``python -m mlpipe demo seed
--target postgres``; Redis as the broker; a bucket on moto's S3 server as the artifact store. It
triggers ``flights_delay_train`` through the REST API and times it from the call to the run's end.

Then it stops the components, empties the registry (so the promotion is a first again: the same
work) and runs ``airflow dags test flights_delay_train`` with the same environment: the same
Connections, source table, bucket and metadata DB, so only the execution differs.

Where the time goes is read from Airflow's own records of each task instance (queued, start, end):
at every instant of a run, either a task process is running (``in tasks``), or a task is queued and
no task runs (``queued, waiting for a worker``: broker, worker pick-up, process start), or neither
(``scheduling``: the scheduler's loop between one task's end and the next one's queueing; for
``dags test`` its CLI start-up and test loop). A report: no bound is enforced.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import REPO, check_child, markdown_table, out_dir, run_child
from bench.demo_stages import STAGE_WORK, TASK_ORDER, _union_seconds

NAME = "stack"
DAG_ID = "flights_delay_train"
RUN_TIMEOUT = 1800


def breakdown(started: float, ended: float, tis: list[dict[str, Any]]) -> dict[str, float]:
    """Split [started, ended] into time in tasks, queued with no task running, and the rest (seconds)."""
    ran = [(t["start"], t["end"]) for t in tis if t["start"] is not None and t["end"] is not None]
    busy = _union_seconds(ran)
    pending = [(t["queued"] or t["start"], t["end"]) for t in tis if t["start"] is not None and t["end"] is not None]
    waiting = _union_seconds(pending) - busy
    total = ended - started
    return {
        "total": round(total, 1),
        "in_tasks": round(busy, 1),
        "queued_no_task_running": round(waiting, 1),
        "scheduling_and_startup": round(total - busy - waiting, 1),
        "sum_of_task_durations": round(sum(end - start for start, end in ran), 1),
    }


def per_task(tis: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """By task id (mapped ones together): its span from first start to last end, and its queue wait."""
    out: dict[str, dict[str, float | None]] = {}
    for task in TASK_ORDER:
        mine = [t for t in tis if t["task_id"] == task and t["start"] is not None and t["end"] is not None]
        if not mine:
            continue
        start, end = min(t["start"] for t in mine), max(t["end"] for t in mine)
        queued = [t["queued"] for t in mine if t["queued"] is not None]
        out[task] = {
            "span": round(end - start, 1),
            "queue_wait": round(start - min(queued), 1) if queued else None,
            "instances": len(mine),
        }
    return out


def _stage_work(stack: Any, run_id: str) -> dict[str, float]:
    """By task id, the seconds the stages recorded for their own work in the run's artifacts (bench.demo_stages)."""
    import fnmatch
    import json

    prefix = f"artifacts/flights_delay/runs/{stack.run_key(run_id)}"
    out: dict[str, float] = {}
    for task, (name, field) in STAGE_WORK.items():
        pattern = name.replace("{candidate}", "*")
        keys = [k for k in stack.objects(f"{prefix}/") if fnmatch.fnmatchcase(k[len(prefix) + 1 :], pattern)]
        values = [json.loads(stack.s3.get_object(Bucket=stack.bucket, Key=k)["Body"].read()).get(field) for k in keys]
        if values and all(isinstance(v, int | float) for v in values):
            out[task] = round(sum(values), 1)
    return out


def _task_instances(stack: Any, run_id: str) -> list[dict[str, Any]]:
    def epoch(value: Any) -> float | None:
        return value.timestamp() if value is not None else None

    return [
        {**t, "queued": epoch(t["queued"]), "start": epoch(t["start"]), "end": epoch(t["end"])}
        for t in stack.task_timings(run_id)
    ]


def _run_bounds(stack: Any, run_id: str) -> tuple[float, float, str]:
    (start, end, state), *_ = stack.query(
        "SELECT start_date, end_date, state FROM dag_run WHERE dag_id = %s AND run_id = %s", DAG_ID, run_id
    )
    return start.timestamp(), end.timestamp(), state


def _airflow_stack() -> Any:
    """tests/integration/airflow_stack.py, imported as pytest imports it (tests/ is no package)."""
    for folder in (str(REPO / "tests"), str(REPO / "tests" / "integration")):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    import airflow_stack

    return airflow_stack


def run(until: str | None = None) -> dict[str, Any]:
    stacks = _airflow_stack()
    celery_stack = stacks.celery_stack
    if reason := stacks.unreachable(redis=True):
        raise RuntimeError(f"the stack benchmark needs PostgreSQL and Redis on loopback: {reason}")
    log = out_dir() / "stack-dags-test.log"
    log.write_text("")
    with (
        tempfile.TemporaryDirectory(prefix="mlpipe-bench-stack-") as tmp,
        celery_stack(Path(tmp), seed_until=until) as stack,
    ):
        setup = dict(stack.timings)
        called = time.time()
        run_id = stack.trigger(DAG_ID)
        state = stack.wait_run_done(DAG_ID, run_id, timeout=RUN_TIMEOUT)
        _, run_end, _ = _run_bounds(stack, run_id)
        distributed_tis = _task_instances(stack, run_id)
        distributed_work = _stage_work(stack, run_id)
        registry = stack.registry()
        champion = registry.champion("flights_delay")
        registry.dispose()

        # The same run in one process: nothing else running, the registry empty again.
        stack.stop()
        stack.reset_registry()
        started = time.time()
        test = run_child(
            [sys.executable, "-m", "airflow", "dags", "test", DAG_ID],
            env=stack.env,
            log=log,
            timeout=RUN_TIMEOUT,
        )
        ended = time.time()
        check_child(test, f"airflow dags test {DAG_ID}", log)
        (test_run_id,) = stack.query(
            "SELECT run_id FROM dag_run WHERE dag_id = %s AND run_id <> %s ORDER BY id DESC LIMIT 1", DAG_ID, run_id
        )[0]
        _, _, test_state = _run_bounds(stack, test_run_id)
        test_tis = _task_instances(stack, test_run_id)
        test_work = _stage_work(stack, test_run_id)

    distributed = breakdown(called, run_end, distributed_tis)
    dags_test = breakdown(started, ended, test_tis)
    for parts, work in ((distributed, distributed_work), (dags_test, test_work)):
        parts["stage_work"] = round(sum(work.values()), 1)
        parts["in_tasks_outside_stage_work"] = round(parts["sum_of_task_durations"] - parts["stage_work"], 1)
    return {
        "rows": champion.data_rows if champion is not None else None,
        "seed_until": until,
        "setup_seconds": {what: round(t, 1) for what, t in setup.items()},
        "distributed": {
            "run_id": run_id,
            "state": state,
            **distributed,
            "tasks": per_task(distributed_tis),
            "stage_work_by_task": distributed_work,
        },
        "dags_test": {
            "run_id": test_run_id,
            "state": test_state,
            **dags_test,
            "tasks": per_task(test_tis),
            "stage_work_by_task": test_work,
        },
        "difference_seconds": round(distributed["total"] - dags_test["total"], 1),
        "log": str(log),
    }


def table(result: dict[str, Any]) -> str:
    dist, test = result["distributed"], result["dags_test"]
    rows = []
    for task in TASK_ORDER:
        d, t = dist["tasks"].get(task, {}), test["tasks"].get(task, {})
        label = f"{task} (x{d['instances']})" if d.get("instances", 1) > 1 else task
        rows.append(
            (
                label,
                d.get("queue_wait"),
                d.get("span"),
                dist["stage_work_by_task"].get(task, "-"),
                t.get("span"),
                test["stage_work_by_task"].get(task, "-"),
            )
        )
    per_task_table = markdown_table(
        (
            "task",
            "distributed: queued to start s",
            "distributed: first start to last end s",
            "of which stage work s",
            "`dags test`: task s",
            "of which stage work s",
        ),
        rows,
    )
    summary = markdown_table(
        ("", "distributed (CeleryExecutor)", "`airflow dags test`", "difference"),
        [
            ("**total wall time s**", dist["total"], test["total"], result["difference_seconds"]),
            (
                "a task process running",
                dist["in_tasks"],
                test["in_tasks"],
                round(dist["in_tasks"] - test["in_tasks"], 1),
            ),
            (
                "queued, no task running (broker, worker, process start)",
                dist["queued_no_task_running"],
                test["queued_no_task_running"],
                round(dist["queued_no_task_running"] - test["queued_no_task_running"], 1),
            ),
            (
                "neither (scheduler loop; CLI start-up and test loop)",
                dist["scheduling_and_startup"],
                test["scheduling_and_startup"],
                round(dist["scheduling_and_startup"] - test["scheduling_and_startup"], 1),
            ),
            (
                "stages' own work (summed; recorded in the run's artifacts)",
                dist["stage_work"],
                test["stage_work"],
                round(dist["stage_work"] - test["stage_work"], 1),
            ),
            (
                "in task processes outside the stages' work (start-up, imports, connections, XCom)",
                dist["in_tasks_outside_stage_work"],
                test["in_tasks_outside_stage_work"],
                round(dist["in_tasks_outside_stage_work"] - test["in_tasks_outside_stage_work"], 1),
            ),
            (
                "sum of task durations (parallel tasks add up)",
                dist["sum_of_task_durations"],
                test["sum_of_task_durations"],
                round(dist["sum_of_task_durations"] - test["sum_of_task_durations"], 1),
            ),
        ],
    )
    rows_note = f"{result['rows']:,} rows" if result["rows"] else "the rows"
    return "\n".join(
        [
            summary,
            "",
            per_task_table,
            "",
            f"Runs: distributed {dist['state']}, `dags test` {test['state']}; a snapshot of {rows_note} from the "
            "PostgreSQL source, registry on PostgreSQL, artifacts on S3 (moto) in both. Stack set-up (not counted): "
            + ", ".join(f"{what} at {t} s" for what, t in result["setup_seconds"].items())
            + ".",
        ]
    )
