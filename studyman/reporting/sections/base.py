"""What every section is made of: the report's table, figure and section types, the
inputs (:class:`DsmbInputs`), the per-participant table and the small helpers the sections share."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from studyman.errors import SnapshotError
from studyman.facts import (
    DEFAULT_RULES,
    SCHEDULED_KINDS,
    FactRules,
    StudyFacts,
    derive_facts,
    redcap_codes,
)
from studyman.protocol.models import Protocol
from studyman.sources.blinding import blind_dictionary

if TYPE_CHECKING:
    from studyman.analysis.sap import AnalysisPlan
    from studyman.protocol.dsmb_history import DsmbHistory

TOTAL = "Total"


_EVENT = "redcap_event_name"


_SCHEDULED = SCHEDULED_KINDS  # the visits whose completion is followed, as the facts count them


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
class SectionSpec:
    """What a section module declares: its anchor, heading, table ids and builder.

    Attributes
    ----------
    id, title
        The section's anchor and heading (the heading also of the note that replaces the
        section when it cannot be produced).
    table_ids
        Every table id the section can show (:func:`studyman.reporting.dsmb.table_id`), so
        that a table is found, and its id kept stable, by reading one module.
    build
        The pure builder: :class:`DsmbInputs` in, :class:`Section` out.
    """

    id: str
    title: str
    table_ids: tuple[str, ...]
    build: Callable[[DsmbInputs], Section]


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
    plan
        The analysis plan when one was supplied (its interim looks), else None.
    arm_labels
        Closed session: the protocol's arm name → its displayed label; empty when open.
    dsmb_history
        The study's ``dsmb-history.yaml`` (:mod:`studyman.protocol.dsmb_history`), or None.
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
    plan: AnalysisPlan | None = None
    arm_labels: Mapping[str, str] = field(default_factory=dict)
    dsmb_history: DsmbHistory | None = None
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> str:
        """The record-ID field (``protocol.study.record_id_field``): every table's key."""
        return self.protocol.study.record_id_field

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


_codes = redcap_codes  # read codes exactly as the facts do


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


def _field_label(inputs: DsmbInputs, field_name: str) -> str:
    """The dictionary's label of *field_name*, else the name itself."""
    project = inputs.protocol.redcap
    spec = project.dictionary.get(field_name) if project is not None else None
    return spec.field_label.strip() if spec is not None and spec.field_label.strip() else field_name


def _form_of(inputs: DsmbInputs, field_name: str) -> str:
    """The form that holds *field_name*: the REDCap dictionary's, else the first snapshot
    table with that column, else "" (no such field in this study)."""
    project = inputs.protocol.redcap
    spec = project.dictionary.get(field_name) if project is not None else None
    if spec is not None:
        return spec.form_name
    for name, frame in inputs.tables.items():
        if field_name in frame.columns:
            return name
    return ""


def _participant_form(inputs: DsmbInputs) -> str:
    """The participant form: the one that holds the consent date (``enrolment``)."""
    return _form_of(inputs, inputs.protocol.enrolment.consent_date_field)


def _enrolment_form(inputs: DsmbInputs) -> str:
    """The enrolment form: the one that holds the randomised flag (``randomization``)."""
    return _form_of(inputs, inputs.protocol.randomization.randomized_field)


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


def _scale_label(protocol: Protocol, instrument: str) -> str:
    """How a report names the scale of *instrument*: its scoring label, else the form's label,
    else the instrument's name (``COWS`` in the reference study)."""
    scoring = next((s for s in protocol.scoring if s.instrument == instrument), None)
    if scoring is not None and scoring.label:
        return scoring.label
    form = next((i for i in protocol.instruments if i.name == instrument), None)
    return form.label if form is not None and form.label else instrument


def _does_not_apply(section_id: str, title: str, what: str) -> Section:
    """The section of a form or scale the protocol does not declare (a study without it)."""
    return Section(
        id=section_id,
        title=title,
        paragraphs=(f"Does not apply: the protocol declares no {what}.",),
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


#: The columns of the facts' per-participant table that :func:`subjects_table` carries.
_SUBJECT_FACTS = (
    "screening_date",
    "is_eligible",
    "randomised",
    "randomisation_date",
    "sessions",
    "doses",
    "treated",
    "disposition_code",
    "disposition_label",
    "disposition_date",
    "completed",
    "discontinued_study",
    "discontinued_treatment",
    "discontinued_due_to_ae",
    "death",
    "date_of_death",
    "major_deviation",
)


def subjects_table(inputs: DsmbInputs) -> pd.DataFrame:
    """One row per screened participant (index: the record ID, as text), read from the facts.

    Columns: the facts of :attr:`studyman.facts.StudyFacts.subjects` the sections use, under
    the facts layer's names (``site``, ``screening_date``, ``is_eligible``, ``randomised``,
    ``randomisation_date``, ``sessions``, ``doses``, ``treated``, ``disposition_code``,
    ``disposition_label``, ``disposition_date``, ``completed``, ``discontinued_study``,
    ``discontinued_treatment``, ``discontinued_due_to_ae``, ``death``, ``date_of_death``,
    ``major_deviation``), and
    ``safety`` (the plan's safety population) and ``screen_fail_code`` (the recorded
    screen-failure reason code, not a fact).
    """
    facts = inputs.facts().subjects
    index = pd.Index(facts.index.astype(str), name=inputs.key, dtype="string")
    subjects = pd.DataFrame(index=index)
    subjects["site"] = pd.Series(facts["site"].to_numpy(), index=index, dtype="string")
    for column in _SUBJECT_FACTS:
        subjects[column] = facts[column].to_numpy()
    safety_rule = inputs.rules.population("safety")
    subjects["safety"] = (
        facts[f"population_{safety_rule.name}"].to_numpy(bool)
        if safety_rule is not None
        else (facts["randomised"] & facts["treated"]).to_numpy(bool)
    )
    eligibility = inputs.table(inputs.protocol.eligibility.form)
    reason = inputs.protocol.eligibility.screen_fail_reason_field
    if eligibility is not None and reason in eligibility.columns:
        first = eligibility.drop_duplicates(inputs.key).set_index(inputs.key)
        first.index = first.index.astype(str)
        subjects["screen_fail_code"] = _codes(first[reason]).reindex(index.astype(str)).to_numpy()
    else:
        subjects["screen_fail_code"] = pd.Series(pd.NA, index=index, dtype="string")
    return subjects


def _randomised(inputs: DsmbInputs) -> pd.Index:
    subjects = inputs.subjects()
    return subjects.index[subjects["randomised"].to_numpy()]


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
