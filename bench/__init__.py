"""Benchmarks of mlpipe: extraction memory, DAG parse time, demo stage times, monitor, reference validation,
sensor, scoring, tuning and evaluation cost, the gate's error rates, the Models view's run index, and reuse on
unchanged inputs.

``make bench`` runs them all (``python -m bench``), ``python -m bench extract|parse|...|tuning`` one of
them. Each writes its raw figures to ``bench/out/<name>.json`` (git-ignored) and prints a Markdown
table; docs/benchmarks.md describes the method and keeps the latest numbers.

Every command a benchmark starts runs in a child process with an environment built here: temporary
AIRFLOW_HOME / MLPIPE_HOME, and none of the caller's AIRFLOW__* settings or Connections, so a
benchmark never touches the checkout's .airflow/ or .mlpipe/ and measures the same thing everywhere.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "bench" / "out"

# Modules DAG parsing must not import (ARCHITECTURE.md: the dag-processor re-parses every 30 s).
HEAVY_MODULES = ("pandas", "sklearn", "great_expectations", "boto3", "pyarrow", "matplotlib")

_DROPPED_ENV_PREFIXES = ("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "MLPIPE_")
_NUMBER = re.compile(r"-?[\d,]*\.?\d*|-")


def out_dir() -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    return OUT_DIR


def child_env(*, airflow_home: Path | None = None, mlpipe_home: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a benchmark's child: this checkout's DAGs and plugins, the given homes, nothing else.

    The caller's AIRFLOW__* variables and Connections are dropped: a SQL_ALCHEMY_CONN pointing at a
    shared PostgreSQL, say, would otherwise make the benchmark migrate and run DAGs there.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_ENV_PREFIXES) and k != "AIRFLOW_HOME"}
    pythonpath = [str(REPO / "plugins"), str(REPO)]
    if os.environ.get("PYTHONPATH"):
        pythonpath.append(os.environ["PYTHONPATH"])
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(pythonpath),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "MLPIPE_INCLUDE": str(REPO / "include"),
            "MLPIPE_KEEP_ENV": "1",
        }
    )
    if airflow_home is not None:
        env["AIRFLOW_HOME"] = str(airflow_home)
    if mlpipe_home is not None:
        env["MLPIPE_HOME"] = str(mlpipe_home)
    env.update(extra)
    return env


@dataclass(frozen=True)
class ChildRun:
    """One finished child process: exit code, wall time and its own peak RSS (from wait4)."""

    returncode: int
    seconds: float
    max_rss_kib: int


def run_child(cmd: Sequence[str], *, env: dict[str, str], log: Path, timeout: float, cwd: Path = REPO) -> ChildRun:
    """Run ``cmd`` with stdout+stderr appended to ``log``; wait4() gives this child's peak RSS alone.

    (getrusage(RUSAGE_CHILDREN) would be the maximum over every child this process ever waited for.)
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode == -9 and seconds >= timeout:
        raise TimeoutError(f"{' '.join(cmd)} did not finish within {timeout:.0f} s (log: {log})")
    return ChildRun(returncode=proc.returncode, seconds=round(seconds, 3), max_rss_kib=usage.ru_maxrss)


def check_child(run: ChildRun, what: str, log: Path) -> ChildRun:
    if run.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(f"{what} failed with exit code {run.returncode} (log: {log}):\n{tail}")
    return run


def measure_in_child(module: str, what: str, log: Path, *, timeout: float) -> dict[str, Any]:
    """``python -m <module> --child RESULT_JSON`` with temporary homes; its figures plus the process's wall time."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix=f"mlpipe-{module.replace('.', '-')}-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", module, "--child", str(result_file)]
        env = child_env(airflow_home=Path(tmp) / "airflow", mlpipe_home=Path(tmp) / "mlpipe")
        run = check_child(run_child(cmd, env=env, log=log, timeout=timeout), what, log)
        child = json.loads(result_file.read_text())
    return {**child, "process_seconds": run.seconds}


def migrate_airflow_db(airflow_home: Path, log: Path) -> float:
    """``airflow db migrate`` into a (temporary) AIRFLOW_HOME; returns the seconds it took."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    run = run_child(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=child_env(airflow_home=airflow_home),
        log=log,
        timeout=300,
    )
    return check_child(run, "airflow db migrate", log).seconds


def self_peak_rss_kib() -> int:
    """This process's peak RSS: VmHWM from /proc when there is one, else getrusage."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def self_rss_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine() -> dict[str, Any]:
    mem_kib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 2**20, 1) if mem_kib else None,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("apache-airflow", "pandas", "pyarrow", "scikit-learn", "SQLAlchemy", "great-expectations"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def requirement(name: str, value: float, limit: float, unit: str = "") -> dict[str, Any]:
    """A stated bound and how the measurement compares (``value < limit`` passes)."""
    return {"requirement": name, "value": value, "limit": limit, "unit": unit, "ok": value < limit}


def write_result(name: str, result: dict[str, Any]) -> Path:
    """bench/out/<name>.json with the run's date, machine and library versions."""
    doc = {
        "benchmark": name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        **result,
    }
    path = out_dir() / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; numbers right-aligned."""

    def cell(value: Any) -> str:
        return "" if value is None else str(value).replace("|", "\\|")

    def is_number(value: Any) -> bool:
        if isinstance(value, str):
            return bool(_NUMBER.fullmatch(value))
        return value is None or isinstance(value, (int, float))

    numeric = [all(is_number(r[i]) for r in rows) for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def requirements_table(reqs: Sequence[dict[str, Any]]) -> str:
    rows = [
        (r["requirement"], f"{r['value']}{r['unit']}", f"< {r['limit']}{r['unit']}", "pass" if r["ok"] else "FAIL")
        for r in reqs
    ]
    return markdown_table(("requirement", "measured", "bound", "result"), rows)


def mib(kib: int | float) -> float:
    return round(kib / 1024, 1)
