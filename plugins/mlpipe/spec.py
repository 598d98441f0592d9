"""The pipeline spec: one YAML file per pipeline in include/pipelines/, validated by pydantic.

Cheap to import (pydantic + yaml only): the DAG factory loads every spec at parse time.
Field-by-field documentation lives in docs/spec.md; keep the two in step.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlpipe import config
from mlpipe.errors import SpecError

TaskType = Literal["binary", "multiclass", "regression"]
Direction = Literal["maximize", "minimize"]
Encoding = Literal["onehot", "ordinal"]

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
# A SQL identifier, optionally schema-qualified: checked here, quoted by SQLAlchemy when used.
IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$"

# Estimators a spec may name, with the task kinds they serve and the categorical encoding their
# feature pipeline uses: linear and distance-based models get one-hot + scaling, tree ensembles get
# ordinal codes (HistGradientBoosting also treats them as native categories).
ESTIMATORS: dict[str, tuple[frozenset[str], Encoding]] = {
    "sklearn.linear_model.LogisticRegression": (frozenset({"binary", "multiclass"}), "onehot"),
    "sklearn.linear_model.SGDClassifier": (frozenset({"binary", "multiclass"}), "onehot"),
    "sklearn.linear_model.RidgeClassifier": (frozenset({"binary", "multiclass"}), "onehot"),
    "sklearn.neighbors.KNeighborsClassifier": (frozenset({"binary", "multiclass"}), "onehot"),
    "sklearn.naive_bayes.GaussianNB": (frozenset({"binary", "multiclass"}), "onehot"),
    "sklearn.tree.DecisionTreeClassifier": (frozenset({"binary", "multiclass"}), "ordinal"),
    "sklearn.ensemble.RandomForestClassifier": (frozenset({"binary", "multiclass"}), "ordinal"),
    "sklearn.ensemble.ExtraTreesClassifier": (frozenset({"binary", "multiclass"}), "ordinal"),
    "sklearn.ensemble.GradientBoostingClassifier": (frozenset({"binary", "multiclass"}), "ordinal"),
    "sklearn.ensemble.HistGradientBoostingClassifier": (frozenset({"binary", "multiclass"}), "ordinal"),
    "sklearn.dummy.DummyClassifier": (frozenset({"binary", "multiclass"}), "ordinal"),
    "sklearn.linear_model.LinearRegression": (frozenset({"regression"}), "onehot"),
    "sklearn.linear_model.Ridge": (frozenset({"regression"}), "onehot"),
    "sklearn.linear_model.Lasso": (frozenset({"regression"}), "onehot"),
    "sklearn.linear_model.ElasticNet": (frozenset({"regression"}), "onehot"),
    "sklearn.linear_model.HuberRegressor": (frozenset({"regression"}), "onehot"),
    "sklearn.neighbors.KNeighborsRegressor": (frozenset({"regression"}), "onehot"),
    "sklearn.tree.DecisionTreeRegressor": (frozenset({"regression"}), "ordinal"),
    "sklearn.ensemble.RandomForestRegressor": (frozenset({"regression"}), "ordinal"),
    "sklearn.ensemble.ExtraTreesRegressor": (frozenset({"regression"}), "ordinal"),
    "sklearn.ensemble.GradientBoostingRegressor": (frozenset({"regression"}), "ordinal"),
    "sklearn.ensemble.HistGradientBoostingRegressor": (frozenset({"regression"}), "ordinal"),
    "sklearn.dummy.DummyRegressor": (frozenset({"regression"}), "ordinal"),
}

# Metrics by task, with the direction in which they improve.
METRICS: dict[str, dict[str, Direction]] = {
    "binary": {
        "roc_auc": "maximize",
        "average_precision": "maximize",
        "log_loss": "minimize",
        "brier": "minimize",
        "accuracy": "maximize",
        "balanced_accuracy": "maximize",
        "f1": "maximize",
        "precision": "maximize",
        "recall": "maximize",
    },
    "multiclass": {
        "accuracy": "maximize",
        "balanced_accuracy": "maximize",
        "f1_macro": "maximize",
        "f1_weighted": "maximize",
        "log_loss": "minimize",
        "roc_auc_ovr": "maximize",
    },
    "regression": {
        "rmse": "minimize",
        "mae": "minimize",
        "r2": "maximize",
        "mape": "minimize",
        "median_ae": "minimize",
    },
}

DATE_PARTS = ("year", "month", "day", "day_of_week", "day_of_year", "hour", "minute", "is_weekend")


def check_cron(value: str | None) -> str | None:
    if value is None or value.startswith("@"):
        return value
    if len(value.split()) != 5:
        raise ValueError("must be a 5-field cron expression (minute hour day month weekday), an @preset, or null")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Model):
    kind: Literal["sql"] = "sql"
    connection_id: str = config.SOURCE_CONN_ID
    query: str = Field(description="SQL file under include/sql/; bound parameters only (:as_of, params).")
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
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


class CandidateSpec(_Model):
    name: str = Field(pattern=NAME_PATTERN)
    estimator: str
    params: dict[str, Any] = Field(default_factory=dict)

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


class MetricSpec(_Model):
    name: str
    direction: Direction | None = None


class MetricsSpec(_Model):
    primary: str | MetricSpec
    secondary: list[str | MetricSpec] = Field(default_factory=list)


class GateSpec(_Model):
    min_primary: float | None = Field(default=None, description="floor the best candidate's primary metric must reach")
    min_improvement: float = Field(default=0.0, ge=0.0, description="over the champion, in the metric's direction")
    max_regression: dict[str, float] = Field(
        default_factory=dict, description="secondary metric -> largest allowed worsening vs the champion"
    )

    @field_validator("max_regression")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in value.items() if v < 0]
        if bad:
            raise ValueError(f"tolerances must be >= 0 (got negative for {bad})")
        return value


class ValidationSpec(_Model):
    suite: str = Field(description="GX suite JSON under include/expectations/")

    @field_validator("suite")
    @classmethod
    def _suite_is_json(cls, value: str) -> str:
        if not value.endswith(".json") or ".." in Path(value).parts or Path(value).is_absolute():
            raise ValueError("must be a relative .json file name under include/expectations/ (no '..')")
        return value


class WatchSpec(_Model):
    """The ``<name>_watch`` DAG: waits for rows past the watermark, then emits the new_data asset."""

    schedule: str | None = Field(default="*/30 * * * *", description="cron (UTC) of the watch runs")
    min_new_rows: int = Field(default=1, ge=1, description="no event for fewer new rows than this")
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
        for section in ("watch", "monitor"):
            if getattr(self, section) is not None and not (self.source.table and self.source.watermark_column):
                problems.append(
                    f"{section}: needs source.table and source.watermark_column (where new rows land, in order)"
                )
        if self.target.column in self.features.columns:
            problems.append(f"features: the target column {self.target.column!r} cannot also be a feature")
        if problems:
            raise ValueError("; ".join(problems))
        return self

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

    def candidate(self, name: str) -> CandidateSpec:
        for cand in self.candidates:
            if cand.name == name:
                return cand
        raise KeyError(f"pipeline {self.name!r} has no candidate {name!r}; it has {[c.name for c in self.candidates]}")


class LoadedSpec(BaseModel):
    """A validated spec with where it came from and the files it refers to."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: PipelineSpec
    path: Path
    query_path: Path
    suite_path: Path

    @property
    def name(self) -> str:
        return self.spec.name

    def query_text(self) -> str:
        return self.query_path.read_text(encoding="utf-8")

    def sha256(self) -> str:
        """Hash of everything that defines the pipeline: the spec, its SQL and its suite."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.spec.model_dump(mode="json"), sort_keys=True).encode())
        digest.update(self.query_path.read_bytes())
        digest.update(self.suite_path.read_bytes())
        return digest.hexdigest()


def _format_errors(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in err["loc"]).replace(".[", "[")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see docs/spec.md for the fields)"
        elif err["type"] == "literal_error":
            msg = f"{msg} (got {err.get('input')!r})"
        problems.append(f"{loc or '<top>'}: {msg}")
    return problems


def parse_spec(data: Any, path: Path) -> PipelineSpec:
    if not isinstance(data, dict):
        raise SpecError(str(path), ["<top>: the file must hold a YAML mapping of spec fields"])
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(str(path), _format_errors(exc)) from None
    if spec.name != path.stem:
        raise SpecError(str(path), [f"name: {spec.name!r} must equal the file name {path.stem!r}"])
    return spec


def load_spec(path: Path | str, include: Path | None = None) -> LoadedSpec:
    """Read and validate one spec file; raise :class:`SpecError` naming the file and fields."""
    path = Path(path)
    include = include or path.resolve().parent.parent
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(str(path), [f"<file>: cannot read ({exc.strerror})"]) from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<file>"
        raise SpecError(str(path), [f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    spec = parse_spec(data, path)
    query_path = include / "sql" / spec.source.query
    suite_path = include / "expectations" / spec.validation.suite
    missing = []
    if not query_path.is_file():
        missing.append(f"source.query: file {query_path} not found")
    if not suite_path.is_file():
        missing.append(f"validation.suite: file {suite_path} not found")
    if missing:
        raise SpecError(str(path), missing)
    return LoadedSpec(spec=spec, path=path, query_path=query_path, suite_path=suite_path)


def spec_paths(pipelines_dir: Path | None = None) -> list[Path]:
    folder = pipelines_dir or config.pipelines_dir()
    return sorted(p for p in folder.glob("*.y*ml") if p.suffix in {".yaml", ".yml"})


def find_spec(name: str) -> LoadedSpec:
    """Load the spec of pipeline ``name`` from the include tree."""
    if not re.match(NAME_PATTERN, name):
        raise SpecError(name, [f"name: {name!r} is not a pipeline name ({NAME_PATTERN})"])
    for path in spec_paths():
        if path.stem == name:
            return load_spec(path)
    known = [p.stem for p in spec_paths()]
    raise SpecError(str(config.pipelines_dir() / f"{name}.yaml"), [f"<file>: no such pipeline; known: {known}"])
