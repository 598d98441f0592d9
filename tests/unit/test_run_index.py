"""The run index (mlpipe.stages.runs + Registry): rows the runs upsert, rebuilt from the store, read by the CLI.

On SQLite and PostgreSQL. The store is the source of truth: a rebuild gives the rows the runs wrote,
and an empty index over a store with runs rebuilds itself on first read.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlpipe.cli import main as cli_main
from mlpipe.registry import Registry
from mlpipe.stages.runs import index_run, indexed_runs, record_run, reindex, run_prefix
from mlpipe.storage import LocalStore


@pytest.fixture(params=["sqlite", "postgresql"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    url = f"sqlite:///{tmp_path / 'registry.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    registry = Registry.from_url(url)
    yield registry
    registry.dispose()


@pytest.fixture
def pipeline() -> str:
    return f"p_{uuid.uuid4().hex[:10]}"  # the PostgreSQL database is shared by the module's tests


VERDICT = {
    "decision": "promote",
    "blessed": True,
    "best_candidate": "hgb",
    "primary_metric": "roc_auc",
    "candidates": {"hgb": {"roc_auc": 0.71}, "logreg": {"roc_auc": 0.69}},
    "champion_version": 1,
    "reasons": ["roc_auc improves by 0.0100"],
    "report_uri": "file:///x/report/index.html",
}


def write_run(store: LocalStore, pipeline: str, key: str, day: int, *, finished: bool = True) -> None:
    """A run's files as the tasks write them: record, snapshot record, then (finished) verdict and promotion."""
    as_of = f"2026-01-{day:02d}T02:00:00+00:00"
    info = {"run_id": f"scheduled__{as_of}", "dag_id": f"{pipeline}_train", "trigger": "schedule", "as_of": as_of}
    record_run(store, pipeline, key, {**info, "spec_sha256": "5" * 64, "code_version": "abc"})
    prefix = run_prefix(pipeline, key)
    store.put_bytes(f"{prefix}/extract/snapshot.json", json.dumps({"sha256": f"{day:064x}", "rows": 10}).encode())
    if finished:
        store.put_bytes(f"{prefix}/evaluate/verdict.json", json.dumps(VERDICT).encode())
        store.put_bytes(f"{prefix}/evaluate/report/index.html", b"<html></html>")
        store.put_bytes(f"{prefix}/promote/result.json", json.dumps({"promoted": True, "version": 2}).encode())


def without_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "updated_at"} for r in rows]


def test_a_run_upserts_one_row_that_follows_its_files(store: LocalStore, registry: Registry, pipeline: str) -> None:
    write_run(store, pipeline, "r1", 1, finished=False)
    index_run(registry, store, pipeline, "r1")  # after extraction
    (early,) = registry.indexed_runs(pipeline)
    assert early["verdict"] is None and early["promotion"] is None
    assert (early["trigger"], early["data_sha256"], early["code_version"]) == ("schedule", f"{1:064x}", "abc")

    write_run(store, pipeline, "r1", 1)
    index_run(registry, store, pipeline, "r1")  # after evaluation and promotion
    index_run(registry, store, pipeline, "r1")  # a retried task: same row, no duplicate
    (row,) = registry.indexed_runs(pipeline)
    assert row["verdict"]["primary_value"] == 0.71 and row["verdict"]["report_uri"] == VERDICT["report_uri"]
    assert row["promotion"] == {"promoted": True, "version": 2}
    assert "evaluate/report/index.html" in row["files"] and "run.json" in row["files"]
    assert registry.indexed_run(pipeline, "r1") == row


def test_a_rebuild_from_the_store_gives_the_rows_the_runs_wrote(
    store: LocalStore, registry: Registry, pipeline: str
) -> None:
    for day in (3, 1, 2):
        write_run(store, pipeline, f"r{day}", day, finished=day != 3)
        index_run(registry, store, pipeline, f"r{day}")
    written = registry.indexed_runs(pipeline)
    assert [r["run_key"] for r in written] == ["r1", "r2", "r3"]  # oldest first by as-of

    assert reindex(registry, store, pipeline) == 3
    assert without_times(registry.indexed_runs(pipeline)) == without_times(written)
    assert [r["run_key"] for r in registry.indexed_runs(pipeline, newest=2)] == ["r2", "r3"]
    same = registry.runs_with_inputs(pipeline, data_sha256=f"{2:064x}", spec_sha256="5" * 64, code_version="abc")
    assert [r["run_key"] for r in same] == ["r2"]
    assert registry.runs_with_inputs(pipeline, data_sha256=f"{2:064x}", spec_sha256="5" * 64, code_version="new") == []


def test_pages_read_the_index_and_an_empty_one_is_rebuilt_from_the_store(
    store: LocalStore, registry: Registry, pipeline: str
) -> None:
    write_run(store, pipeline, "r1", 1)
    write_run(store, pipeline, "r2", 2)
    # A registry upgraded from before the index: empty, while the store has runs.
    assert [r["run_key"] for r in indexed_runs(registry, store, pipeline)] == ["r1", "r2"]
    assert registry.indexed_run_count(pipeline) == 2

    # Once it has rows, listing runs reads only the index: a run it was not told about is not listed
    # (it costs no listing of the store) until the run indexes itself or a rebuild.
    write_run(store, pipeline, "r3", 3)
    assert [r["run_key"] for r in indexed_runs(registry, store, pipeline)] == ["r1", "r2"]
    reindex(registry, store, pipeline)
    assert [r["run_key"] for r in indexed_runs(registry, store, pipeline)] == ["r1", "r2", "r3"]
    assert indexed_runs(registry, store, "no_such_pipeline") == []


def test_cli_rebuilds_and_lists_the_index(mlpipe_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mlpipe import config

    store = LocalStore(config.default_store_root())
    write_run(store, "tiny", "r1", 1)
    write_run(store, "tiny", "r2", 2, finished=False)

    assert cli_main(["registry", "reindex", "tiny"]) == 0
    assert "2 runs" in capsys.readouterr().out
    assert cli_main(["registry", "runs", "tiny", "--last", "1"]) == 0
    out = capsys.readouterr().out
    assert "scheduled__2026-01-02T02:00:00+00:00" in out and "2026-01-01" not in out
    assert cli_main(["registry", "runs", "tiny", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["run_key"], (r["verdict"] or {}).get("decision")) for r in rows] == [("r1", "promote"), ("r2", None)]
