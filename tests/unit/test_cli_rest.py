"""The rollback CLI's champion event through Airflow's REST API: a real API app (``create_app()``, the simple
auth manager with a password user) served over HTTP on loopback, token from ``POST /auth/token``.

Without ``MLPIPE_AIRFLOW_API_URL`` the CLI writes the event into the metadata database instead
(tests/unit/test_cli.py, tests/integration/test_scheduler.py); each message says which path it took.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import free_port

from mlpipe.cli import main
from unit.test_cli import _register

USER, PASSWORD = "mlpipe-cli", secrets.token_urlsafe(12)


@pytest.fixture(scope="module")
def api_url(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Airflow's whole API app, as ``airflow api-server`` builds it, served by uvicorn in a thread."""
    import uvicorn
    from airflow.api_fastapi.app import create_app, purge_cached_app

    passwords = tmp_path_factory.mktemp("auth") / "passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD}))
    with pytest.MonkeyPatch.context() as env:
        env.setenv(
            "AIRFLOW__CORE__AUTH_MANAGER",
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        )
        env.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", f"{USER}:admin")
        env.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
        env.setenv("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(32))
        purge_cached_app()
        app = create_app()
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the API server did not start"
            time.sleep(0.1)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            purge_cached_app()


@pytest.fixture
def champion_asset_known(airflow_db: Path) -> int:
    """The champion asset in Airflow's database, active, as parsing the DAGs would put it there; its id."""
    from airflow.models.asset import AssetActive, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from mlpipe.assets import champion_asset

    asset = champion_asset("flights_delay")
    with create_session() as session:
        model = session.scalar(select(AssetModel).where(AssetModel.name == asset.name))
        if model is None:
            model = AssetModel(name=asset.name, uri=asset.uri, group=asset.group)
            session.add(model)
            session.flush()
        if session.get(AssetActive, (asset.name, asset.uri)) is None:
            session.add(AssetActive.for_asset(model))
            session.flush()
        return model.id


def _events(asset_id: int) -> list[dict]:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(AssetEvent).where(AssetEvent.asset_id == asset_id).order_by(AssetEvent.id))
        return [dict(e.extra) for e in rows]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLPIPE_HOME", str(tmp_path))
    monkeypatch.delenv("AIRFLOW_CONN_MLPIPE_REGISTRY", raising=False)
    _register(tmp_path, 1, 0)
    _register(tmp_path, 2, 1)
    return tmp_path


def test_rollback_event_goes_through_the_rest_api(
    home: Path, api_url: str, champion_asset_known: int, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    import mlpipe.cli

    monkeypatch.setenv("MLPIPE_AIRFLOW_API_URL", api_url)
    monkeypatch.setenv("MLPIPE_AIRFLOW_API_USER", USER)
    monkeypatch.setenv("MLPIPE_AIRFLOW_API_PASSWORD", PASSWORD)
    before = len(_events(champion_asset_known))
    # The CLI must not write Airflow's database itself on this path (the API server does).
    with monkeypatch.context() as patched:
        patched.setattr(mlpipe.cli, "_emit_into_metadata_db", lambda *a: pytest.fail("wrote the metadata DB directly"))
        assert main(["registry", "rollback", "flights_delay", "1", "--reason", "v2 misroutes"]) == 0

    out = capsys.readouterr().out
    assert f"through Airflow's REST API at {api_url}" in out, out
    events = _events(champion_asset_known)
    assert len(events) == before + 1
    assert events[-1]["version"] == 1 and events[-1]["previous_version"] == 2 and events[-1]["action"] == "rollback"
    assert events[-1]["from_rest_api"] is True  # Airflow's own mark of an event that came in through the API


def test_wrong_password_says_not_emitted_and_keeps_the_rollback(
    home: Path, api_url: str, champion_asset_known: int, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.setenv("MLPIPE_AIRFLOW_API_URL", api_url)
    monkeypatch.setenv("MLPIPE_AIRFLOW_API_USER", USER)
    monkeypatch.setenv("MLPIPE_AIRFLOW_API_PASSWORD", "wrong")
    before = len(_events(champion_asset_known))

    assert main(["registry", "rollback", "flights_delay", "1", "--reason", "v2 misroutes"]) == 0

    out = capsys.readouterr().out
    assert "champion v2 -> v1" in out
    assert f"NOT emitted through Airflow's REST API (POST {api_url}/auth/token answered 401" in out, out
    assert len(_events(champion_asset_known)) == before


def test_without_an_api_server_the_event_goes_into_the_metadata_db(
    home: Path, champion_asset_known: int, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.delenv("MLPIPE_AIRFLOW_API_URL", raising=False)
    before = len(_events(champion_asset_known))

    assert main(["registry", "rollback", "flights_delay", "1", "--reason", "v2 misroutes"]) == 0

    assert "into Airflow's metadata database (no API server configured" in capsys.readouterr().out
    assert len(_events(champion_asset_known)) == before + 1
