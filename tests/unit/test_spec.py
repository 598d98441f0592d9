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


S3_SOURCE = {"kind": "s3", "bucket": "flights-data", "prefix": "daily", "partition": "date=%Y-%m-%d/"}


class TestS3Source:
    def test_the_documented_example_loads(self) -> None:
        loaded = load_spec(
            config.REPO_ROOT / "docs" / "examples" / "flights_delay_s3.yaml", config.REPO_ROOT / "include"
        )

        source = loaded.spec.source
        assert (source.kind, source.bucket, source.prefix, source.format) == (
            "s3",
            "mlpipe",
            "sources/flights/",
            "parquet",
        )
        assert source.uri == "s3://mlpipe/sources/flights/"
        assert loaded.query_path is None
        assert len(loaded.sha256()) == 64
        assert loaded.spec.watch.min_new_objects == 1
        with pytest.raises(SpecError, match="the s3 source has no SQL query"):
            loaded.query_text()

    def test_defaults_and_normalised_prefix(self, include_tree, make_spec) -> None:
        source = load_spec(
            include_tree(make_spec(source={"kind": "s3", "bucket": "b12", "prefix": "/a/b"}))
        ).spec.source

        assert source.prefix == "a/b/"
        assert source.connection_id == config.SOURCE_CONN_ID
        assert (source.format, source.partition, source.columns, source.derive) == (None, None, None, {})
        assert source.format_of("a/b/x.PARQUET") == "parquet"
        assert source.format_of("a/b/x.csv.gz") == "csv"
        assert source.format_of("a/b/_SUCCESS") is None

    @pytest.mark.parametrize(
        ("pattern", "matches", "misses"),
        [
            ("date=*/flights.parquet", ["date=2013-01-01/flights.parquet"], ["date=2013-01-01/x/flights.parquet"]),
            ("**/*.csv", ["a.csv", "x/y/a.csv"], ["a.csv.gz", "x/a.parquet"]),
            ("part-[0-9]?.parquet", ["part-01.parquet"], ["part-x1.parquet", "part-1.parquet"]),
            ("[!_]*", ["data.csv"], ["_SUCCESS", "a/b"]),
        ],
    )
    def test_key_pattern_is_a_glob_within_segments(self, pattern: str, matches: list[str], misses: list[str]) -> None:
        from mlpipe.spec import S3SourceSpec

        matcher = S3SourceSpec(kind="s3", bucket="bkt", key_pattern=pattern).key_matcher()
        assert [k for k in matches if matcher.fullmatch(k)] == matches
        assert [k for k in misses if matcher.fullmatch(k)] == []

    @pytest.mark.parametrize(
        ("template", "key", "groups", "period"),
        [
            ("date=%Y-%m-%d/", "region=us/date=2013-01-05/f.parquet", {"Y": "2013", "m": "01", "d": "05"}, "day"),
            ("%Y/%m/%d/%H/", "2013/01/05/07/f.csv", {"Y": "2013", "m": "01", "d": "05", "H": "07"}, "hour"),
            ("year=%Y/month=%m/", "year=2013/month=02/f.csv", {"Y": "2013", "m": "02"}, "month"),
            ("%Y-%j", "2013-032.csv", {"Y": "2013", "j": "032"}, "day"),
        ],
    )
    def test_partition_template(self, template: str, key: str, groups: dict, period: str) -> None:
        from mlpipe.spec import partition_regex

        pattern, found_period = partition_regex(template)
        assert pattern.search(key).groupdict() == groups
        assert found_period == period
        # Anchored at a path segment: 'update=' does not hold the partition 'date='.
        assert partition_regex("date=%Y-%m-%d/")[0].search("update=2013-01-05/f.csv") is None

    @pytest.mark.parametrize(
        ("source", "expected"),
        [
            pytest.param({"kind": "kafka"}, ["source.kind", "must be 'sql' or 's3'", "'kafka'"], id="kind"),
            pytest.param({"kind": "s3"}, ["source.bucket", "Field required"], id="no-bucket"),
            pytest.param(
                {**S3_SOURCE, "bucket": "s3://flights/daily"}, ["source.bucket", "not a bucket name"], id="bucket-uri"
            ),
            pytest.param({**S3_SOURCE, "prefix": "a/../b"}, ["source.prefix", "'..'"], id="prefix-escape"),
            pytest.param({**S3_SOURCE, "query": "tiny.sql"}, ["source.query", "unknown field"], id="query-on-s3"),
            pytest.param({**S3_SOURCE, "format": "json"}, ["source.format", "'csv'", "(got 'json')"], id="format"),
            pytest.param(
                {**S3_SOURCE, "key_pattern": "*.csv", "key_regex": r".*\.csv"},
                ["source", "key_pattern (a glob) or key_regex, not both"],
                id="two-key-filters",
            ),
            pytest.param(
                {**S3_SOURCE, "key_regex": "(unclosed"}, ["source.key_regex", "not a valid regular"], id="regex"
            ),
            pytest.param(
                {**S3_SOURCE, "partition": "day=%d/"}, ["source.partition", "needs %Y", "%d needs %m"], id="no-year"
            ),
            pytest.param(
                {**S3_SOURCE, "partition": "%Y/%b/"}, ["source.partition", "unsupported directive %b"], id="directive"
            ),
            pytest.param(
                {**S3_SOURCE, "derive": {"a": "lambda: 1", "b": "x.__class__", "c": "x +"}},
                [
                    "source.derive",
                    "a: Lambda is not allowed",
                    "b: names starting with '_'",
                    "c: not a valid expression",
                ],
                id="derive",
            ),
            pytest.param(
                {**S3_SOURCE, "csv": {"header": False}},
                ["source.csv", "header: false needs column_names"],
                id="csv-names",
            ),
            pytest.param(
                {**S3_SOURCE, "columns": ["id", "num", "y"]},
                ["source.columns: lacks ['cat', 'ts']", "features, target or split"],
                id="columns-lack-features",
            ),
            pytest.param(
                {**S3_SOURCE, "column_types": {"num": "decimal"}},
                ["source.column_types.num", "'int'"],
                id="column-type",
            ),
        ],
    )
    def test_bad_s3_source_names_the_field(
        self, include_tree, make_spec, source: dict[str, Any], expected: list[str]
    ) -> None:
        message = str(spec_error(include_tree(make_spec(source=source))))

        for fragment in expected:
            assert fragment in message, f"{fragment!r} not in:\n{message}"

    def test_watch_counts_objects_for_s3_and_rows_for_sql(self, include_tree, make_spec) -> None:
        s3_rows = spec_error(include_tree(make_spec(source=S3_SOURCE, watch={"min_new_rows": 10})))
        assert any("watch.min_new_rows" in p and "min_new_objects" in p for p in s3_rows.problems)
        sql = {"query": "tiny.sql", "table": "flights", "watermark_column": "ts"}
        sql_objects = spec_error(include_tree(make_spec(source=sql, watch={"min_new_objects": 2})))
        assert any("watch.min_new_objects" in p and "sql source" in p for p in sql_objects.problems)
        # An S3 source needs neither a table nor a watermark column for watch and monitor.
        loaded = load_spec(include_tree(make_spec(source=S3_SOURCE, watch={"min_new_objects": 2}, monitor={})))
        assert loaded.spec.watch.min_new_objects == 2 and loaded.spec.monitor is not None


class TestScoreSpec:
    def test_defaults_and_the_score_query(self, include_tree, make_spec) -> None:
        loaded = load_spec(include_tree(make_spec(score={"key": "id"})))
        score = loaded.spec.score
        assert (score.output, score.chunk_rows, score.missing, score.schedule) == ("table", 50_000, "impute", None)
        assert loaded.score_query_path is None and loaded.score_query_text() == loaded.query_text()

        path = include_tree(make_spec(score={"key": "id", "query": "rows.sql"}))
        (path.parent.parent / "sql" / "rows.sql").write_text("SELECT id, ts, cat, num FROM t WHERE ts < :as_of\n")
        assert "FROM t" in load_spec(path).score_query_text()

    def test_scoring_needs_a_sql_source(self, include_tree, make_spec) -> None:
        message = str(spec_error(include_tree(make_spec(source=S3_SOURCE, score={"key": "id"}))))
        assert "score: batch scoring reads a sql source" in message

    @pytest.mark.parametrize(
        ("score", "expected"),
        [
            pytest.param({}, ["score.key", "Field required"], id="no-key"),
            pytest.param({"key": "y"}, ["score.key", "target column 'y'"], id="key-is-target"),
            pytest.param({"key": "id", "query": "../x.sql"}, ["score.query", "no '..'"], id="query-escape"),
            pytest.param({"key": "id", "query": "absent.sql"}, ["score.query: file", "absent.sql"], id="no-file"),
            pytest.param({"key": "id", "output": "csv"}, ["score.output", "'table' or 'parquet'"], id="output"),
            pytest.param(
                {"key": "id", "output": "parquet", "table": "p"}, ["score", "['table'] only apply"], id="parquet-table"
            ),
            pytest.param({"key": "id", "table": "a", "rejects_table": "a"}, ["score", "must differ"], id="same-tables"),
            pytest.param({"key": "id", "table": "drop table;"}, ["score.table", "pattern"], id="table-identifier"),
            pytest.param({"key": "id", "missing": "drop"}, ["score.missing", "'impute' or 'reject'"], id="missing"),
            pytest.param({"key": "id", "schedule": "hourly"}, ["score.schedule", "5-field cron"], id="cron"),
            pytest.param({"key": "id", "chunk_rows": 5}, ["score.chunk_rows", "1000"], id="chunk-rows"),
            pytest.param({"key": "id", "tabel": "x"}, ["score.tabel", "unknown field"], id="typo"),
        ],
    )
    def test_bad_score_section(self, include_tree, make_spec, score: dict[str, Any], expected: list[str]) -> None:
        message = str(spec_error(include_tree(make_spec(score=score))))
        for fragment in expected:
            assert fragment in message, f"{fragment!r} not in:\n{message}"
