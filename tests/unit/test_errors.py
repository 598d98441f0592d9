"""Tests of mlpipe.errors: messages name what to fix."""

from __future__ import annotations

from mlpipe.errors import ChampionChangedError, DataValidationError, MlpipeError, RegistryError, SpecError


def test_spec_error_lists_every_problem_under_the_file() -> None:
    err = SpecError("include/pipelines/x.yaml", ["target.task: bad", "gate: worse"])

    assert str(err) == "invalid pipeline spec include/pipelines/x.yaml:\n  - target.task: bad\n  - gate: worse"
    assert isinstance(err, MlpipeError)


def test_data_validation_error_names_columns_and_observations() -> None:
    failures = [
        {"expectation": "expect_column_values_to_not_be_null", "column": "carrier", "kwargs": {}, "observed": 3},
        {"expectation": "expect_table_row_count_to_be_between", "column": None, "kwargs": {}, "observed": 0},
    ]

    err = DataValidationError("flights_delay", failures, report_uri="file:///r/index.html")

    message = str(err)
    assert "suite 'flights_delay': 2 expectation(s) failed" in message
    assert "expect_column_values_to_not_be_null on column 'carrier': observed 3" in message
    assert "expect_table_row_count_to_be_between on table: observed 0" in message
    assert message.endswith("full result: file:///r/index.html")
    assert err.failures == failures


def test_champion_changed_is_a_registry_error() -> None:
    assert issubclass(ChampionChangedError, RegistryError)
