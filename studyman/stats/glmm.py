"""Random-intercept generalised linear mixed models by adaptive Gauss–Hermite quadrature.

The mixed model for adverse events: one random intercept per participant, logistic, Poisson or
negative binomial (NB2) response, maximum likelihood with the random effect integrated out by
adaptive Gauss–Hermite quadrature (the Laplace approximation is the one-point rule).  statsmodels
has no maximum-likelihood GLMM; this one matches ``lme4::glmer`` and ``glmmTMB``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numpy.polynomial.hermite_e import hermegauss
from scipy import optimize, special

from studyman.errors import AnalysisError
from studyman.stats._secondary_frame import (
    FloatArray,
    build_model_frame,
    coefficient_table,
    group_codes,
)

__all__ = ["GLMMResult", "fit_glmm"]

GLMMFamily = Literal["binomial", "poisson", "negbin"]
_FAMILIES: tuple[str, ...] = ("binomial", "poisson", "negbin")

# Inner (conditional-mode) Newton iterations stop when every step is below this size.
_MODE_TOLERANCE = 1e-11
# The outer fit counts as converged when the largest gradient entry of -log L is below this.
_GRADIENT_TOLERANCE = 1e-4
# Central-difference step for the Hessian (differences of the exact gradient).
_HESSIAN_STEP = 1e-5
# More points add nothing (20 already agree with 30 to 1e-6 here) and the outer weights underflow.
_MAX_QUADRATURE = 100
# Below this random-intercept SD the fit is reported as singular (at the boundary 0).
_BOUNDARY_SD = 1e-4


@dataclass(frozen=True, eq=False)
class GLMMResult:
    """A fitted random-intercept GLMM.

    Attributes
    ----------
    coefficients
        One row per fixed-effect term (formulaic names): ``estimate, std_error, z_value,
        p_value, ci_lower, ci_upper`` (Wald, normal reference, 95 %).
    covariance
        Covariance matrix of the fixed effects (terms × terms).
    random_intercept_sd
        Maximum-likelihood standard deviation of the random intercept (lme4's ``theta``).
    theta
        NB2 dispersion (variance ``mu + mu**2 / theta``, glmmTMB's ``sigma()``); ``None`` for the
        binomial and Poisson families.
    conditional_modes
        The conditional modes of the random intercepts, indexed by group label.
    loglik
        The maximised (approximate) log-likelihood, including every constant (as ``logLik()``).
    aic
        ``-2 loglik + 2 * number of parameters``.
    converged
        ``True`` only when the gradient vanished and the Hessian was positive definite.
    message
        Why the fit did or did not converge, and any warning (singular fit).
    family
        ``"binomial"``, ``"poisson"`` or ``"negbin"``.
    n_quadrature
        Quadrature points per random effect (1 = Laplace).
    n_observations, n_groups, n_dropped
        Rows used, participants, and rows left out because a value was missing.
    iterations
        Outer iterations used by the optimiser.
    """

    coefficients: pd.DataFrame
    covariance: pd.DataFrame
    random_intercept_sd: float
    theta: float | None
    conditional_modes: pd.Series
    loglik: float
    aic: float
    converged: bool
    message: str
    family: str
    n_quadrature: int
    n_observations: int
    n_groups: int
    n_dropped: int
    iterations: int


class _Family:
    """Log-likelihood of one observation and its derivatives in the linear predictor eta.

    ``y`` broadcasts against ``eta``: one column per observation, or one row per observation and
    one column per quadrature node.  ``log_theta`` is the log NB2 dispersion (unused otherwise).
    """

    def __init__(self, name: str, outcome: FloatArray) -> None:
        self.name = name
        self.outcome = outcome
        if name == "binomial":
            self.constant = np.zeros_like(outcome)
        else:
            self.constant = -special.gammaln(outcome + 1.0)

    def loglik(self, eta: FloatArray, log_theta: float, y: FloatArray) -> FloatArray:
        """Log-likelihood without the constant ``-log y!``."""
        if self.name == "binomial":
            return y * eta - np.logaddexp(0.0, eta)
        if self.name == "poisson":
            return y * eta - np.exp(eta)
        theta = np.exp(log_theta)
        value: FloatArray = (
            special.gammaln(y + theta)
            - special.gammaln(theta)
            + theta * log_theta
            + y * eta
            - (y + theta) * np.logaddexp(log_theta, eta)
        )
        return value

    def first(self, eta: FloatArray, log_theta: float, y: FloatArray) -> FloatArray:
        """d loglik / d eta."""
        if self.name == "binomial":
            residual: FloatArray = y - special.expit(eta)
            return residual
        mu = np.exp(eta)
        if self.name == "poisson":
            return y - mu
        theta = float(np.exp(log_theta))
        value: FloatArray = theta * (y - mu) / (theta + mu)
        return value

    def first_alpha(self, eta: FloatArray, log_theta: float, y: FloatArray) -> FloatArray:
        """d loglik / d log theta (NB2 only)."""
        theta = np.exp(log_theta)
        mu = np.exp(eta)
        value: FloatArray = theta * (
            special.digamma(y + theta)
            - special.digamma(theta)
            + log_theta
            + 1.0
            - np.logaddexp(log_theta, eta)
            - (y + theta) / (theta + mu)
        )
        return value

    def derivatives(
        self, eta: FloatArray, log_theta: float
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Return (log-likelihood without constants, first, second derivative) in eta."""
        y = self.outcome
        value = self.loglik(eta, log_theta, y)
        if self.name == "binomial":
            p = special.expit(eta)
            return value, y - p, -p * (1.0 - p)
        mu = np.exp(eta)
        if self.name == "poisson":
            return value, y - mu, -mu
        theta = np.exp(log_theta)
        # Observed curvature of NB2 (TMB's Laplace differentiates the likelihood exactly).
        return (
            value,
            theta * (y - mu) / (theta + mu),
            -(y + theta) * theta * mu / (theta + mu) ** 2,
        )

    def mode_terms(
        self, eta: FloatArray, log_theta: float
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
        """First, second, third eta-derivatives and d/d log theta of the first two."""
        y = self.outcome
        zeros = np.zeros_like(eta)
        if self.name == "binomial":
            p = special.expit(eta)
            variance = p * (1.0 - p)
            return y - p, -variance, -variance * (1.0 - 2.0 * p), zeros, zeros
        mu = np.exp(eta)
        if self.name == "poisson":
            return y - mu, -mu, -mu, zeros, zeros
        theta = np.exp(log_theta)
        total = theta + mu
        return (
            theta * (y - mu) / total,
            -(y + theta) * theta * mu / total**2,
            -(y + theta) * theta * mu * (theta - mu) / total**3,
            theta * (y - mu) * mu / total**2,
            -theta * mu * (2.0 * theta * mu + y * mu - theta * y) / total**3,
        )


class _Objective:
    """-log L(beta, log sd, [log theta]) and its gradient, modes warm-started between calls."""

    def __init__(
        self,
        family: _Family,
        design: FloatArray,
        offset: FloatArray,
        group_index: np.ndarray,
        starts: np.ndarray,
        n_groups: int,
        n_quadrature: int,
    ) -> None:
        self.family = family
        self.design = design
        self.offset = offset
        self.group_index = group_index
        self.starts = starts
        self.n_fixed = design.shape[1]
        nodes, weights = hermegauss(n_quadrature)
        self.nodes = nodes
        # Probabilists' weights normalised to sum to one: a rule for E f(Z), Z ~ N(0, 1).
        self.log_weights = np.log(weights / weights.sum())
        self.modes = np.zeros(n_groups)
        self.mode_failures = 0
        self.constant = float(np.sum(family.constant))

    def _sum_by_group(self, values: FloatArray) -> FloatArray:
        return np.add.reduceat(values, self.starts, axis=0)

    def split(self, psi: FloatArray) -> tuple[FloatArray, float, float]:
        beta = psi[: self.n_fixed]
        log_sd = float(psi[self.n_fixed])
        log_theta = float(psi[self.n_fixed + 1]) if self.family.name == "negbin" else 0.0
        return beta, log_sd, log_theta

    def conditional_modes(
        self, fixed_eta: FloatArray, sd: float, log_theta: float
    ) -> tuple[FloatArray, FloatArray, bool]:
        """Newton on each group's h(u) = sum log f(y | u) - u**2 / 2, all groups at once.

        Returns the modes u (on the N(0, 1) scale), the curvature h''(u) at them and whether
        every group converged.
        """
        u = self.modes.copy()
        family = self.family
        index = self.group_index

        def evaluate(u_now: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
            value, first, second = family.derivatives(fixed_eta + sd * u_now[index], log_theta)
            h = self._sum_by_group(value) - 0.5 * u_now**2
            gradient = sd * self._sum_by_group(first) - u_now
            curvature = sd * sd * self._sum_by_group(second) - 1.0
            return h, gradient, curvature

        h, gradient, curvature = evaluate(u)
        converged = False
        for _ in range(100):
            step = -gradient / curvature
            if np.max(np.abs(step)) < _MODE_TOLERANCE:
                converged = True
                break
            # h is concave for all three families, so halving a Newton step that lowers h
            # always ends in an increase.
            for _ in range(40):
                h_new, gradient_new, curvature_new = evaluate(u + step)
                worse = h_new < h - 1e-12 * (1.0 + np.abs(h))
                if not worse.any():
                    break
                step = np.where(worse, 0.5 * step, step)
            u = u + step
            h, gradient, curvature = h_new, gradient_new, curvature_new
        if not converged:
            self.mode_failures += 1
        self.modes = u
        return u, curvature, converged

    def __call__(self, psi: FloatArray) -> float:
        return self.value_and_gradient(psi, with_gradient=False)[0]

    def value_and_gradient(
        self, psi: FloatArray, *, with_gradient: bool = True
    ) -> tuple[float, FloatArray]:
        """-log L at ``psi`` and (unless ``with_gradient=False``) its exact gradient.

        Overflow while the optimiser probes far from the optimum gives an infinite value,
        which makes it step back; it is not an error.
        """
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            return self._value_and_gradient(psi, with_gradient=with_gradient)

    def _value_and_gradient(
        self, psi: FloatArray, *, with_gradient: bool
    ) -> tuple[float, FloatArray]:
        """-log L at ``psi`` and (unless ``with_gradient=False``) its exact gradient.

        The gradient is the total derivative of the adaptive rule, including the movement of
        the nodes with the conditional mode and scale (implicit differentiation of
        ``h'(mode) = 0``), so it is exact for every number of points.
        """
        n_parameters = psi.size
        beta, log_sd, log_theta = self.split(psi)
        if not np.all(np.isfinite(psi)) or log_sd > 10.0 or abs(log_theta) > 30.0:
            return float("inf"), np.zeros(n_parameters)
        sd = float(np.exp(log_sd))
        family = self.family
        index = self.group_index
        y = family.outcome
        fixed_eta = self.design @ beta + self.offset
        modes, curvature, _ = self.conditional_modes(fixed_eta, sd, log_theta)
        scale = 1.0 / np.sqrt(-curvature)
        # Adaptive rule: u = mode + scale * z turns the integral of exp(h(u)) / sqrt(2 pi) into
        # scale * E[exp(h(mode + scale Z) + Z**2 / 2)], Z ~ N(0, 1).
        nodes = self.nodes[None, :]
        u_nodes = modes[:, None] + scale[:, None] * nodes
        eta = fixed_eta[:, None] + sd * u_nodes[index, :]
        h = (
            self._sum_by_group(family.loglik(eta, log_theta, y[:, None]))
            - 0.5 * u_nodes**2
            + 0.5 * nodes**2
            + self.log_weights[None, :]
        )
        log_sum = special.logsumexp(h, axis=1)
        total = float(np.sum(np.log(scale) + log_sum)) + self.constant
        if not np.isfinite(total):
            return float("inf"), np.zeros(n_parameters)
        if not with_gradient:
            return -total, np.zeros(n_parameters)

        # With H = h''(mode), h3 = h'''(mode) and pi_k the normalised integrand at the nodes:
        # d log L_i = d log s + E_pi[dh/dpsi + h'(u_k) (d mode + z_k ds)],
        # d mode = -(dh'/dpsi) / H and ds = s**3 / 2 (dH/dpsi + h3 d mode), all at the mode.
        weights = np.exp(h - log_sum[:, None])
        first_nodes = family.first(eta, log_theta, y[:, None])
        slope_sum = self._sum_by_group(first_nodes)
        h_prime = sd * slope_sum - u_nodes
        a = np.sum(weights * h_prime, axis=1)
        b = np.sum(weights * h_prime * nodes, axis=1)
        eta_mode = fixed_eta + sd * modes[index]
        d1, d2, d3, d1_alpha, d2_alpha = family.mode_terms(eta_mode, log_theta)
        sum_d1 = self._sum_by_group(d1)
        sum_d2 = self._sum_by_group(d2)
        sum_d3 = self._sum_by_group(d3)
        h3 = sd**3 * sum_d3
        # Collect the terms multiplying dH/dpsi (c) and dh'/dpsi (e).
        c = 0.5 * scale**3 * (1.0 / scale + b)
        e = -(c * h3 + a) / curvature

        expected_first = np.sum(weights[index, :] * first_nodes, axis=1)
        gradient_beta = self.design.T @ (
            expected_first + sd * sd * c[index] * d3 + sd * e[index] * d2
        )
        d_h_prime_sd = sum_d1 + sd * modes * sum_d2
        d_curvature_sd = 2.0 * sd * sum_d2 + sd * sd * modes * sum_d3
        expected_sd = np.sum(weights * u_nodes * slope_sum, axis=1)
        gradient_log_sd = sd * float(np.sum(c * d_curvature_sd + e * d_h_prime_sd + expected_sd))
        gradient = np.r_[gradient_beta, gradient_log_sd]
        if family.name == "negbin":
            alpha_nodes = self._sum_by_group(family.first_alpha(eta, log_theta, y[:, None]))
            expected_alpha = np.sum(weights * alpha_nodes, axis=1)
            d_h_prime_alpha = sd * self._sum_by_group(d1_alpha)
            d_curvature_alpha = sd * sd * self._sum_by_group(d2_alpha)
            gradient_alpha = float(
                np.sum(c * d_curvature_alpha + e * d_h_prime_alpha + expected_alpha)
            )
            gradient = np.r_[gradient, gradient_alpha]
        return -total, -gradient


def _hessian_from_gradient(objective: _Objective, x: FloatArray) -> FloatArray:
    """Central differences of the exact gradient, symmetrised."""
    n = x.size
    hessian = np.empty((n, n))
    for i in range(n):
        step = np.zeros(n)
        step[i] = _HESSIAN_STEP
        upper = objective.value_and_gradient(x + step)[1]
        lower = objective.value_and_gradient(x - step)[1]
        hessian[:, i] = (upper - lower) / (2.0 * _HESSIAN_STEP)
    return 0.5 * (hessian + hessian.T)


def _start_values(
    family: str, outcome: FloatArray, design: FloatArray, offset: FloatArray
) -> FloatArray:
    """Fixed effects of the GLM without random effect (IRLS), to start the mixed model."""
    beta = np.zeros(design.shape[1])
    for _ in range(50):
        eta = design @ beta + offset
        if family == "binomial":
            mean = special.expit(eta)
            weight = np.maximum(mean * (1.0 - mean), 1e-10)
        else:
            mean = np.exp(eta)
            weight = np.maximum(mean, 1e-10)
        working = eta - offset + (outcome - mean) / weight
        weighted = design * weight[:, None]
        new_beta = np.linalg.solve(design.T @ weighted, weighted.T @ working)
        if np.max(np.abs(new_beta - beta)) < 1e-10:
            return np.asarray(new_beta, dtype=float)
        beta = new_beta
    return beta


def fit_glmm(
    data: pd.DataFrame,
    formula: str,
    *,
    group: str,
    family: GLMMFamily = "binomial",
    offset: str | None = None,
    exposure: str | None = None,
    n_quadrature: int = 20,
    max_iterations: int = 200,
) -> GLMMResult:
    """Fit a random-intercept GLMM by maximum likelihood with adaptive Gauss–Hermite quadrature.

    Parameters
    ----------
    data
        One row per observation (for adverse events: one row per participant-visit).
    formula
        Fixed effects as a formulaic formula, e.g. ``"ANY_AE ~ ARM + C(VISIT)"``.
    group
        Column with the participant id; one random intercept per distinct value.
    family
        ``"binomial"`` (0/1 outcome, logit link), ``"poisson"`` or ``"negbin"`` (NB2, counts,
        log link).
    offset
        Column added to the linear predictor as is (already on the log scale).
    exposure
        Column of positive exposures (days at risk); ``log(exposure)`` is the offset.
    n_quadrature
        Quadrature points per participant, 1 to 100; 1 is the Laplace approximation.
    max_iterations
        Limit on the outer (quasi-Newton) iterations.

    Returns
    -------
    GLMMResult
        With ``converged=False`` and a message saying why when the optimum was not reached.

    Raises
    ------
    AnalysisError
        For an unknown family, too few quadrature points, a missing participant id, an outcome
        that is not 0/1 (binomial) or a non-negative count, an outcome with no variation, a
        non-positive exposure, or a rank-deficient design (naming the rows or terms).

    Notes
    -----
    Model: ``g(E[y_ij | b_i]) = x_ij' beta + offset_ij + b_i`` with ``b_i ~ N(0, sd**2)``;
    ``y | b`` Bernoulli (logit), Poisson (log) or NB2 (log, variance ``mu + mu**2 / theta``).

    Each participant's likelihood ``L_i = ∫ f(y_i | sd u) phi(u) du`` is computed around the
    conditional mode ``û_i`` of ``h_i(u) = log f(y_i | sd u) - u**2 / 2`` (Newton, all
    participants at once) with scale ``s_i = (-h_i''(û_i))**-1/2``: ``L_i ≈ s_i Σ_k w_k
    exp(h_i(û_i + s_i z_k) + z_k**2 / 2)`` with the probabilists' Gauss–Hermite nodes ``z_k``
    and weights ``w_k`` normalised to sum to one.  With one point this is the Laplace
    approximation.  This is the rule of ``lme4::glmer(nAGQ = n_quadrature)``
    (whose Laplace fit is ``nAGQ = 1``); for the NB2 family the curvature is the observed
    one, which makes the one-point rule the Laplace approximation of ``glmmTMB(family =
    nbinom2)`` (TMB differentiates the joint likelihood exactly).  For the canonical logit and
    log links observed and expected curvature coincide, so lme4's PIRLS weights give the same
    scale.

    The conditional modes are iterated to 1e-11, so the one-point rule is the exact Laplace
    approximation: it agrees with glmmTMB and with ``glmer(nAGQ = 1, control =
    glmerControl(tolPwrss = 1e-12))`` to about 1e-6.  lme4's *default* Laplace fit stops its
    inner PIRLS at ``tolPwrss = 1e-7``, which leaves its deviance ~0.002 above the exact one and
    its estimates ~1e-3 (relative) away from the exact optimum; for ``nAGQ > 1`` the rule is
    insensitive to that and lme4 agrees to ~1e-5.  lme4's log-likelihood for Poisson fits with
    ``nAGQ > 1`` omits the saturated-model constant; ``loglik`` here always includes it.

    The parameters ``(beta, log sd, log theta)`` are found by BFGS on ``-log L`` with its
    exact gradient (the total derivative of the adaptive rule, nodes moving with the mode and
    scale, by implicit differentiation of ``h_i'(û_i) = 0``), started from the GLM without
    random effect, then polished with Newton steps.  The covariance of the fixed effects is
    the ``beta`` block of the inverse of the full Hessian of ``-log L`` in all parameters
    (central differences of the exact gradient), so it allows for the estimation of ``sd`` (and
    ``theta``).  This is what ``vcov()`` of lme4 (1.1-31 checked) reports for a GLMM when the
    derivatives were computed (the default, ``use.hessian = TRUE``: the ``beta`` block of twice
    the inverse finite-difference Hessian of the deviance in ``(theta, beta)``; not the RX
    factor, which treats ``sd`` as known and gives SEs ~3 % smaller here) and what glmmTMB's
    ``sdreport`` reports.  The parametrisation of the variance parameters does not change the
    ``beta`` block at the optimum.  Wald z statistics and 95 % intervals use the normal
    distribution, as ``summary()`` of both packages does.

    A fit whose random-intercept SD falls below 1e-4 is singular (lme4's ``boundary
    (singular) fit``); the message says so and the fixed-effect covariance is then computed
    with the SD held at its estimate.
    """
    if family not in _FAMILIES:
        raise AnalysisError(
            f"family {family!r} is not supported: use one of {', '.join(_FAMILIES)}"
        )
    if not 1 <= n_quadrature <= _MAX_QUADRATURE:
        raise AnalysisError(
            f"n_quadrature must be between 1 (Laplace) and {_MAX_QUADRATURE}, got {n_quadrature}"
        )
    frame = build_model_frame(
        data,
        formula,
        outcome_kind="binary" if family == "binomial" else "count",
        group=group,
        offset=offset,
        exposure=exposure,
    )
    codes, labels = group_codes(frame.groups)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    outcome = frame.outcome[order]
    design = frame.design[order]
    offset_values = frame.offset[order]

    family_terms = _Family(family, outcome)
    objective = _Objective(
        family_terms, design, offset_values, sorted_codes, starts, len(labels), n_quadrature
    )
    beta_start = _start_values(family, outcome, design, offset_values)
    start = np.r_[beta_start, np.log(0.5)]
    if family == "negbin":
        start = np.r_[start, 0.0]

    optimum = optimize.minimize(
        objective.value_and_gradient,
        start,
        jac=True,
        method="BFGS",
        options={"gtol": 1e-6, "maxiter": max_iterations},
    )
    psi = np.asarray(optimum.x, dtype=float)
    iterations = int(optimum.nit)
    value, gradient = objective.value_and_gradient(psi)
    hessian = _hessian_from_gradient(objective, psi)
    # Newton polish: BFGS stops on a loose gradient; a few exact-curvature steps tighten it.
    for _ in range(10):
        if np.max(np.abs(gradient)) < 1e-8 or iterations >= max_iterations:
            break
        try:
            step = np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError:
            break
        candidate = psi - step
        candidate_value, candidate_gradient = objective.value_and_gradient(candidate)
        if not candidate_value <= value + 1e-9:
            break
        psi, value, gradient = candidate, candidate_value, candidate_gradient
        iterations += 1
        hessian = _hessian_from_gradient(objective, psi)

    n_fixed = design.shape[1]
    beta, log_sd, log_theta = objective.split(psi)
    sd = float(np.exp(log_sd))
    singular = sd < _BOUNDARY_SD
    gradient_ok = bool(np.max(np.abs(gradient[:n_fixed])) < _GRADIENT_TOLERANCE) and (
        singular or bool(np.max(np.abs(gradient)) < _GRADIENT_TOLERANCE)
    )
    kept = list(range(n_fixed)) if singular else list(range(psi.size))
    if singular and family == "negbin":
        kept.append(psi.size - 1)
    block = hessian[np.ix_(kept, kept)]
    try:
        eigenvalues = np.linalg.eigvalsh(block)
        positive_definite = bool(np.all(eigenvalues > 0))
        inverse = np.linalg.inv(block) if positive_definite else np.full_like(block, np.nan)
    except np.linalg.LinAlgError:
        positive_definite = False
        inverse = np.full_like(block, np.nan)
    covariance = inverse[:n_fixed, :n_fixed]
    covariance = 0.5 * (covariance + covariance.T)

    converged = gradient_ok and positive_definite and bool(np.isfinite(value))
    messages: list[str] = []
    if converged:
        messages.append(f"converged: largest gradient {np.max(np.abs(gradient)):.1e}")
    else:
        if not gradient_ok:
            messages.append(
                f"did not converge: largest gradient of -log L {np.max(np.abs(gradient)):.2e} "
                f"after {iterations} iterations ({optimum.message})"
            )
        if not positive_definite:
            messages.append("did not converge: the Hessian is not positive definite")
    if singular:
        messages.append(
            f"singular fit: random-intercept SD {sd:.2e} is at the boundary 0; standard errors "
            "hold it fixed"
        )
    # The conditional modes must be exact at the optimum, or the likelihood there is not.
    objective.mode_failures = 0
    objective(psi)
    if objective.mode_failures:
        converged = False
        messages.append("did not converge: the conditional modes failed at the optimum")

    modes_u = objective.modes
    names = frame.term_names
    n_parameters = psi.size
    return GLMMResult(
        coefficients=coefficient_table(names, beta, covariance),
        covariance=pd.DataFrame(covariance, index=list(names), columns=list(names)),
        random_intercept_sd=sd,
        theta=float(np.exp(log_theta)) if family == "negbin" else None,
        conditional_modes=pd.Series(sd * modes_u, index=pd.Index(labels, name=group)),
        loglik=-value,
        aic=2.0 * value + 2.0 * n_parameters,
        converged=converged,
        message="; ".join(messages),
        family=family,
        n_quadrature=n_quadrature,
        n_observations=int(outcome.size),
        n_groups=len(labels),
        n_dropped=frame.n_dropped,
        iterations=iterations,
    )
