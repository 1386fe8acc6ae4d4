"""Numerical core of the MMRM: the (restricted) likelihood aggregated by missingness pattern.

Subjects with the same covariance group and the same set of observed visits share the visit
covariance restricted to those visits, so every quantity of the likelihood, its gradient, its
Hessian and the Kenward-Roger adjustment is a sum over *patterns* of contractions with per-pattern
sums of outer products of the design rows and the outcome (computed once). The cost of an evaluation
then grows with the number of patterns, not of subjects.

Notation (Kenward & Roger 1997): ``Sigma`` the visit covariance, ``W = Sigma^-1`` restricted to a
pattern, ``M = X' V^-1 X``, ``Phi = M^-1``, ``Q_r = X' V^-1 dV/dphi_r V^-1 X`` (KR's ``-P_r``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import special

from studyman.stats.covariance import CovarianceStructure

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_LOG_2PI = float(np.log(2 * np.pi))


class InfeasibleParametersError(Exception):
    """The covariance parameters do not give a positive definite matrix (internal signal)."""


@dataclass(frozen=True, eq=False)
class Pattern:
    """Subjects sharing a covariance group and a set of observed visits.

    ``a2[j*mk+l] = sum_i x_ij x_il'`` (flattened ``p x p``), ``b2[j*mk+l] = sum_i x_ij y_il``,
    ``c[j, l] = sum_i y_ij y_il`` with ``y`` the residuals of an ordinary least squares fit.
    """

    group: int
    visits: IntArray
    n: int
    a3: FloatArray
    b2: FloatArray
    c: FloatArray

    @property
    def a2(self) -> FloatArray:
        size = self.visits.size
        return self.a3.reshape(size * size, -1)


def missingness_patterns(
    subject_codes: IntArray, visit_codes: IntArray, subject_groups: IntArray, n_visits: int
) -> tuple[npt.NDArray[np.bool_], IntArray, IntArray]:
    """Subjects' observed visits, the distinct (group, observed visits) keys, each subject's key.

    Returns ``observed`` (subjects x visits), ``keys`` (one row per pattern: the group, then one
    0/1 column per visit, in sorted order) and the pattern index of every subject.
    """
    observed = np.zeros((subject_groups.size, n_visits), dtype=bool)
    observed[subject_codes, visit_codes] = True
    keys = np.column_stack([subject_groups, observed.astype(np.int64)])
    unique_keys, pattern_of_subject = np.unique(keys, axis=0, return_inverse=True)
    return observed, unique_keys, pattern_of_subject.ravel()


def build_patterns(
    x: FloatArray,
    y: FloatArray,
    subject_codes: IntArray,
    visit_codes: IntArray,
    subject_groups: IntArray,
    n_visits: int,
) -> list[Pattern]:
    """Group subjects by (covariance group, observed visits) and form the per-pattern sums."""
    observed, _, pattern_of_subject = missingness_patterns(
        subject_codes, visit_codes, subject_groups, n_visits
    )
    order = np.lexsort((visit_codes, subject_codes, pattern_of_subject[subject_codes]))
    row_pattern = pattern_of_subject[subject_codes][order]
    bounds = np.flatnonzero(np.diff(row_pattern)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [order.size]])
    p = x.shape[1]
    patterns = []
    for start, end in zip(starts, ends, strict=True):
        rows = order[start:end]
        first_subject = subject_codes[rows[0]]
        visits = np.flatnonzero(observed[first_subject]).astype(np.int64)
        mk = visits.size
        n = rows.size // mk
        xk = x[rows].reshape(n, mk, p)
        yk = y[rows].reshape(n, mk)
        # sums of outer products through BLAS: (mk p) x (mk p) and (mk p) x mk
        x_flat = xk.reshape(n, mk * p)
        a3 = (x_flat.T @ x_flat).reshape(mk, p, mk, p).transpose(0, 2, 1, 3).reshape(mk * mk, p, p)
        b2 = (x_flat.T @ yk).reshape(mk, p, mk).transpose(0, 2, 1).reshape(mk * mk, p)
        c = yk.T @ yk
        patterns.append(
            Pattern(int(subject_groups[first_subject]), visits, int(n), a3, b2, np.asarray(c))
        )
    return patterns


@dataclass(frozen=True, eq=False)
class Batch:
    """Patterns of one covariance group with the same number of observed visits, stacked.

    ``visits`` has shape ``(nb, mk)``; ``rows``/``cols`` index the ``(nb, mk, mk)`` sub-matrices
    of the visit covariance; ``a3``, ``b2``, ``c`` are the patterns' sums stacked on axis 0.
    """

    group: int
    visits: IntArray
    n: FloatArray
    a3: FloatArray
    b2: FloatArray
    c: FloatArray

    @property
    def rows(self) -> IntArray:
        return self.visits[:, :, None]

    @property
    def cols(self) -> IntArray:
        return self.visits[:, None, :]

    @functools.cached_property
    def a2(self) -> FloatArray:
        nb, mk = self.visits.shape
        return self.a3.reshape(nb, mk * mk, -1)

    @functools.cached_property
    def a_flat(self) -> FloatArray:
        nb, mk = self.visits.shape
        return self.a3.reshape(nb * mk * mk, -1)

    @functools.cached_property
    def b_flat(self) -> FloatArray:
        nb, mk = self.visits.shape
        return self.b2.reshape(nb * mk * mk, -1)


def make_batches(patterns: list[Pattern]) -> list[Batch]:
    """Stack patterns by (group, number of observed visits)."""
    keys = sorted({(pat.group, pat.visits.size) for pat in patterns})
    batches = []
    for group, size in keys:
        chosen = [pat for pat in patterns if pat.group == group and pat.visits.size == size]
        batches.append(
            Batch(
                group,
                np.stack([pat.visits for pat in chosen]),
                np.array([float(pat.n) for pat in chosen]),
                np.stack([pat.a3 for pat in chosen]),
                np.stack([pat.b2 for pat in chosen]),
                np.stack([pat.c for pat in chosen]),
            )
        )
    return batches


@dataclass(eq=False)
class Evaluation:
    """The objective (-2 log-likelihood) and what was computed on the way."""

    objective: float
    delta: FloatArray
    phi_matrix: FloatArray
    gradient: FloatArray | None = None
    hessian: FloatArray | None = None
    q_mats: FloatArray | None = None
    w_list: list[FloatArray] = field(default_factory=list)


@dataclass
class Engine:
    """Likelihood of the MMRM for one covariance structure (optionally one matrix per group)."""

    patterns: list[Pattern]
    structure: CovarianceStructure
    n_visits: int
    n_groups: int
    n_obs: int
    p: int
    reml: bool
    _d_cache: list[FloatArray] | None = None
    batches: list[Batch] = field(init=False)

    def __post_init__(self) -> None:
        self.batches = make_batches(self.patterns)

    @property
    def q_group(self) -> int:
        return self.structure.n_params(self.n_visits)

    @property
    def q(self) -> int:
        return self.q_group * self.n_groups

    def slices(self) -> list[slice]:
        qg = self.q_group
        return [slice(g * qg, (g + 1) * qg) for g in range(self.n_groups)]

    def sigmas(self, phi: FloatArray) -> list[FloatArray]:
        return [self.structure.sigma(phi[s], self.n_visits) for s in self.slices()]

    def is_valid(self, phi: FloatArray) -> bool:
        return all(self.structure.is_valid(phi[s], self.n_visits) for s in self.slices())

    def first_derivatives(self, phi: FloatArray) -> list[FloatArray]:
        if self.structure.linear and self._d_cache is not None:
            return self._d_cache
        out = [self.structure.derivatives(phi[s], self.n_visits) for s in self.slices()]
        if self.structure.linear:
            self._d_cache = out
        return out

    def second_derivatives(self, phi: FloatArray) -> list[FloatArray] | None:
        if self.structure.linear:
            return None
        out = []
        for s in self.slices():
            d2 = self.structure.second_derivatives(phi[s], self.n_visits)
            assert d2 is not None  # non-linear structures always have them
            out.append(d2)
        return out

    def evaluate(self, phi: FloatArray, order: int = 0) -> Evaluation:
        """-2 (restricted) log-likelihood at ``phi``, with gradient (order 1) and Hessian (2).

        Patterns of the same group and size are processed together as one batch, so the work
        in Python grows with the number of visits, not of patterns.
        """
        p = self.p
        sigmas = self.sigmas(phi)
        m_flat = np.zeros(p * p)
        c_vec = np.zeros(p)
        logdet_sum = 0.0
        w_list: list[FloatArray] = []
        for bt in self.batches:
            nb, mk = bt.visits.shape
            sigma_b = sigmas[bt.group][bt.rows, bt.cols]
            try:
                chol = np.linalg.cholesky(sigma_b)
            except np.linalg.LinAlgError as exc:
                raise InfeasibleParametersError from exc
            log_diag = np.log(np.diagonal(chol, axis1=1, axis2=2))
            logdet_sum += 2.0 * float(bt.n @ log_diag.sum(axis=1))
            chol_inv = np.linalg.inv(chol)
            w = chol_inv.transpose(0, 2, 1) @ chol_inv
            w_list.append(w)
            w_flat = w.reshape(nb * mk * mk)
            m_flat += w_flat @ bt.a_flat
            c_vec += w_flat @ bt.b_flat
        m_mat = m_flat.reshape(p, p)
        try:
            m_chol = np.linalg.cholesky(m_mat)
        except np.linalg.LinAlgError as exc:
            raise InfeasibleParametersError from exc
        m_chol_inv = np.linalg.inv(m_chol)
        phi_matrix = m_chol_inv.T @ m_chol_inv
        delta = phi_matrix @ c_vec
        quad = 0.0
        k_list: list[FloatArray] = []
        e_list: list[FloatArray] = []
        for bt, w in zip(self.batches, w_list, strict=True):
            nb, mk = bt.visits.shape
            bd = (bt.b2 @ delta).reshape(nb, mk, mk)
            ad = bt.a3 @ delta
            r_mat = bt.c - bd - bd.transpose(0, 2, 1) + (ad @ delta).reshape(nb, mk, mk)
            quad += float(np.sum(w * r_mat))
            if order >= 1:
                k_mat = r_mat
                if self.reml:
                    k_mat = r_mat + (bt.a2 @ phi_matrix.ravel()).reshape(nb, mk, mk)
                k_list.append(k_mat)
                e_list.append(bt.b2 - ad)
        if self.reml:
            constant = (self.n_obs - p) * _LOG_2PI
            logdet_m = 2.0 * float(np.sum(np.log(np.diag(m_chol))))
        else:
            constant = self.n_obs * _LOG_2PI
            logdet_m = 0.0
        objective = constant + logdet_sum + logdet_m + quad
        result = Evaluation(objective, delta, phi_matrix, w_list=w_list)
        if order == 0:
            return result

        m = self.n_visits
        slices = self.slices()
        g_full = [np.zeros((m, m)) for _ in range(self.n_groups)]
        for bt, w, k_mat in zip(self.batches, w_list, k_list, strict=True):
            g_b = bt.n[:, None, None] * w - w @ k_mat @ w
            np.add.at(g_full[bt.group], (bt.rows, bt.cols), g_b)
        d_list = self.first_derivatives(phi)
        gradient = np.concatenate(
            [np.einsum("rab,ab->r", d, g) for d, g in zip(d_list, g_full, strict=True)]
        )
        result.gradient = gradient
        if order == 1:
            return result

        q = self.q
        hessian = np.zeros((q, q))
        q_mats = np.zeros((q, p * p))
        g_vecs = np.zeros((q, p))
        for bt, w, k_mat, e_mat in zip(self.batches, w_list, k_list, e_list, strict=True):
            nb, mk = bt.visits.shape
            sl = slices[bt.group]
            wd = self._w_times_derivatives(w, d_list[bt.group], bt)
            qg = wd.shape[1]
            # trace products as one matrix product over (pattern, element) pairs
            wd_cols = wd.transpose(1, 0, 2, 3).reshape(qg, nb * mk * mk)
            wd_t_cols = wd.transpose(1, 0, 3, 2).reshape(qg, nb * mk * mk)
            weighted = (wd * bt.n[:, None, None, None]).transpose(1, 0, 2, 3)
            t1 = weighted.reshape(qg, nb * mk * mk) @ wd_t_cols.T
            wdwk = wd @ (w @ k_mat)[:, None]
            t2 = wd_cols @ wdwk.transpose(1, 0, 3, 2).reshape(qg, nb * mk * mk).T
            hessian[sl, sl] += -t1 + 2.0 * t2
            wdw = (wd @ w[:, None]).transpose(1, 0, 2, 3).reshape(qg, nb * mk * mk)
            q_mats[sl] += wdw @ bt.a_flat
            g_vecs[sl] += wdw @ e_mat.reshape(nb * mk * mk, p)
        q3 = q_mats.reshape(q, p, p)
        if self.reml:
            u = q3 @ phi_matrix
            hessian -= u.reshape(q, p * p) @ u.transpose(0, 2, 1).reshape(q, p * p).T
        hessian -= 2.0 * g_vecs @ phi_matrix @ g_vecs.T
        d2_list = self.second_derivatives(phi)
        if d2_list is not None:
            for sl, d2, g in zip(slices, d2_list, g_full, strict=True):
                hessian[sl, sl] += np.einsum("rsab,ab->rs", d2, g)
        result.hessian = 0.5 * (hessian + hessian.T)
        result.q_mats = q3
        return result

    @staticmethod
    def _w_times_derivatives(w: FloatArray, d: FloatArray, bt: Batch) -> FloatArray:
        """``W_k dSigma/dphi_r`` restricted to each pattern: shape ``(nb, q, mk, mk)``."""
        dk = d[:, bt.rows, bt.cols].transpose(1, 0, 2, 3)
        return np.asarray(w[:, None] @ dk, dtype=np.float64)

    def kenward_roger_sums(
        self, phi: FloatArray, evaluation: Evaluation, theta_cov: FloatArray, *, linear: bool
    ) -> FloatArray:
        """``sum_rs W_rs (Q_rs - P_r Phi P_s - R_rs / 4)`` of Kenward & Roger (1997), eq. (4)."""
        p = self.p
        assert evaluation.q_mats is not None
        slices = self.slices()
        d_list = self.first_derivatives(phi)
        d2_list = None if linear else self.second_derivatives(phi)
        sum_q = np.zeros(p * p)
        sum_r = np.zeros(p * p)
        for bt, w in zip(self.batches, evaluation.w_list, strict=True):
            nb, mk = bt.visits.shape
            sl = slices[bt.group]
            wd = self._w_times_derivatives(w, d_list[bt.group], bt)
            w_gg = theta_cov[sl, sl]
            weighted = np.einsum("rs,bsij->brij", w_gg, wd, optimize=True)
            s_mat = np.einsum("brij,brjk->bik", wd, weighted, optimize=True) @ w
            sum_q += s_mat.reshape(nb * mk * mk) @ bt.a_flat
            if d2_list is not None:
                d2k = d2_list[bt.group][:, :, bt.rows, bt.cols]
                t_mat = np.einsum("rs,rsbij->bij", w_gg, d2k, optimize=True)
                sum_r += (w @ t_mat @ w).reshape(nb * mk * mk) @ bt.a_flat
        q3 = evaluation.q_mats
        phi_m = evaluation.phi_matrix
        weighted_q = np.tensordot(theta_cov, q3, axes=(1, 0))
        sum_qpq = np.einsum("rab,rbc->ac", q3 @ phi_m, weighted_q)
        total = sum_q.reshape(p, p) - sum_qpq - 0.25 * sum_r.reshape(p, p)
        return np.asarray(0.5 * (total + total.T))


_SINGULAR = (
    "the variance-parameter Hessian is not positive definite at the optimum (covariance "
    "parameters not identifiable from these data, or an estimate on the boundary)"
)


@dataclass(frozen=True)
class NewtonOutcome:
    """The end of a Newton-Raphson run."""

    phi: FloatArray
    evaluation: Evaluation
    converged: bool
    iterations: int
    message: str


def newton_fit(engine: Engine, phi0: FloatArray, *, max_iterations: int) -> NewtonOutcome:
    """Maximise the (restricted) likelihood by Newton-Raphson with the observed information.

    Steps use the exact Hessian; where it is not positive definite its eigenvalues are replaced by
    their absolute values (bounded away from zero). A backtracking line search keeps the covariance
    positive definite and the objective decreasing. Convergence is declared when the Newton
    decrement ``g' H^-1 g`` falls below 1e-10 at a positive definite Hessian.
    """
    phi = phi0.copy()
    evaluation = engine.evaluate(phi, order=2)
    for iteration in range(1, max_iterations + 1):
        gradient = evaluation.gradient
        hessian = evaluation.hessian
        assert gradient is not None
        assert hessian is not None
        eigval, eigvec = np.linalg.eigh(hessian)
        top = float(np.max(np.abs(eigval))) if eigval.size else 1.0
        positive = bool(eigval.size == 0 or eigval[0] > 1e-10 * top)
        modified = np.maximum(np.abs(eigval), 1e-8 * top)
        step = -eigvec @ ((eigvec.T @ gradient) / modified)
        decrement = float(-gradient @ step)
        if decrement < 1e-10:
            if positive:
                return NewtonOutcome(phi, evaluation, True, iteration - 1, "converged")
            return NewtonOutcome(phi, evaluation, False, iteration - 1, _SINGULAR)
        t = 1.0
        accepted = False
        trial: Evaluation | None = None
        while t > 1e-12:
            candidate = phi + t * step
            if engine.is_valid(candidate):
                try:
                    # full order at t = 1: Newton steps are nearly always accepted there
                    trial = engine.evaluate(candidate, order=2 if t == 1.0 else 0)
                except InfeasibleParametersError:
                    trial = None
                if trial is not None and trial.objective <= evaluation.objective - 1e-4 * t * (
                    decrement
                ):
                    accepted = True
                    break
                if (
                    trial is not None
                    and decrement < 1e-7
                    and trial.objective <= (evaluation.objective + 1e-9 * abs(evaluation.objective))
                ):
                    accepted = True
                    break
            t *= 0.5
        if not accepted:
            reason = (
                _SINGULAR if not positive else "the line search could not improve the likelihood"
            )
            return NewtonOutcome(phi, evaluation, False, iteration, reason)
        phi = candidate
        assert trial is not None
        evaluation = trial if trial.hessian is not None else engine.evaluate(phi, order=2)
    return NewtonOutcome(
        phi, evaluation, False, max_iterations, f"no convergence in {max_iterations} iterations"
    )


# --- degrees of freedom ------------------------------------------------------------------------


def satterthwaite_1d(
    l_vec: FloatArray, phi_matrix: FloatArray, q_mats: FloatArray, theta_cov: FloatArray
) -> float:
    """Satterthwaite df of ``l' beta``: ``2 v^2 / (g' W g)`` with ``g = d v / d theta``."""
    a = phi_matrix @ l_vec
    variance = float(l_vec @ a)
    grad = np.einsum("rpq,p,q->r", q_mats, a, a)
    denominator = float(grad @ theta_cov @ grad)
    if denominator <= 0:
        return float("inf")
    return 2.0 * variance**2 / denominator


def satterthwaite_f(
    l_mat: FloatArray,
    beta: FloatArray,
    phi_matrix: FloatArray,
    q_mats: FloatArray,
    theta_cov: FloatArray,
) -> tuple[float, float]:
    """F statistic and denominator df of ``L beta = 0`` (SAS / lmerTest eigen-decomposition)."""
    v = l_mat @ phi_matrix @ l_mat.T
    eigval, eigvec = np.linalg.eigh(0.5 * (v + v.T))
    rows = eigvec.T @ l_mat
    estimates = rows @ beta
    f_value = float(np.sum(estimates**2 / eigval)) / l_mat.shape[0]
    nus = np.array([satterthwaite_1d(row, phi_matrix, q_mats, theta_cov) for row in rows])
    big = nus[nus > 2]
    e_value = float(np.sum(big / (big - 2.0)))
    ell = l_mat.shape[0]
    df = 2.0 * e_value / (e_value - ell) if e_value > ell else float("nan")
    return f_value, df


def kenward_roger_f(
    l_mat: FloatArray,
    beta: FloatArray,
    phi_matrix: FloatArray,
    phi_adjusted: FloatArray,
    q_mats: FloatArray,
    theta_cov: FloatArray,
) -> tuple[float, float]:
    """Scaled F statistic and denominator df of Kenward & Roger (1997), section 4.

    ``Theta = L'(L Phi L')^-1 L`` uses the unadjusted ``Phi``, as SAS and R mmrm do.
    """
    ell = l_mat.shape[0]
    theta = l_mat.T @ np.linalg.solve(l_mat @ phi_matrix @ l_mat.T, l_mat)
    # P_r = -Q_r; the sign cancels in A1 and A2
    u = theta @ phi_matrix @ q_mats @ phi_matrix
    traces = np.trace(u, axis1=1, axis2=2)
    a1 = float(traces @ theta_cov @ traces)
    q = q_mats.shape[0]
    cross = u.reshape(q, -1) @ u.transpose(0, 2, 1).reshape(q, -1).T
    a2 = float(np.sum(theta_cov * cross))
    b = (a1 + 6.0 * a2) / (2.0 * ell)
    g = ((ell + 1.0) * a1 - (ell + 4.0) * a2) / ((ell + 2.0) * a2)
    denom = 3.0 * ell + 2.0 * (1.0 - g)
    c1, c2, c3 = g / denom, (ell - g) / denom, (ell + 2.0 - g) / denom
    e_star = 1.0 / (1.0 - a2 / ell)
    v_star = (2.0 / ell) * (1.0 + c1 * b) / ((1.0 - c2 * b) ** 2 * (1.0 - c3 * b))
    rho = v_star / (2.0 * e_star**2)
    df = 4.0 + (ell + 2.0) / (ell * rho - 1.0)
    scale = df / (e_star * (df - 2.0))
    estimate = l_mat @ beta
    wald = float(estimate @ np.linalg.solve(l_mat @ phi_adjusted @ l_mat.T, estimate)) / ell
    return scale * wald, df


def t_summary(
    estimate: float, std_error: float, df: float, level: float = 0.95
) -> tuple[float, float, float, float]:
    """t value, two-sided p value and confidence limits."""
    t_value = estimate / std_error
    # scipy.special directly: scipy.stats' distribution objects cost ~0.3 ms a call
    p_value = float(2.0 * special.stdtr(df, -abs(t_value)))
    quantile = float(special.stdtrit(df, 0.5 + level / 2.0))
    return t_value, p_value, estimate - quantile * std_error, estimate + quantile * std_error


# --- empirical (sandwich) covariance ---------------------------------------------------------


def empirical_meat(
    sigmas: list[FloatArray],
    x: FloatArray,
    residuals: FloatArray,
    subject_codes: IntArray,
    visit_codes: IntArray,
    subject_groups: IntArray,
) -> FloatArray:
    """The sandwich's meat ``sum_i X_i' W_i r_i r_i' W_i X_i`` (``W_i`` the inverse covariance).

    Subjects are laid out on the full visit grid with zeros where a visit is missing, and every
    missingness pattern's inverse covariance is embedded in a zero ``m x m`` matrix, so the score
    contributions ``u_i = X_i' W_i r_i`` of all subjects are two vectorised products; the meat is
    ``U' U``. Only the inversion loops, once per pattern size.
    """
    n_subjects = subject_groups.size
    n_visits = sigmas[0].shape[0]
    p = x.shape[1]
    _, unique_keys, pattern_of_subject = missingness_patterns(
        subject_codes, visit_codes, subject_groups, n_visits
    )
    w_full = np.zeros((unique_keys.shape[0], n_visits, n_visits))
    sizes = unique_keys[:, 1:].sum(axis=1)
    for size in np.unique(sizes):
        chosen = np.flatnonzero(sizes == size)
        visits = np.array([np.flatnonzero(unique_keys[k, 1:]) for k in chosen], dtype=np.int64)
        rows, cols = visits[:, :, None], visits[:, None, :]
        stacked = np.stack([sigmas[int(unique_keys[k, 0])] for k in chosen])
        sub = stacked[np.arange(chosen.size)[:, None, None], rows, cols]
        w_full[chosen[:, None, None], rows, cols] = np.linalg.inv(sub)
    x_wide = np.zeros((n_subjects, n_visits, p))
    x_wide[subject_codes, visit_codes] = x
    r_wide = np.zeros((n_subjects, n_visits))
    r_wide[subject_codes, visit_codes] = residuals
    weighted = np.einsum("sij,sj->si", w_full[pattern_of_subject], r_wide)
    scores = np.einsum("sip,si->sp", x_wide, weighted)
    return np.asarray(scores.T @ scores, dtype=np.float64)
