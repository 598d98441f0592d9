"""``mlpipe new`` / ``suite draft`` / ``check`` on a week of the demo flights: the drafted suite, each mistake named.

One week (about 6,000 flights) seeded as ``demo seed`` does it; the suite is drafted from the
flights_delay query, as a user would start from it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from mlpipe.cli import main
from mlpipe.demo import EXTRACT_COLUMNS, WEATHER_FEATURES

REPO = Path(__file__).resolve().parents[2]
QUERY = REPO / "include" / "sql" / "flights_delay.sql"


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory, flights_frame) -> Path:
    """An MLPIPE_HOME whose source holds the first week of 2013's flights (the demo's table)."""
    from mlpipe.demo import write_flights_sqlite

    home = tmp_path_factory.mktemp("check") / "mlpipe"
    home.mkdir()
    write_flights_sqlite(home / "source.db", flights_frame[flights_frame["time_hour"] < "2013-01-08"])
    return home


@pytest.fixture(scope="module")
def drafted(week: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An include tree with the pipeline `first` as `mlpipe new` drafts it from the flights_delay query."""
    include = tmp_path_factory.mktemp("include")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLPIPE_HOME", str(week))
        mp.setenv("MLPIPE_INCLUDE", str(include))
        mp.delenv("AIRFLOW_CONN_MLPIPE_SOURCE", raising=False)
        argv = ["new", "first", "--query", str(QUERY), "--target", "is_late", "--time-column", "time_hour"]
        assert main([*argv, "--owner", "tests"]) == 0
    return include


@pytest.fixture
def include(drafted: Path, week: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the drafted tree for one test to break."""
    tree = tmp_path / "include"
    shutil.copytree(drafted, tree)
    monkeypatch.setenv("MLPIPE_HOME", str(week))
    monkeypatch.setenv("MLPIPE_INCLUDE", str(tree))
    monkeypatch.delenv("AIRFLOW_CONN_MLPIPE_SOURCE", raising=False)
    return tree


def edit_spec(include: Path, change) -> Path:
    path = include / "pipelines" / "first.yaml"
    spec = yaml.safe_load(path.read_text())
    change(spec)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def check(capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["check", "first"])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_new_writes_a_commented_spec_that_passes_check(include: Path, capsys) -> None:
    spec = (include / "pipelines" / "first.yaml").read_text()
    assert "# - " not in spec.split("features:")[1].split("split:")[0] or "review:" in spec
    assert "#   id: an id (unique per row)" in spec, "the id is a suggestion, not a feature"
    assert "method: time" in spec and "positive_class: 1" in spec
    assert (include / "sql" / "first.sql").read_text().endswith(QUERY.read_text())

    code, out = check(capsys)

    assert code == 0, out
    drafted = yaml.safe_load(spec)["features"]
    weather = [c for c in drafted["numeric"] if c in WEATHER_FEATURES]
    assert weather, "the joined weather readings are drafted as numeric features"
    named = 8 + len(weather)  # the schedule's columns, the target and the time, plus the weather
    assert f"columns     the {named} columns the spec names are there, with usable types" in out
    assert "pass on the sample" in out and "ready: airflow dags test first_train" in out


def test_new_refuses_to_overwrite_without_force(include: Path, capsys) -> None:
    argv = ["new", "first", "--query", str(QUERY), "--target", "is_late"]
    assert main(argv) == 1
    assert "exist(s) already: pass --force to overwrite" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    assert "as_of" not in (include / "pipelines" / "first.yaml").read_text().split("source:")[1].split("target:")[0]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (
            "-- rows before :as_of only\n",
            "source.query: first.sql has no :as_of bind parameter outside comments (the database ignores the one "
            "in a comment)",
        ),
        ("", "source.query: first.sql has no :as_of bind parameter; bound to the run's logical date"),
    ],
    ids=["as_of-only-in-a-comment", "no-as_of"],
)
def test_check_names_a_query_without_as_of(include: Path, capsys, where: str, expected: str) -> None:
    sql = include / "sql" / "first.sql"
    text = sql.read_text()
    assert "WHERE flights.time_hour < :as_of\n" in text
    sql.write_text(text.replace("WHERE flights.time_hour < :as_of\n", where))

    code, out = check(capsys)

    assert code == 1
    assert f"invalid pipeline spec {include / 'pipelines' / 'first.yaml'}" in out and expected in out


def test_check_names_a_missing_feature_column(include: Path, capsys) -> None:
    path = edit_spec(include, lambda s: s["features"]["numeric"].append("weight"))
    index = len(yaml.safe_load(path.read_text())["features"]["numeric"]) - 1

    code, out = check(capsys)

    assert code == 1 and "FAILED: 1 problem(s) in " in out and "first.yaml" in out
    assert (
        f"features.numeric[{index}]: column 'weight' is not in the result of {include / 'sql' / 'first.sql'}; "
        f"it has: {', '.join(EXTRACT_COLUMNS)}"
    ) in out


def test_check_names_a_type_mismatch(include: Path, capsys) -> None:
    def carrier_as_number(spec: dict) -> None:
        spec["features"]["categorical"].remove("carrier")
        spec["features"]["numeric"].append("carrier")

    path = edit_spec(include, carrier_as_number)
    index = len(yaml.safe_load(path.read_text())["features"]["numeric"]) - 1

    code, out = check(capsys)

    assert code == 1
    assert f"features.numeric[{index}]: column 'carrier' is text in the result of" in out
    assert "it needs numbers: cast it in the query, or list it under features.categorical" in out


def test_check_names_a_suite_that_fails_on_the_sample(include: Path, capsys) -> None:
    path = include / "expectations" / "first.json"
    suite = json.loads(path.read_text())
    origin = next(e for e in suite["expectations"] if e["kwargs"].get("value_set") == ["EWR", "JFK", "LGA"])
    origin["kwargs"]["value_set"] = ["EWR", "JFK"]
    path.write_text(json.dumps(suite))

    code, out = check(capsys)

    assert code == 1
    assert f"validation.suite: {path}: expect_column_values_to_be_in_set on column 'origin' fails on the sample" in out
    assert "'LGA'" in out


def test_suite_draft_refuses_to_replace_then_redrafts(include: Path, capsys) -> None:
    path = include / "expectations" / "first.json"
    before = json.loads(path.read_text())
    assert main(["suite", "draft", "first"]) == 1
    assert "pass --force" in capsys.readouterr().err

    assert main(["suite", "draft", "first", "--force"]) == 0

    after = json.loads(path.read_text())
    assert [e["type"] for e in after["expectations"]] == [e["type"] for e in before["expectations"]]
    assert "expectations drafted from" in capsys.readouterr().out


class TestDraftedFlightsSuite:
    """The suite drafted from the flights passes them and fails the demo's corruptions."""

    @pytest.fixture
    def suite(self, drafted: Path) -> Path:
        return drafted / "expectations" / "first.json"

    @pytest.fixture
    def flights(self, week: Path):
        import sqlalchemy as sa

        from mlpipe.stages.profile import sample_query

        engine = sa.create_engine(f"sqlite:///{week / 'source.db'}")
        try:
            return sample_query(engine, QUERY.read_text(), {}, 100_000).frame
        finally:
            engine.dispose()

    def test_every_expectation_says_what_it_was_drawn_from(self, suite: Path) -> None:
        entries = json.loads(suite.read_text())["expectations"]
        assert all("include/sql/first.sql" in e["notes"] for e in entries), "each says what it was drawn from"
        distance = next(e for e in entries if e["type"] == "expect_column_values_to_be_between")
        assert distance["kwargs"]["column"] == "distance" and distance["kwargs"]["min_value"] == 0
        assert "widened by 10% of that range" in distance["notes"] and "not below 0" in distance["notes"]

    def test_passes_the_data_it_was_drawn_from(self, suite: Path, flights) -> None:
        from mlpipe.stages.validate import validate_frame

        outcome = validate_frame(flights, suite)
        assert outcome.success, outcome.failures

    @pytest.mark.parametrize(
        ("case", "expectation", "column"),
        [
            ("unknown_origin", "expect_column_values_to_be_in_set", "origin"),
            ("negative_distance", "expect_column_values_to_be_between", "distance"),
            ("null_target", "expect_column_values_to_not_be_null", "is_late"),
            ("missing_column", "expect_table_columns_to_match_set", None),
        ],
    )
    def test_fails_the_known_corruptions(self, suite: Path, flights, case: str, expectation: str, column) -> None:
        from mlpipe.stages.validate import validate_frame

        frame = flights.copy()
        if case == "unknown_origin":
            frame.loc[frame.index[:3], "origin"] = "XYZ"
        elif case == "negative_distance":
            frame.loc[frame.index[:3], "distance"] = -200
        elif case == "null_target":
            frame["is_late"] = frame["is_late"].astype("Int64")
            frame.loc[frame.index[: len(frame) // 20], "is_late"] = None  # 5%: the clean data has none
        else:
            frame = frame.drop(columns=["carrier"])

        outcome = validate_frame(frame, suite)

        assert not outcome.success
        assert (expectation, column) in {(f["expectation"], f["column"]) for f in outcome.failures}


def test_suite_draft_from_a_runs_snapshot(include: Path, week: Path, tmp_path: Path, capsys) -> None:
    """--from-snapshot profiles what a run extracted (here: the first 2 days of the week), not the query."""
    import sqlalchemy as sa

    from mlpipe.stages.extract import snapshot_key
    from mlpipe.stages.profile import sample_query
    from mlpipe.storage import LocalStore, run_key

    engine = sa.create_engine(f"sqlite:///{week / 'source.db'}")
    frame = sample_query(engine, QUERY.read_text(), {}, 100_000).frame
    engine.dispose()
    snapshot = frame[frame["time_hour"] < "2013-01-03"]
    store = LocalStore(week / "artifacts")
    run = "manual__2013-01-03T00:00:00+00:00"
    store.put_bytes(snapshot_key("first", run_key(run)), snapshot.to_parquet(index=False))
    out = tmp_path / "from-snapshot.json"

    assert main(["suite", "draft", "first", "--from-snapshot", run, "--output", str(out)]) == 0

    suite = json.loads(out.read_text())
    rows = next(e for e in suite["expectations"] if e["type"] == "expect_table_row_count_to_be_between")
    assert rows["kwargs"]["min_value"] == len(snapshot) // 2 and f"the snapshot of run {run}" in rows["notes"]
    assert main(["suite", "draft", "first", "--from-snapshot", "manual__nope", "--output", str(out), "--force"]) == 1
    assert "no snapshot at first/runs/" in capsys.readouterr().err
