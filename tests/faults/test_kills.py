"""Killed and retried stages: a SIGKILL at the worst moment, then the same stage again (part of the fault corpus).

What Airflow does after a lost worker is run the task again with the same run id; these tests do
exactly that around the two writes that matter (the model artifact and the promotion: during the
model copy, between copy and registry commit, after the commit) and check that nothing is
duplicated, no half-written artifact becomes visible, the retry leaves no temp file or empty version
folder behind, and the champion changes once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

WORKER = Path(__file__).with_name("fault_worker.py")
RUN_ID = "manual__2026-03-01T02:00:00+00:00"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, flights_frame) -> Iterator[dict[str, Any]]:
    """A run of flights_delay up to evaluation, on 20,000 real flights, with nothing promoted yet (built once)."""
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("kills") / "mlpipe"
        home.mkdir()
        mp.setenv("MLPIPE_HOME", str(home))
        yield _evaluated(home, flights_frame)


@pytest.fixture
def prepared(evaluated: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The evaluated run with an empty registry and no model copies: each test promotes from scratch."""
    from mlpipe import config
    from mlpipe.registry import Registry

    monkeypatch.setenv("MLPIPE_HOME", str(evaluated["home"]))
    Path(config.default_registry_url().removeprefix("sqlite:///")).unlink(missing_ok=True)
    evaluated["store"].delete_prefix("flights_delay/models")
    registry = Registry.from_url(config.default_registry_url())
    yield {**evaluated, "registry": registry}
    registry.dispose()


def _evaluated(mlpipe_home: Path, flights_frame: Any) -> dict[str, Any]:
    import sqlalchemy as sa

    from mlpipe import config
    from mlpipe.demo import write_flights_sqlite
    from mlpipe.spec import find_spec
    from mlpipe.stages.evaluate import evaluate_candidates
    from mlpipe.stages.extract import extract_snapshot
    from mlpipe.stages.features import build_features
    from mlpipe.stages.train import train_candidate
    from mlpipe.storage import LocalStore, run_key

    write_flights_sqlite(mlpipe_home / "source.db", flights_frame.sample(n=20_000, random_state=3))
    loaded, store = find_spec("flights_delay"), LocalStore(config.default_store_root())
    key = run_key(RUN_ID)
    engine = sa.create_engine(config.default_source_url())
    snap = extract_snapshot(loaded, engine, store, run_key=key, as_of=datetime(2026, 3, 1, tzinfo=UTC))
    engine.dispose()
    feats = build_features(loaded, store, run_key=key, snapshot_key=snap.key, snapshot_sha256=snap.sha256)
    trained = [
        train_candidate(
            loaded, store, run_key=key, candidate=c.name, train_key=feats.train_key, train_sha256=feats.train_sha256
        )
        for c in loaded.spec.candidates
    ]
    verdict = evaluate_candidates(
        loaded,
        store,
        run_id=RUN_ID,
        run_key=key,
        holdout_key=feats.holdout_key,
        holdout_sha256=feats.holdout_sha256,
        trained=trained,
        champion=None,
        champion_seq=0,
    )
    assert verdict.blessed, verdict.reasons
    promote_kwargs = {
        "verdict": verdict,
        "trained": trained,
        "snapshot": snap,
        "spec_sha256": loaded.sha256(),
        "code_version": "test",
        "run_id": RUN_ID,
        "lineage": {},
        "actor": "test",
    }
    return {
        "pipeline": "flights_delay",
        "run_key": key,
        "features": feats,
        "trained": trained,
        "promote_kwargs": promote_kwargs,
        "store": store,
        "home": mlpipe_home,
    }


def run_and_kill(phase: str, state: dict[str, Any], tmp: Path) -> None:
    """Start the worker, wait until it parks at its kill point, SIGKILL it."""
    state_file, ready = tmp / f"{phase}.json", tmp / f"{phase}.ready"
    serialisable = {k: v for k, v in state.items() if k not in {"store", "registry", "home"}}
    from mlpipe.contracts import json_safe

    state_file.write_text(json.dumps(json_safe(serialisable)))  # the contracts as their XCom
    proc = subprocess.Popen([sys.executable, str(WORKER), phase, str(state_file), str(ready)], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, f"worker exited early with {proc.returncode}"
            assert time.monotonic() < deadline, "worker never reached its kill point"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()


def test_training_killed_while_publishing_the_model_then_retried(prepared, tmp_path: Path) -> None:
    from mlpipe.layout import candidate_model, candidate_prefix
    from mlpipe.spec import find_spec
    from mlpipe.stages.train import load_model, train_candidate

    store = prepared["store"]
    # A run key of its own: the fixture already trained this run's candidates.
    state = {**prepared, "candidate": "hgb", "run_key": prepared["run_key"] + "_retry"}
    prefix = candidate_prefix("flights_delay", state["run_key"], "hgb")
    run_and_kill("train", state, tmp_path)

    assert store.list(prefix) == [], "nothing of the killed attempt may be visible"
    assert not store.exists(candidate_model("flights_delay", state["run_key"], "hgb"))
    stray = [p.name for p in store.path(prefix).iterdir()]
    assert stray and all(name.endswith(".tmp") for name in stray), stray

    feats = prepared["features"]
    result = train_candidate(
        find_spec("flights_delay"),
        store,
        run_key=state["run_key"],
        candidate="hgb",
        train_key=feats.train_key,
        train_sha256=feats.train_sha256,
    )
    assert sorted(store.list(prefix)) == [f"{prefix}/model.joblib", f"{prefix}/result.json"]
    assert sorted(p.name for p in store.path(prefix).iterdir()) == ["model.joblib", "result.json"], "no litter"
    model = load_model(store, result.model_key, result.model_sha256)
    assert hasattr(model, "predict_proba")


@pytest.mark.parametrize("phase", ["promote_copy", "promote_before_commit", "promote_after_commit"])
def test_promotion_killed_then_retried_changes_the_champion_once(prepared, tmp_path: Path, phase: str) -> None:
    from mlpipe.stages.promote import promote_model
    from mlpipe.storage import sha256_file

    registry, store = prepared["registry"], prepared["store"]
    run_and_kill(phase, prepared, tmp_path)
    if phase == "promote_copy":
        assert list(store.path("flights_delay/models").rglob(".model.joblib.*.tmp")), "killed mid-copy"
        assert store.list("flights_delay/models") == []
    committed = phase == "promote_after_commit"
    assert len(registry.champion_history("flights_delay")) == (1 if committed else 0)

    result = promote_model(registry, store, **prepared["promote_kwargs"])

    assert result.action == ("already_done" if committed else "first")
    versions = registry.list_versions("flights_delay")
    assert [v.version for v in versions] == [1]
    history = registry.champion_history("flights_delay")
    assert [(e.seq, e.version, e.run_id) for e in history] == [(1, 1, RUN_ID)]
    champion = registry.champion("flights_delay")
    artifact = store.path(champion.artifact_key)
    assert sha256_file(artifact) == champion.artifact_sha256
    models = [p for p in store.list("flights_delay/models")]
    assert models == [champion.artifact_key], "exactly one visible model copy"
    on_disk = sorted(str(p.relative_to(store.root)) for p in store.path("flights_delay/models").rglob("*"))
    assert on_disk == ["flights_delay/models/v1", *[str(Path(m).parent) for m in models], *models], (
        "no temp file, no empty version folder"
    )
    assert not list(store.root.rglob("*.tmp")), "no temp file anywhere in the store"
