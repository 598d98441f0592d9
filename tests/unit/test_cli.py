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
            artifact_uri=f"file:///m/v{version}",
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
