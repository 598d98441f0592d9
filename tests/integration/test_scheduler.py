"""Retraining starts by itself: the real scheduler, dag-processor, triggerer and api-server on loopback.

A fresh PostgreSQL database is Airflow's metadata DB and LocalExecutor runs the tasks with a single
worker slot (``parallelism`` 1). One stack serves both scenarios, in order:

* **New data.** The source starts empty, so the first watch run defers into the triggerer. Rows
  arrive, the trigger fires, ``publish_new_data`` emits ``flights_delay.new_data`` and the scheduler
  starts ``flights_delay_train`` from that asset event, which promotes v1. A watch run with nothing
  new defers while that training runs, whose tasks meanwhile start and run in the only worker slot
  (the deferred sensor holds none), then times out: skipped, no event, no second training run.
* **Drift.** A week of August flights lands; the monitor finds the champion (trained on January)
  well below its promoted ROC AUC on them, emits ``flights_delay.drift`` and training starts by itself
  and promotes v2, whose lineage says ``drift``. A second monitor run of the same window draws the
  same verdict against the same champion, emits nothing and starts nothing.

Every training run's note (the DagRun note the UI shows) says what started it.

In Airflow 3 the LocalExecutor's task supervisor talks to the Execution API
(``[core] execution_api_server_url``, served by ``airflow api-server``), so all four components run.
Nothing else listens: the scheduler and triggerer skip their log servers.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from airflow_stack import COMPONENTS, REPO, airflow_env, pg_database, unreachable, write_test_spec
from airflow_stack import Stack as AirflowStack
from conftest import service_unavailable
from servers import free_port

PIPELINE = "flights_delay"
TRAIN, WATCH, MONITOR = f"{PIPELINE}_train", f"{PIPELINE}_watch", f"{PIPELINE}_monitor"
SCORE = f"{PIPELINE}_score"
NEW_DATA, DRIFT, CHAMPION = f"{PIPELINE}.new_data", f"{PIPELINE}.drift", f"{PIPELINE}.champion"
FIRST_ROWS = 15_000  # the GX suite wants >= 10,000; training on them takes ~30 s
MIN_NEW_ROWS = 200
# Real seasonal drift: on these flights the champion trained on January scores ROC AUC 0.591, 0.058
# below the 0.650 it was promoted with (tolerance 0.03); retrained with them, logreg reaches 0.628 on
# the new holdout where the champion scores 0.579, so the gate promotes it. Training is seeded, so the
# figures repeat run after run.
DRIFTED_WEEK = ("2013-08-02", "2013-08-09")
WATCH_TIMEOUT = 30  # seconds an idle watch run waits (in the triggerer) before it gives up

pytestmark = pytest.mark.scheduler


def append_flights(db: Path, frame: Any) -> None:
    from mlpipe.demo import append_flights_sqlite

    append_flights_sqlite(db, frame)  # with the weather observed up to them


class Stack(AirflowStack):
    """The shared :class:`airflow_stack.Stack` plus what these scenarios read: trigger logs, asset
    events, run notes, the champion and the run records."""

    def __init__(self, *, home: Path, flights: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.home = home  # MLPIPE_HOME
        self.flights = flights  # every flight, in arrival order

    def trigger_log(self, run_id: str) -> str:
        """What the triggerer logged for ``wait_for_new_data`` of a watch run (its first try)."""
        task_dir = self.env_path("AIRFLOW_HOME") / "logs" / f"dag_id={WATCH}" / f"run_id={run_id}"
        files = sorted((task_dir / "task_id=wait_for_new_data").glob("attempt=1.log.trigger.*.log"))
        return "".join(f.read_text(errors="replace") for f in files)

    def asset_events(self, name: str = NEW_DATA) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT e.extra, e.source_dag_id, e.source_run_id FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE a.name = %s ORDER BY e.id",
            name,
        )
        return [
            {"extra": extra if isinstance(extra, dict) else json.loads(extra), "dag_id": dag_id, "run_id": run_id}
            for extra, dag_id, run_id in rows
        ]

    def note(self, dag_id: str, run_id: str) -> str | None:
        """The DagRun's note, as the UI shows it."""
        rows = self.query(
            "SELECT n.content FROM dag_run_note n JOIN dag_run r ON r.id = n.dag_run_id "
            "WHERE r.dag_id = %s AND r.run_id = %s",
            dag_id,
            run_id,
        )
        return rows[0][0] if rows else None

    def deferred_trigger(self, run_id: str) -> str | None:
        """The trigger's classpath while ``wait_for_new_data`` of ``run_id`` is deferred, else None."""
        rows = self.query(
            "SELECT t.classpath FROM task_instance ti JOIN trigger t ON t.id = ti.trigger_id "
            "WHERE ti.dag_id = %s AND ti.run_id = %s AND ti.task_id = 'wait_for_new_data' AND ti.state = 'deferred'",
            WATCH,
            run_id,
        )
        return rows[0][0] if rows else None

    def describe(self) -> str:
        try:
            events = self.asset_events(NEW_DATA) + self.asset_events(DRIFT)
        except Exception as exc:  # the DB itself may be the problem
            return f"(cannot read the metadata DB: {exc})"
        return "\n".join([super().describe(), *(f"event {e}" for e in events)])

    def champion(self) -> Any:
        registry = self.registry()
        try:
            return registry.champion(PIPELINE)
        finally:
            registry.dispose()

    def registry(self) -> Any:
        from mlpipe.registry import Registry

        return Registry.from_url(f"sqlite:///{self.home / 'registry.db'}", create=False)

    def run_record(self, run_id: str) -> dict[str, Any]:
        """The training run's run.json."""
        from mlpipe.storage import run_key

        return json.loads((self.home / "artifacts" / PIPELINE / "runs" / run_key(run_id) / "run.json").read_text())

    def wait_new_run(self, dag_id: str, count: int) -> tuple[str, str, str]:
        """Wait for the ``count``-th run of ``dag_id`` (1-based); its (run_id, run_type, state)."""
        runs = self.wait_for(f"run #{count} of {dag_id}", lambda: len(r := self.runs(dag_id)) >= count and r)
        return runs[count - 1]

    def print_timings(self) -> None:
        print("\n".join(f"{t:6.1f} s  {what}" for what, t in self.timings))


@pytest.fixture(scope="module")
def metadata_db() -> Iterator[str]:
    """A new, empty PostgreSQL database for Airflow's metadata, dropped afterwards."""
    if reason := unreachable():
        service_unavailable(reason)
    with pg_database("mlpipe_sched") as url:
        yield url


def _test_spec(include: Path, now: datetime) -> None:
    """flights_delay.yaml with a quick deferrable watch; the watch, the monitor and scoring run only when
    the test (or an asset event) starts them (``schedule: null``)."""
    watch = {"schedule": None, "poke_interval": 5, "timeout": WATCH_TIMEOUT, "min_new_rows": MIN_NEW_ROWS}
    write_test_spec(
        include, now, watch={**watch, "deferrable": True}, monitor={"schedule": None}, score={"schedule": None}
    )


@pytest.fixture(scope="module")
def stack(metadata_db: str, tmp_path_factory: pytest.TempPathFactory, flights_frame) -> Iterator[Stack]:
    """Airflow's four components running on ``metadata_db``, with an empty flights source."""
    import psycopg2

    from mlpipe.demo import write_flights_sqlite

    tmp_path = tmp_path_factory.mktemp("scheduler")
    airflow_home, mlpipe_home, logs = tmp_path / "airflow", tmp_path / "mlpipe", tmp_path / "logs"
    for path in (airflow_home, mlpipe_home, logs):
        path.mkdir()
    include = tmp_path / "include"
    shutil.copytree(REPO / "include", include)
    _test_spec(include, datetime.now(UTC).replace(microsecond=0))
    ordered = flights_frame.sort_values(["time_hour", "id"]).reset_index(drop=True)
    write_flights_sqlite(mlpipe_home / "source.db", ordered.head(0))

    env = airflow_env(
        airflow_home=airflow_home,
        metadata_db=metadata_db,
        api_port=free_port(),
        mlpipe_home=mlpipe_home,
        include=include,
        # One worker slot: a deferred sensor must leave it free for other tasks.
        AIRFLOW__CORE__PARALLELISM="1",
        MLPIPE_CODE_VERSION="scheduler-test",
    )
    db_conn = psycopg2.connect(metadata_db.replace("postgresql+psycopg2", "postgresql"), connect_timeout=5)
    db_conn.autocommit = True
    stack = Stack(env=env, home=mlpipe_home, logs=logs, db_conn=db_conn, flights=ordered)
    try:
        with stack.dump_on_failure():
            stack.airflow("db", "migrate", timeout=300)
            stack.mark("airflow db migrate")
            for name, args in COMPONENTS.items():
                stack.start(name, args)
            stack.wait_ready(TRAIN, WATCH, MONITOR, SCORE)
            stack.unpause(TRAIN, WATCH, MONITOR)
            stack.mark("unpaused")
        yield stack
    finally:
        stack.stop()
        db_conn.close()
        stack.print_timings()


def test_new_data_starts_training_by_itself(stack: Stack) -> None:
    flights = stack.flights
    th = flights["time_hour"]
    first = flights[th < th.iloc[FIRST_ROWS]]  # whole hours: up to the hour of the 15,000th flight
    assert len(first) >= 10_000

    with stack.dump_on_failure():
        # 1. The source is empty: the sensor defers, and the triggerer polls it.
        watch1 = stack.trigger(WATCH)
        classpath = stack.wait_for("the first watch run to defer", lambda: stack.deferred_trigger(watch1))
        assert classpath == "mlpipe.triggers.new_data.NewRowsTrigger"
        # The triggerer writes the trigger's own log lines beside the task's log.
        stack.wait_for(
            "the triggerer to poll the source",
            lambda: "mlpipe.triggers.new_data.NewRowsTrigger" in stack.trigger_log(watch1),
            timeout=60,
        )
        append_flights(stack.home / "source.db", first)  # new data arrives while the trigger waits
        assert stack.wait_run_done(WATCH, watch1) == "success"
        assert stack.task_states(WATCH, watch1) == {"wait_for_new_data": "success", "publish_new_data": "success"}
        fired = [line for line in stack.trigger_log(watch1).splitlines() if "Trigger fired event" in line]
        assert len(fired) == 1 and "'status': 'found'" in fired[0]
        (event,) = stack.asset_events(NEW_DATA)
        assert event["run_id"] == watch1 and event["extra"]["rows"] == len(first)

        # ... and the scheduler starts training from the asset event, nobody triggers it.
        train1, run_type, _ = stack.wait_new_run(TRAIN, 1)
        assert run_type == "asset_triggered"

        # 2. Nothing new: a watch run defers (taking the slot for its first check only, between
        # training tasks), times out in the triggerer and skips; nothing is announced. Meanwhile the
        # deferred sensor holds no worker slot: training tasks start and run in the only one there is.
        watch2 = stack.trigger(WATCH)
        deferred_at = stack.wait_for(
            "the idle watch run to defer", lambda: stack.deferred_trigger(watch2) and stack.query("SELECT now()")[0][0]
        )
        ran_meanwhile: set[tuple[str, int]] = set()

        def training_while_deferred() -> bool:
            """Training tasks running (started after the watch deferred) while it is still deferred."""
            if not stack.deferred_trigger(watch2):
                return True
            running = stack.query(
                "SELECT task_id, map_index FROM task_instance WHERE dag_id = %s AND run_id = %s "
                "AND state = 'running' AND start_date > %s",
                TRAIN,
                train1,
                deferred_at,
            )
            if stack.deferred_trigger(watch2):
                ran_meanwhile.update(running)
            return False

        stack.wait_for("the idle watch's deferral to end", training_while_deferred, timeout=WATCH_TIMEOUT + 120)
        assert ran_meanwhile, "no training task ran while the watch was deferred: does the sensor hold the slot?"
        stack.mark(f"training tasks ran in the only slot while the watch was deferred: {sorted(ran_meanwhile)}")
        assert stack.wait_run_done(WATCH, watch2) == "success"
        assert stack.task_states(WATCH, watch2) == {"wait_for_new_data": "skipped", "publish_new_data": "skipped"}
        # The trigger gave up by its own deadline ('status': 'timeout'), or the scheduler's check of
        # the deferral timeout (the same instant, give or take a loop) got there first: skipped either way.
        assert "mlpipe.triggers.new_data.NewRowsTrigger" in stack.trigger_log(watch2)

        assert stack.wait_run_done(TRAIN, train1) == "success"
        champion = stack.champion()
        assert champion is not None and champion.version == 1 and champion.run_id == train1
        trigger = champion.lineage["trigger"]
        assert trigger["trigger"] == "new_data" and trigger["run_type"] == "asset_triggered"
        assert [e["extra"]["rows"] for e in trigger["asset_events"]] == [len(first)]
        note = stack.note(TRAIN, train1)
        assert note is not None and note.startswith("**Started by new data**\n"), note
        assert f"{len(first):,} new rows up to {first['time_hour'].iloc[-1]}" in note and watch1 in note
        assert len(stack.asset_events(NEW_DATA)) == 1
        time.sleep(5)  # a few scheduler loops: long enough for a (wrongly) queued asset run to appear
        assert [r[0] for r in stack.runs(TRAIN)] == [train1]

        record = stack.run_record(train1)
        assert record["trigger"] == "new_data" and record["asset_events"] == trigger["asset_events"]
        stack.mark("new-data scenario done")


def test_drift_starts_training_by_itself(stack: Stack) -> None:
    champion = stack.champion()
    assert champion is not None, "needs the champion test_new_data_starts_training_by_itself trains first"
    trained = len(stack.runs(TRAIN))
    th = stack.flights["time_hour"]
    week = stack.flights[(th >= DRIFTED_WEEK[0]) & (th < DRIFTED_WEEK[1])]

    with stack.dump_on_failure():
        append_flights(stack.home / "source.db", week)  # late-summer flights: delays the winter never showed
        check1 = stack.trigger(MONITOR)
        check2 = stack.trigger(MONITOR)  # queued behind the first (one run at a time): the same window
        assert stack.wait_run_done(MONITOR, check1) == "success"
        assert stack.task_states(MONITOR, check1) == {"check_drift": "success", "announce_drift": "success"}
        (event,) = stack.asset_events(DRIFT)
        extra = event["extra"]
        assert event["run_id"] == check1 and extra["champion_version"] == champion.version
        assert extra["window_end"].startswith("2013-08-08") and extra["window_rows"] == len(week)
        performance = extra["performance"]
        assert performance["metric"] == "roc_auc" and performance["rows"] > 0, performance  # judged on arrivals
        # Late-summer flights drift from the winter's (the weather readings first of all); whether the
        # champion's AUC on them also falls beyond its tolerance depends on its features: either breaches.
        degraded = performance["verdict"] == "degraded"
        assert degraded == (performance["drop"] > performance["tolerance"]), performance
        assert extra["verdict"] == "drift" or degraded, extra
        assert degraded == any("labelled new rows" in reason for reason in extra["reasons"]), extra["reasons"]

        # The drift event starts training by itself.
        train3, run_type, _ = stack.wait_new_run(TRAIN, trained + 1)
        assert run_type == "asset_triggered"

        # The second check of the same window runs before that training can promote (checks go
        # first for the one slot): the same breach against the same champion, announced no more.
        assert stack.wait_run_done(MONITOR, check2) == "success"
        assert stack.task_states(MONITOR, check2) == {"check_drift": "success", "announce_drift": "skipped"}
        registry = stack.registry()
        try:
            same_window = [c for c in registry.drift_checks(PIPELINE) if c["window_end"] == extra["window_end"]]
        finally:
            registry.dispose()
        assert [(c["run_id"], c["breach"], c["emitted"], c["champion_version"]) for c in same_window] == [
            (check1, True, True, champion.version),
            (check2, True, False, champion.version),
        ]

        assert stack.wait_run_done(TRAIN, train3) == "success"
        new = stack.champion()
        assert new.version == champion.version + 1 and new.run_id == train3, "retraining on the drift passes the gate"
        for record in (new.lineage["trigger"], stack.run_record(train3)):
            assert record["trigger"] == "drift" and record["run_type"] == "asset_triggered"
            (drift,) = record["asset_events"]
            assert drift["asset"] == DRIFT and drift["extra"] == extra
        note = stack.note(TRAIN, train3)
        assert note is not None and note.startswith("**Started by drift**\n"), note
        assert check1 in note and ((f"roc_auc {performance['value']:.3f}" in note) == degraded), note

        time.sleep(5)  # a few scheduler loops: no second training run for the same window
        assert len(stack.runs(TRAIN)) == trained + 1 and len(stack.asset_events(DRIFT)) == 1
        stack.mark("drift scenario done")


def test_a_rollback_starts_scoring_with_the_restored_champion(stack: Stack) -> None:
    champion = stack.champion()
    assert champion is not None and champion.version == 2, "needs the two champions the tests above train"
    # Each promotion announced the champion; scoring was paused then (paused DAGs queue nothing).
    assert [e["extra"]["version"] for e in stack.asset_events(CHAMPION)] == [1, 2]
    source = stack.home / "source.db"
    with closing(sqlite3.connect(source)) as conn:
        (rows,) = conn.execute("SELECT count(*) FROM flights").fetchone()

    with stack.dump_on_failure():
        stack.unpause(SCORE)
        out = stack.run(
            sys.executable, "-m", "mlpipe", "registry", "rollback", PIPELINE, "1", "--reason", "v2 misroutes"
        )
        assert "emitted asset event" in out, out
        back = stack.champion()
        assert back.version == 1
        event = stack.asset_events(CHAMPION)[-1]
        assert event["extra"]["version"] == 1 and event["extra"]["previous_version"] == 2

        # The CLI's event (written in the metadata DB, no Airflow process involved) starts scoring.
        score, run_type, _ = stack.wait_new_run(SCORE, 1)
        assert run_type == "asset_triggered"
        assert stack.wait_run_done(SCORE, score) == "success"
        with closing(sqlite3.connect(source)) as conn:
            scored = conn.execute(
                f"SELECT model_version, count(*), count(DISTINCT id) FROM {PIPELINE}_predictions GROUP BY 1"
            ).fetchall()
        assert scored == [(1, rows, rows)], scored
        log = stack.registry()
        try:
            history = log.champion_history(PIPELINE)
        finally:
            log.dispose()
        assert [(e.action, e.version, e.previous_version) for e in history][-1] == ("rollback", 1, 2)
        assert history[-1].reason == "v2 misroutes"
        stack.mark("rollback scenario done")
