"""Fixtures of the Models view tests: a pipeline history in a temporary MLPIPE_HOME, and Airflow's API app."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
JWT_SECRET = "AIRFLOW__API_AUTH__JWT_SECRET"
BROKEN_SPEC = "name: broken\ndescription: a spec with a typo\nsorce: {}\n"


@pytest.fixture(scope="module")
def models_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """MLPIPE_HOME with the history of ``models_home.build_history``; an include tree with a broken spec too."""
    from mlpipe import config
    from mlpipe.registry import Registry
    from mlpipe.spec import load_spec
    from mlpipe.storage import LocalStore
    from ui.models_home import build_history

    root = tmp_path_factory.mktemp("models-home")
    include = root / "include"
    shutil.copytree(REPO / "include", include)
    (include / "pipelines" / "broken.yaml").write_text(BROKEN_SPEC)
    saved = {k: os.environ.get(k) for k in ("MLPIPE_HOME", "MLPIPE_INCLUDE")}
    (root / "mlpipe").mkdir()
    os.environ.update(MLPIPE_HOME=str(root / "mlpipe"), MLPIPE_INCLUDE=str(include))
    try:
        store = LocalStore(config.default_store_root())
        registry = Registry.from_url(config.default_registry_url())
        loaded = load_spec(include / "pipelines" / "flights_delay.yaml")
        history = build_history(loaded, store, registry)
        yield {"root": root, "store": store, "registry": registry, "loaded": loaded, **history}
        registry.dispose()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def api_client(airflow_db: Path, models_home: dict[str, Any]) -> Iterator[Any]:
    """Airflow's whole API app (plugins mounted, auth manager on), as the API server builds it.

    With its own JWT secret, as a deployment sets one (``[api_auth] jwt_secret``): what the session's
    airflow.cfg holds depends on which process wrote it first.
    """
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    saved = os.environ.get(JWT_SECRET)
    os.environ[JWT_SECRET] = secrets.token_urlsafe(32)
    try:
        app = create_app()
        # The plugin's app is built once per process and keeps its store and registry for a while:
        # start it afresh on this module's MLPIPE_HOME.
        from mlpipe_plugin import MlpipePlugin

        MlpipePlugin.fastapi_apps[0]["app"]._app = None
        with TestClient(app, base_url="http://localhost") as client:
            yield client
        purge_cached_app()
    finally:
        if saved is None:
            os.environ.pop(JWT_SECRET, None)
        else:
            os.environ[JWT_SECRET] = saved
