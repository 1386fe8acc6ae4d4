# Reference values for Firth's penalised-likelihood logistic regression (studyman/stats/firth.py).
# Regenerate from the repository root with
#
#     Rscript tests/stats/reference/firth_logistic.R
#
# R, brglm2 and jsonlite from Debian: apt-get install -y r-base-core r-cran-brglm2 r-cran-jsonlite.
# Debian ships no logistf, so the profile penalised-likelihood intervals and penalised
# likelihood-ratio p-values (logistf's defaults; Heinze & Schemper 2002) are computed here by a
# short base-R implementation of Firth (1993); its estimates and standard errors are checked
# against brglm2::brglmFit (type = "AS_mean", which is Firth's bias reduction for the canonical
# logit link) before anything is written.  Writes firth_*.csv (the data, made here with a fixed
# seed) and firth_logistic.json; tests read only those files.
suppressMessages({
  library(brglm2)
  library(jsonlite)
})
here <- "tests/stats/reference"

penalised_loglik <- function(beta, X, y) {
  eta <- drop(X %*% beta)
  p <- plogis(eta)
  w <- p * (1 - p)
  info <- crossprod(X * sqrt(w))
  sum(y * eta - log1p(exp(eta))) + 0.5 * determinant(info, logarithm = TRUE)$modulus[1]
}

# Newton-Raphson on the modified score U* = X'(y - p + h (1/2 - p)), parameters in `free` only
# (the others held at their values in `beta`), with step halving on the penalised likelihood.
firth_fit <- function(X, y, beta = rep(0, ncol(X)), free = seq_len(ncol(X))) {
  for (iteration in 1:200) {
    eta <- drop(X %*% beta)
    p <- plogis(eta)
    w <- p * (1 - p)
    info <- crossprod(X * sqrt(w))
    inv <- solve(info)
    h <- rowSums((X %*% inv) * X) * w
    score <- drop(crossprod(X, y - p + h * (0.5 - p)))
    step <- rep(0, ncol(X))
    step[free] <- solve(info[free, free, drop = FALSE], score[free])
    old <- penalised_loglik(beta, X, y)
    t <- 1
    repeat {
      candidate <- beta + t * step
      if (penalised_loglik(candidate, X, y) >= old - 1e-12 || t < 1e-8) break
      t <- t / 2
    }
    beta <- candidate
    if (max(abs(t * step)) < 1e-12) break
  }
  list(beta = beta, loglik = penalised_loglik(beta, X, y),
       se = sqrt(diag(solve(crossprod(X * sqrt(plogis(drop(X %*% beta)) *
                                               (1 - plogis(drop(X %*% beta)))))))))
}

profile_at <- function(X, y, j, value, start) {
  beta <- start
  beta[j] <- value
  firth_fit(X, y, beta, free = setdiff(seq_len(ncol(X)), j))$loglik
}

profile_ci <- function(X, y, fit, j, level = 0.95) {
  target <- fit$loglik - qchisq(level, 1) / 2
  # a constrained fit that breaks down (far out, the information singular) is beyond the bound
  f <- function(b) tryCatch(profile_at(X, y, j, b, fit$beta) - target, error = function(e) -Inf)
  bound <- function(direction) {
    step <- max(fit$se[j], 0.1)
    near <- fit$beta[j]
    far <- near + direction * step
    while (f(far) > 0) {
      near <- far
      step <- step * 1.5
      far <- fit$beta[j] + direction * step
    }
    uniroot(f, sort(c(near, far)), tol = 1e-12)$root
  }
  c(bound(-1), bound(1))
}

plr_p <- function(X, y, fit, j) {
  statistic <- 2 * (fit$loglik - profile_at(X, y, j, 0, fit$beta))
  pchisq(statistic, 1, lower.tail = FALSE)
}

make_case <- function(name, data, formula) {
  X <- model.matrix(formula, data)
  y <- data$RESPONDER
  fit <- firth_fit(X, y)
  check <- glm(formula, data = data, family = binomial(), method = "brglmFit", type = "AS_mean",
               control = brglmControl(epsilon = 1e-12, maxit = 500))
  stopifnot(max(abs(coef(check) - fit$beta)) < 1e-7)
  stopifnot(max(abs(sqrt(diag(vcov(check))) - fit$se)) < 1e-6)
  terms <- colnames(X)
  out <- list()
  for (j in seq_along(terms)) {
    ci <- profile_ci(X, y, fit, j)
    out[[terms[j]]] <- list(estimate = fit$beta[j], std_error = fit$se[j],
                            ci_lower = ci[1], ci_upper = ci[2], p_value = plr_p(X, y, fit, j))
  }
  write.csv(data, file.path(here, paste0("firth_", name, ".csv")), row.names = FALSE)
  list(name = name, formula = deparse(formula), penalised_loglik = fit$loglik,
       brglm2_estimates = as.list(coef(check)), coefficients = out,
       events = sum(y), n = length(y))
}

set.seed(20261203)
n <- 146
data <- data.frame(
  ARM = factor(rep(c("CBT alone", "CBT + adjunct"), length.out = n),
               levels = c("CBT alone", "CBT + adjunct")),
  BASE = round(rnorm(n, 24, 3)),
  STRATSEV = factor(sample(c("moderate", "severe"), n, replace = TRUE))
)
# Remission as in issue 14: 3 events in 146, none in the reference arm (ML does not exist).
data$RESPONDER <- 0
data$RESPONDER[which(data$ARM == "CBT + adjunct")[c(1, 8, 30)]] <- 1
cases <- list(make_case("separated", data, RESPONDER ~ ARM + BASE + STRATSEV))
# Sparse but estimable: 9 events, 2 in the reference arm.
data2 <- data
data2$RESPONDER <- 0
data2$RESPONDER[which(data2$ARM == "CBT + adjunct")[c(2, 5, 11, 19, 30, 44, 61)]] <- 1
data2$RESPONDER[which(data2$ARM == "CBT alone")[c(7, 52)]] <- 1
cases[[2]] <- make_case("sparse", data2, RESPONDER ~ ARM + BASE + STRATSEV)
out <- list(source = paste("base-R Firth (1993) with profile penalised likelihood CIs and",
                           "penalised LR p-values; estimates and SEs checked against brglm2"),
            R = R.version.string, brglm2 = as.character(packageVersion("brglm2")),
            cases = cases)
path <- file.path(here, "firth_logistic.json")
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), path)
cat("wrote", path, "\n")
