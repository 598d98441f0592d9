"""Report rendering on the demo: the evaluation, drift and reference pages and the run summary, timed.

A small trained demo is built first, in temporary homes (``tests/ui/small_demo.py``: the flights of
2013-01-01..21 trained with ``dag.test()``, seven more days fed and trained again with v1 as
champion, the monitor run once). Then, in a fresh child process (so the first render pays what a
task's process pays: reading and compiling templates, or loading them from Jinja2's bytecode cache
once a process has compiled them; Jinja2 itself is imported first, as Airflow has in a task's
process), each report is rendered ``REPEATS`` times from that demo's artifacts:

* the evaluation report of the second run (its verdict, both candidates and champion v1, its
  holdout): :func:`render_evaluation_report`, permutation importance included;
* the drift report of the second run's snapshot against the first's (the spec's numeric and
  categorical features): :func:`render_drift_report`;
* the reference page of the same two snapshots (:func:`compare` once, then :func:`render_html`);
* the run summary of the second run (:func:`render_summary`: reads its JSON artifacts and lays them out).

For the two reports with plots, the page alone is timed too: from the last plot saved (or
permutation importance done) to the page handed to ``write_index``. The figures are the first
render and the median of the others. ``--plugins DIR`` renders with another checkout's
``plugins/`` (the figures before a change) on the same demo. A report only: no bound is enforced.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import REPO, check_child, child_env, markdown_table, migrate_airflow_db, out_dir, run_child

NAME = "reports"
PIPELINE = "flights_delay"
REPEATS = 5
TIMEOUT = 1800
REPORTS = ("evaluation", "drift", "reference", "summary")


def log_path() -> Path:
    return out_dir() / f"{NAME}.log"


class _Clock:
    """Marks when the last plot was saved and when the page reached ``write_index`` (wraps both)."""

    def __init__(self, module: Any) -> None:
        self.module, self.last_plot, self.page_seconds = module, 0.0, 0.0
        save, write = module.save_figure, module.write_index

        def save_figure(*args: Any, **kwargs: Any) -> Any:
            try:
                return save(*args, **kwargs)
            finally:
                self.last_plot = time.perf_counter()

        def write_index(*args: Any, **kwargs: Any) -> Any:
            self.page_seconds = time.perf_counter() - self.last_plot
            return write(*args, **kwargs)

        module.save_figure, module.write_index = save_figure, write_index
        if hasattr(module, "permutation_importance_of"):
            importance = module.permutation_importance_of

            def permutation_importance_of(*args: Any, **kwargs: Any) -> Any:
                try:
                    return importance(*args, **kwargs)
                finally:
                    self.last_plot = time.perf_counter()

            module.permutation_importance_of = permutation_importance_of


def _inputs(home: Path) -> dict[str, Any]:
    """What each report is rendered from, read back from the demo's artifacts."""
    from mlpipe.registry import Registry
    from mlpipe.spec import find_spec
    from mlpipe.stages.features import read_split
    from mlpipe.stages.train import load_model
    from mlpipe.storage import LocalStore

    store = LocalStore(home / "artifacts")
    registry = Registry.from_url(f"sqlite:///{home / 'registry.db'}")
    spec = find_spec(PIPELINE).spec
    runs = [r for r in registry.indexed_runs(PIPELINE) if r["dag_id"] == f"{PIPELINE}_train"]
    first, second = (f"{PIPELINE}/runs/{r['run_key']}" for r in runs[-2:])

    def read(key: str) -> Any:
        return json.loads(store.get_bytes(key))

    def snapshot(prefix: str) -> Any:
        import pandas as pd

        record = read(f"{prefix}/extract/snapshot.json")
        return pd.read_parquet(store.path(record["key"]))

    verdict = read(f"{second}/evaluate/verdict.json")
    features = read(f"{second}/features/manifest.json")
    models = {}
    for name in verdict["candidates"]:
        result = read(f"{second}/train/{name}/result.json")
        models[name] = load_model(store, result["model_key"], result["model_sha256"])
    champion = registry.get_version(PIPELINE, verdict["champion_version"])
    holdout = read_split(store, features["holdout_key"], features["holdout_sha256"])
    return {
        "store": store,
        "registry": registry,
        "spec": spec,
        "run_id": runs[-1]["run_id"],
        "verdict": verdict,
        "models": models,
        "champion": load_model(store, champion.artifact_key, champion.artifact_sha256),
        "X": holdout.drop(columns=[spec.target.column]),
        "y": holdout[spec.target.column],
        "reference": snapshot(first),
        "current": snapshot(second),
    }


def _child(home: Path, result_file: Path) -> None:
    """(Child) render every report REPEATS times; write the seconds of each."""
    import jinja2  # noqa: F401  (a task's process has it: airflow.sdk imports it)

    started = time.perf_counter()
    from mlpipe.stages import drift_report as drift_module
    from mlpipe.stages import evaluation_report as evaluation_module
    from mlpipe.stages.drift import drift_report
    from mlpipe.stages.reference import compare, render_html
    from mlpipe.summary import render_summary

    inputs = _inputs(home)
    imports = time.perf_counter() - started
    spec = inputs["spec"]
    drift = drift_report(
        inputs["reference"], inputs["current"], numeric=spec.features.numeric, categorical=spec.features.categorical
    )
    reference = compare(spec, inputs["reference"], inputs["current"])
    clocks = {"evaluation": _Clock(evaluation_module), "drift": _Clock(drift_module)}
    seconds: dict[str, list[float]] = {name: [] for name in REPORTS}
    pages: dict[str, list[float]] = {"evaluation": [], "drift": []}
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-reports-") as tmp:
        for i in range(REPEATS):
            out = Path(tmp) / str(i)
            step = time.perf_counter()
            evaluation_module.render_evaluation_report(
                spec,
                inputs["verdict"],
                inputs["models"],
                inputs["champion"],
                inputs["X"],
                inputs["y"],
                out / "evaluation",
                title=f"{spec.name}: evaluation",
            )
            seconds["evaluation"].append(time.perf_counter() - step)
            pages["evaluation"].append(clocks["evaluation"].page_seconds)
            step = time.perf_counter()
            drift_module.render_drift_report(
                drift, inputs["reference"], inputs["current"], out / "drift", title="drift"
            )
            seconds["drift"].append(time.perf_counter() - step)
            pages["drift"].append(clocks["drift"].page_seconds)
            step = time.perf_counter()
            render_html(reference)
            seconds["reference"].append(time.perf_counter() - step)
            step = time.perf_counter()
            render_summary(PIPELINE, inputs["store"], inputs["registry"], run_id=inputs["run_id"])
            seconds["summary"].append(time.perf_counter() - step)
    inputs["registry"].dispose()
    result = {
        "plugins": str(Path(evaluation_module.__file__).parents[2]),
        "imports_and_inputs_seconds": round(imports, 2),
        "holdout_rows": len(inputs["y"]),
        "snapshot_rows": [len(inputs["reference"]), len(inputs["current"])],
        "seconds": seconds,
        "page_seconds": pages,
    }
    result_file.write_text(json.dumps(result))


def build_demo(root: Path, log: Path) -> Path:
    """The small trained demo (small_demo.py) in homes under ``root``; returns its MLPIPE_HOME."""
    airflow_home, home = root / "airflow", root / "mlpipe"
    home.mkdir(parents=True)
    migrate_airflow_db(airflow_home, log)
    env = child_env(airflow_home=airflow_home, mlpipe_home=home, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(REPO / "tests" / "ui" / "small_demo.py")]
    check_child(run_child(cmd, env=env, log=log, timeout=TIMEOUT), "the small demo", log)
    return home


def measure(home: Path, *, pythonpath: str | None = None) -> dict[str, Any]:
    """Every report rendered REPEATS times in a fresh child (with ``pythonpath``'s plugins first if given)."""
    log = log_path()
    env = child_env(mlpipe_home=home, OMP_NUM_THREADS="1")
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, env["PYTHONPATH"]])
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-reports-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench.reports", "--child", str(home), str(result_file)]
        check_child(run_child(cmd, env=env, log=log, timeout=TIMEOUT), "rendering the reports", log)
        raw = json.loads(result_file.read_text())
    raw["summary"] = {
        name: {
            "first_seconds": round(values[0], 4),
            "median_seconds": round(statistics.median(values[1:]), 4),
            **(
                {
                    "page_first_seconds": round(raw["page_seconds"][name][0], 4),
                    "page_median_seconds": round(statistics.median(raw["page_seconds"][name][1:]), 4),
                }
                if name in raw["page_seconds"]
                else {}
            ),
        }
        for name, values in raw["seconds"].items()
    }
    return raw


def run(*, before: str | None = None) -> dict[str, Any]:
    log = log_path()
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-reports-demo-") as tmp:
        home = build_demo(Path(tmp), log)
        result: dict[str, Any] = {"after": measure(home)}
        if before:
            result["before"] = measure(home, pythonpath=before)
    return result


def table(result: dict[str, Any]) -> str:
    head = ["report", "version", "first render s", "median s", "page alone, first s", "page alone, median s"]
    rows = []
    for name in REPORTS:
        for version in ("before", "after"):
            if version in result:
                s = result[version]["summary"][name]
                rows.append(
                    [
                        name,
                        version,
                        s["first_seconds"],
                        s["median_seconds"],
                        s.get("page_first_seconds"),
                        s.get("page_median_seconds"),
                    ]
                )
    after = result["after"]
    note = (
        f"{after['holdout_rows']:,} holdout rows; snapshots of {after['snapshot_rows'][0]:,} and "
        f"{after['snapshot_rows'][1]:,} rows; {REPEATS} renders per report in one fresh process."
    )
    return f"{note}\n\n{markdown_table(head, rows)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reports")
    parser.add_argument("--child", nargs=2, type=Path, metavar=("HOME", "RESULT_JSON"), help="internal")
    parser.add_argument("--home", type=Path, help="an MLPIPE_HOME with the small demo already trained")
    parser.add_argument("--plugins", help="also render with the plugins of another checkout (its plugins/ directory)")
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    if args.home:
        result = {"after": measure(args.home)}
        if args.plugins:
            result["before"] = measure(args.home, pythonpath=args.plugins)
    else:
        result = run(before=args.plugins)
    print(table(result))
    print(json.dumps({v: r["summary"] for v, r in result.items()}, indent=2), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
