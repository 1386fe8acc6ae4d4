"""A pull never takes a cut answer for a whole one (issue 11, item 5).

Each test cuts one answer of the emulator at a chosen byte with a matching ``Content-Length``
(the fault a proxy or a dying server produces) and checks that the pull either retries and ends
with the same snapshot as a clean pull, or fails with one line and leaves no snapshot behind.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import redcap
import requests

from studyman.errors import SourceError
from studyman.sources.emulator import EmulatorServer, FaultPlan, User, load_project
from studyman.sources.emulator.api import FULL_RIGHTS
from studyman.sources.pull import pull_snapshot
from studyman.sources.snapshot import verify_snapshot

PROJECTS = Path(__file__).resolve().parents[1] / "data" / "redcap-projects"
TOKEN = "C0FFEE0123456789ABCDEF0123456789"  # made up, 32 hex characters as REDCap's

Start = Callable[..., EmulatorServer]


def _hashes(snapshot: Path) -> dict[str, str]:
    files: dict[str, str] = json.loads((snapshot / "manifest.json").read_text())["files"]
    return {k: v for k, v in files.items() if k.startswith("tables/") or k == "findings.parquet"}


def _pull(server: EmulatorServer, out: Path, name: str, **options: object) -> Path:
    settings: dict[str, object] = {
        "batch_size": 1,
        "concurrency": 1,
        "retries": 1,
        "backoff": 0.001,
        "timeout": 5.0,
    }
    settings.update(options)
    return pull_snapshot(None, server.url, TOKEN, out, name=name, **settings).path  # type: ignore[arg-type]


def _id_export_body(server: EmulatorServer) -> bytes:
    """The raw bytes of the record-ID export as the pull asks for it (JSON, the ID field)."""
    project = redcap.Project(server.url, TOKEN)
    field = project.def_field
    answer = requests.post(
        server.url,
        data={
            "token": TOKEN,
            "content": "record",
            "format": "json",
            "type": "flat",
            "fields[0]": field,
            "eventName": "unique",
        },
        timeout=10,
    )
    # The same answer PyCap gets for the pull's request, so the offsets below are the pull's.
    assert answer.json() == project.export_records(
        format_type="json", fields=[field], event_name="unique"
    )
    return answer.content


def _row_boundaries(body: bytes) -> list[int]:
    """Every place a JSON list of rows can be cut between rows (after ``}`` and after ``,``)."""
    cuts: set[int] = set()
    for index, byte in enumerate(body):
        if byte == ord("}"):
            cuts.update({index + 1, index + 2})
    return sorted(cut for cut in cuts if cut < len(body))


def test_record_id_export_cut_at_every_row_boundary_retries_into_the_whole_snapshot(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator(PROJECTS / "longitudinal" / "project.xml", tokens={TOKEN: "api"})
    clean = _pull(server, tmp_path / "clean", "clean")
    body = _id_export_body(server)
    rows = body.count(b"}")
    # Every row boundary, plus arbitrary bytes: the first and last, and a seeded sample.
    extra = [0, 1, len(body) - 1, *random.Random(11).sample(range(len(body)), 6)]
    cuts = sorted({*_row_boundaries(body), *extra})
    assert len(cuts) >= 2 * rows
    for cut in cuts:
        # The first "record" call is the ID export; it is cut, then answered whole.
        server.set_faults(FaultPlan(contents=("record",), schedule=("cut",), cut_at=cut))
        out = tmp_path / f"cut-{cut}"
        pulled = _pull(server, out, "pull")
        assert _hashes(pulled) == _hashes(clean), cut
        assert verify_snapshot(pulled).ok


@pytest.mark.parametrize("cut", ["row-boundaries", "bytes"])
def test_record_id_export_cut_without_retries_is_one_line_and_no_snapshot(
    start_emulator: Start, tmp_path: Path, cut: str
) -> None:
    server = start_emulator(PROJECTS / "longitudinal" / "project.xml", tokens={TOKEN: "api"})
    body = _id_export_body(server)
    cuts = (
        _row_boundaries(body)[::3]
        if cut == "row-boundaries"
        else random.Random(5).sample(range(len(body)), 8)
    )
    for offset in cuts:
        server.set_faults(FaultPlan(contents=("record",), schedule=("cut",), cut_at=offset))
        out = tmp_path / f"cut-{offset}"
        with pytest.raises(SourceError) as failed:
            _pull(server, out, "pull", retries=0)
        message = str(failed.value)
        assert message.startswith("record IDs: gave up after 1 attempts"), message
        assert "not valid JSON" in message
        assert "\n" not in message
        assert list(out.iterdir()) == []  # no snapshot, no temporary directory


def _batch_bodies(server: EmulatorServer, batch_size: int) -> list[bytes]:
    """The CSV answers of the records batches as the pull asks for them (each with its
    sentinel: the next batch's first record)."""
    project = redcap.Project(server.url, TOKEN)
    field = project.def_field
    ids = list(
        dict.fromkeys(
            row[field]
            for row in project.export_records(
                format_type="json", fields=[field], event_name="unique"
            )
        )
    )
    batches = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    bodies = []
    for index, batch in enumerate(batches):
        sentinel = [batches[index + 1][0]] if index + 1 < len(batches) else []
        text = project.export_records(
            format_type="csv",
            records=[*batch, *sentinel],
            event_name="unique",
            export_data_access_groups=True,
        )
        bodies.append(text.encode("utf-8"))
    return bodies


def _line_ends(body: bytes) -> list[int]:
    """Every place a CSV answer can be cut at a line end (after each newline but the last)."""
    return [i + 1 for i, byte in enumerate(body[:-1]) if byte == ord("\n")]


@pytest.mark.parametrize("project", ["longitudinal", "vignette-repeating"])
def test_records_batches_cut_at_every_line_end_retry_into_the_whole_snapshot(
    start_emulator: Start, tmp_path: Path, project: str
) -> None:
    server = start_emulator(PROJECTS / project / "project.xml", tokens={TOKEN: "api"})
    clean = _pull(server, tmp_path / "clean", "clean")
    bodies = _batch_bodies(server, batch_size=1)
    assert len(bodies) >= 2  # a middle batch (with sentinel) and the last one (JSON proof)
    tried = 0
    for index, body in enumerate(bodies):
        # With concurrency 1, "record" calls come in order: the ID export, then the batches.
        for cut in _line_ends(body):
            schedule = ("ok",) * (index + 1) + ("cut",)
            server.set_faults(FaultPlan(contents=("record",), schedule=schedule, cut_at=cut))
            pulled = _pull(server, tmp_path / f"b{index}-{cut}", "pull")
            assert _hashes(pulled) == _hashes(clean), (index, cut)
            tried += 1
    assert tried >= 2 * len(bodies)


def test_a_records_batch_cut_at_a_line_end_without_retries_fails_with_no_snapshot(
    start_emulator: Start, tmp_path: Path
) -> None:
    server = start_emulator(PROJECTS / "longitudinal" / "project.xml", tokens={TOKEN: "api"})
    clean = _pull(server, tmp_path / "clean", "clean")
    bodies = _batch_bodies(server, batch_size=1)
    refused = 0
    for index, body in enumerate(bodies):
        own = body.split(b"\n")[1].split(b",")[0]  # this batch's record (batch size 1)
        for cut in _line_ends(body)[1:]:  # at least one whole row kept
            schedule = ("ok",) * (index + 1) + ("cut",)
            server.set_faults(FaultPlan(contents=("record",), schedule=schedule, cut_at=cut))
            out = tmp_path / f"b{index}-{cut}"
            last_kept = body[:cut].rstrip(b"\n").rsplit(b"\n", 1)[-1].split(b",")[0]
            if last_kept != own:
                # Only rows of the sentinel (the next batch's record) were cut: nothing of this
                # batch is lost, and the sentinel's rows are not kept from this answer anyway.
                assert _hashes(_pull(server, out, "pull", retries=0)) == _hashes(clean)
                continue
            with pytest.raises(SourceError) as failed:
                _pull(server, out, "pull", retries=0)
            message = str(failed.value)
            assert message.startswith(f"records batch {index + 1} of {len(bodies)}: gave up")
            assert "\n" not in message
            assert list(out.iterdir()) == []
            refused += 1
    assert refused >= len(bodies)


def test_a_clean_pull_needs_one_extra_records_call_for_its_proof(
    start_emulator: Start, tmp_path: Path
) -> None:
    # The sentinels prove every batch but the last; the last record is exported again alone.
    server = start_emulator(PROJECTS / "longitudinal" / "project.xml", tokens={TOKEN: "api"})
    before = len(server.log)
    _pull(server, tmp_path, "clean")
    calls = [entry.content for entry in server.log[before:]]
    batches = len(_batch_bodies(server, batch_size=1))
    assert calls.count("record") == 1 + batches + 1


@pytest.mark.parametrize(
    "content",
    ["metadata", "project", "event", "arm", "formEventMapping", "repeatingFormsEvents", "version"],
)
def test_any_other_answer_cut_at_any_byte_is_retried(
    start_emulator: Start, tmp_path: Path, content: str
) -> None:
    server = start_emulator(PROJECTS / "longitudinal" / "project.xml", tokens={TOKEN: "api"})
    clean = _pull(server, tmp_path / "clean", "clean")
    expected = json.loads((clean / "manifest.json").read_text())
    assert expected["redcap"]["version"] == "14.7.3"  # the emulator's (a cut could leave 14.7)
    # 0: an empty body; 10**9: all but the last byte (kept_bytes caps it); the rest arbitrary.
    for cut in (0, 5, 10**9):
        server.set_faults(FaultPlan(contents=(content,), schedule=("cut",), cut_at=cut))
        pulled = _pull(server, tmp_path / f"cut-{cut}", "pull")
        # Every file (tables and REDCap's answers) and the manifest's REDCap entry as clean.
        manifest = json.loads((pulled / "manifest.json").read_text())
        assert manifest["files"] == expected["files"], cut
        assert manifest["redcap"] == expected["redcap"], cut
        server.set_faults(FaultPlan(contents=(content,), schedule=("cut", "cut"), cut_at=cut))
        with pytest.raises(SourceError, match=r"gave up after 1 attempts") as failed:
            _pull(server, tmp_path / f"fail-{cut}", "pull", retries=0)
        assert "\n" not in str(failed.value)
        assert list((tmp_path / f"fail-{cut}").iterdir()) == []


def test_a_record_in_two_arms_is_checked_whole_so_no_line_end_cut_loses_its_later_rows(
    start_emulator: Start, tmp_path: Path
) -> None:
    # REDCap lists a multi-arm project arm by arm: record 100's arm-2 row comes after record
    # 220's rows, so a cut there leaves an answer that ends with the sentinel (220) and looks
    # whole; the record-ID export shows 100 apart, and its batch is checked against JSON.
    loaded = load_project(PROJECTS / "longitudinal" / "project.xml")
    two_arms = dataclasses.replace(
        loaded, users=(User("importer", rights=FULL_RIGHTS),), tokens={TOKEN: "importer"}
    )
    server = start_emulator(two_arms)
    redcap.Project(server.url, TOKEN).import_records(
        [{"study_id": "100", "redcap_event_name": "enrollment_arm_2", "first_name": "Two"}]
    )
    clean = _pull(server, tmp_path / "clean", "clean")
    assert json.loads((clean / "manifest.json").read_text())["records"] == 3
    body = _batch_bodies(server, batch_size=1)[0]  # record 100, sentinel 220
    order = [line.split(b",")[0] for line in body.split(b"\n")[1:-1]]
    last_of_100 = len(order) - 1 - order[::-1].index(b"100")
    assert order.index(b"220") < last_of_100  # 100's rows are apart
    refused = 0
    for cut in _line_ends(body)[1:]:
        kept_rows = body[:cut].count(b"\n") - 1
        server.set_faults(FaultPlan(contents=("record",), schedule=("ok", "cut"), cut_at=cut))
        out = tmp_path / f"cut-{cut}"
        if kept_rows <= last_of_100:  # a row of record 100 is cut off
            with pytest.raises(SourceError, match=r"^records batch 1 of 3: gave up"):
                _pull(server, out, "pull", retries=0)
            assert list(out.iterdir()) == []
            refused += 1
        else:  # only rows of the sentinel: nothing of the batch is lost
            assert _hashes(_pull(server, out, "pull", retries=0)) == _hashes(clean)
    assert refused >= 2
