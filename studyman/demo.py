"""The end-to-end demo on the embedded reference study.

``run_demo(out_dir)`` writes the study's REDCap project, serves it with the REDCap emulator on a
free loopback port, loads generated synthetic participants through the API, pulls them back with
PyCap into snapshots (a blinded one, as a coordinator sees the project, and an unblinded one, as
the unblinded statistician does), writes the raw exports a coordinator would download, and then
runs every later stage: validation, the prespecified analyses and the DSMB reports.

API tokens are made afresh for each run, held in memory only and never written anywhere.
"""

from __future__ import annotations

import io
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import redcap

from studyman.analysis.analyze import analyze
from studyman.analysis.lock import default_lock_path
from studyman.errors import ProtocolError
from studyman.private_files import make_private_directory, write_private_bytes
from studyman.protocol import Protocol, load_protocol
from studyman.protocol.reference import default_plan_path, default_protocol_path
from studyman.reporting.report import render_dsmb_report
from studyman.sources.blinding import blind_dictionary, blind_flat_records
from studyman.sources.emulator import EmulatorServer
from studyman.sources.pull import pull_snapshot
from studyman.sources.snapshot import write_bytes_atomic
from studyman.synthetic import generate_trial, write_trial
from studyman.synthetic.entry_log import emulator_entries, entry_log
from studyman.validation.run import validate_study

__all__ = ["DemoResult", "default_protocol_path", "run_demo"]

#: Rows sent per import call when loading the generated records through the API.
IMPORT_CHUNK_ROWS = 2_000


@dataclass(frozen=True)
class DemoResult:
    """Where each output of the demo is, by name, in the order they were made."""

    out_dir: Path
    outputs: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


Step = Callable[[str], None]


def _write_project(protocol_dir: Path, target: Path) -> Path:
    source = protocol_dir / "redcap"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    return target


def _load_records(url: str, token: str, records_csv: Path) -> int:
    import pandas as pd

    project = redcap.Project(url, token)  # type: ignore[attr-defined]
    frame = pd.read_csv(records_csv, dtype=str, keep_default_na=False)
    loaded = 0
    for start in range(0, len(frame), IMPORT_CHUNK_ROWS):
        chunk = frame.iloc[start : start + IMPORT_CHUNK_ROWS]
        answer = project.import_records(
            chunk.to_csv(index=False), import_format="csv", overwrite="overwrite"
        )
        loaded += int(answer["count"]) if isinstance(answer, dict) else len(chunk)
    return loaded


def _write_exports(url: str, token: str, protocol: Protocol, export_dir: Path) -> dict[str, Path]:
    """Write the coordinator's CSV record export and data dictionary, in REDCap's formats,
    through the blinding gate (masked codes merged), for the study's blinded users."""
    export_dir.mkdir(parents=True, exist_ok=True)
    if protocol.redcap is None:
        raise ProtocolError("the protocol has no REDCap project loaded", file=protocol.source_file)
    project = redcap.Project(url, token)  # type: ignore[attr-defined]
    records_path = export_dir / "records.csv"
    records_text = project.export_records(format_type="csv", export_data_access_groups=True)
    records = pd.read_csv(
        io.StringIO(str(records_text)), dtype=str, keep_default_na=False, na_filter=False
    )
    blinded = blind_flat_records(records, protocol, protocol.redcap.dictionary)
    write_bytes_atomic(records_path, blinded.to_csv(index=False).encode("utf-8"))
    dictionary_path = export_dir / "data_dictionary.csv"
    dictionary = blind_dictionary(protocol.redcap.dictionary, protocol)
    write_bytes_atomic(dictionary_path, dictionary.to_csv_text(human_headers=True).encode("utf-8"))
    return {"records export": records_path, "data dictionary": dictionary_path}


def run_demo(
    out_dir: Path,
    *,
    n_participants: int = 300,
    seed: int = 20250203,
    protocol_path: Path | None = None,
    step: Step | None = None,
) -> DemoResult:
    """Run the whole pipeline on the embedded reference study with synthetic participants.

    Parameters
    ----------
    out_dir
        Where everything goes (created when absent).
    n_participants
        Randomised participants to generate.
    seed
        Seed of the generator and of every random step after it.
    protocol_path
        Another study's ``protocol.yaml`` or directory (default: the embedded reference study).
    step
        Called with a short description as each stage starts (progress display).

    Returns
    -------
    DemoResult
        The path of each output.
    """
    say = step or (lambda _message: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    protocol_dir = protocol_path or default_protocol_path()
    protocol = load_protocol(protocol_dir)
    outputs: dict[str, Path] = {}
    notes: list[str] = []

    say("generating synthetic participants")
    trial = generate_trial(protocol, n_participants=n_participants, seed=seed)
    # the generated trial holds the allocation too: both folders are for their owner only,
    # 0700 from their creation (write_trial makes generated/ and its files private)
    generated = write_trial(trial, out_dir / "generated")
    unblinded_dir = make_private_directory(out_dir / "unblinded")
    randomization = unblinded_dir / "randomization.csv"
    write_private_bytes(randomization, generated["randomization"].read_bytes())
    outputs["randomization list (unblinded)"] = randomization

    say("writing the REDCap project")
    project_dir = _write_project(
        protocol_dir if protocol_dir.is_dir() else protocol_dir.parent, out_dir / "redcap-project"
    )
    outputs["REDCap project"] = project_dir

    tokens = {
        secrets.token_hex(16).upper(): user for user in ("admin", "statistician", "coordinator")
    }
    by_user = {user: token for token, user in tokens.items()}
    with EmulatorServer(project_dir, tokens=tokens) as server:
        notes.append(f"REDCap emulator served the project at {server.url}")
        # the study's data-entry history: synthetic log rows (each visit form saved some days
        # after the visit, by a per-site lag), older than anything the demo does
        history = entry_log(protocol, trial.records, seed=seed)
        server.emulator.state.log[:0] = emulator_entries(history)
        say("loading records through the REDCap API")
        loaded = _load_records(server.url, by_user["admin"], generated["records"])
        notes.append(f"{loaded} records imported through the API")

        say("pulling a blinded snapshot (coordinator's token)")
        blinded = pull_snapshot(protocol, server.url, by_user["coordinator"], out_dir / "snapshots")
        outputs["snapshot (blinded)"] = blinded.path
        say("pulling an unblinded snapshot (unblinded statistician's token)")
        unblinded = pull_snapshot(
            protocol,
            server.url,
            by_user["statistician"],
            unblinded_dir / "snapshots",
        )
        outputs["snapshot (unblinded)"] = unblinded.path

        say("writing the raw exports a coordinator downloads")
        outputs.update(
            _write_exports(server.url, by_user["coordinator"], protocol, out_dir / "redcap-export")
        )

    say("validating the blinded snapshot (edit checks, query log, deviations)")
    validation = validate_study(protocol, blinded.path, out_dir / "validation")
    notes.append(validation.describe())
    outputs["data queries"] = out_dir / "validation" / "queries.csv"
    outputs["query log"] = validation.query_log

    say("running the locked analysis plan (unblinded)")
    sap = _sap_path(protocol_dir)
    # The lock records when the allocation is first read (studyman.analysis.lock): the demo's
    # unblinding goes into its own copy of the lock, never into the shipped one.
    lock = unblinded_dir / "sap.lock.json"
    write_private_bytes(lock, default_lock_path(sap).read_bytes())
    analysis = analyze(
        sap,
        unblinded.path,
        unblinded_dir / "analysis",
        randomization=randomization,
        lock=lock,
        protocol=protocol,
    )
    outputs["analysis (unblinded)"] = analysis.out
    failed = [outcome.id for outcome in analysis.run.outcomes if outcome.status == "failed"]
    if failed:
        notes.append("analyses that failed (see the report): " + ", ".join(sorted(failed)))

    say("rendering the DSMB open report (pooled)")
    open_report = render_dsmb_report(
        protocol,
        blinded.path,
        out_dir / "dsmb",
        session="open",
        query_log=validation.query_log,
        sap=sap,
    )
    outputs["DSMB open report"] = open_report.pdf or open_report.html
    say("rendering the DSMB closed report (coded arms)")
    closed_report = render_dsmb_report(
        protocol,
        unblinded.path,
        unblinded_dir / "dsmb",
        session="closed",
        randomization=randomization,
        query_log=validation.query_log,
        sap=sap,
    )
    outputs["DSMB closed report"] = closed_report.pdf or closed_report.html
    if closed_report.arm_key is not None:
        outputs["DSMB arm-code key (unblinded, secret)"] = closed_report.arm_key
    return DemoResult(out_dir=out_dir, outputs=outputs, notes=notes)


def _sap_path(protocol_dir: Path) -> Path:
    """The study's analysis plan: the embedded study's own, wherever it is installed.

    Another study's plan is ``<root>/analysis/sap.yaml`` for a study in ``<root>/protocols/``.
    """
    study = (protocol_dir if protocol_dir.is_dir() else protocol_dir.parent).resolve()
    if study == default_protocol_path().resolve():
        return default_plan_path()
    return study.parent.parent / "analysis" / "sap.yaml"
