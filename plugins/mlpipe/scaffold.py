"""``mlpipe new``: a pipeline's spec, query and suite drafted from a table (or a query) and a target column.

From a sample of the data: the task from the target's values, features from the columns' types,
and the columns a person must judge (ids, free text, timestamps, likely leaks, constants) listed
as commented-out suggestions with the reason, never used silently. A time column gives a time
split and a query bounded by ``:as_of``; without one the source is ``as_of: none``. The suite is
drafted from the same query by :mod:`mlpipe.stages.profile`. Every file is commented.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from mlpipe import config
from mlpipe.errors import MlpipeError
from mlpipe.spec import IDENTIFIER_PATTERN, NAME_PATTERN, load_spec
from mlpipe.sqltext import bind_names
from mlpipe.stages.profile import ColumnProfile, Sample, draft_suite, profile_frame, sample_query

# Name parts that suggest a value known only after the outcome (a leak when the model runs before it).
LEAK_WORDS = ("delay", "actual", "outcome", "result", "label", "status", "cancel", "refund", "churn", "after")
LEAK_CORRELATION = 0.9
FREE_TEXT_DISTINCT = 250  # more distinct texts than a categorical feature may keep (features.max_categories)
FREE_TEXT_LENGTH = 40  # average characters of a sentence rather than a code
MULTICLASS_MAX = 50
SMALL_DATA_ROWS = 5_000  # below: a random forest; above: histogram gradient boosting


class ScaffoldError(MlpipeError):
    """``mlpipe new`` cannot draft the pipeline; the message says which option or column to change."""


@dataclass
class Suggestion:
    column: str
    role: str  # what it could be used as, if the user decides so
    reason: str


@dataclass
class Plan:
    """What ``mlpipe new`` decided, and why."""

    name: str
    target: str
    task: str
    task_reason: str
    positive_class: Any = None
    classes: list[Any] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    datetime_parts: dict[str, list[str]] = field(default_factory=dict)
    suggestions: list[Suggestion] = field(default_factory=list)
    time_column: str | None = None
    rows: int = 0
    target_std: float | None = None


def infer_task(profile: ColumnProfile, series: pd.Series) -> tuple[str, Any, str]:
    """(task, positive class, why) from the target's values."""
    seen = f"{profile.distinct} distinct values in {profile.rows - profile.nulls:,} rows"
    if profile.distinct < 2:
        raise ScaffoldError(f"--target {profile.name!r}: {seen}; a model needs at least two")
    if profile.kind == "bool" or profile.distinct == 2:
        values = sorted(series.dropna().unique().tolist())
        if set(values) <= {0, 1} or profile.kind == "bool":
            positive = True if profile.kind == "bool" else 1
        else:
            counts = series.value_counts()
            positive = counts.index[-1] if counts.iloc[-1] < counts.iloc[0] else values[-1]
            positive = getattr(positive, "item", lambda: positive)()
        return "binary", positive, f"binary: {seen}"
    if profile.kind == "float" and not series.dropna().map(float.is_integer).all():
        return "regression", None, f"regression: {seen}, not whole numbers"
    if profile.kind in ("int", "float"):
        if profile.distinct <= 20:
            return "multiclass", None, f"multiclass: {seen}, whole numbers (--task regression if they are amounts)"
        return "regression", None, f"regression: {seen}"
    if profile.kind == "text" and profile.distinct <= MULTICLASS_MAX:
        return "multiclass", None, f"multiclass: {seen}"
    raise ScaffoldError(
        f"--target {profile.name!r}: {seen} of type {profile.type_name}: not a label mlpipe can learn "
        "(binary, multiclass up to 50 classes, or numbers for a regression); cast it in a --query"
    )


def _leak_reason(p: ColumnProfile, frame: pd.DataFrame, y: pd.Series | None) -> str | None:
    """Why column ``p`` may leak the outcome (``y``: the target as numbers; None for multiclass)."""
    words = [w for w in LEAK_WORDS if w in p.name.lower()]
    if words:
        return f"its name ({words[0]!r}) suggests a value known only after the outcome"
    if y is None or p.kind not in ("int", "float", "bool"):
        return None
    corr = frame[p.name].astype(float).corr(y, method="spearman")
    if corr is not None and not math.isnan(corr) and abs(corr) >= LEAK_CORRELATION:
        return f"it alone tracks the target (rank correlation {corr:.2f}): known only after the outcome?"
    return None


def plan_pipeline(
    name: str, frame: pd.DataFrame, *, target: str, task: str | None = None, time_column: str | None = None
) -> Plan:
    """Decide task, features and suggestions from a sample ``frame`` of the source."""
    columns = list(frame.columns)
    for option, column in (("--target", target), ("--time-column", time_column)):
        if column is not None and column not in columns:
            raise ScaffoldError(f"{option}: column {column!r} is not in the data; it has: {', '.join(columns)}")
    profiles = {p.name: p for p in profile_frame(frame)}
    inferred, positive, why = infer_task(profiles[target], frame[target])
    if task is not None and task != inferred:
        why = f"{task}: given by --task (the values suggest {why})"
        if task == "binary":
            values = sorted(frame[target].dropna().unique().tolist())
            if len(values) != 2:
                raise ScaffoldError(f"--task binary: target {target!r} has {len(values)} distinct values, not 2")
            positive = positive if positive in values else values[-1]
        else:
            positive = None
    plan = Plan(name=name, target=target, task=task or inferred, task_reason=why, time_column=time_column)
    plan.positive_class = positive if plan.task == "binary" else None
    plan.rows = len(frame)
    if plan.task == "regression":
        plan.target_std = float(frame[target].astype(float).std())
    else:
        plan.classes = sorted(frame[target].dropna().unique().tolist(), key=str)
    y = None
    if plan.task == "binary":
        y = (frame[target] == plan.positive_class).astype(float)
    elif plan.task == "regression":
        y = frame[target].astype(float)
    for column, p in profiles.items():
        if column == target:
            continue
        if column == time_column:
            parts = ["day_of_week", "hour"] if _has_hours(frame[column]) else ["day_of_week"]
            plan.datetime_parts[column] = parts
            continue
        reason = None
        role = "numeric" if p.kind in ("int", "float") else "categorical"
        if p.distinct <= 1:
            reason = f"constant in the sample ({p.values[:1] or 'all null'}): it cannot tell rows apart"
        elif p.is_id or (p.kind == "int" and p.unique and frame[column].is_monotonic_increasing):
            reason, role = "an id (unique per row): it says nothing about the target, and new rows have new ids", "id"
        elif p.looks_like_time:
            reason, role = "a timestamp: as a datetime feature, or the time column (--time-column)", "datetime"
        elif p.kind == "other":
            reason = f"values of type {p.type_name}: cast it in the query to a number or text"
        elif p.kind == "text" and (p.distinct > FREE_TEXT_DISTINCT or p.mean_length > FREE_TEXT_LENGTH):
            reason = f"free text ({p.distinct:,} distinct values, {p.mean_length:.0f} characters on average)"
        else:
            reason = _leak_reason(p, frame, y)
        if reason:
            plan.suggestions.append(Suggestion(column, role, reason))
        elif p.kind in ("int", "float"):
            plan.numeric.append(column)
        else:
            plan.categorical.append(column)
    if not (plan.numeric or plan.categorical or plan.datetime_parts):
        listed = "; ".join(f"{s.column}: {s.reason}" for s in plan.suggestions)
        raise ScaffoldError(f"no column qualifies as a feature without review ({listed}); pick some with a --query")
    return plan


def _has_hours(series: pd.Series) -> bool:
    stamps = pd.to_datetime(series.dropna().head(1000), errors="coerce")
    return bool((stamps.dt.hour != 0).any() or (stamps.dt.minute != 0).any())


# -- rendering --------------------------------------------------------------------------------------


def _flow(value: Any) -> str:
    """A YAML flow value (JSON is YAML)."""
    return json.dumps(value)


def _candidates(plan: Plan) -> str:
    small = plan.rows < SMALL_DATA_ROWS
    if plan.task == "regression":
        first = ("ridge", "sklearn.linear_model.Ridge", {"alpha": 1.0})
        second = (
            ("forest", "sklearn.ensemble.RandomForestRegressor", {"n_estimators": 100, "min_samples_leaf": 2})
            if small
            else ("hgb", "sklearn.ensemble.HistGradientBoostingRegressor", {"max_iter": 100, "learning_rate": 0.1})
        )
    else:
        first = ("logreg", "sklearn.linear_model.LogisticRegression", {"max_iter": 1000})
        second = (
            ("forest", "sklearn.ensemble.RandomForestClassifier", {"n_estimators": 100, "min_samples_leaf": 2})
            if small
            else ("hgb", "sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 100, "learning_rate": 0.1})
        )
    second[2]["random_state"] = 42
    lines = []
    for name, estimator, params in (first, second):
        lines += [f"  - name: {name}", f"    estimator: {estimator}", f"    params: {_flow(params)}"]
    return "\n".join(lines)


def _metrics_and_gate(plan: Plan) -> str:
    if plan.task == "binary":
        return """metrics:
  primary: roc_auc
  secondary: [average_precision, log_loss]

gate:
  min_primary: 0.55     # a coin scores 0.5: the best candidate must do better than that
  min_improvement: 0.0  # over the champion, once there is one (raise it to ask for a real gain)
  max_regression:
    log_loss: 0.02      # and may not worsen log loss by more than this"""
    if plan.task == "multiclass":
        floor = round(1 / max(2, len(plan.classes)) + 0.1, 2)
        return f"""metrics:
  primary: f1_macro
  secondary: [accuracy, log_loss]

gate:
  min_primary: {floor}     # guessing among {len(plan.classes)} classes scores about {1 / max(2, len(plan.classes)):.2f}
  min_improvement: 0.0  # over the champion, once there is one (raise it to ask for a real gain)
  max_regression:
    log_loss: 0.05      # and may not worsen log loss by more than this"""
    std = plan.target_std or 1.0
    digits = max(0, 3 - math.floor(math.log10(abs(std))) if std else 3)
    return f"""metrics:
  primary: rmse
  secondary: [mae, r2]

gate:
  min_primary: {round(std, digits)}  # predicting the mean everywhere scores about this (the target's std)
  min_improvement: 0.0  # over the champion, once there is one (raise it to ask for a real gain)
  max_regression:
    mae: {round(std * 0.05, digits)}           # and may not worsen the mean absolute error by more than this"""


def render_spec(plan: Plan, *, description: str, owner: str, conn_id: str, as_of: str, drawn_from: str) -> str:
    """The spec YAML, commented so the user can edit it."""
    suggestions = {role: [s for s in plan.suggestions if s.role == role] for role in ("numeric", "categorical")}
    others = [s for s in plan.suggestions if s.role not in ("numeric", "categorical")]

    def listed(kind: str, chosen: list[str]) -> str:
        lines = [f"  {kind}:" if chosen else f"  {kind}: []"]
        lines += [f"    - {_flow(c)}" for c in chosen]
        hint = "" if chosen else " (to use it, replace [] by this list)"
        lines += [f"    # - {_flow(s.column)}   # review: {s.reason}{hint}" for s in suggestions[kind]]
        return "\n".join(lines)

    datetime_lines = ["  datetime:"] if plan.datetime_parts else []
    for column, parts in plan.datetime_parts.items():
        datetime_lines += [f"    - column: {_flow(column)}", "      timezone: UTC", f"      parts: {_flow(parts)}"]
    not_used = [f"#   {s.column}: {s.reason}" for s in others]
    if plan.time_column:
        split = f"""split:
  method: time          # the holdout: the latest 20% of rows by {plan.time_column} (judged on the future)
  time_column: {_flow(plan.time_column)}
  holdout_fraction: 0.2
  seed: 42"""
    else:
        split = (
            """split:
  method: random        # no time column given (--time-column): a seeded random holdout"""
            + (", stratified by the class" if plan.task != "regression" else "")
            + """
  holdout_fraction: 0.2
  seed: 42"""
        )
    positive = (
        f"\n  positive_class: {_flow(plan.positive_class)}   # the label that counts as positive"
        if (plan.task == "binary")
        else ""
    )
    as_of_line = (
        "  as_of: none          # no time column: every run reads the whole table (see docs/spec.md)\n"
        if as_of == "none"
        else ""
    )
    return f"""# {plan.name}: drafted by `mlpipe new` from {drawn_from} ({plan.rows:,} rows sampled).
# Review it, then: mlpipe check {plan.name}   and   airflow dags test {plan.name}_train
# Every field is described in docs/spec.md.
name: {plan.name}
description: >-
  {description}
owner: {_flow(owner)}
tags: [drafted]
schedule: null   # manual runs only; a cron here (in UTC, e.g. "0 2 * * *") trains on a schedule
retries: 2

source:
  kind: sql
  connection_id: {conn_id}   # an Airflow Connection; undefined means the embedded default (MLPIPE_HOME/source.db)
  query: {plan.name}.sql
{as_of_line}  chunk_rows: 50000

target:
  column: {_flow(plan.target)}
  task: {plan.task}   # {plan.task_reason}{positive}

# Features from the columns' types: numbers are numeric features, text and booleans categorical.
# Commented-out columns need your judgement (the reason is beside each); uncomment what is safe to use.
features:
{listed("numeric", plan.numeric)}
{listed("categorical", plan.categorical)}
{chr(10).join([*datetime_lines, ""]) if datetime_lines else ""}  missing:
    numeric: median       # a missing number becomes the training median
    categorical: constant # a missing category is a category of its own
  max_categories: 100     # rarer categories pool into one
{chr(10).join(["# Not used, for your review:", *not_used]) if not_used else ""}

{split}

# Two candidates: a linear model and a tree ensemble; the best on the holdout faces the gate.
candidates:
{_candidates(plan)}

{_metrics_and_gate(plan)}

validation:
  suite: {plan.name}.json   # drafted from the same sample by `mlpipe suite draft`; review its notes
"""


def quote_identifier(engine: sa.Engine, name: str) -> str:
    return engine.dialect.identifier_preparer.quote(name)


def render_table_sql(plan: Plan, engine: sa.Engine, *, table: str, columns: list[str], has_target_nulls: bool) -> str:
    q = lambda c: quote_identifier(engine, c)  # noqa: E731
    where = []
    header = [
        f"-- Training extract of the {plan.name} pipeline, drafted by `mlpipe new` from table {table}.",
        "-- Every column of the table is selected, so a suggestion of the spec can be uncommented without",
        f"-- editing this file; the spec uses only its features and the target {plan.target}.",
    ]
    if plan.time_column:
        where.append(f"{q(plan.time_column)} < :as_of")
        header += [
            "-- The as_of parameter is bound by mlpipe to the run's logical date: a run reads only the rows",
            "-- before it, and a re-run of a past run reads the same rows.",
        ]
    else:
        header += ["-- No time column: every run reads the whole table (source.as_of: none in the spec)."]
    if has_target_nulls:
        where.append(f"{q(plan.target)} IS NOT NULL")
        header.append("-- Rows without a label are left out: a model cannot learn from them.")
    order = [q(plan.time_column)] if plan.time_column else []
    key = next((c for c in columns if c.lower() == "id"), None)
    if key:
        order.append(q(key))
    body = ["SELECT", ",\n".join(f"    {q(c)}" for c in columns), f"FROM {table}"]
    if where:
        body.append("WHERE " + "\n  AND ".join(where))
    if order:
        body.append("ORDER BY " + ", ".join(order))
    return "\n".join(header + body) + "\n"


@dataclass(frozen=True)
class Drafted:
    plan: Plan
    files: dict[str, Path]
    suite_expectations: int
    sample: Sample


def new_pipeline(
    name: str,
    engine: sa.Engine,
    *,
    target: str,
    table: str | None = None,
    query_file: Path | None = None,
    task: str | None = None,
    time_column: str | None = None,
    conn_id: str = config.SOURCE_CONN_ID,
    owner: str = "ml-platform",
    description: str | None = None,
    sample_rows: int = 100_000,
    force: bool = False,
) -> Drafted:
    """Write include/pipelines/NAME.yaml, include/sql/NAME.sql and include/expectations/NAME.json."""
    if not re.match(NAME_PATTERN, name):
        raise ScaffoldError(f"NAME: {name!r} is not a pipeline name (lowercase letters, digits, _; {NAME_PATTERN})")
    if (table is None) == (query_file is None):
        raise ScaffoldError("give one of --table TABLE or --query FILE")
    include = config.include_dir()
    files = {
        "spec": include / "pipelines" / f"{name}.yaml",
        "query": include / "sql" / f"{name}.sql",
        "suite": include / "expectations" / f"{name}.json",
    }
    existing = [str(p) for p in files.values() if p.exists()]
    if existing and not force:
        raise ScaffoldError(f"{', '.join(existing)} exist(s) already: pass --force to overwrite")
    if table is not None:
        if not re.match(IDENTIFIER_PATTERN, table):
            raise ScaffoldError(f"--table: {table!r} is not a table name ([schema.]name)")
        if not sa.inspect(engine).has_table(table.split(".")[-1], schema=table.split(".")[0] if "." in table else None):
            raise ScaffoldError(f"--table: no table {table!r} in {engine.url.render_as_string(hide_password=True)}")
        first = sample_query(engine, f"SELECT * FROM {table}", {}, sample_rows)
        plan = plan_pipeline(name, first.frame, target=target, task=task, time_column=time_column)
        sql = render_table_sql(
            plan,
            engine,
            table=table,
            columns=list(first.frame.columns),
            has_target_nulls=bool(first.frame[target].isna().any()),
        )
        drawn_from = f"table {table}"
    else:
        original = Path(query_file).read_text(encoding="utf-8")
        binds = bind_names(original)
        if time_column and "as_of" not in binds:
            raise ScaffoldError(
                f"--query {query_file}: has no :as_of (outside comments), which a time column needs: add "
                f"'WHERE {time_column} < :as_of', or leave out --time-column"
            )
        unknown = [b for b in binds if b != "as_of"]
        if unknown:
            raise ScaffoldError(f"--query {query_file}: binds {unknown}; add them as source.params by hand after")
        first = sample_query(engine, original, {}, sample_rows)
        plan = plan_pipeline(name, first.frame, target=target, task=task, time_column=time_column)
        sql = (
            f"-- Training extract of the {plan.name} pipeline (copied by `mlpipe new` from {query_file}).\n" + original
        )
        drawn_from = f"query {Path(query_file).name}"
    as_of = "required" if "as_of" in bind_names(sql) else "none"
    spec_text = render_spec(
        plan,
        description=description or f"Predicts {target} ({plan.task}) from {drawn_from}.",
        owner=owner,
        conn_id=conn_id,
        as_of=as_of,
        drawn_from=drawn_from,
    )
    sample = sample_query(engine, sql, {}, sample_rows)
    suite = draft_suite(sample.frame, name=name, drawn_from=f"include/sql/{name}.sql", truncated=sample.truncated)
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    files["query"].write_text(sql, encoding="utf-8")
    files["suite"].write_text(json.dumps(suite, indent=2) + "\n", encoding="utf-8")
    files["spec"].write_text(spec_text, encoding="utf-8")
    load_spec(files["spec"])  # what was written is a valid spec (a failure here is a bug of this module)
    return Drafted(plan=plan, files=files, suite_expectations=len(suite["expectations"]), sample=sample)
