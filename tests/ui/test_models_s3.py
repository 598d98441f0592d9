"""The Models view over an S3 artifact store (moto's server on loopback): pages and report files by key."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from unit.test_s3_store import make_client, s3_endpoint  # noqa: F401 - s3_endpoint is a fixture

from mlpipe.storage import S3Store, run_key
from ui.models_home import PIPELINE, RUNS, build_history


@pytest.fixture(scope="module")
def s3_home(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:  # noqa: F811
    from mlpipe import config
    from mlpipe.registry import Registry
    from mlpipe.spec import load_spec

    client = make_client(s3_endpoint)
    bucket = f"mlpipe-ui-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    store = S3Store(bucket, "team/mlpipe", client)
    registry = Registry.from_url(f"sqlite:///{tmp_path_factory.mktemp('s3-registry') / 'registry.db'}")
    loaded = load_spec(config.pipelines_dir() / f"{PIPELINE}.yaml")
    history = build_history(loaded, store, registry)
    yield {"store": store, "registry": registry, **history}
    registry.dispose()


def test_pipeline_detail_reads_the_bucket(s3_home) -> None:
    from mlpipe.ui import views

    detail = views.pipeline_detail(views.find_pipeline(PIPELINE), s3_home["store"], s3_home["registry"])
    assert [r["run_id"] for r in detail["runs"]] == [r.run_id for r in reversed(RUNS)]
    assert "evaluation_report" in detail["runs"][0]["links"] and "evaluation_report" not in detail["runs"][1]["links"]
    assert all(c["links"].get("drift_report") for c in detail["drift_checks"])


def test_report_keys_resolve_from_s3_uris_and_are_served_with_their_type(s3_home) -> None:
    from mlpipe.ui import views
    from mlpipe.ui.app import artifact_response

    store = s3_home["store"]
    docs = views.data_docs_key(store, PIPELINE, RUNS[0].key)
    assert docs.startswith(f"{PIPELINE}/runs/{RUNS[0].key}/validate/data_docs/")
    page = artifact_response(store, docs)
    assert page.media_type == "text/html; charset=utf-8" and b"Validation of" in page.body
    report = views.evaluation_report_key(store, PIPELINE, RUNS[3].key)
    plot = artifact_response(store, report.rsplit("/", 1)[0] + "/roc.png")
    assert plot.media_type == "image/png" and plot.body.startswith(b"\x89PNG")
    drift = views.drift_report_key(store, PIPELINE, run_key(s3_home["checks"][0]["run_id"]))
    assert b"<img" in artifact_response(store, drift).body


@pytest.mark.parametrize(
    "key",
    ["flights_delay/../../x.html", "../team/x.html", "/flights_delay/x.html", "flights_delay/runs/none.html"],
)
def test_escapes_and_missing_keys_are_not_found(s3_home, key: str) -> None:
    from mlpipe.ui.app import artifact_response
    from mlpipe.ui.views import NotFound

    with pytest.raises(NotFound):
        artifact_response(s3_home["store"], key)


def test_models_are_not_served(s3_home) -> None:
    from mlpipe.ui.app import artifact_response
    from mlpipe.ui.views import NotFound

    key = s3_home["store"].key_for_uri(s3_home["versions"][1].artifact_uri)
    with pytest.raises(NotFound, match="not a report file"):
        artifact_response(s3_home["store"], key)
