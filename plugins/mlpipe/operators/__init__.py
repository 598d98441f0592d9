"""Airflow operators: thin adapters that resolve Connections, call one stage and return a small dict."""
