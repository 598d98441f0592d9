"""Batch scoring streams: the demo champion scores 336,776 rows at its model's pace, and ~3.4 M rows in
bounded memory.

Runs bench/score.py for real: the demo champion trained by the real stages, then each scoring run in
its own process (peak RSS: its own VmHWM), one core each. Holding a whole table in memory instead of
chunks would cost ~2.8 GiB at 3.4 M rows (extraction's control measurement, docs/benchmarks.md), so
the growth and 1 GiB bounds catch a non-streaming regression; the overhead bound catches plumbing
(row-at-a-time inserts, per-row conversions) that costs more than the model itself.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

# The module trains the demo champion and scores ~4 M rows: minutes on a busy 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def scoring():
    from bench import score

    score.log_path().write_text("")
    with tempfile.TemporaryDirectory(prefix="mlpipe-test-score-") as tmp:
        home = Path(tmp) / "mlpipe"
        champion = score.train_champion(home)
        runs = {
            "demo": score.measure(home, 1, candidate="hgb", windows=2),
            "small": score.measure(home, 1, candidate="logreg"),
            "large": score.measure(home, score.COPIES, candidate="logreg"),
        }
    return {"champion": champion, **runs}


def test_the_demo_champion_scores_every_row_once(scoring) -> None:
    # The measured model is hgb, the demo's slower-predicting candidate (whichever the year promotes).
    assert scoring["champion"]["candidate"] in {"hgb", "logreg"}, scoring["champion"]
    first, second = scoring["demo"]["windows"]
    assert (first["input_rows"], first["scored"], first["rejected"]) == (336_776, 336_776, 0)
    assert (second["scored"], second["already_scored"]) == (0, 336_776), "a next window finds nothing new"
    large = scoring["large"]["windows"][0]
    assert large["scored"] == 3_367_760 == 10 * 336_776


def test_scoring_costs_little_beyond_the_model(scoring) -> None:
    from bench.score import OVERHEAD_LIMIT, THROUGHPUT_FLOOR

    demo = scoring["demo"]
    window = demo["windows"][0]
    overhead = window["seconds"] / window["timings"]["predict"]
    assert overhead < OVERHEAD_LIMIT, (
        f"a window took {window['seconds']} s for {window['scored']:,} rows, {overhead:.2f}x the time its model "
        f"predicted ({window['timings']}); limit {OVERHEAD_LIMIT}x"
    )
    assert demo["rows_per_second"] > THROUGHPUT_FLOOR, demo["rows_per_second"]


def test_peak_rss_under_1_gib_and_flat_from_336k_to_3_4m_rows(scoring) -> None:
    from bench.score import GROWTH_LIMIT

    small, large, demo = scoring["small"], scoring["large"], scoring["demo"]
    assert large["peak_rss_kib"] < 1 << 20, f"scoring 3.4 M rows peaked at {large['peak_rss_mib']} MiB"
    assert demo["peak_rss_kib"] < 1 << 20, f"the demo champion's window peaked at {demo['peak_rss_mib']} MiB"
    growth = large["peak_rss_kib"] / small["peak_rss_kib"]
    assert growth < GROWTH_LIMIT, (
        f"peak RSS {large['peak_rss_mib']} MiB at 3.4 M rows vs {small['peak_rss_mib']} MiB at 336,776 "
        f"({growth:.2f}x, limit {GROWTH_LIMIT}x): scoring no longer streams"
    )
