"""The gate's error rates on the demo year (bench/gate_errors.py), in a cheaper set-up than the bench's.

Two hgb models on disjoint halves of the latest 80,000 training flights (equal true quality), and a
champion exactly 0.02 ROC AUC worse on the pool than one of them; holdouts of 10,000 of the 67,352
October-December flights. Every round is seeded, so the shares are the same on every run; the bench
itself runs 48 + 24 rounds on four models of the whole train split (docs/benchmarks.md, section 10).
"""

from __future__ import annotations

import pytest

# Loading the year ~5 s, two fits ~5 s, 16 rounds of both gates ~1.5-3 s each: ~45 s on an idle machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

NULL_ROUNDS = 10
IMPROVEMENT_ROUNDS = 6


@pytest.fixture(scope="module")
def errors():
    from bench import gate_errors

    return gate_errors.run(
        null_rounds=NULL_ROUNDS, improvement_rounds=IMPROVEMENT_ROUNDS, train_rows=80_000, parts=2, whole_pool=False
    )


def test_the_interval_gate_meets_the_issues_targets(errors) -> None:
    from bench.gate_errors import FALSE_PROMOTION_LIMIT, TRUE_PROMOTION_FLOOR

    rates = errors["rates"]
    assert errors["holdout_rows"] >= 10_000 and errors["weaker_gap"] == pytest.approx(0.02, abs=1e-4)
    assert rates["null"]["interval"]["false_promotion"]["share"] <= FALSE_PROMOTION_LIMIT, rates["null"]
    assert rates["improvement"]["interval"]["promoted"]["share"] >= TRUE_PROMOTION_FLOOR, rates["improvement"]
    assert all(r["ok"] for r in errors["requirements"])


def test_in_the_null_case_the_point_gate_errs_more_often_than_the_interval_gate(errors) -> None:
    null = errors["rates"]["null"]
    point_errors = null["point"]["false_promotion"]["k"] + null["point"]["slice_rejection"]["k"]
    interval_errors = null["interval"]["false_promotion"]["k"] + null["interval"]["slice_rejection"]["k"]

    assert null["interval"]["slice_rejection"]["k"] <= null["point"]["slice_rejection"]["k"]
    assert null["interval"]["false_promotion"]["k"] <= null["point"]["false_promotion"]["k"]
    assert interval_errors < point_errors, null
