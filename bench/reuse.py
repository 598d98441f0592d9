"""Unchanged inputs cost seconds: ``airflow dags test flights_delay_train`` three times on the same data.

On a fresh temporary MLPIPE_HOME seeded as ``make demo`` does (``python -m mlpipe demo seed``:
January-February, 51,801 flights; ``--all`` for the whole year) and a temporary migrated
AIRFLOW_HOME, the command runs three times; the source does not change between them, so every
run extracts the same snapshot (same sha256):

1. trains both candidates, evaluates them and promotes the first champion;
2. takes run 1's candidates (mlpipe.stages.reuse), evaluates them against the champion run 1 made
   (a tie: nothing promoted);
3. takes run 2's candidates and its evaluation (the champion log has not moved since).

Each run's wall time is taken around the command, its tasks' durations from the metadata DB.
Requirement: run 3's tasks other than extraction and validation take at most ``REST_LIMIT_SECONDS``
together (the cost of a nightly run on unchanged data is extraction + validation + that).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import (
    check_child,
    child_env,
    markdown_table,
    migrate_airflow_db,
    out_dir,
    requirement,
    requirements_table,
    run_child,
)
from bench.demo_stages import DAG_ID, DAGS_TEST_TIMEOUT, PIPELINE, latest_run

NAME = "reuse"
RUNS = 3
BASE_TASKS = ("extract_snapshot", "validate_snapshot")
REST_LIMIT_SECONDS = 10.0


def log_path() -> Path:
    return out_dir() / "reuse.log"


def summarise(meta: dict[str, Any], wall: float) -> dict[str, Any]:
    """One run: wall time, per-task durations, extraction + validation against the rest."""
    tasks: dict[str, float] = {}
    for ti in meta["task_instances"]:
        label = ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"
        duration = ti["duration"]
        if duration is None and ti["start"] is not None and ti["end"] is not None:
            duration = ti["end"] - ti["start"]
        tasks[label] = round(duration or 0.0, 3)
    base = sum(v for k, v in tasks.items() if k in BASE_TASKS)
    return {
        "run_id": (meta["run"] or {}).get("run_id"),
        "state": (meta["run"] or {}).get("state"),
        "wall_seconds": round(wall, 2),
        "tasks": tasks,
        "extract_validate_seconds": round(base, 3),
        "rest_seconds": round(sum(tasks.values()) - base, 3),
    }


def run(seed_all: bool = False) -> dict[str, Any]:
    from mlpipe.storage import run_key

    log = log_path()
    log.write_text("")
    runs = []
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-reuse-") as tmp:
        airflow_home, mlpipe_home = Path(tmp) / "airflow", Path(tmp) / "mlpipe"
        mlpipe_home.mkdir()
        # One code version for the three runs, whatever happens to the checkout meanwhile (a commit
        # during the benchmark would otherwise make a new version, rightly not reusing anything).
        code = f"bench-reuse-{int(time.time())}"
        env = child_env(
            airflow_home=airflow_home, mlpipe_home=mlpipe_home, PYTHONUNBUFFERED="1", MLPIPE_CODE_VERSION=code
        )
        migrate_airflow_db(airflow_home, log)
        cmd = [sys.executable, "-m", "mlpipe", "demo", "seed", *(["--all"] if seed_all else [])]
        check_child(run_child(cmd, env=env, log=log, timeout=900), " ".join(cmd[1:]), log)
        for _ in range(RUNS):
            started = time.time()
            cmd = [sys.executable, "-m", "airflow", "dags", "test", DAG_ID]
            test = run_child(cmd, env=env, log=log, timeout=3 * DAGS_TEST_TIMEOUT)
            wall = time.time() - started
            summary = summarise(latest_run(env, Path(tmp), log), wall)
            summary["exit_code"] = test.returncode
            run_dir = mlpipe_home / "artifacts" / PIPELINE / "runs" / run_key(summary["run_id"] or "-")
            verdict = json.loads((run_dir / "evaluate" / "verdict.json").read_text())
            summary["decision"] = verdict["decision"]
            summary["evaluation_reused_from"] = verdict.get("reused_from")
            summary["candidates_reused"] = sorted(p.parent.name for p in (run_dir / "train").glob("*/reused.json"))
            runs.append(summary)
    last = runs[-1]
    return {
        "command": f"airflow dags test {DAG_ID} (x{RUNS}, unchanged source)",
        "seeded": "whole year" if seed_all else "January-February (make demo)",
        "runs": runs,
        "requirements": [
            requirement("run 3: all but extraction and validation", last["rest_seconds"], REST_LIMIT_SECONDS, " s"),
            requirement("run 3: reused its evaluation", 0 if last["evaluation_reused_from"] else 1, 1),
        ],
        "log": str(log),
    }


def table(result: dict[str, Any]) -> str:
    rows = []
    for i, r in enumerate(result["runs"], start=1):
        reused = ", ".join(r["candidates_reused"]) or "-"
        if r["evaluation_reused_from"]:
            reused += " + evaluation"
        rows.append(
            (
                i,
                r["state"],
                r["decision"],
                reused,
                r["wall_seconds"],
                round(sum(r["tasks"].values()), 2),
                r["extract_validate_seconds"],
                r["rest_seconds"],
            )
        )
    head = ("run", "state", "verdict", "reused", "wall s", "tasks s", "extract + validate s", "other tasks s")
    tasks = markdown_table(
        ("task", *[f"run {i} s" for i in range(1, len(result["runs"]) + 1)]),
        [(t, *[r["tasks"].get(t, "-") for r in result["runs"]]) for t in result["runs"][0]["tasks"]],
    )
    return markdown_table(head, rows) + "\n\n" + tasks + "\n\n" + requirements_table(result["requirements"])
