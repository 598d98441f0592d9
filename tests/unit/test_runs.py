"""Tests of mlpipe.stages.runs: run records written once and listed in as-of order; what started a run."""

from __future__ import annotations

import pytest

from mlpipe.stages.runs import (
    NOTE_LIMIT,
    describe_event,
    describe_trigger,
    list_runs,
    read_json,
    record_run,
    run_prefix,
    trigger_note,
    trigger_of,
)
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


# -- what started a run --------------------------------------------------------------------------

NEW_DATA_EVENT = {
    "asset": "tiny.new_data",
    "extra": {"rows": 15_000, "watermark": '"2013-01-21 10:00:00"', "watch_run_id": "manual__w1"},
}
DRIFT_EVENT = {
    "asset": "tiny.drift",
    "extra": {
        "verdict": "drift",
        "window_start": "2013-06-01 00:00:00",
        "window_end": "2013-06-08 00:00:00",
        "window_rows": 6_734,
        "drifted_share": 0.5,
        "performance": {
            "metric": "roc_auc",
            "value": 0.5939,
            "promoted": 0.6647,
            "drop": 0.0708,
            "verdict": "degraded",
        },
        "score_psi": 0.31234,
        "champion_version": 1,
        "reasons": [f"reason {i}" for i in range(8)],
        "report_uri": "file:///store/tiny/monitor/r/report/index.html",
        "monitor_run_id": "scheduled__m1",
    },
}


@pytest.mark.parametrize(
    "run_type, assets, expected",
    [
        ("scheduled", [], "schedule"),
        ("manual", [], "manual"),
        ("asset_triggered", ["tiny.new_data"], "new_data"),
        ("asset_triggered", ["tiny.new_data", "tiny.drift"], "drift"),
        ("asset_triggered", ["elsewhere.thing"], "asset"),
        ("backfill", [], "backfill"),
    ],
)
def test_trigger_of(run_type: str, assets: list[str], expected: str) -> None:
    assert trigger_of(run_type, assets) == expected


def test_describe_trigger_names_each_event_with_its_figures() -> None:
    assert describe_trigger({"trigger": "manual"}) == "manual"
    assert describe_trigger({"trigger": "new_data", "asset_events": [NEW_DATA_EVENT]}) == (
        "new_data (15,000 new rows up to 2013-01-21 10:00:00)"
    )
    both = describe_trigger({"trigger": "drift", "asset_events": [NEW_DATA_EVENT, DRIFT_EVENT]})
    assert both == (
        "drift (15,000 new rows up to 2013-01-21 10:00:00; window 2013-06-01 00:00:00 .. 2013-06-08 00:00:00, "
        "6,734 rows; features drift (50% at act, score PSI 0.312); roc_auc 0.594, 0.071 below its 0.665; "
        "champion v1)"
    )
    quiet = {"asset": "t.drift", "extra": {"verdict": "warn", "window_start": "a", "window_end": "b"}}
    assert describe_event(quiet) == "window a .. b; features warn"
    timestamp = {"asset": "t.new_data", "extra": {"rows": 3, "watermark": '{"datetime": "2013-01-01T05:00:00+00:00"}'}}
    assert describe_event(timestamp) == "3 new rows up to 2013-01-01 05:00:00+00:00"


def test_trigger_notes_say_what_started_the_run() -> None:
    assert trigger_note({"trigger": "schedule", "as_of": "2026-03-01T02:00:00+00:00"}) == (
        "**Started by the schedule** (data as of 2026-03-01T02:00:00+00:00)"
    )
    assert trigger_note({"trigger": "manual", "triggering_user": "admin", "triggered_by": "ui"}) == (
        "**Started manually** by admin via ui"
    )
    assert trigger_note({"trigger": "new_data", "asset_events": [NEW_DATA_EVENT]}) == (
        "**Started by new data**\n- `tiny.new_data`: 15,000 new rows up to 2013-01-21 10:00:00 (run `manual__w1`)"
    )
    drift = trigger_note({"trigger": "drift", "asset_events": [DRIFT_EVENT]}).splitlines()
    assert drift[0] == "**Started by drift**"
    assert drift[1].startswith("- `tiny.drift`: window 2013-06-01") and drift[1].endswith("(run `scheduled__m1`)")
    assert drift[2:7] == [f"  - reason {i}" for i in range(5)], "at most five reasons"
    assert drift[7] == "  - report: file:///store/tiny/monitor/r/report/index.html"


def test_a_trigger_note_fits_airflows_note_column() -> None:
    long = {**DRIFT_EVENT, "extra": {**DRIFT_EVENT["extra"], "reasons": ["x" * 400] * 5}}
    note = trigger_note({"trigger": "drift", "asset_events": [long]})
    assert len(note) == NOTE_LIMIT == 1000 and note.endswith("…")
