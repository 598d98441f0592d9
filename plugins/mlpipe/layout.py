"""Every artifact key: where each stage keeps its files in the store, and the parser that reads a key back.

The store's layout, relative to its root (a directory, or a bucket and prefix)::

    <pipeline>/runs/<run_key>/run.json                      the run's record
    <pipeline>/runs/<run_key>/extract/snapshot.parquet      the snapshot (+ snapshot.json, its record;
                                                            objects.json, an S3 source's objects)
    <pipeline>/runs/<run_key>/validate/...                  result.json, summary.json, data_docs/, reference.*
    <pipeline>/runs/<run_key>/features/...                  train.parquet, holdout.parquet, manifest.json
    <pipeline>/runs/<run_key>/train/<candidate>/...         model.joblib, result.json (reused.json)
    <pipeline>/runs/<run_key>/evaluate/...                  verdict.json, report/index.html
    <pipeline>/runs/<run_key>/promote/result.json           what promotion did
    <pipeline>/models/v<version>/<run_key>/model.joblib     a registered model version
    <pipeline>/monitor/<run_key>/...                        drift.json, report/index.html
    <pipeline>/score/<run_key>/result.json                  a batch scoring run
    <pipeline>/predictions/<run_key>/manifest.json          its predictions: the manifest names the
    <pipeline>/predictions/<run_key>/<attempt>/...          attempt to read (predictions, rejects .parquet)

Keys are relative, so the registry keeps them as they are: a store copied, moved or restored to another
root (directory, bucket or prefix) keeps every key. :func:`key_in_uri` finds the key at the end of an
absolute URI written before that (an old registry row, a record's ``*_uri``).

Pure string functions, standard library only: every layer may ask, and none formats a key itself.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from mlpipe.errors import MlpipeError

# Sections under a pipeline's folder.
RUNS = "runs"
MODELS = "models"
MONITOR = "monitor"
SCORE = "score"
PREDICTIONS = "predictions"
SECTIONS = (RUNS, MODELS, MONITOR, SCORE, PREDICTIONS)

# A training run's stage folders, and its record beside them.
STAGES = ("extract", "validate", "features", "train", "evaluate", "promote")
RUN_FILE = "run.json"

# File names, relative to the folder that holds them.
SNAPSHOT_FILE = "snapshot.parquet"
SNAPSHOT_RECORD_FILE = "snapshot.json"
OBJECTS_FILE = "objects.json"  # an S3 source's objects, listed before they are read
RESULT_FILE = "result.json"
SUMMARY_FILE = "summary.json"
DATA_DOCS_DIR = "data_docs"
REFERENCE_JSON_FILE = "reference.json"
REFERENCE_HTML_FILE = "reference.html"
TRAIN_FILE = "train.parquet"
HOLDOUT_FILE = "holdout.parquet"
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.joblib"
REUSED_FILE = "reused.json"
VERDICT_FILE = "verdict.json"
REPORT_DIR = "report"
INDEX_FILE = "index.html"
DRIFT_FILE = "drift.json"
PREDICTIONS_FILE = "predictions.parquet"
REJECTS_FILE = "rejects.parquet"

# A run's files the run index keeps track of, relative to the run's folder (the views link to them).
SNAPSHOT_RECORD = f"extract/{SNAPSHOT_RECORD_FILE}"
VALIDATION_SUMMARY = f"validate/{SUMMARY_FILE}"
VERDICT = f"evaluate/{VERDICT_FILE}"
EVALUATION_REPORT = f"evaluate/{REPORT_DIR}/{INDEX_FILE}"
PROMOTION = f"promote/{RESULT_FILE}"
INDEXED_FILES = (RUN_FILE, SNAPSHOT_RECORD, VERDICT, EVALUATION_REPORT, VALIDATION_SUMMARY, PROMOTION)
# A monitor run's report, relative to its folder.
DRIFT_REPORT = f"{REPORT_DIR}/{INDEX_FILE}"

# A pipeline's name: mlpipe.spec.NAME_PATTERN is this, anchored (the layout sits below the spec; a test
# holds them equal).
PIPELINE_PATTERN = r"[a-z][a-z0-9_]{0,62}"
_PIPELINE = re.compile(PIPELINE_PATTERN)
# One part of a key (mlpipe.storage.check_key accepts keys of these; fullmatch: "$" would allow a newline).
KEY_PART = re.compile(r"[A-Za-z0-9._=+-][A-Za-z0-9._=+@-]*")
_VERSION = re.compile(r"v([1-9][0-9]*)")


class LayoutError(MlpipeError, ValueError):
    """A key that is not where the layout puts anything."""


def run_key(run_id: str) -> str:
    """A store-safe key for an Airflow run id (``manual__2026-01-01T00:00:00+00:00`` and the like)."""
    cleaned = re.sub(r"[^A-Za-z0-9._=-]+", "_", run_id).strip("._")
    if not cleaned:
        raise LayoutError(f"run id {run_id!r} has no usable characters for an artifact key")
    return cleaned


def _join(*parts: str) -> str:
    return "/".join(parts)


def beside(key: str, name: str) -> str:
    """The file ``name`` in the folder that holds ``key`` (a snapshot's record beside the snapshot)."""
    folder, _, _ = key.rpartition("/")
    return _join(folder, name) if folder else name


# -- training runs ----------------------------------------------------------------------------------


def runs_prefix(pipeline: str) -> str:
    return _join(pipeline, RUNS)


def run_prefix(pipeline: str, run_key: str) -> str:
    return _join(pipeline, RUNS, run_key)


def run_file(pipeline: str, run_key: str, name: str) -> str:
    """A file of the run, ``name`` relative to the run's folder (e.g. :data:`VERDICT`)."""
    return _join(run_prefix(pipeline, run_key), name)


def run_record(pipeline: str, run_key: str) -> str:
    return run_file(pipeline, run_key, RUN_FILE)


def snapshot_key(pipeline: str, run_key: str) -> str:
    return run_file(pipeline, run_key, f"extract/{SNAPSHOT_FILE}")


def snapshot_record(pipeline: str, run_key: str) -> str:
    return run_file(pipeline, run_key, SNAPSHOT_RECORD)


def validation_prefix(pipeline: str, run_key: str) -> str:
    """Validation's folder: ``result.json``, ``summary.json``, ``data_docs/``, ``reference.{json,html}``."""
    return run_file(pipeline, run_key, "validate")


def validation_summary(pipeline: str, run_key: str) -> str:
    return run_file(pipeline, run_key, VALIDATION_SUMMARY)


def features_prefix(pipeline: str, run_key: str) -> str:
    """The splits' folder: ``train.parquet``, ``holdout.parquet``, ``manifest.json``."""
    return run_file(pipeline, run_key, "features")


def features_manifest(pipeline: str, run_key: str) -> str:
    return _join(features_prefix(pipeline, run_key), MANIFEST_FILE)


def candidate_prefix(pipeline: str, run_key: str, candidate: str) -> str:
    """A candidate's folder: ``model.joblib``, ``result.json`` (and ``reused.json`` when reused)."""
    return run_file(pipeline, run_key, f"train/{candidate}")


def candidate_model(pipeline: str, run_key: str, candidate: str, name: str = MODEL_FILE) -> str:
    return _join(candidate_prefix(pipeline, run_key, candidate), name)


def candidate_result(pipeline: str, run_key: str, candidate: str) -> str:
    return _join(candidate_prefix(pipeline, run_key, candidate), RESULT_FILE)


def candidate_reused(pipeline: str, run_key: str, candidate: str) -> str:
    return _join(candidate_prefix(pipeline, run_key, candidate), REUSED_FILE)


def verdict_key(pipeline: str, run_key: str) -> str:
    return run_file(pipeline, run_key, VERDICT)


def report_prefix(pipeline: str, run_key: str) -> str:
    """The evaluation report's folder (``index.html`` and its plots)."""
    return run_file(pipeline, run_key, f"evaluate/{REPORT_DIR}")


def evaluation_report(pipeline: str, run_key: str) -> str:
    return run_file(pipeline, run_key, EVALUATION_REPORT)


def promotion_key(pipeline: str, run_key: str) -> str:
    return run_file(pipeline, run_key, PROMOTION)


# -- model versions, monitoring, scoring ------------------------------------------------------------


def models_prefix(pipeline: str) -> str:
    return _join(pipeline, MODELS)


def model_prefix(pipeline: str, version: int, run_key: str) -> str:
    # The run is part of the key so that two runs racing for the same version number never write
    # the same object: the loser's copy is its own, and removing it cannot touch the winner's.
    return _join(pipeline, MODELS, f"v{int(version)}", run_key)


def model_key(pipeline: str, version: int, run_key: str, name: str = MODEL_FILE) -> str:
    """A registered version's model file: the key the registry records."""
    return _join(model_prefix(pipeline, version, run_key), name)


def monitor_prefix(pipeline: str, run_key: str) -> str:
    """A drift check's folder: ``drift.json`` and ``report/`` (``index.html`` and its plots)."""
    return _join(pipeline, MONITOR, run_key)


def drift_report(pipeline: str, run_key: str) -> str:
    return _join(monitor_prefix(pipeline, run_key), DRIFT_REPORT)


def score_result(pipeline: str, run_key: str) -> str:
    return _join(pipeline, SCORE, run_key, RESULT_FILE)


def predictions_prefix(pipeline: str, run_key: str | None = None) -> str:
    """Where scoring keeps predictions: every run's (``run_key`` None) or one run's."""
    base = _join(pipeline, PREDICTIONS)
    return base if run_key is None else _join(base, run_key)


def predictions_manifest(pipeline: str, run_key: str) -> str:
    """A scored window's manifest: the commit that names the attempt readers read."""
    return _join(predictions_prefix(pipeline, run_key), MANIFEST_FILE)


def predictions_file(pipeline: str, run_key: str, attempt: str, name: str) -> str:
    """One attempt's file (:data:`PREDICTIONS_FILE`, :data:`REJECTS_FILE`) of a scored window."""
    return _join(predictions_prefix(pipeline, run_key), attempt, name)


# -- reading keys back --------------------------------------------------------------------------------


class ArtifactKey(NamedTuple):
    """A key taken apart: :func:`format_key` puts it back together."""

    pipeline: str
    section: str  # one of SECTIONS
    run_key: str | None  # None: a section's own folder (or a model version without its run's folder)
    version: int | None = None  # model versions only
    path: str = ""  # below the run's (or the version's run's) folder; "" for the folder itself


def parse_key(key: str) -> ArtifactKey:
    """Take ``key`` apart along the layout; :class:`LayoutError` when the layout puts nothing there.

    Strict on purpose (known sections, stage folders, ``v<N>``): :func:`key_in_uri` relies on it to
    find where a key starts inside a longer path.
    """
    parts = key.split("/")
    if any(not KEY_PART.fullmatch(p) or p in {".", ".."} for p in parts):
        raise LayoutError(f"{key!r} is not an artifact key: parts of [A-Za-z0-9._=+@-], no '..'")
    if len(parts) < 2 or not _PIPELINE.fullmatch(parts[0]) or parts[1] not in SECTIONS:
        raise LayoutError(f"{key!r} is not an artifact key: expected <pipeline>/<{'|'.join(SECTIONS)}>/...")
    pipeline, section, rest = parts[0], parts[1], parts[2:]
    if section == MODELS:
        if not rest:
            return ArtifactKey(pipeline, section, None)
        version = _VERSION.fullmatch(rest[0])
        if version is None:
            raise LayoutError(f"{key!r} is not an artifact key: a model version folder is v<number>")
        # v<N>/<run_key>/<file>; a version key written before the run's folder was added is v<N>/<file>.
        run = rest[1] if len(rest) > 2 else None
        return ArtifactKey(pipeline, section, run, int(version.group(1)), _join(*rest[2 if run else 1 :]))
    if not rest:
        return ArtifactKey(pipeline, section, None)
    run, below = rest[0], rest[1:]
    if section == RUNS and below and below[0] not in (*STAGES, RUN_FILE):
        raise LayoutError(f"{key!r} is not an artifact key: a run holds {RUN_FILE} and {', '.join(STAGES)}")
    if section == RUNS and below[:1] == [RUN_FILE] and len(below) > 1:
        raise LayoutError(f"{key!r} is not an artifact key: {RUN_FILE} is a file")
    if section == SCORE and below and below != [RESULT_FILE]:
        raise LayoutError(f"{key!r} is not an artifact key: a scoring run keeps {RESULT_FILE}")
    return ArtifactKey(pipeline, section, run, None, _join(*below))


def try_parse_key(key: str) -> ArtifactKey | None:
    """:func:`parse_key`, or None for a key the layout does not know (a stray file in a listing)."""
    try:
        return parse_key(key)
    except LayoutError:
        return None


def format_key(parsed: ArtifactKey) -> str:
    """The key :func:`parse_key` took apart."""
    parts = [parsed.pipeline, parsed.section]
    if parsed.version is not None:
        parts.append(f"v{parsed.version}")
    if parsed.run_key is not None:
        parts.append(parsed.run_key)
    if parsed.path:
        parts.append(parsed.path)
    return _join(*parts)


def key_in_uri(uri: str, pipeline: str | None = None) -> str | None:
    """The artifact key at the end of an absolute URI or path (None if there is none).

    ``file:///old/home/artifacts/p/models/v3/<run>/model.joblib`` gives ``p/models/v3/<run>/model.joblib``
    wherever the store is now: what an entry written before keys were kept means. The longest
    suffix that parses wins; with ``pipeline``, only that pipeline's keys count.
    """
    path = uri.split("://", 1)[1] if "://" in uri else uri
    parts = [p for p in path.split("/") if p]
    for start in range(len(parts) - 1):
        if pipeline is not None and parts[start] != pipeline:
            continue
        candidate = _join(*parts[start:])
        if try_parse_key(candidate) is not None:
            return candidate
    return None


def model_key_in_uri(uri: str, pipeline: str, version: int) -> str | None:
    """The key of model version ``version`` of ``pipeline`` at the end of ``uri`` (None if it names another)."""
    key = key_in_uri(uri, pipeline)
    parsed = None if key is None else parse_key(key)
    if parsed is None or parsed.section != MODELS or parsed.version != version or not parsed.path:
        return None
    return key
