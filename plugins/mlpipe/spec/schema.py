"""The pipeline spec's schema: one pydantic model per section of include/pipelines/<name>.yaml.

Field-by-field documentation lives in docs/spec.md; keep the two in step. The catalogues the
fields choose from are in :mod:`mlpipe.spec.catalogue`, S3 key patterns in
:mod:`mlpipe.spec.key_patterns`, the derive sandbox in :mod:`mlpipe.spec.derive`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from mlpipe import config
from mlpipe.spec.catalogue import ESTIMATORS, METRICS, SCORERS, Direction, Encoding, TaskType
from mlpipe.spec.derive import check_derive
from mlpipe.spec.key_patterns import compile_key_filter, format_of_key, partition_regex

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
# A SQL identifier, optionally schema-qualified: checked here, quoted by SQLAlchemy when used.
IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$"

DATE_PARTS = ("year", "month", "day", "day_of_week", "day_of_year", "hour", "minute", "is_weekend")


def check_cron(value: str | None) -> str | None:
    if value is None or value.startswith("@"):
        return value
    if len(value.split()) != 5:
        raise ValueError("must be a 5-field cron expression (minute hour day month weekday), an @preset, or null")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SqlSourceSpec(_Model):
    """``kind: sql``: the spec's query through SQLAlchemy, streamed in chunks."""

    kind: Literal["sql"] = "sql"
    connection_id: str = config.SOURCE_CONN_ID
    query: str = Field(description="SQL file under include/sql/; bound parameters only (:as_of, params).")
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    as_of: Literal["required", "none"] = Field(
        default="required",
        description="required: the query bounds its rows with :as_of; none: a table without a time column",
    )
    # Memory is about 1.5 KiB per row in flight (docs/benchmarks.md): 500k rows stays under 1 GiB.
    chunk_rows: int = Field(default=50_000, ge=1_000, le=500_000)
    table: str | None = Field(default=None, pattern=IDENTIFIER_PATTERN, description="table new rows land in")
    watermark_column: str | None = Field(
        default=None, pattern=IDENTIFIER_PATTERN, description="ever-increasing column that orders arrivals"
    )

    @field_validator("query")
    @classmethod
    def _query_is_sql_file(cls, value: str) -> str:
        if not value.endswith(".sql") or ".." in Path(value).parts or Path(value).is_absolute():
            raise ValueError("must be a relative .sql file name under include/sql/ (no '..')")
        return value

    @field_validator("params")
    @classmethod
    def _as_of_is_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "as_of" in value:
            raise ValueError("'as_of' is bound by mlpipe to the run's logical date; do not set it here")
        return value


# -- S3 sources -------------------------------------------------------------------------------------

ColumnType = Literal["int", "float", "string", "bool", "timestamp", "date"]
# AWS bucket naming rules (3-63 characters: lowercase letters, digits, dots and hyphens).
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


class CsvSpec(_Model):
    """How CSV objects of an S3 source are parsed."""

    delimiter: str = Field(default=",", min_length=1, max_length=1)
    header: bool = Field(default=True, description="the first line names the columns")
    column_names: list[str] | None = Field(default=None, min_length=1, description="the columns when header is false")
    quote_char: str | None = Field(default='"', min_length=1, max_length=1)
    null_values: list[str] | None = Field(default=None, description="cells read as null (default: pyarrow's list)")

    @model_validator(mode="after")
    def _names_without_header(self) -> CsvSpec:
        if not self.header and not self.column_names:
            raise ValueError("header: false needs column_names (the columns, in file order)")
        if self.header and self.column_names:
            raise ValueError("column_names is only for header: false (with a header the file names its columns)")
        return self


class S3SourceSpec(_Model):
    """``kind: s3``: CSV or Parquet objects under ``s3://bucket/prefix/``, streamed one object at a time."""

    kind: Literal["s3"]
    connection_id: str = Field(default=config.SOURCE_CONN_ID, description="Airflow AWS connection")
    bucket: str
    prefix: str = Field(default="", description="folder under the bucket; objects below it are the source")
    format: Literal["csv", "parquet"] | None = Field(default=None, description="default: from each key's suffix")
    key_pattern: str | None = Field(default=None, min_length=1, description="glob on the key below the prefix")
    key_regex: str | None = Field(default=None, min_length=1, description="regex on the key below the prefix")
    partition: str | None = Field(
        default=None, min_length=2, description="strftime template of the date in the key, e.g. 'date=%Y-%m-%d/'"
    )
    csv: CsvSpec = Field(default_factory=CsvSpec)
    column_types: dict[str, ColumnType] = Field(default_factory=dict)
    columns: list[str] | None = Field(default=None, min_length=1, description="the snapshot's columns, in order")
    derive: dict[str, str] = Field(default_factory=dict, description="column -> pandas expression")
    # Same bound as SQL extraction: rows in flight per chunk.
    chunk_rows: int = Field(default=50_000, ge=1_000, le=500_000)

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if not re.match(BUCKET_PATTERN, value):
            raise ValueError(
                f"{value!r} is not a bucket name: 3-63 lowercase letters, digits, '.' and '-', "
                "without s3:// or '/' (the folder goes in prefix)"
            )
        return value

    @field_validator("prefix")
    @classmethod
    def _folder(cls, value: str) -> str:
        value = value.strip().lstrip("/")
        if ".." in value.split("/"):
            raise ValueError("must not contain '..'")
        return value if not value or value.endswith("/") else value + "/"

    @field_validator("key_regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc})") from None
        return value

    @field_validator("partition")
    @classmethod
    def _partition_template(cls, value: str | None) -> str | None:
        if value is not None:
            partition_regex(value)
        return value

    @field_validator("derive")
    @classmethod
    def _derive_expressions(cls, value: dict[str, str]) -> dict[str, str]:
        problems = []
        for column, expression in value.items():
            try:
                check_derive(expression)
            except ValueError as exc:
                problems.append(f"{column}: {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("columns")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"columns listed more than once: {sorted({c for c in value if value.count(c) > 1})}")
        return value

    @model_validator(mode="after")
    def _one_key_filter(self) -> S3SourceSpec:
        if self.key_pattern is not None and self.key_regex is not None:
            raise ValueError("give key_pattern (a glob) or key_regex, not both")
        return self

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key_matcher(self) -> re.Pattern[str] | None:
        """Full-match pattern on the key below the prefix (None: every key with a known suffix)."""
        return compile_key_filter(self.key_regex, self.key_pattern)

    def format_of(self, key: str) -> str | None:
        """The object's format: the spec's, else the one its key's suffix names (None if neither)."""
        if self.format is not None:
            return self.format
        return format_of_key(key)


def _source_kind(value: Any) -> str:
    return str(value.get("kind", "sql") if isinstance(value, dict) else getattr(value, "kind", "sql"))


# The source is one of the kinds; ``kind`` picks it (absent means sql).
SourceSpec = Annotated[
    Annotated[SqlSourceSpec, Tag("sql")] | Annotated[S3SourceSpec, Tag("s3")],
    Discriminator(_source_kind),
]


class TargetSpec(_Model):
    column: str
    task: TaskType
    positive_class: int | str | None = Field(
        default=None, description="binary only: the label that counts as positive (default: 1 / True)."
    )

    @model_validator(mode="after")
    def _positive_class_for_binary(self) -> TargetSpec:
        if self.positive_class is not None and self.task != "binary":
            raise ValueError("positive_class is only allowed when task is 'binary'")
        return self


class DatetimeFeature(_Model):
    column: str
    parts: list[Literal[DATE_PARTS]] = Field(min_length=1)  # type: ignore[valid-type]
    timezone: str = Field(default="UTC", description="IANA zone the parts are taken in (values are read as UTC).")


class MissingSpec(_Model):
    numeric: Literal["median", "mean", "zero"] = "median"
    categorical: Literal["constant", "most_frequent"] = "constant"


class FeaturesSpec(_Model):
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    datetime: list[DatetimeFeature] = Field(default_factory=list)
    missing: MissingSpec = Field(default_factory=MissingSpec)
    max_categories: int = Field(default=100, ge=2, le=250, description="rarer categories pool into one")

    @model_validator(mode="after")
    def _columns_unique_and_present(self) -> FeaturesSpec:
        names = [*self.numeric, *self.categorical, *(d.column for d in self.datetime)]
        if not names:
            raise ValueError("at least one feature is required (numeric, categorical or datetime)")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"columns listed more than once: {dupes}")
        return self

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical, *(d.column for d in self.datetime)]


class SplitSpec(_Model):
    method: Literal["time", "random"] = "random"
    time_column: str | None = Field(default=None, description="required for method 'time'")
    holdout_fraction: float = Field(default=0.2, gt=0.0, lt=0.9)
    seed: int = 42

    @model_validator(mode="after")
    def _time_needs_column(self) -> SplitSpec:
        if self.method == "time" and not self.time_column:
            raise ValueError("method 'time' needs time_column (the column the holdout is the latest part of)")
        return self


# Most candidate settings a search may try (grid size or n_iter): each costs ``cv`` fits.
MAX_SEARCH_CANDIDATES = 500


class DistributionSpec(_Model):
    """A search range sampled by random and halving searches (scipy.stats distributions)."""

    distribution: Literal["uniform", "loguniform", "randint"]
    low: float
    high: float

    @model_validator(mode="after")
    def _range(self) -> DistributionSpec:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.distribution == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0 (got {self.low})")
        if self.distribution == "randint" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError(f"randint needs whole numbers for low and high (got {self.low}, {self.high})")
        return self


class SearchSpec(_Model):
    """``candidates[].search``: hyperparameter search with cross-validation on the train split."""

    method: Literal["grid", "random", "halving"] = "grid"
    space: dict[str, list[Any] | DistributionSpec] = Field(min_length=1, description="estimator param -> values")
    n_iter: int | None = Field(
        default=None, ge=1, le=MAX_SEARCH_CANDIDATES, description="random: settings sampled; halving: first round"
    )
    cv: int = Field(default=3, ge=2, le=20, description="cross-validation folds of the train split")
    factor: int = Field(default=3, ge=2, le=10, description="halving: 1/factor of the settings survive each round")
    scoring: str | None = Field(default=None, description="a metric of the task (default: metrics.primary)")

    @field_validator("space", mode="before")
    @classmethod
    def _space_entries(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        # Checked here rather than by the union, whose errors would name both of its branches.
        problems, space = [], {}
        for param, values in value.items():
            space[param] = values
            if isinstance(values, list) and not values:
                problems.append(f"{param}: the list of values is empty")
            elif isinstance(values, dict):
                try:
                    space[param] = DistributionSpec.model_validate(values)
                except ValidationError as exc:
                    problems += [
                        f"{'.'.join(map(str, (param, *err['loc'])))}: {err['msg'].removeprefix('Value error, ')}"
                        for err in exc.errors()
                    ]
            elif not isinstance(values, (list, DistributionSpec)):
                problems.append(
                    f"{param}: give a list of values or {{distribution: uniform|loguniform|randint, low, high}} "
                    f"(got {values!r})"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return space

    def grid_size(self) -> int:
        """Settings in the grid (the product of the list lengths); distributions count as unbounded."""
        size = 1
        for values in self.space.values():
            size *= len(values) if isinstance(values, list) else MAX_SEARCH_CANDIDATES + 1
        return size


class CandidateSpec(_Model):
    name: str = Field(pattern=NAME_PATTERN)
    estimator: str
    params: dict[str, Any] = Field(default_factory=dict)
    search: SearchSpec | None = Field(default=None, description="tune params by cross-validation on the train split")

    @field_validator("estimator")
    @classmethod
    def _allowed(cls, value: str) -> str:
        if value not in ESTIMATORS:
            allowed = ", ".join(sorted(ESTIMATORS))
            raise ValueError(f"{value!r} is not an allowed estimator; allowed: {allowed}")
        return value

    @property
    def encoding(self) -> Encoding:
        return ESTIMATORS[self.estimator][1]

    def search_problems(self, task: TaskType, primary_metric: str) -> list[str]:
        """What is wrong with this candidate's search (each problem names its field); [] without one."""
        search, where = self.search, f"candidates.{self.name}.search"
        if search is None:
            return []
        problems = []
        both = sorted(set(search.space) & set(self.params))
        if both:
            problems.append(f"{where}.space: {both} also fixed in candidates.{self.name}.params; set each in one place")
        if "random_state" in search.space:
            problems.append(f"{where}.space.random_state: seeds are not searched (split.seed seeds the estimator)")
        drawn = [p for p, v in search.space.items() if isinstance(v, DistributionSpec)]
        if search.method == "grid":
            problems += [
                f"{where}.space.{p}: grid needs a list of values (a range is for random or halving)" for p in drawn
            ]
            if search.n_iter is not None:
                problems.append(f"{where}.n_iter: grid tries every setting; n_iter is for random and halving")
        elif search.n_iter is None and (search.method == "random" or drawn):
            problems.append(f"{where}.n_iter: method {search.method} with this space needs n_iter (the budget)")
        if not drawn and search.n_iter is None and search.grid_size() > MAX_SEARCH_CANDIDATES:
            problems.append(
                f"{where}.space: {search.grid_size()} settings exceed {MAX_SEARCH_CANDIDATES}; "
                "shrink the lists or sample n_iter of them (method random or halving)"
            )
        if search.method != "halving" and "factor" in search.model_fields_set:
            problems.append(f"{where}.factor: only method halving uses factor")
        metric = search.scoring or primary_metric
        field = f"{where}.scoring" if search.scoring else f"{where}.scoring (default metrics.primary)"
        if search.scoring is None and metric not in METRICS[task]:
            pass  # metrics.primary reports it
        elif metric not in METRICS[task]:
            problems.append(f"{field}: {metric!r} is not a {task} metric; allowed: {sorted(METRICS[task])}")
        elif metric not in SCORERS:
            problems.append(f"{field}: {metric!r} has no scikit-learn scorer; name one of {sorted(SCORERS)}")
        return problems

    def scorer(self, primary_metric: str) -> str:
        """The scikit-learn scorer name the search ranks settings by."""
        return SCORERS[(self.search.scoring if self.search else None) or primary_metric]


class MetricSpec(_Model):
    name: str
    direction: Direction | None = None


class MetricsSpec(_Model):
    primary: str | MetricSpec
    secondary: list[str | MetricSpec] = Field(default_factory=list)


class SliceSpec(_Model):
    """One column whose values slice the holdout; no slice may worsen beyond ``max_regression``."""

    column: str = Field(description="a numeric or categorical feature column; one slice per value")
    metric: str | None = Field(default=None, description="the primary or a secondary metric (default: primary)")
    max_regression: float = Field(ge=0.0, description="largest allowed worsening of a slice vs the champion")
    min_rows: int = Field(default=100, ge=1, description="smaller slices are listed but not judged")
    max_slices: int = Field(default=50, ge=1, le=1000, description="the most frequent values judged; the rest counted")


class GateSpec(_Model):
    min_primary: float | None = Field(default=None, description="floor the best candidate's primary metric must reach")
    min_improvement: float = Field(default=0.0, ge=0.0, description="over the champion, in the metric's direction")
    max_regression: dict[str, float] = Field(
        default_factory=dict, description="secondary metric -> largest allowed worsening vs the champion"
    )
    slices: list[SliceSpec] = Field(default_factory=list, description="per-value regression checks of columns")
    confidence: float | None = Field(
        default=None,
        gt=0.5,
        lt=1.0,
        description="judge on paired bootstrap intervals at this level (e.g. 0.95); null: on point estimates",
    )

    @field_validator("max_regression")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in value.items() if v < 0]
        if bad:
            raise ValueError(f"tolerances must be >= 0 (got negative for {bad})")
        return value

    def slice_problems(self, features: FeaturesSpec, metrics: list[str]) -> list[str]:
        """What is wrong with ``slices`` given the spec's features and metrics (primary first)."""
        problems: list[str] = []
        seen: set[str] = set()
        for i, s in enumerate(self.slices):
            where = f"gate.slices[{i}]"
            if s.column in (d.column for d in features.datetime):
                problems.append(
                    f"{where}.column: {s.column!r} is a datetime feature (a value per instant); "
                    "slice on a categorical or numeric feature column"
                )
            elif s.column not in features.columns:
                problems.append(f"{where}.column: {s.column!r} is not a feature column; features: {features.columns}")
            if s.column in seen:
                problems.append(f"{where}.column: {s.column!r} is sliced more than once")
            seen.add(s.column)
            if s.metric is not None and s.metric not in metrics:
                problems.append(f"{where}.metric: {s.metric!r} is not the primary or a secondary metric: {metrics}")
        return problems


class ReferenceSpec(_Model):
    """``validation.reference``: the snapshot against the champion's training snapshot (stages/reference.py).

    Every limit stops the run when crossed; shares are fractions (0.02 = 2 %). Share comparisons add
    three standard errors of the difference, so small samples do not stop on noise alone.
    """

    enabled: bool = Field(default=True, description="false: no comparison (the report says so)")
    max_unseen_share: float = Field(
        default=0.02, ge=0, le=1, description="per categorical feature: rows whose category the reference never saw"
    )
    max_null_share_change: float = Field(default=0.05, ge=0, le=1, description="per column: change of its null share")
    max_target_shift: float = Field(
        default=0.1, ge=0, le=1, description="classification: largest change of a class's share of the rows"
    )
    max_target_mean_shift: float = Field(
        default=0.5, ge=0, description="regression: change of the target's mean, in reference standard deviations"
    )
    max_segment_shift: float = Field(
        default=0.25,
        ge=0,
        description="per categorical value: change of the target's class shares (regression: mean, in sd)",
    )
    segment_min_share: float = Field(
        default=0.02, gt=0, le=1, description="values rarer than this share (on either side) are not judged"
    )
    max_duplicate_share: float = Field(
        default=0.02, ge=0, le=1, description="rows equal to another on every non-key column, beyond the reference's"
    )
    key_columns: list[str] = Field(
        default_factory=list, description="id columns left out of the duplicate check (score.key is always)"
    )
    leakage_purity: float = Field(
        default=0.99, gt=0.5, le=1, description="a feature value whose rows are this pure in the target leaks it"
    )
    leakage_min_share: float = Field(
        default=0.005, gt=0, le=1, description="leak candidates cover at least this share of the rows"
    )
    max_out_of_range_share: float = Field(
        default=0.02, ge=0, le=1, description="per numeric feature: rows outside the reference's range (+ margin)"
    )
    range_margin: float = Field(default=0.1, ge=0, description="the range widened by this share of its span each side")
    stop_psi: float = Field(default=0.5, gt=0, description="numeric feature PSI that stops the run (reported always)")
    stop_js: float = Field(default=0.5, gt=0, le=1, description="categorical JS distance that stops the run")
    max_rows: int = Field(default=500_000, ge=1_000, description="larger snapshots are compared on a sample")
    min_rows: int = Field(default=30, ge=1, description="groups smaller than this are not judged")


class ValidationSpec(_Model):
    suite: str = Field(description="GX suite JSON under include/expectations/")
    reference: ReferenceSpec = Field(default_factory=ReferenceSpec)

    @field_validator("suite")
    @classmethod
    def _suite_is_json(cls, value: str) -> str:
        if not value.endswith(".json") or ".." in Path(value).parts or Path(value).is_absolute():
            raise ValueError("must be a relative .json file name under include/expectations/ (no '..')")
        return value


class WatchSpec(_Model):
    """The ``<name>_watch`` DAG: waits for rows past the watermark, then emits the new_data asset."""

    schedule: str | None = Field(default="*/30 * * * *", description="cron (UTC) of the watch runs")
    min_new_rows: int = Field(default=1, ge=1, description="sql sources: no event for fewer new rows than this")
    min_new_objects: int = Field(default=1, ge=1, description="s3 sources: no event for fewer new objects than this")
    poke_interval: int = Field(default=60, ge=5, le=86_400, description="seconds between source checks")
    timeout: int = Field(default=1_500, ge=10, description="seconds a watch run waits before giving up")
    deferrable: bool | None = Field(
        default=None, description="wait in the triggerer (default: Airflow's operators.default_deferrable)"
    )

    _cron = field_validator("schedule")(lambda cls, v: check_cron(v))


class MonitorSpec(_Model):
    """The ``<name>_monitor`` DAG: drift of the newest window against the champion's training data."""

    schedule: str | None = Field(default="0 6 * * *", description="cron (UTC) of the monitor runs")
    window_days: float = Field(default=7.0, gt=0, le=366, description="the newest days of source data checked")
    min_sample: int = Field(default=500, ge=50, description="no verdict from a window smaller than this")
    psi_warn: float = Field(default=0.1, gt=0)
    psi_act: float = Field(default=0.2, gt=0)
    js_act: float = Field(default=0.1, gt=0, le=1)
    drifted_share: float = Field(default=0.3, gt=0, le=1, description="share of features at 'act' that is drift")
    performance_tolerance: float = Field(
        default=0.02, ge=0, description="largest drop of the champion's primary metric on labelled new data"
    )
    max_reference_rows: int = Field(default=200_000, ge=1_000, description="reference sample size")

    _cron = field_validator("schedule")(lambda cls, v: check_cron(v))

    @model_validator(mode="after")
    def _ordered(self) -> MonitorSpec:
        if self.psi_warn > self.psi_act:
            raise ValueError(f"psi_warn ({self.psi_warn}) must not exceed psi_act ({self.psi_act})")
        return self


# Columns of the predictions table / files besides the key (see stages/batch_score.py).
PREDICTION_COLUMNS = ("model_version", "prediction", "score", "scored_at", "run_key")


class ScoreSpec(_Model):
    """The ``<name>_score`` DAG: the champion's predictions for the rows it has not scored yet."""

    schedule: str | None = Field(
        default=None, description="cron (UTC) of scoring runs besides those the champion / new_data events start"
    )
    query: str | None = Field(default=None, description="SQL file under include/sql/ (default: source.query)")
    key: str = Field(min_length=1, description="column unique per input row; predictions are unique per key and model")
    chunk_rows: int = Field(default=50_000, ge=1_000, le=500_000, description="rows read, checked and scored at once")
    output: Literal["table", "parquet"] = Field(default="table", description="a SQL table, or Parquet in the store")
    connection_id: str | None = Field(default=None, description="table output: database (default: the source's)")
    table: str | None = Field(default=None, pattern=IDENTIFIER_PATTERN, description="default <name>_predictions")
    rejects_table: str | None = Field(
        default=None, pattern=IDENTIFIER_PATTERN, description="default <name>_prediction_rejects"
    )
    missing: Literal["impute", "reject"] = Field(
        default="impute", description="a null feature is imputed as in training, or sets its row aside"
    )

    _cron = field_validator("schedule")(lambda cls, v: check_cron(v))
    _query = field_validator("query")(lambda cls, v: v if v is None else SqlSourceSpec._query_is_sql_file(v))

    @model_validator(mode="after")
    def _table_options(self) -> ScoreSpec:
        if self.key in PREDICTION_COLUMNS:
            raise ValueError(f"key {self.key!r} is a column name predictions use; rename it in the query")
        if self.output == "parquet":
            given = [f for f in ("connection_id", "table", "rejects_table") if getattr(self, f) is not None]
            if given:
                raise ValueError(f"{given} only apply to output 'table'; Parquet goes to the artifact store")
        elif self.table is not None and self.table == self.rejects_table:
            raise ValueError("table and rejects_table must differ")
        return self


# -- notifications and approval --------------------------------------------------------------------

# What a notify entry may subscribe to, and the DAG role that sends each (docs/spec.md, "notify").
NOTIFY_EVENTS: dict[str, tuple[str, ...]] = {
    "failure": ("train", "rollback", "watch", "monitor", "score"),
    "data_invalid": ("train",),
    "rejected": ("train",),
    "promoted": ("train",),
    "approval_waiting": ("train",),
    "rolled_back": ("rollback",),
    "drift": ("monitor",),
    "unchanged": ("train", "monitor"),
}
NotifyEvent = Literal[
    "failure", "data_invalid", "rejected", "promoted", "approval_waiting", "rolled_back", "drift", "unchanged"
]
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
_DURATION_PART = re.compile(r"(\d+)\s*([dhms])")
_DURATION_UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}


def parse_duration(value: Any) -> int:
    """Seconds of ``value``: an integer (seconds) or text such as '24h', '90m', '1d12h', '30s'."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as '24h', '90m', '2d' or a number of seconds")
    if isinstance(value, int | float):
        seconds = int(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"{value!r} is not a duration: use e.g. '24h', '90m', '2d', '1h30m' or seconds")
        seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError("must be longer than 0 seconds")
    return seconds


def format_duration(seconds: int) -> str:
    """``seconds`` as people say it: '24h', '1h30m', '2d12h', '30s' (days from two days on)."""
    out, rest = [], int(seconds)
    for unit, size in _DURATION_UNITS.items():
        if rest >= size and (unit != "d" or rest >= 2 * size):
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out) or "0s"


class NotifySpec(_Model):
    """One ``notify`` entry: which events go where, through which Airflow Connection."""

    on: list[NotifyEvent] = Field(min_length=1, description="events; 'unchanged' only when listed")
    via: Literal["smtp", "slack_webhook"] = Field(description="the Airflow provider notifier that delivers")
    connection_id: str = Field(min_length=1, description="Airflow Connection of the mail server / webhook")
    to: list[str] = Field(default_factory=list, description="smtp: the recipients' addresses")

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        # YAML 1.1 reads a bare `on:` key as the boolean true.
        if isinstance(data, dict) and True in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @field_validator("on")
    @classmethod
    def _unique_events(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"lists an event twice ({value})")
        return value

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if not re.match(EMAIL_PATTERN, a)]
        if bad:
            raise ValueError(f"not mail addresses: {bad}")
        return value

    @model_validator(mode="after")
    def _recipients(self) -> NotifySpec:
        if self.via == "smtp" and not self.to:
            raise ValueError("via smtp needs `to` (the recipients' addresses)")
        if self.via == "slack_webhook" and self.to:
            raise ValueError("`to` is for smtp; a Slack webhook posts to the channel its Connection's URL is for")
        return self


class ApprovalSpec(_Model):
    """``approval``: a person approves each promotion, within ``timeout``, else ``default`` is taken."""

    required: bool = False
    timeout: int | None = Field(default=None, description="seconds (written '24h', '90m'...); none: wait for ever")
    default: Literal["reject", "approve"] = Field(default="reject", description="taken when the timeout passes")

    _duration = field_validator("timeout", mode="before")(lambda cls, v: v if v is None else parse_duration(v))

    @property
    def timeout_text(self) -> str | None:
        return None if self.timeout is None else format_duration(self.timeout)


class PipelineSpec(_Model):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    tags: list[str] = Field(default_factory=list)
    schedule: str | None = Field(default="0 2 * * *", description="cron in UTC; null for manual runs only")
    start_date: datetime = Field(default=datetime(2026, 1, 1, tzinfo=UTC))
    retries: int = Field(default=2, ge=2, le=10)
    source: SourceSpec
    target: TargetSpec
    features: FeaturesSpec
    split: SplitSpec = Field(default_factory=SplitSpec)
    candidates: list[CandidateSpec] = Field(min_length=1)
    metrics: MetricsSpec
    gate: GateSpec = Field(default_factory=GateSpec)
    validation: ValidationSpec
    watch: WatchSpec | None = None
    monitor: MonitorSpec | None = None
    score: ScoreSpec | None = None
    approval: ApprovalSpec = Field(
        default_factory=ApprovalSpec,
        description="a person approves each promotion in the Airflow UI ('required', or required/timeout/default)",
    )
    notify: list[NotifySpec] = Field(default_factory=list, description="who hears about which events, and how")

    @field_validator("approval", mode="before")
    @classmethod
    def _approval_shorthand(cls, value: Any) -> Any:
        # `approval: required` / `approval: none`, the form before timeouts existed, stays valid.
        if value in ("required", "none"):
            return {"required": value == "required"}
        return value

    @field_validator("schedule")
    @classmethod
    def _cron_shape(cls, value: str | None) -> str | None:
        return check_cron(value)

    @field_validator("start_date")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    @model_validator(mode="after")
    def _cross_checks(self) -> PipelineSpec:
        problems: list[str] = []
        names = [c.name for c in self.candidates]
        if len(set(names)) != len(names):
            problems.append(f"candidates: names must be unique (got {names})")
        for i, cand in enumerate(self.candidates):
            tasks, _ = ESTIMATORS[cand.estimator]
            if self.target.task not in tasks:
                problems.append(
                    f"candidates[{i}].estimator: {cand.estimator} does not fit task {self.target.task!r} "
                    f"(it serves {sorted(tasks)})"
                )
            problems += cand.search_problems(self.target.task, self.primary_metric)
        allowed = METRICS[self.target.task]
        metric_names = [self.primary_metric, *self.secondary_metrics]
        for field, name in zip(
            ["metrics.primary"] + [f"metrics.secondary[{i}]" for i in range(len(self.secondary_metrics))],
            metric_names,
            strict=False,
        ):
            if name not in allowed:
                problems.append(f"{field}: {name!r} is not a {self.target.task} metric; allowed: {sorted(allowed)}")
        for m in [self.metrics.primary, *self.metrics.secondary]:
            if isinstance(m, MetricSpec) and m.direction and m.name in allowed and m.direction != allowed[m.name]:
                problems.append(f"metrics: {m.name} improves by {allowed[m.name]}, not {m.direction}")
        if self.primary_metric in self.secondary_metrics:
            problems.append(f"metrics.secondary: {self.primary_metric!r} is already the primary metric")
        for metric in self.gate.max_regression:
            if metric not in self.secondary_metrics:
                problems.append(
                    f"gate.max_regression: {metric!r} is not a secondary metric; secondary: {self.secondary_metrics}"
                )
        problems += self.gate.slice_problems(self.features, metric_names)
        problems += self._source_checks()
        if self.target.column in self.features.columns:
            problems.append(f"features: the target column {self.target.column!r} cannot also be a feature")
        if self.score is not None and self.score.key == self.target.column:
            problems.append(f"score.key: the target column {self.target.column!r} cannot identify the rows scored")
        problems += self._notify_checks()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _notify_checks(self) -> list[str]:
        """Each subscribed event must be one some DAG of this pipeline sends."""
        roles, problems = set(self.dag_ids()), []
        for i, entry in enumerate(self.notify):
            for event in entry.on:
                if not roles & set(NOTIFY_EVENTS[event]):
                    needs = " or ".join(NOTIFY_EVENTS[event])
                    problems.append(f"notify[{i}].on: {event!r} is sent by the {needs} DAG, which this spec has not")
        return problems

    def notify_for(self, role: str) -> list[NotifySpec]:
        """The notify entries with an event the ``role`` DAG sends."""
        return [n for n in self.notify if any(role in NOTIFY_EVENTS[e] for e in n.on)]

    def _source_checks(self) -> list[str]:
        """What the source kind requires of the other sections."""
        source, problems = self.source, []
        if source.kind == "sql":
            for section in ("watch", "monitor"):
                if getattr(self, section) is not None and not (source.table and source.watermark_column):
                    problems.append(
                        f"{section}: needs source.table and source.watermark_column (where new rows land, in order)"
                    )
            if self.watch is not None and "min_new_objects" in self.watch.model_fields_set:
                problems.append("watch.min_new_objects: is for s3 sources; a sql source counts rows (min_new_rows)")
            return problems
        if self.watch is not None and "min_new_rows" in self.watch.model_fields_set:
            problems.append("watch.min_new_rows: an s3 source counts new objects; use watch.min_new_objects")
        if self.score is not None:
            problems.append("score: batch scoring reads a sql source (its query); this pipeline's source is s3")
        if source.columns is not None:
            needed = [*self.features.columns, self.target.column, self.split.time_column]
            missing = [c for c in dict.fromkeys(needed) if c and c not in source.columns]
            if missing:
                problems.append(f"source.columns: lacks {missing}, which features, target or split use")
        return problems

    # -- derived views ---------------------------------------------------------------------------

    @property
    def primary_metric(self) -> str:
        m = self.metrics.primary
        return m if isinstance(m, str) else m.name

    @property
    def secondary_metrics(self) -> list[str]:
        return [m if isinstance(m, str) else m.name for m in self.metrics.secondary]

    def direction(self, metric: str) -> Direction:
        return METRICS[self.target.task][metric]

    def dag_ids(self) -> dict[str, str]:
        """The DAGs this spec yields, by role: train and rollback always, watch/monitor/score when configured."""
        roles = ["train", "rollback"]
        roles += [role for role in ("watch", "monitor", "score") if getattr(self, role) is not None]
        return {role: f"{self.name}_{role}" for role in roles}

    def candidate(self, name: str) -> CandidateSpec:
        for cand in self.candidates:
            if cand.name == name:
                return cand
        raise KeyError(f"pipeline {self.name!r} has no candidate {name!r}; it has {[c.name for c in self.candidates]}")
