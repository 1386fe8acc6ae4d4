"""The DSMB inputs and report data of both sessions for the section tests (a small study)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pandas as pd

from studyman.protocol.models import Protocol
from studyman.reporting.dsmb import DsmbInputs, build_sections, cut_tables, report_data
from studyman.reporting.report import arm_codes, read_randomization_list
from studyman.sources.snapshot import read_snapshot

from .conftest import Study

CUT = date(2026, 9, 30)
AS_OF = datetime(2026, 10, 20, 12, 0, tzinfo=UTC)


def section_inputs(
    study: Study,
    *,
    closed: bool,
    protocol: Protocol | None = None,
    queries: pd.DataFrame | None = None,
    cutoff: date = CUT,
) -> DsmbInputs:
    """The inputs of one session: the blinded tables (open) or all tables and the arms."""
    protocol = protocol or study.protocol
    tables = dict(read_snapshot(study.snapshot).tables)
    if not closed:
        for form in protocol.blinding.unblinded_forms:
            tables.pop(form, None)
        return DsmbInputs(
            protocol, cut_tables(protocol, tables, cutoff), cutoff, queries=queries, as_of=AS_OF
        )
    labels = arm_codes(protocol, bytes(32))
    arms = read_randomization_list(study.randomization, protocol).map(labels)
    return DsmbInputs(
        protocol,
        cut_tables(protocol, tables, cutoff),
        cutoff,
        arms=arms,
        arm_order=tuple(sorted(labels.values())),
        queries=queries,
        as_of=AS_OF,
    )


def session_data(inputs: DsmbInputs) -> dict[str, Any]:
    """The report's JSON content (:func:`studyman.reporting.dsmb.report_data`) of *inputs*,
    with the sections as built (the open session's gate applied) under ``sections``."""
    sections = build_sections(inputs)
    data = report_data(sections, inputs.facts())
    data["sections"] = {section.id: section for section in sections}
    return data


def json_table(data: dict[str, Any], table_id: str) -> dict[str, Any]:
    """The report JSON's table *table_id*."""
    found = [table for table in data["tables"] if table["id"] == table_id]
    assert len(found) == 1, f"{table_id}: {len(found)} tables"
    return found[0]


def count(cell: str) -> int:
    """The count of a ``"12 (15.0%)"`` cell."""
    return int(str(cell).split(" ")[0])


def row(table: dict[str, Any], label: str) -> list[str]:
    """The row of *table* whose first cell is *label*."""
    rows = [r for r in table["rows"] if r[0] == label]
    assert len(rows) == 1, f"{label!r} in {table['id']}: {len(rows)} rows"
    return rows[0]


def assert_pooled(data: dict[str, Any], section_id: str, arm_labels: list[str]) -> None:
    """No table of *section_id* names an arm (columns or cells) nor holds a participant."""
    for table in data["tables"]:
        if not table["id"].startswith(f"{section_id}."):
            continue
        cells = [*table["columns"], *(str(cell) for r in table["rows"] for cell in r)]
        assert "Participant" not in table["columns"], table["id"]
        assert "Arm" not in table["columns"], table["id"]
        for label in arm_labels:
            assert not any(label in cell for cell in cells), (table["id"], label)
