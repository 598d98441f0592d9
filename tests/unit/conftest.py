"""Shared fixtures of the unit tests: tmp include trees, tiny specs, frames, stores, registries, PostgreSQL, MySQL."""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

PG_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"

# The smallest spec that exercises every feature kind; tests copy it and change what they test.
BINARY_SPEC: dict[str, Any] = {
    "name": "tiny",
    "description": "A tiny binary pipeline for unit tests.",
    "owner": "tests",
    "source": {"query": "tiny.sql", "chunk_rows": 1000},
    "target": {"column": "y", "task": "binary", "positive_class": 1},
    "features": {
        "numeric": ["num"],
        "categorical": ["cat"],
        "datetime": [{"column": "ts", "parts": ["day_of_week", "hour"], "timezone": "America/New_York"}],
    },
    "split": {"method": "time", "time_column": "ts", "holdout_fraction": 0.25},
    "candidates": [
        {"name": "logreg", "estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 200}},
        {"name": "hgb", "estimator": "sklearn.ensemble.HistGradientBoostingClassifier", "params": {"max_iter": 10}},
    ],
    "metrics": {"primary": "roc_auc", "secondary": ["log_loss", "brier"]},
    "gate": {"min_primary": 0.5, "max_regression": {"log_loss": 0.05}},
    "validation": {"suite": "tiny.json"},
}

TINY_SQL = "SELECT id, ts, cat, num, y FROM flights WHERE ts < :as_of ORDER BY ts, id\n"


def spec_dict(**changes: Any) -> dict[str, Any]:
    """A deep copy of :data:`BINARY_SPEC` with top-level fields replaced."""
    data = copy.deepcopy(BINARY_SPEC)
    data.update(copy.deepcopy(changes))
    return data


def write_include(
    root: Path,
    spec: dict[str, Any] | str,
    *,
    name: str | None = None,
    sql: str = TINY_SQL,
    sql_name: str = "tiny.sql",
    suite_name: str = "tiny.json",
) -> Path:
    """Write an include tree (pipelines/, sql/, expectations/) under ``root``; return the spec path."""
    for sub in ("pipelines", "sql", "expectations"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if sql_name:
        (root / "sql" / sql_name).write_text(sql, encoding="utf-8")
    if suite_name:
        (root / "expectations" / suite_name).write_text('{"name": "tiny", "expectations": []}\n', encoding="utf-8")
    text = spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False)
    stem = name or (spec.get("name", "tiny") if isinstance(spec, dict) else "tiny")
    path = root / "pipelines" / f"{stem}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def make_spec() -> Callable[..., dict[str, Any]]:
    """``make_spec(**changes)``: the tiny binary spec as a dict, top-level fields replaced."""
    return spec_dict


@pytest.fixture
def make_frame() -> Callable[..., Any]:
    """``make_frame(task, n=40)``: a tiny frame with a learnable target (see :func:`tiny_frame`)."""
    return tiny_frame


@pytest.fixture
def include_tree(tmp_path: Path) -> Callable[..., Path]:
    """``include_tree(spec_dict, **kw)`` writes a tmp include tree and returns the spec file's path."""

    def make(spec: dict[str, Any] | str, **kwargs: Any) -> Path:
        return write_include(tmp_path / "include", spec, **kwargs)

    return make


@pytest.fixture
def store(tmp_path: Path):
    from mlpipe.storage import LocalStore

    return LocalStore(tmp_path / "artifacts")


@pytest.fixture
def sqlite_registry(tmp_path: Path):
    from mlpipe.registry import Registry

    registry = Registry.from_url(f"sqlite:///{tmp_path / 'registry.db'}")
    yield registry
    registry.dispose()


# -- PostgreSQL ------------------------------------------------------------------------------------


def _service_unavailable(reason: str, service: str = "PostgreSQL") -> None:
    """A needed service is down: a failure in CI (CI=true), a visible skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{service} is required in CI but unavailable: {reason}")
    pytest.skip(f"{service} unavailable (this fails under CI=true): {reason}")


@contextmanager
def new_pg_database(prefix: str = "mlpipe_unit") -> Iterator[str]:
    """A fresh PostgreSQL database (127.0.0.1:5432, user postgres) as a SQLAlchemy URL, dropped after."""
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _service_unavailable(f"cannot create a database on {PG_ADMIN_URL}: {exc.orig}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test module, dropped after."""
    with new_pg_database() as url:
        yield url


# -- MySQL / MariaDB -------------------------------------------------------------------------------

MYSQL_HOST, MYSQL_PORT = "127.0.0.1", 3306


def mysql_connection(database: str) -> Any:
    """An Airflow Connection (type mysql, user root, no password) to ``database`` on the local MariaDB."""
    from airflow.sdk import Connection

    return Connection(
        conn_id="mlpipe_test_mysql", conn_type="mysql", host=MYSQL_HOST, port=MYSQL_PORT, login="root", schema=database
    )


@contextmanager
def new_mysql_database(prefix: str = "mlpipe_unit") -> Iterator[str]:
    """A fresh MariaDB/MySQL database (127.0.0.1:3306, user root) as a SQLAlchemy URL, dropped after.

    The URL is what the MySQL provider's hook makes of an Airflow Connection (``mlpipe.hooks.sql``),
    so every test on it reads through the path a deployment uses: MySqlHook, mysqlclient.
    """
    import sqlalchemy as sa

    from mlpipe.hooks.sql import sqlalchemy_url

    admin = sa.create_engine(sqlalchemy_url(mysql_connection("test")), connect_args={"connect_timeout": 3})
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _service_unavailable(f"cannot create a database on {MYSQL_HOST}:{MYSQL_PORT} as root: {exc.orig}", "MariaDB")
    try:
        yield sqlalchemy_url(mysql_connection(name))
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@pytest.fixture(scope="module")
def mysql_url() -> Iterator[str]:
    """A fresh MariaDB database for one test module, dropped after."""
    with new_mysql_database() as url:
        yield url


# -- tiny frames -----------------------------------------------------------------------------------


def tiny_frame(task: str, n: int = 40, *, seed: int = 0):
    """``n`` rows with a learnable target; the latest rows bring a category training never saw."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    num = rng.normal(size=n)
    cat = np.array(["a", "b", "c"])[np.arange(n) % 3]
    cat[-2:] = "zz_unseen"
    num[5] = np.nan
    signal = num.copy()
    signal[5] = 0.0
    signal = signal + (cat == "a") * 0.8
    if task == "binary":
        y = (signal + rng.normal(scale=0.5, size=n) > 0.3).astype(int)
    elif task == "multiclass":
        y = np.digitize(signal + rng.normal(scale=0.3, size=n), [-0.4, 0.6])
    else:
        y = 3.0 * signal + rng.normal(scale=0.2, size=n)
    ts = pd.date_range("2013-01-01 05:00", periods=n, freq="7h").strftime("%Y-%m-%d %H:%M:%S")
    return pd.DataFrame({"id": np.arange(n), "ts": ts, "cat": cat, "num": num, "y": y})
