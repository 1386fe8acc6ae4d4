"""Conformance of a protocol with REDCap metadata, reported as findings.

Every field the protocol names must exist in the data dictionary, on the expected form, with the
expected type, choice codes (and, where the protocol gives them, labels) and range; every
instrument and event must exist; with a whole project, each visit's instruments must be mapped
to its event, the logs must repeat, each site must have its data access group, and no user in a
site's data access group, and no user outside the protocol's unblinded users, may see an
unblinded form. Each scale's calc total must use all its
items, and branching logic and calc formulas may name only fields (and events) of the project.

Severities: ``critical`` when something the protocol needs is missing or an unblinded form is
open to a blinded site user; ``major`` for a wrong type, form, choice code or range; ``minor`` for
a label that differs; ``info`` for metadata the protocol does not use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from studyman.findings import Finding, Severity
from studyman.protocol.models import Protocol
from studyman.protocol.redcap_project import (
    DATE_VALIDATIONS,
    DATETIME_VALIDATIONS,
    DataDictionary,
    DictionaryField,
    Event,
    FormEventMapping,
    RedcapProject,
    RepeatingForm,
)

__all__ = [
    "ARM_SPECIFIC_WORDS",
    "FieldExpectation",
    "check_blinding_declared",
    "check_conformance",
    "field_expectations",
]

_CATEGORICAL = frozenset({"radio", "dropdown"})


@dataclass(frozen=True, slots=True)
class FieldExpectation:
    """What the protocol expects of one REDCap field.

    Attributes
    ----------
    field
        REDCap field name.
    key
        The protocol key that names it (for the message).
    form
        The form it must be on, or ``""`` for any form.
    kinds
        Accepted kinds: field types (``radio``, ``calc`` ...) or ``text:<validation>``
        (``text:date_ymd``); ``text:numeric`` accepts integer and number validations.
    codes
        Expected choice codes (exactly, order ignored), or None.
        With ``codes_subset`` the codes only need to be among the field's choices.
    labels
        Expected labels by code, compared case-insensitively (minor when they differ).
    minimum, maximum
        Expected validation range of a numeric text field, or None.
    """

    field: str
    key: str
    form: str = ""
    kinds: frozenset[str] = frozenset()
    codes: frozenset[str] | None = None
    codes_subset: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    minimum: float | None = None
    maximum: float | None = None


def _codes(values: Iterable[int | float]) -> frozenset[str]:
    return frozenset(
        str(int(value)) if float(value).is_integer() else str(value) for value in values
    )


_YESNO = frozenset({"yesno"})
_DATE_KINDS = frozenset(f"text:{validation}" for validation in DATE_VALIDATIONS)
_DATETIME_KINDS = frozenset(f"text:{validation}" for validation in DATETIME_VALIDATIONS)
_NUMERIC_KINDS = frozenset({"text:numeric", "calc", "radio", "dropdown", "yesno", "slider"})


def field_expectations(protocol: Protocol) -> tuple[FieldExpectation, ...]:
    """Every field the protocol uses and what it expects of it, in protocol order."""
    out: list[FieldExpectation] = []

    def add(field: str, key: str, form: str = "", **kwargs: Any) -> None:
        out.append(FieldExpectation(field=field, key=key, form=form, **kwargs))

    def add_coded(
        field: str, key: str, form: str, items: Iterable[tuple[int | float, str]]
    ) -> None:
        # a categorical field whose codes and labels both come from one protocol list
        pairs = tuple(items)
        add(
            field,
            key,
            form,
            kinds=_CATEGORICAL,
            codes=_codes(code for code, _ in pairs),
            labels=tuple((str(code), label) for code, label in pairs),
        )

    first_form = protocol.visits[0].instruments[0] if protocol.visits else ""
    add(
        protocol.study.record_id_field,
        "study.record_id_field",
        first_form,
        kinds=frozenset({"text"}),
    )

    arms = protocol.arms
    add_coded(
        arms.field,
        "arms.field",
        arms.form,
        ((arm.code, arm.name) for arm in arms.items),
    )

    randomization = protocol.randomization
    for key, field, kinds in (
        ("randomization.date_field", randomization.date_field, _DATE_KINDS),
        ("randomization.randomized_field", randomization.randomized_field, _YESNO),
        ("randomization.number_field", randomization.number_field, frozenset({"text"})),
        ("randomization.stratum_field", randomization.stratum_field, frozenset({"text"})),
    ):
        add(field, key, kinds=kinds)
    for i, factor in enumerate(randomization.stratification):
        if factor.field:
            add(factor.field, f"randomization.stratification[{i}].field", kinds=_NUMERIC_KINDS)
        if factor.recorded_field:
            add(
                factor.recorded_field,
                f"randomization.stratification[{i}].recorded_field",
                kinds=_CATEGORICAL,
                codes=_codes(level.code for level in factor.levels),
            )

    for i, visit in enumerate(protocol.visits):
        if visit.date_field:
            add(visit.date_field, f"visits[{i}].date_field", kinds=_DATE_KINDS)

    eligibility = protocol.eligibility
    form = eligibility.form
    add(eligibility.date_field, "eligibility.date_field", form, kinds=_DATE_KINDS)
    add(eligibility.eligible_field, "eligibility.eligible_field", form, kinds=_YESNO)
    add_coded(
        eligibility.screen_fail_reason_field,
        "eligibility.screen_fail_reason_field",
        form,
        ((reason.code, reason.label) for reason in protocol.disposition.screen_fail_reasons),
    )
    for i, criterion in enumerate(eligibility.criteria):
        add(criterion.field, f"eligibility.criteria[{i}].field", form, kinds=_YESNO)
        if criterion.derived is not None:
            for j, condition in enumerate(criterion.derived.conditions):
                add(
                    condition.field,
                    f"eligibility.criteria[{i}].derived.conditions[{j}].field",
                    kinds=_NUMERIC_KINDS,
                )

    disposition = protocol.disposition
    add_coded(
        disposition.status_field,
        "disposition.status_field",
        disposition.form,
        ((code.code, code.label) for code in disposition.codes),
    )
    add(disposition.date_field, "disposition.date_field", disposition.form, kinds=_DATE_KINDS)
    add(
        disposition.death_date_field,
        "disposition.death_date_field",
        disposition.form,
        kinds=_DATE_KINDS,
    )

    for i, scoring in enumerate(protocol.scoring):
        key = f"scoring[{i}]"
        for group_name, items in (
            ("items", scoring.items),
            ("unscored_items", scoring.unscored_items),
        ):
            for j, item in enumerate(items):
                add(
                    item.field,
                    f"{key}.{group_name}[{j}]",
                    scoring.instrument,
                    kinds=frozenset({"radio", "dropdown", "text:integer"}),
                    codes=_codes(item.values),
                    minimum=float(item.min),
                    maximum=float(item.max),
                )
        add(
            scoring.total_field, f"{key}.total_field", scoring.instrument, kinds=frozenset({"calc"})
        )

    primary = protocol.endpoints.primary
    add(primary.field, "endpoints.primary.field", primary.instrument, kinds=_NUMERIC_KINDS)

    cssrs = protocol.cssrs
    since = cssrs.since_last_form
    for name in ("ideation_fields", "follow_up_ideation_fields", "gate_fields", "behaviour_fields"):
        for j, field in enumerate(getattr(cssrs, name)):
            add(field, f"cssrs.{name}[{j}]", since, kinds=_YESNO)
    add(cssrs.self_injury_field, "cssrs.self_injury_field", since, kinds=_YESNO)
    add(cssrs.safety_action_field, "cssrs.safety_action_field", since, kinds=_YESNO)

    liver = protocol.liver
    add(liver.date_field, "liver.date_field", liver.form, kinds=_DATE_KINDS)
    for j, test in enumerate(liver.tests):
        add(test.field, f"liver.tests[{j}].field", liver.form, kinds=frozenset({"text:numeric"}))

    withdrawal = protocol.withdrawal
    if withdrawal is not None:
        add(
            withdrawal.total_field,
            "withdrawal.total_field",
            withdrawal.instrument,
            kinds=frozenset({"calc"}),
        )
    visit_form = protocol.visit_form
    add(visit_form.done_field, "visit_form.done_field", visit_form.form)
    add(visit_form.date_field, "visit_form.date_field", visit_form.form, kinds=_DATE_KINDS)

    ae = protocol.adverse_events
    f = ae.form
    add(ae.term_field, "adverse_events.term_field", f, kinds=frozenset({"text", "notes"}))
    add_coded(
        ae.pt_field,
        "adverse_events.pt_field",
        f,
        ((term.code, term.pt) for term in ae.coding_list),
    )
    add_coded(
        ae.soc_field,
        "adverse_events.soc_field",
        f,
        ((soc.code, soc.name) for soc in ae.socs),
    )
    add(ae.start_field, "adverse_events.start_field", f, kinds=_DATE_KINDS)
    add(ae.end_field, "adverse_events.end_field", f, kinds=_DATE_KINDS)
    add(ae.severity_field, "adverse_events.severity_field", f, kinds=_CATEGORICAL)
    add(ae.serious_field, "adverse_events.serious_field", f, kinds=_YESNO)
    add(
        ae.serious_criteria_field,
        "adverse_events.serious_criteria_field",
        f,
        kinds=frozenset({"checkbox"}),
        codes=_codes(ae.fatal_or_life_threatening_criteria)
        if ae.fatal_or_life_threatening_criteria
        else None,
        codes_subset=True,
    )
    add(
        ae.related_field,
        "adverse_events.related_field",
        f,
        kinds=_CATEGORICAL,
        codes=_codes(ae.related_codes),
        codes_subset=True,
    )
    add(
        ae.outcome_field,
        "adverse_events.outcome_field",
        f,
        kinds=_CATEGORICAL,
        codes=_codes(
            (ae.fatal_outcome_code, *ae.ongoing_outcome_codes, *ae.recovered_outcome_codes)
        ),
        codes_subset=True,
    )
    add(ae.awareness_field, "adverse_events.awareness_field", f, kinds=_DATETIME_KINDS)
    add(ae.report_field, "adverse_events.report_field", f, kinds=_DATETIME_KINDS)
    add(
        ae.aesi_field,
        "adverse_events.aesi_field",
        f,
        kinds=_CATEGORICAL,
        codes=_codes((0, *(aesi.code for aesi in ae.aesi))),
        labels=tuple((str(aesi.code), aesi.label) for aesi in ae.aesi),
    )
    if ae.expected_field is not None:
        add(ae.expected_field, "adverse_events.expected_field", f, kinds=_YESNO)
    if ae.unanticipated_field is not None:
        add(ae.unanticipated_field, "adverse_events.unanticipated_field", f, kinds=_YESNO)
    for i, clock in enumerate(protocol.reporting_clocks):
        if clock.report_field is not None:
            add(
                clock.report_field,
                f"reporting_clocks[{i}].report_field",
                f,
                kinds=_DATETIME_KINDS,
            )

    cm = protocol.concomitant_medications
    f = cm.form
    add(cm.name_field, "concomitant_medications.name_field", f, kinds=frozenset({"text"}))
    add_coded(
        cm.class_field,
        "concomitant_medications.class_field",
        f,
        ((c.code, c.name) for c in cm.classes),
    )
    add(cm.dose_field, "concomitant_medications.dose_field", f, kinds=frozenset({"text:numeric"}))
    add(
        cm.unit_field,
        "concomitant_medications.unit_field",
        f,
        kinds=frozenset({"text", "dropdown"}),
    )
    add(cm.frequency_field, "concomitant_medications.frequency_field", f, kinds=_CATEGORICAL)
    add(cm.start_field, "concomitant_medications.start_field", f, kinds=_DATE_KINDS)
    add(cm.stop_field, "concomitant_medications.stop_field", f, kinds=_DATE_KINDS)
    add(cm.ongoing_field, "concomitant_medications.ongoing_field", f, kinds=_YESNO)

    dv = protocol.deviations
    add_coded(
        dv.category_field,
        "deviations.category_field",
        dv.form,
        ((c.code, c.name) for c in dv.categories),
    )
    add(dv.major_field, "deviations.major_field", dv.form, kinds=_YESNO)
    add(dv.term_field, "deviations.term_field", dv.form, kinds=frozenset({"text", "notes"}))
    add(dv.date_field, "deviations.date_field", dv.form, kinds=_DATE_KINDS)
    return tuple(out)


def _kind_matches(field: DictionaryField, kinds: frozenset[str]) -> bool:
    if not kinds or field.field_type in kinds:
        return True
    if field.field_type != "text":
        return False
    validation = field.validation
    if f"text:{validation}" in kinds:
        return True
    return "text:numeric" in kinds and (validation == "integer" or validation.startswith("number"))


def _describe_kind(field: DictionaryField) -> str:
    return f"text ({field.validation})" if field.validation else field.field_type


def _check_field(
    expectation: FieldExpectation, field: DictionaryField | None, source: str
) -> Iterable[Finding]:
    name = expectation.field
    if field is None:
        yield Finding(
            "conformance.field_missing",
            "critical",
            f"field {name!r} named by {expectation.key} is not in the data dictionary",
            instrument=expectation.form,
            field=name,
            source=source,
        )
        return
    form = field.form_name
    if expectation.form and form != expectation.form:
        yield Finding(
            "conformance.field_form",
            "major",
            f"field {name!r} ({expectation.key}) is on form {form!r}, "
            f"expected form {expectation.form!r}",
            instrument=form,
            field=name,
            value=form,
            source=source,
        )
    if not _kind_matches(field, expectation.kinds):
        expected = " or ".join(
            sorted(k.replace("text:", "text with validation ") for k in expectation.kinds)
        )
        yield Finding(
            "conformance.field_type",
            "major",
            f"field {name!r} ({expectation.key}) is {_describe_kind(field)}, expected {expected}",
            instrument=form,
            field=name,
            value=_describe_kind(field),
            source=source,
        )
        return
    if expectation.codes is not None and field.field_type in ("radio", "dropdown", "checkbox"):
        actual = frozenset(field.choice_codes)
        missing = sorted(expectation.codes - actual, key=_code_order)
        extra = sorted(actual - expectation.codes, key=_code_order)
        if missing or (extra and not expectation.codes_subset):
            parts = []
            if missing:
                parts.append(f"missing code(s) {', '.join(missing)}")
            if extra and not expectation.codes_subset:
                parts.append(f"unexpected code(s) {', '.join(extra)}")
            yield Finding(
                "conformance.field_choices",
                "major",
                f"field {name!r} ({expectation.key}) choices differ from the protocol: "
                f"{'; '.join(parts)}",
                instrument=form,
                field=name,
                value=field.select_choices_or_calculations,
                source=source,
            )
        labels = {choice.code: choice.label for choice in field.choices}
        for code, label in expectation.labels:
            actual_label = labels.get(code)
            if actual_label is not None and actual_label.casefold() != label.casefold():
                yield Finding(
                    "conformance.field_choice_label",
                    "minor",
                    f"field {name!r} code {code} is labelled {actual_label!r}, "
                    f"the protocol says {label!r}",
                    instrument=form,
                    field=name,
                    value=actual_label,
                    source=source,
                )
    if field.field_type == "text" and (
        expectation.minimum is not None or expectation.maximum is not None
    ):
        low, high = field.range_min_number(), field.range_max_number()
        if low != expectation.minimum or high != expectation.maximum:
            yield Finding(
                "conformance.field_range",
                "major",
                f"field {name!r} ({expectation.key}) validates {_fmt(low)}..{_fmt(high)}, "
                f"expected {_fmt(expectation.minimum)}..{_fmt(expectation.maximum)}",
                instrument=form,
                field=name,
                value=f"{field.text_validation_min}..{field.text_validation_max}",
                source=source,
            )


def _fmt(value: float | None) -> str:
    return "(none)" if value is None else f"{value:g}"


def _code_order(code: str) -> tuple[int, float, str]:
    try:
        return (0, float(code), code)
    except ValueError:
        return (1, 0.0, code)


def _as_models(rows: Sequence[Any] | None, model: type[Any]) -> tuple[Any, ...] | None:
    if rows is None:
        return None
    return tuple(row if isinstance(row, model) else model.model_validate(row) for row in rows)


def check_conformance(
    protocol: Protocol,
    metadata: RedcapProject | DataDictionary | Sequence[Mapping[str, Any]],
    *,
    events: Sequence[Event | Mapping[str, Any]] | None = None,
    mappings: Sequence[FormEventMapping | Mapping[str, Any]] | None = None,
    repeating: Sequence[RepeatingForm | Mapping[str, Any]] | None = None,
) -> list[Finding]:
    """Check *protocol* against REDCap metadata; return the findings (empty when conformant).

    Parameters
    ----------
    protocol
        The loaded protocol.
    metadata
        A whole :class:`RedcapProject` (dictionary, events, mappings, repeating forms, DAGs and
        users are all checked), a :class:`DataDictionary`, or metadata rows as REDCap's API
        returns them (PyCap ``export_metadata()``).
    events, mappings, repeating
        Optional project parts as models or API rows (PyCap ``export_events()``,
        ``export_instrument_event_mappings()``, ``export_repeating_instruments_events()``), used
        when *metadata* is not a whole project.
    """
    project: RedcapProject | None = None
    if isinstance(metadata, RedcapProject):
        project = metadata
        dictionary = metadata.dictionary
    elif isinstance(metadata, DataDictionary):
        dictionary = metadata
    else:
        dictionary = DataDictionary.from_rows(metadata)
    source = dictionary.source or "metadata"
    findings: list[Finding] = []

    forms = set(dictionary.forms)
    for instrument in protocol.instruments:
        if instrument.name not in forms:
            findings.append(
                Finding(
                    "conformance.instrument_missing",
                    "critical",
                    f"instrument {instrument.name!r} of the protocol is not in the data dictionary",
                    instrument=instrument.name,
                    source=source,
                )
            )
    for form in dictionary.forms:
        if form not in protocol.instrument_names:
            findings.append(
                Finding(
                    "conformance.instrument_unused",
                    "info",
                    f"form {form!r} is in REDCap but not in the protocol",
                    instrument=form,
                    source=source,
                )
            )
    if dictionary.record_id_field != protocol.study.record_id_field:
        findings.append(
            Finding(
                "conformance.record_id_field",
                "critical",
                f"the first field is {dictionary.record_id_field!r}, expected the record-ID "
                f"field {protocol.study.record_id_field!r}",
                field=dictionary.record_id_field,
                source=source,
            )
        )
    for expectation in field_expectations(protocol):
        if expectation.form and expectation.form not in forms:
            continue  # already reported as a missing instrument
        findings.extend(_check_field(expectation, dictionary.get(expectation.field), source))

    findings.extend(_check_totals(protocol, dictionary, source))
    findings.extend(check_blinding_declared(protocol, dictionary, source))
    for visit in protocol.visits:
        date_field = dictionary.get(visit.date_field) if visit.date_field else None
        if date_field is not None and date_field.form_name not in visit.instruments:
            findings.append(
                Finding(
                    "conformance.visit_date_form",
                    "major",
                    f"the date of {visit.event!r} is {date_field.field_name!r} on form "
                    f"{date_field.form_name!r}, which is not due at that visit",
                    event=visit.event,
                    instrument=date_field.form_name,
                    field=date_field.field_name,
                    source=source,
                )
            )
    event_models = _as_models(events, Event)
    mapping_models = _as_models(mappings, FormEventMapping)
    repeating_models = _as_models(repeating, RepeatingForm)
    if project is not None:
        event_models = project.events
        mapping_models = project.mappings
        repeating_models = project.repeating
        if not project.is_longitudinal:
            findings.append(
                Finding(
                    "conformance.not_longitudinal",
                    "critical",
                    "the REDCap project is classic (not longitudinal); the protocol has events",
                    source=project.directory,
                )
            )
    event_names = {event.unique_event_name for event in event_models or ()}
    findings.extend(_check_logic_references(dictionary, event_names, source))
    if event_models is not None:
        findings.extend(_check_events(protocol, event_models, mapping_models, source))
    if repeating_models is not None:
        findings.extend(_check_repeating(protocol, repeating_models, source))
    if project is not None:
        findings.extend(_check_access(protocol, project))
        findings.extend(_check_roles(protocol, project))
    return findings


_REFERENCE = re.compile(r"\[([a-z][a-z0-9_]*)(?:\([A-Za-z0-9_]+\))?\]")


def _check_totals(protocol: Protocol, dictionary: DataDictionary, source: str) -> Iterable[Finding]:
    """Each scale's calc total must use every scored item."""
    for scoring in protocol.scoring:
        field = dictionary.get(scoring.total_field)
        if field is None or field.field_type != "calc":
            continue  # reported by the field checks
        used = set(_REFERENCE.findall(field.calculation))
        missing = [item for item in scoring.item_fields if item not in used]
        if missing:
            yield Finding(
                "conformance.calc_items",
                "major",
                f"calc field {field.field_name!r} does not use item(s) {', '.join(missing)} "
                f"of {scoring.instrument}",
                instrument=field.form_name,
                field=field.field_name,
                value=field.calculation,
                source=source,
            )


def _check_logic_references(
    dictionary: DataDictionary, event_names: set[str], source: str
) -> Iterable[Finding]:
    """Branching logic and calc formulas may only name fields (or events) of the project."""
    names = set(dictionary.field_names) | {f"{form}_complete" for form in dictionary.forms}
    for field in dictionary.fields:
        for column, text in (
            ("branching logic", field.branching_logic),
            ("calculation", field.calculation),
        ):
            unknown = sorted(
                {
                    name
                    for name in _REFERENCE.findall(text)
                    if name not in names and name not in event_names
                }
            )
            if unknown:
                yield Finding(
                    "conformance.logic_unknown_field",
                    "major",
                    f"the {column} of {field.field_name!r} names unknown field(s) "
                    f"{', '.join(unknown)}",
                    instrument=field.form_name,
                    field=field.field_name,
                    value=text,
                    source=source,
                )


def _check_events(
    protocol: Protocol,
    events: Sequence[Event],
    mappings: Sequence[FormEventMapping] | None,
    source: str,
) -> Iterable[Finding]:
    names = [event.unique_event_name for event in events]
    for visit in protocol.visits:
        if visit.event not in names:
            yield Finding(
                "conformance.event_missing",
                "critical",
                f"event {visit.event!r} ({visit.label}) is not a REDCap event",
                event=visit.event,
                source=source,
            )
    for name in names:
        if name not in protocol.event_names:
            yield Finding(
                "conformance.event_unused",
                "info",
                f"REDCap event {name!r} is not in the protocol's schedule",
                event=name,
                source=source,
            )
    if mappings is None:
        return
    mapped = {(m.unique_event_name, m.form) for m in mappings}
    for visit in protocol.visits:
        if visit.event not in names:
            continue
        for form in visit.instruments:
            if (visit.event, form) not in mapped:
                yield Finding(
                    "conformance.mapping_missing",
                    "major",
                    f"form {form!r} is due at {visit.event!r} but not designated there in REDCap",
                    event=visit.event,
                    instrument=form,
                    source=source,
                )
    for event, form in sorted(mapped):
        if event in protocol.event_names and form not in protocol.visit(event).instruments:
            yield Finding(
                "conformance.mapping_unexpected",
                "minor",
                f"form {form!r} is designated at {event!r} in REDCap but not due there "
                "by the protocol",
                event=event,
                instrument=form,
                source=source,
            )


def _check_repeating(
    protocol: Protocol, repeating: Sequence[RepeatingForm], source: str
) -> Iterable[Finding]:
    actual = {(r.event_name, r.form_name) for r in repeating}
    for item in protocol.repeating:
        if (item.event, item.form) not in actual and ("", item.form) not in actual:
            yield Finding(
                "conformance.repeating_missing",
                "major",
                f"form {item.form!r} must repeat at {item.event!r} but is not repeating in REDCap",
                event=item.event,
                instrument=item.form,
                source=source,
            )
    expected = {(r.event, r.form) for r in protocol.repeating}
    for event, form in sorted(actual):
        if (event, form) not in expected and not any(f == form for _, f in expected):
            yield Finding(
                "conformance.repeating_unexpected",
                "major",
                f"form {form!r} repeats in REDCap at {event or '(all events)'!r}, "
                "the protocol does not repeat it",
                event=event,
                instrument=form,
                source=source,
            )


# Words that make a form or field look arm-specific; each such form or field must be declared in
# the blinding policy, as revealing allocation or as arm-neutral.
ARM_SPECIFIC_WORDS = re.compile(
    r"unblind|\bdos(e|es|ed|ing)\b|\barms?\b|allocat|randomi[sz]|study drug|"
    r"investigational product|placebo|\bkits?\b|dispens|adjunct",
    re.IGNORECASE,
)


def _arm_words(protocol: Protocol) -> re.Pattern[str]:
    """The generic words, plus each arm-name word that only some arms have (e.g. "adjunct")."""
    words = [set(re.findall(r"[a-z]{4,}", arm.name.lower())) for arm in protocol.arms.items]
    distinct = sorted(set().union(*words) - set.intersection(*words)) if words else []
    if not distinct:
        return ARM_SPECIFIC_WORDS
    extra = "|".join(re.escape(word) for word in distinct)
    return re.compile(f"{ARM_SPECIFIC_WORDS.pattern}|\\b(?:{extra})", re.IGNORECASE)


def check_blinding_declared(
    protocol: Protocol, dictionary: DataDictionary, source: str = "metadata"
) -> Iterable[Finding]:
    """Every form or field that looks arm-specific is declared in the blinding policy.

    A form counts as declared when it is an unblinded form or arm-neutral; a field when its form
    is, or the field is masked (whole or by codes) or arm-neutral. The policy's own names must
    exist, and masked codes must be codes of their field.
    """
    policy = protocol.blinding
    forms = set(dictionary.forms)
    neutral = {item.name for item in policy.arm_neutral}
    declared_forms = set(policy.unblinded_forms) | (neutral & forms)
    declared_fields = set(policy.masked_field_names) | {m.field for m in policy.masked_codes}
    declared_fields |= neutral
    for name in sorted(neutral | set(policy.masked_field_names)):
        if name not in forms and dictionary.get(name) is None:
            yield Finding(
                "conformance.blinding_unknown",
                "major",
                f"the blinding policy names {name!r}, which is neither a form nor a field",
                value=name,
                source=source,
            )
    for masked in policy.masked_codes:
        spec = dictionary.get(masked.field)
        if spec is None:
            yield Finding(
                "conformance.blinding_unknown",
                "critical",
                f"the blinding policy masks codes of {masked.field!r}, which is not a field",
                field=masked.field,
                source=source,
            )
            continue
        unknown = [code for code in masked.code_texts if code not in spec.choice_codes]
        if unknown:
            yield Finding(
                "conformance.blinding_codes",
                "critical",
                f"the blinding policy masks code(s) {', '.join(unknown)} of {masked.field!r}, "
                f"which has codes {', '.join(spec.choice_codes) or 'none'}",
                field=masked.field,
                instrument=spec.form_name,
                source=source,
            )
    words = _arm_words(protocol)
    for form in dictionary.forms:
        if form in declared_forms:
            continue
        instrument = next((i for i in protocol.instruments if i.name == form), None)
        label = instrument.label if instrument is not None else ""
        if words.search(f"{form.replace('_', ' ')} {label}"):
            yield Finding(
                "conformance.blinding_undeclared",
                "critical",
                f"form {form!r} looks arm-specific; declare it in blinding.unblinded_forms "
                "(reveals allocation) or blinding.arm_neutral (with the reason)",
                instrument=form,
                source=source,
            )
    for spec in dictionary.fields:
        if spec.form_name in declared_forms or spec.field_name in declared_fields:
            continue
        if spec.field_name == dictionary.record_id_field:
            continue
        text = " ".join(
            (
                spec.field_name.replace("_", " "),
                spec.field_label,
                spec.field_note,
                spec.field_annotation,
                "" if spec.field_type == "calc" else spec.select_choices_or_calculations,
            )
        )
        if words.search(text):
            yield Finding(
                "conformance.blinding_undeclared",
                "critical",
                f"field {spec.field_name!r} ({spec.field_label!r}) looks arm-specific; declare "
                "it in blinding.masked_fields or masked_codes (reveals allocation) or "
                "blinding.arm_neutral (with the reason)",
                field=spec.field_name,
                instrument=spec.form_name,
                source=source,
            )


def _check_roles(protocol: Protocol, project: RedcapProject) -> Iterable[Finding]:
    """The REDCap rights of each role follow from the policy."""
    policy = protocol.blinding
    if not policy.roles:
        return
    source = project.directory
    dictionary = project.dictionary
    revealing_forms = set(policy.unblinded_forms)
    masked_forms = {
        spec.form_name
        for name in (*policy.masked_field_names, *(m.field for m in policy.masked_codes))
        if (spec := dictionary.get(name)) is not None
    }
    role_of = {user: role for role in policy.roles for user in role.redcap_users}
    for user in project.users:
        role = role_of.get(user.username)
        if role is None:
            yield Finding(
                "conformance.blinding_role_missing",
                "major",
                f"REDCap user {user.username!r} has no role in the blinding policy "
                "(blinding.roles): who is masked to what is undeclared",
                value=user.username,
                source=source,
            )
            continue
        if role.access == "unblinded":
            continue
        if user.username in policy.unblinded_users:
            yield Finding(
                "conformance.blinding_role_access",
                "critical",
                f"user {user.username!r} is one of blinding.unblinded_users but has the "
                f"{role.access} role {role.id!r}",
                value=user.username,
                source=source,
            )
        # the unblinded forms are checked for every blinded user by _check_access
        closed = (masked_forms - revealing_forms) if role.access == "masked" else set()
        for form in sorted(closed):
            if user.can_view(form) or user.can_export(form):
                yield Finding(
                    "conformance.blinding_role_access",
                    "critical",
                    f"user {user.username!r} ({role.access} role {role.id!r}) can see form "
                    f"{form!r}, which "
                    + (
                        "is unblinded"
                        if form in revealing_forms
                        else "holds fields or codes that reveal allocation"
                    ),
                    instrument=form,
                    value=user.username,
                    source=source,
                )
    users = {user.username for user in project.users}
    for role in policy.roles:
        for username in role.redcap_users:
            if username not in users:
                yield Finding(
                    "conformance.blinding_role_user",
                    "minor",
                    f"user {username!r} of role {role.id!r} is not a REDCap user",
                    value=username,
                    source=source,
                )


def _check_access(protocol: Protocol, project: RedcapProject) -> Iterable[Finding]:
    source = project.directory
    groups = {dag.unique_group_name for dag in project.dags}
    for site in protocol.sites:
        if site.dag not in groups:
            yield Finding(
                "conformance.dag_missing",
                "critical",
                f"site {site.id} has no data access group {site.dag!r} in REDCap",
                value=site.dag,
                source=source,
            )
    allowed = set(protocol.blinding.unblinded_users)
    usernames = {user.username for user in project.users}
    for username in protocol.blinding.unblinded_users:
        if username not in usernames:
            yield Finding(
                "conformance.unblinded_user_missing",
                "minor",
                f"unblinded user {username!r} of the protocol is not a REDCap user",
                value=username,
                source=source,
            )
    for user in project.users:
        if user.username in allowed and not user.data_access_group:
            continue
        if not user.data_access_group and not allowed:
            continue  # without a list of unblinded users only site users can be judged
        who = (
            f"site user {user.username!r} (data access group {user.data_access_group})"
            if user.data_access_group
            else f"blinded user {user.username!r}"
        )
        for form in protocol.blinding.unblinded_forms:
            if user.can_view(form) or user.can_export(form):
                severity: Severity = "critical"
                yield Finding(
                    "conformance.unblinded_access",
                    severity,
                    f"{who} can see the unblinded form {form!r}",
                    instrument=form,
                    value=user.username,
                    source=source,
                )
