"""Graphical multiple testing (Bretz et al. 2009) against R reference values and by its laws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from studyman.stats.multiplicity import (
    TestingGraph,
    fixed_sequence_graph,
    graph_test,
    holm_graph,
)

REFERENCE = Path(__file__).parent / "reference" / "multiplicity_graph.json"
CASES = json.loads(REFERENCE.read_text(encoding="utf-8"))["cases"]


def _graph(case: dict[str, object]) -> TestingGraph:
    weights = case["weights"]
    transitions = case["transitions"]
    assert isinstance(weights, list)
    assert isinstance(transitions, list)
    names = tuple(f"H{i + 1}" for i in range(len(weights)))
    return TestingGraph(
        names=names,
        weights=tuple(float(w) for w in weights),
        transitions=tuple(tuple(float(g) for g in row) for row in transitions),
    )


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_adjusted_p_values_and_rejections_match_r(case: dict[str, object]) -> None:
    p_values = case["p_values"]
    assert isinstance(p_values, list)
    result = graph_test(_graph(case), p_values, float(case["alpha"]))  # type: ignore[arg-type]
    # R: base-R Bretz et al. (2009) Algorithm 2 (and p.adjust(holm) / cummax for the special cases)
    np.testing.assert_allclose(result.adjusted_p_values, case["adjusted_p_values"], rtol=1e-12)
    # R: Algorithm 1
    assert list(result.rejected) == case["rejected"]


def test_holm_graph_is_holm_and_fixed_sequence_is_cumulative_maximum() -> None:
    p = [0.011, 0.04, 0.013, 0.005]
    holm = graph_test(holm_graph(["a", "b", "c", "d"]), p, 0.05)
    # R: p.adjust(c(0.011, 0.04, 0.013, 0.005), "holm") = 0.033 0.040 0.033 0.020
    np.testing.assert_allclose(holm.adjusted_p_values, [0.033, 0.04, 0.033, 0.02], rtol=1e-12)
    sequence = graph_test(fixed_sequence_graph(["a", "b", "c"]), [0.01, 0.3, 0.001], 0.025)
    assert sequence.rejected == (True, False, False)  # testing stops at the first failure
    np.testing.assert_allclose(sequence.adjusted_p_values, [0.01, 0.3, 0.3])


def test_rejections_are_exactly_the_adjusted_p_values_at_most_alpha() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        m = int(rng.integers(2, 7))
        weights = rng.dirichlet(np.ones(m)) * rng.choice([1.0, 0.8])
        transitions = rng.dirichlet(np.ones(m), size=m)
        np.fill_diagonal(transitions, 0.0)
        graph = TestingGraph(
            names=tuple(str(i) for i in range(m)),
            weights=tuple(weights),
            transitions=tuple(tuple(row) for row in transitions),
        )
        p = rng.uniform(size=m) ** 3
        result = graph_test(graph, p.tolist(), 0.025)
        assert result.rejected == tuple(a <= 0.025 for a in result.adjusted_p_values)
        assert all(a >= x - 1e-15 for a, x in zip(result.adjusted_p_values, p, strict=True))


def test_a_hypothesis_with_p_one_keeps_its_weight_and_blocks_only_its_successors() -> None:
    graph = fixed_sequence_graph(["primary", "key_secondary"])
    result = graph_test(graph, [1.0, 0.0001], 0.025)
    assert result.rejected == (False, False)
    assert result.steps == ()


def test_steps_record_the_local_level_and_passed_weight() -> None:
    graph = TestingGraph(
        names=("H1", "H2", "H3"),
        weights=(1.0, 0.0, 0.0),
        transitions=((0.0, 0.5, 0.5), (0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
    )
    result = graph_test(graph, [0.001, 0.02, 0.012], 0.025)
    assert [s.rejected for s in result.steps] == ["H1", "H3", "H2"]
    assert result.steps[0].local_alpha == pytest.approx(0.025)
    assert result.steps[0].weights_after == {"H2": 0.5, "H3": 0.5}
    assert result.steps[1].local_alpha == pytest.approx(0.0125)
    assert result.steps[2].local_alpha == pytest.approx(0.025)


@pytest.mark.parametrize(
    ("weights", "transitions", "message"),
    [
        ((0.7, 0.7), ((0, 1), (1, 0)), "weights sum to 1.4"),
        ((1.0, -0.1), ((0, 1), (1, 0)), r"weights\[1\]"),
        ((1.0, 0.0), ((0.5, 0.5), (1, 0)), r"transitions\[0\]\[0\]"),
        ((1.0, 0.0), ((0, 1), (1.2, 0)), r"transitions\[1\] sums to 1.2"),
        ((1.0, 0.0), ((0, 1),), "1 rows given for 2"),
    ],
)
def test_an_invalid_graph_is_refused_naming_the_entry(
    weights: tuple[float, ...], transitions: tuple[tuple[float, ...], ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TestingGraph(names=("a", "b"), weights=weights, transitions=transitions)


def test_p_values_outside_zero_one_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        graph_test(holm_graph(["a", "b"]), [0.01, float("nan")], 0.05)
