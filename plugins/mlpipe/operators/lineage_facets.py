"""mlpipe's own OpenLineage dataset facets: a snapshot's rows and sha256, a model's version and metrics.

Imported only by ``mlpipe.operators.lineage`` when the OpenLineage listener asks for an operator's
lineage (it imports the OpenLineage client at module level, so nothing imports it at parse time).
"""

from __future__ import annotations

from typing import Any

import attr
from openlineage.client.generated.base import DatasetFacet

SCHEMA = "https://github.com/mlpipe/mlpipe/blob/main/docs/operations.md#openlineage"


@attr.define
class MlpipeSnapshotDatasetFacet(DatasetFacet):
    """The snapshot a run extracted: its rows, content hash, as-of time and columns."""

    rows: int
    sha256: str
    asOf: str  # OpenLineage facets use camelCase
    columns: list[str]

    @staticmethod
    def _get_schema() -> str:
        return f"{SCHEMA}-snapshot"


@attr.define
class MlpipeModelDatasetFacet(DatasetFacet):
    """A model artifact: its candidate and estimator, and once registered its version, metrics and champion flag."""

    candidate: str
    estimator: str
    sha256: str
    version: int | None = None
    metrics: dict[str, Any] | None = None
    champion: bool = False
    runId: str | None = None

    @staticmethod
    def _get_schema() -> str:
        return f"{SCHEMA}-model"


def snapshot_facet(snapshot: dict[str, Any]) -> MlpipeSnapshotDatasetFacet:
    return MlpipeSnapshotDatasetFacet(
        rows=int(snapshot["rows"]),
        sha256=snapshot["sha256"],
        asOf=str(snapshot["as_of"]),
        columns=list(snapshot.get("columns") or []),
    )


def model_facet(model: Any, *, champion: bool = False) -> MlpipeModelDatasetFacet:
    """From a trained candidate's result (dict) or a registered :class:`mlpipe.registry.ModelVersion`."""
    if isinstance(model, dict):
        return MlpipeModelDatasetFacet(
            candidate=model["candidate"], estimator=model["estimator"], sha256=model["model_sha256"]
        )
    return MlpipeModelDatasetFacet(
        candidate=model.candidate,
        estimator=model.estimator,
        sha256=model.artifact_sha256,
        version=int(model.version),
        metrics=dict(model.metrics),
        champion=champion,
        runId=model.run_id,
    )
