"""NewDataPublishOperator: moves the watermark and emits the pipeline's new_data asset event."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowSkipException

from mlpipe.operators.base import PipelineOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class NewDataPublishOperator(PipelineOperator):
    """Advance the watermark to what the sensor found (compare-and-swap) and emit ``new_data``.

    The event's extra carries the new watermark and the count: for a SQL source the rows (and the
    rows at the watermark's value), for an S3 source the objects and the newest object's URI. If
    another watch run moved the watermark first, this one skips: no event, so the same data never
    starts training twice. A retry after a crash that had already moved the watermark emits the
    event it owes.
    """

    template_fields: Sequence[str] = ("pipeline", "found")

    def __init__(self, *, found: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.found = found

    def execute(self, context: Context) -> dict[str, Any]:
        from mlpipe.contracts import NewObjectsFound, new_data_from_xcom
        from mlpipe.registry import decode_watermark

        pipeline = self.loaded.spec.name
        found = new_data_from_xcom(self.found)
        # An S3 watermark holds the keys at its instant in its value, so it keeps no count at the value.
        objects = isinstance(found, NewObjectsFound)
        count = found.count
        expected = (decode_watermark(found.watermark_from), None if objects else found.at_watermark_from)
        new = (decode_watermark(found.watermark_to), None if objects else found.at_watermark_to)
        current = self.registry.watermark(pipeline)
        moved = current[:2] == new and current[:2] != expected  # an earlier attempt of this run moved it
        if not moved and not self.registry.advance_watermark(
            pipeline,
            expected=expected[0],
            expected_at_value=expected[1],
            new=new[0],
            new_at_value=new[1],
            rows=count,
            run_id=context["run_id"],
        ):
            raise AirflowSkipException(
                f"watermark of {pipeline} moved past {expected!r} meanwhile; these were already announced"
            )
        extra: dict[str, Any] = {
            "pipeline": pipeline,
            "watermark": found.watermark_to,
            "previous_watermark": found.watermark_from,
            "watch_run_id": context["run_id"],
        }
        if objects:
            extra.update(objects=count, newest_object=found.newest_key)
        else:
            extra.update(
                rows=count,
                rows_at_watermark=new[1],
                previous_rows_at_watermark=expected[1],
            )
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = extra
        self.log.info(
            "New data for %s: %d %s, watermark %s (%s at it) -> %s (%s)",
            pipeline,
            count,
            "object(s)" if objects else "row(s)",
            expected[0],
            expected[1],
            new[0],
            new[1],
        )
        return extra
