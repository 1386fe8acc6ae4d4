"""Reading a coordinator's edited listing back: damaged files are one line naming file and line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from studyman.errors import ValidationError
from studyman.validation.outputs import read_listing

LISTING = "query_id,check_id,response,response_note\nQ-0001,DQ-B,other,vu à la visite\n"


def test_a_listing_saved_by_excel_in_windows_1252_is_read(tmp_path: Path) -> None:
    path = tmp_path / "queries.csv"
    path.write_bytes(LISTING.encode("cp1252"))
    table = read_listing(path)
    assert table["response_note"].tolist() == ["vu à la visite"]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        pytest.param("queries.csv", b"", "empty file", id="empty"),
        pytest.param(
            "queries.csv",
            (LISTING + "Q-0002,DQ-B,oth").encode(),
            "line 3: 3 cells for 4 columns; the file is damaged or truncated",
            id="truncated",
        ),
        pytest.param("queries.csv", LISTING.encode("utf-16"), "UTF-16 text", id="utf-16"),
        pytest.param(
            "queries.csv", b"a,b\n1,2\n", "line 1: no query_id column", id="not-a-listing"
        ),
        pytest.param(
            "queries.xlsx", b"PK\x03\x04 cut", "not a readable Excel workbook", id="damaged-xlsx"
        ),
    ],
)
def test_a_damaged_listing_is_one_line_naming_the_file(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValidationError, match=expected) as caught:
        read_listing(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert "\n" not in str(caught.value)


def test_a_workbook_without_a_query_sheet_is_refused_naming_its_sheets(tmp_path: Path) -> None:
    path = tmp_path / "queries.xlsx"
    pd.DataFrame({"a": [1]}).to_excel(path, sheet_name="notes", index=False)
    with pytest.raises(ValidationError, match=r"no sheet has a query_id column \(sheets: notes\)"):
        read_listing(path)


def test_site_recorded_deviations_take_term_date_and_site_from_the_protocol() -> None:
    from studyman.findings import FINDING_COLUMNS
    from studyman.protocol import load_protocol
    from studyman.validation.outputs import deviation_log

    protocol = load_protocol(Path(__file__).parents[2] / "protocols" / "cbt-adjunct")
    deviations = protocol.deviations.model_copy(
        update={"term_field": "dev_text", "date_field": "dev_day"}
    )
    study = protocol.model_copy(update={"deviations": deviations})
    site = protocol.sites[1]
    records = pd.DataFrame(
        {
            protocol.study.record_id_field: ["1001", "S01-0002"],
            "redcap_event_name": ["logs_arm_1", "logs_arm_1"],
            "redcap_repeat_instrument": [deviations.form, deviations.form],
            "redcap_repeat_instance": ["1", "1"],
            "redcap_data_access_group": [site.dag, ""],
            "dev_text": ["Visit done by phone", "Dose missed"],
            "dev_day": ["2026-01-05", "2026-02-01"],
            deviations.category_field: ["3", "6"],
            # the reference names are not read when the protocol names others
            "dv_term": ["wrong", "wrong"],
            "dv_date": ["1999-01-01", "1999-01-01"],
        },
        dtype=object,
    )
    log = deviation_log(pd.DataFrame(columns=FINDING_COLUMNS), (), records, study)
    assert log[["DVTERM", "DVSTDTC", "site", "source"]].values.tolist() == [
        ["Visit done by phone", "2026-01-05", site.id, "site"],  # the site from its DAG
        ["Dose missed", "2026-02-01", "S01", "site"],  # no DAG: the record ID's prefix
    ]
