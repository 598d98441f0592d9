"""Drift math for the monitor: PSI, Jensen-Shannon distance and KS per feature, and one verdict.

The monitor compares a recent *current* window with the champion's training snapshot (the
*reference*). Every figure here is a pure function of the two samples:

- numeric features: the Population Stability Index (PSI) on bins cut at the reference's quantiles,
  with missing values as one more bin, plus a two-sample Kolmogorov-Smirnov test on bounded
  subsamples as a second opinion;
- categorical features: the Jensen-Shannon distance over the union of categories (missing values
  are a category of their own), plus the count and share of current rows whose category the
  reference never saw;
- the champion's predicted scores: PSI (and KS) exactly like a numeric feature.

Conventional thresholds (the defaults of :class:`DriftThresholds`):

- PSI: below 0.1 "no significant change", 0.1-0.25 "moderate shift", above 0.25 "major shift"
  (Siddiqi, *Credit Risk Scorecards*, 2006; Yurdakul, *Statistical properties of the population
  stability index*, 2018). We warn at 0.1 (also Evidently's default PSI drift threshold) and act
  at 0.2, a step more cautious than 0.25 because acting here only means retraining.
- Jensen-Shannon distance: 0.1, Evidently's default. We use base-2 logarithms so the distance is
  in [0, 1]; Evidently's natural-log distance of 0.1 is 0.12 in base 2, so ours is a little stricter.
  For small shifts JS distance (base 2) ≈ sqrt(PSI / (8 ln 2)), so JS 0.1 is about PSI 0.055.
- KS: p < 0.01 *and* statistic D ≥ 0.1. On tens of thousands of rows the p-value alone rejects
  shifts far too small to matter (D ≈ 0.02 at 20k rows), so D, the largest gap between the two
  empirical CDFs, is the effect size that must also be large. KS only ever raises a warning.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
from scipy.special import rel_entr

from mlpipe.contracts import json_safe
from mlpipe.errors import FeatureError

Status = Literal["ok", "warn", "act", "n/a"]
Verdict = Literal["ok", "warn", "drift", "insufficient_data"]

DEFAULT_BINS = 10
DEFAULT_EPS = 1e-4
DEFAULT_KS_MAX_SAMPLE = 20_000
UNSEEN_EXAMPLES = 5


# --- figures ----------------------------------------------------------------------------------


def _float_array(values: Any) -> np.ndarray:
    """``values`` as a 1-D float64 array with missing values (None, NaN, pd.NA) as NaN; no copy if already so."""
    if isinstance(values, pd.Series | pd.Index):
        return values.to_numpy(dtype="float64", na_value=np.nan)
    arr = np.asarray(values, dtype="float64")
    return arr.ravel()


def _check_bins(bins: int) -> None:
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")


def reference_edges(reference: Any, *, bins: int = DEFAULT_BINS) -> np.ndarray:
    """The interior bin edges PSI uses: the reference's 1/bins … (bins-1)/bins quantiles, deduplicated.

    Ties (discrete or heavily repeated values) collapse equal quantiles into one edge, so there may
    be fewer than ``bins`` bins; a constant reference gives a single edge (two bins: below it, and
    at-or-above it). The outer bins are open-ended. An all-missing reference gives no edge at all.
    """
    _check_bins(bins)
    ref = _float_array(reference)
    ref = ref[~np.isnan(ref)]
    if ref.size == 0:
        return np.empty(0, dtype="float64")
    qs = np.arange(1, bins) / bins
    return np.unique(np.quantile(ref, qs))


def _bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of ``values`` in each bin of ``edges`` (len(edges)+1 bins) and, last, the missing share."""
    # side="right": a value equal to an edge belongs to the bin that starts there, [e_i, e_i+1).
    idx = np.searchsorted(edges, values, side="right")
    # searchsorted sorts NaN last, which would put it in the top bin: give it a bin of its own.
    idx[np.isnan(values)] = edges.size + 1
    return np.bincount(idx, minlength=edges.size + 2) / values.size


def psi(reference: Any, current: Any, *, bins: int = DEFAULT_BINS, eps: float = DEFAULT_EPS) -> float:
    """Population Stability Index of ``current`` against ``reference``, numeric values.

    ``PSI = Σ_b (c_b - r_b) · ln(c_b / r_b)`` over the bins ``b``, where ``r_b`` and ``c_b`` are
    the shares of reference and current rows in bin ``b``. It is the symmetric (Jeffreys) KL
    divergence of the two binned distributions: 0 when they match, growing without bound as they
    part. For two normals a mean shift of δ standard deviations gives about δ² (0.238 at 0.5 sd
    with 10 decile bins). Read it as < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift.

    Bins are cut at the reference's quantiles (:func:`reference_edges`), so each holds about
    1/bins of the reference; the outer bins are open, so current values beyond the reference's
    range land in the end bins. Missing values (NaN/None) form one more bin, so a change in the
    missing rate is drift too. A share of 0 is replaced by ``eps`` so an empty bin adds a large
    but finite term (a bin empty on both sides adds 0). Counting costs O(n log k) for n rows and
    k edges (``np.searchsorted``); the reference's quantiles cost O(n).

    Returns NaN when either sample is empty.
    """
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    ref = _float_array(reference)
    cur = _float_array(current)
    edges = reference_edges(ref, bins=bins)
    if ref.size == 0 or cur.size == 0:
        return math.nan
    r = _bin_shares(ref, edges)
    c = _bin_shares(cur, edges)
    r = np.where(r == 0, eps, r)
    c = np.where(c == 0, eps, c)
    return float(np.sum((c - r) * np.log(c / r)))


class CategoricalDrift(NamedTuple):
    """What :func:`js_distance` measures for one categorical feature.

    ``distance``: Jensen-Shannon distance, base 2, in [0, 1] (0 = same distribution, 1 = disjoint
    supports); NaN when either sample is empty.
    ``unseen``: how many distinct categories occur in ``current`` but never in ``reference``
    (missing values are not a category name and are never counted here).
    ``unseen_share``: the share of current rows holding one of those categories.
    ``unseen_examples``: up to five of them, most frequent first, as strings.
    """

    distance: float
    unseen: int
    unseen_share: float
    unseen_examples: tuple[str, ...]


def _category_counts(values: Any) -> tuple[pd.Series, int, int]:
    """(counts of each non-missing category, count of missing values, total rows)."""
    s = values if isinstance(values, pd.Series) else pd.Series(values, dtype="object")
    missing = s.isna()
    n_missing = int(missing.sum())
    counts = s[~missing].value_counts(sort=False) if n_missing else s.value_counts(sort=False, dropna=True)
    # A pandas Categorical also counts its unobserved categories (as 0): they are not part of the sample.
    counts = counts[counts > 0]
    return counts, n_missing, len(s)


def js_distance(reference: Any, current: Any) -> CategoricalDrift:
    """Jensen-Shannon distance between the category distributions of ``reference`` and ``current``.

    ``JS = sqrt( ½ KL(p ‖ m) + ½ KL(q ‖ m) )`` with ``m = (p + q) / 2`` and base-2 logarithms,
    over the union of the categories of both samples; missing values (None/NaN/pd.NA) form one
    more category. Unlike PSI it needs no smoothing (m is never 0 where p or q is not) and is
    bounded: 0 for the same distribution, 1 for disjoint ones. The conventional drift threshold
    is 0.1; for small shifts JS ≈ sqrt(PSI / (8 ln 2)). Categories absent from the reference are
    part of the union (they push the distance up) and are also counted in the result, never an error.
    """
    ref_counts, ref_missing, n_ref = _category_counts(reference)
    cur_counts, cur_missing, n_cur = _category_counts(current)
    both = pd.concat([ref_counts.rename("ref"), cur_counts.rename("cur")], axis=1).fillna(0)
    unseen_mask = both["ref"].to_numpy() == 0
    unseen_rows = int(both["cur"].to_numpy()[unseen_mask].sum())
    unseen = both.loc[unseen_mask, "cur"].sort_values(ascending=False, kind="stable")
    examples = tuple(str(c) for c in unseen.index[:UNSEEN_EXAMPLES])
    unseen_share = unseen_rows / n_cur if n_cur else math.nan
    if n_ref == 0 or n_cur == 0:
        return CategoricalDrift(math.nan, len(unseen), unseen_share, examples)
    p = np.append(both["ref"].to_numpy(dtype="float64"), ref_missing) / n_ref
    q = np.append(both["cur"].to_numpy(dtype="float64"), cur_missing) / n_cur
    m = (p + q) / 2
    divergence = (np.sum(rel_entr(p, m)) + np.sum(rel_entr(q, m))) / (2 * math.log(2))
    # Rounding can leave a hair below 0 for identical distributions; sqrt of that would be NaN.
    return CategoricalDrift(float(math.sqrt(max(divergence, 0.0))), len(unseen), unseen_share, examples)


def _subsample(values: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A uniform sample without replacement of at most ``size`` of ``values``, missing values dropped after."""
    if values.size > size:
        # Sample positions first, then drop NaN: the cost stays O(size) however long the window.
        values = values[rng.choice(values.size, size=size, replace=False)]
    return values[~np.isnan(values)]


def ks(reference: Any, current: Any, *, max_sample: int = DEFAULT_KS_MAX_SAMPLE, seed: int = 0) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test: ``(statistic D, p-value)`` on bounded subsamples.

    D is the largest vertical gap between the two empirical CDFs (0 = same, 1 = disjoint ranges);
    the p-value is that of ``scipy.stats.ks_2samp`` (two-sided, exact for small samples, asymptotic
    otherwise) under "same continuous distribution". Each side is first reduced to a uniform
    random sample of at most ``max_sample`` rows drawn with ``numpy.random.default_rng(seed)``
    (reference first, then current), so the cost is bounded whatever the window size and the
    result is reproducible for a given seed. Missing values are left out (PSI counts them); on
    ties (discrete data) the p-value is conservative. ``(nan, nan)`` when a side has no
    non-missing value.
    """
    if max_sample < 1:
        raise ValueError(f"max_sample must be at least 1, got {max_sample}")
    rng = np.random.default_rng(seed)
    ref = _subsample(_float_array(reference), max_sample, rng)
    cur = _subsample(_float_array(current), max_sample, rng)
    if ref.size == 0 or cur.size == 0:
        return math.nan, math.nan
    # Imported here: scipy.stats costs ~0.4 s of every process importing this module (a validation
    # against a reference and the score DAG use PSI and JS only).
    from scipy import stats

    result = stats.ks_2samp(ref, cur)
    return float(result.statistic), float(result.pvalue)


# --- thresholds and the report ----------------------------------------------------------------


@dataclass(frozen=True)
class DriftThresholds:
    """When a figure counts as drift. The spec's ``drift`` section sets these; these are the defaults.

    - ``psi_warn`` = 0.1, ``psi_act`` = 0.2: PSI at or above these makes a numeric feature (or the
      score) 'warn' / 'act'. Convention: < 0.1 stable, 0.1-0.25 moderate, > 0.25 major shift.
    - ``js_act`` = 0.1: Jensen-Shannon distance (base 2) at or above which a categorical feature is
      'act' (Evidently's default). ``js_warn`` (default None: no warn tier) adds an earlier warning.
      Sampling noise alone gives JS ≈ sqrt((k - 1) / (5.5 n)) for k categories and n current rows:
      at n = 500 about 0.06 for 10 categories, 0.08 for 20 and 0.14 for 50, so high-cardinality
      features need windows of several thousand rows (or a higher ``js_act``) to avoid false 'act'.
    - ``ks_pvalue`` = 0.01 with ``ks_statistic`` = 0.1: a numeric feature (or the score) whose PSI
      is below ``psi_warn`` still 'warns' when KS rejects at this level with D at least this large.
      KS never makes 'act' on its own.
    - ``drifted_share_act`` = 0.3: the verdict is 'drift' when at least this share of the features
      is 'act' (one feature in 3 or 4 rather than Evidently's half: the monitor's answer is a
      retrain, cheap next to serving a stale model), or when the score's PSI reaches ``psi_act``.
    - ``min_sample`` = 500: below this many rows in the current window (or in the reference) no
      status and no verdict are drawn. At 500 rows and 10 bins the sampling noise of PSI is about
      (bins - 1) / n ≈ 0.02, a fifth of ``psi_warn``.
    """

    psi_warn: float = 0.1
    psi_act: float = 0.2
    js_act: float = 0.1
    js_warn: float | None = None
    ks_pvalue: float = 0.01
    ks_statistic: float = 0.1
    drifted_share_act: float = 0.3
    min_sample: int = 500

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.psi_warn <= self.psi_act:
            problems.append(f"need 0 < psi_warn <= psi_act, got {self.psi_warn} and {self.psi_act}")
        if not 0 < self.js_act <= 1:
            problems.append(f"js_act must be in (0, 1], got {self.js_act}")
        if self.js_warn is not None and not 0 < self.js_warn <= self.js_act:
            problems.append(f"need 0 < js_warn <= js_act, got {self.js_warn} and {self.js_act}")
        if not 0 < self.ks_pvalue < 1:
            problems.append(f"ks_pvalue must be in (0, 1), got {self.ks_pvalue}")
        if not 0 <= self.ks_statistic <= 1:
            problems.append(f"ks_statistic must be in [0, 1], got {self.ks_statistic}")
        if not 0 < self.drifted_share_act <= 1:
            problems.append(f"drifted_share_act must be in (0, 1], got {self.drifted_share_act}")
        if self.min_sample < 1:
            problems.append(f"min_sample must be at least 1, got {self.min_sample}")
        if problems:
            raise ValueError("invalid drift thresholds: " + "; ".join(problems))


@dataclass
class FeatureDrift:
    """The figures of one feature (``kind`` 'numeric' or 'categorical') or of the scores ('score').

    ``n_ref`` / ``n_cur``: rows in each sample, missing included; ``missing_ref`` /
    ``missing_cur``: their missing shares. Numeric and score rows carry ``psi``, ``ks_statistic``
    and ``ks_pvalue``; categorical rows ``js``, ``unseen`` (distinct categories absent from the
    reference), ``unseen_share`` (share of current rows holding them) and ``unseen_examples``.
    ``status``: 'ok', 'warn', 'act', or 'n/a' when the window is too small to judge (or a figure
    is undefined). ``reasons`` say which threshold each figure crossed.
    """

    feature: str
    kind: Literal["numeric", "categorical", "score"]
    n_ref: int
    n_cur: int
    missing_ref: float | None
    missing_cur: float | None
    status: Status = "n/a"
    psi: float | None = None
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    js: float | None = None
    unseen: int | None = None
    unseen_share: float | None = None
    unseen_examples: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


@dataclass
class DriftReport:
    """Per-feature drift figures, the score's drift, and the verdict drawn from them.

    ``verdict``: 'insufficient_data' when the current window (or the reference) has fewer than
    ``thresholds.min_sample`` rows — figures are still computed, every status is 'n/a' and
    ``drifted_share`` is None; else 'drift' when ``drifted_share`` ≥ ``drifted_share_act`` or the
    score is 'act'; else 'warn' when any feature or the score is 'warn' or 'act'; else 'ok'.
    ``drifted_share``: features at 'act' / features judged. ``reasons`` explain the verdict.
    """

    verdict: Verdict
    n_ref: int
    n_cur: int
    features: list[FeatureDrift]
    score: FeatureDrift | None
    drifted_share: float | None
    thresholds: DriftThresholds
    reasons: list[str] = field(default_factory=list)

    def feature(self, name: str) -> FeatureDrift:
        """The row of feature ``name``."""
        for row in self.features:
            if row.feature == name:
                return row
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-safe plain Python: NaN and ±inf become None, numpy scalars Python ones."""
        return json_safe(
            {
                "verdict": self.verdict,
                "n_ref": self.n_ref,
                "n_cur": self.n_cur,
                "drifted_share": self.drifted_share,
                "reasons": self.reasons,
                "thresholds": asdict(self.thresholds),
                "features": [asdict(row) for row in self.features],
                "score": asdict(self.score) if self.score is not None else None,
            }
        )


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _numeric_row(
    name: str,
    kind: Literal["numeric", "score"],
    reference: Any,
    current: Any,
    *,
    bins: int,
    ks_max_sample: int,
    seed: int,
) -> FeatureDrift:
    ref = _float_array(reference)
    cur = _float_array(current)
    stat, pvalue = ks(ref, cur, max_sample=ks_max_sample, seed=seed)
    return FeatureDrift(
        feature=name,
        kind=kind,
        n_ref=int(ref.size),
        n_cur=int(cur.size),
        missing_ref=float(np.isnan(ref).mean()) if ref.size else math.nan,
        missing_cur=float(np.isnan(cur).mean()) if cur.size else math.nan,
        psi=psi(ref, cur, bins=bins),
        ks_statistic=stat,
        ks_pvalue=pvalue,
    )


def _categorical_row(name: str, reference: pd.Series, current: pd.Series) -> FeatureDrift:
    result = js_distance(reference, current)
    return FeatureDrift(
        feature=name,
        kind="categorical",
        n_ref=len(reference),
        n_cur=len(current),
        missing_ref=float(reference.isna().mean()) if len(reference) else math.nan,
        missing_cur=float(current.isna().mean()) if len(current) else math.nan,
        js=result.distance,
        unseen=result.unseen,
        unseen_share=result.unseen_share,
        unseen_examples=list(result.unseen_examples),
    )


def _judge(row: FeatureDrift, t: DriftThresholds) -> None:
    """Set ``row.status`` and ``row.reasons`` from its figures and the thresholds."""
    if row.kind == "categorical":
        js = row.js if row.js is not None else math.nan
        if math.isnan(js):
            row.status = "n/a"
        elif js >= t.js_act:
            row.status, row.reasons = "act", [f"JS distance {js:.3f} >= act {t.js_act}"]
        elif t.js_warn is not None and js >= t.js_warn:
            row.status, row.reasons = "warn", [f"JS distance {js:.3f} >= warn {t.js_warn}"]
        else:
            row.status = "ok"
        return
    value = row.psi if row.psi is not None else math.nan
    stat = row.ks_statistic if row.ks_statistic is not None else math.nan
    pvalue = row.ks_pvalue if row.ks_pvalue is not None else math.nan
    if math.isnan(value):
        row.status = "n/a"
    elif value >= t.psi_act:
        row.status, row.reasons = "act", [f"PSI {value:.3f} >= act {t.psi_act}"]
    elif value >= t.psi_warn:
        row.status, row.reasons = "warn", [f"PSI {value:.3f} >= warn {t.psi_warn}"]
    elif pvalue < t.ks_pvalue and stat >= t.ks_statistic:
        row.status = "warn"
        row.reasons = [f"KS D {stat:.3f} >= {t.ks_statistic} with p {pvalue:.2g} < {t.ks_pvalue} (PSI {value:.3f})"]
    else:
        row.status = "ok"


def _columns(frame: pd.DataFrame, names: list[str], kind: str, which: str) -> None:
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise FeatureError(
            f"{kind} feature column(s) {missing} missing from the {which} frame "
            f"(columns present: {list(frame.columns)}); fix the spec's features or the source query"
        )


def _numeric_column(frame: pd.DataFrame, name: str, which: str) -> np.ndarray:
    try:
        return _float_array(frame[name])
    except (TypeError, ValueError) as exc:
        raise FeatureError(
            f"numeric feature {name!r} of the {which} frame holds values that are not numbers "
            f"(dtype {frame[name].dtype}: {exc}); declare it categorical in the spec or fix the source"
        ) from exc


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numeric: list[str],
    categorical: list[str],
    thresholds: DriftThresholds | None = None,
    score_reference: Any = None,
    score_current: Any = None,
    bins: int = DEFAULT_BINS,
    ks_max_sample: int = DEFAULT_KS_MAX_SAMPLE,
    seed: int = 0,
) -> DriftReport:
    """Drift of ``current`` (the recent window) against ``reference`` (the training snapshot).

    One :class:`FeatureDrift` per feature: PSI and KS for ``numeric`` columns, JS distance and
    unseen categories for ``categorical`` ones; and, when both ``score_reference`` and
    ``score_current`` (the champion's predicted scores on each sample) are given, PSI and KS of
    the scores. Each row gets a status from ``thresholds`` (defaults: :class:`DriftThresholds`)
    and the report a verdict (see :class:`DriftReport`). ``bins``, ``ks_max_sample`` and ``seed``
    are passed to :func:`psi` and :func:`ks`.

    Raises FeatureError when a declared column is absent or a numeric column holds non-numbers,
    ValueError when a column is declared twice or only one of the two score samples is given.
    """
    t = thresholds if thresholds is not None else DriftThresholds()
    _check_bins(bins)
    declared = [*numeric, *categorical]
    twice = sorted({c for c in declared if declared.count(c) > 1})
    if twice:
        raise ValueError(f"feature(s) {twice} declared more than once across numeric and categorical")
    if (score_reference is None) != (score_current is None):
        raise ValueError("give both score_reference and score_current, or neither")
    for frame, which in ((reference, "reference"), (current, "current")):
        _columns(frame, numeric, "numeric", which)
        _columns(frame, categorical, "categorical", which)

    rows = [
        _numeric_row(
            name,
            "numeric",
            _numeric_column(reference, name, "reference"),
            _numeric_column(current, name, "current"),
            bins=bins,
            ks_max_sample=ks_max_sample,
            seed=seed,
        )
        for name in numeric
    ]
    rows.extend(_categorical_row(name, reference[name], current[name]) for name in categorical)
    score = None
    if score_reference is not None:
        score = _numeric_row(
            "score", "score", score_reference, score_current, bins=bins, ks_max_sample=ks_max_sample, seed=seed
        )

    n_ref, n_cur = len(reference), len(current)
    report = DriftReport(
        verdict="insufficient_data",
        n_ref=n_ref,
        n_cur=n_cur,
        features=rows,
        score=score,
        drifted_share=None,
        thresholds=t,
    )
    too_small = [(which, n) for which, n in (("current window", n_cur), ("reference", n_ref)) if n < t.min_sample]
    if score is not None and min(score.n_ref, score.n_cur) < t.min_sample:
        too_small.append(("score sample", min(score.n_ref, score.n_cur)))
    if too_small:
        report.reasons = [
            f"{which} has {n} rows < min_sample {t.min_sample}: no verdict drawn" for which, n in too_small
        ]
        _finish(report)
        return report

    judged_rows = [*rows, *([score] if score is not None else [])]
    for row in judged_rows:
        _judge(row, t)
    judged = [r for r in rows if r.status != "n/a"]
    acting = [r for r in judged if r.status == "act"]
    report.drifted_share = len(acting) / len(judged) if judged else 0.0
    share_acts = bool(acting) and report.drifted_share >= t.drifted_share_act
    reasons = [f"{_label(r)}: {reason}" for r in judged_rows for reason in r.reasons]
    if share_acts:
        reasons.insert(
            0,
            f"{len(acting)} of {len(judged)} features at 'act' "
            f"(share {report.drifted_share:.2f} >= {t.drifted_share_act})",
        )
    if share_acts or (score is not None and score.status == "act"):
        report.verdict = "drift"
    elif any(r.status in ("warn", "act") for r in judged_rows):
        report.verdict = "warn"
    else:
        report.verdict = "ok"
    report.reasons = reasons
    _finish(report)
    return report


def _label(row: FeatureDrift) -> str:
    return "score" if row.kind == "score" else f"{row.kind} {row.feature!r}"


def _finish(report: DriftReport) -> None:
    """Undefined figures (NaN) become None, so rows read the same in Python and in JSON."""
    for row in [*report.features, *([report.score] if report.score is not None else [])]:
        for f in fields(row):
            value = getattr(row, f.name)
            if isinstance(value, float):
                setattr(row, f.name, _finite(value))
