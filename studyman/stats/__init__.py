"""studyman.stats: MMRM matching SAS PROC MIXED, and the secondary and adverse-event models.

Pure numerics on numpy/scipy: data frames in, result objects out.
"""

from __future__ import annotations

from studyman.stats.count_models import CountModelResult, fit_negative_binomial, fit_poisson
from studyman.stats.gee import GEEResult, fit_gee
from studyman.stats.glmm import GLMMResult, fit_glmm
from studyman.stats.mixed_lm import RandomSlopeResult, fit_random_slope
from studyman.stats.mmrm import MMRMConvergenceError, MMRMResult, fit_mmrm

__all__: list[str] = [
    "CountModelResult",
    "GEEResult",
    "GLMMResult",
    "MMRMConvergenceError",
    "MMRMResult",
    "RandomSlopeResult",
    "fit_gee",
    "fit_glmm",
    "fit_mmrm",
    "fit_negative_binomial",
    "fit_poisson",
    "fit_random_slope",
]
