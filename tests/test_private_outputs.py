"""Everything that derives from the allocation is its owner's only, from the moment it exists.

Each command runs for real (the CLI, the REDCap emulator over loopback HTTP, PyCap, SQLite,
WeasyPrint) under a permissive umask (0o022, under which a file made the ordinary way would be
0644 and a folder 0755), and every output is listed with its mode bits: generate, a pull with
the unblinded statistician's token, validate --randomization, analyze and the DSMB closed report.

"At creation, not chmod after" is checked without reading the source: an audit hook
(:func:`sys.addaudithook`, the interpreter's own record of ``os.chmod``) sees every chmod the
chain makes, and none may touch an output (only a hidden temporary, born 0600 by ``mkstemp``,
may be set to a private mode before it is renamed into place).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from studyman.cli import main
from studyman.sources.emulator import EmulatorServer

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "protocols" / "cbt-adjunct"
SAP = ROOT / "analysis" / "sap.yaml"
UNBLINDED_TOKEN = "5A" * 16
BLINDED_TOKEN = "C0" * 16
PERMISSIVE_UMASK = 0o022

_chmods: list[tuple[str, int]] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _chmods is not None and event == "os.chmod":
        path, mode = args[0], args[1]
        if isinstance(path, str | os.PathLike):
            _chmods.append((os.fsdecode(path), int(mode)))


sys.addaudithook(_audit)


@dataclasses.dataclass(frozen=True)
class Chain:
    base: Path
    generated: Path
    unblinded_snapshot: Path
    blinded_snapshot: Path
    validation: Path
    analysis: Path
    closed_report: Path
    chmods: tuple[tuple[str, int], ...]

    @property
    def allocation_roots(self) -> tuple[Path, ...]:
        return (
            self.generated,
            # the snapshots folder: a snapshot is built in a temporary folder beside its name
            self.unblinded_snapshot.parent,
            self.validation,
            self.analysis,
            self.closed_report,
        )


def _token_file(folder: Path, name: str, token: str) -> Path:
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / name
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(handle, "w") as stream:
        stream.write(token + "\n")
    return path


def _run(arguments: list[str | Path]) -> None:
    main([str(argument) for argument in arguments])


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    global _chmods
    base = tmp_path_factory.mktemp("private-outputs")
    generated = base / "generated"
    randomization = generated / "randomization.csv"
    secrets = base / "secrets"
    project = base / "redcap-project"
    plan = base / "plan"
    previous = os.umask(PERMISSIVE_UMASK)
    _chmods = []
    try:
        _run(
            [
                "generate",
                "--protocol",
                PROTOCOL,
                "--participants",
                "40",
                "--seed",
                "5",
                "--plant-errors",
                "--out",
                generated,
            ]
        )
        shutil.copytree(PROTOCOL / "redcap", project)
        shutil.copyfile(generated / "records.csv", project / "records.csv")
        tokens = {UNBLINDED_TOKEN: "statistician", BLINDED_TOKEN: "coordinator"}
        with EmulatorServer(project, tokens=tokens) as server:
            for token, out in ((UNBLINDED_TOKEN, "unblinded"), (BLINDED_TOKEN, "blinded")):
                token_file = _token_file(secrets, f"{out}-token", token)
                _run(
                    [
                        "pull",
                        "--protocol",
                        PROTOCOL,
                        "--url",
                        server.url,
                        "--out",
                        base / f"{out}-snapshots",
                        "--token-file",
                        token_file,
                        "--name",
                        "s1",
                    ]
                )
        snapshot = base / "unblinded-snapshots" / "s1"
        _run(
            [
                "validate",
                "--protocol",
                PROTOCOL,
                "--snapshot",
                snapshot,
                "--out",
                base / "validation",
                "--randomization",
                randomization,
            ]
        )
        # the reference plan with fewer imputations, as in tests/analysis/test_analyze.py
        plan.mkdir()
        text = SAP.read_text(encoding="utf-8")
        text = text.replace("imputations: 100", "imputations: 4").replace(
            "imputations: 20", "imputations: 2"
        )
        (plan / "sap.yaml").write_text(text, encoding="utf-8")
        _run(["sap", "lock", "--sap", plan / "sap.yaml"])
        _run(
            [
                "analyze",
                "--sap",
                plan / "sap.yaml",
                "--snapshot",
                snapshot,
                "--out",
                base / "analysis",
                "--randomization",
                randomization,
                "--workers",
                "1",
            ]
        )
        _run(
            [
                "report",
                "dsmb",
                "--session",
                "closed",
                "--protocol",
                PROTOCOL,
                "--sap",
                plan / "sap.yaml",
                "--snapshot",
                snapshot,
                "--randomization",
                randomization,
                "--query-log",
                base / "validation" / "queries.sqlite",
                "--out",
                base / "dsmb-closed",
            ]
        )
        chmods = tuple(_chmods)
    finally:
        _chmods = None
        os.umask(previous)
    return Chain(
        base=base,
        generated=generated,
        unblinded_snapshot=snapshot,
        blinded_snapshot=base / "blinded-snapshots" / "s1",
        validation=base / "validation",
        analysis=base / "analysis",
        closed_report=base / "dsmb-closed",
        chmods=chmods,
    )


def _modes(root: Path) -> dict[str, int]:
    """Relative path ("." for *root*) → permission bits, for *root* and everything under it."""
    modes = {".": stat.S_IMODE(root.lstat().st_mode)}
    for path in sorted(root.rglob("*")):
        modes[path.relative_to(root).as_posix()] = stat.S_IMODE(path.lstat().st_mode)
    return modes


def _folders(root: Path) -> set[str]:
    return {"."} | {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()}


def _assert_private(root: Path, file_mode: int = 0o600) -> dict[str, int]:
    modes = _modes(root)
    folders = _folders(root)
    wrong = {
        name: oct(mode)
        for name, mode in modes.items()
        if mode != (0o700 if name in folders else file_mode)
    }
    assert not wrong, f"{root}: {wrong}"
    return modes


def test_generate_writes_the_allocation_owner_only(chain: Chain) -> None:
    modes = _assert_private(chain.generated)
    assert {"records.csv", "randomization.csv", "planted_errors.csv"} <= set(modes)


def test_pull_with_the_unblinded_token_is_a_private_snapshot(chain: Chain) -> None:
    modes = _assert_private(chain.unblinded_snapshot, file_mode=0o400)
    assert {"tables/randomization.parquet", "tables/dosing.parquet", "manifest.json"} <= set(modes)
    assert "tables" in _folders(chain.unblinded_snapshot)


def test_pull_with_a_blinded_token_stays_readable_by_the_team(chain: Chain) -> None:
    # the mode follows what the token could read: without the allocation, the usual modes
    modes = _modes(chain.blinded_snapshot)
    assert "tables/randomization.parquet" not in modes
    assert modes["."] == 0o755
    assert modes["tables/participant.parquet"] == 0o444


def test_unblinded_validation_listings_and_query_log_are_private(chain: Chain) -> None:
    modes = _assert_private(chain.validation)
    assert {
        "queries.sqlite",
        "queries.csv",
        "queries.xlsx",
        "deviations.csv",
        "deviations.xlsx",
        "summary.html",
    } <= set(modes)


def test_analysis_outputs_and_their_folders_are_private(chain: Chain) -> None:
    modes = _assert_private(chain.analysis)
    folders = _folders(chain.analysis)
    assert {"adam", "results", "figures"} <= folders
    assert {"adam/adsl.parquet", "report.html", "manifest.json"} <= set(modes)


def test_closed_report_and_its_folder_are_private(chain: Chain) -> None:
    modes = _assert_private(chain.closed_report)
    # the report, and its tables and facts as data (dsmb-closed-<cutoff>.json, facts.json)
    assert {name.rsplit(".", 1)[-1] for name in modes if name != "."} == {"html", "pdf", "json"}
    # the arm-code key, made on first use beside the randomisation list
    key = chain.generated / "dsmb-arm-key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_no_output_is_narrowed_by_chmod_after_its_creation(chain: Chain) -> None:
    assert chain.chmods, "the audit hook saw no chmod at all: it is not listening"
    roots = [str(root) for root in chain.allocation_roots]
    touched = [
        (path, oct(mode))
        for path, mode in chain.chmods
        if any(path == root or path.startswith(root + os.sep) for root in roots)
        and not (Path(path).name.startswith(".") and mode in (0o600, 0o400))
    ]
    assert not touched


def test_missing_parents_are_made_private_and_an_existing_folder_keeps_its_mode(
    tmp_path: Path,
) -> None:
    from studyman.private_files import make_private_directory, write_private_bytes

    previous = os.umask(PERMISSIVE_UMASK)
    try:
        shared = tmp_path / "shared"
        shared.mkdir(mode=0o755)
        write_private_bytes(shared / "a" / "b" / "list.csv", b"record_id,rand_arm\n")
        make_private_directory(shared / "a" / "c")
    finally:
        os.umask(previous)
    assert _modes(shared) == {
        ".": 0o755,  # chosen by its owner before: left as it is
        "a": 0o700,
        "a/b": 0o700,
        "a/b/list.csv": 0o600,
        "a/c": 0o700,
    }
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(NotADirectoryError):
        make_private_directory(blocker / "out")


def test_a_private_file_is_never_created_over_another(tmp_path: Path) -> None:
    from studyman.private_files import create_private_file

    target = tmp_path / "key"
    create_private_file(target, b"first\n")
    with pytest.raises(FileExistsError):
        create_private_file(target, b"second\n")
    assert target.read_bytes() == b"first\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]  # no temporary left


def test_import_of_an_unblinded_export_is_a_private_snapshot(chain: Chain, tmp_path: Path) -> None:
    # the generator's records hold the randomisation and dosing forms, as an admin's export does
    dictionary = tmp_path / "dictionary.csv"
    shutil.copyfile(PROTOCOL / "redcap" / "data_dictionary.csv", dictionary)
    previous = os.umask(PERMISSIVE_UMASK)
    try:
        _run(
            [
                "import",
                "--protocol",
                PROTOCOL,
                "--records",
                chain.generated / "records.csv",
                "--dictionary",
                dictionary,
                "--out",
                tmp_path / "snapshots",
            ]
        )
    finally:
        os.umask(previous)
    (snapshot,) = (tmp_path / "snapshots").iterdir()
    modes = _assert_private(snapshot, file_mode=0o400)
    assert "tables/randomization.parquet" in modes
