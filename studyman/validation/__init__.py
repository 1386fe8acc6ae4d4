"""Edit checks, the REDCap logic evaluator, the query log and the deviation log."""
