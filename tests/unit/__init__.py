"""Unit tests of the pure core (no Airflow): spec, storage, registry and the stages."""
