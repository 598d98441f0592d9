"""AWS Connections -> boto3 S3 clients, through the amazon provider's S3Hook."""

from __future__ import annotations

from typing import Any


def s3_client(conn_id: str) -> Any:
    """A boto3 S3 client for the Airflow AWS Connection ``conn_id``, through the amazon provider's hook.

    The connection carries what boto3 needs the way Airflow users already write it: login/password
    (or the environment's credentials chain), extra ``region_name``, ``endpoint_url`` for an
    S3-compatible store (MinIO, moto) and ``config_kwargs`` for botocore (e.g.
    ``{"s3": {"addressing_style": "path"}}``).
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id).get_conn()
