"""Registry schema migrations (Alembic) on SQLite and PostgreSQL: fresh, legacy, concurrent, round trip."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from mlpipe import migrations
from mlpipe.cli import main as cli_main
from mlpipe.registry import ModelVersion, Registry, Watermark, encode_watermark, metadata

from .conftest import new_pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        with new_pg_database("mlpipe_migr") as url:
            yield url


def schema_diff(engine: sa.Engine) -> list:
    """What differs between the database's tables and mlpipe.registry's (no diff = migrations match)."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": migrations.VERSION_TABLE}
        )
        return compare_metadata(context, metadata)


def version(n: int, run_id: str | None = None) -> ModelVersion:
    return ModelVersion(
        pipeline="p",
        version=n,
        run_id=run_id or f"run{n}",
        candidate="c",
        estimator="sklearn.dummy.DummyClassifier",
        params={},
        metrics={"roc_auc": 0.5},
        data_sha256="0" * 64,
        data_rows=1,
        spec_sha256="1" * 64,
        code_version="test",
        artifact_key="file:///x",
        artifact_sha256="2" * 64,
    )


def insert_legacy_version(engine: sa.Engine, n: int, artifact_uri: str, *, champion: bool = False) -> None:
    """A model version as a registry before 0004 kept it (an absolute ``artifact_uri``), in its own tables."""
    with engine.begin() as conn:
        versions = sa.Table("mlpipe_model_versions", sa.MetaData(), autoload_with=conn)
        log = sa.Table("mlpipe_champion_log", sa.MetaData(), autoload_with=conn)
        row = {k: v for k, v in version(n).as_dict().items() if k not in ("artifact_key", "created_at")}
        conn.execute(versions.insert().values(**row, artifact_uri=artifact_uri, created_at=datetime.now(UTC)))
        if champion:
            seq = conn.execute(sa.select(sa.func.count()).select_from(log)).scalar() + 1
            conn.execute(
                log.insert().values(
                    pipeline="p",
                    seq=seq,
                    version=n,
                    action="first",
                    reason="r",
                    actor="t",
                    created_at=datetime.now(UTC),
                )
            )


def test_one_head_and_an_unbroken_chain() -> None:
    script = ScriptDirectory(str(migrations.HERE))
    revisions = list(script.walk_revisions())
    assert migrations.head_revision() == revisions[0].revision
    assert revisions[-1].revision == migrations.BASELINE and revisions[-1].down_revision is None
    # Every revision but the baseline follows exactly one other: no branches, no merge points.
    assert all(isinstance(r.down_revision, str) for r in revisions[:-1])


def test_fresh_database_reaches_head_and_matches_the_tables(empty_url: str) -> None:
    registry = Registry.from_url(empty_url)
    try:
        with registry.engine.connect() as conn:
            assert migrations.current_revision(conn) == migrations.head_revision()
        assert schema_diff(registry.engine) == []
        assert registry.champion_seq("p") == 0
    finally:
        registry.dispose()


def test_downgrade_to_nothing_and_back(empty_url: str) -> None:
    engine = sa.create_engine(empty_url)
    try:
        assert migrations.upgrade(engine) == migrations.head_revision()
        assert migrations.downgrade(engine, "base") == ""
        tables = set(sa.inspect(engine).get_table_names())
        assert not any(t.startswith("mlpipe_") and t != migrations.VERSION_TABLE for t in tables)
        assert migrations.upgrade(engine) == migrations.head_revision()
        assert schema_diff(engine) == []
    finally:
        engine.dispose()


def test_registry_made_before_migrations_is_stamped_and_keeps_its_rows(empty_url: str) -> None:
    engine = sa.create_engine(empty_url)
    # A registry as the first release made it: the baseline's tables, no version table.
    migrations.upgrade(engine, migrations.BASELINE)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {migrations.VERSION_TABLE}"))
    insert_legacy_version(engine, 1, "file:///x", champion=True)
    engine.dispose()

    registry = Registry.from_url(empty_url)
    try:
        with registry.engine.connect() as conn:
            assert migrations.current_revision(conn) == migrations.head_revision()
        champion = registry.champion("p")
        assert champion is not None and champion.version == 1
        assert schema_diff(registry.engine) == []
    finally:
        registry.dispose()


def test_watermarks_kept_before_rows_at_value_count_every_row_at_their_value_as_announced(empty_url: str) -> None:
    engine = sa.create_engine(empty_url)
    migrations.upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO mlpipe_watermarks (pipeline, value, rows_seen, run_id, updated_at) "
                "VALUES ('p', :value, 120, 'w1', :at)"
            ),
            {"value": encode_watermark("2013-01-05 03:00:00"), "at": datetime(2026, 11, 1, tzinfo=UTC)},
        )
    engine.dispose()

    registry = Registry.from_url(empty_url)  # upgrades to head
    try:
        assert registry.watermark("p") == Watermark("2013-01-05 03:00:00", None, 120)
        # The watch's compare-and-swap matches the legacy watermark, and from then on counts.
        assert registry.advance_watermark(
            "p",
            expected="2013-01-05 03:00:00",
            expected_at_value=None,
            new="2013-01-06 00:00:00",
            new_at_value=3,
            rows=10,
            run_id="w2",
        )
        assert registry.watermark("p") == Watermark("2013-01-06 00:00:00", 3, 130)
    finally:
        registry.dispose()


def _open_and_promote(url: str, n: int) -> str:
    """In a fresh process: first use of the registry (migrating it), then one registration."""
    registry = Registry.from_url(url)
    try:
        registry.register_and_promote(
            version(100 + n, f"proc{n}"),
            expected_seq=registry.champion_seq("p"),
            action="promote",
            reason="r",
            actor="t",
            at=datetime.now(UTC),
        )
        return "won"
    except Exception as exc:  # a lost compare-and-swap is fine here; a migration error is not
        return type(exc).__name__
    finally:
        registry.dispose()


def test_processes_starting_together_migrate_once(empty_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        outcomes = pool.starmap(_open_and_promote, [(empty_url, n) for n in range(4)])
    # Nobody tripped over a half-made schema: each either won the champion or lost the swap.
    assert set(outcomes) <= {"won", "ChampionChangedError"} and "won" in outcomes
    engine = sa.create_engine(empty_url)
    try:
        with engine.connect() as conn:
            assert migrations.current_revision(conn) == migrations.head_revision()
            rows = conn.execute(sa.text(f"SELECT count(*) FROM {migrations.VERSION_TABLE}")).scalar()
        assert rows == 1
    finally:
        engine.dispose()


def test_cli_upgrade_is_safe_to_repeat(
    mlpipe_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_MLPIPE_REGISTRY", raising=False)
    assert cli_main(["registry", "upgrade"]) == 0
    first = capsys.readouterr().out
    assert f"empty -> {migrations.head_revision()}" in first and str(mlpipe_home / "registry.db") in first
    assert cli_main(["registry", "upgrade"]) == 0
    assert f"already at {migrations.head_revision()}" in capsys.readouterr().out


def test_0004_makes_artifact_entries_store_relative(
    empty_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = f"file://{tmp_path / 'store'}/"
    engine = sa.create_engine(empty_url)
    migrations.upgrade(engine, "0003")
    entries = {
        1: f"{root}p/models/v1/run1/model.joblib",  # under the store's root
        2: "file:///where/it/was/artifacts/p/models/v2/run2/model.joblib",  # the store was moved since
        3: "s3://old-bucket/old-prefix/p/models/v3/run3/model.joblib",  # ... or was a bucket and prefix
        4: "file:///x",  # names no key
        5: "file:///where/it/was/artifacts/p/models/v9/run5/model.joblib",  # another version's key
        6: "p/models/v6/run6/model.joblib",  # already a key
    }
    for n, uri in entries.items():
        insert_legacy_version(engine, n, uri, champion=n == 1)
    asked: list[str] = []

    def store_root() -> str:
        asked.append(root)
        return root

    with caplog.at_level("WARNING", logger="mlpipe.migrations"):
        assert migrations.upgrade(engine, store_root=store_root) == migrations.head_revision()
    registry = Registry(engine)
    try:
        keys = {v.version: v.artifact_key for v in registry.list_versions("p")}
        assert keys == {
            1: "p/models/v1/run1/model.joblib",
            2: "p/models/v2/run2/model.joblib",
            3: "p/models/v3/run3/model.joblib",
            4: "file:///x",
            5: "file:///where/it/was/artifacts/p/models/v9/run5/model.joblib",
            6: "p/models/v6/run6/model.joblib",
        }
        assert asked == [root]  # the store was opened once, because entries needed it
        warned = [r.getMessage() for r in caplog.records if "0004" in r.getMessage()]
        assert len(warned) == 2 and "p v4's artifact file:///x" in warned[0] and "p v5's" in warned[1]
        assert schema_diff(engine) == []

        # Downgrading writes keys back as URIs under the root; what was left stays as it was.
        assert migrations.downgrade(engine, "0003", store_root=root) == "0003"
        with engine.connect() as conn:
            rows = dict(conn.execute(sa.text("SELECT version, artifact_uri FROM mlpipe_model_versions")).all())
        assert rows[1] == entries[1] and rows[2] == f"{root}p/models/v2/run2/model.joblib"
        assert (rows[4], rows[5]) == (entries[4], entries[5])
    finally:
        engine.dispose()


def test_0004_without_a_store_root_takes_the_embedded_store(mlpipe_home: Path) -> None:
    url = f"sqlite:///{mlpipe_home / 'registry.db'}"
    engine = sa.create_engine(url)
    migrations.upgrade(engine, "0003")
    insert_legacy_version(engine, 1, f"file://{mlpipe_home / 'artifacts'}/p/models/v1/run1/model.joblib", champion=True)
    insert_legacy_version(engine, 2, f"file://{mlpipe_home / 'artifacts'}/p/notes/model.joblib")
    engine.dispose()

    registry = Registry.from_url(url)  # migrates to head on first use
    try:
        assert registry.champion("p").artifact_key == "p/models/v1/run1/model.joblib"
        # Not a key the layout knows, though under the store: left, and the store resolves it.
        left = registry.get_version("p", 2).artifact_key
        assert left.startswith("file://")
        from mlpipe.storage import LocalStore

        assert LocalStore(mlpipe_home / "artifacts").key_of(left) == "p/notes/model.joblib"
    finally:
        registry.dispose()
