"""Random-intercept GLMM speed: studyman's fit_glmm against lme4::glmer and glmmTMB in one run.

Run: ``.venv/bin/python -m benchmarks glmm [--repeats N] [--no-r]``.

Cases: the adverse-event visits (886 rows, 240 participants) with a logistic GLMM by Laplace and
by 20-point adaptive quadrature (against ``lme4::glmer(nAGQ = 1 / 20)``) and an NB2 GLMM with a
log-exposure offset (against ``glmmTMB(family = nbinom2)``); and a simulated 2,000 participants
x 10 visits logistic GLMM with 20 points.  When ``Rscript`` is on the PATH the R fits are timed
in one R process with ``system.time`` (start-up excluded); medians and ratios are printed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from studyman.stats import fit_glmm
from studyman.stats.glmm import GLMMFamily

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "reference"


def simulate_visits(participants: int = 2000, visits: int = 10, *, seed: int = 1) -> pd.DataFrame:
    """Binary adverse-event indicator per visit with a normal random intercept (SD 0.9)."""
    rng = np.random.default_rng(seed)
    arm = rng.integers(0, 2, participants)
    intercept = rng.normal(0.0, 0.9, participants)
    ids = np.repeat(np.arange(participants), visits)
    visit = np.tile(np.arange(1, visits + 1), participants)
    eta = -0.5 + 0.3 * arm[ids] - 0.05 * visit + intercept[ids]
    return pd.DataFrame(
        {
            "SUBJID": ids,
            "ARM": np.where(arm[ids] == 1, "CBT+ADJ", "CBT"),
            "VISIT": visit,
            "ANY_AE": (rng.random(ids.size) < 1.0 / (1.0 + np.exp(-eta))).astype(int),
        }
    )


# name -> (data, formula, family, n_quadrature, exposure, R call on `d`)
Case = tuple[pd.DataFrame, str, GLMMFamily, int, str | None, str]


def _cases() -> dict[str, Case]:
    visits = pd.read_csv(DATA / "ae_visit.csv")
    simulated = simulate_visits()
    logistic_r = (
        "lme4::glmer(ANY_AE ~ ARM + factor(VISIT) + (1 | SUBJID), d, family = binomial, nAGQ = {n})"
    )
    return {
        "AE logistic Laplace": (
            visits,
            "ANY_AE ~ ARM + C(VISIT)",
            "binomial",
            1,
            None,
            logistic_r.format(n=1),
        ),
        "AE logistic AGQ 20": (
            visits,
            "ANY_AE ~ ARM + C(VISIT)",
            "binomial",
            20,
            None,
            logistic_r.format(n=20),
        ),
        "AE NB2 Laplace + offset": (
            visits,
            "N_AE ~ ARM + C(VISIT)",
            "negbin",
            1,
            "DAYS",
            "glmmTMB::glmmTMB(N_AE ~ ARM + factor(VISIT) + offset(log(DAYS)) + (1 | SUBJID), d,"
            " family = glmmTMB::nbinom2)",
        ),
        "sim 2000x10 logistic AGQ 20": (
            simulated,
            "ANY_AE ~ ARM + C(VISIT)",
            "binomial",
            20,
            None,
            logistic_r.format(n=20),
        ),
    }


_R_SCRIPT = r"""
suppressPackageStartupMessages({library(lme4); library(glmmTMB)})
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
call <- parse(text = args[2])[[1]]
repeats <- as.integer(args[3])
times <- replicate(repeats, system.time(eval(call))[["elapsed"]])
cat(median(times), "\n")
"""


def _time_r(data: pd.DataFrame, call: str, repeats: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "data.csv"
        script = Path(tmp) / "bench.R"
        data.to_csv(csv, index=False)
        script.write_text(_R_SCRIPT)
        done = subprocess.run(
            ["Rscript", str(script), str(csv), call, str(repeats)],
            capture_output=True,
            text=True,
            check=True,
            timeout=3600,
        )
    return float(done.stdout.split()[-1])


def _median_time(func: Callable[[], object], repeats: int) -> float:
    func()  # warm-up (imports)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks glmm", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median)")
    parser.add_argument("--no-r", action="store_true", help="skip R even if Rscript exists")
    args = parser.parse_args(argv)
    use_r = not args.no_r and shutil.which("Rscript") is not None

    header = f"{'case':30} {'studyman s':>11}"
    if use_r:
        header += f" {'R s':>9} {'R / studyman':>13}"
    print(header)
    for name, (data, formula, family, points, exposure, r_call) in _cases().items():
        repeats = args.repeats if len(data) < 5000 else 1

        def fit(
            data: pd.DataFrame = data,
            formula: str = formula,
            family: GLMMFamily = family,
            points: int = points,
            exposure: str | None = exposure,
        ) -> object:
            return fit_glmm(
                data,
                formula,
                group="SUBJID",
                family=family,
                n_quadrature=points,
                exposure=exposure,
            )

        ours = _median_time(fit, repeats)
        line = f"{name:30} {ours:11.3f}"
        if use_r:
            theirs = _time_r(data, r_call, repeats)
            line += f" {theirs:9.3f} {theirs / ours:12.1f}x"
        print(line, flush=True)
    return 0
