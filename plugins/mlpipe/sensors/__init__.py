"""Sensors: wait for something outside Airflow (new source data) before a DAG goes on."""
