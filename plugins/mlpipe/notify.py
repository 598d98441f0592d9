"""Notifications of the spec's ``notify`` list: what a run did, told where the team already looks.

Built on Airflow's notifier mechanism: :class:`PipelineNotifier` is a ``BaseNotifier`` that the DAG
factory hangs on the tasks whose outcome is an event (``on_failure_callback`` of every task,
``on_success_callback`` / ``on_skipped_callback`` of ``promote_model``, ``roll_back_champion`` and
``announce_drift``, the approval operator's own ``notifiers``). When its task ends it works out which
event happened (:func:`event_of`), renders that event's Jinja2 template from
``templates/notify/<event>.txt`` (first line: the subject; the rest: the body) and hands the message
to the provider's notifier of each subscribed entry: ``SmtpNotifier`` (apache-airflow-providers-smtp)
or ``SlackWebhookNotifier`` (apache-airflow-providers-slack), each resolving its Airflow Connection.

Cheap at DAG-parse time: this module imports only ``airflow.sdk`` and mlpipe's spec; the providers,
Jinja2 and the store are imported when a notification is sent, in the worker. A notification that
cannot be delivered logs a warning and is dropped: Airflow runs callbacks after the task's state is
final, and this notifier never raises, so delivery can neither fail nor retry a pipeline's task.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseNotifier

from mlpipe.templating import NOTIFY, environment

if TYPE_CHECKING:
    from airflow.sdk import Context
    from jinja2 import Environment

    from mlpipe.spec import PipelineSpec

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://localhost:8080"
# Seconds a provider may wait for the mail server / webhook: a notification never holds a worker long.
DELIVERY_TIMEOUT = 10
ERROR_CHARS = 400


@dataclass
class Event:
    """One event of one run: its name, the figures its template shows, and its links (label -> URL)."""

    name: str
    facts: dict[str, Any]
    links: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Message:
    subject: str
    body: str

    def html(self) -> str:
        """The body as a mail client shows it (``_mail.html``): escaped text, line breaks kept, links clickable."""
        # re.split with a group: text at even positions, the URLs between them at odd ones.
        parts = re.split(r"(https?://[^\s<]+)", self.body)
        return _environment().get_template("_mail.html").render(parts=list(enumerate(parts)))

    def slack_text(self) -> str:
        return f"*{self.subject}*\n{self.body}"


# -- links -------------------------------------------------------------------------------------------


def base_url() -> str:
    """Where the Airflow UI is reached from outside (``[api] base_url``), without a trailing slash."""
    from airflow.sdk import conf

    return (conf.get("api", "base_url", fallback="") or DEFAULT_BASE_URL).rstrip("/")


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def run_url(dag_id: str, run_id: str, task_id: str | None = None) -> str:
    url = f"{base_url()}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    return f"{url}/tasks/{quote(task_id, safe='')}" if task_id else url


def models_url(path: str) -> str:
    """A page of the Models view, framed by the Airflow UI (as the task buttons open it)."""
    from mlpipe import urls
    from mlpipe.operators.links import base_path

    return _origin(base_url()) + urls.in_airflow_ui(path, base_path())


# -- which event a task's outcome is ------------------------------------------------------------------


def _run(context: Context) -> dict[str, Any]:
    dag_run = context["dag_run"]
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    return {
        "dag_id": dag_run.dag_id,
        "run_id": dag_run.run_id,
        "task_id": ti.task_id + (f"[{map_index}]" if map_index is not None and map_index >= 0 else ""),
        "try_number": getattr(ti, "try_number", None),
    }


def _validation_error(exc: BaseException | None) -> Any:
    from mlpipe.errors import DataValidationError

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, DataValidationError):
            return exc
        seen.add(id(exc))
        # The operators re-raise input errors "from None" (the log shows the message once): the
        # validation error is then the context, not the cause.
        exc = exc.__cause__ or exc.__context__
    return None


def _short(text: str, limit: int = ERROR_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _failure(pipeline: str, context: Context) -> Event:
    from mlpipe import urls
    from mlpipe.layout import run_key

    run = _run(context)
    exc = context.get("exception")
    invalid = _validation_error(exc) if isinstance(exc, BaseException) else None
    links = {"Run": run_url(run["dag_id"], run["run_id"], context["ti"].task_id)}
    if invalid is not None:
        failures = [
            {
                "expectation": f["expectation"],
                "where": f"column {f['column']}" if f.get("column") else "table",
                "observed": f.get("observed"),
                "expected": {k: v for k, v in (f.get("kwargs") or {}).items() if k not in ("column", "batch_id")},
            }
            for f in invalid.failures
        ]
        links["Data Docs"] = models_url(urls.data_docs(pipeline, run_key(run["run_id"])))
        links["Models"] = models_url(urls.pipeline(pipeline))
        return Event("data_invalid", {**run, "suite": invalid.suite, "failures": failures}, links)
    error = "" if exc is None else f"{type(exc).__name__}: {exc}" if not isinstance(exc, str) else exc
    links["Models"] = models_url(urls.pipeline(pipeline))
    return Event("failure", {**run, "error": _short(error or "no error recorded")}, links)


def _verdict_facts(verdict: dict[str, Any]) -> dict[str, Any]:
    """What a message shows of the gate's verdict: the best candidate's figures against the champion's."""
    best = verdict.get("best_candidate")
    return {
        "decision": verdict.get("decision"),
        "best": best,
        "metrics": (verdict.get("candidates") or {}).get(best) or {},
        "primary": verdict.get("primary_metric"),
        "champion_version": verdict.get("champion_version"),
        "champion_metrics": verdict.get("champion_metrics") or {},
        "failed_rules": [r for r in verdict.get("rules") or [] if not r.get("passed")],
    }


def _promotion(pipeline: str, context: Context) -> Event | None:
    """``promote_model`` ended: promoted, rejected (gate or person), or a re-run with nothing to do."""
    from mlpipe import urls
    from mlpipe.layout import run_key
    from mlpipe.stages.promote import result_key

    run = _run(context)
    task = context["task"]
    try:
        result = json.loads(task.store.get_bytes(result_key(pipeline, run["run_id"])))
    except Exception as exc:  # a promotion that recorded nothing failed, and the failure event says so
        log.warning("No promotion result for %s %s to notify about: %s", pipeline, run["run_id"], exc)
        return None
    verdict = task.verdict if isinstance(getattr(task, "verdict", None), dict) else {}
    key = run_key(run["run_id"])
    links = {
        "Run": run_url(run["dag_id"], run["run_id"]),
        "Report": models_url(urls.evaluation_report(pipeline, key)),
    }
    action = result["action"]
    name = {"skipped": "rejected", "rejected": "rejected", "already_done": "unchanged"}.get(action, "promoted")
    if name == "promoted":
        links["Model"] = models_url(urls.run_model(pipeline, key))
    links["Models"] = models_url(urls.pipeline(pipeline))
    facts = {**run, **_verdict_facts(verdict), "result": result, "by_person": action == "rejected"}
    return Event(name, facts, links)


def _drift(pipeline: str, context: Context, skipped: bool) -> Event | None:
    from mlpipe import urls
    from mlpipe.layout import run_key

    run = _run(context)
    check = context["task"].check if isinstance(getattr(context["task"], "check", None), dict) else {}
    links = {
        "Run": run_url(run["dag_id"], run["run_id"]),
        "Drift report": models_url(urls.drift_report(pipeline, run_key(run["run_id"]))),
        "Models": models_url(urls.pipeline(pipeline)),
    }
    return Event("unchanged" if skipped else "drift", {**run, "check": check}, links)


def _rollback(pipeline: str, context: Context) -> Event:
    from mlpipe import urls

    run = _run(context)
    extra = context["ti"].xcom_pull(task_ids=context["ti"].task_id) or {}
    links = {"Run": run_url(run["dag_id"], run["run_id"])}
    if extra.get("version") is not None:
        links["Model"] = models_url(urls.version(pipeline, int(extra["version"])))
    links["Models"] = models_url(urls.pipeline(pipeline))
    return Event("rolled_back", {**run, "event": extra}, links)


def _approval_waiting(pipeline: str, context: Context) -> Event:
    from mlpipe import urls
    from mlpipe.layout import run_key
    from mlpipe.spec import format_duration

    run = _run(context)
    task = context["task"]
    verdict = task.verdict if isinstance(getattr(task, "verdict", None), dict) else {}
    timeout = getattr(task, "response_timeout", None)
    facts = {
        **run,
        **_verdict_facts(verdict),
        "timeout": format_duration(int(timeout.total_seconds())) if timeout else None,
        "default": (getattr(task, "defaults", None) or [None])[0],
    }
    links = {
        "Answer": f"{base_url()}/required_actions",
        "Run": run_url(run["dag_id"], run["run_id"], context["ti"].task_id),
        "Report": models_url(urls.evaluation_report(pipeline, run_key(run["run_id"]))),
        "Models": models_url(urls.pipeline(pipeline)),
    }
    return Event("approval_waiting", facts, links)


def event_of(pipeline: str, when: str, context: Context) -> Event | None:
    """The event a task's outcome ``when`` (failure, success, skipped, waiting) is, if any."""
    task_id = context["ti"].task_id
    if when == "failure":
        # A failure another task's message already tells (build_features on data that failed validation).
        if getattr(context.get("exception"), "told_by", None):
            return None
        return _failure(pipeline, context)
    if when == "waiting":
        return _approval_waiting(pipeline, context)
    if task_id == "promote_model":
        return _promotion(pipeline, context)
    if task_id == "announce_drift":
        return _drift(pipeline, context, skipped=when == "skipped")
    if task_id == "roll_back_champion" and when == "success":
        return _rollback(pipeline, context)
    return None


# -- messages -------------------------------------------------------------------------------------------


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


@cache
def _environment() -> Environment:
    return environment(NOTIFY, filters={"figure": _figure})


def render(pipeline: str, event: Event) -> Message:
    """``event``'s message from its template: the first line is the subject, the rest the body."""
    env = _environment()
    text = env.get_template(f"{event.name}.txt").render(pipeline=pipeline, links=event.links, **event.facts)
    subject, _, body = text.strip().partition("\n")
    lines = [line.rstrip() for line in body.strip().splitlines()]
    return Message(subject.strip(), "\n".join(lines))


def subscribers(entries: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    """The entries that hear ``event``; a validation stop reaches those that only asked for ``failure``."""
    return [e for e in entries if event in e["on"] or (event == "data_invalid" and "failure" in e["on"])]


def deliver(entry: dict[str, Any], message: Message) -> None:
    """Send ``message`` through the provider notifier of ``entry`` (raises what the provider raises)."""
    if entry["via"] == "smtp":
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        notifier = SmtpNotifier(
            smtp_conn_id=entry["connection_id"],
            to=list(entry["to"]),
            subject=message.subject,
            html_content=message.html(),
        )
    else:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        notifier = SlackWebhookNotifier(
            slack_webhook_conn_id=entry["connection_id"],
            text=message.slack_text(),
            unfurl_links=False,
            timeout=DELIVERY_TIMEOUT,
        )
    # notify() rather than the notifier's __call__: the message is rendered already, and a second
    # Jinja pass over it would trip on any braces an error message happens to contain.
    notifier.notify({})


class PipelineNotifier(BaseNotifier):
    """Tells the spec's ``notify`` entries about the event a task's outcome is; never raises."""

    def __init__(self, *, pipeline: str, when: str, entries: list[dict[str, Any]]) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.when = when
        self.entries = entries

    def __call__(self, *args: Any) -> None:
        # BaseNotifier.__call__ renders template fields (none here) and re-raises: a notification must not.
        try:
            self.notify(args[0] if len(args) == 1 else {})
        except Exception as exc:
            log.warning("mlpipe notification of %s (%s) not sent: %s", self.pipeline, self.when, exc, exc_info=True)

    def notify(self, context: Context) -> None:
        event = event_of(self.pipeline, self.when, context)
        if event is None:
            return
        entries = subscribers(self.entries, event.name)
        if not entries:
            return
        message = render(self.pipeline, event)
        for entry in entries:
            try:
                deliver(entry, message)
            except Exception as exc:
                log.warning(
                    "mlpipe notification %r of %s via %s (connection %s) not delivered: %s: %s",
                    message.subject,
                    self.pipeline,
                    entry["via"],
                    entry["connection_id"],
                    type(exc).__name__,
                    exc,
                )
            else:
                log.info("Notified %s via %s: %s", entry["connection_id"], entry["via"], message.subject)


# -- wiring (called by the DAG factory at parse time: no I/O, nothing heavy) -----------------------------

# The tasks whose success / skip is an event, with the events each can be.
OUTCOME_TASKS: dict[str, tuple[str, ...]] = {
    "promote_model": ("promoted", "rejected", "unchanged"),
    "roll_back_champion": ("rolled_back",),
    "announce_drift": ("drift", "unchanged"),
}


def _entries(spec: PipelineSpec, role: str) -> list[dict[str, Any]]:
    return [entry.model_dump() for entry in spec.notify_for(role)]


def failure_callbacks(spec: PipelineSpec, role: str) -> dict[str, Any]:
    """``default_args`` of a ``role`` DAG: every task's final failure is a ``failure`` (or ``data_invalid``)."""
    entries = [e for e in _entries(spec, role) if {"failure", "data_invalid"} & set(e["on"])]
    if not entries:
        return {}
    return {"on_failure_callback": [PipelineNotifier(pipeline=spec.name, when="failure", entries=entries)]}


def outcome_callbacks(spec: PipelineSpec, role: str, task_id: str) -> dict[str, Any]:
    """The success / skip callbacks of ``task_id`` when an entry listens for one of its events."""
    events = set(OUTCOME_TASKS.get(task_id, ()))
    entries = [e for e in _entries(spec, role) if events & set(e["on"])]
    if not entries:
        return {}
    return {
        "on_success_callback": [PipelineNotifier(pipeline=spec.name, when="success", entries=entries)],
        "on_skipped_callback": [PipelineNotifier(pipeline=spec.name, when="skipped", entries=entries)],
    }


def approval_notifiers(spec: PipelineSpec) -> list[PipelineNotifier]:
    """The approval operator's ``notifiers``: sent when the approval starts waiting for a person."""
    entries = [e for e in _entries(spec, "train") if "approval_waiting" in e["on"]]
    return [PipelineNotifier(pipeline=spec.name, when="waiting", entries=entries)] if entries else []
