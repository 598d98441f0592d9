"""Batch scoring: the champion's predictions for the rows of the score query it has not scored yet.

One scoring run is one *window*, identified by its run key and bounded by its as-of time (the run's
logical date, else its run-after time): the score query is bound to ``:as_of`` as the training query
is. The window's rows are read in chunks into local Parquet files first (so the source is read once,
in one statement, and no read lock is held while the predictions are written), then checked, scored
and written chunk by chunk in one commit (see :mod:`mlpipe.stages.predictions`): memory follows
``score.chunk_rows``, not the table, plus 8 bytes per integer key scored (the keys the champion
scored before, and those of this window, held in a :class:`~mlpipe.stages.predictions.KeySet`).

Which rows are scored: every row of the query whose key the current champion has not scored in
another window. Predictions are kept per (key, model version), so a new champion scores every row
again, beside its predecessor's predictions; a champion that comes back (a rollback) scores only
what it had not seen; a re-run of a window replaces that window's rows.

Rows that break the spec's feature contract are set aside with their reasons, never scored: a null
or non-integer key (for integer keys), a key seen twice in the window, a numeric feature that is
not a finite number, a timestamp that does not parse, and, with ``score.missing: reject``, a null in
any feature (with the default ``impute``, nulls are filled as in training). A query that lacks a
feature or the key column fails the run with the columns named.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import sqlalchemy as sa

from mlpipe import layout
from mlpipe.contracts import ScoreResult
from mlpipe.errors import FeatureError, MlpipeError
from mlpipe.registry import Registry
from mlpipe.sources.chunks import frame_to_arrow
from mlpipe.sources.sql import bind_time, query_error, utc_session
from mlpipe.spec import LoadedSpec, PipelineSpec, ScoreSpec
from mlpipe.sqltext import executable
from mlpipe.stages.predict import predict
from mlpipe.stages.predictions import KeySet, ParquetSink, TableSink, Window
from mlpipe.stages.train import load_model
from mlpipe.storage import ArtifactStore


class Stopwatch:
    """Seconds a window spends per phase: read (the query, spooled), keys (what the champion scored
    before), check (the contract, keys), predict (the model alone), write (inserts), commit."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def rounded(self) -> dict[str, float]:
        return {name: round(value, 3) for name, value in self.seconds.items()}


def score_spec(loaded: LoadedSpec) -> ScoreSpec:
    if loaded.spec.score is None:
        raise MlpipeError(f"pipeline {loaded.name!r} has no score section in {loaded.path}")
    return loaded.spec.score


def predictions_sink(loaded: LoadedSpec, store: ArtifactStore, target: sa.Engine | None) -> TableSink | ParquetSink:
    """Where the spec's predictions go; ``target`` is the database of table output."""
    score = score_spec(loaded)
    if score.output == "parquet":
        return ParquetSink(store, pipeline=loaded.name, key=score.key)
    if target is None:
        raise MlpipeError("table output needs a target database engine")
    return TableSink(
        target,
        table=score.table or f"{loaded.name}_predictions",
        rejects_table=score.rejects_table or f"{loaded.name}_prediction_rejects",
        key=score.key,
    )


def score_window(
    loaded: LoadedSpec,
    store: ArtifactStore,
    registry: Registry,
    source: sa.Engine,
    target: sa.Engine | None,
    *,
    run_id: str,
    run_key: str,
    as_of: datetime,
) -> ScoreResult:
    """Score the window's rows the champion has not scored yet, replacing what the window held."""
    spec, score = loaded.spec, score_spec(loaded)
    started = time.perf_counter()
    as_of = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
    champion = registry.champion(spec.name)
    if champion is None:
        return ScoreResult(spec.name, run_key, "no_champion", None, as_of.isoformat(), 0, 0, 0, 0, {}, None, 0.0)
    # load_model checks the artifact's sha256 against the registry before unpickling anything.
    model = load_model(store, store.key_of(champion.artifact_key), champion.artifact_sha256)
    sink = predictions_sink(loaded, store, target)
    window = Window(run_key=run_key, run_id=run_id, model_version=champion.version, as_of=as_of)
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    watch = Stopwatch()
    with tempfile.TemporaryDirectory(prefix="mlpipe-score-") as tmp:
        with watch.phase("read"):
            chunks = spool_rows(loaded, source, as_of=as_of, folder=Path(tmp))
        with sink.window(window, prediction_kind=prediction_kind(spec, model)) as out:
            with watch.phase("keys"):
                done, seen = out.scored_keys(), KeySet()
            key_kind = out.key_kind
            for path in chunks:
                with watch.phase("read"):
                    frame = pq.read_table(path).to_pandas()
                check_columns(loaded, frame)
                key_kind = key_kind or infer_key_kind(frame[score.key])
                counts["input"] += len(frame)
                predictions, rejects, skipped = score_chunk(spec, model, frame, window, key_kind, done, seen, watch)
                with watch.phase("write"):
                    out.write(predictions, rejects)
                counts["scored"] += len(predictions)
                counts["already"] += skipped
                counts["rejected"] += len(rejects)
                for reason in rejects["reason"]:
                    reasons.update(reason.split("; "))
            committing = time.perf_counter()
        watch.seconds["commit"] += time.perf_counter() - committing
    result = ScoreResult(
        pipeline=spec.name,
        run_key=run_key,
        status="scored",
        model_version=champion.version,
        as_of=as_of.isoformat(),
        input_rows=counts["input"],
        scored=counts["scored"],
        already_scored=counts["already"],
        rejected=counts["rejected"],
        reject_reasons=dict(reasons.most_common()),
        output=sink.describe()
        if isinstance(sink, TableSink)
        else store.uri(layout.predictions_prefix(spec.name, run_key)),
        seconds=round(time.perf_counter() - started, 3),
        timings=watch.rounded(),
    )
    store.put_bytes(layout.score_result(spec.name, run_key), json.dumps(result.to_xcom(), indent=2).encode())
    return result


def spool_rows(loaded: LoadedSpec, engine: sa.Engine, *, as_of: datetime, folder: Path) -> list[Path]:
    """Run the score query bound to ``as_of`` and keep its rows as one local Parquet file per chunk.

    Each chunk is converted as extraction converts it (a column of mixed types becomes text), and
    each file has its own schema, so one odd value makes its rows rejects, not the run a failure.
    """
    score = score_spec(loaded)
    text, params = executable(
        loaded.score_query_text(), {**loaded.spec.source.params, "as_of": bind_time(as_of, engine.dialect.name)}
    )
    query = sa.text(text)
    paths: list[Path] = []
    with engine.connect() as conn:
        utc_session(conn)
        conn = conn.execution_options(stream_results=True, yield_per=score.chunk_rows)
        try:
            for i, frame in enumerate(pd.read_sql(query, conn, params=params, chunksize=score.chunk_rows)):
                path = folder / f"chunk-{i:06d}.parquet"
                pq.write_table(frame_to_arrow(frame), path)
                paths.append(path)
        except (sa.exc.SQLAlchemyError, pd.errors.DatabaseError) as exc:
            raise query_error(exc, loaded.score_query_path or loaded.query_path, engine) from None
    return paths


def check_columns(loaded: LoadedSpec, frame: pd.DataFrame) -> None:
    """Refuse a score query that lacks the key or a feature: no row of it could be scored."""
    needed = [score_spec(loaded).key, *loaded.spec.features.columns]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise FeatureError(
            f"score query {loaded.score_query_path or loaded.query_path} returns no column(s) {missing} "
            f"that the spec needs (score.key and the features); it returns {list(frame.columns)}"
        )


def prediction_kind(spec: PipelineSpec, model: Any) -> str:
    """'int', 'float' or 'str': the type of the prediction column, from the model's classes."""
    if spec.target.task == "regression":
        return "float"
    kind = np.asarray(model.classes_).dtype.kind
    return "int" if kind in "biu" else "float" if kind == "f" else "str"


def infer_key_kind(keys: pd.Series) -> str:
    """'int' for integer keys (also floats holding whole numbers, as NULLs make them), else 'str'."""
    values = keys.dropna()
    if pd.api.types.is_integer_dtype(keys.dtype) and not pd.api.types.is_bool_dtype(keys.dtype):
        return "int"
    if pd.api.types.is_float_dtype(keys.dtype) and len(values) and bool((values % 1 == 0).all()):
        return "int"
    return "str"


class _Reasons:
    """Reasons a chunk's rows are set aside, collected check by check (vectorised)."""

    def __init__(self, index: pd.Index) -> None:
        self.text = pd.Series("", index=index, dtype=object)

    def add(self, mask: Any, reason: str) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            current = self.text[mask]
            self.text[mask] = np.where(current == "", reason, current + "; " + reason)

    @property
    def bad(self) -> np.ndarray:
        return (self.text != "").to_numpy()


@dataclass
class CheckedChunk:
    """A chunk after the feature contract: what the model takes, the keys, and why rows are set aside."""

    rows: pd.DataFrame  # the feature columns, numbers as floats
    keys: pd.Series  # int64 (0 where the key is unusable) or text
    shown_keys: pd.Series  # the keys as rejects show them: ints, text, or None
    reasons: _Reasons


def check_rows(spec: PipelineSpec, frame: pd.DataFrame, key_kind: str) -> CheckedChunk:
    """Check every row of a chunk against the spec's feature contract (see the module docstring)."""
    score = spec.score
    assert score is not None
    feats = spec.features
    reasons = _Reasons(frame.index)
    rows = frame[[*feats.columns]].copy()
    raw_keys = frame[score.key]
    reasons.add(raw_keys.isna(), "key: null")
    if key_kind == "int":
        numbers = pd.to_numeric(raw_keys, errors="coerce")
        whole = numbers.notna() & np.isfinite(numbers) & (numbers % 1 == 0)
        reasons.add(raw_keys.notna() & ~whole, "key: not an integer")
        keys = numbers.where(whole, 0).astype("int64")
        shown = keys.astype(object).where(whole, raw_keys.astype(object))
    else:
        keys = raw_keys.where(raw_keys.isna(), raw_keys.astype(str))
        shown = keys.astype(object)
    for column in feats.numeric:
        values = rows[column]
        numbers = pd.to_numeric(values, errors="coerce").astype("float64")
        reasons.add(values.notna() & numbers.isna(), f"{column}: not a number")
        reasons.add(np.isinf(numbers), f"{column}: not a finite number")
        rows[column] = numbers
    for dt in feats.datetime:
        values = rows[dt.column]
        reasons.add(values.notna() & _timestamps(values).isna(), f"{dt.column}: unparseable timestamp")
    if score.missing == "reject":
        for column in feats.columns:
            reasons.add(frame[column].isna(), f"{column}: missing")
    return CheckedChunk(rows, keys, shown.where(raw_keys.notna(), None), reasons)


def _timestamps(values: pd.Series) -> pd.Series:
    """Parsed as the model's DatePartsEncoder parses them (numbers: ns since the epoch; text: any format)."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return pd.to_datetime(values.astype("float64"), unit="ns", utc=True, errors="coerce")
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values
    text = values.astype(object)
    # ISO 8601 first (fast, and what databases print); anything else through the encoder's mixed parser.
    stamps = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    retry = stamps.isna() & text.notna()
    if retry.any():
        stamps[retry] = pd.to_datetime(text[retry], utc=True, errors="coerce", format="mixed")
    return stamps


def score_chunk(
    spec: PipelineSpec,
    model: Any,
    frame: pd.DataFrame,
    window: Window,
    key_kind: str,
    done: KeySet,
    seen: KeySet,
    watch: Stopwatch | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """One chunk: (predictions, rejects, rows skipped because the champion scored them in another window)."""
    score = spec.score
    assert score is not None
    watch = watch or Stopwatch()
    with watch.phase("check"):
        checked = check_rows(spec, frame, key_kind)
        reasons = checked.reasons
        valid = ~reasons.bad
        key_values = checked.keys.to_numpy()
        already = np.zeros(len(frame), dtype=bool)
        already[valid] = done.contains(key_values[valid])
        fresh = valid & ~already
        repeated = np.zeros(len(frame), dtype=bool)
        repeated[fresh] = seen.contains(key_values[fresh]) | pd.Series(key_values[fresh]).duplicated().to_numpy()
        reasons.add(repeated, "key: duplicate in this window")
        chosen = fresh & ~repeated
    with watch.phase("predict"):
        if chosen.any():
            answer = predict(spec, model, checked.rows[chosen])
            prediction, value = answer.prediction, answer.score
        else:  # scikit-learn refuses zero rows
            prediction, value = np.empty(0, dtype=object), np.empty(0, dtype="float64")
    with watch.phase("check"):
        stamp = pd.Timestamp(window.as_of)
        predictions = pd.DataFrame(
            {
                score.key: key_values[chosen],
                "model_version": window.model_version,
                "prediction": prediction,
                "score": value,
                "scored_at": stamp,
                "run_key": window.run_key,
            }
        )
        seen.add(key_values[chosen])
        bad = reasons.bad
        shown = checked.shown_keys[bad]
        records = frame.loc[bad, spec.features.columns].astype(object)
        records = records.where(records.notna(), None)
        records.insert(0, score.key, shown)
        rejects = pd.DataFrame(
            {
                "key": shown.map(lambda k: None if k is None else str(k)).to_numpy(dtype=object),
                "reason": reasons.text[bad].to_numpy(dtype=object),
                "record": [json.dumps(r, default=str) for r in records.to_dict("records")],
                "model_version": window.model_version,
                "scored_at": stamp,
                "run_key": window.run_key,
            }
        )
    return predictions, rejects, int(already.sum())


def read_result(store: ArtifactStore, pipeline: str, run_key: str) -> dict[str, Any] | None:
    key = layout.score_result(pipeline, run_key)
    return json.loads(store.get_bytes(key)) if store.exists(key) else None
