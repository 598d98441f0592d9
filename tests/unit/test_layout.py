"""The artifact layout: every key it makes parses back to what made it, and nothing else parses."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mlpipe import layout
from mlpipe.errors import MlpipeError
from mlpipe.layout import ArtifactKey, LayoutError, format_key, key_in_uri, parse_key, try_parse_key
from mlpipe.storage import check_key

P, RUN, CAND = "flights_delay", layout.run_key("manual__2026-01-01T00:00:00+00:00"), "hgb"

# Every key maker, with the parts its key must parse back to: (pipeline, section, run_key, version, path).
MADE: list[tuple[str, Callable[[], str], ArtifactKey]] = [
    ("runs", lambda: layout.runs_prefix(P), ArtifactKey(P, "runs", None)),
    ("run folder", lambda: layout.run_prefix(P, RUN), ArtifactKey(P, "runs", RUN)),
    ("run record", lambda: layout.run_record(P, RUN), ArtifactKey(P, "runs", RUN, None, "run.json")),
    ("snapshot", lambda: layout.snapshot_key(P, RUN), ArtifactKey(P, "runs", RUN, None, "extract/snapshot.parquet")),
    (
        "snapshot record",
        lambda: layout.snapshot_record(P, RUN),
        ArtifactKey(P, "runs", RUN, None, "extract/snapshot.json"),
    ),
    (
        "s3 objects",
        lambda: layout.beside(layout.snapshot_key(P, RUN), layout.OBJECTS_FILE),
        ArtifactKey(P, "runs", RUN, None, "extract/objects.json"),
    ),
    ("validation", lambda: layout.validation_prefix(P, RUN), ArtifactKey(P, "runs", RUN, None, "validate")),
    (
        "validation summary",
        lambda: layout.validation_summary(P, RUN),
        ArtifactKey(P, "runs", RUN, None, "validate/summary.json"),
    ),
    ("features", lambda: layout.features_prefix(P, RUN), ArtifactKey(P, "runs", RUN, None, "features")),
    (
        "features manifest",
        lambda: layout.features_manifest(P, RUN),
        ArtifactKey(P, "runs", RUN, None, "features/manifest.json"),
    ),
    ("candidate", lambda: layout.candidate_prefix(P, RUN, CAND), ArtifactKey(P, "runs", RUN, None, "train/hgb")),
    (
        "candidate model",
        lambda: layout.candidate_model(P, RUN, CAND),
        ArtifactKey(P, "runs", RUN, None, "train/hgb/model.joblib"),
    ),
    (
        "candidate result",
        lambda: layout.candidate_result(P, RUN, CAND),
        ArtifactKey(P, "runs", RUN, None, "train/hgb/result.json"),
    ),
    (
        "candidate reused",
        lambda: layout.candidate_reused(P, RUN, CAND),
        ArtifactKey(P, "runs", RUN, None, "train/hgb/reused.json"),
    ),
    ("verdict", lambda: layout.verdict_key(P, RUN), ArtifactKey(P, "runs", RUN, None, "evaluate/verdict.json")),
    ("report folder", lambda: layout.report_prefix(P, RUN), ArtifactKey(P, "runs", RUN, None, "evaluate/report")),
    (
        "report",
        lambda: layout.evaluation_report(P, RUN),
        ArtifactKey(P, "runs", RUN, None, "evaluate/report/index.html"),
    ),
    ("promotion", lambda: layout.promotion_key(P, RUN), ArtifactKey(P, "runs", RUN, None, "promote/result.json")),
    ("models", lambda: layout.models_prefix(P), ArtifactKey(P, "models", None)),
    ("model version", lambda: layout.model_key(P, 12, RUN), ArtifactKey(P, "models", RUN, 12, "model.joblib")),
    ("monitor", lambda: layout.monitor_prefix(P, RUN), ArtifactKey(P, "monitor", RUN)),
    ("drift report", lambda: layout.drift_report(P, RUN), ArtifactKey(P, "monitor", RUN, None, "report/index.html")),
    ("score result", lambda: layout.score_result(P, RUN), ArtifactKey(P, "score", RUN, None, "result.json")),
    ("predictions", lambda: layout.predictions_prefix(P), ArtifactKey(P, "predictions", None)),
    ("window", lambda: layout.predictions_prefix(P, RUN), ArtifactKey(P, "predictions", RUN)),
    (
        "window manifest",
        lambda: layout.predictions_manifest(P, RUN),
        ArtifactKey(P, "predictions", RUN, None, "manifest.json"),
    ),
    (
        "window file",
        lambda: layout.predictions_file(P, RUN, "a1b2c3", layout.PREDICTIONS_FILE),
        ArtifactKey(P, "predictions", RUN, None, "a1b2c3/predictions.parquet"),
    ),
]


@pytest.mark.parametrize(("made", "parts"), [(m, p) for _, m, p in MADE], ids=[n for n, _, _ in MADE])
def test_every_key_round_trips_through_the_parser(made: Callable[[], str], parts: ArtifactKey) -> None:
    key = made()
    assert check_key(key) == key  # a key every store accepts
    assert parse_key(key) == parts
    assert format_key(parts) == key
    # Written where a store used to be, the key is found again at the end of its URI.
    assert key_in_uri(f"file:///srv/old/.mlpipe/artifacts/{key}") == key
    assert key_in_uri(f"s3://bucket/team/prefix/{key}", P) == key


def test_run_files_of_the_index_are_under_the_run() -> None:
    for name in layout.INDEXED_FILES:
        assert parse_key(layout.run_file(P, RUN, name)) == ArtifactKey(P, "runs", RUN, None, name)


def test_a_model_version_key_from_before_run_folders_still_parses() -> None:
    assert parse_key(f"{P}/models/v7/model.joblib") == ArtifactKey(P, "models", None, 7, "model.joblib")
    assert format_key(parse_key(f"{P}/models/v7/model.joblib")) == f"{P}/models/v7/model.joblib"


@pytest.mark.parametrize(
    "key",
    [
        "",
        "flights_delay",
        "Flights/runs/r1/run.json",  # not a pipeline name
        "flights_delay/elsewhere/r1",  # no such section
        "flights_delay/runs/r1/notes.txt",  # not a stage folder nor the run's record
        "flights_delay/runs/r1/run.json/x",
        "flights_delay/models/3/model.joblib",  # versions are v<N>
        "flights_delay/models/v0/model.joblib",
        "flights_delay/score/r1/other.json",
        "flights_delay/runs/../x",
        "flights_delay/runs/r 1/run.json",
    ],
)
def test_what_the_layout_does_not_make_does_not_parse(key: str) -> None:
    with pytest.raises(LayoutError, match="is not an artifact key"):
        parse_key(key)
    assert try_parse_key(key) is None
    assert isinstance(LayoutError("x"), MlpipeError)


def test_key_in_uri_finds_the_key_not_a_look_alike_in_the_root() -> None:
    key = layout.snapshot_key(P, RUN)
    # The root itself holds "<pipeline>/runs/<x>/" that is no key (its next part is no stage folder).
    assert key_in_uri(f"file:///backups/{P}/runs/2026/artifacts/{key}") == key
    assert key_in_uri("file:///srv/notes/readme.txt") is None
    assert key_in_uri(f"s3://b/p/{key}", "other_pipeline") is None


def test_model_key_in_uri_wants_that_version_of_that_pipeline() -> None:
    key = layout.model_key(P, 3, RUN)
    uri = f"file:///old/home/artifacts/{key}"
    assert layout.model_key_in_uri(uri, P, 3) == key
    assert layout.model_key_in_uri(uri, P, 4) is None
    assert layout.model_key_in_uri(uri, "other", 3) is None
    assert layout.model_key_in_uri(f"file:///old/{layout.verdict_key(P, RUN)}", P, 3) is None


def test_pipeline_names_are_the_specs() -> None:
    from mlpipe.spec import NAME_PATTERN

    assert f"^{layout.PIPELINE_PATTERN}$" == NAME_PATTERN


def test_run_key_makes_any_run_id_a_key_part() -> None:
    assert layout.run_key("manual__2026-01-01T00:00:00+00:00") == "manual__2026-01-01T00_00_00_00_00"
    assert layout.run_key("scheduled__2026/01/01") == "scheduled__2026_01_01"
    with pytest.raises(LayoutError, match="no usable characters"):
        layout.run_key("//")
