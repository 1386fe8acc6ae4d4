# Reference values for studyman's Satterthwaite F tests, from lmerTest (Debian r-cran-lmertest).
# Run from the repository root:  Rscript tests/stats/reference/mmrm_lmertest.R
# Writes tests/stats/reference/mmrm_lmertest.json. Data: tests/data/reference/fev_data.csv.
# A random-intercept model has compound-symmetry covariance (while the between-subject variance is
# positive, as here), and Satterthwaite df do not depend on how the variance parameters are
# parametrised, so lmerTest's df equal those of fit_mmrm(covariance="compound-symmetry").
suppressPackageStartupMessages({
  library(lmerTest)
  library(jsonlite)
})
fev <- read.csv("tests/data/reference/fev_data.csv", stringsAsFactors = FALSE)
fev <- fev[!is.na(fev$FEV1), ]
fev$ARMCD <- factor(fev$ARMCD, levels = c("PBO", "TRT"))
fev$AVISIT <- factor(fev$AVISIT, levels = c("VIS1", "VIS2", "VIS3", "VIS4"))
fev$RACE <- factor(fev$RACE, levels = c("Asian", "Black or African American", "White"))
fev$SEX <- factor(fev$SEX, levels = c("Male", "Female"))
fit <- lmer(FEV1 ~ ARMCD * AVISIT + RACE + SEX + (1 | USUBJID), data = fev, REML = TRUE,
            control = lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12)))
coefs <- summary(fit)$coefficients
tab <- anova(fit, type = "III", ddf = "Satterthwaite")
# Kenward-Roger through pbkrtest: it uses the *expected* information of lme4's variance
# parameters, so it agrees with fit_mmrm(df_method="kenward-roger") only approximately
kr_coefs <- summary(fit, ddf = "Kenward-Roger")$coefficients
kr_tab <- anova(fit, type = "III", ddf = "Kenward-Roger")
out <- list(
  source = paste("lmerTest", packageVersion("lmerTest"), "lme4", packageVersion("lme4"), "on",
                 R.version.string, "by tests/stats/reference/mmrm_lmertest.R"),
  deviance = -2 * as.numeric(logLik(fit)),
  terms = rownames(coefs),
  estimate = unname(coefs[, "Estimate"]),
  std_error = unname(coefs[, "Std. Error"]),
  df = unname(coefs[, "df"]),
  anova_terms = rownames(tab),
  anova_num_df = unname(tab[, "NumDF"]),
  anova_den_df = unname(tab[, "DenDF"]),
  anova_f = unname(tab[, "F value"]),
  kr_std_error = unname(kr_coefs[, "Std. Error"]),
  kr_df = unname(kr_coefs[, "df"]),
  kr_anova_den_df = unname(kr_tab[, "DenDF"]),
  kr_anova_f = unname(kr_tab[, "F value"])
)
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE),
           "tests/stats/reference/mmrm_lmertest.json")
