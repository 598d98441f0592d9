"""Tuning: a candidate's ``search`` (grid, random, halving) cross-validated on the train split only."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlpipe import layout
from mlpipe.contracts import FeatureSet
from mlpipe.errors import ConfigError, SpecError
from mlpipe.spec import LoadedSpec, load_spec
from mlpipe.stages.features import build_features, read_split
from mlpipe.stages.metrics import compute_metrics
from mlpipe.stages.train import (
    RUN_SPECIFIC_SEARCH_KEYS,
    THREADS_ENV,
    TrainedCandidate,
    build_model,
    cv_splitter,
    load_model,
    make_search,
    search_data,
    train_candidate,
    train_threads,
)
from mlpipe.storage import LocalStore, run_key

LOGREG = "sklearn.linear_model.LogisticRegression"
HGB = "sklearn.ensemble.HistGradientBoostingClassifier"
RIDGE = "sklearn.linear_model.Ridge"
FEATURE_RUNS = itertools.count()
REGRESSION = {
    "target": {"column": "y", "task": "regression"},
    "metrics": {"primary": "rmse", "secondary": ["r2"]},
    "gate": {},
}


def logreg(search: dict[str, Any], **params: Any) -> dict[str, Any]:
    return {"name": "logreg", "estimator": LOGREG, "params": {"max_iter": 300, **params}, "search": search}


def ridge(search: dict[str, Any]) -> dict[str, Any]:
    return {"name": "ridge", "estimator": RIDGE, "search": search}


class Tuned:
    """A spec written to a tmp include tree, its features built from a frame, and a way to train."""

    def __init__(self, loaded: LoadedSpec, store: LocalStore, frame: pd.DataFrame, tmp: Path) -> None:
        self.loaded, self.store = loaded, store
        path = tmp / "snapshot.parquet"
        frame.to_parquet(path, index=False)
        # Its own features run: a test may build several in one store.
        features_run = f"features{next(FEATURE_RUNS)}"
        art = store.put_file(layout.snapshot_key("tiny", features_run), path)
        self.features: FeatureSet = build_features(
            loaded, store, run_key=features_run, snapshot_key=art.key, snapshot_sha256=art.sha256
        )

    @property
    def spec(self):
        return self.loaded.spec

    def train(self, run: str = "manual__a", candidate: str | None = None) -> TrainedCandidate:
        return train_candidate(
            self.loaded,
            self.store,
            run_key=run_key(run),
            candidate=candidate or self.spec.candidates[0].name,
            train_key=self.features.train_key,
            train_sha256=self.features.train_sha256,
        )

    def split(self, which: str) -> pd.DataFrame:
        f = self.features
        key, sha = (f.train_key, f.train_sha256) if which == "train" else (f.holdout_key, f.holdout_sha256)
        return read_split(self.store, key, sha)


@pytest.fixture
def tuned(include_tree, make_spec, make_frame, store, tmp_path):
    def make(
        *candidates: dict[str, Any], task: str = "binary", n: int = 240, frame: Any = None, **changes: Any
    ) -> Tuned:
        spec = make_spec(candidates=list(candidates), **(REGRESSION if task == "regression" else {}), **changes)
        frame = make_frame(task, n) if frame is None else frame
        return Tuned(load_spec(include_tree(spec)), store, frame, tmp_path)

    return make


# -- the spec ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("search", "params", "expected"),
    [
        (
            {"method": "grid", "space": {"C": {"distribution": "loguniform", "low": 0.01, "high": 1}}},
            {},
            "candidates.logreg.search.space.C: grid needs a list of values",
        ),
        ({"method": "grid", "space": {"C": [1.0]}, "n_iter": 3}, {}, "candidates.logreg.search.n_iter: grid tries"),
        ({"method": "random", "space": {"C": [0.1, 1.0]}}, {}, "candidates.logreg.search.n_iter: method random"),
        (
            {"method": "halving", "space": {"C": {"distribution": "uniform", "low": 0.1, "high": 1}}},
            {},
            "candidates.logreg.search.n_iter: method halving",
        ),
        ({"space": {"max_iter": [100, 200]}}, {}, "candidates.logreg.search.space: ['max_iter'] also fixed"),
        ({"space": {"random_state": [1, 2]}}, {}, "candidates.logreg.search.space.random_state: seeds"),
        ({"space": {"C": [1.0]}, "scoring": "rmse"}, {}, "candidates.logreg.search.scoring: 'rmse' is not a binary"),
        ({"space": {"C": [1.0]}, "factor": 2}, {}, "candidates.logreg.search.factor: only method halving"),
        (
            {"space": {"C": list(range(1, 30)), "tol": list(range(1, 30))}},
            {},
            "candidates.logreg.search.space: 841 settings exceed 500",
        ),
        (
            {"method": "random", "n_iter": 2, "space": {"C": {"distribution": "loguniform", "low": 0, "high": 1}}},
            {},
            "candidates[0].search.space: C: loguniform needs low > 0",
        ),
        (
            {"method": "random", "n_iter": 2, "space": {"C": {"distribution": "normal", "low": 0, "high": 1}}},
            {},
            "candidates[0].search.space: C.distribution: Input should be 'uniform', 'loguniform' or 'randint'",
        ),
        ({"space": {"C": []}}, {}, "candidates[0].search.space: C: the list of values is empty"),
        ({"space": {"C": 1.0}}, {}, "candidates[0].search.space: C: give a list of values or {distribution"),
        ({"space": {"C": [1.0]}, "cv": 1}, {}, "candidates[0].search.cv: Input should be greater than or equal to 2"),
        ({"method": "bayes", "space": {"C": [1.0]}}, {}, "candidates[0].search.method: Input should be"),
    ],
)
def test_a_bad_search_is_refused_naming_its_field(include_tree, make_spec, search, params, expected) -> None:
    cand = {"name": "logreg", "estimator": LOGREG, "params": {"max_iter": 300, **params}, "search": search}
    with pytest.raises(SpecError) as err:
        load_spec(include_tree(make_spec(candidates=[cand])))
    assert expected in str(err.value)


def test_scoring_defaults_to_the_primary_metric_as_a_sklearn_scorer(include_tree, make_spec) -> None:
    cands = [logreg({"space": {"C": [1.0]}}), {**logreg({"space": {"C": [1.0]}, "scoring": "brier"}), "name": "lr2"}]
    spec = load_spec(include_tree(make_spec(candidates=cands))).spec
    assert [c.scorer(spec.primary_metric) for c in spec.candidates] == ["roc_auc", "neg_brier_score"]
    regression = load_spec(include_tree(make_spec(candidates=[ridge({"space": {"alpha": [1.0]}})], **REGRESSION)))
    assert regression.spec.candidates[0].scorer("rmse") == "neg_root_mean_squared_error"


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ({"bogus": [1, 2]}, "candidates.logreg.search.space.bogus: not accepted by LogisticRegression"),
        ({"C": [1.0, -1.0]}, "candidates.logreg.search.space.C: -1.0 is refused"),
        ({"solver": ["lbfgs", "magic"]}, "candidates.logreg.search.space.solver: 'magic' is refused"),
    ],
)
def test_a_param_the_estimator_refuses_fails_before_any_fit(tuned, space, expected) -> None:
    t = tuned(logreg({"space": space}))
    with pytest.raises(SpecError, match="invalid pipeline spec") as err:
        t.train()
    assert expected in str(err.value)
    assert not t.store.list("tiny/runs/manual__a/train"), "nothing written"


# -- the search --------------------------------------------------------------------------------------


def test_grid_picks_the_best_setting_and_refits_it_on_the_whole_train_split(tuned) -> None:
    # By log loss, a logistic regression starved by C=1e-5 predicts ~0.5 everywhere: C=1 must win.
    t = tuned(logreg({"space": {"C": [1e-5, 1.0]}, "scoring": "log_loss"}))

    trained = t.train()

    s = trained.search
    assert s["method"] == "grid" and s["scoring"] == "neg_log_loss" and s["metric"] == "log_loss"
    assert s["best_params"] == {"C": 1.0} and trained.params["C"] == 1.0, "the model keeps the best setting"
    assert s["best_metric"] == -s["best_score"] > 0
    assert (s["settings_tried"], s["n_fits"]) == (2, 2 * 3 + 1)
    assert [row["params"] for row in s["top"]] == [{"C": 1.0}, {"C": 1e-5}]
    assert s["top"][0]["mean_test_score"] == s["best_score"] > s["top"][1]["mean_test_score"]
    assert trained.train_rows == t.features.train_rows
    model = load_model(t.store, trained.model_key, trained.model_sha256)
    # Refitted on every train row, not on a fold of them: the same as fitting C=1 on the train split.
    cand = t.spec.candidates[0]
    fixed = cand.model_copy(update={"params": {**cand.params, "C": 1.0}, "search": None})
    expected = build_model(t.spec, fixed).fit(*search_data(t.spec, t.split("train")))
    assert np.allclose(model.named_steps["model"].coef_, expected.named_steps["model"].coef_)
    # The model keeps how it was chosen, without this run's timings (they would change its bytes).
    assert model.mlpipe_search_ == {k: v for k, v in s.items() if k not in RUN_SPECIFIC_SEARCH_KEYS}
    assert {"search_seconds", "refit_seconds", "n_jobs"} <= set(s), "result.json keeps them"
    stored = json.loads(t.store.get_bytes(layout.candidate_result("tiny", run_key("manual__a"), "logreg")))
    assert stored["search"] == s
    assert t.train() == trained, "a finished result of the run is reused, search summary included"


def test_random_samples_its_budget_seeded_from_the_split_seed(tuned) -> None:
    space = {"C": {"distribution": "loguniform", "low": 1e-5, "high": 10.0}, "tol": [1e-4, 1e-3]}
    t = tuned(logreg({"method": "random", "space": space, "n_iter": 5, "scoring": "log_loss"}))

    first, again = t.train("manual__a"), t.train("manual__b")

    s = first.search
    assert (s["settings_tried"], s["n_fits"]) == (5, 5 * 3 + 1)
    assert all(1e-5 <= row["params"]["C"] <= 10.0 and row["params"]["tol"] in (1e-4, 1e-3) for row in s["top"])
    assert s["best_params"]["C"] > 1e-3, "starved settings lose by log loss"
    # Same data, same spec: the same settings drawn, scored and chosen.
    assert {k: v for k, v in again.search.items() if "seconds" not in k} == {
        k: v for k, v in s.items() if "seconds" not in k
    }
    assert again.model_sha256 != "" and again.params == first.params
    holdout = t.split("holdout")
    X, y = holdout.drop(columns=["y"]), holdout["y"]
    models = [load_model(t.store, r.model_key, r.model_sha256) for r in (first, again)]
    assert compute_metrics(t.spec, models[0], X, y) == compute_metrics(t.spec, models[1], X, y)


def test_another_split_seed_draws_other_settings(tuned) -> None:
    space = {"C": {"distribution": "uniform", "low": 0.1, "high": 10.0}}
    split = {"method": "random", "holdout_fraction": 0.25}
    drawn = [
        {
            row["params"]["C"]
            for row in tuned(logreg({"method": "random", "space": space, "n_iter": 3}), split={**split, "seed": seed})
            .train(f"manual__seed{seed}")
            .search["top"]
        }
        for seed in (1, 2)
    ]
    assert drawn[0] != drawn[1]


def test_halving_races_settings_on_growing_samples(tuned) -> None:
    t = tuned(ridge({"method": "halving", "space": {"alpha": [1e-3, 1e-1, 10.0, 1e4, 1e5, 1e6]}}), task="regression")

    s = t.train(candidate="ridge").search

    assert s["method"] == "halving" and s["scoring"] == "neg_root_mean_squared_error"
    assert s["best_params"]["alpha"] <= 10.0, "heavy shrinkage loses by rmse"
    assert s["best_metric"] == -s["best_score"] > 0
    rounds = [row["round"] for row in s["top"]]
    assert rounds == sorted(rounds, reverse=True) and rounds[0] >= 1, "the last round ranks first"
    assert s["top"][0]["params"] == s["best_params"]
    assert s["top"][0]["rows"] > min(row["rows"] for row in s["top"]) or len({r["round"] for r in s["top"]}) == 1
    assert s["n_fits"] == s["settings_tried"] * 3 + 1 and s["settings_tried"] > 6, "survivors are fitted again"


def test_halving_with_a_budget_samples_that_many_settings_first(tuned) -> None:
    space = {"alpha": {"distribution": "loguniform", "low": 1e-3, "high": 1e6}}
    t = tuned(ridge({"method": "halving", "space": space, "n_iter": 9, "factor": 3}), task="regression")

    s = t.train(candidate="ridge").search

    assert s["settings_tried"] == 9 + 3 + 1 and s["n_fits"] == 13 * 3 + 1
    last = [row for row in s["top"] if row["round"] == 2]
    assert len(last) == 1 and last[0]["params"] == s["best_params"], "one survivor of three rounds"
    assert 1e-3 <= s["best_params"]["alpha"] <= 1e6


# -- folds: the train split only, in time order for a time split ------------------------------------


def test_the_search_reads_the_train_split_only_and_folds_cover_it(tuned, monkeypatch) -> None:
    t = tuned(logreg({"space": {"C": [0.1, 1.0]}}))
    read: list[str] = []
    original = LocalStore.local_copy

    def spy(self, key, *args, **kwargs):
        read.append(key)
        return original(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "local_copy", spy)
    t.train()

    assert read == [t.features.train_key], "the holdout is never read by training"
    train, holdout = t.split("train"), t.split("holdout")
    cand = t.spec.candidates[0]
    X, y = search_data(t.spec, train)
    folds = list(cv_splitter(t.spec, cand).split(X, y))
    assert len(folds) == 3
    seen = set()
    for fit_rows, test_rows in folds:
        seen |= set(X.iloc[test_rows]["ts"]) | set(X.iloc[fit_rows]["ts"])
    assert seen == set(train["ts"]) and not seen & set(holdout["ts"])


def test_a_time_split_validates_on_later_rows_than_it_fits(tuned) -> None:
    t = tuned(logreg({"space": {"C": [0.1, 1.0]}}))
    train = t.split("train").sample(frac=1.0, random_state=3).reset_index(drop=True)  # shuffled on purpose

    X, y = search_data(t.spec, train)
    splitter = cv_splitter(t.spec, t.spec.candidates[0])

    assert type(splitter).__name__ == "TimeSeriesSplit"
    stamps = pd.to_datetime(X["ts"])
    assert stamps.is_monotonic_increasing and len(X) == len(train)
    for fit_rows, test_rows in splitter.split(X, y):
        assert stamps.iloc[fit_rows].max() <= stamps.iloc[test_rows].min()
        assert fit_rows.max() < test_rows.min()
    assert t.train().search["cv"] == "TimeSeriesSplit(n_splits=3)"

    # Already in time order (as the train part is written): the rows are taken as they are, not copied
    # into a new order.
    ordered = t.split("train")
    assert pd.to_datetime(ordered["ts"]).is_monotonic_increasing
    X_ordered, _ = search_data(t.spec, ordered.set_index(ordered.index + 1000))
    assert X_ordered.index[0] == 1000 and (X_ordered["ts"].to_numpy() == ordered["ts"].to_numpy()).all()


def test_a_random_split_uses_seeded_shuffled_folds(tuned) -> None:
    split = {"method": "random", "holdout_fraction": 0.25, "seed": 7}
    clf = tuned(logreg({"space": {"C": [1.0]}, "cv": 4}), split=split)
    reg = tuned(ridge({"space": {"alpha": [1.0]}}), task="regression", split=split)

    folds = cv_splitter(clf.spec, clf.spec.candidates[0])
    assert (type(folds).__name__, folds.n_splits, folds.shuffle, folds.random_state) == ("StratifiedKFold", 4, True, 7)
    folds = cv_splitter(reg.spec, reg.spec.candidates[0])
    assert (type(folds).__name__, folds.shuffle, folds.random_state) == ("KFold", True, 7)
    assert clf.train().search["cv"] == "StratifiedKFold(n_splits=4)"


def test_label_dependent_scoring_follows_the_positive_class(tuned, make_frame) -> None:
    # String labels: sklearn's own 'f1' scorer would look for a label 1 and fail.
    frame = make_frame("binary", 240)
    frame["y"] = np.where(frame["y"] == 1, "late", "on_time")
    cand = logreg({"space": {"C": [0.01, 1.0]}, "scoring": "f1"})
    t = tuned(cand, frame=frame, target={"column": "y", "task": "binary", "positive_class": "late"})

    s = t.train().search

    assert s["metric"] == "f1" and 0 < s["best_score"] <= 1


def test_threads_come_from_the_environment(tuned, monkeypatch) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert train_threads() == 1
    monkeypatch.setenv(THREADS_ENV, "2")
    t = tuned(logreg({"space": {"C": [0.1, 1.0]}}))
    cand = t.spec.candidates[0]
    _, y = search_data(t.spec, t.split("train"))
    assert make_search(t.spec, cand, build_model(t.spec, cand), y).n_jobs == 2
    for bad in ("0", "two", "-3"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(ConfigError, match=f"{THREADS_ENV}={bad!r}: give a whole number"):
            train_threads()


def test_a_candidate_without_search_trains_as_before(tuned) -> None:
    t = tuned({"name": "logreg", "estimator": LOGREG, "params": {"C": 0.5, "max_iter": 300}})
    trained = t.train()
    assert trained.search is None and trained.params["C"] == 0.5


def test_the_evaluation_report_shows_each_candidates_tuning(tuned) -> None:
    from mlpipe.stages.evaluation_report import _metrics_section

    t = tuned(logreg({"space": {"C": [1e-5, 1.0]}}), {"name": "hgb", "estimator": HGB, "params": {"max_iter": 5}})
    models = {
        c.name: load_model(t.store, r.model_key, r.model_sha256)
        for c in t.spec.candidates
        if (r := t.train(candidate=c.name))
    }
    holdout = t.split("holdout")
    scores = {n: compute_metrics(t.spec, m, holdout.drop(columns=["y"]), holdout["y"]) for n, m in models.items()}
    verdict = {"candidates": scores, "best_candidate": "logreg", "primary_metric": "roc_auc"}

    html = _metrics_section(t.spec, verdict, models)

    row = html.split("<tr><td>tuning (cross-validated on the train split)")[1].split("</tr>")[0]
    search = models["logreg"].mlpipe_search_
    best = f"C={search['best_params']['C']:.4g}; roc_auc {search['best_metric']:.4f}"
    assert f"<td><td>grid: {best} over TimeSeriesSplit(n_splits=3) (7 fits)" in row
    assert row.endswith('<td><span class="muted">fixed params</span>'), "hgb was not tuned"
    assert "tuning" not in _metrics_section(t.spec, verdict, {}), "no row without a search"


# -- byte-reproducible artifacts --------------------------------------------------------------------


def test_two_trainings_on_the_same_data_give_byte_identical_models(tuned) -> None:
    # The search summary inside the model had its fit timings: two runs on the same snapshot gave
    # different logreg bytes, so reuse by content could not recognise them. Every candidate now
    # stores the same bytes, tuned (grid, random) or not.
    hgb = {"name": "hgb", "estimator": HGB, "params": {"max_iter": 20}}
    searched = {
        "method": "random",
        "n_iter": 2,
        "cv": 2,
        "space": {"C": {"distribution": "loguniform", "low": 0.01, "high": 10}},
    }
    random = {**logreg(searched), "name": "logreg_random"}
    t = tuned(logreg({"method": "grid", "space": {"C": [0.1, 1.0]}, "cv": 3}), random, hgb)
    first = {c.name: t.train("manual__first", c.name) for c in t.spec.candidates}
    second = {c.name: t.train("manual__second", c.name) for c in t.spec.candidates}
    for name in first:
        assert first[name].model_key != second[name].model_key, "two runs, two artifacts"
        assert first[name].model_sha256 == second[name].model_sha256, f"{name}: the bytes differ between runs"
        assert t.store.sha256(second[name].model_key) == first[name].model_sha256
    assert first["logreg"].search["search_seconds"] >= 0, "the timings stay in the run's result"
