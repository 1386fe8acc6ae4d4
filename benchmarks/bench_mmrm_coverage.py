"""Coverage of the MMRM's 95 % CI for the last-visit treatment difference under MAR dropout.

Run: ``.venv/bin/python -m benchmarks mmrm_coverage [--n 1000] [--subjects 200] [--visits 6]``.

Each simulated trial (see ``benchmarks.bench_mmrm.simulate_trial``: unstructured covariance,
baseline covariate, dropout after each visit with a probability rising with the value just
observed, i.e. missing at random) is analysed with ``fit_mmrm`` (unstructured, REML, Kenward-Roger
by default); the command reports how often the 95 % CI of the last-visit LS-mean difference
contains the true difference. With 1,000 trials the acceptance band is 93.6-96.4 % (about two
binomial standard errors around 95 %); the exit status is 0 inside the band, 1 outside.
"""

from __future__ import annotations

import os

# One BLAS thread: the matrices are small, and on a shared 2-core machine OpenBLAS's spinning
# threads made fits up to ten times slower. Must be set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import math
import statistics
import time

from benchmarks.bench_mmrm import simulate_trial
from studyman.errors import AnalysisError
from studyman.stats import fit_mmrm


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks mmrm_coverage", description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="number of simulated trials")
    parser.add_argument("--subjects", type=int, default=200, help="subjects per trial")
    parser.add_argument("--visits", type=int, default=6, help="post-baseline visits")
    parser.add_argument("--effect", type=float, default=2.0, help="true last-visit difference")
    parser.add_argument("--dropout", type=float, default=0.06, help="base dropout per visit")
    parser.add_argument(
        "--mar-slope", type=float, default=0.15, help="dropout logit per unit of outcome (0: MCAR)"
    )
    parser.add_argument("--df-method", default="kenward-roger")
    parser.add_argument("--seed", type=int, default=20261125)
    args = parser.parse_args(argv)

    covered = 0
    failed = 0
    estimates: list[float] = []
    std_errors: list[float] = []
    completers = 0.0
    start = time.perf_counter()
    for trial in range(args.n):
        data = simulate_trial(
            args.subjects,
            args.visits,
            effect=args.effect,
            seed=args.seed + trial,
            dropout=args.dropout,
            mar_slope=args.mar_slope,
        )
        completers += float((data["visit"] == args.visits).sum()) / args.subjects
        try:
            result = fit_mmrm(
                data,
                "change ~ baseline * visit + arm * visit",
                subject="subject",
                visit="visit",
                df_method=args.df_method,
            )
        except AnalysisError as error:
            failed += 1
            print(f"trial {trial}: {error}")
            continue
        last = result.lsmeans_contrasts("arm").iloc[-1]
        covered += int(last["ci_lower"] <= args.effect <= last["ci_upper"])
        estimates.append(float(last["estimate"]))
        std_errors.append(float(last["std_error"]))
    elapsed = time.perf_counter() - start
    analysed = args.n - failed
    coverage = covered / analysed if analysed else float("nan")
    half_width = 1.96 * math.sqrt(0.95 * 0.05 / max(analysed, 1))
    low, high = 0.95 - half_width, 0.95 + half_width
    print(
        f"trials {args.n} (failed {failed}), {args.subjects} subjects x {args.visits} visits, "
        f"mean completion {completers / args.n:.1%}, df {args.df_method}"
    )
    print(f"coverage of the 95 % CI for the last-visit difference: {coverage:.2%}")
    if len(estimates) > 1:
        mean_estimate = statistics.fmean(estimates)
        print(
            f"mean estimate {mean_estimate:.4f} (true {args.effect}, Monte-Carlo SE "
            f"{statistics.stdev(estimates) / math.sqrt(len(estimates)):.4f}); empirical SD "
            f"{statistics.stdev(estimates):.4f}, mean model SE {statistics.fmean(std_errors):.4f}"
        )
    print(f"acceptance band for {analysed} trials: {low:.2%} to {high:.2%}")
    print(f"time {elapsed:.1f} s ({elapsed / max(args.n, 1) * 1000:.0f} ms per trial)")
    inside = failed == 0 and low <= coverage <= high
    print("PASS" if inside else "FAIL")
    return 0 if inside else 1
