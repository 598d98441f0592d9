"""Validation against a reference (stages/reference.py) on small synthetic flights: each check passes
on a clean, independently drawn sample and stops its own corruption, naming column, figure and limit."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlpipe.demo import WEATHER_FEATURES, extract_frame, join_weather, load_weather
from mlpipe.errors import DataValidationError, ReferenceValidationError, SpecError
from mlpipe.registry import ModelVersion
from mlpipe.spec import load_spec, parse_spec
from mlpipe.stages.reference import (
    EXAMPLE_CHARS,
    check_against_champion,
    compare,
    raise_for_report,
    write_report,
)
from mlpipe.storage import LocalStore

REPO = Path(__file__).resolve().parents[2]
PIPELINES = REPO / "include" / "pipelines"
ROWS = 4_000
CARRIERS = {"AA": 0.15, "B6": 0.3, "DL": 0.2, "EV": 0.35, "UA": 0.25, "WN": 0.3}
DESTS = {f"D{i:02d}": 200 + 150 * i for i in range(20)}


@pytest.fixture(scope="module")
def spec():
    return load_spec(PIPELINES / "flights_delay.yaml").spec


def flights(seed: int, rows: int = ROWS) -> pd.DataFrame:
    """Flights-shaped rows: the late rate depends on the carrier, the distance on the destination."""
    rng = np.random.default_rng(seed)
    carrier = rng.choice(list(CARRIERS), size=rows)
    dest = rng.choice(list(DESTS), size=rows)
    hours = rng.integers(5, 23, size=rows)
    frame = pd.DataFrame(
        {
            "id": np.arange(seed * 100_000, seed * 100_000 + rows, dtype="int64"),
            "time_hour": [f"2013-01-{1 + i % 28:02d} {h:02d}:00:00" for i, h in enumerate(hours)],
            "carrier": carrier,
            "origin": rng.choice(["EWR", "JFK", "LGA"], size=rows),
            "dest": dest,
            "distance": np.array([DESTS[d] for d in dest]) + rng.integers(0, 10, size=rows),
            "sched_dep_time": hours * 100 + rng.integers(0, 59, size=rows),
            "sched_arr_time": ((hours + 2) % 24) * 100,
            "is_late": (rng.random(rows) < np.array([CARRIERS[c] for c in carrier])).astype("int64"),
        }
    )
    frame = join_weather(frame, load_weather())  # January's real weather, as flights_delay.sql joins it
    buffer = io.BytesIO()  # the dtypes a snapshot read from Parquet has (str columns)
    frame.to_parquet(buffer, index=False)
    return pd.read_parquet(io.BytesIO(buffer.getvalue()))


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return flights(1)


@pytest.fixture
def current() -> pd.DataFrame:
    return flights(2)


def failed(report) -> dict[tuple[str, str | None], Any]:
    return {(f.check, f.column): f for f in report.failures}


def test_a_clean_independent_sample_passes_every_check(spec, reference, current) -> None:
    report = compare(spec, reference, current)
    assert report.status == "passed", [f.detail for f in report.failures]
    kinds = {f.check for f in report.findings}
    assert kinds == {
        "duplicates",
        "null_share",
        "target_shift",
        "segment_shift",
        "unseen_categories",
        "distance",
        "out_of_range",
        "leakage",
    }
    distances = {f.column for f in report.findings if f.check == "distance"}
    features = {"carrier", "origin", "dest", "distance", *WEATHER_FEATURES}
    assert distances == features, "every feature but the datetime one"
    json.dumps(report.as_dict(), allow_nan=False)


def test_unseen_categories_stop_naming_column_share_limit_and_examples(spec, reference, current) -> None:
    current.loc[current.index[: ROWS // 10], "dest"] = "ZZZ"
    finding = failed(compare(spec, reference, current))[("unseen_categories", "dest")]
    assert finding.figure == pytest.approx(0.1)
    assert "'dest'" in finding.detail and "10.00 %" in finding.detail and "limit 2.00 %" in finding.detail
    assert "ZZZ (400 rows)" in finding.detail


def test_a_renamed_category_stops_as_unseen(spec, reference, current) -> None:
    current.loc[current["carrier"] == "UA", "carrier"] = "United"
    finding = failed(compare(spec, reference, current))[("unseen_categories", "carrier")]
    assert "United (" in finding.detail and finding.figure > 0.1


def test_a_few_new_categories_are_natural_drift(spec, reference, current) -> None:
    current.loc[current.index[:20], "dest"] = "NEW"  # 0.5 %: a new route
    assert ("unseen_categories", "dest") not in failed(compare(spec, reference, current))


def test_a_jump_in_a_null_share_stops(spec, reference, current) -> None:
    current["distance"] = current["distance"].astype("float64")
    current.loc[current.index[::5], "distance"] = np.nan
    finding = failed(compare(spec, reference, current))[("null_share", "distance")]
    assert "0.00 % -> 20.00 %" in finding.detail and "limit 5.00 %" in finding.detail


def test_a_shift_of_the_target_rate_stops(spec, reference, current) -> None:
    # What "arr_delay NULL in 30 % of rows" does through the demo's label: those rows become late.
    current.loc[current.sample(frac=0.3, random_state=0).index, "is_late"] = 1
    finding = failed(compare(spec, reference, current))[("target_shift", "is_late")]
    assert finding.figure > 0.15
    assert "target 'is_late': share of class" in finding.detail and "limit 0.1)" in finding.detail


def test_labels_flipped_for_one_carrier_stop_on_that_carrier(spec, reference, current) -> None:
    flipped = current["carrier"] == "AA"
    current.loc[flipped, "is_late"] = 1 - current.loc[flipped, "is_late"]
    finding = failed(compare(spec, reference, current))[("segment_shift", "carrier")]
    assert "carrier = AA" in finding.detail and "limit 0.25" in finding.detail
    assert finding.figure > 0.5


def test_duplicated_rows_under_new_ids_stop(spec, reference, current) -> None:
    copies = current.sample(frac=0.2, random_state=0).copy()
    copies["id"] += 10_000_000
    grown = pd.concat([current, copies], ignore_index=True)
    finding = failed(compare(spec, reference, grown))[("duplicates", None)]
    assert finding.figure == pytest.approx(0.2 / 1.2)
    assert "16.67 % of rows" in finding.detail and "key columns ['id']" in finding.detail
    assert len(finding.examples) == 5 and all(x.startswith("id=") for x in finding.examples)


def test_the_duplicate_check_does_not_ignore_ids_it_was_not_told_about(spec, reference, current) -> None:
    """Without score.key the id column is data: rows with new ids are no duplicates."""
    no_key = spec.model_copy(update={"score": None})
    copies = current.sample(frac=0.2, random_state=0).copy()
    copies["id"] += 10_000_000
    report = compare(no_key, reference, pd.concat([current, copies], ignore_index=True))
    assert ("duplicates", None) not in failed(report)


def test_a_category_that_now_encodes_the_label_is_leakage(spec, reference, current) -> None:
    # The issue's corruption: dest = 'UNK' exactly where the label is late (here for 5 % of the rows).
    leaked = current.index[(current["is_late"] == 1).to_numpy()][:200]
    current.loc[leaked, "dest"] = "UNK"
    findings = failed(compare(spec, reference, current))
    leak = findings[("leakage", "dest")]
    assert "dest = UNK (200 rows, 5.00 %) has one class in 100.00 % of its rows" in leak.detail
    assert "reference: absent or rare" in leak.detail
    assert ("unseen_categories", "dest") in findings


def test_an_existing_value_that_becomes_pure_is_leakage(spec, reference, current) -> None:
    current.loc[current["origin"] == "JFK", "is_late"] = 1
    leak = failed(compare(spec, reference, current))[("leakage", "origin")]
    assert "origin = JFK" in leak.detail and "100.00 %" in leak.detail and "reference: " in leak.detail


def test_a_numeric_sentinel_for_the_label_is_leakage(spec, reference, current) -> None:
    leaked = current.index[(current["is_late"] == 1).to_numpy()][:200]
    current.loc[leaked, "distance"] = 0
    findings = failed(compare(spec, reference, current))
    assert "distance = <out of reference range> (200 rows" in findings[("leakage", "distance")].detail


def test_a_rescaled_numeric_column_stops_on_range_and_distance(spec, reference, current) -> None:
    current["distance"] = current["distance"] * 100
    findings = failed(compare(spec, reference, current))
    out = findings[("out_of_range", "distance")]
    assert "100.00 % of rows outside [0, " in out.detail and out.examples
    assert findings[("distance", "distance")].figure > 1.0


def test_a_sign_the_reference_never_had_is_out_of_range(spec, reference, current) -> None:
    current.loc[current.sample(frac=0.25, random_state=0).index, "distance"] = -1
    out = failed(compare(spec, reference, current))[("out_of_range", "distance")]
    assert "25.00 % of rows outside [0," in out.detail and "not across 0" in out.detail and out.examples == ["-1.0"]


def test_miles_read_as_kilometres_stop_on_distance(spec, reference, current) -> None:
    current["distance"] = (current["distance"] * 1.609).round()
    finding = failed(compare(spec, reference, current))[("distance", "distance")]
    assert finding.figure > 0.5 and "stops above 0.5" in finding.detail


def test_drift_is_reported_but_stops_only_far_above_the_monitors_limit(spec, reference, current) -> None:
    """Half the EWR flights move to JFK: the monitor would act (JS > 0.1), validation only reports it."""
    moved = current.index[(current["origin"] == "EWR").to_numpy()][::2]
    current.loc[moved, "origin"] = "JFK"
    report = compare(spec, reference, current)
    assert report.status == "passed", [f.detail for f in report.failures]
    (origin,) = [f for f in report.findings if f.check == "distance" and f.column == "origin"]
    assert 0.1 < origin.figure < 0.5 and "stops above 0.5" in origin.detail


def test_limits_come_from_the_spec(spec, reference, current) -> None:
    current.loc[current.index[:20], "dest"] = "NEW"
    strict = spec.validation.reference.model_copy(update={"max_unseen_share": 0.001})
    finding = failed(compare(spec, reference, current, settings=strict))[("unseen_categories", "dest")]
    assert "limit 0.10 %" in finding.detail


def test_regression_target_mean_shift_stops(reference) -> None:
    spec = load_spec(PIPELINES / "diabetes.yaml").spec
    rng = np.random.default_rng(0)
    columns = [*spec.features.numeric]

    def patients(n: int) -> pd.DataFrame:
        frame = pd.DataFrame(rng.normal(size=(n, len(columns))), columns=columns)
        frame["progression"] = 150 + 50 * frame["bmi"] + rng.normal(scale=30, size=n)
        return frame

    ref, cur = patients(442), patients(442)
    assert compare(spec, ref, cur).status == "passed"
    cur["progression"] *= 3
    finding = failed(compare(spec, ref, cur))[("target_shift", "progression")]
    assert "reference sd, limit 0.5" in finding.detail


def test_multiclass_class_shares_are_compared(reference) -> None:
    spec = load_spec(PIPELINES / "wine.yaml").spec
    rng = np.random.default_rng(0)

    def wines(n: int, p: list[float]) -> pd.DataFrame:
        frame = pd.DataFrame(rng.normal(size=(n, len(spec.features.numeric))), columns=spec.features.numeric)
        frame[spec.target.column] = rng.choice([0, 1, 2], size=n, p=p)
        return frame

    ref = wines(178, [0.33, 0.4, 0.27])
    assert compare(spec, ref, wines(178, [0.33, 0.4, 0.27])).status == "passed", "178 rows: noise is not a stop"
    finding = failed(compare(spec, ref, wines(178, [0.8, 0.1, 0.1])))[("target_shift", spec.target.column)]
    assert "share of class" in finding.detail


# -- the reference, the error and the report ----------------------------------------------------


def champion_with(snapshot: dict[str, Any] | None) -> ModelVersion:
    return ModelVersion(
        pipeline="flights_delay",
        version=3,
        run_id="scheduled__2026-03-01",
        candidate="logreg",
        estimator="sklearn.linear_model.LogisticRegression",
        params={},
        metrics={},
        data_sha256="0" * 64,
        data_rows=ROWS,
        spec_sha256="0" * 64,
        code_version="test",
        artifact_key="file:///nowhere",
        artifact_sha256="0" * 64,
        lineage={"snapshot": snapshot} if snapshot else {},
    )


def stored_snapshot(store: LocalStore, frame: pd.DataFrame) -> dict[str, Any]:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    stored = store.put_bytes("flights_delay/runs/old/extract/snapshot.parquet", buffer.getvalue())
    return {"uri": stored.uri, "sha256": stored.sha256, "rows": len(frame), "as_of": "2026-03-01T00:00:00"}


def test_first_run_compares_with_nothing_and_says_so(spec, current, tmp_path: Path) -> None:
    report = check_against_champion(spec, LocalStore(tmp_path), None, current)
    assert report.status == "no_reference" and report.findings == []
    assert report.summary_line() == "no reference: no champion yet (first run), nothing to compare with"
    raise_for_report(report)  # nothing to raise


def test_a_champion_without_a_snapshot_or_with_a_lost_one_is_no_reference(spec, current, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    report = check_against_champion(spec, store, champion_with(None), current)
    assert report.summary_line() == "no reference: champion v3 recorded no training snapshot"
    gone = {"uri": store.uri("flights_delay/runs/old/extract/snapshot.parquet"), "sha256": "0" * 64}
    report = check_against_champion(spec, store, champion_with(gone), current)
    assert report.status == "no_reference" and "no longer exists" in report.note and gone["uri"] in report.note


def test_the_champions_snapshot_is_the_reference(spec, reference, current, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    champion = champion_with(stored_snapshot(store, reference))
    report = check_against_champion(spec, store, champion, current)
    assert report.status == "passed" and report.reference["version"] == 3
    assert report.summary_line().startswith(f"passed: {len(report.findings)} checks against v3's snapshot (4,000 rows")


def test_a_failed_report_raises_one_bounded_data_error_listing_each_failed_check(
    spec, reference, current, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path)
    champion = champion_with(stored_snapshot(store, reference))
    current.loc[current.index[:400], "dest"] = "X" * 50_000  # a 50 kB code
    current.loc[current.sample(frac=0.3, random_state=0).index, "is_late"] = 1
    report = check_against_champion(spec, store, champion, current)
    uris = write_report(store, "flights_delay/runs/new/validate", report)
    with pytest.raises(ReferenceValidationError) as caught:
        raise_for_report(report, uris["html_uri"])
    assert isinstance(caught.value, DataValidationError), "the data-invalid type: no retries"
    message = str(caught.value)
    assert message.startswith("data changed its meaning against v3's snapshot (run scheduled__2026-03-01): ")
    assert "unseen categories in 'dest'" in message and "target 'is_late'" in message
    assert message.endswith(f"full report: {uris['html_uri']}")
    assert len(message) < 4096, len(message)
    assert {f["check"] for f in caught.value.failures} >= {"unseen_categories", "target_shift"}

    data = json.loads((tmp_path / "flights_delay/runs/new/validate/reference.json").read_text())
    assert data["status"] == "failed" and data["failed"] == len(report.failures) and data["checks"] > 20
    unseen = next(f for f in data["findings"] if f["check"] == "unseen_categories" and f["column"] == "dest")
    assert unseen["examples"] and all(len(x) <= EXAMPLE_CHARS + 20 for x in unseen["examples"])
    assert (tmp_path / "flights_delay/runs/new/validate/reference.json").stat().st_size < 64_000
    page = (tmp_path / "flights_delay/runs/new/validate/reference.html").read_text()
    assert "Validation against the reference" in page and "unseen_categories" in page and "is_late" in page


def test_the_error_message_stays_short_however_many_checks_fail() -> None:
    failures = [
        {"check": "null_share", "column": f"c{i}", "detail": f"null share of 'c{i}': " + "x" * 5_000} for i in range(40)
    ]
    message = str(ReferenceValidationError("v1's snapshot", failures, "file:///r.html"))
    assert len(message) < 4096 and "… and 30 more" in message and message.count("\n  - ") == 11


def test_a_typo_in_validation_reference_is_a_spec_error_naming_the_field() -> None:
    import yaml

    path = PIPELINES / "flights_delay.yaml"
    data = yaml.safe_load(path.read_text())
    data["validation"]["reference"] = {"max_unseen_shares": 0.1}
    with pytest.raises(SpecError, match=r"validation\.reference\.max_unseen_shares: unknown field"):
        parse_spec(data, path)
    data["validation"]["reference"] = {"max_unseen_share": 2}
    with pytest.raises(SpecError, match=r"validation\.reference\.max_unseen_share"):
        parse_spec(data, path)


# -- the demo's real flights ------------------------------------------------------------------------


@pytest.mark.slow
def test_the_seasons_of_2013_are_drift_not_corruption_and_the_issues_faults_are(spec, flights_frame) -> None:
    """Against a champion trained on the demo's seed (January-February), every later state of the fed
    source passes, while the issue's corruptions of the seed stop on the check that names them."""
    frame = flights_frame.sort_values(["time_hour", "id"], kind="mergesort").reset_index(drop=True)
    snapshot = extract_frame(frame)  # with the weather at the origin, from winter to winter
    seed = snapshot[snapshot["time_hour"] < "2013-03-01"]
    for until in ("2013-04-01", "2013-06-01", "2013-08-01", "2013-10-01", "2014-01-01"):
        report = compare(spec, seed, snapshot[snapshot["time_hour"] < until])
        assert report.status == "passed", (until, [f.detail for f in report.failures])

    no_arrival = frame.loc[seed.index, "arr_delay"].isna()
    leaked = seed.assign(dest=seed["dest"].where(~no_arrival, "UNK"))
    assert {("unseen_categories", "dest"), ("leakage", "dest")} <= set(failed(compare(spec, seed, leaked)))
    nulled = seed.assign(is_late=seed["is_late"].where(seed["id"] % 10 >= 3, 1))
    assert ("target_shift", "is_late") in failed(compare(spec, seed, nulled))
