"""Tests of mlpipe.stages.runs: run records written once and listed in as-of order."""

from __future__ import annotations

from mlpipe.stages.runs import list_runs, read_json, record_run, run_prefix
from mlpipe.storage import LocalStore


def test_a_run_is_recorded_once(store: LocalStore) -> None:
    record_run(store, "tiny", "r1", {"run_id": "manual__1", "as_of": "2026-01-02T00:00:00"})
    record_run(store, "tiny", "r1", {"run_id": "manual__1", "as_of": "2026-09-09T00:00:00", "retry": True})

    assert read_json(store, f"{run_prefix('tiny', 'r1')}/run.json") == {
        "run_id": "manual__1",
        "as_of": "2026-01-02T00:00:00",
    }
    assert read_json(store, "tiny/runs/absent/run.json") is None


def test_runs_are_listed_oldest_first_with_their_key(store: LocalStore) -> None:
    record_run(store, "tiny", "late", {"run_id": "scheduled__b", "as_of": "2026-02-01T00:00:00"})
    record_run(store, "tiny", "early", {"run_id": "scheduled__a", "as_of": "2026-01-01T00:00:00"})
    record_run(store, "other", "x", {"run_id": "manual__x", "as_of": "2025-01-01T00:00:00"})
    store.put_bytes("tiny/runs/early/extract/snapshot.json", b"{}")  # not a run record

    runs = list_runs(store, "tiny")

    assert [(r["run_key"], r["run_id"]) for r in runs] == [("early", "scheduled__a"), ("late", "scheduled__b")]
    assert list_runs(store, "nothing") == []
