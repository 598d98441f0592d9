"""What validation against a reference adds to ``validate_snapshot`` on the whole-year demo, in its own process.

The inputs are the demo's training snapshot as ``extract_snapshot`` writes it (the columns of
``include/sql/flights_delay.sql``, the demo's label), over all 336,776 flights of 2013 from
``mlpipe.demo.load_flights()``: once stored as the champion's training snapshot (the reference, in a
temporary LocalStore, with its sha256 in the champion's lineage), once read back from Parquet as
``validate_snapshot`` hands it over (the new snapshot). A child process (``python -m bench.reference
--child``) then times ``check_against_champion`` with the demo spec, as ``validate_snapshot`` calls
it: finding and reading the reference (sha256-verified), and every check. The extra memory is the
child's VmHWM after the checks (reset with ``/proc/self/clear_refs`` just before) over its RSS before.

Requirements: the reference checks take under 3 s (median of 5 calls, after one warm-up); their
extra peak memory stays under 512 MiB.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import (
    markdown_table,
    measure_in_child,
    mib,
    out_dir,
    requirement,
    requirements_table,
    self_peak_rss_kib,
    self_rss_kib,
)
from bench.monitor import _reset_peak, _trim_heap  # the same measurement as the monitor's

NAME = "reference"
SECONDS_LIMIT = 3.0
EXTRA_PEAK_LIMIT_MIB = 512
REPEATS = 5


def log_path() -> Path:
    return out_dir() / "reference.log"


def measure() -> dict[str, Any]:
    """Run the child; its figures plus the process's wall time."""
    return measure_in_child("bench.reference", "reference checks benchmark", log_path(), timeout=600)


def run() -> dict[str, Any]:
    log_path().write_text("")
    m = measure()
    return {
        **m,
        "requirements": [
            requirement("reference checks on 336,776 rows, median", m["seconds_median"], SECONDS_LIMIT, " s"),
            requirement("their extra peak memory", m["extra_peak_mib"], EXTRA_PEAK_LIMIT_MIB, " MiB"),
        ],
    }


def table(result: dict[str, Any]) -> str:
    rows = [
        (
            f"{result['rows']:,}",
            f"{result['reference_rows']:,}",
            result["checks"],
            result["status"],
            result["seconds_first"],
            result["seconds_median"],
            result["extra_peak_mib"],
        )
    ]
    head = markdown_table(
        ("new rows", "reference rows", "checks", "status", "first call s", f"median of {REPEATS} s", "extra peak MiB"),
        rows,
    )
    return head + "\n\n" + requirements_table(result["requirements"])


def _snapshot_frame() -> Any:
    """The whole year as the demo's query returns it, through Parquet (the dtypes a snapshot has)."""
    import pandas as pd

    from mlpipe.demo import extract_frame, load_flights

    frame = extract_frame(load_flights())
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue(), pd.read_parquet(io.BytesIO(buffer.getvalue()))


def _child(result_file: Path) -> None:
    from mlpipe.registry import ModelVersion
    from mlpipe.spec import find_spec
    from mlpipe.stages.reference import check_against_champion
    from mlpipe.storage import LocalStore

    spec = find_spec("flights_delay").spec
    data, current = _snapshot_frame()
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-reference-store-") as tmp:
        store = LocalStore(Path(tmp))
        stored = store.put_bytes("flights_delay/runs/champion/extract/snapshot.parquet", data)
        del data
        champion = ModelVersion(
            pipeline="flights_delay",
            version=1,
            run_id="bench",
            candidate="hgb",
            estimator="sklearn.ensemble.HistGradientBoostingClassifier",
            params={},
            metrics={},
            data_sha256=stored.sha256,
            data_rows=len(current),
            spec_sha256="0" * 64,
            code_version="bench",
            artifact_key="file:///nowhere",
            artifact_sha256="0" * 64,
            lineage={"snapshot": {"uri": stored.uri, "sha256": stored.sha256, "rows": len(current)}},
        )
        first_started = time.perf_counter()
        report = check_against_champion(spec, store, champion, current)
        first = time.perf_counter() - first_started
        _trim_heap()
        rss_before = self_rss_kib()
        reset = _reset_peak()
        times = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            report = check_against_champion(spec, store, champion, current)
            times.append(time.perf_counter() - started)
        peak = self_peak_rss_kib() if reset else None
    out = {
        "rows": len(current),
        "reference_rows": report.reference_rows,
        "status": report.status,
        "checks": len(report.findings),
        "seconds_first": round(first, 3),
        "seconds_median": round(statistics.median(times), 3),
        "seconds_all": [round(t, 3) for t in times],
        "rss_before_mib": mib(rss_before),
        "extra_peak_mib": mib(peak - rss_before) if peak is not None else None,
    }
    result_file.write_text(json.dumps(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reference")
    parser.add_argument(
        "--child", metavar="RESULT_JSON", type=Path, required=True, help="internal: measure, write figures here"
    )
    args = parser.parse_args(argv)
    _child(args.child)
    return 0


if __name__ == "__main__":
    sys.exit(main())
