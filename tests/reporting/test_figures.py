"""Figure details a board member would trip over: bands told apart, any number of arms."""

from __future__ import annotations

import itertools

from matplotlib.colors import to_rgb

from studyman.reporting.figures import _band_colour


def _luminance(colour: object) -> float:
    red, green, blue = to_rgb(colour)  # type: ignore[arg-type]
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def test_the_lowest_band_is_grey_and_neighbouring_bands_differ_visibly() -> None:
    for count in (2, 3, 5, 7):
        colours = [to_rgb(_band_colour(index, count)) for index in range(count)]  # type: ignore[arg-type]
        # "none" is neutral grey, every worse band coloured: no pale orange read as "none"
        assert len(set(colours[0])) == 1, count
        assert all(max(c) - min(c) > 0.2 for c in colours[1:]), count
        shades = [_luminance(colour) for colour in colours]
        # ever darker, each step large enough to see on paper
        steps = [before - after for before, after in itertools.pairwise(shades)]
        assert min(steps) > 0.05, (count, shades)
