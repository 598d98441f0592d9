"""Run records: what started each training run, kept beside the run's artifacts."""

from __future__ import annotations

import json
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
