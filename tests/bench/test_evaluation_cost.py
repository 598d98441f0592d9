"""Evaluation cost: ``evaluate_candidates`` on issue 12's multiclass shape keeps to its stated budget.

Runs bench/evaluation.py for real: a synthetic 10,000-row, 23-column, 7-class frame, split, a
200-iteration HistGradientBoosting trained and evaluated by the real stages in one child process
(one core), twice: as a first run and with that model as the champion. The budget is the larger of
30 % of the training time and 20 s per 10,000 holdout rows (docs/benchmarks.md, section 9); the
evaluation used to take 134-411 s on this shape, most of it permutation importance.
"""

from __future__ import annotations

import re

import pytest

# Training the candidate (~15-40 s on one core) and two evaluations in a child process.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
MIN_SHARE_OF_A_CORE = 0.7


@pytest.fixture(scope="module")
def evaluation():
    from bench import evaluation

    evaluation.log_path().write_text("")
    return evaluation.measure()


def test_the_synthetic_shape_is_the_issues(evaluation) -> None:
    assert evaluation["rows"] == 10_000 and evaluation["raw_columns"] == 23 and evaluation["classes"] == 7
    assert [r["champion_status"] for r in evaluation["runs"]] == ["none", "scored"]
    assert evaluation["runs"][1]["decision"] == "reject", "the same model again is a tie, not an improvement"


def test_evaluate_candidates_keeps_to_its_budget(evaluation) -> None:
    from mlpipe.stages.evaluate import evaluation_budget

    budget = evaluation_budget(evaluation["training_seconds"], evaluation["holdout_rows"])
    log = "\n".join(evaluation["log"])
    unjudged = []
    for run in evaluation["runs"]:
        figures = f"{run['label']}: {run['seconds']} s ({run['cpu_seconds']} CPU s), budget {budget:.1f} s\n{log}"
        # The work itself, whatever the machine's other load: one core's seconds.
        assert run["cpu_seconds"] <= budget, figures
        # The wall time, judged when the evaluation had most of a core (a 2-core machine running other
        # work at a load of 8-10 leaves it a third: its wall time then triples with nothing to fix).
        if run["cpu_seconds"] >= MIN_SHARE_OF_A_CORE * run["seconds"]:
            assert run["seconds"] <= budget, figures
        elif run["seconds"] > budget:
            unjudged.append(figures)
    if unjudged:
        pytest.skip(f"wall time not judged: the machine's other work left < 70 % of a core: {unjudged}")


def test_each_model_predicts_the_holdout_once_and_the_log_shows_each_step(evaluation) -> None:
    log = evaluation["log"]
    first, second = "\n".join(log[: log.index("--- next run, the same model as champion")]), "\n".join(log)
    assert len(re.findall(r"candidate hgb predicted [\d,]+ holdout rows", first)) == 1
    assert len(re.findall(r"predicted [\d,]+ holdout rows", second)) == 3, "hgb once per run, the champion once"
    assert len(re.findall(r"champion v1 predicted [\d,]+ holdout rows", second)) == 1
    for step in ("budget", "slice column(s) measured", "permutation importance of hgb", "report written", "done in"):
        assert step in second, step
    # The paired bootstrap runs when there is a champion to compare with, inside the timed evaluation.
    assert "paired bootstrap" not in first and "paired bootstrap (" in second


def test_the_report_says_how_importance_was_measured(evaluation) -> None:
    for run in evaluation["runs"]:
        page = run["report"]
        measured = re.search(r"On ([\d,]+) of ([\d,]+) holdout rows \(seeded sample\), (\d) shuffles", page)
        skipped = "Not drawn: permutation importance: skipped" in page
        assert measured or skipped, "importance is measured (and how) or skipped with a note"
        if measured:
            assert "importance.png" in page and int(measured.group(3)) >= 3
            table = page[page.index("<h2>Permutation importance") : page.index("<h2>Holdout")]
            columns = re.findall(r'<tr><td>([^<]+)<td class="num">', table)
            assert 0 < len(columns) <= 23 and len(set(columns)) == len(columns)
            assert set(columns) <= {f"x{i:02d}" for i in range(18)} | {
                "c_region",
                "c_channel",
                "c_plan",
                "c_tier",
                "c_flag",
            }, "one row per raw input column: a one-hot encoded column counts once"
