"""Tests of mlpipe.stages.extract against a tiny SQLite source, a PostgreSQL table and a MariaDB table."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from mlpipe.errors import ExtractError
from mlpipe.spec import LoadedSpec, load_spec
from mlpipe.stages.extract import extract_snapshot, read_snapshot, snapshot_key
from mlpipe.storage import LocalStore

ROWS = 2500
# Rows before this id have NULL in num, cat and other: the whole first chunk of 1000 rows and more.
NULL_BEFORE = 1200
START = datetime(2013, 1, 1)
SQL = "SELECT id, ts, cat, num, other, y FROM flights WHERE ts < :as_of ORDER BY ts, id\n"
LATE = datetime(2014, 1, 1, tzinfo=UTC)


def source_rows() -> list[tuple]:
    rows = []
    for i in range(ROWS):
        ts = (START + timedelta(hours=i)).strftime("%Y-%m-%d %H:%M:%S")
        known = i >= NULL_BEFORE
        rows.append((i, ts, f"c{i % 3}" if known else None, i * 0.5 if known else None, i if known else None, i % 2))
    return rows


def as_of_after(rows: int) -> datetime:
    """The as_of that lets exactly the first ``rows`` rows through (ts < as_of)."""
    return (START + timedelta(hours=rows)).replace(tzinfo=UTC)


@pytest.fixture
def loaded(include_tree, make_spec) -> LoadedSpec:
    return load_spec(include_tree(make_spec(), sql=SQL))


@pytest.fixture
def sqlite_source(tmp_path: Path) -> Iterator[sa.Engine]:
    db = tmp_path / "source.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE flights (id INTEGER, ts TEXT, cat TEXT, num REAL, other INTEGER, y INTEGER)")
        conn.executemany("INSERT INTO flights VALUES (?, ?, ?, ?, ?, ?)", source_rows())
    conn.close()
    engine = sa.create_engine(f"sqlite:///{db}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def postgresql_source(pg_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE flights (id integer, ts timestamp, cat text, num double precision, other integer, "
                "y integer)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO flights VALUES (:id, :ts, :cat, :num, :other, :y)"),
            [dict(zip(["id", "ts", "cat", "num", "other", "y"], row, strict=True)) for row in source_rows()],
        )
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def mysql_source(mysql_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(mysql_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("CREATE TABLE flights (id integer, ts datetime, cat text, num double, other integer, y integer)")
        )
        conn.execute(
            sa.text("INSERT INTO flights VALUES (:id, :ts, :cat, :num, :other, :y)"),
            [dict(zip(["id", "ts", "cat", "num", "other", "y"], row, strict=True)) for row in source_rows()],
        )
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def source(request: pytest.FixtureRequest) -> sa.Engine:
    return request.getfixturevalue(f"{request.param}_source")


class TestExtractSnapshot:
    def test_streams_all_rows_in_row_groups(self, loaded: LoadedSpec, source: sa.Engine, store: LocalStore) -> None:
        snap = extract_snapshot(loaded, source, store, run_key="r1", as_of=LATE)

        assert snap.rows == ROWS
        assert snap.reused is False
        assert snap.columns == ["id", "ts", "cat", "num", "other", "y"]
        assert snap.key == snapshot_key("tiny", "r1") == "tiny/runs/r1/extract/snapshot.parquet"
        assert snap.sha256 == store.sha256(snap.key)
        meta = pq.read_metadata(store.path(snap.key))
        assert meta.num_rows == ROWS
        assert meta.num_row_groups == 3  # chunk_rows 1000: 1000 + 1000 + 500
        frame = read_snapshot(store, snap.key, snap.sha256)
        assert frame["id"].tolist() == list(range(ROWS))
        assert store.list("tiny/runs/r1") == [
            "tiny/runs/r1/extract/snapshot.json",
            "tiny/runs/r1/extract/snapshot.parquet",
        ]

    def test_null_first_chunk_keeps_the_real_types(
        self, loaded: LoadedSpec, source: sa.Engine, store: LocalStore
    ) -> None:
        snap = extract_snapshot(loaded, source, store, run_key="r1", as_of=LATE)

        schema = pq.read_schema(store.path(snap.key))
        assert schema.field("num").type == pa.float64()  # a numeric feature
        assert schema.field("cat").type == pa.string()  # a categorical feature
        # Not in the spec: typed by the values that come later, as if there had been one chunk.
        assert pa.types.is_integer(schema.field("other").type) or pa.types.is_floating(schema.field("other").type)
        frame = read_snapshot(store, snap.key)
        later = frame[frame["id"] >= NULL_BEFORE]
        assert frame.loc[frame["id"] < NULL_BEFORE, ["cat", "num", "other"]].isna().all().all()
        assert later["num"].tolist() == [i * 0.5 for i in range(NULL_BEFORE, ROWS)]
        assert later["other"].tolist() == list(range(NULL_BEFORE, ROWS))
        assert later["cat"].tolist() == [f"c{i % 3}" for i in range(NULL_BEFORE, ROWS)]

    def test_same_schema_whatever_the_chunk_size(
        self, include_tree, make_spec, source: sa.Engine, tmp_path: Path
    ) -> None:
        schemas = []
        for chunk_rows in (1000, 5000):
            spec = make_spec(source={"query": "tiny.sql", "chunk_rows": chunk_rows})
            loaded = load_spec(include_tree(spec, sql=SQL))
            store = LocalStore(tmp_path / f"store-{chunk_rows}")
            snap = extract_snapshot(loaded, source, store, run_key="r1", as_of=LATE)
            schemas.append(pq.read_schema(store.path(snap.key)).remove_metadata())
        assert schemas[0] == schemas[1]

    def test_as_of_filters_and_a_rerun_reuses_the_first_snapshot(
        self, loaded: LoadedSpec, source: sa.Engine, store: LocalStore
    ) -> None:
        first = extract_snapshot(loaded, source, store, run_key="r1", as_of=as_of_after(1500))
        assert first.rows == 1500
        assert first.as_of == "2013-03-04T12:00:00"
        assert read_snapshot(store, first.key)["id"].max() == 1499

        again = extract_snapshot(loaded, source, store, run_key="r1", as_of=LATE)

        assert again.reused is True
        assert again.sha256 == first.sha256
        assert again.rows == 1500
        assert again.columns == first.columns
        assert again.as_of == first.as_of  # the data's as_of, not the one this attempt was given
        other = extract_snapshot(loaded, source, store, run_key="r2", as_of=LATE)
        assert (other.rows, other.reused) == (ROWS, False)

    def test_as_of_in_another_zone_is_compared_in_utc(
        self, loaded: LoadedSpec, source: sa.Engine, store: LocalStore
    ) -> None:
        tz = timezone(timedelta(hours=-5))
        as_of = as_of_after(10).astimezone(tz)

        snap = extract_snapshot(loaded, source, store, run_key="r1", as_of=as_of)

        assert snap.rows == 10
        assert snap.as_of == "2013-01-01T10:00:00"

    def test_empty_result_is_an_empty_snapshot_with_the_columns(
        self, loaded: LoadedSpec, source: sa.Engine, store: LocalStore
    ) -> None:
        snap = extract_snapshot(loaded, source, store, run_key="r1", as_of=datetime(2000, 1, 1, tzinfo=UTC))

        assert snap.rows == 0
        assert snap.columns == ["id", "ts", "cat", "num", "other", "y"]
        frame = read_snapshot(store, snap.key, snap.sha256)
        assert frame.empty
        assert list(frame.columns) == snap.columns

    def test_bad_query_names_the_query_file(self, include_tree, make_spec, source: sa.Engine, store) -> None:
        loaded = load_spec(include_tree(make_spec(), sql="SELECT nope FROM no_such_table WHERE 1 = :as_of\n"))

        with pytest.raises(ExtractError) as info:
            extract_snapshot(loaded, source, store, run_key="r1", as_of=LATE)

        message = str(info.value)
        assert str(loaded.query_path) in message
        assert "no_such_table" in message
        assert "password" not in message.lower()
        assert store.list("tiny") == []

    def test_type_change_between_chunks_is_an_extract_error(
        self, include_tree, make_spec, tmp_path: Path, store: LocalStore
    ) -> None:
        db = tmp_path / "mixed.db"
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE t (id INTEGER, ts TEXT, code)")
            rows = [(i, "2013-01-01 00:00:00", i if i < 1000 else f"x{i}") for i in range(1500)]
            conn.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
        conn.close()
        # The spec's columns are there (the first chunk's check passes); 'code' changes type at row 1000.
        sql = "SELECT id, ts, 'a' AS cat, 1.0 AS num, 1 AS y, code FROM t WHERE ts < :as_of ORDER BY id\n"
        loaded = load_spec(include_tree(make_spec(), sql=sql))
        engine = sa.create_engine(f"sqlite:///{db}")

        with pytest.raises(ExtractError, match="column 'code' changes type near row 1000"):
            extract_snapshot(loaded, engine, store, run_key="r1", as_of=LATE)
        engine.dispose()
        assert not store.exists(snapshot_key("tiny", "r1"))


def test_postgresql_streams_through_a_server_side_cursor(
    loaded: LoadedSpec, postgresql_source: sa.Engine, store: LocalStore
) -> None:
    cursors: list[str | None] = []

    @sa.event.listens_for(postgresql_source, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if "FROM flights" in statement:
            cursors.append(getattr(cursor, "name", None))

    try:
        snap = extract_snapshot(loaded, postgresql_source, store, run_key="pg", as_of=LATE)
    finally:
        sa.event.remove(postgresql_source, "before_cursor_execute", record)

    assert snap.rows == ROWS
    assert len(cursors) == 1 and cursors[0]  # a named (server-side) cursor, fetched in chunks
    assert pq.read_metadata(store.path(snap.key)).num_row_groups == 3
    ts = pq.read_schema(store.path(snap.key)).field("ts").type
    assert pa.types.is_timestamp(ts)


def test_mysql_streams_through_a_server_side_cursor(
    loaded: LoadedSpec, mysql_source: sa.Engine, store: LocalStore
) -> None:
    from MySQLdb.cursors import SSCursor

    cursors: list[type] = []

    @sa.event.listens_for(mysql_source, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if "FROM flights" in statement:
            cursors.append(type(cursor))

    try:
        snap = extract_snapshot(loaded, mysql_source, store, run_key="my", as_of=LATE)
    finally:
        sa.event.remove(mysql_source, "before_cursor_execute", record)

    assert snap.rows == ROWS
    assert len(cursors) == 1 and issubclass(cursors[0], SSCursor)  # unbuffered: rows fetched in chunks
    assert pq.read_metadata(store.path(snap.key)).num_row_groups == 3
    assert pa.types.is_timestamp(pq.read_schema(store.path(snap.key)).field("ts").type)
