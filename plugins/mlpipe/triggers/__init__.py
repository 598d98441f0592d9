"""Triggers run by Airflow's triggerer for deferred mlpipe sensors (they live under plugins/, not dags/)."""
