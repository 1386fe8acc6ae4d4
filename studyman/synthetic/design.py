"""What the generator needs to know about a study, in one frozen object.

:class:`StudyDesign` is the generator's view of a protocol plus its REDCap project: sites and
targets, the visit schedule, which forms are due at which event, the data dictionary (field order,
choices, ranges), the liver-test ULNs, the adverse-event coding list, the stratification and
block sizes. It is built from the typed protocol (:func:`design_from_protocol`), so the generator
never reads files itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from studyman.errors import ProtocolError
from studyman.synthetic.names import StudyNames, resolve_names

if TYPE_CHECKING:
    from studyman.protocol import Protocol

__all__ = [
    "CodedTerm",
    "FieldSpec",
    "SiteDesign",
    "StudyDesign",
    "VisitDesign",
    "design_from_protocol",
]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One data-dictionary field, as the generator uses it."""

    name: str
    form: str
    field_type: str
    choices: tuple[tuple[str, str], ...] = ()
    validation: str = ""
    minimum: str = ""
    maximum: str = ""
    branching: str = ""
    required: bool = False
    calculation: str = ""
    label: str = ""

    @property
    def codes(self) -> tuple[str, ...]:
        """The raw choice codes, in dictionary order (yesno and truefalse included)."""
        if self.field_type in ("yesno", "truefalse"):
            return ("1", "0")
        return tuple(code for code, _ in self.choices)

    @property
    def export_columns(self) -> tuple[str, ...]:
        """The flat-export column names (checkboxes expand to ``name___code``)."""
        if self.field_type == "checkbox":
            return tuple(f"{self.name}___{code}" for code, _ in self.choices)
        if self.field_type == "descriptive":
            return ()
        return (self.name,)


@dataclass(frozen=True, slots=True)
class SiteDesign:
    """A site: identifier (``S01``), data access group, enrolment target and period."""

    site_id: str
    dag: str
    target: int
    start: date
    end: date


@dataclass(frozen=True, slots=True)
class VisitDesign:
    """A scheduled visit: unique event name, target day and window (days relative to day 0)."""

    event: str
    target_day: int
    window_start: int
    window_end: int
    label: str = ""


@dataclass(frozen=True, slots=True)
class CodedTerm:
    """One entry of the study's adverse-event coding list."""

    code: str
    preferred_term: str
    soc_code: str
    soc: str
    aesi: str = "0"


@dataclass(frozen=True, slots=True)
class StudyDesign:
    """Everything the generator reads about a study (frozen).

    Attributes
    ----------
    sites
        Sites in protocol order.
    screening
        The screening visit (event and window relative to the baseline day 0).
    visits
        Baseline and the post-baseline visits in schedule order (baseline first, day 0).
    event_order
        Every unique event name, in the project's event order.
    event_forms
        For each event, the forms designated there (the form–event mapping), in form order.
    repeating_forms
        The repeating instruments (the logs).
    logs_event, disposition_event
        The events holding the repeating logs and the disposition form.
    fields
        The data dictionary in order.
    ulns
        Upper limits of normal for ``alt``, ``ast``, ``alp`` (U/L) and ``bili`` (mg/dL).
    coding
        The adverse-event coding list.
    block_sizes
        Permuted-block sizes (each a multiple of the sum of the allocation ratios).
    arms
        Arm codes as stored in the protocol's arm field; arms receiving the adjunct first.
    hamd_threshold, severe_from
        Inclusion threshold on the primary scale and the total from which the stratum is "severe"
        (the score-derived stratification levels).
    sae_report_hours
        Protocol clock for the SAE report to the sponsor after site awareness.
    cows_flag
        Withdrawal-scale total from which the protocol wants a review (clean data stay below it;
        0 when the study has no withdrawal scale).
    names
        Every REDCap name the generator writes (:class:`~studyman.synthetic.names.StudyNames`).
    arm_ratios
        Allocation ratio of each arm of ``arms``.
    adjunct_arms
        Codes of the arms that receive the adjunct (dosed, with its effect and adverse events).
    treatment_weeks, end_of_treatment_event
        Length of study treatment and the visit that ends it.
    """

    study_id: str
    sites: tuple[SiteDesign, ...]
    screening: VisitDesign
    visits: tuple[VisitDesign, ...]
    event_order: tuple[str, ...]
    event_forms: dict[str, tuple[str, ...]]
    repeating_forms: tuple[str, ...]
    logs_event: str
    disposition_event: str
    fields: tuple[FieldSpec, ...]
    ulns: dict[str, float]
    coding: tuple[CodedTerm, ...]
    block_sizes: tuple[int, ...] = (4, 6)
    arms: tuple[str, ...] = ("1", "2")
    hamd_threshold: int = 18
    severe_from: int = 24
    sae_report_hours: float = 24.0
    cows_flag: int = 13
    extra: dict[str, Any] = field(default_factory=dict)
    names: StudyNames | None = None
    arm_ratios: tuple[int, ...] = ()
    adjunct_arms: tuple[str, ...] = ()
    treatment_weeks: int = 12
    end_of_treatment_event: str = ""
    severity_levels: tuple[tuple[str, str, int], ...] = ()

    @property
    def n(self) -> StudyNames:
        """The study's names (a :class:`~studyman.errors.ProtocolError` when not resolved)."""
        if self.names is None:
            raise ProtocolError("the study design was built without its names", key="names")
        return self.names

    def field(self, name: str) -> FieldSpec:
        """The dictionary field *name* (a :class:`~studyman.errors.ProtocolError` if absent)."""
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise ProtocolError(f"the data dictionary has no field {name!r}", key=name)

    def has_field(self, name: str) -> bool:
        """Whether the dictionary defines *name*."""
        return any(spec.name == name for spec in self.fields)

    def forms(self) -> tuple[str, ...]:
        """Form names in dictionary order."""
        seen: dict[str, None] = {}
        for spec in self.fields:
            seen.setdefault(spec.form, None)
        return tuple(seen)

    def flat_columns(self) -> tuple[str, ...]:
        """The columns of REDCap's flat raw export, in order.

        Notes
        -----
        Record-ID field, ``redcap_event_name``, ``redcap_repeat_instrument``,
        ``redcap_repeat_instance``, ``redcap_data_access_group``, then each form's fields in
        dictionary order (checkboxes expanded, descriptive fields dropped) followed by that
        form's ``<form>_complete``.
        """
        record_field = self.fields[0].name
        columns = [
            record_field,
            "redcap_event_name",
            "redcap_repeat_instrument",
            "redcap_repeat_instance",
            "redcap_data_access_group",
        ]
        for form in self.forms():
            for spec in self.fields:
                if spec.form == form and spec.name != record_field:
                    columns.extend(spec.export_columns)
            columns.append(f"{form}_complete")
        return tuple(columns)

    def visit(self, event: str) -> VisitDesign:
        """The scheduled visit at *event*."""
        for visit in (self.screening, *self.visits):
            if visit.event == event:
                return visit
        raise ProtocolError(f"the schedule has no visit at event {event!r}", key=event)

    def events_with(self, form: str) -> tuple[str, ...]:
        """The events (in event order) where *form* is designated."""
        return tuple(event for event in self.event_order if form in self.event_forms.get(event, ()))


def design_from_protocol(protocol: Protocol) -> StudyDesign:
    """Build the generator's :class:`StudyDesign` from a loaded protocol.

    Parameters
    ----------
    protocol
        A protocol from :func:`studyman.protocol.load_protocol` with its REDCap project loaded
        (``with_redcap=True``): the generator needs the data dictionary, the events, the
        form–event mapping and the repeating forms.

    Raises
    ------
    ProtocolError
        The protocol has no REDCap project, or lacks a screening visit or a site.
    """
    file = protocol.source_file or "protocol.yaml"
    project = protocol.redcap
    if project is None:
        raise ProtocolError(
            "the generator needs the REDCap project: load the protocol with with_redcap=True",
            file=file,
            key="redcap_project",
        )
    fields = tuple(
        FieldSpec(
            name=f.field_name,
            form=f.form_name,
            field_type=f.field_type,
            choices=tuple((c.code, c.label) for c in f.choices)
            if f.field_type in ("radio", "dropdown", "checkbox")
            else (),
            validation=f.validation,
            minimum=f.text_validation_min,
            maximum=f.text_validation_max,
            branching=f.branching_logic,
            required=f.is_required,
            calculation=f.calculation,
            label=f.field_label,
        )
        for f in project.dictionary.fields
    )
    screening: VisitDesign | None = None
    visits: list[VisitDesign] = []
    logs_event = disposition_event = ""
    for visit in protocol.visits:
        if visit.kind == "log":
            logs_event = visit.event
        elif visit.kind == "end_of_study":
            disposition_event = visit.event
        elif visit.target_day is not None and visit.window is not None:
            scheduled = VisitDesign(
                event=visit.event,
                target_day=visit.target_day,
                window_start=visit.window.start,
                window_end=visit.window.end,
                label=visit.label,
            )
            if visit.kind == "screening":
                screening = scheduled
            elif visit.kind != "unscheduled":
                visits.append(scheduled)
    if screening is None:
        raise ProtocolError(
            "the generator needs a visit of kind 'screening'", file=file, key="visits"
        )
    if not visits or visits[0].target_day != 0:
        raise ProtocolError(
            "the generator needs a baseline visit on day 0 after screening", file=file, key="visits"
        )
    socs = {s.code: s.name for s in protocol.adverse_events.socs}
    aesi_of = {pt: str(a.code) for a in protocol.adverse_events.aesi for pt in a.pts}
    coding = tuple(
        CodedTerm(
            code=str(t.code),
            preferred_term=t.pt,
            soc_code=str(t.soc),
            soc=socs.get(t.soc, ""),
            aesi=aesi_of.get(t.code, "0"),
        )
        for t in protocol.adverse_events.coding_list
    )
    severity = next((f for f in protocol.randomization.stratification if f.source == "score"), None)
    levels = sorted(severity.levels, key=lambda lv: lv.min or 0.0) if severity else []
    clocks = {c.id: float(c.limit_hours) for c in protocol.reporting_clocks}
    adjunct = [str(a.code) for a in protocol.arms.items if a.receives_adjunct]
    arms = tuple(adjunct + [str(a.code) for a in protocol.arms.items if str(a.code) not in adjunct])
    ratio_of = {str(a.code): a.ratio for a in protocol.arms.items}
    event_order = project.event_names
    form_order = {form: i for i, form in enumerate(project.dictionary.forms)}
    event_forms = {
        event: tuple(sorted(project.forms_at(event), key=lambda f: form_order.get(f, 10**6)))
        for event in event_order
    }
    return StudyDesign(
        study_id=protocol.study.id,
        sites=tuple(
            SiteDesign(
                site_id=site.id,
                dag=site.dag,
                target=site.enrolment_target,
                start=max(site.activation_date, protocol.enrolment.start),
                end=min(site.closing_date or protocol.enrolment.end, protocol.enrolment.end),
            )
            for site in protocol.sites
        ),
        screening=screening,
        visits=tuple(visits),
        event_order=event_order,
        event_forms=event_forms,
        repeating_forms=tuple(dict.fromkeys(r.form_name for r in project.repeating)),
        logs_event=logs_event,
        disposition_event=disposition_event,
        fields=fields,
        ulns={test.id.lower(): test.uln for test in protocol.liver.tests},
        coding=coding,
        block_sizes=protocol.randomization.block_sizes,
        arms=arms,
        hamd_threshold=int(levels[0].min) if levels and levels[0].min is not None else 18,
        severe_from=int(levels[1].min) if len(levels) > 1 and levels[1].min is not None else 24,
        sae_report_hours=clocks.get("sae_sponsor", 24.0),
        cows_flag=int(protocol.withdrawal.aesi_threshold) if protocol.withdrawal else 0,
        names=resolve_names(protocol, fields),
        arm_ratios=tuple(ratio_of[a] for a in arms),
        adjunct_arms=tuple(adjunct),
        treatment_weeks=protocol.treatment.weeks,
        end_of_treatment_event=protocol.treatment.end_of_treatment_event,
        severity_levels=tuple(
            (str(lv.code), lv.name, int(lv.min) if lv.min is not None else 0) for lv in levels
        ),
        extra={
            "data_cut": protocol.reporting.data_cut,
            "stratum_format": protocol.randomization.stratum_format,
            "severity_names": {str(lv.code): lv.name for lv in levels},
            "severity_key": severity.id if severity else "",
            "site_key": next(
                (f.id for f in protocol.randomization.stratification if f.source == "site"), "site"
            ),
            "ds_codes": _disposition_roles(protocol),
            "fatal_outcome_code": str(protocol.adverse_events.fatal_outcome_code),
            "withdrawn_action_code": str(
                protocol.adverse_events.treatment_withdrawn_action_code or ""
            ),
            "no_proration": {
                s.instrument: s.proration == "none" and s.max_missing_items == 0
                for s in protocol.scoring
            },
            "sessions_planned": protocol.treatment.cbt_sessions_planned,
            "taper_weeks": protocol.treatment.taper_weeks,
            "deviation_categories": tuple(
                (str(c.code), c.name, c.major) for c in protocol.deviations.categories
            ),
            "aesi_suicidality": next(
                (str(a.code) for a in protocol.adverse_events.aesi if "suicid" in a.name.lower()),
                "",
            ),
            # Hours allowed by each expedited-reporting clock, by the events it applies to.
            "clock_hours": {c.applies_to: float(c.limit_hours) for c in protocol.reporting_clocks},
            "related_codes": tuple(str(c) for c in protocol.adverse_events.related_codes),
        },
    )


def _disposition_roles(protocol: Protocol) -> dict[int, str]:
    """The protocol's disposition code for each role the generator gives a disposition.

    Roles: 1 completed, 2 withdrew consent, 3 lost to follow-up, 4 adverse event, 5 death,
    6 physician decision, 7 other. Completed, adverse event and death are the codes the protocol
    flags so; the other roles take the remaining codes in protocol order (a code named "lost" is
    lost to follow-up), the last one repeated when the protocol has fewer.
    """
    codes = protocol.disposition.codes
    roles: dict[int, str] = {}
    for code in codes:
        if code.completed:
            roles.setdefault(1, str(code.code))
        elif code.death:
            roles.setdefault(5, str(code.code))
        elif code.adverse_event:
            roles.setdefault(4, str(code.code))
    rest = [c for c in codes if not (c.completed or c.death or c.adverse_event)]
    lost = next((c for c in rest if "lost" in c.name.lower()), None)
    others = [c for c in rest if c is not lost]
    if lost is not None:
        roles[3] = str(lost.code)
    for role in (2, 3, 6, 7):
        if role in roles:
            continue
        pick = others.pop(0) if others else (rest[-1] if rest else codes[-1])
        roles[role] = str(pick.code)
    for role in (1, 4, 5):
        roles.setdefault(role, roles[7])
    return roles
