"""GX's cost in ``validate_snapshot`` on the whole-year demo stays bounded, with one Data Docs page.

Runs bench/gx_cost.py's child for real on all 336,776 flights of 2013: the suite as validate_frame runs
it now and as it ran before (SUMMARY, GX's Data Docs action), and the same checks in pandas. CPU
seconds, not wall: the machine is shared. On the 2-core reference machine (docs/benchmarks.md) a call
takes ~1 s of CPU and the pandas checks a fraction of it.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

CPU_LIMIT = 20.0


@pytest.fixture(scope="module")
def measured():
    from bench import gx_cost

    return gx_cost.measure()


def test_gx_and_pandas_draw_the_same_verdicts(measured) -> None:
    import json

    from mlpipe.config import include_dir

    suite = json.loads((include_dir() / "expectations" / "flights_delay.json").read_text())
    variants, count = measured["variants"], len(suite["expectations"])
    assert measured["rows"] == 336_776 and measured["expectations"] == count
    assert measured["agree"], {k: v["failed_on_broken"] for k, v in variants.items()}
    assert variants["now"]["passed"] == count, "the real year passes the suite"
    assert variants["now"]["failed_on_broken"] == "origin, distance", "the broken copy fails where it was broken"


def test_validate_frame_renders_one_page_within_its_cpu_budget(measured) -> None:
    now, before = measured["variants"]["now"], measured["variants"]["before"]
    assert (now["docs_pages"], before["docs_pages"]) == (1, 3), "the result's page only; before: + suite page, index"
    assert now["cpu_median"] < CPU_LIMIT, f"validate_frame took {now['cpu_median']} s of CPU (limit {CPU_LIMIT} s)"


def test_the_same_checks_in_pandas_cost_less_than_gx(measured) -> None:
    variants = measured["variants"]
    assert variants["pandas"]["cpu_median"] < variants["now_no_docs"]["cpu_median"], variants
