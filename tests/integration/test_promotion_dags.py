"""Champion changes by hand under ``dag.test()``: approval in the Airflow UI, forced promotion, rollback.

On the small ``wine`` pipeline, with ``approval: required`` added to its spec. A person's answer is
recorded as the Airflow API records it (the HITL detail's response, then the task resumed), from
this test's thread while ``dag.test()`` waits in another. The runs, in order, share one registry:

1. rejected by bob -> nothing registered;
2. approved -> v1, the first champion, and its champion asset event;
3. forced (with a reason), logreg only, approved -> v2, a "force" event;
4. ``wine_rollback`` to v1 -> a "rollback" event, and ``wine_score`` queued by the asset event;
5. ``python -m mlpipe registry rollback wine 2`` -> another, also emitting the asset event.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from dagruns import REPO, asset_events, awaiting_input_ti, load_dag, open_registry, state, task_states, warm_up

from mlpipe.storage import run_key

pytestmark = pytest.mark.slow

PIPELINE = "wine"
CHAMPION = "wine.champion"


@pytest.fixture(scope="module")
def home(airflow_db, tmp_path_factory):
    """A fresh MLPIPE_HOME with the wine table, and an include tree whose wine spec asks for approval."""
    from mlpipe.datasets import seed_datasets

    root = tmp_path_factory.mktemp("promotion")
    include = root / "include"
    shutil.copytree(REPO / "include", include)
    spec = include / "pipelines" / f"{PIPELINE}.yaml"
    spec.write_text(spec.read_text() + "\napproval: required\n")
    old = {k: os.environ.get(k) for k in ("MLPIPE_HOME", "MLPIPE_INCLUDE")}
    os.environ.update(MLPIPE_HOME=str(root / "mlpipe"), MLPIPE_INCLUDE=str(include))
    seed_datasets(root / "mlpipe" / "source.db")
    yield root / "mlpipe"
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def answer(dag_id: str, option: str, reason: str, *, user: str = "bob", timeout: float = 180) -> None:
    """Wait for ``approve_promotion`` of ``dag_id`` to await input, then answer as ``user`` would in the UI."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.sdk import timezone
    from airflow.triggers.base import TriggerEvent
    from airflow.utils.session import create_session

    ti_id = awaiting_input_ti(dag_id, "approve_promotion", timeout)
    with create_session() as session:
        ti = session.get(TaskInstance, ti_id)
        detail = session.query(HITLDetail).filter(HITLDetail.ti_id == ti_id).one()
        assert detail.options == ["Approve", "Reject"] and "gate's decision" in detail.body
        detail.responded_by = {"id": user, "name": user}
        detail.responded_at = timezone.utcnow()
        detail.chosen_options = [option]
        detail.params_input = {"reason": reason}
        session.add(detail)
        handle_event_submit(TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session)


def give_up(dag_id: str) -> None:
    """Fail a waiting approval task, so that dag.test() ends instead of waiting for ever."""
    import sqlalchemy as sa
    from airflow import settings

    with settings.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE task_instance SET state = 'failed' WHERE dag_id = :dag AND task_id = 'approve_promotion'"
                " AND state IN ('awaiting_input', 'scheduled', 'none', 'running') OR state IS NULL AND dag_id = :dag"
            ),
            {"dag": dag_id},
        )


def train(day: int, option: str, reason: str, **conf: Any) -> Any:
    """``wine_train`` under ``dag.test()`` (which needs the main thread), answering its approval from another."""
    warm_up()
    dag = load_dag(f"{PIPELINE}_train")
    errors: list[BaseException] = []

    def respond() -> None:
        try:
            answer(dag.dag_id, option, reason)
        except BaseException as exc:
            errors.append(exc)
            give_up(dag.dag_id)

    thread = threading.Thread(target=respond, daemon=True)
    thread.start()
    run = dag.test(
        run_after=datetime(2026, 5, day, 2, tzinfo=UTC), logical_date=datetime(2026, 5, day, tzinfo=UTC), run_conf=conf
    )
    thread.join(timeout=10)
    assert errors == [] and not thread.is_alive(), errors
    return run


def promotion_result(home: Path, run_id: str) -> dict[str, Any]:
    return json.loads((home / "artifacts" / PIPELINE / "runs" / run_key(run_id) / "promote/result.json").read_text())


def test_rejected_approval_registers_nothing(home) -> None:
    run = train(1, "Reject", "waiting for the lab's audit")

    states = task_states(run)
    assert state(run) == "success"
    assert states["approve_promotion"] == "success" and states["promote_model"] == "skipped", states
    result = promotion_result(home, run.run_id)
    assert (result["action"], result["message"]) == ("rejected", "rejected by bob: waiting for the lab's audit")
    assert open_registry().champion_history(PIPELINE) == []
    assert asset_events(CHAMPION, run.run_id) == []


def test_approved_model_becomes_the_first_champion(home) -> None:
    run = train(2, "Approve", "looks right")

    assert state(run) == "success" and set(task_states(run).values()) == {"success"}, task_states(run)
    registry = open_registry()
    assert [(e.seq, e.version, e.action) for e in registry.champion_history(PIPELINE)] == [(1, 1, "first")]
    (event,) = asset_events(CHAMPION, run.run_id)
    assert (event["version"], event["previous_version"], event["action"]) == (1, None, "first")


def test_forced_promotion_of_a_subset_is_recorded(home) -> None:
    run = train(
        3, "Approve", "ok", force_promotion=True, force_reason="forest overfits the new vintages", candidates=["logreg"]
    )

    states = task_states(run)
    assert set(states.values()) == {"success"}, states
    assert "train_candidates[1]" not in states, "only logreg was trained"
    verdict = json.loads(
        (home / "artifacts" / PIPELINE / "runs" / run_key(run.run_id) / "evaluate/verdict.json").read_text()
    )
    assert set(verdict["candidates"]) == {"logreg"} and verdict["blessed"] is False, "the verdict still says no"
    history = open_registry().champion_history(PIPELINE)
    assert [(e.seq, e.version, e.previous_version, e.action) for e in history] == [
        (1, 1, None, "first"),
        (2, 2, 1, "force"),
    ]
    assert history[1].actor == "dag_test" and history[1].reason.startswith("forest overfits the new vintages (forced;")
    assert open_registry().get_version(PIPELINE, 2).candidate == "logreg"
    assert asset_events(CHAMPION, run.run_id)[0]["action"] == "force"


def test_rollback_dag_and_cli_append_and_emit(home, capsys) -> None:
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session

    from mlpipe.cli import main

    registry = open_registry()
    before = registry.champion_history(PIPELINE)
    from airflow.models.dag import DagModel

    with create_session() as session:
        session.query(AssetDagRunQueue).delete()
        # The tests' DAGs are created paused, and a paused DAG is not queued by asset events.
        session.query(DagModel).filter(DagModel.dag_id == f"{PIPELINE}_score").update({"is_paused": False})

    run = load_dag(f"{PIPELINE}_rollback").test(run_conf={"version": 1, "reason": "v2 was forced in error"})

    assert task_states(run) == {"roll_back_champion": "success"}
    history = registry.champion_history(PIPELINE)
    assert history[:2] == before, "nothing rewritten"
    assert [(e.seq, e.version, e.previous_version, e.action, e.actor) for e in history[2:]] == [
        (3, 1, 2, "rollback", "dag_test")
    ]
    assert registry.champion(PIPELINE).version == 1
    (event,) = asset_events(CHAMPION, run.run_id)
    assert {k: event[k] for k in ("version", "previous_version", "action", "reason")} == {
        "version": 1,
        "previous_version": 2,
        "action": "rollback",
        "reason": "v2 was forced in error",
    }
    with create_session() as session:
        queued = {q.target_dag_id for q in session.query(AssetDagRunQueue)}
    assert f"{PIPELINE}_score" in queued, "the champion event schedules scoring"
    with create_session() as session:
        session.query(AssetDagRunQueue).delete()

    capsys.readouterr()
    assert main(["registry", "rollback", PIPELINE, "2", "--reason", "audit passed", "--actor", "carol"]) == 0
    out = capsys.readouterr().out
    assert "champion v1 -> v2 (rollback, champion log #4, by carol: audit passed)" in out
    assert f"emitted asset event {CHAMPION}" in out
    with create_session() as session:
        assert {q.target_dag_id for q in session.query(AssetDagRunQueue)} == {f"{PIPELINE}_score"}
    history = registry.champion_history(PIPELINE)
    assert history[:3] == [*before, *history[2:3]] and len(history) == 4
    assert (history[3].version, history[3].previous_version, history[3].actor) == (2, 1, "carol")
    assert asset_events(CHAMPION)[-1] == {
        "pipeline": PIPELINE,
        "version": 2,
        "previous_version": 1,
        "action": "rollback",
        "reason": "audit passed",
        "actor": "carol",
        "seq": 4,
        "run_id": None,
    }
    # A bad rollback is refused with a message, and writes nothing.
    assert main(["registry", "rollback", PIPELINE, "2", "--reason", "again"]) == 1
    assert "already is the champion" in capsys.readouterr().err
    assert len(registry.champion_history(PIPELINE)) == 4
