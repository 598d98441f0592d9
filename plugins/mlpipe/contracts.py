"""The typed values that cross task boundaries, with their XCom form, and the one ``json_safe``.

Every task of every mlpipe DAG hands the next one a small value (URIs, hashes, metrics; data moves
through the artifact store): the snapshot, the feature set, each trained candidate, the gate's
verdict, the approval, the promotion's result, the new data a watch found, a drift check, a scoring
window's result. Each is a frozen dataclass here; ``to_xcom()`` gives the JSON-safe dict a task
returns (the shape the UI, the run summary and the notifications read), and ``from_xcom(dict)``
rebuilds it in the task that pulls it, checking every field: an XCom lacking a field, or holding
one of the wrong type, raises :class:`ContractError` naming the contract and the field.

Standard library only: every task and the triggerer import it (json_safe knows numpy and pandas values
without importing them); the adapters import it inside ``execute()``, so DAG parsing never does.
"""

from __future__ import annotations

import math
import types
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from functools import cache
from pathlib import PurePath
from typing import Any, ClassVar, Self, Union, get_args, get_origin, get_type_hints

__all__ = [
    "Approval",
    "ContractError",
    "DriftCheck",
    "FeatureSet",
    "NewObjectsFound",
    "NewRowsFound",
    "PromotionResult",
    "Rule",
    "ScoreResult",
    "Snapshot",
    "TrainedCandidate",
    "Verdict",
    "champion_incident",
    "json_safe",
    "new_data_from_xcom",
]

# A field whose None is left out of the XCom (it was absent from the dict before it had a field).
OMIT_NONE = {"omit_none": True}


class ContractError(ValueError):
    """An XCom that is not the contract it should be: a missing field, or one of the wrong type."""


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON types: what verdict files, manifests and XComs carry.

    NaN and ±inf (an undefined metric, an unbounded gain) become None; numpy and pandas scalars
    their Python values (pandas' NA and NaT None); datetimes, dates and times ISO text; timedeltas
    seconds; paths text; Decimals floats; enums their values; contracts and other dataclasses dicts,
    mapping keys text, tuples and sets lists. Anything else is returned as it is.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if type(value).__name__ in ("NaTType", "NAType"):  # pandas' missing values (NaT is a datetime)
        return None
    if isinstance(value, Contract):
        return value.to_xcom()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_safe(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Decimal):
        return json_safe(float(value))
    if isinstance(value, Enum):
        return json_safe(value.value)
    if type(value).__module__ == "numpy":  # numpy scalars and arrays, without importing numpy
        return json_safe(value.tolist() if hasattr(value, "tolist") else value.item())
    return value


class Contract:
    """What every contract shares: its XCom form and the checked way back."""

    def to_xcom(self) -> dict[str, Any]:
        """The JSON-safe dict a task returns (a None marked ``OMIT_NONE`` is left out)."""
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            out[f.name] = json_safe(value)
        return out

    @classmethod
    def from_xcom(cls, data: Any) -> Self:
        """The contract from its XCom (or the contract itself); a missing required field, a mistyped one
        or an unknown one raises :class:`ContractError` naming the contract and the field."""
        if isinstance(data, cls):
            return data
        return _build_contract(cls, data, cls.__name__)


def _build_contract(cls: type[Contract], data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ContractError(f"XCom of {where}: expected a {cls.__name__} (a JSON object), got {_show(data)}")
    hints = _hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ContractError(f"XCom of {where}: unknown field(s) {unknown} (fields of {cls.__name__}: {list(hints)})")
    values = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            if f.default is not MISSING or f.default_factory is not MISSING:
                continue  # an optional field (its default)
            raise ContractError(f"XCom of {where}: field {f.name!r} is missing (it was {_show(data)})")
        values[f.name] = _build(data[f.name], hints[f.name], f"{where}.{f.name}")
    return cls(**values)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 120 else text[:117] + '...'}"


def _build(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against the type ``hint`` (nested contracts rebuilt); ``where`` names the field."""
    if hint is Any:
        return value
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        for arg in args:
            try:
                return _build(value, arg, where)
            except ContractError:
                continue
        raise ContractError(f"XCom of {where}: expected {_type_name(hint)}, got {_show(value)}")
    if isinstance(hint, type) and issubclass(hint, Contract):
        return value if isinstance(value, hint) else _build_contract(hint, value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ContractError(f"XCom of {where}: expected a list, got {_show(value)}")
        return [_build(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ContractError(f"XCom of {where}: expected a mapping, got {_show(value)}")
        return {_build(k, args[0], where): _build(v, args[1], f"{where}[{k!r}]") for k, v in value.items()}
    if hint is type(None):
        ok = value is None
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise ContractError(f"XCom of {where}: expected {_type_name(hint)}, got {_show(value)}")
    return value


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "None"
    if get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(hint))
    return getattr(hint, "__name__", None) if get_origin(hint) is None else str(hint)  # type: ignore[return-value]


# -- the training DAG ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot(Contract):
    """extract_snapshot → validate, build_features, promote: the run's data as of its date."""

    key: str
    uri: str
    sha256: str
    rows: int
    columns: list[str]
    as_of: str
    reused: bool
    seconds: float
    # The spec's sha256 when the run extracted it: what promotion registers (not a later edit's).
    spec_sha256: str | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True)
class FeatureSet(Contract):
    """build_features → train, evaluate, promote: the train and holdout splits."""

    train_key: str
    train_sha256: str
    train_rows: int
    holdout_key: str
    holdout_sha256: str
    holdout_rows: int
    columns: list[str]
    split: str
    label_counts: dict[str, int]
    seconds: float


@dataclass(frozen=True)
class TrainedCandidate(Contract):
    """train_candidates (one per candidate) → evaluate, promote: a fitted model in the store."""

    candidate: str
    estimator: str
    params: dict[str, Any]
    model_key: str
    model_uri: str
    model_sha256: str
    train_rows: int
    fit_seconds: float
    search: dict[str, Any] | None = None  # the tuning's summary (see search_summary); None without one


@dataclass(frozen=True)
class Rule(Contract):
    """One rule of the gate, with its figures and pass/fail."""

    rule: str
    passed: bool
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict(Contract):
    """evaluate_candidates → approve_promotion, promote_model: the gate's decision with its evidence.

    ``force_reason`` is the run's (its Params, checked once by the evaluation task): set when the run
    forces the promotion. It travels with the XCom only; the verdict file is the gate's alone.
    """

    pipeline: str
    run_id: str
    blessed: bool
    decision: str  # "promote" | "first" | "reject"
    best_candidate: str | None
    primary_metric: str
    candidates: dict[str, dict[str, float | None]]
    champion_version: int | None
    champion_seq: int
    champion_metrics: dict[str, float | None] | None
    champion_status: str  # "none" | "scored" | "unavailable"
    rules: list[Rule]
    reasons: list[str]
    holdout_rows: int
    slices: list[dict[str, Any]] | None = None  # one flat dict per slice; None when the spec has none
    seconds: float = 0.0
    report_uri: str | None = None
    confidence: float | None = None  # gate.confidence: rules judged on these intervals; None: on points
    uncertainty: dict[str, Any] | None = None  # how the intervals were made, and the metrics' intervals
    reused_from: str | None = field(default=None, metadata=OMIT_NONE)  # the run whose evaluation this is
    force_reason: str | None = field(default=None, metadata=OMIT_NONE)

    @property
    def forced(self) -> bool:
        """The run promotes the best candidate although the gate did not bless it."""
        return not self.blessed and self.force_reason is not None


def champion_incident(verdict: Verdict | dict[str, Any]) -> str | None:
    """Why the champion's artifact could not be loaded (tampered, missing, unreadable) per the verdict
    (the contract, or a verdict file's dict), else None."""
    rules = verdict.to_xcom()["rules"] if isinstance(verdict, Verdict) else verdict.get("rules") or []
    for rule in rules:
        figures = rule.get("figures") or {}
        if rule.get("rule") == "champion" and not rule.get("passed") and figures.get("incident"):
            return str(figures.get("error") or "the champion's artifact could not be loaded")
    return None


@dataclass(frozen=True)
class Approval(Contract):
    """approve_promotion → promote_model: a person's answer, or that nobody was asked."""

    asked: bool
    approved: bool | None
    by: str | None
    reason: str | None
    responded_at: str | None = field(default=None, metadata=OMIT_NONE)

    @property
    def rejected(self) -> bool:
        return self.asked and not self.approved


@dataclass(frozen=True)
class PromotionResult(Contract):
    """promote_model's outcome (its XCom and the run's promote/result.json)."""

    promoted: bool
    version: int | None
    previous_version: int | None
    action: str  # "promote" | "first" | "force" | "skipped" | "rejected" | "already_done"
    message: str
    artifact_uri: str | None = None


# -- the watch DAG ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewRowsFound(Contract):
    """wait_for_new_data → publish_new_data (SQL sources); watermarks in the registry's typed encoding."""

    rows: int  # rows not announced yet: past the watermark, plus late ones at its value
    watermark_from: str | None
    at_watermark_from: int | None  # rows at ``watermark_from`` already announced (None: all of them)
    watermark_to: str | None  # the watermark once these rows are announced
    at_watermark_to: int  # rows at ``watermark_to`` then announced

    unit: ClassVar[str] = "rows"

    @property
    def count(self) -> int:
        return self.rows


@dataclass(frozen=True)
class NewObjectsFound(Contract):
    """wait_for_new_data → publish_new_data (S3 sources); watermarks in the registry's typed encoding."""

    objects: int
    watermark_from: str | None
    watermark_to: str | None
    newest_key: str | None

    unit: ClassVar[str] = "objects"

    @property
    def count(self) -> int:
        return self.objects


def new_data_from_xcom(data: Any) -> NewRowsFound | NewObjectsFound:
    """What a watch found, by its XCom: objects (S3) or rows (SQL)."""
    if isinstance(data, (NewRowsFound, NewObjectsFound)):
        return data
    if isinstance(data, dict) and "objects" in data:
        return NewObjectsFound.from_xcom(data)
    return NewRowsFound.from_xcom(data)


# -- the monitor and score DAGs --------------------------------------------------------------------


@dataclass(frozen=True)
class DriftCheck(Contract):
    """check_drift → announce_drift: the window's drift and performance against the champion."""

    pipeline: str
    verdict: str  # drift report verdict: ok | warn | drift | insufficient_data | no_champion
    breach: bool  # drift verdict, or the champion's metric dropped beyond tolerance
    emit: bool  # this check is the one to announce the breach
    window_start: str | None
    window_end: str | None
    window_rows: int
    champion_version: int | None
    drifted_share: float | None
    score_psi: float | None
    performance: dict[str, Any] | None
    reasons: list[str]
    report_uri: str | None
    seconds: float

    # What the drift asset event's extra carries (with the monitor run's id).
    EVENT_FIELDS: ClassVar[tuple[str, ...]] = (
        "pipeline",
        "verdict",
        "window_start",
        "window_end",
        "window_rows",
        "champion_version",
        "drifted_share",
        "score_psi",
        "performance",
        "reasons",
        "report_uri",
    )

    def event_extra(self, monitor_run_id: str) -> dict[str, Any]:
        """The extra of the drift asset event that announces this check."""
        xcom = self.to_xcom()
        return {**{k: xcom[k] for k in self.EVENT_FIELDS}, "monitor_run_id": monitor_run_id}


@dataclass(frozen=True)
class ScoreResult(Contract):
    """score_batch's outcome (its XCom and the run's score/result.json)."""

    pipeline: str
    run_key: str
    status: str  # "scored" | "no_champion"
    model_version: int | None
    as_of: str
    input_rows: int
    scored: int
    already_scored: int
    rejected: int
    reject_reasons: dict[str, int]
    output: str | None
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase, see Stopwatch
