"""The pipeline spec: one YAML file per pipeline in include/pipelines/, validated by pydantic.

Cheap to import (pydantic + yaml only): the DAG factory loads every spec at parse time. One module
per part, every name importable from here (``from mlpipe.spec import PipelineSpec, load_spec``):

- :mod:`~mlpipe.spec.schema`: the models of the spec's sections and their cross-checks;
- :mod:`~mlpipe.spec.catalogue`: the estimators and metrics a spec may name;
- :mod:`~mlpipe.spec.key_patterns`: S3 key globs, regexes and partition templates, compiled once;
- :mod:`~mlpipe.spec.derive`: the sandbox of ``source.derive`` expressions;
- :mod:`~mlpipe.spec.load`: reading a file into a :class:`LoadedSpec`, or a SpecError naming the field.

Field-by-field documentation lives in docs/spec.md; keep the two in step.
"""

from __future__ import annotations

from mlpipe.spec.catalogue import ESTIMATORS, METRICS, SCORERS, Direction, Encoding, TaskType
from mlpipe.spec.derive import check_derive, derive_inputs
from mlpipe.spec.key_patterns import FORMAT_SUFFIXES, PARTITION_DIRECTIVES, glob_regex, partition_regex
from mlpipe.spec.load import LoadedSpec, find_spec, load_spec, parse_spec, spec_paths
from mlpipe.spec.schema import (
    BUCKET_PATTERN,
    DATE_PARTS,
    EMAIL_PATTERN,
    IDENTIFIER_PATTERN,
    MAX_SEARCH_CANDIDATES,
    NAME_PATTERN,
    NOTIFY_EVENTS,
    PREDICTION_COLUMNS,
    ApprovalSpec,
    CandidateSpec,
    ColumnType,
    CsvSpec,
    DatetimeFeature,
    DistributionSpec,
    FeaturesSpec,
    GateSpec,
    MetricSpec,
    MetricsSpec,
    MissingSpec,
    MonitorSpec,
    NotifyEvent,
    NotifySpec,
    PipelineSpec,
    ReferenceSpec,
    S3SourceSpec,
    ScoreSpec,
    SearchSpec,
    SliceSpec,
    SourceSpec,
    SplitSpec,
    SqlSourceSpec,
    TargetSpec,
    ValidationSpec,
    WatchSpec,
    check_cron,
    format_duration,
    parse_duration,
)

__all__ = [
    "BUCKET_PATTERN",
    "DATE_PARTS",
    "EMAIL_PATTERN",
    "ESTIMATORS",
    "FORMAT_SUFFIXES",
    "IDENTIFIER_PATTERN",
    "MAX_SEARCH_CANDIDATES",
    "METRICS",
    "NAME_PATTERN",
    "NOTIFY_EVENTS",
    "PARTITION_DIRECTIVES",
    "PREDICTION_COLUMNS",
    "SCORERS",
    "ApprovalSpec",
    "CandidateSpec",
    "ColumnType",
    "CsvSpec",
    "DatetimeFeature",
    "Direction",
    "DistributionSpec",
    "Encoding",
    "FeaturesSpec",
    "GateSpec",
    "LoadedSpec",
    "MetricSpec",
    "MetricsSpec",
    "MissingSpec",
    "MonitorSpec",
    "NotifyEvent",
    "NotifySpec",
    "PipelineSpec",
    "ReferenceSpec",
    "S3SourceSpec",
    "ScoreSpec",
    "SearchSpec",
    "SliceSpec",
    "SourceSpec",
    "SplitSpec",
    "SqlSourceSpec",
    "TargetSpec",
    "TaskType",
    "ValidationSpec",
    "WatchSpec",
    "check_cron",
    "check_derive",
    "derive_inputs",
    "find_spec",
    "format_duration",
    "glob_regex",
    "load_spec",
    "parse_duration",
    "parse_spec",
    "partition_regex",
    "spec_paths",
]
