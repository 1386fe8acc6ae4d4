"""The DSMB report of a study other than the reference one: three arms, optional forms absent.

The second shipped study (``protocols/cbt-madrs-3arm``: three arms, the MADRS, another schedule,
no withdrawal scale, other REDCap names throughout) is generated, imported and reported here; a
copy of the reference protocol without its dosing log shows the other optional form.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from studyman.protocol.loader import load_protocol
from studyman.protocol.models import Protocol
from studyman.reporting.dsmb import DsmbInputs, build_sections, cut_tables
from studyman.reporting.report import arm_codes, read_randomization_list, render_dsmb_report
from studyman.sources.offline import import_snapshot
from studyman.sources.snapshot import read_snapshot
from studyman.synthetic.generator import generate_trial

from .conftest import Study, shared_dir

ROOT = Path(__file__).resolve().parents[2]
THREE_ARM = ROOT / "protocols" / "cbt-madrs-3arm"
THREE_ARM_PLAN = ROOT / "analysis" / "cbt-madrs-3arm" / "sap.yaml"
AS_OF = datetime(2026, 10, 15, 12, 0, tzinfo=UTC)
CUT = date(2026, 9, 30)


@dataclass(frozen=True)
class Reports:
    protocol: Protocol
    open: dict[str, Any]
    closed: dict[str, Any]
    open_html: str
    closed_html: str


def _build_three_arm(base: Path) -> None:
    protocol = load_protocol(THREE_ARM / "protocol.yaml")
    trial = generate_trial(protocol, n_participants=45, seed=3)
    trial.records.to_csv(base / "records.csv", index=False)
    trial.randomization.to_csv(base / "randomization.csv", index=False)
    dictionary = THREE_ARM / "redcap" / "data_dictionary.csv"
    import_snapshot(protocol, base / "records.csv", dictionary, base / "snapshots", name="s1")
    key = base / "arm-key"
    descriptor = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(descriptor, ("5a" * 32 + "\n").encode("ascii"))
    os.close(descriptor)
    for session in ("open", "closed"):
        render_dsmb_report(
            protocol,
            base / "snapshots" / "s1",
            base / session,
            session=session,
            randomization=base / "randomization.csv" if session == "closed" else None,
            arm_key=key if session == "closed" else None,
            sap=THREE_ARM_PLAN,
            pdf=False,
            as_of=AS_OF,
        )


@pytest.fixture(scope="module")
def three_arm(tmp_path_factory: pytest.TempPathFactory) -> Reports:
    base = shared_dir(tmp_path_factory, "dsmb-three-arm", _build_three_arm)

    def one(session: str, suffix: str) -> Path:
        (path,) = (base / session).glob(f"dsmb-{session}-*.{suffix}")
        return path

    return Reports(
        load_protocol(THREE_ARM / "protocol.yaml"),
        json.loads(one("open", "json").read_text(encoding="utf-8")),
        json.loads(one("closed", "json").read_text(encoding="utf-8")),
        one("open", "html").read_text(encoding="utf-8"),
        one("closed", "html").read_text(encoding="utf-8"),
    )


def _table(report: dict[str, Any], identifier: str) -> dict[str, Any]:
    (table,) = [t for t in report["tables"] if t["id"] == identifier]
    return table


def _group_ns(columns: list[str]) -> list[tuple[str, int]]:
    """(label, N) of every ``Label (N=n)`` column header."""
    found = [re.fullmatch(r"(.+) \(N=(\d+)\)", column) for column in columns]
    return [(match.group(1), int(match.group(2))) for match in found if match]


def test_closed_report_of_a_three_arm_study_has_a_column_per_arm(three_arm: Reports) -> None:
    assert len(three_arm.protocol.arms.items) == 3
    for identifier in (
        "status.participant-flow-after-randomisation",
        "baseline.baseline-characteristics",
        "adverse-events.overview-of-adverse-events",
        "exposure.sessions-attended",
    ):
        groups = _group_ns(_table(three_arm.closed, identifier)["columns"])
        assert [label for label, _ in groups] == ["Arm A", "Arm B", "Arm C", "Total"], identifier
        # the arms partition the total
        assert sum(n for _, n in groups[:3]) == groups[3][1], identifier
        assert all(n > 0 for _, n in groups), identifier
    # the arms are coded: no arm name of the protocol is printed
    for arm in three_arm.protocol.arms.items:
        assert arm.name not in three_arm.closed_html


def test_closed_listings_name_one_of_the_three_coded_arms(three_arm: Reports) -> None:
    listing = _table(three_arm.closed, "sae.listing-of-serious-adverse-events")
    arm = listing["columns"].index("Arm")
    assert listing["rows"]
    assert {row[arm] for row in listing["rows"]} <= {"Arm A", "Arm B", "Arm C"}


def test_closed_listing_arm_cells_do_not_wrap(three_arm: Reports) -> None:
    start = three_arm.closed_html.index("Listing of serious adverse events")
    listing = three_arm.closed_html[start : three_arm.closed_html.index("</table>", start)]
    cells = re.findall(r'<td class="nowrap">(Arm [ABC])</td>', listing)
    rows = listing.count("</tr>") - 1  # the header row
    assert rows > 0
    assert len(cells) == rows


def test_open_report_of_a_three_arm_study_is_pooled(three_arm: Reports) -> None:
    for table in three_arm.open["tables"]:
        labels = {label for label, _ in _group_ns(table["columns"])}
        assert labels <= {"Total"}, table["id"]
    assert "Arm A" not in three_arm.open_html
    randomised = three_arm.open["facts"]["randomised"]
    flow = _group_ns(
        _table(three_arm.open, "status.participant-flow-after-randomisation")["columns"]
    )
    assert flow == [("Total", randomised)]


def test_a_study_without_a_withdrawal_scale_says_the_section_does_not_apply(
    three_arm: Reports,
) -> None:
    assert three_arm.protocol.withdrawal is None
    sessions = ((three_arm.open_html, three_arm.open), (three_arm.closed_html, three_arm.closed))
    for html, report in sessions:
        start = html.index('<section id="aesi-withdrawal">')
        following = html[start : html.index("</section>", start)]
        assert "AESI: withdrawal" in following
        assert "Does not apply: the protocol declares no withdrawal scale." in following
        assert not [t for t in report["tables"] if t["id"].startswith("aesi-withdrawal.")]


def _closed_inputs(study: Study, protocol: Protocol) -> DsmbInputs:
    labels = arm_codes(protocol, bytes(32))
    arms = read_randomization_list(study.randomization, protocol).map(labels)
    tables = cut_tables(protocol, dict(read_snapshot(study.snapshot).tables), CUT)
    return DsmbInputs(protocol, tables, CUT, arms=arms, arm_order=tuple(sorted(labels.values())))


def test_a_study_without_a_dosing_log_reports_sessions_and_says_doses_do_not_apply(
    study: Study,
) -> None:
    without = study.protocol.model_copy(
        update={"treatment": study.protocol.treatment.model_copy(update={"doses": None})}
    )
    (exposure,) = [s for s in build_sections(_closed_inputs(study, without)) if s.id == "exposure"]
    assert "Does not apply: the protocol declares no dosing log" in " ".join(exposure.paragraphs)
    assert [t.title for t in exposure.tables] == ["Sessions attended"]
    # the reference protocol itself reports the doses in the closed session
    (exposure,) = [
        s for s in build_sections(_closed_inputs(study, study.protocol)) if s.id == "exposure"
    ]
    assert [t.title for t in exposure.tables] == ["Sessions attended", "Doses taken"]
    assert not any("Does not apply" in text for text in exposure.paragraphs)
