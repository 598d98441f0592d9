"""Tuning wall time: the demo's candidates (logreg with its search, hgb) one after another vs mapped on 2 workers.

The data is what ``make demo`` trains on: ``python -m mlpipe demo seed`` (January-February 2013,
51,801 flights) extracted and split by the real stages into a temporary MLPIPE_HOME (set-up, not
measured). Then, on those same train-split artifacts, each way of training runs ``train_candidate``
for the spec's candidates exactly as the ``train_candidates`` task does:

* **sequential**: one worker process trains every candidate, one after the other;
* **mapped, 2 workers**: one process per candidate, all started at once, as a distributed executor
  with two free slots runs the mapped task instances.

A run's wall time is from starting its process(es) to the last one's exit, so each way pays the
interpreter and library imports its processes need (once, or once per process), as workers do.
Every process gets one core's worth of threads (OMP_NUM_THREADS=1, MLPIPE_TRAIN_THREADS=1, the
default), as one worker slot would: the parallelism measured is the mapping's, not the libraries'.
The ways alternate over ``ROUNDS`` rounds (each writing under its own run key, so no fit is reused)
and the medians are compared: the training (after the imports) of the mapped run's slowest worker
over the sequential process's, the wall times, and the mapped wall time over its slowest worker's
own; judged when the mapped workers' CPU seconds over wall seconds show they really ran at once (at
least ``MIN_PARALLELISM``; a machine busy with other work may leave them one core between them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import check_child, child_env, markdown_table, out_dir, requirement, requirements_table, run_child

NAME = "tuning"
PIPELINE = "flights_delay"
ROUNDS = 3
# The training itself (after the imports): the mapped run's slowest worker over the sequential
# process training both. The demo's candidates are unequal (logreg's 10-fit search ~3x hgb's fit),
# so the ideal is logreg / (logreg + hgb), ~0.75 (the sequential process also reads the split twice):
# measured 0.53-0.87 (the high end in a full `make test`). The bound sits below 1.0, where the
# workers would have trained one after the other, with room for the noise above the ideal.
TRAINING_LIMIT = 0.95
# Mapped wall time over sequential wall time, imports included. Each worker repeats the imports
# (pandas, scikit-learn: 6-9 s on the reference VM, more than the demo's training), so the best
# possible is (imports + slowest) / (imports + both), ~0.9: measured 0.72-0.95. The bound says
# mapping costs no more than training in turn, with room for the run-to-run noise.
SPEEDUP_LIMIT = 1.05
# Mapped wall time over its slowest worker's own imports + training: the workers do not slow each
# other down (1.0 would be perfect; process start and exit add a little).
SLOWEST_LIMIT = 1.25
# The speed bound is judged only when the mapped workers really ran at once: their CPU seconds over
# the wall time at least this (2.0 = both busy throughout). On a machine whose other work leaves
# them one core, no gain is possible, and the bound is reported as not judged rather than failed.
MIN_PARALLELISM = 1.6
TIMEOUT = 900


def log_path() -> Path:
    return out_dir() / "tuning.log"


def _env(home: Path) -> dict[str, str]:
    return child_env(mlpipe_home=home, OMP_NUM_THREADS="1", MLPIPE_TRAIN_THREADS="1")


def prepare(home: Path) -> dict[str, Any]:
    """(Set-up) seed the demo's source into ``home`` and build its features; the feature set's dict."""
    log = log_path()
    home.mkdir(parents=True, exist_ok=True)
    out = home / "features.json"
    cmd = [sys.executable, "-m", "bench.tuning", "--prepare", str(home), str(out)]
    check_child(run_child(cmd, env=_env(home), log=log, timeout=TIMEOUT), "seeding and building features", log)
    return json.loads(out.read_text())


def _train_cmd(home: Path, run: str, candidates: list[str]) -> list[str]:
    return [sys.executable, "-m", "bench.tuning", "--train", str(home), run, *candidates]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sequential(home: Path, run: str, candidates: list[str]) -> dict[str, Any]:
    """One process trains every candidate in turn; its wall time and what each fit recorded."""
    log = log_path()
    cpu = _children_cpu()
    child = check_child(
        run_child(_train_cmd(home, run, candidates), env=_env(home), log=log, timeout=TIMEOUT), "sequential", log
    )
    return {
        "seconds": child.seconds,
        "cpu_seconds": round(_children_cpu() - cpu, 3),
        "processes": _timings(home, run),
        "candidates": _results(home, run, candidates),
    }


def mapped(home: Path, run: str, candidates: list[str]) -> dict[str, Any]:
    """One process per candidate, all at once (2 candidates: 2 workers); wall time to the last exit."""
    log = log_path()
    cpu = _children_cpu()
    with open(log, "ab") as out:
        started = time.perf_counter()
        procs = [
            subprocess.Popen(_train_cmd(home, run, [c]), env=_env(home), stdout=out, stderr=subprocess.STDOUT)
            for c in candidates
        ]
        codes = [p.wait(timeout=TIMEOUT) for p in procs]
        seconds = round(time.perf_counter() - started, 3)
    if any(codes):
        raise RuntimeError(f"mapped training failed with exit codes {codes} (log: {log})")
    return {
        "seconds": seconds,
        # CPU seconds of the processes over the wall time: ~2 when both workers really ran at once.
        "cpu_seconds": round(_children_cpu() - cpu, 3),
        "workers": len(candidates),
        "processes": _timings(home, run),
        "candidates": _results(home, run, candidates),
    }


def _timings(home: Path, run: str) -> list[dict[str, float]]:
    """What each process of a run spent importing (pandas, scikit-learn, mlpipe) and training."""
    return [json.loads(p.read_text()) for p in sorted(home.glob(f"timing-{run}-*.json"))]


def _results(home: Path, run: str, candidates: list[str]) -> dict[str, Any]:
    from mlpipe.storage import run_key

    out = {}
    for name in candidates:
        path = home / "artifacts" / PIPELINE / "runs" / run_key(run) / "train" / name / "result.json"
        result = json.loads(path.read_text())
        search = result.get("search") or {}
        out[name] = {
            "fit_seconds": result["fit_seconds"],
            "search_seconds": search.get("search_seconds"),
            "n_fits": search.get("n_fits", 1),
            "best_params": search.get("best_params"),
            "best_metric": search.get("best_metric"),
            "model_sha256": result["model_sha256"],
        }
    return out


def run(rounds: int = ROUNDS) -> dict[str, Any]:
    log_path().write_text("")
    from mlpipe.spec import find_spec

    spec = find_spec(PIPELINE).spec
    candidates = [c.name for c in spec.candidates]
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-tuning-") as tmp:
        home = Path(tmp) / "mlpipe"
        started = time.perf_counter()
        features = prepare(home)
        setup_seconds = round(time.perf_counter() - started, 1)
        load_before = os.getloadavg()
        runs: dict[str, list[dict[str, Any]]] = {"sequential": [], "mapped": []}
        for i in range(rounds):
            runs["sequential"].append(sequential(home, f"manual__sequential{i}", candidates))
            runs["mapped"].append(mapped(home, f"manual__mapped{i}", candidates))
        load_after = os.getloadavg()
    searched = {
        c.name: {"method": c.search.method, "space": c.search.model_dump(mode="json")["space"], "cv": c.search.cv}
        for c in spec.candidates
        if c.search is not None
    }
    return {
        "spec": PIPELINE,
        "train_rows": features["train_rows"],
        "candidates": candidates,
        "searches": searched,
        "setup_seconds": setup_seconds,
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
        "runs": runs,
        **judge(runs),
    }


def judge(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    seq = statistics.median(r["seconds"] for r in runs["sequential"])
    par = statistics.median(r["seconds"] for r in runs["mapped"])
    ratio = round(par / seq, 3)
    # Same data, same spec, same seeds: every round picks the same settings and writes the same model.
    picks = {json.dumps({n: c["best_params"] for n, c in r["candidates"].items()}) for w in runs.values() for r in w}
    parallelism = round(statistics.median(r["cpu_seconds"] / r["seconds"] for r in runs["mapped"]), 2)
    slowest = round(
        statistics.median(
            r["seconds"] / max(p["imports"] + p["training"] for p in r["processes"]) for r in runs["mapped"]
        ),
        3,
    )
    training = round(
        statistics.median(max(p["training"] for p in r["processes"]) for r in runs["mapped"])
        / statistics.median(r["processes"][0]["training"] for r in runs["sequential"]),
        3,
    )
    timed = [
        requirement("training: mapped's slowest worker / sequential (medians)", training, TRAINING_LIMIT, "x"),
        requirement("mapped on 2 workers / sequential, wall time (median of rounds)", ratio, SPEEDUP_LIMIT, "x"),
        requirement("mapped wall time / its slowest worker's imports + training (median)", slowest, SLOWEST_LIMIT, "x"),
    ]
    if parallelism < MIN_PARALLELISM:
        for req in timed:
            req.update(ok=True, requirement=f"{req['requirement']}: not judged, workers ran {parallelism}x at once")
    return {
        "sequential_seconds": round(seq, 3),
        "mapped_seconds": round(par, 3),
        "ratio": ratio,
        "training_ratio": training,
        "mapped_over_slowest_worker": slowest,
        "mapped_parallelism": parallelism,
        "judged": parallelism >= MIN_PARALLELISM,
        "same_best_params_every_run": len(picks) == 1,
        "requirements": [
            *timed,
            requirement("runs that chose other settings than the first", float(len(picks) - 1), 0.5),
        ],
    }


def table(result: dict[str, Any]) -> str:
    rows = []
    for way, runs in result["runs"].items():
        for i, r in enumerate(runs):
            cells = [
                f"{name} {c['fit_seconds']} s ({c['n_fits']} fit{'s' if c['n_fits'] > 1 else ''})"
                for name, c in r["candidates"].items()
            ]
            procs = "; ".join(f"{p['imports']} + {p['training']}" for p in r["processes"])
            busy = round(r["cpu_seconds"] / r["seconds"], 2)
            rows.append((way if i == 0 else "", i + 1, r["seconds"], busy, procs, "; ".join(cells)))
    head = (
        "way",
        "round",
        "wall s",
        "CPU s / wall s",
        "each process: imports + training s",
        "each candidate's fit_seconds",
    )
    first = next(iter(result["runs"]["sequential"]))["candidates"]
    best = "; ".join(
        f"{n}: {c['best_params']} (cv {c['best_metric']:.4f})" for n, c in first.items() if c["best_params"]
    )
    note = (
        f"{result['train_rows']:,} train rows; searches {json.dumps(result['searches'])}; chosen {best}. "
        f"Sequential median {result['sequential_seconds']} s, mapped median {result['mapped_seconds']} s "
        f"(ratio {result['ratio']}; training alone {result['training_ratio']}); "
        f"mapped workers' CPU s / wall s {result['mapped_parallelism']} (median); "
        f"load average {result['load_average']['before'][0]} before, {result['load_average']['after'][0]} after; "
        f"set-up {result['setup_seconds']} s (not measured)."
    )
    return markdown_table(head, rows) + "\n\n" + note + "\n\n" + requirements_table(result["requirements"])


# -- children ----------------------------------------------------------------------------------------


def _prepare(home: Path, out: Path) -> None:
    """(Child) seed the demo source (make demo's months), extract it and split it as the DAG would."""
    import sqlalchemy as sa

    from mlpipe import config
    from mlpipe.demo import seed_flights
    from mlpipe.spec import find_spec
    from mlpipe.stages.extract import extract_snapshot
    from mlpipe.stages.features import build_features
    from mlpipe.storage import LocalStore, run_key

    seed_flights(home)
    loaded = find_spec(PIPELINE)
    store, key = LocalStore(config.default_store_root()), run_key("manual__setup")
    engine = sa.create_engine(config.default_source_url())
    snap = extract_snapshot(
        loaded, engine, store, run_key=key, as_of=datetime.fromisoformat("2026-01-01T00:00:00+00:00")
    )
    engine.dispose()
    feats = build_features(loaded, store, run_key=key, snapshot_key=snap.key, snapshot_sha256=snap.sha256)
    out.write_text(json.dumps(feats.to_xcom()))


def _train(home: Path, run: str, candidates: list[str]) -> None:
    """(Child) ``train_candidate`` for each of ``candidates`` in turn, on the set-up's features."""
    started = time.perf_counter()
    from mlpipe import config
    from mlpipe.spec import find_spec
    from mlpipe.stages.train import train_candidate
    from mlpipe.storage import LocalStore, run_key

    imported = time.perf_counter()
    feats = json.loads((home / "features.json").read_text())
    loaded, store = find_spec(PIPELINE), LocalStore(config.default_store_root())
    for name in candidates:
        train_candidate(
            loaded,
            store,
            run_key=run_key(run),
            candidate=name,
            train_key=feats["train_key"],
            train_sha256=feats["train_sha256"],
        )
    timing = {"imports": round(imported - started, 3), "training": round(time.perf_counter() - imported, 3)}
    (home / f"timing-{run}-{'-'.join(candidates)}.json").write_text(json.dumps(timing))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tuning")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--prepare", nargs=2, metavar=("HOME", "FEATURES_JSON"), help="internal: set-up")
    group.add_argument("--train", nargs="+", metavar="ARG", help="internal: HOME RUN_ID CANDIDATE...")
    args = parser.parse_args(argv)
    if args.prepare:
        _prepare(Path(args.prepare[0]), Path(args.prepare[1]))
    else:
        home, run, *candidates = args.train
        _train(Path(home), run, candidates)
    return 0


if __name__ == "__main__":
    sys.exit(main())
