"""The whole analysis plan on the demo-sized study: one process, two processes, two Dask workers.

Run: ``.venv/bin/python -m benchmarks analyze [--participants 300] [--imputations 100]
[--repeats 1]``.

Generates the reference study (seeded), imports it into a snapshot, locks a copy of
``analysis/sap.yaml`` with the requested number of imputations, then times
:func:`studyman.analysis.analyze.analyze` (ADaM derivation, every analysis, every output) with
a serial executor (the baseline), a two-process pool and a two-worker local Dask cluster, and
checks that all three wrote byte-identical files.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from studyman.analysis.analyze import analyze
from studyman.analysis.executor import DaskExecutor, Executor, ProcessExecutor, SerialExecutor
from studyman.analysis.lock import lock_sap

ROOT = Path(__file__).resolve().parents[1]


def _prepare(base: Path, participants: int, imputations: int) -> tuple[Path, Path, Path]:
    from studyman.protocol.loader import load_protocol
    from studyman.sources.offline import import_snapshot
    from studyman.synthetic.generator import generate_trial

    protocol = load_protocol(ROOT / "protocols" / "cbt-adjunct" / "protocol.yaml")
    trial = generate_trial(protocol, n_participants=participants, seed=20250203)
    trial.records.to_csv(base / "records.csv", index=False)
    trial.randomization.to_csv(base / "randomization.csv", index=False)
    snapshot = import_snapshot(
        protocol,
        base / "records.csv",
        ROOT / "protocols" / "cbt-adjunct" / "redcap" / "data_dictionary.csv",
        base / "snapshots",
        name="bench",
    ).path
    text = (ROOT / "analysis" / "sap.yaml").read_text(encoding="utf-8")
    sap = base / "sap.yaml"
    sap.write_text(text.replace("imputations: 100", f"imputations: {imputations}"), "utf-8")
    lock_sap(sap)
    return sap, snapshot, base / "randomization.csv"


def _time(run: Callable[[], dict[str, str]], repeats: int) -> tuple[float, dict[str, str]]:
    times, files = [], {}
    for _ in range(repeats):
        start = time.perf_counter()
        files = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), files


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks analyze")
    parser.add_argument("--participants", type=int, default=300)
    parser.add_argument("--imputations", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory() as temporary:
        base = Path(temporary)
        sap, snapshot, randomization = _prepare(base, args.participants, args.imputations)

        def run_with(executor: Executor, name: str) -> Callable[[], dict[str, str]]:
            def run() -> dict[str, str]:
                result = analyze(
                    sap, snapshot, base / f"out-{name}", randomization=randomization,
                    executor=executor,
                )  # fmt: skip
                return result.files

            return run

        results: dict[str, tuple[float, dict[str, str]]] = {}
        results["1 process"] = _time(run_with(SerialExecutor(), "serial"), args.repeats)
        processes = ProcessExecutor(workers=2)
        try:
            results["2 processes"] = _time(run_with(processes, "processes"), args.repeats)
        finally:
            processes.close()
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            executor = DaskExecutor(client)
            results["2-worker Dask"] = _time(run_with(executor, "dask"), args.repeats)
    baseline, reference_files = results["1 process"]
    print(
        f"whole plan: {args.participants} participants, {args.imputations} imputations "
        f"(median of {args.repeats})"
    )
    for name, (seconds, files) in results.items():
        same = "identical files" if files == reference_files else "FILES DIFFER"
        print(f"  {name:14} {seconds:7.2f} s  speed-up {baseline / seconds:4.2f}x  {same}")
    return 0 if all(files == reference_files for _, files in results.values()) else 1
