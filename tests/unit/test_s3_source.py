"""S3 sources against moto's server over HTTP: selection, streaming, the object list, errors, watch and window."""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import make_s3_client

from mlpipe import layout
from mlpipe.errors import ExtractError, SourceUnavailableError
from mlpipe.registry import decode_watermark
from mlpipe.sources import s3 as s3_source
from mlpipe.sources.s3 import SourceObject, count_new_objects, list_objects, objects_key
from mlpipe.spec import LoadedSpec, load_spec
from mlpipe.stages import extract as extract_stage
from mlpipe.stages.extract import extract_snapshot, read_snapshot, snapshot_key
from mlpipe.stages.monitor import read_window
from mlpipe.storage import LocalStore

PREFIX = "daily/"
AFTER_ALL = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def client(s3_client: Any) -> Any:
    return s3_client


def s3_spec(make_spec, bucket: str, **source: Any) -> dict[str, Any]:
    base = {"kind": "s3", "bucket": bucket, "prefix": PREFIX, "partition": "date=%Y-%m-%d/", "chunk_rows": 1000}
    return make_spec(source={**base, **source})


def days_of(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {day: part.reset_index(drop=True) for day, part in frame.groupby(frame["ts"].str[:10])}


def put(client: Any, bucket: str, key: str, body: bytes) -> None:
    client.put_object(Bucket=bucket, Key=key, Body=body)


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    out = io.BytesIO()
    frame.to_parquet(out, index=False)
    return out.getvalue()


def put_days(client: Any, bucket: str, frame: pd.DataFrame, *, name: str = "part.parquet") -> dict[str, pd.DataFrame]:
    days = days_of(frame)
    for day, part in sorted(days.items(), reverse=True):  # uploaded newest first: the order read is not the upload's
        put(client, bucket, f"{PREFIX}date={day}/{name}", parquet_bytes(part))
    return days


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "artifacts")


def extract(loaded: LoadedSpec, client: Any, store: LocalStore, as_of: datetime = AFTER_ALL, run_key: str = "r1"):
    return extract_snapshot(loaded, client, store, run_key=run_key, as_of=as_of)


def manifest(store: LocalStore, run_key: str = "r1") -> dict[str, Any]:
    return json.loads(store.get_bytes(layout.snapshot_record("tiny", run_key)))


class TestExtract:
    def test_daily_objects_stream_in_partition_order(
        self, include_tree, make_spec, make_frame, client, bucket, store
    ) -> None:
        frame = make_frame("binary", n=40)  # 40 rows every 7 h: 12 days
        days = put_days(client, bucket, frame)
        put(client, bucket, f"{PREFIX}_SUCCESS", b"")  # markers other tools leave: not data
        put(client, bucket, f"{PREFIX}date=2013-01-02/", b"")
        loaded = load_spec(include_tree(s3_spec(make_spec, bucket)))

        snap = extract(loaded, client, store)

        assert snap.rows == len(frame) and snap.columns == list(frame.columns)
        got = read_snapshot(store, snap.key, snap.sha256)
        pd.testing.assert_frame_equal(got, frame, check_dtype=False)
        listed = manifest(store)["source"]
        assert listed["bucket"] == bucket and listed["prefix"] == PREFIX
        assert [o["key"] for o in listed["objects"]] == [f"{PREFIX}date={d}/part.parquet" for d in sorted(days)]
        first = listed["objects"][0]
        assert set(first) == {"key", "etag", "size", "last_modified", "partition"}
        head = client.head_object(Bucket=bucket, Key=first["key"])
        assert (first["etag"], first["size"]) == (head["ETag"], head["ContentLength"])
        # Small objects are gathered into row groups of chunk_rows, not one row group per object.
        assert pq.read_metadata(store.path(snap.key)).num_row_groups == 1

    def test_a_run_reads_the_partitions_that_ended_by_its_as_of(
        self, include_tree, make_spec, make_frame, client, bucket, store
    ) -> None:
        days = put_days(client, bucket, make_frame("binary", n=40))
        loaded = load_spec(include_tree(s3_spec(make_spec, bucket)))

        # Noon of the third day: days one and two are over, the third is not.
        snap = extract(loaded, client, store, as_of=datetime(2013, 1, 3, 12, tzinfo=UTC))

        ordered = sorted(days)
        assert snap.rows == len(days[ordered[0]]) + len(days[ordered[1]])
        assert snap.as_of == "2013-01-03T12:00:00"

    def test_without_a_partition_last_modified_decides(
        self, include_tree, make_spec, make_frame, client, bucket, store
    ) -> None:
        put_days(client, bucket, make_frame("binary", n=40))
        loaded = load_spec(include_tree(s3_spec(make_spec, bucket, partition=None)))

        before = extract(loaded, client, store, as_of=datetime.now(UTC) - timedelta(hours=1), run_key="early")
        after = extract(loaded, client, store, as_of=datetime.now(UTC) + timedelta(minutes=1), run_key="late")

        assert before.rows == 0  # nothing was written an hour ago: an empty snapshot, which validation flags
        assert after.rows == 40

    def test_csv_with_options_and_gzip(self, include_tree, make_spec, make_frame, client, bucket, store) -> None:
        frame = make_frame("binary", n=40)
        for i, (day, part) in enumerate(sorted(days_of(frame).items())):
            text = part.to_csv(index=False, sep=";").encode()
            name = "part.csv.gz" if i % 2 else "part.csv"
            put(client, bucket, f"{PREFIX}date={day}/{name}", gzip.compress(text) if i % 2 else text)
        source = {"csv": {"delimiter": ";"}, "column_types": {"id": "int"}}
        loaded = load_spec(include_tree(s3_spec(make_spec, bucket, **source)))

        snap = extract(loaded, client, store)

        got = read_snapshot(store, snap.key)
        assert snap.rows == 40
        assert str(got["num"].dtype) == "float64" and str(got["id"].dtype) == "int64"
        assert got["ts"].tolist() == frame["ts"].tolist()  # times stay text, as a SQL extract keeps them
        assert got["num"].equals(frame["num"].astype("float64"))

    def test_derive_and_columns_shape_the_snapshot(
        self, include_tree, make_spec, make_frame, client, bucket, store
    ) -> None:
        frame = make_frame("binary", n=40).rename(columns={"y": "score"})
        frame["extra"] = "unused"
        put_days(client, bucket, frame)
        source = {"derive": {"y": "(score > 0).astype('int64')"}, "columns": ["id", "ts", "cat", "num", "y"]}
        loaded = load_spec(include_tree(s3_spec(make_spec, bucket, **source)))

        snap = extract(loaded, client, store)

        got = read_snapshot(store, snap.key)
        assert snap.columns == ["id", "ts", "cat", "num", "y"]
        assert got["y"].tolist() == (frame["score"] > 0).astype(int).tolist()

    def test_key_patterns_are_compiled_once_per_pattern_not_per_object(
        self, include_tree, make_spec, make_frame, client, bucket, store
    ) -> None:
        from mlpipe.spec import derive_inputs, key_patterns, partition_regex

        frame = make_frame("binary", n=40).rename(columns={"y": "score"})
        days = put_days(client, bucket, frame)
        source = {"key_pattern": "date=*/*.parquet", "derive": {"y": "(score > 0).astype('int64')"}}
        caches = (partition_regex, key_patterns.compile_key_filter, derive_inputs)
        for cache in caches:
            cache.cache_clear()

        loaded = load_spec(include_tree(s3_spec(make_spec, bucket, **source)))
        snap = extract(loaded, client, store)

        assert snap.rows == 40 and len(days) >= 10
        # Each pattern's text was turned into a regex (or parsed) once: when the spec was checked, or at its
        # first use; every object after that (its partition's start and end, its key, its derive) reused it.
        assert [cache.cache_info().misses for cache in caches] == [1, 1, 1]
        assert partition_regex.cache_info().hits >= 2 * len(days)
        assert derive_inputs.cache_info().hits >= len(days) - 1


class TestBadObjects:
    """A malformed object fails the extraction with its s3:// URI; nothing is published, the list is dropped."""

    def fails(self, loaded: LoadedSpec, client: Any, store: LocalStore, *fragments: str) -> str:
        with pytest.raises(ExtractError) as info:
            extract(loaded, client, store)
        message = str(info.value)
        for fragment in fragments:
            assert fragment in message, f"{fragment!r} not in: {message}"
        assert not store.exists(snapshot_key("tiny", "r1"))
        assert not store.exists(objects_key(snapshot_key("tiny", "r1")))
        return message

    def test_corrupt_parquet(self, include_tree, make_spec, make_frame, client, bucket, store) -> None:
        put_days(client, bucket, make_frame("binary", n=40))
        key = f"{PREFIX}date=2013-01-05/part.parquet"
        put(client, bucket, key, b"PAR1 this is not parquet")
        loaded = load_spec(include_tree(s3_spec(make_spec, bucket)))

        self.fails(loaded, client, store, f"s3://{bucket}/{key}", "not a readable Parquet file")

    def test_bad_csv_cell(self, include_tree, make_spec, client, bucket, store) -> None:
        key = f"{PREFIX}date=2013-01-01/part.csv"
        body = "id,ts,cat,num,y\n1,2013-01-01 05:00:00,a,1.5,0\n2,2013-01-01 06:00:00,b,lots,1\n"
        put(client, bucket, key, body.encode())
        loaded = load_spec(include_tree(s3_spec(make_spec, bucket)))

        self.fails(loaded, client, store, f"s3://{bucket}/{key}", "lots")

    def test_ragged_csv_row(self, include_tree, make_spec, client, bucket, store) -> None:
        key = f"{PREFIX}date=2013-01-01/part.csv"
        put(client, bucket, key, b"id,ts,cat,num,y\n1,2013-01-01 05:00:00,a,1.5,0\n2,2013-01-01 06:00:00,b\n")
        loaded = load_spec(include_tree(s3_spec(make_spec, bucket)))

        self.fails(loaded, client, store, f"s3://{bucket}/{key}", "Expected 5 columns")

    def test_missing_column(self, include_tree, make_spec, make_frame, client, bucket, store) -> None:
        frame = make_frame("binary", n=40)
        days = put_days(client, bucket, frame)
        day = sorted(days)[3]
        key = f"{PREFIX}date={day}/part.parquet"
        put(client, bucket, key, parquet_bytes(days[day].drop(columns=["cat"])))
        loaded = load_spec(include_tree(s3_spec(make_spec, bucket)))

        self.fails(loaded, client, store, f"s3://{bucket}/{key}", "lacks column(s) ['cat']")

    def test_a_number_column_holding_text(self, include_tree, make_spec, make_frame, client, bucket, store) -> None:
        days = put_days(client, bucket, make_frame("binary", n=40))
        day = sorted(days)[0]
        key = f"{PREFIX}date={day}/part.parquet"
        put(client, bucket, key, parquet_bytes(days[day].assign(num="1.5")))
        loaded = load_spec(include_tree(s3_spec(make_spec, bucket)))

        self.fails(loaded, client, store, f"column 'num' of s3://{bucket}/{key}", "reads it as a number")

    def test_columns_that_change_between_objects(
        self, include_tree, make_spec, make_frame, client, bucket, store
    ) -> None:
        days = put_days(client, bucket, make_frame("binary", n=40))
        day = sorted(days)[2]
        key = f"{PREFIX}date={day}/part.parquet"
        put(client, bucket, key, parquet_bytes(days[day].assign(surprise=1)))
        loaded = load_spec(include_tree(s3_spec(make_spec, bucket)))

        self.fails(loaded, client, store, f"the columns change in s3://{bucket}/{key}", "surprise")

    def test_a_key_without_its_partition(self, include_tree, make_spec, make_frame, client, bucket, store) -> None:
        put(client, bucket, f"{PREFIX}misplaced.parquet", parquet_bytes(make_frame("binary", n=10)))
        loaded = load_spec(include_tree(s3_spec(make_spec, bucket)))

        self.fails(loaded, client, store, f"s3://{bucket}/{PREFIX}misplaced.parquet", "no partition like")


class TestRetries:
    def test_a_retry_reads_the_objects_the_run_listed(
        self, include_tree, make_spec, make_frame, client, bucket, store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        frame = make_frame("binary", n=40)
        days = put_days(client, bucket, frame[frame["ts"] < "2013-01-06"])
        loaded = load_spec(include_tree(s3_spec(make_spec, bucket)))

        def crash(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("worker lost")

        with monkeypatch.context() as patched:
            patched.setattr(extract_stage, "publish_snapshot", crash)
            with pytest.raises(RuntimeError):
                extract(loaded, client, store)
        assert store.exists(objects_key(snapshot_key("tiny", "r1")))
        # Meanwhile a late object lands in an old partition: the retry still reads what the run listed.
        put(client, bucket, f"{PREFIX}date=2013-01-02/late.parquet", parquet_bytes(frame.tail(3)))

        retried = extract(loaded, client, store)

        assert retried.rows == sum(len(p) for p in days.values())
        assert len(manifest(store)["source"]["objects"]) == len(days)
        fresh = extract(loaded, client, store, run_key="r2")
        assert fresh.rows == retried.rows + 3

    def test_an_object_changed_since_the_listing_is_retried_with_a_new_listing(
        self, include_tree, make_spec, make_frame, client, bucket, store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        days = put_days(client, bucket, make_frame("binary", n=40))
        loaded = load_spec(include_tree(s3_spec(make_spec, bucket)))
        listed = list_objects(client, loaded.spec.source)
        changed = listed[1].key
        monkeypatch.setattr(s3_source, "list_objects", lambda *args, **kwargs: listed)
        put(client, bucket, changed, parquet_bytes(days[sorted(days)[1]].head(1)))  # rewritten after the LIST

        with pytest.raises(SourceUnavailableError, match=f"s3://{bucket}/{changed} changed or vanished"):
            extract(loaded, client, store)

        assert not store.exists(objects_key(snapshot_key("tiny", "r1")))
        monkeypatch.undo()
        assert extract(loaded, client, store).rows == 40 - len(days[sorted(days)[1]]) + 1

    def test_an_unreachable_endpoint_is_retryable_and_named(self, include_tree, make_spec, store) -> None:
        import socket

        with socket.socket() as probe:  # a port nothing listens on
            probe.bind(("127.0.0.1", 0))
            dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
        down = make_s3_client(dead, retries={"max_attempts": 1}, connect_timeout=2)
        loaded = load_spec(include_tree(s3_spec(make_spec, "some-bucket")))

        with pytest.raises(SourceUnavailableError) as info:
            extract(loaded, down, store)

        assert dead in str(info.value) and "unreachable" in str(info.value)
        assert store.list("tiny") == []

    def test_a_missing_bucket_is_the_spec_s_fault(self, include_tree, make_spec, client, store) -> None:
        loaded = load_spec(include_tree(s3_spec(make_spec, "no-such-bucket-here")))

        with pytest.raises(ExtractError, match=r"the bucket does not exist: fix source\.bucket"):
            extract(loaded, client, store)


class TestWatch:
    def test_counts_new_objects_in_one_list_per_check(self, make_spec, make_frame, client, bucket) -> None:
        from mlpipe.spec import PipelineSpec

        source = PipelineSpec.model_validate(s3_spec(make_spec, bucket)).source
        put_days(client, bucket, make_frame("binary", n=20))  # 6 days
        requests: list[str] = []
        client.meta.events.register("before-send.s3", lambda request, **_: requests.append(request.url))
        try:
            first = count_new_objects(client, source, watermark=None)
            assert len(requests) == 1 and "list-type=2" in requests[0]
        finally:
            client.meta.events.unregister("before-send.s3")

        assert first.objects == 6
        assert first.newest_key.startswith(f"s3://{bucket}/{PREFIX}date=")
        mark = decode_watermark(first.found().watermark_to)
        assert count_new_objects(client, source, watermark=mark).objects == 0
        put(client, bucket, f"{PREFIX}date=2013-02-01/part.parquet", parquet_bytes(make_frame("binary", n=10)))
        later = count_new_objects(client, source, watermark=mark)
        assert (later.objects, later.watermark_from) == (1, mark)
        assert later.newest_key == f"s3://{bucket}/{PREFIX}date=2013-02-01/part.parquet"

    def test_objects_sharing_the_newest_second_are_not_lost(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from mlpipe.spec import S3SourceSpec

        second = datetime(2026, 1, 1, 12, tzinfo=UTC)
        listing = [
            SourceObject("p/a", '"1"', 1, second - timedelta(seconds=5)),
            SourceObject("p/m", '"2"', 1, second),
        ]
        monkeypatch.setattr(s3_source, "list_objects", lambda *args, **kwargs: list(listing))
        source = S3SourceSpec(kind="s3", bucket="bkt", prefix="p")
        first = count_new_objects(None, source, watermark=None)
        # Within the same second, after the check, an object lands whose key sorts first.
        listing.append(SourceObject("p/b", '"3"', 1, second))

        again = count_new_objects(None, source, watermark=first.watermark_to)

        assert first.objects == 2
        assert again.objects == 1 and again.newest_key == "s3://bkt/p/b"
        assert count_new_objects(None, source, watermark=again.watermark_to).objects == 0


class TestWindow:
    def test_the_newest_days_by_partition(self, include_tree, make_spec, make_frame, client, bucket) -> None:
        frame = make_frame("binary", n=40)
        days = put_days(client, bucket, frame)
        loaded = load_spec(include_tree(s3_spec(make_spec, bucket)))

        window, start, end = read_window(loaded, client, days=3)

        newest = sorted(days)[-3:]
        assert sorted(window["id"]) == sorted(pd.concat([days[d] for d in newest])["id"])
        last = datetime.fromisoformat(sorted(days)[-1]) + timedelta(days=1)
        assert (start, end) == (str(last - timedelta(days=3)), str(last))

    def test_an_empty_prefix_has_no_window(self, include_tree, make_spec, client, bucket) -> None:
        loaded = load_spec(include_tree(s3_spec(make_spec, bucket)))
        window, start, end = read_window(loaded, client, days=3)
        assert window.empty and (start, end) == (None, None)
