"""Coverage of the MMRM's 95 % CI for the last-visit treatment difference under MAR dropout.

Run: ``.venv/bin/python -m benchmarks mmrm_coverage [--n 1000] [--workers 2] [--csv FILE]``.

Each simulated trial (see ``benchmarks.bench_mmrm.simulate_trial``: unstructured covariance,
baseline covariate, dropout after each visit with a probability rising with the value just
observed, i.e. missing at random) is analysed with ``fit_mmrm`` (unstructured, REML, Kenward-Roger
by default); the command reports how often the 95 % CI of the last-visit LS-mean difference
contains the true difference. Trial ``t`` uses seed ``--seed + t`` whatever the number of workers,
so a run is reproducible and runs with seeds at least ``--n`` apart are independent.

The acceptance band is 95 % +- 1.96 binomial standard errors (93.6-96.4 % for 1,000 trials); the
exit status is 0 inside it, 1 outside. Being a 95 % band, a correctly calibrated method falls
outside it in about one run in twenty; the command therefore also prints the exact
(Clopper-Pearson) interval of the coverage and, for runs of several thousand trials, the coverage
of each block of 1,000, so a chance miss can be told from a miscalibrated method.

It also compares the spread of the estimates with three standard errors: the model-based
``(X' V^-1 X)^-1``, the Kenward-Roger adjusted one used for the CI, and one from the full observed
information of ``(beta, theta)``, which adds the beta-theta cross terms that are zero in
expectation under MCAR but not under MAR (Kenward & Molenberghs 1998): ``Phi + Phi G Cov(theta) G'
Phi`` with ``G_r = sum_i X_i' V_i^-1 dV_i/dtheta_r V_i^-1 r_i``. That diagnostic reads the fitted
model's internals; it is a check of the method, not part of the package's API.
"""

from __future__ import annotations

import os

# One BLAS thread: the matrices are small, and on a shared 2-core machine OpenBLAS's spinning
# threads made fits up to ten times slower. Must be set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import csv
import math
import multiprocessing
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

from benchmarks.bench_mmrm import simulate_trial
from studyman.errors import AnalysisError
from studyman.stats import MMRMResult, fit_mmrm
from studyman.stats.covariance import get_structure

FORMULA = "change ~ baseline * visit + arm * visit"
BLOCK = 1000


@dataclass(frozen=True)
class Settings:
    """What every simulated trial shares."""

    subjects: int
    visits: int
    effect: float
    dropout: float
    mar_slope: float
    df_method: str


@dataclass(frozen=True)
class TrialResult:
    """One analysed trial: the last-visit difference and its standard errors."""

    trial: int
    seed: int
    completion: float
    estimate: float
    std_error: float
    df: float
    ci_lower: float
    ci_upper: float
    covered: bool
    se_model: float
    se_observed: float
    error: str = ""


def _observed_information_variance(
    result: MMRMResult, data: pd.DataFrame, l_vec: npt.NDArray[np.float64]
) -> tuple[float, float]:
    """Variance of ``l' beta`` from ``Phi`` and from the full observed information."""
    inf = result._inference
    phi = result.covariance_parameters["estimate"].to_numpy()
    n_visits = len(inf.visit_levels)
    d_sigma = get_structure(result.covariance_structure).derivatives(phi, n_visits)
    sigma = result.covariance.to_numpy()
    x = np.asarray(inf.model_spec.get_model_matrix(data)[list(inf.column_names)], dtype=float)
    residual = data["change"].to_numpy(float) - x @ inf.beta
    subjects = data["subject"].to_numpy()
    visit_codes = data["visit"].cat.codes.to_numpy()
    g = np.zeros((x.shape[1], d_sigma.shape[0]))
    order = np.argsort(subjects, kind="stable")
    bounds = np.flatnonzero(np.diff(subjects[order])) + 1
    for rows in np.split(order, bounds):
        v = visit_codes[rows]
        w = np.linalg.inv(sigma[np.ix_(v, v)])
        g += np.einsum("pm,rmn,n->pr", x[rows].T @ w, d_sigma[:, v][:, :, v], w @ residual[rows])
    phi_matrix = inf.phi_matrix
    extra = phi_matrix @ g @ inf.theta_cov @ g.T @ phi_matrix
    return float(l_vec @ phi_matrix @ l_vec), float(l_vec @ (phi_matrix + extra) @ l_vec)


def run_trial(job: tuple[int, int, Settings]) -> TrialResult:
    """Simulate and analyse one trial (module level so worker processes can run it)."""
    trial, seed, settings = job
    data = simulate_trial(
        settings.subjects,
        settings.visits,
        effect=settings.effect,
        seed=seed,
        dropout=settings.dropout,
        mar_slope=settings.mar_slope,
    )
    completion = float((data["visit"] == settings.visits).sum()) / settings.subjects
    nan = float("nan")
    try:
        result = fit_mmrm(
            data, FORMULA, subject="subject", visit="visit", df_method=settings.df_method
        )
    except AnalysisError as error:
        return TrialResult(
            trial, seed, completion, nan, nan, nan, nan, nan, False, nan, nan, str(error)
        )
    last = result.lsmeans_contrasts("arm").iloc[-1]
    vectors = result._lsmean_vectors("arm")
    last_visit = result._inference.visit_levels[-1]
    l_vec = vectors[(last_visit, "active")] - vectors[(last_visit, "control")]
    var_model, var_observed = _observed_information_variance(result, data, l_vec)
    return TrialResult(
        trial,
        seed,
        completion,
        float(last["estimate"]),
        float(last["std_error"]),
        float(last["df"]),
        float(last["ci_lower"]),
        float(last["ci_upper"]),
        bool(last["ci_lower"] <= settings.effect <= last["ci_upper"]),
        math.sqrt(var_model),
        math.sqrt(var_observed),
    )


def _write_csv(path: Path, results: list[TrialResult]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(results[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in results)
    temporary.replace(path)


def _report(results: list[TrialResult], settings: Settings, elapsed: float) -> bool:
    analysed = [r for r in results if not r.error]
    n = len(analysed)
    failed = len(results) - n
    covered = sum(r.covered for r in analysed)
    coverage = covered / n if n else float("nan")
    print(
        f"trials {len(results)} (failed {failed}), {settings.subjects} subjects x "
        f"{settings.visits} visits, mean completion "
        f"{statistics.fmean(r.completion for r in results):.1%}, df {settings.df_method}"
    )
    for r in results:
        if r.error:
            print(f"  trial {r.trial} (seed {r.seed}): {r.error}")
    half_width = 1.96 * math.sqrt(0.95 * 0.05 / max(n, 1))
    low, high = 0.95 - half_width, 0.95 + half_width
    exact = stats.binomtest(covered, n).proportion_ci(0.95, method="exact") if n else None
    print(
        f"coverage of the 95 % CI for the last-visit difference: {coverage:.2%} "
        f"(Monte-Carlo SE {math.sqrt(coverage * (1 - coverage) / max(n, 1)):.2%}"
        + (f"; exact 95 % interval {exact.low:.2%} to {exact.high:.2%})" if exact else ")")
    )
    if n > 1:
        estimates = [r.estimate for r in analysed]
        mean_estimate = statistics.fmean(estimates)
        sd = statistics.stdev(estimates)
        print(
            f"mean estimate {mean_estimate:.4f} (true {settings.effect}, Monte-Carlo SE "
            f"{sd / math.sqrt(n):.4f}); empirical SD {sd:.4f} (relative Monte-Carlo SE "
            f"{1 / math.sqrt(2 * (n - 1)):.1%})"
        )
        for label, values in (
            ("model-based (X'V^-1X)^-1", [r.se_model for r in analysed]),
            (f"{settings.df_method}, used for the CI", [r.std_error for r in analysed]),
            ("full observed information", [r.se_observed for r in analysed]),
        ):
            rms = math.sqrt(statistics.fmean(v * v for v in values))
            print(f"  root mean square SE, {label}: {rms:.4f} ({rms / sd:.3f} x empirical SD)")
    if n >= 2 * BLOCK:
        blocks = [
            statistics.fmean(r.covered for r in analysed[start : start + BLOCK])
            for start in range(0, n - BLOCK + 1, BLOCK)
        ]
        block_half = 1.96 * math.sqrt(0.95 * 0.05 / BLOCK)
        inside_blocks = sum(0.95 - block_half <= b <= 0.95 + block_half for b in blocks)
        print(
            f"blocks of {BLOCK}: {inside_blocks} of {len(blocks)} inside "
            f"{0.95 - block_half:.2%}-{0.95 + block_half:.2%} (about 95 % expected); "
            f"SD of block coverage {statistics.stdev(blocks):.2%} (binomial "
            f"{math.sqrt(0.95 * 0.05 / BLOCK):.2%}); " + " ".join(f"{b:.1%}" for b in blocks)
        )
    print(f"acceptance band for {n} trials: {low:.2%} to {high:.2%}")
    print(f"time {elapsed:.1f} s ({elapsed / max(len(results), 1) * 1000:.0f} ms per trial)")
    inside = failed == 0 and low <= coverage <= high
    print("PASS" if inside else "FAIL")
    return inside


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
    parser.add_argument("--seed", type=int, default=20261125, help="seed of trial 0")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes (results do not depend on it)"
    )
    parser.add_argument("--csv", type=Path, help="write one row per trial to this file")
    args = parser.parse_args(argv)
    if args.n < 1 or args.workers < 1:
        parser.error("--n and --workers must be at least 1")

    settings = Settings(
        args.subjects, args.visits, args.effect, args.dropout, args.mar_slope, args.df_method
    )
    jobs = [(trial, args.seed + trial, settings) for trial in range(args.n)]
    start = time.perf_counter()
    if args.workers == 1:
        results = [run_trial(job) for job in jobs]
    else:
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            results = pool.map(run_trial, jobs, chunksize=25)
    elapsed = time.perf_counter() - start
    if args.csv is not None:
        _write_csv(args.csv, results)
    return 0 if _report(results, settings, elapsed) else 1
