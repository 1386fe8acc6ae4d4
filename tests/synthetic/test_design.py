"""The generator's view of the protocol (StudyDesign from a loaded Protocol)."""

from __future__ import annotations

from pathlib import Path

import pytest

from studyman.errors import ProtocolError
from studyman.protocol import load_protocol
from studyman.synthetic import design_from_protocol, generate_trial

STUDY = Path(__file__).resolve().parents[2] / "protocols" / "cbt-adjunct"


def test_design_reads_schedule_sites_ulns_and_coding_from_the_protocol() -> None:
    design = design_from_protocol(load_protocol(STUDY))
    assert design.screening.event == "screening_arm_1"
    assert (design.screening.window_start, design.screening.window_end) == (-28, -1)
    assert [v.event for v in design.visits][:2] == ["baseline_arm_1", "week_1_arm_1"]
    assert design.visits[-1].target_day == 112
    assert design.ulns == {"alt": 40.0, "ast": 40.0, "alp": 120.0, "bili": 1.2}
    assert [s.site_id for s in design.sites] == ["S01", "S02", "S03", "S04"]
    assert design.block_sizes == (4, 6)
    assert design.arms == ("1", "2")
    assert (design.hamd_threshold, design.severe_from, design.cows_flag) == (18, 24, 13)
    liver = {t.preferred_term: t.aesi for t in design.coding}
    assert liver["Drug-induced liver injury"] == "3"
    assert liver["Headache"] == "0"
    assert "cows" in design.event_forms["week_12_arm_1"]
    assert design.repeating_forms[0] == "adverse_events"


def test_a_protocol_without_its_redcap_project_is_one_clear_error() -> None:
    with pytest.raises(ProtocolError, match="with_redcap=True"):
        generate_trial(load_protocol(STUDY, with_redcap=False), n_participants=10)
