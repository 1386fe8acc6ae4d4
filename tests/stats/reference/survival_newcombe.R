# Reference values for studyman.analysis.models.kaplan_meier, _log_rank and newcombe_interval.
# Data: survival_synthetic.csv (synthetic, made by numpy seed 20261203; no real participants).
# Run from this folder: Rscript survival_newcombe.R  (R from Debian: r-base-core, r-cran-survival)
library(survival)
d <- read.csv("survival_synthetic.csv")
km <- function(part) {
  fit <- survfit(Surv(time, event) ~ 1, data = part, conf.type = "none")
  keep <- fit$n.event > 0
  list(time = fit$time[keep], at_risk = fit$n.risk[keep], events = fit$n.event[keep],
       survival = fit$surv[keep], std_error = (fit$std.err * fit$surv)[keep])
}
lr <- survdiff(Surv(time, event) ~ group, data = d)
p_lr <- pchisq(lr$chisq, df = 1, lower.tail = FALSE)
# Newcombe (1998) method 10, hybrid score interval, from Wilson intervals (prop.test without
# continuity correction gives the Wilson interval).
wilson <- function(x, n) as.numeric(prop.test(x, n, correct = FALSE)$conf.int)
newcombe <- function(x1, n1, x2, n2) {
  p1 <- x1 / n1; p2 <- x2 / n2
  w1 <- wilson(x1, n1); w2 <- wilson(x2, n2)
  d <- p1 - p2
  c(d, d - sqrt((p1 - w1[1])^2 + (w2[2] - p2)^2), d + sqrt((w1[2] - p1)^2 + (p2 - w2[1])^2))
}
cases <- list(c(56, 70, 48, 80), c(9, 10, 3, 10), c(0, 25, 4, 30), c(12, 40, 12, 40), c(1, 3, 0, 7))
out <- list(
  km_A = km(d[d$group == "A", ]), km_B = km(d[d$group == "B", ]), log_rank_p = p_lr,
  newcombe = lapply(cases, function(x) list(input = x, result = newcombe(x[1], x[2], x[3], x[4]))),
  r_version = R.version.string, survival_version = as.character(packageVersion("survival"))
)
writeLines(jsonlite::toJSON(out, digits = 15, auto_unbox = TRUE), "survival_newcombe.json")
