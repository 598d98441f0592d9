"""Validation against a reference adds at most 3 s to ``validate_snapshot`` on the whole-year demo.

Runs bench/reference.py's child for real: ``check_against_champion`` with the demo spec, the champion's
training snapshot (all 336,776 flights of 2013, read back from a store and sha256-verified) against a
new snapshot of the same year; median of 5 calls after a warm-up, and the extra peak RSS of the calls.
On the 2-core reference machine (docs/benchmarks.md) a call takes ~1.5 s and adds ~100 MiB.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

SECONDS_LIMIT = 3.0
EXTRA_PEAK_LIMIT_MIB = 512


@pytest.fixture(scope="module")
def measured():
    from bench import reference

    return reference.measure()


def test_reference_checks_on_the_whole_year_take_under_3_s(measured) -> None:
    assert measured["rows"] == measured["reference_rows"] == 336_776
    assert measured["status"] == "passed" and measured["checks"] > 20, "every check ran, none stopped"
    assert measured["seconds_median"] < SECONDS_LIMIT, (
        f"the reference checks took {measured['seconds_median']} s (median of {measured['seconds_all']}) "
        f"on {measured['rows']:,} rows (limit {SECONDS_LIMIT} s)"
    )


def test_their_extra_memory_stays_bounded(measured) -> None:
    assert measured["extra_peak_mib"] is not None, "no /proc/self/clear_refs: cannot measure the peak"
    assert measured["extra_peak_mib"] < EXTRA_PEAK_LIMIT_MIB, (
        f"the reference checks peaked {measured['extra_peak_mib']} MiB over the RSS before them "
        f"(limit {EXTRA_PEAK_LIMIT_MIB} MiB)"
    )
