"""Training: fit one candidate (feature pipeline + estimator) on the train split and store it.

The stored artifact is one fitted scikit-learn ``Pipeline``, written with joblib and published
atomically with its sha256; loading verifies that hash first.
"""

from __future__ import annotations

import importlib
import inspect
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import joblib
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags

from mlpipe.errors import ArtifactIntegrityError, SpecError
from mlpipe.spec import ESTIMATORS, CandidateSpec, LoadedSpec, PipelineSpec
from mlpipe.stages.features import build_preprocessor, read_split
from mlpipe.storage import ArtifactStore

MODEL_FILE = "model.joblib"


@dataclass(frozen=True)
class TrainedCandidate:
    candidate: str
    estimator: str
    params: dict[str, Any]
    model_key: str
    model_uri: str
    model_sha256: str
    train_rows: int
    fit_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise SpecError(source, [f"candidates.{cand.name}.params: {exc}"]) from None


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


def candidate_prefix(pipeline: str, run_key: str, candidate: str) -> str:
    return f"{pipeline}/runs/{run_key}/train/{candidate}"


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
    prefix = candidate_prefix(spec.name, run_key, candidate)
    result_key = f"{prefix}/result.json"
    if store.exists(result_key):
        done = TrainedCandidate(**json.loads(store.get_bytes(result_key)))
        if store.exists(done.model_key) and store.sha256(done.model_key) == done.model_sha256:
            return done
    started = time.perf_counter()
    train = read_split(store, train_key, train_sha256)
    model = build_model(spec, cand, str(loaded.path))
    y = train[spec.target.column]
    X = train.drop(columns=[spec.target.column])
    model.fit(X, y)
    fit_seconds = round(time.perf_counter() - started, 3)
    with tempfile.TemporaryDirectory(prefix="mlpipe-train-") as tmp:
        path = Path(tmp) / MODEL_FILE
        joblib.dump(model, path, compress=3)
        artifact = store.put_file(f"{prefix}/{MODEL_FILE}", path)
    result = TrainedCandidate(
        candidate=cand.name,
        estimator=cand.estimator,
        params=_jsonable(model.named_steps["model"].get_params(deep=False)),
        model_key=artifact.key,
        model_uri=artifact.uri,
        model_sha256=artifact.sha256,
        train_rows=len(train),
        fit_seconds=fit_seconds,
    )
    store.put_bytes(result_key, json.dumps(result.as_dict(), indent=2).encode())
    return result


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (str, int, float, bool, type(None), list)) else repr(v) for k, v in params.items()}


def load_model(store: ArtifactStore, key: str, sha256: str) -> Pipeline:
    """Load a stored model after checking its bytes against the recorded sha256."""
    with store.local_copy(key, expected_sha256=sha256) as path:
        model = joblib.load(path)
    if not isinstance(model, Pipeline):
        raise ArtifactIntegrityError(f"artifact {store.uri(key)} is not a scikit-learn Pipeline")
    return model
