"""The artifact store: snapshots, features, models and reports, keyed by pipeline and run.

One interface, :class:`ArtifactStore`; :class:`LocalStore` keeps artifacts in a directory (the
embedded default), :class:`S3Store` in a bucket under a prefix. Writes are atomic: a reader sees
either nothing or the whole artifact, never a half-written file.

Keys are relative to the store's root and laid out by :mod:`mlpipe.layout`, so a store copied or
moved to another root keeps them.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from mlpipe import layout
from mlpipe.errors import ArtifactConflictError, ArtifactIntegrityError, InfrastructureError, MlpipeError
from mlpipe.layout import run_key as run_key  # where callers of the store have long found it

if TYPE_CHECKING:
    # Only for hints: boto3/botocore are heavy, and this module is imported where DAGs are parsed.
    from botocore.client import BaseClient

_CHUNK = 1 << 20


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
    bad_part = any(p in {".", ".."} or not layout.KEY_PART.fullmatch(p) for p in parts)
    if not key or key.startswith("/") or not parts or bad_part:
        raise MlpipeError(f"invalid artifact key {key!r}: use relative parts of [A-Za-z0-9._=+@-], no '..'")
    return "/".join(parts)


def sha256_file(path: Path) -> str:
    return _hash_file(path)[0]


def _hash_file(path: Path) -> tuple[str, int]:
    """The sha256 and size of a file, in one read."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


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

    @property
    def root_uri(self) -> str:
        """What every URI of this store starts with (``file:///.../artifacts/``, ``s3://bucket/prefix/``)."""
        return self.uri("x")[:-1]

    def key_of(self, entry: str) -> str:
        """The key behind a recorded location: a key (what the registry keeps), or a URI.

        A URI of this store gives its key; a URI written where the store used to be (before it was
        copied, moved or restored to this root, or the bucket's prefix changed) gives the artifact key
        at its end (:func:`mlpipe.layout.key_in_uri`), to be read here, sha256 checks and all.
        """
        if "://" not in entry:
            return check_key(entry)
        root = self.root_uri
        if entry.startswith(root):
            return check_key(entry[len(root) :])
        key = layout.key_in_uri(entry)
        if key is None:
            raise FileNotFoundError(f"artifact {entry} is not in this store ({root}) and names no artifact key")
        return key

    def uri_of(self, entry: str) -> str:
        """Where a recorded location is in this store, to show (the entry itself if :meth:`key_of` cannot tell)."""
        try:
            return self.uri(self.key_of(entry))
        except (FileNotFoundError, MlpipeError):
            return entry

    def put_bytes(self, key: str, data: bytes) -> StoredArtifact:
        with tempfile.TemporaryDirectory(prefix="mlpipe-") as tmp:
            path = Path(tmp) / "blob"
            path.write_bytes(data)
            return self.put_file(key, path)

    def get_bytes(self, key: str) -> bytes:
        with self.local_copy(key) as path:
            return path.read_bytes()

    def put_tree(self, prefix: str, folder: Path) -> list[StoredArtifact]:
        """Publish every file under ``folder`` below ``prefix`` (a report site, say).

        HTML pages go last, so a reader who finds a page also finds the plots and files it refers to.
        """
        out = []
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        for path in sorted(files, key=lambda p: p.suffix.lower() in {".html", ".htm"}):
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
        raise _mismatch(label, expected, actual)


def _mismatch(label: str, expected: str, actual: str) -> ArtifactIntegrityError:
    return ArtifactIntegrityError(
        f"artifact {label} does not match its recorded sha256 (expected {expected}, found {actual}); "
        "it was changed or corrupted after it was written"
    )


def _already_exists(label: str, existing: str) -> ArtifactIntegrityError:
    return ArtifactIntegrityError(
        f"artifact {label} already exists with other content "
        f"(sha256 {existing}); refusing to overwrite a published artifact"
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
        # Temp files of this key that an earlier attempt left when it was killed mid-write: every write
        # of a key belongs to one task of one run, and Airflow runs its attempts one after the other.
        for stale in dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp"):
            stale.unlink(missing_ok=True)
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
                        raise _already_exists(dest.as_uri(), existing) from None
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
            self._prune_empty(base.parent)
            return 1
        if not base.is_dir():
            return 0
        count = sum(1 for p in base.rglob("*") if p.is_file())
        shutil.rmtree(base)
        self._prune_empty(base.parent)
        return count

    def _prune_empty(self, folder: Path) -> None:
        """Remove ``folder`` and its parents while they are empty (a model version folder left with nothing)."""
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone): stop there
                return
            folder = folder.parent

    def sha256(self, key: str) -> str:
        return sha256_file(self.path(key))


# S3 error codes: a conditional write whose condition failed (412), or raced another write (409).
_CONDITION_FAILED = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_DENIED = frozenset(
    {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)
_TRANSIENT = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "500", "503"})
_SHA256_META = "sha256"  # sent as x-amz-meta-sha256
_ONCE_ATTEMPTS = 4


def _error_code(exc: Exception) -> str:
    """The S3 error code of a botocore ClientError ("" for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class S3Store(ArtifactStore):
    """Artifacts as objects ``s3://<bucket>/<prefix>/<key>``, through a boto3 S3 client the caller builds.

    Each object carries its content's sha256 as user metadata (``x-amz-meta-sha256``), so
    :meth:`sha256` is a HEAD and downloads are checked against it. A PUT is all-or-nothing, so every
    write is atomic; write-once and compare-and-swap use S3 conditional writes (``If-None-Match: *``,
    ``If-Match: <etag>``). Files above ``multipart_threshold`` go up as a multipart upload.
    """

    def __init__(self, bucket: str, prefix: str, client: BaseClient, *, multipart_threshold: int = 64 << 20) -> None:
        if not bucket or "/" in bucket:
            raise MlpipeError(f"invalid S3 bucket name {bucket!r}: give the bare bucket name, without s3:// or '/'")
        self.bucket = bucket
        self.prefix = check_key(prefix.strip("/")) if prefix.strip("/") else ""
        self.client = client
        self.multipart_threshold = multipart_threshold

    def __repr__(self) -> str:
        return f"S3Store({self._root()!r})"

    @property
    def endpoint_url(self) -> str:
        return str(getattr(self.client.meta, "endpoint_url", None) or "the default AWS endpoint")

    def _root(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/" if self.prefix else f"s3://{self.bucket}/"

    def object_key(self, key: str) -> str:
        """The S3 object key behind an artifact key (the store's prefix + the checked key)."""
        key = check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return self._root() + check_key(key)

    # -- errors -------------------------------------------------------------------------------------

    @contextmanager
    def _s3_errors(self, action: str, key: str) -> Iterator[None]:
        """Turn botocore's errors into MlpipeErrors naming the endpoint, the bucket and the key."""
        from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
        from botocore.exceptions import ConnectionError as EndpointUnreachable

        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            where = f"{self.uri(key)} (endpoint {self.endpoint_url}, bucket {self.bucket!r})"
            code = _error_code(exc)
            if code == "NoSuchBucket":
                hint = "the bucket does not exist: create it, or fix the bucket in the S3 connection"
            elif code in _DENIED:
                hint = (
                    f"access denied ({code}): check the credentials of the S3 connection and that its policy "
                    "allows s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket on this bucket"
                )
            elif isinstance(exc, NoCredentialsError):
                hint = "no AWS credentials found: set them in the S3 connection (aws_default / mlpipe_s3)"
            elif isinstance(exc, EndpointUnreachable | HTTPClientError):
                hint = f"the endpoint is unreachable or failed mid-request ({exc}); check its URL and that it is up"
            else:
                hint = str(exc)
            # An unreachable endpoint or a server-side failure may pass: Airflow retries those; the rest
            # (no bucket, access denied, no credentials) need the user and fail at once.
            transient = isinstance(exc, EndpointUnreachable | HTTPClientError) or code in _TRANSIENT
            raise (InfrastructureError if transient else MlpipeError)(f"cannot {action} {where}: {hint}") from exc

    # -- primitives ---------------------------------------------------------------------------------

    def _head(self, key: str) -> dict[str, Any] | None:
        """HEAD the object, or None if there is none."""
        from botocore.exceptions import ClientError

        with self._s3_errors("read", key):
            try:
                return self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
            except ClientError as exc:
                if _error_code(exc) in _NOT_FOUND:
                    return None
                raise

    def exists(self, key: str) -> bool:
        # A LIST, not a HEAD: a HEAD answers a bare 404 for a missing bucket too, LIST names it.
        with self._s3_errors("read", key):
            return self._listed_first(self.object_key(key))

    def _listed_first(self, base: str) -> bool:
        """Whether object ``base`` exists: it sorts first among the keys that start with it."""
        first = self.client.list_objects_v2(Bucket=self.bucket, Prefix=base, MaxKeys=1).get("Contents", [])
        return bool(first) and first[0]["Key"] == base

    def etag(self, key: str) -> str | None:
        """The object's current ETag (None if absent), for :meth:`put_bytes_if_match`.

        Read the ETag *before* the content it guards: if the object changes in between, the
        conditional write fails instead of overwriting a value you never saw.
        """
        head = self._head(key)
        return None if head is None else str(head["ETag"])

    def _put_object(self, key: str, body: Any, sha: str, **conditions: str) -> dict[str, Any]:
        return self.client.put_object(
            Bucket=self.bucket, Key=self.object_key(key), Body=body, Metadata={_SHA256_META: sha}, **conditions
        )

    def put_file(self, key: str, path: Path) -> StoredArtifact:
        # The sha256 goes in a header, so it is computed before the upload starts.
        sha, size = _hash_file(path)
        with self._s3_errors("write", key):
            if size > self.multipart_threshold:
                self.client.upload_file(
                    str(path), self.bucket, self.object_key(key), ExtraArgs={"Metadata": {_SHA256_META: sha}}
                )
            else:
                with open(path, "rb") as fh:
                    self._put_object(key, fh, sha)
        return StoredArtifact(key=check_key(key), uri=self.uri(key), sha256=sha, size=size)

    def put_file_once(self, key: str, path: Path) -> StoredArtifact:
        """Publish with ``If-None-Match: *`` (one PUT: at most 5 GiB); an existing object must hold the same bytes."""
        from botocore.exceptions import ClientError

        sha, size = _hash_file(path)
        artifact = StoredArtifact(key=check_key(key), uri=self.uri(key), sha256=sha, size=size)
        for attempt in range(_ONCE_ATTEMPTS):
            with self._s3_errors("write", key), open(path, "rb") as fh:
                try:
                    self._put_object(key, fh, sha, IfNoneMatch="*")
                    return artifact
                except ClientError as exc:
                    if _error_code(exc) not in _CONDITION_FAILED:
                        raise
            existing = self._recorded_sha256(key)
            if existing is not None:
                if existing != sha:
                    raise _already_exists(self.uri(key), existing)
                return artifact
            # 409 (another write in flight) or deleted since the 412: try again shortly.
            time.sleep(0.05 * 2**attempt)
        raise InfrastructureError(
            f"cannot write {self.uri(key)} (endpoint {self.endpoint_url}): other writers kept racing for it "
            f"({_ONCE_ATTEMPTS} attempts); retry the task"
        )

    def put_bytes_if_match(self, key: str, data: bytes, etag: str | None) -> StoredArtifact:
        """Compare-and-swap a small object (a pointer): write only if its ETag is still ``etag``.

        ``etag=None`` means "only if absent" (``If-None-Match: *``). Raises
        :class:`~mlpipe.errors.ArtifactConflictError` when the object changed, appeared or vanished
        since ``etag`` was read: read it again (ETag first, see :meth:`etag`) and retry.
        """
        from botocore.exceptions import ClientError

        sha = hashlib.sha256(data).hexdigest()
        condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
        with self._s3_errors("write", key):
            try:
                self._put_object(key, data, sha, **condition)
            except ClientError as exc:
                code = _error_code(exc)
                # If-Match on a deleted object answers 404, which is a lost race too.
                if code in _CONDITION_FAILED or (etag is not None and code in _NOT_FOUND):
                    expected = "no object" if etag is None else f"ETag {etag}"
                    raise ArtifactConflictError(
                        f"artifact {self.uri(key)} changed since it was read (expected {expected}; S3 answered "
                        f"{code}); read it again and retry"
                    ) from None
                raise
        return StoredArtifact(key=check_key(key), uri=self.uri(key), sha256=sha, size=len(data))

    def get_file(self, key: str, dest: Path) -> Path:
        """Download to ``dest`` (atomically), checking the bytes against the recorded sha256 on the way."""
        from botocore.exceptions import ClientError

        with self._s3_errors("read", key):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
            except ClientError as exc:
                if _error_code(exc) in _NOT_FOUND:
                    raise FileNotFoundError(f"no artifact {self.uri(key)}") from None
                raise
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
            try:
                digest = hashlib.sha256()
                with os.fdopen(fd, "wb") as out, closing(response["Body"]) as body:
                    for block in body.iter_chunks(_CHUNK):
                        digest.update(block)
                        out.write(block)
                recorded = response.get("Metadata", {}).get(_SHA256_META)
                if recorded is not None and recorded != digest.hexdigest():
                    raise _mismatch(self.uri(key), recorded, digest.hexdigest())
                os.replace(tmp_name, dest)
            finally:
                Path(tmp_name).unlink(missing_ok=True)
        return dest

    def _object_keys(self, prefix: str) -> list[str]:
        """Object keys of the artifact ``prefix`` itself and of everything below ``prefix/``."""
        base = self.object_key(prefix)
        with self._s3_errors("list", prefix):
            keys = [base] if self._listed_first(base) else []
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{base}/"):
                # Keys ending in '/' are folder markers some consoles create, not artifacts.
                keys.extend(o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/"))
        return keys

    def list(self, prefix: str) -> list[str]:
        skip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(k[skip:] for k in self._object_keys(prefix))

    def delete_prefix(self, prefix: str) -> int:
        keys = self._object_keys(prefix)
        with self._s3_errors("delete", prefix):
            for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
                batch = [{"Key": k} for k in keys[start : start + 1000]]
                response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
                if errors := response.get("Errors"):
                    listed = ", ".join(f"{e.get('Key')} ({e.get('Code')})" for e in errors[:5])
                    raise MlpipeError(
                        f"cannot delete {len(errors)} object(s) under {self.uri(prefix)} "
                        f"(endpoint {self.endpoint_url}): {listed}"
                    )
        return len(keys)

    def _recorded_sha256(self, key: str) -> str | None:
        """The sha256 recorded in the object's metadata, computed by download if it has none; None if absent."""
        head = self._head(key)
        if head is None:
            return None
        recorded = head.get("Metadata", {}).get(_SHA256_META)
        if recorded is not None:
            return str(recorded)
        # Written by another tool: no recorded hash, so read the bytes.
        with tempfile.TemporaryDirectory(prefix="mlpipe-") as tmp:
            return sha256_file(self.get_file(key, Path(tmp) / "blob"))

    def sha256(self, key: str) -> str:
        recorded = self._recorded_sha256(key)
        if recorded is None:
            raise FileNotFoundError(f"no artifact {self.uri(key)}")
        return recorded
