"""Evaluation cost: ``evaluate_candidates`` on a synthetic multiclass pipeline, against its budget.

The shape is the one issue 12 measured 134-411 s of evaluation on: 10,000 rows, 23 raw columns (18
numeric, 5 categorical, one of them with ~50 values), 7 classes, a 200-iteration
HistGradientBoosting candidate. The data is built here: scikit-learn's ``make_classification``
(18 numeric columns, 7 classes, seeded), plus 5 categorical columns derived from its informative
columns with noise (so they matter to the model): 50, 12, 6, 4 and 3 values.

In a fresh child process (OMP_NUM_THREADS=1, one core as one worker slot would give it), the real
stages run on a local store: the frame is stored as the snapshot, ``build_features`` splits it
(random, stratified, 25 % holdout), ``train_candidate`` fits the candidate, and ``evaluate_candidates``
is timed twice: as a first run (no champion), and as the next run on unchanged data, with that model
as the champion (scored on the holdout too: two prediction passes plus importance). The gate has a
slice rule on the 50-value column and judges on 95 % paired bootstrap intervals (the second run's
bootstrap is part of the timed evaluation). The stage's log lines (each model's pass, slices, importance,
report) are kept with the figures.

``--demo`` measures the whole-year demo the same way (report only): the flights_delay stages on the
336,776 flights of 2013 (bench/score.py's training child: extract, features, both candidates,
evaluation as a first run, promotion), then ``evaluate_candidates`` again on that run's holdout with
the promoted model as champion, as the next night's run on unchanged data would.
``--plugins DIR`` measures another checkout's ``plugins/`` (the figures before a change).

The bound is the evaluation's stated budget (:func:`mlpipe.stages.evaluate.evaluation_budget`): the
larger of 30 % of the run's training time and 20 s per 10,000 holdout rows (at least 20 s).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import check_child, child_env, markdown_table, out_dir, requirement, requirements_table, run_child

NAME = "evaluation"
ROWS = 10_000
NUMERIC = 18
CLASSES = 7
ITERATIONS = 200
# Categorical columns: name -> number of values (the first is the "one with ~50 values").
CATEGORICAL = {"c_region": 50, "c_channel": 12, "c_plan": 6, "c_tier": 4, "c_flag": 3}
HOLDOUT_FRACTION = 0.25
SEED = 7
TIMEOUT = 1800


def log_path() -> Path:
    return out_dir() / "evaluation.log"


def synthetic_frame(rows: int = ROWS, seed: int = SEED) -> Any:
    """The synthetic multiclass frame: ``id``, 18 numeric ``x00``.. columns, 5 categorical, ``label``."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=rows,
        n_features=NUMERIC,
        n_informative=10,
        n_redundant=4,
        n_classes=CLASSES,
        n_clusters_per_class=2,
        class_sep=0.8,
        random_state=seed,
    )
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(X, columns=[f"x{i:02d}" for i in range(NUMERIC)])
    for j, (name, values) in enumerate(CATEGORICAL.items()):
        # Quantile bins of an informative column, one in five rows moved to a random value.
        signal = X[:, j] + rng.normal(scale=0.5, size=rows)
        codes = np.searchsorted(np.quantile(signal, np.linspace(0, 1, values + 1)[1:-1]), signal)
        noise = rng.random(rows) < 0.2
        codes[noise] = rng.integers(0, values, size=int(noise.sum()))
        frame[name] = [f"{name[2:]}_{c:02d}" for c in codes]
    frame.insert(0, "id", np.arange(rows))
    frame["label"] = [f"k{c}" for c in y]
    return frame


def spec_dict() -> dict[str, Any]:
    return {
        "name": "synthetic",
        "description": "Bench: 7 classes from 18 numeric and 5 categorical columns (make_classification).",
        "owner": "bench",
        "source": {"query": "synthetic.sql", "chunk_rows": 10_000},
        "target": {"column": "label", "task": "multiclass"},
        "features": {"numeric": [f"x{i:02d}" for i in range(NUMERIC)], "categorical": list(CATEGORICAL)},
        "split": {"method": "random", "holdout_fraction": HOLDOUT_FRACTION, "seed": SEED},
        "candidates": [
            {
                "name": "hgb",
                "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
                "params": {"max_iter": ITERATIONS, "early_stopping": False},
            }
        ],
        "metrics": {"primary": "f1_macro", "secondary": ["accuracy", "log_loss", "roc_auc_ovr"]},
        "gate": {
            # With a champion, evaluate_candidates also runs the paired bootstrap: within the budget too.
            "confidence": 0.95,
            "min_improvement": 0.001,
            "max_regression": {"log_loss": 0.05},
            "slices": [{"column": "c_region", "max_regression": 0.05, "min_rows": 30}],
        },
        "validation": {"suite": "synthetic.json"},
    }


def _child(result_file: Path, rows: int) -> None:
    """(Child) snapshot -> features -> train -> evaluate twice (first run, then with a champion)."""
    import joblib

    from mlpipe.registry import ModelVersion
    from mlpipe.spec import LoadedSpec, parse_spec
    from mlpipe.stages.evaluate import evaluate_candidates
    from mlpipe.stages.features import build_features
    from mlpipe.stages.train import train_candidate
    from mlpipe.storage import LocalStore

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.relativeCreated / 1000:8.2f} s  {record.getMessage()}")

    for name in ("mlpipe.stages.evaluate", "mlpipe.stages.evaluation_report"):
        logging.getLogger(name).addHandler(Keep())
        logging.getLogger(name).setLevel(logging.INFO)

    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-evaluation-") as tmp:
        root = Path(tmp)
        spec = parse_spec(spec_dict(), root / "synthetic.yaml")
        (root / "synthetic.json").write_text('{"name": "synthetic", "expectations": []}\n')
        suite = root / "synthetic.json"
        loaded = LoadedSpec(spec=spec, path=root / "synthetic.yaml", query_path=None, suite_path=suite)
        store = LocalStore(root / "store")
        frame = synthetic_frame(rows)
        frame.to_parquet(root / "snapshot.parquet", index=False)
        snap = store.put_file(f"{spec.name}/snapshots/bench/snapshot.parquet", root / "snapshot.parquet")
        feats = build_features(loaded, store, run_key="bench", snapshot_key=snap.key, snapshot_sha256=snap.sha256)
        trained = [
            train_candidate(
                loaded,
                store,
                run_key="bench",
                candidate=c.name,
                train_key=feats.train_key,
                train_sha256=feats.train_sha256,
            )
            for c in spec.candidates
        ]
        runs = []
        champion = None
        for label in ("first run, no champion", "next run, the same model as champion"):
            lines.append(f"--- {label}")
            started, cpu = time.perf_counter(), time.process_time()
            verdict = evaluate_candidates(
                loaded,
                store,
                run_id=f"bench_{len(runs)}",
                run_key=f"bench_{len(runs)}",
                holdout_key=feats.holdout_key,
                holdout_sha256=feats.holdout_sha256,
                trained=trained,
                champion=champion,
                champion_seq=len(runs),
            )
            runs.append(
                {
                    "label": label,
                    "seconds": round(time.perf_counter() - started, 2),
                    "cpu_seconds": round(time.process_time() - cpu, 2),
                    "decision": verdict.decision,
                    "champion_status": verdict.champion_status,
                    "metrics": verdict.candidates["hgb"],
                    "report": store.path(store.key_of(verdict.report_uri)).read_text(),
                }
            )
            t = trained[0]
            # The champion: the same model stored again with other compression, so its artifact
            # differs from the candidate's (as an earlier run's model would) and it is loaded and
            # scored on its own, not answered by the byte-identical candidate.
            joblib.dump(joblib.load(store.path(t.model_key)), root / "champion.joblib", compress=1)
            artifact = store.put_file(f"{spec.name}/models/champion.joblib", root / "champion.joblib")
            champion = ModelVersion(
                pipeline=spec.name,
                version=1,
                run_id="bench_0",
                candidate="hgb",
                estimator=t.estimator,
                params=t.params,
                metrics=verdict.candidates["hgb"],
                data_sha256=snap.sha256,
                data_rows=rows,
                spec_sha256="bench",
                code_version="bench",
                artifact_key=artifact.key,
                artifact_sha256=artifact.sha256,
            )
    result = {
        "rows": rows,
        "train_rows": feats.train_rows,
        "holdout_rows": feats.holdout_rows,
        "raw_columns": len(spec.features.columns),
        "classes": CLASSES,
        "training_seconds": sum(t.fit_seconds for t in trained),
        "runs": runs,
        "log": lines,
    }
    result_file.write_text(json.dumps(result))


def _env(**homes: Path) -> dict[str, str]:
    """One core, as one worker slot; and bytecode kept, as in any installed environment (with
    PYTHONDONTWRITEBYTECODE set, each child would compile matplotlib & co. from source: seconds of
    the first evaluation that no deployment pays)."""
    env = child_env(**homes, OMP_NUM_THREADS="1", MLPIPE_TRAIN_THREADS="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def measure(rows: int = ROWS, *, pythonpath: str | None = None) -> dict[str, Any]:
    """Run the child (``pythonpath`` first on its path: measure another checkout's plugins)."""
    log = log_path()
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-evaluation-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench.evaluation", "--child", str(result_file), "--rows", str(rows)]
        env = _env(mlpipe_home=Path(tmp) / "mlpipe")
        if pythonpath:
            env["PYTHONPATH"] = os.pathsep.join([pythonpath, env["PYTHONPATH"]])
        run = check_child(run_child(cmd, env=env, log=log, timeout=TIMEOUT), "evaluation benchmark", log)
        child = json.loads(result_file.read_text())
    return {**child, "process_seconds": run.seconds}


def run(rows: int = ROWS) -> dict[str, Any]:
    from mlpipe.stages.evaluate import evaluation_budget

    log_path().write_text("")
    m = measure(rows)
    budget = round(evaluation_budget(m["training_seconds"], m["holdout_rows"]), 1)
    for r in m["runs"]:
        r.pop("report", None)  # kept out of the JSON; the test reads it from measure()
    return {
        **m,
        "budget_seconds": budget,
        "requirements": [
            requirement(
                f"evaluate_candidates, {r['label']} ({m['holdout_rows']:,} holdout rows, {m['raw_columns']} raw "
                f"columns, {m['classes']} classes; training {m['training_seconds']:.1f} s)",
                r["seconds"],
                budget,
                " s",
            )
            for r in m["runs"]
        ],
    }


def table(result: dict[str, Any]) -> str:
    rows = [
        (
            r["label"],
            r["seconds"],
            r["cpu_seconds"],
            result["budget_seconds"],
            r["champion_status"],
            f"{r['metrics']['f1_macro']:.4f}",
        )
        for r in result["runs"]
    ]
    head = ("evaluate_candidates", "s", "CPU s", "budget s", "champion", "f1_macro")
    note = (
        f"{result['rows']:,} rows ({result['train_rows']:,} train, {result['holdout_rows']:,} holdout), "
        f"{result['raw_columns']} raw columns, {result['classes']} classes; training the {ITERATIONS}-iteration "
        f"HistGradientBoosting took {result['training_seconds']:.1f} s."
    )
    steps = "\n".join(f"    {line}" for line in result["log"])
    reqs = requirements_table(result["requirements"])
    return f"{note}\n\n{markdown_table(head, rows)}\n\nThe stage's log:\n\n{steps}\n\n{reqs}"


def _demo_again(home: Path, result_file: Path) -> None:
    """(Child) the demo run's evaluation again, with the model it promoted as champion."""
    os.environ["MLPIPE_HOME"] = str(home)
    from bench.score import PIPELINE, TRAIN_RUN_ID
    from mlpipe import config, layout
    from mlpipe.contracts import TrainedCandidate
    from mlpipe.registry import Registry
    from mlpipe.spec import find_spec
    from mlpipe.stages.evaluate import evaluate_candidates
    from mlpipe.storage import LocalStore, run_key

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.relativeCreated / 1000:8.2f} s  {record.getMessage()}")

    for name in ("mlpipe.stages.evaluate", "mlpipe.stages.evaluation_report"):
        logging.getLogger(name).addHandler(Keep())
        logging.getLogger(name).setLevel(logging.INFO)
    loaded = find_spec(PIPELINE)
    store, key = LocalStore(config.default_store_root()), run_key(TRAIN_RUN_ID)
    registry = Registry.from_url(config.default_registry_url())
    feats = json.loads(store.get_bytes(layout.features_manifest(PIPELINE, key)))
    trained = [
        TrainedCandidate.from_xcom(json.loads(store.get_bytes(layout.candidate_result(PIPELINE, key, c.name))))
        for c in loaded.spec.candidates
    ]
    started = time.perf_counter()
    verdict = evaluate_candidates(
        loaded,
        store,
        run_id="manual__again",
        run_key=run_key("manual__again"),
        holdout_key=feats["holdout_key"],
        holdout_sha256=feats["holdout_sha256"],
        trained=trained,
        champion=registry.champion(PIPELINE),
        champion_seq=registry.champion_seq(PIPELINE),
    )
    result = {
        "seconds": round(time.perf_counter() - started, 2),
        "champion_status": verdict.champion_status,
        "holdout_rows": feats["holdout_rows"],
        "training_seconds": sum(t.fit_seconds for t in trained),
        "metrics": verdict.candidates,
        "log": lines,
    }
    result_file.write_text(json.dumps(result))


def measure_demo(*, pythonpath: str | None = None) -> dict[str, Any]:
    """The whole-year demo: its first run's evaluation, then the next run's (with a champion)."""
    from bench.extract_memory import source_db

    log = log_path()
    db, _ = source_db(1)
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-evaluation-demo-") as tmp:
        home = Path(tmp) / "mlpipe"
        home.mkdir()
        (home / "source.db").symlink_to(db)
        env = _env()
        if pythonpath:
            env["PYTHONPATH"] = os.pathsep.join([pythonpath, env["PYTHONPATH"]])
        first_file, again_file = Path(tmp) / "first.json", Path(tmp) / "again.json"
        cmd = [sys.executable, "-m", "bench.score", "--train", str(home), str(first_file)]
        check_child(run_child(cmd, env=env, log=log, timeout=TIMEOUT), "the whole-year demo run", log)
        cmd = [sys.executable, "-m", "bench.evaluation", "--demo-again", str(home), str(again_file)]
        check_child(run_child(cmd, env=env, log=log, timeout=TIMEOUT), "the demo's evaluation with a champion", log)
        first, again = json.loads(first_file.read_text()), json.loads(again_file.read_text())
    return {"first_run_seconds": first["evaluate_seconds"], "next_run": again}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.evaluation")
    parser.add_argument("--child", metavar="RESULT_JSON", type=Path, help="internal: measure, write figures here")
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--plugins", help="measure the plugins of another checkout (its plugins/ directory)")
    parser.add_argument("--demo", action="store_true", help="measure the whole-year demo's evaluation instead")
    parser.add_argument("--demo-again", nargs=2, type=Path, metavar=("HOME", "RESULT_JSON"), help="internal")
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.rows)
        return 0
    if args.demo_again:
        _demo_again(*args.demo_again)
        return 0
    if args.demo:
        print(json.dumps(measure_demo(pythonpath=args.plugins), indent=2))
        return 0
    m = measure(args.rows, pythonpath=args.plugins)
    print("\n".join(m.pop("log")), file=sys.stderr)
    for r in m["runs"]:
        r.pop("report")
    print(json.dumps(m, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
