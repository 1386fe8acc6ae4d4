"""MMRM speed: studyman's fit_mmrm against R (nlme::gls in the same run; R mmrm's recorded times).

Run: ``.venv/bin/python -m benchmarks mmrm [--repeats N] [--no-r]``.

Cases: (a) fev_data, unstructured, fit + Kenward-Roger; (b) antidepressant, fit + Kenward-Roger;
(c) simulated 1,000 subjects x 10 visits with MAR dropout, fit + Satterthwaite and fit + KR.
When ``Rscript`` is on the PATH the same models are fitted with ``nlme::gls`` (corSymm + varIdent,
REML) in one R process, timed there with ``system.time`` (R start-up excluded). R mmrm is not in
Debian, so its medians are the ones recorded in the project's statistics reference.
"""

from __future__ import annotations

import os

# One BLAS thread: the matrices are small, and on a shared 2-core machine OpenBLAS's spinning
# threads made fits up to ten times slower. Must be set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

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

from studyman.stats import fit_mmrm

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "reference"

# R mmrm (TMB) medians on a 2-core machine, from the statistics reference
R_MMRM_SECONDS = {
    "fev fit + KR": 0.0465,
    "antidepressant fit + KR": 0.0600,
    "sim 1000x10 fit + Satterthwaite": 1.57,
    "sim 1000x10 fit + KR": 19.2,
}


def simulate_trial(
    n_subjects: int = 1000,
    n_visits: int = 10,
    *,
    effect: float = 2.0,
    seed: int = 1,
    dropout: float = 0.05,
    mar_slope: float = 0.15,
) -> pd.DataFrame:
    """One simulated two-arm trial with an unstructured covariance and MAR monotone dropout.

    The outcome is a change from baseline; the treatment effect grows linearly to ``effect`` at
    the last visit. After each visit a subject drops out with a probability that rises with the
    outcome just observed, by ``mar_slope`` on the logit scale per unit (missing at random: it
    depends on observed data only; 0 gives missing completely at random).
    """
    rng = np.random.default_rng(seed)
    visits = np.arange(1, n_visits + 1)
    sd = 3.0 + 0.3 * visits
    lag = np.abs(visits[:, None] - visits[None, :])
    correlation = 0.4 + 0.5 * 0.8**lag
    np.fill_diagonal(correlation, 1.0)
    covariance = correlation * np.outer(sd, sd)
    arm = rng.integers(0, 2, n_subjects)
    baseline = rng.normal(24.0, 4.0, n_subjects)
    mean = (
        -0.8 * visits[None, :]
        - 0.3 * (baseline[:, None] - 24.0)
        + effect * arm[:, None] * visits[None, :] / n_visits
    )
    outcome = mean + rng.multivariate_normal(np.zeros(n_visits), covariance, n_subjects)
    observed = np.ones((n_subjects, n_visits), dtype=bool)
    for j in range(n_visits - 1):
        logit = np.log(dropout / (1 - dropout)) + mar_slope * (outcome[:, j] - mean[:, j].mean())
        leave = observed[:, j] & (rng.random(n_subjects) < 1.0 / (1.0 + np.exp(-logit)))
        observed[leave, j + 1 :] = False
    rows = np.argwhere(observed)
    return pd.DataFrame(
        {
            "subject": rows[:, 0],
            "visit": pd.Categorical(visits[rows[:, 1]], categories=list(visits)),
            "arm": pd.Categorical(
                np.where(arm[rows[:, 0]] == 1, "active", "control"),
                categories=["control", "active"],
            ),
            "baseline": baseline[rows[:, 0]],
            "change": outcome[rows[:, 0], rows[:, 1]],
        }
    )


def _cases() -> dict[str, tuple[Callable[[], object], pd.DataFrame, str, str, str]]:
    fev = pd.read_csv(DATA / "fev_data.csv")
    fev["SEX"] = pd.Categorical(fev["SEX"], categories=["Male", "Female"])
    anti = pd.read_csv(DATA / "antidepressant.csv")
    anti["THERAPY"] = pd.Categorical(anti["THERAPY"], categories=["PLACEBO", "DRUG"])
    sim = simulate_trial()
    fev_formula = "FEV1 ~ ARMCD * AVISIT + RACE + SEX"
    anti_formula = "CHANGE ~ BASVAL * VISIT + THERAPY * VISIT"
    sim_formula = "change ~ baseline * visit + arm * visit"

    def run(
        data: pd.DataFrame, formula: str, subject: str, visit: str, df: str
    ) -> Callable[[], object]:
        return lambda: fit_mmrm(data, formula, subject=subject, visit=visit, df_method=df)

    return {
        "fev fit + KR": (
            run(fev, fev_formula, "USUBJID", "AVISIT", "kenward-roger"),
            fev.dropna(subset=["FEV1"]),
            fev_formula,
            "USUBJID",
            "AVISIT",
        ),
        "antidepressant fit + KR": (
            run(anti, anti_formula, "PATIENT", "VISIT", "kenward-roger"),
            anti,
            anti_formula,
            "PATIENT",
            "VISIT",
        ),
        "sim 1000x10 fit + Satterthwaite": (
            run(sim, sim_formula, "subject", "visit", "satterthwaite"),
            sim,
            sim_formula,
            "subject",
            "visit",
        ),
        "sim 1000x10 fit + KR": (
            run(sim, sim_formula, "subject", "visit", "kenward-roger"),
            sim,
            sim_formula,
            "subject",
            "visit",
        ),
    }


_R_SCRIPT = r"""
suppressPackageStartupMessages(library(nlme))
args <- commandArgs(trailingOnly = TRUE)
data <- read.csv(args[1], stringsAsFactors = TRUE)
visit <- args[3]; subject <- args[4]; repeats <- as.integer(args[5])
data[[visit]] <- factor(data[[visit]])
data$.visn <- as.integer(data[[visit]])
data$.subj <- factor(data[[subject]])
f <- as.formula(args[2])
times <- replicate(repeats, system.time(gls(f, data = data,
  correlation = corSymm(form = ~ .visn | .subj), weights = varIdent(form = ~ 1 | .visn),
  method = "REML", na.action = na.omit)))
clock <- args[6]
seconds <- if (clock == "cpu") times["user.self", ] + times["sys.self", ] else times["elapsed", ]
cat(median(seconds), "\n")
"""


def _time_nlme(
    data: pd.DataFrame, formula: str, subject: str, visit: str, repeats: int, clock: str
) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "data.csv"
        script = Path(tmp) / "bench.R"
        data.to_csv(csv, index=False)
        script.write_text(_R_SCRIPT)
        done = subprocess.run(
            ["Rscript", str(script), str(csv), formula, visit, subject, str(repeats), clock],
            capture_output=True,
            text=True,
            check=True,
            timeout=3600,
        )
    return float(done.stdout.split()[-1])


def _median_time(func: Callable[[], object], repeats: int, clock: str) -> float:
    timer = time.process_time if clock == "cpu" else time.perf_counter
    func()  # warm-up (imports, caches)
    times = []
    for _ in range(repeats):
        start = timer()
        func()
        times.append(timer() - start)
    return statistics.median(times)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks mmrm", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median)")
    parser.add_argument("--r-repeats", type=int, default=3, help="timed nlme::gls runs per case")
    parser.add_argument("--no-r", action="store_true", help="skip nlme::gls even if R exists")
    parser.add_argument(
        "--r-max-rows",
        type=int,
        default=None,
        help="skip nlme::gls on data with more rows (it takes minutes on the simulated trial)",
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall time, or CPU time of the process (steadier on a loaded machine)",
    )
    args = parser.parse_args(argv)
    use_r = not args.no_r and shutil.which("Rscript") is not None

    header = f"{'case':34} {'studyman s':>11} {'R mmrm s':>9} {'ratio':>7}"
    if use_r:
        header += f" {'nlme s':>9} {'ratio':>7}"
    print(header)
    nlme_done: dict[str, float] = {}
    for name, (func, data, formula, subject, visit) in _cases().items():
        ours = _median_time(func, args.repeats, args.clock)
        reference = R_MMRM_SECONDS[name]
        line = f"{name:34} {ours:11.4f} {reference:9.4f} {reference / ours:6.1f}x"
        if use_r and args.r_max_rows is not None and len(data) > args.r_max_rows:
            line += f" {'skipped':>9}"
        elif use_r:
            key = f"{formula}|{len(data)}"
            if key not in nlme_done:
                # nlme::gls takes about a minute on the simulated trial: time it once there
                repeats = args.r_repeats if len(data) < 2000 else 1
                nlme_done[key] = _time_nlme(data, formula, subject, visit, repeats, args.clock)
            nlme = nlme_done[key]
            line += f" {nlme:9.3f} {nlme / ours:6.1f}x"
        print(line, flush=True)
    print(f"{args.clock} clock; ratio = R time / studyman time (above 1: studyman faster).")
    if use_r:
        print("nlme::gls fits only (no df); it is timed once per data set and model.")
    return 0
