"""Fuzz the command line: damaged study files in, exit 0 or a one-line error out, never a hang.

Usage::

    python -m benchmarks fuzz [--cases 1000] [--seed 1] [--workers 2] [--timeout 120]
                              [--start 0] [--targets protocol,checks,...] [--heavy-share 0.25]

Each case (see ``benchmarks/fuzzing.py``) damages one file of a small valid study (protocol,
custom checks, analysis plan, records export, data dictionary, randomisation list, snapshot
manifest or tables) and runs the commands that read it, in a long-lived worker process. A
worker that has not answered within ``--timeout`` seconds is killed, the case counted as a hang,
and a fresh worker takes over. The baseline is the same commands on the undamaged study (each
target's undamaged case run twice in this run, the faster counting). Exit status 1 when any
case failed or hung.

Reproduce one case: ``python -m benchmarks fuzz --cases 1 --start N --seed S --workers 1``.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any


def _worker(
    connection: Connection,
    base_root: str,
    scratch: str,
    seed: int,
    targets: tuple[str, ...],
    heavy_share: float,
) -> None:
    from benchmarks import fuzzing

    fuzzing.SETTINGS.heavy_share = heavy_share
    base = fuzzing.Workspace(Path(base_root))
    while True:
        number = connection.recv()
        if number is None:
            return
        clean = number < 0
        case = -number - 1 if clean else number
        # the baseline (an undamaged case) runs every command, the slow ones too
        fuzzing.SETTINGS.heavy_share = 1.0 if clean else heavy_share
        try:
            result = fuzzing.run_case(base, Path(scratch), seed, case, targets, mutate=not clean)
        except Exception as error:  # the fuzzer's own bug: report it, keep the worker
            result = f"the fuzzer failed on this case: {type(error).__name__}: {error}"[:500]
        shutil.rmtree(Path(scratch) / f"case-{case}", ignore_errors=True)
        connection.send(result)


class _Pool:
    """Worker processes, each running one case at a time under a deadline."""

    def __init__(self, size: int, args: tuple[Any, ...], timeout: float) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.args = args
        self.timeout = timeout
        self.workers: list[tuple[Any, Connection]] = [self._start() for _ in range(size)]

    def _start(self) -> tuple[Any, Connection]:
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_worker, args=(child, *self.args), daemon=True)
        process.start()
        child.close()
        return process, parent

    def run(self, numbers: list[int], report: Any) -> None:
        pending = list(reversed(numbers))
        busy: dict[int, tuple[int, float]] = {}  # worker index -> (case number, deadline)
        while pending or busy:
            for index in range(len(self.workers)):
                if index not in busy and pending:
                    number = pending.pop()
                    self.workers[index][1].send(number)
                    busy[index] = (number, time.monotonic() + self.timeout)
            ready = wait(
                [self.workers[index][1] for index in busy],
                timeout=max(0.0, min(deadline for _, deadline in busy.values()) - time.monotonic()),
            )
            for index, (number, deadline) in list(busy.items()):
                process, connection = self.workers[index]
                if connection in ready:
                    try:
                        answer = connection.recv()
                        if isinstance(answer, str):
                            report(number, None, answer)
                        else:
                            report(number, answer, None)
                    except EOFError:  # the worker died (a crash of the interpreter itself)
                        report(number, None, f"worker exited with code {process.exitcode}")
                        self.workers[index] = self._start()
                    del busy[index]
                elif time.monotonic() > deadline:
                    process.kill()
                    process.join()
                    report(number, None, f"no answer within {self.timeout:.0f} s (hang)")
                    self.workers[index] = self._start()
                    del busy[index]

    def close(self) -> None:
        for process, connection in self.workers:
            with contextlib.suppress(OSError):
                connection.send(None)
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


def _command_name(shown: str) -> str:
    """``validate``, ``snapshot verify``, ``report dsmb``: the command without its options."""
    words = shown.split()
    return " ".join(words[:2]) if len(words) > 1 and not words[1].startswith("-") else words[0]


def _signature(failure: str) -> str:
    """Where a traceback ended (its last frame in studyman and its exception line)."""
    lines = [line.strip() for line in failure.strip().splitlines() if line.strip()]
    frames = [line for line in lines if line.startswith('File "') and "studyman" in line]
    where = frames[-1].split("studyman/", 1)[-1] if frames else ""
    return f"{where} | {lines[-1] if lines else ''}"[:220]


def main(argv: list[str]) -> int:
    """Run the fuzzer and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks fuzz")
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--start", type=int, default=0, help="Number of the first case.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0, help="Seconds per case.")
    parser.add_argument("--targets", default="", help="Comma-separated subset of the targets.")
    parser.add_argument(
        "--heavy-share",
        type=float,
        default=0.25,
        help="Share of cases that also run analyze and the DSMB report (slow).",
    )
    parser.add_argument("--verbose", action="store_true", help="One line per case.")
    args = parser.parse_args(argv)

    from benchmarks import fuzzing

    targets = tuple(t for t in args.targets.split(",") if t) or fuzzing.TARGET_NAMES
    unknown = sorted(set(targets) - set(fuzzing.TARGET_NAMES))
    if unknown:
        print(f"unknown target(s) {unknown}; choose from {fuzzing.TARGET_NAMES}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as folder:
        started = time.perf_counter()
        base = fuzzing.build_workspace(Path(folder) / "base")
        built = time.perf_counter() - started
        scratch = Path(folder) / "scratch"
        scratch.mkdir()
        pool = _Pool(
            args.workers,
            (str(base.root), str(scratch), args.seed, targets, args.heavy_share),
            args.timeout,
        )
        clean: dict[str, float] = {}
        results: list[Any] = []
        problems: list[tuple[int, str]] = []

        def report(number: int, result: Any, problem: str | None) -> None:
            if number < 0:
                if result is not None:
                    for command, _, took in result.commands:
                        name = _command_name(command)
                        clean[name] = min(clean.get(name, took), took)
                if problem or (result is not None and result.failures):
                    problems.append((number, problem or "the undamaged study fails"))
                return
            if problem is not None:
                problems.append((number, problem))
                print(f"case {number}: {problem}", flush=True)
                return
            results.append(result)
            if args.verbose or result.failures:
                print(result.describe(), flush=True)
            for command, failure in result.failures:
                print(f"  FAILED: {command}\n    {_signature(failure)}", flush=True)

        try:
            # the baseline first: each target's undamaged case, twice (the fastest run counts,
            # so a worker's first imports are not charged to it); negative numbers
            pool.run([-(index + 1) for index in range(len(targets))] * 2, report)
            run_started = time.perf_counter()
            pool.run(list(range(args.start, args.start + args.cases)), report)
            wall = time.perf_counter() - run_started
        finally:
            pool.close()

    failed = [r for r in results if r.failures]
    hangs = [p for p in problems if "hang" in p[1]]
    signatures = Counter(_signature(f) for r in failed for _, f in r.failures)
    seconds = sorted(r.seconds for r in results)
    commands = Counter(code for r in results for _, code, _ in r.commands)
    print(f"workspace built in {built:.1f} s; seed {args.seed}; targets {', '.join(targets)}")
    print(
        f"cases run: {len(results)} of {args.cases} (numbers {args.start}.."
        f"{args.start + args.cases - 1}), {sum(commands.values())} commands, "
        f"{args.workers} workers, {wall:.0f} s wall"
    )
    print(
        "command exit codes: "
        + ", ".join(f"{code}: {count}" for code, count in sorted(commands.items()))
    )
    if seconds:
        p95 = seconds[min(len(seconds) - 1, int(0.95 * len(seconds)))]
        print(
            f"time per case: mean {statistics.fmean(seconds):.2f} s, median "
            f"{statistics.median(seconds):.2f} s, p95 {p95:.2f} s, max {seconds[-1]:.2f} s"
        )
    damaged: dict[str, list[float]] = {}
    for result in results:
        for command, _, took in result.commands:
            damaged.setdefault(_command_name(command), []).append(took)
    if clean:
        print("per command, damaged input vs the undamaged study (baseline, same run):")
        for name, took in sorted(clean.items()):
            runs = damaged.get(name, [])
            mean = statistics.fmean(runs) if runs else float("nan")
            print(
                f"  {name:16} baseline {took:6.2f} s; damaged mean {mean:6.2f} s "
                f"over {len(runs)} runs, max {max(runs, default=float('nan')):6.2f} s; "
                f"ratio {mean / took if took else float('nan'):.2f}x"
            )
    by_target = Counter(r.target for r in results)
    print("cases per target: " + ", ".join(f"{t} {n}" for t, n in sorted(by_target.items())))
    print(f"cases with a traceback: {len(failed)}; distinct tracebacks: {len(signatures)}")
    for signature, count in signatures.most_common():
        print(f"  {count:4d} x {signature}")
    print(f"hangs (no answer within {args.timeout:.0f} s): {len(hangs)}")
    for number, problem in problems:
        if (number, problem) not in hangs:
            print(f"  other problem in case {number}: {problem}")
    first = [r.number for r in failed][:10] + [n for n, _ in hangs][:10]
    if first:
        print(
            "reproduce: python -m benchmarks fuzz --workers 1 --verbose "
            f"--seed {args.seed} --cases 1 --start N  (N in {sorted(first)})"
        )
    return 1 if failed or problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
