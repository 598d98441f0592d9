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
                    pipeline="p", seq=seq, version=n, action="first", reason="r", actor="t", created_at=datetime.now(UTC)
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
