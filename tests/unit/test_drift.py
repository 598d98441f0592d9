"""Tests of mlpipe.stages.drift: PSI, JS distance and KS on known distributions, the report's verdicts, cost."""

from __future__ import annotations

import json
import math
import time
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from mlpipe.errors import FeatureError
from mlpipe.stages.drift import (
    DriftThresholds,
    drift_report,
    js_distance,
    ks,
    psi,
    reference_edges,
)

NUMERIC = ["n0", "n1", "n2", "n3"]
CATEGORICAL = ["c0", "c1", "c2"]
CATEGORIES = np.array([f"cat{i:02d}" for i in range(12)])
MIX = np.linspace(1, 3, CATEGORIES.size) / np.linspace(1, 3, CATEGORIES.size).sum()


def make_frame(
    n: int, seed: int, *, shift: dict[str, float] | None = None, mix: np.ndarray | None = None
) -> pd.DataFrame:
    """4 standard-normal numeric columns (optionally mean-shifted, in sd) and 3 categorical ones drawn from MIX."""
    rng = np.random.default_rng(seed)
    shift = shift or {}
    data: dict[str, Any] = {c: rng.normal(shift.get(c, 0.0), 1.0, n) for c in NUMERIC}
    for c in CATEGORICAL:
        data[c] = CATEGORIES[rng.choice(CATEGORIES.size, size=n, p=MIX if mix is None else mix)]
    return pd.DataFrame(data)


def report_of(reference: pd.DataFrame, current: pd.DataFrame, **kwargs: Any):
    return drift_report(reference, current, numeric=NUMERIC, categorical=CATEGORICAL, **kwargs)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return make_frame(20_000, seed=1)


SAMPLERS = {
    "normal": lambda rng, n: rng.normal(3.0, 2.0, n),
    "lognormal": lambda rng, n: rng.lognormal(0.0, 1.0, n),
    "poisson": lambda rng, n: rng.poisson(2.0, n).astype(float),  # discrete: tied quantile edges
    "mostly_zero": lambda rng, n: np.where(rng.random(n) < 0.9, 0.0, rng.exponential(1.0, n)),
}


class TestPsi:
    @pytest.mark.parametrize("kind", list(SAMPLERS))
    def test_same_generator_other_seed_is_near_zero(self, kind: str) -> None:
        draw = SAMPLERS[kind]
        value = psi(draw(np.random.default_rng(1), 20_000), draw(np.random.default_rng(2), 20_000))
        assert 0 <= value < 0.02

    def test_half_sd_mean_shift_exceeds_act_threshold(self) -> None:
        rng = np.random.default_rng(3)
        value = psi(rng.normal(0, 1, 50_000), rng.normal(0.5, 1, 50_000))
        # Asymptotically 0.238 with 10 decile bins.
        assert 0.2 < value < 0.28

    def test_grows_with_the_shift(self) -> None:
        rng = np.random.default_rng(4)
        ref = rng.normal(0, 1, 20_000)
        values = [psi(ref, rng.normal(d, 1, 20_000)) for d in (0.0, 0.25, 0.5, 1.0)]
        assert values == sorted(values)

    def test_matches_hand_computed_formula(self) -> None:
        ref = np.arange(10.0)  # edges at the deciles: each value alone in its bin
        cur = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 9.0, 9.0, 9.0, 9.0, 9.0])
        r = np.full(10, 0.1)
        c = np.array([0.5, *[1e-4] * 8, 0.5])
        assert psi(ref, cur, bins=10) == pytest.approx(float(np.sum((c - r) * np.log(c / r))))

    def test_values_beyond_the_reference_range_land_in_the_end_bins(self) -> None:
        ref = np.random.default_rng(5).normal(0, 1, 10_000)
        above, below = psi(ref, np.full(1000, 1e6)), psi(ref, np.full(1000, -1e6))
        # All of current in one end bin holding 10% of the reference; the 9 others empty (eps).
        expected = 0.9 * math.log(10) + 9 * (1e-4 - 0.1) * math.log(1e-4 / 0.1)
        assert above == pytest.approx(expected, rel=1e-3)
        assert below == pytest.approx(expected, rel=1e-3)

    def test_missing_rate_drift_counts(self) -> None:
        rng = np.random.default_rng(6)
        ref = rng.normal(0, 1, 20_000)
        cur = rng.normal(0, 1, 20_000)
        cur[:6_000] = np.nan
        assert psi(ref, cur) > 0.2
        ref_missing = ref.copy()
        ref_missing[:6_000] = np.nan
        assert psi(ref_missing, cur) < 0.02  # same missing rate on both sides

    def test_all_missing_current_is_finite_and_large(self) -> None:
        value = psi(np.random.default_rng(7).normal(size=1000), np.full(1000, np.nan))
        assert math.isfinite(value) and value > 1

    def test_accepts_none_and_pandas_nullable(self) -> None:
        ref = pd.Series([1, 2, 3, None, 5, 6, 7, 8], dtype="Int64")
        assert psi(ref, [1, 2, 3, None, 5, 6, 7, 8]) == pytest.approx(0.0)

    def test_constant_reference_has_one_edge_and_no_division_error(self) -> None:
        ref = np.full(1000, 7.0)
        assert reference_edges(ref).tolist() == [7.0]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert psi(ref, np.full(500, 7.0)) == pytest.approx(0.0)
            shifted = psi(ref, np.random.default_rng(8).normal(7.0, 1.0, 500))
        assert math.isfinite(shifted) and shifted > 0.2  # half of current fell below the constant

    def test_tied_edges_are_deduplicated(self) -> None:
        edges = reference_edges(np.random.default_rng(9).poisson(1.0, 10_000), bins=10)
        assert np.all(np.diff(edges) > 0) and edges.size < 9

    def test_all_missing_reference_compares_missing_rates_only(self) -> None:
        assert reference_edges([np.nan, np.nan]).size == 0
        assert psi([np.nan] * 10, [np.nan] * 10) == pytest.approx(0.0)
        assert psi([np.nan] * 10, [1.0] * 10) > 1

    def test_empty_sample_gives_nan(self) -> None:
        assert math.isnan(psi([], [1.0, 2.0]))
        assert math.isnan(psi([1.0, 2.0], []))

    @pytest.mark.parametrize("kwargs", [{"bins": 1}, {"eps": 0.0}])
    def test_rejects_bad_parameters(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ValueError):
            psi([1.0, 2.0], [1.0, 2.0], **kwargs)


class TestJsDistance:
    def test_same_mix_other_seed_is_near_zero(self) -> None:
        a, b = make_frame(50_000, seed=1), make_frame(50_000, seed=2)
        result = js_distance(a["c0"], b["c0"])
        assert 0 <= result.distance < 0.02
        assert result.unseen == 0 and result.unseen_share == 0.0

    def test_identical_is_exactly_zero_and_disjoint_is_one(self) -> None:
        assert js_distance(["a", "b", "b"], ["b", "a", "b"]).distance == 0.0
        assert js_distance(["a", "b"], ["c", "d"]).distance == pytest.approx(1.0)

    def test_category_mix_change_exceeds_threshold(self) -> None:
        flipped = MIX[::-1].copy()
        a, b = make_frame(20_000, seed=1), make_frame(20_000, seed=2, mix=flipped)
        assert js_distance(a["c1"], b["c1"]).distance > 0.1

    def test_matches_scipy_base_2(self) -> None:
        ref = ["a"] * 5 + ["b"] * 3 + ["c"] * 2
        cur = ["a"] * 2 + ["b"] * 2 + ["d"] * 6
        expected = jensenshannon([0.5, 0.3, 0.2, 0.0], [0.2, 0.2, 0.0, 0.6], base=2)
        assert js_distance(ref, cur).distance == pytest.approx(expected)

    def test_unseen_categories_are_counted_with_their_share(self) -> None:
        ref = pd.Series(["a", "b"] * 50)
        cur = pd.Series(["a"] * 60 + ["new1"] * 30 + ["new2"] * 10)
        result = js_distance(ref, cur)
        assert result.unseen == 2
        assert result.unseen_share == pytest.approx(0.4)
        assert result.unseen_examples == ("new1", "new2")
        assert 0 < result.distance <= 1

    def test_missing_is_its_own_category_not_an_unseen_one(self) -> None:
        ref = pd.Series(["a", "b"] * 50, dtype="object")
        cur = pd.Series(["a", "b"] * 25 + [None] * 25 + [np.nan] * 25, dtype="object")
        result = js_distance(ref, cur)
        expected = jensenshannon([0.5, 0.5, 0.0], [0.25, 0.25, 0.5], base=2)
        assert result.distance == pytest.approx(expected)
        assert result.unseen == 0

    def test_all_missing_current(self) -> None:
        result = js_distance(pd.Series(["a", "b"] * 10), pd.Series([None] * 10, dtype="object"))
        assert result.distance == pytest.approx(1.0)
        assert result.unseen == 0

    def test_pandas_categorical_ignores_unobserved_categories(self) -> None:
        dtype = pd.CategoricalDtype(["a", "b", "zzz"])
        ref = pd.Series(["a", "b"] * 10, dtype=dtype)
        cur = pd.Series(["b", "a"] * 10, dtype=dtype)
        result = js_distance(ref, cur)
        assert result.distance == 0.0 and result.unseen == 0

    def test_empty_current_gives_nan(self) -> None:
        assert math.isnan(js_distance(["a"], pd.Series([], dtype="object")).distance)


class TestKs:
    def test_reproducible_with_a_seed(self) -> None:
        rng = np.random.default_rng(10)
        ref, cur = rng.normal(0, 1, 200_000), rng.normal(0.02, 1, 200_000)
        first = ks(ref, cur, max_sample=5_000, seed=42)
        assert ks(ref, cur, max_sample=5_000, seed=42) == first
        assert ks(ref, cur, max_sample=5_000, seed=43) != first

    def test_small_samples_are_used_whole(self) -> None:
        rng = np.random.default_rng(11)
        ref, cur = rng.normal(0, 1, 300), rng.normal(0.3, 1, 400)
        expected = stats.ks_2samp(ref, cur)
        assert ks(ref, cur) == (pytest.approx(expected.statistic), pytest.approx(expected.pvalue))

    def test_detects_a_shift_not_a_copy(self) -> None:
        rng = np.random.default_rng(12)
        ref = rng.normal(0, 1, 50_000)
        assert ks(ref, rng.normal(0, 1, 50_000))[1] > 0.001
        stat, pvalue = ks(ref, rng.normal(0.5, 1, 50_000))
        assert pvalue < 1e-10 and stat > 0.15

    def test_missing_values_are_left_out(self) -> None:
        assert ks([1.0, 2.0, np.nan, 3.0], [1.0, 2.0, 3.0]) == (0.0, 1.0)
        assert all(math.isnan(x) for x in ks([1.0, 2.0], [np.nan, np.nan]))


class TestThresholds:
    def test_documented_defaults(self) -> None:
        t = DriftThresholds()
        assert (t.psi_warn, t.psi_act, t.js_act, t.js_warn) == (0.1, 0.2, 0.1, None)
        assert (t.ks_pvalue, t.ks_statistic, t.drifted_share_act, t.min_sample) == (0.01, 0.1, 0.3, 500)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"psi_warn": 0.3, "psi_act": 0.2},
            {"js_act": 1.5},
            {"js_warn": 0.2},
            {"ks_pvalue": 0.0},
            {"drifted_share_act": 0.0},
            {"min_sample": 0},
        ],
    )
    def test_rejects_inconsistent_values(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ValueError, match="invalid drift thresholds"):
            DriftThresholds(**kwargs)


class TestDriftReport:
    def test_same_distribution_is_ok(self, reference: pd.DataFrame) -> None:
        report = report_of(reference, make_frame(20_000, seed=2))
        assert report.verdict == "ok", report.reasons
        assert report.drifted_share == 0.0
        for row in report.features:
            assert row.status == "ok"
            assert (row.psi if row.kind == "numeric" else row.js) < 0.02
        assert [r.kind for r in report.features] == ["numeric"] * 4 + ["categorical"] * 3

    def test_one_shifted_feature_acts_but_only_warns_overall(self, reference: pd.DataFrame) -> None:
        report = report_of(reference, make_frame(20_000, seed=2, shift={"n1": 0.5}))
        row = report.feature("n1")
        assert row.psi > 0.2 and row.status == "act"
        assert row.ks_pvalue < 0.01
        assert report.drifted_share == pytest.approx(1 / 7)
        assert report.verdict == "warn"
        assert any("'n1'" in r for r in report.reasons)

    def test_enough_acting_features_mean_drift(self, reference: pd.DataFrame) -> None:
        current = make_frame(5_000, seed=2, shift={"n0": 0.6, "n1": 0.6}, mix=MIX[::-1].copy())
        report = report_of(reference, current)
        assert {r.feature for r in report.features if r.status == "act"} == {"n0", "n1", *CATEGORICAL}
        assert report.drifted_share == pytest.approx(5 / 7)
        assert report.verdict == "drift"
        assert report.reasons[0].startswith("5 of 7 features at 'act'")

    def test_category_mix_change_acts(self, reference: pd.DataFrame) -> None:
        report = report_of(reference, make_frame(5_000, seed=2, mix=MIX[::-1].copy()))
        for c in CATEGORICAL:
            assert report.feature(c).js > 0.1 and report.feature(c).status == "act"

    def test_score_drift_alone_means_drift(self, reference: pd.DataFrame) -> None:
        rng = np.random.default_rng(13)
        report = report_of(
            reference,
            make_frame(5_000, seed=2),
            score_reference=rng.beta(2, 5, 20_000),
            score_current=rng.beta(5, 2, 5_000),
        )
        assert report.score is not None and report.score.kind == "score"
        assert report.score.psi > 0.2 and report.score.status == "act"
        assert report.drifted_share == 0.0
        assert report.verdict == "drift"

    def test_ks_alone_can_only_warn(self, reference: pd.DataFrame) -> None:
        lenient = DriftThresholds(psi_warn=5.0, psi_act=10.0)
        report = report_of(reference, make_frame(5_000, seed=2, shift={"n2": 0.5}), thresholds=lenient)
        row = report.feature("n2")
        assert row.status == "warn" and row.ks_statistic >= 0.1
        assert report.verdict == "warn"
        assert "KS D" in report.reasons[0]

    def test_window_below_min_sample_draws_no_verdict(self, reference: pd.DataFrame) -> None:
        current = make_frame(499, seed=2, shift={c: 2.0 for c in NUMERIC}, mix=MIX[::-1].copy())
        report = report_of(reference, current)
        assert report.verdict == "insufficient_data"
        assert report.drifted_share is None
        assert all(r.status == "n/a" for r in report.features)
        assert report.feature("n0").psi > 1  # figures are still computed
        assert "current window has 499 rows < min_sample 500" in report.reasons[0]
        assert report_of(reference, current, thresholds=DriftThresholds(min_sample=499)).verdict == "drift"

    def test_small_reference_draws_no_verdict(self) -> None:
        report = report_of(make_frame(100, seed=1), make_frame(5_000, seed=2))
        assert report.verdict == "insufficient_data"
        assert "reference has 100 rows" in report.reasons[0]

    def test_unseen_categories_and_missing_values_do_not_crash(self, reference: pd.DataFrame) -> None:
        current = make_frame(2_000, seed=2)
        current.loc[:299, "c0"] = "brand_new"
        current.loc[300:399, "c0"] = None
        current["n3"] = np.nan
        report = report_of(reference, current)
        c0, n3 = report.feature("c0"), report.feature("n3")
        assert c0.unseen == 1 and c0.unseen_share == pytest.approx(0.15)
        assert c0.unseen_examples == ["brand_new"]
        assert c0.missing_cur == pytest.approx(0.05)
        assert n3.status == "act" and n3.missing_cur == 1.0
        assert n3.ks_statistic is None and n3.ks_pvalue is None

    def test_constant_reference_column(self) -> None:
        reference = make_frame(2_000, seed=1).assign(n0=3.0)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            report = report_of(reference, make_frame(2_000, seed=2).assign(n0=3.0))
        assert report.feature("n0").psi == pytest.approx(0.0)
        assert report.verdict == "ok"

    def test_as_dict_is_json_safe(self, reference: pd.DataFrame) -> None:
        current = make_frame(1_000, seed=2).assign(n3=np.nan)
        report = report_of(reference, current, score_reference=np.arange(600.0), score_current=np.arange(600.0))
        data = report.as_dict()
        text = json.dumps(data, allow_nan=False)  # raises on NaN/inf and on numpy scalars
        assert json.loads(text) == data
        assert data["verdict"] == report.verdict
        assert data["thresholds"]["psi_act"] == 0.2
        assert data["features"][3]["ks_pvalue"] is None
        assert data["score"]["psi"] == pytest.approx(0.0)

    def test_declared_column_missing_names_it(self, reference: pd.DataFrame) -> None:
        with pytest.raises(FeatureError, match=r"\['n2'\] missing from the current frame"):
            report_of(reference, make_frame(600, seed=2).drop(columns=["n2"]))

    def test_non_numeric_numeric_column_names_it(self, reference: pd.DataFrame) -> None:
        current = make_frame(600, seed=2).assign(n1="x")
        with pytest.raises(FeatureError, match="numeric feature 'n1' of the current frame"):
            report_of(reference, current)

    def test_bad_declarations(self, reference: pd.DataFrame) -> None:
        with pytest.raises(ValueError, match="declared more than once"):
            drift_report(reference, reference, numeric=["n0"], categorical=["n0"])
        with pytest.raises(ValueError, match="score_reference and score_current"):
            report_of(reference, reference, score_reference=np.zeros(10))


class TestCost:
    """PSI counts with searchsorted and KS subsamples, so a million rows stay cheap."""

    def test_million_rows_report_is_fast(self) -> None:
        n = 1_000_000
        reference = make_frame(n, seed=1)
        current = make_frame(n, seed=2, shift={"n0": 0.5})
        scores = np.random.default_rng(14).random((2, n))
        start = time.perf_counter()
        report = report_of(reference, current, score_reference=scores[0], score_current=scores[1])
        elapsed = time.perf_counter() - start
        assert report.feature("n0").status == "act"
        assert elapsed < 15, f"drift_report on 1M rows x 7 features took {elapsed:.1f}s"

    def test_ks_cost_is_bounded_by_the_sample(self) -> None:
        rng = np.random.default_rng(15)
        big_ref, big_cur = rng.normal(0, 1, 1_000_000), rng.normal(0, 1, 1_000_000)
        small_ref, small_cur = big_ref[:20_000].copy(), big_cur[:20_000].copy()

        def best_of(ref: np.ndarray, cur: np.ndarray) -> float:
            times = []
            for _ in range(5):
                start = time.perf_counter()
                ks(ref, cur, max_sample=20_000)
                times.append(time.perf_counter() - start)
            return min(times)

        small, big = best_of(small_ref, small_cur), best_of(big_ref, big_cur)
        # A full KS on 1M rows sorts 50x more data; the sample keeps it near the 20k cost.
        assert big < 3 * small + 0.01, f"ks on 1M rows {big * 1e3:.1f} ms vs 20k rows {small * 1e3:.1f} ms"
