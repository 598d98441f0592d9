"""A store and registry copied, moved or restored to another place keep their champion.

One run trains and promotes v1; the whole of it (MLPIPE_HOME: the store directory and the registry file,
or an S3 store's objects under a new prefix) moves; a second run then evaluates against v1, the Models
view and the CLI list it, a forced v2 and a rollback to v1 work. Each case also with a registry from
before store-relative keys (migration 0004): it recorded absolute URIs where the store used to be.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from mlpipe import config, layout, migrations
from mlpipe.cli import main as cli_main
from mlpipe.registry import Registry
from mlpipe.spec import load_spec
from mlpipe.stages.reference import load_reference, reference_of
from mlpipe.stages.train import load_model
from mlpipe.storage import ArtifactStore, LocalStore, S3Store
from mlpipe.ui import views

from .test_train_evaluate_promote import Pipe


def _registry_url() -> str:
    return config.default_registry_url()


def _as_before_0004(registry: Registry, store: ArtifactStore) -> None:
    """Take the registry back to 0003, where each version recorded its artifact's absolute URI."""
    migrations.downgrade(registry.engine, "0003", store_root=store.root_uri)
    with registry.engine.connect() as conn:
        (entry,) = conn.exec_driver_sql("SELECT artifact_uri FROM mlpipe_model_versions").scalars()
    assert entry.startswith(store.root_uri) and entry.endswith("/model.joblib")


def _move_home(old: Path, new: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Move MLPIPE_HOME (the registry file, and the local store when there is one) and point at it."""
    new.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(old, new)
    shutil.rmtree(old)  # nothing may still read the old place
    monkeypatch.setenv("MLPIPE_HOME", str(new))


def _move_s3_prefix(client: Any, bucket: str, old: str, new: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{old}/"):
        for obj in page.get("Contents", []):
            target = f"{new}/{obj['Key'][len(old) + 1 :]}"
            client.copy_object(Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": obj["Key"]})
            client.delete_object(Bucket=bucket, Key=obj["Key"])


@pytest.fixture(params=["local", "s3"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("registry_era", ["keys", "absolute_uris"])
def test_champion_survives_moving_the_store_and_registry(
    kind: str,
    registry_era: str,
    request: pytest.FixtureRequest,
    include_tree,
    make_spec,
    make_frame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("AIRFLOW_CONN_MLPIPE_REGISTRY", "AIRFLOW_CONN_MLPIPE_STORE"):
        monkeypatch.delenv(name, raising=False)
    old_home, new_home = tmp_path / "before" / ".mlpipe", tmp_path / "after" / "restored" / ".mlpipe"
    old_home.mkdir(parents=True)
    monkeypatch.setenv("MLPIPE_HOME", str(old_home))
    loaded = load_spec(include_tree(make_spec()))
    name = loaded.spec.name

    def open_store(prefix: str) -> ArtifactStore:
        if kind == "local":
            return LocalStore(config.default_store_root())
        return S3Store(request.getfixturevalue("bucket"), prefix, request.getfixturevalue("s3_client"))

    store = open_store("team/old")
    registry = Registry.from_url(_registry_url(), store_root=store.root_uri)
    first = Pipe(loaded, store, registry, make_frame("binary"), tmp_path)
    run1 = first.run("manual__2026-01-01T00:00:00+00:00")
    assert first.promote(run1).action == "first"
    key = layout.model_key(name, 1, run1.key)
    assert registry.champion(name).artifact_key == key  # what the registry records: the store-relative key
    if registry_era == "absolute_uris":
        _as_before_0004(registry, store)
    registry.dispose()

    _move_home(old_home, new_home, monkeypatch)
    if kind == "s3":
        _move_s3_prefix(request.getfixturevalue("s3_client"), request.getfixturevalue("bucket"), "team/old", "moved")
    store = open_store("moved")
    registry = Registry.from_url(_registry_url(), store_root=store.root_uri)  # (0004 runs on the old registry)
    try:
        champion = registry.champion(name)
        assert champion is not None and champion.artifact_key == key
        assert load_model(store, store.key_of(champion.artifact_key), champion.artifact_sha256) is not None
        # The champion's training snapshot (recorded as a URI where the store was) is the reference still.
        reference, why = load_reference(store, reference_of(champion))
        assert reference is not None and len(reference) == len(first.frame), why

        # The gate compares with the champion: it is scored, not "not in this store".
        second = Pipe(loaded, store, registry, make_frame("binary", seed=1), tmp_path)
        run2 = second.run("manual__2026-01-02T00:00:00+00:00")
        verdict = run2.verdict
        assert (verdict.champion_status, verdict.champion_version) == ("scored", 1), verdict.reasons
        assert not any(r.rule == "champion" and not r.passed for r in verdict.rules), verdict.reasons

        # The Models view and the CLI list it, at its new place.
        pipeline = views.find_pipeline(name, loaded.path.parent)
        detail = views.version_detail(pipeline, store, registry, 1)
        assert (detail["artifact_key"], detail["artifact_uri"]) == (key, store.uri(key))
        assert views.pipeline_detail(pipeline, store, registry)["champion"]["version"] == 1
        assert cli_main(["registry", "champion", name, "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert (listed["version"], listed["artifact_key"]) == (1, key)

        # A new version, then a rollback to v1: the champion after it is the moved artifact.
        assert second.promote(run2, force_reason="test: a second version").version == 2
        registry.rollback(name, 1, reason="test: back to v1", actor="tests")
        back = registry.champion(name)
        assert back.version == 1
        assert load_model(store, store.key_of(back.artifact_key), back.artifact_sha256) is not None
        assert registry.champion_history(name)[-1].action == "rollback"
    finally:
        registry.dispose()
