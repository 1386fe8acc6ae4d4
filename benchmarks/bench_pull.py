"""Pull benchmark: 5,000 participants with full schedules through the REDCap emulator.

``python -m benchmarks pull [--participants N] [--batch-sizes 100,1000] [--concurrency 2]``

What runs
---------
1. The synthetic generator writes the reference study's records for N participants (full
   schedules, logs, screen failures) into a copy of ``protocols/cbt-adjunct/redcap``.
2. The emulator serves that project from a **separate process** (so that server and client do not
   share one interpreter lock), on a free loopback port.
3. Each measurement runs in a fresh child process, which reports its wall time and its peak
   resident memory (``ru_maxrss``) and the resident memory after imports (its baseline):

   * ``single export``: one unbatched PyCap ``export_records(format_type="csv")`` of every record
     (the text only: no checks, no typing) — the baseline;
   * ``pull, batch B``: :func:`studyman.sources.pull.pull_snapshot` (IDs first, batches of B IDs,
     ``--concurrency`` in flight, every batch checked, typed, split per instrument, snapshot
     written), for each batch size given.

   Each measurement runs ``--repeat`` times (default 2), interleaved; the fastest run of each
   is reported (the machine is shared, so the slowest runs mostly measure other work).

The target (issue 2): the batched, typed pull takes at most 1.5 times the single export, with
memory bounded by the batch size (peak memory of the pull should not grow with the batch size
beyond the batches in flight).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "protocols" / "cbt-adjunct"
TOKEN = "BE4C0000000000000000000000000001"  # made up, for the local emulator only


def _rss_mb() -> float:
    """Peak resident memory of this process in MB (VmHWM; ru_maxrss survives exec on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _child(mode: str, url: str, out: str, batch_size: int, concurrency: int) -> int:
    """Run one measurement in this (fresh) process and print its figures as JSON."""
    from redcap.project import Project

    from studyman.sources.pull import pull_snapshot

    baseline = _rss_mb()
    started = time.perf_counter()
    detail: dict[str, Any] = {}
    if mode == "single":
        text = Project(url, TOKEN).export_records(
            format_type="csv", event_name="unique", export_data_access_groups=True
        )
        detail = {"bytes": len(text)}
    else:
        result = pull_snapshot(
            None, url, TOKEN, Path(out), batch_size=batch_size, concurrency=concurrency
        )
        detail = {
            "records": result.records,
            "rows": sum(result.table_rows.values()),
            "findings": result.findings,
        }
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_mb": _rss_mb(), "baseline_mb": baseline, **detail}))
    return 0


def _measure(
    mode: str, url: str, out: Path, batch_size: int = 0, concurrency: int = 1
) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_pull",
        "--child",
        mode,
        url,
        str(out),
        str(batch_size),
        str(concurrency),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{done.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def _start_emulator(project: Path) -> tuple[subprocess.Popen[str], str]:
    code = (
        "import sys; from studyman.cli import main; "
        f"sys.exit(main(['emulator', 'serve', {str(project)!r}, '--port', '0', "
        f"'--token', {TOKEN!r}]))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if " at " not in line:
        process.kill()
        raise RuntimeError(f"the emulator did not start: {line!r}")
    return process, line.rsplit(" at ", 1)[1].strip()


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest run, with the largest peak memory of all runs."""
    fastest = dict(min(runs, key=lambda figures: figures["seconds"]))
    fastest["peak_mb"] = max(figures["peak_mb"] for figures in runs)
    fastest["baseline_mb"] = min(figures["baseline_mb"] for figures in runs)
    return fastest


def main(argv: list[str]) -> int:
    """Run the benchmark; print figures and the ratio of each pull to the single export."""
    if argv[:1] == ["--child"]:
        child_mode, child_url, child_out, child_batch, child_concurrency = argv[1:6]
        return _child(child_mode, child_url, child_out, int(child_batch), int(child_concurrency))
    parser = argparse.ArgumentParser(prog="python -m benchmarks pull", description=__doc__)
    parser.add_argument("--participants", type=int, default=5000)
    parser.add_argument("--batch-sizes", default="100,1000")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20250203)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each measurement")
    args = parser.parse_args(argv)
    batch_sizes = [int(x) for x in args.batch_sizes.split(",") if x]

    from studyman.protocol import load_protocol
    from studyman.synthetic.generator import generate_trial
    from studyman.synthetic.writer import redcap_csv_text

    work = Path(tempfile.mkdtemp(prefix="studyman-bench-pull-"))
    try:
        started = time.perf_counter()
        trial = generate_trial(
            load_protocol(PROTOCOL), n_participants=args.participants, seed=args.seed
        )
        project = work / "project"
        shutil.copytree(PROTOCOL / "redcap", project)
        (project / "records.csv").write_text(redcap_csv_text(trial.records), encoding="utf-8")
        n_rows, n_columns = trial.records.shape
        records = trial.records.iloc[:, 0].nunique()
        del trial
        print(
            f"generated {args.participants} participants ({records} records incl. screen "
            f"failures, {n_rows} flat rows x {n_columns} columns) in "
            f"{time.perf_counter() - started:.1f} s"
        )
        started = time.perf_counter()
        server, url = _start_emulator(project)
        loaded = time.perf_counter() - started
        print(f"emulator (separate process) loaded the project in {loaded:.1f} s")
        try:
            singles: list[dict[str, Any]] = []
            pulls: dict[int, list[dict[str, Any]]] = {batch: [] for batch in batch_sizes}
            for _ in range(args.repeat):
                singles.append(_measure("single", url, work / "single"))
                for batch in batch_sizes:
                    out = work / f"pull-{batch}-{len(pulls[batch])}"
                    pulls[batch].append(_measure("pull", url, out, batch, args.concurrency))
        finally:
            server.terminate()
            server.wait(timeout=10)
        baseline = min(f["seconds"] for f in singles)
        rows: list[tuple[str, dict[str, Any]]] = [
            ("single export (unbatched, text only)", _best(singles))
        ]
        rows += [
            (f"pull, batch {batch}, concurrency {args.concurrency}", _best(figures))
            for batch, figures in pulls.items()
        ]
        print()
        print(f"fastest of {args.repeat} run(s) each; peak memory: the largest")
        print(
            f"{'measurement':<40} {'seconds':>8} {'ratio':>6} {'peak MB':>8} {'over imports':>12}"
        )
        for label, figures in rows:
            ratio = figures["seconds"] / baseline
            print(
                f"{label:<40} {figures['seconds']:>8.1f} {ratio:>6.2f} "
                f"{figures['peak_mb']:>8.0f} {figures['peak_mb'] - figures['baseline_mb']:>12.0f}"
            )
        worst = max(_best(f)["seconds"] for f in pulls.values()) / baseline
        print()
        print(
            f"target: batched typed pull <= 1.5 x single export: worst ratio {worst:.2f} "
            f"({'met' if worst <= 1.5 else 'NOT met'})"
        )
        print(
            "pull memory over imports by batch size: "
            + ", ".join(
                f"{batch}: {_best(f)['peak_mb'] - _best(f)['baseline_mb']:.0f} MB"
                for batch, f in pulls.items()
            )
        )
        print(f"(machine: {os.cpu_count()} CPUs; figures vary with the load of the machine)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
