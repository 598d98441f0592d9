"""The bare job: the train DAG's work for one spec in one plain process, with pandas and scikit-learn only.

``python -m bench.bare_job [--spec include/pipelines/flights_delay.yaml] [--source-url URL] [--out FILE]``

What ``<name>_train`` does on a first run (no champion), written plainly, without mlpipe's code or
orchestration (no Airflow, no artifact store, no Parquet between steps, no XCom, no registry):

1. **query**: the spec's SQL file (``source.query``) read through SQLAlchemy with ``:as_of`` bound
   to now (as ``airflow dags test`` binds the run's logical date: every row) and ``source.params``;
2. **checks**: the spec's expectation suite (``validation.suite``, GX JSON) applied *in pandas*, not
   with GX: each expectation type the suites use is a few lines below; an unknown type is an error
   naming it. (The DAG validates with GX; the difference is part of what this comparison measures);
3. **features and split**: the datetime features' calendar parts in their time zone, the time split
   (rows after the ``1 - holdout_fraction`` quantile of ``split.time_column`` held out) or a seeded
   random one, one ``ColumnTransformer`` per encoding (one-hot + scaling for linear models, ordinal
   codes as native categories for tree ensembles), as docs/spec.md describes them;
4. **candidates and search**: each candidate's estimator with its params; a ``search`` is a
   scikit-learn grid or random search over the candidate's space with the time split's
   past-to-future folds (``TimeSeriesSplit``), ranked by the primary metric, refitted on the train split;
5. **metrics and gate**: the primary and secondary metrics of each candidate on the holdout, the
   gate's slices of the best one, ``gate.min_primary``; the best model saved with joblib (promotion).

Single-threaded: OMP/OpenBLAS/MKL threads are set to 1 before numpy loads, the search runs with
``n_jobs=1`` (the DAG's ``MLPIPE_TRAIN_THREADS=1``). Not done here, and done by the DAG: the
evaluation report (plots, permutation importance), Data Docs, lineage, the run index.

It writes a JSON result: seconds per step, rows, the holdout metrics of every candidate (which a test
compares with a DAG run's verdict to 1e-9), the best candidate and the decision.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

STARTED = time.perf_counter()

import joblib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import sqlalchemy as sa  # noqa: E402
import yaml  # noqa: E402
from sklearn import metrics as skm  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, TimeSeriesSplit  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - STARTED

REPO = Path(__file__).resolve().parents[1]
MISSING = "__missing__"
# Estimators that get ordinal codes (trees and the dummy); every other one gets one-hot + scaling.
ORDINAL_MODULES = ("sklearn.tree.", "sklearn.ensemble.", "sklearn.dummy.")
BINARY_METRICS = {
    "roc_auc": lambda y, s: skm.roc_auc_score(y, s),
    "average_precision": lambda y, s: skm.average_precision_score(y, s),
    "log_loss": lambda y, s: skm.log_loss(y, s, labels=[0, 1]),
    "brier": lambda y, s: skm.brier_score_loss(y, s),
}
LOWER_IS_BETTER = {"log_loss", "brier"}


class BareJobError(Exception):
    """The spec asks for something the bare job does not do, or the data fails a check."""


# -- 1. query -----------------------------------------------------------------------------------------


def default_source_url() -> str:
    home = Path(os.environ.get("MLPIPE_HOME") or REPO / ".mlpipe")
    return f"sqlite:///{home.resolve() / 'source.db'}"


def query(spec: dict[str, Any], include: Path, url: str, as_of: datetime) -> pd.DataFrame:
    source = spec["source"]
    if source.get("kind", "sql") != "sql":
        raise BareJobError(f"source.kind: {source.get('kind')!r}; the bare job reads SQL sources only")
    sql = (include / "sql" / source["query"]).read_text()
    engine = sa.create_engine(url)
    naive = as_of.astimezone(UTC).replace(tzinfo=None)
    bound = naive.isoformat(sep=" ") if engine.dialect.name in {"sqlite", "postgresql"} else naive
    params = {**source.get("params", {}), **({"as_of": bound} if ":as_of" in sql else {})}
    try:
        with engine.connect() as conn:
            return pd.read_sql(sa.text(sql), conn, params=params)
    finally:
        engine.dispose()


# -- 2. checks (the suite, in pandas) --------------------------------------------------------------


def check(frame: pd.DataFrame, suite: dict[str, Any]) -> list[str]:
    """The suite's expectations that fail on ``frame``, one line each: the same pandas checks as
    ``bench.gx_cost`` (which holds them to GX's verdicts), ``mostly`` included."""
    from bench.gx_cost import CHECKS

    failed = []
    for i, exp in enumerate(suite["expectations"]):
        kind, kw = exp["type"], exp["kwargs"]
        if "column" in kw and kw["column"] not in frame.columns:
            failed.append(f"expectations[{i}] {kind}: column {kw['column']!r} missing")
            continue
        if kind not in CHECKS:
            raise BareJobError(f"expectations[{i}]: {kind} is not one the bare job checks; add it to bench/gx_cost.py")
        if not CHECKS[kind](frame, kw):
            failed.append(f"expectations[{i}] {kind} {kw}")
    return failed


# -- 3. features and split --------------------------------------------------------------------------


def date_parts(frame: pd.DataFrame, spec: dict[str, Any]) -> tuple[pd.DataFrame, list[list[str]]]:
    """Each datetime feature's calendar parts, in its time zone, as float columns (the raw column dropped)."""
    groups = []
    for dt in spec["features"].get("datetime", []):
        stamps = pd.to_datetime(frame[dt["column"]], utc=True, errors="coerce", format="mixed")
        local = stamps.dt.tz_convert(dt.get("timezone", "UTC")).dt.tz_localize(None)
        names = []
        for part in dt.get("parts", ["month", "day_of_week", "hour"]):
            name = f"{dt['column']}_{part}"
            values = local.dt.day_of_week >= 5 if part == "is_weekend" else getattr(local.dt, part)
            frame[name] = values.astype("float64")
            names.append(name)
        groups.append(names)
    return frame, groups


def split(frame: pd.DataFrame, spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    cfg = spec.get("split", {})
    fraction = cfg.get("holdout_fraction", 0.2)
    if cfg.get("method", "random") != "time":
        raise BareJobError("split.method: the bare job does the time split only")
    stamps = pd.to_datetime(frame[cfg["time_column"]], utc=True, errors="coerce", format="mixed")
    holdout = (stamps > stamps.quantile(1 - fraction)).to_numpy()
    return np.flatnonzero(~holdout), np.flatnonzero(holdout)


def preprocessor(spec: dict[str, Any], onehot: bool, part_groups: list[list[str]]) -> ColumnTransformer:
    feats = spec["features"]
    missing = feats.get("missing", {})
    numeric_impute = {"median": "median", "mean": "mean", "zero": "constant"}[missing.get("numeric", "median")]
    max_cat = feats.get("max_categories")
    steps = []
    if feats.get("categorical"):
        if missing.get("categorical", "constant") == "constant":
            impute = SimpleImputer(strategy="constant", fill_value=MISSING, missing_values=pd.NA)
        else:
            impute = SimpleImputer(strategy="most_frequent", missing_values=pd.NA)
        encode = (
            OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=max_cat)
            if onehot
            else OrdinalEncoder(
                handle_unknown="use_encoded_value",
                unknown_value=-1,
                encoded_missing_value=np.nan,
                max_categories=max_cat,
            )
        )
        steps.append(("categorical", Pipeline([("impute", impute), ("encode", encode)]), feats["categorical"]))
    if feats.get("numeric"):
        num = [("impute", SimpleImputer(strategy=numeric_impute, fill_value=0.0, keep_empty_features=True))]
        if onehot:
            num.append(("scale", StandardScaler()))
        steps.append(("numeric", Pipeline(num), feats["numeric"]))
    for names in part_groups:
        parts = [("impute", SimpleImputer(strategy="most_frequent", keep_empty_features=True))]
        if onehot:
            parts.append(("encode", OneHotEncoder(handle_unknown="ignore")))
        steps.append((names[0], Pipeline(parts), names))
    return ColumnTransformer(steps, remainder="drop")


# -- 4. candidates and search -----------------------------------------------------------------------


def model_for(spec: dict[str, Any], cand: dict[str, Any], part_groups: list[list[str]]) -> Pipeline:
    module, _, name = cand["estimator"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    accepted = set(inspect.signature(cls).parameters)
    params = dict(cand.get("params") or {})
    if "random_state" in accepted:
        params.setdefault("random_state", spec.get("split", {}).get("seed", 42))
    onehot = not cand["estimator"].startswith(ORDINAL_MODULES)
    n_cat = len(spec["features"].get("categorical", []))
    if not onehot and n_cat and "categorical_features" in accepted:
        params.setdefault("categorical_features", list(range(n_cat)))
    return Pipeline([("features", preprocessor(spec, onehot, part_groups)), ("model", cls(**params))])


def fit(spec: dict[str, Any], cand: dict[str, Any], model: Pipeline, X: pd.DataFrame, y: pd.Series) -> Pipeline:
    search = cand.get("search")
    if search is None:
        return model.fit(X, y)
    space = {f"model__{k}": v for k, v in search["space"].items()}
    common = {
        "cv": TimeSeriesSplit(n_splits=search.get("cv", 3)),
        "scoring": search.get("scoring") or spec["metrics"]["primary"],
        "n_jobs": 1,
        "refit": True,
        "error_score": "raise",
    }
    if search.get("method", "grid") == "grid":
        searcher = GridSearchCV(model, space, **common)
    elif search["method"] == "random":
        seed = spec.get("split", {}).get("seed", 42)
        searcher = RandomizedSearchCV(model, space, n_iter=search["n_iter"], random_state=seed, **common)
    else:
        raise BareJobError(f"candidates.{cand['name']}.search.method: {search['method']!r} not done by the bare job")
    return searcher.fit(X, y).best_estimator_


# -- 5. metrics and gate ----------------------------------------------------------------------------


def holdout_metrics(names: list[str], y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    unknown = [n for n in names if n not in BINARY_METRICS]
    if unknown:
        raise BareJobError(f"metrics: {unknown} not computed by the bare job (binary: {sorted(BINARY_METRICS)})")
    return {n: float(BINARY_METRICS[n](y, score)) for n in names}


def slice_metrics(
    spec: dict[str, Any], frame: pd.DataFrame, y: np.ndarray, score: np.ndarray
) -> dict[str, dict[str, float]]:
    """The primary metric on each gate slice with enough rows (the best candidate's; no champion to compare)."""
    primary = spec["metrics"]["primary"]
    out: dict[str, dict[str, float]] = {}
    for s in spec.get("gate", {}).get("slices", []):
        values = frame[s["column"]].astype(object).map(str).where(frame[s["column"]].notna().to_numpy(), "(missing)")
        out[s["column"]] = {}
        for value, rows in values.groupby(values.to_numpy()).indices.items():
            if len(rows) >= s.get("min_rows", 0) and len(set(y[rows].tolist())) == 2:
                out[s["column"]][value] = float(BINARY_METRICS[s.get("metric") or primary](y[rows], score[rows]))
    return out


def run(spec_path: Path, source_url: str, model_out: Path | None, as_of: datetime) -> dict[str, Any]:
    include = spec_path.resolve().parents[1]
    spec = yaml.safe_load(spec_path.read_text())
    target = spec["target"]
    if target.get("task") != "binary":
        raise BareJobError(f"target.task: {target.get('task')!r}; the bare job does binary tasks only")
    seconds: dict[str, float] = {"imports": round(IMPORT_SECONDS, 3)}

    def lap(step: str, since: float) -> float:
        now = time.perf_counter()
        seconds[step] = round(now - since, 3)
        return now

    t = time.perf_counter()
    frame = query(spec, include, source_url, as_of)
    t = lap("query", t)
    suite = json.loads((include / "expectations" / spec["validation"]["suite"]).read_text())
    failed = check(frame, suite)
    if failed:
        raise BareJobError(f"{len(failed)} check(s) failed: " + "; ".join(failed[:5]))
    t = lap("checks", t)
    frame, part_groups = date_parts(frame, spec)
    train_idx, holdout_idx = split(frame, spec)
    label = target["column"]
    positive = target.get("positive_class", 1)
    train, holdout = frame.iloc[train_idx], frame.iloc[holdout_idx]
    y_holdout = (holdout[label].to_numpy() == positive).astype(int)
    t = lap("features_split", t)
    scores: dict[str, dict[str, float]] = {}
    answers: dict[str, np.ndarray] = {}
    models: dict[str, Pipeline] = {}
    names = [spec["metrics"]["primary"], *spec["metrics"].get("secondary", [])]
    for cand in spec["candidates"]:
        models[cand["name"]] = fit(spec, cand, model_for(spec, cand, part_groups), train, train[label])
        t = lap(f"train_{cand['name']}", t)
    for name, model in models.items():
        proba = model.predict_proba(holdout)
        answers[name] = proba[:, list(model.classes_).index(positive)]
        scores[name] = holdout_metrics(names, y_holdout, answers[name])
    primary = spec["metrics"]["primary"]
    sign = -1.0 if primary in LOWER_IS_BETTER else 1.0
    best = max(spec["candidates"], key=lambda c: sign * scores[c["name"]][primary])["name"]
    slices = slice_metrics(spec, holdout, y_holdout, answers[best])
    floor = spec.get("gate", {}).get("min_primary")
    decision = "promote" if floor is None or sign * scores[best][primary] >= sign * floor else "reject"
    t = lap("evaluate", t)
    if decision == "promote" and model_out is not None:
        joblib.dump(models[best], model_out, compress=3)
    lap("promote", t)
    seconds["total"] = round(time.perf_counter() - STARTED, 3)
    return {
        "spec": str(spec_path),
        "rows": len(frame),
        "train_rows": len(train_idx),
        "holdout_rows": len(holdout_idx),
        "checks": len(suite["expectations"]),
        "metrics": scores,
        "slices": slices,
        "best_candidate": best,
        "decision": decision,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_job", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=REPO / "include" / "pipelines" / "flights_delay.yaml")
    parser.add_argument("--source-url", default=None, help="SQLAlchemy URL (default: $MLPIPE_HOME/source.db)")
    parser.add_argument("--out", type=Path, default=None, help="write the result here as JSON (default: stdout)")
    parser.add_argument("--model-out", type=Path, default=None, help="save the promoted model here (joblib)")
    args = parser.parse_args(argv)
    try:
        result = run(args.spec, args.source_url or default_source_url(), args.model_out, datetime.now(UTC))
    except (BareJobError, OSError, KeyError) as exc:
        print(f"bare job on {args.spec}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
