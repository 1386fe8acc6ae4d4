"""`studyman protocol check`, `studyman protocol show` and `studyman protocol init`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from studyman.errors import ProtocolError
from studyman.findings import Finding
from studyman.protocol import load_protocol, read_data_dictionary
from studyman.protocol.conformance import check_conformance
from studyman.protocol.dictionary_check import check_dictionary
from studyman.protocol.dsmb_history import load_dsmb_history
from studyman.protocol.models import Protocol

protocol_app = typer.Typer(
    name="protocol",
    help="Check, summarise or start (init) a study protocol and its REDCap project.",
    no_args_is_help=True,
)

_ProtocolArgument = Annotated[
    Path | None,
    typer.Argument(
        metavar="PROTOCOL",
        help="protocol.yaml or the directory holding it (or --protocol; default: the embedded "
        "reference study).",
        show_default=False,
    ),
]
_ProtocolOption = Annotated[
    Path | None,
    typer.Option(
        "--protocol",
        help="protocol.yaml or the directory holding it, as every other command takes it.",
        show_default=False,
    ),
]


def _protocol_path(positional: Path | None, option: Path | None) -> Path:
    """The study to read: PROTOCOL or --protocol (not two different ones), else the embedded."""
    from studyman.protocol.reference import default_protocol_path

    if positional is not None and option is not None and positional != option:
        raise typer.BadParameter(
            f"two protocols given ({positional} and --protocol {option}): give one"
        )
    chosen = option or positional
    return chosen if chosen is not None else default_protocol_path()


_SEVERITY_STYLE = {"critical": "bold red", "major": "red", "minor": "yellow", "info": "dim"}


@protocol_app.command("check")
def check(
    protocol_path: _ProtocolArgument = None,
    dictionary: Annotated[
        Path | None,
        typer.Option(
            "--dictionary",
            help="Check against this data dictionary CSV (raw or web-download headers) "
            "instead of the protocol's own REDCap project.",
        ),
    ] = None,
    show_info: Annotated[bool, typer.Option("--info", help="Also list info findings.")] = False,
    protocol_option: _ProtocolOption = None,
) -> None:
    """Check PROTOCOL against its REDCap metadata (and the dictionary against REDCap's upload
    rules); exit 1 on a major or critical finding, or on a draft's decisions left."""
    protocol_path = _protocol_path(protocol_path, protocol_option)
    _refuse_draft(protocol_path)
    protocol = load_protocol(protocol_path, with_redcap=dictionary is None)
    # the DSMB history beside the protocol is study data too: a damaged one is one error here,
    # not at the next DSMB report
    load_dsmb_history(protocol.source_file or protocol_path)
    if dictionary is not None:
        metadata = read_data_dictionary(dictionary)
        findings = check_dictionary(metadata) + check_conformance(protocol, metadata)
    elif protocol.redcap is not None:
        findings = check_dictionary(protocol.redcap.dictionary) + check_conformance(
            protocol, protocol.redcap
        )
    else:  # pragma: no cover - load_protocol always fills redcap here
        raise ProtocolError("no REDCap project loaded", file=str(protocol_path))
    console = _console()
    shown = [f for f in findings if show_info or f.severity != "info"]
    blocking = [f for f in findings if f.severity in ("critical", "major")]
    if shown:
        console.print(_findings_table(shown))
    counts = {s: sum(f.severity == s for f in findings) for s in _SEVERITY_STYLE}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    console.print(
        f"{protocol.study.id} v{protocol.study.version}: "
        + ("conformant" if not blocking else "NOT conformant")
        + f" ({summary})"
    )
    if blocking:
        raise typer.Exit(1)


def _refuse_draft(protocol_path: Path) -> None:
    """A draft (from `protocol init`) is not checked field by field: list its decisions."""
    from studyman.onboarding import draft_decisions

    decisions = draft_decisions(protocol_path)
    if not decisions:
        return
    console = _console()
    console.print(f"Decisions left in the draft {protocol_path}:")
    for decision in decisions:
        console.print(f"  {decision}", soft_wrap=True)
    console.print(
        f"draft: {len(decisions)} decision(s) left; replace each 'TODO(decide): ...' value in "
        f"{protocol_path} (or give them in an answers file to `studyman protocol init "
        "--answers`), then check again",
        soft_wrap=True,
    )
    raise typer.Exit(1)


def _console() -> Console:
    # No markup: field names, logic ("[age] > 1") and labels print as written, and a "[/x]" in
    # a study file cannot break the output.
    console = Console(markup=False)
    # Piped to a file or a CI log: wide enough that check ids and field names stay on one line.
    return console if console.is_terminal else Console(width=160, markup=False)


def _findings_table(findings: list[Finding]) -> Table:
    table = Table(title="Conformance findings", show_lines=False)
    for column in ("severity", "check", "form", "event", "field", "message"):
        table.add_column(column, overflow="fold")
    for finding in findings:
        table.add_row(
            Text(finding.severity, style=_SEVERITY_STYLE[finding.severity]),
            finding.check_id,
            finding.instrument,
            finding.event,
            finding.field,
            finding.message,
        )
    return table


@protocol_app.command("show")
def show(protocol_path: _ProtocolArgument = None, protocol_option: _ProtocolOption = None) -> None:
    """Print a summary of PROTOCOL: arms, sites, schedule and safety rules."""
    protocol = load_protocol(_protocol_path(protocol_path, protocol_option))
    console = _console()
    for table in _summary_tables(protocol):
        console.print(table)


def _summary_tables(protocol: Protocol) -> list[Table]:
    study = protocol.study
    head = Table(title=f"{study.id} v{study.version}: {study.title}", show_header=False)
    head.add_column("item")
    head.add_column("value", overflow="fold")
    head.add_row("file", protocol.source_file)
    head.add_row("sha256", protocol.source_sha256)
    if protocol.redcap is not None:
        redcap = protocol.redcap
        head.add_row(
            "REDCap project",
            f"{redcap.directory} ({len(redcap.dictionary.fields)} fields, "
            f"{len(redcap.instruments)} forms, {len(redcap.events)} events, "
            f"{len(redcap.dags)} DAGs, {len(redcap.users)} users)",
        )
    ratio = ":".join(str(arm.ratio) for arm in protocol.arms.items)
    head.add_row(
        "arms",
        "; ".join(
            f"{arm.code} {arm.name} ({arm.closed_report_code})" for arm in protocol.arms.items
        )
        + f"; ratio {ratio}",
    )
    randomization = protocol.randomization
    head.add_row(
        "randomization",
        f"{randomization.method}, blocks {', '.join(map(str, randomization.block_sizes))}; strata: "
        + ", ".join(factor.id for factor in randomization.stratification),
    )
    head.add_row(
        "enrolment",
        f"{protocol.enrolment.target} from {protocol.enrolment.start} to {protocol.enrolment.end}",
    )
    head.add_row("unblinded forms", ", ".join(protocol.blinding.unblinded_forms))
    primary = protocol.endpoints.primary
    head.add_row("primary endpoint", f"{primary.name} ({primary.field} at {primary.event})")
    if protocol.reporting.data_cut is not None:
        head.add_row("data cut", str(protocol.reporting.data_cut))

    sites = Table(title="Sites")
    for column in ("site", "name", "DAG", "target", "activated"):
        sites.add_column(column)
    for site in protocol.sites:
        sites.add_row(
            site.id, site.name, site.dag, str(site.enrolment_target), str(site.activation_date)
        )

    schedule = Table(title="Schedule (study day 0 = randomization)")
    for column in ("event", "label", "day", "window", "instruments"):
        schedule.add_column(column, overflow="fold")
    for visit in protocol.visits:
        window = f"{visit.window.start}..{visit.window.end}" if visit.window else ""
        day = "" if visit.target_day is None else str(visit.target_day)
        schedule.add_row(visit.event, visit.label, day, window, ", ".join(visit.instruments))

    safety = Table(title="Safety")
    safety.add_column("rule")
    safety.add_column("value", overflow="fold")
    liver = protocol.liver
    safety.add_row("liver ULN", ", ".join(f"{t.id} {t.uln:g} {t.unit}" for t in liver.tests))
    hys = liver.hys_law
    safety.add_row(
        "Hy's law",
        f"{' or '.join(hys.transaminases)} > {hys.transaminase_multiple:g}xULN and "
        f"{hys.bilirubin} > {hys.bilirubin_multiple:g}xULN, {hys.alp} <= "
        f"{hys.alp_max_multiple:g}xULN",
    )
    safety.add_row("AESI", "; ".join(f"{a.code} {a.label}" for a in protocol.adverse_events.aesi))
    safety.add_row("coding list", f"{len(protocol.adverse_events.coding_list)} preferred terms")
    for clock in protocol.reporting_clocks:
        safety.add_row(f"clock: {clock.label}", f"{clock.limit_hours} h from awareness")
    return [head, sites, schedule, safety]


@protocol_app.command("init")
def init(
    out: Annotated[
        Path, typer.Option("--out", help="The new study folder (protocol.yaml + redcap/).")
    ],
    url: Annotated[
        str | None, typer.Option("--url", help="A live project: REDCap's API URL (…/api/).")
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="Owner-only file holding the API token (default: $STUDYMAN_REDCAP_TOKEN).",
        ),
    ] = None,
    dictionary: Annotated[
        Path | None,
        typer.Option("--dictionary", help="An exported project: its data dictionary CSV."),
    ] = None,
    events: Annotated[
        Path | None, typer.Option("--events", help="Exported events CSV (longitudinal).")
    ] = None,
    mapping: Annotated[
        Path | None,
        typer.Option("--mapping", help="Exported instrument-event mapping CSV (longitudinal)."),
    ] = None,
    arms: Annotated[Path | None, typer.Option("--arms", help="Exported REDCap arms CSV.")] = None,
    instruments: Annotated[
        Path | None, typer.Option("--instruments", help="Exported instruments CSV (labels).")
    ] = None,
    repeating: Annotated[
        Path | None, typer.Option("--repeating", help="Exported repeating forms CSV.")
    ] = None,
    dags: Annotated[
        Path | None, typer.Option("--dags", help="Exported data access groups CSV (sites).")
    ] = None,
    users: Annotated[
        Path | None, typer.Option("--users", help="REDCap's user import CSV (form rights).")
    ] = None,
    project_info: Annotated[
        Path | None, typer.Option("--project-info", help="Exported project information JSON.")
    ] = None,
    answers: Annotated[
        Path | None,
        typer.Option(
            "--answers", help="Decisions already made: a YAML mapping of key path to value."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing folder written by init.")
    ] = False,
) -> None:
    """Write a draft protocol.yaml and the project files (redcap/) from a live or exported
    REDCap project; list the decisions left to a person."""
    from studyman.errors import StudymanError
    from studyman.onboarding import (
        fetch_project_dir,
        init_protocol,
        read_answers,
        write_exported_project_dir,
    )
    from studyman.protocol.redcap_project import RedcapProject

    if (url is None) == (dictionary is None):
        raise StudymanError("protocol init: give either --url (a live project) or --dictionary")
    exported = (events, mapping, arms, instruments, repeating, dags, users, project_info)
    if url is not None and any(path is not None for path in exported):
        raise StudymanError(
            "protocol init: --events, --mapping, --arms, ... go with --dictionary, not --url"
        )
    given = read_answers(answers) if answers is not None else None
    make_project: Callable[[Path], RedcapProject]
    if dictionary is None and url is not None:
        from studyman.sources.pull import _public_url, read_token

        token = read_token(token_file)
        source = f"the live project at {_public_url(url)}"
        live_url = url

        def make_project(directory: Path) -> RedcapProject:
            return fetch_project_dir(live_url, token, directory)

    elif dictionary is not None:
        exported_dictionary = dictionary
        source = f"the exported project {dictionary.name}"

        def make_project(directory: Path) -> RedcapProject:
            return write_exported_project_dir(
                directory,
                dictionary=exported_dictionary,
                events=events,
                mapping=mapping,
                arms=arms,
                instruments=instruments,
                repeating=repeating,
                dags=dags,
                users=users,
                project_info=project_info,
            )

    else:  # pragma: no cover - exactly one of the two, checked above
        raise StudymanError("protocol init: give either --url or --dictionary")
    result = init_protocol(
        out,
        make_project,
        source=source,
        answers=given,
        answers_file=str(answers) if answers is not None else "<answers>",
        force=force,
    )
    console = _console()
    console.print(f"wrote {result.protocol_file} and {result.directory / 'redcap'}")
    console.print(f"recognised from labels (review each): {len(result.guesses)} value(s)")
    if result.decisions:
        console.print(
            f"{len(result.decisions)} decision(s) left: `studyman protocol check "
            f"{result.directory}` lists them"
        )
    else:
        console.print(f"no decision left: `studyman protocol check {result.directory}`")


def register(app: typer.Typer) -> None:
    """Add this area's commands to *app*."""
    app.add_typer(protocol_app, name="protocol")
