"""Item allocation: rating-scale items drawn to add up exactly to a total."""

from __future__ import annotations

import numpy as np

from studyman.synthetic.scores import allocate_items


def test_allocated_items_add_up_to_each_total_within_their_maxima() -> None:
    rng = np.random.default_rng(0)
    maxima = (4, 4, 2, 2, 3)
    totals = rng.integers(0, sum(maxima) + 1, size=2000)
    items = allocate_items(totals, maxima, (3.0, 1.0, 1.0, 0.2, 1.0), rng)
    assert items.shape == (2000, 5)
    assert (items.sum(axis=1) == totals).all()
    assert (items >= 0).all()
    assert (items <= np.asarray(maxima)).all()
    # A heavily weighted item fills first; a lightly weighted one last.
    middling = (totals > 3) & (totals < 10)
    means = items[middling].mean(axis=0)
    assert means[0] > means[1] > means[3]


def test_allocation_handles_empty_input_and_the_extremes() -> None:
    rng = np.random.default_rng(1)
    assert allocate_items(np.zeros(0, dtype=np.int64), (3, 3), (1.0, 1.0), rng).shape == (0, 2)
    full = allocate_items(np.asarray([0, 6]), (3, 3), (1.0, 1.0), rng)
    assert full.tolist() == [[0, 0], [3, 3]]
