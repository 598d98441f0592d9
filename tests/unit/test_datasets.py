"""Tests of mlpipe.datasets: the diabetes, wine and breast_cancer tables `demo seed` adds beside the flights."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest

from mlpipe.cli import main
from mlpipe.datasets import dataset_frame, seed_datasets
from mlpipe.spec import find_spec


def test_seeds_both_tables_once_and_keeps_them(tmp_path: Path) -> None:
    db = tmp_path / "source.db"
    assert seed_datasets(db) == [("diabetes", 442, True), ("wine", 178, True), ("breast_cancer", 569, True)]
    with closing(sqlite3.connect(db)) as conn:
        wine = pd.read_sql("SELECT * FROM wine ORDER BY id", conn)
    assert wine["id"].tolist() == list(range(1, 179)) and wine["id"].is_unique
    assert wine["cultivar"].value_counts().to_dict() == {"class_1": 71, "class_0": 59, "class_2": 48}
    assert wine["recorded_at"].iloc[0] == "2013-01-01 00:00:00" and wine["recorded_at"].is_monotonic_increasing

    assert seed_datasets(db) == [("diabetes", 442, False), ("wine", 178, False), ("breast_cancer", 569, False)]
    cancer = dataset_frame("breast_cancer")
    assert cancer["diagnosis"].value_counts().to_dict() == {"benign": 357, "malignant": 212}
    assert "mean_radius" in cancer.columns and not [c for c in cancer.columns if " " in c]


def test_a_truncated_table_is_written_again(tmp_path: Path) -> None:
    db = tmp_path / "source.db"
    seed_datasets(db)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DELETE FROM diabetes WHERE id > 10")
    assert seed_datasets(db)[0] == ("diabetes", 442, True)


@pytest.mark.parametrize("name", ["diabetes", "wine"])
def test_tables_carry_what_their_pipelines_read(name: str) -> None:
    spec = find_spec(name).spec
    frame = dataset_frame(name)
    assert {spec.score.key, spec.target.column, *spec.features.columns} <= set(frame.columns)
    assert frame[spec.features.columns].notna().all().all()


def test_demo_seed_adds_them_beside_the_flights(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MLPIPE_HOME", str(tmp_path))
    with closing(sqlite3.connect(tmp_path / "source.db")) as conn, conn:
        # A source made before the demo had its weather table: no weather, no epoch_hour to join on.
        conn.execute("CREATE TABLE flights (id INTEGER, time_hour TEXT)")
        conn.execute("INSERT INTO flights VALUES (1, '2013-01-01 05:00:00')")
    assert main(["demo", "seed"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("seeded: ") and "(table flights, 51,801 rows" in out, out  # seeded afresh, with weather
    assert (
        "\nseeded: table diabetes (442 rows)\nseeded: table wine (178 rows)\nseeded: table breast_cancer (569 rows)\n"
    ) in out
    with closing(sqlite3.connect(tmp_path / "source.db")) as conn:
        assert conn.execute("SELECT count(*) FROM weather").fetchone()[0] > 0

    assert main(["demo", "seed"]) == 0  # seeded already (flights and weather): kept as it is
    out = capsys.readouterr().out
    assert out.startswith("already seeded: ") and "(table flights, 51,801 rows" in out, out
    assert "already seeded: table wine (178 rows)" in out


def test_demo_seed_into_postgresql_adds_them_there(pg_url: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_SOURCE", pg_url.replace("postgresql+psycopg2", "postgresql"))
    assert main(["demo", "seed", "--target", "postgres", "--until", "2013-01-02"]) == 0
    assert "seeded: table wine (178 rows)" in capsys.readouterr().out  # (or "already seeded: ...")


def test_seeds_a_postgresql_source_too(pg_url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:  # the module's database: another test may have seeded it
            conn.execute(sa.text("DROP TABLE IF EXISTS diabetes, wine, breast_cancer"))
        assert seed_datasets(engine) == [("diabetes", 442, True), ("wine", 178, True), ("breast_cancer", 569, True)]
        assert seed_datasets(engine) == [("diabetes", 442, False), ("wine", 178, False), ("breast_cancer", 569, False)]
        with engine.connect() as conn:
            newest = conn.execute(
                sa.text("SELECT max(id), count(*) FROM diabetes WHERE recorded_at < :t"), {"t": "2014"}
            )
            assert tuple(newest.one()) == (365, 365), "recorded_at compares as ISO text, as_of binds as text"
    finally:
        engine.dispose()
