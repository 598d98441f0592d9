"""Notifications delivered for real: a loopback SMTP server and a loopback Slack webhook under ``dag.test()``.

On the small ``wine`` pipeline (one candidate, no search, so each run takes seconds) whose spec sends
every training event to three places: mail to an ``aiosmtpd`` server this module starts, a Slack
incoming webhook served by a local HTTP server, and mail to a port where nothing listens (each run's
outcome must be what it is without notifications). The runs, in order, share one registry:

1. only the 59 wines recorded before March 2013: the suite's row count stops the run (``data_invalid``);
2. the whole table: the first champion (``promoted``);
3. the same data again: the gate rejects the tie (``rejected``, with the failing rule's figures);
4. ``approval: {required: true, timeout: 2s, default: reject}`` and a forced promotion: the approval
   waits (``approval_waiting``), nobody answers, and the scheduler's own timeout sweep takes the
   default: recorded as "rejected by timeout: no answer within 2s" and notified (``rejected``).
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagruns import REPO, awaiting_input_ti, load_dag, open_registry, state, task_states, warm_up

from mlpipe.storage import run_key

pytestmark = pytest.mark.slow

PIPELINE = "wine"
EVENTS = ["failure", "data_invalid", "rejected", "promoted", "approval_waiting"]
BASE_URL = "http://airflow.example.com:8080"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Inbox:
    """What the loopback SMTP server received, as parsed mails."""

    def __init__(self) -> None:
        self.mails: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's handler hook
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.mails.append(message)
        return "250 OK"

    def take(self) -> list[EmailMessage]:
        mails, self.mails = self.mails, []
        return mails


def text_of(mail: EmailMessage) -> str:
    body = mail.get_body(("html", "plain"))
    return body.get_content()


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[int, Inbox]]:
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, inbox
    controller.stop()


@pytest.fixture(scope="module")
def webhook() -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """A Slack incoming webhook on loopback: records each JSON payload, answers 200 'ok' as Slack does."""
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            received.append({"path": self.path, "payload": json.loads(self.rfile.read(length))})
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], received
    server.shutdown()


@pytest.fixture(scope="module")
def home(airflow_db, tmp_path_factory, smtp, webhook):
    """MLPIPE_HOME with the wine table, an include tree whose wine spec notifies, and the Connections."""
    from mlpipe.datasets import seed_datasets

    root = tmp_path_factory.mktemp("notify")
    include = root / "include"
    shutil.copytree(REPO / "include", include)
    spec_path = include / "pipelines" / f"{PIPELINE}.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["candidates"] = [{"name": "logreg", "estimator": "sklearn.linear_model.LogisticRegression"}]
    spec["notify"] = [
        {"on": EVENTS, "via": "smtp", "connection_id": "mlpipe_smtp", "to": ["ml-team@example.com"]},
        {"on": EVENTS, "via": "slack_webhook", "connection_id": "mlpipe_slack"},
        {"on": EVENTS, "via": "smtp", "connection_id": "mlpipe_smtp_down", "to": ["nobody@example.com"]},
    ]
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    smtp_extra = {"from_email": "mlpipe@example.com", "disable_tls": True, "disable_ssl": True, "timeout": 5}
    env = {
        "MLPIPE_HOME": str(root / "mlpipe"),
        "MLPIPE_INCLUDE": str(include),
        "AIRFLOW__API__BASE_URL": BASE_URL,
        "AIRFLOW_CONN_MLPIPE_SMTP": json.dumps(
            {"conn_type": "smtp", "host": "127.0.0.1", "port": smtp[0], "extra": smtp_extra}
        ),
        "AIRFLOW_CONN_MLPIPE_SMTP_DOWN": json.dumps(
            {"conn_type": "smtp", "host": "127.0.0.1", "port": free_port(), "extra": smtp_extra}
        ),
        "AIRFLOW_CONN_MLPIPE_SLACK": json.dumps(
            {"conn_type": "slackwebhook", "password": f"http://127.0.0.1:{webhook[0]}/services/T0/B0/XYZ"}
        ),
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        seed_datasets(root / "mlpipe" / "source.db")
        yield root / "mlpipe"


def run_train(day: datetime, **conf: Any) -> Any:
    return load_dag(f"{PIPELINE}_train").test(run_after=day, logical_date=day, run_conf=conf)


def delivered(smtp, webhook) -> tuple[EmailMessage, dict[str, Any]]:
    """The one mail and the one Slack payload this run sent (the dead server received nothing, of course)."""
    mails = smtp[1].take()
    payloads = [r["payload"] for r in webhook[1]]
    webhook[1].clear()
    assert len(mails) == 1 and len(payloads) == 1, ([m["Subject"] for m in mails], payloads)
    assert mails[0]["X-Envelope-To"] == "ml-team@example.com" and mails[0]["From"] == "mlpipe@example.com"
    return mails[0], payloads[0]


def links_of(text: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z][\w ]+): (https?://\S+)$", text, flags=re.M))


def assert_same_message(mail: EmailMessage, payload: dict[str, Any]) -> str:
    """Mail and Slack carry the same text: subject then body; returns the body (as plain text)."""
    import html

    body = html.unescape(re.sub(r"<[^>]+>", "", text_of(mail))).strip()
    assert payload["text"] == f"*{mail['Subject']}*\n{body}"
    return body


def test_validation_stop_is_notified_with_the_failed_expectations(home, smtp, webhook) -> None:
    import sqlite3

    source = home / "source.db"
    shutil.copyfile(source, home / "source.full.db")
    with sqlite3.connect(source) as conn:
        # 59 wines left, of every cultivar: the suite's row count fails, the split beside it does not.
        conn.execute("DELETE FROM wine WHERE rowid % 3 != 0")
    try:
        run = run_train(datetime(2026, 4, 30, tzinfo=UTC))
    finally:
        shutil.move(home / "source.full.db", source)

    states = task_states(run)
    assert state(run) == "failed" and states["validate_snapshot"] == "failed", states
    assert states["extract_snapshot"] == "success", states
    assert states["build_features"] == "success", states
    assert [states[t] for t in ("train_candidates", "evaluate_candidates", "promote_model")] == ["upstream_failed"] * 3
    mail, payload = delivered(smtp, webhook)
    assert mail["Subject"].startswith(f"[mlpipe] {PIPELINE}: data failed validation (")
    body = assert_same_message(mail, payload)
    assert f"{PIPELINE}_train run {run.run_id} stopped at validation: suite wine, 1 failed." in body
    assert "- expect_table_row_count_to_be_between on table: observed 59 (expected min_value 100" in body
    key = run_key(run.run_id)
    assert links_of(body) == {
        "Run": f"{BASE_URL}/dags/{PIPELINE}_train/runs/{run.run_id.replace(':', '%3A').replace('+', '%2B')}"
        "/tasks/validate_snapshot",
        "Data Docs": f"{BASE_URL}/plugin/models/mlpipe/pipelines/{PIPELINE}/runs/{key}/data-docs",
        "Models": f"{BASE_URL}/plugin/models/mlpipe/pipelines/{PIPELINE}",
    }


def test_promotion_is_notified_with_its_metrics_and_links(home, smtp, webhook) -> None:
    run = run_train(datetime(2026, 5, 1, tzinfo=UTC))

    assert state(run) == "success" and set(task_states(run).values()) == {"success"}, task_states(run)
    champion = open_registry().champion(PIPELINE)
    mail, payload = delivered(smtp, webhook)
    f1 = champion.metrics["f1_macro"]
    assert mail["Subject"] == f"[mlpipe] {PIPELINE} v1 promoted (logreg, f1_macro {f1:.4f})"
    body = assert_same_message(mail, payload)
    assert f"no champion before: {PIPELINE} v1 (logreg) is the first champion." in body
    assert f"f1_macro {f1:.4f}\n" in body and f"log_loss {champion.metrics['log_loss']:.4f}" in body
    key = run_key(run.run_id)
    links = links_of(body)
    assert list(links) == ["Run", "Report", "Model", "Models"]
    assert links["Report"].endswith(f"/pipelines/{PIPELINE}/runs/{key}/evaluation-report")
    assert links["Model"].endswith(f"/pipelines/{PIPELINE}/runs/{key}/model")


def test_rejection_is_notified_with_the_failing_rule_and_its_figures(home, smtp, webhook) -> None:
    run = run_train(datetime(2026, 5, 2, tzinfo=UTC))

    states = task_states(run)
    assert state(run) == "success" and states["promote_model"] == "skipped", states
    verdict = json.loads(
        (home / "artifacts" / PIPELINE / "runs" / run_key(run.run_id) / "evaluate" / "verdict.json").read_text()
    )
    failing = [r for r in verdict["rules"] if not r["passed"]]
    assert failing, verdict["rules"]
    mail, payload = delivered(smtp, webhook)
    assert mail["Subject"] == f"[mlpipe] {PIPELINE}: candidate rejected"
    body = assert_same_message(mail, payload)
    assert "the gate did not bless logreg. The champion is unchanged (v1)." in body
    for rule in failing:
        assert f"- {rule['rule']}: {rule['detail']}" in body
    f1 = verdict["candidates"]["logreg"]["f1_macro"]
    assert f"f1_macro {f1:.4f} (champion v1: {verdict['champion_metrics']['f1_macro']:.4f})" in body
    assert list(links_of(body)) == ["Run", "Report", "Models"]


def sweep_when_due(dag_id: str, errors: list[BaseException]) -> None:
    """Once the approval awaits input and its 2 s are up, run the scheduler's timeout sweep (dag.test() runs none)."""
    import logging
    import types

    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    try:
        awaiting_input_ti(dag_id, "approve_promotion")
        time.sleep(2.5)
        SchedulerJobRunner.check_awaiting_input_timeouts(types.SimpleNamespace(log=logging.getLogger("sweep")))
    except BaseException as exc:
        errors.append(exc)


def test_an_unanswered_approval_times_out_as_a_rejection_and_is_notified(home, smtp, webhook) -> None:
    spec_path = Path(os.environ["MLPIPE_INCLUDE"]) / "pipelines" / f"{PIPELINE}.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["approval"] = {"required": True, "timeout": "2s", "default": "reject"}
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    warm_up()
    errors: list[BaseException] = []
    thread = threading.Thread(target=sweep_when_due, args=(f"{PIPELINE}_train", errors), daemon=True)
    thread.start()
    run = run_train(datetime(2026, 5, 3, tzinfo=UTC), force_promotion=True, force_reason="try the new vintage")
    thread.join(timeout=10)
    assert errors == [], errors

    states = task_states(run)
    assert state(run) == "success", states
    assert states["approve_promotion"] == "success" and states["promote_model"] == "skipped", states
    result = json.loads(
        (home / "artifacts" / PIPELINE / "runs" / run_key(run.run_id) / "promote" / "result.json").read_text()
    )
    assert (result["action"], result["message"]) == ("rejected", "rejected by timeout: no answer within 2s")
    assert [e.version for e in open_registry().champion_history(PIPELINE)] == [1]

    mails = smtp[1].take()
    payloads = [r["payload"]["text"] for r in webhook[1]]
    webhook[1].clear()
    assert [m["Subject"] for m in mails] == [
        f"[mlpipe] {PIPELINE}: approve the promotion of logreg?",
        f"[mlpipe] {PIPELINE}: candidate rejected (rejected by timeout)",
    ]
    assert [p.splitlines()[0] for p in payloads] == [f"*{m['Subject']}*" for m in mails]
    waiting, rejected = (text_of(m) for m in mails)
    assert "Without an answer within 2s, it is rejected." in waiting
    assert f"{BASE_URL}/required_actions" in waiting
    assert "the promotion of logreg was rejected by timeout: no answer within 2s." in rejected
