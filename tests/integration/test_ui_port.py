"""``AIRFLOW__API__PORT=18080 make ui`` runs tasks: scripts/env.sh derives every URL from the one port.

What `make ui` runs, on a free port that is not 8080: the environment of scripts/env.sh, then
``airflow standalone`` (scheduler, dag-processor, triggerer and api-server). A one-task DAG runs to
success only if the task supervisor reaches the execution API where the API server listens. Also:
a port in use stops `make ui` at once with a message saying what to do.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest
from conftest import MIGRATED_DB
from servers import free_port, stop_tree

pytestmark = pytest.mark.scheduler

REPO = Path(__file__).resolve().parents[2]
DAG = """
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from airflow.sdk import dag, task


@dag(schedule="@once", start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), is_paused_upon_creation=True)
def ui_port_probe():
    @task
    def touch() -> None:
        Path(__file__).with_name("ran").write_text("ok")

    touch()


ui_port_probe()
"""


def env_sh(**settings: str) -> dict[str, str]:
    """The environment `make ui` gives airflow: scripts/env.sh sourced over ``settings``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLPIPE_"))}
    done = subprocess.run(
        ["bash", "-c", f". '{REPO / 'scripts' / 'env.sh'}' && env -0"],
        env={**base, **settings},
        capture_output=True,
        check=True,
        timeout=30,
    )
    return dict(line.split("=", 1) for line in done.stdout.decode().split("\0") if "=" in line)


def healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/api/v2/monitor/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def unpause(db: Path) -> bool:
    with closing(sqlite3.connect(db, timeout=10)) as conn, conn:
        return conn.execute("UPDATE dag SET is_paused = 0 WHERE dag_id = 'ui_port_probe'").rowcount == 1


def task_state(db: Path) -> str | None:
    with closing(sqlite3.connect(db, timeout=10)) as conn:
        row = conn.execute("SELECT state FROM task_instance WHERE dag_id = 'ui_port_probe'").fetchone()
    return row[0] if row and row[0] in ("success", "failed", "upstream_failed") else None


def wait_for(what: str, check, proc: subprocess.Popen, logs: Path, timeout: float = 150) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, (logs / "standalone.log").read_text()[-3000:]
        if result := check():
            return result
        time.sleep(1)
    raise AssertionError(f"{what}: not ready in {timeout} s\n" + (logs / "standalone.log").read_text()[-3000:])


def test_env_sh_derives_the_urls_from_the_port() -> None:
    env = env_sh(AIRFLOW__API__PORT="18080")
    assert env["AIRFLOW__API__BASE_URL"] == "http://localhost:18080"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://localhost:18080/execution/"
    default = env_sh()
    assert default["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://localhost:8080/execution/"


def test_a_taken_port_stops_make_ui_with_a_message() -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "port_free.py"), str(port)], capture_output=True, text=True
        )
    assert done.returncode == 1
    assert f"port {port} is taken" in done.stderr and "AIRFLOW__API__PORT=" in done.stderr
    recipe = (REPO / "Makefile").read_text().split("\nui: setup\n")[1]
    assert recipe.index("port_free.py") < recipe.index("airflow standalone"), "checked before anything starts"


def test_a_task_runs_under_standalone_on_another_port(airflow_db, tmp_path: Path) -> None:
    port = free_port()
    assert port != 8080
    home, dags = tmp_path / "airflow", tmp_path / "dags"
    home.mkdir()
    dags.mkdir()
    shutil.copyfile(MIGRATED_DB, home / "airflow.db")  # migrated once per session: standalone only checks it
    (dags / "ui_port_probe.py").write_text(DAG)
    env = env_sh(
        MLPIPE_KEEP_ENV="1",  # the test's homes and DAG folder; the URLs still come from the port
        AIRFLOW_HOME=str(home),
        MLPIPE_HOME=str(tmp_path / "mlpipe"),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="2",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
        AIRFLOW__API__WORKERS="1",
    )
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://localhost:{port}/execution/"
    log = (tmp_path / "standalone.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow", "standalone"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        # Unpaused once the API server answers on the port (and the DAG is parsed): its one task,
        # without retries, succeeds only if the supervisor reaches the execution API on that port.
        wait_for("the API server", lambda: healthy(f"http://localhost:{port}"), proc, tmp_path)
        wait_for("the probe DAG", lambda: unpause(home / "airflow.db"), proc, tmp_path)
        state = wait_for("the task", lambda: task_state(home / "airflow.db"), proc, tmp_path)
        assert state == "success", (tmp_path / "standalone.log").read_text()[-4000:]
        assert (dags / "ran").read_text() == "ok"
    finally:
        stop_tree(proc, grace=15)
        log.close()
