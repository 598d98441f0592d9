"""``python -m mlpipe report open``: where a model version's reports are, and a clear exit 1 when there are none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlpipe import layout
from mlpipe.cli import main
from mlpipe.registry import ModelVersion, Registry
from mlpipe.storage import LocalStore, run_key

PIPELINE = "flights_delay"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLPIPE_HOME", str(tmp_path))
    for name in ("AIRFLOW_CONN_MLPIPE_REGISTRY", "AIRFLOW_CONN_MLPIPE_STORE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def register(home: Path, version: int, *, report: bool = True) -> str:
    """Register ``version`` (champion from then on); give its run an evaluation report if asked."""
    run_id = f"manual__2026-0{version}-01T00:00:00+00:00"
    store = LocalStore(home / "artifacts")
    prefix = layout.run_prefix(PIPELINE, run_key(run_id))
    if report:
        store.put_bytes(layout.evaluation_report(PIPELINE, run_key(run_id)), b"<!doctype html>")
        docs = store.put_bytes(f"{prefix}/validate/data_docs/validations/x.html", b"<html></html>")
        store.put_bytes(f"{prefix}/validate/summary.json", json.dumps({"data_docs_uri": docs.uri}).encode())
    registry = Registry.from_url(f"sqlite:///{home / 'registry.db'}")
    registry.register_and_promote(
        ModelVersion(
            pipeline=PIPELINE, version=version, run_id=run_id, candidate="hgb", estimator="x", params={},
            metrics={}, data_sha256="a" * 64, data_rows=1, spec_sha256="b" * 64, code_version="t",
            artifact_key=f"file:///m/v{version}", artifact_sha256="c" * 64,
        ),
        expected_seq=version - 1, action="first" if version == 1 else "promote", reason="t", actor="t",
    )  # fmt: skip
    registry.dispose()
    return run_id


def test_champion_reports_by_default(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    register(home, 1)
    run_id = register(home, 2)
    registry = Registry.from_url(f"sqlite:///{home / 'registry.db'}")
    for version, end in ((2, "2013-03-07"), (2, "2013-03-14"), (1, "2013-03-21")):
        registry.record_drift(
            PIPELINE, window_start="2013-03-01", window_end=end, champion_version=version, verdict="ok",
            breach=False, figures={"report_uri": f"file:///reports/{end}/index.html"}, run_id=f"monitor-{end}",
        )  # fmt: skip
    registry.dispose()
    capsys.readouterr()

    assert main(["report", "open", PIPELINE]) == 0

    out = capsys.readouterr().out
    report = home / "artifacts" / PIPELINE / "runs" / run_key(run_id) / "evaluate" / "report" / "index.html"
    assert f"{PIPELINE} v2 (run {run_id})" in out
    assert f"evaluation report  {report}\n" in out, "a local report is printed as a path a browser opens"
    assert "validate/data_docs/validations/x.html" in out
    assert "drift report       /reports/2013-03-14/index.html" in out, "the latest drift check of this version"

    assert main(["report", "open", PIPELINE, "1", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["version"] == 1 and found["evaluation_report"].endswith("/evaluate/report/index.html")
    assert found["drift_report"] == "file:///reports/2013-03-21/index.html"


def test_missing_reports_exit_1_with_a_clear_message(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "open", PIPELINE]) == 1
    assert "has no champion yet" in capsys.readouterr().err

    register(home, 1, report=False)
    assert main(["report", "open", PIPELINE]) == 1
    err = capsys.readouterr().err
    assert "v1 has no evaluation report" in err and "/evaluate/report/index.html" in err

    assert main(["report", "open", PIPELINE, "7"]) == 1
    assert "no model version 7" in capsys.readouterr().err


def test_a_version_without_data_docs_or_drift_lists_only_the_report(home: Path, capsys) -> None:
    run_id = register(home, 1)
    LocalStore(home / "artifacts").delete_prefix(layout.validation_prefix(PIPELINE, run_key(run_id)))
    capsys.readouterr()
    assert main(["report", "open", PIPELINE]) == 0
    out = capsys.readouterr().out
    assert "evaluation report" in out and "data docs" not in out and "drift report" not in out
