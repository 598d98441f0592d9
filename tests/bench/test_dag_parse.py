"""DAG parsing stays cheap: Airflow's own per-file parse duration (``airflow dags report``) under 0.5 s.

tests/dags/test_dag_integrity.py checks that parsing imports no heavy module; this checks time, as
Airflow measures it, on the session's migrated metadata DB, plus the cold parse of each file in a
fresh interpreter (what the dag-processor's per-file child pays, first imports of mlpipe included).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIMIT_SECONDS = 0.5


def dag_files() -> list[str]:
    return sorted(p.name for p in (REPO / "dags").glob("*.py"))


@pytest.fixture(scope="module")
def report(airflow_db):
    from bench.dag_parse import dags_report

    return {Path(row["file"]).name: row for row in dags_report(os.environ.copy())}


def test_dags_report_lists_every_dag_file_with_its_dags(report) -> None:
    assert dag_files(), "no DAG files in dags/"
    for name in dag_files():
        assert name in report, f"{name} is missing from `airflow dags report`: {sorted(report)}"
        assert int(report[name]["dag_num"]) >= 1, report[name]


@pytest.mark.parametrize("name", dag_files())
def test_dags_report_duration_under_half_a_second(report, name) -> None:
    row = report[name]
    assert row["seconds"] < LIMIT_SECONDS, (
        f"`airflow dags report` parsed {name} in {row['duration']} (limit {LIMIT_SECONDS} s)"
    )


@pytest.mark.parametrize("name", dag_files())
def test_cold_parse_in_a_fresh_interpreter_under_half_a_second(airflow_db, name) -> None:
    from bench.dag_parse import probe

    result = probe(REPO / "dags" / name, os.environ.copy(), repeats=0)
    assert result["import_errors"] == {}
    assert result["dags"], f"{name} yielded no DAG: nothing was timed"
    assert result["cold_seconds"] < LIMIT_SECONDS, result
