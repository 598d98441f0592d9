"""``mlpipe check``: a dry run of a pipeline without a scheduler, and ``mlpipe suite draft``'s data.

The check validates the spec (which also checks the query's bind parameters), runs the query
bounded to a sample, confirms every column the spec names is in the result with a usable type,
that the target can be learnt, and that the suite passes on the sample. Every problem names the
spec file (or suite file) and the field to fix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import sqlalchemy as sa

from mlpipe.errors import ExtractError, FeatureError, MlpipeError, SpecError
from mlpipe.layout import run_key
from mlpipe.sources.chunks import frame_to_arrow
from mlpipe.sources.columns import column_problems, shown_path
from mlpipe.sources.sql import query_error
from mlpipe.spec import LoadedSpec
from mlpipe.sqltext import bind_names, commented_binds
from mlpipe.stages.extract import read_snapshot, snapshot_key
from mlpipe.stages.features import check_frame
from mlpipe.stages.profile import Sample, draft_suite, sample_query
from mlpipe.stages.validate import validate_frame
from mlpipe.storage import ArtifactStore

DEFAULT_SAMPLE_ROWS = 100_000


@dataclass
class CheckReport:
    """What ``mlpipe check`` found: report lines, and problems (each naming a file and field)."""

    spec_path: str
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, topic: str, text: str) -> None:
        self.lines.append(f"{topic:<11} {text}")

    def render(self) -> str:
        out = list(self.lines)
        if self.problems:
            out.append(f"FAILED: {len(self.problems)} problem(s) in {self.spec_path}:")
            out += [f"  - {p}" for p in self.problems]
        return "\n".join(out)


def sample_source(loaded: LoadedSpec, engine: sa.Engine, rows: int) -> Sample:
    """The first ``rows`` rows of the spec's query (``:as_of`` = now), or an ExtractError naming the file."""
    try:
        return sample_query(engine, loaded.query_text(), dict(loaded.spec.source.params), rows)
    except (sa.exc.SQLAlchemyError, pd.errors.DatabaseError) as exc:
        raise query_error(exc, loaded.query_path, engine) from None


def check_pipeline(loaded: LoadedSpec, engine: sa.Engine, *, rows: int = DEFAULT_SAMPLE_ROWS) -> CheckReport:
    """Run every check on a valid spec's source; the report lists what passed and each problem."""
    spec = loaded.spec
    report = CheckReport(spec_path=shown_path(loaded.path))
    report.add(
        "spec",
        f"{report.spec_path}: valid ({spec.target.task}, target {spec.target.column!r}, "
        f"{len(spec.features.columns)} features, {len(spec.candidates)} candidates)",
    )
    if spec.source.kind != "sql":
        report.add("source", f"{spec.source.kind}: only SQL sources are sampled by mlpipe check")
        return report
    query = shown_path(loaded.query_path)
    sql = loaded.query_text()
    binds = bind_names(sql)
    if "as_of" in binds:
        bound = f"binds :as_of (bound to now here; to the run's logical date in a run){_others(binds)}"
    else:
        bound = f"has no :as_of (source.as_of: none: every run reads the whole result){_others(binds)}"
    if commented_binds(sql):
        bound += f"; ignored in comments: {', '.join(':' + b for b in commented_binds(sql))}"
    report.add("query", f"{query} {bound}")

    started = time.perf_counter()
    try:
        sample = sample_source(loaded, engine, rows)
    except ExtractError as exc:
        report.problems.append(f"source.query: {exc}")
        return report
    frame = sample.frame
    more = " (the query has more: a sample)" if sample.truncated else " (all of them)"
    report.add(
        "sample",
        f"{len(frame):,} rows x {len(frame.columns)} columns in {time.perf_counter() - started:.1f} s{more}",
    )

    problems = column_problems(loaded, frame_to_arrow(frame).schema)
    if problems:
        report.problems += problems
    else:
        report.add("columns", f"the {len(_named(loaded))} columns the spec names are there, with usable types")
        try:
            check_frame(frame, spec, f"the result of {query}")
            report.add("target", _target_line(frame, loaded))
        except FeatureError as exc:
            report.problems.append(f"target.column: {exc}")

    suite = shown_path(loaded.suite_path)
    try:
        outcome = validate_frame(frame, loaded.suite_path)
    except SpecError as exc:
        report.problems += [f"validation.suite: {suite}: {p}" for p in exc.problems]
        return report
    judged, skipped = [], 0
    for failure in outcome.failures:
        if failure["expectation"] == "expect_table_row_count_to_be_between" and sample.truncated:
            skipped += 1  # the sample stops at `rows`; the row count is judged in a run
            continue
        judged.append(failure)
    stats = outcome.statistics
    for failure in judged:
        where = f"column {failure['column']!r}" if failure.get("column") else "the table"
        report.problems.append(
            f"validation.suite: {suite}: {failure['expectation']} on {where} fails on the sample: "
            f"observed {failure.get('observed')!r}"
        )
    if not judged:
        note = "; the row count is not judged on a truncated sample" if skipped else ""
        report.add(
            "suite",
            f"{suite}: {stats.get('evaluated_expectations', 0) - skipped} of "
            f"{stats.get('evaluated_expectations', 0)} expectations pass on the sample{note}",
        )
    if report.ok:
        report.add("ok", f"ready: airflow dags test {spec.name}_train")
    return report


def _others(binds: list[str]) -> str:
    others = [b for b in binds if b != "as_of"]
    return f" and {', '.join(':' + b for b in others)} (source.params)" if others else ""


def _named(loaded: LoadedSpec) -> set[str]:
    from mlpipe.sources.columns import spec_columns

    return {column for _, column, _ in spec_columns(loaded)}


def _target_line(frame: pd.DataFrame, loaded: LoadedSpec) -> str:
    target = loaded.spec.target
    values = frame[target.column]
    if target.task == "regression":
        return f"{target.column!r}: numbers {values.min()}..{values.max()} (mean {values.mean():.4g})"
    counts = values.value_counts()
    shown = ", ".join(f"{k}: {v:,}" for k, v in counts.head(8).items())
    return f"{target.column!r}: {len(counts)} classes ({shown}{', ...' if len(counts) > 8 else ''})"


# -- suite draft ------------------------------------------------------------------------------------


def draft_pipeline_suite(
    loaded: LoadedSpec,
    *,
    engine: sa.Engine | None = None,
    store: ArtifactStore | None = None,
    from_snapshot: str | None = None,
    rows: int = DEFAULT_SAMPLE_ROWS,
) -> tuple[dict[str, Any], str, int]:
    """A suite drafted from the query's sample, or a run's snapshot: (suite JSON, what it was drawn from, rows)."""
    if from_snapshot:
        key = snapshot_key(loaded.name, run_key(from_snapshot))
        if store is None or not store.exists(key):
            raise MlpipeError(
                f"--from-snapshot {from_snapshot}: no snapshot at {key} (a run id of {loaded.name}_train)"
            )
        frame = read_snapshot(store, key)
        drawn_from, truncated = f"the snapshot of run {from_snapshot}", False
    else:
        if loaded.spec.source.kind != "sql" or engine is None:
            raise MlpipeError("suite draft samples SQL sources; for another source pass --from-snapshot RUN")
        sample = sample_source(loaded, engine, rows)
        frame, truncated = sample.frame, sample.truncated
        drawn_from = shown_path(loaded.query_path)
    suite = draft_suite(frame, name=loaded.name, drawn_from=drawn_from, truncated=truncated)
    return suite, drawn_from, len(frame)
