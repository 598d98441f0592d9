"""Tests of mlpipe.spec: the demo spec loads, and every kind of bad spec is a SpecError naming file and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlpipe import config
from mlpipe.errors import SpecError
from mlpipe.spec import ESTIMATORS, LoadedSpec, load_spec


def spec_error(path: Path) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    err = info.value
    assert err.path == str(path)
    assert str(path) in str(err)
    return err


class TestDemoSpec:
    def test_flights_delay_loads(self) -> None:
        loaded = load_spec(config.REPO_ROOT / "include" / "pipelines" / "flights_delay.yaml")

        assert isinstance(loaded, LoadedSpec)
        spec = loaded.spec
        assert spec.name == "flights_delay"
        assert spec.target.task == "binary"
        assert spec.primary_metric == "roc_auc"
        assert spec.direction("log_loss") == "minimize"
        assert [c.name for c in spec.candidates] == ["logreg", "hgb"]
        assert loaded.query_path.name == "flights_delay.sql"
        assert ":as_of" in loaded.query_text()
        assert loaded.suite_path.is_file()
        assert len(loaded.sha256()) == 64


class TestGoodSpec:
    def test_tiny_spec_loads_with_defaults(self, include_tree, make_spec) -> None:
        loaded = load_spec(include_tree(make_spec()))

        assert loaded.spec.retries == 2
        assert loaded.spec.start_date.tzinfo is not None
        assert loaded.spec.candidate("hgb").encoding == "ordinal"
        assert loaded.spec.candidate("logreg").encoding == "onehot"
        with pytest.raises(KeyError, match="no candidate 'nope'"):
            loaded.spec.candidate("nope")

    def test_sha256_changes_when_the_sql_changes(self, include_tree, make_spec) -> None:
        path = include_tree(make_spec())
        loaded = load_spec(path)
        before = loaded.sha256()
        assert loaded.sha256() == before

        loaded.query_path.write_text("SELECT 1 AS y WHERE :as_of IS NOT NULL\n", encoding="utf-8")

        assert load_spec(path).sha256() != before

    def test_sha256_changes_when_the_spec_changes(self, include_tree, make_spec) -> None:
        before = load_spec(include_tree(make_spec())).sha256()
        after = load_spec(include_tree(make_spec(gate={"min_primary": 0.55}))).sha256()
        assert after != before


class TestBadSpec:
    @pytest.mark.parametrize(
        ("changes", "expected"),
        [
            pytest.param(
                {"features": {"numeric": ["num"], "categoricals": ["cat"]}},
                ["features.categoricals", "unknown field"],
                id="typo-nested",
            ),
            pytest.param({"descripton": "typo"}, ["descripton", "unknown field"], id="typo-top"),
            pytest.param(
                {"target": {"column": "y", "task": "binray"}},
                ["target.task", "'binary'", "'multiclass'", "'regression'", "(got 'binray')"],
                id="task-literal",
            ),
            pytest.param(
                {"candidates": [{"name": "ridge", "estimator": "sklearn.linear_model.Ridge"}]},
                ["candidates[0].estimator", "sklearn.linear_model.Ridge does not fit task 'binary'"],
                id="estimator-task",
            ),
            pytest.param(
                {"metrics": {"primary": "rmse"}},
                ["metrics.primary", "'rmse' is not a binary metric", "roc_auc"],
                id="metric-task-primary",
            ),
            pytest.param(
                {"metrics": {"primary": "roc_auc", "secondary": ["log_loss", "r2"]}},
                ["metrics.secondary[1]", "'r2' is not a binary metric"],
                id="metric-task-secondary",
            ),
            pytest.param(
                {"metrics": {"primary": {"name": "log_loss", "direction": "maximize"}}},
                ["metrics", "log_loss improves by minimize, not maximize"],
                id="metric-direction",
            ),
            pytest.param(
                {"gate": {"max_regression": {"accuracy": 0.01}}},
                ["gate.max_regression", "'accuracy' is not a secondary metric", "['log_loss', 'brier']"],
                id="gate-not-secondary",
            ),
            pytest.param(
                {"gate": {"max_regression": {"log_loss": -0.1}}},
                ["gate.max_regression", ">= 0", "log_loss"],
                id="gate-negative",
            ),
            pytest.param(
                {"features": {"numeric": ["num", "y"]}},
                ["features", "target column 'y' cannot also be a feature"],
                id="target-as-feature",
            ),
            pytest.param(
                {"features": {"numeric": ["num"], "categorical": ["num"]}},
                ["features", "more than once", "num"],
                id="feature-twice",
            ),
            pytest.param(
                {
                    "candidates": [
                        {"name": "m", "estimator": "sklearn.linear_model.LogisticRegression"},
                        {"name": "m", "estimator": "sklearn.dummy.DummyClassifier"},
                    ]
                },
                ["candidates", "names must be unique"],
                id="duplicate-candidates",
            ),
            pytest.param({"split": {"method": "time"}}, ["split", "needs time_column"], id="time-split-no-column"),
            pytest.param(
                {"target": {"column": "y", "task": "regression", "positive_class": 1}},
                ["target", "positive_class"],
                id="positive-class-regression",
            ),
            pytest.param({"source": {"query": "../secret.sql"}}, ["source.query", "no '..'"], id="query-escape"),
            pytest.param(
                {"source": {"query": "tiny.sql", "params": {"as_of": "x"}}},
                ["source.params", "'as_of'"],
                id="as-of-reserved",
            ),
            pytest.param(
                {"source": {"query": "tiny.sql", "chunk_rows": 10}}, ["source.chunk_rows", "1000"], id="chunk-rows"
            ),
            pytest.param({"schedule": "every day"}, ["schedule", "5-field cron"], id="cron"),
            pytest.param({"retries": 0}, ["retries", "greater than or equal to 2"], id="retries"),
        ],
    )
    def test_message_names_file_and_field(
        self, include_tree, make_spec, changes: dict[str, Any], expected: list[str]
    ) -> None:
        err = spec_error(include_tree(make_spec(**changes)))

        message = str(err)
        for fragment in expected:
            assert fragment in message, f"{fragment!r} not in:\n{message}"

    def test_estimator_not_allowed_lists_the_allowed_ones(self, include_tree, make_spec) -> None:
        bad = {"candidates": [{"name": "svm", "estimator": "sklearn.svm.SVC"}]}

        message = str(spec_error(include_tree(make_spec(**bad))))

        assert "candidates[0].estimator" in message
        assert "'sklearn.svm.SVC' is not an allowed estimator" in message
        for allowed in ESTIMATORS:
            assert allowed in message

    def test_missing_query_and_suite_files(self, include_tree, make_spec) -> None:
        path = include_tree(make_spec(), sql_name="", suite_name="")

        err = spec_error(path)

        assert any(p.startswith("source.query: file ") and "tiny.sql" in p for p in err.problems)
        assert any(p.startswith("validation.suite: file ") and "tiny.json" in p for p in err.problems)

    def test_invalid_yaml_gives_the_line(self, include_tree) -> None:
        text = "name: tiny\ndescription: x\nowner: me\ntarget:\n  column: y\n   task: binary\n"

        err = spec_error(include_tree(text))

        assert err.problems == ["line 6, column 8: not valid YAML (mapping values are not allowed here)"]

    def test_not_a_mapping(self, include_tree, make_spec) -> None:
        err = spec_error(include_tree("- just\n- a list\n"))
        assert err.problems == ["<top>: the file must hold a YAML mapping of spec fields"]

    def test_name_must_equal_file_stem(self, include_tree, make_spec) -> None:
        path = include_tree(make_spec(), name="other_name")

        err = spec_error(path)

        assert err.problems == ["name: 'tiny' must equal the file name 'other_name'"]

    def test_unreadable_file(self, tmp_path: Path) -> None:
        err = spec_error(tmp_path / "pipelines" / "absent.yaml")
        assert err.problems[0].startswith("<file>: cannot read")

    def test_every_problem_is_reported_at_once(self, include_tree, make_spec) -> None:
        changes = {
            "target": {"column": "y", "task": "regression"},
            "metrics": {"primary": "roc_auc"},
            "features": {"numeric": ["y"]},
        }

        err = spec_error(include_tree(make_spec(**changes)))

        message = str(err)
        assert "candidates[0].estimator" in message
        assert "candidates[1].estimator" in message
        assert "metrics.primary" in message
        assert "cannot also be a feature" in message
