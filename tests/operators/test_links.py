"""Extra links of the operators: which tasks carry which, the URLs they make, and how Airflow stores them."""

from __future__ import annotations

import pytest
from airflow.sdk.types import TaskInstanceKey

from mlpipe.operators.links import DataDocsLink, DriftReportLink, EvaluationReportLink, ModelVersionLink
from mlpipe.operators.monitor import DriftCheckOperator
from mlpipe.operators.training import CandidatesEvaluateOperator, ModelPromoteOperator, SnapshotValidateOperator

RUN_ID = "scheduled__2026-03-01T02:00:00+00:00"
RUN_KEY = "scheduled__2026-03-01T02_00_00_00_00"
BASE = "/plugin/models/mlpipe/pipelines/flights_delay"


def key(task_id: str) -> TaskInstanceKey:
    return TaskInstanceKey(dag_id="flights_delay_train", task_id=task_id, run_id=RUN_ID, try_number=1, map_index=-1)


@pytest.mark.parametrize(
    ("operator", "link", "url"),
    [
        (
            SnapshotValidateOperator(task_id="validate_snapshot", pipeline="flights_delay", snapshot={}),
            DataDocsLink,
            f"{BASE}/runs/{RUN_KEY}/data-docs",
        ),
        (
            CandidatesEvaluateOperator(
                task_id="evaluate_candidates", pipeline="flights_delay", features={}, trained=[]
            ),
            EvaluationReportLink,
            f"{BASE}/runs/{RUN_KEY}/evaluation-report",
        ),
        (
            ModelPromoteOperator(
                task_id="promote_model", pipeline="flights_delay", verdict={}, trained=[], snapshot={}, features={}
            ),
            ModelVersionLink,
            f"{BASE}/runs/{RUN_KEY}/model",
        ),
        (
            DriftCheckOperator(task_id="check_drift", pipeline="flights_delay"),
            DriftReportLink,
            f"/plugin/models/mlpipe/pipelines/flights_delay/monitor/{RUN_KEY}/drift-report",
        ),
    ],
)
def test_each_task_links_to_its_page_of_the_models_view(operator, link, url) -> None:
    (only,) = operator.operator_extra_links
    assert isinstance(only, link)
    assert only.get_link(operator, ti_key=key(operator.task_id)) == url
    assert only.xcom_key == f"_link_{link.__name__}"


def test_links_follow_airflows_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/team-a/")
    operator = SnapshotValidateOperator(task_id="validate_snapshot", pipeline="flights_delay", snapshot={})
    url = DataDocsLink().get_link(operator, ti_key=key("validate_snapshot"))
    assert url == f"/team-a/plugin/models/team-a/mlpipe/pipelines/flights_delay/runs/{RUN_KEY}/data-docs"


def test_serialized_dag_names_the_links_and_their_xcom_keys() -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    from mlpipe.dag_factory import build_dags

    dags = build_dags()
    links = {}
    for dag_id in ("flights_delay_train", "flights_delay_monitor"):
        restored = DagSerialization.from_dict(DagSerialization.to_dict(dags[dag_id]))
        links.update({t.task_id: t.extra_links for t in restored.tasks if t.extra_links})
    assert links == {
        "validate_snapshot": ["Data Docs"],
        "evaluate_candidates": ["Evaluation report"],
        "promote_model": ["Model version"],
        "check_drift": ["Drift report"],
    }
