"""Reuse by content: a run whose inputs equal an earlier run's takes that run's work instead of redoing it.

The inputs are the snapshot's sha256, the spec's sha256 and the code version, which every run's
index row keeps (``mlpipe_runs``). Models are byte-reproducible, so an earlier run on the same
inputs trained exactly the models this run would train: :func:`reuse_candidate` copies one
candidate's model and result into this run (its sha256 checked) instead of fitting it. Evaluation
is reused only when it would decide the same: :func:`reuse_verdict` copies the earlier verdict when
the champion log has not moved since it was written (same champion, same holdout, same models);
otherwise the run evaluates the reused models afresh against today's champion, so the gate decides
as before (a re-run after a promotion is a tie that promotes nothing).

Pipeline orchestrators that cache by task inputs go stale on mutable sources; keying on the
data's content hash does not.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from mlpipe import layout
from mlpipe.contracts import ContractError, TrainedCandidate, Verdict
from mlpipe.registry import ModelVersion, Registry
from mlpipe.stages.runs import read_json, reused_from

# No scikit-learn here (nor through mlpipe.stages.train): a task that reuses work does not import
# what training and evaluation need.
from mlpipe.storage import ArtifactStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inputs:
    """What a run's work depends on: its data, its spec and its code."""

    data_sha256: str
    spec_sha256: str
    code_version: str


def run_inputs(registry: Registry, pipeline: str, run_key: str) -> Inputs | None:
    """This run's inputs from its index row (written once the snapshot was extracted); None if unknown."""
    row = registry.indexed_run(pipeline, run_key)
    if not row or not (row.get("data_sha256") and row.get("spec_sha256") and row.get("code_version")):
        return None
    return Inputs(row["data_sha256"], row["spec_sha256"], row["code_version"])


def earlier_runs(registry: Registry, pipeline: str, run_key: str, inputs: Inputs) -> list[dict[str, Any]]:
    """Index rows of other runs on the same inputs, newest first."""
    rows = registry.runs_with_inputs(
        pipeline, data_sha256=inputs.data_sha256, spec_sha256=inputs.spec_sha256, code_version=inputs.code_version
    )
    return [r for r in rows if r["run_key"] != run_key]


def reuse_candidate(
    registry: Registry, store: ArtifactStore, *, pipeline: str, run_key: str, candidate: str, inputs: Inputs
) -> TrainedCandidate | None:
    """Copy ``candidate``'s model and result from the newest earlier run on ``inputs`` that trained it
    (model bytes checked against its sha256); None when no earlier run did. Returns this run's
    result, with ``fit_seconds`` 0."""
    for row in earlier_runs(registry, pipeline, run_key, inputs):
        earlier = read_json(store, layout.candidate_result(pipeline, row["run_key"], candidate))
        if earlier is None:
            continue
        key, sha256 = earlier["model_key"], earlier["model_sha256"]
        if not store.exists(key) or store.sha256(key) != sha256:
            continue  # removed or damaged since: look further back
        target = layout.candidate_model(pipeline, run_key, candidate, PurePosixPath(key).name)
        with store.local_copy(key, expected_sha256=sha256) as path:
            artifact = store.put_file(target, path)
        reused = {**earlier, "model_key": artifact.key, "model_uri": artifact.uri, "fit_seconds": 0.0}
        origin = {"run_id": row["run_id"], "run_key": row["run_key"], "fit_seconds": earlier.get("fit_seconds")}
        store.put_bytes(layout.candidate_reused(pipeline, run_key, candidate), json.dumps(origin, indent=2).encode())
        # result.json last: a retry that finds it takes this run's copy (train_candidate's own rule).
        store.put_bytes(layout.candidate_result(pipeline, run_key, candidate), json.dumps(reused, indent=2).encode())
        return TrainedCandidate.from_xcom(reused)
    return None


def reuse_verdict(
    store: ArtifactStore,
    *,
    pipeline: str,
    run_id: str,
    run_key: str,
    trained: list[TrainedCandidate],
    champion_seq: int,
    champion: ModelVersion | None = None,
) -> Verdict | None:
    """The earlier run's verdict as this run's, when every candidate was reused from that run, the
    champion log is where it was when that verdict was written and the champion's artifact is still the
    bytes it was (a tampered or lost one is evaluated afresh, which makes it an incident); None otherwise.

    The copy keeps the earlier run's report (``report_uri``) and says where it came from (``reused_from``).
    """
    origins = [reused_from(store, pipeline, run_key, t.candidate) for t in trained]
    if not origins or any(o is None for o in origins) or len({o["run_key"] for o in origins}) != 1:
        return None
    origin = origins[0]
    earlier = read_json(store, layout.verdict_key(pipeline, origin["run_key"]))
    if earlier is None or int(earlier.get("champion_seq", -1)) != champion_seq:
        return None
    if set(earlier.get("candidates") or {}) != {t.candidate for t in trained}:
        return None
    if champion is not None and not _intact(store, champion):
        return None
    try:
        verdict = Verdict.from_xcom(
            {**earlier, "run_id": run_id, "reused_from": earlier.get("reused_from") or origin["run_id"]}
        )
    except ContractError as exc:
        log.info("The earlier verdict is not one this code writes (%s): evaluating afresh", exc)
        return None
    store.put_bytes(layout.verdict_key(pipeline, run_key), json.dumps(verdict.to_xcom(), indent=2).encode())
    return verdict


def _intact(store: ArtifactStore, champion: ModelVersion) -> bool:
    """The champion's artifact is in the store with the sha256 the registry recorded."""
    try:
        key = store.key_of(champion.artifact_key)
        return store.exists(key) and store.sha256(key) == champion.artifact_sha256
    except Exception:
        return False
