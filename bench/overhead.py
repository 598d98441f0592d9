"""Overhead against the bare job: ``airflow dags test flights_delay_train`` vs bench/bare_job.py, paired.

The same work on the same data in two ways: the train DAG under ``airflow dags test`` (one process,
Airflow's in-process execution) and :mod:`bench.bare_job` (one plain script: the spec's SQL, the
suite's checks in pandas, the same features, time split, candidates, search and metrics; it makes
the same holdout figures, which this benchmark checks on every pair to 1e-9). Both single-threaded
(``OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=MKL_NUM_THREADS=1``, ``MLPIPE_TRAIN_THREADS=1``) and both on
a first run: each run gets a fresh MLPIPE_HOME holding only the source (no champion, no earlier run
to reuse; ``fresh_training`` is passed as well), the DAG runs in one migrated AIRFLOW_HOME per size.

Sizes: ``year``, the 336,776 flights of 2013, and ``10x``, the 3,367,760-row table the extraction
benchmark builds (bench/extract_memory.py, cached in bench/out/). ``PAIRS`` pairs per size, the order
alternating (bare first, then the DAG first, ...), so a change of the machine's load during a pair
falls on both sides as often. The ratio is taken per pair; the median and the range are reported.

Per run: the wall time around the command; the peak RSS of the process tree (``/usr/bin/time -f %M``,
which reports the maximum over the command and the children it waited for); for the DAG, from its
log's timestamps, the fixed Airflow start-up (process start to the first task's ``Task started``:
CLI, DAG parse, run creation and the in-process Execution API) and its exit (``DagRun Finished`` to
the process's end: bookkeeping and the interpreter's finalization), the GX validation's own seconds
(validate/summary.json) and the evaluation report's (log), two things the bare job does not do.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
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
    mib,
    migrate_airflow_db,
    out_dir,
    requirement,
    requirements_table,
    run_child,
)

NAME = "overhead"
PIPELINE = "flights_delay"
DAG_ID = f"{PIPELINE}_train"
SIZES = {"year": 1, "10x": 10}
PAIRS = {"seed": 1, "year": 3, "10x": 1}
# Targets of issue 16: the DAG's wall time over the bare job's, median of the pairs.
RATIO_LIMITS = {"year": 1.5, "10x": 1.2}
# DagRun Finished to the end of the process (the operators' exit handler: section 14; 2.4 s without it).
EXIT_LIMIT_SECONDS = 1.0
TIMEOUTS = {"seed": 600, "year": 1200, "10x": 5400}
TIME = "/usr/bin/time"
SINGLE_THREADED = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MLPIPE_TRAIN_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
    "GX_ANALYTICS_ENABLED": "False",
}
METRIC_TOLERANCE = 1e-9
# Compiled bytecode kept (under bench/out/, not in the virtualenv), as any installed environment
# keeps it: with PYTHONDONTWRITEBYTECODE set (as on the reference machine), every process compiles
# each module it imports from source, which costs Airflow's hundreds of modules far more than the
# bare job's few and is no cost of a deployment's runs.
PYCACHE = "pycache"
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z")
_REPORT = re.compile(r"Evaluate: report written in ([\d.]+) s")


def log_path() -> Path:
    return out_dir() / "overhead.log"


def source_for(size: str, tmp: Path, log: Path) -> Path:
    """The SQLite source of ``size``: ``seed`` (January-February, what ``make demo`` seeds), ``year`` or ``10x``."""
    if size == "seed":
        home = tmp / "seed"
        home.mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "mlpipe", "demo", "seed"]
        check_child(run_child(cmd, env=child_env(mlpipe_home=home), log=log, timeout=600), "demo seed", log)
        return home / "source.db"
    from bench.extract_memory import source_db

    return source_db(SIZES[size])[0]


def bench_env(airflow_home: Path, mlpipe_home: Path) -> dict[str, str]:
    """A child's environment: single-threaded, bytecode cached under bench/out/pycache."""
    env = child_env(
        airflow_home=airflow_home,
        mlpipe_home=mlpipe_home,
        PYTHONPYCACHEPREFIX=str(out_dir() / PYCACHE),
        **SINGLE_THREADED,
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def fresh_home(tmp: Path, source: Path, name: str) -> Path:
    """An MLPIPE_HOME with nothing but the source (a link to it: the train DAG only reads it)."""
    home = tmp / name
    home.mkdir()
    (home / "source.db").symlink_to(source)
    return home


def _timed(cmd: list[str], peak_file: Path) -> list[str]:
    return [TIME, "-f", "%M", "-o", str(peak_file), *cmd] if Path(TIME).is_file() else cmd


def _peak_kib(peak_file: Path, fallback: int) -> int:
    try:
        return int(peak_file.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return fallback


def _stamp(line: str) -> float | None:
    m = _STAMP.match(line)
    return datetime.fromisoformat(m.group(1) + "+00:00").timestamp() if m else None


def dag_log_figures(log: Path, started: float, ended: float) -> dict[str, Any]:
    """Fixed start-up and exit of one ``airflow dags test`` from its log's timestamps."""
    first_task = finished = None
    report = None
    for line in log.read_text(errors="replace").splitlines():
        if first_task is None and "Task started" in line:
            first_task = _stamp(line)
        if "DagRun Finished" in line:
            finished = _stamp(line)
        m = _REPORT.search(line)
        if m:
            report = float(m.group(1))
    return {
        "startup_seconds": round(first_task - started, 3) if first_task else None,
        "exit_seconds": round(ended - finished, 3) if finished else None,
        "report_seconds": report,
    }


def run_bare(env: dict[str, str], home: Path, source: Path, tmp: Path, log: Path, timeout: float) -> dict[str, Any]:
    out, peak = tmp / f"bare-{home.name}.json", tmp / f"bare-{home.name}.peak"
    cmd = [
        sys.executable,
        "-m",
        "bench.bare_job",
        "--source-url",
        f"sqlite:///{source}",
        "--out",
        str(out),
        "--model-out",
        str(home / "model.joblib"),
    ]
    run = check_child(run_child(_timed(cmd, peak), env=env, log=log, timeout=timeout), "bench.bare_job", log)
    result = json.loads(out.read_text())
    return {
        "wall_seconds": run.seconds,
        "peak_rss_mib": mib(_peak_kib(peak, run.max_rss_kib)),
        "metrics": result["metrics"],
        "best": result["best_candidate"],
        "decision": result["decision"],
        "rows": result["rows"],
        "steps": result["seconds"],
    }


def run_dag(env: dict[str, str], home: Path, tmp: Path, timeout: float) -> dict[str, Any]:
    log, peak = tmp / f"dag-{home.name}.log", tmp / f"dag-{home.name}.peak"
    cmd = [sys.executable, "-m", "airflow", "dags", "test", DAG_ID, "-c", json.dumps({"fresh_training": True})]
    started = time.time()
    run = run_child(_timed(cmd, peak), env=env, log=log, timeout=timeout)
    ended = time.time()
    with open(log_path(), "a") as all_logs:
        all_logs.write(log.read_text(errors="replace"))
    check_child(run, "airflow dags test", log)
    verdicts = list((home / "artifacts" / PIPELINE / "runs").glob("*/evaluate/verdict.json"))
    if len(verdicts) != 1:
        raise RuntimeError(f"expected one verdict under {home}, found {len(verdicts)} (log: {log})")
    verdict = json.loads(verdicts[0].read_text())
    validate = verdicts[0].parents[1] / "validate" / "summary.json"
    gx = json.loads(validate.read_text()).get("seconds") if validate.is_file() else None
    return {
        "wall_seconds": run.seconds,
        "peak_rss_mib": mib(_peak_kib(peak, run.max_rss_kib)),
        "metrics": verdict["candidates"],
        "best": verdict["best_candidate"],
        "decision": verdict["decision"],
        "gx_validation_seconds": gx,
        **dag_log_figures(log, started, ended),
    }


def same_figures(bare: dict[str, Any], dag: dict[str, Any]) -> float:
    """The largest difference between the two sides' holdout metrics (every candidate, every metric)."""
    if set(bare) != set(dag):
        raise RuntimeError(f"candidates differ: bare {sorted(bare)}, DAG {sorted(dag)}")
    return max(abs(bare[c][m] - dag[c][m]) for c in bare for m in bare[c])


def measure(size: str, pairs: int, *, log: Path | None = None, warm_up: bool = False) -> dict[str, Any]:
    """``pairs`` paired runs of the bare job and the DAG on ``size`` (alternating which goes first);
    ``warm_up``: one pair first, not counted, on what ``make demo`` seeds (fills the bytecode cache)."""
    log = log or log_path()
    timeout = TIMEOUTS.get(size, TIMEOUTS["10x"])
    with tempfile.TemporaryDirectory(prefix=f"mlpipe-bench-overhead-{size}-") as tmp_name:
        tmp = Path(tmp_name)
        source = source_for(size, tmp, log)
        airflow_home = tmp / "airflow"
        migrate_airflow_db(airflow_home, log)
        if warm_up:
            warm = source_for("seed", tmp, log)
            for side, home in (
                ("bare", fresh_home(tmp, warm, "warm-bare")),
                ("dag", fresh_home(tmp, warm, "warm-dag")),
            ):
                env = bench_env(airflow_home, home)
                if side == "bare":
                    run_bare(env, home, warm, tmp, log, TIMEOUTS["seed"])
                else:
                    run_dag(env, home, tmp, TIMEOUTS["seed"])
                shutil.rmtree(home, ignore_errors=True)
        runs = []
        for i in range(pairs):
            pair: dict[str, Any] = {"order": "bare first" if i % 2 == 0 else "DAG first"}
            homes = {side: fresh_home(tmp, source, f"{side}{i}") for side in ("bare", "dag")}
            for side in ("bare", "dag") if i % 2 == 0 else ("dag", "bare"):
                env = bench_env(airflow_home, homes[side])
                pair["load_before"] = pair.get("load_before", os.getloadavg()[0])
                if side == "bare":
                    pair["bare"] = run_bare(env, homes[side], source, tmp, log, timeout)
                else:
                    pair["dag"] = run_dag(env, homes[side], tmp, timeout)
            pair["load_after"] = os.getloadavg()[0]
            pair["max_metric_difference"] = same_figures(pair["bare"]["metrics"], pair["dag"]["metrics"])
            pair["ratio"] = round(pair["dag"]["wall_seconds"] / pair["bare"]["wall_seconds"], 3)
            fixed = (pair["dag"]["startup_seconds"] or 0.0) + (pair["dag"]["exit_seconds"] or 0.0)
            pair["ratio_without_fixed"] = round((pair["dag"]["wall_seconds"] - fixed) / pair["bare"]["wall_seconds"], 3)
            runs.append(pair)
            for side in ("bare", "dag"):
                shutil.rmtree(homes[side], ignore_errors=True)
    ratios = [p["ratio"] for p in runs]
    return {
        "size": size,
        "rows": runs[0]["bare"]["rows"],
        "pairs": runs,
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_range": [min(ratios), max(ratios)],
        "ratio_without_fixed_median": round(statistics.median(p["ratio_without_fixed"] for p in runs), 3),
        "max_metric_difference": max(p["max_metric_difference"] for p in runs),
    }


def run(sizes: tuple[str, ...] = ("year", "10x"), pairs: dict[str, int] | None = None) -> dict[str, Any]:
    log = log_path()
    log.write_text("")
    pairs = {**PAIRS, **(pairs or {})}
    results = {size: measure(size, pairs[size], log=log, warm_up=i == 0) for i, size in enumerate(sizes)}
    reqs = []
    for size, r in results.items():
        reqs.append(
            requirement(
                f"{size}: holdout metrics, bare job vs DAG (max difference)",
                r["max_metric_difference"],
                METRIC_TOLERANCE,
            )
        )
        exits = _median([p["dag"]["exit_seconds"] for p in r["pairs"]])
        if exits is not None:
            name = f"{size}: DAG exit after the run finished (median)"
            reqs.append(requirement(name, exits, EXIT_LIMIT_SECONDS, " s"))
        if size in RATIO_LIMITS:
            reqs.append(
                requirement(
                    f"{size}: DAG wall time / bare job's (median of {len(r['pairs'])})",
                    r["ratio_median"],
                    RATIO_LIMITS[size],
                    "x",
                )
            )
    return {
        "command": f"airflow dags test {DAG_ID} vs python -m bench.bare_job, paired, single-threaded",
        "results": results,
        "requirements": reqs,
        "log": str(log),
    }


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


def table(result: dict[str, Any]) -> str:
    rows = []
    for size, r in result["results"].items():
        p = r["pairs"]
        rows.append(
            (
                f"{size} ({r['rows']:,} rows)",
                len(p),
                _median([x["bare"]["wall_seconds"] for x in p]),
                _median([x["dag"]["wall_seconds"] for x in p]),
                f"**{r['ratio_median']}x** ({r['ratio_range'][0]}-{r['ratio_range'][1]})",
                _median([x["dag"]["startup_seconds"] for x in p]),
                _median([x["dag"]["exit_seconds"] for x in p]),
                f"{r['ratio_without_fixed_median']}x",
                _median([x["dag"]["gx_validation_seconds"] for x in p]),
                _median([x["dag"]["report_seconds"] for x in p]),
                _median([x["bare"]["peak_rss_mib"] for x in p]),
                _median([x["dag"]["peak_rss_mib"] for x in p]),
                f"{min(x['load_before'] for x in p):.1f}-{max(x['load_after'] for x in p):.1f}",
            )
        )
    head = (
        "data",
        "pairs",
        "bare s",
        "DAG s",
        "ratio (range)",
        "DAG start-up s",
        "DAG exit s",
        "ratio without start-up + exit",
        "GX validation s",
        "evaluation report s",
        "bare peak MiB",
        "DAG peak MiB",
        "load avg",
    )
    steps = []
    for size, r in result["results"].items():
        bare = r["pairs"][0]["bare"]["steps"]
        steps.append(
            (
                size,
                *(bare.get(k) for k in ("imports", "query", "checks", "features_split")),
                *(v for k, v in bare.items() if k.startswith("train_")),
                bare.get("evaluate"),
                bare.get("total"),
            )
        )
    names = [k for k in next(iter(result["results"].values()))["pairs"][0]["bare"]["steps"] if k.startswith("train_")]
    step_head = (
        "bare job, first pair",
        "imports s",
        "query s",
        "checks s",
        "features + split s",
        *(f"{n} s" for n in names),
        "evaluate s",
        "total s",
    )
    return "\n\n".join(
        [markdown_table(head, rows), markdown_table(step_head, steps), requirements_table(result["requirements"])]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", choices=("seed", *SIZES), default=["year", "10x"])
    parser.add_argument("--pairs", type=int, default=None, help="pairs per size (default: year 3, 10x 1)")
    args = parser.parse_args(argv)
    pairs = {s: args.pairs for s in args.sizes} if args.pairs else {}
    result = run(tuple(args.sizes), pairs)
    from bench import write_result

    print(table(result))
    print(f"\n(raw figures in {write_result(NAME, result)})")
    return 0 if all(r["ok"] for r in result["requirements"]) else 1


if __name__ == "__main__":
    sys.exit(main())
