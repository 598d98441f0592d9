"""Per-stage wall times of ``make demo``: how much of ``airflow dags test flights_delay_train`` is the work.

On a fresh temporary MLPIPE_HOME seeded with the whole demo year (``python -m mlpipe demo seed --all``:
336,776 flights, where ``make demo`` seeds January-February, 51,801) and a
temporary migrated AIRFLOW_HOME (``airflow db migrate``), runs ``airflow dags test
flights_delay_train`` as ``make demo`` does and times the whole command. Then it reads

* each task instance's start and end from the metadata DB (``TaskInstance`` through
  ``create_session``, in a child process pointed at that AIRFLOW_HOME), and
* the seconds each stage recorded for its own work in its artifacts under
  ``$MLPIPE_HOME/artifacts/flights_delay/runs/<run_key>/`` (extract/snapshot.json ``seconds``,
  validate/summary.json ``seconds`` when present, features/manifest.json ``seconds``,
  train/<candidate>/result.json ``fit_seconds``, evaluate/verdict.json ``seconds``); a stage that
  records none counts its whole task duration as work.

Airflow's share is (total - sum of stage work) / total: CLI start-up and DAG parsing, creating the
run, importing pandas/scikit-learn/GX inside the tasks, XCom and state writes, and the test loop's
polling between tasks. A report only: no bound is enforced.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import (
    check_child,
    child_env,
    markdown_table,
    migrate_airflow_db,
    out_dir,
    run_child,
)

NAME = "demo"
PIPELINE = "flights_delay"
DAG_ID = f"{PIPELINE}_train"
TASK_ORDER = (
    "check_params",
    "extract_snapshot",
    "validate_snapshot",
    "build_features",
    "train_candidates",
    "evaluate_candidates",
    "promote_model",
)
# Where each stage records the seconds of its own work: (file under the run's prefix, field).
STAGE_WORK = {
    "extract_snapshot": ("extract/snapshot.json", "seconds"),
    "validate_snapshot": ("validate/summary.json", "seconds"),
    "build_features": ("features/manifest.json", "seconds"),
    "train_candidates": ("train/{candidate}/result.json", "fit_seconds"),
    "evaluate_candidates": ("evaluate/verdict.json", "seconds"),
}
# A failing task is retried (retries >= 2, 30 s delay, backing off): allow for that before giving up.
DAGS_TEST_TIMEOUT = 900


def log_path() -> Path:
    return out_dir() / "demo.log"


def _read_task_instances() -> dict[str, Any]:
    """(Child) The DAG's latest run and its task instances, from the metadata DB of AIRFLOW_HOME."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    def when(value: datetime | None) -> float | None:
        return value.timestamp() if value is not None else None

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == DAG_ID).order_by(DagRun.id.desc()).first()
        if run is None:
            return {"run": None, "task_instances": []}
        tis = session.query(TaskInstance).filter(TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run.run_id)
        rows = [
            {
                "task_id": ti.task_id,
                "map_index": ti.map_index,
                "rendered_map_index": ti.rendered_map_index,
                "state": str(getattr(ti.state, "value", ti.state)),
                "try_number": ti.try_number,
                "start": when(ti.start_date),
                "end": when(ti.end_date),
                "duration": ti.duration,
            }
            for ti in tis
        ]
        return {
            "run": {
                "run_id": run.run_id,
                "state": str(getattr(run.state, "value", run.state)),
                "start": when(run.start_date),
                "end": when(run.end_date),
            },
            "task_instances": rows,
        }


def latest_run(env: dict[str, str], tmp: Path, log: Path) -> dict[str, Any]:
    """The DAG's latest run and its task instances, read in a child pointed at ``env``'s AIRFLOW_HOME."""
    reader = tmp / "tis.json"
    check_child(
        run_child(
            [sys.executable, "-m", "bench.demo_stages", "--read-task-instances", str(reader)],
            env=env,
            log=log,
            timeout=120,
        ),
        "reading the task instances",
        log,
    )
    return json.loads(reader.read_text())


def _stage_work(run_dir: Path, ti: dict[str, Any], candidates: list[str]) -> tuple[float | None, str | None]:
    """The seconds the stage recorded for its own work, and where it was read from."""
    where = STAGE_WORK.get(ti["task_id"])
    if where is None:
        return None, None
    name, field = where
    if "{candidate}" in name:
        candidate = ti["rendered_map_index"] or (
            candidates[ti["map_index"]] if 0 <= ti["map_index"] < len(candidates) else None
        )
        if candidate is None:
            return None, None
        name = name.format(candidate=candidate)
    path = run_dir / name
    if not path.is_file():
        return None, None
    value = json.loads(path.read_text()).get(field)
    return (float(value), f"{name}:{field}") if isinstance(value, (int, float)) else (None, None)


def _union_seconds(intervals: list[tuple[float, float]]) -> float:
    total, current_end = 0.0, None
    current_start = 0.0
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


def analyse(
    tis: list[dict[str, Any]], run_dir: Path, candidates: list[str], started: float, ended: float
) -> dict[str, Any]:
    """Per-task durations against stage work, and where the rest of the wall time went."""
    total = ended - started
    order = {t: i for i, t in enumerate(TASK_ORDER)}
    tasks = []
    for ti in sorted(tis, key=lambda t: (t["start"] or float("inf"), order.get(t["task_id"], 99), t["map_index"])):
        duration = ti["duration"]
        if duration is None and ti["start"] is not None and ti["end"] is not None:
            duration = ti["end"] - ti["start"]
        work, source = _stage_work(run_dir, ti, candidates)
        counted = work if work is not None else duration
        label = (
            ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['rendered_map_index'] or ti['map_index']}]"
        )
        tasks.append(
            {
                "task": label,
                "state": ti["state"],
                "try_number": ti["try_number"],
                "start": ti["start"],
                "end": ti["end"],
                "duration_seconds": round(duration, 3) if duration is not None else None,
                "stage_work_seconds": round(work, 3) if work is not None else None,
                "stage_work_source": source or ("task duration (the stage records no time)" if duration else None),
                "counted_work_seconds": round(counted, 3) if counted is not None else None,
                "in_task_overhead_seconds": round(duration - work, 3)
                if duration is not None and work is not None
                else 0.0,
            }
        )
    ran = [t for t in tasks if t["start"] is not None and t["end"] is not None]
    work_sum = sum(t["counted_work_seconds"] or 0.0 for t in tasks)
    duration_sum = sum(t["duration_seconds"] or 0.0 for t in tasks)
    breakdown: dict[str, float] = {}
    if ran:
        first, last = min(t["start"] for t in ran), max(t["end"] for t in ran)
        busy = _union_seconds([(t["start"], t["end"]) for t in ran])
        breakdown = {
            "before_first_task": round(first - started, 3),
            "between_tasks": round((last - first) - busy, 3),
            "inside_tasks_not_stage_work": round(sum(t["in_task_overhead_seconds"] for t in tasks), 3),
            "after_last_task": round(ended - last, 3),
        }
    return {
        "total_seconds": round(total, 3),
        "sum_task_durations_seconds": round(duration_sum, 3),
        "sum_stage_work_seconds": round(work_sum, 3),
        "airflow_overhead_seconds": round(total - work_sum, 3),
        "airflow_overhead_share": round((total - work_sum) / total, 3) if total else None,
        "overhead_breakdown_seconds": breakdown,
        "tasks": tasks,
    }


def run() -> dict[str, Any]:
    from mlpipe.spec import find_spec
    from mlpipe.storage import run_key

    log = log_path()
    log.write_text("")
    candidates = [c.name for c in find_spec(PIPELINE).spec.candidates]
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-demo-") as tmp:
        airflow_home, mlpipe_home = Path(tmp) / "airflow", Path(tmp) / "mlpipe"
        mlpipe_home.mkdir()
        env = child_env(airflow_home=airflow_home, mlpipe_home=mlpipe_home, PYTHONUNBUFFERED="1")
        migrate_seconds = migrate_airflow_db(airflow_home, log)
        seed = check_child(
            run_child([sys.executable, "-m", "mlpipe", "demo", "seed", "--all"], env=env, log=log, timeout=600),
            "python -m mlpipe demo seed --all",
            log,
        )
        started = time.time()
        test = run_child(
            [sys.executable, "-m", "airflow", "dags", "test", DAG_ID], env=env, log=log, timeout=DAGS_TEST_TIMEOUT
        )
        ended = time.time()
        meta = latest_run(env, Path(tmp), log)
        run_info = meta["run"] or {}
        run_dir = mlpipe_home / "artifacts" / PIPELINE / "runs" / (run_key(run_info["run_id"]) if run_info else "-")
        analysis = analyse(meta["task_instances"], run_dir, candidates, started, ended)
        artifacts = (
            sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*.json")) if run_dir.is_dir() else []
        )
    return {
        "command": f"airflow dags test {DAG_ID}",
        "setup_seconds": {"airflow_db_migrate": migrate_seconds, "mlpipe_demo_seed": seed.seconds},
        "exit_code": test.returncode,
        "peak_rss_mib_of_dags_test": round(test.max_rss_kib / 1024, 1),
        "run_id": run_info.get("run_id"),
        "run_state": run_info.get("state"),
        "stage_json_files": artifacts,
        **analysis,
        "log": str(log),
    }


def table(result: dict[str, Any]) -> str:
    total = result["total_seconds"]
    rows = []
    for t in result["tasks"]:
        work = t["stage_work_seconds"]
        rows.append(
            (
                t["task"],
                t["state"],
                t["try_number"],
                t["duration_seconds"],
                work if work is not None else "-",
                t["stage_work_source"] or "-",
                round(100 * (t["counted_work_seconds"] or 0) / total, 1) if total else None,
            )
        )
    rows.append(
        (
            "**total** (`airflow dags test`)",
            result["run_state"],
            None,
            total,
            result["sum_stage_work_seconds"],
            "sum of counted work",
            100.0,
        )
    )
    head = ("task", "state", "try", "task duration s", "stage work s", "work measured by", "% of total wall")
    b = result["overhead_breakdown_seconds"]
    share = result["airflow_overhead_share"]
    lines = [
        markdown_table(head, rows),
        "",
        f"Airflow overhead: {result['airflow_overhead_seconds']} s of {total} s = "
        f"**{round(100 * share, 1) if share is not None else '-'} %** of the wall time "
        f"(exit code {result['exit_code']}, run {result['run_state']}; peak RSS of the command "
        f"{result['peak_rss_mib_of_dags_test']} MiB).",
    ]
    if b:
        lines.append(
            markdown_table(
                ("where the overhead went", "seconds"),
                [
                    ("before the first task (CLI start-up, DAG parse, run creation)", b["before_first_task"]),
                    (
                        "inside tasks, outside the stage's own timer (imports, XCom, logging)",
                        b["inside_tasks_not_stage_work"],
                    ),
                    ("between tasks (test loop scheduling)", b["between_tasks"]),
                    ("after the last task (run bookkeeping, exit)", b["after_last_task"]),
                ],
            )
        )
    s = result["setup_seconds"]
    lines.append(
        f"\nSet-up, not counted: airflow db migrate {s['airflow_db_migrate']} s, "
        f"python -m mlpipe demo seed --all {s['mlpipe_demo_seed']} s."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.demo_stages")
    parser.add_argument(
        "--read-task-instances",
        type=Path,
        required=True,
        metavar="OUT_JSON",
        help="internal: write the latest run's task instances (from AIRFLOW_HOME's DB) here",
    )
    args = parser.parse_args(argv)
    args.read_task_instances.write_text(json.dumps(_read_task_instances()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
