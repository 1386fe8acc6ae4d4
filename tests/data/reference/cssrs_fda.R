# Reference values for studyman.analysis.safety.cssrs_analysis (C-SSRS, FDA 2012 categories).
# Run from this folder with R from Debian (r-base-core 4.2; jsonlite):
#   Rscript cssrs_fda.R
# Writes cssrs_fda.csv (simulated C-SSRS assessments, one row per participant and visit; made
# for this check, no licence restriction) and cssrs_fda.json (the expected numbers). Only base
# R statistics: Wilson intervals from prop.test(correct = FALSE), Newcombe's hybrid score
# interval (method 10, Newcombe 1998) built from them, Fisher's exact test from fisher.test.
library(jsonlite)
set.seed(20261203)

n_per_arm <- 60
days <- c(0, 7, 14, 28, 56, 84)
rows <- list()
for (arm in c("A", "B")) {
  rate <- if (arm == "A") 0.12 else 0.06
  for (i in seq_len(n_per_arm)) {
    id <- sprintf("%s-%03d", arm, i)
    skip_baseline <- runif(1) < 0.05
    last_day <- sample(c(0, 7, 28, 84, 84, 84), 1)
    for (day in days[days <= last_day]) {
      if (day == 0 && skip_baseline) next
      if (day > 0 && runif(1) < 0.1) next          # missed visit: no row
      blank <- runif(1) < 0.04                      # a form with nothing answered
      ideation <- as.integer(runif(5) < c(2, 1.5, 1, 0.6, 0.4) * rate)
      if (ideation[1] == 0 && ideation[2] == 0) ideation[3:5] <- NA  # gated items
      behaviour <- as.integer(runif(4) < 0.25 * rate)
      nssi <- as.integer(runif(1) < 0.3 * rate)
      if (blank) { ideation[] <- NA; behaviour[] <- NA; nssi <- NA }
      rows[[length(rows) + 1]] <- data.frame(
        SUBJID = id, ARM = arm, DAY = day, PERIOD = if (day == 0) "baseline" else "post",
        IDEATION_1 = ideation[1], IDEATION_2 = ideation[2], IDEATION_3 = ideation[3],
        IDEATION_4 = ideation[4], IDEATION_5 = ideation[5],
        BEHAVIOUR_1 = behaviour[1], BEHAVIOUR_2 = behaviour[2], BEHAVIOUR_3 = behaviour[3],
        BEHAVIOUR_4 = behaviour[4], NSSI = nssi)
    }
  }
}
d <- do.call(rbind, rows)
write.csv(d, "cssrs_fda.csv", row.names = FALSE, na = "")

subjects <- unique(d[, c("SUBJID", "ARM")])
# every participant of the population, including those without any row
extra <- data.frame(SUBJID = c("A-900", "B-900"), ARM = c("A", "B"))
subjects <- rbind(subjects, extra)
write.csv(subjects, "cssrs_fda_subjects.csv", row.names = FALSE)

ideation <- paste0("IDEATION_", 1:5)
behaviour <- paste0("BEHAVIOUR_", 1:4)
is1 <- function(x) !is.na(x) & x == 1
answered <- rowSums(!is.na(d[, c(ideation, behaviour)])) > 0
d <- d[answered, ]
category <- rep(0, nrow(d))
for (k in 1:5) category[is1(d[[ideation[k]]])] <- k
category[rowSums(sapply(behaviour, function(b) is1(d[[b]]))) > 0] <- 6
d$CATEGORY <- category

behaviour_labels <- c("Actual suicide attempt", "Interrupted attempt",
                      "Aborted or self-interrupted attempt", "Preparatory acts or behaviour")
type_labels <- c(
  "Suicidal ideation type 1 (wish to be dead)",
  "Suicidal ideation type 2 (non-specific active suicidal thoughts)",
  "Suicidal ideation type 3 (active ideation with method, no intent)",
  "Suicidal ideation type 4 (active ideation with some intent, no plan)",
  "Suicidal ideation type 5 (active ideation with plan and intent)")
tests <- c(
  list("Suicidal ideation (types 1-5)" = function(r) rowSums(sapply(ideation, function(c) is1(r[[c]]))) > 0),
  setNames(lapply(1:5, function(k) function(r) is1(r[[ideation[k]]])), type_labels),
  list("Suicidal behaviour" = function(r) r$CATEGORY == 6),
  setNames(lapply(1:4, function(k) function(r) is1(r[[behaviour[k]]])),
           paste0("Suicidal behaviour: ", behaviour_labels)),
  list("Suicidal ideation or behaviour" = function(r) r$CATEGORY >= 1,
       "Self-injurious behaviour without suicidal intent" = function(r) is1(r$NSSI)))

newcombe <- function(x1, n1, x2, n2) {
  w1 <- suppressWarnings(prop.test(x1, n1, correct = FALSE)$conf.int)
  w2 <- suppressWarnings(prop.test(x2, n2, correct = FALSE)$conf.int)
  p1 <- x1 / n1; p2 <- x2 / n2
  c(p1 - p2,
    p1 - p2 - sqrt((p1 - w1[1])^2 + (w2[2] - p2)^2),
    p1 - p2 + sqrt((w1[2] - p1)^2 + (p2 - w2[1])^2))
}
compare <- function(category, period, flag) {
  # flag: named logical per evaluable participant
  arm <- subjects$ARM[match(names(flag), subjects$SUBJID)]
  x1 <- sum(flag[arm == "A"]); n1 <- sum(arm == "A")
  x2 <- sum(flag[arm == "B"]); n2 <- sum(arm == "B")
  ci <- newcombe(x1, n1, x2, n2)
  p <- fisher.test(matrix(c(x1, n1 - x1, x2, n2 - x2), 2, byrow = TRUE))$p.value
  list(category = category, period = period, n_A = x1, N_A = n1, n_B = x2, N_B = n2,
       risk_difference = ci[1], rd_ci_lower = ci[2], rd_ci_upper = ci[3], p_fisher = p)
}
result <- list()
for (period in c("post", "baseline")) {
  part <- d[d$PERIOD == period, ]
  for (name in names(tests)) {
    hit <- tests[[name]](part)
    flag <- tapply(hit, part$SUBJID, any)
    result[[length(result) + 1]] <- compare(
      name, if (period == "post") "post-baseline" else "baseline", flag)
  }
}
post <- d[d$PERIOD == "post", ]; base <- d[d$PERIOD == "baseline", ]
worst_post <- tapply(post$CATEGORY, post$SUBJID, max)
worst_base <- tapply(base$CATEGORY, base$SUBJID, max)
both <- intersect(names(worst_post), names(worst_base))
none0 <- both[worst_base[both] == 0]
nobeh <- both[worst_base[both] < 6]
result[[length(result) + 1]] <- compare(
  "Emergent suicidal ideation or behaviour (none at baseline)", "change from baseline",
  worst_post[none0] >= 1)
result[[length(result) + 1]] <- compare(
  "Emergent suicidal behaviour (no behaviour at baseline)", "change from baseline",
  worst_post[nobeh] == 6)
result[[length(result) + 1]] <- compare(
  "Worsening (most severe post-baseline category above baseline)", "change from baseline",
  worst_post[both] > worst_base[both])

levels <- c(0:6, 99)  # 99: not assessed
shift <- list()
for (arm in c("A", "B")) {
  ids <- subjects$SUBJID[subjects$ARM == arm]
  b <- ifelse(ids %in% names(worst_base), worst_base[ids], 99)
  a <- ifelse(ids %in% names(worst_post), worst_post[ids], 99)
  tab <- table(factor(b, levels), factor(a, levels))
  shift[[arm]] <- matrix(as.integer(tab), nrow = length(levels))
}
write_json(list(occurrence = result, shift = shift,
                note = "shift rows/columns: none, ideation types 1-5, behaviour, not assessed"),
           "cssrs_fda.json", digits = NA, auto_unbox = TRUE, pretty = TRUE)
