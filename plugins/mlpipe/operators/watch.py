"""NewDataPublishOperator: moves the watermark and emits the pipeline's new_data asset event."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowSkipException

from mlpipe.operators.training import PipelineOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class NewDataPublishOperator(PipelineOperator):
    """Advance the watermark to what the sensor found (compare-and-swap) and emit ``new_data``.

    The event's extra carries the new watermark (value and rows at it) and the row count. If another watch run moved the
    watermark first, this one skips: no event, so the same rows never start training twice. A
    retry after a crash that had already moved the watermark emits the event it owes.
    """

    template_fields: Sequence[str] = ("pipeline", "found")

    def __init__(self, *, found: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.found = found

    def execute(self, context: Context) -> dict[str, Any]:
        from mlpipe.registry import decode_watermark

        pipeline = self.loaded.spec.name
        found = self.found
        expected = (decode_watermark(found["watermark_from"]), found["at_watermark_from"])
        new = (decode_watermark(found["watermark_to"]), int(found["at_watermark_to"]))
        current = self.registry.watermark(pipeline)
        moved = current[:2] == new and current[:2] != expected  # an earlier attempt of this run moved it
        if not moved and not self.registry.advance_watermark(
            pipeline,
            expected=expected[0],
            expected_at_value=expected[1],
            new=new[0],
            new_at_value=new[1],
            rows=int(found["rows"]),
            run_id=context["run_id"],
        ):
            raise AirflowSkipException(
                f"watermark of {pipeline} moved past {expected!r} meanwhile; these rows were already announced"
            )
        extra = {
            "pipeline": pipeline,
            "watermark": found["watermark_to"],
            "rows_at_watermark": int(found["at_watermark_to"]),
            "previous_watermark": found["watermark_from"],
            "previous_rows_at_watermark": found["at_watermark_from"],
            "rows": int(found["rows"]),
            "watch_run_id": context["run_id"],
        }
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = extra
        self.log.info(
            "New data for %s: %d row(s), watermark %s (%s row(s) at it) -> %s (%d)",
            pipeline,
            extra["rows"],
            expected[0],
            expected[1],
            new[0],
            new[1],
        )
        return extra
