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

    The event's extra carries the new watermark and the row count (for an S3 source, the object
    count and the newest object's URI). If another watch run moved the
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
        expected = decode_watermark(self.found["watermark_from"])
        new = decode_watermark(self.found["watermark_to"])
        current, _ = self.registry.watermark(pipeline)
        moved = current == new and current != expected  # an earlier attempt of this run moved it
        # An S3 source counts objects; the registry's running total counts them then.
        count = int(self.found["objects"] if "objects" in self.found else self.found["rows"])
        if not moved and not self.registry.advance_watermark(
            pipeline, expected=expected, new=new, rows=count, run_id=context["run_id"]
        ):
            raise AirflowSkipException(
                f"watermark of {pipeline} moved past {expected!r} meanwhile; these rows were already announced"
            )
        extra = {
            "pipeline": pipeline,
            "watermark": self.found["watermark_to"],
            "previous_watermark": self.found["watermark_from"],
            "watch_run_id": context["run_id"],
        }
        if "objects" in self.found:
            extra.update(objects=count, newest_object=self.found.get("newest_key"))
        else:
            extra["rows"] = count
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = extra
        self.log.info("New data for %s: %d new, watermark %s -> %s", pipeline, count, expected, new)
        return extra
