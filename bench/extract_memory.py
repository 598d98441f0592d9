"""Extraction streams: peak RSS and throughput of ``extract_snapshot`` on 336,776 and ~3.4 M flights.

The source is a SQLite ``flights`` table: the 336,776 real flights of 2013 (``python -m mlpipe demo
seed --all`` in a temporary MLPIPE_HOME), and that table enlarged ten times inside SQLite (``INSERT ...
SELECT``, so building it needs no Python memory): copy k gets ids shifted by k x 336,776 and its
``year`` and ``time_hour`` moved k whole years on (the 2013 schedule replayed in 2014..2022). Both
files are cached in bench/out/ under a name that carries their row count.

Each extraction runs the flights_delay spec (its SQL, its ``chunk_rows``) in a fresh child process,
so the peak RSS reported, taken with wait4() for that child, is the extraction's alone: interpreter,
pandas/pyarrow/SQLAlchemy and the chunks in flight. Streaming means that peak does not grow with the
table: the 3.4 M-row run must stay under 1 GiB and close to the 336,776-row run.

``python -m bench extract --control`` also runs the 3.4 M rows with ``chunk_rows`` raised to hold
the whole table in one chunk: what a non-streaming extraction would cost, which the bounds must catch.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import (
    check_child,
    child_env,
    markdown_table,
    mib,
    out_dir,
    requirement,
    requirements_table,
    run_child,
    self_peak_rss_kib,
    self_rss_kib,
)

NAME = "extract"
PIPELINE = "flights_delay"
BASE_ROWS = 336_776  # mlpipe.demo.FLIGHTS_ROWS: the real flights of 2013
COPIES = 10
# After every row of every copy (the last copy ends 2023-01-01), so the whole table is extracted.
AS_OF = "2026-01-01T00:00:00+00:00"
PEAK_LIMIT_KIB = 1 << 20  # 1 GiB: the requirement of the issue
# Peak at 3.4 M rows over peak at 336,776 rows. Streaming measures ~1.0; reading the table in one
# piece measures > 5 (see docs/benchmarks.md), so 1.5 catches that with room for noise.
GROWTH_LIMIT = 1.5
# Bump when the way the enlarged table is built changes, so stale caches are not reused.
BUILD_VERSION = 1
# The "control": one chunk for the whole table, beyond the spec's 500k cap (model_copy skips validation).
UNSTREAMED_CHUNK_ROWS = 5_000_000


def log_path() -> Path:
    return out_dir() / "extract.log"


def db_path(copies: int) -> Path:
    return out_dir() / f"flights-{copies * BASE_ROWS}rows-v{BUILD_VERSION}.db"


def _table_ok(path: Path, copies: int) -> bool:
    if not path.is_file():
        return False
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            rows, max_id = conn.execute("SELECT count(*), max(id) FROM flights").fetchone()
            has_index = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'ix_flights_time_hour'"
            ).fetchone()
    except sqlite3.Error:
        return False
    return rows == copies * BASE_ROWS and max_id == copies * BASE_ROWS and bool(has_index)


def _seed_base(dest: Path) -> dict[str, Any]:
    """The real 336,776 flights, seeded by the project's own command into a temporary MLPIPE_HOME."""
    # The temporary home sits beside the cache, so the finished file is renamed, not copied.
    with tempfile.TemporaryDirectory(prefix=".seed-", dir=out_dir()) as tmp:
        home = Path(tmp)
        log = log_path()
        run = run_child(
            [sys.executable, "-m", "mlpipe", "demo", "seed", "--all"],
            env=child_env(mlpipe_home=home),
            log=log,
            timeout=600,
        )
        check_child(run, "python -m mlpipe demo seed --all", log)
        os.replace(home / "source.db", dest)
    return {"seconds": run.seconds, "peak_rss_mib": mib(run.max_rss_kib)}


def _enlarge(base: Path, dest: Path, copies: int) -> dict[str, Any]:
    """``copies`` x the base table, built inside SQLite with INSERT ... SELECT (no rows in Python)."""
    import shutil

    started = time.perf_counter()
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.copyfile(base, tmp)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = OFF")
            conn.execute("PRAGMA synchronous = OFF")
            columns = [row[1] for row in conn.execute("PRAGMA table_info(flights)")]
            shifted = {
                "id": "id + :k * :n",
                "year": "year + :k",
                "time_hour": "strftime('%Y-%m-%d %H:%M:%S', time_hour, '+' || :k || ' years')",
            }
            select = ", ".join(shifted.get(c, c) for c in columns)
            conn.execute("BEGIN")
            conn.execute("DROP INDEX IF EXISTS ix_flights_time_hour")
            for k in range(1, copies):
                conn.execute(
                    f"INSERT INTO flights ({', '.join(columns)}) SELECT {select} FROM flights WHERE id <= :n",
                    {"k": k, "n": BASE_ROWS},
                )
            conn.execute("CREATE INDEX ix_flights_time_hour ON flights (time_hour)")
            conn.execute("COMMIT")
        finally:
            conn.close()
        if not _table_ok(tmp, copies):
            raise RuntimeError(f"building {dest.name} went wrong: unexpected row count or ids")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return {"seconds": round(time.perf_counter() - started, 3), "peak_rss_mib": None}


def source_db(copies: int) -> tuple[Path, dict[str, Any] | None]:
    """The cached ``copies`` x 336,776-row source, built first if missing; with build figures when built."""
    dest = db_path(copies)
    if _table_ok(dest, copies):
        return dest, None
    base = db_path(1)
    built: dict[str, Any] = {}
    if not _table_ok(base, 1):
        built["seed"] = _seed_base(base)
    if copies > 1:
        built["enlarge"] = _enlarge(base, dest, copies)
    return dest, built


def measure(copies: int, *, chunk_rows: int | None = None) -> dict[str, Any]:
    """Extract the ``copies`` x table in a child process; its rows, times and peak RSS."""
    db, built = source_db(copies)
    log = log_path()
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-extract-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench.extract_memory", "--child", str(db), str(result_file)]
        if chunk_rows is not None:
            cmd += ["--chunk-rows", str(chunk_rows)]
        run = check_child(run_child(cmd, env=child_env(), log=log, timeout=900), f"extraction of {db.name}", log)
        child = json.loads(result_file.read_text())
    return {
        "table_rows": copies * BASE_ROWS,
        "db": db.name,
        "db_mib": mib(db.stat().st_size / 1024),
        "built": built,
        **child,
        "process_seconds": run.seconds,
        "peak_rss_kib": run.max_rss_kib,
        "peak_rss_mib": mib(run.max_rss_kib),
    }


def run(*, control: bool = False) -> dict[str, Any]:
    log_path().write_text("")
    small = measure(1)
    large = measure(COPIES)
    growth = round(large["peak_rss_kib"] / small["peak_rss_kib"], 2)
    runs = {"336k": small, "3.4M": large}
    if control:
        runs["3.4M-unstreamed"] = measure(COPIES, chunk_rows=UNSTREAMED_CHUNK_ROWS)
    return {
        "spec": PIPELINE,
        "as_of": AS_OF,
        "runs": runs,
        "peak_growth": growth,
        "requirements": [
            requirement(
                f"peak RSS extracting {large['rows']:,} rows", large["peak_rss_mib"], mib(PEAK_LIMIT_KIB), " MiB"
            ),
            requirement(f"rows extracted == {COPIES} x {BASE_ROWS:,}", abs(large["rows"] - COPIES * BASE_ROWS), 1),
            requirement("peak RSS at 3.4 M rows / peak at 336,776 rows", growth, GROWTH_LIMIT, "x"),
        ],
    }


def table(result: dict[str, Any]) -> str:
    rows = []
    for label, r in result["runs"].items():
        rows.append(
            (
                label,
                f"{r['rows']:,}",
                f"{r['chunk_rows']:,}",
                r["row_groups"],
                r["extract_seconds"],
                f"{r['rows_per_second']:,.0f}",
                r["process_seconds"],
                r["baseline_rss_mib"],
                r["peak_rss_mib"],
                r["snapshot_mib"],
            )
        )
    head = (
        "table",
        "rows",
        "chunk_rows",
        "row groups",
        "extract s",
        "rows/s",
        "process s",
        "RSS after imports MiB",
        "peak RSS MiB",
        "snapshot MiB",
    )
    return markdown_table(head, rows) + "\n\n" + requirements_table(result["requirements"])


# -- the child: one extraction in a fresh interpreter ---------------------------------------------


def _child(db: Path, result_file: Path, chunk_rows: int | None) -> None:
    from datetime import datetime

    # What the extraction needs anyway; imported first so "RSS after imports" is the fixed cost.
    import pandas  # noqa: F401
    import pyarrow.parquet as pq
    import sqlalchemy as sa

    from mlpipe import config
    from mlpipe.spec import find_spec
    from mlpipe.stages.extract import extract_snapshot
    from mlpipe.storage import LocalStore

    baseline = self_rss_kib()
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-home-") as tmp:
        os.environ["MLPIPE_HOME"] = tmp
        (Path(tmp) / "source.db").symlink_to(db)
        loaded = find_spec(PIPELINE)
        if chunk_rows is not None:
            source = loaded.spec.source.model_copy(update={"chunk_rows": chunk_rows})
            loaded = loaded.model_copy(update={"spec": loaded.spec.model_copy(update={"source": source})})
        engine = sa.create_engine(config.default_source_url())
        store = LocalStore(config.default_store_root())
        started = time.perf_counter()
        snap = extract_snapshot(loaded, engine, store, run_key="bench", as_of=datetime.fromisoformat(AS_OF))
        seconds = time.perf_counter() - started
        engine.dispose()
        path = store.path(snap.key)
        meta = pq.read_metadata(path)
        out = {
            "rows": snap.rows,
            "chunk_rows": loaded.spec.source.chunk_rows,
            "row_groups": meta.num_row_groups,
            "extract_seconds": round(seconds, 3),
            "stage_seconds": snap.seconds,
            "rows_per_second": round(snap.rows / seconds) if seconds else None,
            "snapshot_mib": mib(path.stat().st_size / 1024),
            "baseline_rss_mib": mib(baseline),
            "child_vmhwm_mib": mib(self_peak_rss_kib()),
        }
    result_file.write_text(json.dumps(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.extract_memory")
    parser.add_argument(
        "--child",
        nargs=2,
        metavar=("DB", "RESULT_JSON"),
        required=True,
        help="internal: run one extraction of DB and write its figures to RESULT_JSON",
    )
    parser.add_argument("--chunk-rows", type=int)
    args = parser.parse_args(argv)
    _child(Path(args.child[0]), Path(args.child[1]), args.chunk_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
