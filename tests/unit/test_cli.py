"""``python -m mlpipe``: registry queries answer in text and JSON, and fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlpipe.cli import main
from mlpipe.registry import ModelVersion, Registry


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLPIPE_HOME", str(tmp_path))
    monkeypatch.delenv("AIRFLOW_CONN_MLPIPE_REGISTRY", raising=False)
    return tmp_path


def _register(home: Path, version: int, seq: int) -> None:
    registry = Registry.from_url(f"sqlite:///{home / 'registry.db'}")
    registry.register_and_promote(
        ModelVersion(
            pipeline="flights_delay",
            version=version,
            run_id=f"run-{version}",
            candidate="hgb",
            estimator="sklearn.ensemble.HistGradientBoostingClassifier",
            params={"max_iter": 10},
            metrics={"roc_auc": 0.6 + version / 100},
            data_sha256="a" * 64,
            data_rows=100,
            spec_sha256="b" * 64,
            code_version="test",
            artifact_key=f"file:///m/v{version}",
            artifact_sha256="c" * 64,
        ),
        expected_seq=seq,
        action="first" if seq == 0 else "promote",
        reason="test",
        actor="test",
    )
    registry.dispose()


def test_champion_without_one_exits_1_with_a_message(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "champion", "flights_delay", "--json"]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert "no champion" in out.err and "flights_delay" in out.err


def test_list_show_champion_history(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _register(home, 1, 0)
    _register(home, 2, 1)
    capsys.readouterr()

    assert main(["registry", "list", "flights_delay", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(v["version"], v["champion"]) for v in listed] == [(1, False), (2, True)]

    assert main(["registry", "champion", "flights_delay", "--json"]) == 0
    champ = json.loads(capsys.readouterr().out)
    assert champ["version"] == 2 and champ["run_id"] == "run-2" and champ["data_sha256"] == "a" * 64
    assert champ["metrics"] == {"roc_auc": 0.62} and champ["promotion"]["previous_version"] == 1

    assert main(["registry", "show", "flights_delay", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["champion"] is False

    assert main(["registry", "list", "flights_delay"]) == 0
    text = capsys.readouterr().out
    assert "0.6200" in text and "(* = champion)" in text

    assert main(["registry", "history", "flights_delay"]) == 0
    assert "v1 -> v2" in capsys.readouterr().out


def test_unknown_version_exits_1(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _register(home, 1, 0)
    assert main(["registry", "show", "flights_delay", "9"]) == 1
    assert "no model version 9" in capsys.readouterr().err


def test_rollback_appends_and_says_when_the_event_was_not_emitted(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import airflow.utils.session

    def unreachable() -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(airflow.utils.session, "create_session", unreachable)
    _register(home, 1, 0)
    _register(home, 2, 1)
    capsys.readouterr()

    assert main(["registry", "rollback", "flights_delay", "1", "--reason", "v2 drops late flights"]) == 0

    out = capsys.readouterr().out
    assert "flights_delay: champion v2 -> v1 (rollback, champion log #3, by " in out
    assert "(cli): v2 drops late flights)" in out
    assert "champion asset event NOT emitted: Airflow's metadata database is not reachable (OSError" in out
    assert "trigger flights_delay_score by hand" in out
    assert main(["registry", "history", "flights_delay", "--json"]) == 0
    events = json.loads(capsys.readouterr().out)
    assert [(e["seq"], e["version"], e["previous_version"], e["action"]) for e in events] == [
        (1, 1, None, "first"),
        (2, 2, 1, "promote"),
        (3, 1, 2, "rollback"),
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["1", "--reason", " "], "needs a reason"),
        (["2", "--reason", "why"], "v2 already is the champion"),
        (["9", "--reason", "why"], "has no model version 9"),
    ],
)
def test_bad_rollback_writes_nothing(home: Path, capsys: pytest.CaptureFixture[str], args: list, message: str) -> None:
    _register(home, 1, 0)
    _register(home, 2, 1)
    capsys.readouterr()

    assert main(["registry", "rollback", "flights_delay", *args]) == 1

    assert message in capsys.readouterr().err
    registry = Registry.from_url(f"sqlite:///{home / 'registry.db'}")
    assert len(registry.champion_history("flights_delay")) == 2
    registry.dispose()
