"""Extra links of mlpipe's operators: buttons in the task instance view that open the Models view.

In Airflow 3 a task computes its links' URLs when it finishes (success or failure) and stores them
in XCom under each link's ``xcom_key``; the UI shows the stored URL. So ``get_link`` runs in the
worker, after ``execute()``: it only formats a URL from the pipeline name and the run id, with no
I/O. The Models view resolves the URL when it is opened (the run's Data Docs page, its evaluation
report, the version it registered, the check's drift report), so a link made before the artifact
existed, or for a run that failed half-way, still leads to whatever there is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from airflow.sdk import BaseOperatorLink, conf

from mlpipe import urls

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey


def base_path() -> str:
    """The path part of ``[api] base_url`` (Airflow served under a sub-path), '' at the root."""
    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


class ModelsViewLink(BaseOperatorLink):
    """A page of the Models view for the task's pipeline and run, framed by the Airflow UI."""

    name: ClassVar[str]
    page: ClassVar[Any]  # (pipeline, run_key) -> path of the view

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        from mlpipe.layout import run_key

        path = type(self).page(operator.pipeline, run_key(ti_key.run_id))
        return urls.in_airflow_ui(path, base_path())


class DataDocsLink(ModelsViewLink):
    name = "Data Docs"
    page = staticmethod(urls.data_docs)


class EvaluationReportLink(ModelsViewLink):
    name = "Evaluation report"
    page = staticmethod(urls.evaluation_report)


class ModelVersionLink(ModelsViewLink):
    name = "Model version"
    page = staticmethod(urls.run_model)


class DriftReportLink(ModelsViewLink):
    name = "Drift report"
    page = staticmethod(urls.drift_report)
