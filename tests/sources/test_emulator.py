"""The REDCap emulator answers unchanged PyCap over real HTTP as REDCap does."""

from __future__ import annotations

import redcap

from studyman.sources.emulator import EmulatorServer
from tests.sources.conftest import (
    FULL_TOKEN,
)


def test_export_records_flat_json_has_every_record_with_string_values(
    simple_server: EmulatorServer,
) -> None:
    records = redcap.Project(simple_server.url, FULL_TOKEN).export_records()
    assert [r["record_id"] for r in records] == ["1", "2", "3", "4", "5"]
    assert all(isinstance(v, str) for r in records for v in r.values())
    assert records[0]["race___5"] == "1"
    assert records[0]["address"] == "14 Rose Cottage St.\nKenning UK, 323232"


def test_export_records_csv_reads_into_a_frame_indexed_by_record_id(
    simple_server: EmulatorServer,
) -> None:
    frame = redcap.Project(simple_server.url, FULL_TOKEN).export_records(format_type="df")
    assert frame.index.name == "record_id"
    assert len(frame) == 5
    assert list(frame.columns[:2]) == ["name_first", "name_last"]
