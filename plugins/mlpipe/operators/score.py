"""Operator of the score DAG: the champion's predictions for the rows it has not scored yet."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowSkipException

from mlpipe.operators.base import PipelineOperator, fail_fast_on_user_errors, run_info

if TYPE_CHECKING:
    from airflow.sdk import Context


class BatchScoreOperator(PipelineOperator):
    """Score this run's window with the champion into the spec's predictions table or Parquet; skip without one."""

    template_fields: Sequence[str] = ("pipeline", "source_conn_id", "target_conn_id")

    def __init__(self, *, source_conn_id: str | None = None, target_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source_conn_id = source_conn_id
        self.target_conn_id = target_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from datetime import datetime

        from mlpipe.hooks.sql import source_engine, target_engine
        from mlpipe.stages.batch_score import score_spec, score_window

        spec = self.loaded.spec
        with fail_fast_on_user_errors():
            score = score_spec(self.loaded)
        source_id = self.source_conn_id or spec.source.connection_id
        target_id = self.target_conn_id or score.connection_id or source_id
        writes_source = score.output == "table" and target_id == source_id
        with fail_fast_on_user_errors():
            source = source_engine(source_id, read_only=not writes_source)
        target = None
        if score.output == "table":
            with fail_fast_on_user_errors():
                target = source if writes_source else target_engine(target_id)
        info = run_info(context)
        try:
            # A query the source rejects, a tampered champion, a foreign predictions table: input errors,
            # failed at once; connection errors are retried.
            with fail_fast_on_user_errors():
                result = score_window(
                    self.loaded,
                    self.store,
                    self.registry,
                    source,
                    target,
                    run_id=context["run_id"],
                    run_key=self.run_key(context),
                    as_of=datetime.fromisoformat(info["as_of"]),
                )
        finally:
            source.dispose()
            if target is not None and target is not source:
                target.dispose()
        if result.status == "no_champion":
            raise AirflowSkipException(f"{spec.name} has no champion yet: nothing to score with")
        self.log.info(
            "Champion v%s scored %d of %d rows as of %s (%d scored before, %d set aside) into %s",
            result.model_version,
            result.scored,
            result.input_rows,
            result.as_of,
            result.already_scored,
            result.rejected,
            result.output,
        )
        for reason, count in result.reject_reasons.items():
            self.log.warning("  set aside: %d row(s): %s", count, reason)
        self.lineage_result = {
            **result.to_xcom(),
            "source_url": str(source.url),
            "target_url": str(target.url) if target is not None else None,
            "model_uri": self.store.uri_of(self.registry.get_version(spec.name, result.model_version).artifact_key),
        }
        return result.to_xcom()
