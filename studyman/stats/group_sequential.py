"""Group-sequential monitoring: Lan–DeMets alpha spending, boundaries, conditional power.

A trial that looks at its primary comparison before the end spends its type I error over the
looks. With Lan–DeMets spending the boundary of a look depends only on the information fraction
*t* reached at that look (participants with the primary endpoint over those planned), so a DSMB
can meet when it meets: the boundary is recomputed at the fraction actually observed.

Everything is on the scale of the standardised statistic Z (positive favours the experimental
arm). Under the canonical joint distribution (Jennison & Turnbull 2000, §3.1) the score
``S_k = Z_k·√t_k`` is a Brownian motion with drift θ observed at ``t_1 < … < t_K = 1``:
``S_k − S_{k−1} ~ N(θ·(t_k − t_{k−1}), t_k − t_{k−1})`` independently, so θ is the expected Z at
full information.

References
----------
Lan KKG, DeMets DL (1983). Discrete sequential boundaries for clinical trials. *Biometrika*
70:659–663 (the spending functions).
Jennison C, Turnbull BW (2000). *Group Sequential Methods with Applications to Clinical Trials*.
Chapman & Hall/CRC (chapter 19: the recursive numerical integration used here; §7.2 and §10.6:
spending functions and conditional power).
Wassmer G, Brannath W (2016). *Group Sequential and Confirmatory Adaptive Designs in Clinical
Trials*. Springer (the definitions rpact implements; the reference values of the tests come from
rpact 3.3.4, ``tests/data/reference/group_sequential.R``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

__all__ = [
    "ConditionalPowerResult",
    "GroupSequentialDesign",
    "Sidedness",
    "SpendingType",
    "alpha_spending",
    "conditional_power",
    "design_drift",
    "group_sequential_design",
    "interim_conditional_power",
]

FloatArray = npt.NDArray[np.float64]
SpendingType = Literal["obrien_fleming", "pocock"]
Sidedness = Literal["one_sided", "two_sided"]

#: Gauss–Legendre nodes per panel; a panel is at most one standard deviation of the smallest
#: increment wide, where a Gaussian kernel is integrated to far below 1e-10.
_PANEL_NODES = 8
_LEGENDRE_X, _LEGENDRE_W = np.polynomial.legendre.leggauss(_PANEL_NODES)
#: Half-width of the integration range in standard deviations (the tail beyond is < 1e-18).
_RANGE_SD = 9.0
#: Smallest increment of information between two looks (a finer grid would be slow and such
#: looks are not a design anyone declares).
MIN_INFORMATION_STEP = 0.005
#: Largest boundary the root finder searches (a boundary beyond it spends nothing measurable).
_MAX_BOUNDARY = 38.0


def alpha_spending(
    t: float | Sequence[float] | FloatArray,
    alpha: float,
    spending: SpendingType,
    sidedness: Sidedness = "one_sided",
) -> FloatArray:
    """Cumulative type I error spent at information fraction(s) *t* (Lan & DeMets 1983).

    Parameters
    ----------
    t
        Information fraction(s) in [0, 1].
    alpha
        Total type I error (one-sided, or both sides together for a two-sided design).
    spending
        ``obrien_fleming``: ``α(t) = 2·(1 − Φ(Φ⁻¹(1 − α/2)/√t))``; ``pocock``:
        ``α(t) = α·ln(1 + (e − 1)·t)``.
    sidedness
        A two-sided design spends α/2 on each side.

    Returns
    -------
    numpy.ndarray
        The alpha spent up to each fraction (``alpha`` at t = 1, 0 at t = 0).

    Notes
    -----
    These are rpact's ``typeOfDesign = "asOF"`` and ``"asP"``. As in rpact, a two-sided design
    spends the one-sided function of α/2 on each side, so its O'Brien–Fleming spending is
    ``2·α_OF(t; α/2)``, not ``α_OF(t; α)`` (the Pocock function is linear in α: no difference).
    """
    fractions = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)
    if spending == "obrien_fleming":
        sides = 2.0 if sidedness == "two_sided" else 1.0
        quantile = special.ndtri(1.0 - alpha / (2.0 * sides))
        with np.errstate(divide="ignore"):
            spent = 2.0 * sides * special.ndtr(-quantile / np.sqrt(fractions))
        return np.where(fractions > 0, spent, 0.0)
    if spending == "pocock":
        return np.asarray(alpha * np.log1p((math.e - 1.0) * fractions), dtype=np.float64)
    raise ValueError(f"unknown spending type {spending!r}: expected obrien_fleming or pocock")


@dataclass(frozen=True)
class _State:
    """The sub-density of the score S over the continuation region after a look.

    ``points`` are integration nodes and ``mass`` the density times the quadrature weight, so
    that ``∫ g(s)·h(s) ds ≈ Σ mass·h(points)``. A point mass (the start, or an observed look) is
    one node with its probability.
    """

    information: float
    points: FloatArray
    mass: FloatArray


def _start(information: float = 0.0, score: float = 0.0) -> _State:
    return _State(information, np.array([score]), np.array([1.0]))


def _exit_probabilities(
    state: _State, information: float, drift: float, upper: float, lower: float
) -> tuple[float, float]:
    """P(S at *information* ≥ upper·√I) and P(≤ lower·√I), continuing from *state*."""
    step = information - state.information
    sd = math.sqrt(step)
    mean = state.points + drift * step
    root = math.sqrt(information)
    up = float(state.mass @ special.ndtr((mean - upper * root) / sd)) if upper < math.inf else 0.0
    down = (
        float(state.mass @ special.ndtr((lower * root - mean) / sd)) if lower > -math.inf else 0.0
    )
    return up, down


def _advance(
    state: _State, information: float, drift: float, upper: float, lower: float, panel: float
) -> _State:
    """The sub-density at *information* over the continuation region (lower, upper) on Z."""
    step = information - state.information
    sd = math.sqrt(step)
    root = math.sqrt(information)
    low = float(state.points.min()) + drift * step - _RANGE_SD * sd
    high = float(state.points.max()) + drift * step + _RANGE_SD * sd
    if lower > -math.inf:
        low = max(low, lower * root)
    if upper < math.inf:
        high = min(high, upper * root)
    if high <= low:
        return _State(information, np.array([0.5 * (low + high)]), np.array([0.0]))
    panels = max(1, math.ceil((high - low) / panel))
    edges = np.linspace(low, high, panels + 1)
    half = 0.5 * (edges[1:] - edges[:-1])
    middle = 0.5 * (edges[1:] + edges[:-1])
    points = (middle[:, None] + half[:, None] * _LEGENDRE_X[None, :]).ravel()
    weights = (half[:, None] * _LEGENDRE_W[None, :]).ravel()
    mean = state.points + drift * step
    density = np.zeros_like(points)
    # Chunks keep the kernel matrix small when both grids are fine.
    chunk = max(1, 2_000_000 // max(1, points.size))
    for begin in range(0, state.points.size, chunk):
        z = (points[:, None] - mean[None, begin : begin + chunk]) / sd
        density += np.exp(-0.5 * z * z) @ state.mass[begin : begin + chunk]
    density /= sd * math.sqrt(2.0 * math.pi)
    return _State(information, points, density * weights)


def _panel_width(rates: Sequence[float]) -> float:
    steps = np.diff(np.concatenate([[0.0], np.asarray(rates, dtype=np.float64)]))
    return float(np.sqrt(steps.min()))


def _check_rates(rates: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(r) for r in rates)
    if not values:
        raise ValueError("information rates: at least one look is needed")
    previous = 0.0
    for index, rate in enumerate(values):
        if not math.isfinite(rate) or rate <= 0.0 or rate > 1.0:
            raise ValueError(f"information rates[{index}] = {rate}: expected 0 < t ≤ 1")
        if rate - previous < MIN_INFORMATION_STEP:
            raise ValueError(
                f"information rates[{index}] = {rate}: expected at least "
                f"{MIN_INFORMATION_STEP} more than the look before ({previous})"
            )
        previous = rate
    if abs(values[-1] - 1.0) > 1e-12:
        raise ValueError(f"information rates end at {values[-1]}: the last look must be at t = 1")
    return values


@dataclass(frozen=True)
class GroupSequentialDesign:
    """Efficacy boundaries of a group-sequential design with Lan–DeMets alpha spending.

    Attributes
    ----------
    information_rates
        Information fraction of each look, increasing, the last 1.
    critical_values
        Efficacy boundary of each look on the Z scale (a two-sided design also stops at −c).
    alpha_spent
        Cumulative alpha spent up to each look (rpact ``alphaSpent``).
    stage_levels
        Nominal one-sided significance level of each boundary, ``1 − Φ(c)`` (rpact
        ``stageLevels``; for a two-sided design rpact reports the same one-sided value).
    alpha, sidedness, spending
        The declaration the boundaries come from.
    """

    information_rates: tuple[float, ...]
    critical_values: tuple[float, ...]
    alpha_spent: tuple[float, ...]
    stage_levels: tuple[float, ...]
    alpha: float
    sidedness: Sidedness
    spending: SpendingType

    def lower_values(self) -> tuple[float, ...]:
        """Lower (harm) boundaries: ``−c`` for a two-sided design, −∞ for a one-sided one."""
        if self.sidedness == "two_sided":
            return tuple(-c for c in self.critical_values)
        return tuple(-math.inf for _ in self.critical_values)


def group_sequential_design(
    information_rates: Sequence[float],
    *,
    alpha: float = 0.025,
    sidedness: Sidedness = "one_sided",
    spending: SpendingType = "obrien_fleming",
) -> GroupSequentialDesign:
    """Boundaries that spend *alpha* over the looks at *information_rates*.

    Parameters
    ----------
    information_rates
        Information fraction of each look (increasing, at least
        :data:`MIN_INFORMATION_STEP` apart, the last 1). At an interim analysis pass the
        fractions actually observed for the looks taken and the planned ones after.
    alpha
        Total type I error: one-sided, or both sides together when *sidedness* is two-sided.
    sidedness
        ``one_sided``: stop for efficacy when Z ≥ c_k; ``two_sided``: when |Z| ≥ c_k
        (symmetric boundaries).
    spending
        Spending function, see :func:`alpha_spending`.

    Returns
    -------
    GroupSequentialDesign

    Raises
    ------
    ValueError
        On an information rate out of order or range, or alpha outside (0, 0.5).

    Notes
    -----
    Boundaries are solved look by look: c_k makes the probability, under H0, of first crossing
    at look k equal to ``α(t_k) − α(t_{k−1})``. The crossing probabilities come from the
    recursive integration of Jennison & Turnbull (2000, ch. 19), here by composite
    Gauss–Legendre quadrature (8 nodes per panel of one standard deviation of the smallest
    increment, range ±9 SD), and Brent's method to 1e-12. The result agrees with rpact's
    ``getDesignGroupSequential(typeOfDesign = "asOF" | "asP")`` to 1e-6 (rpact solves to its own
    tolerance of 1e-8 in alpha). No futility boundary enters: futility rules are non-binding
    (rpact ``bindingFutility = FALSE``), so they do not change the efficacy boundaries.
    """
    rates = _check_rates(information_rates)
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha = {alpha}: expected 0 < alpha < 0.5")
    spent = alpha_spending(np.asarray(rates), alpha, spending, sidedness)
    two_sided = sidedness == "two_sided"
    panel = _panel_width(rates)
    state = _start()
    critical: list[float] = []
    previous = 0.0
    for rate, cumulative in zip(rates, spent, strict=True):
        target = float(cumulative) - previous

        def excess(
            c: float, state: _State = state, rate: float = rate, target: float = target
        ) -> float:
            up, down = _exit_probabilities(state, rate, 0.0, c, -c if two_sided else -math.inf)
            return up + down - target

        if target <= 0.0 or excess(_MAX_BOUNDARY) >= 0.0:
            boundary = _MAX_BOUNDARY
        else:
            boundary = float(optimize.brentq(excess, 0.0, _MAX_BOUNDARY, xtol=1e-13, rtol=1e-13))
        critical.append(boundary)
        state = _advance(state, rate, 0.0, boundary, -boundary if two_sided else -math.inf, panel)
        previous = float(cumulative)
    return GroupSequentialDesign(
        information_rates=rates,
        critical_values=tuple(critical),
        alpha_spent=tuple(float(s) for s in spent),
        stage_levels=tuple(float(special.ndtr(-c)) for c in critical),
        alpha=alpha,
        sidedness=sidedness,
        spending=spending,
    )


def _crossing_probability(
    design: GroupSequentialDesign,
    drift: float,
    state: _State,
    first_look: int,
) -> float:
    """P(crossing an upper boundary at a look from *first_look* on), starting from *state*."""
    rates = design.information_rates
    lowers = design.lower_values()
    panel = _panel_width(rates)
    total = 0.0
    for k in range(first_look, len(rates)):
        upper = design.critical_values[k]
        up, _ = _exit_probabilities(state, rates[k], drift, upper, lowers[k])
        total += up
        if k + 1 < len(rates):
            state = _advance(state, rates[k], drift, upper, lowers[k], panel)
    return total


def design_drift(design: GroupSequentialDesign, power: float) -> float:
    """The drift θ (expected Z at full information) at which *design* has *power*.

    Parameters
    ----------
    design
        The planned design (planned information rates).
    power
        Probability of crossing an efficacy boundary at some look, e.g. 0.9.

    Returns
    -------
    float
        θ; its square is rpact's ``getDesignCharacteristics(design)$shift``.

    Notes
    -----
    This is the effect the trial was sized for, on the Z scale: a trial sized for a difference
    δ with standard deviation σ has θ = δ/σ·√(n₁n₂/(n₁+n₂)) at its planned sample size.
    Power counts upper crossings only (for a two-sided design, efficacy in the direction of
    benefit).
    """
    if not 0.0 < power < 1.0:
        raise ValueError(f"power = {power}: expected 0 < power < 1")

    def shortfall(theta: float) -> float:
        return _crossing_probability(design, theta, _start(), 0) - power

    return float(optimize.brentq(shortfall, 0.0, 20.0, xtol=1e-12, rtol=1e-13))


def conditional_power(
    design: GroupSequentialDesign,
    *,
    look: int,
    z: float,
    drift: float,
) -> float:
    """Probability of crossing an efficacy boundary at a later look, given Z at *look*.

    Parameters
    ----------
    design
        Boundaries with the observed information fraction at *look* (see
        :func:`group_sequential_design`).
    look
        Index (0-based) of the current look; the later looks are ``look + 1 …``.
    z
        The standardised statistic observed at *look* (positive favours the experimental arm).
    drift
        The drift θ assumed for the rest of the trial (expected Z at full information):
        ``z / √t`` for the current trend, :func:`design_drift` for the design effect.

    Returns
    -------
    float
        The conditional power (0 at the last look, where nothing is left to cross).

    Notes
    -----
    Given ``S_k = z·√t_k``, the remaining scores are a Brownian motion with drift θ started at
    S_k (Jennison & Turnbull 2000, §10.6); the probability of a first upper crossing at
    each later look is integrated as the boundaries are. With a single look left it is
    ``1 − Φ((c_K − z·√t_k − θ·(1 − t_k))/√(1 − t_k))``. A lower (harm) boundary of a
    two-sided design ends the trial without success. Checked against rpact's
    ``getGroupSequentialProbabilities`` on the boundaries shifted by the conditional mean.
    """
    rates = design.information_rates
    if not 0 <= look < len(rates):
        raise ValueError(f"look = {look}: expected 0 … {len(rates) - 1}")
    if not math.isfinite(z) or not math.isfinite(drift):
        raise ValueError(f"z = {z}, drift = {drift}: expected finite numbers")
    if look == len(rates) - 1:
        return 0.0
    start = _start(rates[look], z * math.sqrt(rates[look]))
    return _crossing_probability(design, drift, start, look + 1)


@dataclass(frozen=True)
class ConditionalPowerResult:
    """Conditional power at an interim look under the current trend and the design effect."""

    current_trend: float
    design_effect: float
    trend_drift: float
    design_drift: float


def interim_conditional_power(
    design: GroupSequentialDesign,
    *,
    look: int,
    z: float,
    planned: GroupSequentialDesign,
    power: float,
) -> ConditionalPowerResult:
    """Conditional power under the current trend (θ = z/√t) and under the design effect.

    Parameters
    ----------
    design
        Boundaries at the observed information fractions.
    look
        Index of the current look.
    z
        Observed standardised statistic at *look*.
    planned
        The design as planned (its information rates give the design effect).
    power
        The power the trial was sized for.

    Returns
    -------
    ConditionalPowerResult
    """
    trend = z / math.sqrt(design.information_rates[look])
    effect = design_drift(planned, power)
    return ConditionalPowerResult(
        current_trend=conditional_power(design, look=look, z=z, drift=trend),
        design_effect=conditional_power(design, look=look, z=z, drift=effect),
        trend_drift=trend,
        design_drift=effect,
    )
