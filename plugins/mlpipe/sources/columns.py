"""Does a query's result have every column the spec names, with a usable type? Checked on the first chunk.

Extraction calls :func:`check_result_columns` on its first chunk, so a run whose SQL lacks a
feature fails in seconds, naming the spec field and the SQL file, instead of after validation;
``mlpipe check`` calls it on a sample before any run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from mlpipe import config
from mlpipe.errors import SpecError

if TYPE_CHECKING:
    from mlpipe.spec import LoadedSpec

# What each kind of spec column needs of its Arrow type ('null': all NULL so far, any type may follow).
_NUMERIC = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_decimal, pa.types.is_null)
_TIME = (pa.types.is_timestamp, pa.types.is_date, pa.types.is_string, pa.types.is_large_string, pa.types.is_null)
_NEEDS = {
    "numeric": (_NUMERIC, "numbers: cast it in the query, or list it under features.categorical"),
    "regression target": (_NUMERIC, "numbers for a regression: cast it in the query, or change target.task"),
    "time": (_TIME, "timestamps, dates or ISO text: cast it in the query"),
}


def type_word(typ: pa.DataType) -> str:
    """An Arrow type as a user says it (text, integer, float, ...)."""
    for test, word in (
        (pa.types.is_string, "text"),
        (pa.types.is_large_string, "text"),
        (pa.types.is_boolean, "boolean"),
        (pa.types.is_integer, "integer"),
        (pa.types.is_floating, "float"),
        (pa.types.is_timestamp, "timestamp"),
        (pa.types.is_date, "date"),
    ):
        if test(typ):
            return word
    return str(typ)


def shown_path(path: Path | None) -> str:
    """A file as the user knows it: relative to the repository when it is inside, else as given."""
    if path is None:
        return "the source"
    try:
        return str(Path(path).resolve().relative_to(config.REPO_ROOT))
    except ValueError:
        return str(path)


def spec_columns(loaded: LoadedSpec) -> list[tuple[str, str, str]]:
    """(spec field, column, kind) for every column of the query's result the spec relies on."""
    spec = loaded.spec
    out = [(f"features.numeric[{i}]", c, "numeric") for i, c in enumerate(spec.features.numeric)]
    out += [(f"features.categorical[{i}]", c, "any") for i, c in enumerate(spec.features.categorical)]
    out += [(f"features.datetime[{i}].column", d.column, "time") for i, d in enumerate(spec.features.datetime)]
    kind = "regression target" if spec.target.task == "regression" else "any"
    out.append(("target.column", spec.target.column, kind))
    if spec.split.time_column:
        out.append(("split.time_column", spec.split.time_column, "time"))
    if spec.monitor is not None and getattr(spec.source, "watermark_column", None):
        out.append(("source.watermark_column", spec.source.watermark_column, "time"))
    return out


def column_problems(loaded: LoadedSpec, schema: pa.Schema) -> list[str]:
    """What is missing or mistyped in a result with ``schema``; each problem names the spec field."""
    where = shown_path(loaded.query_path)
    names = list(schema.names)
    problems = []
    for field, column, kind in spec_columns(loaded):
        if column not in names:
            problems.append(f"{field}: column {column!r} is not in the result of {where}; it has: {', '.join(names)}")
            continue
        if kind not in _NEEDS:
            continue
        tests, needs = _NEEDS[kind]
        typ = schema.field(column).type
        if not any(test(typ) for test in tests):
            word = type_word(typ)
            problems.append(f"{field}: column {column!r} is {word} in the result of {where}; it needs {needs}")
    return problems


def check_result_columns(loaded: LoadedSpec, schema: pa.Schema) -> None:
    """Raise :class:`SpecError` (the spec file, each field) unless the result has every column the spec names."""
    problems = column_problems(loaded, schema)
    if problems:
        raise SpecError(str(loaded.path), problems)
