"""The Models view through Airflow's own API app: authentication, JSON, pages, report links, traversal.

The app under test is ``airflow.api_fastapi.app.create_app()``, as ``airflow api-server`` builds it:
the plugins manager mounts the plugin at /mlpipe and the configured auth manager (the simple auth
manager) checks tokens. The pipeline history is written through the real registry and store
(see models_home.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mlpipe.spec import find_spec
from mlpipe.storage import run_key
from ui.models_home import PIPELINE, ROLLBACK_REASON, RUNS, token_for


def _features() -> tuple[list[str], list[str]]:
    """The demo spec's numeric and categorical features: the drift history covers each (and the score)."""
    features = find_spec(PIPELINE).spec.features
    return list(features.numeric), list(features.categorical)


REPO = Path(__file__).resolve().parents[2]

ADMIN = "admin"


def bearer(role: str | None = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(role)}"}


def get(client: Any, path: str, role: str | None = ADMIN, **kwargs: Any) -> Any:
    return client.get(path, headers=bearer(role), follow_redirects=False, **kwargs)


def run_path(index: int) -> str:
    return f"/mlpipe/pipelines/{PIPELINE}/runs/{RUNS[index].key}"


def first_drift_report(models_home: dict[str, Any]) -> str:
    return f"{PIPELINE}/monitor/{run_key(models_home['checks'][0]['run_id'])}/report/index.html"


# -- authentication ------------------------------------------------------------------------------

PROTECTED = [
    "/mlpipe/",
    "/mlpipe/api/pipelines",
    f"/mlpipe/api/pipelines/{PIPELINE}",
    f"/mlpipe/pipelines/{PIPELINE}",
    f"/mlpipe/pipelines/{PIPELINE}/versions/1",
    f"/mlpipe/pipelines/{PIPELINE}/runs/{RUNS[0].key}",
    f"/mlpipe/pipelines/{PIPELINE}/runs/{RUNS[0].key}/data-docs",
    f"/mlpipe/pipelines/{PIPELINE}/runs/{RUNS[0].key}/model",
    f"/mlpipe/artifacts/{PIPELINE}/runs/{RUNS[0].key}/run.json",
    "/mlpipe/icon.svg",
]


@pytest.mark.parametrize("path", PROTECTED)
def test_no_token_no_session_is_refused(api_client, path: str) -> None:
    response = api_client.get(path, follow_redirects=False)
    assert response.status_code == 401, response.text
    assert response.json() == {"detail": "Not authenticated"}


@pytest.mark.parametrize("path", [PROTECTED[1], PROTECTED[8]])
def test_forged_token_is_refused(api_client, path: str) -> None:
    from airflow.api_fastapi.auth.tokens import JWTGenerator

    forged = JWTGenerator(secret_key="not-the-server-key", valid_for=60, audience="apache-airflow").generate(
        {"sub": "admin", "role": "admin"}
    )
    for headers in ({"Authorization": f"Bearer {forged}"}, {"Cookie": f"_token={forged}"}, {"Cookie": "_token=junk"}):
        response = api_client.get(path, headers=headers, follow_redirects=False)
        assert response.status_code in (401, 403), (headers, response.status_code, response.text)
        assert PIPELINE not in response.text


def test_the_ui_session_cookie_is_accepted(api_client) -> None:
    # The Airflow UI keeps its JWT in the _token cookie; frames and report links send it along.
    response = api_client.get("/mlpipe/api/pipelines", headers={"Cookie": f"_token={token_for(ADMIN)}"})
    assert response.status_code == 200
    assert any(p["name"] == PIPELINE for p in response.json())


def test_a_user_who_may_not_read_the_dag_sees_no_pipeline(api_client) -> None:
    assert get(api_client, "/mlpipe/api/pipelines", role=None).json() == []
    for path in (f"/mlpipe/pipelines/{PIPELINE}", f"/mlpipe/api/pipelines/{PIPELINE}", PROTECTED[8]):
        response = get(api_client, path, role=None)
        assert response.status_code == 403, (path, response.text)
        assert "ml-platform" not in response.text
    # A viewer may read DAGs, so may read the pipeline.
    assert get(api_client, f"/mlpipe/pipelines/{PIPELINE}", role="viewer").status_code == 200


# -- the plugin as Airflow sees it ---------------------------------------------------------------


def test_airflow_lists_the_models_view_and_its_app(api_client) -> None:
    response = api_client.get("/api/v2/plugins", headers=bearer())
    assert response.status_code == 200
    (plugin,) = [p for p in response.json()["plugins"] if p["name"] == "mlpipe"]
    assert [(a["url_prefix"], a["name"]) for a in plugin["fastapi_apps"]] == [("/mlpipe", "mlpipe Models view")]
    (view,) = plugin["external_views"]
    assert view["name"] == "Models" and view["url_route"] == "models" and view["href"] == "mlpipe/"
    assert view["destination"] == "nav" and view["nav_top_level"] is True


def test_nav_icon_is_an_svg(api_client) -> None:
    response = get(api_client, "/mlpipe/icon.svg")
    assert response.status_code == 200 and response.headers["content-type"] == "image/svg+xml"
    assert response.text.startswith("<svg")


# -- JSON ----------------------------------------------------------------------------------------


def test_overview_json(api_client, models_home) -> None:
    rows = {p["name"]: p for p in get(api_client, "/mlpipe/api/pipelines").json()}
    shipped = {p.stem for p in (REPO / "include" / "pipelines").glob("*.yaml")}
    assert set(rows) == shipped | {"broken"} and PIPELINE in shipped
    assert "sorce: unknown field" in rows["broken"]["error"] and rows["broken"]["champion"] is None

    row = rows[PIPELINE]
    champion = row["champion"]
    registry = models_home["registry"]
    assert champion["version"] == registry.champion(PIPELINE).version == 2
    assert champion["action"] == "rollback" and champion["reason"] == ROLLBACK_REASON
    assert champion["primary_metric"] == "roc_auc" and champion["primary_value"] == pytest.approx(0.73)
    assert champion["promoted_at"].startswith("2026-03-05T09:00")
    assert champion["run_id"] == "manual__2026-03-05T09:00:00+00:00" and champion["trigger"] == "manual"
    assert row["versions"] == 3
    assert row["incident"] is None, "a sound champion is not flagged"

    last = row["last_run"]  # the drift-triggered run 4, not the rollback DAG's run record
    assert last["run_id"] == RUNS[3].run_id and last["trigger"] == "drift"
    assert last["verdict"]["decision"] == "promote" and last["verdict"]["primary_value"] == pytest.approx(0.75)
    assert last["verdict"]["gain"]["text"] == "+0.0200 [+0.0150, +0.0250] at 95%"
    assert set(last["links"]) == {"run", "data_docs", "evaluation_report"}

    drift = row["last_drift"]
    newest = registry.drift_checks(PIPELINE)[-1]
    assert drift["verdict"] == newest["verdict"] == "drift" and drift["emitted"] is True
    assert drift["links"]["drift_report"].endswith(f"/monitor/{run_key(newest['run_id'])}/drift-report")


def test_pipeline_json(api_client, models_home) -> None:
    detail = get(api_client, f"/mlpipe/api/pipelines/{PIPELINE}").json()
    registry = models_home["registry"]

    versions = detail["version_history"]
    assert [v["version"] for v in versions] == [1, 2, 3]
    for row, stored in zip(versions, registry.list_versions(PIPELINE), strict=True):
        assert row["metrics"] == stored.metrics and row["run_id"] == stored.run_id
    assert [v["is_champion"] for v in versions] == [False, True, False]
    assert [v["trigger"] for v in versions] == ["manual", "schedule", "drift"]

    log = detail["champion_log"]
    assert [(e["seq"], e["action"], e["version"], e["previous_version"]) for e in log] == [
        (1, "first", 1, None),
        (2, "promote", 2, 1),
        (3, "promote", 3, 2),
        (4, "rollback", 2, 3),
    ]
    assert [e["reason"] for e in detail["rollbacks"]] == [ROLLBACK_REASON]

    runs = detail["runs"]  # newest first, training runs only
    assert [r["run_id"] for r in runs] == [r.run_id for r in reversed(RUNS)]
    rejected = runs[1]
    assert rejected["verdict"]["decision"] == "reject" and not rejected["verdict"]["blessed"]
    assert any("gain +0.0005" in reason for reason in rejected["verdict"]["reasons"])
    assert "evaluation_report" not in rejected["links"]  # no report, no link

    drift = detail["drift"]
    assert len(drift["labels"]) == 3
    series = {f["feature"]: f for f in drift["features"]}
    numeric, categorical = _features()
    assert "distance" in numeric and "origin" in categorical
    assert set(series) == {*numeric, *categorical, "score"}
    assert series["distance"]["statistic"] == "psi" and series["origin"]["statistic"] == "js"
    assert series["distance"]["thresholds"] == {"warn": 0.1, "act": 0.2}
    assert series["origin"]["thresholds"]["act"] == 0.1
    stored = [
        next(f for f in c["figures"]["drift"]["features"] if f["feature"] == "distance")["psi"]
        for c in registry.drift_checks(PIPELINE)
    ]
    assert series["distance"]["values"] == pytest.approx(stored)
    assert series["distance"]["statuses"][-1] == "act"


def test_unknown_pipeline_and_version_are_404(api_client) -> None:
    assert get(api_client, "/mlpipe/api/pipelines/nope").status_code == 404
    assert get(api_client, "/mlpipe/pipelines/nope").status_code == 404
    response = get(api_client, f"/mlpipe/pipelines/{PIPELINE}/versions/99")
    assert response.status_code == 404 and "no model version 99" in response.text
    assert get(api_client, f"/mlpipe/pipelines/{PIPELINE}/runs/no_such_run").status_code == 404
    assert get(api_client, "/mlpipe/pipelines/broken/versions/1").status_code == 404


# -- pages ---------------------------------------------------------------------------------------


def test_overview_page(api_client) -> None:
    response = get(api_client, "/mlpipe/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    card = page[page.index(f'data-pipeline="{PIPELINE}"') :]
    assert re.search(r'href="/mlpipe/pipelines/flights_delay/versions/2"><strong>v2</strong>', card)
    assert "rollback" in card and "0.7300" in card
    assert f'href="/mlpipe/pipelines/{PIPELINE}/runs/{RUNS[3].key}/evaluation-report"' in card
    assert 'data-pipeline="broken"' in page and "sorce: unknown field" in page
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_pipeline_page_has_history_and_charts(api_client) -> None:
    page = get(api_client, f"/mlpipe/pipelines/{PIPELINE}").text
    metric_charts = page[page.index('class="charts metric-charts"') : page.index('id="versions"')]
    assert metric_charts.count("<svg") == 4  # roc_auc and the three secondary metrics
    assert metric_charts.count('class="point"') == 4 * 3  # three versions each
    assert "roc_auc: 0.75 (hgb)" in metric_charts and "roc_auc: 0.73 (hgb, champion)" in metric_charts

    drift_charts = page[page.index('class="charts drift-charts"') :]
    numeric, categorical = _features()
    assert drift_charts.count("<svg") == len(numeric) + len(categorical) + 1  # every feature and the score
    # PSI warn + act for each numeric feature and the score, JS act for each categorical one.
    assert drift_charts.count('class="threshold"') == 2 * (len(numeric) + 1) + len(categorical)
    assert "distance (numeric): PSI" in drift_charts and "origin (categorical): JS distance" in drift_charts

    versions = page[page.index('class="versions"') : page.index('id="champion-log"')]
    assert versions.count("<tr>") == 4 and "champion</span>" in versions
    log = page[page.index('class="champion-log"') :]
    assert ROLLBACK_REASON in log and "1 rollback(s)" in page
    gate = page[page.index('id="gate"') : page.index('id="metrics"')]
    assert "per <code>origin</code>" in gate and "per <code>carrier</code>" in gate
    for index in (0, 1, 2, 3):
        assert f'href="{run_path(index)}/data-docs"' in page
    assert page.count("/evaluation-report") == 2  # run 4 in the versions and the runs tables
    assert page.count("/drift-report") == 3


def test_version_and_run_pages(api_client) -> None:
    version = get(api_client, f"/mlpipe/pipelines/{PIPELINE}/versions/3")
    assert version.status_code == 200
    assert "flights_delay v3" in version.text and ROLLBACK_REASON in version.text  # v3 was rolled back
    assert f'href="{run_path(3)}/evaluation-report"' in version.text

    rejected = get(api_client, run_path(2)).text
    assert "FAIL" in rejected and "improvement" in rejected and "not blessed" in rejected
    assert "/evaluation-report" not in rejected

    drifted = get(api_client, run_path(3)).text
    assert 'class="slices"' in drifted and "<td>JFK</td>" in drifted and "too small" in drifted
    # The demo spec's gate has a confidence: the gains carry their paired intervals, rule and table alike.
    assert "gain +0.0200 [+0.0150, +0.0250] (95% interval), lower bound \u2265 0.001: pass" in drifted
    assert "gain of the best (95% interval)" in drifted and "+0.0200 [+0.0150, +0.0250]" in drifted
    assert f'href="/mlpipe/pipelines/{PIPELINE}/versions/3"' in drifted


def test_model_link_resolves_to_the_version_or_the_run(api_client) -> None:
    promoted = get(api_client, f"{run_path(1)}/model")
    assert promoted.status_code == 302 and promoted.headers["location"] == f"/mlpipe/pipelines/{PIPELINE}/versions/2"
    rejected = get(api_client, f"{run_path(2)}/model")
    assert rejected.status_code == 302 and rejected.headers["location"] == run_path(2)


# -- reports -------------------------------------------------------------------------------------


def follow(client: Any, path: str) -> Any:
    """GET ``path``, which must redirect into the artifact server, and the artifact it points to."""
    response = get(client, path)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith("/mlpipe/artifacts/")
    return get(client, location)


def test_data_docs_link_serves_the_validation_page(api_client) -> None:
    page = follow(api_client, f"{run_path(0)}/data-docs")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert f"Validation of {RUNS[0].key}" in page.text
    assert "connect-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"


def test_evaluation_report_with_its_plot(api_client) -> None:
    page = follow(api_client, f"{run_path(3)}/evaluation-report")
    assert page.status_code == 200 and '<img id="roc" src="roc.png"' in page.text
    image = get(api_client, page.url.path.rsplit("/", 1)[0] + "/roc.png")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")


def test_absent_evaluation_report_is_a_clear_404(api_client) -> None:
    response = get(api_client, f"{run_path(0)}/evaluation-report")
    assert response.status_code == 404 and "has no evaluation report" in response.text
    assert response.headers["content-type"].startswith("text/html")


def test_drift_report_with_its_plots(api_client, models_home) -> None:
    key = run_key(models_home["checks"][-1]["run_id"])
    page = follow(api_client, f"/mlpipe/pipelines/{PIPELINE}/monitor/{key}/drift-report")
    assert page.status_code == 200 and "distance" in page.text
    plots = re.findall(r'<img src="([^"]+\.png)"', page.text)
    assert len(plots) >= 4
    base = page.url.path.rsplit("/", 1)[0]
    for plot in plots:
        image = get(api_client, f"{base}/{plot}")
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content.startswith(b"\x89PNG") and len(image.content) > 1000


# -- confinement ---------------------------------------------------------------------------------

ESCAPES = [
    "/mlpipe/artifacts/%2e%2e/%2e%2e/registry.db",
    "/mlpipe/artifacts/flights_delay/%2e%2e/%2e%2e/registry.db",
    "/mlpipe/artifacts/flights_delay/..%2f..%2fregistry.db",
    "/mlpipe/artifacts/flights_delay/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/mlpipe/artifacts/flights_delay/%252e%252e%252f%252e%252e%252fregistry.db",
    "/mlpipe/artifacts/flights_delay/..%5c..%5cregistry.db",
    "/mlpipe/artifacts/flights_delay/%2fetc%2fpasswd",
    "/mlpipe/artifacts//etc/passwd",
    "/mlpipe/artifacts/flights_delay/runs%00/run.json",
    "/mlpipe/artifacts/flights_delay/%c0%ae%c0%ae/%c0%ae%c0%ae/registry.db",
    f"/mlpipe/pipelines/{PIPELINE}/runs/..%2f..%2f..%2fregistry.db/data-docs",
    f"/mlpipe/pipelines/{PIPELINE}/monitor/%2e%2e/drift-report",
]


@pytest.mark.parametrize("path", ESCAPES)
def test_traversal_is_refused(api_client, path: str) -> None:
    response = get(api_client, path)
    assert response.status_code in (400, 404), (path, response.status_code, response.text[:200])
    assert "SQLite format" not in response.text and "root:" not in response.text


def test_symlinks_out_of_the_store_are_refused(api_client, models_home, tmp_path) -> None:
    store = models_home["store"]
    secret = tmp_path / "secret.html"
    secret.write_text("<p>SECRET outside the store</p>")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "page.html").write_text("<p>SECRET folder</p>")
    link_file = store.path(f"{PIPELINE}/runs/{RUNS[0].key}/validate/leak.html")
    link_dir = store.path(f"{PIPELINE}/runs/{RUNS[0].key}/validate/leakdir")
    link_file.symlink_to(secret)
    link_dir.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    inside = store.path(f"{PIPELINE}/runs/{RUNS[0].key}/validate/alias.json")
    inside.symlink_to(store.path(f"{PIPELINE}/runs/{RUNS[0].key}/validate/summary.json"))
    try:
        for key in ("validate/leak.html", "validate/leakdir/page.html"):
            response = get(api_client, f"/mlpipe/artifacts/{PIPELINE}/runs/{RUNS[0].key}/{key}")
            assert response.status_code == 404 and "SECRET" not in response.text
        # A link that stays inside the store is fine.
        response = get(api_client, f"/mlpipe/artifacts/{PIPELINE}/runs/{RUNS[0].key}/validate/alias.json")
        assert response.status_code == 200 and response.json()["suite"] == "flights_delay"
    finally:
        for link in (link_file, link_dir, inside):
            link.unlink()


def test_only_report_files_of_known_pipelines_are_served(api_client, models_home) -> None:
    model = models_home["versions"][1].artifact_key
    response = get(api_client, f"/mlpipe/artifacts/{model}")
    assert response.status_code == 404 and "is not a report file" in response.text
    store = models_home["store"]
    store.put_bytes("other/notes.html", b"<p>not a pipeline</p>")
    assert get(api_client, "/mlpipe/artifacts/other/notes.html").status_code == 404
    assert get(api_client, "/mlpipe/artifacts/flights_delay/runs/nope/run.json").status_code == 404
    response = get(api_client, f"/mlpipe/artifacts/{first_drift_report(models_home)}")
    assert response.status_code == 200 and response.headers["content-type"] == "text/html; charset=utf-8"


def test_an_unreachable_registry_is_a_503_page_without_its_address(api_client, monkeypatch) -> None:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.testclient import TestClient

    from mlpipe.ui.app import create_app

    monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_REGISTRY", "postgresql://postgres@127.0.0.1:1/nowhere")
    app = create_app()  # a fresh app: the mounted one keeps its registry for a while
    app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="admin", role="admin")
    with TestClient(app) as client:
        page = client.get(f"/pipelines/{PIPELINE}")
        api = client.get("/api/pipelines")
    assert page.status_code == 503 and "cannot read the registry" in page.text and "127.0.0.1:1" not in page.text
    assert api.status_code == 503 and "see the API server's log" in api.json()["detail"]
