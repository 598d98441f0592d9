"""Tests of mlpipe.stages.features: the date-parts transformer, the split, frame checks, the preprocessor."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import (
    check_dataframe_column_names_consistency,
    check_set_output_transform,
    check_set_output_transform_pandas,
    check_transformer_get_feature_names_out,
    check_transformer_get_feature_names_out_pandas,
    parametrize_with_checks,
)

from mlpipe.errors import FeatureError
from mlpipe.spec import PipelineSpec
from mlpipe.stages.features import (
    build_features,
    check_frame,
    read_split,
    required_columns,
    split_frame,
)
from mlpipe.stages.preprocess import MISSING_CATEGORY, DatePartsEncoder, build_preprocessor
from mlpipe.storage import LocalStore

ENCODERS = [
    DatePartsEncoder(),
    DatePartsEncoder(parts=("year", "day_of_year", "minute", "is_weekend"), timezone="America/New_York"),
]


def spec_of(make_spec, **changes) -> PipelineSpec:
    return PipelineSpec.model_validate(make_spec(**changes))


class TestDatePartsEncoder:
    @parametrize_with_checks(ENCODERS)
    def test_sklearn_estimator_contract(self, estimator, check) -> None:
        check(estimator)

    @pytest.mark.parametrize(
        "check",
        [
            check_transformer_get_feature_names_out,
            check_transformer_get_feature_names_out_pandas,
            check_dataframe_column_names_consistency,
            check_set_output_transform,
            check_set_output_transform_pandas,
        ],
        ids=lambda c: c.__name__,
    )
    @pytest.mark.filterwarnings("ignore:X (does not have valid|has) feature names:UserWarning")
    def test_feature_names_and_set_output(self, check) -> None:
        # Not in parametrize_with_checks' list for third-party estimators, but part of the contract.
        check("DatePartsEncoder", DatePartsEncoder())

    def test_parts_in_a_time_zone(self) -> None:
        frame = pd.DataFrame({"t": ["2013-01-01 23:30:00", "2013-07-06 12:05:00", "2013-01-01T23:30:00+00:00"]})
        enc = DatePartsEncoder(
            parts=("year", "month", "day", "day_of_week", "day_of_year", "hour", "minute", "is_weekend"),
            timezone="America/New_York",
        ).fit(frame)

        out = enc.transform(frame)

        # 23:30 UTC on Tue 1 Jan 2013 is 18:30 EST, still Tuesday (day_of_week 1).
        assert out[0].tolist() == [2013, 1, 1, 1, 1, 18, 30, 0]
        # 12:05 UTC on Sat 6 Jul 2013 is 08:05 EDT (summer time), a Saturday.
        assert out[1].tolist() == [2013, 7, 6, 5, 187, 8, 5, 1]
        assert out[2].tolist() == out[0].tolist()
        assert enc.get_feature_names_out().tolist() == [
            "t_year", "t_month", "t_day", "t_day_of_week", "t_day_of_year", "t_hour", "t_minute", "t_is_weekend",
        ]  # fmt: skip

    def test_day_changes_with_the_zone(self) -> None:
        frame = pd.DataFrame({"t": ["2013-01-01 02:00:00"]})
        utc = DatePartsEncoder(parts=("day", "hour"), timezone="UTC").fit_transform(frame)
        ny = DatePartsEncoder(parts=("day", "hour"), timezone="America/New_York").fit_transform(frame)
        assert utc.tolist() == [[1, 2]]
        assert ny.tolist() == [[31, 21]]

    def test_unparseable_and_missing_become_nan(self) -> None:
        frame = pd.DataFrame({"t": ["2013-01-05 10:00:00", None, "not a date", np.nan]})

        out = DatePartsEncoder(parts=("hour", "is_weekend")).fit(frame).transform(frame)

        assert out[0].tolist() == [10, 1]
        assert np.isnan(out[1:]).all()

    def test_datetime_and_epoch_inputs(self) -> None:
        stamps = pd.DataFrame({"t": pd.to_datetime(["2013-01-01 05:00", "2013-01-01 06:00"])})
        epoch = np.array([[0.0], [3_600_000_000_000.0]])  # nanoseconds since the epoch

        assert DatePartsEncoder(parts=("hour",)).fit_transform(stamps).tolist() == [[5], [6]]
        assert DatePartsEncoder(parts=("hour",)).fit_transform(epoch).tolist() == [[0], [1]]

    @pytest.mark.parametrize("timezone", ["UTC", "America/New_York"])
    def test_parsed_timestamps_give_the_parts_of_their_text(self, timezone) -> None:
        # build_features stores time columns parsed (naive UTC): the parts must equal those of the text.
        text = pd.DataFrame({"t": ["2013-01-01 23:30:00", "2013-07-06T12:05:00+02:00", "not a date", None]})
        parsed = pd.DataFrame({"t": pd.to_datetime(text["t"], utc=True, errors="coerce", format="mixed")})
        parsed["t"] = parsed["t"].dt.tz_localize(None)
        parts = ("month", "day", "day_of_week", "hour", "is_weekend")
        from_text = DatePartsEncoder(parts=parts, timezone=timezone).fit_transform(text)
        from_stamps = DatePartsEncoder(parts=parts, timezone=timezone).fit_transform(parsed)
        assert np.array_equal(from_text, from_stamps, equal_nan=True)
        assert np.isnan(from_stamps[2:]).all()

    @pytest.mark.parametrize("parts", [(), ("hour", "week")])
    def test_bad_parts_fail_at_fit(self, parts) -> None:
        with pytest.raises(ValueError, match="parts must be a non-empty subset"):
            DatePartsEncoder(parts=parts).fit(pd.DataFrame({"t": ["2013-01-01"]}))


class TestSplit:
    def test_time_split_holds_out_the_latest_rows(self, make_spec) -> None:
        spec = spec_of(make_spec, split={"method": "time", "time_column": "ts", "holdout_fraction": 0.25})
        stamps = pd.date_range("2013-01-01", periods=20, freq="h")
        frame = pd.DataFrame({"ts": stamps.strftime("%Y-%m-%d %H:%M:%S")}).sample(frac=1, random_state=1)

        train, holdout = split_frame(frame, spec)

        assert len(holdout) == 5 and len(train) == 15
        assert set(frame.iloc[holdout]["ts"]) == set(stamps[-5:].strftime("%Y-%m-%d %H:%M:%S"))
        assert frame.iloc[train]["ts"].max() < frame.iloc[holdout]["ts"].min()
        assert sorted([*train, *holdout]) == list(range(20))

    def test_time_split_keeps_equal_timestamps_on_one_side(self, make_spec) -> None:
        spec = spec_of(make_spec, split={"method": "time", "time_column": "ts", "holdout_fraction": 0.3})
        # 10 rows: the quantile cut falls inside the run of four equal stamps at 03:00.
        ts = ["2013-01-01 00:00:00", "2013-01-01 01:00:00", "2013-01-01 02:00:00"] + ["2013-01-01 03:00:00"] * 4
        ts += ["2013-01-01 04:00:00", "2013-01-01 05:00:00", "2013-01-01 06:00:00"]
        frame = pd.DataFrame({"ts": ts})

        train, holdout = split_frame(frame, spec)

        train_ts, holdout_ts = set(frame.iloc[train]["ts"]), set(frame.iloc[holdout]["ts"])
        assert not train_ts & holdout_ts
        assert max(train_ts) < min(holdout_ts)
        assert len(train) + len(holdout) == 10

    def test_time_split_reads_offsets_as_instants(self, make_spec) -> None:
        spec = spec_of(make_spec, split={"method": "time", "time_column": "ts", "holdout_fraction": 0.5})
        # 10:00+02:00 is 08:00 UTC: earlier than 09:00 UTC although its text sorts later.
        frame = pd.DataFrame({"ts": ["2013-01-01T10:00:00+02:00", "2013-01-01 09:00:00"]})

        train, holdout = split_frame(frame, spec)

        assert (train.tolist(), holdout.tolist()) == ([0], [1])

    def test_time_split_errors(self, make_spec) -> None:
        spec = spec_of(make_spec, split={"method": "time", "time_column": "ts"})
        with pytest.raises(FeatureError, match="left one side empty"):
            split_frame(pd.DataFrame({"ts": ["2013-01-01 00:00:00"] * 5}), spec)
        with pytest.raises(FeatureError, match=r"'ts' has unparseable timestamps, e\.g\. \['soon'\]"):
            split_frame(pd.DataFrame({"ts": ["2013-01-01 00:00:00", "soon"]}), spec)

    def test_random_split_is_seeded_and_stratified(self, make_spec) -> None:
        spec = spec_of(make_spec, split={"method": "random", "holdout_fraction": 0.25, "seed": 7})
        frame = pd.DataFrame({"y": [1] * 8 + [0] * 32})

        train, holdout = split_frame(frame, spec)
        again = split_frame(frame, spec)
        other = split_frame(frame, spec_of(make_spec, split={"method": "random", "holdout_fraction": 0.25, "seed": 8}))

        assert (train.tolist(), holdout.tolist()) == (again[0].tolist(), again[1].tolist())
        assert holdout.tolist() != other[1].tolist()
        assert len(holdout) == 10
        assert frame.iloc[holdout]["y"].sum() == 2  # 20 % positives, as in the whole frame
        assert sorted([*train, *holdout]) == list(range(40))

    def test_random_split_of_a_regression_target(self, make_spec) -> None:
        spec = spec_of(
            make_spec,
            target={"column": "y", "task": "regression"},
            candidates=[{"name": "ridge", "estimator": "sklearn.linear_model.Ridge"}],
            metrics={"primary": "rmse"},
            gate={},
            split={"method": "random", "holdout_fraction": 0.2},
        )
        train, holdout = split_frame(pd.DataFrame({"y": np.linspace(0, 1, 10)}), spec)
        assert (len(train), len(holdout)) == (8, 2)


class TestCheckFrame:
    def test_a_good_frame_passes(self, make_spec, make_frame) -> None:
        spec = spec_of(make_spec)
        assert required_columns(spec) == ["num", "cat", "ts", "y"]
        check_frame(make_frame("binary"), spec, "snapshot s")

    def test_missing_column_is_named(self, make_spec, make_frame) -> None:
        with pytest.raises(FeatureError, match=r"snapshot s lacks column\(s\) \['cat'\]"):
            check_frame(make_frame("binary").drop(columns=["cat"]), spec_of(make_spec), "snapshot s")

    def test_time_column_is_required(self, make_spec, make_frame) -> None:
        spec = spec_of(
            make_spec,
            features={"numeric": ["num"], "categorical": ["cat"]},
            split={"method": "time", "time_column": "ts"},
        )
        assert required_columns(spec) == ["num", "cat", "y", "ts"]
        with pytest.raises(FeatureError, match=r"lacks column\(s\) \['ts'\]"):
            check_frame(make_frame("binary").drop(columns=["ts"]), spec, "snapshot s")

    def test_no_rows(self, make_spec, make_frame) -> None:
        with pytest.raises(FeatureError, match="snapshot s has no rows"):
            check_frame(make_frame("binary").iloc[:0], spec_of(make_spec), "snapshot s")

    def test_null_target(self, make_spec, make_frame) -> None:
        frame = make_frame("binary").astype({"y": "float64"})
        frame.loc[[3, 4], "y"] = np.nan
        with pytest.raises(FeatureError, match="target column 'y' has 2 null value"):
            check_frame(frame, spec_of(make_spec), "snapshot s")

    def test_binary_needs_two_classes(self, make_spec, make_frame) -> None:
        frame = make_frame("binary")
        with pytest.raises(FeatureError, match="binary target 'y' must have exactly 2 classes, found 1"):
            check_frame(frame.assign(y=1), spec_of(make_spec), "snapshot s")
        with pytest.raises(FeatureError, match="found 3"):
            check_frame(frame.assign(y=frame["id"] % 3), spec_of(make_spec), "snapshot s")

    def test_multiclass_needs_two_classes(self, make_spec, make_frame) -> None:
        spec = spec_of(
            make_spec,
            target={"column": "y", "task": "multiclass"},
            metrics={"primary": "accuracy"},
            gate={},
        )
        check_frame(make_frame("multiclass"), spec, "s")
        with pytest.raises(FeatureError, match="multiclass target 'y' has a single class"):
            check_frame(make_frame("multiclass").assign(y=0), spec, "s")

    def test_positive_class_must_occur(self, make_spec, make_frame) -> None:
        frame = make_frame("binary").assign(y=lambda f: f["y"].map({0: "ok", 1: "late"}))
        with pytest.raises(FeatureError, match="positive_class 1 does not occur in 'y'"):
            check_frame(frame, spec_of(make_spec), "s")

    def test_regression_target_must_be_numeric(self, make_spec, make_frame) -> None:
        spec = spec_of(
            make_spec,
            target={"column": "y", "task": "regression"},
            candidates=[{"name": "ridge", "estimator": "sklearn.linear_model.Ridge"}],
            metrics={"primary": "rmse"},
            gate={},
        )
        with pytest.raises(FeatureError, match="regression target 'y' is not numeric"):
            check_frame(make_frame("regression").assign(y="high"), spec, "s")


class TestPreprocessor:
    @pytest.mark.parametrize("encoding", ["onehot", "ordinal"])
    def test_unseen_categories_and_missing_values_at_transform_time(self, make_spec, encoding) -> None:
        spec = spec_of(make_spec)
        train = pd.DataFrame(
            {
                "num": [1.0, 2.0, 3.0, 4.0],
                "cat": ["a", "b", "a", "b"],
                "ts": ["2013-01-01 10:00:00", "2013-01-02 11:00:00", "2013-01-03 12:00:00", "2013-01-04 13:00:00"],
            }
        )
        new = pd.DataFrame(
            {
                "num": [np.nan, 2.0, 100.0],
                "cat": ["never seen", None, "a"],
                "ts": [None, "garbage", "2013-02-01 10:00:00"],
            }
        )
        pre = build_preprocessor(spec, encoding).fit(train)

        out = pre.transform(new)
        out = out.toarray() if hasattr(out, "toarray") else np.asarray(out)

        assert out.shape[0] == 3
        assert not np.isnan(out).any()
        names = pre.get_feature_names_out().tolist()
        assert len(names) == out.shape[1]
        assert names[0].startswith("categorical__cat")  # categorical columns come first
        if encoding == "ordinal":
            cat = out[:, names.index("categorical__cat")]
            assert cat.tolist() == [-1, -1, 0]  # unseen and missing (never seen in training) are -1
            assert out[0, names.index("numeric__num")] == 2.5  # the train median

    def test_missing_category_is_its_own_category_when_seen(self, make_spec) -> None:
        spec = spec_of(make_spec, features={"categorical": ["cat"]})
        train = pd.DataFrame({"cat": ["a", None, "b", None]})

        pre = build_preprocessor(spec, "ordinal").fit(train)

        categories = pre.named_transformers_["categorical"].named_steps["encode"].categories_[0].tolist()
        assert MISSING_CATEGORY in categories
        assert pre.transform(pd.DataFrame({"cat": [None]}))[0, 0] == categories.index(MISSING_CATEGORY)

    @pytest.mark.parametrize(
        "estimator",
        [
            "sklearn.ensemble.GradientBoostingClassifier",
            "sklearn.ensemble.RandomForestClassifier",
            "sklearn.ensemble.HistGradientBoostingClassifier",
            "sklearn.tree.DecisionTreeClassifier",
            "sklearn.linear_model.LogisticRegression",
            "sklearn.naive_bayes.GaussianNB",
        ],
    )
    def test_every_model_predicts_rows_with_unseen_values(self, make_spec, make_frame, estimator) -> None:
        from mlpipe.stages.train import build_model

        spec = spec_of(
            make_spec,
            candidates=[{"name": "m", "estimator": estimator, "params": {}}],
        )
        frame = make_frame("binary")
        train, new = frame.iloc[:30], frame.iloc[30:].copy()
        new.loc[new.index[0], ["num", "cat", "ts"]] = [np.nan, None, None]

        model = build_model(spec, spec.candidates[0]).fit(train.drop(columns=["y"]), train["y"])
        proba = model.predict_proba(new.drop(columns=["y"]))

        assert proba.shape == (len(new), 2)
        assert not np.isnan(proba).any()


class TestBuildFeatures:
    def test_persists_train_and_holdout(self, make_spec, make_frame, store: LocalStore, tmp_path) -> None:
        from mlpipe.spec import LoadedSpec

        spec = spec_of(make_spec)
        frame = make_frame("binary").assign(extra="dropped")
        path = tmp_path / "snapshot.parquet"
        frame.to_parquet(path, index=False)
        snap = store.put_file("tiny/runs/r1/extract/snapshot.parquet", path)
        loaded = LoadedSpec(spec=spec, path=tmp_path / "tiny.yaml", query_path=path, suite_path=path)

        fs = build_features(loaded, store, run_key="r1", snapshot_key=snap.key, snapshot_sha256=snap.sha256)

        assert (fs.train_rows, fs.holdout_rows) == (30, 10)
        assert fs.columns == ["num", "cat", "ts", "y"]
        assert fs.split == "time"
        assert fs.label_counts == {str(k): int(v) for k, v in frame["y"].value_counts().sort_index().items()}
        train = read_split(store, fs.train_key, fs.train_sha256)
        holdout = read_split(store, fs.holdout_key, fs.holdout_sha256)
        assert list(train.columns) == fs.columns
        assert train["ts"].max() < holdout["ts"].min()
        # The time column is parsed once here, not in every fit and score after.
        assert train["ts"].dtype.kind == "M" and holdout["ts"].dtype.kind == "M"
        assert train["ts"].tolist() == sorted(pd.to_datetime(frame["ts"]).iloc[: fs.train_rows].tolist())
        assert store.exists("tiny/runs/r1/features/manifest.json")

    def test_refuses_a_changed_snapshot(self, make_spec, make_frame, store: LocalStore, tmp_path) -> None:
        from mlpipe.errors import ArtifactIntegrityError
        from mlpipe.spec import LoadedSpec

        path = tmp_path / "snapshot.parquet"
        make_frame("binary").to_parquet(path, index=False)
        snap = store.put_file("tiny/runs/r1/extract/snapshot.parquet", path)
        store.put_bytes(snap.key, b"changed")
        loaded = LoadedSpec(spec=spec_of(make_spec), path=path, query_path=path, suite_path=path)

        with pytest.raises(ArtifactIntegrityError):
            build_features(loaded, store, run_key="r1", snapshot_key=snap.key, snapshot_sha256=snap.sha256)


def test_models_pickled_before_the_move_still_find_the_encoder() -> None:
    """Models saved when the encoder lived in mlpipe.stages.features name it there; it is still found."""
    import pickle

    from mlpipe.stages import features

    encoder = DatePartsEncoder(parts=("hour",)).fit(pd.DataFrame({"t": ["2013-01-01 05:00"]}))
    # Protocol 2 names classes as text lines (GLOBAL), so the module name can be swapped in place.
    old = pickle.dumps(encoder, protocol=2).replace(b"mlpipe.stages.preprocess", b"mlpipe.stages.features")
    assert b"mlpipe.stages.features" in old
    loaded = pickle.loads(old)
    assert type(loaded) is features.DatePartsEncoder is DatePartsEncoder
    assert loaded.transform(pd.DataFrame({"t": ["2013-01-01 07:00"]})).tolist() == [[7.0]]
