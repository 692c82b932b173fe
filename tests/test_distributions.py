"""analysis.distributions gives scipy.stats' numbers without importing scipy.stats."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps

from analysis import distributions as dist

DF = np.array([1.0, 1.5, 2.0, 2.7, 3.0, 4.0, 9.0, 29.0, 120.0, 1e4])
Q = np.array([0.001, 0.025, 0.5, 0.8, 0.95, 0.975, 0.995])


def test_t_f_and_chi2_match_scipy_stats_on_a_grid() -> None:
    d, q = np.meshgrid(DF, Q)
    np.testing.assert_allclose(dist.t_ppf(q, d), sps.t.ppf(q, d), rtol=1e-12)
    x = sps.t.ppf(q, d)
    np.testing.assert_allclose(dist.t_sf(x, d), sps.t.sf(x, d), rtol=1e-12)
    np.testing.assert_allclose(dist.chi2_ppf(q, d), sps.chi2.ppf(q, d), rtol=1e-10)
    d1, d2 = np.meshgrid([1.0, 2.0, 4.0, 11.0], DF)
    np.testing.assert_allclose(dist.f_ppf(0.95, d1, d2), sps.f.ppf(0.95, d1, d2), rtol=1e-10)
    np.testing.assert_allclose(dist.f_sf(3.2, d1, d2), sps.f.sf(3.2, d1, d2), rtol=1e-12)


def test_hand_computed_values() -> None:
    # t with 1 df is Cauchy: quantile q is tan(π (q − ½)); P(T > 1) = ¼
    assert float(dist.t_ppf(0.75, 1.0)) == pytest.approx(1.0, rel=1e-12)
    assert float(dist.t_sf(1.0, 1.0)) == pytest.approx(0.25, rel=1e-12)
    # χ² with 2 df is exponential with mean 2: quantile q is −2 ln(1 − q)
    assert float(dist.chi2_ppf(0.9, 2.0)) == pytest.approx(-2 * np.log(0.1), rel=1e-12)
    # F(2, 2): P(F > x) = 1 / (1 + x)
    assert float(dist.f_sf(3.0, 2.0, 2.0)) == pytest.approx(0.25, rel=1e-12)
    # noncentrality 0 is the central distribution
    assert float(dist.nct_sf(2.0, 5.0, 0.0)) == pytest.approx(float(sps.t.sf(2.0, 5.0)), rel=1e-12)
    assert float(dist.ncf_sf(3.0, 2.0, 2.0, 0.0)) == pytest.approx(0.25, rel=1e-10)


def test_noncentral_t_matches_scipy_stats_including_where_the_public_cdf_is_nan() -> None:
    d, lam = np.meshgrid(DF, np.linspace(-60, 60, 121))
    c = sps.t.ppf(0.975, d)
    np.testing.assert_allclose(dist.nct_sf(c, d, lam), sps.nct.sf(c, d, lam), rtol=1e-12, atol=1e-15)
    # scipy.special.nctdtr is NaN here (far upper tail), the survival function is 1
    assert float(dist.nct_sf(1.96, 1000.0, 40.0)) == 1.0
    # the fallback for a SciPy without Boost's survival functions in scipy.special gives the same numbers
    np.testing.assert_allclose(dist._stats_nct_sf(c, d, lam), dist.nct_sf(c, d, lam), rtol=1e-12, atol=1e-15)


def test_noncentral_f_matches_scipy_stats_and_is_the_central_f_at_zero_noncentrality() -> None:
    d1, d2 = np.meshgrid([1.0, 2.0, 5.0], [2.0, 10.0, 100.0])
    crit = sps.f.ppf(0.95, d1, d2)
    for lam in (1e-9, 0.5, 4.0, 20.0, 160.0, 1280.0, 1e5):
        np.testing.assert_allclose(dist.ncf_sf(crit, d1, d2, lam), sps.ncf.sf(crit, d1, d2, lam), rtol=1e-12,
                                   atol=1e-15)
        np.testing.assert_allclose(dist._stats_ncf_sf(crit, d1, d2, lam), dist.ncf_sf(crit, d1, d2, lam),
                                   rtol=1e-12, atol=1e-15)
    # at λ = 0 the test's size: α exactly (scipy.stats.ncf.sf returns −0.95 there)
    np.testing.assert_allclose(dist.ncf_sf(crit, d1, d2, 0.0), 0.05, rtol=1e-10)


def test_invalid_parameters_give_nan() -> None:
    assert np.isnan(dist.t_ppf(0.9, 0.0)) and np.isnan(dist.t_ppf(0.9, np.nan))
    assert np.isnan(dist.t_sf(np.nan, 3.0)) and np.isnan(dist.f_sf(3.0, 0.0, 10.0))
    assert np.isnan(dist.nct_sf(2.0, np.nan, 1.0)) and np.isnan(dist.nct_sf(2.0, -1.0, 1.0))
    assert np.isnan(dist.ncf_sf(2.0, 0.0, 5.0, 1.0)) and np.isnan(dist.ncf_sf(2.0, 2.0, 5.0, -1.0))


@given(x=st.floats(-50, 50), df=st.floats(1.0, 1e4), nc=st.floats(-30, 30))
def test_noncentral_t_never_crashes_and_is_scipy_stats_probability(x: float, df: float, nc: float) -> None:
    p, expected = float(dist.nct_sf(x, df, nc)), float(sps.nct.sf(x, df, nc))
    if np.isnan(expected):   # Boost's series does not converge there either (x ≈ 0, df = 1, λ = 25): the same NaN
        assert np.isnan(p)
        return
    assert 0.0 <= p <= 1.0
    assert p == pytest.approx(expected, rel=1e-6, abs=1e-12)


@given(q=st.floats(0.001, 0.999), df=st.floats(1.0, 1e4))
def test_t_quantile_and_tail_invert_each_other(q: float, df: float) -> None:
    assert float(dist.t_sf(dist.t_ppf(q, df), df)) == pytest.approx(1 - q, rel=1e-9, abs=1e-12)


def test_the_sweeps_verdict_path_leaves_scipy_stats_unimported() -> None:
    """What every ``python -m sweep`` imports to score its cells and print the verdict (~1.2 s less per process)."""
    code = ("import sys, analysis.brief, analysis.tables, analysis.load, analysis.stats, analysis.power, analysis.gate; "
            "print('scipy.stats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
