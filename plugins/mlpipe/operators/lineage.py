"""OpenLineage inputs and outputs of mlpipe's operators: source table -> snapshot -> model -> predictions.

The OpenLineage provider's listener calls an operator's ``get_openlineage_facets_on_complete`` when
the task succeeds; mlpipe's operators answer through the functions here, from what their
``execute()`` kept in ``lineage_result`` (the task's return value). Datasets are named the way the
OpenLineage naming spec names them (``openlineage.client.naming.dataset``): ``postgres://host:port``
+ ``database.schema.table``, ``mysql://host:port`` + ``database.table``, ``s3://bucket`` + key,
``file`` + path; SQLite, which the spec does not cover, as ``sqlite://<database file>`` + table.

Only called by the listener, which the provider registers only when a transport is configured
(``[openlineage] transport`` or ``OPENLINEAGE_URL``...): without one, none of this runs. The
OpenLineage client is imported here, inside the functions, never at DAG-parse time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from mlpipe.spec import PipelineSpec


def sql_dataset_name(url: str, table: str) -> tuple[str, str]:
    """(namespace, name) of ``table`` in the database of SQLAlchemy ``url``."""
    from openlineage.client.naming.dataset import MySQL, Postgres
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    schema, _, name = table.rpartition(".")
    host = parsed.host or "localhost"
    if backend == "postgresql":
        naming: Any = Postgres(host, str(parsed.port or 5432), parsed.database or "postgres", schema or "public", name)
        return naming.get_namespace(), naming.get_name()
    if backend in ("mysql", "mariadb"):
        naming = MySQL(host, str(parsed.port or 3306), schema or parsed.database or "mysql", name)
        return naming.get_namespace(), naming.get_name()
    if backend == "sqlite":
        database = parsed.database or ":memory:"
        if database.startswith("file:"):  # a URI filename (sources open read-only: file:<path>?mode=ro)
            database = unquote(database[len("file:") :].split("?", 1)[0])
        return f"sqlite://{Path(database).resolve()}", table
    return f"{backend}://{host}:{parsed.port or ''}".rstrip(":"), f"{parsed.database}.{table}"


def uri_dataset_name(uri: str) -> tuple[str, str]:
    """(namespace, name) of an artifact-store URI: ``file`` + path, or ``s3://bucket`` + key."""
    from openlineage.client.naming.dataset import S3, LocalFileSystem

    parts = urlsplit(uri)
    if parts.scheme == "s3":
        naming: Any = S3(parts.netloc, parts.path.lstrip("/") or "/")
    else:
        naming = LocalFileSystem(unquote(parts.path))
    return naming.get_namespace(), naming.get_name()


def source_tables(spec: PipelineSpec, query: str) -> list[str]:
    """The tables a SQL source reads: ``source.table`` when the spec names it, else those of the query."""
    if spec.source.kind == "sql" and spec.source.table:
        return [spec.source.table]
    from openlineage.common.sql import parse

    parsed = parse([query])
    tables = parsed.in_tables if parsed is not None else []
    return [".".join(p for p in (t.schema, t.name) if p) for t in tables]


def _source_datasets(spec: PipelineSpec, url: str | None, query: str | None) -> list[Any]:
    from openlineage.client.event_v2 import InputDataset
    from openlineage.client.naming.dataset import S3

    source = spec.source
    if source.kind == "s3":
        naming = S3(source.bucket, source.prefix.rstrip("/") or "/")
        return [InputDataset(namespace=naming.get_namespace(), name=naming.get_name())]
    assert url is not None and query is not None
    return [InputDataset(*sql_dataset_name(url, table)) for table in source_tables(spec, query)]


def _input(uri: str, facets: dict[str, Any] | None = None) -> Any:
    from openlineage.client.event_v2 import InputDataset

    namespace, name = uri_dataset_name(uri)
    return InputDataset(namespace=namespace, name=name, facets=facets or {})


def _output(namespace_name: tuple[str, str], facets: dict[str, Any], rows: int | None = None) -> Any:
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.facet_v2 import output_statistics_output_dataset

    output_facets = {}
    if rows is not None:
        output_facets["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            rowCount=int(rows)
        )
    return OutputDataset(namespace=namespace_name[0], name=namespace_name[1], facets=facets, outputFacets=output_facets)


def _lineage(inputs: list[Any], outputs: list[Any]) -> Any:
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(inputs=inputs, outputs=outputs)


def _version(value: str) -> dict[str, Any]:
    from openlineage.client.facet_v2 import dataset_version_dataset

    return {"version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=value)}


def extraction(spec: PipelineSpec, source_url: str | None, query: str | None, snapshot: dict[str, Any]) -> Any:
    """The source's table(s) (or S3 prefix) -> the run's snapshot, versioned by its sha256, with its rows."""
    from mlpipe.operators.lineage_facets import snapshot_facet

    facets = {**_version(snapshot["sha256"]), "mlpipe_snapshot": snapshot_facet(snapshot)}
    output = _output(uri_dataset_name(snapshot["uri"]), facets, rows=snapshot["rows"])
    return _lineage(_source_datasets(spec, source_url, query), [output])


def features(store_uri: Any, snapshot: dict[str, Any], features: dict[str, Any]) -> Any:
    """The snapshot -> its train and holdout splits."""
    outputs = [
        _output(uri_dataset_name(store_uri(features[f"{part}_key"])), _version(features[f"{part}_sha256"]), rows)
        for part, rows in (("train", features["train_rows"]), ("holdout", features["holdout_rows"]))
    ]
    return _lineage([_input(snapshot["uri"])], outputs)


def training(store_uri: Any, features: dict[str, Any], trained: dict[str, Any]) -> Any:
    """The train split -> the candidate's fitted model artifact."""
    from mlpipe.operators.lineage_facets import model_facet

    facets = {**_version(trained["model_sha256"]), "mlpipe_model": model_facet(trained)}
    output = _output(uri_dataset_name(trained["model_uri"]), facets)
    return _lineage([_input(store_uri(features["train_key"]))], [output])


def promotion(store_uri: Any, trained: list[dict[str, Any]], version: Any) -> Any:
    """The blessed candidate's artifact -> the registered model version, which is now the champion."""
    from mlpipe.operators.lineage_facets import model_facet

    chosen = next((t for t in trained if t["candidate"] == version.candidate), None)
    inputs = [_input(chosen["model_uri"])] if chosen else []
    facets = {**_version(str(version.version)), "mlpipe_model": model_facet(version, champion=True)}
    return _lineage(inputs, [_output(uri_dataset_name(store_uri(version.artifact_key)), facets)])


def scoring(spec: PipelineSpec, source_url: str, query: str, model_uri: str, output: tuple[str, str], rows: int) -> Any:
    """The source's table(s) and the champion's artifact -> the predictions table (or Parquet)."""
    inputs = [*_source_datasets(spec, source_url, query), _input(model_uri)]
    return _lineage(inputs, [_output(output, {}, rows=rows)])


def operator_lineage(op: Any) -> Any:
    """The lineage of one of mlpipe's operators, from what its ``execute()`` kept in ``lineage_result``.

    No I/O here beyond reading the spec's SQL: the provider calls this in a forked child of the task
    process, where Connections and the registry are best not reached for again.
    """
    result = getattr(op, "lineage_result", None)
    if result is None:  # an operator without datasets of its own (check_params, validate, evaluate...)
        return _lineage([], [])
    spec = op.loaded.spec
    kind = type(op).__name__
    if kind == "SnapshotExtractOperator":
        query = op.loaded.query_text() if spec.source.kind == "sql" else None
        return extraction(spec, result["source_url"], query, result)
    if kind == "FeaturesBuildOperator":
        return features(op.store.uri, op.snapshot, result)
    if kind == "CandidateTrainOperator":
        return training(op.store.uri, op.features, result)
    if kind == "ModelPromoteOperator":
        return promotion(op.store.uri_of, result["trained"], result["model"])
    if kind == "BatchScoreOperator":
        score = spec.score
        if result["target_url"] is not None:
            output = sql_dataset_name(result["target_url"], score.table or f"{spec.name}_predictions")
        else:
            output = uri_dataset_name(result["output"])
        query = op.loaded.score_query_text()
        return scoring(spec, result["source_url"], query, result["model_uri"], output, result["scored"])
    return _lineage([], [])
