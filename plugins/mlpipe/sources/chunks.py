"""Rows as Arrow chunks: the conversions every reader applies, so snapshots of every source agree."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from mlpipe.spec import LoadedSpec


def spec_column_types(loaded: LoadedSpec) -> dict[str, pa.DataType]:
    """Types for columns whose first chunk is all NULL (Arrow would call them 'null')."""
    spec = loaded.spec
    types: dict[str, pa.DataType] = {c: pa.float64() for c in spec.features.numeric}
    types.update({c: pa.string() for c in spec.features.categorical})
    return types


def frame_to_arrow(frame: Any) -> pa.Table:
    """Arrow table of a chunk. A column of mixed Python types becomes text, so validation can see it;
    so does one Arrow would store as an extension type (PostgreSQL's uuid), which other readers of
    the snapshot (GX, the features stage, tools without Arrow's extensions) would not know."""
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        as_text = [f.name for f in table.schema if isinstance(f.type, pa.BaseExtensionType)]
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        as_text = []
        for name in frame.columns:
            try:
                pa.array(frame[name], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                as_text.append(name)
    if not as_text:
        return table
    frame = frame.copy()
    for name in as_text:
        col = frame[name]
        frame[name] = col.where(col.isna(), col.astype(str))
    return pa.Table.from_pandas(frame, preserve_index=False)
