"""OpenLineage events of a real run: the file transport receives source table -> snapshot -> model -> predictions.

``diabetes_train`` then ``diabetes_score`` run under ``dag.test()`` in a fresh interpreter whose
``[openlineage] transport`` is the provider's file transport (the listener is registered when the
plugins load, so the configuration must be there from the start). The COMPLETE events' inputs and
outputs must chain the source table to the predictions table, the datasets named per the
OpenLineage naming spec, with the snapshot's rows and sha256 and the model's version and metrics.
Without a transport (this test process, as every default set-up) the provider registers no listener.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections import defaultdict
from typing import Any

import pytest
import yaml
from dagruns import REPO

pytestmark = pytest.mark.slow

RUNS = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {integration!r})
    from dagruns import load_dag, state
    train = load_dag("diabetes_train").test()
    score = load_dag("diabetes_score").test()
    print("STATES", state(train), state(score))
    """
)


@pytest.fixture(scope="module")
def events(airflow_db, tmp_path_factory) -> dict[str, Any]:
    from mlpipe.datasets import seed_datasets

    root = tmp_path_factory.mktemp("lineage")
    home = root / "mlpipe"
    seed_datasets(home / "source.db")
    include = root / "include"
    shutil.copytree(REPO / "include", include)
    spec_path = include / "pipelines" / "diabetes.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["candidates"] = [{"name": "ridge", "estimator": "sklearn.linear_model.Ridge"}]  # one quick fit
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    log = root / "openlineage.jsonl"
    env = {
        **os.environ,
        "MLPIPE_HOME": str(home),
        "MLPIPE_INCLUDE": str(include),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(log), "append": True}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "mlpipe-test",
    }
    script = RUNS.format(integration=str(REPO / "tests" / "integration"))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert "STATES success success" in out.stdout, out.stdout[-3000:] + out.stderr[-5000:]
    (root / "run.log").write_text(out.stdout + out.stderr)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return {"home": home, "events": lines}


def complete(events: list[dict[str, Any]], task: str) -> dict[str, Any]:
    (event,) = [e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] == f"diabetes_{task}"]
    return event


def names(datasets: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(d["namespace"], d["name"]) for d in datasets]


def test_the_events_chain_source_table_to_predictions(events) -> None:
    from mlpipe.registry import Registry

    home, lines = events["home"], events["events"]
    source = (f"sqlite://{(home / 'source.db').resolve()}", "diabetes")
    predictions = (source[0], "diabetes_predictions")

    extract = complete(lines, "train.extract_snapshot")
    assert names(extract["inputs"]) == [source]
    (snapshot,) = extract["outputs"]
    champion = Registry.from_url(f"sqlite:///{home / 'registry.db'}").champion("diabetes")
    assert snapshot["namespace"] == "file" and snapshot["name"].endswith("/extract/snapshot.parquet")
    assert snapshot["facets"]["version"]["datasetVersion"] == champion.data_sha256
    assert snapshot["outputFacets"]["outputStatistics"]["rowCount"] == 442
    assert (snapshot["facets"]["mlpipe_snapshot"]["rows"], snapshot["facets"]["mlpipe_snapshot"]["sha256"]) == (
        442,
        champion.data_sha256,
    )

    promote = complete(lines, "train.promote_model")
    (model,) = promote["outputs"]
    assert (model["namespace"], model["name"]) == ("file", str((home / "artifacts" / champion.artifact_key).resolve()))
    facet = model["facets"]["mlpipe_model"]
    assert (facet["version"], facet["champion"], facet["metrics"]) == (1, True, champion.metrics)

    score = complete(lines, "score.score_batch")
    assert names(score["inputs"]) == [source, ("file", str((home / "artifacts" / champion.artifact_key).resolve()))]
    assert names(score["outputs"]) == [predictions]
    assert score["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == 442

    # The whole chain, by following outputs to the inputs of the next job.
    edges: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for event in lines:
        if event["eventType"] == "COMPLETE":
            for i in names(event.get("inputs") or []):
                edges[i].update(names(event.get("outputs") or []))
    reached, frontier = set(), [source]
    while frontier:
        node = frontier.pop()
        for nxt in edges[node] - reached:
            reached.add(nxt)
            frontier.append(nxt)
    assert {(snapshot["namespace"], snapshot["name"]), (model["namespace"], model["name"]), predictions} <= reached


def test_no_transport_no_listener() -> None:
    """Unconfigured (as here), the provider registers no listener: a task pays nothing for OpenLineage."""
    from airflow.listeners.listener import get_listener_manager
    from airflow.providers.openlineage import conf
    from airflow.providers.openlineage.plugins.openlineage import OpenLineageProviderPlugin

    assert conf.is_disabled()
    assert OpenLineageProviderPlugin.listeners == []
    registered = [type(p).__name__ for p in get_listener_manager().pm.get_plugins()]
    assert not [name for name in registered if "OpenLineage" in name], registered
