"""Queries close only on evidence: input that covers less than the log's last run is refused.

Each test attacks a query log with many open queries the way issue 11 item 6 did: an empty CSV,
a participant subset, an export missing two columns, a site (DAG) user's snapshot pulled through
the emulator. Without ``partial`` nothing changes and the error says what is missing; with it,
only queries whose record, event, instance and field the input holds can close.
"""

from __future__ import annotations

import csv
import io
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from studyman.protocol.loader import load_protocol
from studyman.protocol.models import Protocol
from studyman.sources.emulator import EmulatorServer
from studyman.sources.pull import pull_snapshot
from studyman.synthetic.generator import generate_trial
from studyman.synthetic.writer import write_trial
from studyman.validation.query_log import CoverageError, QueryLog
from studyman.validation.run import validate_study

PROTOCOL_DIR = Path(__file__).parents[2] / "protocols" / "cbt-adjunct"
COORDINATOR_TOKEN = "C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0"
SITE_TOKEN = "51051051051051051051051051051051"
OPEN = ("open", "answered", "reopened")


@dataclass(frozen=True)
class Study:
    protocol: Protocol
    records: Path  # the complete flat export (every participant, every column)
    planted: pd.DataFrame


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    protocol = load_protocol(PROTOCOL_DIR)
    trial = generate_trial(protocol, n_participants=80, seed=31, plant_errors=True)
    folder = tmp_path_factory.mktemp("trial")
    written = write_trial(trial, folder)
    return Study(protocol, written["records"], trial.planted_errors)


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as stream:
        table = list(csv.reader(stream))
    return table[0], table[1:]


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def _log_state(path: Path) -> tuple[list[tuple[object, ...]], ...]:
    with sqlite3.connect(path) as connection:
        return tuple(
            connection.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("queries", "history", "runs", "run_coverage")
        )


def _first_run(study: Study, tmp_path: Path) -> tuple[Path, Path, pd.DataFrame]:
    out = tmp_path / "validation"
    validate_study(study.protocol, study.records, out, at="2026-10-01T00:00:00Z")
    log = out / "queries.sqlite"
    with QueryLog(log) as opened:
        queries = opened.queries()
    assert queries["status"].isin(OPEN).sum() > 100  # a log with many open queries
    return out, log, queries


def _closed(log: Path) -> set[str]:
    with QueryLog(log) as opened:
        queries = opened.queries()
    return set(queries.loc[queries["status"] == "closed", "query_id"])


@pytest.mark.parametrize("content", ["", "header"], ids=["empty-file", "header-only"])
def test_an_empty_export_closes_nothing_and_is_refused_saying_what_is_missing(
    study: Study, tmp_path: Path, content: str
) -> None:
    out, log, _ = _first_run(study, tmp_path)
    before = _log_state(log)
    listing = (out / "queries.csv").read_bytes()
    empty = tmp_path / "empty.csv"
    if content:
        _write(empty, _rows(study.records)[0], [])
    else:
        empty.write_text("", encoding="utf-8")
    with pytest.raises(CoverageError) as refused:
        validate_study(study.protocol, empty, out, at="2026-10-02T00:00:00Z")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{empty}: covers less than the query log's last complete run")
    assert "4 of 4 sites (DAGs) missing" in message
    assert "participants missing" in message
    assert "--partial" in message
    assert _log_state(log) == before
    assert (out / "queries.csv").read_bytes() == listing

    partial = validate_study(study.protocol, empty, out, at="2026-10-02T00:00:00Z", partial=True)
    assert partial.sync.closed == ()
    assert _closed(log) == set()


def test_a_participant_subset_is_refused_and_with_partial_closes_only_its_own_queries(
    study: Study, tmp_path: Path
) -> None:
    out, log, queries = _first_run(study, tmp_path)
    header, rows = _rows(study.records)
    participants = sorted({row[0] for row in rows})
    kept = set(participants[:40])
    subset_rows = [row for row in rows if row[0] in kept]
    # correct one planted out-of-range value inside the subset: the evidence that closes it
    error = study.planted[
        (study.planted["error_type"] == "out_of_range") & study.planted["record_id"].isin(kept)
    ].iloc[0]
    column = header.index(error["field"])
    event = header.index("redcap_event_name")
    for row in subset_rows:
        if row[0] == error["record_id"] and row[event] == error["event"]:
            assert row[column] == error["planted_value"]
            row[column] = error["original_value"]
    subset = _write(tmp_path / "subset.csv", header, subset_rows)
    before = _log_state(log)

    with pytest.raises(CoverageError, match=rf"{len(participants) - 40} of {len(participants)} "):
        validate_study(study.protocol, subset, out, at="2026-10-02T00:00:00Z")
    assert _log_state(log) == before

    report = validate_study(study.protocol, subset, out, at="2026-10-02T00:00:00Z", partial=True)
    closed = queries.set_index("query_id").loc[list(report.sync.closed)]
    assert set(closed["record_id"]) == {error["record_id"]}
    assert set(closed["field"]) >= {error["field"]}
    assert report.sync.opened == ()  # the study-wide outlier rule is not applied to a subset
    outside = queries[~queries["record_id"].isin(kept)]
    with QueryLog(log) as opened:
        after = opened.queries().set_index("query_id")
        history = opened.history()
    assert (
        after.loc[outside["query_id"], "status"] == outside.set_index("query_id")["status"]
    ).all()
    recorded = history[history["action"] == "kept: outside the partial run"]
    assert set(recorded["query_id"]) == set(report.sync.kept)
    assert set(report.sync.kept) <= set(outside["query_id"])
    assert len(report.sync.kept) > 0
    with sqlite3.connect(log) as connection:
        flags = connection.execute("SELECT partial FROM run_coverage ORDER BY run").fetchall()
    assert flags == [(0,), (1,)]


def test_an_export_missing_two_columns_is_refused_and_partial_opens_and_closes_nothing(
    study: Study, tmp_path: Path
) -> None:
    out, log, queries = _first_run(study, tmp_path)
    header, rows = _rows(study.records)
    dropped = [header.index("age"), header.index("vs_temp")]
    narrow = _write(
        tmp_path / "narrow.csv",
        [name for index, name in enumerate(header) if index not in dropped],
        [[cell for index, cell in enumerate(row) if index not in dropped] for row in rows],
    )
    before = _log_state(log)
    with pytest.raises(CoverageError, match=r"2 fields .*\(age, vs_temp\)"):
        validate_study(study.protocol, narrow, out, at="2026-10-02T00:00:00Z")
    assert _log_state(log) == before

    report = validate_study(study.protocol, narrow, out, at="2026-10-02T00:00:00Z", partial=True)
    assert (report.sync.opened, report.sync.closed, report.sync.reopened) == ((), (), ())
    with QueryLog(log) as opened:
        after = opened.queries()
        history = opened.history()
    assert after["status"].tolist() == queries["status"].tolist()
    notes = history.loc[history["action"] == "kept: outside the partial run", "note"]
    assert len(notes) > 0
    assert notes.str.contains("age, vs_temp").all()


def test_a_query_whose_row_is_no_longer_exported_stays_open_with_a_history_row(
    study: Study, tmp_path: Path
) -> None:
    out, log, queries = _first_run(study, tmp_path)
    header, rows = _rows(study.records)
    repeat = header.index("redcap_repeat_instrument")
    instance = header.index("redcap_repeat_instance")
    on_instance = queries[(queries["instance"] != "") & queries["status"].isin(OPEN)].iloc[0]
    gone = [
        row
        for row in rows
        if not (
            row[0] == on_instance["record_id"]
            and row[repeat] == on_instance["instrument"]
            and row[instance] == on_instance["instance"]
        )
    ]
    assert len(gone) == len(rows) - 1
    report = validate_study(
        study.protocol, _write(tmp_path / "less.csv", header, gone), out, at="2026-10-02T00:00:00Z"
    )
    assert on_instance["query_id"] in report.sync.kept
    assert on_instance["query_id"] not in report.sync.closed
    with QueryLog(log) as opened:
        history = opened.history(on_instance["query_id"])
        status = opened.queries().set_index("query_id").loc[on_instance["query_id"], "status"]
    assert status == on_instance["status"]
    assert history["action"].tolist()[-1] == "kept: place not in input"
    assert "not in the input" in history["note"].tolist()[-1]


def test_each_run_records_its_coverage_in_the_log(study: Study, tmp_path: Path) -> None:
    _, log, _ = _first_run(study, tmp_path)
    with QueryLog(log) as opened:
        last = opened.last_coverage()
    assert last is not None
    at, coverage = last
    _header, rows = _rows(study.records)
    assert at == "2026-10-01T00:00:00Z"
    assert coverage.records == {row[0] for row in rows}
    assert coverage.sites == {"S01", "S02", "S03", "S04"}
    assert "week_16_arm_1" in coverage.events
    assert ("vital_signs", "vs_temp") in coverage.fields
    # a blinded run: the unblinded forms are not part of what it covers
    assert not {form for form, _ in coverage.fields} & set(study.protocol.blinding.unblinded_forms)


# ------------------------------------------------------------------- a site user's snapshot


@pytest.fixture(scope="module")
def pulled(study: Study, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A coordinator's (every site) and a site S01 user's (its DAG only) snapshot, pulled with
    PyCap from the emulator serving the study's REDCap project."""
    folder = tmp_path_factory.mktemp("redcap")
    project = folder / "project"
    shutil.copytree(PROTOCOL_DIR / "redcap", project)
    shutil.copyfile(study.records, project / "records.csv")
    tokens = {COORDINATOR_TOKEN: "coordinator", SITE_TOKEN: "site_s01"}
    with EmulatorServer(project, host="127.0.0.1", port=0, tokens=tokens) as server:
        everyone = pull_snapshot(study.protocol, server.url, COORDINATOR_TOKEN, folder / "all")
        site = pull_snapshot(study.protocol, server.url, SITE_TOKEN, folder / "site")
    return everyone.path, site.path


def test_a_site_users_snapshot_is_refused_and_partial_closes_only_that_sites_queries(
    study: Study, pulled: tuple[Path, Path], tmp_path: Path
) -> None:
    everyone, site = pulled
    out = tmp_path / "validation"
    validate_study(study.protocol, everyone, out, at="2026-10-01T00:00:00Z")
    log = out / "queries.sqlite"
    with QueryLog(log) as opened:
        queries = opened.queries()
    assert set(queries["site"]) == {"S01", "S02", "S03", "S04"}
    before = _log_state(log)
    with pytest.raises(CoverageError, match=r"3 of 4 sites \(DAGs\) missing \(S02, S03, S04\)"):
        validate_study(study.protocol, site, out, at="2026-10-02T00:00:00Z")
    assert _log_state(log) == before

    report = validate_study(study.protocol, site, out, at="2026-10-02T00:00:00Z", partial=True)
    assert report.sync.closed == ()  # the site's data did not change: nothing is resolved
    assert report.sync.opened == ()
    with QueryLog(log) as opened:
        after = opened.queries()
    assert after["status"].tolist() == queries["status"].tolist()
    kept = queries.set_index("query_id").loc[list(report.sync.kept)]
    assert set(kept["site"]) <= {"S02", "S03", "S04"}
