"""The fault corpus: bad inputs and broken infrastructure, each stopping at the right task with a short message.

One champion is built once for the module (12,000 real flights, the real suite, a one-candidate
copy of the flights_delay spec so training is cheap). Each case then breaks one thing (the source
file, its rows through SQL, the champion's artifact, the registry) and runs the training DAG's
operators up to the task that must stop, as Airflow would (``execute(context)``). Each asserts:

- the task that fails, and nothing before it;
- the message's key words (the cause and the file, column or variable), and that it is short;
- no retry for an input error: the task raises ``AirflowFailException``, which Airflow never
  retries (one case proves it end to end with ``dag.test()``: one try, retries configured);
- the champion, its version list and its log unchanged.

Meaning shifts that keep the schema (leakage, 30 % null labels, unseen codes, duplicated flights)
pass the schema suite and are stopped by the comparison with the champion's training snapshot
(``validation.reference``, mlpipe.stages.reference).
``docs/operations.md`` ("Fault corpus") lists every case with where it stops and what it says.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from mlpipe.demo import write_flights_sqlite
from mlpipe.operators.training import (
    CandidatesEvaluateOperator,
    CandidateTrainOperator,
    FeaturesBuildOperator,
    ModelPromoteOperator,
    SnapshotExtractOperator,
    SnapshotValidateOperator,
)
from mlpipe.registry import Registry
from mlpipe.storage import LocalStore

REPO = Path(__file__).resolve().parents[2]
PIPELINE = "flights_delay"
ROWS = 12_000  # the suite wants at least 10,000
AS_OF = datetime(2014, 1, 1, tzinfo=UTC)
CHAMPION_RUN = "scheduled__2014-01-01T00:00:00+00:00"
CONN_ENVS = ("AIRFLOW_CONN_MLPIPE_SOURCE", "AIRFLOW_CONN_MLPIPE_REGISTRY", "AIRFLOW_CONN_MLPIPE_STORE")
MAX_MESSAGE = 8 << 10  # "a few KiB"
ONE_CANDIDATE = """candidates:
  - name: logreg
    estimator: sklearn.linear_model.LogisticRegression
    params: {max_iter: 300}
    search:
      method: grid
      space: {C: [1.0]}
      cv: 2

metrics:"""


def make_context(run_id: str, params: dict[str, Any] | None = None, as_of: datetime = AS_OF) -> dict[str, Any]:
    dag_run = SimpleNamespace(
        dag_id=f"{PIPELINE}_train", run_id=run_id, run_type="manual", logical_date=as_of, run_after=as_of, conf={}
    )
    return {"run_id": run_id, "dag_run": dag_run, "params": params or {}, "triggering_asset_events": {}}


def execute(op: BaseOperator, context: dict[str, Any]) -> Any:
    try:
        return op.execute(context)
    finally:
        registry = vars(op).get("registry")
        if registry is not None:
            registry.dispose()


def extract(ctx: dict[str, Any]) -> dict[str, Any]:
    return execute(SnapshotExtractOperator(task_id="extract_snapshot", pipeline=PIPELINE), ctx)


def validate(ctx: dict[str, Any], snapshot: dict[str, Any]) -> dict[str, Any]:
    return execute(SnapshotValidateOperator(task_id="validate_snapshot", pipeline=PIPELINE, snapshot=snapshot), ctx)


def features(ctx: dict[str, Any], snapshot: dict[str, Any]) -> dict[str, Any]:
    return execute(FeaturesBuildOperator(task_id="build_features", pipeline=PIPELINE, snapshot=snapshot), ctx)


def train(ctx: dict[str, Any], feats: dict[str, Any]) -> dict[str, Any]:
    op = CandidateTrainOperator(task_id="train_candidates", pipeline=PIPELINE, candidate="logreg", features=feats)
    return execute(op, ctx)


def evaluate(ctx: dict[str, Any], feats: dict[str, Any], trained: list[dict[str, Any]]) -> dict[str, Any]:
    op = CandidatesEvaluateOperator(task_id="evaluate_candidates", pipeline=PIPELINE, features=feats, trained=trained)
    return execute(op, ctx)


def promote(ctx: dict[str, Any], verdict: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    op = ModelPromoteOperator(
        task_id="promote_model",
        pipeline=PIPELINE,
        verdict=verdict,
        trained=run["trained"],
        snapshot=run["snapshot"],
        features=run["features"],
    )
    return execute(op, ctx)


def registry_state() -> tuple[Any, ...]:
    from mlpipe import config

    registry = Registry.from_url(config.default_registry_url())
    try:
        champion = registry.champion(PIPELINE)
        versions = [v.version for v in registry.list_versions(PIPELINE)]
        log = [(e.seq, e.version, e.action) for e in registry.champion_history(PIPELINE)]
        return (champion.version if champion else None, champion.artifact_sha256 if champion else None, versions, log)
    finally:
        registry.dispose()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, flights_frame: Any) -> Iterator[SimpleNamespace]:
    """A MLPIPE_HOME with 12,000 real flights and a champion (v1) trained on them; the base source kept aside."""
    root = tmp_path_factory.mktemp("faults")
    home, include = root / "mlpipe", root / "include"
    shutil.copytree(REPO / "include", include)
    spec = include / "pipelines" / f"{PIPELINE}.yaml"
    text = spec.read_text()
    start, end = text.index("candidates:"), text.index("metrics:")
    spec.write_text(text[:start] + ONE_CANDIDATE + text[end + len("metrics:") :])
    sample = flights_frame.sample(n=ROWS, random_state=11).sort_values("id").reset_index(drop=True)
    write_flights_sqlite(root / "base.db", sample)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLPIPE_HOME", str(home))
        mp.setenv("MLPIPE_INCLUDE", str(include))
        mp.setenv("MLPIPE_CODE_VERSION", "0.1.0+faults")
        for name in CONN_ENVS:
            mp.delenv(name, raising=False)
        home.mkdir()
        shutil.copyfile(root / "base.db", home / "source.db")
        ctx = make_context(CHAMPION_RUN)
        snapshot = extract(ctx)
        validate(ctx, snapshot)
        feats = features(ctx, snapshot)
        trained = [train(ctx, feats)]
        verdict = evaluate(ctx, feats, trained)
        assert promote(ctx, verdict, {"trained": trained, "snapshot": snapshot, "features": feats})["version"] == 1
        run = {"snapshot": snapshot, "features": feats, "trained": trained}
        yield SimpleNamespace(root=root, home=home, include=include, run=run, store=LocalStore(home / "artifacts"))


@pytest.fixture
def fresh(world: SimpleNamespace) -> Iterator[SimpleNamespace]:
    """The world with its base source restored, and the champion checked unchanged after the case."""
    source = world.home / "source.db"
    if source.is_dir():
        shutil.rmtree(source)
    shutil.copyfile(world.root / "base.db", source)
    before = registry_state()
    assert before[0] == 1
    yield world
    assert registry_state() == before, "the champion, its versions and its log are unchanged"
    assert not list(world.store.root.rglob("*.tmp")), "no temp file left in the store"


def sql(world: SimpleNamespace, *statements: str) -> None:
    with sqlite3.connect(world.home / "source.db") as conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()


def stops(call: Callable[[], Any], *words: str) -> str:
    """``call()`` must fail without a retry (AirflowFailException), with a short message holding ``words``."""
    with pytest.raises(AirflowFailException) as caught:
        call()
    message = str(caught.value)
    assert len(message) <= MAX_MESSAGE, f"message of {len(message):,} characters"
    logged = "".join(traceback.format_exception(caught.value))
    assert logged.count(message.splitlines()[0]) == 1, "the task log shows the message once"
    for word in words:
        assert word in message, f"{word!r} not in {message[:2000]}"
    return message


# -- the source: missing, unreadable, corrupt, or its schema changed ---------------------------------


def _remove(path: Path) -> None:
    path.unlink()


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _garbage(path: Path) -> None:
    path.write_bytes(b"these bytes are no SQLite database " * 300)


SOURCE_FAULTS = {
    "missing_file": (_remove, "does not exist"),
    "a_directory": (_directory, "is not a file"),
    "corrupt_file": (_garbage, "cannot be read: file is not a database"),
}


@pytest.mark.parametrize("case", sorted(SOURCE_FAULTS))
def test_a_missing_or_unreadable_source_stops_extract_naming_the_file(fresh: SimpleNamespace, case: str) -> None:
    breaks, words = SOURCE_FAULTS[case]
    source = fresh.home / "source.db"
    breaks(source)
    stops(lambda: extract(make_context(f"manual__{case}")), "ExtractError: ", f"source database {source} {words}")
    if case == "missing_file":
        assert not source.exists(), "the source is never created"


def test_an_unreadable_source_file_is_named_with_permission_denied(tmp_path: Path) -> None:
    """As a user without read permission (root reads everything, so the check runs as ``nobody``)."""
    import os
    import subprocess
    import sys

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the check as an unprivileged user")
    folder = tmp_path / "private"
    folder.mkdir()
    source = folder / "source.db"
    sqlite3.connect(source).execute("CREATE TABLE flights (id integer)").connection.close()
    source.chmod(0o000)
    folder.chmod(0o755)
    for parent in folder.parents:  # pytest's tmp folders are 0700: let the user reach the file's folder
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o005)
    plugins = Path(__file__).resolve().parents[2] / "plugins"
    probe = (
        "from mlpipe.errors import ExtractError\n"
        "from mlpipe.hooks.sql import checked_sqlite_url\n"
        f"try:\n    checked_sqlite_url('sqlite:///{source}', read_only=True)\n"
        "except ExtractError as exc:\n    print(exc)\n"
    )
    run = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(plugins), "HOME": "/tmp"},
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert f"source database {source} cannot be read: permission denied" in run.stdout


SCHEMA_BREAKS = {
    "dropped_column": ("ALTER TABLE flights DROP COLUMN carrier", "no such column: f.carrier"),
    "renamed_column": ("ALTER TABLE flights RENAME COLUMN dest TO destination", "no such column: f.dest"),
    "renamed_table": ("ALTER TABLE flights RENAME TO flights_2013", "no such table: flights"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_BREAKS))
def test_a_schema_break_in_the_source_stops_extract_naming_query_and_column(fresh: SimpleNamespace, case: str) -> None:
    statement, words = SCHEMA_BREAKS[case]
    sql(fresh, statement)
    stops(lambda: extract(make_context(f"manual__{case}")), "ExtractError: query ", "flights_delay.sql", words)


# -- data the suite refuses ------------------------------------------------------------------------


@dataclass
class Bad:
    group: str  # faults of one group break different columns of one source, validated in one run
    statements: tuple[str, ...]
    expectation: str
    column: str | None
    words: tuple[str, ...] = ()
    observed: dict[str, Any] = field(default_factory=dict)  # expected entries of the failure's "observed"


def first(n: int, offset: int = 0) -> str:
    return f"id IN (SELECT id FROM flights ORDER BY id LIMIT {n} OFFSET {offset})"


HUGE = "'X' || hex(zeroblob(500000))"  # a 1,000,001-character string

SUITE_FAULTS = {
    "text_in_a_numeric_column": Bad(
        "numbers",
        (f"UPDATE flights SET sched_dep_time = 'abc' WHERE {first(600)}",),  # 5 % of the rows
        "expect_column_values_to_be_in_type_list",
        "sched_dep_time",
        ("'abc'", "'unexpected_percent': 5.0"),
        {"partial_unexpected": ["abc"], "unexpected_count": 600, "unexpected_percent": pytest.approx(5.0, abs=0.01)},
    ),
    "text_infinity_in_a_numeric_column": Bad(
        "numbers",
        (f"UPDATE flights SET sched_arr_time = 'inf' WHERE {first(600, 1000)}",),
        "expect_column_values_to_be_in_type_list",
        "sched_arr_time",
        ("'inf'",),
        {"partial_unexpected": ["inf"], "unexpected_count": 600},
    ),
    "infinite_and_out_of_range_numbers": Bad(
        "numbers",
        (
            f"UPDATE flights SET distance = 9e999 WHERE {first(7)}",
            f"UPDATE flights SET distance = 99999 WHERE {first(300, 7)}",
        ),
        "expect_column_values_to_be_between",
        "distance",
        ("'inf'", "99999"),
        {"partial_unexpected": ["inf", 99999.0], "unexpected_count": 307},
    ),
    "bad_code_format": Bad(
        "codes",
        (f"UPDATE flights SET dest = 'j f k' WHERE {first(40)}",),
        "expect_column_values_to_match_regex",
        "dest",
        ("'j f k'",),
    ),
    "unknown_origin": Bad(
        "codes",
        (f"UPDATE flights SET origin = 'BOS' WHERE {first(40, 100)}",),
        "expect_column_values_to_be_in_set",
        "origin",
        ("'BOS'",),
    ),
    "oversized_values": Bad(
        "codes",
        (f"UPDATE flights SET carrier = {HUGE} WHERE {first(26, 200)}",),
        "expect_column_values_to_match_regex",
        "carrier",
        ("1,000,001 characters",),
        {"unexpected_count": 26},
    ),
    "duplicate_ids": Bad(
        "codes",
        (  # a copy of the table without its primary key, as an export would land
            "CREATE TABLE copied AS SELECT * FROM flights",
            f"INSERT INTO copied SELECT * FROM flights WHERE {first(50, 300)}",
            "DROP TABLE flights",
            "ALTER TABLE copied RENAME TO flights",
        ),
        "expect_column_values_to_be_unique",
        "id",
    ),
    "constant_target": Bad(
        "codes", ("UPDATE flights SET arr_delay = 0",), "expect_column_mean_to_be_between", "is_late", ("is_late",)
    ),
    "too_few_rows": Bad(
        "rows", ("DELETE FROM flights WHERE id % 3 <> 0",), "expect_table_row_count_to_be_between", None
    ),
}


@pytest.fixture(scope="module")
def refused(world: SimpleNamespace) -> Callable[[str], dict[str, Any]]:
    """Run extract and validation once per group of faults; the outcome of each group, kept for its cases."""
    outcomes: dict[str, dict[str, Any]] = {}

    def outcome(group: str) -> dict[str, Any]:
        if group not in outcomes:
            before = registry_state()
            shutil.copyfile(world.root / "base.db", world.home / "source.db")
            sql(world, *(st for bad in SUITE_FAULTS.values() if bad.group == group for st in bad.statements))
            ctx = make_context(f"manual__{group}")
            snapshot = extract(ctx)
            with pytest.raises(AirflowFailException) as caught:
                validate(ctx, snapshot)
            assert "".join(traceback.format_exception(caught.value)).count("DataValidationError: data failed") == 1
            prefix = world.store.path(f"{PIPELINE}/runs/manual__{group}/validate")
            outcomes[group] = {
                "message": str(caught.value),
                "summary": json.loads((prefix / "summary.json").read_text()),
                "result_bytes": (prefix / "result.json").stat().st_size,
                "docs_bytes": max(p.stat().st_size for p in (prefix / "data_docs").rglob("*.html")),
            }
            assert registry_state() == before
        return outcomes[group]

    return outcome


@pytest.mark.parametrize("case", sorted(SUITE_FAULTS))
def test_data_the_suite_refuses_stops_validation_with_what_is_wrong(refused: Callable, case: str) -> None:
    bad = SUITE_FAULTS[case]
    got = refused(bad.group)
    message = got["message"]
    assert message.startswith("DataValidationError: data failed validation suite 'flights_delay'")
    assert len(message) <= MAX_MESSAGE, f"message of {len(message):,} characters"
    column = "table" if bad.column is None else f"column {bad.column!r}"
    lines = [line for line in message.splitlines() if line.startswith(f"  - {bad.expectation} on {column}:")]
    assert lines, message
    for word in bad.words:
        assert any(word in line for line in lines), f"{word!r} not in {lines}"
    failure = next(
        f for f in got["summary"]["failures"] if (f["expectation"], f["column"]) == (bad.expectation, bad.column)
    )
    for key, value in bad.observed.items():
        assert failure["observed"][key] == value, failure
    # Bounded whatever the data (a 1 MB string in 26 rows included): the stored result and the Data Docs page.
    assert got["result_bytes"] < 200_000
    assert got["docs_bytes"] < 400_000
    if case == "oversized_values":
        assert message.count("X" + "0" * 199) <= 5, "each huge value is cut short, at most a handful shown"


# Meaning shifts the schema cannot see: reference validation (issue 11 item 1) must stop them here.
# case -> (the corruption, what the message must name)
MEANING_SHIFTS = {
    "leakage_label_in_dest": (
        "UPDATE flights SET dest = 'UNK' WHERE arr_delay IS NULL",
        ["leakage in 'dest'", "dest = UNK"],
    ),
    "null_label_30_percent": ("UPDATE flights SET arr_delay = NULL WHERE id % 10 < 3", ["target 'is_late'"]),
    "unseen_codes_10_percent": (
        "UPDATE flights SET dest = 'ZZQ', carrier = 'Q9' WHERE id % 10 = 0",
        ["unseen categories in 'carrier'", "Q9", "unseen categories in 'dest'", "ZZQ"],
    ),
    "duplicated_flights_20_percent": (
        "INSERT INTO flights SELECT id + 10000000, year, month, day, dep_time, sched_dep_time, dep_delay, arr_time, "
        "sched_arr_time, arr_delay, carrier, flight, tailnum, origin, dest, air_time, distance, hour, minute, "
        "time_hour, epoch_hour FROM flights WHERE id % 5 = 0",
        ["duplicates:", "key columns ['id']"],
    ),
}


@pytest.mark.parametrize("case", sorted(MEANING_SHIFTS))
def test_a_meaning_shift_stops_validation(fresh: SimpleNamespace, case: str) -> None:
    corruption, words = MEANING_SHIFTS[case]
    sql(fresh, corruption)
    ctx = make_context(f"manual__{case}")
    snapshot = extract(ctx)
    stops(lambda: validate(ctx, snapshot), "ReferenceValidationError: ", "v1's snapshot", *words)


# -- data the suite lets through, but no model can learn from ----------------------------------------


def test_a_one_class_train_part_stops_features_naming_the_split_and_counts(fresh: SimpleNamespace) -> None:
    # On time before November (the time split's train part ends in late October), half late after.
    sql(
        fresh,
        "UPDATE flights SET arr_delay = 0 WHERE time_hour < '2013-11-01'",
        "UPDATE flights SET arr_delay = 60 WHERE time_hour >= '2013-11-01' AND id % 2 = 0",
    )
    ctx = make_context("manual__one_class")
    snapshot = extract(ctx)
    # Against v1's snapshot the reference check stops this too (the late share moves); the features stage
    # must still name the split by itself, as on a first run, where there is no reference.
    stops(lambda: validate(ctx, snapshot), "ReferenceValidationError: ", "target 'is_late'")
    message = stops(
        lambda: features(ctx, snapshot),
        "FeatureError: the time split on 'time_hour' left the train part",
        "with a single class of target 'is_late': train {'0': ",
        "holdout {'0': ",
    )
    assert "SpecError" not in message


def test_a_bad_thread_setting_stops_training_naming_the_variable(
    fresh: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLPIPE_TRAIN_THREADS", "lots")
    stops(
        lambda: train(make_context("manual__threads"), fresh.run["features"]),
        "ConfigError: MLPIPE_TRAIN_THREADS='lots': give a whole number",
    )


# -- the champion's artifact and the registry ----------------------------------------------------------


def _champion_file(world: SimpleNamespace) -> Path:
    from mlpipe import config

    registry = Registry.from_url(config.default_registry_url())
    try:
        return world.store.path(registry.champion(PIPELINE).artifact_key)
    finally:
        registry.dispose()


def _tamper(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"tampered")


def _delete(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize("breaks", [_tamper, _delete], ids=["tampered", "deleted"])
def test_a_broken_champion_fails_the_run_after_its_verdict(fresh: SimpleNamespace, breaks: Callable) -> None:
    from mlpipe.stages.evaluate import load_verdict

    artifact = _champion_file(fresh)
    kept = artifact.read_bytes()
    breaks(artifact)
    try:
        # A later run than any other of the module: the Models view reads the last one.
        later = AS_OF + timedelta(days=1 + [_tamper, _delete].index(breaks))
        ctx = make_context(f"manual__champion_{breaks.__name__}", as_of=later)
        extract(ctx)
        verdict = evaluate(ctx, fresh.run["features"], fresh.run["trained"])
        assert verdict["champion_status"] == "unavailable" and not verdict["blessed"]
        word = "ArtifactIntegrityError" if breaks is _tamper else "FileNotFoundError"
        stops(
            lambda: promote(ctx, verdict, fresh.run),
            "ArtifactIntegrityError: champion artifact failed its integrity check: ",
            word,
            f"{PIPELINE}_rollback",
        )
        # The verdict and the promotion's record were written first.
        assert load_verdict(fresh.store, PIPELINE, f"manual__champion_{breaks.__name__}")["decision"] == "reject"
        record = fresh.store.path(f"{PIPELINE}/runs/manual__champion_{breaks.__name__}/promote/result.json")
        assert json.loads(record.read_text())["action"] == "skipped"
        assert_models_view_flags_the_champion(fresh, word)
    finally:
        artifact.write_bytes(kept)


def assert_models_view_flags_the_champion(world: SimpleNamespace, word: str) -> None:
    from mlpipe import config
    from mlpipe.ui import render, views

    registry = Registry.from_url(config.default_registry_url())
    try:
        pipeline = views.find_pipeline(PIPELINE)
        summary = views.pipeline_summary(pipeline, world.store, registry)
        detail = views.pipeline_detail(pipeline, world.store, registry)
    finally:
        registry.dispose()
    assert summary["incident"]["version"] == 1 and word in summary["incident"]["error"]
    badge = "champion artifact failed its integrity check</span>"
    assert badge in render.overview_page([summary], root="/mlpipe")
    assert badge in render.pipeline_page(detail, root="/mlpipe")


def test_a_read_only_registry_stops_promotion_naming_it(
    fresh: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_context("manual__read_only_registry", {"force_promotion": True, "force_reason": "corpus"})
    verdict = evaluate(ctx, fresh.run["features"], fresh.run["trained"])
    registry_db = fresh.home / "registry.db"
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLPIPE_REGISTRY",
        json.dumps(
            {"conn_type": "sqlite", "extra": {"sqlalchemy_url": f"sqlite:///file:{registry_db}?mode=ro&uri=true"}}
        ),
    )
    message = stops(
        lambda: promote(ctx, verdict, fresh.run),
        f"RegistryError: registry database {registry_db} refuses writes",
        "refuses writes (attempt to write a readonly database); nothing was written",
    )
    assert "INSERT" not in message
    assert not fresh.store.path(f"{PIPELINE}/models/v2").exists(), "the model copy and its version folder are gone"


# -- end to end: Airflow does not retry an input error ------------------------------------------------


def test_airflow_does_not_retry_an_input_error(airflow_db: Path, fresh: SimpleNamespace) -> None:
    import sys

    sys.path.insert(0, str(REPO / "tests" / "integration"))
    from dagruns import load_dag, task_states

    (fresh.home / "source.db").unlink()
    dag = load_dag(f"{PIPELINE}_train")
    assert dag.get_task("extract_snapshot").retries >= 1
    run = dag.test(logical_date=datetime(2026, 3, 1, tzinfo=UTC))
    states = task_states(run)
    assert states.get("extract_snapshot") == "failed", states
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = (
            session.query(TaskInstance)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id="extract_snapshot")
            .one()
        )
        assert ti.try_number == 1, "an input error is not retried"
    assert not (fresh.home / "source.db").exists()
