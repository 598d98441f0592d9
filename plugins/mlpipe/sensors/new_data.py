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
        from mlpipe.operators.resources import database_url

        return database_url(self.loaded.spec.source.connection_id, config.default_source_url())

    def _watermark(self) -> Watermark:
        from mlpipe.operators.resources import open_registry

        registry = open_registry(self.registry_conn_id)
        try:
            return registry.watermark(self.loaded.spec.name)
        finally:
            registry.dispose()

    def _need(self) -> tuple[int, str]:
        """The minimum batch and what it counts (the key of the check's result)."""
        watch = self.loaded.spec.watch
        if self.loaded.spec.source.kind == "s3":
            return watch.min_new_objects, "objects"
        return watch.min_new_rows, "rows"

    def _check_objects(self) -> dict[str, Any]:
        from mlpipe.operators.resources import s3_client
        from mlpipe.stages.s3_source import count_new_objects

        source = self.loaded.spec.source
        return count_new_objects(s3_client(source.connection_id), source, watermark=self._watermark().value).as_dict()

    def _check(self) -> dict[str, Any]:
        if self.loaded.spec.source.kind == "s3":
            return self._check_objects()
        import sqlalchemy as sa

        from mlpipe.stages.watch import count_new_rows

        source = self.loaded.spec.source
        mark = self._watermark()
        engine = sa.create_engine(self._database_url())
        try:
            found = count_new_rows(
                engine,
                table=source.table,
                column=source.watermark_column,
                watermark=mark.value,
                at_watermark=mark.rows_at_value,
            )
        finally:
            engine.dispose()
        return found.as_dict()

    def poke(self, context: Context) -> PokeReturnValue:
        found = self._check()
        need, unit = self._need()
        self.log.info("%d new %s past watermark %s (need %d)", found[unit], unit, found["watermark_from"], need)
        return PokeReturnValue(is_done=found[unit] >= need, xcom_value=found)

    def _objects_trigger(self) -> Any:
        from mlpipe.registry import encode_watermark
        from mlpipe.triggers.new_data import NewObjectsTrigger

        watermark = self._watermark().value
        return NewObjectsTrigger(
            source=self.loaded.spec.source.model_dump(mode="json"),
            watermark=None if watermark is None else encode_watermark(watermark),
            min_objects=self.loaded.spec.watch.min_new_objects,
            poll_interval=self.poke_interval,
            end_time=(datetime.now(UTC) + timedelta(seconds=self.timeout)).isoformat(),
        )

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        if self.loaded.spec.source.kind == "s3":
            self.defer(
                trigger=self._objects_trigger(),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.timeout),
            )
        from mlpipe.registry import encode_watermark
        from mlpipe.triggers.new_data import NewRowsTrigger

        source = self.loaded.spec.source
        mark = self._watermark()
        self.defer(
            trigger=NewRowsTrigger(
                database_url=self._database_url(),
                table=source.table,
                column=source.watermark_column,
                watermark=None if mark.value is None else encode_watermark(mark.value),
                at_watermark=mark.rows_at_value,
                min_rows=self.loaded.spec.watch.min_new_rows,
                poll_interval=self.poke_interval,
                end_time=(datetime.now(UTC) + timedelta(seconds=self.timeout)).isoformat(),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        status = event.get("status")
        if status == "timeout":
            need, unit = self._need()
            message = f"no {need} new {unit} for {self.pipeline} within {self.timeout} s"
            if self.soft_fail:
                raise AirflowSkipException(message)
            raise AirflowSensorTimeout(message)
        if status != "found":
            raise AirflowException(f"watching {self.pipeline} failed: {event.get('message')}")
        return {k: v for k, v in event.items() if k != "status"}
