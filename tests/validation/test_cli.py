"""`studyman validate`, `checks list`, `queries respond` and `queries import`, end to end."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from studyman.cli import main
from studyman.protocol.loader import load_protocol
from studyman.sources.offline import import_snapshot
from studyman.synthetic.generator import generate_trial

PROTOCOL_DIR = Path(__file__).parents[2] / "protocols" / "cbt-adjunct"
QUERY_COLUMNS = [
    "query_id",
    "check_id",
    "severity",
    "site",
    "record_id",
    "event",
    "instrument",
    "instance",
    "field",
    "value",
    "message",
    "status",
    "opened_at",
    "days_open",
]


@cache
def _trial() -> tuple[pd.DataFrame, pd.DataFrame]:
    trial = generate_trial(
        load_protocol(PROTOCOL_DIR), n_participants=40, seed=7, plant_errors=True
    )
    return trial.records, trial.randomization


def _export(tmp_path: Path) -> Path:
    records, _ = _trial()
    path = tmp_path / "records.csv"
    records.to_csv(path, index=False)
    return path


def _validate(records: Path, out: Path, *extra: str) -> None:
    main(
        [
            "validate",
            "--protocol",
            str(PROTOCOL_DIR),
            "--snapshot",
            str(records),
            "--out",
            str(out),
            *extra,
        ]
    )


def test_validate_writes_listings_and_a_rerun_changes_no_query(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = _export(tmp_path)
    out = tmp_path / "out"
    _validate(export, out)
    first = pd.read_csv(out / "queries.csv", dtype=str, keep_default_na=False)
    assert set(QUERY_COLUMNS) <= set(first.columns)
    assert (out / "queries.sqlite").is_file()
    sheets = openpyxl.load_workbook(out / "queries.xlsx", read_only=True).sheetnames
    assert (sheets[0], sheets[-1]) == ("summary", "Instructions")
    assert set(sheets[1:-1]) == set(first.loc[first["kind"] == "site_query", "site"])
    deviations = pd.read_csv(out / "deviations.csv", dtype=str, keep_default_na=False)
    assert {"USUBJID", "DVTERM", "DVCAT", "DVSTDTC", "check_id"} <= set(deviations.columns)
    assert "Visit out of window" in set(deviations["DVCAT"])
    assert (out / "deviations.xlsx").is_file()
    summary = (out / "summary.html").read_text(encoding="utf-8")
    assert "Site queries by site" in summary
    assert "Open site queries by site and age" in summary
    assert "Review signals by check" in summary
    assert "Blinded run" in summary
    capsys.readouterr()

    _validate(export, out)
    second = pd.read_csv(out / "queries.csv", dtype=str, keep_default_na=False)
    assert "0 new, 0 re-opened, 0 closed" in capsys.readouterr().out
    assert sorted(second["query_id"]) == sorted(first["query_id"])


def test_a_blinded_listing_never_shows_arm_forms_and_an_unblinded_one_adds_arm_checks(
    tmp_path: Path,
) -> None:
    export = _export(tmp_path)
    _, randomization = _trial()
    blinded = tmp_path / "blinded"
    _validate(export, blinded)
    listing = pd.read_csv(blinded / "queries.csv", dtype=str, keep_default_na=False)
    assert not set(listing["instrument"]) & {"randomization", "dosing"}
    assert not any(check.startswith("ARM-") for check in listing["check_id"])
    rand_file = tmp_path / "randomization.csv"
    randomization.to_csv(rand_file, index=False)
    unblinded = tmp_path / "unblinded"
    _validate(export, unblinded, "--randomization", str(rand_file))
    listing = pd.read_csv(unblinded / "queries.csv", dtype=str, keep_default_na=False)
    assert "ARM-ADJUNCT-WRONG-ARM" in set(listing["check_id"])
    assert "UNBLINDED" in (unblinded / "summary.html").read_text(encoding="utf-8")


def test_responses_by_command_and_by_edited_spreadsheet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    _validate(_export(tmp_path), out)
    log = out / "queries.sqlite"
    listing = pd.read_csv(out / "queries.csv", dtype=str, keep_default_na=False)
    # a query a site response may close: not critical, not a safety check
    first_id = listing.loc[
        (listing["severity"] == "major") & listing["check_id"].str.startswith("DQ-"), "query_id"
    ].iloc[0]
    main(
        [
            "queries",
            "respond",
            first_id,
            "--response",
            "confirmed_correct",
            "--note",
            "source checked",
            "--query-log",
            str(log),
        ]
    )
    assert f"{first_id}: confirmed_correct recorded, status closed" in capsys.readouterr().out

    book = openpyxl.load_workbook(out / "queries.xlsx")
    sheet = book[book.sheetnames[1]]
    header = [cell.value for cell in sheet[1]]
    row = 2
    chosen = sheet.cell(row=row, column=header.index("query_id") + 1).value
    if chosen == first_id:
        row = 3
        chosen = sheet.cell(row=row, column=header.index("query_id") + 1).value
    sheet.cell(row=row, column=header.index("response") + 1).value = "data_missing"
    sheet.cell(row=row, column=header.index("note") + 1).value = "chart at archive"
    edited = tmp_path / "edited.xlsx"
    book.save(edited)
    main(["queries", "import", str(edited), "--query-log", str(log)])
    assert "1 responses imported" in capsys.readouterr().out

    _validate(_export(tmp_path), out)
    statuses = pd.read_csv(out / "queries.csv", dtype=str, keep_default_na=False).set_index(
        "query_id"
    )
    assert statuses.loc[first_id, "status"] == "closed"
    assert statuses.loc[chosen, "status"] == "answered"
    assert statuses.loc[chosen, "response_note"] == "chart at archive"


def test_checks_list_prints_the_catalogue_and_the_study_custom_checks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main(["checks", "list", "--protocol", str(PROTOCOL_DIR), "--csv"])
    table = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out), dtype=str)
    assert {"DQ-B", "VIS-WINDOW", "LIV-HYS", "SCO-PHQ9-CSSRS", "CUS-BP-ORDER"} <= set(
        table["check_id"]
    )
    assert set(table["severity"]) == {"critical", "major", "minor"}
    assert table.loc[table["check_id"] == "LIV-HYS", "severity"].item() == "critical"


def test_a_custom_check_that_does_not_parse_is_one_error_naming_check_and_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checks = tmp_path / "checks.yaml"
    checks.write_text(
        "checks:\n"
        "  - id: CUS-BROKEN\n"
        "    severity: major\n"
        "    form: vital_signs\n"
        '    logic: "[vs_sbp] > (120"\n'
        "    message: broken\n",
        encoding="utf-8",
    )
    with pytest.raises(SystemExit) as exited:
        _validate(_export(tmp_path), tmp_path / "out", "--checks", str(checks))
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert "CUS-BROKEN" in error
    assert "position 16" in error


def test_a_snapshot_gives_the_same_queries_as_the_flat_export(tmp_path: Path) -> None:
    export = _export(tmp_path)
    protocol = load_protocol(PROTOCOL_DIR)
    snapshot = import_snapshot(
        protocol,
        export,
        PROTOCOL_DIR / "redcap" / "data_dictionary.csv",
        tmp_path / "snapshots",
        name="s1",
    )
    _validate(snapshot.path, tmp_path / "from-snapshot")
    _validate(export, tmp_path / "from-export")
    a = pd.read_csv(tmp_path / "from-snapshot" / "queries.csv", dtype=str, keep_default_na=False)
    b = pd.read_csv(tmp_path / "from-export" / "queries.csv", dtype=str, keep_default_na=False)
    assert len(a) > 0
    assert sorted(a["query_id"]) == sorted(b["query_id"])


def test_a_blinded_run_on_a_shared_log_neither_shows_nor_closes_unblinded_queries(
    tmp_path: Path,
) -> None:
    export = _export(tmp_path)
    _, randomization = _trial()
    rand_file = tmp_path / "randomization.csv"
    randomization.to_csv(rand_file, index=False)
    log = tmp_path / "shared.sqlite"
    _validate(
        export, tmp_path / "unblinded", "--randomization", str(rand_file), "--query-log", str(log)
    )
    _validate(export, tmp_path / "blinded", "--query-log", str(log))
    blinded = pd.read_csv(tmp_path / "blinded" / "queries.csv", dtype=str, keep_default_na=False)
    assert not any(check.startswith("ARM-") for check in blinded["check_id"])
    assert not set(blinded["instrument"]) & {"randomization", "dosing"}
    _validate(
        export, tmp_path / "again", "--randomization", str(rand_file), "--query-log", str(log)
    )
    unblinded = pd.read_csv(tmp_path / "again" / "queries.csv", dtype=str, keep_default_na=False)
    arm = unblinded[
        unblinded["check_id"].str.startswith("ARM-") | (unblinded["instrument"] == "dosing")
    ]
    assert len(arm) > 0
    assert set(arm["status"]) == {"open"}  # the blinded run in between closed none of them


def test_queries_list_filters_and_sorts_and_show_prints_the_whole_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    _validate(_export(tmp_path), out)
    log = str(out / "queries.sqlite")
    listing = pd.read_csv(out / "queries.csv", dtype=str, keep_default_na=False)
    capsys.readouterr()
    main(["queries", "list", "--query-log", log, "--site", "S02", "--kind", "site"])
    shown = capsys.readouterr().out
    expected = listing[(listing["site"] == "S02") & (listing["kind"] == "site_query")]
    assert f"{len(expected)} queries" in shown
    assert all(qid in shown for qid in expected["query_id"])
    assert not any(qid in shown for qid in listing.loc[listing["site"] != "S02", "query_id"])
    first_critical = shown.find(" critical ")
    assert first_critical >= 0
    assert shown.rfind(" critical ") < shown.find(" minor ") or " minor " not in shown

    main(["queries", "list", "--query-log", log, "--severity", "critical", "--kind", "review"])
    assert "0 queries" in capsys.readouterr().out  # no critical review signal

    hys = listing.loc[listing["check_id"] == "LIV-HYS", "query_id"].iloc[0]
    main(["queries", "respond", hys, "--response", "confirmed_correct", "--query-log", log])
    assert "status answered" in capsys.readouterr().out
    main(
        [
            "queries", "review", hys, "--decision", "accepted", "--reviewer", "Dr Monitor",
            "--note", "not drug-induced", "--query-log", log,
        ]
    )  # fmt: skip
    assert f"{hys}: review accepted by Dr Monitor, status closed" in capsys.readouterr().out
    main(["queries", "show", hys, "--query-log", log])
    shown = capsys.readouterr().out
    for text in ("LIV-HYS", "opened", "response: confirmed_correct", "review: accepted",
                 "Dr Monitor", "not drug-induced", "answered -> closed"):  # fmt: skip
        assert text in shown


def test_queries_commands_refuse_bad_options_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    _validate(_export(tmp_path), out)
    log = str(out / "queries.sqlite")
    capsys.readouterr()
    for argv, message in (
        (["queries", "list", "--query-log", log, "--status", "done"], "--status done: expected"),
        (["queries", "list", "--query-log", log, "--kind", "all"], "--kind all: expected"),
        (["queries", "show", "Q-NOPE", "--query-log", log], "query Q-NOPE: no such query"),
        (["queries", "list", "--query-log", str(tmp_path / "none.sqlite")], "no query log there"),
        (
            ["queries", "review", "Q-NOPE", "--decision", "maybe", "--reviewer", "x",
             "--query-log", log],
            "unknown decision 'maybe'",
        ),
    ):  # fmt: skip
        with pytest.raises(SystemExit):
            main(argv)
        error = capsys.readouterr().err.strip()
        assert message in error
        assert "\n" not in error
