"""Every REDCap name the generator writes, resolved once from the protocol and its dictionary.

The generator never spells a study's field, form or event name: :func:`resolve_names` reads each
one from the loaded :class:`~studyman.protocol.Protocol` (record-ID field, arms, randomisation,
eligibility criteria, visit form, rating scales, C-SSRS, liver tests, adverse events,
medications, exposure logs, deviations, disposition). The few fields a protocol does not declare
(initials, a free-text "other reason", vital signs, a session number) are found in the data
dictionary by their form, type and label, never by their name, so that a study whose every name
differs gets the same data. A role the study lacks resolves to ``None`` (or an empty tuple) and the
generator leaves it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from studyman.protocol import Protocol
    from studyman.synthetic.design import FieldSpec

__all__ = ["ScaleNames", "StudyNames", "resolve_names"]

_NUMERIC = ("integer", "number", "number_1dp", "number_2dp")


@dataclass(frozen=True, slots=True)
class ScaleNames:
    """A rating scale as the generator draws it.

    Attributes
    ----------
    form, total
        The scale's form and its total field.
    groups
        One entry per drawn item: the item's field, or several fields of which exactly one is
        scored (HAM-D-17 16A/16B); the drawn value goes into one of them.
    values
        The values each drawn item takes, ascending (item maxima follow).
    unscored
        Unscored items (PHQ-9's difficulty question) with their values.
    total_max
        The highest possible total.
    weights
        Relative propensity of each drawn item to carry points (a flagged item, e.g. PHQ-9 item 9,
        is rarely scored).
    flag_item
        Index in ``groups`` of the item that a flag pairs with another form, or ``None``.
    requires_form
        The form the flag requires at the same visit (the C-SSRS since last visit), or ``None``.
    date_field
        The scale form's own date field, if it has one (COWS), else ``None``.
    """

    form: str
    total: str
    groups: tuple[tuple[str, ...], ...]
    values: tuple[tuple[int, ...], ...]
    unscored: tuple[tuple[str, tuple[int, ...]], ...]
    total_max: int
    weights: tuple[float, ...]
    flag_item: int | None
    requires_form: str | None
    date_field: str | None

    @property
    def maxima(self) -> tuple[int, ...]:
        """The highest value of each drawn item."""
        return tuple(max(v) for v in self.values)

    @property
    def contiguous(self) -> bool:
        """Whether every drawn item scores ``0..max`` without gaps."""
        return all(v == tuple(range(max(v) + 1)) for v in self.values)


@dataclass(frozen=True, slots=True)
class StudyNames:
    """The study's REDCap names, by the role the generator gives them (see module docstring)."""

    record_id: str
    # participant (screening) form
    participant_form: str
    screening_date: str
    consent_date: str
    age: str | None
    age_range: tuple[int, int]
    sex: str | None
    sex_codes: tuple[tuple[str, float], ...]
    initials: str | None
    prior_treatment: str | None
    other_participant_choices: tuple[str, ...]
    # eligibility
    eligibility_form: str
    eligibility_date: str
    eligible: str
    screen_fail_reason: str
    screen_fail_codes: tuple[str, ...]
    screen_fail_other: str | None
    inclusion_age: str | None
    inclusion_scale: str | None
    inclusion_consent: str | None
    inclusion_other: tuple[str, ...]
    exclusions: tuple[str, ...]
    exclusion_liver: str | None
    exclusion_suicide: str | None
    exclusion_pregnancy: str | None
    # enrolment and randomisation
    enrolment_form: str | None
    randomized: str
    randomization_date: str
    recorded_stratum: str | None
    randomization_form: str
    randomization_number: str
    arm: str
    stratum: str
    # the visit form
    visit_form: str
    visit_date: str
    visit_done: str
    visit_missed_reason: str | None
    # scales
    primary: ScaleNames
    secondary: tuple[ScaleNames, ...]
    withdrawal: ScaleNames | None
    # C-SSRS
    cssrs_screening_form: str
    cssrs_screening_ideation: tuple[str, ...]
    cssrs_screening_behaviour: str | None
    cssrs_form: str
    cssrs_ideation: tuple[str, ...]
    cssrs_gate: tuple[int, ...]
    cssrs_high_ideation: tuple[int, ...]
    cssrs_behaviour: tuple[str, ...]
    cssrs_self_injury: str
    cssrs_safety_action: str
    cssrs_safety_description: str | None
    # liver tests: (field, ULN, decimals) of ALT-like, AST-like, ALP, bilirubin
    liver_form: str
    liver_date: str
    liver_tests: tuple[tuple[str, float, int], ...]
    # vital signs (optional, found by label): systolic, diastolic, heart rate, weight, temperature
    vitals_form: str | None
    vitals: tuple[str | None, ...]
    # adverse events
    ae_form: str
    ae_term: str
    ae_pt: str
    ae_soc: str
    ae_start: str
    ae_end: str
    ae_severity: str
    ae_serious: str
    ae_criteria: tuple[str, ...]
    ae_criteria_roles: dict[str, int]
    ae_related: str
    ae_action: str | None
    ae_outcome: str
    ae_aware: str
    ae_report: str
    ae_aesi: str
    ae_expected: str | None
    ae_unanticipated: str | None
    regulator_report: str | None
    dsmb_report: str | None
    irb_report: str | None
    # concomitant medications
    cm_form: str
    cm_name: str
    cm_class: str
    cm_dose: str
    cm_unit: str
    cm_frequency: str
    cm_frequency_codes: tuple[str, str]
    cm_start: str
    cm_stop: str
    cm_ongoing: str
    cm_indication: str | None
    cm_classes_by_rule: dict[str, tuple[str, ...]]
    # exposure
    sessions_form: str
    session_date: str
    session_attended: str
    session_number: str | None
    session_minutes: str | None
    doses_form: str | None
    dose_date: str | None
    dose_taken: str | None
    dose_amount: str | None
    dose_phase: str | None
    # deviations
    deviation_form: str
    deviation_date: str
    deviation_term: str
    deviation_category: str
    deviation_major: str
    # disposition
    disposition_form: str
    disposition_status: str
    disposition_date: str
    death_date: str
    disposition_reason: str | None
    death_cause: str | None


def _form_fields(fields: tuple[FieldSpec, ...], form: str) -> list[FieldSpec]:
    return [f for f in fields if f.form == form]


def _first(
    fields: list[FieldSpec],
    *,
    types: tuple[str, ...] = (),
    validations: tuple[str, ...] | None = None,
    label: tuple[str, ...] = (),
    exclude: set[str] | frozenset[str] = frozenset(),
) -> str | None:
    for spec in fields:
        if spec.name in exclude:
            continue
        if types and spec.field_type not in types:
            continue
        if validations is not None and spec.validation not in validations:
            continue
        if label and not any(word in spec.label.lower() for word in label):
            continue
        return spec.name
    return None


def _form_of(fields: tuple[FieldSpec, ...], name: str, default: str = "") -> str:
    return next((f.form for f in fields if f.name == name), default)


def _decimals(spec: FieldSpec | None) -> int:
    if spec is None:
        return 0
    if spec.validation.startswith("number_") and spec.validation.endswith("dp"):
        return int(spec.validation[len("number_") : -len("dp")])
    return 0


def _scale(protocol: Protocol, fields: tuple[FieldSpec, ...], instrument: str) -> ScaleNames | None:
    try:
        scoring = protocol.scoring_of(instrument)
    except KeyError:
        return None
    values_of = {item.field: tuple(sorted(item.values)) for item in scoring.items}
    grouped: dict[str, tuple[str, ...]] = {}
    for group in scoring.exactly_one_of:
        for name in group:
            grouped[name] = tuple(group)
    groups: list[tuple[str, ...]] = []
    values: list[tuple[int, ...]] = []
    for item in scoring.items:
        group = grouped.get(item.field, (item.field,))
        if group in groups:
            continue
        groups.append(group)
        # a group's drawn value must be valid for every field of it
        common = set(values_of[group[0]])
        for name in group[1:]:
            common &= set(values_of[name])
        values.append(tuple(sorted(common)))
    flag_item: int | None = None
    requires: str | None = None
    for flag in scoring.flags:
        if flag.requires_instrument is None:
            continue
        for i, group in enumerate(groups):
            if flag.field in group:
                flag_item, requires = i, flag.requires_instrument
                break
        if flag_item is not None:
            break
    weights = tuple(0.1 if i == flag_item else 1.0 for i in range(len(groups)))
    own = _form_fields(fields, instrument)
    items = {f for group in groups for f in group} | {u.field for u in scoring.unscored_items}
    date_field = _first(own, types=("text",), validations=("date_ymd",), exclude=items)
    return ScaleNames(
        form=instrument,
        total=scoring.total_field,
        groups=tuple(groups),
        values=tuple(values),
        unscored=tuple((u.field, tuple(sorted(u.values))) for u in scoring.unscored_items),
        total_max=int(scoring.total_range.max),
        weights=weights,
        flag_item=flag_item,
        requires_form=requires,
        date_field=date_field,
    )


def resolve_names(protocol: Protocol, fields: tuple[FieldSpec, ...]) -> StudyNames:
    """Resolve every name the generator writes (see the module docstring).

    Parameters
    ----------
    protocol
        The loaded protocol.
    fields
        The data dictionary (:class:`~studyman.synthetic.design.FieldSpec` rows).

    Returns
    -------
    StudyNames
    """
    by_name = {f.name: f for f in fields}
    record_id = protocol.study.record_id_field
    enrolment = protocol.enrolment
    participant_form = _form_of(fields, enrolment.consent_date_field)
    participant = _form_fields(fields, participant_form)
    age = enrolment.age_field if enrolment.age_field in by_name else None
    sex = enrolment.sex_field if enrolment.sex_field in by_name else None
    eligibility = protocol.eligibility
    # age limits: the derived inclusion conditions on the age field, within its dictionary range
    low, high = 18, 65
    inclusion_age = inclusion_scale = inclusion_consent = None
    inclusion_other: list[str] = []
    exclusions: list[str] = []
    exclusion_liver = exclusion_suicide = exclusion_pregnancy = None
    liver_fields = {t.field for t in protocol.liver.tests}
    scale_totals = {s.total_field for s in protocol.scoring}
    screening_cssrs = {f.name for f in _form_fields(fields, protocol.cssrs.screening_form)}
    for criterion in eligibility.criteria:
        condition_fields = (
            {c.field for c in criterion.derived.conditions} if criterion.derived else set()
        )
        if criterion.kind == "inclusion":
            if age is not None and age in condition_fields and criterion.derived is not None:
                inclusion_age = criterion.field
                for c in criterion.derived.conditions:
                    if c.field == age and c.op in ("ge", "gt"):
                        low = int(c.value) + (1 if c.op == "gt" else 0)
                    if c.field == age and c.op in ("le", "lt"):
                        high = int(c.value) - (1 if c.op == "lt" else 0)
            elif condition_fields & scale_totals:
                inclusion_scale = criterion.field
            elif "consent" in criterion.text.lower():
                inclusion_consent = criterion.field
            else:
                inclusion_other.append(criterion.field)
        else:
            exclusions.append(criterion.field)
            if condition_fields & liver_fields:
                exclusion_liver = criterion.field
            elif condition_fields & screening_cssrs:
                exclusion_suicide = criterion.field
            elif "pregnan" in criterion.text.lower():
                exclusion_pregnancy = criterion.field
    sex_codes: tuple[tuple[str, float], ...] = ()
    if sex is not None:
        spec = by_name[sex]
        shares = []
        for code, label in spec.choices:
            text = label.lower()
            shares.append((code, 0.62 if text == "female" else 0.37 if text == "male" else 0.0))
        rest = [c for c, share in shares if share == 0.0]
        sex_codes = tuple((c, share if share else 0.01 / max(1, len(rest))) for c, share in shares)
    declared = {record_id, enrolment.screening_date_field, enrolment.consent_date_field}
    declared |= {name for name in (age, sex) if name}
    initials = _first(participant, types=("text",), validations=("",), exclude=declared)
    # prior treatment (drives stable-dose antidepressants): a yes/no baseline field the protocol
    # declares, else the participant form's first yes/no field
    baseline = [by_name[f] for f in enrolment.baseline_fields if f in by_name]
    prior = _first(baseline, types=("yesno",)) or _first(
        participant, types=("yesno",), exclude=declared
    )
    other_choices = tuple(
        f.name
        for f in participant
        if f.field_type in ("radio", "dropdown") and f.name not in declared
    )
    elig_fields = _form_fields(fields, eligibility.form)
    elig_declared = {
        eligibility.date_field,
        eligibility.eligible_field,
        eligibility.screen_fail_reason_field,
    } | {c.field for c in eligibility.criteria}
    randomization = protocol.randomization
    recorded = next(
        (
            f.recorded_field
            for f in randomization.stratification
            if f.source == "score" and f.recorded_field
        ),
        None,
    )
    visit_form = protocol.visit_form
    visit_fields = _form_fields(fields, visit_form.form)
    primary_instrument = protocol.endpoints.primary.instrument
    primary = _scale(protocol, fields, primary_instrument)
    if primary is None:
        from studyman.errors import ProtocolError

        raise ProtocolError(
            f"the primary endpoint's instrument {primary_instrument!r} has no scoring entry",
            file=protocol.source_file or "protocol.yaml",
            key="endpoints.primary.instrument",
        )
    withdrawal_form = protocol.withdrawal.instrument if protocol.withdrawal else None
    secondary = tuple(
        scale
        for s in protocol.scoring
        if s.instrument not in (primary_instrument, withdrawal_form)
        for scale in (_scale(protocol, fields, s.instrument),)
        if scale is not None
    )
    withdrawal = _scale(protocol, fields, withdrawal_form) if withdrawal_form else None
    cssrs = protocol.cssrs
    screening_yesno = [
        f.name for f in _form_fields(fields, cssrs.screening_form) if f.field_type == "yesno"
    ]
    n_ideation = len(cssrs.ideation_fields)
    since = _form_fields(fields, cssrs.since_last_form)
    since_declared = {
        *cssrs.ideation_fields,
        *cssrs.behaviour_fields,
        cssrs.self_injury_field,
        cssrs.safety_action_field,
    }
    liver = protocol.liver
    tests = {t.id: t for t in liver.tests}
    order = [*liver.hys_law.transaminases[:2], liver.hys_law.alp, liver.hys_law.bilirubin]
    liver_tests = tuple(
        (tests[i].field, float(tests[i].uln), _decimals(by_name.get(tests[i].field))) for i in order
    )
    systolic = next((f for f in fields if "systolic" in f.label.lower()), None)
    vitals_form = systolic.form if systolic else None
    vital_fields = _form_fields(fields, vitals_form) if vitals_form else []
    vitals = tuple(
        _first(vital_fields, types=("text",), validations=_NUMERIC, label=words)
        for words in (
            ("systolic",),
            ("diastolic",),
            ("heart rate", "pulse"),
            ("weight",),
            ("temperature",),
        )
    )
    ae = protocol.adverse_events
    criteria_spec = by_name.get(ae.serious_criteria_field)
    criteria_codes = tuple(c for c, _ in criteria_spec.choices) if criteria_spec else ()
    roles: dict[str, int] = {}
    if criteria_spec is not None:
        for i, (_, label) in enumerate(criteria_spec.choices):
            text = label.lower()
            for role, word in (
                ("death", "death"),
                ("life_threatening", "life"),
                ("hospitalisation", "hospital"),
                ("important", "important"),
            ):
                if word in text and role not in roles:
                    roles[role] = i
    clock_field = {c.applies_to: c.report_field for c in protocol.reporting_clocks}
    regulator = clock_field.get("susar_fatal_life_threatening") or clock_field.get("susar_other")
    cm = protocol.concomitant_medications
    by_rule: dict[str, list[str]] = {}
    for cls in cm.classes:
        by_rule.setdefault(cls.rule, []).append(str(cls.code))
    frequency = by_name.get(cm.frequency_field)
    frequency_codes = [c for c, _ in frequency.choices] if frequency else ["1"]
    as_needed = next(
        (c for c, label in (frequency.choices if frequency else ()) if "needed" in label.lower()),
        frequency_codes[-1],
    )
    cm_declared = {
        cm.name_field,
        cm.class_field,
        cm.dose_field,
        cm.unit_field,
        cm.frequency_field,
        cm.start_field,
        cm.stop_field,
        cm.ongoing_field,
    }
    treatment = protocol.treatment
    session_fields = _form_fields(fields, treatment.sessions.form)
    integers = [f.name for f in session_fields if f.validation == "integer"]
    doses = treatment.doses
    dose_fields = _form_fields(fields, doses.form) if doses else []
    deviations = protocol.deviations
    disposition = protocol.disposition
    exit_fields = _form_fields(fields, disposition.form)
    exit_declared = {
        disposition.status_field,
        disposition.date_field,
        disposition.death_date_field,
    }
    declared_cause = disposition.death_cause_field
    cause = (
        declared_cause
        if declared_cause and declared_cause in by_name
        else _first(exit_fields, types=("text",), validations=("",), label=("cause",))
    )
    reason = _first(
        exit_fields,
        types=("text",),
        validations=("",),
        exclude=exit_declared | ({cause} if cause else set()),
    )
    return StudyNames(
        record_id=record_id,
        participant_form=participant_form,
        screening_date=enrolment.screening_date_field,
        consent_date=enrolment.consent_date_field,
        age=age,
        age_range=(low, high),
        sex=sex,
        sex_codes=sex_codes,
        initials=initials,
        prior_treatment=prior,
        other_participant_choices=other_choices,
        eligibility_form=eligibility.form,
        eligibility_date=eligibility.date_field,
        eligible=eligibility.eligible_field,
        screen_fail_reason=eligibility.screen_fail_reason_field,
        screen_fail_codes=tuple(str(r.code) for r in disposition.screen_fail_reasons),
        screen_fail_other=_first(
            elig_fields, types=("text",), validations=("",), exclude=elig_declared
        ),
        inclusion_age=inclusion_age,
        inclusion_scale=inclusion_scale,
        inclusion_consent=inclusion_consent,
        inclusion_other=tuple(inclusion_other),
        exclusions=tuple(exclusions),
        exclusion_liver=exclusion_liver,
        exclusion_suicide=exclusion_suicide,
        exclusion_pregnancy=exclusion_pregnancy,
        enrolment_form=_form_of(fields, randomization.randomized_field) or None,
        randomized=randomization.randomized_field,
        randomization_date=randomization.date_field,
        recorded_stratum=recorded,
        randomization_form=protocol.arms.form,
        randomization_number=randomization.number_field,
        arm=protocol.arms.field,
        stratum=randomization.stratum_field,
        visit_form=visit_form.form,
        visit_date=visit_form.date_field,
        visit_done=visit_form.done_field,
        visit_missed_reason=_first(
            visit_fields,
            types=("text", "notes"),
            validations=("",),
            exclude={visit_form.date_field, visit_form.done_field},
        ),
        primary=primary,
        secondary=secondary,
        withdrawal=withdrawal,
        cssrs_screening_form=cssrs.screening_form,
        cssrs_screening_ideation=tuple(screening_yesno[:n_ideation]),
        cssrs_screening_behaviour=(
            screening_yesno[n_ideation] if len(screening_yesno) > n_ideation else None
        ),
        cssrs_form=cssrs.since_last_form,
        cssrs_ideation=tuple(cssrs.ideation_fields),
        cssrs_gate=tuple(cssrs.ideation_fields.index(g) for g in cssrs.gate_fields),
        cssrs_high_ideation=tuple(
            cssrs.ideation_fields.index(g) for g in cssrs.safety_action_required_ideation
        ),
        cssrs_behaviour=tuple(cssrs.behaviour_fields),
        cssrs_self_injury=cssrs.self_injury_field,
        cssrs_safety_action=cssrs.safety_action_field,
        cssrs_safety_description=_first(
            since, types=("notes", "text"), validations=("",), exclude=since_declared
        ),
        liver_form=liver.form,
        liver_date=liver.date_field,
        liver_tests=liver_tests,
        vitals_form=vitals_form,
        vitals=vitals,
        ae_form=ae.form,
        ae_term=ae.term_field,
        ae_pt=ae.pt_field,
        ae_soc=ae.soc_field,
        ae_start=ae.start_field,
        ae_end=ae.end_field,
        ae_severity=ae.severity_field,
        ae_serious=ae.serious_field,
        ae_criteria=tuple(f"{ae.serious_criteria_field}___{c}" for c in criteria_codes),
        ae_criteria_roles=roles,
        ae_related=ae.related_field,
        ae_action=ae.action_field,
        ae_outcome=ae.outcome_field,
        ae_aware=ae.awareness_field,
        ae_report=ae.report_field,
        ae_aesi=ae.aesi_field,
        ae_expected=ae.expected_field,
        ae_unanticipated=ae.unanticipated_field,
        regulator_report=regulator,
        dsmb_report=clock_field.get("suicide_death"),
        irb_report=clock_field.get("unanticipated_problem"),
        cm_form=cm.form,
        cm_name=cm.name_field,
        cm_class=cm.class_field,
        cm_dose=cm.dose_field,
        cm_unit=cm.unit_field,
        cm_frequency=cm.frequency_field,
        cm_frequency_codes=(frequency_codes[0], as_needed),
        cm_start=cm.start_field,
        cm_stop=cm.stop_field,
        cm_ongoing=cm.ongoing_field,
        cm_indication=_first(
            _form_fields(fields, cm.form), types=("text",), validations=("",), exclude=cm_declared
        ),
        cm_classes_by_rule={rule: tuple(codes) for rule, codes in by_rule.items()},
        sessions_form=treatment.sessions.form,
        session_date=treatment.sessions.date_field,
        session_attended=treatment.sessions.given_field,
        session_number=integers[0] if integers else None,
        session_minutes=integers[1] if len(integers) > 1 else None,
        doses_form=doses.form if doses else None,
        dose_date=doses.date_field if doses else None,
        dose_taken=doses.given_field if doses else None,
        dose_amount=_first(dose_fields, types=("text",), validations=_NUMERIC),
        dose_phase=_first(dose_fields, types=("radio", "dropdown")),
        deviation_form=deviations.form,
        deviation_date=deviations.date_field,
        deviation_term=deviations.term_field,
        deviation_category=deviations.category_field,
        deviation_major=deviations.major_field,
        disposition_form=disposition.form,
        disposition_status=disposition.status_field,
        disposition_date=disposition.date_field,
        death_date=disposition.death_date_field,
        disposition_reason=reason,
        death_cause=cause,
    )
