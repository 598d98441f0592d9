"""Tests of mlpipe.storage: LocalStore's primitives, atomic and write-once publish, keys and integrity."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from mlpipe.errors import ArtifactIntegrityError, MlpipeError
from mlpipe.storage import LocalStore, StoredArtifact, check_key, run_key, sha256_file


def visible_files(root: Path) -> list[str]:
    """Every file on disk under ``root``, hidden ones included."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


class TestLocalStore:
    def test_put_get_exists_list(self, store: LocalStore, tmp_path: Path) -> None:
        art = store.put_bytes("p/runs/r1/extract/a.bin", b"hello")

        assert isinstance(art, StoredArtifact)
        assert art.key == "p/runs/r1/extract/a.bin"
        assert art.sha256 == hashlib.sha256(b"hello").hexdigest()
        assert art.size == 5
        assert art.uri == store.uri(art.key) == f"file://{store.root}/p/runs/r1/extract/a.bin"
        assert store.exists(art.key)
        assert not store.exists("p/runs/r1/extract/b.bin")
        assert not store.exists("p/runs")  # a folder is not an artifact
        assert store.get_bytes(art.key) == b"hello"
        assert store.sha256(art.key) == art.sha256

        dest = store.get_file(art.key, tmp_path / "out" / "copy.bin")
        assert dest.read_bytes() == b"hello"
        with pytest.raises(FileNotFoundError):
            store.get_file("p/none.bin", tmp_path / "x")

        store.put_bytes("p/runs/r1/train/m.bin", b"m")
        store.put_bytes("p/runs/r2/extract/a.bin", b"a")
        assert store.list("p/runs/r1") == ["p/runs/r1/extract/a.bin", "p/runs/r1/train/m.bin"]
        assert store.list("p/runs/r1/extract/a.bin") == ["p/runs/r1/extract/a.bin"]
        assert store.list("p/runs/r9") == []
        assert store.list("p") == sorted(
            ["p/runs/r1/extract/a.bin", "p/runs/r1/train/m.bin", "p/runs/r2/extract/a.bin"]
        )

    def test_put_file_replaces(self, store: LocalStore) -> None:
        store.put_bytes("k/a.txt", b"one")
        art = store.put_bytes("k/a.txt", b"two")

        assert store.get_bytes("k/a.txt") == b"two"
        assert art.sha256 == hashlib.sha256(b"two").hexdigest()

    def test_delete_prefix(self, store: LocalStore) -> None:
        for key in ("p/runs/r1/a", "p/runs/r1/b/c", "p/runs/r10/a", "p/models/v1/m"):
            store.put_bytes(key, b"x")

        assert store.delete_prefix("p/runs/r1") == 2
        assert store.list("p") == ["p/models/v1/m", "p/runs/r10/a"]  # r10 is not under r1
        assert store.delete_prefix("p/models/v1/m") == 1
        assert store.delete_prefix("p/absent") == 0
        assert store.list("p") == ["p/runs/r10/a"]

    def test_put_tree(self, store: LocalStore, tmp_path: Path) -> None:
        site = tmp_path / "site"
        (site / "css").mkdir(parents=True)
        (site / "index.html").write_text("<html/>")
        (site / "css" / "a.css").write_text("p{}")
        (site / "plot.png").write_bytes(b"png")

        arts = store.put_tree("p/runs/r1/report", site)

        # The page goes last: whoever can read it can read what it refers to.
        assert [a.key for a in arts] == [
            "p/runs/r1/report/css/a.css",
            "p/runs/r1/report/plot.png",
            "p/runs/r1/report/index.html",
        ]

    def test_publish_leaves_no_temp_files(self, store: LocalStore, tmp_path: Path) -> None:
        src = tmp_path / "big.bin"
        src.write_bytes(b"z" * (3 << 20))  # several copy blocks

        store.put_file("p/x/big.bin", src)
        store.put_file("p/x/big.bin", src)
        store.put_file_once("p/x/once.bin", src)
        store.put_file_once("p/x/once.bin", src)
        with pytest.raises(ArtifactIntegrityError):
            store.put_bytes("p/x/other.bin", b"1")
            store.put_file_once("p/x/other.bin", src)

        assert visible_files(store.root) == ["p/x/big.bin", "p/x/once.bin", "p/x/other.bin"]
        assert store.sha256("p/x/big.bin") == sha256_file(src)

    def test_readers_never_see_a_partial_artifact(self, store: LocalStore, tmp_path: Path) -> None:
        old, new = b"a" * (2 << 20), b"b" * (2 << 20)
        src = tmp_path / "new.bin"
        src.write_bytes(new)
        store.put_bytes("p/blob", old)
        seen: set[bytes] = set()
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                data = store.path("p/blob").read_bytes()
                seen.add(hashlib.sha256(data).digest())

        reader = threading.Thread(target=read)
        reader.start()
        try:
            for _ in range(10):
                store.put_file("p/blob", src)
                store.put_bytes("p/blob", old)
        finally:
            stop.set()
            reader.join()

        assert seen <= {hashlib.sha256(old).digest(), hashlib.sha256(new).digest()}
        assert store.list("p") == ["p/blob"]

    def test_put_file_once(self, store: LocalStore, tmp_path: Path) -> None:
        same = tmp_path / "same.bin"
        same.write_bytes(b"model-bytes")
        first = store.put_file_once("p/models/v1/model.joblib", same)

        again = store.put_file_once("p/models/v1/model.joblib", same)
        assert again.sha256 == first.sha256

        other = tmp_path / "other.bin"
        other.write_bytes(b"different")
        with pytest.raises(ArtifactIntegrityError, match="already exists with other content"):
            store.put_file_once("p/models/v1/model.joblib", other)
        assert store.get_bytes("p/models/v1/model.joblib") == b"model-bytes"

    def test_local_copy_verifies_sha256(self, store: LocalStore) -> None:
        art = store.put_bytes("p/runs/r1/extract/snapshot.parquet", b"original bytes")
        with store.local_copy(art.key, expected_sha256=art.sha256) as path:
            assert path.read_bytes() == b"original bytes"

        store.path(art.key).write_bytes(b"corrupted bytes")

        with (
            pytest.raises(ArtifactIntegrityError, match="does not match its recorded sha256"),
            store.local_copy(art.key, expected_sha256=art.sha256),
        ):
            pass
        with pytest.raises(FileNotFoundError), store.local_copy("p/absent"):
            pass

    def test_key_of_keys_and_uris(self, store: LocalStore) -> None:
        art = store.put_bytes("p/models/v3/manual__2026-01-01T00_00_00_00_00/model.joblib", b"m")

        assert store.key_of(art.key) == art.key
        assert store.key_of(art.uri) == art.key
        assert store.key_of(store.uri(art.key)) == art.key
        # Written where the store used to be (copied, moved, restored): the key at its end, read here.
        assert store.key_of("file:///elsewhere/p/models/v3/model.joblib") == "p/models/v3/model.joblib"
        assert LocalStore(store.root.parent / "other").key_of(art.uri) == art.key
        with pytest.raises(FileNotFoundError, match=r"not in this store .* names no artifact key"):
            store.key_of("file:///elsewhere/notes/model.joblib")
        with pytest.raises(MlpipeError, match="invalid artifact key"):
            store.key_of("p/../../etc/passwd")
        assert store.uri_of(art.key) == art.uri
        assert store.uri_of("file:///elsewhere/notes/model.joblib") == "file:///elsewhere/notes/model.joblib"


class TestKeys:
    @pytest.mark.parametrize(
        "key",
        [
            "",
            "/abs/path",
            "..",
            "../escape",
            "a/../../escape",
            "a/..",
            "a b",
            "a\\b",
            "a/~/b",
            "a/b\n",
            "a\nb",
            "a/\x00",
            "@at-first",
            "é",
            "a/*",
        ],
    )
    def test_refused(self, store: LocalStore, key: str) -> None:
        with pytest.raises(MlpipeError, match="invalid artifact key"):
            check_key(key)
        with pytest.raises(MlpipeError, match="invalid artifact key"):
            store.put_bytes(key, b"x")
        assert not store.root.exists() or visible_files(store.root) == []

    @pytest.mark.parametrize(
        ("key", "normal"),
        [("a/b.parquet", "a/b.parquet"), ("a//b", "a/b"), ("p/v1/x=1+y@z-w", "p/v1/x=1+y@z-w")],
    )
    def test_accepted(self, key: str, normal: str) -> None:
        assert check_key(key) == normal

    @pytest.mark.parametrize(
        ("run_id", "key"),
        [
            ("manual__2026-01-01T00:00:00+00:00", "manual__2026-01-01T00_00_00_00_00"),
            ("scheduled__2026-03-01T02:00:00+00:00", "scheduled__2026-03-01T02_00_00_00_00"),
            ("asset_triggered__2026-01-01T00:00:00.123456+00:00", "asset_triggered__2026-01-01T00_00_00.123456_00_00"),
            ("../../etc/passwd", "etc_passwd"),
            ("my run/with spaces", "my_run_with_spaces"),
        ],
    )
    def test_run_key_is_a_safe_key_part(self, run_id: str, key: str) -> None:
        assert run_key(run_id) == key
        assert check_key(f"p/runs/{run_key(run_id)}/x") == f"p/runs/{key}/x"

    def test_run_key_refuses_an_empty_result(self) -> None:
        with pytest.raises(MlpipeError, match="no usable characters"):
            run_key("::..")
