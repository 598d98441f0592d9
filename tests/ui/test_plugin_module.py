"""The plugin module stays light: the plugins manager imports it in every Airflow process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlpipe import urls

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("fastapi", "pandas", "numpy", "sklearn", "great_expectations", "boto3", "pyarrow", "matplotlib")
VIEW = ("mlpipe.ui.app", "mlpipe.ui.views", "mlpipe.ui.render", "mlpipe.registry", "mlpipe.storage")

PROBE = textwrap.dedent(
    """
    import json, sys
    import airflow.plugins_manager  # loaded already wherever the plugins manager runs
    before = set(sys.modules)
    import mlpipe_plugin
    print(json.dumps(sorted(set(sys.modules) - before)))
    """
)


def test_importing_the_plugin_loads_no_app_and_nothing_heavy() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    new = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "mlpipe_plugin" in new  # the probe did import it
    assert not {m for m in new if m.split(".")[0] in HEAVY}, sorted(new)
    assert not new & set(VIEW), sorted(new)


def test_the_lazy_app_builds_the_view_on_its_first_request() -> None:
    import asyncio

    from mlpipe_plugin import LazyModelsApp

    app = LazyModelsApp()
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/pipelines",
        "raw_path": b"/api/pipelines",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1),
    }
    assert app._app is None
    asyncio.run(app(scope, receive, send))
    assert app._app is not None
    assert sent[0]["status"] == 401  # the real app, refusing an unauthenticated request


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("", "/plugin/models/mlpipe/pipelines/p/runs/r%2Bx/data-docs"),
        ("/airflow", "/airflow/plugin/models/airflow/mlpipe/pipelines/p/runs/r%2Bx/data-docs"),
    ],
)
def test_paths_in_the_airflow_ui(base: str, expected: str) -> None:
    assert urls.in_airflow_ui(urls.data_docs("p", "r+x"), base) == expected
    assert urls.artifact("p/runs/a b/x.html") == "/artifacts/p/runs/a%20b/x.html"
