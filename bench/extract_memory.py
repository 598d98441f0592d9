"""Extraction streams: peak RSS and throughput of ``extract_snapshot`` on 336,776 and ~3.4 M flights,
from SQLite, from PostgreSQL and from daily Parquet objects in S3.

SQLite: the 336,776 real flights of 2013 (``python -m mlpipe demo seed --all`` in a
temporary MLPIPE_HOME),
and that table enlarged ten times inside SQLite (``INSERT ... SELECT``, so building it needs no
Python memory): copy k gets ids shifted by k x 336,776 and its ``year`` and ``time_hour`` moved k
whole years on (the 2013 schedule replayed in 2014..2022). Both files are cached in bench/out/
under a name that carries their row count.

PostgreSQL: a fresh database (dropped after) on the server at ``MLPIPE_BENCH_PG_URL`` (default the
local one), its ``flights`` table loaded from the cached SQLite base with COPY, extracted, then
enlarged ten times the same way inside PostgreSQL and extracted again.

S3: moto's server on loopback, in a process of its own (a real endpoint over HTTP), the demo's
layout of one Parquet object per UTC day (``date=YYYY-MM-DD/flights.parquet``, every column of the
flights table), uploaded by a child: one year (366 objects) extracted, then the nine replayed years
added (3,651 objects) and extracted again, with the S3 variant of the demo spec
(docs/examples/flights_delay_s3.yaml: its derive and columns).

Each extraction runs in a fresh child process, so the peak RSS reported, the child's own VmHWM
(its high-water mark after exec), is the extraction's alone: interpreter, pandas/pyarrow/SQLAlchemy/
boto3 and the chunks in flight. (wait4()'s ru_maxrss is kept beside it, but it also counts the
parent's image the child was forked with, which the S3 runs' in-process moto server inflates.)
Streaming means that peak does not grow with the source: the 3.4 M-row runs must stay under 1 GiB
and close to the 336,776-row runs of the same source.

``python -m bench extract --control`` also runs the 3.4 M SQLite rows with ``chunk_rows`` raised to
hold the whole table in one chunk: what a non-streaming extraction would cost, which the bounds must catch.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from bench import (
    REPO,
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
WEATHER_ROWS = 26_115  # mlpipe.demo.WEATHER_ROWS: their origins' hourly observations
WEATHER_MEASURES = ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib")
COPIES = 10
# After every row of every copy (the last copy ends 2023-01-01), so the whole table is extracted.
AS_OF = "2026-01-01T00:00:00+00:00"
PEAK_LIMIT_KIB = 1 << 20  # 1 GiB: the requirement of the issue
# Peak at 3.4 M rows over peak at 336,776 rows. Streaming measures ~1.0; reading the table in one
# piece measures > 5 (see docs/benchmarks.md), so 1.5 catches that with room for noise.
GROWTH_LIMIT = 1.5
# Bump when the way the enlarged table is built changes, so stale caches are not reused.
BUILD_VERSION = 2  # 2: with the weather table, shifted with the flights
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
            observed = conn.execute("SELECT count(*) FROM weather").fetchone()[0]
            has_index = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' "
                "AND name IN ('ix_flights_time_hour', 'ix_weather_origin_hour')"
            ).fetchone()[0]
    except sqlite3.Error:
        return False
    full = rows == copies * BASE_ROWS and max_id == copies * BASE_ROWS
    return full and observed == copies * WEATHER_ROWS and has_index == 2


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
    """``copies`` x the base tables (flights and weather), built inside SQLite with INSERT ... SELECT
    (no rows in Python): copy k is the base year shifted k years, ``epoch_hour`` with it."""
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
            weather = [row[1] for row in conn.execute("PRAGMA table_info(weather)")]
            shifted = {
                "id": "id + :k * :n",
                "year": "year + :k",
                "time_hour": "strftime('%Y-%m-%d %H:%M:%S', time_hour, '+' || :k || ' years')",
                "epoch_hour": "CAST(strftime('%s', time_hour, '+' || :k || ' years') AS INTEGER) / 3600",
            }
            select = ", ".join(shifted.get(c, c) for c in columns)
            conn.execute("BEGIN")
            conn.execute("DROP INDEX IF EXISTS ix_flights_time_hour")
            for k in range(1, copies):
                conn.execute(
                    f"INSERT INTO flights ({', '.join(columns)}) SELECT {select} FROM flights WHERE id <= :n",
                    {"k": k, "n": BASE_ROWS},
                )
                moved = ", ".join(shifted.get(c, c) for c in weather)
                conn.execute(
                    f"INSERT INTO weather ({', '.join(weather)}) SELECT {moved} FROM weather WHERE time_hour < '2014'",
                    {"k": k},
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


def _extract_in_child(kind: str, source: str, *, chunk_rows: int | None = None) -> dict[str, Any]:
    """One extraction of ``source`` (a SQLite file, a PostgreSQL URL or an S3 location) in a child process."""
    log = log_path()
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-extract-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench.extract_memory", "--child", kind, source, str(result_file)]
        if chunk_rows is not None:
            cmd += ["--chunk-rows", str(chunk_rows)]
        run = check_child(run_child(cmd, env=child_env(), log=log, timeout=1200), f"{kind} extraction", log)
        child = json.loads(result_file.read_text())
    # The peak is the child's own VmHWM. wait4()'s ru_maxrss also counts the memory the child was
    # forked with before exec (Linux folds the pre-exec image into it), i.e. this process's size:
    # several hundred MiB once the S3 layout or a test session's data is in memory here.
    return {
        "source": kind,
        **child,
        "process_seconds": run.seconds,
        "peak_rss_kib": child["peak_rss_kib"],
        "peak_rss_mib": mib(child["peak_rss_kib"]),
        "wait4_maxrss_mib": mib(run.max_rss_kib),
    }


def measure(copies: int, *, chunk_rows: int | None = None) -> dict[str, Any]:
    """Extract the ``copies`` x SQLite table in a child process; its rows, times and peak RSS."""
    db, built = source_db(copies)
    return {
        "table_rows": copies * BASE_ROWS,
        "db": db.name,
        "db_mib": mib(db.stat().st_size / 1024),
        "built": built,
        **_extract_in_child("sqlite", str(db), chunk_rows=chunk_rows),
    }


# -- PostgreSQL ----------------------------------------------------------------------------------

PG_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
# The demo's flights table as `python -m mlpipe demo seed` makes it (time_hour as UTC text).
PG_TABLE = """CREATE TABLE flights (
    id integer PRIMARY KEY, year integer, month integer, day integer, dep_time double precision,
    sched_dep_time integer, dep_delay double precision, arr_time double precision, sched_arr_time integer,
    arr_delay double precision, carrier text, flight integer, tailnum text, origin text, dest text,
    air_time double precision, distance integer, hour integer, minute integer, time_hour text, epoch_hour integer);
CREATE TABLE weather (
    origin text, time_hour text, epoch_hour integer, temp double precision, dewp double precision,
    humid double precision, wind_dir double precision, wind_speed double precision, wind_gust double precision,
    precip double precision, pressure double precision, visib double precision)"""


@contextmanager
def _pg_database() -> Iterator[str]:
    """A fresh database on the PostgreSQL server (``MLPIPE_BENCH_PG_URL``), dropped after."""
    import sqlalchemy as sa

    admin_url = os.environ.get("MLPIPE_BENCH_PG_URL", PG_ADMIN_URL)
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"mlpipe_bench_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _pg_load_base(url: str) -> dict[str, Any]:
    """The 336,776 flights of the cached SQLite base, copied in with COPY in 50,000-row batches."""
    import csv
    import io

    import sqlalchemy as sa

    started = time.perf_counter()
    base, _ = source_db(1)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in PG_TABLE.split(";"):
                conn.execute(sa.text(statement))
        raw = engine.raw_connection()
        try:
            with closing(sqlite3.connect(f"file:{base}?mode=ro", uri=True)) as lite:
                for table, order in (("flights", "id"), ("weather", "time_hour, origin")):
                    columns = [row[1] for row in lite.execute(f"PRAGMA table_info({table})")]
                    rows = lite.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")
                    with raw.cursor() as cur:
                        while batch := rows.fetchmany(50_000):
                            buf = io.StringIO()
                            csv.writer(buf).writerows(batch)  # None is an empty unquoted field: NULL to COPY
                            buf.seek(0)
                            cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", buf)
            raw.commit()
        finally:
            raw.close()
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE flights"))
    finally:
        engine.dispose()
    return {"seconds": round(time.perf_counter() - started, 3)}


def _pg_enlarge(url: str, copies: int) -> dict[str, Any]:
    """The same ten-fold replay as SQLite's, inside PostgreSQL: copy k shifted k years (one INSERT ... SELECT)."""
    import sqlalchemy as sa

    started = time.perf_counter()
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            columns = [
                r[0]
                for r in conn.execute(
                    sa.text(
                        "SELECT column_name FROM information_schema.columns WHERE table_name = 'flights' "
                        "ORDER BY ordinal_position"
                    )
                )
            ]
            later = "(time_hour::timestamp + make_interval(years => k))"
            shifted = {
                "id": "id + k * :n",
                "year": "year + k",
                "time_hour": f"to_char({later}, 'YYYY-MM-DD HH24:MI:SS')",
                "epoch_hour": f"CAST(extract(epoch FROM {later}) AS bigint) / 3600",
            }
            select = ", ".join(shifted.get(c, c) for c in columns)
            conn.execute(
                sa.text(
                    f"INSERT INTO flights ({', '.join(columns)}) SELECT {select} "
                    "FROM flights CROSS JOIN generate_series(1, :last) AS k WHERE id <= :n"
                ),
                {"n": BASE_ROWS, "last": copies - 1},
            )
            weather = ["origin", "time_hour", "epoch_hour", *WEATHER_MEASURES]
            moved = ", ".join(shifted.get(c, c) for c in weather)
            conn.execute(
                sa.text(
                    f"INSERT INTO weather ({', '.join(weather)}) SELECT {moved} "
                    "FROM weather CROSS JOIN generate_series(1, :last) AS k"
                ),
                {"last": copies - 1},
            )
            conn.execute(sa.text("CREATE UNIQUE INDEX ix_weather_origin_hour ON weather (origin, epoch_hour)"))
            conn.execute(sa.text("ANALYZE flights"))
            conn.execute(sa.text("ANALYZE weather"))
            rows = conn.execute(sa.text("SELECT count(*) FROM flights")).scalar_one()
    finally:
        engine.dispose()
    if rows != copies * BASE_ROWS:
        raise RuntimeError(f"enlarging the PostgreSQL table went wrong: {rows} rows")
    return {"seconds": round(time.perf_counter() - started, 3)}


def measure_postgresql(copies: int = COPIES) -> dict[str, dict[str, Any]]:
    """The base table and the ``copies`` x table, each extracted from a fresh PostgreSQL database."""
    with _pg_database() as url:
        loaded = _pg_load_base(url)
        small = {"table_rows": BASE_ROWS, "built": {"copy": loaded}, **_extract_in_child("postgresql", url)}
        enlarged = _pg_enlarge(url, copies)
        large = {
            "table_rows": copies * BASE_ROWS,
            "built": {"enlarge": enlarged},
            **_extract_in_child("postgresql", url),
        }
    return {"336k": small, "3.4M": large}


# -- S3 ------------------------------------------------------------------------------------------

S3_SPEC = REPO / "docs" / "examples" / "flights_delay_s3.yaml"
S3_BUCKET = "mlpipe-bench"
S3_PREFIX = "sources/flights/"


def _s3_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=16),
    )


def _shift_years(frame: Any, k: int) -> Any:
    """Copy k of the base year: ids after the earlier copies', ``year`` and ``time_hour`` k years on."""
    years = (frame["time_hour"].str[:4].astype(int) + k).astype(str)
    return frame.assign(
        id=frame["id"] + k * BASE_ROWS, year=frame["year"] + k, time_hour=years + frame["time_hour"].str[4:]
    )


def _s3_put_years(client: Any, frame: Any, copies: range) -> dict[str, Any]:
    """The demo layout for copies ``copies`` of the base year: one Parquet object per UTC day.

    The late flights of 31 December (New York) fall on 1 January UTC of the next year: in the object
    of that day, which copy k + 1's first day completes (its object is written again with both).
    """
    import io
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd

    started = time.perf_counter()
    overflow = frame[frame["time_hour"] >= "2014-01-01"]
    objects: dict[str, Any] = {}
    for k in copies:
        shifted = _shift_years(frame, k)
        parts = {day: part for day, part in shifted.groupby(shifted["time_hour"].str[:10])}
        if k > 0:
            first = f"{2013 + k}-01-01"
            parts[first] = pd.concat([_shift_years(overflow, k - 1), parts[first]], ignore_index=True)
        if k < copies[-1]:
            parts.pop(f"{2014 + k}-01-01")  # the next copy's first day writes it whole
        objects.update(parts)

    def put(day: str) -> int:
        out = io.BytesIO()
        objects[day].to_parquet(out, index=False)
        client.put_object(Bucket=S3_BUCKET, Key=f"{S3_PREFIX}date={day}/flights.parquet", Body=out.getvalue())
        return out.tell()

    with ThreadPoolExecutor(max_workers=4) as pool:
        sizes = list(pool.map(put, sorted(objects)))
    return {"objects": len(sizes), "mib": mib(sum(sizes) / 1024), "seconds": round(time.perf_counter() - started, 3)}


@contextmanager
def _moto_server() -> Iterator[str]:
    """moto's S3 server in a process of its own, on a free loopback port; stopped on exit.

    Neither the server nor the objects live in this process: the children measured here are forked
    from it, and this process stays as small as it was.
    """
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-moto-") as tmp, open(log_path(), "ab") as log:
        port_file = Path(tmp) / "port"
        cmd = [sys.executable, "-m", "bench.extract_memory", "--moto-server", str(port_file)]
        proc = subprocess.Popen(cmd, env=child_env(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while not port_file.exists():
                if proc.poll() is not None:
                    raise RuntimeError(f"moto's server exited with {proc.returncode} (log: {log_path()})")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"moto's server did not start within 60 s (log: {log_path()})")
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port_file.read_text()}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _serve_moto(port_file: Path) -> None:
    """The server process: moto on a free port, written to ``port_file``, until SIGTERM."""
    import logging
    import signal
    import threading

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    tmp = port_file.with_name("port.tmp")
    tmp.write_text(str(server.get_host_and_port()[1]))
    os.replace(tmp, port_file)
    stop.wait()
    server.stop()


def _put_in_child(endpoint: str, copies: range) -> dict[str, Any]:
    """Upload copies ``copies`` of the year in a child process (the frames never enter this one)."""
    log = log_path()
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-put-") as tmp:
        result = Path(tmp) / "put.json"
        cmd = [
            sys.executable,
            "-m",
            "bench.extract_memory",
            "--put-s3",
            endpoint,
            str(copies.start),
            str(copies.stop),
            str(result),
        ]
        check_child(run_child(cmd, env=child_env(), log=log, timeout=1200), "uploading the S3 layout", log)
        return json.loads(result.read_text())


def _put_s3(endpoint: str, copies: range, result: Path) -> None:
    import pandas as pd

    base, _ = source_db(1)
    with closing(sqlite3.connect(f"file:{base}?mode=ro", uri=True)) as lite:
        frame = pd.read_sql("SELECT * FROM flights ORDER BY id", lite)
        weather = pd.read_sql("SELECT * FROM weather", lite)
    from mlpipe.demo import join_weather

    # The demo's S3 objects carry the weather joined (demo.seed_flights_s3); a copy keeps its base year's.
    frame = join_weather(frame, weather)
    result.write_text(json.dumps(_s3_put_years(_s3_client(endpoint), frame, copies)))


def measure_s3(copies: int = COPIES) -> dict[str, dict[str, Any]]:
    """One year of daily objects, then ``copies`` years, each extracted from moto's server over HTTP."""
    source_db(1)  # the base the uploads read, built first if missing
    with _moto_server() as endpoint:
        _s3_client(endpoint).create_bucket(Bucket=S3_BUCKET)
        location = json.dumps({"endpoint": endpoint, "bucket": S3_BUCKET, "prefix": S3_PREFIX})
        put_first = _put_in_child(endpoint, range(1))
        small = {"table_rows": BASE_ROWS, "built": {"put": put_first}, **_extract_in_child("s3", location)}
        put_rest = _put_in_child(endpoint, range(1, copies))
        large = {"table_rows": copies * BASE_ROWS, "built": {"put": put_rest}, **_extract_in_child("s3", location)}
    return {"336k": small, "3.4M": large}


# -- the benchmark -------------------------------------------------------------------------------


def _requirements(label: str, runs: dict[str, dict[str, Any]]) -> tuple[float, list[dict[str, Any]]]:
    small, large = runs["336k"], runs["3.4M"]
    growth = round(large["peak_rss_kib"] / small["peak_rss_kib"], 2)
    return growth, [
        requirement(
            f"{label}: peak RSS extracting {large['rows']:,} rows", large["peak_rss_mib"], mib(PEAK_LIMIT_KIB), " MiB"
        ),
        requirement(f"{label}: rows extracted == {COPIES} x {BASE_ROWS:,}", abs(large["rows"] - COPIES * BASE_ROWS), 1),
        requirement(f"{label}: peak RSS at 3.4 M rows / peak at 336,776 rows", growth, GROWTH_LIMIT, "x"),
    ]


def run(*, control: bool = False) -> dict[str, Any]:
    log_path().write_text("")
    sources = {
        "sqlite": {"336k": measure(1), "3.4M": measure(COPIES)},
        "postgresql": measure_postgresql(),
        "s3": measure_s3(),
    }
    runs = {f"{kind} {size}": r for kind, sized in sources.items() for size, r in sized.items()}
    if control:
        runs["sqlite 3.4M-unstreamed"] = measure(COPIES, chunk_rows=UNSTREAMED_CHUNK_ROWS)
    growth, requirements = {}, []
    for kind, sized in sources.items():
        growth[kind], reqs = _requirements(kind, sized)
        requirements += reqs
    return {"spec": PIPELINE, "as_of": AS_OF, "runs": runs, "peak_growth": growth, "requirements": requirements}


def table(result: dict[str, Any]) -> str:
    rows = []
    for label, r in result["runs"].items():
        rows.append(
            (
                label,
                f"{r['rows']:,}",
                r.get("objects", ""),
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
        "source",
        "rows",
        "objects",
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


def _child(kind: str, source: str, result_file: Path, chunk_rows: int | None) -> None:
    from datetime import datetime

    # What the extraction needs anyway; imported first so "RSS after imports" is the fixed cost.
    import pandas  # noqa: F401
    import pyarrow.parquet as pq
    import sqlalchemy as sa

    from mlpipe import config
    from mlpipe.spec import find_spec, load_spec
    from mlpipe.stages.extract import extract_snapshot
    from mlpipe.storage import LocalStore

    if kind == "s3":
        location = json.loads(source)
        loaded = load_spec(S3_SPEC, REPO / "include")
        update = {"bucket": location["bucket"], "prefix": location["prefix"], "connection_id": "bench"}
        reader: Any = _s3_client(location["endpoint"])
    else:
        loaded = find_spec(PIPELINE)
        update = {}
        reader = sa.create_engine(source if kind == "postgresql" else f"sqlite:///{source}")
    if chunk_rows is not None:
        update["chunk_rows"] = chunk_rows
    if update:
        spec_source = loaded.spec.source.model_copy(update=update)
        loaded = loaded.model_copy(update={"spec": loaded.spec.model_copy(update={"source": spec_source})})
    baseline = self_rss_kib()
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-home-") as tmp:
        os.environ["MLPIPE_HOME"] = tmp
        store = LocalStore(config.default_store_root())
        started = time.perf_counter()
        snap = extract_snapshot(loaded, reader, store, run_key="bench", as_of=datetime.fromisoformat(AS_OF))
        seconds = time.perf_counter() - started
        if kind != "s3":
            reader.dispose()
        path = store.path(snap.key)
        meta = pq.read_metadata(path)
        manifest = json.loads(path.with_name("snapshot.json").read_text())
        out = {
            "rows": snap.rows,
            "objects": len(manifest["source"]["objects"]) if "source" in manifest else None,
            "chunk_rows": loaded.spec.source.chunk_rows,
            "row_groups": meta.num_row_groups,
            "extract_seconds": round(seconds, 3),
            "stage_seconds": snap.seconds,
            "rows_per_second": round(snap.rows / seconds) if seconds else None,
            "snapshot_mib": mib(path.stat().st_size / 1024),
            "baseline_rss_mib": mib(baseline),
            "peak_rss_kib": self_peak_rss_kib(),
        }
    result_file.write_text(json.dumps(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.extract_memory", description="internal: the benchmark's children"
    )
    jobs = parser.add_mutually_exclusive_group(required=True)
    jobs.add_argument(
        "--child",
        nargs=3,
        metavar=("KIND", "SOURCE", "RESULT_JSON"),
        help="run one extraction (KIND sqlite|postgresql|s3) of SOURCE and write its figures to RESULT_JSON",
    )
    jobs.add_argument("--moto-server", metavar="PORT_FILE", help="serve moto's S3 on a free port until SIGTERM")
    jobs.add_argument(
        "--put-s3", nargs=4, metavar=("ENDPOINT", "FIRST", "STOP", "RESULT_JSON"), help="upload copies FIRST..STOP-1"
    )
    parser.add_argument("--chunk-rows", type=int)
    args = parser.parse_args(argv)
    if args.moto_server:
        _serve_moto(Path(args.moto_server))
    elif args.put_s3:
        endpoint, first, stop, result = args.put_s3
        _put_s3(endpoint, range(int(first), int(stop)), Path(result))
    else:
        kind, source, result = args.child
        _child(kind, source, Path(result), args.chunk_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
