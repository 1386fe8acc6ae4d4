"""Data entry timeliness: entry lag per site from REDCap's log (pulled from the emulator over real
HTTP), outstanding forms from the records, the same pooled numbers in both sessions."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from studyman.protocol.loader import load_protocol
from studyman.reporting.dsmb import (
    SECTIONS,
    DsmbInputs,
    build_sections,
    cut_tables,
    report_data,
    withhold_listings,
)
from studyman.reporting.sections.data_entry import (
    ALL_SITES,
    NO_LOG,
    SECTION_ID,
    data_entry_section,
)
from studyman.sources.emulator import EmulatorServer
from studyman.sources.pull import pull_snapshot
from studyman.sources.redcap_log import LOG_TABLE
from studyman.synthetic.entry_log import emulator_entries, entry_log
from studyman.synthetic.generator import generate_trial
from studyman.synthetic.writer import redcap_csv_text

from .conftest import PROTOCOL, Study, shared_dir
from .section_inputs import CUT, assert_pooled, json_table, row, section_inputs

LAG = f"{SECTION_ID}.days-from-visit-to-first-entry-by-site"
OUTSTANDING = f"{SECTION_ID}.outstanding-forms-at-visits-done-by-site"
TOKEN = "C0FFEE0123456789ABCDEF0123456789"  # made up, 32 hex characters as REDCap's


def _build(base: Path) -> None:
    protocol = load_protocol(PROTOCOL)
    trial = generate_trial(protocol, n_participants=40, seed=7)
    log = entry_log(protocol, trial.records, seed=3)
    project = base / "project"
    shutil.copytree(PROTOCOL.parent / "redcap", project)
    (project / "records.csv").write_text(redcap_csv_text(trial.records), encoding="utf-8")
    trial.randomization.to_csv(base / "randomization.csv", index=False)
    trial.records.to_csv(base / "records.csv", index=False)
    log.to_csv(base / "log.csv", index=False)
    with EmulatorServer(project, tokens={TOKEN: "admin"}) as server:
        server.emulator.state.log[:0] = emulator_entries(log)
        pull_snapshot(protocol, server.url, TOKEN, base / "snapshots", name="s1")


@pytest.fixture(scope="module")
def pulled(tmp_path_factory: pytest.TempPathFactory) -> Study:
    base = shared_dir(tmp_path_factory, "data-entry-study", _build)
    return Study(
        load_protocol(PROTOCOL), base / "snapshots" / "s1", base / "randomization.csv", base
    )


def _session(inputs: DsmbInputs) -> dict[str, Any]:
    """The report data of this section alone, through the open session's gate when open
    (the whole report is built once, in test_sections_build_in_both_sessions)."""
    section = data_entry_section(inputs)
    if not inputs.closed:
        ids = frozenset(str(i) for i in inputs.facts().subjects.index)
        section = withhold_listings(section, ids)
    data = report_data([section], inputs.facts())
    data["sections"] = {section.id: section}
    return data


@pytest.fixture(scope="module")
def sessions(pulled: Study) -> dict[str, dict[str, Any]]:
    return {
        "open": _session(section_inputs(pulled, closed=False)),
        "closed": _session(section_inputs(pulled, closed=True)),
    }


def test_the_section_is_in_the_report_order() -> None:
    assert SECTION_ID in [spec.id for spec in SECTIONS]


def test_both_sessions_show_the_same_pooled_tables(sessions: dict[str, dict[str, Any]]) -> None:
    arms = list(sessions["closed"]["facts"]["randomised_by_arm"])
    for table_id in (LAG, OUTSTANDING):
        opened = json_table(sessions["open"], table_id)
        closed = json_table(sessions["closed"], table_id)
        assert opened["rows"] == closed["rows"]
        assert opened["columns"] == closed["columns"]
    for session in ("open", "closed"):
        assert_pooled(sessions[session], SECTION_ID, arms)


def _independent_lags(pulled: Study) -> pd.DataFrame:
    """The lags recomputed from the synthetic log and records as written, without the pull."""
    protocol = pulled.protocol
    log = pd.read_csv(pulled.base / "log.csv", dtype=str)
    records = pd.read_csv(pulled.base / "records.csv", dtype=str, keep_default_na=False)
    hidden = set(protocol.blinding.unblinded_forms)
    dated = {
        (visit.event, visit.date_field) for visit in protocol.visits if visit.date_field is not None
    }
    visit_dates: dict[tuple[str, str], str] = {}
    for event, field in dated:
        here = records[records["redcap_event_name"] == event]
        visit_dates.update(
            {(r, event): d for r, d in zip(here["record_id"], here[field], strict=True) if d}
        )
    rows = []
    for action, details, stamp in log[["action", "details", "timestamp"]].itertuples(
        index=False, name=None
    ):
        _, _, record, event = action.split(" ")
        event = event.strip("()")
        form = details.rsplit(", ", 1)[-1].split("_complete = ")[0]
        visit = protocol.visit(event)
        if form in hidden or visit.date_field is None:
            continue
        visited = pd.Timestamp(visit_dates[(record, event)])
        if visited > pd.Timestamp(CUT):
            continue  # a visit after the cut-off is not in the cut tables
        lag = (pd.Timestamp(stamp).normalize() - visited).days
        rows.append((record.split("-")[0], lag))
    return pd.DataFrame(rows, columns=["site", "lag"])


def test_lags_equal_a_recount_from_the_synthetic_log(
    sessions: dict[str, dict[str, Any]], pulled: Study
) -> None:
    table = json_table(sessions["open"], LAG)
    lags = _independent_lags(pulled)
    overall = row(table, ALL_SITES)
    assert int(overall[1]) == len(lags) > 100
    assert float(overall[2]) == pytest.approx(float(np.median(lags["lag"])), abs=0.05)
    assert float(overall[3]) == pytest.approx(float(np.percentile(lags["lag"], 90)), abs=0.05)
    assert int(overall[4]) == int(lags["lag"].max())
    by_site = {r[0].split(" ")[0]: r for r in table["rows"] if r[0] != ALL_SITES}
    assert sum(int(r[1]) for r in by_site.values()) == int(overall[1])
    medians = {site: float(r[2]) for site, r in by_site.items()}
    expected = lags.groupby("site")["lag"].median()
    for site, value in expected.items():
        assert medians[str(site)] == pytest.approx(float(value), abs=0.05)
    # the generator's sites differ: the first enters fastest, the last slowest
    assert medians["S01"] < medians["S04"]


def test_outstanding_forms_total_the_facts_visits_done(
    sessions: dict[str, dict[str, Any]],
) -> None:
    data = sessions["closed"]
    table = json_table(data, OUTSTANDING)
    overall = row(table, ALL_SITES)
    assert int(overall[1]) == data["facts"]["visits_done"] > 0
    sites = [r for r in table["rows"] if r[0] != ALL_SITES]
    for column in (1, 2):
        assert sum(int(r[column]) for r in sites) == int(overall[column])
    assert sum(int(r[3].split(" ")[0]) for r in sites) == int(overall[3].split(" ")[0])


def test_a_form_removed_from_a_done_visit_becomes_outstanding(pulled: Study) -> None:
    inputs = section_inputs(pulled, closed=False)
    before = json_table(_session(inputs), OUTSTANDING)
    visits = inputs.facts().visits
    protocol = pulled.protocol
    treatment = {v.event for v in protocol.visits if v.kind == "treatment"}
    done = visits[visits["done"].to_numpy(bool) & visits["event"].isin(treatment)].iloc[0]
    scales = {s.instrument for s in protocol.scoring}
    # a scale's form at a treatment visit: removing it changes no fact, only the form's entry
    scale = next(f for f in protocol.visit(str(done["event"])).instruments if f in scales)
    tables = dict(inputs.tables)
    frame = tables[scale]
    drop = (frame["record_id"].astype(str) == str(done["subject"])) & (
        frame["redcap_event_name"].astype(str) == str(done["event"])
    )
    assert drop.sum() == 1
    tables[scale] = frame.loc[~drop.to_numpy()].reset_index(drop=True)
    attacked = DsmbInputs(pulled.protocol, tables, inputs.cutoff, as_of=inputs.as_of)
    after = json_table(_session(attacked), OUTSTANDING)
    count = lambda t: int(row(t, ALL_SITES)[3].split(" ")[0])  # noqa: E731
    assert count(after) == count(before) + 1
    assert row(after, ALL_SITES)[1:3] == row(before, ALL_SITES)[1:3]


def test_a_snapshot_without_a_log_still_reports(pulled: Study) -> None:
    inputs = section_inputs(pulled, closed=True)
    tables = {k: v for k, v in inputs.tables.items() if k != LOG_TABLE}
    section = data_entry_section(
        DsmbInputs(pulled.protocol, tables, inputs.cutoff, arms=inputs.arms,
                   arm_order=inputs.arm_order, as_of=inputs.as_of)
    )  # fmt: skip
    assert any(NO_LOG in p for p in section.paragraphs)
    assert [t.title for t in section.tables] == ["Outstanding forms at visits done, by site"]


def test_log_rows_of_the_unblinded_forms_never_count(pulled: Study) -> None:
    inputs = section_inputs(pulled, closed=True)
    log = inputs.tables[LOG_TABLE]
    hidden = set(pulled.protocol.blinding.unblinded_forms)
    unblinded = log["forms"].fillna("").astype(str).isin(hidden)
    assert unblinded.any()
    # the attack: an unblinded form's save, logged before every other entry of the study
    early = log.loc[unblinded].copy()
    early["timestamp"] = pd.Timestamp("2000-01-01")
    tables = {**inputs.tables, LOG_TABLE: pd.concat([early, log], ignore_index=True)}
    attacked = data_entry_section(
        DsmbInputs(pulled.protocol, tables, inputs.cutoff, as_of=inputs.as_of)
    )
    plain = data_entry_section(inputs)
    assert attacked.tables[0].frame.equals(plain.tables[0].frame)


def test_sections_build_in_both_sessions(pulled: Study) -> None:
    for closed in (False, True):
        sections = build_sections(section_inputs(pulled, closed=closed))
        section = next(s for s in sections if s.id == SECTION_ID)
        assert not section.missing
        assert len(section.tables) == 2


def test_cut_tables_leave_the_log_whole(pulled: Study) -> None:
    inputs = section_inputs(pulled, closed=True)
    from studyman.sources.snapshot import read_snapshot

    log = read_snapshot(pulled.snapshot).tables[LOG_TABLE]
    cut = cut_tables(pulled.protocol, {LOG_TABLE: log}, date(2000, 1, 1))
    assert len(cut[LOG_TABLE]) == len(log) == len(inputs.tables[LOG_TABLE])
