"""The whole analysis plan on the demo-sized study: one process, two processes, two Dask workers.

Run: ``.venv/bin/python -m benchmarks analyze [--participants 300] [--imputations 100]
[--repeats 1]``; ``--bias R`` instead checks the primary estimate over R generated studies.

Generates the reference study (seeded), imports it into a snapshot, locks a copy of
``analysis/sap.yaml`` with the requested number of imputations, then times
:func:`studyman.analysis.analyze.analyze` (ADaM derivation, every analysis, every output) with
a serial executor (the baseline), a two-process pool and a two-worker local Dask cluster (after
one untimed warm-up each, taking turns), and checks that all three wrote byte-identical files.

``--bias R``: generates R studies (seeds 1..R) with a known true effect (−3 HAM-D points at
week 12, MAR dropout), runs the primary MMRM of the plan on each and reports the mean estimate,
its Monte-Carlo standard error (SD/√R), the z statistic against the truth and the coverage of the
95 % CI. Exit status 1 when |z| > 3 (bias beyond Monte-Carlo error).
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


def _bias(replicates: int, participants: int, truth: float = -3.0) -> int:
    import math

    from studyman.analysis.adam import choice_labels
    from studyman.analysis.analyze import derive_for_plan, read_randomization
    from studyman.analysis.models import mmrm_analysis
    from studyman.analysis.run import _Data
    from studyman.analysis.sap import MMRMAnalysis, load_sap
    from studyman.protocol.loader import load_protocol
    from studyman.sources.casting import ProjectDictionary
    from studyman.sources.offline import read_dictionary_csv
    from studyman.sources.tidy import TidyBuilder
    from studyman.synthetic.generator import generate_trial

    protocol = load_protocol(ROOT / "protocols" / "cbt-adjunct" / "protocol.yaml")
    metadata = read_dictionary_csv(
        ROOT / "protocols" / "cbt-adjunct" / "redcap" / "data_dictionary.csv"
    )
    loaded = load_sap(ROOT / "analysis" / "sap.yaml")
    primary = loaded.plan.analysis("primary_mmrm")
    assert isinstance(primary, MMRMAnalysis)
    estimates, covered = [], 0
    for seed in range(1, replicates + 1):
        trial = generate_trial(
            protocol, n_participants=participants, seed=seed, treatment_effect=truth
        )
        builder = TidyBuilder(ProjectDictionary(metadata))
        builder.add_batch(trial.records)
        tables = builder.finish().tables
        with tempfile.TemporaryDirectory() as temporary:
            path = Path(temporary) / "randomization.csv"
            trial.randomization.to_csv(path, index=False)
            randomization = read_randomization(path, choice_labels(metadata)["rand_arm"])
        adam = derive_for_plan(loaded, tables, metadata, randomization)
        frame, _, _ = _Data(loaded.plan, adam).efficacy(primary, "HAMD17")
        headline = mmrm_analysis(primary, frame, confidence_level=0.95).headline
        assert headline is not None
        estimates.append(headline.estimate)
        covered += headline.ci_lower <= truth <= headline.ci_upper
        low, high = headline.ci_lower, headline.ci_upper
        print(f"  seed {seed:3d}: {headline.estimate:7.3f} ({low:.3f}, {high:.3f})")
    mean = statistics.fmean(estimates)
    monte_carlo = statistics.stdev(estimates) / math.sqrt(len(estimates))
    z = (mean - truth) / monte_carlo
    print(
        f"primary MMRM over {replicates} studies of {participants}: mean {mean:.3f} "
        f"(truth {truth}), Monte-Carlo SE {monte_carlo:.3f}, z {z:.2f}, "
        f"95 % CI coverage {100 * covered / replicates:.1f} %"
    )
    return 0 if abs(z) <= 3 else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks analyze")
    parser.add_argument("--participants", type=int, default=300)
    parser.add_argument("--imputations", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--bias", type=int, default=0, metavar="R")
    args = parser.parse_args(argv)
    if args.bias:
        return _bias(args.bias, args.participants)
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

        processes = ProcessExecutor(workers=2)
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            runs = {
                "1 process": run_with(SerialExecutor(), "serial"),
                "2 processes": run_with(processes, "processes"),
                "2-worker Dask": run_with(DaskExecutor(client), "dask"),
            }
            # One untimed warm-up each (worker start-up, imports), then the three executors
            # take turns, so that a change in the machine's load hits all of them alike.
            for run in runs.values():
                run()
            times: dict[str, list[float]] = {name: [] for name in runs}
            files: dict[str, dict[str, str]] = {}
            for _ in range(args.repeats):
                for name, run in runs.items():
                    start = time.perf_counter()
                    files[name] = run()
                    times[name].append(time.perf_counter() - start)
            processes.close()
        results = {name: (statistics.median(times[name]), files[name]) for name in runs}
    baseline, reference_files = results["1 process"]
    print(
        f"whole plan: {args.participants} participants, {args.imputations} imputations "
        f"(median of {args.repeats})"
    )
    for name, (seconds, files) in results.items():
        same = "identical files" if files == reference_files else "FILES DIFFER"
        print(f"  {name:14} {seconds:7.2f} s  speed-up {baseline / seconds:4.2f}x  {same}")
    return 0 if all(files == reference_files for _, files in results.values()) else 1
