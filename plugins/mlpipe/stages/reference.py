"""Validation against a reference: a new snapshot compared with the champion's training snapshot.

The schema suite (GX) sees types, ranges and formats; it cannot see data that keeps its schema and
changes its meaning. These checks compare the new snapshot with the snapshot the champion was trained
on (its registry lineage) and stop the run on what natural drift does not explain:

- ``unseen_categories``: per categorical feature, the share of rows whose category the reference never
  saw (JS distance and unseen counts from stages/drift.py, the monitor's code);
- ``null_share``: per column, the change of its share of missing values;
- ``target_shift``: classification, the largest change of a class's share; regression, the change of
  the target's mean in reference standard deviations;
- ``segment_shift``: per categorical feature, the value (common on both sides) whose class shares
  (regression: mean) moved most, e.g. labels flipped for one carrier;
- ``out_of_range``: per numeric feature, the share of rows outside the reference's range plus a margin;
- ``duplicates``: the share of rows equal to another on every non-key column, beyond the reference's;
- ``leakage``: per feature, a value (or missing, or out of the reference's range) whose rows are nearly
  all one class in the new data but were not in the reference: the feature now encodes the label;
- ``distance``: per feature, PSI (numeric) or JS distance (categorical), as the monitor computes them.
  Drift is why the pipeline retrains, so this one stops only above a much higher limit.

Share limits get three standard errors of the difference added, so small samples do not stop on noise.
Every figure, limit and a few examples (each cut to a few hundred characters) go into ``reference.json``
and a page, ``reference.html``, next to the GX Data Docs of the run.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlpipe import layout
from mlpipe.contracts import json_safe
from mlpipe.errors import ArtifactIntegrityError, ReferenceValidationError
from mlpipe.stages.drift import js_distance, psi
from mlpipe.stages.html_page import render_page

if TYPE_CHECKING:
    from mlpipe.registry import ModelVersion
    from mlpipe.spec import PipelineSpec, ReferenceSpec
    from mlpipe.storage import ArtifactStore

EXAMPLES = 5
EXAMPLE_CHARS = 200
# Standard errors of a difference of shares added to share limits: noise alone crosses 3 SE ~1 time in 700.
NOISE_SE = 3.0
# A value "leaks" only when it predicts the target this much better than the target's base rate.
LEAK_GAIN = 0.2


@dataclass
class Finding:
    """One check on one column (or the table): its figure, the limit it is held to, and whether it passed."""

    check: str
    column: str | None
    figure: float | None
    limit: float | None
    passed: bool
    detail: str
    examples: list[str] = field(default_factory=list)


@dataclass
class ReferenceReport:
    """The outcome of the reference checks: ``status`` passed | failed | no_reference | disabled | skipped."""

    status: str
    note: str
    reference: dict[str, Any] | None = None
    rows: int | None = None
    reference_rows: int | None = None
    sampled: bool = False
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not f.passed]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["checks"] = len(self.findings)
        out["failed"] = len(self.failures)
        return json_safe(out)

    def summary(self, **uris: str) -> dict[str, Any]:
        """What the validation summary keeps: the status, its line, the failed checks, the report's URIs."""
        failures = [{"check": f.check, "column": f.column, "detail": f.detail} for f in self.failures]
        return json_safe(
            {
                "status": self.status,
                "line": self.summary_line(),
                "reference": self.reference,
                "checks": len(self.findings),
                "failed": len(failures),
                "failures": failures,
                "seconds": self.seconds,
                **uris,
            }
        )

    def summary_line(self) -> str:
        """``passed: 9 checks against v1's snapshot (…)`` and the like, for the run summary."""
        if self.status in ("passed", "failed"):
            where = self.reference.get("label") if self.reference else "the reference"
            head = f"{self.status}: {len(self.findings)} checks against {where}"
            if self.failures:
                return f"{head}, {len(self.failures)} failed"
            return f"{head} ({self.rows:,} rows vs {self.reference_rows:,}{', sampled' if self.sampled else ''})"
        return self.note


def clip(value: Any) -> str:
    """``value`` as text of at most :data:`EXAMPLE_CHARS` characters."""
    text = "missing" if _missing(value) else str(value)
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…"


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _noise(p1: float, n1: int, p2: float, n2: int) -> float:
    """:data:`NOISE_SE` standard errors of the difference of two shares."""
    if n1 == 0 or n2 == 0:
        return 0.0
    return NOISE_SE * math.sqrt(max(p1 * (1 - p1), 0.0) / n1 + max(p2 * (1 - p2), 0.0) / n2)


# --- the reference ----------------------------------------------------------------------------


def reference_of(champion: ModelVersion | None) -> dict[str, Any] | None:
    """Where the champion's training snapshot is (from its lineage), or None when it recorded none."""
    if champion is None:
        return None
    snapshot = (champion.lineage or {}).get("snapshot") or {}
    if not snapshot.get("uri"):
        return None
    return {
        "version": champion.version,
        "run_id": champion.run_id,
        "uri": snapshot["uri"],
        "sha256": snapshot.get("sha256"),
        "rows": snapshot.get("rows"),
        "as_of": snapshot.get("as_of"),
        "label": f"v{champion.version}'s snapshot",
    }


def load_reference(store: ArtifactStore, reference: dict[str, Any]) -> tuple[pd.DataFrame | None, str]:
    """The reference snapshot, or None and why it cannot be read (gone, or not the bytes recorded)."""
    from mlpipe.stages.extract import read_snapshot

    try:
        key = store.key_of(reference["uri"])
        if not store.exists(key):
            return None, f"{reference['label']} {reference['uri']} no longer exists"
        return read_snapshot(store, key, reference.get("sha256")), ""
    except ArtifactIntegrityError as exc:
        return None, f"{reference['label']} {reference['uri']} is not the snapshot recorded: {exc}"
    except (OSError, ValueError) as exc:
        return None, f"{reference['label']} {reference['uri']} cannot be read: {exc}"


def check_against_champion(
    spec: PipelineSpec, store: ArtifactStore, champion: ModelVersion | None, frame: pd.DataFrame
) -> ReferenceReport:
    """Find the champion's training snapshot and compare ``frame`` with it (see :func:`compare`).

    No champion, a champion without a recorded snapshot or a snapshot that is gone: nothing to compare
    with, and the report says so (status ``no_reference``).
    """
    started = time.perf_counter()
    settings = spec.validation.reference
    if not settings.enabled:
        return ReferenceReport("disabled", "validation.reference.enabled is false: no comparison")
    reference = reference_of(champion)
    if reference is None:
        note = (
            "no reference: no champion yet (first run), nothing to compare with"
            if champion is None
            else f"no reference: champion v{champion.version} recorded no training snapshot"
        )
        return ReferenceReport("no_reference", note, seconds=round(time.perf_counter() - started, 3))
    ref_frame, why = load_reference(store, reference)
    if ref_frame is None:
        return ReferenceReport(
            "no_reference", f"no reference: {why}", reference, seconds=round(time.perf_counter() - started, 3)
        )
    report = compare(spec, ref_frame, frame, settings=settings)
    report.reference = reference
    report.seconds = round(time.perf_counter() - started, 3)
    return report


# --- the comparison ---------------------------------------------------------------------------


def key_columns(spec: PipelineSpec) -> list[str]:
    """Columns that identify a row (left out of the duplicate check): ``score.key`` and ``key_columns``."""
    keys = list(spec.validation.reference.key_columns)
    if spec.score is not None and spec.score.key not in keys:
        keys.insert(0, spec.score.key)
    return keys


def compare(
    spec: PipelineSpec, reference: pd.DataFrame, current: pd.DataFrame, *, settings: ReferenceSpec | None = None
) -> ReferenceReport:
    """Every reference check of ``current`` against ``reference``; ``status`` failed when one stops the run."""
    s = settings if settings is not None else spec.validation.reference
    # Duplicates are counted on every row (integer codes are cheap); the rest on samples of at most max_rows.
    ref_all, cur_all = _Codes(reference), _Codes(current)
    findings = [_duplicates(spec, s, ref_all, cur_all)]
    sampled = len(reference) > s.max_rows or len(current) > s.max_rows
    ref = _sample(reference, s.max_rows, spec.split.seed)
    cur = _sample(current, s.max_rows, spec.split.seed)
    codes = (ref_all if ref is reference else _Codes(ref), cur_all if cur is current else _Codes(cur))
    common = [c for c in cur.columns if c in ref.columns]
    findings += [_null_share(s, c, ref[c], cur[c]) for c in common]
    target = spec.target.column
    task = spec.target.task
    has_target = target in ref.columns and target in cur.columns
    if has_target:
        findings.append(_target_shift(s, task, target, ref[target], cur[target]))
    for column in spec.features.categorical:
        if column not in common:
            continue
        findings += _categorical(s, column, ref[column], cur[column])
        if has_target:
            findings.append(_segment_shift(s, task, column, ref, cur, target, codes))
    for column in spec.features.numeric:
        if column not in common:
            continue
        r, c = _numbers(ref[column]), _numbers(cur[column])
        if r is None or c is None:
            continue  # not numbers: the schema suite's business
        findings += _numeric(s, column, r, c)
    if has_target:
        for column in [*spec.features.categorical, *spec.features.numeric]:
            if column in common:
                findings.append(_leakage(s, task, column, ref, cur, target, codes))
    failed = any(not f.passed for f in findings)
    return ReferenceReport(
        status="failed" if failed else "passed",
        note="",
        rows=len(current),
        reference_rows=len(reference),
        sampled=sampled,
        findings=findings,
    )


def _sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    return frame.sample(n=rows, random_state=seed) if len(frame) > rows else frame


def _numbers(values: pd.Series) -> pd.Series | None:
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return None
    return values.astype("float64")


class _Codes:
    """The columns of one frame as group codes (:func:`_group_codes`), each computed once for all checks."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self._cache: dict[tuple[str, tuple[float, float] | None], tuple[np.ndarray, list[Any]]] = {}

    def of(self, column: str, bounds: tuple[float, float] | None = None) -> tuple[np.ndarray, list[Any]]:
        key = (column, bounds)
        if key not in self._cache:
            self._cache[key] = _group_codes(self.frame[column], bounds)
        return self._cache[key]

    def rows(self, columns: list[str]) -> pd.DataFrame:
        """``columns`` as integer codes: equal rows, equal codes."""
        return pd.DataFrame({c: self.of(c)[0] for c in columns}, index=self.frame.index)


def _duplicates(spec: PipelineSpec, s: ReferenceSpec, ref_codes: _Codes, cur_codes: _Codes) -> Finding:
    reference, current = ref_codes.frame, cur_codes.frame
    keys = [k for k in key_columns(spec) if k in current.columns]
    columns = [c for c in current.columns if c not in keys]
    ref_columns = [c for c in columns if c in reference.columns]
    ref_share = float(ref_codes.rows(ref_columns).duplicated().mean()) if len(reference) and ref_columns else 0.0
    share, examples = 0.0, []
    if len(current) and columns:
        rows_as_codes = cur_codes.rows(columns)
        share = float(rows_as_codes.duplicated().mean())
        repeated = rows_as_codes[rows_as_codes.duplicated(keep=False)]
        for _, first in repeated.drop_duplicates().head(EXAMPLES).iterrows():
            same = (repeated == first).all(axis=1).to_numpy()
            rows = current.loc[repeated.index[same][:3]]
            ids = ", ".join(f"{k}={clip(v)}" for k in keys for v in rows[k]) or f"{len(rows)} rows"
            content = ", ".join(f"{c}={clip(rows.iloc[0][c])}" for c in columns)
            examples.append(clip(f"{ids}: {content}"))
    excess = share - ref_share
    limit = s.max_duplicate_share + _noise(share, len(current), ref_share, len(reference))
    key_text = f"key columns {keys}" if keys else "no key columns"
    return Finding(
        check="duplicates",
        column=None,
        figure=share,
        limit=s.max_duplicate_share,
        passed=excess <= limit,
        detail=(
            f"duplicates: {_pct(share)} of rows repeat another row on every non-key column "
            f"(reference {_pct(ref_share)}; limit +{_pct(s.max_duplicate_share)}; {key_text})"
            + (f", e.g. {examples[0]}" if examples and excess > limit else "")
        ),
        examples=examples,
    )


def _null_share(s: ReferenceSpec, column: str, ref: pd.Series, cur: pd.Series) -> Finding:
    r = float(ref.isna().mean()) if len(ref) else 0.0
    c = float(cur.isna().mean()) if len(cur) else 0.0
    change = abs(c - r)
    limit = s.max_null_share_change + _noise(r, len(ref), c, len(cur))
    return Finding(
        check="null_share",
        column=column,
        figure=change,
        limit=s.max_null_share_change,
        passed=change <= limit,
        detail=(
            f"null share of {column!r}: {_pct(r)} -> {_pct(c)} "
            f"(change {_pct(change)}, limit {_pct(s.max_null_share_change)})"
        ),
    )


def _class_shares(values: pd.Series) -> pd.Series:
    return values.dropna().value_counts(normalize=True)


def _target_shift(s: ReferenceSpec, task: str, target: str, ref: pd.Series, cur: pd.Series) -> Finding:
    if task == "regression":
        r, c = _numbers(ref), _numbers(cur)
        if r is None or c is None or r.notna().sum() < 2 or c.notna().sum() == 0:
            return Finding("target_shift", target, None, s.max_target_mean_shift, True, "target: not comparable")
        sd = float(r.std()) or 1.0
        shift = abs(float(c.mean()) - float(r.mean())) / sd
        limit = s.max_target_mean_shift + NOISE_SE * math.sqrt(1 / r.notna().sum() + 1 / c.notna().sum())
        return Finding(
            check="target_shift",
            column=target,
            figure=shift,
            limit=s.max_target_mean_shift,
            passed=shift <= limit,
            detail=(
                f"target {target!r}: mean {float(r.mean()):.4g} -> {float(c.mean()):.4g} "
                f"({shift:.3f} reference sd, limit {s.max_target_mean_shift})"
            ),
        )
    rs, cs = _class_shares(ref), _class_shares(cur)
    both = pd.concat([rs.rename("ref"), cs.rename("cur")], axis=1).fillna(0.0)
    if both.empty:
        return Finding("target_shift", target, None, s.max_target_shift, True, f"target {target!r}: no labels")
    diff = (both["cur"] - both["ref"]).abs()
    worst = diff.idxmax()
    p_ref, p_cur = float(both.at[worst, "ref"]), float(both.at[worst, "cur"])
    limit = s.max_target_shift + _noise(p_ref, int(ref.notna().sum()), p_cur, int(cur.notna().sum()))
    return Finding(
        check="target_shift",
        column=target,
        figure=float(diff.max()),
        limit=s.max_target_shift,
        passed=float(diff.max()) <= limit,
        detail=(
            f"target {target!r}: share of class {clip(worst)} {p_ref:.3f} -> {p_cur:.3f} "
            f"(change {float(diff.max()):.3f}, limit {s.max_target_shift})"
        ),
        examples=[f"{clip(k)}: {row.ref:.3f} -> {row.cur:.3f}" for k, row in both.head(EXAMPLES).iterrows()],
    )


def _categorical(s: ReferenceSpec, column: str, ref: pd.Series, cur: pd.Series) -> list[Finding]:
    drift = js_distance(ref, cur)
    share = 0.0 if math.isnan(drift.unseen_share) else float(drift.unseen_share)
    counts = cur[~cur.isin(set(ref.dropna().unique()))].dropna().value_counts().head(EXAMPLES) if share else None
    examples = [f"{clip(v)} ({n:,} rows)" for v, n in counts.items()] if counts is not None else []
    unseen = Finding(
        check="unseen_categories",
        column=column,
        figure=share,
        limit=s.max_unseen_share,
        passed=share <= s.max_unseen_share + _noise(share, len(cur), 0.0, len(ref)),
        detail=(
            f"unseen categories in {column!r}: {_pct(share)} of rows ({drift.unseen} value(s) the reference "
            f"never saw; limit {_pct(s.max_unseen_share)})" + (f", e.g. {', '.join(examples[:3])}" if examples else "")
        ),
        examples=examples,
    )
    js = None if math.isnan(drift.distance) else float(drift.distance)
    distance = Finding(
        check="distance",
        column=column,
        figure=js,
        limit=s.stop_js,
        passed=js is None or js <= s.stop_js,
        detail=f"JS distance of {column!r}: {'n/a' if js is None else f'{js:.3f}'} (stops above {s.stop_js})",
    )
    return [unseen, distance]


def _numeric(s: ReferenceSpec, column: str, ref: pd.Series, cur: pd.Series) -> list[Finding]:
    value = psi(ref, cur)
    figure = None if math.isnan(value) else float(value)
    distance = Finding(
        check="distance",
        column=column,
        figure=figure,
        limit=s.stop_psi,
        passed=figure is None or figure <= s.stop_psi,
        detail=f"PSI of {column!r}: {'n/a' if figure is None else f'{figure:.3f}'} (stops above {s.stop_psi})",
    )
    known = ref.dropna()
    present = cur.dropna()
    if known.empty or present.empty:
        return [distance]
    low, high = float(known.min()), float(known.max())
    margin = s.range_margin * (high - low) or s.range_margin * max(abs(low), 1.0)
    # The margin never crosses zero: a column that was never negative (positive) stays so.
    floor = max(low - margin, 0.0) if low >= 0 else low - margin
    ceiling = min(high + margin, 0.0) if high <= 0 else high + margin
    outside = present[(present < floor) | (present > ceiling)]
    share = len(outside) / len(cur)
    examples = [clip(v) for v in outside.drop_duplicates().head(EXAMPLES)]
    out_of_range = Finding(
        check="out_of_range",
        column=column,
        figure=share,
        limit=s.max_out_of_range_share,
        passed=share <= s.max_out_of_range_share + _noise(share, len(cur), 0.0, len(ref)),
        detail=(
            f"out of range in {column!r}: {_pct(share)} of rows outside [{floor:.6g}, {ceiling:.6g}] (the reference's "
            f"[{low:.6g}, {high:.6g}] ± {margin:.6g}, not across 0; limit {_pct(s.max_out_of_range_share)})"
            + (f", e.g. {', '.join(examples[:3])}" if examples else "")
        ),
        examples=examples,
    )
    return [distance, out_of_range]


MISSING = "<missing>"
OUT_OF_RANGE = "<out of reference range>"


def _group_codes(values: pd.Series, bounds: tuple[float, float] | None = None) -> tuple[np.ndarray, list[Any]]:
    """Each row's group (its value; missing values one group; with ``bounds``, values outside them one more)."""
    codes, uniques = pd.factorize(values, sort=False)
    n = len(uniques)
    codes = np.where(codes < 0, n, codes)
    if bounds is not None:
        numbers = values.to_numpy(dtype="float64", na_value=np.nan)
        codes = np.where((numbers < bounds[0]) | (numbers > bounds[1]), n + 1, codes)
    return codes, [*uniques, MISSING, OUT_OF_RANGE]


def _class_counts(codes: np.ndarray, labels: list[Any], target: pd.Series) -> pd.DataFrame:
    """Labelled rows per group (index) and class (columns); groups without rows left out."""
    labelled = target.notna().to_numpy()
    t_codes, classes = pd.factorize(target[labelled], sort=True)
    k, m = max(len(classes), 1), len(labels)
    counts = np.bincount(codes[labelled] * k + t_codes, minlength=m * k).reshape(m, k)
    frame = pd.DataFrame(counts, index=pd.Index(labels, dtype=object), columns=pd.Index(list(classes), dtype=object))
    return frame[counts.sum(axis=1) > 0]


def _mean_table(codes: np.ndarray, labels: list[Any], target: pd.Series) -> pd.DataFrame:
    """Per group: labelled rows, the target's mean and its (population) standard deviation."""
    y = target.to_numpy(dtype="float64", na_value=np.nan)
    ok = ~np.isnan(y)
    g, y = codes[ok], y[ok]
    m = len(labels)
    rows = np.bincount(g, minlength=m).astype("float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(g, weights=y, minlength=m) / rows
        var = np.bincount(g, weights=y * y, minlength=m) / rows - mean**2
    frame = pd.DataFrame(
        {"rows": rows, "mean": mean, "std": np.sqrt(np.clip(var, 0, None))}, index=pd.Index(labels, dtype=object)
    )
    return frame[rows > 0]


def _segment_shift(
    s: ReferenceSpec,
    task: str,
    column: str,
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    target: str,
    codes: tuple[_Codes, _Codes],
) -> Finding:
    """The common value of ``column`` whose target moved most (class shares; regression: mean in sd)."""
    min_ref = max(s.min_rows, math.ceil(s.segment_min_share * len(ref)))
    min_cur = max(s.min_rows, math.ceil(s.segment_min_share * len(cur)))
    regression = task == "regression"
    if regression and (_numbers(ref[target]) is None or _numbers(cur[target]) is None):
        return Finding("segment_shift", column, None, s.max_segment_shift, True, f"target {target!r} is not numeric")
    tables = []
    for frame, frame_codes in zip((ref, cur), codes, strict=True):
        group, labels = frame_codes.of(column)
        tables.append((_mean_table if regression else _class_counts)(group, labels, frame[target]))
    r, c = tables
    if regression:
        r_rows, c_rows = r["rows"], c["rows"]
    else:
        r_rows, c_rows = r.sum(axis=1), c.sum(axis=1)
    keep = [v for v in r.index.intersection(c.index) if r_rows[v] >= min_ref and c_rows[v] >= min_cur]
    if not keep:
        return Finding(
            "segment_shift",
            column,
            None,
            s.max_segment_shift,
            True,
            f"target by {column!r}: no value common enough on both sides to compare",
        )
    n_ref, n_cur = r_rows.loc[keep].to_numpy(), c_rows.loc[keep].to_numpy()
    if regression:
        sd = float(_numbers(ref[target]).std()) or 1.0
        shift = (c.loc[keep, "mean"] - r.loc[keep, "mean"]).abs() / sd
        noise = NOISE_SE * np.sqrt(1 / n_ref + 1 / n_cur)
        what = "mean"
    else:
        classes = r.columns.union(c.columns)
        p = (r.reindex(index=keep, columns=classes, fill_value=0).to_numpy() / n_ref[:, None]).clip(0, 1)
        q = (c.reindex(index=keep, columns=classes, fill_value=0).to_numpy() / n_cur[:, None]).clip(0, 1)
        shift = pd.Series(np.abs(q - p).max(axis=1), index=keep)
        noise = NOISE_SE * np.sqrt(p * (1 - p) / n_ref[:, None] + q * (1 - q) / n_cur[:, None]).max(axis=1)
        what = "class shares"
    excess = shift - noise
    worst = excess.idxmax()
    examples = [f"{clip(v)}: {x:.3f}" for v, x in shift.sort_values(ascending=False).head(EXAMPLES).items()]
    figure = float(shift.loc[worst])
    return Finding(
        check="segment_shift",
        column=column,
        figure=figure,
        limit=s.max_segment_shift,
        passed=float(excess.max()) <= s.max_segment_shift,
        detail=(
            f"target by {column!r}: the {what} of {target!r} where {column} = {clip(worst)} moved by {figure:.3f} "
            f"(limit {s.max_segment_shift})"
        ),
        examples=examples,
    )


def _purity(codes: np.ndarray, labels: list[Any], target: pd.Series, regression: bool) -> pd.DataFrame:
    """Per group: ``rows``, ``purity`` (majority class share; regression: 1 - sd / overall sd) and ``gain``
    (how much better than the base rate that is; regression: the purity itself)."""
    if regression:
        table = _mean_table(codes, labels, target)
        overall = float(target.astype("float64").std(ddof=0)) or 1.0
        purity = (1 - table["std"] / overall).clip(lower=0)
        return pd.DataFrame({"rows": table["rows"], "purity": purity, "gain": purity})
    counts = _class_counts(codes, labels, target)
    rows = counts.sum(axis=1)
    top = counts.max(axis=1)
    base = counts.sum(axis=0) / max(int(rows.sum()), 1)
    majority = counts.to_numpy().argmax(axis=1)
    purity = top / rows
    return pd.DataFrame({"rows": rows, "purity": purity, "gain": purity - base.to_numpy()[majority]})


def _leakage(
    s: ReferenceSpec,
    task: str,
    column: str,
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    target: str,
    codes: tuple[_Codes, _Codes],
) -> Finding:
    """A value of ``column`` covering a real share of the rows that now (nearly) fixes the target."""
    regression = task == "regression"
    noun = "target value" if regression else "class"
    if regression and (_numbers(ref[target]) is None or _numbers(cur[target]) is None):
        return Finding("leakage", column, None, s.leakage_purity, True, f"target {target!r} is not numeric")
    r_num, c_num = _numbers(ref[column]), _numbers(cur[column])
    bounds = None
    if r_num is not None and c_num is not None and r_num.notna().any():
        bounds = (float(r_num.min()), float(r_num.max()))
    tables = []
    for frame, frame_codes in zip((ref, cur), codes, strict=True):
        group, labels = frame_codes.of(column, bounds)
        tables.append(_purity(group, labels, frame[target], regression))
    r, c = tables
    min_rows = max(s.min_rows, math.ceil(s.leakage_min_share * len(cur)))
    judged = c[c["rows"] >= min_rows]
    suspects = judged[(judged["purity"] >= s.leakage_purity) & (judged["gain"] >= (0 if regression else LEAK_GAIN))]
    leaks = []
    for value, row in suspects.sort_values("rows", ascending=False).iterrows():
        before = r.loc[value] if value in r.index and r.at[value, "rows"] >= s.min_rows else None
        if before is None or before["purity"] < s.leakage_purity:
            leaks.append((value, float(row["purity"]), int(row["rows"]), None if before is None else before["purity"]))
    if not leaks:
        return Finding(
            check="leakage",
            column=column,
            figure=float(judged["purity"].max()) if len(judged) else None,
            limit=s.leakage_purity,
            passed=True,
            detail=(
                f"leakage in {column!r}: no value of >= {min_rows:,} rows has one {noun} in "
                f"{_pct(s.leakage_purity)} of its rows unless it did in the reference"
            ),
        )

    def was(purity: float | None) -> str:
        return "absent or rare" if purity is None else _pct(purity)

    value, purity, rows, before = leaks[0]
    return Finding(
        check="leakage",
        column=column,
        figure=purity,
        limit=s.leakage_purity,
        passed=False,
        detail=(
            f"leakage in {column!r}: {column} = {clip(value)} ({rows:,} rows, {_pct(rows / len(cur))}) has one "
            f"{noun} in {_pct(purity)} of its rows (reference: {was(before)}; limit {_pct(s.leakage_purity)})"
        ),
        examples=[
            f"{clip(v)}: {n:,} rows, {_pct(p)} one {noun} (reference: {was(b)})" for v, p, n, b in leaks[:EXAMPLES]
        ],
    )


# --- failing the run, and the report -------------------------------------------------------------


def raise_for_report(report: ReferenceReport, report_uri: str | None = None) -> None:
    """Raise :class:`ReferenceValidationError` listing every failed check unless the report passed."""
    if report.status != "failed":
        return
    where = report.reference["label"] if report.reference else "the reference"
    if report.reference and report.reference.get("run_id"):
        where = f"{where} (run {report.reference['run_id']})"
    failures = [
        {"check": f.check, "column": f.column, "figure": f.figure, "limit": f.limit, "detail": f.detail}
        for f in report.failures
    ]
    raise ReferenceValidationError(where, json_safe(failures), report_uri)


def write_report(store: ArtifactStore, prefix: str, report: ReferenceReport) -> dict[str, str]:
    """``<prefix>/reference.json`` and the readable ``<prefix>/reference.html``; returns their URIs."""
    data = report.as_dict()
    stored = store.put_bytes(
        f"{prefix}/{layout.REFERENCE_JSON_FILE}", json.dumps(data, indent=2, allow_nan=False).encode()
    )
    html = store.put_bytes(f"{prefix}/{layout.REFERENCE_HTML_FILE}", render_html(report).encode())
    return {"json_uri": stored.uri, "html_uri": html.uri}


def render_html(report: ReferenceReport) -> str:
    """The reference checks as a self-contained page: status, the reference, one row per check (failed first)."""
    ref = report.reference or {}
    findings = [
        {
            "passed": f.passed,
            "check": f.check,
            "column": f.column or "-",
            "figure": "n/a" if f.figure is None else f"{f.figure:.4g}",
            "limit": "n/a" if f.limit is None else f"{f.limit:.4g}",
            "detail": f.detail,
            "examples": f.examples[:EXAMPLES],
        }
        for f in sorted(report.findings, key=lambda f: (f.passed, f.check, f.column or ""))
    ]
    return render_page(
        "reference.html",
        title="Validation against the reference",
        subtitle="mlpipe reference checks",
        status={"passed": "pass", "failed": "fail"}.get(report.status, "n/a"),
        summary=report.summary_line(),
        reference={k: ref.get(k) for k in ("label", "run_id", "as_of", "uri")} if ref else None,
        note=report.note,
        findings=findings,
    )
