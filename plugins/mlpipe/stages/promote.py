"""Promotion: register the blessed candidate as a new model version and make it champion.

Obeys the verdict (an unblessed model is never registered, unless the run forces the promotion
with a reason, which the champion log keeps as a "force" event), and a human's rejection when the
spec asks for approval. Idempotent per run (a retried or re-run task finds its version and does
nothing), and loses cleanly when the champion changed since evaluation: the registry write is one
compare-and-swap transaction, and the model copy it would have pointed at is removed.
"""

from __future__ import annotations

import json
import logging
from pathlib import PurePosixPath
from typing import Any

from mlpipe import layout
from mlpipe.contracts import Approval, FeatureSet, PromotionResult, Snapshot, TrainedCandidate, Verdict
from mlpipe.errors import MlpipeError, PromotionError
from mlpipe.layout import run_key
from mlpipe.registry import ModelVersion, Registry
from mlpipe.storage import ArtifactStore

log = logging.getLogger(__name__)

__all__ = ["PromotionError", "PromotionResult", "promote_model"]


def result_key(pipeline: str, run_id: str) -> str:
    return layout.promotion_key(pipeline, run_key(run_id))


def promote_model(
    registry: Registry,
    store: ArtifactStore,
    *,
    verdict: Verdict,
    trained: list[TrainedCandidate],
    snapshot: Snapshot,
    spec_sha256: str,
    code_version: str,
    run_id: str,
    lineage: dict[str, Any],
    actor: str,
    approval: Approval | None = None,
) -> PromotionResult:
    """Register and promote the verdict's best candidate, or explain why nothing happened.

    The verdict's ``force_reason`` (the run's, non-empty) promotes the best candidate although the
    verdict did not bless it; ``approval`` is the approval task's answer (:func:`approval_answer`): a
    rejection writes nothing. ``spec_sha256`` is the spec's when the run began (the snapshot's).
    """
    pipeline = verdict.pipeline
    existing = registry.version_for_run(pipeline, run_id)
    if existing is not None:
        msg = f"run {run_id} already registered {pipeline} v{existing.version}; nothing to do"
        uri = store.uri_of(existing.artifact_key)
        result = PromotionResult(False, existing.version, None, "already_done", msg, uri)
        return _record(store, pipeline, run_id, result)
    previous = verdict.champion_version
    if approval is not None and approval.rejected:
        msg = f"rejected by {approval.by or 'unknown'}: {approval.reason or 'no reason given'}"
        return _record(store, pipeline, run_id, PromotionResult(False, None, previous, "rejected", msg))
    force_reason = verdict.force_reason
    if verdict.forced and not (force_reason or "").strip():
        raise PromotionError(f"forcing the promotion of {pipeline} needs a reason (param force_reason)")
    if not verdict.blessed and not verdict.forced:
        msg = "verdict did not bless a model: " + "; ".join(verdict.reasons)
        return _record(store, pipeline, run_id, PromotionResult(False, None, previous, "skipped", msg))

    best = verdict.best_candidate
    if best is None:
        raise PromotionError(
            f"cannot force the promotion of {pipeline}: no candidate has a defined "
            f"{verdict.primary_metric} on the holdout ({'; '.join(verdict.reasons)})"
        )
    chosen = next((t for t in trained if t.candidate == best), None)
    if chosen is None:
        raise MlpipeError(f"verdict blesses {best!r} but this run trained no such candidate")
    version = registry.next_version(pipeline)
    prefix = layout.model_prefix(pipeline, version, run_key(run_id))
    with store.local_copy(chosen.model_key, expected_sha256=chosen.model_sha256) as path:
        # A copy left by a crashed earlier attempt of this run is replaced; it was never
        # registered, so no reader can have seen it.
        key = layout.model_key(pipeline, version, run_key(run_id), PurePosixPath(chosen.model_key).name)
        artifact = store.put_file(key, path)
    new = ModelVersion(
        pipeline=pipeline,
        version=version,
        run_id=run_id,
        candidate=best,
        estimator=chosen.estimator,
        params=chosen.params,
        metrics=verdict.to_xcom()["candidates"][best],
        data_sha256=snapshot.sha256,
        data_rows=snapshot.rows,
        spec_sha256=spec_sha256,
        code_version=code_version,
        artifact_key=artifact.key,
        artifact_sha256=artifact.sha256,
        lineage=lineage,
    )
    if verdict.forced:
        action = "force"
        reason = f"{force_reason.strip()} (forced; the gate said: {'; '.join(verdict.reasons)})"
    else:
        action = "first" if verdict.decision == "first" else "promote"
        reason = "; ".join(verdict.reasons)
    try:
        event = registry.register_and_promote(
            new, expected_seq=verdict.champion_seq, action=action, reason=reason, actor=actor
        )
    except Exception:
        # Keep the copy only if the registry points at it (the commit went through after all);
        # another attempt of this run may have registered a different version and copy.
        done = registry.version_for_run(pipeline, run_id)
        if done is None or done.artifact_key != artifact.key:
            store.delete_prefix(prefix)
        raise
    if action == "force":
        was = f"champion v{event.previous_version}" if event.previous_version else "no champion"
        msg = f"{pipeline} v{version} ({best}) replaces {was}: forced by {actor} although not blessed: {reason}"
    elif action == "first":
        msg = f"no champion before: {pipeline} v{version} ({best}) is the first champion"
    else:
        msg = f"{pipeline} v{version} ({best}) replaces champion v{event.previous_version}"
    return _record(
        store, pipeline, run_id, PromotionResult(True, version, event.previous_version, action, msg, artifact.uri)
    )


def _record(store: ArtifactStore, pipeline: str, run_id: str, result: PromotionResult) -> PromotionResult:
    """Log the outcome and keep it with the run; a later no-op keeps the first record."""
    log.info(result.message)
    key = result_key(pipeline, run_id)
    if result.action != "already_done" or not store.exists(key):
        store.put_bytes(key, json.dumps(result.to_xcom(), indent=2).encode())
    return result


def approval_answer(event: dict[str, Any] | None) -> Approval:
    """What promotion needs of a human-in-the-loop response: approved or not, by whom and why.

    ``event`` is what Airflow hands the approval task when the response arrives (chosen options,
    params input, the responding user); None when nobody was asked.
    """
    if event is None:
        return Approval(asked=False, approved=None, by=None, reason=None)
    user = event.get("responded_by_user") or {}
    by = user.get("name") or user.get("id") if isinstance(user, dict) else str(user)
    responded = event.get("responded_at")
    return Approval(
        asked=True,
        approved=list(event.get("chosen_options") or []) == ["Approve"],
        by=by or ("timeout default" if event.get("timedout") else None),
        reason=(event.get("params_input") or {}).get("reason") or None,
        responded_at=responded.isoformat() if hasattr(responded, "isoformat") else responded,
    )


def lineage_of(snapshot: Snapshot, features: FeatureSet, trigger: dict[str, Any]) -> dict[str, Any]:
    """What a model version records about how it came to be."""
    snap, feats = snapshot.to_xcom(), features.to_xcom()
    return {
        "trigger": trigger,
        "snapshot": {k: snap.get(k) for k in ("key", "uri", "sha256", "rows", "as_of")},
        "features": {k: feats.get(k) for k in ("train_rows", "holdout_rows", "split", "label_counts")},
    }
