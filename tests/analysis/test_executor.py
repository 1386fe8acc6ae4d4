"""The executor interface: same seed, same numbers, whichever executor runs the tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studyman.analysis.executor import DaskExecutor, ProcessExecutor, SerialExecutor, spawn_seeds
from studyman.analysis.imputation import prepare_imputation_data, run_multiple_imputation

DATA = Path(__file__).resolve().parents[1] / "data" / "reference" / "antidepressant.csv"


def _draw(seed: np.random.SeedSequence) -> float:
    return float(np.random.default_rng(seed).standard_normal())


def test_spawned_seeds_give_independent_reproducible_streams() -> None:
    first = [_draw(s) for s in spawn_seeds(11, 4)]
    again = [_draw(s) for s in spawn_seeds(11, 4)]
    assert first == again
    assert len(set(first)) == 4


def _imputations(executor: object) -> pd.DataFrame:
    long = pd.read_csv(DATA)
    data = prepare_imputation_data(
        long,
        subject="PATIENT",
        visit="VISIT",
        outcome="CHANGE",
        arm="THERAPY",
        experimental="DRUG",
        baseline="BASVAL",
    )
    result = run_multiple_imputation(
        data,
        method="jump_to_reference",
        imputations=6,
        seed=2026,
        burn_in=5,
        deltas=(0.0, 2.0),
        chain_length=2,  # three chains: three tasks to spread over workers
        executor=executor,  # type: ignore[arg-type]
    )
    return result.per_imputation


def test_processes_and_dask_local_cluster_give_identical_results() -> None:
    distributed = pytest.importorskip("distributed")
    serial = _imputations(SerialExecutor())
    processes = ProcessExecutor(workers=2)
    try:
        local = _imputations(processes)
    finally:
        processes.close()
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        # By address, as `studyman analyze --dask tcp://...` does.
        executor = DaskExecutor(cluster.scheduler_address)
        try:
            on_dask = _imputations(executor)
        finally:
            executor.close()
    pd.testing.assert_frame_equal(serial, local, check_exact=True)
    pd.testing.assert_frame_equal(serial, on_dask, check_exact=True)
    assert serial["estimate"].nunique() == len(serial)
