"""Champion changes by hand: the training run's Params, the human approval before promotion, rollback.

A training run can be told to force the promotion (with a reason) and to train only some of the
spec's candidates; :func:`train_params` checks those Params where the run starts, so a bad value
fails before anything is trained. With ``approval: required`` in the spec a person approves or
rejects the blessed model in the Airflow UI (:class:`PromotionApproveOperator`). ``<name>_rollback``
makes an earlier version champion again (:class:`ChampionRollbackOperator`). Every champion change
emits the pipeline's champion asset event, whose extra
:func:`mlpipe.assets.champion_event_extra` builds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict

from mlpipe.errors import ParamsError
from mlpipe.operators.base import (
    PipelineOperator,
    actor_of,
    emit_champion_event,
    fail_fast_on_user_errors,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from mlpipe.contracts import Verdict
    from mlpipe.spec import PipelineSpec


def rollback_param_specs() -> dict[str, Param]:
    """The Params of ``<name>_rollback``: both required, no defaults."""
    return {
        "version": Param(
            type="integer",
            minimum=1,
            title="Version",
            description="The registered model version to make champion again (see the Models view or "
            "`python -m mlpipe registry list <pipeline>`).",
        ),
        "reason": Param(
            type="string",
            minLength=1,
            title="Reason",
            description="Why the rollback is needed; kept in the champion log with who triggered the run.",
        ),
    }


def rollback_params(params: Any) -> tuple[int, str]:
    """The rollback run's ``version`` and ``reason``; a missing or bad one raises :class:`ParamsError`."""
    params = params or {}
    version, reason = params.get("version"), params.get("reason")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ParamsError(f"param version: a model version number is required, got {version!r}")
    if not isinstance(reason, str) or not reason.strip():
        raise ParamsError("param reason: a rollback needs a reason (kept in the champion log)")
    return version, reason


def verdict_summary(verdict: Verdict) -> str:
    """The approval form's body: what would be promoted, its metrics against the champion, and why."""
    best = verdict.best_candidate
    metric = verdict.primary_metric
    lines = [f"**{verdict.pipeline}**: the gate's decision is **{verdict.decision}** (best candidate `{best}`)."]
    if verdict.forced:
        lines.append(f"\n**Forced** by the run although not blessed: {verdict.force_reason}")
    # The XCom form: an undefined (NaN) metric shows as None, as it always has.
    candidates = verdict.to_xcom()["candidates"]
    lines += ["", "| | " + " | ".join(candidates.get(best, {})) + " |"]
    lines.append("|---" * (1 + len(candidates.get(best, {}))) + "|")

    def row(name: str, metrics: dict[str, Any]) -> str:
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in metrics.values()]
        return f"| {name} | " + " | ".join(cells) + " |"

    lines.append(row(f"candidate `{best}`", candidates.get(best, {})))
    if verdict.champion_metrics:
        champ = verdict.to_xcom()["champion_metrics"]
        lines.append(row(f"champion v{verdict.champion_version}", {k: champ.get(k) for k in candidates[best]}))
    elif verdict.champion_version is not None:
        lines.append(f"\nChampion v{verdict.champion_version} could not be scored.")
    else:
        lines.append("\nNo champion yet: this would be the first.")
    lines += ["", f"Primary metric `{metric}`. The gate's reasons:"] + [f"- {r}" for r in verdict.reasons]
    if verdict.report_uri:
        lines.append(f"\nEvaluation report: {verdict.report_uri} (also the task button of `evaluate_candidates`).")
    lines.append("\n**Approve** promotes it; **Reject** (give a reason) leaves the champion as it is.")
    return "\n".join(lines)


class RunParamsCheckOperator(PipelineOperator):
    """Check the training run's Params before anything runs; returns the candidates to train (mapped over)."""

    def execute(self, context: Context) -> list[str]:
        params = self.train_params(context)
        if params.force_reason is not None:
            self.log.info("This run forces the promotion: %s", params.force_reason)
        self.log.info("Candidates to train: %s", ", ".join(params.candidates))
        return params.candidates


def approval_args(spec: PipelineSpec) -> dict[str, Any]:
    """The approval operator's own deadline and default answer, from the spec's ``approval``."""
    if spec.approval.timeout is None:
        return {}
    return {
        "response_timeout": timedelta(seconds=spec.approval.timeout),
        "defaults": ["Approve" if spec.approval.default == "approve" else "Reject"],
    }


def timeout_answer(timeout: timedelta | None) -> dict[str, Any]:
    """Who answered, and why, when nobody did: the default taken at the deadline."""
    from mlpipe.spec import format_duration

    within = format_duration(int(timeout.total_seconds())) if timeout else "the deadline"
    return {"by": "timeout", "reason": f"no answer within {within}"}


class PromotionApproveOperator(ApprovalOperator):
    """Ask a person to approve the promotion of the blessed (or forced) model; ask nothing otherwise.

    Unlike the plain :class:`ApprovalOperator`, a rejection does not skip ``promote_model``: the
    answer goes to it by XCom, and it records "rejected by <user>: <reason>" and writes nothing.
    """

    template_fields: Sequence[str] = ("subject", "body", "pipeline", "verdict")
    ui_color = "#fdf2d0"

    def __init__(self, *, pipeline: str, verdict: Any, **kwargs: Any) -> None:
        kwargs.setdefault("subject", f"Promote the new {pipeline} model?")
        # Under a DAG, Airflow hands every task the DAG's Params too (marked "dag"; the form leaves them out).
        params = ParamsDict(kwargs.pop("params", None) or {})
        if "reason" not in params:
            params["reason"] = Param(
                "",
                type="string",
                title="Reason",
                description="Why (kept with the promotion's result; say why when rejecting).",
                source="task",
            )
        kwargs["params"] = params
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.verdict = verdict

    def execute(self, context: Context) -> dict[str, Any]:
        from mlpipe.contracts import Verdict
        from mlpipe.stages.promote import approval_answer

        verdict = Verdict.from_xcom(self.verdict)
        if not verdict.blessed and not verdict.forced:
            self.log.info("Nothing to approve: the verdict did not bless a model and the run does not force one")
            return approval_answer(None).to_xcom()
        self.body = verdict_summary(verdict)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        from dataclasses import replace

        from mlpipe.stages.promote import approval_answer

        # The base class validates the response; ApprovalOperator's own would skip promote_model.
        HITLOperator.execute_complete(self, context, event)
        answer = approval_answer(event)
        if event.get("timedout"):
            answer = replace(answer, **timeout_answer(self.response_timeout))
        self.hitl_summary_extra["approved"] = answer.approved
        self.log.info("%s by %s: %s", "Approved" if answer.approved else "Rejected", answer.by, answer.reason)
        return answer.to_xcom()


class ChampionRollbackOperator(PipelineOperator):
    """Make the run's Param ``version`` champion again, with the Param ``reason``; emit the champion event.

    Appends a "rollback" event to the champion log (never edits it), crediting the run's triggering
    user. A retry whose earlier attempt already appended it emits the event it owes.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        with fail_fast_on_user_errors():
            version, reason = rollback_params(context.get("params"))
        pipeline = self.loaded.spec.name
        history = self.registry.champion_history(pipeline)
        if history and history[-1].run_id == context["run_id"] and history[-1].action == "rollback":
            event = history[-1]
            self.log.info("An earlier attempt of this run rolled back already (seq %d)", event.seq)
        else:
            # An unknown version, or the champion already: the registry's RegistryError, not retried.
            with fail_fast_on_user_errors():
                event = self.registry.rollback(
                    pipeline, version, reason=reason, actor=actor_of(context), run_id=context["run_id"]
                )
        self.log.info(
            "Rolled back %s: v%s -> v%s by %s: %s", pipeline, event.previous_version, event.version, event.actor, reason
        )
        return emit_champion_event(context, self.outlets, event)
