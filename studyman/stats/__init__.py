"""studyman.stats: MMRM matching SAS PROC MIXED, and the secondary and adverse-event models.

Pure numerics on numpy/scipy: data frames in, result objects out.
"""

from __future__ import annotations

__all__: list[str] = []
