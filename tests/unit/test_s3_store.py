"""Tests of mlpipe.storage.S3Store against moto's S3 server on loopback, and of LocalStore on the same behaviours."""

from __future__ import annotations

import hashlib
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest
from conftest import make_s3_client

from mlpipe.errors import ArtifactConflictError, ArtifactIntegrityError, MlpipeError
from mlpipe.storage import ArtifactStore, LocalStore, S3Store, StoredArtifact, sha256_file

PREFIX = "team/mlpipe"


@pytest.fixture
def s3_store(s3_client: Any, bucket: str) -> S3Store:
    return S3Store(bucket, PREFIX, s3_client)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    """Each store in turn: the shared tests prove they are interchangeable."""
    if request.param == "local":
        return LocalStore(tmp_path / "artifacts")
    return request.getfixturevalue("s3_store")


def stored_objects(store: ArtifactStore) -> list[str]:
    """Everything the store holds, read around the store's own API."""
    if isinstance(store, LocalStore):
        return sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_file())
    assert isinstance(store, S3Store)
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def overwrite_behind_the_store(store: ArtifactStore, key: str, data: bytes, *, keep_metadata: bool = False) -> None:
    """Change an artifact's bytes without the store knowing (a bug, a person, bit rot)."""
    if isinstance(store, LocalStore):
        store.path(key).write_bytes(data)
        return
    assert isinstance(store, S3Store)
    obj = store.object_key(key)
    metadata = store.client.head_object(Bucket=store.bucket, Key=obj)["Metadata"] if keep_metadata else {}
    store.client.put_object(Bucket=store.bucket, Key=obj, Body=data, Metadata=metadata)


@contextmanager
def count_calls(client: Any, *operations: str) -> Iterator[dict[str, int]]:
    """Count the client's API calls by operation name while the block runs."""
    counts = dict.fromkeys(operations, 0)

    def seen(model: Any, **_: Any) -> None:
        if model.name in counts:
            counts[model.name] += 1

    client.meta.events.register("before-call.s3", seen, unique_id="count_calls")
    try:
        yield counts
    finally:
        client.meta.events.unregister("before-call.s3", unique_id="count_calls")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- behaviours both stores share ------------------------------------------------------------------


class TestEitherStore:
    def test_round_trip_bytes(self, store: ArtifactStore, tmp_path: Path) -> None:
        art = store.put_bytes("p/runs/r1/extract/a.bin", b"hello")

        assert isinstance(art, StoredArtifact)
        assert art.key == "p/runs/r1/extract/a.bin"
        assert art.uri == store.uri(art.key)
        assert art.sha256 == hashlib.sha256(b"hello").hexdigest()
        assert art.size == 5
        assert store.exists(art.key)
        assert not store.exists("p/runs/r1/extract/b.bin")
        assert not store.exists("p/runs")  # a folder is not an artifact
        assert not store.exists("p/runs/r1/extract/a")  # nor is a prefix of a key's last part
        assert store.get_bytes(art.key) == b"hello"
        assert store.sha256(art.key) == art.sha256
        assert store.get_file(art.key, tmp_path / "out" / "copy.bin").read_bytes() == b"hello"

    def test_missing_artifact_is_file_not_found_naming_the_uri(self, store: ArtifactStore, tmp_path: Path) -> None:
        uri = re.escape(store.uri("p/none.bin"))

        with pytest.raises(FileNotFoundError, match=uri):
            store.get_file("p/none.bin", tmp_path / "dest" / "none.bin")
        with pytest.raises(FileNotFoundError, match=uri), store.local_copy("p/none.bin"):
            pass
        with pytest.raises(FileNotFoundError):
            store.sha256("p/none.bin")
        assert not (tmp_path / "dest").exists() or list((tmp_path / "dest").iterdir()) == []

    def test_parquet_round_trip(self, store: ArtifactStore, tmp_path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"id": list(range(50)), "carrier": ["AA", "DL"] * 25, "delay": [i / 7 for i in range(50)]})
        src = tmp_path / "snapshot.parquet"
        pq.write_table(table, src)

        art = store.put_file("p/runs/r1/extract/snapshot.parquet", src)

        assert art.sha256 == sha256_file(src) == store.sha256(art.key)
        assert art.size == src.stat().st_size
        with store.local_copy(art.key, expected_sha256=art.sha256) as path:
            assert pq.read_table(path).equals(table)

    def test_sha256_is_the_local_files(self, store: ArtifactStore, tmp_path: Path) -> None:
        src = tmp_path / "big.bin"
        src.write_bytes(bytes(range(256)) * (3 * 4096 + 1))  # several read blocks, odd tail

        art = store.put_file("p/x/big.bin", src)

        assert art.sha256 == store.sha256("p/x/big.bin") == sha256_file(src)
        assert store.get_bytes("p/x/big.bin") == src.read_bytes()

    def test_put_file_replaces(self, store: ArtifactStore) -> None:
        store.put_bytes("k/a.txt", b"one")
        art = store.put_bytes("k/a.txt", b"two")

        assert store.get_bytes("k/a.txt") == b"two"
        assert store.sha256("k/a.txt") == art.sha256 == hashlib.sha256(b"two").hexdigest()

    def test_list_and_delete_prefix(self, store: ArtifactStore) -> None:
        for key in ("p/runs/r1/a", "p/runs/r1/b/c", "p/runs/r10/a", "p/models/v1/m"):
            store.put_bytes(key, b"x")

        assert store.list("p/runs/r1") == ["p/runs/r1/a", "p/runs/r1/b/c"]  # r10 is not under r1
        assert store.list("p/runs/r1/a") == ["p/runs/r1/a"]
        assert store.list("p/runs/r9") == []
        assert store.delete_prefix("p/runs/r1") == 2
        assert store.list("p") == ["p/models/v1/m", "p/runs/r10/a"]
        assert store.delete_prefix("p/models/v1/m") == 1
        assert store.delete_prefix("p/absent") == 0
        assert store.list("p") == ["p/runs/r10/a"]

    def test_list_and_delete_more_than_a_page(self, store: ArtifactStore) -> None:
        keys = [f"p/runs/r1/part/{i:05d}.bin" for i in range(1100)]  # S3 lists and deletes 1000 at a time
        for key in keys:  # sequential: moto serves from this process, so threads would only share its GIL
            store.put_bytes(key, b".")
        store.put_bytes("p/runs/r2/keep.bin", b"k")

        counting = count_calls(store.client, "ListObjectsV2", "DeleteObjects") if isinstance(store, S3Store) else None
        with counting or nullcontext({}) as calls:
            assert store.list("p/runs/r1") == keys
            assert store.delete_prefix("p/runs/r1") == 1100

        assert store.list("p") == ["p/runs/r2/keep.bin"]
        if isinstance(store, S3Store):
            # list: 1 exact-key probe + 2 pages; delete_prefix: the same listing + 2 batches.
            assert calls == {"ListObjectsV2": 6, "DeleteObjects": 2}

    def test_put_tree(self, store: ArtifactStore, tmp_path: Path) -> None:
        site = tmp_path / "site"
        (site / "css").mkdir(parents=True)
        (site / "index.html").write_text("<html/>")
        (site / "css" / "a.css").write_text("p{}")

        arts = store.put_tree("p/runs/r1/report", site)

        assert [a.key for a in arts] == ["p/runs/r1/report/css/a.css", "p/runs/r1/report/index.html"]
        assert store.get_bytes("p/runs/r1/report/index.html") == b"<html/>"

    def test_put_file_once(self, store: ArtifactStore, tmp_path: Path) -> None:
        same = tmp_path / "same.bin"
        same.write_bytes(b"model-bytes")
        first = store.put_file_once("p/models/v1/model.joblib", same)

        again = store.put_file_once("p/models/v1/model.joblib", same)
        assert again == first
        assert first.sha256 == hashlib.sha256(b"model-bytes").hexdigest()

        other = tmp_path / "other.bin"
        other.write_bytes(b"different")
        uri = re.escape(store.uri("p/models/v1/model.joblib"))
        with pytest.raises(ArtifactIntegrityError, match=f"{uri} already exists with other content"):
            store.put_file_once("p/models/v1/model.joblib", other)
        assert store.get_bytes("p/models/v1/model.joblib") == b"model-bytes"

    @pytest.mark.parametrize("key", ["..", "../escape", "a/../../escape", "/abs/path", "a b", ""])
    def test_bad_keys_are_refused(self, store: ArtifactStore, tmp_path: Path, key: str) -> None:
        attempts: list[Callable[[], object]] = [
            lambda: store.uri(key),
            lambda: store.put_bytes(key, b"x"),
            lambda: store.exists(key),
            lambda: store.get_file(key, tmp_path / "dest"),
            lambda: store.list(key),
            lambda: store.delete_prefix(key),
            lambda: store.sha256(key),
        ]
        for attempt in attempts:
            with pytest.raises(MlpipeError, match="invalid artifact key"):
                attempt()
        if isinstance(store, S3Store):
            assert stored_objects(store) == []
        else:
            assert not store.root.exists()

    def test_key_of_keys_and_uris(self, store: ArtifactStore) -> None:
        art = store.put_bytes("p/models/v3/manual__2026-01-01T00_00_00_00_00/model.joblib", b"m")

        assert store.key_of(art.key) == art.key
        assert store.key_of(art.uri) == art.key
        assert store.key_of(store.uri(art.key)) == art.key
        # Another root (bucket, prefix, directory) that held the same layout: its key, read in this store.
        assert store.key_of("s3://elsewhere/old/p/models/v3/model.joblib") == "p/models/v3/model.joblib"
        assert store.key_of("file:///elsewhere/p/models/v3/model.joblib") == "p/models/v3/model.joblib"
        with pytest.raises(FileNotFoundError, match="not in this store"):
            store.key_of("s3://elsewhere/p/a.bin")

    def test_local_copy_verifies_sha256(self, store: ArtifactStore) -> None:
        art = store.put_bytes("p/runs/r1/extract/snapshot.parquet", b"original bytes")
        with store.local_copy(art.key, expected_sha256=art.sha256) as path:
            assert path.read_bytes() == b"original bytes"

        overwrite_behind_the_store(store, art.key, b"corrupted bytes")

        with (
            pytest.raises(ArtifactIntegrityError, match=f"{re.escape(art.uri)} does not match its recorded sha256"),
            store.local_copy(art.key, expected_sha256=art.sha256),
        ):
            pass


# -- S3 only ---------------------------------------------------------------------------------------


class TestS3Store:
    def test_uri_layout_and_prefix(self, s3_client: Any, bucket: str) -> None:
        store = S3Store(bucket, f"/{PREFIX}/", s3_client)

        assert store.prefix == PREFIX
        assert store.uri("p/a.bin") == f"s3://{bucket}/{PREFIX}/p/a.bin"
        assert repr(store) == f"S3Store('s3://{bucket}/{PREFIX}/')"
        art = store.put_bytes("p/a.bin", b"a")
        assert stored_objects(store) == [f"{PREFIX}/p/a.bin"]
        assert art.uri == f"s3://{bucket}/{PREFIX}/p/a.bin"

        bare = S3Store(bucket, "", s3_client)
        assert bare.uri("p/a.bin") == f"s3://{bucket}/p/a.bin"
        assert bare.list(PREFIX) == [f"{PREFIX}/p/a.bin"]
        assert bare.key_of(art.uri) == f"{PREFIX}/p/a.bin"  # the same object, seen from the bucket root
        with pytest.raises(FileNotFoundError, match="not in this store"):
            S3Store(bucket, "other", s3_client).key_of(art.uri)
        with pytest.raises(FileNotFoundError, match="not in this store"):
            S3Store("another-bucket", PREFIX, s3_client).key_of(art.uri)

    @pytest.mark.parametrize(("bucket_name", "prefix"), [("", "p"), ("s3://b", "p"), ("b", "../up"), ("b", "a b")])
    def test_bad_bucket_or_prefix_is_refused(self, s3_client: Any, bucket_name: str, prefix: str) -> None:
        with pytest.raises(MlpipeError, match="invalid"):
            S3Store(bucket_name, prefix, s3_client)

    def test_sha256_is_recorded_in_metadata_and_read_by_a_head(self, s3_store: S3Store, tmp_path: Path) -> None:
        src = tmp_path / "model.joblib"
        src.write_bytes(b"m" * 100_000)

        art = s3_store.put_file("p/models/v1/model.joblib", src)

        head = s3_store.client.head_object(Bucket=s3_store.bucket, Key=f"{PREFIX}/p/models/v1/model.joblib")
        assert head["Metadata"] == {"sha256": sha256_file(src)}
        with count_calls(s3_store.client, "HeadObject", "GetObject") as calls:
            assert s3_store.sha256(art.key) == sha256_file(src)
        assert calls == {"HeadObject": 1, "GetObject": 0}

    def test_large_files_go_up_in_parts_with_their_sha256(self, s3_client: Any, bucket: str, tmp_path: Path) -> None:
        store = S3Store(bucket, PREFIX, s3_client, multipart_threshold=1 << 20)
        src = tmp_path / "snapshot.parquet"
        src.write_bytes(hashlib.sha256(b"seed").digest() * (12 << 15))  # 12 MiB: two 8 MiB parts

        art = store.put_file("p/runs/r1/extract/snapshot.parquet", src)

        head = s3_client.head_object(Bucket=bucket, Key=store.object_key(art.key))
        assert head["ETag"].endswith('-2"')  # a multipart upload's ETag counts its parts
        assert store.sha256(art.key) == art.sha256 == sha256_file(src)
        with store.local_copy(art.key, expected_sha256=art.sha256) as path:
            assert path.stat().st_size == 12 << 20

    def test_objects_written_by_other_tools_have_their_sha256_computed(self, s3_store: S3Store, tmp_path: Path) -> None:
        s3_store.client.put_object(Bucket=s3_store.bucket, Key=s3_store.object_key("p/raw.csv"), Body=b"a,b\n1,2\n")
        digest = hashlib.sha256(b"a,b\n1,2\n").hexdigest()

        assert s3_store.sha256("p/raw.csv") == digest
        assert s3_store.get_bytes("p/raw.csv") == b"a,b\n1,2\n"
        same = tmp_path / "raw.csv"
        same.write_bytes(b"a,b\n1,2\n")
        assert s3_store.put_file_once("p/raw.csv", same).sha256 == digest

    def test_get_file_checks_the_recorded_sha256(self, s3_store: S3Store, tmp_path: Path) -> None:
        s3_store.put_bytes("p/models/v1/model.joblib", b"the model")
        overwrite_behind_the_store(s3_store, "p/models/v1/model.joblib", b"tampered", keep_metadata=True)
        dest = tmp_path / "dl" / "model.joblib"

        with pytest.raises(ArtifactIntegrityError, match="does not match its recorded sha256"):
            s3_store.get_file("p/models/v1/model.joblib", dest)
        assert list(dest.parent.iterdir()) == []  # neither the bad file nor a temp file is left

    def test_put_bytes_if_match_is_a_compare_and_swap(self, s3_store: S3Store) -> None:
        key = "p/champion.json"
        assert s3_store.etag(key) is None
        created = s3_store.put_bytes_if_match(key, b'{"version": 1}', None)
        assert created.sha256 == hashlib.sha256(b'{"version": 1}').hexdigest()
        assert s3_store.sha256(key) == created.sha256
        with pytest.raises(ArtifactConflictError, match=re.escape(s3_store.uri(key))):
            s3_store.put_bytes_if_match(key, b'{"version": 9}', None)  # If-None-Match: * and it exists

        # Two writers read the same ETag; the first to write wins, the second must re-read.
        seen_by_a = seen_by_b = s3_store.etag(key)
        assert seen_by_a is not None
        s3_store.put_bytes_if_match(key, b'{"version": 2}', seen_by_a)
        with pytest.raises(ArtifactConflictError, match="changed since it was read"):
            s3_store.put_bytes_if_match(key, b'{"version": 3}', seen_by_b)
        assert s3_store.get_bytes(key) == b'{"version": 2}'

        fresh = s3_store.etag(key)
        assert fresh not in (None, seen_by_a)
        s3_store.put_bytes_if_match(key, b'{"version": 3}', fresh)
        assert s3_store.get_bytes(key) == b'{"version": 3}'

        gone = s3_store.etag(key)
        s3_store.delete_prefix(key)
        with pytest.raises(ArtifactConflictError):
            s3_store.put_bytes_if_match(key, b'{"version": 4}', gone)  # If-Match on a deleted object
        assert issubclass(ArtifactConflictError, ArtifactIntegrityError)

    def test_missing_bucket_is_named_with_the_endpoint(self, s3_client: Any, s3_endpoint: str) -> None:
        store = S3Store("no-such-bucket-here", PREFIX, s3_client)

        attempts: list[tuple[Callable[[], object], str]] = [
            (lambda: store.put_bytes("p/a.bin", b"a"), "p/a.bin"),
            (lambda: store.get_bytes("p/a.bin"), "p/a.bin"),
            (lambda: store.exists("p/a.bin"), "p/a.bin"),
            (lambda: store.list("p"), "p"),
            (lambda: store.delete_prefix("p"), "p"),
        ]
        for attempt, key in attempts:
            with pytest.raises(MlpipeError, match="the bucket does not exist") as caught:
                attempt()
            message = str(caught.value)
            assert store.uri(key) in message
            assert s3_endpoint in message
            assert "'no-such-bucket-here'" in message

    def test_unreachable_endpoint_is_named(self) -> None:
        endpoint = f"http://127.0.0.1:{closed_port()}"
        store = S3Store("bkt", PREFIX, make_s3_client(endpoint, retries={"max_attempts": 1}, connect_timeout=2))

        with pytest.raises(MlpipeError, match=re.escape(endpoint)) as caught:
            store.put_bytes("p/a.bin", b"a")
        assert "s3://bkt/team/mlpipe/p/a.bin" in str(caught.value)
        assert "unreachable" in str(caught.value)
        with pytest.raises(MlpipeError, match=re.escape(endpoint)):
            store.exists("p/a.bin")

    def test_access_denied_is_explained(self, s3_endpoint: str) -> None:
        from botocore.stub import Stubber

        client = make_s3_client(s3_endpoint)
        store = S3Store("locked", PREFIX, client)
        with Stubber(client) as stub:
            stub.add_client_error("put_object", service_error_code="AccessDenied", http_status_code=403)
            with pytest.raises(MlpipeError, match="access denied") as caught:
                store.put_bytes("p/a.bin", b"a")
        message = str(caught.value)
        assert s3_endpoint in message
        assert "s3://locked/team/mlpipe/p/a.bin" in message
