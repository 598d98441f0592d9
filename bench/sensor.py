"""The new-data watch's idle cost: statements and time per check when nothing is new.

The source is the SQLite ``flights`` table of the 336,776 real flights of 2013, as ``python -m
mlpipe demo seed --all`` writes it (with its index ``ix_flights_time_hour``; the file bench/extract_memory.py
caches in bench/out/), and a copy of it without that index. The watermark is the newest
``time_hour`` with every row at it already announced, so every check finds 0 new rows: what the
watch pays while it waits.

A child process per table (``python -m bench.sensor --child``) calls ``count_new_rows`` the way the
watch does, and counts the statements of each check two ways: SQLAlchemy's ``before_cursor_execute``
event (every statement SQLAlchemy sends), and SQLite's own trace callback on each DBAPI connection
(every statement SQLite runs, the dialect's first-connect set-up included). Two ways of calling:

* ``fresh engine``: ``create_engine`` + ``count_new_rows`` + ``dispose`` per check, exactly what
  ``NewRowsTrigger._check`` (deferrable) and ``NewDataSensor._check`` (poke mode) do;
* ``pooled engine``: one engine for every check, the pooled connection reused (the query alone).

It also records ``EXPLAIN QUERY PLAN`` of the statement issued, and one check without a watermark
(the first watch ever: every row counts) for comparison.

Requirements: each check issues exactly one statement; with the index, a check with nothing new
takes under 50 ms (median of 20, fresh engine); the plan searches the index rather than scanning.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import check_child, child_env, markdown_table, out_dir, requirement, requirements_table, run_child

NAME = "sensor"
TABLE = "flights"  # flights_delay's source.table ...
COLUMN = "time_hour"  # ... and its source.watermark_column
INDEX = "ix_flights_time_hour"  # what mlpipe.demo.write_flights_sqlite creates
CHECKS = 20
CHECK_LIMIT_SECONDS = 0.050


def log_path() -> Path:
    return out_dir() / "sensor.log"


def source_db() -> Path:
    """The cached 336,776-row demo source (seeded by ``python -m mlpipe demo seed --all`` on first use)."""
    from bench.extract_memory import source_db as cached

    return cached(1)[0]


def without_index(db: Path, dest: Path) -> Path:
    """A copy of ``db`` with the watermark column's index dropped."""
    shutil.copyfile(db, dest)
    conn = sqlite3.connect(dest)
    try:
        conn.execute(f"DROP INDEX {INDEX}")
        conn.commit()
    finally:
        conn.close()
    return dest


def measure(db: Path, *, checks: int = CHECKS) -> dict[str, Any]:
    """Measure ``db`` in a child process; its figures (see :func:`_child`)."""
    log = log_path()
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-sensor-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench.sensor", "--child", str(db), str(result_file), "--checks", str(checks)]
        env = child_env(airflow_home=Path(tmp) / "airflow", mlpipe_home=Path(tmp) / "mlpipe")
        run = check_child(run_child(cmd, env=env, log=log, timeout=300), f"count_new_rows on {db.name}", log)
        child = json.loads(result_file.read_text())
    return {**child, "process_seconds": run.seconds}


def measure_both(*, checks: int = CHECKS) -> dict[str, dict[str, Any]]:
    """The demo source with its index, and the same table without it."""
    db = source_db()
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-sensor-db-") as tmp:
        bare = without_index(db, Path(tmp) / "flights-no-index.db")
        return {"index": measure(db, checks=checks), "no index": measure(bare, checks=checks)}


def searches_index(plan: list[str]) -> bool:
    """Every read of the table is a search of the index (the statement reads it three times)."""
    reads = [step for step in plan if step.startswith(("SEARCH", "SCAN"))]
    return bool(reads) and all(step.startswith("SEARCH") and INDEX in step for step in reads)


def run() -> dict[str, Any]:
    log_path().write_text("")
    variants = measure_both()
    indexed = variants["index"]
    off = sum(
        1 for v in variants.values() for mode in ("fresh", "pooled") for n in v[mode]["statements_per_check"] if n != 1
    )
    total = sum(len(v[mode]["statements_per_check"]) for v in variants.values() for mode in ("fresh", "pooled"))
    return {
        "table": TABLE,
        "column": COLUMN,
        "checks": CHECKS,
        "variants": variants,
        "requirements": [
            requirement(f"checks issuing other than exactly 1 statement (of {total})", off, 1),
            requirement(
                f"with the index: one check, nothing new (median of {CHECKS}, fresh engine)",
                round(indexed["fresh"]["median_ms"], 2),
                CHECK_LIMIT_SECONDS * 1000,
                " ms",
            ),
            requirement(
                "with the index: plan scans the table instead of searching the index",
                int(not searches_index(indexed["plan"])),
                1,
            ),
        ],
    }


def table(result: dict[str, Any]) -> str:
    rows = []
    for label, v in result["variants"].items():
        for mode, name in (("fresh", "fresh engine per check"), ("pooled", "pooled engine")):
            m = v[mode]
            rows.append(
                (
                    label,
                    name,
                    f"{v['rows']:,}",
                    "/".join(str(n) for n in sorted(set(m["statements_per_check"]))),
                    m["sqlite_statements_per_check"][0],
                    "/".join(str(n) for n in sorted(set(m["sqlite_statements_per_check"][1:]))),
                    round(m["first_ms"], 2),
                    round(m["median_ms"], 2),
                    round(m["max_ms"], 2),
                    "; ".join(v["plan"]),
                )
            )
    head = (
        "table",
        "calls",
        "rows",
        "statements per check (SQLAlchemy)",
        "SQLite statements, first check",
        "SQLite statements, later checks",
        "first check ms",
        f"median of {result['checks']} ms",
        "max ms",
        "query plan",
    )
    no_watermark = markdown_table(
        ("table", "check without a watermark (every row new) ms", "rows counted"),
        [
            (label, round(v["no_watermark_ms"], 2), f"{v['no_watermark_rows']:,}")
            for label, v in result["variants"].items()
        ],
    )
    return "\n\n".join((markdown_table(head, rows), no_watermark, requirements_table(result["requirements"])))


# -- the child ----------------------------------------------------------------------------------


def _child(db: Path, result_file: Path, checks: int) -> None:
    import sqlalchemy as sa
    from sqlalchemy import event

    from mlpipe.sources.sql import count_new_rows

    url = f"sqlite:///{db}"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows, newest = conn.execute(f"SELECT count(*), max({COLUMN}) FROM {TABLE}").fetchone()
        at_newest = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE {COLUMN} = ?", (newest,)).fetchone()[0]
        indexes = [r[1] for r in conn.execute(f"PRAGMA index_list({TABLE})")]

    sent: list[tuple[str, Any]] = []
    traced: list[str] = []

    def before_cursor_execute(conn, cursor, statement, parameters, context, executemany) -> None:
        sent.append((statement, parameters))

    def on_connect(dbapi_connection, connection_record) -> None:
        dbapi_connection.set_trace_callback(traced.append)

    # On the Engine class: every engine, so the fresh engine of each check is counted too.
    event.listen(sa.engine.Engine, "before_cursor_execute", before_cursor_execute)
    event.listen(sa.engine.Engine, "connect", on_connect)

    def check(engine: sa.Engine | None) -> tuple[float, int, int]:
        sent.clear()
        traced.clear()
        started = time.perf_counter()
        if engine is None:  # as NewRowsTrigger._check / NewDataSensor._check
            fresh = sa.create_engine(url)
            try:
                found = count_new_rows(fresh, table=TABLE, column=COLUMN, watermark=newest, at_watermark=at_newest)
            finally:
                fresh.dispose()
        else:
            found = count_new_rows(engine, table=TABLE, column=COLUMN, watermark=newest, at_watermark=at_newest)
        seconds = time.perf_counter() - started
        if found.rows != 0 or found.watermark_to != newest:
            raise RuntimeError(f"expected nothing new past {newest!r}, got {found}")
        return seconds, len(sent), len(traced)

    def series(engine: sa.Engine | None) -> dict[str, Any]:
        first = check(engine)
        rest = [check(engine) for _ in range(checks)]
        times = [t for t, _, _ in rest]
        return {
            "first_ms": first[0] * 1000,
            "median_ms": statistics.median(times) * 1000,
            "max_ms": max(times) * 1000,
            "statements_per_check": [n for _, n, _ in [first, *rest]],
            "sqlite_statements_per_check": [n for _, _, n in [first, *rest]],
        }

    fresh = series(None)
    statement, parameters = sent[0]
    example = {"sqlalchemy": statement, "sqlite": [s for s in traced if not s.startswith("PRAGMA")][-1]}
    setup = [s for s in traced if s.startswith("PRAGMA")]
    engine = sa.create_engine(url)
    try:
        pooled = series(engine)
        started = time.perf_counter()
        everything = count_new_rows(engine, table=TABLE, column=COLUMN, watermark=None)
        no_watermark_ms = (time.perf_counter() - started) * 1000
    finally:
        engine.dispose()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        plan = [r[-1] for r in conn.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)]
    out = {
        "db": db.name,
        "rows": rows,
        "indexes": indexes,
        "watermark": newest,
        "rows_at_watermark": at_newest,
        "statement": example,
        "first_connect_statements": setup,
        "plan": plan,
        "fresh": fresh,
        "pooled": pooled,
        "no_watermark_ms": no_watermark_ms,
        "no_watermark_rows": everything.rows,
    }
    result_file.write_text(json.dumps(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sensor")
    parser.add_argument(
        "--child",
        nargs=2,
        metavar=("DB", "RESULT_JSON"),
        required=True,
        help="internal: measure count_new_rows on DB, write the figures to RESULT_JSON",
    )
    parser.add_argument("--checks", type=int, default=CHECKS)
    args = parser.parse_args(argv)
    _child(Path(args.child[0]), Path(args.child[1]), args.checks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
