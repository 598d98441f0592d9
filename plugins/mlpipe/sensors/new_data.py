"""NewDataSensor: waits until the pipeline's source has enough new data (SQL rows, S3 objects) past its watermark."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout, AirflowSkipException

from mlpipe import config

if TYPE_CHECKING:
    from airflow.sdk import Context

    from mlpipe.contracts import NewObjectsFound, NewRowsFound
    from mlpipe.registry import Watermark
    from mlpipe.spec import LoadedSpec


class NewDataSensor(BaseSensorOperator):
    """Done when ``min_new_rows`` rows lie past the watermark (SQL sources), or when ``min_new_objects``
    objects under the prefix are past it (S3 sources); returns their count and the watermark to set.

    Deferrable (the wait runs in the triggerer and holds no worker slot) or, with
    ``deferrable=False``, poking on its own schedule. Either way one aggregate query, or one LIST
    pass, per check.
    """

    template_fields: Sequence[str] = ("pipeline",)
    ui_color = "#fff4d6"

    def __init__(
        self,
        *,
        pipeline: str,
        registry_conn_id: str = config.REGISTRY_CONN_ID,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.registry_conn_id = registry_conn_id
        self.deferrable = deferrable

    @cached_property
    def loaded(self) -> LoadedSpec:
        from mlpipe.spec import find_spec

        return find_spec(self.pipeline)

    def _database_url(self) -> str:
        """The source's URL for the trigger; a SQLite file checked and opened read-only, as extraction opens it
        (a missing file is an error naming it, never an empty database created by the poll)."""
        from mlpipe.hooks.sql import checked_sqlite_url, database_url

        url = database_url(self.loaded.spec.source.connection_id, config.default_source_url())
        return checked_sqlite_url(url, read_only=True) if url.startswith("sqlite") else url

    def _watermark(self) -> Watermark:
        from mlpipe.hooks.sql import open_registry

        registry = open_registry(self.registry_conn_id)
        try:
            return registry.watermark(self.loaded.spec.name)
        finally:
            registry.dispose()

    def _need(self) -> tuple[int, str]:
        """The minimum batch and what it counts (the key of the check's result)."""
        from mlpipe.sources import describe

        watch = self.loaded.spec.watch
        unit = describe(self.loaded.spec.source).unit
        return {"rows": watch.min_new_rows, "objects": watch.min_new_objects}[unit], unit

    def _check(self) -> NewRowsFound | NewObjectsFound:
        from mlpipe.hooks.source import open_source
        from mlpipe.sources import reader_for

        mark = self._watermark()
        with open_source(self.loaded.spec.source) as handle:
            return reader_for(self.loaded, handle).count_new(mark.value, mark.rows_at_value).found()

    def poke(self, context: Context) -> PokeReturnValue:
        found = self._check()
        need, unit = self._need()
        self.log.info("%d new %s past watermark %s (need %d)", found.count, unit, found.watermark_from, need)
        return PokeReturnValue(is_done=found.count >= need, xcom_value=found.to_xcom())

    def _end_time(self) -> str:
        return (datetime.now(UTC) + timedelta(seconds=self.timeout)).isoformat()

    def _objects_trigger(self, mark: Watermark) -> Any:
        from mlpipe.registry import encode_watermark
        from mlpipe.triggers.new_data import NewObjectsTrigger

        return NewObjectsTrigger(
            source=self.loaded.spec.source.model_dump(mode="json"),
            watermark=None if mark.value is None else encode_watermark(mark.value),
            min_objects=self.loaded.spec.watch.min_new_objects,
            poll_interval=self.poke_interval,
            end_time=self._end_time(),
        )

    def _rows_trigger(self, mark: Watermark) -> Any:
        from mlpipe.registry import encode_watermark
        from mlpipe.triggers.new_data import NewRowsTrigger

        source = self.loaded.spec.source
        return NewRowsTrigger(
            database_url=self._database_url(),
            table=source.table,
            column=source.watermark_column,
            watermark=None if mark.value is None else encode_watermark(mark.value),
            at_watermark=mark.rows_at_value,
            min_rows=self.loaded.spec.watch.min_new_rows,
            poll_interval=self.poke_interval,
            end_time=self._end_time(),
        )

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        # The triggerer polls with what the watch counts: rows of a table, or objects under a prefix.
        make_trigger = {"rows": self._rows_trigger, "objects": self._objects_trigger}[self._need()[1]]
        self.defer(
            trigger=make_trigger(self._watermark()),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        from mlpipe.contracts import new_data_from_xcom

        status = event.get("status")
        if status == "timeout":
            need, unit = self._need()
            message = f"no {need} new {unit} for {self.pipeline} within {self.timeout} s"
            if self.soft_fail:
                raise AirflowSkipException(message)
            raise AirflowSensorTimeout(message)
        if status != "found":
            raise AirflowException(f"watching {self.pipeline} failed: {event.get('message')}")
        return new_data_from_xcom({k: v for k, v in event.items() if k != "status"}).to_xcom()
