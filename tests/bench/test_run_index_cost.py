"""The Models view's cost stays flat as history grows: 1,000 runs of one pipeline on S3, pages ≤ 0.3 s.

Runs bench/run_index.py's measurement on the session's moto server (real HTTP, the real boto3 client
of S3Store): 1,000 runs' ``run.json`` in the bucket and their index rows written in bulk, 40
promoted versions; then the overview and the pipeline page, which read the run index. Besides
the time, the S3 requests one view sends are counted: a page that listed or read the runs again
would send thousands.
"""

from __future__ import annotations

import pytest

from bench.run_index import LIMIT_SECONDS, RUNS, measure


@pytest.fixture(scope="module")
def measured(s3_endpoint: str):
    return measure(s3_endpoint, runs=RUNS, repeats=3, scan=False)


def test_the_history_is_a_thousand_runs(measured) -> None:
    assert measured["runs"] == 1000 and measured["versions"] == 40 and measured["runs_shown"] == 25


@pytest.mark.parametrize("view", ["overview", "pipeline_page"])
def test_a_view_takes_at_most_0_3_s(measured, view) -> None:
    assert measured[view]["median_s"] <= LIMIT_SECONDS, measured[view]


def test_views_send_no_request_per_run(measured) -> None:
    # The pipeline page reads only the registry; the overview lists the runs of the two specs without
    # any run (an empty index is rebuilt when the store has runs): one LIST each, whatever the history.
    assert measured["pipeline_page"]["s3_requests"] == 0, measured["pipeline_page"]
    assert measured["overview"]["s3_requests"] <= 2, measured["overview"]
    assert set(measured["overview"]["s3_operations"]) <= {"ListObjectsV2", "HeadObject"}, measured["overview"]
