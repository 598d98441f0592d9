"""Extraction streams: ~3.4 M source rows extract in under 1 GiB, and the peak does not grow with the table.

Runs bench/extract_memory.py for real (each extraction in its own process, peak RSS from wait4):
the 336,776 flights of 2013 and the same table enlarged ten times (built once, cached in bench/out/).
Reading the table in one piece instead of chunks measures ~2.8 GiB at 3.4 M rows, 11x the streamed
336,776-row peak (docs/benchmarks.md), so both bounds below catch a non-streaming regression.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

GIB_KIB = 1 << 20


@pytest.fixture(scope="module")
def extraction():
    from bench import extract_memory

    return {"small": extract_memory.measure(1), "large": extract_memory.measure(extract_memory.COPIES)}


def test_extracts_every_row_of_the_enlarged_table(extraction) -> None:
    from bench.extract_memory import BASE_ROWS, COPIES

    assert extraction["small"]["rows"] == BASE_ROWS == 336_776
    assert extraction["large"]["rows"] == COPIES * BASE_ROWS == 3_367_760
    # Chunks really are chunks: one Parquet row group per chunk of the spec's chunk_rows.
    large = extraction["large"]
    assert large["row_groups"] == -(-large["rows"] // large["chunk_rows"]), large


def test_peak_rss_under_1_gib_on_3_4_million_rows(extraction) -> None:
    large = extraction["large"]
    assert large["peak_rss_kib"] < GIB_KIB, (
        f"extracting {large['rows']:,} rows peaked at {large['peak_rss_mib']} MiB (limit 1024 MiB)"
    )


def test_peak_rss_does_not_grow_with_the_table(extraction) -> None:
    from bench.extract_memory import GROWTH_LIMIT

    small, large = extraction["small"], extraction["large"]
    growth = large["peak_rss_kib"] / small["peak_rss_kib"]
    assert growth < GROWTH_LIMIT, (
        f"peak RSS {large['peak_rss_mib']} MiB at {large['rows']:,} rows vs {small['peak_rss_mib']} MiB at "
        f"{small['rows']:,} rows ({growth:.2f}x, limit {GROWTH_LIMIT}x): extraction no longer streams"
    )
