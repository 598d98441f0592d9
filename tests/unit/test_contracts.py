"""The contracts between tasks: each survives its XCom (to_xcom → JSON → from_xcom), a malformed XCom names the
contract and the field, and json_safe turns what stages produce (numpy, pandas, NaN, datetimes, paths) into JSON."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pytest

from mlpipe.contracts import (
    Approval,
    ContractError,
    DriftCheck,
    FeatureSet,
    NewObjectsFound,
    NewRowsFound,
    PromotionResult,
    Rule,
    ScoreResult,
    Snapshot,
    TrainedCandidate,
    Verdict,
    champion_incident,
    json_safe,
    new_data_from_xcom,
)

SNAPSHOT = Snapshot(
    "p/runs/r/extract/snapshot.parquet", "file:///s", "a" * 64, 120, ["x", "y"], "2026-05-01", False, 1.5
)
VERDICT = Verdict(
    pipeline="p",
    run_id="manual__1",
    blessed=False,
    decision="reject",
    best_candidate="logreg",
    primary_metric="roc_auc",
    candidates={"logreg": {"roc_auc": 0.71, "log_loss": 0.6}, "forest": {"roc_auc": None, "log_loss": 0.7}},
    champion_version=3,
    champion_seq=4,
    champion_metrics={"roc_auc": 0.74, "log_loss": 0.58},
    champion_status="scored",
    rules=[
        Rule("floor", True, "roc_auc 0.71 >= 0.6", {"value": 0.71}),
        Rule("improvement", False, "gain -0.03", {"gain": -0.03, "min_improvement": 0.0}),
    ],
    reasons=["gain -0.03"],
    holdout_rows=40,
    slices=[{"column": "origin", "value": "JFK", "rows": 12}],
    seconds=2.5,
    report_uri="file:///r/index.html",
    confidence=0.9,
    uncertainty={"method": "paired bootstrap", "resamples": 200},
)

# One instance of every contract, with the optional fields set where they exist.
EVERY_CONTRACT = [
    SNAPSHOT,
    replace(SNAPSHOT, spec_sha256="b" * 64),
    FeatureSet("t", "1" * 64, 90, "h", "2" * 64, 30, ["x"], "random", {"0": 60, "1": 30}, 0.2),
    TrainedCandidate(
        "logreg", "sklearn.linear_model.LogisticRegression", {"C": 1.0}, "k", "file:///k", "3" * 64, 90, 0.4
    ),
    TrainedCandidate("f", "e", {}, "k", "u", "4" * 64, 90, 0.0, {"method": "grid", "best_params": {"depth": 3}}),
    VERDICT,
    replace(VERDICT, reused_from="manual__0", force_reason="the floor is too strict"),
    Approval(asked=False, approved=None, by=None, reason=None),
    Approval(asked=True, approved=True, by="ann", reason="fine", responded_at="2026-05-01T10:00:00+00:00"),
    PromotionResult(True, 4, 3, "promote", "p v4 replaces champion v3", "file:///m"),
    PromotionResult(False, None, 3, "skipped", "not blessed"),
    NewRowsFound(
        rows=25, watermark_from='"2013-01-01"', at_watermark_from=None, watermark_to='"2013-01-02"', at_watermark_to=3
    ),
    NewObjectsFound(
        objects=2, watermark_from=None, watermark_to='{"datetime": "2026-05-01T00:00:00"}', newest_key="a.csv"
    ),
    DriftCheck(
        "p", "drift", True, True, "2013-03-01", "2013-04-01", 900, 3, 0.4, 0.3, {"roc_auc": 0.6}, ["psi"], "u", 1.0
    ),
    ScoreResult("p", "r", "scored", 3, "2026-05-01", 100, 90, 5, 5, {"null distance": 5}, "table", 2.0, {"read": 0.5}),
]


@pytest.mark.parametrize("contract", EVERY_CONTRACT, ids=lambda c: type(c).__name__)
def test_every_contract_survives_its_xcom(contract) -> None:
    wire = json.dumps(contract.to_xcom(), allow_nan=False)  # what Airflow stores and the UI shows

    again = type(contract).from_xcom(json.loads(wire))

    assert again == contract
    assert type(contract).from_xcom(contract) is contract  # a value already typed passes through


def test_verdict_rules_come_back_as_rules() -> None:
    again = Verdict.from_xcom(json.loads(json.dumps(VERDICT.to_xcom())))
    assert all(isinstance(r, Rule) for r in again.rules)
    assert again.rules[1].figures["gain"] == -0.03


def test_optional_fields_left_out_when_unset_keep_the_xcom_shape() -> None:
    # A verdict the run does not force carries no force_reason key, as before the field existed.
    assert "force_reason" not in VERDICT.to_xcom() and "reused_from" not in VERDICT.to_xcom()
    assert "spec_sha256" not in SNAPSHOT.to_xcom()
    forced = replace(VERDICT, force_reason="why").to_xcom()
    assert forced["force_reason"] == "why"


def test_a_missing_field_names_the_contract_and_the_field() -> None:
    xcom = SNAPSHOT.to_xcom()
    del xcom["sha256"]
    with pytest.raises(ContractError, match=r"XCom of Snapshot: field 'sha256' is missing"):
        Snapshot.from_xcom(xcom)


def test_a_mistyped_field_names_the_contract_and_the_field() -> None:
    with pytest.raises(ContractError, match=r"XCom of Snapshot\.rows: expected int, got str '120'"):
        Snapshot.from_xcom({**SNAPSHOT.to_xcom(), "rows": "120"})
    with pytest.raises(ContractError, match=r"XCom of PromotionResult\.version: expected int or None, got bool"):
        PromotionResult.from_xcom({**EVERY_CONTRACT[9].to_xcom(), "version": True})


def test_a_nested_field_is_named_with_its_path() -> None:
    xcom = VERDICT.to_xcom()
    xcom["rules"][1]["passed"] = "no"
    with pytest.raises(ContractError, match=r"XCom of Verdict\.rules\[1\]\.passed: expected bool"):
        Verdict.from_xcom(xcom)
    xcom = VERDICT.to_xcom()
    xcom["candidates"]["logreg"]["roc_auc"] = "high"
    with pytest.raises(ContractError, match=r"Verdict\.candidates\['logreg'\]\['roc_auc'\]: expected float or None"):
        Verdict.from_xcom(xcom)


def test_an_unknown_field_or_a_non_object_is_refused() -> None:
    with pytest.raises(ContractError, match=r"XCom of FeatureSet: unknown field\(s\) \['train_path'\]"):
        FeatureSet.from_xcom({**EVERY_CONTRACT[2].to_xcom(), "train_path": "x"})
    with pytest.raises(ContractError, match=r"XCom of Verdict: expected a Verdict \(a JSON object\), got NoneType"):
        Verdict.from_xcom(None)


def test_new_data_is_told_apart_by_its_unit() -> None:
    rows, objects = EVERY_CONTRACT[11], EVERY_CONTRACT[12]
    assert new_data_from_xcom(rows.to_xcom()) == rows and (rows.unit, rows.count) == ("rows", 25)
    assert new_data_from_xcom(objects.to_xcom()) == objects and (objects.unit, objects.count) == ("objects", 2)


def test_drift_event_extra_is_the_announced_figures_with_the_run() -> None:
    check = EVERY_CONTRACT[13]
    extra = check.event_extra("scheduled__x")
    assert extra["monitor_run_id"] == "scheduled__x"
    assert set(extra) == set(DriftCheck.EVENT_FIELDS) | {"monitor_run_id"}
    assert "emit" not in extra and "breach" not in extra


def test_verdict_forced_and_the_champion_incident() -> None:
    assert not VERDICT.forced
    assert replace(VERDICT, force_reason="x").forced
    assert not replace(VERDICT, blessed=True, force_reason="x").forced  # blessed: nothing to force
    assert champion_incident(VERDICT) is None
    broken = Rule("champion", False, "v3 unreadable", {"incident": True, "error": "sha256 mismatch"})
    assert champion_incident(replace(VERDICT, rules=[broken])) == "sha256 mismatch"
    assert champion_incident(replace(VERDICT, rules=[broken]).to_xcom()) == "sha256 mismatch"  # a verdict file


class TestJsonSafe:
    def test_undefined_and_infinite_numbers_become_none(self) -> None:
        out = json_safe({"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "np": np.float64("nan"), "ok": 0.5})
        assert out == {"nan": None, "inf": None, "-inf": None, "np": None, "ok": 0.5}
        json.dumps(out, allow_nan=False)

    def test_numpy_and_pandas_values_become_python_ones(self) -> None:
        out = json_safe(
            {
                "i": np.int64(3),
                "f": np.float32(0.5),
                "b": np.bool_(True),
                "arr": np.array([1, 2]),
                "ts": pd.Timestamp("2026-05-01 10:00", tz="UTC"),
                "nat": pd.NaT,
                "na": pd.NA,
            }
        )
        assert out == {
            "i": 3,
            "f": 0.5,
            "b": True,
            "arr": [1, 2],
            "ts": "2026-05-01T10:00:00+00:00",
            "nat": None,
            "na": None,
        }
        assert [type(out[k]) for k in ("i", "f", "b")] == [int, float, bool]

    def test_dates_paths_and_others_become_text_or_numbers(self) -> None:
        out = json_safe(
            {
                1: datetime(2026, 5, 1, tzinfo=UTC),
                "d": date(2026, 5, 1),
                "td": timedelta(minutes=2),
                "p": Path("/tmp/x"),
                "pp": PurePosixPath("a/b"),
                "dec": Decimal("1.25"),
                "t": (1, {2}),
            }
        )
        assert out == {
            "1": "2026-05-01T00:00:00+00:00",
            "d": "2026-05-01",
            "td": 120.0,
            "p": "/tmp/x",
            "pp": "a/b",
            "dec": 1.25,
            "t": [1, [2]],
        }

    def test_contracts_inside_values_become_their_xcom(self) -> None:
        assert json_safe({"snap": SNAPSHOT}) == {"snap": SNAPSHOT.to_xcom()}


def test_importing_the_contracts_imports_nothing_heavy() -> None:
    code = (
        "import sys, mlpipe.contracts; "
        "print(sorted(m for m in ('numpy', 'pandas', 'airflow', 'pydantic', 'sqlalchemy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
