"""Training: fit one candidate (feature pipeline + estimator) on the train split and store it.

A candidate with a ``search`` is tuned first: scikit-learn's grid, randomized or successive-halving
search, cross-validated on the train split only (the holdout is never read here), seeded from
``split.seed``; the best setting is then refitted on the whole train split. The stored artifact is
one fitted scikit-learn ``Pipeline``, written with joblib and published atomically with its sha256;
loading verifies that hash first.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags

from mlpipe import layout
from mlpipe.contracts import TrainedCandidate
from mlpipe.errors import ArtifactIntegrityError, ConfigError, SpecError
from mlpipe.layout import MODEL_FILE
from mlpipe.spec import ESTIMATORS, CandidateSpec, DistributionSpec, LoadedSpec, PipelineSpec
from mlpipe.stages.features import read_split
from mlpipe.stages.preprocess import build_preprocessor
from mlpipe.storage import ArtifactStore

# Worker processes of one candidate's search (scikit-learn's n_jobs). 1 by default: candidates are
# mapped tasks, so a distributed executor already trains them side by side, one slot each.
THREADS_ENV = "MLPIPE_TRAIN_THREADS"
# Best settings of a search kept in result.json (and the XCom), with their cross-validated scores.
TOP_SETTINGS = 5
# What a search summary says about this run rather than about the model: kept out of the artifact.
RUN_SPECIFIC_SEARCH_KEYS = frozenset({"search_seconds", "refit_seconds", "n_jobs"})


def make_estimator(spec: PipelineSpec, cand: CandidateSpec, source: str = "<spec>") -> Any:
    """Instantiate an allow-listed estimator with the spec's params (seeded from split.seed if unset)."""
    if cand.estimator not in ESTIMATORS:
        raise SpecError(source, [f"candidates.{cand.name}.estimator: {cand.estimator!r} is not allowed"])
    module_name, _, cls_name = cand.estimator.rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    accepted = set(inspect.signature(cls).parameters)
    unknown = sorted(set(cand.params) - accepted)
    if unknown:
        raise SpecError(
            source,
            [f"candidates.{cand.name}.params: {unknown} not accepted by {cls_name}; accepted: {sorted(accepted)}"],
        )
    params = dict(cand.params)
    if "random_state" in accepted and "random_state" not in params:
        params["random_state"] = spec.split.seed
    try:
        estimator = cls(**params)
    except (TypeError, ValueError) as exc:
        raise SpecError(source, [f"candidates.{cand.name}.params: {exc}"]) from None
    if cand.search is not None:
        _check_space(estimator, cand, accepted, source)
    return estimator


def _check_space(estimator: Any, cand: CandidateSpec, accepted: set[str], source: str) -> None:
    """Refuse a search space the estimator cannot take, before any fit: unknown params, bad values."""
    from sklearn.base import clone

    where = f"candidates.{cand.name}.search.space"
    problems = []
    for param, values in cand.search.space.items():
        if param not in accepted:
            problems.append(
                f"{where}.{param}: not accepted by {type(estimator).__name__}; accepted: {sorted(accepted)}"
            )
            continue
        if isinstance(values, DistributionSpec):
            values = (
                [int(values.low), int(values.high)] if values.distribution == "randint" else [values.low, values.high]
            )
        for value in values:
            try:
                # scikit-learn checks params at fit; its own validation, without fitting.
                clone(estimator).set_params(**{param: value})._validate_params()
            except (TypeError, ValueError) as exc:
                problems.append(f"{where}.{param}: {value!r} is refused ({exc})")
    if problems:
        raise SpecError(source, problems)


def build_model(spec: PipelineSpec, cand: CandidateSpec, source: str = "<spec>") -> Pipeline:
    """The whole model: the spec's feature transformer followed by the candidate's estimator."""
    estimator = make_estimator(spec, cand, source)
    n_cat = len(spec.features.categorical)
    if (
        cand.encoding == "ordinal"
        and n_cat
        and "categorical_features" in estimator.get_params()
        and "categorical_features" not in cand.params
    ):
        # Categorical columns come first in the transformer's output: treat them as native categories.
        estimator.set_params(categorical_features=list(range(n_cat)))
    features = build_preprocessor(spec, cand.encoding)
    if not get_tags(estimator).input_tags.sparse:
        # One-hot output is sparse when mostly zeros; estimators like GaussianNB refuse sparse input.
        features.set_params(sparse_threshold=0.0)
    return Pipeline([("features", features), ("model", estimator)])


def train_candidate(
    loaded: LoadedSpec,
    store: ArtifactStore,
    *,
    run_key: str,
    candidate: str,
    train_key: str,
    train_sha256: str,
) -> TrainedCandidate:
    """Fit ``candidate`` on the train split; a finished result of this run is reused, not refitted."""
    spec = loaded.spec
    cand = spec.candidate(candidate)
    result_key = layout.candidate_result(spec.name, run_key, candidate)
    if store.exists(result_key):
        done = TrainedCandidate.from_xcom(json.loads(store.get_bytes(result_key)))
        if store.exists(done.model_key) and store.sha256(done.model_key) == done.model_sha256:
            return done
    started = time.perf_counter()
    train = read_split(store, train_key, train_sha256)
    model = build_model(spec, cand, str(loaded.path))
    search = None
    if cand.search is None:
        y = train[spec.target.column]
        X = train.drop(columns=[spec.target.column])
        model.fit(X, y)
    else:
        model, search = tune(spec, cand, model, train, str(loaded.path))
    fit_seconds = round(time.perf_counter() - started, 3)
    with tempfile.TemporaryDirectory(prefix="mlpipe-train-") as tmp:
        path = Path(tmp) / MODEL_FILE
        joblib.dump(model, path, compress=3)
        artifact = store.put_file(layout.candidate_model(spec.name, run_key, candidate), path)
    result = TrainedCandidate(
        candidate=cand.name,
        estimator=cand.estimator,
        params=_jsonable(model.named_steps["model"].get_params(deep=False)),
        model_key=artifact.key,
        model_uri=artifact.uri,
        model_sha256=artifact.sha256,
        train_rows=len(train),
        fit_seconds=fit_seconds,
        search=search,
    )
    store.put_bytes(result_key, json.dumps(result.to_xcom(), indent=2).encode())
    return result


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    # numpy scalars (values drawn by a random search) are plain numbers in JSON.
    params = {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}
    return {k: v if isinstance(v, (str, int, float, bool, type(None), list)) else repr(v) for k, v in params.items()}


# -- tuning -----------------------------------------------------------------------------------------


def train_threads() -> int:
    """``MLPIPE_TRAIN_THREADS``: processes one search fits with (default 1; -1 means every core)."""
    raw = os.environ.get(THREADS_ENV, "").strip() or "1"
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads == 0 or threads < -1:
        raise ConfigError(f"{THREADS_ENV}={raw!r}: give a whole number >= 1, or -1 for every core")
    return threads


def search_data(spec: PipelineSpec, train: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Features and target the search cross-validates on: the train split, oldest first for a time split."""
    if spec.split.method == "time":
        stamps = pd.to_datetime(train[spec.split.time_column], utc=True, errors="coerce", format="mixed")
        # Sources usually deliver in time order (the demo's query does): then there is nothing to move,
        # and copying every column of the train part in the same order cost ~0.4 s on a year of flights.
        if not stamps.is_monotonic_increasing:
            train = train.iloc[np.argsort(stamps.to_numpy(), kind="stable")].reset_index(drop=True)
    return train.drop(columns=[spec.target.column]), train[spec.target.column]


def cv_splitter(spec: PipelineSpec, cand: CandidateSpec) -> Any:
    """The folds: past-to-future for a time split (the holdout is the future too), else shuffled K-fold
    seeded from split.seed, stratified for classification."""
    from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit

    folds = cand.search.cv
    if spec.split.method == "time":
        return TimeSeriesSplit(n_splits=folds)
    if spec.target.task == "regression":
        return KFold(n_splits=folds, shuffle=True, random_state=spec.split.seed)
    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=spec.split.seed)


def search_scoring(spec: PipelineSpec, cand: CandidateSpec, y: pd.Series) -> Any:
    """The scorer name, or for a binary metric that depends on which label is positive a scorer bound
    to the positive label evaluation uses (positive_class, else the last label in sorted order)."""
    name = cand.scorer(spec.primary_metric)
    metric = cand.search.scoring or spec.primary_metric
    if spec.target.task != "binary" or metric not in ("average_precision", "brier", "f1", "precision", "recall"):
        return name
    from sklearn import metrics as skm

    positive = spec.target.positive_class
    if positive is None or positive not in set(y.unique()):
        positive = sorted(y.unique())[-1]
    if metric == "average_precision":
        return skm.make_scorer(
            skm.average_precision_score, response_method=("decision_function", "predict_proba"), pos_label=positive
        )
    if metric == "brier":
        return skm.make_scorer(
            skm.brier_score_loss, response_method="predict_proba", greater_is_better=False, pos_label=positive
        )
    score = {"f1": skm.f1_score, "precision": skm.precision_score, "recall": skm.recall_score}[metric]
    return skm.make_scorer(score, pos_label=positive, zero_division=0)


def search_space(cand: CandidateSpec) -> dict[str, Any]:
    """The space on the Pipeline: each param of the estimator step (``model__``), ranges as scipy.stats."""
    return {
        f"model__{param}": _distribution(values) if isinstance(values, DistributionSpec) else values
        for param, values in cand.search.space.items()
    }


def _distribution(dist: DistributionSpec) -> Any:
    from scipy import stats

    if dist.distribution == "uniform":
        return stats.uniform(loc=dist.low, scale=dist.high - dist.low)
    if dist.distribution == "loguniform":
        return stats.loguniform(dist.low, dist.high)
    return stats.randint(int(dist.low), int(dist.high) + 1)  # both ends included (scipy excludes high)


def make_search(spec: PipelineSpec, cand: CandidateSpec, model: Pipeline, y: pd.Series) -> Any:
    """The scikit-learn search the candidate's ``search`` describes, around the whole model."""
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import (
        GridSearchCV,
        HalvingGridSearchCV,
        HalvingRandomSearchCV,
        RandomizedSearchCV,
    )

    search, space = cand.search, search_space(cand)
    common = {
        "cv": cv_splitter(spec, cand),
        "scoring": search_scoring(spec, cand, y),
        "n_jobs": train_threads(),
        "refit": True,
        # A setting that cannot fit is an error to fix in the spec, not a NaN score that loses quietly.
        "error_score": "raise",
    }
    if search.method == "grid":
        return GridSearchCV(model, space, **common)
    if search.method == "random":
        return RandomizedSearchCV(model, space, n_iter=search.n_iter, random_state=spec.split.seed, **common)
    halving = {"factor": search.factor, "random_state": spec.split.seed, "return_train_score": False}
    if search.n_iter is None:
        return HalvingGridSearchCV(model, space, **halving, **common)
    return HalvingRandomSearchCV(model, space, n_candidates=search.n_iter, **halving, **common)


def tune(
    spec: PipelineSpec, cand: CandidateSpec, model: Pipeline, train: pd.DataFrame, source: str = "<spec>"
) -> tuple[Pipeline, dict[str, Any]]:
    """Search ``cand``'s space by cross-validation on ``train``; the best setting refitted on all of it."""
    X, y = search_data(spec, train)
    search = make_search(spec, cand, model, y)
    started = time.perf_counter()
    try:
        search.fit(X, y)
    except ValueError as exc:
        # e.g. a combination of values the estimator refuses (penalty l1 with the lbfgs solver), or
        # more folds than the rarest class has rows.
        raise SpecError(source, [f"candidates.{cand.name}.search: the search failed: {exc}"]) from None
    model, summary = search.best_estimator_, search_summary(spec, cand, search, time.perf_counter() - started)
    # The model keeps how it was chosen (the evaluation report shows it next to the holdout metrics),
    # but not what this run's machine made of it: with the timings inside, two trainings on the same
    # data gave different bytes. They stay in the run's result.json (and the XCom).
    model.mlpipe_search_ = {k: v for k, v in summary.items() if k not in RUN_SPECIFIC_SEARCH_KEYS}
    return model, summary


def search_summary(spec: PipelineSpec, cand: CandidateSpec, search: Any, seconds: float) -> dict[str, Any]:
    """What result.json keeps of a search: the winner, its score, the cost and the best settings."""
    results = search.cv_results_
    n_splits = search.n_splits_
    metric = cand.search.scoring or spec.primary_metric
    scorer = cand.scorer(spec.primary_metric)
    sign = -1.0 if scorer.startswith("neg_") else 1.0
    rank = np.asarray(results["rank_test_score"])
    if "iter" in results:
        # Successive halving: a setting's last round (the most data) counts; later rounds first.
        order = np.lexsort((rank, -np.asarray(results["iter"])))[:TOP_SETTINGS]
    else:
        order = np.argsort(rank, kind="stable")[:TOP_SETTINGS]
    top = [
        {
            "params": _unprefixed(results["params"][i]),
            "mean_test_score": float(results["mean_test_score"][i]),
            "std_test_score": float(results["std_test_score"][i]),
            **({"round": int(results["iter"][i]), "rows": int(results["n_resources"][i])} if "iter" in results else {}),
        }
        for i in order
    ]
    return {
        "method": cand.search.method,
        "scoring": scorer,
        "metric": metric,
        "cv": f"{type(search.cv).__name__}(n_splits={n_splits})",
        "best_params": _unprefixed(search.best_params_),
        "best_score": float(search.best_score_),
        # The metric itself, as evaluation reports it (sklearn negates metrics that improve downwards).
        "best_metric": sign * float(search.best_score_),
        "settings_tried": len(results["params"]),
        "n_fits": len(results["params"]) * n_splits + 1,  # every setting on every fold, plus the refit
        "top": top,
        "search_seconds": round(seconds, 3),
        "refit_seconds": round(float(search.refit_time_), 3),
        "n_jobs": search.n_jobs,
    }


def _unprefixed(params: dict[str, Any]) -> dict[str, Any]:
    return _jsonable({k.removeprefix("model__"): v for k, v in params.items()})


def load_model(store: ArtifactStore, key: str, sha256: str) -> Pipeline:
    """Load a stored model after checking its bytes against the recorded sha256."""
    with store.local_copy(key, expected_sha256=sha256) as path:
        model = joblib.load(path)
    if not isinstance(model, Pipeline):
        raise ArtifactIntegrityError(f"artifact {store.uri(key)} is not a scikit-learn Pipeline")
    return model
