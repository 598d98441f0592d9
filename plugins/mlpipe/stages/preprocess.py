"""The feature transformer: the scikit-learn part of a model (``build_preprocessor``) and its calendar encoder.

Apart from :mod:`mlpipe.stages.features` (the split), so that ``build_features``, which only splits
and writes Parquet, does not import scikit-learn: under a real executor every task is a process of
its own and pays its imports (docs/benchmarks.md, section 17). Saved models name
``mlpipe.stages.features.DatePartsEncoder`` in their pickles; that module hands it out from here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from mlpipe.spec import Encoding, PipelineSpec

MISSING_CATEGORY = "__missing__"


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
