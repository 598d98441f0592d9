"""NewDataSensor: waits until the pipeline's source has enough rows past its watermark."""

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
    """Done when ``min_new_rows`` rows lie past the watermark; returns their count and the watermark to set.

    Deferrable (the wait runs in the triggerer and holds no worker slot) or, with
    ``deferrable=False``, poking on its own schedule. Either way one aggregate query per check.
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

    def _check(self) -> dict[str, Any]:
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
        need = self.loaded.spec.watch.min_new_rows
        self.log.info("%d new row(s) past watermark %s (need %d)", found["rows"], found["watermark_from"], need)
        return PokeReturnValue(is_done=found["rows"] >= need, xcom_value=found)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
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
            message = f"no {self.loaded.spec.watch.min_new_rows} new rows for {self.pipeline} within {self.timeout} s"
            if self.soft_fail:
                raise AirflowSkipException(message)
            raise AirflowSensorTimeout(message)
        if status != "found":
            raise AirflowException(f"watching {self.pipeline} failed: {event.get('message')}")
        return {k: v for k, v in event.items() if k != "status"}
