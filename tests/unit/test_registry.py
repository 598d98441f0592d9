"""Tests of mlpipe.registry on SQLite and PostgreSQL: versions, the append-only champion log, the CAS."""

from __future__ import annotations

import itertools
import multiprocessing
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mlpipe.errors import ChampionChangedError, RegistryError
from mlpipe.registry import ChampionEvent, ModelVersion, Registry, Watermark, champion_log, model_versions

RACERS = 8
# Each spawned process imports SQLAlchemy and the registry (~0.5 s of CPU): fewer keep the suite fast.
PROCESS_RACERS = 4


def version(pipeline: str, number: int, run_id: str | None = None, **changes: Any) -> ModelVersion:
    values: dict[str, Any] = {
        "pipeline": pipeline,
        "version": number,
        "run_id": run_id or f"manual__run_{number}",
        "candidate": "logreg",
        "estimator": "sklearn.linear_model.LogisticRegression",
        "params": {"C": 1.0, "max_iter": 200},
        "metrics": {"roc_auc": 0.7 + number / 100, "log_loss": None},
        "data_sha256": "d" * 64,
        "data_rows": 1234,
        "spec_sha256": "s" * 64,
        "code_version": "0.1.0+gabc",
        "artifact_key": f"{pipeline}/models/v{number}/model.joblib",
        "artifact_sha256": "a" * 64,
        "lineage": {"trigger": {"kind": "manual"}, "snapshot": {"rows": 1234}},
    }
    values.update(changes)
    return ModelVersion(**values)


def row_counts(registry: Registry, pipeline: str) -> tuple[int, int]:
    with registry.engine.connect() as conn:
        versions = conn.execute(
            sa.select(sa.func.count()).select_from(model_versions).where(model_versions.c.pipeline == pipeline)
        ).scalar()
        events = conn.execute(
            sa.select(sa.func.count()).select_from(champion_log).where(champion_log.c.pipeline == pipeline)
        ).scalar()
    return versions, events


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def registry(registry_url: str) -> Iterator[Registry]:
    registry = Registry.from_url(registry_url)
    yield registry
    registry.dispose()


@pytest.fixture
def pipeline() -> str:
    # The PostgreSQL database is shared by the module's tests: each test gets its own pipeline.
    return f"p_{uuid.uuid4().hex[:12]}"


def promote(registry: Registry, new: ModelVersion, seq: int, action: str = "promote") -> ChampionEvent:
    return registry.register_and_promote(new, expected_seq=seq, action=action, reason="gate passed", actor="tests")


class TestReads:
    def test_empty_pipeline(self, registry: Registry, pipeline: str) -> None:
        assert registry.champion(pipeline) is None
        assert registry.champion_seq(pipeline) == 0
        assert registry.next_version(pipeline) == 1
        assert registry.list_versions(pipeline) == []
        assert registry.champion_history(pipeline) == []
        assert registry.version_for_run(pipeline, "manual__x") is None
        with pytest.raises(RegistryError, match="has no model version 1"):
            registry.get_version(pipeline, 1)

    def test_create_schema_is_idempotent(self, registry: Registry, registry_url: str) -> None:
        registry.create_schema()
        Registry.from_url(registry_url).dispose()


class TestPromotion:
    def test_first_promotion(self, registry: Registry, pipeline: str) -> None:
        at = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
        new = version(pipeline, 1)

        event = registry.register_and_promote(
            new, expected_seq=0, action="first", reason="no champion yet", actor="airflow", at=at
        )

        assert event == ChampionEvent(
            pipeline=pipeline,
            seq=1,
            version=1,
            previous_version=None,
            action="first",
            reason="no champion yet",
            actor="airflow",
            run_id=new.run_id,
            created_at=at,
        )
        champion = registry.champion(pipeline)
        assert champion is not None
        assert champion.as_dict() | {"created_at": None} == new.as_dict()
        assert champion.created_at == at
        assert champion.created_at.tzinfo is not None
        assert registry.champion_seq(pipeline) == 1
        assert registry.next_version(pipeline) == 2
        assert registry.get_version(pipeline, 1) == champion
        assert registry.version_for_run(pipeline, new.run_id) == champion
        assert registry.champion_history(pipeline) == [event]

    def test_history_is_append_only_and_chained(self, registry: Registry, pipeline: str) -> None:
        for n in (1, 2, 3):
            promote(registry, version(pipeline, n), seq=n - 1, action="first" if n == 1 else "promote")

        history = registry.champion_history(pipeline)

        assert [(e.seq, e.version, e.previous_version, e.action) for e in history] == [
            (1, 1, None, "first"),
            (2, 2, 1, "promote"),
            (3, 3, 2, "promote"),
        ]
        assert [v.version for v in registry.list_versions(pipeline)] == [1, 2, 3]
        assert registry.champion(pipeline).version == 3
        # A rollback is a new row pointing back, never an edit of the log.
        promote(registry, version(pipeline, 4, candidate="hgb"), seq=3, action="rollback")
        history_after = registry.champion_history(pipeline)
        assert history_after[:3] == history
        assert (history_after[3].seq, history_after[3].previous_version) == (4, 3)

    def test_pipelines_are_independent(self, registry: Registry, pipeline: str) -> None:
        promote(registry, version(pipeline, 1), seq=0, action="first")
        other = pipeline + "_other"

        assert registry.champion(other) is None
        promote(registry, version(other, 1), seq=0, action="first")
        assert registry.champion_seq(pipeline) == registry.champion_seq(other) == 1

    def test_stale_expected_seq_writes_nothing(self, registry: Registry, pipeline: str) -> None:
        promote(registry, version(pipeline, 1), seq=0, action="first")
        promote(registry, version(pipeline, 2), seq=1)

        with pytest.raises(ChampionChangedError, match="changed since evaluation"):
            promote(registry, version(pipeline, 3), seq=1)

        assert row_counts(registry, pipeline) == (2, 2)
        assert registry.version_for_run(pipeline, "manual__run_3") is None
        assert registry.champion(pipeline).version == 2

    def test_expected_seq_from_the_future_writes_nothing(self, registry: Registry, pipeline: str) -> None:
        with pytest.raises(ChampionChangedError):
            promote(registry, version(pipeline, 1), seq=5)
        assert row_counts(registry, pipeline) == (0, 0)

    def test_duplicate_run_id_is_refused(self, registry: Registry, pipeline: str) -> None:
        promote(registry, version(pipeline, 1, run_id="manual__same"), seq=0, action="first")

        with pytest.raises(RegistryError, match=r"run 'manual__same' already registered .* v1") as info:
            promote(registry, version(pipeline, 2, run_id="manual__same"), seq=1)

        assert not isinstance(info.value, ChampionChangedError)

        assert row_counts(registry, pipeline) == (1, 1)
        assert registry.champion_seq(pipeline) == 1

    def test_duplicate_version_is_refused(self, registry: Registry, pipeline: str) -> None:
        promote(registry, version(pipeline, 1), seq=0, action="first")

        with pytest.raises(ChampionChangedError):
            promote(registry, version(pipeline, 1, run_id="manual__other"), seq=1)

        assert row_counts(registry, pipeline) == (1, 1)

    def test_unknown_action(self, registry: Registry, pipeline: str) -> None:
        with pytest.raises(RegistryError, match="unknown champion action"):
            promote(registry, version(pipeline, 1), seq=0, action="yolo")
        assert row_counts(registry, pipeline) == (0, 0)


class TestRollback:
    def _three(self, registry: Registry, pipeline: str) -> None:
        for n in (1, 2, 3):
            promote(registry, version(pipeline, n), seq=n - 1, action="first" if n == 1 else "promote")

    def test_rollback_appends_and_never_rewrites(self, registry: Registry, pipeline: str) -> None:
        self._three(registry, pipeline)
        before = registry.champion_history(pipeline)
        at = datetime(2026, 4, 1, tzinfo=UTC)

        event = registry.rollback(pipeline, 1, reason="  v3 drops late flights  ", actor="alice", at=at, run_id="r")

        assert event == ChampionEvent(
            pipeline=pipeline,
            seq=4,
            version=1,
            previous_version=3,
            action="rollback",
            reason="v3 drops late flights",
            actor="alice",
            run_id="r",
            created_at=at,
        )
        assert registry.champion_history(pipeline) == [*before, event]
        assert registry.champion(pipeline).version == 1
        assert row_counts(registry, pipeline) == (3, 4), "no version row added or removed"
        # Forward again to v3 is a rollback too, from v1.
        again = registry.rollback(pipeline, 3, reason="fixed upstream", actor="bob", expected_seq=4)
        assert (again.seq, again.version, again.previous_version) == (5, 3, 1)

    @pytest.mark.parametrize(
        "target, reason, match",
        [
            (9, "why", r"has no model version 9 to roll back to; registered: \[1, 2, 3\]"),
            (3, "why", "v3 already is the champion"),
            (1, "  ", "needs a reason"),
        ],
    )
    def test_bad_rollback_writes_nothing(
        self, registry: Registry, pipeline: str, target: int, reason: str, match: str
    ) -> None:
        self._three(registry, pipeline)
        with pytest.raises(RegistryError, match=match) as info:
            registry.rollback(pipeline, target, reason=reason, actor="alice")
        assert not isinstance(info.value, ChampionChangedError)
        assert row_counts(registry, pipeline) == (3, 3)

    def test_rollback_without_versions(self, registry: Registry, pipeline: str) -> None:
        with pytest.raises(RegistryError, match="registered: none"):
            registry.rollback(pipeline, 1, reason="why", actor="alice")

    def test_stale_expected_seq_writes_nothing(self, registry: Registry, pipeline: str) -> None:
        self._three(registry, pipeline)
        with pytest.raises(ChampionChangedError, match="changed meanwhile"):
            registry.rollback(pipeline, 1, reason="why", actor="alice", expected_seq=2)
        assert row_counts(registry, pipeline) == (3, 3)


# -- races -----------------------------------------------------------------------------------------

ROUNDS = 5


def assert_rounds(registry: Registry, pipeline: str, per_contender: list[list[tuple[int, int, str, str]]]) -> None:
    """Every round: all contenders saw one seq, exactly one won, and the log gained exactly its event."""
    assert len(per_contender) > 1
    by_round: dict[int, list[tuple[int, str, str]]] = {}
    for outcomes in per_contender:
        assert [r for r, *_ in outcomes] == list(range(ROUNDS)), outcomes
        for round_, seq, tried, outcome in outcomes:
            by_round.setdefault(round_, []).append((seq, tried, outcome))
    history = registry.champion_history(pipeline)
    seq0 = min(seq for seq, _, _ in by_round[0])
    winners = []
    for round_, results in sorted(by_round.items()):
        assert {seq for seq, _, _ in results} == {seq0 + round_}, (round_, results)
        outcomes = sorted(o for _, _, o in results)
        assert outcomes == ["ChampionChangedError"] * (len(results) - 1) + ["won"], (round_, results)
        winners.append(next(tried for _, tried, o in results if o == "won"))
    # The log is contiguous and chained: each event starts from the version the one before made champion.
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert len(history) == seq0 + ROUNDS
    for before, after in itertools.pairwise(history):
        assert after.previous_version == before.version, (before, after)
    assert [f"{e.action if e.action == 'rollback' else 'promote'} v{e.version}" for e in history[seq0:]] == winners
    assert registry.champion(pipeline).version == history[-1].version
    # No loser left a row behind: one version row per promotion, none per rollback.
    promotions = sum(e.action != "rollback" for e in history)
    assert row_counts(registry, pipeline) == (promotions, len(history))


def race_in_threads(url: str, pipeline: str, contenders: int, *, rollbacks: int = 0) -> list[Any]:
    """``contenders`` threads race ROUNDS rounds; the first ``rollbacks`` of them roll back."""
    from unit.racer import contend

    barrier = threading.Barrier(contenders)
    results: list[Any] = [None] * contenders
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = contend(url, version(pipeline, 0), i, ROUNDS, barrier, rollback=i < rollbacks)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    run_threads(run, contenders)
    assert errors == []
    return results


def run_threads(target: Any, count: int, timeout: float = 300) -> None:
    """``target(i)`` for i in range(count), each in its own thread; returns when all have ended."""
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)


class TestConcurrency:
    @pytest.mark.parametrize("with_champion", [False, True], ids=["first", "replace"])
    def test_threads_one_winner_per_round(
        self, registry: Registry, registry_url: str, pipeline: str, with_champion: bool
    ) -> None:
        if with_champion:
            promote(registry, version(pipeline, 100), seq=0, action="first")
        results = race_in_threads(registry_url, pipeline, RACERS)
        assert_rounds(registry, pipeline, results)

    def test_threads_rollbacks_race_promotions(self, registry: Registry, registry_url: str, pipeline: str) -> None:
        promote(registry, version(pipeline, 100), seq=0, action="first")
        promote(registry, version(pipeline, 101), seq=1)
        results = race_in_threads(registry_url, pipeline, RACERS, rollbacks=RACERS // 2)
        assert_rounds(registry, pipeline, results)
        tried = {t.split()[0] for outcomes in results for _, _, t, _ in outcomes}
        assert tried == {"rollback", "promote"}

    def test_threads_same_version_number(self, registry: Registry, registry_url: str, pipeline: str) -> None:
        # What promote_model does: every racer asked next_version() first, so all want version 1.
        barrier = threading.Barrier(RACERS)
        outcomes: list[str] = []

        def run(n: int) -> None:
            barrier.wait(timeout=30)
            r = Registry.from_url(registry_url, create=False)
            try:
                promote(r, version(pipeline, 1, run_id=f"manual__same_version_{n}"), seq=0, action="first")
                outcomes.append("won")
            except ChampionChangedError:
                outcomes.append("ChampionChangedError")
            finally:
                r.dispose()

        run_threads(run, RACERS)

        assert sorted(outcomes) == ["ChampionChangedError"] * (RACERS - 1) + ["won"]
        assert row_counts(registry, pipeline) == (1, 1)


def test_processes_one_winner_per_round_postgresql(pg_url: str) -> None:
    from unit.racer import contender

    registry = Registry.from_url(pg_url)
    pipeline = f"p_{uuid.uuid4().hex[:12]}"
    promote(registry, version(pipeline, 100), seq=0, action="first")
    promote(registry, version(pipeline, 101), seq=1)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESS_RACERS)
    results = ctx.Queue()
    procs = [
        # One of them rolls back while the others promote.
        ctx.Process(target=contender, args=(pg_url, version(pipeline, 0), n, ROUNDS, barrier, results, n == 0))
        for n in range(PROCESS_RACERS)
    ]
    try:
        for p in procs:
            p.start()
        outcomes = dict(results.get(timeout=180) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0] * PROCESS_RACERS
    assert_rounds(registry, pipeline, [outcomes[n] for n in range(PROCESS_RACERS)])
    registry.dispose()


class TestWatermarks:
    def test_none_before_the_first_event(self, registry: Registry, pipeline: str) -> None:
        assert registry.watermark(pipeline) == Watermark(None, 0, 0)

    @pytest.mark.parametrize(
        "first, second",
        [
            ("2013-01-01 10:00:00", "2013-01-02 09:00:00"),
            (100, 250),
            (datetime(2013, 1, 1, 10, tzinfo=UTC), datetime(2013, 1, 2, 9, tzinfo=UTC)),
        ],
    )
    def test_advance_is_a_compare_and_swap_that_keeps_the_type(
        self, registry: Registry, pipeline: str, first: Any, second: Any
    ) -> None:
        def advance(expected: Any, expected_at: int, new: Any, new_at: int, rows: int, run_id: str) -> bool:
            return registry.advance_watermark(
                pipeline,
                expected=expected,
                expected_at_value=expected_at,
                new=new,
                new_at_value=new_at,
                rows=rows,
                run_id=run_id,
            )

        assert advance(None, 0, first, 3, 10, "w1")
        assert registry.watermark(pipeline) == Watermark(first, 3, 10)
        # A second "first" event for the same pipeline loses: the row exists.
        assert not advance(None, 0, second, 1, 5, "w2")
        assert advance(first, 3, second, 2, 5, "w3")
        assert registry.watermark(pipeline) == Watermark(second, 2, 15)
        # A watcher that saw the old watermark cannot move it again: the same rows never announce twice.
        assert not advance(first, 3, second, 2, 5, "w4")
        # Late rows at the watermark's value move only its row count; the swap checks that count too.
        assert advance(second, 2, second, 4, 2, "w5")
        assert not advance(second, 2, second, 5, 3, "w6"), "a watcher that saw 2 rows at the value lost"
        assert registry.watermark(pipeline) == Watermark(second, 4, 17)

    def test_threads_racing_from_one_watermark_have_one_winner(self, registry_url: str, pipeline: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        setup = Registry.from_url(registry_url)
        setup.advance_watermark(
            pipeline, expected=None, expected_at_value=0, new=0, new_at_value=1, rows=0, run_id="seed"
        )

        def race(i: int) -> bool:
            reg = Registry.from_url(registry_url, create=False)
            try:
                # Half the racers saw late rows at the same value, half saw rows past it.
                new = 0 if i % 2 else 100 + i
                return reg.advance_watermark(
                    pipeline, expected=0, expected_at_value=1, new=new, new_at_value=2, rows=1, run_id=f"r{i}"
                )
            finally:
                reg.dispose()

        with ThreadPoolExecutor(8) as pool:
            wins = list(pool.map(race, range(8)))
        assert wins.count(True) == 1
        winner = wins.index(True)
        assert setup.watermark(pipeline) == Watermark(0 if winner % 2 else 100 + winner, 2, 1)
        setup.dispose()

    def test_unsupported_watermark_type_is_refused(self, registry: Registry, pipeline: str) -> None:
        from mlpipe.errors import RegistryError

        with pytest.raises(RegistryError, match="watermark of type"):
            registry.advance_watermark(
                pipeline, expected=None, expected_at_value=0, new=b"bytes", new_at_value=1, rows=1, run_id="x"
            )
