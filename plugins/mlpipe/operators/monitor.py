"""Operators of the monitor DAG: check drift against the champion, announce a breach once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowSkipException

from mlpipe import layout
from mlpipe.operators.base import PipelineOperator, fail_fast_on_user_errors
from mlpipe.operators.links import DriftReportLink

if TYPE_CHECKING:
    from airflow.sdk import Context


class DriftCheckOperator(PipelineOperator):
    """Drift and performance of the newest source window against the champion; recorded in the registry."""

    operator_extra_links = (DriftReportLink(),)

    def execute(self, context: Context) -> dict[str, Any]:
        from mlpipe.hooks.source import open_source
        from mlpipe.stages.monitor import check_drift

        with fail_fast_on_user_errors(), open_source(self.loaded.spec.source) as source:
            result = check_drift(
                self.loaded,
                self.store,
                self.registry,
                source,
                run_id=context["run_id"],
                report_prefix=layout.monitor_prefix(self.loaded.spec.name, self.run_key(context)),
            )
        self.log.info(
            "Drift of %s..%s (%d rows) vs champion v%s: %s%s; report %s",
            result.window_start,
            result.window_end,
            result.window_rows,
            result.champion_version,
            result.verdict,
            " (BREACH)" if result.breach else "",
            result.report_uri,
        )
        for reason in result.reasons:
            self.log.info("  %s", reason)
        return result.to_xcom()


class DriftAnnounceOperator(PipelineOperator):
    """Emit the pipeline's drift asset event with the figures, once per breached window; else skip."""

    template_fields: Sequence[str] = ("pipeline", "check")

    def __init__(self, *, check: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check

    def execute(self, context: Context) -> dict[str, Any]:
        from mlpipe.contracts import DriftCheck

        check = DriftCheck.from_xcom(self.check)
        if not check.emit:
            why = "already announced for this window" if check.breach else f"verdict {check.verdict}"
            raise AirflowSkipException(f"no drift event: {why}")
        extra = check.event_extra(context["run_id"])
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = extra
        self.log.info("Drift announced for %s: %s", check.pipeline, "; ".join(check.reasons))
        return extra
