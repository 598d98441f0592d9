"""Tests of mlpipe.hooks: Airflow Connections -> SQLAlchemy URLs (through provider hooks), engines, registry, store."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from airflow.providers.common.sql.hooks.sql import DbApiHook
from airflow.sdk import Connection
from conftest import make_s3_client, s3_connection_uri, service_unavailable

from mlpipe.hooks.connections import get_connection
from mlpipe.hooks.source import open_source
from mlpipe.hooks.sql import database_url, open_registry, source_engine, sqlalchemy_url
from mlpipe.hooks.store import open_store
from mlpipe.storage import LocalStore, S3Store

PATH_STYLE = {"s3": {"addressing_style": "path"}}

PG_CONN_URI = "postgresql://postgres@127.0.0.1:5432/postgres"
CONN_ENVS = ("AIRFLOW_CONN_MLPIPE_SOURCE", "AIRFLOW_CONN_MLPIPE_REGISTRY", "AIRFLOW_CONN_MLPIPE_STORE")


@pytest.fixture(autouse=True)
def no_outer_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections of the shell running the tests (a full stack, CI) must not leak into these cases."""
    for name in CONN_ENVS:
        monkeypatch.delenv(name, raising=False)


class TestGetConnection:
    def test_undefined_conn_id_is_none(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("AIRFLOW_CONN_MLPIPE_NOWHERE", raising=False)
        assert get_connection("mlpipe_nowhere") is None

    def test_uri_form_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(
            "AIRFLOW_CONN_MLPIPE_URI_FORM", "postgresql://alice:s3cret@db.example:6543/flights?sslmode=require"
        )
        conn = get_connection("mlpipe_uri_form")
        assert conn is not None
        assert conn.conn_id == "mlpipe_uri_form"
        assert conn.conn_type == "postgres"  # Airflow normalises the 'postgresql' scheme
        assert (conn.host, conn.port, conn.login, conn.password, conn.schema) == (
            "db.example",
            6543,
            "alice",
            "s3cret",
            "flights",
        )
        assert conn.extra_dejson == {"sslmode": "require"}

    def test_json_form_from_the_environment(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.setenv(
            "AIRFLOW_CONN_MLPIPE_JSON_FORM",
            json.dumps({"conn_type": "fs", "extra": {"path": str(tmp_path / "artifacts")}}),
        )
        conn = get_connection("mlpipe_json_form")
        assert conn is not None
        assert conn.conn_type == "fs"
        assert conn.extra_dejson == {"path": str(tmp_path / "artifacts")}


class TestSqlalchemyUrl:
    def test_sqlite_host_is_the_file(self) -> None:
        conn = Connection(conn_id="src", conn_type="sqlite", host="/data/source.db")
        assert sqlalchemy_url(conn) == "sqlite:////data/source.db"

    def test_sqlite_path_given_as_a_uri_path(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        # sqlite:////abs/path.db leaves Airflow's host empty and puts the path in schema; an empty
        # path would be SQLAlchemy's in-memory database, a silent fresh DB in every process.
        db = tmp_path / "source.db"
        monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_SQLITE_PATH", f"sqlite:///{db}")
        url = sqlalchemy_url(get_connection("mlpipe_sqlite_path"))
        assert sa.make_url(url).database == str(db)

    def test_sqlite_without_a_path_is_refused(self) -> None:
        conn = Connection(conn_id="mlpipe_nofile", conn_type="sqlite")
        with pytest.raises(ValueError, match=r"'mlpipe_nofile'.*file"):
            sqlalchemy_url(conn)

    def test_postgres_with_every_part(self) -> None:
        conn = Connection(
            conn_id="src",
            conn_type="postgres",
            host="db.example",
            login="alice",
            password="s3cret",
            port=6543,
            schema="flights",
        )
        assert sqlalchemy_url(conn) == "postgresql+psycopg2://alice:s3cret@db.example:6543/flights"

    def test_postgres_password_is_escaped_and_round_trips(self) -> None:
        conn = Connection(conn_id="src", conn_type="postgresql", host="db", login="bob", password="p@ss/w:rd")
        url = sqlalchemy_url(conn)
        assert url == "postgresql+psycopg2://bob:p%40ss%2Fw%3Ard@db"
        parsed = sa.make_url(url)
        assert (parsed.username, parsed.password, parsed.host, parsed.port, parsed.database) == (
            "bob",
            "p@ss/w:rd",
            "db",
            None,
            None,
        )

    def test_extra_sqlalchemy_url_wins(self) -> None:
        conn = Connection(
            conn_id="src",
            conn_type="mysql",
            host="ignored",
            extra=json.dumps({"sqlalchemy_url": "mysql+pymysql://u@h:3306/db"}),
        )
        assert sqlalchemy_url(conn) == "mysql+pymysql://u@h:3306/db"

    def test_mysql_through_the_providers_hook(self) -> None:
        conn = Connection(
            conn_id="src", conn_type="mysql", host="db.example", login="bob", password="p@ss", port=3307, schema="test"
        )
        url = sa.make_url(sqlalchemy_url(conn))
        # MySqlHook.get_uri(): the mysqlclient driver (SQLAlchemy's default for mysql://).
        assert (url.get_dialect().name, url.get_dialect().driver) == ("mysql", "mysqldb")
        assert (url.username, url.password, url.host, url.port, url.database) == (
            "bob",
            "p@ss",
            "db.example",
            3307,
            "test",
        )

    def test_mysql_client_extra_picks_the_driver(self) -> None:
        conn = Connection(conn_id="src", conn_type="mysql", host="h", extra=json.dumps({"client": "pymysql"}))
        assert sqlalchemy_url(conn).startswith("mysql+pymysql://")

    def test_postgres_extra_sqlalchemy_scheme_is_the_hooks(self) -> None:
        conn = Connection(
            conn_id="src",
            conn_type="postgres",
            host="db",
            extra=json.dumps({"sqlalchemy_scheme": "postgresql+psycopg"}),
        )
        assert sqlalchemy_url(conn) == "postgresql+psycopg://db"

    def test_type_without_a_provider_names_conn_id_and_type(self) -> None:
        conn = Connection(conn_id="mlpipe_weird", conn_type="nosuchdb", host="h")
        with pytest.raises(ValueError, match=r"connection 'mlpipe_weird' has type 'nosuchdb'.*provider") as err:
            sqlalchemy_url(conn)
        assert "sqlalchemy_url" in str(err.value)  # says what to do instead

    def test_type_whose_hook_is_not_sql_is_refused(self) -> None:
        conn = Connection(conn_id="mlpipe_aws", conn_type="aws")
        with pytest.raises(
            ValueError, match=r"'mlpipe_aws' has type 'aws', whose hook [\w.]+AwsGenericHook is not SQL"
        ):
            sqlalchemy_url(conn)

    def test_any_provider_hook_is_asked_for_its_url(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A type that is not sqlite/postgres/mysql: whatever its registered DbApiHook says is the URL."""
        from airflow.sdk._shared.providers_discovery.providers_discovery import HookInfo
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

        hooks = ProvidersManagerTaskRuntime().hooks
        monkeypatch.setitem(
            hooks,
            "fakedb",
            HookInfo(
                hook_class_name=f"{__name__}.FakeDbHook",
                connection_id_attribute_name="fakedb_conn_id",
                package_name="fake-provider",
                hook_name="Fake DB",
                connection_type="fakedb",
                connection_testable=False,
                dialects=[],
            ),
        )
        conn = Connection(conn_id="mlpipe_fake", conn_type="fakedb", host="warehouse", schema="analytics")
        assert sqlalchemy_url(conn) == "sqlite:////warehouse/analytics.db"
        assert FakeDbHook.made == [("mlpipe_fake", "warehouse")]  # built by get_hook, with the Connection given


class FakeDbHook(DbApiHook):
    """A provider hook for a database mlpipe has no code for: it builds the URL from its Connection."""

    conn_name_attr = "fakedb_conn_id"
    made: list[tuple[str, str]] = []

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        FakeDbHook.made.append((self.get_conn_id(), self.connection.host))

    @property
    def sqlalchemy_url(self) -> sa.URL:
        conn = self.connection
        return sa.URL.create("sqlite", database=f"/{conn.host}/{conn.schema}.db")


class TestDatabaseUrl:
    def test_undefined_connection_falls_back_to_the_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("AIRFLOW_CONN_MLPIPE_ABSENT", raising=False)
        assert database_url("mlpipe_absent", "sqlite:////fallback.db") == "sqlite:////fallback.db"

    def test_defined_connection_wins_over_the_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_PRESENT", "postgresql://u:p@h:5433/d")
        assert database_url("mlpipe_present", "sqlite:////fallback.db") == "postgresql+psycopg2://u:p@h:5433/d"


def _sqlite_file(path: Path) -> Path:
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.execute("INSERT INTO t VALUES (1)")
    conn.close()
    return path


class TestSourceEngine:
    def test_default_is_the_sqlite_file_under_mlpipe_home_opened_read_only(self, mlpipe_home: Path) -> None:
        db = _sqlite_file(mlpipe_home / "source.db")
        engine = source_engine("mlpipe_source")
        try:
            assert engine.dialect.name == "sqlite"
            assert engine.url.database == f"file:{db}"
            assert engine.url.query == {"mode": "ro", "uri": "true"}
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT x FROM t")).scalar_one() == 1
                with pytest.raises(sa.exc.OperationalError, match="readonly database"):
                    conn.execute(sa.text("INSERT INTO t VALUES (2)"))
        finally:
            engine.dispose()

    def test_a_missing_sqlite_source_is_named_and_never_created(self, mlpipe_home: Path) -> None:
        from mlpipe.errors import ExtractError

        db = mlpipe_home / "source.db"
        with pytest.raises(ExtractError, match=f"^source database {db} does not exist"):
            source_engine("mlpipe_source")
        assert not db.exists()

    @pytest.mark.parametrize(
        ("make", "reason"),
        [
            (lambda p: p.mkdir(), "is not a file"),
            (lambda p: p.write_bytes(b"not a database, just text " * 100), "cannot be read: file is not a database"),
        ],
        ids=["directory", "corrupt"],
    )
    def test_an_unreadable_sqlite_source_is_named(self, mlpipe_home: Path, make: Any, reason: str) -> None:
        from mlpipe.errors import ExtractError

        db = mlpipe_home / "source.db"
        make(db)
        with pytest.raises(ExtractError, match=f"^source database {db} {reason}"):
            source_engine("mlpipe_source")

    def test_a_writing_engine_on_the_source_is_not_read_only(self, mlpipe_home: Path) -> None:
        db = _sqlite_file(mlpipe_home / "source.db")
        engine = source_engine("mlpipe_source", read_only=False)
        try:
            assert engine.url.database == str(db)
            with engine.begin() as conn:
                conn.execute(sa.text("INSERT INTO t VALUES (2)"))
        finally:
            engine.dispose()

    def test_postgres_connection_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_SOURCE", PG_CONN_URI)
        engine = source_engine("mlpipe_source")
        try:
            assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "psycopg2")
            try:
                with engine.connect() as conn:
                    value = conn.execute(sa.text("SELECT 1")).scalar_one()
            except sa.exc.OperationalError as exc:
                service_unavailable(f"PostgreSQL at {PG_CONN_URI}: {exc.orig}")
            assert value == 1
        finally:
            engine.dispose()


class TestOpenSource:
    def test_sql_source_is_an_engine_disposed_after(self, mlpipe_home: Path) -> None:
        from mlpipe.spec import SqlSourceSpec

        db = _sqlite_file(mlpipe_home / "source.db")
        with open_source(SqlSourceSpec(query="x.sql")) as engine:
            assert engine.url.database == f"file:{db}"
            pool = engine.pool
        assert engine.pool is not pool  # disposed: a new, empty pool

    def test_s3_source_is_a_client_of_its_aws_connection(self, monkeypatch: pytest.MonkeyPatch, s3_endpoint) -> None:
        from mlpipe.spec import S3SourceSpec

        monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_SOURCE_S3", s3_connection_uri(s3_endpoint))
        source = S3SourceSpec(kind="s3", bucket="any-bucket", connection_id="mlpipe_source_s3")
        with open_source(source) as client:
            assert client.meta.endpoint_url == s3_endpoint
        # The task may name another connection than the spec's.
        monkeypatch.setenv("AIRFLOW_CONN_OTHER_S3", s3_connection_uri("http://127.0.0.1:9"))
        with open_source(source, "other_s3") as client:
            assert client.meta.endpoint_url == "http://127.0.0.1:9"


class TestOpenRegistry:
    def test_default_is_the_sqlite_registry_under_mlpipe_home(self, mlpipe_home: Path) -> None:
        registry = open_registry()
        try:
            assert registry.engine.url.database == str(mlpipe_home / "registry.db")
            assert registry.champion_seq("anything") == 0  # the schema exists
        finally:
            registry.dispose()


class TestOpenStore:
    def test_default_is_a_local_store_under_mlpipe_home(self, mlpipe_home: Path) -> None:
        store = open_store()
        assert isinstance(store, LocalStore)
        assert store.root == mlpipe_home / "artifacts"

    def test_fs_connection_with_extra_path(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        root = tmp_path / "elsewhere"
        monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_STORE", json.dumps({"conn_type": "fs", "extra": {"path": str(root)}}))
        store = open_store()
        assert isinstance(store, LocalStore)
        assert store.root == root
        artifact = store.put_bytes("p/runs/r/x.json", b"{}")
        assert (root / "p" / "runs" / "r" / "x.json").read_bytes() == b"{}"
        assert artifact.uri == f"file://{root}/p/runs/r/x.json"

    def test_unsupported_type_names_conn_id_and_type(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_FTP_STORE", "ftp://files.example/artifacts")
        with pytest.raises(ValueError, match=r"connection 'mlpipe_ftp_store' has type 'ftp'"):
            open_store("mlpipe_ftp_store")

    def test_aws_connection_is_an_s3_store_on_its_endpoint(
        self, monkeypatch: pytest.MonkeyPatch, s3_endpoint: str
    ) -> None:
        bucket = f"store-{uuid.uuid4().hex[:10]}"
        make_s3_client(s3_endpoint).create_bucket(Bucket=bucket)
        extra = {"bucket": bucket, "prefix": "team/mlpipe", "endpoint_url": s3_endpoint, "config_kwargs": PATH_STYLE}
        monkeypatch.setenv(
            "AIRFLOW_CONN_MLPIPE_STORE",
            json.dumps({"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}),
        )
        store = open_store()
        assert isinstance(store, S3Store)
        assert (store.bucket, store.prefix, store.endpoint_url) == (bucket, "team/mlpipe", s3_endpoint)
        artifact = store.put_bytes("p/runs/r/x.json", b'{"a": 1}')
        assert artifact.uri == f"s3://{bucket}/team/mlpipe/p/runs/r/x.json"
        # Written over real HTTP: a client of its own reads it back under the prefix.
        body = make_s3_client(s3_endpoint).get_object(Bucket=bucket, Key="team/mlpipe/p/runs/r/x.json")["Body"]
        assert body.read() == b'{"a": 1}'

    def test_credentials_may_come_from_another_aws_connection(
        self, monkeypatch: pytest.MonkeyPatch, s3_endpoint: str
    ) -> None:
        bucket = f"store-{uuid.uuid4().hex[:10]}"
        make_s3_client(s3_endpoint).create_bucket(Bucket=bucket)
        monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_S3_CREDS", s3_connection_uri(s3_endpoint))
        monkeypatch.setenv(
            "AIRFLOW_CONN_MLPIPE_STORE",
            json.dumps({"conn_type": "aws", "extra": {"bucket": bucket, "aws_conn_id": "mlpipe_s3_creds"}}),
        )
        store = open_store()
        assert isinstance(store, S3Store) and store.endpoint_url == s3_endpoint
        store.put_bytes("k.txt", b"x")
        assert store.get_bytes("k.txt") == b"x"

    def test_aws_connection_without_bucket_says_what_to_set(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_STORE", "aws://?region_name=eu-west-1")
        with pytest.raises(ValueError, match=r"connection 'mlpipe_store' \(aws\) names no bucket: set extra 'bucket'"):
            open_store()


class TestWatchOnAMissingSource:
    """The watch opens the source as extraction does: a missing SQLite file is named, never created."""

    def test_poke_and_deferral_name_the_missing_file_and_create_nothing(self, mlpipe_home: Path) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        from mlpipe.errors import ExtractError
        from mlpipe.sensors.new_data import NewDataSensor

        source = mlpipe_home / "source.db"
        for deferrable in (False, True):
            sensor = NewDataSensor(task_id="wait_for_new_data", pipeline="flights_delay", deferrable=deferrable)
            with pytest.raises((ExtractError, AirflowFailException), match=rf"source database {source} does not exist"):
                if deferrable:
                    sensor.execute({"run_id": "scheduled__watch", "params": {}})
                else:
                    sensor.poke({"run_id": "scheduled__watch", "params": {}})
            assert not source.exists(), "the watch must not create an empty source database"
