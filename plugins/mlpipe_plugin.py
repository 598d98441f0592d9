"""The mlpipe Airflow plugin: the Models view in the Airflow UI (a FastAPI app and its nav entry),
and the listener that notes on each training run what started it.

Airflow's plugins manager imports this module in every Airflow process (scheduler, workers,
triggerer, dag-processor, API server), so it imports nothing but the plugin API, the listener
module (as light) and the view's URLs (mlpipe.urls): the FastAPI app (and the registry, the store, Jinja2 ...)
is built on the first request the API server routes to it. The operators' extra links need no
registration here: in Airflow 3 each task stores its links' URLs in XCom when it finishes, and the
UI reads them from there.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

import mlpipe.listeners as run_notes
from mlpipe import urls


class LazyModelsApp:
    """An ASGI app that builds ``mlpipe.ui.app.create_app()`` when the first request arrives."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self._app is None:
            from mlpipe.ui.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class MlpipePlugin(AirflowPlugin):
    name = "mlpipe"
    fastapi_apps = [{"app": LazyModelsApp(), "url_prefix": urls.APP_PREFIX, "name": "mlpipe Models view"}]
    # A top-level "Models" entry in the UI's navigation; the UI frames the app at /plugin/models.
    # The href is relative: the UI resolves it against Airflow's base URL.
    external_views = [
        {
            "name": urls.VIEW_NAME,
            "href": urls.APP_PREFIX.lstrip("/") + "/",
            "icon": urls.APP_PREFIX.lstrip("/") + "/icon.svg",
            "url_route": urls.URL_ROUTE,
            "destination": "nav",
            "nav_top_level": True,
        }
    ]
    # Each training run's note says what started it (see mlpipe.listeners).
    listeners = [run_notes]
