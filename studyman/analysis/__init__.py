"""studyman.analysis: the prespecified analysis plan, ADaM-style derivations and plan execution.

``load_sap`` reads ``analysis/sap.yaml``; ``lock_sap``/``check_lock`` keep it locked;
``analyze`` runs the locked plan on a snapshot and writes every output; ``derive_adam``,
``run_plan`` and ``run_multiple_imputation`` are the pure steps underneath.
"""

from __future__ import annotations

from studyman.analysis.adam import AdamDatasets, derive_adam
from studyman.analysis.analyze import AnalyzeResult, analyze
from studyman.analysis.executor import (
    DaskExecutor,
    Executor,
    ProcessExecutor,
    SerialExecutor,
    make_executor,
)
from studyman.analysis.imputation import MIResult, rubin_pool, run_multiple_imputation
from studyman.analysis.lock import check_lock, lock_sap
from studyman.analysis.run import PlanRun, run_plan
from studyman.analysis.sap import AnalysisPlan, LoadedPlan, load_sap

__all__ = [
    "AdamDatasets",
    "AnalysisPlan",
    "AnalyzeResult",
    "DaskExecutor",
    "Executor",
    "LoadedPlan",
    "MIResult",
    "PlanRun",
    "ProcessExecutor",
    "SerialExecutor",
    "analyze",
    "check_lock",
    "derive_adam",
    "load_sap",
    "lock_sap",
    "make_executor",
    "rubin_pool",
    "run_multiple_imputation",
    "run_plan",
]
