"""Tests of mlpipe.config: locations come from the environment at call time."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpipe import __version__, config


def test_locations_follow_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPIPE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLPIPE_INCLUDE", str(tmp_path / "inc"))

    assert config.mlpipe_home() == tmp_path / "home"
    assert config.default_source_url() == f"sqlite:///{tmp_path / 'home' / 'source.db'}"
    assert config.default_registry_url() == f"sqlite:///{tmp_path / 'home' / 'registry.db'}"
    assert config.default_store_root() == tmp_path / "home" / "artifacts"
    assert config.pipelines_dir() == tmp_path / "inc" / "pipelines"
    assert config.sql_dir() == tmp_path / "inc" / "sql"
    assert config.expectations_dir() == tmp_path / "inc" / "expectations"


def test_defaults_are_in_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLPIPE_HOME", raising=False)
    monkeypatch.delenv("MLPIPE_INCLUDE", raising=False)

    assert config.mlpipe_home() == config.REPO_ROOT / ".mlpipe"
    assert config.include_dir() == config.REPO_ROOT / "include"


def test_code_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPIPE_CODE_VERSION", "1.2.3+image")
    assert config.code_version() == "1.2.3+image"

    monkeypatch.delenv("MLPIPE_CODE_VERSION")
    assert config.code_version().startswith(__version__)
