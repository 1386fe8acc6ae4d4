"""The pattern-aggregated likelihood engine against a direct subject-by-subject computation.

The objective is checked against the textbook REML / ML formula computed subject by subject; the
analytic gradient and observed-information Hessian against central differences.
"""

from __future__ import annotations

import numpy as np
import pytest

from studyman.stats._mmrm_engine import Engine, build_patterns
from studyman.stats.covariance import get_structure

N_VISITS = 4


def _data(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_subjects = 40
    rows = []
    for subject in range(n_subjects):
        visits = [v for v in range(N_VISITS) if rng.random() > 0.25] or [0]
        rows += [(subject, v) for v in visits]
    subjects = np.array([r[0] for r in rows], dtype=np.int64)
    visits = np.array([r[1] for r in rows], dtype=np.int64)
    arm = (subjects % 2).astype(float)
    x = np.column_stack(
        [
            np.ones(len(rows)),
            arm,
            *(visits == v for v in range(1, N_VISITS)),
            rng.normal(size=len(rows)),
        ]
    ).astype(float)
    y = x @ rng.normal(size=x.shape[1]) + rng.normal(size=len(rows)) * 2.0
    groups = (np.arange(n_subjects) % 2).astype(np.int64)
    return x, y, subjects, visits, groups


def _direct_objective(
    sigmas: list[np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    subjects: np.ndarray,
    visits: np.ndarray,
    groups: np.ndarray,
    reml: bool,
) -> float:
    p = x.shape[1]
    m_mat = np.zeros((p, p))
    c_vec = np.zeros(p)
    logdet = 0.0
    blocks = []
    for subject in np.unique(subjects):
        rows = np.flatnonzero(subjects == subject)
        sigma = sigmas[groups[subject]][np.ix_(visits[rows], visits[rows])]
        w = np.linalg.inv(sigma)
        logdet += np.linalg.slogdet(sigma)[1]
        m_mat += x[rows].T @ w @ x[rows]
        c_vec += x[rows].T @ w @ y[rows]
        blocks.append((rows, w))
    beta = np.linalg.solve(m_mat, c_vec)
    quad = sum(float((y[r] - x[r] @ beta) @ w @ (y[r] - x[r] @ beta)) for r, w in blocks)
    n = len(y)
    if reml:
        return (n - p) * np.log(2 * np.pi) + logdet + np.linalg.slogdet(m_mat)[1] + quad
    return n * np.log(2 * np.pi) + logdet + quad


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("structure_name", ["unstructured", "heterogeneous-ar1", "ante-dependence"])
def test_engine_objective_gradient_and_hessian(reml: bool, structure_name: str) -> None:
    x, y, subjects, visits, groups = _data()
    structure = get_structure(structure_name)
    patterns = build_patterns(x, y, subjects, visits, groups, N_VISITS)
    engine = Engine(patterns, structure, N_VISITS, 2, len(y), x.shape[1], reml)
    rng = np.random.default_rng(7)
    starts = []
    for _ in range(2):
        a = rng.normal(size=(N_VISITS, N_VISITS))
        starts.append(structure.start(a @ a.T + N_VISITS * np.eye(N_VISITS)))
    phi = np.concatenate(starts)
    evaluation = engine.evaluate(phi, order=2)
    direct = _direct_objective(engine.sigmas(phi), x, y, subjects, visits, groups, reml)
    assert evaluation.objective == pytest.approx(direct, rel=1e-11)

    assert evaluation.gradient is not None
    assert evaluation.hessian is not None
    step = 1e-5
    numeric_gradient = np.empty_like(phi)
    numeric_hessian = np.empty((phi.size, phi.size))
    for r in range(phi.size):
        up, down = phi.copy(), phi.copy()
        up[r] += step
        down[r] -= step
        numeric_gradient[r] = (engine.evaluate(up).objective - engine.evaluate(down).objective) / (
            2 * step
        )
        grad_up = engine.evaluate(up, order=1).gradient
        grad_down = engine.evaluate(down, order=1).gradient
        assert grad_up is not None
        assert grad_down is not None
        numeric_hessian[:, r] = (grad_up - grad_down) / (2 * step)
    scale = np.max(np.abs(evaluation.gradient))
    assert np.allclose(evaluation.gradient, numeric_gradient, atol=1e-6 * scale)
    hessian_scale = np.max(np.abs(evaluation.hessian))
    assert np.allclose(evaluation.hessian, numeric_hessian, atol=1e-5 * hessian_scale)
