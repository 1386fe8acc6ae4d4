"""Covariance structures of the MMRM's visit-by-visit residual covariance.

Each structure maps a vector of *natural* parameters (SAS PROC MIXED's own covariance parameters:
the elements of an unstructured matrix, variances and correlations, ...) to the visit covariance
matrix, and supplies the first and second derivatives of that matrix with respect to the parameters,
which the likelihood, its Hessian and the Kenward-Roger adjustment need.

Derivatives of non-linear structures are computed by complex-step differentiation (exact to rounding
for the analytic maps used here); second derivatives by central differences of those. Linear
structures (unstructured, Toeplitz, compound symmetry) have constant first and zero second
derivatives.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from studyman.errors import AnalysisError

__all__ = ["STRUCTURE_ALIASES", "CovarianceStructure", "get_structure"]

FloatArray = npt.NDArray[np.float64]
ComplexArray = npt.NDArray[np.complex128]

_COMPLEX_STEP = 1e-30


@dataclass(frozen=True)
class CovarianceStructure:
    """A parametrised family of ``m x m`` visit covariance matrices.

    Attributes
    ----------
    name
        Canonical name (``unstructured``, ``ar1``, ...).
    sas_type
        The matching ``TYPE=`` of SAS PROC MIXED's ``REPEATED`` statement.
    linear
        Whether the matrix is a linear function of the parameters (second derivatives vanish).
    """

    name: str
    sas_type: str
    linear: bool
    _n_params: Callable[[int], int]
    _names: Callable[[int], list[str]]
    _sigma: Callable[[ComplexArray, int], ComplexArray]
    _start: Callable[[FloatArray], FloatArray]

    def n_params(self, m: int) -> int:
        """Number of covariance parameters for ``m`` visits."""
        return self._n_params(m)

    def parameter_names(self, m: int) -> list[str]:
        """SAS-style names of the parameters (``UN(2,1)``, ``AR(1)``, ``Var(3)``, ...)."""
        return self._names(m)

    def sigma(self, phi: FloatArray, m: int) -> FloatArray:
        """The ``m x m`` covariance matrix at parameters ``phi``."""
        return np.real(self._sigma(phi.astype(np.complex128), m))

    def start(self, sample_covariance: FloatArray) -> FloatArray:
        """Starting parameters fitted by moments to a positive definite sample covariance."""
        return self._start(sample_covariance)

    def is_valid(self, phi: FloatArray, m: int) -> bool:
        """Whether ``phi`` gives a positive definite covariance matrix (and valid variances)."""
        if not np.all(np.isfinite(phi)):
            return False
        if self.name in _VARIANCE_FIRST and np.any(phi[: _n_variances(self.name, m)] <= 0):
            return False
        if self.name == "ar1" and phi[0] <= 0:
            return False
        sigma = self.sigma(phi, m)
        if not np.all(np.isfinite(sigma)):
            return False
        try:
            np.linalg.cholesky(sigma)
        except np.linalg.LinAlgError:
            return False
        return True

    def derivatives(self, phi: FloatArray, m: int) -> FloatArray:
        """First derivatives ``d Sigma / d phi_r``, shape ``(q, m, m)``."""
        q = phi.size
        out = np.empty((q, m, m))
        for r in range(q):
            shifted = phi.astype(np.complex128)
            shifted[r] += 1j * _COMPLEX_STEP
            out[r] = np.imag(self._sigma(shifted, m)) / _COMPLEX_STEP
        return out

    def second_derivatives(self, phi: FloatArray, m: int) -> FloatArray | None:
        """Second derivatives, shape ``(q, q, m, m)``; ``None`` for linear structures."""
        if self.linear:
            return None
        q = phi.size
        out = np.empty((q, q, m, m))
        for s in range(q):
            step = 1e-5 * max(abs(float(phi[s])), 1e-2)
            up = phi.copy()
            up[s] += step
            down = phi.copy()
            down[s] -= step
            out[:, s] = (self.derivatives(up, m) - self.derivatives(down, m)) / (2 * step)
        return 0.5 * (out + out.transpose(1, 0, 2, 3))


_VARIANCE_FIRST = {
    "heterogeneous-toeplitz",
    "heterogeneous-ar1",
    "heterogeneous-compound-symmetry",
    "ante-dependence",
}


def _n_variances(name: str, m: int) -> int:
    return m if name in _VARIANCE_FIRST else 0


def _lags(m: int) -> npt.NDArray[np.int64]:
    index = np.arange(m)
    return np.asarray(np.abs(index[:, None] - index[None, :]), dtype=np.int64)


def _clip_correlation(value: float) -> float:
    return float(np.clip(value, -0.9, 0.95))


def _correlation(sample: FloatArray) -> FloatArray:
    sd = np.sqrt(np.diag(sample))
    return np.asarray(sample / np.outer(sd, sd), dtype=np.float64)


def _mean_lag_correlation(sample: FloatArray, lag: int) -> float:
    return float(np.mean(np.diag(_correlation(sample), lag)))


# --- unstructured --------------------------------------------------------------------------------


def _un_index(m: int) -> list[tuple[int, int]]:
    # SAS order: UN(1,1), UN(2,1), UN(2,2), UN(3,1), ...
    return [(i, j) for i in range(m) for j in range(i + 1)]


@functools.lru_cache(maxsize=64)
def _tril(m: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    rows, cols = np.tril_indices(m)
    return rows, cols


def _un_sigma(phi: ComplexArray, m: int) -> ComplexArray:
    sigma = np.zeros((m, m), dtype=np.complex128)
    rows, cols = _tril(m)
    sigma[rows, cols] = phi
    sigma[cols, rows] = phi
    return sigma


def _un_start(sample: FloatArray) -> FloatArray:
    return np.asarray(sample[np.tril_indices(sample.shape[0])], dtype=np.float64)


# --- Toeplitz ----------------------------------------------------------------------------------


def _toep_sigma(phi: ComplexArray, m: int) -> ComplexArray:
    return np.asarray(phi[_lags(m)], dtype=np.complex128)


def _toep_start(sample: FloatArray) -> FloatArray:
    m = sample.shape[0]
    return np.array([float(np.mean(np.diag(sample, lag))) for lag in range(m)])


def _toeph_sigma(phi: ComplexArray, m: int) -> ComplexArray:
    sd = np.sqrt(phi[:m])
    corr = np.concatenate([np.ones(1, dtype=np.complex128), phi[m:]])
    return np.asarray(np.outer(sd, sd) * corr[_lags(m)], dtype=np.complex128)


def _toeph_start(sample: FloatArray) -> FloatArray:
    m = sample.shape[0]
    corr = [_clip_correlation(_mean_lag_correlation(sample, lag)) * 0.9 for lag in range(1, m)]
    return np.concatenate([np.diag(sample), np.array(corr)])


# --- AR(1) -------------------------------------------------------------------------------------


def _ar1_sigma(phi: ComplexArray, m: int) -> ComplexArray:
    return np.asarray(phi[0] * phi[1] ** _lags(m), dtype=np.complex128)


def _ar1_start(sample: FloatArray) -> FloatArray:
    rho = _clip_correlation(_mean_lag_correlation(sample, 1)) if sample.shape[0] > 1 else 0.0
    return np.array([float(np.mean(np.diag(sample))), rho])


def _arh1_sigma(phi: ComplexArray, m: int) -> ComplexArray:
    sd = np.sqrt(phi[:m])
    return np.asarray(np.outer(sd, sd) * phi[m] ** _lags(m), dtype=np.complex128)


def _arh1_start(sample: FloatArray) -> FloatArray:
    rho = _clip_correlation(_mean_lag_correlation(sample, 1)) if sample.shape[0] > 1 else 0.0
    return np.concatenate([np.diag(sample), [rho]])


# --- compound symmetry -------------------------------------------------------------------------


def _cs_sigma(phi: ComplexArray, m: int) -> ComplexArray:
    # SAS TYPE=CS: parameters CS (the common covariance) and Residual (the extra variance)
    return np.asarray(phi[0] * np.ones((m, m)) + phi[1] * np.eye(m), dtype=np.complex128)


def _cs_start(sample: FloatArray) -> FloatArray:
    m = sample.shape[0]
    variance = float(np.mean(np.diag(sample)))
    covariance = float(np.mean(sample[np.triu_indices(m, 1)])) if m > 1 else 0.0
    covariance = float(np.clip(covariance, -0.5 * variance / max(m - 1, 1), 0.9 * variance))
    return np.array([covariance, variance - covariance])


def _csh_sigma(phi: ComplexArray, m: int) -> ComplexArray:
    sd = np.sqrt(phi[:m])
    corr = phi[m] * np.ones((m, m), dtype=np.complex128)
    np.fill_diagonal(corr, 1.0)
    return np.asarray(np.outer(sd, sd) * corr, dtype=np.complex128)


def _csh_start(sample: FloatArray) -> FloatArray:
    m = sample.shape[0]
    corr = _correlation(sample)
    rho = float(np.mean(corr[np.triu_indices(m, 1)])) if m > 1 else 0.0
    rho = float(np.clip(rho, -0.5 / max(m - 1, 1), 0.9))
    return np.concatenate([np.diag(sample), [rho]])


# --- ante-dependence of order 1 ----------------------------------------------------------------


def _ante_sigma(phi: ComplexArray, m: int) -> ComplexArray:
    sd = np.sqrt(phi[:m])
    rho = phi[m:]
    corr = np.ones((m, m), dtype=np.complex128)
    for i in range(m):
        for j in range(i + 1, m):
            corr[i, j] = corr[j, i] = np.prod(rho[i:j])
    return np.asarray(np.outer(sd, sd) * corr, dtype=np.complex128)


def _ante_start(sample: FloatArray) -> FloatArray:
    corr = _correlation(sample)
    m = sample.shape[0]
    rho = [_clip_correlation(float(corr[i, i + 1])) for i in range(m - 1)]
    return np.concatenate([np.diag(sample), np.array(rho)])


def _var_names(m: int) -> list[str]:
    return [f"Var({i + 1})" for i in range(m)]


_STRUCTURES: dict[str, CovarianceStructure] = {
    s.name: s
    for s in (
        CovarianceStructure(
            "unstructured",
            "UN",
            True,
            lambda m: m * (m + 1) // 2,
            lambda m: [f"UN({i + 1},{j + 1})" for i, j in _un_index(m)],
            _un_sigma,
            _un_start,
        ),
        CovarianceStructure(
            "toeplitz",
            "TOEP",
            True,
            lambda m: m,
            lambda m: [f"TOEP({lag + 1})" for lag in range(m)],
            _toep_sigma,
            _toep_start,
        ),
        CovarianceStructure(
            "heterogeneous-toeplitz",
            "TOEPH",
            False,
            lambda m: 2 * m - 1,
            lambda m: _var_names(m) + [f"TOEPH({lag})" for lag in range(1, m)],
            _toeph_sigma,
            _toeph_start,
        ),
        CovarianceStructure(
            "ar1",
            "AR(1)",
            False,
            lambda m: 2,
            lambda m: ["Var", "AR(1)"],
            _ar1_sigma,
            _ar1_start,
        ),
        CovarianceStructure(
            "heterogeneous-ar1",
            "ARH(1)",
            False,
            lambda m: m + 1,
            lambda m: [*_var_names(m), "ARH(1)"],
            _arh1_sigma,
            _arh1_start,
        ),
        CovarianceStructure(
            "compound-symmetry",
            "CS",
            True,
            lambda m: 2,
            lambda m: ["CS", "Residual"],
            _cs_sigma,
            _cs_start,
        ),
        CovarianceStructure(
            "heterogeneous-compound-symmetry",
            "CSH",
            False,
            lambda m: m + 1,
            lambda m: [*_var_names(m), "CSH"],
            _csh_sigma,
            _csh_start,
        ),
        CovarianceStructure(
            "ante-dependence",
            "ANTE(1)",
            False,
            lambda m: 2 * m - 1,
            lambda m: _var_names(m) + [f"Rho({i + 1})" for i in range(m - 1)],
            _ante_sigma,
            _ante_start,
        ),
    )
}

STRUCTURE_ALIASES: dict[str, str] = {
    "un": "unstructured",
    "us": "unstructured",
    "toep": "toeplitz",
    "toeph": "heterogeneous-toeplitz",
    "ar(1)": "ar1",
    "arh(1)": "heterogeneous-ar1",
    "arh1": "heterogeneous-ar1",
    "cs": "compound-symmetry",
    "csh": "heterogeneous-compound-symmetry",
    "ante(1)": "ante-dependence",
    "ante1": "ante-dependence",
}


def get_structure(name: str) -> CovarianceStructure:
    """The covariance structure called ``name`` (canonical name or SAS ``TYPE=``, any case).

    Raises
    ------
    AnalysisError
        When the name is unknown.
    """
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    key = STRUCTURE_ALIASES.get(key, key)
    if key not in _STRUCTURES:
        known = ", ".join(sorted(_STRUCTURES))
        raise AnalysisError(f"unknown covariance structure {name!r}; use one of: {known}")
    return _STRUCTURES[key]
