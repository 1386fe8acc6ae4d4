# Reference values for studyman.stats.group_sequential (tests/stats/test_group_sequential.py).
# R 4.2 with rpact 3.3.4 (Debian r-cran-rpact). Run from the repository root:
#   Rscript tests/data/reference/group_sequential.R > tests/data/reference/group_sequential.json
suppressPackageStartupMessages({
  library(rpact)
  library(jsonlite)
})

type_of <- c(obrien_fleming = "asOF", pocock = "asP")
sided_of <- c(one_sided = 1, two_sided = 2)

design_case <- function(name, rates, alpha, sidedness, spending, power = NA) {
  beta <- if (is.na(power)) 0.2 else 1 - power
  d <- getDesignGroupSequential(
    kMax = length(rates), alpha = alpha, beta = beta, sided = sided_of[[sidedness]],
    typeOfDesign = type_of[[spending]], informationRates = rates
  )
  out <- list(
    name = name, information_rates = rates, alpha = alpha, sidedness = sidedness,
    spending = spending, critical_values = d$criticalValues, alpha_spent = d$alphaSpent,
    stage_levels = d$stageLevels
  )
  if (!is.na(power)) {
    out$power <- power
    # The drift at which the design has its power: sqrt of getDesignCharacteristics()$shift.
    out$design_drift <- sqrt(getDesignCharacteristics(d)$shift)
  }
  list(design = d, json = out)
}

designs <- list(
  design_case("of_one_sided_3_looks", c(0.3, 0.6, 1), 0.025, "one_sided", "obrien_fleming", 0.9),
  design_case("pocock_one_sided_4_looks", c(0.25, 0.5, 0.75, 1), 0.025, "one_sided", "pocock", 0.8),
  design_case("of_two_sided_observed_fraction", c(0.47, 1), 0.05, "two_sided", "obrien_fleming"),
  design_case("pocock_two_sided_2_looks", c(0.5, 1), 0.05, "two_sided", "pocock", 0.9),
  design_case("of_one_sided_unequal", c(0.2, 0.55, 0.8, 1), 0.025, "one_sided", "obrien_fleming", 0.85)
)

# Conditional power, 1: rpact's getConditionalPower for a means dataset (normal approximation);
# the drift at full information is thetaH1 / sd * sqrt(N / 4) for N participants in all.
cp_rpact <- function(name, rates, spending, n_stage, means1, means2, sd, theta, n_total) {
  d <- getDesignGroupSequential(
    kMax = length(rates), alpha = 0.025, sided = 1, typeOfDesign = type_of[[spending]],
    informationRates = rates
  )
  ds <- getDataset(
    n1 = n_stage, n2 = n_stage, means1 = means1, means2 = means2,
    stDevs1 = rep(sd, length(n_stage)), stDevs2 = rep(sd, length(n_stage))
  )
  sr <- getStageResults(d, dataInput = ds, normalApproximation = TRUE)
  look <- length(n_stage)
  remaining <- length(rates) - look
  per_stage <- (n_total - 2 * sum(n_stage)) / remaining
  cp <- getConditionalPower(sr, nPlanned = rep(per_stage, remaining), thetaH1 = theta,
                            assumedStDev = sd)
  list(
    name = name, source = "getConditionalPower", information_rates = rates, alpha = 0.025,
    sidedness = "one_sided", spending = spending, look = look - 1,
    z = sr$overallTestStatistics[look], drift = theta / sd * sqrt(n_total / 4),
    # conditionalPower is cumulative over the remaining stages: the last is the whole
    conditional_power = cp$conditionalPower[length(rates)]
  )
}

# Conditional power, 2: any design, from getGroupSequentialProbabilities on the boundaries of the
# remaining looks shifted by the conditional mean (the rest of the score process is a Brownian
# motion with drift theta started at z * sqrt(t_k)).
cp_probabilities <- function(name, rates, alpha, sidedness, spending, look, z, drift) {
  d <- getDesignGroupSequential(
    kMax = length(rates), alpha = alpha, sided = sided_of[[sidedness]],
    typeOfDesign = type_of[[spending]], informationRates = rates
  )
  k <- look + 1
  tk <- rates[k]
  later <- (k + 1):length(rates)
  step <- rates[later] - tk
  shift <- z * sqrt(tk) + drift * step
  upper <- (d$criticalValues[later] * sqrt(rates[later]) - shift) / sqrt(step)
  lower <- if (sidedness == "two_sided") {
    (-d$criticalValues[later] * sqrt(rates[later]) - shift) / sqrt(step)
  } else {
    rep(-Inf, length(later))
  }
  p <- getGroupSequentialProbabilities(rbind(lower, upper), step / (1 - tk))
  list(
    name = name, source = "getGroupSequentialProbabilities", information_rates = rates,
    alpha = alpha, sidedness = sidedness, spending = spending, look = look, z = z,
    drift = drift, conditional_power = sum(p[3, ] - p[2, ])
  )
}

conditional <- list(
  cp_rpact("of_2_looks_half", c(0.5, 1), "obrien_fleming", c(50), c(3.0), c(1.0), 6, 2, 200),
  cp_rpact("of_3_looks_first", c(1 / 3, 2 / 3, 1), "obrien_fleming", c(50), c(2.2), c(1.0), 6,
           1.5, 300),
  cp_rpact("pocock_3_looks_second", c(1 / 3, 2 / 3, 1), "pocock", c(50, 50), c(2.0, 2.6),
           c(1.0, 0.8), 6, 2, 300),
  cp_probabilities("of_3_looks_trend", c(0.3, 0.6, 1), 0.025, "one_sided", "obrien_fleming",
                   0, 1.2, 1.2 / sqrt(0.3)),
  cp_probabilities("pocock_4_looks_low_trend", c(0.25, 0.5, 0.75, 1), 0.025, "one_sided",
                   "pocock", 1, 0.4, 2.9),
  cp_probabilities("of_two_sided_negative_z", c(0.47, 1), 0.05, "two_sided", "obrien_fleming",
                   0, -0.8, 3.24),
  cp_probabilities("pocock_two_sided_3_looks", c(0.4, 0.7, 1), 0.05, "two_sided", "pocock",
                   0, 1.9, 3.24)
)

cat(toJSON(
  list(
    source = paste("rpact", packageVersion("rpact"), "on", R.version.string),
    designs = lapply(designs, function(x) x$json),
    conditional_power = conditional
  ),
  auto_unbox = TRUE, digits = NA, pretty = TRUE
), "\n")
