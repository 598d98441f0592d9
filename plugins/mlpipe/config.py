"""Where mlpipe keeps things: MLPIPE_HOME, the include/ tree and the embedded-default URLs.

Everything is read from the environment at call time (never at import), so tests and
deployments can point a process elsewhere without reloading modules.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Airflow Connection ids; an absent connection means the embedded default under MLPIPE_HOME.
SOURCE_CONN_ID = "mlpipe_source"
REGISTRY_CONN_ID = "mlpipe_registry"
STORE_CONN_ID = "mlpipe_store"


def checkout_environment() -> None:
    """Outside an activated venv (``.venv/bin/mlpipe``), fill in what scripts/env.sh would set for this checkout.

    Only variables that are unset, and only when this checkout has its Airflow home (``make setup``
    made ``.airflow/``): Airflow would otherwise create and use ``~/airflow``.
    """
    home = REPO_ROOT / ".airflow"
    if os.environ.get("AIRFLOW_HOME") or not home.is_dir():
        return
    defaults = {
        "AIRFLOW_HOME": str(home),
        "MLPIPE_HOME": str(REPO_ROOT / ".mlpipe"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


def mlpipe_home() -> Path:
    """The embedded default's home: source DB, registry DB and artifact directory."""
    return Path(os.environ.get("MLPIPE_HOME") or REPO_ROOT / ".mlpipe").resolve()


def include_dir() -> Path:
    """Specs, GX suites and SQL files (``MLPIPE_INCLUDE`` overrides ``<repo>/include``)."""
    return Path(os.environ.get("MLPIPE_INCLUDE") or REPO_ROOT / "include").resolve()


def pipelines_dir() -> Path:
    return include_dir() / "pipelines"


def sql_dir() -> Path:
    return include_dir() / "sql"


def expectations_dir() -> Path:
    return include_dir() / "expectations"


def default_source_url() -> str:
    return f"sqlite:///{mlpipe_home() / 'source.db'}"


def default_registry_url() -> str:
    return f"sqlite:///{mlpipe_home() / 'registry.db'}"


def default_store_root() -> Path:
    return mlpipe_home() / "artifacts"


def code_version() -> str:
    """The code that trained a model: ``MLPIPE_CODE_VERSION`` if set (images), else git, else the package."""
    explicit = os.environ.get("MLPIPE_CODE_VERSION")
    if explicit:
        return explicit
    import subprocess

    from mlpipe import __version__

    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{sha}{'.dirty' if dirty else ''}"
