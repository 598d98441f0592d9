"""Where the Models view's pages live: the URLs the view, the operators' extra links, the DAG docs and the
notifications point at.

Plain string functions, no imports of Airflow or of anything heavy, at the bottom of the layers: the
plugin module, the factory, the operators (at the end of every task), the notifiers and the FastAPI app
all build their URLs here, so none of them needs the UI package.

The app is mounted at :data:`APP_PREFIX` under Airflow's base path. The Airflow UI shows it in
its navigation as ``/plugin/<URL_ROUTE>``, inside a frame whose address follows the app's own
paths: ``/plugin/models/mlpipe/pipelines/x`` opens ``/mlpipe/pipelines/x`` in the frame, with
Airflow's navigation around it. Extra links point there, so a report opens inside the Airflow UI.
"""

from __future__ import annotations

from urllib.parse import quote

APP_PREFIX = "/mlpipe"
URL_ROUTE = "models"
VIEW_NAME = "Models"


def _seg(value: object) -> str:
    return quote(str(value), safe="")


def pipeline(name: str) -> str:
    return f"/pipelines/{_seg(name)}"


def version(name: str, number: int) -> str:
    return f"{pipeline(name)}/versions/{int(number)}"


def run(name: str, run_key: str) -> str:
    return f"{pipeline(name)}/runs/{_seg(run_key)}"


def run_model(name: str, run_key: str) -> str:
    """The version a training run registered (its run page when it registered none)."""
    return f"{run(name, run_key)}/model"


def data_docs(name: str, run_key: str) -> str:
    return f"{run(name, run_key)}/data-docs"


def evaluation_report(name: str, run_key: str) -> str:
    return f"{run(name, run_key)}/evaluation-report"


def drift_report(name: str, run_key: str) -> str:
    return f"{pipeline(name)}/monitor/{_seg(run_key)}/drift-report"


def artifact(key: str) -> str:
    """A file of the artifact store, served with its content type (``key`` is a store key)."""
    return "/artifacts/" + "/".join(_seg(part) for part in key.split("/"))


def in_app(path: str, base_path: str = "") -> str:
    """``path`` of the app as a URL path on the Airflow server (``base_path`` from ``[api] base_url``)."""
    return f"{base_path.rstrip('/')}{APP_PREFIX}{path}"


def in_airflow_ui(path: str, base_path: str = "") -> str:
    """``path`` of the app framed by the Airflow UI (navigation around it): what extra links use."""
    base = base_path.rstrip("/")
    return f"{base}/plugin/{URL_ROUTE}{in_app(path, base)}"
