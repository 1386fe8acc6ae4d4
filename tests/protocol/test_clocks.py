"""Reporting clocks: which adverse events each clock applies to, and on time, late, missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studyman.errors import ProtocolError
from studyman.protocol import Protocol, load_protocol, parse_protocol
from studyman.protocol.clocks import (
    clock_applies,
    clock_report_field,
    clock_start,
    clock_status,
    clock_unassessable_reason,
)

# One adverse event per column: the case each is built to be.
EVENTS = pd.DataFrame(
    {
        #                 SAE only, SUSAR LT, SUSAR fatal, SUSAR, expected, suicide, UP non-SAE
        "ae_serious": ["1", "1", "1", "1", "1", "1", "0"],
        "ae_related": ["1", "3", "4", "5", "5", "1", "3"],
        "ae_expected": ["1", "0", "0", "0", "1", "1", ""],
        "ae_ser_crit___1": ["0", "0", "0", "0", "0", "1", "0"],
        "ae_ser_crit___2": ["0", "1", "0", "0", "0", "0", "0"],
        "ae_outcome": ["1", "2", "5", "1", "1", "5", "1"],
        "ae_aesi": ["0", "0", "0", "0", "0", "1", "0"],
        "ae_unanticipated": ["0", "1", "1", "1", "0", "0", "1"],
    }
)


@pytest.fixture
def protocol(reference_study: Path) -> Protocol:
    return load_protocol(reference_study, with_redcap=False)


def _codes(name: str) -> np.ndarray:
    if name not in EVENTS:
        return np.full(len(EVENTS), "", dtype=object)
    return EVENTS[name].to_numpy(dtype=object)


def test_each_clock_applies_to_the_events_its_rule_names(protocol: Protocol) -> None:
    applies = {
        clock.id: list(np.flatnonzero(clock_applies(clock, protocol.adverse_events, _codes)))
        for clock in protocol.reporting_clocks
    }
    assert applies == {
        "sae_sponsor": [0, 1, 2, 3, 4, 5],
        # life-threatening by criterion (1) or fatal by outcome (2)
        "susar_fatal_life_threatening": [1, 2],
        "susar_other": [3],
        "suicide_death_dsmb": [5],
        "unanticipated_problem_irb": [1, 2, 3, 6],
    }


def test_clock_status_reads_hours_from_day_zero_at_the_as_of_time() -> None:
    start = pd.Series(pd.to_datetime(["2026-03-01 08:00"] * 4 + [None]))
    sent = pd.Series(
        pd.to_datetime(["2026-03-02 08:00", "2026-03-02 08:01", None, "2026-04-01 00:00", None])
    )
    # 24 h limit read at 2026-03-10: on time at exactly 24 h, late 1 minute over, missing,
    # a report dated after the as-of time not yet sent (so missing), and no day 0.
    hours, status = clock_status(start, sent, 24, pd.Timestamp("2026-03-10"))
    assert list(status) == ["on_time", "late", "missing", "missing", "no_start"]
    assert hours[0] == 24.0
    assert hours[1] == pytest.approx(24 + 1 / 60)
    _, early = clock_status(start, sent, 24, pd.Timestamp("2026-03-01 20:00"))
    assert list(early) == ["not_yet_due"] * 4 + ["no_start"]


def test_a_non_serious_event_runs_from_onset() -> None:
    aware = pd.Series(pd.to_datetime(["2026-03-02 09:30", None]))
    onset = pd.Series(pd.to_datetime(["2026-03-01", "2026-03-05"]))
    start = clock_start(aware, onset, np.asarray([True, False]))
    assert list(start) == [pd.Timestamp("2026-03-02 09:30"), pd.Timestamp("2026-03-05")]


def test_a_protocol_without_the_new_mappings_keeps_the_sponsor_clock_only(
    reference_study: Path,
) -> None:
    text = (reference_study / "protocol.yaml").read_text(encoding="utf-8")
    for line in (
        "  expected_field: ae_expected\n",
        "  unanticipated_field: ae_unanticipated\n",
        "    report_field: ae_report_dt\n",
        "    report_field: ae_reg_report_dt\n",
        "    report_field: ae_dsmb_report_dt\n",
        "    report_field: ae_irb_report_dt\n",
    ):
        assert line in text
        text = text.replace(line, "")
    old = parse_protocol(text)
    ae = old.adverse_events
    reasons = {clock.id: clock_unassessable_reason(clock, ae) for clock in old.reporting_clocks}
    assert reasons["sae_sponsor"] is None
    assert clock_report_field(old.reporting_clocks[0], ae) == "ae_report_dt"
    assert all(reasons[k] is not None for k in reasons if k != "sae_sponsor")
    assert "report_field" in str(reasons["unanticipated_problem_irb"])
    assert clock_applies(old.reporting_clocks[1], ae, _codes) is None


def test_two_clocks_for_one_case_need_their_own_report_fields(reference_study: Path) -> None:
    text = (reference_study / "protocol.yaml").read_text(encoding="utf-8")
    second_irb = (
        "  - id: unanticipated_problem_sponsor\n"
        "    label: Unanticipated problem to the sponsor\n"
        "    applies_to: unanticipated_problem\n"
        "    recipient: sponsor\n"
        "    limit_hours: 72\n"
        "    report_field: ae_irb_report_dt\n"
    )
    anchor = "    report_field: ae_irb_report_dt\n"
    assert anchor in text
    with pytest.raises(ProtocolError) as caught:
        parse_protocol(text.replace(anchor, anchor + second_irb), file="protocol.yaml")
    assert str(caught.value.key).startswith("reporting_clocks")
    assert "'unanticipated_problem' with the same report_field 'ae_irb_report_dt'" in str(
        caught.value
    )
