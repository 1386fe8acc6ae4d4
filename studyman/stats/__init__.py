"""studyman.stats: MMRM matching SAS PROC MIXED, and the secondary and adverse-event models.

Pure numerics on numpy/scipy: data frames in, result objects out.
"""

from __future__ import annotations

from studyman.stats.glmm import GLMMResult, fit_glmm

__all__: list[str] = ["GLMMResult", "fit_glmm"]
