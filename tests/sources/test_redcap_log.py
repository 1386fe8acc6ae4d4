"""The REDCap log (``content=log``): synthetic entry history served by the emulator, pulled through
PyCap over real HTTP, stored as the snapshot table ``_log`` and blinded by form."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from studyman.protocol import load_protocol
from studyman.protocol.models import Protocol
from studyman.sources.blinding import read_blinded_snapshot
from studyman.sources.emulator import EmulatorServer
from studyman.sources.pull import pull_snapshot
from studyman.sources.redcap_log import LOG_TABLE, blind_log, log_table
from studyman.sources.snapshot import read_snapshot, verify_snapshot
from studyman.synthetic.entry_log import emulator_entries, entry_log, site_lag_medians
from studyman.synthetic.generator import generate_trial
from studyman.synthetic.writer import redcap_csv_text

PROTOCOL = Path(__file__).resolve().parents[2] / "protocols" / "cbt-adjunct"
TOKEN = "C0FFEE0123456789ABCDEF0123456789"  # made up, 32 hex characters as REDCap's
BLINDED = "0123456789ABCDEF0123456789ABCDEF"

Start = Callable[..., EmulatorServer]


@pytest.fixture(scope="module")
def protocol() -> Protocol:
    return load_protocol(PROTOCOL / "protocol.yaml")


@pytest.fixture(scope="module")
def trial_and_log(protocol: Protocol) -> tuple[pd.DataFrame, pd.DataFrame]:
    trial = generate_trial(protocol, n_participants=24, seed=5)
    return trial.records, entry_log(protocol, trial.records, seed=11)


def _serve(
    start: Start, tmp_path: Path, records: pd.DataFrame, log: pd.DataFrame, tokens: dict[str, str]
) -> EmulatorServer:
    project_dir = tmp_path / "project"
    shutil.copytree(PROTOCOL / "redcap", project_dir)
    (project_dir / "records.csv").write_text(redcap_csv_text(records), encoding="utf-8")
    server = start(project_dir, tokens=tokens)
    server.emulator.state.log[:0] = emulator_entries(log)
    return server


def test_synthetic_entries_follow_each_visit_by_the_site_lag(
    protocol: Protocol, trial_and_log: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    records, log = trial_and_log
    assert list(log.columns) == ["timestamp", "username", "action", "details"]
    assert len(log) > 100
    # every user name is synthetic: a data access group and a number, never a person
    assert log["username"].str.fullmatch(r"s0\d_entry_[12]").all()
    parsed = log_table(
        log.to_dict("records"),
        field_forms={f.field_name: f.form_name for f in protocol.redcap.dictionary.fields},  # type: ignore[union-attr]
    )
    visit_dates = records.set_index(["record_id", "redcap_event_name"])
    lags = []
    for record, event, when in parsed[["record", "redcap_event_name", "timestamp"]].itertuples(
        index=False, name=None
    ):
        field = protocol.visit(event).date_field
        assert field is not None
        row = visit_dates.loc[(record, event)]
        visited = pd.Timestamp(
            str(row[field] if isinstance(row, pd.Series) else row[field].iloc[0])
        )
        lags.append((record.split("-")[0], (when.normalize() - visited).days))
    frame = pd.DataFrame(lags, columns=["site", "lag"])
    assert (frame["lag"] >= 0).all()
    medians = frame.groupby("site")["lag"].median()
    # the sites' lags differ the way the generator draws them: slower for each next site
    drawn = site_lag_medians(protocol)
    assert medians.idxmin() == min(drawn, key=drawn.__getitem__)
    assert medians.idxmax() == max(drawn, key=drawn.__getitem__)
    # the first entry of a record creates it, every later one updates it
    first = log.groupby(log["action"].str.split(" ").str[2])["action"].first()
    assert first.str.startswith("Create record").all()
    assert (log["action"].str.startswith("Create record").sum()) == len(first)


def test_the_log_round_trips_emulator_pycap_pull_snapshot(
    protocol: Protocol,
    trial_and_log: tuple[pd.DataFrame, pd.DataFrame],
    start_emulator: Start,
    tmp_path: Path,
) -> None:
    records, log = trial_and_log
    server = _serve(start_emulator, tmp_path, records, log, {TOKEN: "admin"})
    pulled = pull_snapshot(protocol, server.url, TOKEN, tmp_path / "snapshots", name="pull")
    assert verify_snapshot(pulled.path).ok
    manifest = json.loads((pulled.path / "manifest.json").read_text())
    assert manifest["tables"][LOG_TABLE]["rows"] == pulled.table_rows[LOG_TABLE]
    assert f"tables/{LOG_TABLE}.parquet" in manifest["files"]  # covered by the snapshot's hash
    stored = read_snapshot(pulled.path).tables[LOG_TABLE]
    entries = stored[stored["record"].notna()].reset_index(drop=True)
    # every synthetic entry came back, oldest first, with its record, event and form
    assert len(entries) == len(log)
    expected = log.assign(timestamp=pd.to_datetime(log["timestamp"]))
    merged = entries.merge(expected, on=["timestamp", "username", "action", "details"])
    assert len(merged) == len(log)
    assert entries["timestamp"].is_monotonic_increasing
    assert (
        entries["action"].str.split(" ").str[2].astype(str) == entries["record"].astype(str)
    ).all()
    assert (entries["redcap_event_name"].astype(str).isin(protocol.event_names)).all()
    forms = entries["forms"].astype(str)
    assert (forms != "").all()
    assert (forms == entries["details"].str.extract(r"(\w+)_complete = ")[0]).all()
    # the pull's own calls are logged too, about no record and no form
    calls = stored[stored["record"].isna()]
    assert len(calls) > 0
    assert (calls["forms"].fillna("") == "").all()
    # the token never reaches the stored log
    assert not any(TOKEN in str(cell) for cell in stored.astype(str).to_numpy().ravel())


def test_blinded_view_keeps_only_rows_of_forms_the_reader_may_see(
    protocol: Protocol,
    trial_and_log: tuple[pd.DataFrame, pd.DataFrame],
    start_emulator: Start,
    tmp_path: Path,
) -> None:
    records, log = trial_and_log
    server = _serve(start_emulator, tmp_path, records, log, {TOKEN: "admin"})
    pulled = pull_snapshot(protocol, server.url, TOKEN, tmp_path / "snapshots", name="pull")
    full = read_snapshot(pulled.path).tables[LOG_TABLE]
    hidden = set(protocol.blinding.unblinded_forms)
    assert full["forms"].astype(str).isin(hidden).any()  # the attack: rows of the dosing forms
    blinded = read_blinded_snapshot(pulled.path, protocol).tables[LOG_TABLE]
    hidden_fields = {
        f.field_name
        for f in protocol.redcap.dictionary.fields  # type: ignore[union-attr]
        if f.form_name in hidden
    }
    for forms, details in blinded[["forms", "details"]].itertuples(index=False, name=None):
        assert forms
        assert not set(str(forms).split(",")) & hidden
        assert not any(f"{name} = " in str(details) for name in hidden_fields)
    visible = full[
        full["forms"]
        .fillna("")
        .astype(str)
        .map(lambda f: bool(f) and not set(f.split(",")) & hidden)
    ]
    assert len(blinded) == len(visible) > 0


def test_a_row_naming_a_masked_field_is_dropped_from_the_blinded_log() -> None:
    rows = [
        {"timestamp": "2026-01-02 10:00", "username": "u", "action": "Update record 1 (v1)",
         "details": "score = '3', secret = '2', form_a_complete = '2'"},
        {"timestamp": "2026-01-03 10:00", "username": "u", "action": "Update record 1 (v1)",
         "details": "score = '4', form_a_complete = '2'"},
    ]  # fmt: skip
    table = log_table(
        rows,
        field_forms={"score": "form_a", "secret": "form_a"},
        events=[{"unique_event_name": "v1_arm_1", "event_name": "v1"}],
    )
    assert table["redcap_event_name"].tolist() == ["v1_arm_1", "v1_arm_1"]
    assert table["record"].tolist() == ["1", "1"]
    kept = blind_log(table, hidden_forms=(), masked_fields={"secret"})
    assert kept["details"].tolist() == ["score = '4', form_a_complete = '2'"]


def test_a_token_without_the_logging_right_pulls_a_snapshot_without_a_log(
    protocol: Protocol,
    trial_and_log: tuple[pd.DataFrame, pd.DataFrame],
    start_emulator: Start,
    tmp_path: Path,
) -> None:
    records, log = trial_and_log
    server = _serve(start_emulator, tmp_path, records, log, {BLINDED: "coordinator"})
    pulled = pull_snapshot(protocol, server.url, BLINDED, tmp_path / "snapshots", name="pull")
    assert LOG_TABLE not in read_snapshot(pulled.path).tables
    assert pulled.records > 0
    assert verify_snapshot(pulled.path).ok
