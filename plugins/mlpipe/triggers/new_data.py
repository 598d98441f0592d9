"""NewRowsTrigger: polls the source from the triggerer until enough rows lie past the watermark."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class NewRowsTrigger(BaseTrigger):
    """Fires one event once ``min_rows`` rows of ``table`` lie past the watermark.

    The watermark is ``column``'s value ``watermark`` (typed encoding, see ``encode_watermark``) with
    ``at_watermark`` rows at that value already announced (see ``mlpipe.stages.watch``).

    The database URL comes from the deferring sensor, which resolved the Connection; Airflow keeps
    trigger arguments encrypted. The query runs in a thread so the triggerer's loop never blocks.
    """

    def __init__(
        self,
        *,
        database_url: str,
        table: str,
        column: str,
        watermark: str | None,
        at_watermark: int | None,
        min_rows: int,
        poll_interval: float,
        end_time: str,
    ) -> None:
        super().__init__()
        self.database_url = database_url
        self.table = table
        self.column = column
        self.watermark = watermark
        self.at_watermark = at_watermark
        self.min_rows = min_rows
        self.poll_interval = poll_interval
        self.end_time = end_time

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__name__}",
            {
                "database_url": self.database_url,
                "table": self.table,
                "column": self.column,
                "watermark": self.watermark,
                "at_watermark": self.at_watermark,
                "min_rows": self.min_rows,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
            },
        )

    def _check(self) -> dict[str, Any]:
        import sqlalchemy as sa

        from mlpipe.registry import decode_watermark
        from mlpipe.stages.watch import count_new_rows

        engine = sa.create_engine(self.database_url)
        try:
            found = count_new_rows(
                engine,
                table=self.table,
                column=self.column,
                watermark=decode_watermark(self.watermark),
                at_watermark=self.at_watermark,
            )
        finally:
            engine.dispose()
        return found.as_dict()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # The deadline is the trigger's own, so the wait also ends where no triggerer enforces the
        # task's timeout (``airflow dags test`` runs triggers inline).
        end = datetime.fromisoformat(self.end_time)
        while True:
            try:
                found = await asyncio.to_thread(self._check)
            except Exception as exc:  # surfaced in the task, which fails (and retries) with it
                yield TriggerEvent({"status": "error", "message": f"{type(exc).__name__}: {exc}"})
                return
            if found["rows"] >= self.min_rows:
                yield TriggerEvent({"status": "found", **found})
                return
            self.log.info(
                "%d new row(s) of %s past %s; waiting for %d", found["rows"], self.table, self.watermark, self.min_rows
            )
            remaining = (end - datetime.now(UTC)).total_seconds()
            if remaining <= 0:
                yield TriggerEvent({"status": "timeout", **found})
                return
            await asyncio.sleep(min(self.poll_interval, remaining))
