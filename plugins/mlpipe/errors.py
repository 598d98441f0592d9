"""Typed errors a user can cause (spec, data, connections, registry state), each naming what to fix."""

from __future__ import annotations

from typing import Any

# A validation failure's message stays short (a few KiB) whatever the data: so many lines, each so long.
_LISTED_FAILURES = 10
_LINE_CHARS = 400


class MlpipeError(Exception):
    """Base class of every error mlpipe raises on purpose."""


class SpecError(MlpipeError):
    """A pipeline spec is invalid; the message names the file, the field and what is allowed."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid pipeline spec {path}:\n{lines}")


class DataValidationError(MlpipeError):
    """A data snapshot failed its Great Expectations suite.

    ``failures`` holds one dict per failed expectation: ``expectation`` (type), ``column``
    (or None for table-level ones), ``kwargs`` and ``observed`` (GX's observed value).
    """

    def __init__(self, suite: str, failures: list[dict[str, Any]], report_uri: str | None = None) -> None:
        self.suite = suite
        self.failures = failures
        self.report_uri = report_uri
        lines = []
        for f in failures[:_LISTED_FAILURES]:
            where = f"column {f['column']!r}" if f.get("column") else "table"
            line = f"  - {f['expectation']} on {where}: observed {f.get('observed')!r}"
            lines.append(line if len(line) <= _LINE_CHARS else line[:_LINE_CHARS] + " …")
        if len(failures) > _LISTED_FAILURES:
            lines.append(f"  - and {len(failures) - _LISTED_FAILURES} more (see the full result)")
        tail = f"\nfull result: {report_uri}" if report_uri else ""
        super().__init__(
            f"data failed validation suite {suite!r}: {len(failures)} expectation(s) failed\n" + "\n".join(lines) + tail
        )


class ReferenceValidationError(DataValidationError):
    """A snapshot kept its schema but changed its meaning against the champion's training snapshot.

    ``failures`` holds one dict per failed reference check (stages/reference.py): ``check``,
    ``column``, ``figure``, ``limit`` and ``detail`` (one line naming the column, figure, limit and examples).
    """

    def __init__(self, reference: str, failures: list[dict[str, Any]], report_uri: str | None = None) -> None:
        self.suite = "reference"
        self.failures = failures
        self.report_uri = report_uri
        # Bounded: each line cut to a few hundred characters, a handful of lines; the report has them all.
        lines = [f"  - {_cut(str(f['detail']), 300)}" for f in failures[:10]]
        if len(failures) > 10:
            lines.append(f"  - … and {len(failures) - 10} more")
        tail = f"\nfull report: {report_uri}" if report_uri else ""
        MlpipeError.__init__(
            self,
            f"data changed its meaning against {reference}: {len(failures)} reference check(s) failed\n"
            + "\n".join(lines)
            + tail,
        )


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ExtractError(MlpipeError):
    """The source could not be read into a snapshot (query, connection or schema problem)."""


class FeatureError(MlpipeError):
    """The snapshot cannot be turned into features (missing column, bad target values...)."""


class ArtifactIntegrityError(MlpipeError):
    """An artifact's bytes do not match the sha256 recorded for it."""


class RegistryError(MlpipeError):
    """The model registry refused an operation (unknown pipeline/version, no champion...)."""


class ChampionChangedError(RegistryError):
    """Promotion lost a compare-and-swap: the champion changed after evaluation."""


class ArtifactConflictError(ArtifactIntegrityError):
    """A conditional write lost: the artifact was created, changed or removed since its ETag was read."""


class ConfigError(MlpipeError):
    """A deployment setting (an environment variable, a Connection) has a value mlpipe cannot use."""


class ParamsError(MlpipeError):
    """A run's Params (the trigger form's values, or ``--conf``) are not what its DAG accepts; names the Param."""


class PromotionError(MlpipeError):
    """A promotion the run asked for cannot be done as asked (a forced one without a reason or a model)."""


class InfrastructureError(MlpipeError):
    """A service (source, store, registry) is unreachable or failed mid-request: a retry may succeed."""


class SourceUnavailableError(InfrastructureError):
    """The source (its endpoint or database) cannot be reached or failed mid-read: a retry may succeed."""


def is_input_error(exc: BaseException) -> bool:
    """Whether retrying cannot help: the one policy every operator applies (see ``fail_fast_on_user_errors``).

    Every error mlpipe raises on purpose names something the user must fix (spec, data, a run's Params,
    connection settings, a tampered artifact, the registry's state) unless it is an :class:`InfrastructureError`
    or a lost conditional write (:class:`ArtifactConflictError`). Errors of the libraries below
    (a dropped connection, a timeout) are not MlpipeErrors: Airflow retries them.
    """
    return isinstance(exc, MlpipeError) and not isinstance(exc, InfrastructureError | ArtifactConflictError)
