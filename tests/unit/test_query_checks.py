"""The SQL a spec points at: ``:as_of`` outside comments, ``source.as_of: none``, and the first chunk's columns."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from mlpipe.errors import SpecError
from mlpipe.spec import load_spec
from mlpipe.sqltext import bind_names, executable, strip_comments
from mlpipe.stages.extract import extract_snapshot, read_snapshot, snapshot_key

LATE = datetime(2014, 1, 1, tzinfo=UTC)
COMMENTED = """-- this query honours :as_of (the run's logical date)
/* and :as_of again, in a block comment */
SELECT id, ts, cat, num, y, '-- kept' AS note FROM flights
WHERE ts < :as_of  -- rows the run may see
ORDER BY ts, id
"""


@pytest.fixture
def source(tmp_path: Path) -> sa.Engine:
    db = tmp_path / "source.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE flights (id INTEGER, ts TEXT, cat TEXT, num REAL, y INTEGER)")
        conn.executemany(
            "INSERT INTO flights VALUES (?, ?, ?, ?, ?)",
            [(i, f"2013-01-{1 + i // 24:02d} {i % 24:02d}:00:00", "abc"[i % 3], i / 2, i % 2) for i in range(48)],
        )
    conn.close()
    engine = sa.create_engine(f"sqlite:///{db}")
    yield engine
    engine.dispose()


def test_binds_are_what_the_database_sees() -> None:
    assert bind_names(COMMENTED) == ["as_of"]
    assert "honours" not in strip_comments(COMMENTED) and "'-- kept'" in strip_comments(COMMENTED)
    assert bind_names("SELECT x::text FROM t WHERE a = :a AND b = :b AND c = :a") == ["a", "b"]
    text, params = executable("SELECT 1 -- :as_of\n", {"as_of": "2013-01-01", "other": 1})
    assert (text, params) == ("SELECT 1", {})


def test_a_comment_with_as_of_does_not_break_extraction(include_tree, make_spec, source, store) -> None:
    """The issue's 'Incorrect number of bindings supplied ... uses 1, and there are 2 supplied'."""
    loaded = load_spec(include_tree(make_spec(), sql=COMMENTED))

    snap = extract_snapshot(loaded, source, store, run_key="r1", as_of=datetime(2013, 1, 2, tzinfo=UTC))

    assert snap.rows == 24 and snap.columns == ["id", "ts", "cat", "num", "y", "note"]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "-- honours :as_of\nSELECT id, ts, cat, num, y FROM flights\n",
            "has no :as_of bind parameter outside comments (the database ignores the one in a comment)",
        ),
        ("SELECT id, ts, cat, num, y FROM flights\n", "has no :as_of bind parameter; bound to the run's logical date"),
    ],
)
def test_a_query_without_as_of_is_a_spec_error(include_tree, make_spec, sql: str, expected: str) -> None:
    path = include_tree(make_spec(), sql=sql)

    with pytest.raises(SpecError) as info:
        load_spec(path)

    message = str(info.value)
    assert str(path) in message and f"source.query: tiny.sql {expected}" in message
    assert "set source.as_of: none for a table without a time column" in message


def test_as_of_none_reads_the_whole_table(include_tree, make_spec, source, store) -> None:
    spec = make_spec(source={"query": "tiny.sql", "chunk_rows": 1000, "as_of": "none"})
    loaded = load_spec(include_tree(spec, sql="SELECT id, ts, cat, num, y FROM flights ORDER BY id\n"))

    snap = extract_snapshot(loaded, source, store, run_key="r1", as_of=datetime(2013, 1, 2, tzinfo=UTC))

    assert snap.rows == 48, "no time bound: every row, whatever the run's as_of"


def test_binds_the_spec_does_not_provide_are_spec_errors(include_tree, make_spec) -> None:
    spec = make_spec(source={"query": "tiny.sql", "params": {"region": "north"}})
    sql = "SELECT id, ts, cat, num, y FROM flights WHERE ts < :as_of AND carrier = :carrier\n"

    with pytest.raises(SpecError) as info:
        load_spec(include_tree(spec, sql=sql))

    assert info.value.problems == [
        "source.query: tiny.sql binds :carrier, which neither source.params nor mlpipe (:as_of) provides",
        "source.params.region: tiny.sql has no :region (outside comments)",
    ]


class TestFirstChunkColumns:
    def test_a_missing_feature_fails_at_the_first_chunk(self, include_tree, make_spec, source, store) -> None:
        spec = make_spec(features={"numeric": ["num", "weight"], "categorical": ["cat"]})
        path = include_tree(spec, sql="SELECT id, ts, cat, num, y FROM flights WHERE ts < :as_of\n")
        loaded = load_spec(path)

        with pytest.raises(SpecError) as info:
            extract_snapshot(loaded, source, store, run_key="r1", as_of=LATE)

        assert info.value.path == str(path)
        assert info.value.problems == [
            f"features.numeric[1]: column 'weight' is not in the result of {loaded.query_path}; "
            "it has: id, ts, cat, num, y"
        ]
        assert not store.exists(snapshot_key("tiny", "r1"))

    def test_a_text_column_as_numeric_feature_is_named(self, include_tree, make_spec, source, store) -> None:
        spec = make_spec(features={"numeric": ["num", "cat"]}, split={"method": "random"})
        loaded = load_spec(include_tree(spec, sql="SELECT id, cat, num, y FROM flights WHERE ts < :as_of\n"))

        with pytest.raises(SpecError) as info:
            extract_snapshot(loaded, source, store, run_key="r1", as_of=LATE)

        assert info.value.problems == [
            f"features.numeric[1]: column 'cat' is text in the result of {loaded.query_path}; "
            "it needs numbers: cast it in the query, or list it under features.categorical"
        ]

    def test_a_good_query_extracts(self, include_tree, make_spec, source, store) -> None:
        loaded = load_spec(include_tree(make_spec(), sql="SELECT id, ts, cat, num, y FROM flights WHERE ts < :as_of\n"))

        snap = extract_snapshot(loaded, source, store, run_key="r1", as_of=LATE)

        assert read_snapshot(store, snap.key)["id"].tolist() == list(range(48))
