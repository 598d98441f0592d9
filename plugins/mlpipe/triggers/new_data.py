"""Triggers of the new-data watch: poll the source from the triggerer until enough data lies past the watermark.

NewRowsTrigger counts rows of a SQL table, NewObjectsTrigger objects under an S3 prefix.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from mlpipe.contracts import NewObjectsFound, NewRowsFound


class SourcePollTrigger(BaseTrigger):
    """Checks the source every ``poll_interval`` seconds (in a thread, so the triggerer's loop never
    blocks) and fires one event: ``found`` once ``_check()`` counts ``minimum`` new items, ``timeout``
    at ``end_time``, ``error`` when a check raises."""

    minimum: int
    poll_interval: float
    end_time: str

    def _check(self) -> NewRowsFound | NewObjectsFound:
        raise NotImplementedError

    def _describe(self) -> str:
        return type(self).__name__

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
            if found.count >= self.minimum:
                yield TriggerEvent({"status": "found", **found.to_xcom()})
                return
            self.log.info("%d new %s of %s; waiting for %d", found.count, found.unit, self._describe(), self.minimum)
            remaining = (end - datetime.now(UTC)).total_seconds()
            if remaining <= 0:
                yield TriggerEvent({"status": "timeout", **found.to_xcom()})
                return
            await asyncio.sleep(min(self.poll_interval, remaining))


class NewRowsTrigger(SourcePollTrigger):
    """Fires one event once ``min_rows`` rows of ``table`` lie past the watermark.

    The watermark is ``column``'s value ``watermark`` (typed encoding, see ``encode_watermark``) with
    ``at_watermark`` rows at that value already announced (see ``mlpipe.sources.sql``).

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

    @property
    def minimum(self) -> int:
        return self.min_rows

    def _describe(self) -> str:
        return f"{self.table} past {self.watermark}"

    def _check(self) -> NewRowsFound:
        import sqlalchemy as sa

        from mlpipe.registry import decode_watermark
        from mlpipe.sources.sql import count_new_rows

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
        return found.found()


class NewObjectsTrigger(SourcePollTrigger):
    """Fires one event once ``min_objects`` objects of an S3 source lie past the watermark.

    It carries the source section of the spec and the id of its AWS Connection, never credentials:
    the triggerer resolves the Connection itself (its secrets backends, or the API server for
    Connections kept in Airflow's database), once per deferral. One LIST pass per check.
    """

    def __init__(
        self,
        *,
        source: dict[str, Any],
        watermark: str | None,
        min_objects: int,
        poll_interval: float,
        end_time: str,
    ) -> None:
        super().__init__()
        self.source = source
        self.watermark = watermark
        self.min_objects = min_objects
        self.poll_interval = poll_interval
        self.end_time = end_time
        self._client: Any = None

    @property
    def minimum(self) -> int:
        return self.min_objects

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__name__}",
            {
                "source": self.source,
                "watermark": self.watermark,
                "min_objects": self.min_objects,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
            },
        )

    def _describe(self) -> str:
        return f"s3://{self.source.get('bucket')}/{self.source.get('prefix', '')}"

    def _check(self) -> NewObjectsFound:
        from mlpipe.hooks.aws import s3_client
        from mlpipe.registry import decode_watermark
        from mlpipe.sources.s3 import count_new_objects
        from mlpipe.spec import S3SourceSpec

        source = S3SourceSpec.model_validate(self.source)
        if self._client is None:
            self._client = s3_client(source.connection_id)
        return count_new_objects(self._client, source, watermark=decode_watermark(self.watermark)).found()
