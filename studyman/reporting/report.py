"""``render_dsmb_report``: snapshot (+ randomisation list in a closed session) → HTML and PDF.

This module is the edge of the reporting layer: it reads the snapshot, the randomisation list
and the query log, calls the pure section computations (:mod:`studyman.reporting.dsmb`), draws
the figures, renders HTML and PDF and writes both atomically.

The blind:

* An **open** session never opens the randomisation file (it is not even looked at when given)
  and never reads the snapshot's unblinded forms (``protocol.blinding.unblinded_forms``); every
  table is pooled, so its output is the same whether or not randomisation data exist.
* A **closed** session refuses to run without the randomisation file, shows arms under coded
  labels (``Arm A``, ``Arm B``) unless unmasked, and writes its files, and the folder when it
  creates it, for the owner only (0600 and 0700 from their creation).

The coded labels are a permutation drawn from a secret: HMAC-SHA256 of the study id under the
**arm-code key**, 32 random bytes that the unblinded statistician keeps beside the randomisation
list (``dsmb-arm-key``, created 0600 on first use, refused when the group or others can read
it). The same key always gives the same codes; nothing in the report, the snapshot, the
randomisation list or this source code decodes them without the key. The report prints no hash
of the randomisation list (one would let anyone holding the list, or guessing it, recompute a
code drawn from it); it prints the key's fingerprint, a hash of the key under a fixed prefix,
which says which key coded the report and reveals nothing of the permutation.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import secrets
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pandas as pd

from studyman import __version__
from studyman.errors import SnapshotError, SourceError
from studyman.facts import DEFAULT_RULES, FactRules, rules_from_plan, write_facts_json
from studyman.private_files import (
    PRIVATE_FILE_MODE,
    create_private_file,
    make_private_directory,
)
from studyman.protocol.dsmb_history import load_dsmb_history
from studyman.protocol.models import Protocol
from studyman.reporting.dsmb import DsmbInputs, build_sections, cut_tables, report_data
from studyman.reporting.figures import draw_figure
from studyman.reporting.html import AUTHOR, ReportHeader, render_html
from studyman.sources.blinding import blind_findings, blind_tables
from studyman.sources.randomization import (
    ARM_COLUMNS,
    RECORD_ID_COLUMNS,
)
from studyman.sources.randomization import read_randomization_list as read_list
from studyman.sources.snapshot import (
    MANIFEST_NAME,
    read_snapshot_file,
    read_snapshot_tables,
    snapshot_id,
    verify_snapshot,
    write_bytes_atomic,
)

if TYPE_CHECKING:
    from studyman.analysis.sap import AnalysisPlan

__all__ = [
    "ARM_KEY_NAME",
    "ArmKey",
    "DsmbReport",
    "arm_codes",
    "default_arm_key_path",
    "read_arm_key",
    "read_randomization_list",
    "render_dsmb_report",
]

Session = Literal["open", "closed"]
#: The arm-code key's file name, in the randomisation list's folder unless named otherwise.
ARM_KEY_NAME = "dsmb-arm-key"
_ARM_KEY_BYTES = 32
_FINGERPRINT_PREFIX = b"fingerprint"


@dataclass(frozen=True)
class DsmbReport:
    """What :func:`render_dsmb_report` wrote.

    Attributes
    ----------
    html, pdf
        The files (``pdf`` is None when PDF output was switched off).
    session
        ``open`` or ``closed``.
    cutoff
        The data cut-off.
    snapshot_sha256
        sha256 of the snapshot's manifest.
    arm_key
        The arm-code key file (closed session with coded arms), else None.
    arm_key_fingerprint
        Its fingerprint as printed in the report (:attr:`ArmKey.fingerprint`), else None.
    arm_key_created
        True when this report created the key (its first use).
    safety_population
        N of the safety population (pooled).
    sections
        Section ids in order; ``incomplete`` lists those that lacked forms.
    facts
        ``facts.json`` beside the report (:func:`studyman.facts.write_facts_json`).
    data
        ``dsmb-<session>-<cutoff>.json``: the headline facts and every table as data.
    as_of
        The time query ages count to.
    """

    html: Path
    pdf: Path | None
    session: str
    cutoff: date
    snapshot_sha256: str
    arm_key: Path | None
    arm_key_fingerprint: str | None
    arm_key_created: bool
    safety_population: int
    sections: tuple[str, ...]
    incomplete: tuple[str, ...]
    facts: Path | None = None
    data: Path | None = None
    as_of: datetime | None = None


@dataclass(frozen=True)
class ArmKey:
    """The arm-code key: the secret that draws the closed report's coded arm labels.

    Attributes
    ----------
    path
        The key file.
    key
        The 32 secret bytes (never in ``repr``).
    created
        True when :func:`read_arm_key` created the file.
    """

    path: Path
    key: bytes = field(repr=False)
    created: bool = False

    @property
    def fingerprint(self) -> str:
        """The first 16 hexadecimal characters of sha256(``b"fingerprint"`` + key).

        It tells which key coded a report (two reports with the same fingerprint use the same
        codes) and, being a one-way hash of a 256-bit secret, reveals nothing of the codes.
        """
        return hashlib.sha256(_FINGERPRINT_PREFIX + self.key).hexdigest()[:16]


def default_arm_key_path(randomization: Path) -> Path:
    """``dsmb-arm-key`` in the folder of the randomisation list *randomization*."""
    return Path(randomization).parent / ARM_KEY_NAME


def read_arm_key(path: Path, *, create: bool = True) -> ArmKey:
    """Read the arm-code key at *path*, creating it on first use.

    A new key is 32 bytes from :mod:`secrets`, written as one line of 64 hexadecimal
    characters to a file that is 0600 from its creation and never overwrites another.

    Parameters
    ----------
    path
        The key file.
    create
        Create the key when *path* does not exist (else that is an error).

    Raises
    ------
    SourceError
        The file can be read or entered by its group or others (anyone who can read it can
        decode the closed report), is not one line of 64 hexadecimal characters, is not a
        regular file, or cannot be read or created.
    """
    path = Path(path)
    created = False
    if create and not path.exists() and not path.is_symlink():
        data = (secrets.token_bytes(_ARM_KEY_BYTES).hex() + "\n").encode("ascii")
        try:
            create_private_file(path, data)
            created = True
        except FileExistsError:
            pass  # made by another report at the same moment: read it below
        except OSError as error:
            raise SourceError(
                f"{path}: cannot create the DSMB arm-code key ({error.strerror})"
            ) from None
    # O_NONBLOCK: a FIFO put in the key's place must not hang the report
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        handle = os.open(path, flags)
    except FileNotFoundError:
        raise SourceError(
            f"{path}: no DSMB arm-code key there (give the file that coded the earlier reports "
            "with --arm-key)"
        ) from None
    except OSError as error:
        raise SourceError(f"{path}: cannot read the DSMB arm-code key ({error.strerror})") from None
    try:
        # checked on the file opened, not on the name (which could be swapped in between)
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise SourceError(f"{path}: the DSMB arm-code key is not a regular file")
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SourceError(
                f"{path}: the DSMB arm-code key is accessible to group or others (mode "
                f"{stat.filemode(info.st_mode)}), who could decode the closed report's arm "
                f"codes; make it private with: chmod 600 {path}"
            )
        content = os.read(handle, 4 * _ARM_KEY_BYTES)
    finally:
        os.close(handle)
    text = content[:-1] if content.endswith(b"\n") else content
    if len(text) != 2 * _ARM_KEY_BYTES or not all(c in b"0123456789abcdefABCDEF" for c in text):
        raise SourceError(
            f"{path}: not a DSMB arm-code key (expected one line of {2 * _ARM_KEY_BYTES} "
            "hexadecimal characters, as studyman writes it); give the key that coded the "
            "earlier reports (a new key changes the codes)"
        )
    return ArmKey(path, bytes.fromhex(text.decode("ascii")), created)


def arm_codes(protocol: Protocol, key: bytes) -> dict[str, str]:
    """Arm name → coded label (``Arm A``...), a permutation drawn with the secret *key*.

    Notes
    -----
    The codes are the protocol's ``closed_report_code`` values, assigned to the arms in the
    order of permutation number ``int(HMAC-SHA256(key, study id)) mod k!`` (the bias of the
    modulo is below 2**-240 for any plausible number of arms). Without the key, every
    permutation is equally likely: the protocol's own pairing (which is public), the
    randomisation list and anything printed in the report say nothing about the one used.
    """
    names = [arm.name for arm in protocol.arms.items]
    codes = sorted(arm.closed_report_code for arm in protocol.arms.items)
    permutations = list(itertools.permutations(codes))
    digest = hmac.new(key, protocol.study.id.encode("utf-8"), hashlib.sha256).digest()
    chosen = permutations[int.from_bytes(digest, "big") % len(permutations)]
    return {name: f"Arm {code}" for name, code in zip(names, chosen, strict=True)}


def read_randomization_list(path: Path, protocol: Protocol) -> pd.Series:
    """Read a randomisation list (CSV or Parquet) as record ID → arm name.

    The file is read by :func:`studyman.sources.randomization.read_randomization_list` (the
    record-ID column: the protocol's record-ID field or an accepted legacy header; the arm
    column: the protocol's arm field, with REDCap codes or arm names, or an accepted legacy
    header); codes are then decoded with the protocol's arms.

    Raises
    ------
    SourceError
        Missing file, no record-ID or arm column, an unknown or blank arm, a participant listed
        twice.
    """
    path = Path(path)
    frame = read_list(path, protocol)
    record_column, arm_field = RECORD_ID_COLUMNS[0], ARM_COLUMNS[0]
    arm_column = frame.attrs.get("arm_column", arm_field)
    by_code = {str(arm.code): arm.name for arm in protocol.arms.items}
    names = set(by_code.values())
    arms = frame[arm_field].map(lambda v: by_code.get(v, v))
    blank = frame.loc[arms == "", record_column].tolist()
    if blank:
        raise SourceError(f"{path}: column {arm_column}: no arm for {_first_ids(blank)}")
    unknown = sorted(set(arms) - names)
    if unknown:
        raise SourceError(f"{path}: column {arm_column}: unknown arm value(s) {', '.join(unknown)}")
    return pd.Series(
        arms.to_numpy(), index=pd.Index(frame[record_column].to_numpy(), dtype="string"), name="arm"
    )


def _read_tables(
    path: Path, manifest: Mapping[str, object], skip: set[str]
) -> dict[str, pd.DataFrame]:
    # the skipped (unblinded) tables are never opened
    return read_snapshot_tables(path, manifest, skip)


def _first_ids(ids: Sequence[str]) -> str:
    """The first 20 of *ids*, comma-separated, with " ..." when there are more."""
    return ", ".join(ids[:20]) + (" ..." if len(ids) > 20 else "")


def _check_participants(
    arms: pd.Series, subjects: pd.DataFrame, uncut: set[str], path: Path
) -> None:
    randomised = set(subjects.index[subjects["randomised"].to_numpy()].astype(str))
    listed = set(arms.index.astype(str))
    without = sorted(randomised - listed)
    unknown = sorted(listed - uncut)
    problems = []
    if without:
        problems.append(
            f"{len(without)} randomised participant(s) of the snapshot are not in it: "
            + _first_ids(without)
        )
    if unknown:
        problems.append(
            f"{len(unknown)} participant(s) in it are not in the snapshot: " + _first_ids(unknown)
        )
    if problems:
        raise SourceError(
            f"{path}: the randomisation list does not match the snapshot: " + "; ".join(problems)
        )


FACTS_NAME = "facts.json"


def _check_facts_folder(out_dir: Path, output: str) -> None:
    """Refuse a folder whose ``facts.json`` belongs to another output (the other session...):
    a folder carries the facts of one output, and a closed session's must never replace or
    sit as an open one's."""
    path = out_dir / FACTS_NAME
    if not path.exists():
        return
    try:
        found = json.loads(path.read_text(encoding="utf-8")).get("output")
    except (OSError, ValueError, AttributeError):
        found = None
    if found != output:
        raise SourceError(
            f"{path}: holds the facts of {found or 'something else'}, not of {output}; give "
            "each DSMB session (and each output) a folder of its own"
        )


def _as_utc(moment: datetime | None) -> datetime:
    if moment is None:
        return datetime.now(UTC).replace(microsecond=0)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def render_dsmb_report(
    protocol: Protocol,
    snapshot: Path,
    out_dir: Path,
    *,
    session: Session,
    randomization: Path | None = None,
    cutoff: date | None = None,
    unmask: bool = False,
    arm_key: Path | None = None,
    query_log: Path | None = None,
    sap: Path | None = None,
    pdf: bool = True,
    as_of: datetime | None = None,
) -> DsmbReport:
    """Write ``out_dir/dsmb-<session>-<cutoff>.html``, ``.pdf``, ``.json`` and ``facts.json``.

    Parameters
    ----------
    protocol
        The study.
    snapshot
        A snapshot directory (verified against its manifest before use).
    out_dir
        Output directory (created; 0700 from its creation in a closed session).
    session
        ``"open"`` (pooled; the randomisation file is never read) or ``"closed"`` (by arm).
    randomization
        The randomisation list (closed session: required).
    cutoff
        Data cut-off (default: the protocol's ``reporting.data_cut``).
    unmask
        Closed session only: name the arms instead of coding them.
    arm_key
        Closed session only: the arm-code key file (default ``dsmb-arm-key`` beside the
        randomisation list; created on first use, see :func:`read_arm_key`).
    query_log
        The validation query log (SQLite) for open queries by site and age.
    sap
        The analysis plan: its version goes on the title page, its populations and TEAE rule
        define the facts (:func:`studyman.facts.rules_from_plan`; without a plan the default
        rules, and the report says so), and its ``interim`` block decides whether efficacy is
        shown (closed session only).
    pdf
        Also render the PDF.
    as_of
        The time query ages count to (default: now; naive times are UTC). Never the data
        cut-off: queries are raised after it.

    Notes
    -----
    Beside the HTML and PDF the report writes ``facts.json`` (output ``dsmb-<session>``) and
    ``dsmb-<session>-<cutoff>.json`` (``{"facts": ..., "tables": [...]}``); in a closed session
    both are 0600 like the rest. The open session's are blinded and pooled: no per-arm value.

    Raises
    ------
    SourceError
        Closed session without a randomisation file, or one that does not match the snapshot;
        an arm-code key that others can read or that is malformed; an output folder whose
        ``facts.json`` belongs to another output.
    SnapshotError
        The snapshot differs from its manifest.
    """
    if session not in ("open", "closed"):
        raise SourceError(f"session must be 'open' or 'closed', not {session!r}")
    if session == "closed" and randomization is None:
        raise SourceError(
            "a closed DSMB session needs the randomisation list (--randomization); "
            "it refuses to run without it"
        )
    if session == "open" and unmask:
        raise SourceError("--unmask applies to a closed session only")
    if session == "open" and arm_key is not None:
        raise SourceError("--arm-key applies to a closed session only")
    out_dir = Path(out_dir)
    _check_facts_folder(out_dir, f"dsmb-{session}")
    moment = _as_utc(as_of)
    snapshot = Path(snapshot)
    verification = verify_snapshot(snapshot)
    if not verification.ok:
        raise SnapshotError(verification.summary())
    manifest_bytes = (snapshot / MANIFEST_NAME).read_bytes()
    manifest = json.loads(manifest_bytes)
    snapshot_sha256 = hashlib.sha256(manifest_bytes).hexdigest()
    cut = cutoff or protocol.reporting.data_cut or date.today()
    unblinded = set(protocol.blinding.unblinded_forms)
    tables = _read_tables(snapshot, manifest, unblinded if session == "open" else set())
    findings = read_snapshot_file(snapshot, "findings.parquet")
    if session == "open":
        # the blinding gate: the open session reads only the blinded view
        tables = blind_tables(tables, protocol)
        findings = blind_findings(findings, protocol)
    plan_version = "not supplied"
    interim = False
    plan: AnalysisPlan | None = None
    rules: FactRules = DEFAULT_RULES
    if sap is not None:
        from studyman.analysis.sap import load_sap

        loaded = load_sap(sap)
        plan_version = f"{loaded.plan.version} ({Path(sap).name})"
        plan = loaded.plan
        interim = bool(loaded.plan.interim.dsmb_efficacy)
        rules = rules_from_plan(loaded.plan, f"analysis plan version {plan_version}")
    queries = None
    if query_log is not None:
        if not Path(query_log).is_file():
            raise SourceError(f"{query_log}: query log not found")
        from studyman.validation.query_log import QueryLog

        with QueryLog(query_log) as log:
            queries = log.queries(as_of=moment.isoformat())
        if session == "open":
            from studyman.validation.run import blinded_queries

            # the log may also hold an unblinded run's queries: none of them reach this session
            queries = blinded_queries(queries, protocol)
    record_id = protocol.study.record_id_field
    uncut_ids = {
        str(v)
        for frame in tables.values()
        if record_id in frame.columns
        for v in frame[record_id].dropna()
    }
    cut_data = cut_tables(protocol, tables, cut)
    arms: pd.Series | None = None
    arm_order: tuple[str, ...] = ()
    arm_labels: dict[str, str] = {}
    key: ArmKey | None = None
    if session == "closed" and randomization is not None:
        # read and checked first, so a missing file is a SourceError naming it
        by_name = read_randomization_list(Path(randomization), protocol)
        probe = DsmbInputs(protocol, cut_data, cut, rules=rules, as_of=moment)
        _check_participants(by_name, probe.subjects(), uncut_ids, Path(randomization))
        if unmask:
            labels = {arm.name: arm.name for arm in protocol.arms.items}
        else:
            key = read_arm_key(arm_key or default_arm_key_path(Path(randomization)))
            labels = arm_codes(protocol, key.key)
        arms = by_name.map(labels)
        arm_labels = dict(labels)
        arm_order = tuple(sorted(labels.values())) if not unmask else tuple(labels.values())
    inputs = DsmbInputs(
        protocol,
        cut_data,
        cut,
        arms=arms,
        arm_order=arm_order,
        queries=queries,
        interim_efficacy=interim,
        snapshot_findings=findings[["instrument", "check_id"]]
        if {"instrument", "check_id"} <= set(findings.columns)
        else None,
        as_of=moment,
        rules=rules,
        snapshot_id=snapshot_id(snapshot),
        plan=plan,
        arm_labels=arm_labels,
        dsmb_history=load_dsmb_history(protocol.source_file) if protocol.source_file else None,
    )
    sections = build_sections(inputs)
    figures = [[draw_figure(spec, protocol) for spec in section.figures] for section in sections]
    provenance: list[tuple[str, str]] = [
        ("Session", session.upper()),
        ("Data cut-off", cut.isoformat()),
        ("Query ages as of", moment.strftime("%Y-%m-%d %H:%M UTC")),
        ("Prepared by", AUTHOR),
        ("Snapshot", f"{snapshot.name} (created {manifest.get('created_at', 'unknown')})"),
        ("Snapshot id", inputs.snapshot_id),
        ("Protocol", f"{protocol.study.id} version {protocol.study.version}"),
        ("Analysis plan version", plan_version),
        ("studyman version", __version__),
    ]
    if session == "closed":
        # no hash of the randomisation list: see the module's notes
        provenance.append(("Arm labels", "unmasked (arm names)" if unmask else "coded"))
        if key is not None:
            provenance.append(("Arm-code key fingerprint", key.fingerprint))
    header = ReportHeader(
        session=session,
        cutoff=cut.isoformat(),
        study_id=protocol.study.id,
        study_title=protocol.study.title,
        provenance=tuple(provenance),
        studyman_version=__version__,
    )
    html = render_html(header, sections, figures)
    if session == "closed":
        make_private_directory(out_dir)
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
    # a closed report's temporary file is born 0600 (write_file_atomic), never wider
    mode = PRIVATE_FILE_MODE if session == "closed" else 0o644
    stem = f"dsmb-{session}-{cut.isoformat()}"
    html_path = out_dir / f"{stem}.html"
    write_bytes_atomic(html_path, html.encode("utf-8"), mode=mode)
    pdf_path: Path | None = None
    if pdf:
        from studyman.reporting.pdf import html_to_pdf

        data = html_to_pdf(
            html,
            author=AUTHOR,
            title=f"{protocol.study.id} DSMB report, {session.upper()} session, "
            f"data cut-off {cut.isoformat()}",
            created=cut,
        )
        pdf_path = out_dir / f"{stem}.pdf"
        write_bytes_atomic(pdf_path, data, mode=mode)
    facts = inputs.facts()
    data_path = out_dir / f"{stem}.json"
    data_text = json.dumps(report_data(sections, facts), indent=2, ensure_ascii=False) + "\n"
    write_bytes_atomic(data_path, data_text.encode("utf-8"), mode=mode)
    facts_path = write_facts_json(out_dir / FACTS_NAME, facts, output=f"dsmb-{session}", mode=mode)
    return DsmbReport(
        html=html_path,
        pdf=pdf_path,
        session=session,
        cutoff=cut,
        snapshot_sha256=snapshot_sha256,
        arm_key=None if key is None else key.path,
        arm_key_fingerprint=None if key is None else key.fingerprint,
        arm_key_created=key is not None and key.created,
        safety_population=int(facts.headline()["safety_population"]),
        sections=tuple(section.id for section in sections),
        incomplete=tuple(section.id for section in sections if section.missing),
        facts=facts_path,
        data=data_path,
        as_of=moment,
    )
