"""Run records: what started each training run, kept beside the run's artifacts and told in its note."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from mlpipe.storage import ArtifactStore

RUN_FILE = "run.json"


def run_prefix(pipeline: str, run_key: str) -> str:
    return f"{pipeline}/runs/{run_key}"


def record_run(store: ArtifactStore, pipeline: str, run_key: str, info: dict[str, Any]) -> None:
    """Write the run's record once; a retried task keeps the first one."""
    key = f"{run_prefix(pipeline, run_key)}/{RUN_FILE}"
    if not store.exists(key):
        store.put_bytes(key, json.dumps(info, indent=2, sort_keys=True).encode())


def read_json(store: ArtifactStore, key: str) -> dict[str, Any] | None:
    return json.loads(store.get_bytes(key)) if store.exists(key) else None


def list_runs(store: ArtifactStore, pipeline: str) -> list[dict[str, Any]]:
    """Every recorded run of ``pipeline``, oldest first by as-of time, each with its ``run_key``."""
    runs = []
    for key in store.list(f"{pipeline}/runs"):
        parts = key.split("/")
        if len(parts) == 4 and parts[3] == RUN_FILE:
            info = read_json(store, key) or {}
            runs.append({**info, "run_key": parts[2]})
    return sorted(runs, key=lambda r: (r.get("as_of") or "", r.get("run_id") or ""))


# -- what started a run --------------------------------------------------------------------------

NOTE_LIMIT = 1000  # Airflow keeps a DagRun note in a String(1000) column


def trigger_of(run_type: str | None, asset_names: Iterable[str]) -> str:
    """``drift``, ``new_data``, ``asset`` (another asset), ``schedule``, ``manual``, or the run type."""
    kinds = {name.rsplit(".", 1)[-1] for name in asset_names}
    if kinds:
        return "drift" if "drift" in kinds else "new_data" if "new_data" in kinds else "asset"
    return "schedule" if run_type == "scheduled" else str(run_type)


def _watermark_text(encoded: Any) -> str:
    from mlpipe.registry import decode_watermark

    try:
        return str(decode_watermark(encoded))
    except (TypeError, ValueError, KeyError):
        return str(encoded)


def describe_event(event: dict[str, Any]) -> str:
    """One asset event that started a run, in a few words with its figures."""
    extra = event.get("extra") or {}
    if "objects" in extra:
        return f"{extra['objects']:,} new objects, newest {extra.get('newest_object')}"
    if "watermark" in extra:
        return f"{extra.get('rows', 0):,} new rows up to {_watermark_text(extra['watermark'])}"
    if "verdict" in extra:
        return _describe_drift(extra)
    return str(event.get("asset"))


def _describe_drift(extra: dict[str, Any]) -> str:
    """A drift event: the window, the features' verdict, and the champion's metric drop if that breached."""
    rows = f", {extra['window_rows']:,} rows" if extra.get("window_rows") is not None else ""
    parts = [f"window {extra.get('window_start')} .. {extra.get('window_end')}{rows}"]
    features = f"features {extra['verdict']}"
    if extra.get("drifted_share") is not None:
        features += f" ({extra['drifted_share']:.0%} at act"
        features += f", score PSI {extra['score_psi']:.3f})" if extra.get("score_psi") is not None else ")"
    parts.append(features)
    perf = extra.get("performance") or {}
    if perf.get("verdict") == "degraded":
        parts.append(f"{perf['metric']} {perf['value']:.3f}, {perf['drop']:.3f} below its {perf['promoted']:.3f}")
    if extra.get("champion_version") is not None:
        parts.append(f"champion v{extra['champion_version']}")
    return "; ".join(parts)


def describe_trigger(info: dict[str, Any]) -> str:
    """``info``'s trigger with what each asset event announced, e.g. ``new_data (900 new rows up to …)``."""
    trigger = info.get("trigger") or info.get("run_type") or "?"
    events = info.get("asset_events") or []
    return f"{trigger} ({'; '.join(describe_event(e) for e in events)})" if events else trigger


def trigger_note(info: dict[str, Any]) -> str:
    """Markdown for the run's note in the Airflow UI: what started it, with the figures, at most 1000 chars."""
    trigger = info.get("trigger")
    events = info.get("asset_events") or []
    if trigger == "new_data":
        lines = ["**Started by new data**"]
    elif trigger == "drift":
        lines = ["**Started by drift**"]
    elif events:
        lines = ["**Started by asset events**"]
    elif trigger == "schedule":
        lines = [f"**Started by the schedule** (data as of {info.get('as_of')})"]
    elif trigger == "manual":
        user, via = info.get("triggering_user"), info.get("triggered_by")
        lines = ["**Started manually**" + (f" by {user}" if user else "") + (f" via {via}" if via else "")]
    else:
        lines = [f"**Started by {trigger}**"]
    for event in events:
        extra = event.get("extra") or {}
        source = extra.get("watch_run_id") or extra.get("monitor_run_id")
        lines.append(f"- `{event.get('asset')}`: {describe_event(event)}" + (f" (run `{source}`)" if source else ""))
        for reason in (extra.get("reasons") or [])[:5]:
            lines.append(f"  - {reason}")
        if extra.get("report_uri"):
            lines.append(f"  - report: {extra['report_uri']}")
    note = "\n".join(lines)
    return note if len(note) <= NOTE_LIMIT else note[: NOTE_LIMIT - 1] + "…"
