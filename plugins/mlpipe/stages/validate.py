"""Validate a data snapshot against a Great Expectations 1.x suite and build its Data Docs."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mlpipe import layout
from mlpipe.errors import DataValidationError, SpecError

if TYPE_CHECKING:
    import pandas
    from great_expectations import ExpectationSuite
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )

    from mlpipe.registry import ModelVersion
    from mlpipe.spec import LoadedSpec
    from mlpipe.storage import ArtifactStore

__all__ = [
    "ValidationOutcome",
    "load_suite",
    "raise_for_outcome",
    "validate_frame",
    "validate_snapshot",
]

_SUITE_KEYS = {"name", "id", "expectations", "suite_parameters", "meta", "notes"}
_EXPECTATION_KEYS = {
    "type",
    "kwargs",
    "meta",
    "id",
    "notes",
    "description",
    "severity",
    "rendered_content",
}
# kwargs GX adds to every expectation's result; they say nothing about what failed.
_NOISE_KWARGS = {"batch_id", "result_format", "catch_exceptions", "include_config"}
_PARTIAL_VALUES = 5
# Longest text kept of one value in a message, result.json or the Data Docs.
MAX_TEXT = 200
_DATASOURCE = "mlpipe"
_ASSET = "snapshot"
_DOCS_SITE = "mlpipe"


@dataclass(frozen=True)
class ValidationOutcome:
    """The verdict of one suite on one frame; ``failures`` lists each failed expectation."""

    success: bool
    suite: str
    statistics: dict[str, Any]
    failures: list[dict[str, Any]]
    result: dict[str, Any]


def load_suite(suite_path: Path) -> ExpectationSuite:
    """Read a GX 1.x suite JSON file; every problem in it raises SpecError naming the file.

    GX's own ``ExpectationSuite(...)`` logs and silently drops an expectation it cannot build,
    which would turn a typo into a check that never runs; here each one is built explicitly.
    """
    suite_path = Path(suite_path)
    where = str(suite_path)
    try:
        text = suite_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(where, [f"cannot read expectation suite: {exc.strerror or exc}"]) from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(where, [f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]) from exc
    if not isinstance(raw, dict):
        raise SpecError(where, ["the suite must be a JSON object with 'name' and 'expectations'"])

    problems: list[str] = []
    unknown = sorted(set(raw) - _SUITE_KEYS)
    if unknown:
        problems.append(f"unknown top-level key(s) {unknown}; allowed: {sorted(_SUITE_KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append("'name' must be a non-empty string")
    entries = raw.get("expectations")
    if not isinstance(entries, list) or not entries:
        problems.append("'expectations' must be a non-empty list")
        entries = []
    meta = raw.get("meta", {})
    if not isinstance(meta, dict):
        problems.append("'meta' must be an object")
        meta = {}
    suite_parameters = raw.get("suite_parameters") or {}
    if not isinstance(suite_parameters, dict):
        problems.append("'suite_parameters' must be an object")
        suite_parameters = {}

    expectations = []
    for index, entry in enumerate(entries):
        expectation, problem = _build_expectation(index, entry)
        if problem:
            problems.append(problem)
        else:
            expectations.append(expectation)
    if problems:
        raise SpecError(where, problems)

    return _import_gx().ExpectationSuite(
        name=name,
        expectations=expectations,
        suite_parameters=suite_parameters,
        meta=meta,
        notes=raw.get("notes"),
    )


def validate_frame(
    df: pandas.DataFrame,
    suite_path: Path,
    *,
    docs_dir: Path | None = None,
    run_name: str = "mlpipe",
) -> ValidationOutcome:
    """Run the suite at ``suite_path`` on ``df`` through an ephemeral GX context.

    Failed expectations never raise here: the outcome carries them (see ``raise_for_outcome``).
    With ``docs_dir``, the GX Data Docs page of this result is written there
    (``docs_dir/validations/<suite>/<run_name>/<time>/<batch>.html``).
    """
    suite = load_suite(suite_path)

    gx = _import_gx()
    from great_expectations.core.run_identifier import RunIdentifier

    context = _ephemeral_context(docs_dir)
    batch_definition = (
        context.data_sources.add_pandas(_DATASOURCE)
        .add_dataframe_asset(_ASSET)
        .add_batch_definition_whole_dataframe(_ASSET)
    )
    suite = context.suites.add(suite)
    order = {expectation.id: i for i, expectation in enumerate(suite.expectations)}
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite.name, data=batch_definition, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{suite.name}_checkpoint",
            validation_definitions=[definition],
            actions=[],
            # BASIC holds all the report reads (observed values, unexpected counts and percentages, the
            # first unexpected values); SUMMARY would also count each unexpected value and find its rows.
            result_format={"result_format": "BASIC", "partial_unexpected_count": 20},
        )
    )
    checkpoint_result = checkpoint.run(
        batch_parameters={"dataframe": _gx_friendly(df)},
        run_id=RunIdentifier(run_name=run_name),
    )
    ((result_id, suite_result),) = checkpoint_result.run_results.items()
    # Values as GX saw them can be huge (a 1 MB string, twenty times): the result, the Data Docs
    # page and every message get them cut short.
    for r in suite_result.results:
        r.result = _bounded(r.result)
        r.exception_info = _bounded(r.exception_info)
    if docs_dir is not None:
        # One page rendered: this result's. GX's index (a list filled by CDN scripts) and the suite's
        # page would be two more renders that nothing links to.
        context.validation_results_store.set(result_id, suite_result)
        context.build_data_docs(site_names=[_DOCS_SITE], resource_identifiers=[result_id], build_index=False)

    columns = {str(c) for c in df.columns}
    failed = sorted(
        (r for r in suite_result.results if not r.success),
        key=lambda r: order.get(r.expectation_config.id, len(order)),
    )
    return ValidationOutcome(
        success=bool(suite_result.success),
        suite=suite.name,
        statistics=_jsonable(dict(suite_result.statistics)),
        failures=[_failure(r, columns, df) for r in failed],
        result=_result_dict(suite_result),
    )


def raise_for_outcome(outcome: ValidationOutcome, report_uri: str | None = None) -> None:
    """Raise DataValidationError carrying the failed expectations unless the outcome passed."""
    if not outcome.success:
        raise DataValidationError(outcome.suite, outcome.failures, report_uri)


def validate_snapshot(
    loaded: LoadedSpec,
    store: ArtifactStore,
    *,
    run_key: str,
    snapshot_key: str,
    snapshot_sha256: str,
    champion: ModelVersion | None,
) -> dict[str, Any]:
    """Validate a run's snapshot with the spec's suite, then against ``champion``'s training snapshot
    (stages/reference.py; None: no champion yet); keep results and reports with the run.

    Result, summary, Data Docs and the reference report are stored before a failure is raised, so
    the failed run can be read afterwards. Raises :class:`DataValidationError` listing every failed
    expectation, or its :class:`ReferenceValidationError` listing every failed reference check.
    """
    import tempfile
    import time

    from mlpipe.stages.extract import read_snapshot
    from mlpipe.stages.reference import ReferenceReport, check_against_champion, raise_for_report, write_report

    started = time.perf_counter()
    prefix = layout.validation_prefix(loaded.name, run_key)
    frame = read_snapshot(store, snapshot_key, snapshot_sha256)
    with tempfile.TemporaryDirectory(prefix="mlpipe-gx-") as tmp:
        docs = Path(tmp) / "data_docs"
        outcome = validate_frame(frame, loaded.suite_path, docs_dir=docs, run_name=run_key)
        pages = sorted(docs.glob("validations/**/*.html"))
        store.put_tree(f"{prefix}/{layout.DATA_DOCS_DIR}", docs)
    # The validation page is self-contained; GX's index fills its list with CDN scripts.
    page = pages[0].relative_to(docs).as_posix() if pages else "index.html"
    result = store.put_bytes(f"{prefix}/{layout.RESULT_FILE}", json.dumps(outcome.result, indent=2).encode())
    if outcome.success:
        reference = check_against_champion(loaded.spec, store, champion, frame)
    else:
        reference = ReferenceReport("skipped", "not run: the schema suite failed")
    reference_uris = write_report(store, prefix, reference)
    summary = {
        "success": outcome.success,
        "suite": outcome.suite,
        "suite_file": loaded.suite_path.name,
        "statistics": outcome.statistics,
        "failures": outcome.failures,
        "rows": len(frame),
        "result_uri": result.uri,
        "data_docs_uri": store.uri(f"{prefix}/{layout.DATA_DOCS_DIR}/{page}"),
        "reference": reference.summary(**reference_uris),
        "seconds": round(time.perf_counter() - started, 3),
    }
    store.put_bytes(layout.validation_summary(loaded.name, run_key), json.dumps(summary, indent=2).encode())
    raise_for_outcome(outcome, summary["data_docs_uri"])
    raise_for_report(reference, reference_uris["html_uri"])
    return summary


def _import_gx() -> ModuleType:
    """Import great_expectations (slow: seconds) only when a suite is really used."""
    # Read when GX starts; set first so no usage statistics are attempted.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # GX logs hundreds of INFO lines (API registry, metric declarations) on import and per run,
    # which would bury the task log; keep its warnings unless someone configured it already.
    gx_logger = logging.getLogger("great_expectations")
    if gx_logger.level == logging.NOTSET:
        gx_logger.setLevel(logging.WARNING)
    import great_expectations

    return great_expectations


def _build_expectation(index: int, entry: Any) -> tuple[Any, str | None]:
    """Build one Expectation from its JSON entry, or say what is wrong with it."""
    label = f"expectations[{index}]"
    if not isinstance(entry, dict):
        return None, f"{label} must be an object with 'type' and 'kwargs'"
    kind = entry.get("type")
    if not isinstance(kind, str) or not kind:
        return None, f"{label} needs a 'type' such as 'expect_column_to_exist'"
    label = f"{label} ({kind})"
    unknown = sorted(set(entry) - _EXPECTATION_KEYS)
    if unknown:
        return None, f"{label}: unknown key(s) {unknown}; allowed: {sorted(_EXPECTATION_KEYS)}"
    kwargs = entry.get("kwargs", {})
    if not isinstance(kwargs, dict):
        return None, f"{label}: 'kwargs' must be an object"
    meta = entry.get("meta") or {}
    if not isinstance(meta, dict):
        return None, f"{label}: 'meta' must be an object"

    _import_gx()
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    # GX rejects None for some optional fields (severity), so pass only what the file sets.
    optional = {k: entry[k] for k in ("notes", "description", "severity") if entry.get(k) is not None}
    try:
        config = ExpectationConfiguration(type=kind, kwargs=kwargs, meta=meta, **optional)
        return config.to_domain_obj(), None
    except Exception as exc:  # GX raises several unrelated types (pydantic, its own, KeyError)
        message = " ".join(str(exc).split()) or type(exc).__name__
        return None, f"{label}: {message}"


def _ephemeral_context(docs_dir: Path | None) -> Any:
    """An in-memory GX context: no progress bars, no analytics, at most one docs site."""
    gx = _import_gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites: dict[str, Any] = {}
    if docs_dir is not None:
        sites[_DOCS_SITE] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(Path(docs_dir).resolve()),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _gx_friendly(df: pandas.DataFrame) -> pandas.DataFrame:
    """Give pandas string columns to GX as object columns.

    GX 1.24 reports a pandas 3 ``str`` column's type as "str" but no type name matches it in
    expect_column_values_to_be_in_type_list; on object columns it checks each value's Python
    type instead, so ``type_list: ["str"]`` works and still fails for int/float columns.
    """
    import pandas as pd

    strings = {c: object for c, dtype in df.dtypes.items() if isinstance(dtype, pd.StringDtype)}
    return df.astype(strings) if strings else df


def _failure(result: ExpectationValidationResult, columns: set[str], df: pandas.DataFrame) -> dict[str, Any]:
    """One failed expectation as a JSON-friendly dict saying what GX saw."""
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in _NOISE_KWARGS}
    column = kwargs.get("column")
    observed = _observed(result, column, columns)
    if config.type == "expect_column_values_to_be_in_type_list" and str(column) in columns:
        observed = _text_in_numeric_column(df[column], kwargs.get("type_list") or []) or observed
    return {
        "expectation": config.type,
        "column": column,
        "kwargs": _jsonable(kwargs),
        "observed": observed,
    }


def _text_in_numeric_column(values: pandas.Series, type_list: list[Any]) -> dict[str, Any] | None:
    """What makes a column the suite types as numbers hold text: the values that are not numbers, and their share.

    One such value turns the whole column into text, so GX's own figures (every value unexpected,
    valid ones such as '1400' as examples) would hide the few that are really wrong.
    """
    import numpy as np
    import pandas as pd

    numeric = any(str(t).lower().startswith(("int", "float", "uint", "number")) for t in type_list)
    if not numeric or pd.api.types.is_numeric_dtype(values.dtype):
        return None
    present = values[values.notna()]
    as_numbers = pd.to_numeric(present.astype(str).str.strip(), errors="coerce")
    bad = as_numbers.isna().to_numpy() | np.isinf(as_numbers.to_numpy(dtype=float, na_value=np.nan))
    count = int(bad.sum())
    return {
        "stored_as": "text",
        "unexpected_count": count,
        "unexpected_percent": round(100.0 * count / len(values), 4) if len(values) else 0.0,
        "element_count": len(values),
        "partial_unexpected": _distinct(present[bad].head(1000).tolist())[:_PARTIAL_VALUES],
        "note": "values that are not finite numbers; the rest are numbers written as text"
        if count
        else "every value is a number written as text",
    }


def _observed(result: ExpectationValidationResult, column: Any, columns: set[str]) -> Any:
    if column is not None and str(column) not in columns:
        return "column is missing"
    info = result.exception_info or {}
    if info.get("raised_exception"):
        message = str(info.get("exception_message") or "").strip().splitlines()
        return f"GX error: {message[0] if message else 'unknown'}"
    details = result.result or {}
    if "observed_value" in details:
        observed = _jsonable(details["observed_value"])
        mismatched = (details.get("details") or {}).get("mismatched")
        if mismatched:
            return {"value": observed, "mismatched": _jsonable(mismatched)}
        return observed
    if "unexpected_count" in details:
        percent = _jsonable(details.get("unexpected_percent"))
        partial = _distinct(details.get("partial_unexpected_list") or [])
        summary = {
            "unexpected_count": details.get("unexpected_count"),
            "unexpected_percent": round(percent, 4) if isinstance(percent, float) else percent,
            "element_count": details.get("element_count"),
            "partial_unexpected": partial[:_PARTIAL_VALUES],
        }
        return _jsonable(summary)
    return _jsonable(details) or None


def _distinct(values: list[Any]) -> list[Any]:
    """First occurrences only: GX's partial list repeats a bad value as often as it occurs."""
    seen: list[Any] = []
    for value in _jsonable(values):
        if value not in seen:
            seen.append(value)
    return seen


def _result_dict(suite_result: ExpectationSuiteValidationResult) -> dict[str, Any]:
    """GX's describe_dict() plus the suite name and run, made strictly JSON-serialisable."""
    described = suite_result.describe_dict()
    meta = suite_result.meta or {}
    described["suite_name"] = suite_result.suite_name
    described["run_id"] = meta.get("run_id")
    described["validation_time"] = meta.get("validation_time")
    result = _jsonable(described)
    json.dumps(result, allow_nan=False)  # fail here, not in whoever stores it
    return result


def _jsonable(value: Any) -> Any:
    """Turn GX/numpy/pandas values into plain JSON types (NaN, NA and NaT become None)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _short(value)
    if _is_missing(value):
        return None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"  # JSON has no infinity; None would hide it
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    to_json = getattr(value, "to_json_dict", None)
    if callable(to_json):
        return _jsonable(to_json())
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and getattr(value, "shape", None) == ():
        return _jsonable(item())
    tolist = getattr(value, "tolist", None)  # numpy arrays, pandas arrays
    if callable(tolist):
        return _jsonable(tolist())
    return str(value)


def _short(text: str) -> str:
    """``text`` cut to MAX_TEXT characters, saying how long it was."""
    if len(text) <= MAX_TEXT + 32:  # room for the marker: a text cut short once stays as it is
        return text
    return f"{text[:MAX_TEXT]}… ({len(text):,} characters)"


def _bounded(value: Any) -> Any:
    """``value`` (GX's result dict of one expectation) with every long string cut short, types kept otherwise."""
    if isinstance(value, str):
        return _short(value)
    if isinstance(value, dict):  # in place: GX's own dict types stay what they are
        for key in list(value):
            value[key] = _bounded(value[key])
        return value
    if isinstance(value, list):
        return [_bounded(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_bounded(v) for v in value)
    return value


def _is_missing(value: Any) -> bool:
    import pandas as pd

    try:
        missing = pd.isna(value)
    except (TypeError, ValueError):
        return False
    return isinstance(missing, bool) and missing
