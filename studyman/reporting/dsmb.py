"""DSMB report sections computed from snapshot tables: pure functions, small result tables out.

Each ``*_section`` function takes a :class:`DsmbInputs` (the protocol, the blinded snapshot
tables cut at the data cut-off, and, in a closed session only, each participant's coded arm) and
returns a :class:`Section`: display tables whose cells are text, the data of its figures, and the
forms it needed but did not find. Nothing here reads a file, draws or renders.

Every study fact a table states (screened, randomised, treated, the populations, which adverse
events are treatment-emergent, serious adverse events, deaths, discontinuations of the study and
of treatment and those due to an adverse event, deviations and their major/minor class, query
status and age) comes from one derivation, :func:`studyman.facts.derive_facts`, computed once
per report (:meth:`DsmbInputs.facts`) with the analysis plan's rules; no section derives them
again, so that a number has one value in every table, in ``facts.json`` and in the other outputs
of the same snapshot and cut-off. The definitions are printed in the report's "Definitions"
section in the words of :func:`studyman.facts.rule_texts`.

An open session is computed with ``arms=None``: every table has one pooled ``Total`` column.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from studyman.errors import SnapshotError
from studyman.facts import (
    DEFAULT_RULES,
    FactRules,
    StudyFacts,
    cut_tables,
    derive_facts,
    rule_texts,
)
from studyman.protocol.clocks import (
    clock_applies,
    clock_reading_time,
    clock_report_field,
    clock_start,
    clock_status,
    clock_unassessable_reason,
)
from studyman.protocol.models import Protocol
from studyman.sources.blinding import blind_dictionary

__all__ = [
    "SECTION_BUILDERS",
    "TOTAL",
    "DsmbInputs",
    "FigureData",
    "ReportTable",
    "Section",
    "build_sections",
    "cut_tables",
    "report_data",
    "subjects_table",
    "table_id",
    "table_ids",
]

TOTAL = "Total"
_KEY = "record_id"
_EVENT = "redcap_event_name"
_SCHEDULED = ("baseline", "treatment", "end_of_treatment", "follow_up")


@dataclass(frozen=True)
class ReportTable:
    """One display table.

    Attributes
    ----------
    title
        Caption.
    frame
        The cells, all text; the first column is the row label.
    population
        The population the percentages refer to (``"Safety population"``), or "".
    denominators
        (column group, N) pairs stated under the table.
    note
        A footnote.
    """

    title: str
    frame: pd.DataFrame
    population: str = ""
    denominators: tuple[tuple[str, int], ...] = ()
    note: str = ""


@dataclass(frozen=True)
class FigureData:
    """What a figure shows: its kind (a drawing function in :mod:`studyman.reporting.figures`)."""

    kind: str
    title: str
    data: Mapping[str, pd.DataFrame]
    caption: str = ""


@dataclass(frozen=True)
class Section:
    """One report section.

    Attributes
    ----------
    id, title
        Anchor and heading.
    paragraphs
        Text before the tables.
    tables, figures
        Content.
    missing
        Forms the section needs that the snapshot does not hold; when not empty the section
        says so and shows what it could compute without them.
    """

    id: str
    title: str
    paragraphs: tuple[str, ...] = ()
    tables: tuple[ReportTable, ...] = ()
    figures: tuple[FigureData, ...] = ()
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class DsmbInputs:
    """Everything the sections compute from.

    Attributes
    ----------
    protocol
        The study.
    tables
        Instrument → snapshot table, already cut at *cutoff* (:func:`cut_tables`), blinded forms
        only unless the session is closed.
    cutoff
        The data cut-off date.
    arms
        Closed session: ``record_id`` → displayed arm label (coded or named); None when open.
    arm_order
        Display order of the arm labels.
    queries
        The validation query log (``QueryLog.queries``) or None when none was supplied.
    interim_efficacy
        True when the analysis plan prespecifies an interim efficacy look for the DSMB.
    snapshot_findings
        The snapshot's import findings (values that did not cast, ...), without those of the
        unblinded forms in an open session; None when not available.
    as_of
        The time query ages count to (default: when the facts are first derived); never the
        data cut-off, since queries are raised after it.
    rules
        The analysis plan's rules (:func:`studyman.facts.rules_from_plan`), else
        :data:`studyman.facts.DEFAULT_RULES` (the report then says no plan was supplied).
    snapshot_id
        The snapshot's id, recorded with the facts.
    """

    protocol: Protocol
    tables: Mapping[str, pd.DataFrame]
    cutoff: date
    arms: pd.Series | None = None
    arm_order: tuple[str, ...] = ()
    queries: pd.DataFrame | None = None
    interim_efficacy: bool = False
    snapshot_findings: pd.DataFrame | None = None
    as_of: datetime | None = None
    rules: FactRules = DEFAULT_RULES
    snapshot_id: str = ""
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def closed(self) -> bool:
        """True in a closed session (arms known)."""
        return self.arms is not None

    def table(self, name: str) -> pd.DataFrame | None:
        """The snapshot table of instrument *name*, or None when the snapshot lacks it."""
        return self.tables.get(name)

    def facts(self) -> StudyFacts:
        """The study's facts in this session's view (:func:`studyman.facts.derive_facts`),
        derived once: the open session's from the blinded tables, the closed session's from all
        tables with the arms under their displayed labels."""
        if "facts" not in self._cache:
            self._cache["facts"] = derive_facts(
                self.protocol,
                self.tables,
                cutoff=self.cutoff,
                rules=self.rules,
                arms=self.arms,
                arm_order=self.arm_order,
                queries=self.queries,
                as_of=self.as_of,
                snapshot_id=self.snapshot_id,
            )
        facts: StudyFacts = self._cache["facts"]
        return facts

    def subjects(self) -> pd.DataFrame:
        """The per-participant table (:func:`subjects_table`), computed once."""
        if "subjects" not in self._cache:
            self._cache["subjects"] = subjects_table(self)
        subjects: pd.DataFrame = self._cache["subjects"]
        return subjects


# ----------------------------------------------------------------------------------- helpers


def _per_record(keys: pd.Series, lookup: pd.Series) -> pd.Series:
    """*lookup* (indexed by record ID) aligned to *keys*; also for no rows, unlike ``map``."""
    return pd.Series(lookup.reindex(keys.astype(str).to_numpy()).to_numpy(), index=keys.index)


def _member(keys: pd.Series | pd.Index, ids: Iterable[object]) -> np.ndarray:
    """Whether each of *keys* is one of *ids*, compared as text.

    A hash lookup in Python: pandas' ``isin`` on Arrow-backed strings builds one Arrow scalar
    per wanted value on every call, which made the by-group tables of a 5,000-participant
    report slow.
    """
    wanted = {str(value) for value in ids}
    values = np.asarray(keys, dtype=object)
    return np.fromiter((str(value) in wanted for value in values), dtype=bool, count=len(values))


def _texts(values: pd.Series | pd.Index) -> list[str]:
    """*values* as a list of Python strings, converted at once (iterating an Arrow-backed
    column converts one value per step, far slower)."""
    return [str(value) for value in np.asarray(values, dtype=object)]


def _codes(series: pd.Series) -> pd.Series:
    """REDCap codes as text without a trailing ``.0``."""
    text = series.astype("string").str.strip()
    return text.str.replace(r"\.0$", "", regex=True)


def _pct(count: int, total: int) -> str:
    if total <= 0:
        return f"{count}"
    return f"{count} ({100.0 * count / total:.1f}%)"


def _site_of(record_ids: pd.Series) -> pd.Series:
    return record_ids.astype("string").str.split("-").str[0]


def _fmt_num(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _choice_labels(inputs: DsmbInputs, field_name: str) -> dict[str, str]:
    """Code → label of *field_name* in the session's view of the dictionary (the open session's
    is the blinded one, :func:`studyman.sources.blinding.blind_dictionary`); {} when unknown."""
    project = inputs.protocol.redcap
    if project is None:
        return {}
    dictionary = project.dictionary
    if not inputs.closed:
        dictionary = blind_dictionary(dictionary, inputs.protocol)
    spec = dictionary.get(field_name)
    return {choice.code: choice.label for choice in spec.choices} if spec is not None else {}


def _groups(inputs: DsmbInputs, members: pd.Index) -> list[tuple[str, pd.Index]]:
    """(label, record IDs) of each column group: the arms (closed session), then the total."""
    groups: list[tuple[str, pd.Index]] = []
    if inputs.arms is not None:
        arms = inputs.arms.reindex(members)
        for label in inputs.arm_order:
            groups.append((label, members[(arms == label).fillna(False).to_numpy()]))
    groups.append((TOTAL, members))
    return groups


def _header(label: str, n: int) -> str:
    return f"{label} (N={n})"


def _denominators(groups: Sequence[tuple[str, pd.Index]]) -> tuple[tuple[str, int], ...]:
    return tuple((label, len(ids)) for label, ids in groups)


def _group_table(
    title: str,
    rows: Sequence[Sequence[str]],
    first: str,
    groups: Sequence[tuple[str, pd.Index]],
    population: str,
    note: str = "",
) -> ReportTable:
    """A table of *rows* with one column per group, headed with and stating each group's N."""
    columns = [first, *[_header(label, len(ids)) for label, ids in groups]]
    return ReportTable(
        title, pd.DataFrame(rows, columns=columns), population, _denominators(groups), note
    )


def _missing(inputs: DsmbInputs, forms: Iterable[str]) -> tuple[str, ...]:
    return tuple(form for form in forms if inputs.table(form) is None)


def _present(inputs: DsmbInputs, form: str) -> pd.DataFrame:
    """The table of *form*; callers check :func:`_missing` first."""
    frame = inputs.table(form)
    if frame is None:
        raise SnapshotError(f"the snapshot has no '{form}' form")
    return frame


def _unavailable(section_id: str, title: str, missing: Sequence[str]) -> Section:
    return Section(
        id=section_id,
        title=title,
        paragraphs=(
            "This section could not be produced: the snapshot has no "
            + ", ".join(f"'{form}'" for form in missing)
            + " form"
            + ("s" if len(missing) > 1 else "")
            + ".",
        ),
        missing=tuple(missing),
    )


def _count_table(
    rows: Sequence[tuple[str, Callable[[pd.Index], int]]],
    groups: Sequence[tuple[str, pd.Index]],
    *,
    first: str,
    percent: bool = True,
) -> pd.DataFrame:
    """Rows of participant counts (with % of each group's N)."""
    data: dict[str, list[str]] = {first: [label for label, _ in rows]}
    for label, ids in groups:
        column = []
        for _, count in rows:
            value = count(ids)
            column.append(_pct(value, len(ids)) if percent else str(value))
        data[_header(label, len(ids))] = column
    return pd.DataFrame(data)


# ------------------------------------------------------------------------------ populations


def subjects_table(inputs: DsmbInputs) -> pd.DataFrame:
    """One row per screened participant (index ``record_id``), read from the facts.

    Columns: ``site``, ``scr_date``, ``consent_date``, ``eligible`` (bool),
    ``screen_fail_reason`` (the recorded code), ``randomized``, ``rand_date``, ``cbt_attended``
    (sessions attended), ``doses`` (doses taken, in the closed session's view), ``treated``,
    ``safety``, ``ds_status``, ``ds_label``, ``ds_date``, ``completed``, ``discontinued_study``,
    ``discontinued_treatment``, ``discontinued_due_to_ae``, ``death``, ``death_date``,
    ``major_deviation``. Every column but ``screen_fail_reason`` is a fact of
    :class:`studyman.facts.StudyFacts` under the name the sections use.
    """
    facts = inputs.facts().subjects
    index = pd.Index(facts.index.astype(str), name=_KEY, dtype="string")
    subjects = pd.DataFrame(index=index)
    subjects["site"] = pd.Series(facts["site"].to_numpy(), index=index, dtype="string")
    renamed = {
        "scr_date": "screening_date",
        "consent_date": "consent_date",
        "eligible": "eligible",
        "randomized": "randomised",
        "rand_date": "rand_date",
        "cbt_attended": "sessions",
        "doses": "doses",
        "treated": "treated",
        "ds_status": "ds_status",
        "ds_label": "ds_label",
        "ds_date": "ds_date",
        "completed": "completed",
        "discontinued_study": "discontinued_study",
        "discontinued_treatment": "discontinued_treatment",
        "discontinued_due_to_ae": "discontinued_due_to_ae",
        "death": "death",
        "death_date": "death_date",
        "major_deviation": "major_deviation",
    }
    for column, source in renamed.items():
        subjects[column] = facts[source].to_numpy()
    safety_rule = inputs.rules.population("safety")
    subjects["safety"] = (
        facts[f"population_{safety_rule.name}"].to_numpy(bool)
        if safety_rule is not None
        else (facts["randomised"] & facts["treated"]).to_numpy(bool)
    )
    eligibility = inputs.table(inputs.protocol.eligibility.form)
    reason = inputs.protocol.eligibility.screen_fail_reason_field
    if eligibility is not None and reason in eligibility.columns:
        first = eligibility.drop_duplicates(_KEY).set_index(_KEY)
        first.index = first.index.astype(str)
        subjects["screen_fail_reason"] = _codes(first[reason]).reindex(index.astype(str)).to_numpy()
    else:
        subjects["screen_fail_reason"] = pd.Series(pd.NA, index=index, dtype="string")
    return subjects


def _randomised(inputs: DsmbInputs) -> pd.Index:
    subjects = inputs.subjects()
    return subjects.index[subjects["randomized"].to_numpy()]


def _safety(inputs: DsmbInputs) -> pd.Index:
    subjects = inputs.subjects()
    return subjects.index[subjects["safety"].to_numpy()]


def _status_codes(protocol: Protocol) -> dict[str, tuple[str, bool, bool]]:
    return {str(c.code): (c.label, c.completed, c.death) for c in protocol.disposition.codes}


def _status_code_named(protocol: Protocol, name: str) -> str | None:
    for code in protocol.disposition.codes:
        if code.name == name:
            return str(code.code)
    return None


# ---------------------------------------------------------------------------------- sections


def summary_section(inputs: DsmbInputs) -> Section:
    """Summary and protocol synopsis; no arm is named in an open session."""
    protocol = inputs.protocol
    study = protocol.study
    subjects = inputs.subjects()
    randomised = int(subjects["randomized"].sum())
    ratio = ":".join(str(arm.ratio) for arm in protocol.arms.items)
    if inputs.closed:
        arms_text = (
            f"{len(protocol.arms.items)} arms ({ratio}), shown in this closed session as "
            + ", ".join(inputs.arm_order)
            + "."
        )
    else:
        arms_text = (
            f"{len(protocol.arms.items)} arms, allocation ratio {ratio}; this open report pools "
            "all participants and names no arm."
        )
    synopsis = pd.DataFrame(
        {
            "Item": [
                "Study",
                "Registration",
                "Sponsor",
                "Protocol version",
                "Design",
                "Treatment",
                "Randomisation",
                "Primary endpoint",
                "Sites",
                "Enrolment target",
                "Data cut-off",
            ],
            "Value": [
                f"{study.id}: {study.title}",
                study.registration or "–",
                study.sponsor or "–",
                f"{study.version}" + (f" ({study.version_date})" if study.version_date else ""),
                arms_text,
                f"{protocol.treatment.weeks} weeks of treatment; "
                f"{protocol.treatment.cbt_sessions_planned} CBT sessions planned",
                f"{protocol.randomization.method}, stratified by "
                + ", ".join(f.label or f.id for f in protocol.randomization.stratification),
                protocol.endpoints.primary.name,
                str(len(protocol.sites)),
                f"{protocol.enrolment.target} randomised between {protocol.enrolment.start} "
                f"and {protocol.enrolment.end}",
                inputs.cutoff.isoformat(),
            ],
        }
    )
    headline = inputs.facts().headline()
    safety = int(headline["safety_population"])
    screened = int(headline["screened"])
    paragraphs = (
        f"At the data cut-off ({inputs.cutoff.isoformat()}) {screened} participants had been "
        f"screened and {randomised} randomised "
        f"({100.0 * randomised / protocol.enrolment.target:.1f}% of the target of "
        f"{protocol.enrolment.target}); the safety population holds {safety} participants.",
        "Prepared by the Data Coordinating Centre from a verified data snapshot. The report "
        "states what the data show; it makes no claim about any treatment.",
    )
    return Section(
        id="summary",
        title="Summary and protocol synopsis",
        paragraphs=paragraphs,
        tables=(ReportTable("Protocol synopsis", synopsis), facts_table(inputs)),
    )


#: Row labels of the study-facts table by ``facts.json`` key (:data:`studyman.facts.HEADLINE_KEYS`).
FACT_LABELS: dict[str, str] = {
    "screened": "Screened",
    "eligible": "Eligible",
    "randomised": "Randomised",
    "treated": "Randomised and treated",
    "safety_population": "Safety population",
    "itt_population": "Intention-to-treat population",
    "mitt_population": "Modified intention-to-treat population",
    "pp_population": "Per-protocol population",
    "teae_participants": "Participants with a treatment-emergent adverse event",
    "teae_events": "Treatment-emergent adverse events (events)",
    "serious_ae_participants": "Participants with a serious treatment-emergent adverse event",
    "deaths": "Deaths",
    "discontinued_treatment": "Discontinued study treatment",
    "discontinued_study": "Discontinued the study",
    "discontinued_due_to_ae": "Discontinued the study due to an adverse event",
    "deviations": "Protocol deviations (events)",
    "major_deviations": "Major protocol deviations (events)",
    "participants_with_major_deviation": "Participants with a major protocol deviation",
    "site_queries_open": "Site queries open",
    "review_signals_open": "Review signals open",
    "median_days_open": "Median days open (site queries)",
}


def facts_table(inputs: DsmbInputs) -> ReportTable:
    """The headline facts (``facts.json``'s ``facts``) as a table: one row per key, a column
    per arm in a closed session (where the facts have per-arm values), then the total."""
    headline = inputs.facts().headline()
    arms = inputs.arm_order if inputs.closed else ()
    rows: list[list[str]] = []
    for key, label in FACT_LABELS.items():
        if key not in headline:
            continue
        value = headline[key]
        by_arm = headline.get(f"{key}_by_arm", {}) if arms else {}
        cells = [str(by_arm[arm]) if arm in by_arm else "–" for arm in arms]
        total = f"{value:g}" if isinstance(value, float) else str(value)
        rows.append([label, key, *cells, total])
    return ReportTable(
        "Study facts at the data cut-off",
        pd.DataFrame(rows, columns=["Fact", "Key", *arms, TOTAL]),
        note="Derived once from the snapshot at the data cut-off; every table of this report "
        "and facts.json state the same values (query ages count to "
        f"{_as_of_text(inputs)}). Definitions: see 'Definitions'."
        + (" –: no per-arm value." if arms else ""),
    )


def _as_of_text(inputs: DsmbInputs) -> str:
    return inputs.facts().as_of.strftime("%Y-%m-%d %H:%M UTC")


def definitions_section(inputs: DsmbInputs) -> Section:
    """The definitions every study fact follows, in the words of :func:`rule_texts` (the
    analysis report states them in the same words)."""
    rules = inputs.rules
    if rules.source == DEFAULT_RULES.source:
        origin = (
            "No analysis plan was supplied (--sap): these are studyman's default definitions "
            "(those of the reference analysis plan)."
        )
    else:
        origin = f"As the analysis plan declares them ({rules.source})."
    frame = pd.DataFrame(rule_texts(rules), columns=["Term", "Definition"])
    return Section(
        id="definitions",
        title="Definitions",
        paragraphs=(
            origin,
            "Screened: every participant with a record. Randomised: the randomised field is yes "
            "and the randomisation date is recorded, on or before the data cut-off. Query age: "
            "days from the query's first opening to the report's as-of time "
            f"({_as_of_text(inputs)}), never to the data cut-off, and never negative.",
        ),
        tables=(ReportTable("Definitions", frame),),
    )


_PENDING = "Eligible, not randomised by the cut-off"
_UNRECORDED = "Not recorded"


def _not_randomised_reasons(protocol: Protocol, subjects: pd.DataFrame) -> pd.Series:
    """Why each screened, not randomised participant was not randomised.

    The recorded screen-failure reason; else, for a participant recorded eligible, "eligible,
    not randomised by the cut-off" (still in screening or awaiting baseline); else "not
    recorded".
    """
    reasons = {str(r.code): r.label for r in protocol.disposition.screen_fail_reasons}
    labels = [
        reasons[str(code)]
        if pd.notna(code) and str(code) in reasons
        else (_PENDING if bool(eligible) else _UNRECORDED)
        for code, eligible in zip(subjects["screen_fail_reason"], subjects["eligible"], strict=True)
    ]
    return pd.Series(labels, index=subjects.index, dtype="string")


def study_status_section(inputs: DsmbInputs) -> Section:
    """CONSORT-style flow: assessed, excluded with reasons, randomised, ..., analysed."""
    protocol = inputs.protocol
    needed = ("participant", protocol.eligibility.form, "enrollment")
    missing = _missing(inputs, needed)
    if len(missing) == len(needed):
        return _unavailable("status", "Study status", missing)
    subjects = inputs.subjects()
    not_randomised = subjects[~subjects["randomized"]]
    excluded_reasons = _not_randomised_reasons(protocol, not_randomised)
    excluded_counts = excluded_reasons.value_counts().sort_index()
    randomised = _randomised(inputs)
    groups = _groups(inputs, randomised)
    facts = inputs.facts().subjects
    mitt = inputs.rules.population("mitt")
    analysed_ids = (
        set(facts.index[facts[f"population_{mitt.name}"].to_numpy(bool)].astype(str))
        if mitt is not None
        else set()
    )
    lost_code = _status_code_named(protocol, "lost_to_follow_up")
    flow: list[dict[str, object]] = []
    nodes: dict[str, object] = {
        "assessed": len(subjects),
        "excluded": len(not_randomised),
        "excluded_reasons": {str(k): int(v) for k, v in excluded_counts.items()},
        "randomised": len(randomised),
    }
    arm_nodes = []
    for label, ids in groups:
        sub = subjects.loc[ids]
        received = int(sub["safety"].sum())
        left = sub["discontinued_study"].to_numpy(bool)
        is_lost = (
            (sub["ds_status"] == lost_code).fillna(False).to_numpy(bool)
            if lost_code
            else np.zeros(len(sub), dtype=bool)
        )
        lost = int((left & is_lost).sum())
        discontinued = sub[left & ~is_lost]
        reason_of = sub["ds_label"].astype("string").fillna("Not recorded").astype(str)
        every_reason = reason_of[left].value_counts().sort_index()
        disc_reasons = reason_of[left & ~is_lost].value_counts().sort_index()
        node = {
            "label": label,
            "allocated": len(ids),
            "received": received,
            "lost": lost,
            "discontinued": len(discontinued),
            "discontinued_study": int(left.sum()),
            "discontinued_treatment": int(sub["discontinued_treatment"].sum()),
            "discontinued_due_to_ae": int(sub["discontinued_due_to_ae"].sum()),
            "discontinued_reasons": {str(k): int(v) for k, v in disc_reasons.items()},
            "every_reason": {str(k): int(v) for k, v in every_reason.items()},
            "completed": int(sub["completed"].sum()),
            "ongoing": int(sub["ds_status"].isna().sum()),
            "analysed": len(set(ids.astype(str)) & analysed_ids),
        }
        arm_nodes.append(node)
        flow.append(node)
    rows = [
        ("Allocated", "allocated"),
        ("Received allocated intervention (safety population)", "received"),
        ("Discontinued the study (any reason)", "discontinued_study"),
        ("  Lost to follow-up", "lost"),
        ("  Other reasons", "discontinued"),
        ("Discontinued study treatment", "discontinued_treatment"),
        ("Discontinued the study due to an adverse event", "discontinued_due_to_ae"),
        ("Completed the study", "completed"),
        ("Ongoing at the cut-off", "ongoing"),
        ("Analysed (modified intention-to-treat population)", "analysed"),
    ]
    data: dict[str, list[str]] = {"Stage": [label for label, _ in rows]}
    for node in arm_nodes:
        n = int(str(node["allocated"]))
        data[_header(str(node["label"]), n)] = [
            _pct(int(str(node[key])), n) if key != "allocated" else str(n) for _, key in rows
        ]
    stage_table = ReportTable(
        "Participant flow after randomisation",
        pd.DataFrame(data),
        population="Randomised",
        denominators=_denominators(groups),
    )
    screen_rows = pd.DataFrame(
        {
            "Stage": ["Assessed for eligibility", "Not randomised (excluded or pending)"]
            + [f"  {reason}" for reason in excluded_counts.index]
            + ["Randomised"],
            "n": [str(len(subjects)), str(len(not_randomised))]
            + [str(int(v)) for v in excluded_counts.to_numpy()]
            + [str(len(randomised))],
        }
    )
    disc_rows: dict[str, list[str]] = {}
    all_reasons = sorted(
        {r for node in arm_nodes for r in dict(node["every_reason"])}  # type: ignore[call-overload]
    )
    if all_reasons:
        disc_rows["Reason"] = [*all_reasons, "All reasons"]
        for node in arm_nodes:
            n = int(str(node["allocated"]))
            reasons_of = dict(node["every_reason"])  # type: ignore[call-overload]
            disc_rows[_header(str(node["label"]), n)] = [
                *[_pct(int(reasons_of.get(r, 0)), n) for r in all_reasons],
                _pct(int(str(node["discontinued_study"])), n),
            ]
    tables = [
        ReportTable(
            "Screening",
            screen_rows,
            population="Screened",
            denominators=(("Screened", len(subjects)),),
        ),
        stage_table,
    ]
    if disc_rows:
        tables.append(
            ReportTable(
                "Discontinuations by reason",
                pd.DataFrame(disc_rows),
                population="Randomised",
                denominators=_denominators(groups),
            )
        )
    nodes["arms"] = arm_nodes
    figure = FigureData(
        kind="consort",
        title="Participant flow (CONSORT)",
        data={"flow": pd.DataFrame([{"nodes": nodes}])},
        caption="Drawn from the snapshot at the data cut-off.",
    )
    return Section(
        id="status",
        title="Study status",
        tables=tuple(tables),
        figures=(figure,),
        missing=missing,
    )


def enrolment_section(inputs: DsmbInputs) -> Section:
    """Enrolment against target over time, overall and by site."""
    protocol = inputs.protocol
    missing = _missing(inputs, ("enrollment",))
    if missing:
        return _unavailable("enrolment", "Enrolment", missing)
    subjects = inputs.subjects()
    randomised = subjects[subjects["randomized"]]
    rows = []
    for site in protocol.sites:
        n = int((randomised["site"] == site.id).sum())
        screened = int((subjects["site"] == site.id).sum())
        rows.append(
            {
                "Site": f"{site.id} {site.name}",
                "Activated": site.activation_date.isoformat(),
                "Screened": str(screened),
                "Randomised": str(n),
                "Target": str(site.enrolment_target),
                "% of target": f"{100.0 * n / site.enrolment_target:.1f}%"
                if site.enrolment_target
                else "–",
            }
        )
    total = len(randomised)
    rows.append(
        {
            "Site": "All sites",
            "Activated": protocol.enrolment.start.isoformat(),
            "Screened": str(len(subjects)),
            "Randomised": str(total),
            "Target": str(protocol.enrolment.target),
            "% of target": f"{100.0 * total / protocol.enrolment.target:.1f}%",
        }
    )
    curve = randomised[["site", "rand_date"]].sort_values("rand_date").reset_index()
    targets = pd.DataFrame(
        [
            {
                "site": s.id,
                "target": s.enrolment_target,
                "activation": pd.Timestamp(s.activation_date),
            }
            for s in protocol.sites
        ]
    )
    plan = pd.DataFrame(
        {
            "start": [pd.Timestamp(protocol.enrolment.start)],
            "end": [pd.Timestamp(protocol.enrolment.end)],
            "target": [protocol.enrolment.target],
            "cutoff": [pd.Timestamp(inputs.cutoff)],
        }
    )
    return Section(
        id="enrolment",
        title="Enrolment against target",
        tables=(
            ReportTable(
                "Enrolment by site",
                pd.DataFrame(rows),
                population="Randomised",
                denominators=(("All sites", total),),
                note="Target: the protocol's enrolment target per site.",
            ),
        ),
        figures=(
            FigureData(
                kind="enrolment",
                title="Cumulative randomisation against target, overall and by site",
                data={"curve": curve, "sites": targets, "plan": plan},
                caption="The dashed line is a linear accrual to the target between the "
                "planned start and end of enrolment (per site: from its activation).",
            ),
        ),
    )


def screen_failure_section(inputs: DsmbInputs) -> Section:
    """Screen failures with reasons, overall and by site."""
    protocol = inputs.protocol
    missing = _missing(inputs, (protocol.eligibility.form,))
    if missing:
        return _unavailable("screen-failures", "Screen failures", missing)
    subjects = inputs.subjects()
    failures = subjects[~subjects["randomized"]]
    labels = _not_randomised_reasons(protocol, failures)
    sites = [s.id for s in protocol.sites]
    order = [r.label for r in protocol.disposition.screen_fail_reasons] + [_PENDING, _UNRECORDED]
    data: dict[str, list[str]] = {"Reason": [], **{s: [] for s in sites}, TOTAL: []}
    n_failed = len(failures)
    for reason in order:
        mask = labels == reason
        if not mask.any():
            continue
        data["Reason"].append(reason)
        for site in sites:
            data[site].append(str(int((mask & (failures["site"] == site)).sum())))
        data[TOTAL].append(_pct(int(mask.sum()), n_failed))
    data["Reason"].append("All screen failures")
    for site in sites:
        data[site].append(str(int((failures["site"] == site).sum())))
    data[TOTAL].append(str(n_failed))
    rate = 100.0 * n_failed / len(subjects) if len(subjects) else 0.0
    return Section(
        id="screen-failures",
        title="Screen failures",
        paragraphs=(
            f"{n_failed} of {len(subjects)} screened participants ({rate:.1f}%) were not "
            "randomised.",
        ),
        tables=(
            ReportTable(
                "Screen failures by reason and site",
                pd.DataFrame(data),
                population="Screen failures",
                denominators=(("Screen failures", n_failed),),
            ),
        ),
    )


def _continuous_rows(
    name: str, values: pd.Series, groups: Sequence[tuple[str, pd.Index]], digits: int = 1
) -> list[list[str]]:
    """n, mean (SD) and median (min, max) of *values* in each group.

    Notes
    -----
    Observed values only (no imputation); the SD uses the n − 1 denominator, as SAS PROC MEANS
    and R's ``sd`` do.
    """
    rows = [[name, *["" for _ in groups]]]
    stats: list[list[str]] = [["  n"], ["  Mean (SD)"], ["  Median (min, max)"]]
    for _, ids in groups:
        v = pd.to_numeric(values.reindex(ids), errors="coerce").dropna().astype(float)
        stats[0].append(str(len(v)))
        if len(v):
            sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
            stats[1].append(f"{v.mean():.{digits}f} ({_fmt_num(sd, digits)})")
            stats[2].append(f"{v.median():.{digits}f} ({v.min():.{digits}f}, {v.max():.{digits}f})")
        else:
            stats[1].append("–")
            stats[2].append("–")
    return rows + stats


def _categorical_rows(
    name: str,
    values: pd.Series,
    labels: Mapping[str, str],
    groups: Sequence[tuple[str, pd.Index]],
) -> list[list[str]]:
    rows = [[name, *["" for _ in groups]]]
    codes = list(labels.keys())
    for code in [*codes, None]:
        row = [f"  {labels[code]}" if code is not None else "  Missing"]
        any_value = False
        for _, ids in groups:
            v = values.reindex(ids)
            count = int(v.isna().sum()) if code is None else int((v == code).fillna(False).sum())
            any_value = any_value or count > 0
            row.append(_pct(count, len(ids)))
        if code is not None or any_value:
            rows.append(row)
    return rows


def baseline_section(inputs: DsmbInputs) -> Section:
    """Baseline characteristics of the randomised participants (by arm when closed)."""
    protocol = inputs.protocol
    missing = _missing(inputs, ("participant", "enrollment"))
    if "enrollment" in missing:
        return _unavailable("baseline", "Baseline characteristics", missing)
    randomised = _randomised(inputs)
    groups = _groups(inputs, randomised)
    rows: list[list[str]] = []
    participant = inputs.table("participant")
    if participant is not None:
        first = participant.drop_duplicates(_KEY).set_index(_KEY)
        first.index = first.index.astype("string")
        rows += _continuous_rows("Age (years)", first["age"], groups)
        rows += _categorical_rows(
            "Sex", _codes(first["sex"]), {"1": "Female", "2": "Male", "3": "Other"}, groups
        )
        if "ethnicity" in first.columns:
            rows += _categorical_rows(
                "Ethnicity",
                _codes(first["ethnicity"]),
                {"1": "Hispanic or Latino", "2": "Not Hispanic or Latino", "3": "Unknown"},
                groups,
            )
        if "prior_ad" in first.columns:
            rows += _categorical_rows(
                "Prior antidepressant use",
                _codes(first["prior_ad"]),
                {"1": "Yes", "0": "No"},
                groups,
            )
    enrollment = inputs.table("enrollment")
    severity = next((f for f in protocol.randomization.stratification if f.recorded_field), None)
    if enrollment is not None and severity is not None and severity.recorded_field:
        first = enrollment.drop_duplicates(_KEY).set_index(_KEY)
        if severity.recorded_field in first.columns:
            rows += _categorical_rows(
                severity.label or severity.id,
                _codes(first[severity.recorded_field]),
                {str(level.code): level.label or level.name for level in severity.levels},
                groups,
            )
    subjects = inputs.subjects()
    rows += _categorical_rows(
        "Site", subjects["site"].astype("string"), {s.id: s.id for s in protocol.sites}, groups
    )
    for instrument, total_field, label in (
        ("hamd17", "hamd_total", "HAM-D-17 total at baseline"),
        ("phq9", "phq9_total", "PHQ-9 total at baseline"),
        ("gad7", "gad7_total", "GAD-7 total at baseline"),
    ):
        frame = inputs.table(instrument)
        if frame is None or total_field not in frame.columns:
            continue
        base = frame[frame[_EVENT] == protocol.endpoints.primary.baseline_event]
        series = base.drop_duplicates(_KEY).set_index(_KEY)[total_field]
        series.index = series.index.astype("string")
        rows += _continuous_rows(label, series, groups)
    return Section(
        id="baseline",
        title="Baseline characteristics",
        tables=(
            _group_table("Baseline characteristics", rows, "Characteristic", groups, "Randomised"),
        ),
        missing=missing,
    )


def _scheduled_visits(protocol: Protocol) -> list[tuple[str, str, int, int]]:
    visits = []
    for visit in protocol.visits:
        if visit.kind in _SCHEDULED and visit.window is not None:
            visits.append((visit.event, visit.label, visit.window.start, visit.window.end))
    return visits


def _visit_status(inputs: DsmbInputs) -> pd.DataFrame:
    """:func:`_derive_visit_status`, computed once per report (two sections read it)."""
    if "visit_status" not in inputs._cache:
        inputs._cache["visit_status"] = _derive_visit_status(inputs)
    status: pd.DataFrame = inputs._cache["visit_status"]
    return status


def _derive_visit_status(inputs: DsmbInputs) -> pd.DataFrame:
    """One row per randomised participant and scheduled visit: due, done, missed, overdue.

    Notes
    -----
    A visit is *due* when its window has closed by the cut-off and the participant had not left
    the study before the window opened. *Done*: a visit form with ``visit_done = 1``; *missed*:
    a visit form with ``visit_done = 0``; *overdue*: due with no visit form at all.
    """
    protocol = inputs.protocol
    subjects = inputs.subjects()
    randomised = subjects[subjects["randomized"]]
    visit = inputs.table("visit")
    done_keys: set[tuple[str, str]] = set()
    missed_keys: set[tuple[str, str]] = set()
    if visit is not None:
        flag = _codes(visit["visit_done"])
        pairs = list(zip(_texts(visit[_KEY]), _texts(visit[_EVENT]), strict=True))
        for pair, value in zip(pairs, _texts(flag), strict=True):
            if value == "1":
                done_keys.add(pair)
            elif value == "0":
                missed_keys.add(pair)
    cutoff = pd.Timestamp(inputs.cutoff)
    left_date = randomised["ds_date"].where(randomised["discontinued_study"].astype(bool))
    records = []
    rand_dates = randomised["rand_date"]
    for event, label, start, end in _scheduled_visits(protocol):
        window_end = rand_dates + pd.to_timedelta(end, unit="D")
        window_start = rand_dates + pd.to_timedelta(start, unit="D")
        due = (window_end < cutoff) & ~(left_date < window_start).fillna(False)
        for record_id, is_due in zip(_texts(randomised.index), due.to_numpy(bool), strict=True):
            key = (record_id, event)
            records.append(
                (
                    record_id,
                    event,
                    label,
                    bool(is_due),
                    key in done_keys,
                    key in missed_keys,
                    bool(is_due) and key not in done_keys and key not in missed_keys,
                )
            )
    return pd.DataFrame(
        records, columns=[_KEY, "event", "label", "due", "done", "missed", "overdue"]
    )


def retention_section(inputs: DsmbInputs) -> Section:
    """Retention and visit completion by scheduled visit."""
    missing = _missing(inputs, ("visit", "enrollment"))
    if missing:
        return _unavailable("retention", "Retention and visit completion", missing)
    status = _visit_status(inputs)
    randomised = _randomised(inputs)
    groups = _groups(inputs, randomised)
    data: dict[str, list[str]] = {"Visit": []}
    for label, ids in groups:
        data[_header(label, len(ids))] = []
    for keys, part in status.groupby(["event", "label"], sort=False):
        data["Visit"].append(str(keys[1]))
        for group_label, ids in groups:
            sub = part[_member(part[_KEY], ids) & part["due"].to_numpy(bool)]
            due = len(sub)
            done = int(sub["done"].sum())
            data[_header(group_label, len(ids))].append(
                f"{done}/{due} ({100.0 * done / due:.1f}%)" if due else "0/0"
            )
    subjects = inputs.subjects().loc[randomised]
    completed = subjects["completed"].astype(bool)
    active = subjects["ds_status"].isna()
    left = subjects["discontinued_study"].astype(bool)
    retained_rows = [
        ("Completed the study", lambda ids: int(completed.reindex(ids).sum())),
        ("Still in follow-up at the cut-off", lambda ids: int(active.reindex(ids).sum())),
        ("Discontinued the study", lambda ids: int(left.reindex(ids).sum())),
    ]
    return Section(
        id="retention",
        title="Retention and visit completion",
        tables=(
            ReportTable(
                "Retention",
                _count_table(retained_rows, groups, first="Status"),
                population="Randomised",
                denominators=_denominators(groups),
            ),
            ReportTable(
                "Scheduled visits done / due",
                pd.DataFrame(data),
                population="Randomised",
                denominators=_denominators(groups),
                note="Due: the visit window closed before the cut-off and the participant had "
                "not left the study before it opened.",
            ),
        ),
    )


def deviations_section(inputs: DsmbInputs) -> Section:
    """Protocol deviations by category (major / minor) and site."""
    protocol = inputs.protocol
    form = protocol.deviations.form
    missing = _missing(inputs, (form,))
    if missing:
        return _unavailable("deviations", "Protocol deviations", missing)
    deviations = inputs.facts().deviations.reset_index(drop=True)
    randomised = _randomised(inputs)
    groups = _groups(inputs, randomised)
    record = deviations["record_id"].astype(str)
    category = deviations["category"].astype("string")
    major = deviations["major"].astype(bool)
    names = {str(c.code): c.name for c in protocol.deviations.categories}
    majors = {str(c.code) for c in protocol.deviations.categories if c.major}
    rows: list[list[str]] = []
    columns = ["Category"]
    for label, ids in groups:
        columns += [f"{_header(label, len(ids))} participants", "events (major)"]
    known = category.isin(list(names)).fillna(False)
    categories = [*names.items()]
    if (~known).any():
        categories.append(("\x00", "Not recorded or unknown"))
    for code, name in [*categories, (None, "All categories")]:
        if code is None:
            mask = pd.Series(True, index=deviations.index)
        elif code == "\x00":
            mask = ~known
        else:
            mask = (category == code).fillna(False)
        if code is not None and not mask.any():
            continue
        row = [name + (" (major by protocol)" if code in majors else "")]
        for label, ids in groups:
            # the total counts every recorded deviation (the facts' count), an arm its members'
            chosen = mask if label == TOTAL else mask & _member(record, ids)
            sub = deviations[chosen.to_numpy(bool)]
            participants = sub["record_id"].nunique()
            row += [_pct(participants, len(ids)), f"{len(sub)} ({int(major[sub.index].sum())})"]
        rows.append(row)
    outside = int((~_member(record, randomised)).sum())
    sites = [s.id for s in protocol.sites]
    site_of = record.map(inputs.subjects()["site"].astype(str).to_dict()).fillna(_site_of(record))
    by_site = pd.DataFrame(
        {
            "Site": [*sites, "All sites"],
            "Deviations": [str(int((site_of == s).sum())) for s in sites] + [str(len(record))],
            "Major": [str(int(((site_of == s) & major).sum())) for s in sites]
            + [str(int(major.sum()))],
            "Participants": [str(record[(site_of == s).to_numpy()].nunique()) for s in sites]
            + [str(record.nunique())],
        }
    )
    note = (
        "Major: the category is declared major in the protocol, or the site recorded the "
        "deviation as major."
    )
    if outside:
        note += (
            f" {outside} deviation(s) of participants not randomised are counted in the total only."
        )
    return Section(
        id="deviations",
        title="Protocol deviations",
        tables=(
            ReportTable(
                "Protocol deviations by category",
                pd.DataFrame(rows, columns=columns),
                population="Randomised",
                denominators=_denominators(groups),
                note=note,
            ),
            ReportTable("Protocol deviations by site", by_site),
        ),
    )


def data_quality_section(inputs: DsmbInputs) -> Section:
    """Missing and overdue forms; open queries and their age by site."""
    protocol = inputs.protocol
    missing = _missing(inputs, ("visit", "enrollment"))
    tables: list[ReportTable] = []
    paragraphs: list[str] = []
    if not missing:
        status = _visit_status(inputs)
        done = status[status["done"]]
        unblinded = set(protocol.blinding.unblinded_forms)
        rows = []
        present_keys: dict[str, set[tuple[str, str]]] = {}
        for visit in protocol.visits:
            if visit.kind not in _SCHEDULED:
                continue
            visits_done = done[done["event"] == visit.event]
            for form in visit.instruments:
                if form in unblinded:
                    continue
                table = inputs.table(form)
                if table is None:
                    rows.append((visit.label, form, len(visits_done), "form not in snapshot", ""))
                    continue
                if form not in present_keys:
                    present_keys[form] = set(
                        zip(_texts(table[_KEY]), _texts(table[_EVENT]), strict=True)
                    )
                present = present_keys[form]
                absent = sum((rid, visit.event) not in present for rid in _texts(visits_done[_KEY]))
                rows.append(
                    (
                        visit.label,
                        form,
                        len(visits_done),
                        str(absent),
                        f"{100.0 * absent / len(visits_done):.1f}%" if len(visits_done) else "–",
                    )
                )
        missing_forms = pd.DataFrame(
            rows, columns=["Visit", "Form", "Visits done", "Forms missing", "% missing"]
        )
        missing_forms = missing_forms[missing_forms["Forms missing"] != "0"]
        missing_forms["Visits done"] = missing_forms["Visits done"].astype(str)
        if missing_forms.empty:
            paragraphs.append("Every expected form is present at every visit done.")
        else:
            tables.append(
                ReportTable(
                    "Forms missing at visits done",
                    missing_forms.reset_index(drop=True),
                    note="Only forms expected at a visit recorded as done are counted.",
                )
            )
        overdue = status[status["overdue"]]
        sites = [s.id for s in protocol.sites]
        site_of = _site_of(overdue[_KEY])
        due_site = _site_of(status.loc[status["due"], _KEY])
        every_site = _site_of(status[_KEY])
        tables.append(
            ReportTable(
                "Overdue visits by site (window closed, no visit form)",
                pd.DataFrame(
                    {
                        "Site": [*sites, "All sites"],
                        "Visits due": [str(int((due_site == s).sum())) for s in sites]
                        + [str(int(status["due"].sum()))],
                        "Overdue": [str(int((site_of == s).sum())) for s in sites]
                        + [str(len(overdue))],
                        "Missed (recorded)": [
                            str(int(((every_site == s) & status["missed"] & status["due"]).sum()))
                            for s in sites
                        ]
                        + [str(int((status["missed"] & status["due"]).sum()))],
                    }
                ),
            )
        )
    findings = inputs.snapshot_findings
    if findings is not None:
        if findings.empty:
            paragraphs.append("The snapshot import raised no finding (every value cast).")
        else:
            counts = (
                findings.assign(
                    instrument=findings["instrument"].astype("string").fillna("").replace("", "–"),
                    check_id=findings["check_id"].astype("string"),
                )
                .groupby(["instrument", "check_id"], sort=True)
                .size()
                .reset_index(name="findings")
            )
            tables.append(
                ReportTable(
                    "Snapshot import findings by form",
                    pd.DataFrame(
                        {
                            "Form": counts["instrument"].astype(str),
                            "Finding": counts["check_id"].astype(str),
                            "Count": counts["findings"].astype(str),
                        }
                    ),
                    note="Values the import could not read as their field type, and similar.",
                )
            )
    queries = inputs.queries
    if queries is None:
        paragraphs.append(
            "No validation query log was supplied (--query-log): open queries are not shown."
        )
    else:
        paragraph, age = _query_age(inputs, queries)
        paragraphs.append(paragraph)
        if age is not None:
            tables.append(
                ReportTable(
                    "Open site queries by site and age",
                    age,
                    note="Open: open, answered or reopened. Age: whole days from the first "
                    f"opening to {_as_of_text(inputs)} (the report's as-of time, not the data "
                    "cut-off). Days to resolution: from opening to closing, closed queries.",
                )
            )
    return Section(
        id="data-quality",
        title="Data quality and timeliness",
        paragraphs=tuple(paragraphs),
        tables=tuple(tables),
        missing=missing,
    )


_AGE_BANDS = ((0, 7, "0-7 days"), (8, 30, "8-30 days"), (31, 90, "31-90 days"))


def _query_age(inputs: DsmbInputs, queries: pd.DataFrame) -> tuple[str, pd.DataFrame | None]:
    """The open-queries paragraph and the site queries' age table, from the facts.

    Status, kind and age are the facts' (:attr:`studyman.facts.StudyFacts.queries`: ages to
    the as-of time, never negative); the site comes from the query log, row for row.
    """
    facts = inputs.facts()
    frame = facts.queries.reset_index(drop=True)
    if len(frame) != len(queries) or (
        len(frame)
        and not (frame["query_id"].to_numpy() == queries["query_id"].astype(str).to_numpy()).all()
    ):
        raise SnapshotError("the facts' queries do not follow the query log row for row")
    headline = facts.headline()
    site_open = int(headline.get("site_queries_open", 0))
    review_open = int(headline.get("review_signals_open", 0))
    frame["site"] = queries["site"].astype("string").fillna("").astype(str).to_numpy()
    site_rows = frame[frame["kind"] == "site"]
    open_rows = site_rows[site_rows["open"].astype(bool)]
    alert = inputs.protocol.reporting.query_age_days_alert
    old = int((open_rows["days_open"] > alert).sum())
    paragraph = (
        f"{site_open} site queries open (open, answered or reopened), {old} of them for more "
        f"than {alert} days; {review_open} review signals open. Ages count to "
        f"{_as_of_text(inputs)}."
    )
    if open_rows.empty and site_rows.empty:
        return paragraph, None
    # days to resolution: the log's own span from opening to closing (no as-of involved)
    closed_days = pd.to_numeric(queries["days_open"], errors="coerce").clip(lower=0)
    closed = (queries["status"].astype(str) == "closed").to_numpy() & (
        frame["kind"] == "site"
    ).to_numpy()
    resolution = pd.Series(closed_days.to_numpy()[closed], index=frame["site"].to_numpy()[closed])
    sites = sorted(set(open_rows["site"]) | set(resolution.index))
    rows = []
    for site in [*sites, None]:
        part = open_rows if site is None else open_rows[open_rows["site"] == site]
        done = resolution if site is None else resolution[resolution.index == site]
        days = part["days_open"].astype(float)
        row = {"Site": "All sites" if site is None else (site or "–")}
        for low, high, label in _AGE_BANDS:
            row[label] = str(int(((days >= low) & (days <= high)).sum()))
        row["over 90 days"] = str(int((days > 90).sum()))
        row["open"] = str(len(part))
        median = float(np.median(days.to_numpy())) if len(part) else None
        row["median days open"] = "" if median is None else f"{median:g}"
        row["median days to resolution"] = (
            f"{float(np.median(done.to_numpy(dtype=float))):g}" if len(done) else ""
        )
        rows.append(row)
    return paragraph, pd.DataFrame(rows)


def exposure_section(inputs: DsmbInputs) -> Section:
    """Exposure and adherence: CBT sessions attended; adjunct doses in a closed session only."""
    protocol = inputs.protocol
    missing = _missing(inputs, ("cbt_sessions",))
    safety = _safety(inputs)
    groups = _groups(inputs, safety)
    tables: list[ReportTable] = []
    paragraphs: list[str] = []
    if not missing:
        subjects = inputs.subjects()
        attended = subjects["cbt_attended"]
        planned = protocol.treatment.cbt_sessions_planned
        threshold = protocol.treatment.adherence_threshold
        rows = _continuous_rows("CBT sessions attended", attended, groups)
        adherent = [
            f"  Adherent (≥{threshold:.0%} of {planned} sessions)",
            *[
                _pct(int((attended.reindex(ids) >= threshold * planned).sum()), len(ids))
                for _, ids in groups
            ],
        ]
        rows.append(adherent)
        tables.append(
            _group_table("CBT sessions attended", rows, "Exposure", groups, "Safety population")
        )
    dosing = inputs.table("dosing")
    if not inputs.closed:
        paragraphs.append(
            "Adjunct dosing is recorded on an unblinded form; it is summarised in the closed "
            "session only."
        )
    elif dosing is None:
        paragraphs.append("The snapshot has no 'dosing' form: adjunct doses are not shown.")
    else:
        doses = inputs.subjects()["doses"].astype(int)
        rows = _continuous_rows("Adjunct doses taken", doses.reindex(safety).fillna(0), groups)
        rows.append(
            [
                "  Participants with any dose",
                *[
                    _pct(int((doses.reindex(ids).fillna(0) > 0).sum()), len(ids))
                    for _, ids in groups
                ],
            ]
        )
        tables.append(
            _group_table("Adjunct doses taken", rows, "Exposure", groups, "Safety population")
        )
    return Section(
        id="exposure",
        title="Exposure and adherence",
        paragraphs=tuple(paragraphs),
        tables=tuple(tables),
        missing=missing,
    )


def _adverse_events(inputs: DsmbInputs) -> pd.DataFrame | None:
    """The treatment-emergent adverse events (the facts' ``teae`` rows), with display columns.

    Treatment emergence, seriousness and a fatal outcome are the facts'
    (:attr:`studyman.facts.StudyFacts.adverse_events`, one row per row of the form, in order).
    """
    protocol = inputs.protocol
    ae_spec = protocol.adverse_events
    frame = inputs.table(ae_spec.form)
    if frame is None:
        return None
    facts = inputs.facts().adverse_events.reset_index(drop=True)
    if len(facts) != len(frame) or (
        len(frame)
        and not (facts["record_id"].to_numpy() == frame[_KEY].astype(str).to_numpy()).all()
    ):
        raise SnapshotError("the facts' adverse events do not follow the form row for row")
    teae = facts["teae"].to_numpy(bool)
    frame = frame.loc[teae].copy()
    pts = {str(t.code): t.pt for t in ae_spec.coding_list}
    socs = {str(s.code): s.name for s in ae_spec.socs}
    frame["PT"] = _codes(frame[ae_spec.pt_field]).map(lambda c: pts.get(str(c), "Uncoded"))
    frame["SOC"] = _codes(frame[ae_spec.soc_field]).map(lambda c: socs.get(str(c), "Uncoded"))
    frame["severity"] = pd.to_numeric(_codes(frame[ae_spec.severity_field]), errors="coerce")
    frame["serious"] = facts.loc[teae, "serious"].to_numpy(bool)
    frame["related"] = _codes(frame[ae_spec.related_field]).isin(
        [str(c) for c in ae_spec.related_codes]
    )
    frame["fatal"] = facts.loc[teae, "fatal"].to_numpy(bool)
    frame["withdrawn"] = (
        _codes(frame["ae_action"]) == "4" if "ae_action" in frame.columns else False
    )
    frame[_KEY] = frame[_KEY].astype("string")
    return frame.reset_index(drop=True)


def _adverse_events_or_unavailable(
    inputs: DsmbInputs, section_id: str, title: str
) -> pd.DataFrame | Section:
    """:func:`_adverse_events`, or the section's "could not be produced" stub without the form."""
    form = inputs.protocol.adverse_events.form
    missing = _missing(inputs, (form,))
    if missing:
        return _unavailable(section_id, title, missing)
    events = _adverse_events(inputs)
    if events is None:
        raise SnapshotError(f"the snapshot has no '{form}' form")
    return events


_SEVERITY = {1: "Mild", 2: "Moderate", 3: "Severe"}


def _teae_rule_text(inputs: DsmbInputs) -> str:
    return dict(rule_texts(inputs.rules))["Treatment-emergent adverse event"]


def _with_group(inputs: DsmbInputs, frame: pd.DataFrame) -> pd.DataFrame:
    """*frame* with a ``_group`` column: the participant's arm label (closed) or the total."""
    frame = frame.copy()
    if inputs.arms is not None:
        frame["_group"] = frame[_KEY].astype(str).map(inputs.arms).astype("string")
    else:
        frame["_group"] = TOTAL
    return frame


def _tally(
    frame: pd.DataFrame, by: str, groups: Sequence[tuple[str, pd.Index]]
) -> dict[tuple[str, str], tuple[int, int]]:
    """(value of *by*, group) → (participants, events) for the rows of *frame*."""
    result: dict[tuple[str, str], tuple[int, int]] = {}
    if frame.empty:
        return result
    grouped = frame.groupby(by, sort=False)[_KEY]
    for value, n in grouped.nunique().items():
        result[(str(value), TOTAL)] = (int(n), 0)
    for value, n in grouped.size().items():
        result[(str(value), TOTAL)] = (result[(str(value), TOTAL)][0], int(n))
    if len(groups) > 1:
        per_arm = frame.groupby([by, "_group"], sort=False)[_KEY]
        sizes = {key: int(n) for key, n in per_arm.size().items()}
        for key, n in per_arm.nunique().items():
            pair: tuple[object, object] = tuple(key)  # type: ignore[arg-type,assignment]
            result[(str(pair[0]), str(pair[1]))] = (int(n), sizes[key])
    return result


def _order_by_total(tally: Mapping[tuple[str, str], tuple[int, int]]) -> list[str]:
    totals = {value: count[0] for (value, group), count in tally.items() if group == TOTAL}
    return sorted(totals, key=lambda value: (-totals[value], value))


def adverse_events_section(inputs: DsmbInputs) -> Section:
    """Adverse events: overview, by SOC and PT, by maximum severity, by relatedness.

    Notes
    -----
    Incidence counts a participant once per term (at the highest severity for the severity
    table); event counts count every event; the denominator is the safety population of each
    column. Adverse events counted are the treatment-emergent ones of the facts (one rule,
    declared in the analysis plan, the same in both sessions).
    """
    protocol = inputs.protocol
    form = protocol.adverse_events.form
    missing = _missing(inputs, (form,))
    if missing:
        return _unavailable("adverse-events", "Adverse events", missing)
    raw = _adverse_events(inputs)
    if raw is None:
        return _unavailable("adverse-events", "Adverse events", (form,))
    events = _with_group(inputs, raw)
    safety = _safety(inputs)
    groups = _groups(inputs, safety)
    sizes = {label: len(ids) for label, ids in groups}

    def cells(
        tally: Mapping[tuple[str, str], tuple[int, int]], value: str, events_too: bool
    ) -> list[str]:
        row: list[str] = []
        for label, _ids in groups:
            participants, count = tally.get((value, label), (0, 0))
            row.append(_pct(participants, sizes[label]))
            if events_too:
                row.append(str(count))
        return row

    # Overview. Deaths and discontinuations are the facts' (one definition each), among the
    # safety population of each column; the withdrawal of study treatment recorded on an AE is
    # not shown here (its code is masked in the open session's view).
    subjects = inputs.subjects()
    died_ids = set(subjects.index[subjects["death"].to_numpy(bool)].astype(str))
    flags = {
        "Any adverse event": pd.Series(True, index=events.index),
        "Any related adverse event": events["related"],
        "Any severe adverse event": events["severity"] == 3,
        "Any serious adverse event": events["serious"],
        "Adverse event with fatal outcome": events["fatal"],
    }
    overview_rows: list[list[str]] = []
    for label, mask in flags.items():
        tally = _tally(events[mask.fillna(False).to_numpy()].assign(_row=label), "_row", groups)
        overview_rows.append([label, *cells(tally, label, False)])
    left_for_ae = set(subjects.index[subjects["discontinued_due_to_ae"].to_numpy(bool)].astype(str))
    overview_rows.append(
        [
            "Discontinued the study due to an adverse event",
            *[_pct(len(left_for_ae & set(ids.astype(str))), len(ids)) for _, ids in groups],
        ]
    )
    overview_rows.append(
        [
            "Death (any cause)",
            *[_pct(len(died_ids & set(ids.astype(str))), len(ids)) for _, ids in groups],
        ]
    )
    all_tally = _tally(events.assign(_row="all"), "_row", groups)
    overview_rows.append(
        [
            "Number of events",
            *[str(all_tally.get(("all", label), (0, 0))[1]) for label, _ in groups],
        ]
    )
    overview = pd.DataFrame(
        overview_rows,
        columns=["Participants with", *[_header(label, n) for label, n in sizes.items()]],
    )

    # By SOC and PT.
    soc_tally = _tally(events, "SOC", groups)
    soc_rows: list[list[str]] = []
    for soc in _order_by_total(soc_tally):
        soc_rows.append([soc, *cells(soc_tally, soc, True)])
        in_soc = events[events["SOC"] == soc]
        pt_tally = _tally(in_soc, "PT", groups)
        for pt in _order_by_total(pt_tally):
            soc_rows.append([f"    {pt}", *cells(pt_tally, pt, True)])
    soc_columns = ["System organ class / Preferred term"]
    for label, n in sizes.items():
        soc_columns += [f"{_header(label, n)} n (%)", "events"]

    # By worst severity (any event, and per PT).
    worst = events.groupby(_KEY, as_index=False).agg(
        severity=("severity", "max"), _group=("_group", "first")
    )
    worst["_sev"] = worst["severity"].map(
        lambda v: _SEVERITY.get(int(v), "") if pd.notna(v) else ""
    )
    sev_tally = _tally(worst, "_sev", groups)
    severity_table = pd.DataFrame(
        [[name, *cells(sev_tally, name, False)] for name in _SEVERITY.values()],
        columns=[
            "Worst severity (any adverse event)",
            *[_header(label, n) for label, n in sizes.items()],
        ],
    )
    pt_worst = events.groupby([_KEY, "PT"], as_index=False).agg(
        severity=("severity", "max"), _group=("_group", "first")
    )
    pt_worst["_sev"] = pt_worst["severity"].map(
        lambda v: _SEVERITY.get(int(v), "") if pd.notna(v) else ""
    )
    # astype: with no events, map keeps the numeric dtype and the text join below would fail
    pt_worst["_cell"] = pt_worst["PT"].astype(str) + "\x1f" + pt_worst["_sev"].astype(str)
    cell_tally = _tally(pt_worst, "_cell", groups)
    pt_sev_rows: list[list[str]] = []
    for pt in _order_by_total(_tally(pt_worst, "PT", groups)):
        row = [pt]
        for label, _ids in groups:
            row.append(
                " / ".join(
                    str(cell_tally.get((f"{pt}\x1f{name}", label), (0, 0))[0])
                    for name in _SEVERITY.values()
                )
            )
        pt_sev_rows.append(row)
    pt_sev_columns = [
        "Preferred term",
        *[f"{_header(label, n)} mild / moderate / severe" for label, n in sizes.items()],
    ]

    # By relatedness (the labels of the session's view: masked codes merged when open).
    related_labels = _choice_labels(inputs, protocol.adverse_events.related_field) or {
        "1": "Not related",
        "2": "Unlikely",
        "3": "Possible",
        "4": "Probable",
        "5": "Definite",
    }
    events["_rel"] = _codes(events[protocol.adverse_events.related_field]).map(
        lambda c: related_labels.get(str(c), "Not recorded")
    )
    rel_tally = _tally(events, "_rel", groups)
    rel_rows = []
    for code, name in [*related_labels.items(), ("", "Not recorded")]:
        if code == "" and not any(key[0] == name for key in rel_tally):
            continue
        kind = (
            "related"
            if code and int(code) in protocol.adverse_events.related_codes
            else ("not related" if code else "missing")
        )
        rel_rows.append([f"{name} ({kind})", *cells(rel_tally, name, False)])
    related_table = pd.DataFrame(
        rel_rows,
        columns=[
            "Relatedness (participants with at least one)",
            *[_header(label, n) for label, n in sizes.items()],
        ],
    )
    related_events = events[events["related"].to_numpy()]
    rel_pt_tally = _tally(related_events, "PT", groups)
    rel_pt_rows = [[pt, *cells(rel_pt_tally, pt, True)] for pt in _order_by_total(rel_pt_tally)]
    rel_pt_columns = ["Preferred term"]
    for label, n in sizes.items():
        rel_pt_columns += [f"{_header(label, n)} n (%)", "events"]
    denominators = _denominators(groups)
    population = "Safety population"
    return Section(
        id="adverse-events",
        title="Adverse events",
        paragraphs=(
            "Treatment-emergent adverse events (see 'Definitions': "
            + _teae_rule_text(inputs)
            + "), coded with the study coding list. Incidence counts a participant once per "
            "term; event counts count every event.",
        ),
        tables=(
            ReportTable("Overview of adverse events", overview, population, denominators),
            ReportTable(
                "Adverse events by system organ class and preferred term",
                pd.DataFrame(soc_rows, columns=soc_columns),
                population,
                denominators,
            ),
            ReportTable("Participants by worst severity", severity_table, population, denominators),
            ReportTable(
                "Participants by preferred term and worst severity",
                pd.DataFrame(pt_sev_rows, columns=pt_sev_columns),
                population,
                denominators,
                note="Each participant counted once per term, at the highest severity.",
            ),
            ReportTable("Adverse events by relatedness", related_table, population, denominators),
            ReportTable(
                "Related adverse events by preferred term",
                pd.DataFrame(rel_pt_rows, columns=rel_pt_columns),
                population,
                denominators,
                note="Related: possible, probable or definite.",
            ),
        ),
    )


def _arm_column(inputs: DsmbInputs, record_ids: pd.Series) -> list[str]:
    arms = inputs.arms if inputs.arms is not None else pd.Series(dtype="string")
    return [str(arms.get(r, "–")) for r in record_ids.astype(str)]


def _fmt_date(value: object) -> str:
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return ""
    try:
        if pd.isna(value):  # type: ignore[call-overload]
            return ""
    except (TypeError, ValueError):
        pass
    stamp = pd.Timestamp(value)  # type: ignore[arg-type]
    if stamp.hour or stamp.minute:
        return stamp.strftime("%Y-%m-%d %H:%M")
    return stamp.strftime("%Y-%m-%d")


def serious_events_section(inputs: DsmbInputs) -> Section:
    """Listings of serious adverse events and of deaths."""
    protocol = inputs.protocol
    ae_spec = protocol.adverse_events
    events = _adverse_events_or_unavailable(inputs, "sae", "Serious adverse events and deaths")
    if isinstance(events, Section):
        return events
    serious = events[events["serious"]].sort_values([_KEY, ae_spec.start_field])
    criteria = {
        "1": "death",
        "2": "life-threatening",
        "3": "hospitalisation",
        "4": "disability",
        "5": "congenital anomaly",
        "6": "important medical event",
    }
    outcome = {
        "1": "recovered",
        "2": "recovering",
        "3": "not recovered",
        "4": "recovered with sequelae",
        "5": "fatal",
        "6": "unknown",
    }
    related = {
        code: label.lower() for code, label in _choice_labels(inputs, ae_spec.related_field).items()
    } or {
        "1": "not related",
        "2": "unlikely",
        "3": "possible",
        "4": "probable",
        "5": "definite",
    }

    def criteria_of(row: pd.Series) -> str:
        found = [
            name
            for code, name in criteria.items()
            if f"{ae_spec.serious_criteria_field}___{code}" in row.index
            and str(row[f"{ae_spec.serious_criteria_field}___{code}"]) == "1"
        ]
        return ", ".join(found) or "not recorded"

    listing = pd.DataFrame(
        {
            "Participant": serious[_KEY].astype(str),
            "Preferred term": serious["PT"].astype(str),
            "Onset": serious[ae_spec.start_field].map(_fmt_date),
            "Severity": serious["severity"].map(
                lambda v: _SEVERITY.get(int(v), "") if pd.notna(v) else ""
            ),
            "Criteria": [criteria_of(row) for _, row in serious.iterrows()],
            "Relatedness": _codes(serious[ae_spec.related_field]).map(
                lambda c: related.get(str(c), "")
            ),
            "Outcome": _codes(serious[ae_spec.outcome_field]).map(
                lambda c: outcome.get(str(c), "")
            ),
        }
    )
    if inputs.closed:
        listing.insert(1, "Arm", _arm_column(inputs, serious[_KEY]))
    subjects = inputs.subjects()
    deaths = subjects[subjects["death"].to_numpy(bool)]
    fatal_pt = events[events["fatal"]].groupby(_KEY)["PT"].agg(lambda s: ", ".join(sorted(set(s))))
    disposition = inputs.table(protocol.disposition.form)
    cause: dict[str, str] = {}
    if disposition is not None and "death_cause" in disposition.columns:
        cause = {
            str(k): str(v)
            for k, v in zip(disposition[_KEY], disposition["death_cause"], strict=True)
            if pd.notna(v)
        }
    death_listing = pd.DataFrame(
        {
            "Participant": deaths.index.astype(str),
            "Date of death": deaths["death_date"].map(_fmt_date),
            "Cause (as recorded)": [cause.get(str(r), "") for r in deaths.index],
            "Fatal adverse event": [str(fatal_pt.get(r, "")) for r in deaths.index],
        }
    )
    if inputs.closed:
        death_listing.insert(1, "Arm", _arm_column(inputs, pd.Series(deaths.index)))
    safety = _safety(inputs)
    groups = _groups(inputs, _randomised(inputs))
    serious_ids = set(serious[_KEY].astype(str))
    death_ids = set(deaths.index.astype(str))
    counts = _count_table(
        [
            (
                "Participants with a serious treatment-emergent adverse event",
                lambda ids: len(serious_ids & set(ids.astype(str))),
            ),
            ("Deaths (any cause)", lambda ids: len(death_ids & set(ids.astype(str)))),
        ],
        groups,
        first="Participants",
    )
    return Section(
        id="sae",
        title="Serious adverse events and deaths",
        paragraphs=(
            f"{len(serious)} serious treatment-emergent adverse events in "
            f"{serious[_KEY].nunique()} participants; "
            f"{len(deaths)} death{'' if len(deaths) == 1 else 's'}.",
        ),
        tables=(
            ReportTable(
                "Serious adverse events and deaths",
                counts,
                "Randomised",
                _denominators(groups),
                note="Deaths: a date of death or the disposition 'death' recorded.",
            ),
            ReportTable(
                "Listing of serious adverse events",
                listing.reset_index(drop=True),
                "Safety population",
                (("Total", len(safety)),),
            ),
            ReportTable("Listing of deaths", death_listing.reset_index(drop=True)),
        ),
    )


def discontinuation_section(inputs: DsmbInputs) -> Section:
    """Discontinuations of the study and of study treatment, and those due to adverse events.

    Notes
    -----
    One definition each, the facts' (:mod:`studyman.facts`): *due to an adverse event* means the
    disposition is the protocol's adverse-event reason. An adverse event whose action withdrew
    study treatment, without that disposition, is a disagreement in the data for validation to
    query; it is shown in the closed listing's last column, never counted here.
    """
    protocol = inputs.protocol
    missing = _missing(inputs, (protocol.disposition.form, protocol.adverse_events.form))
    if len(missing) == 2:
        return _unavailable("discontinuations", "Discontinuations due to adverse events", missing)
    subjects = inputs.subjects()
    events = _adverse_events(inputs)
    due_to_ae = subjects[subjects["discontinued_due_to_ae"].to_numpy(bool)]
    withdrawn_pt: dict[str, str] = {}
    if events is not None and inputs.closed:
        # the action codes are masked in the open session's view: read them in the closed one
        w = events[events["withdrawn"]]
        withdrawn_pt = {
            str(k): str(v)
            for k, v in w.groupby(_KEY)["PT"].agg(lambda s: ", ".join(sorted(set(s)))).items()
        }
    ids = sorted(due_to_ae.index.astype(str))
    listing = pd.DataFrame(
        {
            "Participant": ids,
            "Disposition date": [_fmt_date(subjects.loc[r, "ds_date"]) for r in ids],
            "Discontinued study treatment": [
                "yes" if bool(subjects.loc[r, "discontinued_treatment"]) else "no" for r in ids
            ],
            "Adverse event(s) with action 'withdrawn'": [withdrawn_pt.get(r, "") for r in ids],
        }
    )
    if inputs.closed:
        listing.insert(1, "Arm", _arm_column(inputs, pd.Series(ids, dtype="string")))
    randomised = _randomised(inputs)
    groups = _groups(inputs, randomised)

    def flagged(column: str) -> Callable[[pd.Index], int]:
        chosen = set(subjects.index[subjects[column].to_numpy(bool)].astype(str))
        return lambda g: len(chosen & set(g.astype(str)))

    summary = _count_table(
        [
            ("Discontinued the study (any reason)", flagged("discontinued_study")),
            ("Discontinued study treatment", flagged("discontinued_treatment")),
            ("Discontinued the study due to an adverse event", flagged("discontinued_due_to_ae")),
        ],
        groups,
        first="Participants",
    )
    return Section(
        id="discontinuations",
        title="Discontinuations due to adverse events",
        paragraphs=(
            "Discontinued due to an adverse event: "
            + dict(rule_texts(inputs.rules))["Discontinuation due to an adverse event"]
            + ". Discontinued study treatment: discontinued the study before the end of the "
            f"{protocol.treatment.weeks}-week treatment period.",
        ),
        tables=(
            ReportTable(
                "Discontinuations",
                summary,
                "Randomised",
                _denominators(groups),
            ),
            ReportTable("Listing of discontinuations due to adverse events", listing),
        ),
        missing=missing,
    )


def _safety_form(
    inputs: DsmbInputs, form: str, section_id: str, title: str
) -> tuple[pd.DataFrame, list[tuple[str, pd.Index]]] | Section:
    """The rows of *form* for the safety population and that population's column groups;
    or the section's "could not be produced" stub when the snapshot has no *form*."""
    missing = _missing(inputs, (form,))
    if missing:
        return _unavailable(section_id, title, missing)
    frame = _present(inputs, form)
    safety = _safety(inputs)
    frame = frame[_member(frame[_KEY], safety)]
    return frame, _groups(inputs, safety)


def _visit_labels(protocol: Protocol) -> dict[str, str]:
    return {v.event: v.label for v in protocol.visits}


def suicidality_section(inputs: DsmbInputs) -> Section:
    """AESI suicidality: C-SSRS since last visit over time, PHQ-9 item 9, suicidality AEs."""
    protocol = inputs.protocol
    spec = protocol.cssrs
    found = _safety_form(
        inputs, spec.since_last_form, "aesi-suicidality", "AESI: suicidality (C-SSRS)"
    )
    if isinstance(found, Section):
        return found
    frame, groups = found
    labels = _visit_labels(protocol)
    ideation = pd.Series(False, index=frame.index)
    for f in spec.gate_fields:
        if f in frame.columns:
            ideation |= (_codes(frame[f]) == "1").fillna(False)
    serious_ideation = pd.Series(False, index=frame.index)
    for f in spec.safety_action_required_ideation:
        if f in frame.columns:
            serious_ideation |= (_codes(frame[f]) == "1").fillna(False)
    behaviour = pd.Series(False, index=frame.index)
    for f in spec.behaviour_fields:
        if f in frame.columns:
            behaviour |= (_codes(frame[f]) == "1").fillna(False)
    flags = pd.DataFrame(
        {
            _KEY: frame[_KEY].astype(str),
            "event": frame[_EVENT].astype(str),
            "ideation": ideation,
            "serious_ideation": serious_ideation,
            "behaviour": behaviour,
        }
    )
    present = set(flags["event"].unique().tolist())
    order = [v.event for v in protocol.visits if v.event in present]
    rows: list[list[str]] = []
    curve_rows = []
    for event in order:
        at = flags[flags["event"] == event]
        row = [labels.get(event, event)]
        for label, ids in groups:
            sub = at[_member(at[_KEY], ids)]
            n = len(sub)
            ide = int(sub["ideation"].sum())
            ser = int((sub["serious_ideation"] | sub["behaviour"]).sum())
            row.append(f"{n}: {ide} / {ser}")
            curve_rows.append(
                {
                    "event": labels.get(event, event),
                    "order": order.index(event),
                    "group": label,
                    "assessed": n,
                    "ideation": ide,
                    "serious": ser,
                }
            )
        rows.append(row)
    per_participant = flags.groupby(_KEY)[["ideation", "serious_ideation", "behaviour"]].any()
    summary_rows = [
        (
            "Any suicidal ideation (since-last-visit C-SSRS)",
            lambda ids: int(
                per_participant["ideation"].reindex(ids.astype(str)).fillna(False).sum()
            ),
        ),
        (
            "Ideation type 4 or 5",
            lambda ids: int(
                per_participant["serious_ideation"].reindex(ids.astype(str)).fillna(False).sum()
            ),
        ),
        (
            "Any suicidal behaviour",
            lambda ids: int(
                per_participant["behaviour"].reindex(ids.astype(str)).fillna(False).sum()
            ),
        ),
    ]
    phq = inputs.table("phq9")
    if phq is not None and "phq9_9" in phq.columns:
        item9 = phq[(pd.to_numeric(phq["phq9_9"], errors="coerce") >= 1).fillna(False).to_numpy()]
        item9_ids = set(item9[_KEY].astype(str))
        summary_rows.append(
            (
                "PHQ-9 item 9 scored 1 or more (any visit)",
                lambda ids: len(item9_ids & set(ids.astype(str))),
            )
        )
    events = _adverse_events(inputs)
    if events is not None:
        aesi = _codes(events[protocol.adverse_events.aesi_field]) == "1"
        aesi_ids = set(events.loc[aesi.fillna(False).to_numpy(), _KEY].astype(str))
        summary_rows.append(
            (
                "Adverse event recorded as suicidality AESI",
                lambda ids: len(aesi_ids & set(ids.astype(str))),
            )
        )
    return Section(
        id="aesi-suicidality",
        title="AESI: suicidality (C-SSRS)",
        tables=(
            ReportTable(
                "Participants with suicidality findings",
                _count_table(summary_rows, groups, first="Participants with"),
                "Safety population",
                _denominators(groups),
            ),
            _group_table(
                "C-SSRS since last visit by visit",
                rows,
                "Visit",
                groups,
                "Safety population",
                note="Cells: assessed: any ideation / ideation type 4–5 or any behaviour.",
            ),
        ),
        figures=(
            FigureData(
                kind="cssrs",
                title="C-SSRS since last visit: participants with findings by visit",
                data={"curve": pd.DataFrame(curve_rows)},
                caption="Percentage of participants assessed at each visit.",
            ),
        ),
    )


def _band_of(value: float, bands: Sequence[tuple[str, float, float]]) -> str:
    for name, low, high in bands:
        if low <= value <= high:
            return name
    return "out of range"


def withdrawal_section(inputs: DsmbInputs) -> Section:
    """AESI withdrawal: COWS totals by band at taper and follow-up."""
    protocol = inputs.protocol
    spec = protocol.withdrawal
    found = _safety_form(inputs, spec.instrument, "aesi-withdrawal", "AESI: withdrawal (COWS)")
    if isinstance(found, Section):
        return found
    frame, groups = found
    scoring = next((s for s in protocol.scoring if s.instrument == spec.instrument), None)
    bands = [(b.name, b.min, b.max) for b in scoring.bands] if scoring else []
    totals = pd.to_numeric(frame[spec.total_field], errors="coerce")
    labels = _visit_labels(protocol)
    rows: list[list[str]] = []
    bars = []
    for event in spec.events:
        at = frame[frame[_EVENT] == event]
        at_totals = totals[at.index]
        for name, _low, _high in bands:
            row = [f"{labels.get(event, event)}: {name}"]
            for label, ids in groups:
                in_group = _member(at[_KEY], ids)
                values = at_totals[in_group].dropna()
                count = int(sum(_band_of(float(v), bands) == name for v in values))
                row.append(_pct(count, len(values)))
                bars.append(
                    {
                        "event": labels.get(event, event),
                        "band": name,
                        "group": label,
                        "count": count,
                    }
                )
            rows.append(row)
        row = [f"{labels.get(event, event)}: assessed"]
        for _, ids in groups:
            in_group = _member(at[_KEY], ids)
            row.append(str(int(at_totals[in_group].notna().sum())))
        rows.append(row)
    high = frame.loc[(totals >= spec.aesi_threshold).fillna(False).to_numpy()]
    listing = pd.DataFrame(
        {
            "Participant": high[_KEY].astype(str),
            "Visit": high[_EVENT].map(lambda e: labels.get(str(e), str(e))),
            "COWS total": totals[high.index].map(lambda v: f"{v:g}"),
            "Band": totals[high.index].map(lambda v: _band_of(float(v), bands)),
        }
    )
    if inputs.closed:
        listing.insert(1, "Arm", _arm_column(inputs, high[_KEY]))
    return Section(
        id="aesi-withdrawal",
        title="AESI: withdrawal (COWS)",
        paragraphs=(
            "COWS bands: "
            + "; ".join(f"{name} {low:g}–{high:g}" for name, low, high in bands)
            + f". A total of {spec.aesi_threshold:g} or more is reviewed as a possible "
            "withdrawal AESI.",
        ),
        tables=(
            _group_table(
                "COWS total by band",
                rows,
                "Visit: band",
                groups,
                "Safety population",
                note="Percentages of participants assessed at the visit.",
            ),
            ReportTable(
                f"Participants with a COWS total of {spec.aesi_threshold:g} or more",
                listing.reset_index(drop=True),
            ),
        ),
        figures=(
            FigureData(
                kind="cows",
                title="COWS bands at taper and follow-up",
                data={"bars": pd.DataFrame(bars)},
            ),
        ),
    )


def liver_section(inputs: DsmbInputs) -> Section:
    """AESI liver injury: peak ALT/AST/bilirubin against ULN, eDISH plot, potential Hy's law."""
    protocol = inputs.protocol
    spec = protocol.liver
    found = _safety_form(inputs, spec.form, "aesi-liver", "AESI: liver injury and Hy's law")
    if isinstance(found, Section):
        return found
    frame, groups = found
    tests = {t.id: t for t in spec.tests}
    hy = spec.hys_law
    post = frame[frame[_EVENT] != "screening_arm_1"].copy()
    ratios = pd.DataFrame({_KEY: post[_KEY].astype(str), "event": post[_EVENT].astype(str)})
    for test_id, test in tests.items():
        ratios[test_id] = pd.to_numeric(post[test.field], errors="coerce").astype(float) / test.uln
    ratios["date"] = post[spec.date_field].map(_fmt_date)
    trans = ratios[list(hy.transaminases)].max(axis=1)
    ratios["transaminase"] = trans
    peak = ratios.groupby(_KEY)[["transaminase", hy.bilirubin]].max()
    hys = ratios[
        (ratios["transaminase"] > hy.transaminase_multiple)
        & (ratios[hy.bilirubin] > hy.bilirubin_multiple)
        & ~(ratios[hy.alp] > hy.alp_max_multiple)
    ]
    labels = _visit_labels(protocol)
    listing = pd.DataFrame(
        {
            "Participant": hys[_KEY],
            "Visit": hys["event"].map(lambda e: labels.get(e, e)),
            "Sample date": hys["date"],
            **{f"{t} ×ULN": hys[t].map(lambda v: _fmt_num(float(v), 2)) for t in tests},
        }
    )
    if inputs.closed:
        listing.insert(1, "Arm", _arm_column(inputs, hys[_KEY]))
    per = ratios.groupby(_KEY)
    alert = spec.transaminase_alert_multiple
    peaks = per[list(tests)].max()
    hy_ids = set(hys[_KEY])
    rows = [
        (
            f"ALT > {alert:g}×ULN",
            lambda ids: int((peaks["ALT"].reindex(ids.astype(str)) > alert).sum()),
        )
        if "ALT" in peaks.columns
        else None,
        (
            f"AST > {alert:g}×ULN",
            lambda ids: int((peaks["AST"].reindex(ids.astype(str)) > alert).sum()),
        )
        if "AST" in peaks.columns
        else None,
        (
            f"Total bilirubin > {hy.bilirubin_multiple:g}×ULN",
            lambda ids: int(
                (peaks[hy.bilirubin].reindex(ids.astype(str)) > hy.bilirubin_multiple).sum()
            ),
        ),
        ("Potential Hy's law case", lambda ids: len(hy_ids & set(ids.astype(str)))),
        (
            "With a post-baseline liver test",
            lambda ids: int(_member(peaks.index, ids).sum()),
        ),
    ]
    count_rows = [r for r in rows if r is not None]
    edish = peak.reset_index().rename(columns={hy.bilirubin: "bilirubin"})
    if inputs.closed:
        edish["group"] = _arm_column(inputs, edish[_KEY])
    else:
        edish["group"] = TOTAL
    return Section(
        id="aesi-liver",
        title="AESI: liver injury and Hy's law",
        paragraphs=(
            f"Potential Hy's law case: {' or '.join(hy.transaminases)} > "
            f"{hy.transaminase_multiple:g}×ULN and total bilirubin > {hy.bilirubin_multiple:g}×ULN "
            f"without ALP > {hy.alp_max_multiple:g}×ULN, in the same sample. ULNs: "
            + ", ".join(f"{t.id} {t.uln:g} {t.unit}" for t in spec.tests)
            + ".",
        ),
        tables=(
            ReportTable(
                "Liver test abnormalities after randomisation",
                _count_table(count_rows, groups, first="Participants with"),
                "Safety population",
                _denominators(groups),
            ),
            ReportTable("Potential Hy's law cases", listing.reset_index(drop=True)),
        ),
        figures=(
            FigureData(
                kind="edish",
                title="eDISH: peak transaminase against peak total bilirubin (×ULN)",
                data={"points": edish},
                caption=f"Log axes; reference lines at {hy.transaminase_multiple:g}×ULN "
                f"(ALT or AST) and {hy.bilirubin_multiple:g}×ULN (bilirubin). The upper right "
                "quadrant holds potential Hy's law cases.",
            ),
        ),
    )


def conmeds_section(inputs: DsmbInputs) -> Section:
    """Concomitant medications of interest (interacting or prohibited classes)."""
    protocol = inputs.protocol
    spec = protocol.concomitant_medications
    found = _safety_form(inputs, spec.form, "conmeds", "Concomitant medications of interest")
    if isinstance(found, Section):
        return found
    frame, groups = found
    subjects = inputs.subjects()
    rand = subjects["rand_date"]
    rand.index = rand.index.astype(str)
    start = pd.to_datetime(frame[spec.start_field])
    stop = pd.to_datetime(frame[spec.stop_field])
    rdate = _per_record(frame[_KEY], rand)
    ongoing = (_codes(frame[spec.ongoing_field]) == "1").fillna(False)
    on_study = (ongoing | (stop >= rdate).fillna(False)).to_numpy()
    started_after = (start > rdate).fillna(False).to_numpy()
    classes = _codes(frame[spec.class_field])
    rows = []
    rule_text = {
        "stable_dose": "stable dose required",
        "of_interest": "of interest",
        "prohibited": "prohibited",
    }
    for cls in spec.classes:
        if cls.rule == "allowed":
            continue
        mask = (classes == str(cls.code)).fillna(False).to_numpy()
        on = set(frame.loc[mask & on_study, _KEY].astype(str))
        new = set(frame.loc[mask & started_after, _KEY].astype(str))
        rows.append(
            (
                f"{cls.name} ({rule_text[cls.rule]}): taken on study",
                (lambda s: lambda ids: len(s & set(ids.astype(str))))(on),
            )
        )
        rows.append(
            (
                f"{cls.name}: started after randomisation",
                (lambda s: lambda ids: len(s & set(ids.astype(str))))(new),
            )
        )
    return Section(
        id="conmeds",
        title="Concomitant medications of interest",
        paragraphs=(
            "Classes that may interact with the study treatment (serotonergic antidepressants, "
            "benzodiazepines and other CNS depressants) and prohibited classes.",
        ),
        tables=(
            ReportTable(
                "Participants taking concomitant medications of interest",
                _count_table(rows, groups, first="Class"),
                "Safety population",
                _denominators(groups),
            ),
        ),
    )


def reporting_timeliness_section(inputs: DsmbInputs) -> Section:
    """Safety reporting timeliness against every protocol clock (from site awareness).

    Notes
    -----
    Which events each clock applies to, and its day 0, follow :mod:`studyman.protocol.clocks`
    (the same rules as the validation checks): SAE = serious; SUSAR = serious, suspected and
    unexpected (fatal or life-threatening by the death/life-threatening criteria or a fatal
    outcome); suicide death = fatal outcome with the suicidality AESI; unanticipated problem = the
    investigator's judgement. Each event is on time, late, missing (no report although the
    deadline passed before the end of the cut-off day) or not yet due. Counts are pooled over
    arms in both sessions: the table reads no arm.
    """
    protocol = inputs.protocol
    ae_spec = protocol.adverse_events
    events = _adverse_events_or_unavailable(inputs, "timeliness", "SAE reporting timeliness")
    if isinstance(events, Section):
        return events
    as_of = clock_reading_time(inputs.cutoff)
    aware = pd.to_datetime(events[ae_spec.awareness_field])
    start = clock_start(
        aware,
        pd.to_datetime(events[ae_spec.start_field]),
        events["serious"].to_numpy(dtype=bool),
    )

    def codes(name: str) -> np.ndarray:
        if name not in events.columns:
            return np.full(len(events), "", dtype=object)
        return np.asarray(_codes(events[name]).fillna("").to_numpy(dtype=object), dtype=object)

    rows = []
    late_rows = []
    for clock in protocol.reporting_clocks:
        field = clock_report_field(clock, ae_spec)
        applies = clock_applies(clock, ae_spec, codes)
        reason = clock_unassessable_reason(clock, ae_spec)
        if field is None or applies is None or field not in events.columns:
            rows.append(
                {
                    "Clock": clock.label,
                    "Limit (hours)": str(clock.limit_hours),
                    "Cases": "not assessable",
                    "On time": "–",
                    "Late": "–",
                    "Missing (past due)": "–",
                    "Not yet due": "–",
                    "Median hours": "–",
                    "Note": reason or f"the snapshot has no '{field}' column",
                }
            )
            continue
        sent = pd.to_datetime(events[field])
        hours, status = clock_status(start, sent, clock.limit_hours, as_of)
        picked = np.flatnonzero(applies)
        h = pd.Series(hours[picked], dtype="float64")
        st = status[picked]
        no_start = int((st == "no_start").sum())
        rows.append(
            {
                "Clock": clock.label,
                "Limit (hours)": str(clock.limit_hours),
                "Cases": str(len(picked)),
                "On time": str(int((st == "on_time").sum())),
                "Late": str(int((st == "late").sum())),
                "Missing (past due)": str(int((st == "missing").sum())),
                "Not yet due": str(int((st == "not_yet_due").sum())),
                "Median hours": _fmt_num(float(h.median()), 1) if h.notna().any() else "–",
                "Note": f"{no_start} without an awareness date" if no_start else "",
            }
        )
        for index in picked[np.isin(status[picked], ["late", "missing", "no_start"])]:
            late_rows.append(
                {
                    "Clock": clock.label,
                    "Participant": str(events.loc[index, _KEY]),
                    "Preferred term": str(events.loc[index, "PT"]),
                    "Aware": _fmt_date(aware[index]),
                    "Reported": _fmt_date(sent[index]),
                    "Hours": _fmt_num(float(hours[index]), 1),
                    "Status": {"late": "late", "missing": "missing", "no_start": "undated"}[
                        str(status[index])
                    ],
                }
            )
    tables = [
        ReportTable(
            "Reporting clocks",
            pd.DataFrame(rows),
            note=(
                "Day 0 is the site's awareness date and time, not the onset (the onset date for "
                "a non-serious unanticipated problem). Missing: no report although the deadline "
                f"passed by the end of {inputs.cutoff.isoformat()}; not yet due: the deadline "
                "falls after it."
            ),
        )
    ]
    if late_rows:
        tables.append(ReportTable("Late, missing or undated reports", pd.DataFrame(late_rows)))
    return Section(id="timeliness", title="SAE reporting timeliness", tables=tuple(tables))


def efficacy_section(inputs: DsmbInputs) -> Section:
    """Efficacy: only in a closed session and only when the plan prespecifies an interim look."""
    protocol = inputs.protocol
    if not inputs.interim_efficacy:
        return Section(
            id="efficacy",
            title="Efficacy",
            paragraphs=(
                "The analysis plan prespecifies no interim efficacy look for the DSMB: no "
                "efficacy data are shown.",
            ),
        )
    if not inputs.closed:
        return Section(
            id="efficacy",
            title="Efficacy",
            paragraphs=("Interim efficacy data are shown in the closed session only.",),
        )
    endpoint = protocol.endpoints.primary
    missing = _missing(inputs, (endpoint.instrument,))
    if missing:
        return _unavailable("efficacy", "Efficacy", missing)
    frame = _present(inputs, endpoint.instrument)
    randomised = _randomised(inputs)
    groups = _groups(inputs, randomised)
    values = frame[[_KEY, _EVENT, endpoint.field]].copy()
    values[_KEY] = values[_KEY].astype(str)
    base = values[values[_EVENT] == endpoint.baseline_event].set_index(_KEY)[endpoint.field]
    values["change"] = pd.to_numeric(values[endpoint.field], errors="coerce") - values[_KEY].map(
        base
    ).astype(float)
    labels = _visit_labels(protocol)
    rows = []
    for visit in protocol.visits:
        if visit.kind not in ("treatment", "end_of_treatment", "follow_up"):
            continue
        at = values[values[_EVENT] == visit.event].set_index(_KEY)["change"]
        row = [labels[visit.event]]
        for _, ids in groups:
            v = at.reindex(ids.astype(str)).dropna().astype(float)
            row.append(
                f"{len(v)}: {v.mean():.1f} ({_fmt_num(float(v.std(ddof=1)), 1)})"
                if len(v) > 1
                else f"{len(v)}"
            )
        rows.append(row)
    return Section(
        id="efficacy",
        title="Efficacy (prespecified interim look)",
        tables=(
            _group_table(
                f"{endpoint.name}: observed change from baseline",
                rows,
                "Visit",
                groups,
                "Randomised",
                note="Cells: n: mean (SD). Descriptive; the prespecified model is run by "
                "'studyman analyze'.",
            ),
        ),
    )


SECTION_BUILDERS: tuple[Callable[[DsmbInputs], Section], ...] = (
    summary_section,
    definitions_section,
    study_status_section,
    enrolment_section,
    screen_failure_section,
    baseline_section,
    retention_section,
    deviations_section,
    data_quality_section,
    exposure_section,
    adverse_events_section,
    serious_events_section,
    discontinuation_section,
    suicidality_section,
    withdrawal_section,
    liver_section,
    conmeds_section,
    reporting_timeliness_section,
    efficacy_section,
)


_HEADINGS: dict[str, tuple[str, str]] = {
    "summary_section": ("summary", "Summary and protocol synopsis"),
    "definitions_section": ("definitions", "Definitions"),
    "study_status_section": ("status", "Study status"),
    "enrolment_section": ("enrolment", "Enrolment against target"),
    "screen_failure_section": ("screen-failures", "Screen failures"),
    "baseline_section": ("baseline", "Baseline characteristics"),
    "retention_section": ("retention", "Retention and visit completion"),
    "deviations_section": ("deviations", "Protocol deviations"),
    "data_quality_section": ("data-quality", "Data quality and timeliness"),
    "exposure_section": ("exposure", "Exposure and adherence"),
    "adverse_events_section": ("adverse-events", "Adverse events"),
    "serious_events_section": ("sae", "Serious adverse events and deaths"),
    "discontinuation_section": ("discontinuations", "Discontinuations due to adverse events"),
    "suicidality_section": ("aesi-suicidality", "AESI: suicidality (C-SSRS)"),
    "withdrawal_section": ("aesi-withdrawal", "AESI: withdrawal (COWS)"),
    "liver_section": ("aesi-liver", "AESI: liver injury and Hy's law"),
    "conmeds_section": ("conmeds", "Concomitant medications of interest"),
    "reporting_timeliness_section": ("timeliness", "SAE reporting timeliness"),
    "efficacy_section": ("efficacy", "Efficacy"),
}


def _participant_ids(inputs: DsmbInputs) -> frozenset[str]:
    ids: set[str] = set()
    for frame in inputs.tables.values():
        if _KEY in frame.columns:
            ids.update(str(value) for value in frame[_KEY].dropna())
    return frozenset(ids)


def withhold_listings(section: Section, participant_ids: frozenset[str]) -> Section:
    """The open session's gate: *section* without any table that names a participant.

    A per-participant listing (a ``Participant`` column, or any cell holding a record ID) of
    events whose frequency may differ by arm lets a reader of the open session infer who is in
    which arm; the open session gives pooled counts only, the closed report the listings.
    """
    kept: list[ReportTable] = []
    withheld: list[str] = []
    for table in section.tables:
        frame = table.frame
        names = "Participant" in frame.columns
        if not names and participant_ids and not frame.empty:
            cells = frame.astype("string").to_numpy().ravel()
            names = any(str(cell) in participant_ids for cell in cells)
        if names:
            withheld.append(table.title)
        else:
            kept.append(table)
    if not withheld:
        return section
    note = (
        f"{'; '.join(withheld)}: in the closed report only. The open session gives pooled "
        "counts; a listing of participants could let its readers infer allocation."
    )
    return dataclasses.replace(section, tables=tuple(kept), paragraphs=(*section.paragraphs, note))


def build_sections(inputs: DsmbInputs) -> list[Section]:
    """Every section of the report, in order.

    A section whose form lacks a field it needs (an older data dictionary, a renamed field)
    says which field is missing; the other sections are still produced. In an open session
    no table names a participant (:func:`withhold_listings`).
    """
    sections = []
    ids = frozenset() if inputs.closed else _participant_ids(inputs)
    for builder in SECTION_BUILDERS:
        try:
            section = builder(inputs)
            sections.append(section if inputs.closed else withhold_listings(section, ids))
        except KeyError as error:
            section_id, title = _HEADINGS.get(
                builder.__name__, (builder.__name__, builder.__name__)
            )
            sections.append(
                Section(
                    id=section_id,
                    title=title,
                    paragraphs=(
                        f"This section could not be produced: the field {error} is missing "
                        "from the snapshot.",
                    ),
                    missing=(str(error).strip("'"),),
                )
            )
    return sections


def _slug(text: str) -> str:
    words = "".join(c.lower() if c.isalnum() else " " for c in text).split()
    return "-".join(words) or "table"


def table_id(section: Section, table: ReportTable) -> str:
    """A table's stable id: its section's id and the slug of its title (``adverse-events.
    overview-of-adverse-events``); the same in the HTML (anchor) and the report's JSON."""
    return f"{section.id}.{_slug(table.title)}"


def table_ids(sections: Sequence[Section]) -> list[list[str]]:
    """:func:`table_id` of every table, section by section, made unique by a ``-2``, ``-3``
    suffix when two tables of a section share a title."""
    seen: dict[str, int] = {}
    result: list[list[str]] = []
    for section in sections:
        ids = []
        for table in section.tables:
            identifier = table_id(section, table)
            seen[identifier] = seen.get(identifier, 0) + 1
            ids.append(identifier if seen[identifier] == 1 else f"{identifier}-{seen[identifier]}")
        result.append(ids)
    return result


def _footnote(table: ReportTable) -> str:
    parts = []
    if table.denominators:
        parts.append(
            f"Denominators ({table.population or 'participants'}): "
            + "; ".join(f"{label} N = {n}" for label, n in table.denominators)
            + "."
        )
    if table.note:
        parts.append(table.note)
    return " ".join(parts)


def report_data(sections: Sequence[Section], facts: StudyFacts) -> dict[str, Any]:
    """The report as data: ``{"facts": headline, "tables": [{"id", "title", "columns", "rows",
    "footnote"}]}``, every table as shown (cells as text), in report order.

    The open session's sections are already pooled and its facts blinded, so nothing in it is
    per arm.
    """
    tables: list[dict[str, Any]] = []
    for section, identifiers in zip(sections, table_ids(sections), strict=True):
        for table, identifier in zip(section.tables, identifiers, strict=True):
            frame = table.frame
            tables.append(
                {
                    "id": identifier,
                    "title": table.title,
                    "columns": [str(column) for column in frame.columns],
                    "rows": [
                        ["" if value is None else str(value) for value in row]
                        for row in frame.itertuples(index=False, name=None)
                    ],
                    "footnote": _footnote(table),
                }
            )
    return {"facts": facts.headline(), "tables": tables}
