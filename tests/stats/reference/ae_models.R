# Reference values for the adverse-event and secondary models (studyman/stats/glmm.py,
# count_models.py, gee.py, mixed_lm.py).  Regenerate from the repository root with
#
#     Rscript tests/stats/reference/ae_models.R
#
# R and packages from Debian: apt-get install -y r-base-core r-cran-lme4 r-cran-glmmtmb
# r-cran-geepack.  Writes tests/stats/reference/ae_*.json and lmer_random_slope_antidepressant*.json.
# Tests read only the JSON files; they never need R.
suppressMessages({
  library(lme4)
  library(glmmTMB)
  library(geepack)
  library(jsonlite)
})

here <- "tests/stats/reference"
data_dir <- "tests/data/reference"
visit <- read.csv(file.path(data_dir, "ae_visit.csv"))
subject <- read.csv(file.path(data_dir, "ae_subject.csv"))
visit$VISIT_F <- factor(visit$VISIT)
visit <- visit[order(visit$SUBJID, visit$VISIT), ]

versions <- function(...) {
  pkgs <- c(...)
  c(list(R = R.version.string),
    setNames(lapply(pkgs, function(p) as.character(packageVersion(p))), pkgs))
}

# coefficient table with names translated to formulaic's spelling
coef_table <- function(tab, names_map) {
  out <- list()
  for (i in seq_len(nrow(tab))) {
    name <- rownames(tab)[i]
    if (!is.null(names_map[[name]])) name <- names_map[[name]]
    out[[name]] <- list(estimate = tab[i, 1], std_error = tab[i, 2])
  }
  out
}
names_map <- list(
  "(Intercept)" = "Intercept",
  "ARMCBT+ADJ" = "ARM[T.CBT+ADJ]",
  "VISIT_F2" = "C(VISIT)[T.2]",
  "VISIT_F3" = "C(VISIT)[T.3]",
  "VISIT_F4" = "C(VISIT)[T.4]"
)

write_reference <- function(name, value) {
  path <- file.path(here, paste0(name, ".json"))
  writeLines(toJSON(value, auto_unbox = TRUE, digits = NA, pretty = TRUE), path)
  cat("wrote", path, "\n")
}

# ---- logistic GLMM, random intercept: Laplace (nAGQ = 1) and 20-point AGQ --------------------
for (nagq in c(1L, 20L)) {
  fit <- glmer(ANY_AE ~ ARM + VISIT_F + (1 | SUBJID), data = visit, family = binomial,
               nAGQ = nagq)
  fe <- summary(fit)$coefficients
  se_rx <- sqrt(diag(as.matrix(suppressWarnings(vcov(fit, use.hessian = FALSE)))))
  write_reference(sprintf("ae_glmm_logistic_nagq%d", nagq), list(
    source = sprintf("lme4::glmer(ANY_AE ~ ARM + factor(VISIT) + (1 | SUBJID), family = binomial, nAGQ = %d)", nagq),
    versions = versions("lme4"),
    note = "std_error from vcov(): the finite-difference Hessian of the deviance in (theta, beta), use.hessian = TRUE; std_error_rx from the RX factor (beta given theta)",
    coefficients = coef_table(fe, names_map),
    std_error_rx = setNames(as.list(se_rx), sapply(rownames(fe), function(n) names_map[[n]])),
    random_intercept_sd = unname(getME(fit, "theta")),
    loglik = as.numeric(logLik(fit)),
    n_quadrature = nagq,
    conditional_modes_first10 = as.list(setNames(
      head(ranef(fit)$SUBJID[, 1], 10), head(rownames(ranef(fit)$SUBJID), 10)))
  ))
}

# lme4's default PIRLS tolerance (tolPwrss = 1e-7) leaves the Laplace deviance about 0.002 above
# the exact Laplace value, which moves the estimates by ~1e-3 relative.  The same fit with a tight
# tolerance, and glmmTMB (TMB's exact inner optimisation), give the exact Laplace optimum.
fit <- glmer(ANY_AE ~ ARM + VISIT_F + (1 | SUBJID), data = visit, family = binomial, nAGQ = 1L,
             control = glmerControl(tolPwrss = 1e-12, optimizer = "bobyqa"))
write_reference("ae_glmm_logistic_nagq1_tight", list(
  source = "lme4::glmer(ANY_AE ~ ARM + factor(VISIT) + (1 | SUBJID), family = binomial, nAGQ = 1, control = glmerControl(tolPwrss = 1e-12, optimizer = 'bobyqa'))",
  versions = versions("lme4"),
  note = "std_error from vcov() (finite-difference Hessian in (theta, beta))",
  coefficients = coef_table(summary(fit)$coefficients, names_map),
  random_intercept_sd = unname(getME(fit, "theta")),
  loglik = as.numeric(logLik(fit)),
  n_quadrature = 1L
))
fit <- glmmTMB(ANY_AE ~ ARM + VISIT_F + (1 | SUBJID), data = visit, family = binomial)
write_reference("ae_glmm_logistic_glmmtmb", list(
  source = "glmmTMB::glmmTMB(ANY_AE ~ ARM + factor(VISIT) + (1 | SUBJID), family = binomial)",
  versions = versions("glmmTMB"),
  note = "Laplace approximation; std_error from sdreport (inverse Hessian in all fixed parameters)",
  coefficients = coef_table(summary(fit)$coefficients$cond, names_map),
  random_intercept_sd = unname(attr(VarCorr(fit)$cond$SUBJID, "stddev")),
  loglik = as.numeric(logLik(fit))
))

# ---- Poisson GLMM with offset, 20-point AGQ (an extra check of the Poisson family) ----------
fit <- glmer(N_AE ~ ARM + VISIT_F + offset(log(DAYS)) + (1 | SUBJID), data = visit,
             family = poisson, nAGQ = 20)
write_reference("ae_glmm_poisson_nagq20", list(
  source = "lme4::glmer(N_AE ~ ARM + factor(VISIT) + offset(log(DAYS)) + (1 | SUBJID), family = poisson, nAGQ = 20)",
  versions = versions("lme4"),
  note = "std_error from vcov() (finite-difference Hessian in (theta, beta))",
  coefficients = coef_table(summary(fit)$coefficients, names_map),
  random_intercept_sd = unname(getME(fit, "theta")),
  loglik = as.numeric(logLik(fit)),
  n_quadrature = 20L
))

# ---- NB2 GLMM with offset (Laplace, TMB) ------------------------------------------------------
fit <- glmmTMB(N_AE ~ ARM + VISIT_F + offset(log(DAYS)) + (1 | SUBJID), data = visit,
               family = nbinom2)
write_reference("ae_glmm_negbin", list(
  source = "glmmTMB::glmmTMB(N_AE ~ ARM + factor(VISIT) + offset(log(DAYS)) + (1 | SUBJID), family = nbinom2)",
  versions = versions("glmmTMB"),
  note = "Laplace approximation; std_error from sdreport (inverse Hessian of the marginal log-likelihood in all fixed parameters)",
  coefficients = coef_table(summary(fit)$coefficients$cond, names_map),
  random_intercept_sd = unname(attr(VarCorr(fit)$cond$SUBJID, "stddev")),
  theta = unname(sigma(fit)),
  loglik = as.numeric(logLik(fit))
))

# ---- per subject: NB2 (glmmTMB, theta jointly) and Poisson GLM, log(DAYS) offset --------------
fit <- glmmTMB(N_AE ~ ARM + offset(log(DAYS)), data = subject, family = nbinom2)
write_reference("ae_nb2_subject", list(
  source = "glmmTMB::glmmTMB(N_AE ~ ARM + offset(log(DAYS)), data = ae_subject, family = nbinom2)",
  versions = versions("glmmTMB"),
  note = "std_error from the joint information of (beta, log theta); MASS::glm.nb holds theta fixed",
  coefficients = coef_table(summary(fit)$coefficients$cond, names_map),
  theta = unname(sigma(fit)),
  loglik = as.numeric(logLik(fit))
))
fit <- glm(N_AE ~ ARM + offset(log(DAYS)), data = subject, family = poisson)
write_reference("ae_poisson_subject", list(
  source = "stats::glm(N_AE ~ ARM + offset(log(DAYS)), data = ae_subject, family = poisson)",
  versions = versions("stats"),
  coefficients = coef_table(summary(fit)$coefficients, names_map),
  loglik = as.numeric(logLik(fit))
))

# ---- GEE, exchangeable, robust (sandwich) SE ------------------------------------------------------
fit <- geeglm(N_AE ~ ARM + offset(log(DAYS)), id = SUBJID, data = visit, family = poisson,
              corstr = "exchangeable")
write_reference("ae_gee_poisson", list(
  source = "geepack::geeglm(N_AE ~ ARM + offset(log(DAYS)), id = SUBJID, family = poisson, corstr = 'exchangeable')",
  versions = versions("geepack"),
  coefficients = coef_table(summary(fit)$coefficients, names_map),
  correlation = unname(summary(fit)$corr[1, 1])
))
fit <- geeglm(ANY_AE ~ ARM + VISIT_F, id = SUBJID, data = visit, family = binomial,
              corstr = "exchangeable")
write_reference("ae_gee_logistic", list(
  source = "geepack::geeglm(ANY_AE ~ ARM + factor(VISIT), id = SUBJID, family = binomial, corstr = 'exchangeable')",
  versions = versions("geepack"),
  coefficients = coef_table(summary(fit)$coefficients, names_map),
  correlation = unname(summary(fit)$corr[1, 1])
))

# ---- linear mixed model, random intercept and slope, REML --------------------------------------
anti <- read.csv(file.path(data_dir, "antidepressant.csv"))
anti <- anti[!is.na(anti$CHANGE), ]
anti$WEEK <- c(`4` = 1, `5` = 2, `6` = 4, `7` = 6)[as.character(anti$VISIT)]
lmer_map <- list("(Intercept)" = "Intercept", "THERAPYPLACEBO" = "THERAPY[T.PLACEBO]",
                 "WEEK" = "WEEK", "BASVAL" = "BASVAL",
                 "THERAPYPLACEBO:WEEK" = "THERAPY[T.PLACEBO]:WEEK")
for (reml in c(TRUE, FALSE)) {
  fit <- lmer(CHANGE ~ THERAPY * WEEK + BASVAL + (WEEK | PATIENT), data = anti, REML = reml,
              control = lmerControl(optimizer = "bobyqa",
                                    optCtrl = list(rhobeg = 0.1, rhoend = 1e-10, maxfun = 1e5)))
  vc <- as.data.frame(VarCorr(fit))
  write_reference(
    if (reml) "lmer_random_slope_antidepressant" else "lmer_random_slope_antidepressant_ml",
    list(
      source = sprintf("lme4::lmer(CHANGE ~ THERAPY * WEEK + BASVAL + (WEEK | PATIENT), REML = %s); WEEK = 1, 2, 4, 6 for VISIT 4, 5, 6, 7", reml),
      versions = versions("lme4"),
      coefficients = coef_table(summary(fit)$coefficients, lmer_map),
      intercept_variance = vc$vcov[1],
      slope_variance = vc$vcov[2],
      intercept_slope_covariance = vc$vcov[3],
      residual_variance = vc$vcov[4],
      loglik = as.numeric(logLik(fit))
    ))
}
