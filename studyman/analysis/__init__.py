"""studyman.analysis: the prespecified analysis plan, ADaM-style derivations and plan execution."""

from __future__ import annotations

from studyman.analysis.sap import AnalysisPlan, LoadedPlan, load_sap

__all__ = ["AnalysisPlan", "LoadedPlan", "load_sap"]
