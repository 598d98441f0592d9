"""bench/stack.py's account of a run's wall time: every second is in a task, queued, or neither, once.

The benchmark itself starts the whole stack (`python -m bench stack`, minutes); this checks its
arithmetic on a hand-made run whose answer is known.
"""

from __future__ import annotations

from bench.stack import breakdown, per_task


def ti(task: str, queued: float, start: float, end: float, map_index: int = -1) -> dict:
    return {"task_id": task, "map_index": map_index, "queued": queued, "start": start, "end": end}


RUN = [
    ti("extract_snapshot", 5, 8, 20),
    ti("train_candidates", 22, 23, 50, 0),
    ti("train_candidates", 22, 30, 45, 1),  # in parallel with the other candidate
    ti("promote_model", 55, 56, 90),
]


def test_the_parts_add_up_to_the_wall_time() -> None:
    parts = breakdown(0.0, 100.0, RUN)

    assert parts["in_tasks"] == 12 + 27 + 34  # the overlapping candidates count once
    assert parts["queued_no_task_running"] == 3 + 1 + 1  # 5-8, 22-23, 55-56
    assert parts["scheduling_and_startup"] == 100 - 73 - 5
    assert parts["sum_of_task_durations"] == 12 + 27 + 15 + 34
    assert parts["in_tasks"] + parts["queued_no_task_running"] + parts["scheduling_and_startup"] == parts["total"]


def test_a_task_without_queueing_waits_nothing() -> None:
    """`airflow dags test` runs tasks in its own process: start = queued."""
    parts = breakdown(0.0, 30.0, [ti("extract_snapshot", None, 10, 25)])
    assert (parts["in_tasks"], parts["queued_no_task_running"], parts["scheduling_and_startup"]) == (15, 0, 15)


def test_mapped_instances_are_one_row_from_first_start_to_last_end() -> None:
    tasks = per_task(RUN)
    assert list(tasks) == ["extract_snapshot", "train_candidates", "promote_model"]
    assert tasks["train_candidates"] == {"span": 27, "queue_wait": 1, "instances": 2}
    assert tasks["extract_snapshot"]["queue_wait"] == 3
