"""The pipelines' Airflow Assets: their names, and what a champion change's asset event carries.

Each pipeline has three: ``<name>.new_data`` (the watch found new data), ``<name>.drift`` (the
monitor crossed a threshold) and ``<name>.champion`` (the champion changed: promotion, rollback by
DAG or CLI). The factory schedules and the operators emit them; the CLI names one without importing
the factory or any operator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset

if TYPE_CHECKING:
    from mlpipe.registry import ChampionEvent


def new_data_asset(pipeline: str) -> Asset:
    """Announced by ``<name>_watch`` when rows past the watermark arrive; starts ``<name>_train``."""
    return Asset(name=f"{pipeline}.new_data", uri=f"x-mlpipe://{pipeline}/new_data", group="mlpipe")


def drift_asset(pipeline: str) -> Asset:
    """Announced by ``<name>_monitor`` when the newest window drifts (once per window); starts training."""
    return Asset(name=f"{pipeline}.drift", uri=f"x-mlpipe://{pipeline}/drift", group="mlpipe")


def champion_asset(pipeline: str) -> Asset:
    """Announced when the pipeline's champion changes (promotion, rollback); starts ``<name>_score``."""
    return Asset(name=f"{pipeline}.champion", uri=f"x-mlpipe://{pipeline}/champion", group="mlpipe")


def champion_event_extra(event: ChampionEvent) -> dict[str, Any]:
    """The extra of a champion asset event: which version is champion now, from which, how and why."""
    return {
        "pipeline": event.pipeline,
        "version": event.version,
        "previous_version": event.previous_version,
        "action": event.action,
        "reason": event.reason,
        "actor": event.actor,
        "seq": event.seq,
        "run_id": event.run_id,
    }
