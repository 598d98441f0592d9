"""Features: the split of a snapshot into train and holdout, persisted for training.

The feature transformer that training fits on train lives in mlpipe.stages.preprocess (it needs
scikit-learn; a time split does not, a random split imports only its ``train_test_split``). Models
saved before that move name ``mlpipe.stages.features.DatePartsEncoder``: :func:`__getattr__` still
finds it here, so they keep loading.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlpipe import layout
from mlpipe.contracts import FeatureSet
from mlpipe.errors import FeatureError
from mlpipe.layout import HOLDOUT_FILE, TRAIN_FILE
from mlpipe.spec import LoadedSpec, PipelineSpec
from mlpipe.stages.extract import read_snapshot
from mlpipe.storage import ArtifactStore

# What moved to mlpipe.stages.preprocess, found here on first use (pickled models name the encoder here).
_MOVED = ("DatePartsEncoder", "build_preprocessor", "MISSING_CATEGORY")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        from mlpipe.stages import preprocess

        return getattr(preprocess, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- the split -------------------------------------------------------------------------------------


def required_columns(spec: PipelineSpec) -> list[str]:
    cols = [*spec.features.columns, spec.target.column]
    if spec.split.method == "time" and spec.split.time_column not in cols:
        cols.append(spec.split.time_column)
    return cols


def check_frame(frame: pd.DataFrame, spec: PipelineSpec, source: str) -> None:
    """Refuse a frame the spec cannot be trained on, naming the columns."""
    missing = [c for c in required_columns(spec) if c not in frame.columns]
    if missing:
        raise FeatureError(
            f"{source} lacks column(s) {missing} that the spec needs (features/target/split); "
            f"it has {list(frame.columns)}"
        )
    if frame.empty:
        raise FeatureError(f"{source} has no rows")
    target = frame[spec.target.column]
    nulls = int(target.isna().sum())
    if nulls:
        raise FeatureError(f"{source}: target column {spec.target.column!r} has {nulls} null value(s)")
    if spec.target.task == "regression":
        if not pd.api.types.is_numeric_dtype(target):
            raise FeatureError(f"{source}: regression target {spec.target.column!r} is not numeric ({target.dtype})")
        return
    n_classes = target.nunique()
    if spec.target.task == "binary" and n_classes != 2:
        raise FeatureError(
            f"{source}: binary target {spec.target.column!r} must have exactly 2 classes, found {n_classes}: "
            f"{sorted(map(str, target.unique()))[:10]}"
        )
    if spec.target.task == "multiclass" and n_classes < 2:
        raise FeatureError(f"{source}: multiclass target {spec.target.column!r} has a single class")
    if spec.target.positive_class is not None and spec.target.positive_class not in set(target.unique()):
        raise FeatureError(
            f"{source}: positive_class {spec.target.positive_class!r} does not occur in {spec.target.column!r}"
        )


def time_columns(spec: PipelineSpec) -> list[str]:
    """Columns read as timestamps: the datetime features and a time split's column."""
    columns = [dt.column for dt in spec.features.datetime]
    if spec.split.method == "time" and spec.split.time_column not in columns:
        columns.append(spec.split.time_column)
    return columns


def parse_times(frame: pd.DataFrame, spec: PipelineSpec) -> dict[str, pd.Series]:
    """The time columns held as text, parsed once (UTC; unparseable values NaT), by column name."""
    return {
        column: pd.to_datetime(frame[column], utc=True, errors="coerce", format="mixed")
        for column in time_columns(spec)
        if column in frame.columns and frame[column].dtype.kind not in "fiuM"
    }


def split_frame(
    frame: pd.DataFrame, spec: PipelineSpec, parsed: dict[str, pd.Series] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of train and holdout. Time splits hold out the latest rows (equal timestamps
    stay on one side); random splits are seeded, and stratified for classification. ``parsed``: time
    columns already parsed (:func:`parse_times`)."""
    split = spec.split
    n = len(frame)
    if split.method == "time":
        stamps = (parsed or {}).get(split.time_column)
        if stamps is None:
            stamps = pd.to_datetime(frame[split.time_column], utc=True, errors="coerce", format="mixed")
        if stamps.isna().any():
            bad = frame.loc[stamps.isna(), split.time_column].head(3).tolist()
            raise FeatureError(f"split.time_column {split.time_column!r} has unparseable timestamps, e.g. {bad}")
        cut = stamps.quantile(1 - split.holdout_fraction)
        holdout = (stamps > cut).to_numpy()
        if holdout.all() or not holdout.any():
            raise FeatureError(
                f"time split on {split.time_column!r} left one side empty (all rows at one time?); use method: random"
            )
        return np.flatnonzero(~holdout), np.flatnonzero(holdout)
    from sklearn.model_selection import train_test_split

    stratify = frame[spec.target.column] if spec.target.task != "regression" else None
    idx = np.arange(n)
    try:
        train, holdout = train_test_split(
            idx, test_size=split.holdout_fraction, random_state=split.seed, stratify=stratify
        )
    except ValueError:
        train, holdout = train_test_split(idx, test_size=split.holdout_fraction, random_state=split.seed)
    return np.sort(train), np.sort(holdout)


def check_train_classes(frame: pd.DataFrame, spec: PipelineSpec, train: np.ndarray, holdout: np.ndarray) -> None:
    """A classifier needs two classes to learn from: a train part with one is a data error naming the split."""
    if spec.target.task == "regression":
        return
    target = frame[spec.target.column]
    train_counts = _class_counts(target.iloc[train])
    if len(train_counts) >= 2:
        return
    split = spec.split
    how = f"time split on {split.time_column!r}" if split.method == "time" else f"random split (seed {split.seed})"
    raise FeatureError(
        f"the {how} left the train part ({len(train)} rows) with a single class of target {spec.target.column!r}: "
        f"train {train_counts}, holdout {_class_counts(target.iloc[holdout])}, snapshot {_class_counts(target)}; "
        "a classifier needs both classes to learn: check the data of the training period, or change split"
    )


def _class_counts(target: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in target.value_counts().sort_index().items()}


def build_features(
    loaded: LoadedSpec, store: ArtifactStore, *, run_key: str, snapshot_key: str, snapshot_sha256: str
) -> FeatureSet:
    """Split the validated snapshot and persist train and holdout as Parquet (only needed columns)."""
    spec = loaded.spec
    started = time.perf_counter()
    prefix = layout.features_prefix(spec.name, run_key)
    frame = read_snapshot(store, snapshot_key, snapshot_sha256)
    check_frame(frame, spec, f"snapshot {store.uri(snapshot_key)}")
    frame = frame[required_columns(spec)]
    parsed = parse_times(frame, spec)
    train_idx, holdout_idx = split_frame(frame, spec, parsed)
    check_train_classes(frame, spec, train_idx, holdout_idx)
    # The splits keep the time columns as timestamps (naive UTC): training, tuning and scoring then
    # read them without parsing text again in every fit and score.
    frame = frame.assign(**{column: stamps.dt.tz_localize(None) for column, stamps in parsed.items()})
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mlpipe-features-") as tmp:
        for name, idx in ((TRAIN_FILE, train_idx), (HOLDOUT_FILE, holdout_idx)):
            path = Path(tmp) / name
            frame.iloc[idx].reset_index(drop=True).to_parquet(path, index=False, compression="zstd")
            out[name] = (store.put_file(f"{prefix}/{name}", path), len(idx))
    labels = {} if spec.target.task == "regression" else _class_counts(frame[spec.target.column])
    result = FeatureSet(
        train_key=out[TRAIN_FILE][0].key,
        train_sha256=out[TRAIN_FILE][0].sha256,
        train_rows=out[TRAIN_FILE][1],
        holdout_key=out[HOLDOUT_FILE][0].key,
        holdout_sha256=out[HOLDOUT_FILE][0].sha256,
        holdout_rows=out[HOLDOUT_FILE][1],
        columns=list(frame.columns),
        split=spec.split.method,
        label_counts=labels,
        seconds=round(time.perf_counter() - started, 3),
    )
    store.put_bytes(layout.features_manifest(spec.name, run_key), json.dumps(result.to_xcom(), indent=2).encode())
    return result


def read_split(store: ArtifactStore, key: str, sha256: str) -> pd.DataFrame:
    with store.local_copy(key, expected_sha256=sha256) as path:
        return pd.read_parquet(path)
