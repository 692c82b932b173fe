"""The tail and quantile functions of the t, F, χ², noncentral t and noncentral F distributions.

Why not ``scipy.stats``: importing it builds ~100 distribution objects, ~1.2 s of
CPU in every process that touches a statistic.  Every ``python -m sweep`` pays it
(each job scores its cell, the multirun ends with the baseline-vs-chimera verdict),
and the test suite starts a few hundred of them.  ``scipy.special`` holds the same
functions (``scipy.stats.t.ppf`` *is* ``special.stdtrit`` behind argument checks)
and imports in a fraction of that time.

The noncentral t and F survival functions (the power of a t-test, of an ANOVA)
are Boost's, the ones ``scipy.stats.nct.sf``/``ncf.sf`` call.  SciPy exposes them
in ``scipy.special._ufuncs`` only: its public CDFs (``nctdtr``, ``ncfdtr``) are NaN
in large stretches of the upper tail that the power bisection visits (a sweep
with 4 comparisons hit it), and the complement of a CDF near 1 loses the tail.
If a SciPy release moves them, these functions fall back to ``scipy.stats`` (the
same numbers, the import paid then).  ``tests/test_distributions.py`` pins every
function to ``scipy.stats`` and to hand-computed values.  Invalid parameters give
NaN, as in ``scipy.stats``.
"""

from __future__ import annotations

import numpy as np
from scipy import special

ArrayLike = np.ndarray | float


def t_ppf(q: ArrayLike, df: ArrayLike) -> np.ndarray:
    """Quantile ``q`` of Student's t with ``df`` degrees of freedom."""
    return special.stdtrit(df, q)


def t_sf(x: ArrayLike, df: ArrayLike) -> np.ndarray:
    """P(T > x) for Student's t with ``df`` degrees of freedom."""
    return special.stdtr(df, np.negative(x))


def f_sf(x: ArrayLike, df1: ArrayLike, df2: ArrayLike) -> np.ndarray:
    """P(F > x) for Fisher's F with (``df1``, ``df2``) degrees of freedom."""
    return special.fdtrc(df1, df2, x)


def f_ppf(q: ArrayLike, df1: ArrayLike, df2: ArrayLike) -> np.ndarray:
    """Quantile ``q`` of Fisher's F with (``df1``, ``df2``) degrees of freedom."""
    return special.fdtri(df1, df2, q)


def chi2_ppf(q: ArrayLike, df: ArrayLike) -> np.ndarray:
    """Quantile ``q`` of χ² with ``df`` degrees of freedom."""
    return special.chdtri(df, np.subtract(1.0, q))


def nct_sf(x: ArrayLike, df: ArrayLike, nc: ArrayLike) -> np.ndarray:
    """P(T′ > x) for the noncentral t with ``df`` degrees of freedom and noncentrality ``nc``."""
    with np.errstate(over="ignore"):
        return np.clip(_boost_nct_sf(x, df, nc), 0.0, 1.0)


def ncf_sf(x: ArrayLike, df1: ArrayLike, df2: ArrayLike, nc: ArrayLike) -> np.ndarray:
    """P(F′ > x) for the noncentral F with (``df1``, ``df2``) degrees of freedom and noncentrality ``nc``.

    At ``nc = 0`` the central F: Boost's survival function returns minus the CDF there
    (−0.95 at the 5 % critical value; so does ``scipy.stats.ncf.sf`` in SciPy 1.17).
    """
    x, df1, df2, nc = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (x, df1, df2, nc)))
    with np.errstate(over="ignore"):
        return np.where(nc == 0, special.fdtrc(df1, df2, x), np.clip(_boost_ncf_sf(x, df1, df2, nc), 0.0, 1.0))


def _stats_nct_sf(x: ArrayLike, df: ArrayLike, nc: ArrayLike) -> np.ndarray:
    from scipy import stats as sps

    return sps.nct.sf(x, df, nc)


def _stats_ncf_sf(x: ArrayLike, df1: ArrayLike, df2: ArrayLike, nc: ArrayLike) -> np.ndarray:
    from scipy import stats as sps

    return sps.ncf.sf(x, df1, df2, nc)


try:   # Boost's survival functions, as scipy.stats calls them (the module docstring says why)
    from scipy.special._ufuncs import _ncf_sf as _boost_ncf_sf
    from scipy.special._ufuncs import _nct_sf as _boost_nct_sf
except ImportError:   # pragma: no cover - a SciPy that moved them: scipy.stats' public ones
    _boost_nct_sf, _boost_ncf_sf = _stats_nct_sf, _stats_ncf_sf
