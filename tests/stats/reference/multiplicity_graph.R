# Reference values for the graphical multiple testing procedure (studyman/stats/multiplicity.py).
# Regenerate from the repository root with
#
#     Rscript tests/stats/reference/multiplicity_graph.R
#
# R and jsonlite from Debian: apt-get install -y r-base-core r-cran-jsonlite.  Debian ships no
# gMCP (nor graphicalMCP), so the graphical procedure is written here in base R, straight from
# Bretz, Maurer, Brannath and Posch (2009), Statistics in Medicine 28:586-604: Algorithm 1 (the
# sequentially rejective test with the graph update of their section 2) and Algorithm 2 (adjusted
# p-values).  Two special cases are checked against base R's own code as well: Holm's procedure
# against stats::p.adjust(method = "holm") and fixed-sequence testing against cummax(p).
# Writes tests/stats/reference/multiplicity_graph.json; tests read only that file.
suppressMessages(library(jsonlite))

update_graph <- function(w, G, active, j) {
  # Bretz et al. (2009), Algorithm 1 step 2: remove H_j, pass its weight on, reconnect its
  # neighbours.
  rest <- setdiff(active, j)
  w_new <- w
  G_new <- matrix(0, nrow(G), ncol(G))
  for (l in rest) {
    w_new[l] <- w[l] + w[j] * G[j, l]
    for (k in rest) {
      if (k != l) {
        d <- 1 - G[l, j] * G[j, l]
        if (d > 1e-9) G_new[l, k] <- (G[l, k] + G[l, j] * G[j, k]) / d
      }
    }
  }
  w_new[j] <- 0
  list(w = w_new, G = G_new)
}

adjusted_p <- function(w, G, p) {
  # Bretz et al. (2009), Algorithm 2.
  m <- length(p)
  active <- seq_len(m)
  adj <- rep(1, m)
  pmax <- 0
  while (length(active) > 0) {
    ratio <- ifelse(w[active] > 0, p[active] / w[active], Inf)
    j <- active[which.min(ratio)]
    pmax <- max(min(min(ratio), 1), pmax)
    adj[j] <- pmax
    g <- update_graph(w, G, active, j)
    w <- g$w
    G <- g$G
    active <- setdiff(active, j)
  }
  adj
}

rejections <- function(w, G, p, alpha) {
  # Bretz et al. (2009), Algorithm 1.
  m <- length(p)
  active <- seq_len(m)
  rejected <- rep(FALSE, m)
  repeat {
    hit <- active[w[active] > 0 & p[active] <= w[active] * alpha]
    if (length(hit) == 0) break
    j <- hit[1]
    rejected[j] <- TRUE
    g <- update_graph(w, G, active, j)
    w <- g$w
    G <- g$G
    active <- setdiff(active, j)
  }
  rejected
}

case <- function(name, w, G, p, alpha, check = NULL) {
  adj <- adjusted_p(w, G, p)
  if (!is.null(check)) stopifnot(isTRUE(all.equal(adj, check, tolerance = 1e-14)))
  list(name = name, weights = w, transitions = G, p_values = p, alpha = alpha,
       adjusted_p_values = adj, rejected = rejections(w, G, p, alpha))
}

holm <- function(m) {
  G <- matrix(1 / (m - 1), m, m)
  diag(G) <- 0
  list(w = rep(1 / m, m), G = G)
}
fixed_sequence <- function(m) {
  G <- matrix(0, m, m)
  for (i in seq_len(m - 1)) G[i, i + 1] <- 1
  list(w = c(1, rep(0, m - 1)), G = G)
}

cases <- list()
p4 <- c(0.011, 0.04, 0.013, 0.005)
h <- holm(4)
cases[[length(cases) + 1]] <- case("holm_4", h$w, h$G, p4, 0.05,
                                   check = p.adjust(p4, method = "holm"))
p5 <- c(0.002, 0.03, 0.011, 0.2, 0.009)
h <- holm(5)
cases[[length(cases) + 1]] <- case("holm_5", h$w, h$G, p5, 0.025,
                                   check = p.adjust(p5, method = "holm"))
p3 <- c(0.01, 0.004, 0.03)
f <- fixed_sequence(3)
cases[[length(cases) + 1]] <- case("fixed_sequence_3", f$w, f$G, p3, 0.025, check = cummax(p3))
p3b <- c(0.01, 0.3, 0.001)
cases[[length(cases) + 1]] <- case("fixed_sequence_stops", f$w, f$G, p3b, 0.025,
                                   check = cummax(p3b))
# Bretz et al. (2009), Figure 6: two primary hypotheses, each with its secondary
# ("parallel gatekeeping with successive weights"), epsilon-free version.
G <- matrix(c(0, 0, 1, 0,
              0, 0, 0, 1,
              0, 1, 0, 0,
              1, 0, 0, 0), 4, 4, byrow = TRUE)
cases[[length(cases) + 1]] <- case("successive_two_primaries", c(0.5, 0.5, 0, 0), G,
                                   c(0.01, 0.1, 0.005, 0.5), 0.025)
# The reference study's plan: primary HAM-D-17 first, then response and PHQ-9 halves,
# remission and GAD-7 after them, with weight going back to the other branch.
G <- matrix(c(0, 0.5, 0.5, 0, 0,
              0, 0, 0.5, 0.5, 0,
              0, 0.5, 0, 0, 0.5,
              0, 0.5, 0, 0, 0.5,
              0, 0, 0.5, 0.5, 0), 5, 5, byrow = TRUE)
cases[[length(cases) + 1]] <- case("study_graph", c(1, 0, 0, 0, 0), G,
                                   c(0.0004, 0.012, 0.018, 0.3, 0.02), 0.025)
set.seed(20261203)
for (r in 1:30) {
  m <- sample(2:6, 1)
  w <- rexp(m)
  w <- w / sum(w) * sample(c(1, 0.9), 1)
  if (runif(1) < 0.3) w[sample(m, 1)] <- 0
  G <- matrix(rexp(m * m), m, m)
  G[runif(m * m) < 0.3] <- 0
  diag(G) <- 0
  rs <- rowSums(G)
  for (i in seq_len(m)) if (rs[i] > 0) G[i, ] <- G[i, ] / rs[i] * sample(c(1, 1, 0.8), 1)
  p <- signif(runif(m)^3, 4)
  cases[[length(cases) + 1]] <- case(sprintf("random_%02d", r), w, G, p,
                                     sample(c(0.025, 0.05), 1))
}
out <- list(source = "base R implementation of Bretz et al. (2009), Algorithms 1 and 2",
            R = R.version.string, cases = cases)
path <- "tests/stats/reference/multiplicity_graph.json"
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, matrix = "rowmajor"), path)
cat("wrote", path, "\n")
