"""The mlpipe Airflow plugin: registers mlpipe with the plugins manager (UI views come later)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class MlpipePlugin(AirflowPlugin):
    name = "mlpipe"
