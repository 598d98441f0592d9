"""The Models view's FastAPI app, mounted by the plugin in Airflow's API server at ``/mlpipe``.

Airflow does not authenticate plugin apps (a mount inherits none of the core API's
dependencies), so every route here depends on Airflow's own ``get_user``: the JWT of the UI's
session cookie (``_token``) or an ``Authorization: Bearer`` token, checked by the configured
auth manager; without one a request gets 401, with an invalid one 401/403. A user sees a
pipeline only if the auth manager lets them read its ``<name>_train`` DAG.

Data comes from the registry and the artifact store the pipelines write to, resolved from the
same Connections as the operators use (``mlpipe.hooks``). Store files are served by
key, never by file path: a key must pass :func:`mlpipe.storage.check_key` (no ``..``, no odd
characters, after URL decoding), belong to a pipeline the user may read, have a viewable type,
and (local store) resolve, symlinks followed, to a file inside the store's root.
"""

from __future__ import annotations

import logging
import math
import mimetypes
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import Annotated, Any

from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from mlpipe import layout, urls
from mlpipe.errors import MlpipeError
from mlpipe.ui import render, views

log = logging.getLogger(__name__)

# Artifacts the view serves, with their content types; anything else (models, Parquet) is refused.
VIEWABLE = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
}
# Reports are the pipelines' own HTML, served from Airflow's origin: let them style themselves and
# run their own scripts, but not talk to any server (Airflow's API included), submit forms, or load
# anything from elsewhere.
ARTIFACT_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; font-src 'self' data:; connect-src 'none'; form-action 'none'; "
    "frame-ancestors 'self'; base-uri 'none'"
)
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'self'; base-uri 'none'"
)
SERVICES_TTL_SECONDS = 30.0

# Airflow's own authentication: the session cookie's JWT or a bearer token, or 401.
User = Annotated[Any, Depends(get_user)]


class Denied(MlpipeError):
    """The user may not read this pipeline (its training DAG)."""


class Services:
    """The registry and the artifact store, re-resolved from the Connections every ``ttl`` seconds."""

    def __init__(self, ttl: float = SERVICES_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Any]] = {}

    def _get(self, name: str, make: Callable[[], Any]) -> Any:
        with self._lock:
            now = time.monotonic()
            cached = self._cache.get(name)
            if cached is None or now - cached[0] >= self.ttl:
                cached = self._cache[name] = (now, make())
            return cached[1]

    def store(self) -> Any:
        from mlpipe.hooks.store import open_store

        return self._get("store", open_store)

    def registry(self) -> Any:
        """One engine per registry URL, kept while the URL stays the same (engines pool connections)."""
        from mlpipe import config
        from mlpipe.hooks.sql import database_url, store_root
        from mlpipe.registry import Registry

        url = self._get("registry_url", lambda: database_url(config.REGISTRY_CONN_ID, config.default_registry_url()))
        with self._lock:
            registry = self._cache.get(f"registry:{url}")
            if registry is None:
                registry = self._cache[f"registry:{url}"] = (0.0, Registry.from_url(url, store_root=store_root))
        return registry[1]


def may_read(user: Any, pipeline: str) -> bool:
    """Whether the auth manager lets ``user`` read the pipeline's training DAG."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.configuration import conf

    dag_id = f"{pipeline}_train"
    team = None
    if conf.getboolean("core", "multi_team", fallback=False):
        from airflow.models.dag import DagModel

        team = DagModel.get_team_name(dag_id)
    return get_auth_manager().is_authorized_dag(method="GET", details=DagDetails(id=dag_id, team_name=team), user=user)


def _root(request: Request) -> str:
    """The URL path the app is mounted at (Airflow's base path + /mlpipe)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _json(content: Any) -> JSONResponse:
    return JSONResponse(_finite(content))


def _finite(value: Any) -> Any:
    """NaN and infinities are not JSON: undefined metrics travel as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def artifact_response(store: Any, key: str) -> Response:
    """The artifact ``key`` with its content type, confined to the store; :class:`views.NotFound` otherwise."""
    from mlpipe.storage import LocalStore, check_key

    try:
        key = check_key(key)
    except MlpipeError:
        raise views.NotFound(f"invalid artifact key {key!r}") from None
    suffix = PurePosixPath(key).suffix.lower()
    media_type = VIEWABLE.get(suffix)
    if media_type is None:
        guessed = mimetypes.guess_type(key)[0] or "application/octet-stream"
        raise views.NotFound(f"{key} ({guessed}) is not a report file the Models view serves")
    headers = {
        "Content-Security-Policy": ARTIFACT_CSP,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-cache",
    }
    if isinstance(store, LocalStore):
        try:
            real = store.path(key).resolve(strict=True)
        except (OSError, RuntimeError):  # missing, or a symlink loop
            raise views.NotFound(f"no artifact {key}") from None
        if not real.is_relative_to(store.root) or not real.is_file():
            raise views.NotFound(f"no artifact {key}")
        return FileResponse(real, media_type=media_type, headers=headers)
    if not store.exists(key):
        raise views.NotFound(f"no artifact {key}")
    return Response(store.get_bytes(key), media_type=media_type, headers=headers)


def create_app() -> FastAPI:
    """The app; built in the API server on its first request (see plugins/mlpipe_plugin.py)."""
    services = Services()
    app = FastAPI(title="mlpipe Models view", docs_url=None, redoc_url=None, openapi_url=None)

    @contextmanager
    def answering(request: Request, *, as_json: bool = False) -> Iterator[None]:
        """Turn what the view raises into 404 / 503 pages (or JSON) instead of a 500 and a traceback."""
        try:
            yield
        except views.NotFound as exc:
            raise _Answer(404, str(exc), as_json) from None
        except Denied as exc:
            raise _Answer(403, str(exc), as_json) from None
        except (MlpipeError, OSError) as exc:
            log.warning("Models view: %s %s: %s", request.method, request.url.path, exc)
            raise _Answer(503, f"cannot read the registry or the artifact store: {exc}", as_json) from None
        except SQLAlchemyError as exc:
            # Connection strings and SQL stay in the server's log, not on the page.
            log.exception("Models view: %s %s: registry error", request.method, request.url.path)
            raise _Answer(
                503, f"cannot read the registry ({type(exc).__name__}); see the API server's log", as_json
            ) from None

    @app.exception_handler(HTTPException)
    async def _answer(request: Request, exc: HTTPException) -> Response:
        if isinstance(exc, _Answer) and not exc.as_json:
            return HTMLResponse(
                render.missing_page(str(exc.detail), root=_root(request), status=exc.status_code),
                status_code=exc.status_code,
                headers={"Content-Security-Policy": PAGE_CSP},
            )
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    def pipeline_for(user: Any, name: str) -> views.Pipeline:
        pipeline = views.find_pipeline(name)
        if not may_read(user, name):
            raise Denied(f"you may not read DAG {name}_train, so not pipeline {name!r}")
        return pipeline

    def html(body: str) -> HTMLResponse:
        return HTMLResponse(body, headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"})

    def readable(user: Any) -> set[str]:
        return {p.name for p in views.pipelines() if may_read(user, p.name)}

    @app.get("/icon.svg")
    def icon(user: User) -> Response:
        """The nav entry's icon."""
        return Response(render.TEMPLATES.joinpath("icon.svg").read_bytes(), media_type="image/svg+xml")

    @app.get("/", response_class=HTMLResponse)
    def overview_page(request: Request, user: User) -> HTMLResponse:
        with answering(request):
            rows = views.overview(services.store(), services.registry(), readable(user))
        return html(render.overview_page(rows, root=_root(request)))

    @app.get("/api/pipelines")
    def overview_json(request: Request, user: User) -> JSONResponse:
        with answering(request, as_json=True):
            return _json(views.overview(services.store(), services.registry(), readable(user)))

    @app.get("/api/pipelines/{name}")
    def pipeline_json(request: Request, name: str, user: User) -> JSONResponse:
        with answering(request, as_json=True):
            pipeline = pipeline_for(user, name)
            return _json(views.pipeline_detail(pipeline, services.store(), services.registry()))

    @app.get("/pipelines/{name}", response_class=HTMLResponse)
    def pipeline_page(request: Request, name: str, user: User) -> HTMLResponse:
        with answering(request):
            pipeline = pipeline_for(user, name)
            detail = views.pipeline_detail(pipeline, services.store(), services.registry())
        return html(render.pipeline_page(detail, root=_root(request)))

    @app.get("/pipelines/{name}/versions/{number}", response_class=HTMLResponse)
    def version_page(request: Request, name: str, number: int, user: User) -> HTMLResponse:
        with answering(request):
            pipeline = pipeline_for(user, name)
            detail = views.version_detail(pipeline, services.store(), services.registry(), number)
        return html(render.version_page(detail, root=_root(request)))

    @app.get("/pipelines/{name}/runs/{key}", response_class=HTMLResponse)
    def run_page(request: Request, name: str, key: str, user: User) -> HTMLResponse:
        with answering(request):
            pipeline = pipeline_for(user, name)
            detail = views.run_detail(pipeline, services.store(), services.registry(), key)
        return html(render.run_page(detail, root=_root(request)))

    @app.get("/pipelines/{name}/runs/{key}/model")
    def run_model(request: Request, name: str, key: str, user: User) -> RedirectResponse:
        with answering(request):
            pipeline = pipeline_for(user, name)
            detail = views.run_detail(pipeline, services.store(), services.registry(), key)
        target = detail["version_link"] or urls.run(name, key)
        return RedirectResponse(_root(request) + target, status_code=302)

    def report_route(resolve: Callable[[Any, str, str], str]) -> Callable[..., RedirectResponse]:
        def route(request: Request, name: str, key: str, user: User) -> RedirectResponse:
            with answering(request):
                pipeline_for(user, name)
                found = resolve(services.store(), name, key)
            return RedirectResponse(_root(request) + urls.artifact(found), status_code=302)

        return route

    app.get("/pipelines/{name}/runs/{key}/data-docs")(report_route(views.data_docs_key))
    app.get("/pipelines/{name}/runs/{key}/evaluation-report")(report_route(views.evaluation_report_key))
    app.get("/pipelines/{name}/monitor/{key}/drift-report")(report_route(views.drift_report_key))

    @app.get("/artifacts/{key:path}")
    def artifact(request: Request, key: str, user: User) -> Response:
        with answering(request):
            # Only the artifacts of pipelines the user may read (the layout says whose a key is).
            parsed = layout.try_parse_key(key)
            if parsed is None:
                raise views.NotFound(f"{key} is not an artifact of a pipeline")
            pipeline_for(user, parsed.pipeline)
            return artifact_response(services.store(), key)

    return app


class _Answer(HTTPException):
    """An HTTP error the view answers with a page (or JSON under /api)."""

    def __init__(self, status: int, detail: str, as_json: bool) -> None:
        super().__init__(status, detail)
        self.as_json = as_json
