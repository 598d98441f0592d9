"""The Models view over an S3 artifact store: moto's server on loopback, reached through an ``aws`` Connection.

The store is the one the operators get (``mlpipe_store`` of type ``aws``, via the amazon provider's
S3Hook); the pipeline history is written to it, and the view's app reads pages and report files back
over HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import make_s3_client, s3_connection_uri

from mlpipe.storage import S3Store, run_key
from ui.models_home import PIPELINE, RUNS, build_history


@pytest.fixture(scope="module")
def s3_view(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import os

    from airflow.api_fastapi.app import init_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.testclient import TestClient

    from mlpipe import config
    from mlpipe.hooks.sql import open_registry
    from mlpipe.hooks.store import open_store
    from mlpipe.spec import load_spec
    from mlpipe.ui.app import create_app

    bucket = f"mlpipe-ui-{uuid.uuid4().hex[:12]}"
    make_s3_client(s3_endpoint).create_bucket(Bucket=bucket)
    home = tmp_path_factory.mktemp("s3-view")
    env = {
        "AIRFLOW_CONN_MLPIPE_STORE": s3_connection_uri(s3_endpoint, bucket=bucket, prefix="team/mlpipe"),
        "MLPIPE_HOME": str(home),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        store = open_store()
        assert isinstance(store, S3Store)
        registry = open_registry()
        history = build_history(load_spec(config.pipelines_dir() / f"{PIPELINE}.yaml"), store, registry)
        init_auth_manager()  # may_read asks Airflow's auth manager
        app = create_app()
        app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="admin", role="admin")
        with TestClient(app) as client:
            yield {"client": client, "store": store, **history}
        registry.dispose()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_pipeline_page_and_json_read_the_bucket(s3_view) -> None:
    client = s3_view["client"]
    detail = client.get(f"/api/pipelines/{PIPELINE}").json()
    assert [r["run_id"] for r in detail["runs"]] == [r.run_id for r in reversed(RUNS)]
    assert "evaluation_report" in detail["runs"][0]["links"] and "evaluation_report" not in detail["runs"][1]["links"]
    page = client.get(f"/pipelines/{PIPELINE}")
    assert page.status_code == 200 and page.text.count("/drift-report") == 3


def test_reports_come_from_the_bucket_with_their_types(s3_view) -> None:
    client = s3_view["client"]
    docs = client.get(f"/pipelines/{PIPELINE}/runs/{RUNS[0].key}/data-docs")
    assert docs.status_code == 200 and docs.headers["content-type"] == "text/html; charset=utf-8"
    assert f"Validation of {RUNS[0].key}" in docs.text
    report = client.get(f"/pipelines/{PIPELINE}/runs/{RUNS[3].key}/evaluation-report")
    plot = client.get(str(report.url).rsplit("/", 1)[0] + "/roc.png")
    assert plot.headers["content-type"] == "image/png" and plot.content.startswith(b"\x89PNG")
    drift = client.get(f"/pipelines/{PIPELINE}/monitor/{run_key(s3_view['checks'][0]['run_id'])}/drift-report")
    assert drift.status_code == 200 and "<img" in drift.text


@pytest.mark.parametrize(
    "path",
    [
        "/artifacts/flights_delay/%2e%2e/%2e%2e/x.html",
        "/artifacts/flights_delay/..%2f..%2fteam/x.html",
        "/artifacts/flights_delay/runs/none.html",
    ],
)
def test_escapes_and_missing_keys_are_404(s3_view, path: str) -> None:
    assert s3_view["client"].get(path).status_code == 404


def test_models_are_not_served(s3_view) -> None:
    key = s3_view["versions"][1].artifact_key
    response = s3_view["client"].get(f"/artifacts/{key}")
    assert response.status_code == 404 and "not a report file" in response.text
