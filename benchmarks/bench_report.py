"""DSMB report time (open and closed sessions, HTML + PDF) for 300 and 5,000 participants.

Usage::

    python -m benchmarks report [--participants 300 5000] [--seed 20250203]

For each size a trial is generated, written as a REDCap CSV export and imported as a snapshot
(not timed); then the open and the closed report are rendered. The baseline, measured in the
same run, is reading and verifying the snapshot (``read_snapshot``): the report time is printed
as a ratio to it. Targets: under 30 s for 300 and under 3 minutes for 5,000 participants.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "protocols" / "cbt-adjunct" / "protocol.yaml"
DICTIONARY = ROOT / "protocols" / "cbt-adjunct" / "redcap" / "data_dictionary.csv"
SAP = ROOT / "analysis" / "sap.yaml"
TARGETS = {300: 30.0, 5000: 60.0}  # issue 16: each session under 60 s at 5,000
T = TypeVar("T")


def _timed(work: Callable[[], T]) -> tuple[float, float, T]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def run(participants: int, seed: int, base: Path) -> int:
    """Benchmark one size; 0 when both reports meet the target."""
    from studyman.protocol.loader import load_protocol
    from studyman.reporting.report import render_dsmb_report
    from studyman.sources.offline import import_snapshot
    from studyman.sources.snapshot import read_snapshot
    from studyman.synthetic.generator import generate_trial

    protocol = load_protocol(PROTOCOL)
    trial = generate_trial(protocol, n_participants=participants, seed=seed)
    trial.records.to_csv(base / "records.csv", index=False)
    trial.randomization.to_csv(base / "randomization.csv", index=False)
    snapshot = import_snapshot(
        protocol, base / "records.csv", DICTIONARY, base / "snapshots", name="bench"
    ).path
    baseline, _, _ = _timed(lambda: read_snapshot(snapshot))
    target = TARGETS.get(participants)
    status = 0
    sessions: tuple[Literal["open", "closed"], ...] = ("open", "closed")
    for session in sessions:
        wall, cpu, report = _timed(
            partial(
                render_dsmb_report,
                protocol,
                snapshot,
                base / "out" / session,  # each session's folder carries its own facts.json
                session=session,
                randomization=base / "randomization.csv",
                sap=SAP,
            )
        )
        pdf = report.pdf
        size = pdf.stat().st_size / 1e6 if pdf is not None else 0.0
        verdict = ""
        if target is not None:
            verdict = f"  target < {target:.0f} s: {'met' if wall < target else 'MISSED'}"
            status |= int(wall >= target)
        print(
            f"{participants:>6} participants  {session:6}  wall {wall:6.1f} s  cpu {cpu:6.1f} s  "
            f"ratio to snapshot read {wall / baseline:6.1f}  pdf {size:.2f} MB{verdict}"
        )
    print(f"{participants:>6} participants  baseline: read_snapshot {baseline:.2f} s")
    return status


def main(argv: list[str]) -> int:
    """Entry point of ``python -m benchmarks report``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks report")
    parser.add_argument("--participants", type=int, nargs="+", default=[300, 5000])
    parser.add_argument("--seed", type=int, default=20250203)
    args = parser.parse_args(argv)
    status = 0
    for participants in args.participants:
        with tempfile.TemporaryDirectory(prefix="bench-report-") as directory:
            status |= run(participants, args.seed, Path(directory))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
