"""Features: the split of a snapshot into train and holdout, and the feature pipeline fitted on train.

The feature transformer is part of the saved model (one scikit-learn ``Pipeline``), so scoring
applies exactly the features training used. This stage persists the split; training fits.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from mlpipe.contracts import FeatureSet
from mlpipe.errors import FeatureError
from mlpipe.spec import Encoding, LoadedSpec, PipelineSpec
from mlpipe.stages.extract import read_snapshot
from mlpipe.storage import ArtifactStore

MISSING_CATEGORY = "__missing__"
TRAIN_FILE = "train.parquet"
HOLDOUT_FILE = "holdout.parquet"


class DatePartsEncoder(TransformerMixin, BaseEstimator):
    """Calendar parts (month, day of week, hour...) of timestamp columns, taken in one time zone.

    Strings are parsed as timestamps (naive ones read as UTC); numbers as nanoseconds since the
    epoch. Unparseable values become NaN, left to a downstream imputer.
    """

    PARTS = ("year", "month", "day", "day_of_week", "day_of_year", "hour", "minute", "is_weekend")

    def __init__(self, parts: tuple[str, ...] = ("month", "day_of_week", "hour"), timezone: str = "UTC") -> None:
        self.parts = parts
        self.timezone = timezone

    def fit(self, X: Any, y: Any = None) -> DatePartsEncoder:
        unknown = [p for p in self.parts if p not in self.PARTS]
        if unknown or not self.parts:
            raise ValueError(f"parts must be a non-empty subset of {self.PARTS}, got {self.parts!r}")
        X = validate_data(self, X, dtype=None, ensure_all_finite=False, reset=True)
        self.n_parts_ = len(self.parts)
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "n_parts_")
        X = validate_data(self, X, dtype=None, ensure_all_finite=False, reset=False)
        out = np.empty((X.shape[0], X.shape[1] * len(self.parts)), dtype=np.float64)
        for j in range(X.shape[1]):
            col = X[:, j]
            if col.dtype.kind == "M":
                # Timestamps already (build_features parses the column once, not every fit and score);
                # naive ones are UTC.
                stamps = pd.Series(col).dt.tz_localize("UTC")
            elif col.dtype.kind in "fiu":
                stamps = pd.to_datetime(pd.Series(col, dtype="float64"), unit="ns", utc=True, errors="coerce")
            else:
                stamps = pd.to_datetime(pd.Series(col, dtype="object"), utc=True, errors="coerce", format="mixed")
            # Naive local wall time: pandas computes each calendar field of an aware series through a
            # time zone lookup again, of a naive one directly.
            local = stamps.dt.tz_convert(self.timezone).dt.tz_localize(None)
            for k, part in enumerate(self.parts):
                out[:, j * len(self.parts) + k] = _date_part(local, part)
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "n_parts_")
        # sklearn's own check: input_features must match the names (and number) seen in fit.
        input_features = _check_feature_names_in(self, input_features)
        return np.asarray([f"{col}_{part}" for col in input_features for part in self.parts], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        return tags


def _date_part(local: pd.Series, part: str) -> np.ndarray:
    """One calendar part of ``local`` (naive local times): only that one is computed."""
    dt = local.dt
    if part == "is_weekend":
        values = dt.day_of_week.where(dt.day_of_week.isna(), dt.day_of_week >= 5)
    else:
        values = getattr(dt, part)
    return values.astype("float64").to_numpy()


def build_preprocessor(spec: PipelineSpec, encoding: Encoding) -> ColumnTransformer:
    """The feature transformer for one encoding; categorical columns come first in its output."""
    feats = spec.features
    impute_num = {"median": ("median", None), "mean": ("mean", None), "zero": ("constant", 0.0)}[feats.missing.numeric]
    # pd.NA makes the imputer test with pd.isna: None in an object column and pd.NA in a "string"
    # column are missing too (with np.nan, None passed through as a category of its own).
    if feats.missing.categorical == "constant":
        cat_imputer = SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY, missing_values=pd.NA)
    else:
        cat_imputer = SimpleImputer(strategy="most_frequent", missing_values=pd.NA)
    transformers: list[tuple[str, Any, list[str]]] = []
    if feats.categorical:
        if encoding == "onehot":
            encoder: Any = OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=feats.max_categories)
        else:
            # Unseen categories become -1, not NaN: GradientBoosting* and others refuse NaN at predict
            # time, and HistGradientBoosting reads a negative category code as missing anyway.
            encoder = OrdinalEncoder(
                handle_unknown="use_encoded_value",
                unknown_value=-1,
                encoded_missing_value=np.nan,
                max_categories=feats.max_categories,
            )
        transformers.append(
            ("categorical", Pipeline([("impute", cat_imputer), ("encode", encoder)]), feats.categorical)
        )
    if feats.numeric:
        steps: list[tuple[str, Any]] = [
            ("impute", SimpleImputer(strategy=impute_num[0], fill_value=impute_num[1], keep_empty_features=True))
        ]
        if encoding == "onehot":
            steps.append(("scale", StandardScaler()))
        transformers.append(("numeric", Pipeline(steps), feats.numeric))
    for dt in feats.datetime:
        steps = [
            ("parts", DatePartsEncoder(parts=tuple(dt.parts), timezone=dt.timezone)),
            ("impute", SimpleImputer(strategy="most_frequent", keep_empty_features=True)),
        ]
        if encoding == "onehot":
            # Calendar parts are cyclic: one-hot lets a linear model learn "17:00 is bad".
            steps.append(("encode", OneHotEncoder(handle_unknown="ignore")))
        transformers.append((f"datetime_{dt.column}", Pipeline(steps), [dt.column]))
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=True)


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


def features_prefix(pipeline: str, run_key: str) -> str:
    return f"{pipeline}/runs/{run_key}/features"


def build_features(
    loaded: LoadedSpec, store: ArtifactStore, *, run_key: str, snapshot_key: str, snapshot_sha256: str
) -> FeatureSet:
    """Split the validated snapshot and persist train and holdout as Parquet (only needed columns)."""
    spec = loaded.spec
    started = time.perf_counter()
    prefix = features_prefix(spec.name, run_key)
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
    store.put_bytes(f"{prefix}/manifest.json", json.dumps(result.to_xcom(), indent=2).encode())
    return result


def read_split(store: ArtifactStore, key: str, sha256: str) -> pd.DataFrame:
    with store.local_copy(key, expected_sha256=sha256) as path:
        return pd.read_parquet(path)
