"""Run records: what started each training run, kept beside the run's artifacts and told in its note,
and the run index in the registry that the Models view and the CLI read instead of the store.

The store is the source of truth: :func:`index_entry` derives a run's index row from its files
(``run.json``, the snapshot's record, the verdict, the promotion), the runs call :func:`index_run`
where they write those files, and :func:`reindex` rebuilds a pipeline's rows from one listing of
its runs. :func:`indexed_runs` rebuilds on its own when the index is empty but the store has runs.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mlpipe import layout
from mlpipe.contracts import champion_incident
from mlpipe.layout import (
    EVALUATION_REPORT,
    INDEXED_FILES,
    PROMOTION,
    RUN_FILE,
    SNAPSHOT_RECORD,
    VERDICT,
    run_prefix,
)
from mlpipe.storage import ArtifactStore

if TYPE_CHECKING:
    from mlpipe.registry import Registry


def validation_failed(summary: dict[str, Any]) -> bool:
    """Whether a run's validation summary (``validate/summary.json``) stopped its data: the suite or the reference."""
    return not summary.get("success") or (summary.get("reference") or {}).get("status") == "failed"


def record_run(store: ArtifactStore, pipeline: str, run_key: str, info: dict[str, Any]) -> None:
    """Write the run's record once; a retried task keeps the first one."""
    key = layout.run_record(pipeline, run_key)
    if not store.exists(key):
        store.put_bytes(key, json.dumps(info, indent=2, sort_keys=True).encode())


def read_json(store: ArtifactStore, key: str) -> dict[str, Any] | None:
    return json.loads(store.get_bytes(key)) if store.exists(key) else None


def list_runs(store: ArtifactStore, pipeline: str) -> list[dict[str, Any]]:
    """Every recorded run of ``pipeline``, oldest first by as-of time, each with its ``run_key``."""
    runs = []
    for key in store.list(layout.runs_prefix(pipeline)):
        parsed = layout.try_parse_key(key)
        if parsed is not None and parsed.path == RUN_FILE:
            info = read_json(store, key) or {}
            runs.append({**info, "run_key": parsed.run_key})
    return sorted(runs, key=lambda r: (r.get("as_of") or "", r.get("run_id") or ""))


# -- reused work (mlpipe.stages.reuse) -----------------------------------------------------------


def reused_from(store: ArtifactStore, pipeline: str, run_key: str, candidate: str) -> dict[str, Any] | None:
    """Where this run's ``candidate`` came from, if it was reused (``run_id``, ``run_key``, its fit time)."""
    return read_json(store, layout.candidate_reused(pipeline, run_key, candidate))


# -- the run index ------------------------------------------------------------------------------


def verdict_brief(verdict: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a list of runs shows of a verdict: the decision, the best candidate and its primary metric."""
    if not verdict:
        return None
    best = verdict.get("best_candidate")
    metric = verdict.get("primary_metric")
    value = (verdict.get("candidates") or {}).get(best, {}).get(metric) if best else None
    return {
        "decision": verdict.get("decision"),
        "blessed": bool(verdict.get("blessed")),
        "best_candidate": best,
        "primary_metric": metric,
        "primary_value": value,
        "champion_version": verdict.get("champion_version"),
        "reasons": list(verdict.get("reasons") or []),
        "report_uri": verdict.get("report_uri"),
        "reused_from": verdict.get("reused_from"),
        "gain": gain_of(verdict),
        "incident": champion_incident(verdict),
    }


def gain_of(verdict: dict[str, Any]) -> dict[str, Any] | None:
    """The best candidate's gain over the champion on the primary metric, with its interval when the gate had one."""
    rule = next((r for r in verdict.get("rules") or [] if r.get("rule") == "improvement"), None)
    figures = (rule or {}).get("figures") or {}
    if not isinstance(figures.get("gain"), (int, float)):
        return None
    low, high = figures.get("gain_low"), figures.get("gain_high")
    text = f"{figures['gain']:+.4f}"
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        text += f" [{low:+.4f}, {high:+.4f}] at {figures.get('confidence', 0):.0%}"
    return {"gain": figures["gain"], "low": low, "high": high, "text": text}


# A pipeline without runs in the index or the store is looked for in the store again after this long
# (per process): a run indexes itself, so only a store filled from elsewhere waits for it.
EMPTY_STORE_RECHECK_SECONDS = 60.0
_STORE_WITHOUT_RUNS: dict[tuple[str, str], float] = {}


def index_entry(store: ArtifactStore, pipeline: str, run_key: str, files: set[str] | None = None) -> dict[str, Any]:
    """The index row of one run, read from its files in the store (``files``: the run's file names
    relative to its prefix, when a listing already has them)."""
    prefix = run_prefix(pipeline, run_key)
    if files is None:
        files = {k.removeprefix(f"{prefix}/") for k in store.list(prefix)}
    kept = sorted(f for f in INDEXED_FILES if f in files)

    def read(name: str) -> dict[str, Any] | None:
        return read_json(store, layout.run_file(pipeline, run_key, name)) if name in files else None

    record = read(RUN_FILE) or {}
    snapshot = read(SNAPSHOT_RECORD) or {}
    verdict = verdict_brief(read(VERDICT))
    if verdict and verdict.get("report_uri") and EVALUATION_REPORT not in kept:
        kept = sorted([*kept, EVALUATION_REPORT])  # a reused evaluation's report, in the run it came from
    return {
        "run_key": run_key,
        "run_id": record.get("run_id"),
        "dag_id": record.get("dag_id"),
        "trigger": record.get("trigger"),
        "as_of": record.get("as_of") or "",
        "data_sha256": snapshot.get("sha256"),
        "spec_sha256": record.get("spec_sha256"),
        "code_version": record.get("code_version"),
        "files": kept,
        "verdict": verdict,
        "promotion": read(PROMOTION),
    }


def index_run(registry: Registry, store: ArtifactStore, pipeline: str, run_key: str) -> dict[str, Any]:
    """Bring the run's index row up to date with its files (idempotent; call after writing one of them)."""
    entry = index_entry(store, pipeline, run_key)
    registry.index_run(pipeline, entry)
    return entry


def reindex(registry: Registry, store: ArtifactStore, pipeline: str) -> int:
    """Rebuild ``pipeline``'s run index from the store (one listing, then each run's few records)."""
    files: dict[str, set[str]] = {}
    for key in store.list(layout.runs_prefix(pipeline)):
        parsed = layout.try_parse_key(key)
        if parsed is not None and parsed.run_key is not None and parsed.path:
            files.setdefault(parsed.run_key, set()).add(parsed.path)
    entries = [index_entry(store, pipeline, key, names) for key, names in files.items() if RUN_FILE in names]
    return registry.replace_run_index(pipeline, entries)


def indexed_runs(
    registry: Registry, store: ArtifactStore, pipeline: str, *, dag_id: str | None = None, newest: int | None = None
) -> list[dict[str, Any]]:
    """The runs of ``pipeline`` from the index, oldest first (see :meth:`Registry.indexed_runs`).

    An empty index over a store that has runs (a registry upgraded from before the index, or a new
    registry next to an old store) is rebuilt from the store first.
    """
    rows = registry.indexed_runs(pipeline, dag_id=dag_id, newest=newest)
    if rows or registry.indexed_run_count(pipeline):
        return rows
    seen = (repr(store), pipeline)
    if time.monotonic() - _STORE_WITHOUT_RUNS.get(seen, -math.inf) < EMPTY_STORE_RECHECK_SECONDS:
        return rows  # the store had no runs a moment ago: no listing on every page view
    if store.list(layout.runs_prefix(pipeline)):
        reindex(registry, store, pipeline)
        return registry.indexed_runs(pipeline, dag_id=dag_id, newest=newest)
    _STORE_WITHOUT_RUNS[seen] = time.monotonic()
    return rows


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
