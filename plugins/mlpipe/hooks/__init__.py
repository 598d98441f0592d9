"""Airflow Connections -> what mlpipe reads and writes through: SQLAlchemy engines, boto3 clients, registry, store.

One place, like a provider's ``hooks/``: SQL Connections resolve through their provider's
``DbApiHook`` (:mod:`mlpipe.hooks.sql`), AWS ones through the amazon provider's ``S3Hook``
(:mod:`mlpipe.hooks.aws`). A connection id that is not defined means the embedded default under
MLPIPE_HOME, so the same DAGs run with zero servers.
"""
