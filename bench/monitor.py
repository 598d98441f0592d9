"""The drift monitor's cost: ``drift_report`` on 1,000,000 current rows, in its own process.

Inputs, built from the real flights of 2013 (``mlpipe.demo.load_flights()``) with the demo spec's
features (numeric: distance; categorical: carrier, origin, dest) and the dtypes the monitor gets
(int64, and pandas ``str`` as ``pd.read_sql`` / Parquet give them):

* reference: 200,000 rows (the monitor's default ``max_reference_rows``) drawn with replacement
  from the flights before 2013-10-01, the period the champion trains on;
* current: 1,000,000 rows drawn with replacement from the flights of 2013-10-01 onwards;
* scores of the same lengths: Beta(2, b) draws whose mean is each period's share of late flights
  (what a calibrated classifier's scores look like: skewed to 0, a long tail towards 1).

A child process (``python -m bench.monitor --child``) loads and builds the inputs, then times
``drift_report`` the way ``check_drift`` calls it (defaults: KS on samples of ``ks_max_sample``
rows), the same report with ``ks_max_sample`` covering all 1,000,000 rows (KS unsampled), and the
report's parts alone over the numeric column and the score: ``psi()``, ``ks()`` sampled and
unsampled, and ``js_distance()`` over the categorical columns. The child's peak RSS comes from
wait4(); the report's own peak is the child's VmHWM reset (``/proc/self/clear_refs``) just before it.

Requirements: the 1M-row report finishes in under 20 s; the child peaks under 1.5 GiB; KS, sampled
as the monitor runs it, costs under 3x PSI (unsampled on 1M rows it measures ~6x).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import (
    check_child,
    child_env,
    markdown_table,
    mib,
    out_dir,
    requirement,
    requirements_table,
    run_child,
    self_peak_rss_kib,
    self_rss_kib,
)

NAME = "monitor"
CURRENT_ROWS = 1_000_000
REFERENCE_ROWS = 200_000  # MonitorSpec.max_reference_rows' default
NUMERIC = ["distance"]
CATEGORICAL = ["carrier", "origin", "dest"]
# The champion trains on the flights before this (the spec holds out the latest 20 %: Oct-Dec).
REFERENCE_BEFORE = "2013-10-01"
SCORE_BETA_A = 2.0
SEED = 42
REPORT_REPEATS = 3
PART_REPEATS = 5
REPORT_LIMIT_SECONDS = 20.0
PEAK_LIMIT_KIB = 3 << 19  # 1.5 GiB
# KS (as drift_report runs it) over PSI, numeric column + score. Sampled KS measures ~0.7x, KS on
# all 1M rows ~6x (docs/benchmarks.md): 3 catches an unsampled KS with room for noise either way.
KS_OVER_PSI_LIMIT = 3.0


def log_path() -> Path:
    return out_dir() / "monitor.log"


@dataclass(frozen=True)
class Inputs:
    reference: Any  # pd.DataFrame, REFERENCE_ROWS x (NUMERIC + CATEGORICAL)
    current: Any  # pd.DataFrame, CURRENT_ROWS x (NUMERIC + CATEGORICAL)
    score_reference: Any  # np.ndarray of len(reference)
    score_current: Any  # np.ndarray of len(current)
    late_share_reference: float
    late_share_current: float


def build_inputs(
    flights: Any, *, current_rows: int = CURRENT_ROWS, reference_rows: int = REFERENCE_ROWS, seed: int = SEED
) -> Inputs:
    """Reference and current frames resampled (with replacement) from ``flights``, and their scores."""
    import numpy as np

    rng = np.random.default_rng(seed)
    columns = [*NUMERIC, *CATEGORICAL]
    before = flights["time_hour"] < REFERENCE_BEFORE
    late = (flights["arr_delay"] >= 15) | flights["arr_delay"].isna()

    def sample(mask: Any, rows: int) -> tuple[Any, Any, float]:
        pool = flights.loc[mask, columns]
        frame = pool.take(rng.integers(0, len(pool), size=rows)).reset_index(drop=True)
        for name in CATEGORICAL:
            frame[name] = frame[name].astype("str")
        share = float(late[mask].mean())
        # Beta(a, b) has mean a / (a + b): b such that the mean score is the period's late share.
        scores = rng.beta(SCORE_BETA_A, SCORE_BETA_A * (1 - share) / share, size=rows)
        return frame, scores, share

    reference, score_reference, share_ref = sample(before, reference_rows)
    current, score_current, share_cur = sample(~before, current_rows)
    return Inputs(reference, current, score_reference, score_current, share_ref, share_cur)


def report_ks_max_sample() -> int:
    """The ``ks_max_sample`` drift_report uses when not told (check_drift does not tell it)."""
    from mlpipe.stages.drift import drift_report

    return inspect.signature(drift_report).parameters["ks_max_sample"].default


def report(inputs: Inputs, *, ks_max_sample: int | None = None) -> Any:
    """``drift_report`` as ``check_drift`` calls it (``ks_max_sample`` only when given)."""
    from mlpipe.stages.drift import drift_report

    extra = {} if ks_max_sample is None else {"ks_max_sample": ks_max_sample}
    return drift_report(
        inputs.reference,
        inputs.current,
        numeric=NUMERIC,
        categorical=CATEGORICAL,
        score_reference=inputs.score_reference,
        score_current=inputs.score_current,
        seed=SEED,
        **extra,
    )


def part_seconds(inputs: Inputs, *, repeats: int = PART_REPEATS, unsampled: bool = True) -> dict[str, float]:
    """Median seconds of the report's parts, repeats interleaved so load hits each part alike.

    ``psi``, ``ks`` (sampled as drift_report samples it) and ``ks_unsampled`` (every row) run over the
    numeric columns and the score; ``js`` over the categorical columns.
    """
    from mlpipe.stages.drift import js_distance, ks, psi

    # As drift_report hands them on: float64 arrays (its _float_array does this conversion).
    pairs = [
        (inputs.reference[n].to_numpy(dtype="float64"), inputs.current[n].to_numpy(dtype="float64")) for n in NUMERIC
    ]
    pairs.append((inputs.score_reference, inputs.score_current))
    max_sample = report_ks_max_sample()
    everything = max(len(inputs.reference), len(inputs.current))
    parts = {
        "psi": lambda: [psi(r, c) for r, c in pairs],
        "ks": lambda: [ks(r, c, max_sample=max_sample, seed=SEED) for r, c in pairs],
        "js": lambda: [js_distance(inputs.reference[n], inputs.current[n]) for n in CATEGORICAL],
    }
    if unsampled:
        parts["ks_unsampled"] = lambda: [ks(r, c, max_sample=everything, seed=SEED) for r, c in pairs]
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(repeats):
        for name, fn in parts.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def measure() -> dict[str, Any]:
    """Run the child; its figures plus wall time and peak RSS of the whole process (wait4)."""
    log = log_path()
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-monitor-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench.monitor", "--child", str(result_file)]
        env = child_env(airflow_home=Path(tmp) / "airflow", mlpipe_home=Path(tmp) / "mlpipe")
        run = check_child(run_child(cmd, env=env, log=log, timeout=600), "drift_report benchmark", log)
        child = json.loads(result_file.read_text())
    # The child resets its VmHWM before each report, which also lowers what wait4 sees: the
    # process's peak is the larger of wait4's figure and the peak the child noted before the resets.
    peak_kib = max(run.max_rss_kib, child["setup_peak_kib"])
    return {**child, "process_seconds": run.seconds, "peak_rss_kib": peak_kib, "peak_rss_mib": mib(peak_kib)}


def run() -> dict[str, Any]:
    log_path().write_text("")
    m = measure()
    parts = m["parts"]
    ratio = round(parts["ks"] / parts["psi"], 2)
    return {
        **m,
        "ks_over_psi": ratio,
        "ks_unsampled_over_psi": round(parts["ks_unsampled"] / parts["psi"], 2),
        "requirements": [
            requirement(
                f"drift_report on {m['current_rows']:,} current rows (first call)",
                m["report_first_seconds"],
                REPORT_LIMIT_SECONDS,
                " s",
            ),
            requirement("peak RSS of the process (inputs + reports)", m["peak_rss_mib"], mib(PEAK_LIMIT_KIB), " MiB"),
            requirement(
                f"KS (sampled, {m['ks_max_sample']:,} rows) / PSI, numeric + score", ratio, KS_OVER_PSI_LIMIT, "x"
            ),
        ],
    }


def table(result: dict[str, Any]) -> str:
    psi_seconds = result["parts"]["psi"]
    held = result["rss_before_report_mib"]

    def above(peak: float | None) -> float | None:
        return None if peak is None else round(peak - held, 1)

    reports = markdown_table(
        (
            "drift_report",
            "ks_max_sample",
            "first call s",
            f"median of {REPORT_REPEATS} s",
            "peak RSS MiB",
            "above the inputs MiB",
            "verdict",
        ),
        [
            (
                "sampled KS (monitor default)",
                f"{result['ks_max_sample']:,}",
                result["report_first_seconds"],
                result["report_seconds"],
                result["report_peak_mib"],
                above(result["report_peak_mib"]),
                result["verdict"],
            ),
            (
                "unsampled KS",
                f"{result['current_rows']:,}",
                "-",
                result["report_unsampled_seconds"],
                result["report_unsampled_peak_mib"],
                above(result["report_unsampled_peak_mib"]),
                result["verdict_unsampled"],
            ),
        ],
    )
    labels = {
        "psi": "psi(): distance + score",
        "ks": f"ks(), sampled to {result['ks_max_sample']:,}: distance + score",
        "ks_unsampled": "ks(), all rows: distance + score",
        "js": "js_distance(): carrier, origin, dest",
    }
    parts = markdown_table(
        ("part", f"median of {PART_REPEATS} s", "x PSI"),
        [(labels[k], round(v, 4), round(v / psi_seconds, 2)) for k, v in result["parts"].items()],
    )
    process = markdown_table(
        ("process", "value"),
        [
            ("load flights s", result["load_seconds"]),
            ("build inputs s", result["build_seconds"]),
            ("RSS after imports MiB", result["rss_after_imports_mib"]),
            ("RSS with the inputs built MiB", result["rss_before_report_mib"]),
            ("peak RSS of the process MiB", result["peak_rss_mib"]),
            ("process s", result["process_seconds"]),
        ],
    )
    return "\n\n".join((reports, parts, process, requirements_table(result["requirements"])))


# -- the child ----------------------------------------------------------------------------------


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc), so RSS before a report is what is live."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _figures(rep: Any) -> dict[str, Any]:
    rows = {r.feature: r for r in [*rep.features, *([rep.score] if rep.score else [])]}
    keep = ("status", "psi", "ks_statistic", "ks_pvalue", "js", "unseen")
    return {name: {k: getattr(r, k) for k in keep if getattr(r, k) is not None} for name, r in rows.items()}


def _child(result_file: Path) -> None:
    import numpy as np  # noqa: F401
    import pandas as pd  # noqa: F401

    from mlpipe.demo import load_flights
    from mlpipe.stages import drift  # noqa: F401  (scipy)

    rss_after_imports = self_rss_kib()
    started = time.perf_counter()
    flights = load_flights()
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    inputs = build_inputs(flights)
    build_seconds = time.perf_counter() - started
    del flights
    gc.collect()
    _trim_heap()
    rss_before = self_rss_kib()
    setup_peak = self_peak_rss_kib()
    inputs_bytes = (
        int(inputs.reference.memory_usage(deep=True).sum())
        + int(inputs.current.memory_usage(deep=True).sum())
        + inputs.score_reference.nbytes
        + inputs.score_current.nbytes
    )

    resettable = _reset_peak()
    started = time.perf_counter()
    first = report(inputs)
    report_first = time.perf_counter() - started
    report_peak = self_peak_rss_kib() if resettable else None
    sampled = []
    for _ in range(REPORT_REPEATS):
        started = time.perf_counter()
        report(inputs)
        sampled.append(time.perf_counter() - started)

    resettable = _reset_peak()
    everything = max(len(inputs.reference), len(inputs.current))
    unsampled = []
    for _ in range(REPORT_REPEATS):
        started = time.perf_counter()
        full = report(inputs, ks_max_sample=everything)
        unsampled.append(time.perf_counter() - started)
    unsampled_peak = self_peak_rss_kib() if resettable else None

    parts = part_seconds(inputs)
    out = {
        "current_rows": len(inputs.current),
        "reference_rows": len(inputs.reference),
        "numeric": NUMERIC,
        "categorical": CATEGORICAL,
        "late_share_reference": round(inputs.late_share_reference, 4),
        "late_share_current": round(inputs.late_share_current, 4),
        "score_mean_reference": round(float(inputs.score_reference.mean()), 4),
        "score_mean_current": round(float(inputs.score_current.mean()), 4),
        "dtypes": {k: str(v) for k, v in inputs.current.dtypes.items()},
        "inputs_mib": mib(inputs_bytes / 1024),
        "ks_max_sample": report_ks_max_sample(),
        "load_seconds": round(load_seconds, 3),
        "build_seconds": round(build_seconds, 3),
        "rss_after_imports_mib": mib(rss_after_imports),
        "rss_before_report_mib": mib(rss_before),
        "setup_peak_kib": setup_peak,
        "setup_peak_mib": mib(setup_peak),
        "report_first_seconds": round(report_first, 3),
        "report_seconds": round(statistics.median(sampled), 3),
        "report_peak_mib": mib(report_peak) if report_peak is not None else None,
        "report_unsampled_seconds": round(statistics.median(unsampled), 3),
        "report_unsampled_peak_mib": mib(unsampled_peak) if unsampled_peak is not None else None,
        "parts": {k: round(v, 4) for k, v in parts.items()},
        "verdict": first.verdict,
        "verdict_unsampled": full.verdict,
        "figures": _figures(first),
        "figures_unsampled": _figures(full),
    }
    result_file.write_text(json.dumps(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.monitor")
    parser.add_argument(
        "--child", metavar="RESULT_JSON", type=Path, required=True, help="internal: measure, write figures here"
    )
    args = parser.parse_args(argv)
    _child(args.child)
    return 0


if __name__ == "__main__":
    sys.exit(main())
