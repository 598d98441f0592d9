"""``python -m bench [NAME ...]``: run benchmarks (each bench/<module>.py that defines NAME, run and table).

Without a name, all of them. Each benchmark writes bench/out/<name>.json and prints a Markdown table.
The exit code is 1 when a benchmark fails to run or a stated requirement is not met (the demo and
stack timings are reports, no bound).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from types import ModuleType
from typing import Any

from bench import machine, write_result


def _modules() -> dict[str, ModuleType]:
    import importlib
    import pkgutil

    import bench

    found = []
    for info in pkgutil.iter_modules(bench.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        if all(hasattr(module, attr) for attr in ("NAME", "run", "table")):
            found.append(module)
    found.sort(key=lambda m: (ORDER.index(m.NAME) if m.NAME in ORDER else len(ORDER), m.NAME))
    return {m.NAME: m for m in found}


# The order of `python -m bench` without names; a bench module not listed here runs after these.
ORDER = [
    "extract",
    "parse",
    "demo",
    "monitor",
    "reference",
    "sensor",
    "stack",
    "score",
    "tuning",
    "evaluation",
    "runindex",
    "reuse",
    "gx",
    "overhead",
    "startup",
]


TITLES = {
    "extract": "Extraction streams from SQLite, PostgreSQL and S3 (peak RSS of extract_snapshot in its own process)",
    "parse": "DAG parsing (per file of dags/)",
    "demo": "Per-stage wall times of `airflow dags test flights_delay_train` (make demo)",
    "monitor": "Drift monitor (drift_report on 1,000,000 current rows, in its own process)",
    "reference": "Validation against a reference (the reference checks on the whole-year demo, in its own process)",
    "sensor": "New-data watch, idle (count_new_rows with nothing new, per check)",
    "stack": "The distributed run (CeleryExecutor, PostgreSQL, Redis, S3) next to `airflow dags test`",
    "score": "Batch scoring (score_window with the demo champion, each run in its own process)",
    "tuning": "Tuning the demo's candidates: one after another vs mapped on 2 workers (one process each)",
    "evaluation": "Evaluation cost: evaluate_candidates on a 10,000-row, 23-column, 7-class pipeline vs its budget",
    "gate_errors": "The gate's error rates on the demo year: point estimates vs paired bootstrap intervals",
    "runindex": "The Models view with 1,000 runs of one pipeline on S3 (moto): overview and pipeline page",
    "reuse": "Unchanged inputs: `airflow dags test flights_delay_train` three times on the same data",
    "reports": "Report rendering: the evaluation, drift and reference pages and the run summary of a small demo",
    "gx": "What GX costs validate_snapshot on the whole-year demo, before and after, and the same checks in pandas",
    "overhead": "Overhead against the bare job: `airflow dags test flights_delay_train` vs bench/bare_job.py, paired",
    "startup": "Per-task start-up under LocalExecutor and Celery (the whole year, native stack)",
}


def main(argv: list[str] | None = None) -> int:
    modules = _modules()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run, of {', '.join(modules)} (default: all)"
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="extract: also run 3.4 M rows in one chunk (unstreamed), to see what the bounds catch",
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in modules]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(modules)}")
    names = args.names or list(modules)

    m = machine()
    print(f"mlpipe benchmarks on {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, Python {m['python']}\n")
    failed: list[str] = []
    for name in names:
        module = modules[name]
        print(f"## {TITLES.get(name, name)}\n", flush=True)
        started = time.perf_counter()
        kwargs: dict[str, Any] = {"control": True} if name == "extract" and args.control else {}
        try:
            result = module.run(**kwargs)
        except Exception:
            traceback.print_exc()
            print(f"\nbenchmark {name} could not run\n", flush=True)
            failed.append(name)
            continue
        result["bench_seconds"] = round(time.perf_counter() - started, 1)
        path = write_result(name, result)
        print(module.table(result))
        print(f"\n({result['bench_seconds']} s; raw figures in {path})\n", flush=True)
        if not all(r["ok"] for r in result.get("requirements", [])):
            failed.append(name)
        if name == "demo" and (result.get("exit_code") != 0 or result.get("run_state") != "success"):
            failed.append(name)
        if name == "stack" and {result["distributed"]["state"], result["dags_test"]["state"]} != {"success"}:
            failed.append(name)
        if name == "startup" and any(r["state"] != "success" for k, r in result.items() if k.endswith("Executor")):
            failed.append(name)
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
