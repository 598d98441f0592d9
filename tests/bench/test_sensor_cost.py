"""The new-data watch is cheap while nothing arrives: one statement per check, a few ms with the index.

Runs bench/sensor.py's child for real on the 336,776-row demo source (cached in bench/out/, seeded
on first use) with the watermark at the newest row, calling ``count_new_rows`` as the sensor and the
trigger do (a fresh engine per check) and on one pooled engine, and counting statements with a
SQLAlchemy ``before_cursor_execute`` listener. On the 2-core reference machine a check takes ~1.3 ms
with the index (docs/benchmarks.md). Without it SQLite scans the table, ~33 ms here: still under
50 ms at this size, so the query plan is asserted as well.
"""

from __future__ import annotations

import pytest

CHECKS = 20
LIMIT_MS = 50.0


@pytest.fixture(scope="module")
def indexed():
    from bench import sensor

    return sensor.measure(sensor.source_db(), checks=CHECKS)


def test_the_source_is_the_full_demo_table_with_its_index(indexed) -> None:
    assert indexed["rows"] == 336_776
    assert "ix_flights_time_hour" in indexed["indexes"], indexed["indexes"]


@pytest.mark.parametrize("mode", ["fresh", "pooled"])
def test_exactly_one_statement_per_check(indexed, mode) -> None:
    counts = indexed[mode]["statements_per_check"]
    assert len(counts) == CHECKS + 1
    assert set(counts) == {1}, f"statements per check ({mode} engine): {counts}; statement: {indexed['statement']}"


def test_a_check_with_nothing_new_takes_under_50_ms(indexed) -> None:
    # The fresh-engine figure is what the sensor and the trigger pay per check (engine set-up included).
    for mode in ("fresh", "pooled"):
        median = indexed[mode]["median_ms"]
        assert median < LIMIT_MS, f"median check ({mode} engine) took {median:.1f} ms (limit {LIMIT_MS} ms)"


def test_the_check_searches_the_index_instead_of_scanning(indexed) -> None:
    from bench.sensor import searches_index

    plan = indexed["plan"]
    assert searches_index(plan), f"count_new_rows' query does not search ix_flights_time_hour for every read: {plan}"


def test_without_the_index_it_is_still_one_statement_but_a_scan(tmp_path) -> None:
    from bench import sensor

    bare = sensor.measure(sensor.without_index(sensor.source_db(), tmp_path / "no-index.db"), checks=3)
    assert bare["indexes"] == []
    assert set(bare["fresh"]["statements_per_check"]) == {1}
    assert any(step.startswith("SCAN") for step in bare["plan"]), bare["plan"]
