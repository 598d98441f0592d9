"""S3 sources: the CSV and Parquet objects under a bucket/prefix that belong to a run, streamed into the snapshot.

One LIST pass finds the source's objects (key, ETag, size, LastModified): those below the prefix
that match the spec's key pattern (or, without one, carry a .csv/.csv.gz/.parquet/.pq suffix). An
object belongs to a run when its key's date partition has ended by the run's as-of time, or
without a partition template when it was last modified by then. The objects are read one at a
time in a fixed order (partition, then key): downloaded to a temporary file with its listed ETag
as a precondition, parsed in chunks (Parquet batches, CSV blocks), given the spec's derived
columns, checked against the columns and types the spec needs, and written through the same
:class:`~mlpipe.stages.extract.SnapshotWriter` as SQL extraction. The objects a run reads are
recorded (``extract/objects.json`` before reading, the snapshot manifest after), so a retried
attempt reads the same objects, and a changed object is detected instead of silently mixed in.
:class:`S3Reader` is this source behind the reader protocol (:class:`mlpipe.sources.SourceReader`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mlpipe import layout
from mlpipe.contracts import NewObjectsFound
from mlpipe.errors import ExtractError, SourceUnavailableError
from mlpipe.registry import encode_watermark
from mlpipe.sources import Plan, SourceInfo, describe
from mlpipe.sources.chunks import frame_to_arrow
from mlpipe.spec import LoadedSpec, PipelineSpec, S3SourceSpec, derive_inputs, partition_regex
from mlpipe.storage import ArtifactStore

ARROW_TYPES = {
    "int": pa.int64(),
    "float": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us"),
    "date": pa.date32(),
}
_PERIODS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
_DOWNLOAD_BLOCK = 1 << 20
# S3 answers that say "try again later" rather than "this request is wrong".
_RETRYABLE_CODES = {"SlowDown", "Throttling", "RequestTimeout", "ServiceUnavailable", "InternalError"}
_CHANGED_CODES = {"PreconditionFailed", "412", "NoSuchKey", "404"}


@dataclass(frozen=True)
class SourceObject:
    """One object of an S3 source as listed; ``partition`` is the start of its key's period (naive UTC)."""

    key: str
    etag: str
    size: int
    last_modified: datetime
    partition: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["last_modified"] = self.last_modified.isoformat()
        out["partition"] = self.partition.isoformat() if self.partition else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceObject:
        partition = data.get("partition")
        return cls(
            key=data["key"],
            etag=data["etag"],
            size=int(data["size"]),
            last_modified=datetime.fromisoformat(data["last_modified"]),
            partition=datetime.fromisoformat(partition) if partition else None,
        )


class _ObjectChanged(Exception):
    """The object is not the one listed any more (other ETag, or deleted)."""


def _endpoint(client: Any) -> str:
    return str(getattr(client.meta, "endpoint_url", None) or "the default AWS endpoint")


@contextmanager
def s3_errors(client: Any, action: str, what: str) -> Iterator[None]:
    """botocore's errors as mlpipe's: retryable (endpoint unreachable, throttled, 5xx) or the spec's fault."""
    from botocore.exceptions import ClientError, HTTPClientError, NoCredentialsError
    from botocore.exceptions import ConnectionError as EndpointUnreachable

    endpoint = _endpoint(client)
    try:
        yield
    except (EndpointUnreachable, HTTPClientError) as exc:
        raise SourceUnavailableError(
            f"cannot {action} {what}: the S3 endpoint {endpoint} is unreachable or failed mid-request ({exc}); "
            "the task is retried, check the endpoint in the source connection and that it is up"
        ) from exc
    except NoCredentialsError:
        raise ExtractError(
            f"cannot {action} {what}: no AWS credentials; set them in the source's AWS connection "
            "(login/password, or the environment's credential chain)"
        ) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if status >= 500 or code in _RETRYABLE_CODES:
            raise SourceUnavailableError(
                f"cannot {action} {what}: the S3 endpoint {endpoint} answered {code or status} "
                f"({error.get('Message')}); the task is retried"
            ) from exc
        if code == "NoSuchBucket":
            hint = "the bucket does not exist: fix source.bucket, or the endpoint of the source connection"
        elif code in {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled", "403"}:
            hint = (
                f"access denied ({code}): the source connection's credentials need s3:ListBucket and "
                "s3:GetObject on the bucket"
            )
        else:
            hint = f"{code}: {error.get('Message') or exc}"
        raise ExtractError(f"cannot {action} {what} (endpoint {endpoint}): {hint}") from None


def object_uri(source: S3SourceSpec, key: str) -> str:
    return f"s3://{source.bucket}/{key}"


# -- listing and selection ------------------------------------------------------------------------


def _period_end(start: datetime, period: str) -> datetime:
    if period == "year":
        return start.replace(year=start.year + 1)
    if period == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start + _PERIODS[period]


def _partition_start(source: S3SourceSpec, key: str) -> datetime:
    pattern, _ = partition_regex(source.partition)
    match = pattern.search(key[len(source.prefix) :])
    if match is None:
        raise ExtractError(
            f"{object_uri(source, key)}: its key carries no partition like source.partition {source.partition!r}; "
            "move it, or narrow source.key_pattern so it is not part of the source"
        )
    parts = {name: int(value) for name, value in match.groupdict().items()}
    try:
        if "j" in parts:
            start = datetime(parts["Y"], 1, 1) + timedelta(days=parts["j"] - 1)
            return start.replace(hour=parts.get("H", 0), minute=parts.get("M", 0))
        return datetime(parts["Y"], parts.get("m", 1), parts.get("d", 1), parts.get("H", 0), parts.get("M", 0))
    except ValueError as exc:
        raise ExtractError(f"{object_uri(source, key)}: the date in its key is not a date ({exc})") from None


def list_objects(client: Any, source: S3SourceSpec, *, partitions: bool = True) -> list[SourceObject]:
    """Every object of the source, in the order they are read: by partition (if the spec has one), then key.

    One LIST pass (paginated, 1,000 keys a page). Folder markers (keys ending in '/') are skipped;
    so are keys outside ``key_pattern`` / ``key_regex``, or without one, keys whose suffix names no
    format. ``partitions=False`` skips reading the partition dates (the watch needs none).
    """
    matcher = source.key_matcher()
    found = []
    with s3_errors(client, "list", source.uri):
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=source.bucket, Prefix=source.prefix)
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"]
                below = key[len(source.prefix) :]
                if not below or key.endswith("/"):
                    continue
                wanted = matcher.fullmatch(below) if matcher is not None else source.format_of(key)
                if not wanted:
                    continue
                found.append(
                    SourceObject(
                        key=key,
                        etag=str(item["ETag"]),
                        size=int(item["Size"]),
                        last_modified=item["LastModified"].astimezone(UTC),
                    )
                )
    if partitions and source.partition is not None:
        found = [SourceObject(**{**asdict(o), "partition": _partition_start(source, o.key)}) for o in found]
    return sorted(found, key=lambda o: (o.partition or datetime.min, o.key))


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def object_time(source: S3SourceSpec, obj: SourceObject) -> datetime:
    """When the object's data is complete (naive UTC): the end of its partition, or its LastModified."""
    if source.partition is not None and obj.partition is not None:
        return _period_end(obj.partition, partition_regex(source.partition)[1])
    return _naive_utc(obj.last_modified)


def objects_for_run(objects: list[SourceObject], source: S3SourceSpec, as_of: datetime) -> list[SourceObject]:
    """The objects a run as of ``as_of`` reads: partitions that ended by then, or objects modified by then."""
    as_of = _naive_utc(as_of)
    return [o for o in objects if object_time(source, o) <= as_of]


# -- reading one object ---------------------------------------------------------------------------


def _spec_columns(spec: PipelineSpec) -> list[str]:
    """What the rest of the pipeline reads from the snapshot."""
    return list(dict.fromkeys([*spec.features.columns, spec.target.column, *filter(None, [spec.split.time_column])]))


def _raw_columns(spec: PipelineSpec) -> set[str]:
    """Columns every object must carry: the snapshot's (or the spec's) and the inputs of derive, less derived ones."""
    source = spec.source
    produced: set[str] = set()
    need: set[str] = set()
    for column, expression in source.derive.items():
        need |= derive_inputs(expression) - produced
        produced.add(column)
    need |= {c for c in (source.columns or _spec_columns(spec)) if c not in produced}
    return need


def _declared_types(spec: PipelineSpec) -> dict[str, pa.DataType]:
    """Types of the columns the spec says something about; ``column_types`` has the last word."""
    source = spec.source
    types: dict[str, pa.DataType] = {c: pa.float64() for c in spec.features.numeric}
    types.update({c: pa.string() for c in spec.features.categorical})
    # Times stay text, as SQLite extracts them; the features and split stages parse them.
    types.update({d.column: pa.string() for d in spec.features.datetime})
    if spec.split.time_column:
        types[spec.split.time_column] = pa.string()
    target = spec.target
    if target.task == "regression":
        types[target.column] = pa.float64()
    elif isinstance(target.positive_class, str):
        types[target.column] = pa.string()
    elif isinstance(target.positive_class, int):
        types[target.column] = pa.int64()
    types.update({c: ARROW_TYPES[t] for c, t in source.column_types.items()})
    return types


def _download(client: Any, source: S3SourceSpec, obj: SourceObject, dest: Path) -> None:
    """The object as listed (``If-Match`` its ETag) into ``dest``, streamed in 1 MiB blocks."""
    from botocore.exceptions import ClientError

    uri = object_uri(source, obj.key)
    with s3_errors(client, "read", uri):
        try:
            response = client.get_object(Bucket=source.bucket, Key=obj.key, IfMatch=obj.etag)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in _CHANGED_CODES:
                raise _ObjectChanged(uri) from None
            raise
        with open(dest, "wb") as out, closing(response["Body"]) as body:
            for block in body.iter_chunks(_DOWNLOAD_BLOCK):
                out.write(block)


def _parquet_chunks(path: Path, uri: str, spec: PipelineSpec, need: set[str]) -> Iterator[pa.Table]:
    source = spec.source
    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
    except (pa.ArrowException, OSError) as exc:
        raise ExtractError(f"{uri} is not a readable Parquet file ({exc}); replace or remove the object") from None
    _check_columns(uri, names, need)
    read = [c for c in names if c in need] if source.columns is not None else None
    try:
        for batch in parquet.iter_batches(batch_size=source.chunk_rows, columns=read):
            yield pa.Table.from_batches([batch])
    except (pa.ArrowException, OSError) as exc:
        raise ExtractError(f"{uri} is a corrupt Parquet file ({exc}); replace or remove the object") from None
    finally:
        parquet.close()


def _csv_chunks(path: Path, uri: str, spec: PipelineSpec, need: set[str]) -> Iterator[pa.Table]:
    import pyarrow.csv as pacsv

    options = spec.source.csv
    read_options = pacsv.ReadOptions(column_names=options.column_names, block_size=4 << 20)
    parse_options = pacsv.ParseOptions(
        delimiter=options.delimiter, quote_char=options.quote_char if options.quote_char is not None else False
    )
    convert = {"column_types": _declared_types(spec), "strings_can_be_null": True}
    if options.null_values is not None:
        convert["null_values"] = options.null_values
    stream = pa.input_stream(str(path), compression="gzip" if uri.lower().endswith(".gz") else None)
    try:
        with closing(stream):
            reader = pacsv.open_csv(stream, read_options, parse_options, pacsv.ConvertOptions(**convert))
            _check_columns(uri, reader.schema.names, need)
            for batch in reader:
                yield pa.Table.from_batches([batch])
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise ExtractError(f"{uri} is not valid CSV for this spec ({exc}); fix or remove the object") from None


def _check_columns(uri: str, names: list[str], need: set[str]) -> None:
    missing = sorted(need - set(names))
    if missing:
        raise ExtractError(
            f"{uri} lacks column(s) {missing} that the spec needs; it has {names}. Fix the object, or the spec's "
            "source.columns / derive / features"
        )


def _conform(table: pa.Table, uri: str, spec: PipelineSpec) -> pa.Table:
    """Derived columns added, declared types cast, numeric columns checked, the snapshot's columns picked."""
    source = spec.source
    for column, expression in source.derive.items():
        table = _derive(table, column, expression, uri)
    for column, typ in ((c, ARROW_TYPES[t]) for c, t in source.column_types.items()):
        if column in table.column_names and table.schema.field(column).type != typ:
            try:
                table = table.set_column(
                    table.column_names.index(column), column, table.column(column).cast(typ, safe=True)
                )
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ExtractError(
                    f"column {column!r} of {uri} cannot be read as {source.column_types[column]} "
                    f"(source.column_types): {exc}"
                ) from None
    numeric = [*spec.features.numeric, *([spec.target.column] if spec.target.task == "regression" else [])]
    for column in numeric:
        if column in table.column_names:
            typ = table.schema.field(column).type
            if not (pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ)) and not (
                pa.types.is_null(typ)
            ):
                raise ExtractError(
                    f"column {column!r} of {uri} holds {typ}, but the spec reads it as a number "
                    "(features.numeric, or a regression target); fix the object or derive a numeric column"
                )
    if source.columns is not None:
        table = table.select(source.columns)
    return table


def _derive(table: pa.Table, column: str, expression: str, uri: str) -> pa.Table:
    """``column`` = ``expression`` evaluated by pandas on this chunk (only the columns it reads are converted)."""
    import pandas as pd

    inputs = [c for c in table.column_names if c in derive_inputs(expression)]
    frame = table.select(inputs).to_pandas()
    try:
        result = frame.eval(expression, engine="python")
    except Exception as exc:  # pandas raises many kinds; all mean the expression does not fit this data
        raise ExtractError(
            f"source.derive.{column}: {expression!r} failed on {uri} ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(result, pd.Series):
        result = pd.Series([result] * table.num_rows, dtype=None if table.num_rows else "float64")
    values = frame_to_arrow(pd.DataFrame({column: result.reset_index(drop=True)})).column(column)
    if column in table.column_names:
        return table.set_column(table.column_names.index(column), column, values)
    return table.append_column(column, values)


def read_object(client: Any, spec: PipelineSpec, obj: SourceObject, tmp: Path) -> Iterator[pa.Table]:
    """The object's rows as snapshot-ready chunks; its download is removed once it is read."""
    source = spec.source
    uri = object_uri(source, obj.key)
    fmt = source.format_of(obj.key)
    if fmt is None:
        raise ExtractError(f"{uri}: cannot tell its format from the key; set source.format (csv or parquet)")
    path = tmp / "object.download"
    _download(client, source, obj, path)
    need = _raw_columns(spec)
    try:
        chunks = _parquet_chunks(path, uri, spec, need) if fmt == "parquet" else _csv_chunks(path, uri, spec, need)
        for chunk in chunks:
            yield _conform(chunk, uri, spec)
    finally:
        path.unlink(missing_ok=True)


# -- the reader: extraction and the monitor's window ----------------------------------------------


def objects_key(snapshot: str) -> str:
    """Where a run keeps the objects it listed: beside its snapshot."""
    return layout.beside(snapshot, layout.OBJECTS_FILE)


class S3Reader:
    """The spec's S3 source over a boto3 client (see :class:`mlpipe.sources.SourceReader`).

    Extraction: the objects that belong to the run are listed once per run and the list is kept
    (``extract/objects.json``), so a retried attempt reads the same objects; each is read with
    ``If-Match`` its listed ETag. An object that changed or vanished since is retryable (the list is
    dropped, the retry lists again); a malformed object fails with its s3:// URI, and also drops the
    list, so a fixed object is picked up when the task is cleared.
    """

    hint = "fix the object, or declare the column's type in source.column_types"

    def __init__(self, loaded: LoadedSpec, client: Any) -> None:
        self.loaded = loaded
        self.client = client
        self.source: S3SourceSpec = loaded.spec.source
        self.info: SourceInfo = describe(self.source)

    def null_types(self) -> dict[str, pa.DataType]:
        return _declared_types(self.loaded.spec)

    def plan(self, store: ArtifactStore, snapshot_key: str, as_of: datetime) -> Plan:
        source = self.source
        plan_key = objects_key(snapshot_key)
        kept = json.loads(store.get_bytes(plan_key)) if store.exists(plan_key) else None
        if kept is None:
            objects = objects_for_run(list_objects(self.client, source), source, as_of)
            kept = {
                "as_of": as_of.isoformat(),
                "bucket": source.bucket,
                "prefix": source.prefix,
                "objects": [o.as_dict() for o in objects],
            }
            store.put_bytes(plan_key, json.dumps(kept, indent=2).encode())
        return Plan(
            as_of=kept["as_of"],
            source={"kind": "s3", "bucket": source.bucket, "prefix": source.prefix, "objects": kept["objects"]},
            items=[SourceObject.from_dict(o) for o in kept["objects"]],
        )

    def chunks(self, plan: Plan, tmp: Path) -> Iterator[tuple[pa.Table, str]]:
        for obj in plan.items:
            where = f"in {object_uri(self.source, obj.key)}"
            for chunk in read_object(self.client, self.loaded.spec, obj, tmp):
                yield chunk, where

    def failed(self, store: ArtifactStore, snapshot_key: str, exc: Exception) -> Exception:
        if isinstance(exc, _ObjectChanged):
            store.delete_prefix(objects_key(snapshot_key))
            return SourceUnavailableError(
                f"{exc} changed or vanished since this run listed it; the retry lists the objects again"
            )
        if isinstance(exc, ExtractError):
            store.delete_prefix(objects_key(snapshot_key))
        return exc

    def count_new(self, watermark: Any, at_watermark: int | None = None) -> NewObjects:
        # An S3 watermark holds the keys at its instant in its value: no count at the value.
        return count_new_objects(self.client, self.source, watermark=watermark)

    def window(self, days: float) -> tuple[Any, str | None, str | None]:
        """The newest ``days`` of the source as a DataFrame: the objects whose data ends within ``days`` of the
        newest one's (partition end, or LastModified), with the window's start and end."""
        import pandas as pd

        spec = self.loaded.spec
        source = self.source
        timed = [(object_time(source, o), o) for o in list_objects(self.client, source)]
        if not timed:
            return pd.DataFrame(), None, None
        end = max(t for t, _ in timed)
        start = end - timedelta(days=days)
        frames = []
        with tempfile.TemporaryDirectory(prefix="mlpipe-window-s3-") as tmp:
            for _, obj in (pair for pair in timed if pair[0] > start):
                frames += [chunk.to_pandas() for chunk in read_object(self.client, spec, obj, Path(tmp))]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return frame, start.isoformat(sep=" "), end.isoformat(sep=" ")


# -- the new-data watch ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NewObjects:
    """Objects past the watermark; watermarks are :func:`objects_watermark` texts."""

    objects: int
    watermark_from: str | None
    watermark_to: str | None
    newest_key: str | None

    def found(self) -> NewObjectsFound:
        """The watch's contract, with watermarks in the registry's typed encoding (like the SQL watch's)."""
        return NewObjectsFound(
            objects=self.objects,
            watermark_from=None if self.watermark_from is None else encode_watermark(self.watermark_from),
            watermark_to=None if self.watermark_to is None else encode_watermark(self.watermark_to),
            newest_key=self.newest_key,
        )


def objects_watermark(objects: list[SourceObject]) -> str | None:
    """The newest LastModified among ``objects`` with every key modified at that instant.

    LastModified has a one-second grain, so several objects can share the newest value, and one
    can still arrive within that second after a check: keeping the keys (not just the newest key)
    lets the next check count it without counting the others again.
    """
    if not objects:
        return None
    newest = max(o.last_modified for o in objects)
    keys = sorted(o.key for o in objects if o.last_modified == newest)
    return json.dumps({"last_modified": newest.isoformat(), "keys": keys}, separators=(",", ":"))


def _past(obj: SourceObject, watermark: str | None) -> bool:
    if watermark is None:
        return True
    mark = json.loads(watermark)
    newest = datetime.fromisoformat(mark["last_modified"])
    return obj.last_modified > newest or (obj.last_modified == newest and obj.key not in set(mark["keys"]))


def count_new_objects(client: Any, source: S3SourceSpec, *, watermark: str | None) -> NewObjects:
    """Objects of the source past ``watermark`` (all of them when there is none), in one LIST pass."""
    objects = list_objects(client, source, partitions=False)
    new = [o for o in objects if _past(o, watermark)]
    if not new:
        return NewObjects(objects=0, watermark_from=watermark, watermark_to=watermark, newest_key=None)
    newest = max(new, key=lambda o: (o.last_modified, o.key))
    return NewObjects(
        objects=len(new),
        watermark_from=watermark,
        watermark_to=objects_watermark(objects),
        newest_key=object_uri(source, newest.key),
    )
