"""Pulls through unchanged PyCap from the REDCap emulator over real HTTP on loopback."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from redcap.project import Project as PyCapProject

from studyman.cli import main
from studyman.errors import SnapshotError, SourceError
from studyman.protocol import load_protocol, read_data_dictionary
from studyman.sources.emulator import EmulatorServer, FaultPlan
from studyman.sources.offline import import_snapshot
from studyman.sources.pull import TOKEN_ENV, PullProgress, pull_snapshot, read_token
from studyman.sources.snapshot import read_snapshot, verify_snapshot

PROJECTS = Path(__file__).resolve().parents[1] / "data" / "redcap-projects"
PROTOCOL = Path(__file__).resolve().parents[2] / "protocols" / "cbt-adjunct"
TOKEN = "C0FFEE0123456789ABCDEF0123456789"  # made up, 32 hex characters as REDCap's

Start = Callable[..., EmulatorServer]


def _table_hashes(snapshot: Path) -> dict[str, str]:
    files = json.loads((snapshot / "manifest.json").read_text())["files"]
    return {
        name: digest
        for name, digest in files.items()
        if (name.startswith("tables/") or name == "findings.parquet")
        and name != "tables/_log.parquet"  # a pull also stores REDCap's log; an import cannot
    }


def _export_like_a_coordinator(server: EmulatorServer, directory: Path) -> tuple[Path, Path]:
    """The raw CSV export and the human-header dictionary, as downloaded from REDCap's pages."""
    project = PyCapProject(server.url, TOKEN)
    records = project.export_records(
        format_type="csv", event_name="unique", export_data_access_groups=True
    )
    metadata_csv = project.export_metadata(format_type="csv")
    dictionary = read_data_dictionary(_Text(metadata_csv)).to_csv_text(human_headers=True)
    directory.mkdir()
    (directory / "records.csv").write_text(records, encoding="utf-8")
    (directory / "dictionary.csv").write_text(dictionary, encoding="utf-8")
    return directory / "records.csv", directory / "dictionary.csv"


class _Text:
    """A minimal text stream (read_data_dictionary accepts an open file)."""

    def __init__(self, text: str) -> None:
        self._text = text
        self.name = "metadata.csv"

    def read(self) -> str:
        return self._text


@pytest.mark.parametrize(
    "project", ["longitudinal", "vignette-repeating", "dag", "decimal-comma", "russian"]
)
def test_offline_import_and_pull_of_the_same_data_give_identical_tables(
    project: str, start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator(PROJECTS / project / "project.xml", tokens={TOKEN: "api"})
    pulled = pull_snapshot(
        None, server.url, TOKEN, tmp_path / "snapshots", batch_size=2, concurrency=2, name="pull"
    )
    records, dictionary = _export_like_a_coordinator(server, tmp_path / "export")
    imported = import_snapshot(None, records, dictionary, tmp_path / "snapshots", name="import")
    pulled_hashes = _table_hashes(pulled.path)
    assert pulled_hashes == _table_hashes(imported.path)
    assert len(pulled_hashes) >= 2
    assert pulled.records == imported.records > 0
    assert verify_snapshot(pulled.path).ok


def test_reference_study_pull_and_import_agree_with_planted_errors(
    start_emulator: Start, tmp_path: Path
) -> None:
    from studyman.synthetic.generator import generate_trial
    from studyman.synthetic.writer import redcap_csv_text

    protocol = load_protocol(PROTOCOL)
    trial = generate_trial(protocol, n_participants=30, seed=7, plant_errors=True)
    project_dir = tmp_path / "project"
    shutil.copytree(PROTOCOL / "redcap", project_dir)
    (project_dir / "records.csv").write_text(redcap_csv_text(trial.records), encoding="utf-8")
    server = start_emulator(project_dir, tokens={TOKEN: "api"})
    pulled = pull_snapshot(
        protocol, server.url, TOKEN, tmp_path / "snapshots", batch_size=7, name="pull"
    )
    records, dictionary = _export_like_a_coordinator(server, tmp_path / "export")
    imported = import_snapshot(protocol, records, dictionary, tmp_path / "snapshots", name="import")
    assert _table_hashes(pulled.path) == _table_hashes(imported.path)
    snapshot = read_snapshot(pulled.path)
    assert set(snapshot.tables) >= {"participant", "hamd17", "adverse_events", "disposition"}
    assert pulled.records == trial.records["record_id"].nunique()
    # Planted invalid codes cannot cast: each is a finding, with its value kept as text.
    invalid = trial.planted_errors[trial.planted_errors["error_type"] == "invalid_code"]
    assert len(invalid) == 3
    findings = snapshot.findings
    for _, planted in invalid.iterrows():
        hit = findings[
            (findings["record_id"] == planted["record_id"])
            & (findings["field"] == planted["field"])
        ]
        assert len(hit) == 1, planted.to_dict()
        assert hit["value"].item() == str(planted["planted_value"])


def test_pull_records_redcap_version_project_and_protocol_in_the_manifest(
    start_emulator: Start, tmp_path: Path
) -> None:
    protocol = load_protocol(PROTOCOL)
    project_dir = tmp_path / "project"
    shutil.copytree(PROTOCOL / "redcap", project_dir)
    (project_dir / "records.csv").write_text(
        "record_id,redcap_event_name,redcap_repeat_instrument,redcap_repeat_instance,"
        "redcap_data_access_group,scr_date,age,ae_term\n"
        "S01-0001,screening_arm_1,,,s01,2025-03-01,UNK,\n"
        "S01-0002,screening_arm_1,,,s01,2025-03-02,41,\n"
        "S01-0002,logs_arm_1,adverse_events,1,s01,,,Headache\n",
        encoding="utf-8",
    )
    server = start_emulator(project_dir, tokens={TOKEN: "api"})
    result = pull_snapshot(protocol, server.url, TOKEN, tmp_path, name="with-protocol")
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["protocol"]["study_id"] == protocol.study.id
    assert manifest["protocol"]["sha256"] == protocol.source_sha256
    assert manifest["redcap"]["version"]
    assert manifest["redcap"]["project"]["project_id"]
    assert manifest["longitudinal"] is True
    assert manifest["missing_data_codes"] == ["UNK", "NASK"]
    assert manifest["conformance_findings"] == 0  # the protocol matches its REDCap project
    assert "conformance.parquet" in manifest["files"]
    tables = read_snapshot(result.path).tables
    participant = tables["participant"]
    assert participant["record_id"].tolist() == ["S01-0001", "S01-0002"]
    assert participant["age__missing"].tolist()[0] == "UNK"
    assert participant["age"].tolist()[1] == 41
    assert participant["redcap_data_access_group"].tolist() == ["s01", "s01"]
    adverse_events = tables["adverse_events"]
    assert adverse_events["ae_term"].tolist() == ["Headache"]
    assert adverse_events["redcap_repeat_instance"].tolist() == [1]
    assert adverse_events["redcap_event_name"].tolist() == ["logs_arm_1"]


def test_classic_project_is_pulled_as_classic(start_emulator: Start, tmp_path: Path) -> None:
    server = start_emulator(PROJECTS / "simple" / "project.xml", tokens={TOKEN: "api"})
    result = pull_snapshot(None, server.url, TOKEN, tmp_path, batch_size=2, name="classic")
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["longitudinal"] is False
    table = read_snapshot(result.path).tables["demographics"]
    assert "redcap_event_name" not in table.columns
    assert result.records == 5
    calls = [entry.content for entry in server.log]
    assert "formEventMapping" in calls  # asked, answered 400: classic
    assert "event" not in calls


def test_pull_survives_server_errors_bans_timeouts_and_truncated_bodies(
    start_emulator: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_emulator(PROJECTS / "longitudinal" / "project.xml", tokens={TOKEN: "api"})
    clean = pull_snapshot(None, server.url, TOKEN, tmp_path, batch_size=1, name="clean")
    faults = ("500", "500html", "502", "504", "429", "timeout", "truncate", "cut")
    # Each fault is followed by a good answer, so each failing call succeeds on a retry; the
    # faults land on metadata calls and on records batches alike.
    server.set_faults(
        FaultPlan(schedule=tuple(x for fault in faults for x in (fault, "ok")), hang_seconds=5)
    )
    caplog.set_level(logging.WARNING, logger="studyman.sources.pull")
    survived = pull_snapshot(
        None,
        server.url,
        TOKEN,
        tmp_path,
        batch_size=1,
        concurrency=2,
        retries=3,
        backoff=0.01,
        timeout=1.0,
        name="survived",
    )
    assert _table_hashes(survived.path) == _table_hashes(clean.path)
    retried = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retried) == len(faults)
    for sign in ("HTTP 500", "HTTP 502", "HTTP 504", "HTTP 429", "time-out"):
        assert any(sign in message for message in retried), sign


def test_pull_refuses_an_html_page_answered_as_csv(start_emulator: Start, tmp_path: Path) -> None:
    server = start_emulator(PROJECTS / "simple" / "project.xml", tokens={TOKEN: "api"})
    server.set_faults(FaultPlan(contents=("record",), schedule=("500html", "500html", "500html")))
    with pytest.raises(SourceError, match=r"gave up after 3 attempts.*HTTP 500"):
        pull_snapshot(None, server.url, TOKEN, tmp_path, retries=2, backoff=0.01, name="x")
    assert list(tmp_path.iterdir()) == []


def test_pull_whose_retries_run_out_exits_non_zero_and_leaves_no_snapshot(
    start_emulator: Start,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = start_emulator(PROJECTS / "longitudinal" / "project.xml", tokens={TOKEN: "api"})
    # The record-ID export succeeds, then every records batch is banned: the pull fails midway.
    server.set_faults(FaultPlan(contents=("record",), ban_after=1))
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    out = tmp_path / "snapshots"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SystemExit) as exited:
        main(
            ["pull", "--url", server.url, "--out", str(out), "--retries", "2", "--batch-size", "1"]
        )
    assert exited.value.code != 0
    captured = capsys.readouterr()
    assert "gave up after 3 attempts" in captured.err
    assert "429" in captured.err
    leftovers = list(out.rglob("*")) if out.exists() else []
    assert leftovers == []
    assert TOKEN not in captured.out + captured.err + caplog.text
    assert TOKEN.lower() not in (captured.out + captured.err + caplog.text).lower()


def test_token_never_appears_in_snapshots_logs_output_or_errors(
    start_emulator: Start,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = start_emulator(PROJECTS / "longitudinal" / "project.xml", tokens={TOKEN: "api"})
    server.set_faults(
        FaultPlan(schedule=("500", "ok", "timeout", "ok", "truncate"), hang_seconds=3)
    )
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    out = tmp_path / "snapshots"
    code = main(
        [
            "pull",
            "--url",
            server.url,
            "--out",
            str(out),
            "--token-file",
            str(token_file),
            "--timeout",
            "1",
            "--backoff",
            "0.01",
        ]
    )
    assert code in (0, None)
    captured = capsys.readouterr()
    snapshot = Path(captured.out.strip())
    assert snapshot.parent == out
    assert verify_snapshot(snapshot).ok
    # A refused token and a wrong one: errors must not echo them.
    errors: list[str] = []
    for wrong in (TOKEN[:-1] + "0", TOKEN + "00"):
        with pytest.raises(SourceError) as refused:
            pull_snapshot(None, server.url, wrong, tmp_path / "other", retries=0)
        errors.append(str(refused.value))
        errors.append(repr(refused.value))
        assert wrong not in str(refused.value)
    texts = [captured.out, captured.err, caplog.text, *errors, repr(read_token(token_file))]
    for path in out.rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("utf-8", errors="replace"))
    for text in texts:
        assert TOKEN not in text
        assert TOKEN.lower() not in text.lower()
    assert len(texts) > 6


def test_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    with pytest.raises(SourceError, match="chmod 600") as refused:
        read_token(token_file)
    assert TOKEN not in str(refused.value)
    token_file.chmod(0o600)
    assert read_token(token_file).get_secret_value() == TOKEN


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_token_file_not_in_ascii_is_refused_without_revealing_the_token(
    tmp_path: Path, encoding: str
) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(TOKEN.encode(encoding))
    token_file.chmod(0o600)
    with pytest.raises(SourceError, match="not plain ASCII text") as refused:
        read_token(token_file)
    # The chained decoding error would carry the file's bytes (the token) in its repr.
    assert refused.value.__cause__ is None
    assert refused.value.__context__ is None
    for text in (str(refused.value), repr(refused.value)):
        assert TOKEN not in text
        assert TOKEN not in text.replace("\\x00", "")


def test_token_file_saved_with_a_utf8_byte_order_mark_is_read(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(b"\xef\xbb\xbf" + TOKEN.encode() + b"\r\n")
    token_file.chmod(0o600)
    assert read_token(token_file).get_secret_value() == TOKEN


def test_token_file_that_is_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "token"
    folder.mkdir(mode=0o700)
    folder.chmod(0o700)
    with pytest.raises(SourceError, match=r"cannot read it \(Is a directory\)"):
        read_token(folder)


def test_an_unwritable_snapshots_directory_fails_before_any_request(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    # Port 9 (discard) refuses: had a request been made first, this would be a SourceError.
    with pytest.raises((FileExistsError, NotADirectoryError)) as caught:
        pull_snapshot(None, "http://127.0.0.1:9/api/", TOKEN, blocker / "snapshots", retries=0)
    assert str(blocker) in str(caught.value.filename)


def test_an_existing_snapshot_name_is_refused_before_any_request(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(SnapshotError, match="exists already"):
        pull_snapshot(None, "http://127.0.0.1:9/api/", TOKEN, tmp_path, name="taken", retries=0)


def test_missing_token_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(SourceError, match=TOKEN_ENV):
        read_token(None, environ={})
    assert read_token(None, environ={TOKEN_ENV: f" {TOKEN}\n"}).get_secret_value() == TOKEN
    assert os.environ.get(TOKEN_ENV) is None


def test_user_without_export_rights_gets_a_source_error(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator(PROJECTS / "simple" / "project.xml", tokens={TOKEN: "api"})
    with pytest.raises(SourceError, match="403"):
        pull_snapshot(None, server.url, "F" * 32, tmp_path, retries=0)
    assert list(tmp_path.iterdir()) == []


class _InterruptedError(Exception):
    pass


def test_interrupted_pull_leaves_nothing_that_looks_like_a_snapshot(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator(PROJECTS / "longitudinal" / "project.xml", tokens={TOKEN: "api"})

    def interrupt(progress: PullProgress) -> None:
        if progress.stage == "records" and progress.done > 0:
            raise _InterruptedError  # stands in for Ctrl+C halfway through the records

    with pytest.raises(_InterruptedError):
        pull_snapshot(None, server.url, TOKEN, tmp_path, batch_size=1, progress=interrupt)
    assert list(tmp_path.iterdir()) == []


def test_blinded_pull_has_no_randomisation_or_dosing_table(
    start_emulator: Start, tmp_path: Path
) -> None:
    project_dir = tmp_path / "project"
    shutil.copytree(PROTOCOL / "redcap", project_dir)
    (project_dir / "records.csv").write_text(
        "record_id,redcap_event_name,redcap_repeat_instrument,redcap_repeat_instance,"
        "redcap_data_access_group,scr_date,rand_arm,dose_mg\n"
        "S01-0001,screening_arm_1,,,s01,2025-03-01,,\n"
        "S01-0001,baseline_arm_1,,,s01,,1,\n"
        "S01-0001,logs_arm_1,dosing,1,s01,,,20\n",
        encoding="utf-8",
    )
    blinded, unblinded = "B" * 32, "D" * 32
    server = start_emulator(project_dir, tokens={blinded: "coordinator", unblinded: "admin"})
    seen = pull_snapshot(None, server.url, unblinded, tmp_path / "unblinded", name="u")
    hidden = pull_snapshot(None, server.url, blinded, tmp_path / "blinded", name="b")
    assert {"randomization", "dosing"} <= set(seen.table_rows)
    assert seen.table_rows["dosing"] == 1
    assert not {"randomization", "dosing"} & set(hidden.table_rows)
    assert hidden.table_rows["participant"] == 1
