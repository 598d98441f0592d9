"""Tests of the Models view (the plugin app, its pages and charts) and of the Airflow UI in a real browser."""
