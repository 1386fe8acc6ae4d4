"""Graphical multiple testing (Bretz et al. 2009): weights, a transition matrix, adjusted p-values.

A family of hypotheses H_1 … H_m is tested at a familywise error rate *alpha* by a graph: each
hypothesis starts with a share ``w_i`` of alpha (the weights, summing to at most 1) and, when it is
rejected, passes its share on along the edges ``g_ij`` of the transition matrix (row sums at most
1, zero diagonal). Fixed-sequence (hierarchical) testing and Holm's procedure are special cases
(:func:`fixed_sequence_graph`, :func:`holm_graph`).

References
----------
Bretz F, Maurer W, Brannath W, Posch M (2009). A graphical approach to sequentially rejective
multiple test procedures. *Statistics in Medicine* 28:586–604 (Algorithm 1: the sequentially
rejective test; Algorithm 2: adjusted p-values; the graph update of their equation (2)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "GraphStep",
    "GraphTestResult",
    "TestingGraph",
    "fixed_sequence_graph",
    "graph_test",
    "holm_graph",
]

FloatArray = npt.NDArray[np.float64]

#: Tolerance for "weights sum to at most 1" and "row sums at most 1" (floating-point plans).
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class TestingGraph:
    """Initial weights and transition matrix of a graphical multiple testing procedure.

    Parameters
    ----------
    names
        Hypothesis names, in the order of the weights and of the matrix rows and columns.
    weights
        Initial share of alpha of each hypothesis: non-negative, summing to at most 1.
    transitions
        ``transitions[i][j]`` is the fraction of H_i's weight that goes to H_j when H_i is
        rejected: non-negative, zero on the diagonal, each row summing to at most 1.
    """

    __test__ = False  # not a pytest test class despite the name

    names: tuple[str, ...]
    weights: tuple[float, ...]
    transitions: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        problems = graph_problems(self.names, self.weights, self.transitions)
        if problems:
            raise ValueError(problems[0])


def graph_problems(
    names: Sequence[str],
    weights: Sequence[float],
    transitions: Sequence[Sequence[float]],
) -> list[str]:
    """Every reason why (*names*, *weights*, *transitions*) is not a valid testing graph.

    Returns
    -------
    list of str
        One message per problem, each naming the entry (``weights[2]``, ``transitions[1][0]``);
        empty when the graph is valid.
    """
    m = len(names)
    problems: list[str] = []
    if m == 0:
        return ["a testing graph needs at least one hypothesis"]
    if len(set(names)) != m:
        problems.append("hypothesis names must be unique")
    if len(weights) != m:
        problems.append(f"weights: {len(weights)} given for {m} hypotheses")
    else:
        for index, weight in enumerate(weights):
            if not (np.isfinite(weight) and weight >= 0):
                problems.append(f"weights[{index}]: {weight} is not a non-negative number")
        if sum(weights) > 1 + _TOLERANCE:
            problems.append(f"weights sum to {sum(weights):.6g}, more than 1")
    if len(transitions) != m:
        problems.append(f"transitions: {len(transitions)} rows given for {m} hypotheses")
        return problems
    for i, row in enumerate(transitions):
        if len(row) != m:
            problems.append(f"transitions[{i}]: {len(row)} entries given for {m} hypotheses")
            continue
        for j, value in enumerate(row):
            if not (np.isfinite(value) and value >= 0):
                problems.append(f"transitions[{i}][{j}]: {value} is not a non-negative number")
        if row[i] != 0:
            problems.append(f"transitions[{i}][{i}]: a hypothesis cannot pass weight to itself")
        if sum(row) > 1 + _TOLERANCE:
            problems.append(f"transitions[{i}] sums to {sum(row):.6g}, more than 1")
    return problems


def holm_graph(names: Sequence[str]) -> TestingGraph:
    """Holm's procedure as a graph: equal weights, each rejection shared equally by the rest."""
    m = len(names)
    share = 1.0 / (m - 1) if m > 1 else 0.0
    return TestingGraph(
        names=tuple(names),
        weights=tuple(1.0 / m for _ in range(m)),
        transitions=tuple(tuple(0.0 if i == j else share for j in range(m)) for i in range(m)),
    )


def fixed_sequence_graph(names: Sequence[str]) -> TestingGraph:
    """Fixed-sequence (hierarchical) testing as a graph: all alpha on the first, passed on in
    order; testing stops at the first hypothesis not rejected."""
    m = len(names)
    return TestingGraph(
        names=tuple(names),
        weights=tuple(1.0 if i == 0 else 0.0 for i in range(m)),
        transitions=tuple(tuple(1.0 if j == i + 1 else 0.0 for j in range(m)) for i in range(m)),
    )


@dataclass(frozen=True)
class GraphStep:
    """One rejection: which hypothesis, at what local level, and the graph left after it."""

    step: int
    rejected: str
    p_value: float
    local_alpha: float
    weights_after: dict[str, float]


@dataclass(frozen=True)
class GraphTestResult:
    """Outcome of a graphical test: decisions, adjusted p-values and the rejection sequence."""

    graph: TestingGraph
    alpha: float
    p_values: tuple[float, ...]
    adjusted_p_values: tuple[float, ...]
    rejected: tuple[bool, ...]
    steps: tuple[GraphStep, ...]


def _remove(
    weights: FloatArray, transitions: FloatArray, active: list[int], j: int
) -> tuple[FloatArray, FloatArray]:
    """The graph after H_j is rejected (Bretz et al. 2009, Algorithm 1, step 2)."""
    new_weights = weights.copy()
    new_transitions = np.zeros_like(transitions)
    rest = [k for k in active if k != j]
    for lower in rest:
        new_weights[lower] = weights[lower] + weights[j] * transitions[j, lower]
        for k in rest:
            if k == lower:
                continue
            denominator = 1.0 - transitions[lower, j] * transitions[j, lower]
            if denominator > _TOLERANCE:
                new_transitions[lower, k] = (
                    transitions[lower, k] + transitions[lower, j] * transitions[j, k]
                ) / denominator
    new_weights[j] = 0.0
    return new_weights, new_transitions


def graph_test(graph: TestingGraph, p_values: Sequence[float], alpha: float) -> GraphTestResult:
    """Test the hypotheses of *graph* at familywise level *alpha* with the given p-values.

    Parameters
    ----------
    graph
        Initial weights and transition matrix.
    p_values
        One (unadjusted) p-value per hypothesis, in graph order, each in [0, 1]; a hypothesis
        without a result should be given p = 1 (it then keeps its weight and is never rejected).
    alpha
        Familywise error rate (one- or two-sided as the p-values are).

    Returns
    -------
    GraphTestResult
        Rejections (``adjusted_p <= alpha``), adjusted p-values and the sequence of rejections
        with the local level and the weights after each.

    Notes
    -----
    Adjusted p-values follow Bretz et al. (2009), Algorithm 2: at each step the hypothesis with
    the smallest ``p_i / w_i`` among those left is removed, its adjusted p-value is
    ``max(min(p_i / w_i, 1), previous adjusted p)``, and the graph is updated as after a
    rejection. A hypothesis is rejected by Algorithm 1 exactly when its adjusted p-value is at
    most alpha; ties in ``p_i / w_i`` go to the hypothesis listed first (as gMCP). The weighted
    Bonferroni tests are used, so the procedure controls the familywise error rate strongly
    whatever the correlation of the test statistics.
    """
    m = len(graph.names)
    p = np.asarray(p_values, dtype=float)
    if p.shape != (m,):
        raise ValueError(f"{len(p_values)} p-values given for {m} hypotheses")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("every p-value must lie in [0, 1]")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), not {alpha}")
    weights = np.asarray(graph.weights, dtype=float)
    transitions = np.asarray(graph.transitions, dtype=float)
    active = list(range(m))
    adjusted = np.ones(m)
    largest = 0.0
    while active:
        ratios = [p[i] / weights[i] if weights[i] > 0 else np.inf for i in active]
        j = active[int(np.argmin(ratios))]
        largest = max(min(float(np.min(ratios)), 1.0), largest)
        adjusted[j] = largest
        weights, transitions = _remove(weights, transitions, active, j)
        active.remove(j)
    # The rejection sequence at *alpha* (Algorithm 1), for the report.
    weights = np.asarray(graph.weights, dtype=float)
    transitions = np.asarray(graph.transitions, dtype=float)
    active = list(range(m))
    steps: list[GraphStep] = []
    while True:
        candidates = [i for i in active if weights[i] > 0 and p[i] <= weights[i] * alpha]
        if not candidates:
            break
        j = candidates[0]
        local = float(weights[j] * alpha)
        weights, transitions = _remove(weights, transitions, active, j)
        active.remove(j)
        steps.append(
            GraphStep(
                step=len(steps) + 1,
                rejected=graph.names[j],
                p_value=float(p[j]),
                local_alpha=local,
                weights_after={graph.names[k]: float(weights[k]) for k in active},
            )
        )
    rejected_names = {step.rejected for step in steps}
    return GraphTestResult(
        graph=graph,
        alpha=alpha,
        p_values=tuple(float(x) for x in p),
        adjusted_p_values=tuple(float(x) for x in adjusted),
        rejected=tuple(name in rejected_names for name in graph.names),
        steps=tuple(steps),
    )
