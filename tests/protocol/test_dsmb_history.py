"""dsmb-history.yaml beside the protocol: loaded strictly, errors name file, key and line."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from studyman.errors import ProtocolError
from studyman.protocol.dsmb_history import load_dsmb_history

REFERENCE = Path(__file__).resolve().parents[2] / "protocols" / "cbt-adjunct"

GOOD = """meetings:
  - date: 2026-01-10
    kind: organisational
  - date: 2026-04-20
    data_cutoff: 2026-03-31
    recommendations:
      - id: R1
        text: Continue unchanged.
        response: Continuing.
        response_date: 2026-04-25
        status: implemented
      - id: R2
        text: Look again at site 3's query backlog.
protocol_amendments:
  - version: "1.1"
    date: 2026-02-01
    summary: Window of week 16 clarified.
  - version: "2.0"
    date: 2026-05-02
    summary: Liver tests at week 2.
"""


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "protocol.yaml").write_text("study: {}\n", encoding="utf-8")
    (tmp_path / "dsmb-history.yaml").write_text(text, encoding="utf-8")
    return tmp_path / "protocol.yaml"


def test_reference_study_history_loads_and_precedes_its_data_cut() -> None:
    history = load_dsmb_history(REFERENCE / "protocol.yaml")
    assert history is not None
    assert history.source_file.endswith("dsmb-history.yaml")
    last = history.last_meeting_before(date(2026, 9, 30))
    assert last is not None
    assert last.date == date(2026, 3, 16)
    assert [a.version for a in history.amendments_since_last_report(date(2026, 9, 30))] == ["2.0"]


def test_a_study_without_history_gets_none(tmp_path: Path) -> None:
    (tmp_path / "protocol.yaml").write_text("study: {}\n", encoding="utf-8")
    assert load_dsmb_history(tmp_path / "protocol.yaml") is None
    assert load_dsmb_history(tmp_path) is None


def test_meetings_and_amendments_are_chosen_by_the_cut_off(tmp_path: Path) -> None:
    history = load_dsmb_history(_write(tmp_path, GOOD))
    assert history is not None
    # a report cut before the first meeting: no meeting before it, every amendment so far
    assert history.last_meeting_before(date(2026, 1, 1)) is None
    assert history.amendments_since_last_report(date(2026, 3, 1)) == (
        history.protocol_amendments[0],
    )
    # after the April meeting (which reviewed data to 31 March): only the May amendment
    since = history.amendments_since_last_report(date(2026, 9, 30))
    assert [a.version for a in since] == ["2.0"]
    # an amendment after the cut-off is not yet reported
    assert history.amendments_since_last_report(date(2026, 4, 30)) == ()
    assert [m.date for m in history.meetings_before(date(2026, 4, 20))] == [date(2026, 1, 10)]
    assert history.meetings[1].recommendations[1].status == "open"


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        ("date: 2026-01-10", "date: 2026-05-10", r"meetings\[1\]\.date \(line 4\)", "date order"),
        ("date: 2026-04-20", "date: 2026-02-30", r"meetings\[1\]\.date \(line 4\)", "date"),
        ("id: R2", "id: R1", r"meetings\[1\]\.recommendations\[1\]\.id", "given twice"),
        (
            "response_date: 2026-04-25",
            "response_date: 2026-04-01",
            r"meetings\[1\]\.recommendations\[0\]\.response_date \(line 10\)",
            "before the meeting",
        ),
        ("data_cutoff: 2026-03-31", "data_cutoff: 2026-05-31", "data_cutoff", "after the meeting"),
        ("        status: implemented", "        status: done", "status", "implemented"),
        ("        response: Continuing.\n", "", r"recommendations\[0\]\.response", "response"),
        ('version: "2.0"', 'version: "1.1"', r"protocol_amendments\[1\]\.version", "twice"),
        ("    summary: Liver", "    summry: Liver", r"protocol_amendments\[1\]", "unknown key"),
        ("kind: organisational", "kind: social", r"meetings\[0\]\.kind", "organisational"),
    ],
)
def test_a_malformed_history_names_file_key_and_line(
    tmp_path: Path, old: str, new: str, key: str, message: str
) -> None:
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ProtocolError, match=message) as raised:
        load_dsmb_history(path)
    assert "dsmb-history.yaml" in str(raised.value)
    assert raised.match(key)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("meetings: [\n", "YAML syntax error"),
        ("- a\n- b\n", "expected a mapping"),
        ("meetings: []\nmeetings: []\n", "meetings"),
    ],
)
def test_a_file_that_is_not_a_history_is_one_clear_error(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ProtocolError, match=message):
        load_dsmb_history(_write(tmp_path, text))


def test_a_history_in_utf16_is_refused_with_advice(tmp_path: Path) -> None:
    path = _write(tmp_path, "")
    (tmp_path / "dsmb-history.yaml").write_bytes(GOOD.encode("utf-16"))
    with pytest.raises(ProtocolError, match="UTF-8"):
        load_dsmb_history(path)
