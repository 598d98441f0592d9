"""Pipeline stages: the work itself, as plain functions; no Airflow imports here."""
