"""The artifact store: snapshots, features, models and reports, keyed by pipeline and run.

One interface, :class:`ArtifactStore`; :class:`LocalStore` keeps artifacts in a directory (the
embedded default), an S3 store implements the same methods. Writes are atomic: a reader sees
either nothing or the whole artifact, never a half-written file.

Layout: ``<pipeline>/runs/<run_key>/<stage>/...`` and ``<pipeline>/models/<version>/...``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mlpipe.errors import ArtifactIntegrityError, MlpipeError

_CHUNK = 1 << 20
# fullmatch, not match: "$" would also accept a trailing newline.
_KEY_PART = re.compile(r"[A-Za-z0-9._=+-][A-Za-z0-9._=+@-]*")


@dataclass(frozen=True)
class StoredArtifact:
    key: str
    uri: str
    sha256: str
    size: int

    def as_dict(self) -> dict[str, object]:
        return {"key": self.key, "uri": self.uri, "sha256": self.sha256, "size": self.size}


def check_key(key: str) -> str:
    """Keys are relative POSIX paths of safe parts; '..', absolute paths and odd characters are refused."""
    parts = PurePosixPath(key).parts
    bad_part = any(p in {".", ".."} or not _KEY_PART.fullmatch(p) for p in parts)
    if not key or key.startswith("/") or not parts or bad_part:
        raise MlpipeError(f"invalid artifact key {key!r}: use relative parts of [A-Za-z0-9._=+@-], no '..'")
    return "/".join(parts)


def run_key(run_id: str) -> str:
    """A store-safe key for an Airflow run id (``manual__2026-01-01T00:00:00+00:00`` and the like)."""
    cleaned = re.sub(r"[^A-Za-z0-9._=-]+", "_", run_id).strip("._")
    if not cleaned:
        raise MlpipeError(f"run id {run_id!r} has no usable characters for an artifact key")
    return cleaned


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


class ArtifactStore(ABC):
    """What every artifact store offers; keys are relative POSIX paths (see :func:`check_key`)."""

    @abstractmethod
    def uri(self, key: str) -> str: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def put_file(self, key: str, path: Path) -> StoredArtifact:
        """Publish a local file under ``key`` atomically (replacing any earlier version)."""

    @abstractmethod
    def put_file_once(self, key: str, path: Path) -> StoredArtifact:
        """Publish only if ``key`` does not exist; if it does with the same bytes, return it; else raise."""

    @abstractmethod
    def get_file(self, key: str, dest: Path) -> Path: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]: ...

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int: ...

    @abstractmethod
    def sha256(self, key: str) -> str: ...

    # -- built on the primitives ------------------------------------------------------------------

    def key_for_uri(self, uri: str) -> str:
        """The key behind a URI this store handed out (registry rows keep URIs)."""
        root = self.uri("x")[:-1]
        if not uri.startswith(root):
            raise FileNotFoundError(f"artifact {uri} is not in this store ({root})")
        return check_key(uri[len(root) :])

    def put_bytes(self, key: str, data: bytes) -> StoredArtifact:
        with tempfile.TemporaryDirectory(prefix="mlpipe-") as tmp:
            path = Path(tmp) / "blob"
            path.write_bytes(data)
            return self.put_file(key, path)

    def get_bytes(self, key: str) -> bytes:
        with self.local_copy(key) as path:
            return path.read_bytes()

    def put_tree(self, prefix: str, folder: Path) -> list[StoredArtifact]:
        """Publish every file under ``folder`` below ``prefix`` (a report site, say)."""
        out = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(folder).as_posix()
            out.append(self.put_file(f"{check_key(prefix)}/{rel}", path))
        return out

    @contextmanager
    def local_copy(self, key: str, expected_sha256: str | None = None) -> Iterator[Path]:
        """A local path with the artifact's bytes, verified against ``expected_sha256`` when given."""
        with tempfile.TemporaryDirectory(prefix="mlpipe-") as tmp:
            path = self.get_file(key, Path(tmp) / PurePosixPath(key).name)
            if expected_sha256 is not None:
                verify_sha256(path, expected_sha256, self.uri(key))
            yield path


def verify_sha256(path: Path, expected: str, label: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ArtifactIntegrityError(
            f"artifact {label} does not match its recorded sha256 (expected {expected}, found {actual}); "
            "it was changed or corrupted after it was written"
        )


class LocalStore(ArtifactStore):
    """Artifacts in a local directory; publish is write-to-temp + fsync + rename."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def uri(self, key: str) -> str:
        # Not Path.as_uri(): its percent-encoding would make URIs differ from keys.
        return f"file://{self.path(key)}"

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def _publish(self, key: str, src: Path, *, once: bool) -> StoredArtifact:
        dest = self.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                while block := inp.read(_CHUNK):
                    digest.update(block)
                    size += len(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            if once:
                try:
                    # link() fails if dest exists: the local form of S3's If-None-Match: *.
                    os.link(tmp, dest)
                except FileExistsError:
                    existing = sha256_file(dest)
                    if existing != sha:
                        raise ArtifactIntegrityError(
                            f"artifact {dest.as_uri()} already exists with other content "
                            f"(sha256 {existing}); refusing to overwrite a published artifact"
                        ) from None
            else:
                os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return StoredArtifact(key=check_key(key), uri=f"file://{dest}", sha256=sha, size=size)

    def put_file(self, key: str, path: Path) -> StoredArtifact:
        return self._publish(key, path, once=False)

    def put_file_once(self, key: str, path: Path) -> StoredArtifact:
        return self._publish(key, path, once=True)

    def get_file(self, key: str, dest: Path) -> Path:
        src = self.path(key)
        if not src.is_file():
            raise FileNotFoundError(f"no artifact {src.as_uri()}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return dest

    @contextmanager
    def local_copy(self, key: str, expected_sha256: str | None = None) -> Iterator[Path]:
        # The file is already local: hand out its path instead of copying (snapshots are large).
        path = self.path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no artifact {path.as_uri()}")
        if expected_sha256 is not None:
            verify_sha256(path, expected_sha256, path.as_uri())
        yield path

    def list(self, prefix: str) -> list[str]:
        base = self.path(prefix)
        if base.is_file():
            return [check_key(prefix)]
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file() and not p.name.endswith(".tmp")
        )

    def delete_prefix(self, prefix: str) -> int:
        base = self.path(prefix)
        if base.is_file():
            base.unlink()
            return 1
        if not base.is_dir():
            return 0
        count = sum(1 for p in base.rglob("*") if p.is_file())
        shutil.rmtree(base)
        return count

    def sha256(self, key: str) -> str:
        return sha256_file(self.path(key))


def open_store(root: Path | str | None = None) -> ArtifactStore:
    """The artifact store for this process: the local directory under MLPIPE_HOME unless told otherwise."""
    from mlpipe import config

    return LocalStore(root or config.default_store_root())
