"""Tuning the demo's candidates: mapped on 2 workers beats one after another, and re-runs choose alike.

Runs bench/tuning.py for real: make demo's data split by the real stages, then ``train_candidate``
for logreg (its 3-value grid on C, 3 time-ordered folds: 10 fits) and hgb, sequentially in one
process and mapped in one process per candidate, alternately. The speed bound needs two free cores:
on a machine busy enough that fewer are free (measured with the same CPU-bound work run alone and
twice at once), it is skipped with the figures rather than failed.
"""

from __future__ import annotations

import pytest

# Set-up ~12 s, then two rounds of both ways: ~1 min idle, 2 min on a busy 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def tuning():
    from bench import tuning

    return tuning.run(rounds=2)


def test_the_demo_search_budget_is_what_the_spec_says(tuning) -> None:
    for way in tuning["runs"].values():
        for run in way:
            assert run["candidates"]["logreg"]["n_fits"] == 3 * 3 + 1, "3 values of C x 3 folds, plus the refit"
            assert run["candidates"]["hgb"]["n_fits"] == 1 and run["candidates"]["hgb"]["best_params"] is None
    assert tuning["searches"] == {"logreg": {"method": "grid", "space": {"C": [0.1, 1.0, 10.0]}, "cv": 3}}


def test_every_run_chooses_the_same_setting_and_scores_it_the_same(tuning) -> None:
    runs = [r for way in tuning["runs"].values() for r in way]
    assert len(runs) == 4
    chosen = {(r["candidates"]["logreg"]["best_params"]["C"], r["candidates"]["logreg"]["best_metric"]) for r in runs}
    assert len(chosen) == 1, chosen
    assert tuning["same_best_params_every_run"]


def test_mapped_on_two_workers_is_faster_than_one_after_another(tuning) -> None:
    from bench.tuning import MIN_FREE_CORES, SPEEDUP_LIMIT

    figures = (
        f"mapped {tuning['mapped_seconds']} s vs sequential {tuning['sequential_seconds']} s "
        f"(ratio {tuning['ratio']}, limit {SPEEDUP_LIMIT}); free cores {tuning['free_cores']}"
    )
    if min(tuning["free_cores"].values()) < MIN_FREE_CORES:
        pytest.skip(f"fewer than {MIN_FREE_CORES} cores free, the two workers would share one: {figures}")
    assert tuning["ratio"] < SPEEDUP_LIMIT, figures
