# Reference values for studyman's MMRM covariance structures, from nlme::gls (Debian r-cran-nlme).
# Run from the repository root:  Rscript tests/stats/reference/mmrm_nlme.R
# Writes tests/stats/reference/mmrm_nlme.json. Data: tests/data/reference/fev_data.csv (R mmrm,
# Apache-2.0). Model FEV1 ~ ARMCD * AVISIT + RACE + SEX; reference levels PBO, VIS1, Asian, Male.
# Structures (SAS TYPE= on the left):
#   AR(1)  corAR1            ARH(1)  corAR1 + varIdent
#   CS     corCompSymm       CSH     corCompSymm + varIdent
#   TOEP   corARMA(p = 3)    TOEPH   corARMA(p = 3) + varIdent  (any stationary 4x4 correlation)
#   UN     corSymm + varIdent
suppressPackageStartupMessages({
  library(nlme)
  library(jsonlite)
})
fev <- read.csv("tests/data/reference/fev_data.csv", stringsAsFactors = FALSE)
fev <- fev[!is.na(fev$FEV1), ]
fev$ARMCD <- factor(fev$ARMCD, levels = c("PBO", "TRT"))
fev$AVISIT <- factor(fev$AVISIT, levels = c("VIS1", "VIS2", "VIS3", "VIS4"))
fev$RACE <- factor(fev$RACE, levels = c("Asian", "Black or African American", "White"))
fev$SEX <- factor(fev$SEX, levels = c("Male", "Female"))
fev$VISN <- as.integer(fev$AVISIT)
fev <- fev[order(fev$USUBJID, fev$VISN), ]
complete <- names(which(table(fev$USUBJID) == 4))[1]

fit_case <- function(correlation, weights, method) {
  fit <- gls(FEV1 ~ ARMCD * AVISIT + RACE + SEX, data = fev, correlation = correlation,
             weights = weights, method = method,
             control = glsControl(tolerance = 1e-10, msTol = 1e-10, maxIter = 500, msMaxIter = 500))
  v <- getVarCov(fit, individual = complete)
  list(
    method = method,
    deviance = -2 * as.numeric(logLik(fit)),
    estimate = unname(coef(fit)),
    std_error = unname(sqrt(diag(vcov(fit)))),
    terms = names(coef(fit)),
    covariance = unname(matrix(as.numeric(v), nrow(v)))
  )
}
het <- varIdent(form = ~ 1 | AVISIT)
cases <- list(
  ar1 = fit_case(corAR1(form = ~ VISN | USUBJID), NULL, "REML"),
  "heterogeneous-ar1" = fit_case(corAR1(form = ~ VISN | USUBJID), het, "REML"),
  "compound-symmetry" = fit_case(corCompSymm(form = ~ VISN | USUBJID), NULL, "REML"),
  "heterogeneous-compound-symmetry" = fit_case(corCompSymm(form = ~ VISN | USUBJID), het, "REML"),
  toeplitz = fit_case(corARMA(form = ~ VISN | USUBJID, p = 3), NULL, "REML"),
  "heterogeneous-toeplitz" = fit_case(corARMA(form = ~ VISN | USUBJID, p = 3), het, "REML"),
  unstructured = fit_case(corSymm(form = ~ VISN | USUBJID), het, "REML"),
  unstructured_ml = fit_case(corSymm(form = ~ VISN | USUBJID), het, "ML"),
  ar1_ml = fit_case(corAR1(form = ~ VISN | USUBJID), NULL, "ML")
)
out <- list(
  source = paste("nlme::gls", packageVersion("nlme"), "on", R.version.string,
                 "by tests/stats/reference/mmrm_nlme.R"),
  cases = cases
)
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE),
           "tests/stats/reference/mmrm_nlme.json")
