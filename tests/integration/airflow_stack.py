"""Airflow's real components as processes on loopback, shared by the multi-process tests and the stack benchmark.

:class:`Stack` starts ``airflow <component>`` processes (each in its own process group, logging to
a file), waits on the metadata DB and the REST API, and stops everything it started, descendants
included (task supervisors move their children to groups of their own). :func:`airflow_env` is the
environment every component shares.

No pytest fixtures here (the test modules own those): :class:`StackError` reports a failure, which
pytest shows like any other.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from servers import descendants, free_port, send_signal

REPO = Path(__file__).resolve().parents[2]
PIPELINE = "flights_delay"
TRAIN = f"{PIPELINE}_train"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
REDIS = {"host": "127.0.0.1", "port": 6379}
WORKER_CONCURRENCY = "2"  # both candidates train at once, as on a real worker
RUN_TIMEOUT = 240  # seconds any one wait may take
# The order they start in; they stop in reverse (the scheduler first, so nothing new is launched).
# Nothing but the API server listens: the scheduler and triggerer skip their log servers.
COMPONENTS = {
    "api-server": ["api-server", "--host", "127.0.0.1", "--workers", "1"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
}


class StackError(AssertionError):
    """A component died, a wait timed out or a command failed; the message says which."""


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/api/v2/monitor/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def write_test_spec(include: Path, now: datetime, **changes: Any) -> None:
    """flights_delay.yaml tuned for a test of minutes: no clock-driven training run while the test runs.

    The training DAG keeps its cron-or-asset schedule, but starts now with its cron half a day away:
    with ``catchup=False`` Airflow otherwise starts a run for the latest past cron tick as soon as
    the DAG is unpaused. ``changes`` update sections of the spec (``watch={...}``) or replace fields.
    """
    path = include / "pipelines" / f"{PIPELINE}.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["start_date"] = now.isoformat()
    spec["schedule"] = f"{now.minute} {(now.hour + 12) % 24} * * *"
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key].update(value)
        else:
            spec[key] = value
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def airflow_env(
    *,
    airflow_home: Path,
    metadata_db: str,
    api_port: int,
    mlpipe_home: Path,
    include: Path,
    executor: str = "LocalExecutor",
    **extra: str,
) -> dict[str, str]:
    """The environment every component of one stack shares (none of the caller's Airflow settings)."""
    from cryptography.fernet import Fernet

    api_url = f"http://127.0.0.1:{api_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLPIPE_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db,
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            # Every component must agree on these two: trigger kwargs are encrypted, task tokens signed.
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            # Task supervisors (executor workers) start, heartbeat and finish tasks through this API.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
            "AIRFLOW__API__BASE_URL": api_url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            # The REST calls of the tests need no login; nothing but loopback can reach this server.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "5",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "15",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "0",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "plugins"), os.environ.get("PYTHONPATH")) if p),
            "MLPIPE_HOME": str(mlpipe_home),
            "MLPIPE_INCLUDE": str(include),
            # Recorded as the model's code version; spares every task a `git status` of the repo.
            "MLPIPE_CODE_VERSION": "stack-test",
            "GX_ANALYTICS_ENABLED": "False",
        }
    )
    env.update(extra)
    return env


class Stack:
    """The running components, their logs and the metadata DB, with the waits the tests need."""

    def __init__(self, *, env: dict[str, str], logs: Path, db_conn: Any) -> None:
        self.env = env
        self.logs = logs
        self.db = db_conn  # psycopg2, autocommit, on the metadata DB
        self.api_url = env["AIRFLOW__API__BASE_URL"]
        self.procs: dict[str, subprocess.Popen] = {}
        self.started = time.monotonic()
        self.timings: list[tuple[str, float]] = []

    # -- processes ------------------------------------------------------------------------------

    def airflow(self, *args: str, timeout: float = 120) -> str:
        """Run one ``airflow`` CLI command to completion; its output on failure."""
        return self.run(sys.executable, "-m", "airflow", *args, timeout=timeout)

    def run(self, *cmd: str, timeout: float = 120) -> str:
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=self.logs)
        if done.returncode != 0:
            raise StackError(
                f"{' '.join(cmd[1:])} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done.stdout

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.logs,
            start_new_session=True,  # its own process group, so stop() reaches its workers too
        )
        log.close()
        return self.procs[name]

    def assert_alive(self) -> None:
        dead = {name: proc.returncode for name, proc in self.procs.items() if proc.poll() is not None}
        if dead:
            raise StackError(f"Airflow component(s) exited early: {dead}")

    def kill(self, name: str) -> list[int]:
        """SIGKILL component ``name`` and every process below it at once (a lost host); the pids killed."""
        proc = self.procs.pop(name)
        tree = [proc.pid, *descendants(proc.pid)]
        for pid in tree:
            send_signal(pid, signal.SIGKILL, group=False)
        proc.wait(timeout=30)
        return tree

    def stop(self, grace: float = 20) -> None:
        """SIGTERM every component's process group, then SIGKILL whatever is left, descendants included."""
        procs = list(reversed(self.procs.items()))
        tree = {name: descendants(proc.pid) for name, proc in procs}
        for _, proc in procs:
            send_signal(proc.pid, signal.SIGTERM, group=True)
        deadline = time.monotonic() + grace
        for _, proc in procs:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for name, proc in procs:
            send_signal(proc.pid, signal.SIGKILL, group=True)
            for pid in tree[name] + descendants(proc.pid):
                send_signal(pid, signal.SIGKILL, group=False)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)

    def log_text(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def task_log(self, dag_id: str, run_id: str, task_id: str, attempt: int, map_index: int = -1) -> str:
        """The log one try of a task wrote under AIRFLOW_HOME/logs ("" before it exists)."""
        task_dir = self.env_path("AIRFLOW_HOME") / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        task_dir /= f"task_id={task_id}"
        if map_index >= 0:
            task_dir /= f"map_index={map_index}"
        path = task_dir / f"attempt={attempt}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def dump_logs(self, lines: int = 60) -> None:
        print(f"\n===== metadata DB state =====\n{self.describe()}")
        for name in sorted({*self.procs, *(p.stem for p in self.logs.glob("*.log"))}):
            tail = "\n".join(self.log_text(name).splitlines()[-lines:])
            print(f"\n===== tail of {name}.log ({self.logs / (name + '.log')}) =====\n{tail}")
        for task_log in sorted((self.env_path("AIRFLOW_HOME") / "logs").glob("dag_id=*/**/*.log")):
            text = task_log.read_text(errors="replace")
            if "error" in text.lower():
                tail = "\n".join(text.splitlines()[-25:])
                print(f"\n===== tail of task log {task_log} =====\n{tail}")

    @contextmanager
    def dump_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.dump_logs()
            raise

    def env_path(self, key: str) -> Path:
        return Path(self.env[key])

    def mark(self, what: str) -> None:
        self.timings.append((what, time.monotonic() - self.started))

    # -- metadata DB and REST API ---------------------------------------------------------------

    def query(self, sql: str, *params: Any) -> list[tuple]:
        with self.db.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def runs(self, dag_id: str) -> list[tuple[str, str, str]]:
        """(run_id, run_type, state) of every run of ``dag_id``, oldest first."""
        return self.query("SELECT run_id, run_type, state FROM dag_run WHERE dag_id = %s ORDER BY id", dag_id)

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", dag_id, run_id)
        return rows[0][0] if rows else None

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        rows = self.query("SELECT task_id, state FROM task_instance WHERE dag_id = %s AND run_id = %s", dag_id, run_id)
        return dict(rows)

    def describe(self) -> str:
        try:
            runs = self.query("SELECT dag_id, run_id, run_type, state FROM dag_run ORDER BY id")
            tis = self.query(
                "SELECT dag_id, run_id, task_id, map_index, state, try_number, pid FROM task_instance "
                "ORDER BY start_date"
            )
        except Exception as exc:  # the DB itself may be the problem
            return f"(cannot read the metadata DB: {exc})"
        return "\n".join([*(f"run {r}" for r in runs), *(f"ti  {t}" for t in tis)])

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Trigger ``dag_id`` through the REST API; its run id."""
        request = urllib.request.Request(
            f"{self.api_url}/api/v2/dags/{dag_id}/dagRuns",
            data=json.dumps({"logical_date": None, "conf": conf or {}}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["dag_run_id"]

    def unpause(self, *dag_ids: str) -> None:
        self.airflow("dags", "unpause", "--treat-dag-id-as-regex", "-y", f"^({'|'.join(dag_ids)})$")
        paused = dict(
            self.query("SELECT dag_id, is_paused FROM dag WHERE dag_id IN %s", tuple(dag_ids)),
        )
        if paused != dict.fromkeys(dag_ids, False):
            raise StackError(f"DAGs still paused after `airflow dags unpause`: {paused}")

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = RUN_TIMEOUT, every: float = 1) -> Any:
        """Poll ``check`` until it returns something truthy, failing (with the DB state) after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            self.assert_alive()
            result = check()
            if result:
                self.mark(what)
                return result
            if time.monotonic() > deadline:
                raise StackError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.describe()}")
            time.sleep(every)

    def wait_run_done(self, dag_id: str, run_id: str, timeout: float = RUN_TIMEOUT) -> str:
        return self.wait_for(
            f"{dag_id} run {run_id} to finish",
            lambda: (state := self.run_state(dag_id, run_id)) in ("success", "failed") and state,
            timeout=timeout,
        )

    def wait_ready(self, *dag_ids: str, timeout: float = 120) -> None:
        """The API server answers and the dag-processor has serialized ``dag_ids``."""
        self.wait_for("the API server", lambda: healthy(self.api_url), timeout=timeout)
        self.wait_for(
            f"{', '.join(dag_ids)} serialized by the dag-processor",
            lambda: (
                len(self.query("SELECT dag_id FROM serialized_dag WHERE dag_id IN %s", tuple(dag_ids))) == len(dag_ids)
            ),
            timeout=timeout,
        )


class CeleryStack(Stack):
    """:class:`Stack` plus the pieces of the distributed topology: workers, registry, bucket and broker."""

    def __init__(self, *, uid: str, registry_url: str, bucket: str, s3: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.uid = uid
        self.queue = f"mlpipe-{uid}"  # the Celery queue (and Redis key prefix) of this stack alone
        self.registry_url = registry_url
        self.bucket = bucket
        self.s3 = s3  # a boto3 client straight to the S3 server
        self.workers: list[str] = []
        self.worker_hostnames: dict[str, str] = {}

    def start_worker(self) -> str:
        """One more Celery worker on this stack's queue; its Celery hostname, once it is ready."""
        name = f"worker{len(self.workers) + 1}"
        hostname = f"{name}-{self.uid}@{socket.gethostname()}"
        self.start(
            name,
            [
                *("celery", "worker", "--concurrency", WORKER_CONCURRENCY, "--queues", self.queue),
                *("--celery-hostname", hostname, "--without-gossip", "--without-mingle", "--skip-serve-logs"),
            ],
        )
        self.wait_for(f"Celery {hostname} ready", lambda: f"{hostname} ready." in self.log_text(name), timeout=120)
        self.workers.append(name)
        self.worker_hostnames[name] = hostname
        return hostname

    @contextmanager
    def watching_pids(self, *names: str, every: float = 0.1) -> Iterator[dict[str, set[int]]]:
        """Sample the process trees of components ``names`` while the block runs: pid sets by name."""
        seen: dict[str, set[int]] = {name: set() for name in names}
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                for name in names:
                    proc = self.procs.get(name)
                    if proc is not None:
                        seen[name].update(descendants(proc.pid))
                stop.wait(every)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield seen
        finally:
            stop.set()
            thread.join()

    def task_instances(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT id, task_id, map_index, state, try_number, pid, queue, start_date, end_date FROM task_instance "
            "WHERE dag_id = %s AND run_id = %s ORDER BY task_id, map_index",
            TRAIN,
            run_id,
        )
        keys = ("id", "task_id", "map_index", "state", "try_number", "pid", "queue", "start_date", "end_date")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def tries(self, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Earlier tries of ``task_id`` (Airflow keeps them in task_instance_history), oldest first."""
        keys = ("id", "map_index", "try_number", "state", "pid", "start_date", "end_date")
        rows = self.query(
            f"SELECT task_instance_id, {', '.join(keys[1:])} FROM task_instance_history "
            "WHERE dag_id = %s AND run_id = %s AND task_id = %s ORDER BY try_number, map_index",
            TRAIN,
            run_id,
            task_id,
        )
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def celery_results(self) -> dict[str, dict[str, Any]]:
        """Celery's result backend (the metadata DB): by task instance id, the worker that ran it and how it ended."""
        rows = self.query("SELECT status, worker, queue, args FROM celery_taskmeta ORDER BY id")
        out = {}
        for status, worker, queue, args in rows:
            (workload,) = json.loads(bytes(args))
            out[json.loads(workload)["ti"]["id"]] = {"status": status, "worker": worker, "queue": queue}
        return out

    def wait_celery_done(self, ti_ids: set[str]) -> dict[str, dict[str, Any]]:
        """Celery's results of ``ti_ids`` once all are final (a task reports to Airflow before Celery records it)."""
        return self.wait_for(
            "Celery's results of the run",
            lambda: (
                (done := self.celery_results()).keys() >= ti_ids
                and all(done[i]["status"] in ("SUCCESS", "FAILURE") for i in ti_ids)
                and done
            ),
            timeout=60,
        )

    def objects(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Every object under ``prefix`` of the bucket: key -> {size, sha256 (metadata), etag}."""
        out = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                head = self.s3.head_object(Bucket=self.bucket, Key=obj["Key"])
                out[obj["Key"]] = {"size": obj["Size"], "sha256": head["Metadata"].get("sha256"), "etag": obj["ETag"]}
        return out

    def object_sha256(self, key: str) -> str:
        return hashlib.sha256(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()).hexdigest()

    @staticmethod
    def run_key(run_id: str) -> str:
        from mlpipe.storage import run_key

        return run_key(run_id)

    def registry(self) -> Any:
        from mlpipe.registry import Registry

        return Registry.from_url(self.registry_url, create=False)

    def registry_sql(self, sql: str) -> list[tuple]:
        """One statement on the registry database, with plain SQL; its rows (none for a statement without)."""
        import psycopg2

        conn = psycopg2.connect(self.registry_url.replace("postgresql+psycopg2", "postgresql"))
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def champion_log(self) -> list[tuple]:
        return self.registry_sql(
            "SELECT seq, version, previous_version, action, run_id FROM mlpipe_champion_log ORDER BY seq"
        )

    def reset_registry(self) -> None:
        """An empty registry (the schema stays): the next run's promotion is a first again."""
        self.registry_sql("TRUNCATE mlpipe_model_versions, mlpipe_champion_log, mlpipe_runs")

    def task_timings(self, run_id: str) -> list[dict[str, Any]]:
        """Each task instance of a run: when it was queued, started and ended (Airflow's own records)."""
        keys = ("task_id", "map_index", "try_number", "queued", "start", "end")
        rows = self.query(
            "SELECT task_id, map_index, try_number, queued_dttm, start_date, end_date FROM task_instance "
            "WHERE dag_id = %s AND run_id = %s ORDER BY start_date",
            TRAIN,
            run_id,
        )
        return [dict(zip(keys, row, strict=True)) for row in rows]


@contextmanager
def moto_server(logs: Path) -> Iterator[str]:
    """moto's S3 server in a process of its own on a free loopback port."""
    import urllib.request

    port = free_port()
    with (logs / "moto.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start: {(logs / 'moto.log').read_text()}") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.kill()
        proc.wait(timeout=10)


def delete_redis_keys(uid: str) -> None:
    """Every key the broker made for this stack carries its uid (key prefix and queue name)."""
    import redis

    client = redis.Redis(**REDIS)
    keys = list(client.scan_iter(match=f"*{uid}*", count=1000))
    if keys:
        client.delete(*keys)


def unreachable(*, redis: bool = False) -> str | None:
    """Why PostgreSQL (and Redis, if asked) cannot be used by a stack, or None when both answer."""
    import psycopg2

    try:
        psycopg2.connect(dbname="postgres", connect_timeout=5, **PG).close()
    except psycopg2.OperationalError as exc:
        return f"PostgreSQL at {PG['host']}:{PG['port']} (user {PG['user']}): {exc}".strip()
    if redis:
        import redis as redis_client

        try:
            redis_client.Redis(socket_connect_timeout=5, **REDIS).ping()
        except redis_client.RedisError as exc:
            return f"Redis at {REDIS['host']}:{REDIS['port']}: {exc}"
    return None


@contextmanager
def pg_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (127.0.0.1:5432, user postgres) as a SQLAlchemy URL, dropped after."""
    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="k"
    )


def store_connection(endpoint: str, bucket: str) -> str:
    """``AIRFLOW_CONN_MLPIPE_STORE`` as the compose file writes it (JSON, path-style), for ``bucket`` on ``endpoint``.

    Two attempts per request, so a task gives up on an endpoint that is down within a second or two.
    """
    config = {"s3": {"addressing_style": "path"}, "retries": {"max_attempts": 2, "mode": "standard"}}
    extra = {"bucket": bucket, "prefix": "artifacts", "endpoint_url": endpoint, "region_name": "us-east-1"}
    return json.dumps(
        {"conn_type": "aws", "login": "testing", "password": "k", "extra": {**extra, "config_kwargs": config}}
    )


@contextmanager
def celery_stack(
    tmp: Path,
    *,
    seed_until: str | None,
    spec_changes: dict[str, Any] | None = None,
    **settings: str,
) -> Iterator[CeleryStack]:
    """The compose file's topology as processes: everything made fresh under ``tmp`` and removed after.

    Airflow's metadata DB (also Celery's result backend), the registry and the source are three new
    PostgreSQL databases; the source is seeded with ``python -m mlpipe demo seed --target postgres``
    (flights before ``seed_until``, the whole year for None). The broker is Redis with a key prefix
    and a queue of this stack's own; the artifact store a bucket on moto's S3 server (a process of
    its own). ``spec_changes`` go to :func:`write_test_spec`, ``settings`` to the components' environment.
    """
    import psycopg2

    uid = uuid.uuid4().hex[:10]
    airflow_home, mlpipe_home, logs, include = (tmp / d for d in ("airflow", "mlpipe", "logs", "include"))
    for path in (airflow_home, mlpipe_home, logs):
        path.mkdir(parents=True)
    shutil.copytree(REPO / "include", include)
    write_test_spec(include, datetime.now(UTC).replace(microsecond=0), **(spec_changes or {}))

    with ExitStack() as resources:
        metadata_url = resources.enter_context(pg_database("mlpipe_stack_airflow"))
        registry_url = resources.enter_context(pg_database("mlpipe_stack_registry"))
        source_url = resources.enter_context(pg_database("mlpipe_stack_source"))
        endpoint = resources.enter_context(moto_server(logs))
        s3 = s3_client(endpoint)
        bucket = f"mlpipe-{uid}"
        s3.create_bucket(Bucket=bucket)

        def conn_uri(url: str) -> str:
            return url.replace("postgresql+psycopg2://", "postgresql://")

        env = airflow_env(
            airflow_home=airflow_home,
            metadata_db=metadata_url,
            api_port=free_port(),
            mlpipe_home=mlpipe_home,
            include=include,
            executor="CeleryExecutor",
            AIRFLOW__CELERY__BROKER_URL=f"redis://{REDIS['host']}:{REDIS['port']}/0",
            AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX=f"mlpipe-{uid}:",
            AIRFLOW__OPERATORS__DEFAULT_QUEUE=f"mlpipe-{uid}",
            # Celery's result backend then records which worker ran each workload, and its arguments.
            AIRFLOW__CELERY__EXTRA_CELERY_CONFIG=json.dumps({"result_extended": True}),
            AIRFLOW__CELERY__SYNC_PARALLELISM="1",
            AIRFLOW_CONN_MLPIPE_SOURCE=conn_uri(source_url),
            AIRFLOW_CONN_MLPIPE_REGISTRY=conn_uri(registry_url),
            AIRFLOW_CONN_MLPIPE_STORE=store_connection(endpoint, bucket),
            **settings,
        )
        db_conn = psycopg2.connect(conn_uri(metadata_url), connect_timeout=5)
        db_conn.autocommit = True
        resources.callback(db_conn.close)
        stack = CeleryStack(
            uid=uid, registry_url=registry_url, bucket=bucket, s3=s3, env=env, logs=logs, db_conn=db_conn
        )
        resources.callback(delete_redis_keys, uid)
        resources.callback(stack.stop)
        with stack.dump_on_failure():
            # What the compose stack's init container does (for Airflow, then for mlpipe), then the demo data.
            seed = [sys.executable, "-m", "mlpipe", "demo", "seed", "--target", "postgres"]
            seed += ["--until", seed_until] if seed_until else ["--all"]
            with ThreadPoolExecutor(1) as pool:
                migrated = pool.submit(stack.airflow, "db", "migrate", timeout=300)
                stack.run(sys.executable, "-m", "mlpipe", "registry", "upgrade")
                stack.run(*seed, timeout=300)
                migrated.result()
            stack.mark("metadata DB and registry migrated, source seeded")
            for name, args in COMPONENTS.items():
                stack.start(name, args)
            stack.start_worker()
            stack.wait_ready(TRAIN)
            stack.unpause(TRAIN)
            stack.mark("stack up")
        yield stack
