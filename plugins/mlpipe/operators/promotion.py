"""Champion changes by hand: the training run's Params, the human approval before promotion, rollback.

A training run can be told to force the promotion (with a reason) and to train only some of the
spec's candidates; :func:`train_params` checks those Params where the run starts, so a bad value
fails before anything is trained. With ``approval: required`` in the spec a person approves or
rejects the blessed model in the Airflow UI (:class:`PromotionApproveOperator`). ``<name>_rollback``
makes an earlier version champion again (:class:`ChampionRollbackOperator`). Every champion change
emits the pipeline's champion asset event, whose extra :func:`champion_event_extra` builds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import AirflowFailException

from mlpipe.operators.training import PipelineOperator, fail_fast_on_user_errors, run_info

if TYPE_CHECKING:
    from airflow.sdk import Context

    from mlpipe.registry import ChampionEvent
    from mlpipe.spec import PipelineSpec


@dataclass(frozen=True)
class TrainParams:
    """A training run's Params, checked against the spec."""

    force_reason: str | None  # set (non-empty) when the run forces the promotion
    candidates: list[str]  # the candidates to train and judge, in spec order
    fresh_training: bool = False  # train and evaluate even when an earlier run had the same inputs


def train_param_specs(spec: PipelineSpec) -> dict[str, Param]:
    """The Params of ``<name>_train``, as its trigger form shows them."""
    names = [c.name for c in spec.candidates]
    return {
        "force_promotion": Param(
            False,
            type="boolean",
            title="Force the promotion",
            description="Promote the best candidate even if the gate rejects it (or the champion cannot be "
            "scored). Needs force_reason; the champion log records a 'force' event with it and who triggered "
            "the run, and the verdict still says the model was not blessed.",
        ),
        "force_reason": Param(
            "",
            type="string",
            title="Why force it",
            description="Required when force_promotion is on: why this model must be champion (kept in the "
            "champion log). Ignored otherwise.",
        ),
        "fresh_training": Param(
            False,
            type="boolean",
            title="Train afresh",
            description="Train and evaluate even if an earlier run had the same data (snapshot sha256), spec "
            "and code version; by default such a run takes that run's trained candidates (and its evaluation "
            "while the champion is unchanged) instead of training again.",
        ),
        "candidates": Param(
            names,
            type="array",
            items={"type": "string", "enum": names},
            minItems=1,
            uniqueItems=True,
            title="Candidates to train",
            description="Train and judge only these of the spec's candidates (default: all of them: "
            + ", ".join(names)
            + ").",
        ),
    }


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


def train_params(params: Any, spec: PipelineSpec) -> TrainParams:
    """``params`` (the run's, possibly missing keys) checked against ``spec``; a bad one fails the run."""
    params = params or {}
    force = params.get("force_promotion", False)
    if not isinstance(force, bool):
        raise AirflowFailException(f"param force_promotion: must be true or false, got {force!r}")
    reason = params.get("force_reason") or ""
    if not isinstance(reason, str):
        raise AirflowFailException(f"param force_reason: must be text, got {reason!r}")
    if force and not reason.strip():
        raise AirflowFailException(
            f"param force_reason: forcing the promotion of {spec.name} (force_promotion=true) needs a reason; "
            "trigger the run again with force_reason set (it is kept in the champion log)"
        )
    known = [c.name for c in spec.candidates]
    chosen = params.get("candidates") or known
    if isinstance(chosen, str) or not all(isinstance(c, str) for c in chosen):
        raise AirflowFailException(f"param candidates: must be a list of candidate names, got {chosen!r}")
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise AirflowFailException(
            f"param candidates: {unknown} not in the spec of {spec.name} ({spec_file(spec)}); its candidates: {known}"
        )
    fresh = params.get("fresh_training", False)
    if not isinstance(fresh, bool):
        raise AirflowFailException(f"param fresh_training: must be true or false, got {fresh!r}")
    return TrainParams(reason.strip() if force else None, [c for c in known if c in chosen], fresh)


def spec_file(spec: PipelineSpec) -> str:
    return f"include/pipelines/{spec.name}.yaml"


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


def emit_champion_event(context: Context, outlets: Sequence[Any], event: ChampionEvent) -> dict[str, Any]:
    """Put ``event`` in the extra of the task's champion asset outlet (sent when the task succeeds)."""
    extra = champion_event_extra(event)
    for outlet in outlets:
        context["outlet_events"][outlet].extra = extra
    return extra


def actor_of(context: Context) -> str:
    """Who a champion change by hand is credited to: the run's triggering user, else "airflow"."""
    return run_info(context)["triggering_user"] or "airflow"


def verdict_summary(verdict: dict[str, Any], force_reason: str | None) -> str:
    """The approval form's body: what would be promoted, its metrics against the champion, and why."""
    best = verdict.get("best_candidate")
    metric = verdict.get("primary_metric")
    lines = [f"**{verdict['pipeline']}**: the gate's decision is **{verdict['decision']}** (best candidate `{best}`)."]
    if force_reason is not None and not verdict["blessed"]:
        lines.append(f"\n**Forced** by the run although not blessed: {force_reason}")
    lines += ["", "| | " + " | ".join(verdict["candidates"].get(best, {})) + " |"]
    lines.append("|---" * (1 + len(verdict["candidates"].get(best, {}))) + "|")

    def row(name: str, metrics: dict[str, Any]) -> str:
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in metrics.values()]
        return f"| {name} | " + " | ".join(cells) + " |"

    lines.append(row(f"candidate `{best}`", verdict["candidates"].get(best, {})))
    if verdict.get("champion_metrics"):
        champ = verdict["champion_metrics"]
        lines.append(
            row(f"champion v{verdict['champion_version']}", {k: champ.get(k) for k in verdict["candidates"][best]})
        )
    elif verdict.get("champion_version") is not None:
        lines.append(f"\nChampion v{verdict['champion_version']} could not be scored.")
    else:
        lines.append("\nNo champion yet: this would be the first.")
    lines += ["", f"Primary metric `{metric}`. The gate's reasons:"] + [f"- {r}" for r in verdict["reasons"]]
    if verdict.get("report_uri"):
        lines.append(f"\nEvaluation report: {verdict['report_uri']} (also the task button of `evaluate_candidates`).")
    lines.append("\n**Approve** promotes it; **Reject** (give a reason) leaves the champion as it is.")
    return "\n".join(lines)


class RunParamsCheckOperator(PipelineOperator):
    """Check the training run's Params before anything runs; returns the candidates to train (mapped over)."""

    def execute(self, context: Context) -> list[str]:
        params = train_params(context.get("params"), self.loaded.spec)
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
        from mlpipe.spec import find_spec
        from mlpipe.stages.promote import approval_answer

        with fail_fast_on_user_errors():
            spec = find_spec(self.pipeline).spec
        force_reason = train_params(context.get("params"), spec).force_reason
        if not self.verdict["blessed"] and force_reason is None:
            self.log.info("Nothing to approve: the verdict did not bless a model and the run does not force one")
            return approval_answer(None)
        self.body = verdict_summary(self.verdict, force_reason)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        from mlpipe.stages.promote import approval_answer

        # The base class validates the response; ApprovalOperator's own would skip promote_model.
        HITLOperator.execute_complete(self, context, event)
        answer = approval_answer(event)
        if event.get("timedout"):
            answer.update(timeout_answer(self.response_timeout))
        self.hitl_summary_extra["approved"] = answer["approved"]
        self.log.info("%s by %s: %s", "Approved" if answer["approved"] else "Rejected", answer["by"], answer["reason"])
        return answer


class ChampionRollbackOperator(PipelineOperator):
    """Make the run's Param ``version`` champion again, with the Param ``reason``; emit the champion event.

    Appends a "rollback" event to the champion log (never edits it), crediting the run's triggering
    user. A retry whose earlier attempt already appended it emits the event it owes.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        from mlpipe.errors import RegistryError

        params = context.get("params") or {}
        version, reason = params.get("version"), params.get("reason")
        if isinstance(version, bool) or not isinstance(version, int):
            raise AirflowFailException(f"param version: a model version number is required, got {version!r}")
        if not isinstance(reason, str) or not reason.strip():
            raise AirflowFailException("param reason: a rollback needs a reason (kept in the champion log)")
        pipeline = self.loaded.spec.name
        history = self.registry.champion_history(pipeline)
        if history and history[-1].run_id == context["run_id"] and history[-1].action == "rollback":
            event = history[-1]
            self.log.info("An earlier attempt of this run rolled back already (seq %d)", event.seq)
        else:
            try:
                event = self.registry.rollback(
                    pipeline, version, reason=reason, actor=actor_of(context), run_id=context["run_id"]
                )
            except RegistryError as exc:
                raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
        self.log.info(
            "Rolled back %s: v%s -> v%s by %s: %s", pipeline, event.previous_version, event.version, event.actor, reason
        )
        return emit_champion_event(context, self.outlets, event)
