"""The spec's ``notify`` and ``approval`` sections, the messages' templates, and how the factory wires them.

Delivery through the providers to real loopback servers is tested end to end in
tests/integration/test_notify.py; here: validation (each mistake named by its field), the templates
of the events the integration runs do not reach (failure, drift, rolled_back, unchanged), a
notifier that cannot deliver, and the callbacks each DAG carries.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlpipe import notify
from mlpipe.errors import SpecError
from mlpipe.spec import format_duration, parse_duration, parse_spec

REPO = Path(__file__).resolve().parents[2]
WINE = yaml.safe_load((REPO / "include" / "pipelines" / "wine.yaml").read_text())
MAIL = {"on": ["failure"], "via": "smtp", "connection_id": "mlpipe_smtp", "to": ["ml@example.com"]}


def problems_of(**fields: Any) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec({**WINE, **fields}, Path("wine.yaml"))
    return info.value.problems


class TestNotifySpec:
    def test_a_yaml_notify_section_loads_with_its_bare_on_key(self) -> None:
        text = """
notify:
  - on: [failure, data_invalid, rejected, promoted]
    via: smtp
    connection_id: mlpipe_smtp
    to: [ml-team@example.com]
  - on: [promoted, unchanged]
    via: slack_webhook
    connection_id: mlpipe_slack
"""
        spec = parse_spec({**WINE, **yaml.safe_load(text)}, Path("wine.yaml"))  # YAML reads `on:` as True
        assert [(n.via, n.on) for n in spec.notify] == [
            ("smtp", ["failure", "data_invalid", "rejected", "promoted"]),
            ("slack_webhook", ["promoted", "unchanged"]),
        ]
        assert spec.notify_for("train") == spec.notify and spec.notify_for("rollback") == spec.notify[:1]

    def test_unknown_event_is_named_with_the_allowed_ones(self) -> None:
        (problem,) = problems_of(notify=[{**MAIL, "on": ["failure", "failed"]}])
        assert problem.startswith("notify[0].on[1]: Input should be 'failure', 'data_invalid'")
        assert "(got 'failed')" in problem

    def test_missing_connection_bad_channel_and_recipients(self) -> None:
        entry = {k: v for k, v in MAIL.items() if k != "connection_id"}
        assert problems_of(notify=[entry]) == ["notify[0].connection_id: Field required"]
        (problem,) = problems_of(notify=[{**MAIL, "via": "pager"}])
        assert problem == "notify[0].via: Input should be 'smtp' or 'slack_webhook' (got 'pager')"
        assert problems_of(notify=[{**MAIL, "to": []}]) == [
            "notify[0]: via smtp needs `to` (the recipients' addresses)"
        ]
        assert problems_of(notify=[{**MAIL, "to": ["ml-team"]}]) == ["notify[0].to: not mail addresses: ['ml-team']"]
        (problem,) = problems_of(notify=[{**MAIL, "via": "slack_webhook"}])
        assert problem.startswith("notify[0]: `to` is for smtp")

    def test_an_event_no_dag_of_the_pipeline_sends_is_an_error(self) -> None:
        (problem,) = problems_of(notify=[MAIL, {**MAIL, "on": ["drift"]}])
        assert problem.endswith("notify[1].on: 'drift' is sent by the monitor DAG, which this spec has not")


class TestApprovalSpec:
    def test_the_old_shorthand_and_the_deadline_form(self) -> None:
        old = parse_spec({**WINE, "approval": "required"}, Path("wine.yaml")).approval
        assert (old.required, old.timeout, old.default) == (True, None, "reject")
        assert parse_spec({**WINE, "approval": "none"}, Path("wine.yaml")).approval.required is False
        new = parse_spec(
            {**WINE, "approval": {"required": True, "timeout": "24h", "default": "approve"}}, Path("wine.yaml")
        ).approval
        assert (new.timeout, new.timeout_text, new.default) == (86_400, "24h", "approve")

    def test_bad_timeout_and_default_are_named(self) -> None:
        assert problems_of(approval={"required": True, "timeout": "a day"}) == [
            "approval.timeout: 'a day' is not a duration: use e.g. '24h', '90m', '2d', '1h30m' or seconds"
        ]
        (problem,) = problems_of(approval={"required": True, "default": "maybe"})
        assert problem == "approval.default: Input should be 'reject' or 'approve' (got 'maybe')"

    @pytest.mark.parametrize(
        ("text", "seconds", "back"),
        [("24h", 86_400, "24h"), ("90m", 5_400, "1h30m"), ("1d12h", 129_600, "36h"), ("2d", 172_800, "2d")],
    )
    def test_durations(self, text: str, seconds: int, back: str) -> None:
        assert parse_duration(text) == seconds and format_duration(seconds) == back
        with pytest.raises(ValueError):
            parse_duration("0s")


RUN = {"dag_id": "wine_monitor", "run_id": "scheduled__2026-05-01T06:00:00+00:00", "task_id": "x", "try_number": 3}
LINKS = {"Run": "http://af/run", "Models": "http://af/models"}


class TestTemplates:
    def test_failure_names_task_attempt_and_error(self) -> None:
        facts = {**RUN, "task_id": "extract_snapshot", "error": "ExtractError: no {{x}}"}
        event = notify.Event("failure", facts, LINKS)
        message = notify.render("wine", event)
        assert message.subject == "[mlpipe] wine: extract_snapshot failed"
        assert message.body.splitlines() == [
            "wine_monitor run scheduled__2026-05-01T06:00:00+00:00: task extract_snapshot failed (attempt 3).",
            "",
            "ExtractError: no {{x}}",
            "",
            "Run: http://af/run",
            "Models: http://af/models",
        ]
        assert '<a href="http://af/run">http://af/run</a>' in message.html()

    def test_drift_lists_the_drifted_features(self) -> None:
        check = {
            "champion_version": 2,
            "drifted_share": 0.5,
            "window_start": "2013-06-01",
            "window_end": "2013-06-08",
            "window_rows": 6100,
            "score_psi": 0.31,
            "reasons": ["dep_hour: PSI 0.42 >= 0.2", "carrier: JS 0.15 >= 0.1"],
        }
        message = notify.render("flights_delay", notify.Event("drift", {**RUN, "check": check}, LINKS))
        assert message.subject == "[mlpipe] flights_delay: drift vs champion v2 (50% of features)"
        assert "(6100 rows) drifted; retraining starts." in message.body
        assert "Score PSI 0.3100." in message.body
        assert "- dep_hour: PSI 0.42 >= 0.2\n- carrier: JS 0.15 >= 0.1" in message.body

    def test_rolled_back_and_unchanged(self) -> None:
        event = {"version": 1, "previous_version": 2, "actor": "carol", "reason": "v2 was forced in error"}
        message = notify.render("wine", notify.Event("rolled_back", {**RUN, "event": event}, LINKS))
        assert message.subject == "[mlpipe] wine rolled back to v1"
        assert "champion v2 -> v1 by carol: v2 was forced in error" in message.body
        result = {"message": "run r already registered wine v3; nothing to do"}
        message = notify.render("wine", notify.Event("unchanged", {**RUN, "result": result}, LINKS))
        assert message.subject == "[mlpipe] wine: wine_monitor changed nothing"
        assert "run r already registered wine v3; nothing to do." in message.body

    def test_subscribers_hear_a_validation_stop_as_a_failure(self) -> None:
        entries = [{"on": ["failure"]}, {"on": ["data_invalid"]}, {"on": ["promoted"]}]
        assert notify.subscribers(entries, "data_invalid") == entries[:2]
        assert notify.subscribers(entries, "failure") == entries[:1]


class TestDelivery:
    def test_an_unreachable_server_logs_a_warning_and_raises_nothing(self, monkeypatch, caplog) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        conn = {"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": {"from_email": "m@example.com"}}
        monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_SMTP", json.dumps(conn))
        notifier = notify.PipelineNotifier(pipeline="wine", when="failure", entries=[MAIL])

        class TI:
            task_id, map_index, try_number = "extract_snapshot", -1, 1

        class DagRun:
            dag_id, run_id = "wine_train", "manual__1"

        with caplog.at_level(logging.WARNING, logger="mlpipe.notify"):
            notifier({"ti": TI(), "dag_run": DagRun(), "exception": RuntimeError("boom")})
        (record,) = [r for r in caplog.records if "not delivered" in r.getMessage()]
        said = record.getMessage()
        assert "'[mlpipe] wine: extract_snapshot failed' of wine via smtp (connection mlpipe_smtp)" in said
        assert "ConnectionRefusedError" in said


class TestWiring:
    @pytest.fixture
    def dags(self, tmp_path: Path) -> dict[str, Any]:
        from mlpipe.dag_factory import build_dags

        include = tmp_path / "include"
        shutil.copytree(REPO / "include", include)
        spec = include / "pipelines" / "wine.yaml"
        spec.write_text(
            spec.read_text()
            + "\napproval: {required: true, timeout: 24h, default: reject}\n"
            + "notify:\n  - on: [failure, promoted, approval_waiting, rolled_back]\n"
            + "    via: slack_webhook\n    connection_id: mlpipe_slack\n"
        )
        return build_dags(include / "pipelines")

    def test_callbacks_where_the_events_happen(self, dags) -> None:
        train = dags["wine_train"]
        for task in train.tasks:
            (callback,) = task.on_failure_callback
            assert isinstance(callback, notify.PipelineNotifier) and callback.when == "failure"
        promote = train.get_task("promote_model")
        assert [c.when for c in promote.on_success_callback + promote.on_skipped_callback] == ["success", "skipped"]
        assert train.get_task("evaluate_candidates").on_success_callback == []
        rollback = dags["wine_rollback"].get_task("roll_back_champion")
        assert [c.when for c in rollback.on_success_callback] == ["success"]
        assert dags["wine_score"].get_task("score_batch").on_failure_callback[0].entries[0]["via"] == "slack_webhook"

    def test_the_approval_carries_its_deadline_default_and_notifier(self, dags) -> None:
        approve = dags["wine_train"].get_task("approve_promotion")
        assert (approve.response_timeout, approve.defaults) == (timedelta(hours=24), ["Reject"])
        assert [n.when for n in approve.notifiers] == ["waiting"]
        assert "without an answer within 24h it is rejected" in dags["wine_train"].doc_md

    def test_no_notify_section_adds_no_callback(self) -> None:
        from mlpipe.dag_factory import build_dags

        for dag in build_dags(REPO / "include" / "pipelines").values():
            for task in dag.tasks:
                assert not task.on_failure_callback and not task.on_success_callback, (dag.dag_id, task.task_id)
