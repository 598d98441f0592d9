"""OpenLineage dataset names of SQL sources: one name per database, however mlpipe opened it."""

from __future__ import annotations

from pathlib import Path

from mlpipe.hooks.sql import checked_sqlite_url
from mlpipe.operators.lineage import sql_dataset_name


def test_a_sqlite_source_opened_read_only_keeps_its_file_name(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "my source.db"
    sqlite3.connect(db).close()
    plain = sql_dataset_name(f"sqlite:///{db}", "flights")
    read_only = sql_dataset_name(checked_sqlite_url(f"sqlite:///{db}", read_only=True), "flights")
    assert plain == read_only == (f"sqlite://{db.resolve()}", "flights")


def test_postgres_and_mysql_follow_the_openlineage_naming() -> None:
    assert sql_dataset_name("postgresql+psycopg2://u:p@db.example:5433/flights", "public.flights") == (
        "postgres://db.example:5433",
        "flights.public.flights",
    )
    assert sql_dataset_name("mysql+mysqldb://u:p@db.example:3306/test", "flights") == (
        "mysql://db.example:3306",
        "test.flights",
    )
