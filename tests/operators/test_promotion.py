"""PromotionApproveOperator without a running Airflow: when it asks, and what it hands promote_model;
ChampionRollbackOperator's refusals (bad Params, a version the registry lacks), which fail at once.

The whole path (the task awaiting input, a person's answer, promote_model obeying it) runs under
``dag.test()`` in tests/integration/test_promotion_dags.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowFailException

from mlpipe.contracts import Verdict
from mlpipe.errors import ParamsError, RegistryError
from mlpipe.operators.promotion import ChampionRollbackOperator, PromotionApproveOperator, verdict_summary

# The XCom of evaluate_candidates (mlpipe.contracts.Verdict.to_xcom()).
VERDICT: dict[str, Any] = {
    "pipeline": "wine",
    "run_id": "manual__r",
    "blessed": False,
    "decision": "reject",
    "best_candidate": "forest",
    "primary_metric": "f1_macro",
    "candidates": {"forest": {"f1_macro": 0.97, "accuracy": 0.97}, "logreg": {"f1_macro": 0.95, "accuracy": 0.95}},
    "champion_version": 3,
    "champion_seq": 3,
    "champion_metrics": {"f1_macro": 0.97, "accuracy": 0.96},
    "champion_status": "scored",
    "rules": [],
    "reasons": ["forest f1_macro=0.9700 vs champion v3 0.9700: gain +0.0000, needed > 0 and >= 0.005"],
    "holdout_rows": 36,
    "report_uri": "file:///store/wine/runs/r/evaluate/report/index.html",
}


def operator(**verdict: Any) -> PromotionApproveOperator:
    return PromotionApproveOperator(task_id="approve_promotion", pipeline="wine", verdict={**VERDICT, **verdict})


def context(**params: Any) -> dict[str, Any]:
    dag_run = SimpleNamespace(
        dag_id="wine_train", run_id="manual__r", run_type="manual", logical_date=datetime(2026, 5, 1, tzinfo=UTC)
    )
    return {"params": params, "dag_run": dag_run, "run_id": "manual__r"}


class TestPromotionApproveOperator:
    def test_is_an_approval_operator_whose_form_asks_only_a_reason(self) -> None:
        op = operator()
        assert isinstance(op, ApprovalOperator)
        assert op.options == ["Approve", "Reject"] and list(op.params) == ["reason"]
        assert set(op.template_fields) >= {"subject", "body", "verdict"}

    def test_asks_nothing_when_the_gate_said_no_and_nothing_is_forced(self) -> None:
        assert operator().execute(context()) == {"asked": False, "approved": None, "by": None, "reason": None}

    def test_a_forced_run_is_asked_with_the_verdict_in_the_body(self, monkeypatch: pytest.MonkeyPatch) -> None:
        asked: dict[str, Any] = {}

        def ask(self: Any, ctx: Any) -> None:
            asked["body"] = self.body

        monkeypatch.setattr(ApprovalOperator, "execute", ask)
        # The evaluation task put the run's force_reason (its Params, checked once) in the verdict.
        operator(force_reason="v3 is biased").execute(context(force_promotion=True, force_reason="v3 is biased"))
        body = asked["body"]
        assert "**Forced** by the run although not blessed: v3 is biased" in body
        assert "| candidate `forest` | 0.9700 | 0.9700 |" in body and "| champion v3 | 0.9700 | 0.9600 |" in body
        assert "gain +0.0000" in body and VERDICT["report_uri"] in body

    @pytest.mark.parametrize("option, approved", [("Approve", True), ("Reject", False)])
    def test_the_answer_goes_to_promote_model_and_skips_nothing(self, option: str, approved: bool) -> None:
        op = operator(blessed=True, decision="promote")
        event = {
            "chosen_options": [option],
            "params_input": {"reason": "seen the report"},
            "responded_at": datetime(2026, 5, 1, 9, tzinfo=UTC),
            "responded_by_user": {"id": "3", "name": "bob"},
        }
        # No task context is needed: ApprovalOperator's own handler would skip promote_model on "Reject".
        answer = op.execute_complete({}, event)
        assert answer == {
            "asked": True,
            "approved": approved,
            "by": "bob",
            "reason": "seen the report",
            "responded_at": "2026-05-01T09:00:00+00:00",
        }

    def test_an_unknown_option_is_refused(self) -> None:
        event = {"chosen_options": ["Maybe"], "params_input": {}, "responded_at": datetime.now(UTC)}
        with pytest.raises(ValueError, match="not in"):
            operator().execute_complete({}, event)

    def test_summary_of_a_first_model(self) -> None:
        text = verdict_summary(
            Verdict.from_xcom({**VERDICT, "blessed": True, "champion_version": None, "champion_metrics": None})
        )
        assert "No champion yet: this would be the first." in text and "Forced" not in text


class TestChampionRollbackOperator:
    """``roll_back_champion`` refuses what no retry can fix: Airflow's AirflowFailException (never retried),
    raised by the operators' one policy from mlpipe's own error, whose message it keeps."""

    def run(self, **params: Any) -> dict[str, Any]:
        op = ChampionRollbackOperator(task_id="roll_back_champion", pipeline="wine")
        try:
            return op.execute(context(**params))
        finally:
            registry = vars(op).get("registry")
            if registry is not None:
                registry.dispose()

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            pytest.param({"reason": "v2 misroutes"}, "param version: a model version number is required, got None"),
            pytest.param({"version": "2", "reason": "x"}, "param version: a model version number is required, got '2'"),
            pytest.param(
                {"version": True, "reason": "x"}, "param version: a model version number is required, got True"
            ),
            pytest.param({"version": 1}, "param reason: a rollback needs a reason (kept in the champion log)"),
            pytest.param(
                {"version": 1, "reason": "  "}, "param reason: a rollback needs a reason (kept in the champion log)"
            ),
        ],
    )
    def test_bad_params_fail_at_once_with_their_message(
        self, mlpipe_home: Any, params: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(AirflowFailException) as caught:
            self.run(**params)
        assert str(caught.value) == f"ParamsError: {message}"
        assert isinstance(caught.value.__context__, ParamsError)
        assert not any(mlpipe_home.iterdir()), "refused before the registry was opened"

    def test_a_version_the_registry_lacks_fails_at_once(self, mlpipe_home: Any) -> None:
        with pytest.raises(AirflowFailException) as caught:
            self.run(version=7, reason="v8 misroutes")
        assert str(caught.value) == (
            "RegistryError: pipeline 'wine' has no model version 7 to roll back to; registered: none"
        )
        assert isinstance(caught.value.__context__, RegistryError)
