"""All edit checks on a generated study: time, peak memory, ratio to a plain pandas range pass.

Usage::

    python -m benchmarks validate [--participants 10000] [--seed 1] [--blinded]

The study (full schedules, planted errors) is generated first and written to a temporary Parquet
file; a fresh process then reads it and runs (1) one plain pandas pass of the dictionary's range
checks alone (the baseline) and (2) ``run_checks`` with every check, so the peak resident memory
reported is that of the checking process, not of the generator.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROTOCOL = Path(__file__).resolve().parents[1] / "protocols" / "cbt-adjunct"


def _range_pass(records: Any, dictionary: Any) -> int:
    """The baseline: one pandas pass of numeric range checks, nothing else."""
    import pandas as pd

    flagged = 0
    for field in dictionary.fields:
        if not field.validation.startswith(("integer", "number")) or field.name not in records:
            continue
        values = pd.to_numeric(records[field.name], errors="coerce")
        low = pd.to_numeric(pd.Series([field.minimum]), errors="coerce").iloc[0]
        high = pd.to_numeric(pd.Series([field.maximum]), errors="coerce").iloc[0]
        outside = pd.Series(False, index=values.index)
        if not pd.isna(low):
            outside |= values < low
        if not pd.isna(high):
            outside |= values > high
        flagged += int(outside.sum())
    return flagged


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _child(records_path: str, randomization_path: str | None, queue: Any) -> None:
    import pandas as pd

    from studyman.protocol.loader import load_protocol
    from studyman.validation.dictionary import dictionary_from_frame
    from studyman.validation.engine import run_checks

    protocol = load_protocol(PROTOCOL)
    dictionary = dictionary_from_frame(pd.DataFrame(protocol.redcap.dictionary.as_rows()))
    codes = frozenset(choice.code for choice in protocol.redcap.project.missing_codes)
    records = pd.read_parquet(records_path)
    randomization = pd.read_parquet(randomization_path) if randomization_path else None
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux: reset the high-water mark so the peak below is that of the checks alone
    reset = _reset_peak()

    wall, cpu = time.perf_counter(), time.process_time()
    flagged = _range_pass(records, dictionary)
    baseline = (time.perf_counter() - wall, time.process_time() - cpu)

    wall, cpu = time.perf_counter(), time.process_time()
    result = run_checks(
        records, protocol, dictionary, missing_codes=codes, randomization=randomization
    )
    checks = (time.perf_counter() - wall, time.process_time() - cpu)
    queue.put(
        {
            "rows": len(records),
            "columns": records.shape[1],
            "baseline": baseline,
            "baseline_flagged": flagged,
            "checks": checks,
            "findings": len(result.findings),
            "rss_loaded_mb": rss_loaded / 1024,
            "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "checks_peak_mb": _peak_mb() if reset else None,
        }
    )


def main(argv: list[str]) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks validate")
    parser.add_argument("--participants", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--blinded", action="store_true", help="No randomisation data (blinded).")
    args = parser.parse_args(argv)

    from studyman.protocol.loader import load_protocol
    from studyman.synthetic.generator import generate_trial

    started = time.perf_counter()
    trial = generate_trial(
        load_protocol(PROTOCOL), n_participants=args.participants, seed=args.seed, plant_errors=True
    )
    generated = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as folder:
        records_path = str(Path(folder) / "records.parquet")
        trial.records.to_parquet(records_path)
        randomization_path = None
        if not args.blinded:
            randomization_path = str(Path(folder) / "randomization.parquet")
            trial.randomization.to_parquet(randomization_path)
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        process = context.Process(target=_child, args=(records_path, randomization_path, queue))
        process.start()
        figures = queue.get()
        process.join()
    base_wall, base_cpu = figures["baseline"]
    wall, cpu = figures["checks"]
    print(
        f"participants randomised: {args.participants} "
        f"(seed {args.seed}); generated in {generated:.1f} s"
    )
    print(f"flat records: {figures['rows']} rows x {figures['columns']} columns")
    print(
        f"baseline (pandas range checks only): {base_wall:.2f} s wall, "
        f"{base_cpu:.2f} s CPU, {figures['baseline_flagged']} values out of range"
    )
    print(
        f"all checks ({'blinded' if args.blinded else 'unblinded'}): "
        f"{wall:.2f} s wall, {cpu:.2f} s CPU, {figures['findings']} findings"
    )
    print(f"ratio to baseline: {wall / base_wall:.1f}x wall, {cpu / base_cpu:.1f}x CPU")
    print(
        f"peak resident memory of the checking process: {figures['rss_peak_mb']:.0f} "
        f"MB (after loading the records: {figures['rss_loaded_mb']:.0f} MB)"
    )
    if figures["checks_peak_mb"] is not None:
        print(f"peak resident memory while checking: {figures['checks_peak_mb']:.0f} MB")
    target = "met" if wall < 20 and figures["rss_peak_mb"] < 4096 else "NOT met"
    print(f"target (< 20 s, < 4 GB): {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
