"""The Models view: mlpipe's pages inside the Airflow web UI (served by plugins/mlpipe_plugin.py)."""
