"""Item-level rating-scale scores drawn so that the items add up to a given total.

The generator first draws a participant's *total* score at each visit (where the treatment
effect and the within-participant correlation live) and then spreads that total over the
items. Doing it in this order keeps every stored total equal to the sum of its items.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["allocate_items"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def allocate_items(
    totals: IntArray,
    maxima: tuple[int, ...],
    weights: tuple[float, ...],
    rng: np.random.Generator,
) -> IntArray:
    """Spread each total over items with the given maxima, so that the items sum to it.

    Parameters
    ----------
    totals
        One total per row, ``0 <= total <= sum(maxima)``.
    maxima
        The highest score of each item (items score ``0..max``).
    weights
        Relative propensity of each item to carry points (same length as *maxima*).
    rng
        The random generator (the only source of randomness).

    Returns
    -------
    numpy.ndarray
        An integer array of shape ``(len(totals), len(maxima))`` whose rows sum to *totals*.

    Notes
    -----
    Each item of maximum ``m`` contributes ``m`` unit "slots"; a row's total ``T`` picks ``T``
    slots by weighted sampling without replacement (Efraimidis–Spirakis keys ``U**(1/w)``,
    largest first), and an item's score is the number of its slots picked. This is exact
    (rows always sum to ``T``, items never exceed their maximum), vectorised over rows, and
    makes heavily weighted items fill first, which gives realistic item profiles: at low totals
    only the core items (depressed mood, insomnia, ...) carry points.
    """
    totals = np.asarray(totals, dtype=np.int64)
    n_rows = totals.shape[0]
    slot_item = np.repeat(np.arange(len(maxima)), maxima)
    slot_weight = np.repeat(np.asarray(weights, dtype=np.float64), maxima)
    if n_rows == 0:
        return np.zeros((0, len(maxima)), dtype=np.int64)
    capacity = int(slot_item.shape[0])
    clipped = np.clip(totals, 0, capacity)
    uniforms = rng.random((n_rows, capacity))
    keys = np.log(uniforms) / slot_weight  # log(U**(1/w)), monotone in the E–S key
    order = np.argsort(-keys, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(capacity)[None, :].repeat(n_rows, axis=0), axis=1)
    picked = rank < clipped[:, None]
    scores = np.zeros((n_rows, len(maxima)), dtype=np.int64)
    for item in range(len(maxima)):
        scores[:, item] = picked[:, slot_item == item].sum(axis=1)
    return scores
