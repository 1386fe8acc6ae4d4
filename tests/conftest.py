"""Suite-wide hooks (this file is loaded by the pytest controller, also under xdist)."""

from __future__ import annotations

from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Count the REDCap fixture projects that passed every round-trip check (issue 7)."""
    outcomes: dict[str, set[str]] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if "test_conformance_projects.py" not in nodeid or "[" not in nodeid:
                continue
            if getattr(report, "when", "call") != "call" and outcome == "passed":
                continue
            project = nodeid.rsplit("[", 1)[1].rstrip("]")
            outcomes.setdefault(project, set()).add(outcome)
    if outcomes:
        clean = sorted(p for p, seen in outcomes.items() if seen == {"passed"})
        terminalreporter.write_line(
            f"REDCap conformance: {len(clean)} of {len(outcomes)} fixture projects pass every "
            "round-trip check (records, metadata, events/arms, labels, EAV)"
        )
