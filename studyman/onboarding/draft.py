"""A draft ``protocol.yaml`` from a REDCap project's design.

:func:`draft_protocol` fills in what the REDCap design states (forms, events and the forms due
at each, repeating forms, sites from data access groups, field names, choice codes and their
labels) and recognises what it can from labels, field types and choices: the field that holds
the allocation, the adverse-event, medication, deviation, disposition, eligibility and liver
forms and their fields, rating scales by their items (:mod:`studyman.onboarding.scales`), the
C-SSRS. What a person must decide (windows, targets, the primary endpoint, SOC of each
preferred term, ...) is a ``TODO(decide): ...`` value (:mod:`studyman.onboarding.decisions`);
what was recognised rather than read is listed in :attr:`DraftProtocol.guesses` (the draft's
header repeats it) for a person to review.

Nothing here knows the reference study's names: every name comes from the project, every
recognition from words of labels (``Adverse event``, ``Preferred term``, ``Visit date``).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

from pydantic import BaseModel

from studyman.onboarding.decisions import Decision, find_decisions, todo
from studyman.onboarding.scales import RecognisedScale, recognise_scale
from studyman.protocol import models
from studyman.protocol.redcap_project import DictionaryField, RedcapProject

__all__ = ["DraftProtocol", "draft_protocol"]

_DATE_TYPES = frozenset({"date_ymd", "date_dmy", "date_mdy"})
_DATETIME_TYPES = frozenset(
    {"datetime_ymd", "datetime_dmy", "datetime_mdy", "datetime_seconds_ymd"}
)
_CATEGORICAL = frozenset({"radio", "dropdown"})


@dataclass(frozen=True, slots=True)
class DraftProtocol:
    """A draft protocol as a YAML-ready tree.

    Attributes
    ----------
    tree
        The ``protocol.yaml`` content (plain dicts, lists, strings and numbers).
    guesses
        ``(key, what was recognised and from what)``: values filled in from labels or choices,
        for a person to review.
    """

    tree: dict[str, Any]
    guesses: tuple[tuple[str, str], ...] = ()

    @property
    def decisions(self) -> tuple[Decision, ...]:
        """The ``TODO(decide)`` values left, in file order."""
        return find_decisions(self.tree)


def _name(label: str) -> str:
    """A snake_case name for a choice label (``Lost to follow-up`` -> ``lost_to_follow_up``)."""
    text = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")
    return text or "unnamed"


def _code(text: str) -> int | str:
    return int(text) if re.fullmatch(r"-?\d+", text.strip()) else text


def _is_date(f: DictionaryField) -> bool:
    return f.validation in _DATE_TYPES


def _is_datetime(f: DictionaryField) -> bool:
    return f.validation in _DATETIME_TYPES


def _is_number(f: DictionaryField) -> bool:
    return f.validation.startswith("number") or f.validation == "integer"


@dataclass
class _Builder:
    project: RedcapProject
    guesses: list[tuple[str, str]] = field(default_factory=list)

    # -- lookups --------------------------------------------------------------------------
    @property
    def fields(self) -> tuple[DictionaryField, ...]:
        return self.project.dictionary.fields

    def on(self, form: str) -> tuple[DictionaryField, ...]:
        return self.project.dictionary.fields_on(form)

    def form_label(self, form: str) -> str:
        for instrument in self.project.instruments:
            if instrument.instrument_name == form:
                return instrument.instrument_label
        return form

    def find(
        self,
        key: str,
        label: str,
        kind: Callable[[DictionaryField], bool],
        *,
        form: str | None = None,
        within: Iterable[DictionaryField] | None = None,
        exclude: Sequence[str] = (),
    ) -> DictionaryField | None:
        """The first field of *kind* whose label matches *label*; recorded as a guess."""
        pattern = re.compile(label, re.IGNORECASE)
        pool = within if within is not None else (self.on(form) if form else self.fields)
        for candidate in pool:
            if candidate.field_name in exclude or not kind(candidate):
                continue
            if pattern.search(candidate.field_label):
                self.guesses.append(
                    (key, f"{candidate.field_name} (label {candidate.field_label!r})")
                )
                return candidate
        return None

    def field_or_todo(
        self,
        key: str,
        label: str,
        kind: Callable[[DictionaryField], bool],
        question: str,
        **options: Any,
    ) -> str:
        found = self.find(key, label, kind, **options)
        return found.field_name if found is not None else todo(question)

    def forms_matching(self, label: str, *, repeating: bool | None = None) -> list[str]:
        pattern = re.compile(label, re.IGNORECASE)
        forms = []
        for instrument in self.project.instruments:
            name = instrument.instrument_name
            if repeating is not None and self.project.is_repeating(name) != repeating:
                continue
            if pattern.search(instrument.instrument_label) or pattern.search(
                name.replace("_", " ")
            ):
                forms.append(name)
        return forms

    def form_of(self, key: str, label: str, *, repeating: bool | None = None) -> str | None:
        forms = self.forms_matching(label, repeating=repeating)
        if forms:
            self.guesses.append((key, f"form {forms[0]} (label {self.form_label(forms[0])!r})"))
            return forms[0]
        return None

    def first_event(self, form: str) -> str | None:
        events = self.project.events_of(form)
        return events[0] if events else None

    def event_or_todo(self, form: str | None, question: str) -> str:
        if form is None or not self.project.is_longitudinal:
            return todo(question)
        event = self.first_event(form)
        return event if event is not None else todo(question)

    def codes(
        self, source: DictionaryField | None, label: str, question: str
    ) -> list[int | str] | str:
        if source is None:
            return todo(question)
        pattern = re.compile(label, re.IGNORECASE)
        found = [_code(c.code) for c in source.choices if pattern.search(c.label)]
        return found if found else todo(question)

    def code(self, source: DictionaryField | None, label: str, question: str) -> int | str:
        found = self.codes(source, label, question)
        return found[0] if isinstance(found, list) else found


def _categorical(f: DictionaryField) -> bool:
    return f.field_type in _CATEGORICAL


def _yesno(f: DictionaryField) -> bool:
    return f.field_type in ("yesno", "truefalse")


def _text(f: DictionaryField) -> bool:
    return f.field_type == "text" and not f.validation


def _any_text(f: DictionaryField) -> bool:
    return f.field_type in ("text", "notes")


def _checkbox(f: DictionaryField) -> bool:
    return f.field_type == "checkbox"


def _number(f: DictionaryField) -> bool:
    return f.field_type == "text" and _is_number(f)


_KIND_WORDS: tuple[tuple[str, str], ...] = (
    (r"screen", "screening"),
    (r"baseline|randomi[sz]|\bday\s*0\b", "baseline"),
    (r"end of (the )?treatment|\beot\b", "end_of_treatment"),
    (r"follow[\s-]*up", "follow_up"),
    (r"end of (the )?study|disposition|\bexit\b|study (completion|termination)", "end_of_study"),
    (r"unscheduled", "unscheduled"),
    (r"\b(week|day|month|visit|dose)\b", "treatment"),
)
_SCHEDULED = ("screening", "baseline", "treatment", "end_of_treatment", "follow_up")


def _known(model: type[BaseModel], key: str) -> bool:
    """True when the protocol schema has *key* (optional keys are written only when it has)."""
    return key in model.model_fields


def _section_of(module: Any, model_name: str) -> str | None:
    """The protocol.yaml key of the optional section whose model is *model_name*, when the
    schema has that section (the draft follows the schema it runs with)."""
    model = getattr(module, model_name, None)
    if model is None:
        return None
    for key, info in models.Protocol.model_fields.items():
        if model in get_args(info.annotation) or info.annotation is model:
            return key
    return None


def _target_day(label: str, kind: str) -> int | None:
    if kind == "baseline":
        return 0
    match = re.search(r"\b(day|week|month)\s*(-?\d+)", label, re.IGNORECASE)
    if match is None:
        return None
    number = int(match.group(2))
    return {"day": 1, "week": 7, "month": 28}[match.group(1).lower()] * number


def draft_protocol(project: RedcapProject) -> DraftProtocol:
    """The draft protocol of *project*.

    Parameters
    ----------
    project
        The REDCap project's design (a project directory read by
        :func:`~studyman.protocol.load_redcap_project`).

    Returns
    -------
    DraftProtocol
        Every section of ``protocol.yaml``; ``TODO(decide)`` values where the design cannot
        say, and the list of recognised values to review.
    """
    b = _Builder(project)
    dictionary = project.dictionary
    tree: dict[str, Any] = {}
    title = project.project.project_title.strip()
    tree["study"] = {
        "id": todo("a short identifier of the study (its acronym, e.g. ABC-01)"),
        "title": title or todo("the study's full title"),
        "version": todo("the protocol version this file follows (e.g. '1.0')"),
        "record_id_field": dictionary.record_id_field,
    }
    tree["redcap_project"] = "redcap"

    scales = _recognise_scales(b)
    events = _events(b)
    tree["arms"] = _arms(b)
    tree["randomization"] = _randomization(b)
    tree["sites"] = _sites(b)
    tree["enrolment"] = {
        "target": todo("the number of participants to randomise"),
        "start": todo("the first day of enrolment (YYYY-MM-DD)"),
        "end": todo("the last day of enrolment (YYYY-MM-DD)"),
        "screening_date_field": b.field_or_todo(
            "enrolment.screening_date_field",
            r"screening date|date of screening",
            _is_date,
            "choose the date field that records screening",
        ),
        "consent_date_field": b.field_or_todo(
            "enrolment.consent_date_field",
            r"consent",
            _is_date,
            "choose the date field that records informed consent",
        ),
    }
    if _known(models.Enrolment, "age_field"):
        tree["enrolment"]["age_field"] = b.field_or_todo(
            "enrolment.age_field",
            r"^\s*age\b",
            lambda f: f.validation in ("integer", "number") or f.field_type == "calc",
            "choose the field holding the participant's age",
        )
    if _known(models.Enrolment, "sex_field"):
        tree["enrolment"]["sex_field"] = b.field_or_todo(
            "enrolment.sex_field",
            r"^\s*(sex|gender)\b",
            _categorical,
            "choose the field holding the participant's sex",
        )
    for key, words, question in (
        ("race_field", r"^\s*race\b", "choose the field holding the participant's race"),
        ("ethnicity_field", r"ethnic", "choose the field holding the participant's ethnicity"),
    ):
        if _known(models.Enrolment, key):
            tree["enrolment"][key] = b.field_or_todo(
                f"enrolment.{key}",
                words,
                lambda f: _categorical(f) or _checkbox(f),
                question,
            )
    if _known(models.Enrolment, "baseline_fields"):
        tree["enrolment"]["baseline_fields"] = todo(
            "further baseline characteristics to report (a list of fields of the participant "
            "form); [] for none"
        )
    tree["instruments"] = [
        {"name": i.instrument_name, "label": i.instrument_label}
        | ({"repeating": True} if project.is_repeating(i.instrument_name) else {})
        for i in project.instruments
    ]
    tree["visits"] = events
    tree["visit_form"] = _visit_form(b)
    tree["treatment"] = _treatment(b, events)
    if project.repeating:
        tree["repeating"] = [
            {"event": r.event_name, "form": r.form_name}
            for r in project.repeating
            if r.event_name or not project.is_longitudinal
        ]
    tree["eligibility"] = _eligibility(b)
    tree["disposition"] = _disposition(b, tree["eligibility"])
    tree["scoring"] = [_scoring(scale) for scale in scales]
    tree["endpoints"] = _endpoints(b, scales, events)
    tree["cssrs"] = _cssrs(b)
    tree["liver"] = _liver(b)
    withdrawal = _withdrawal(b, scales)
    if withdrawal is not None:
        tree["withdrawal"] = withdrawal
    vital_signs_key = _section_of(models, "VitalSigns")
    if vital_signs_key is not None:
        vital_signs = _vital_signs(b)
        if vital_signs is not None:
            tree[vital_signs_key] = vital_signs
    tree["adverse_events"] = _adverse_events(b)
    tree["reporting_clocks"] = todo(
        "the expedited-reporting clocks (id, label, applies_to, recipient, limit_hours, "
        "report_field), e.g. SAE to the sponsor within 24 h; [] when there are none"
    )
    tree["concomitant_medications"] = _conmeds(b)
    tree["blinding"] = _blinding(b, tree["arms"])
    tree["deviations"] = _deviations(b)
    tree["reporting"] = {
        "data_cut": todo("the data cut-off date of the next DSMB report (YYYY-MM-DD)"),
        "dsmb_meetings": todo("the dates of the DSMB meetings (a list of YYYY-MM-DD)"),
    }
    return DraftProtocol(tree=tree, guesses=tuple(b.guesses))


# -- sections ---------------------------------------------------------------------------------
def _arms(b: _Builder) -> dict[str, Any]:
    arm = b.find(
        "arms.field",
        r"\barms?\b|allocat|treatment group|randomi[sz]ed to",
        lambda f: _categorical(f) and len(f.choices) >= 2,
    )
    if arm is None:
        redcap_arms = [a.name for a in b.project.arms]
        hint = (
            f"; the REDCap arms ({', '.join(redcap_arms)}) cannot serve: studyman reads the "
            "allocation from a field on an unblinded form (REDCap arms show it to every user)"
            if len(redcap_arms) > 1
            else ""
        )
        return {
            "field": todo(
                "choose the field that holds the allocation (a radio or dropdown)" + hint
            ),
            "form": todo("the form of the allocation field"),
            "event": todo("the event at which the allocation is recorded"),
            "items": todo(
                "the arms: code (the allocation field's code), name, ratio, closed_report_code"
            ),
        }
    letters = string.ascii_uppercase
    b.guesses.append(
        (
            "arms.items",
            f"codes and names from the choices of {arm.field_name}; ratio 1 each, closed-report "
            "codes A, B, ... in that order",
        )
    )
    reference = (
        {"reference": todo("the code of the reference arm (each other arm is compared with it)")}
        if _known(models.Arms, "reference")
        else {}
    )
    return {
        "field": arm.field_name,
        "form": arm.form_name,
        "event": b.event_or_todo(arm.form_name, "the event at which the allocation is recorded"),
        "items": [
            {
                "code": _code(choice.code),
                "name": choice.label,
                "ratio": 1,
                "closed_report_code": letters[index % 26],
            }
            for index, choice in enumerate(arm.choices)
        ],
    } | reference


def _randomization(b: _Builder) -> dict[str, Any]:
    return {
        "method": todo("the randomisation method (e.g. stratified permuted blocks)"),
        "block_sizes": todo("the block sizes (a list of multiples of the allocation ratio sum)"),
        "date_field": b.field_or_todo(
            "randomization.date_field",
            r"randomi[sz]ation date|date (of )?randomi[sz]",
            _is_date,
            "choose the date field that records randomisation",
        ),
        "randomized_field": b.field_or_todo(
            "randomization.randomized_field",
            r"^\s*randomi[sz]ed\b",
            _yesno,
            "choose the yes/no field that records whether a participant was randomised",
        ),
        "number_field": b.field_or_todo(
            "randomization.number_field",
            r"randomi[sz]ation (number|no\b|id)",
            _any_text,
            "choose the field that holds the randomisation number",
        ),
        "stratum_field": b.field_or_todo(
            "randomization.stratum_field",
            r"randomi[sz]ation stratum|\bstratum\b",
            _text,
            "choose the text field that holds the randomisation stratum",
        ),
        "stratum_format": todo(
            "how a stratum is written, from the factors' ids (e.g. '{site}-{severity}')"
        ),
        "stratification": todo(
            "the stratification factors (id, label, source: site or score, ...); [] for none"
        ),
    }


def _sites(b: _Builder) -> list[dict[str, Any]] | str:
    if not b.project.dags:
        return todo(
            "the sites (id, name, dag, enrolment_target, activation_date); the project has no "
            "data access groups"
        )
    return [
        {
            "id": dag.unique_group_name.upper(),
            "name": dag.data_access_group_name,
            "dag": dag.unique_group_name,
            "enrolment_target": todo("the number of participants this site should randomise"),
            "activation_date": todo("the day this site was activated (YYYY-MM-DD)"),
        }
        for dag in b.project.dags
    ]


def _events(b: _Builder) -> list[dict[str, Any]]:
    project = b.project
    order = {name: i for i, name in enumerate(i.instrument_name for i in project.instruments)}
    if not project.is_longitudinal or not project.events:
        return [
            {
                "event": todo(
                    "this REDCap project is classic (no events); studyman reads longitudinal "
                    "projects: define the study's events in REDCap, then run init again"
                ),
                "label": "All forms",
                "kind": todo("the kind of this visit"),
                "instruments": [i.instrument_name for i in project.instruments],
            }
        ]
    visits: list[dict[str, Any]] = []
    for index, event in enumerate(project.events):
        name = event.unique_event_name
        label = event.custom_event_label or event.event_name
        forms = sorted(project.forms_at(name), key=lambda form: order.get(form, len(order)))
        key = f"visits[{index}]"
        kind: str | None = None
        if forms and all(project.is_repeating(form, name) for form in forms):
            kind = "log"
        else:
            for words, candidate in _KIND_WORDS:
                if re.search(words, label, re.IGNORECASE):
                    kind = candidate
                    break
        visit: dict[str, Any] = {"event": name, "label": label}
        if kind is None:
            visit["kind"] = todo(
                "the kind of this visit: screening, baseline, treatment, end_of_treatment, "
                "follow_up, log, end_of_study or unscheduled"
            )
        else:
            visit["kind"] = kind
            b.guesses.append((f"{key}.kind", f"{kind} (event label {label!r})"))
        if kind in _SCHEDULED:
            target = _target_day(label, kind or "")  # kind is one of _SCHEDULED here
            visit["target_day"] = (
                target
                if target is not None
                else todo("the target study day (randomisation = day 0)")
            )
            visit["window"] = todo("the visit window in study days, e.g. {start: 4, end: 10}")
            date_field = b.find(
                f"{key}.date_field",
                r"(visit|screening|assessment) date|date of (the )?(visit|screening|assessment)",
                _is_date,
                within=[f for form in forms for f in b.on(form)],
            )
            visit["date_field"] = (
                date_field.field_name
                if date_field is not None
                else todo("choose the date field that dates this visit")
            )
        visit["instruments"] = forms or todo(
            "the forms due at this event (no form is designated to it in REDCap)"
        )
        visits.append(visit)
    return visits


def _visit_form(b: _Builder) -> dict[str, Any]:
    done = b.find("visit_form.done_field", r"visit (done|completed|took place|attended)", _yesno)
    if done is None:
        return {
            "form": todo("the form recording whether each visit took place and when"),
            "done_field": todo("its yes/no field: the visit took place"),
            "date_field": todo("its date field: the date of the visit"),
        }
    date = b.find("visit_form.date_field", r"date", _is_date, form=done.form_name)
    return {
        "form": done.form_name,
        "done_field": done.field_name,
        "date_field": date.field_name if date else todo("the date field of the visit form"),
    }


def _exposure(b: _Builder, key: str, words: str) -> dict[str, Any] | None:
    form = b.form_of(key, words, repeating=True)
    if form is None:
        return None
    date = b.find(f"{key}.date_field", r"date", _is_date, form=form)
    given = b.find(
        f"{key}.given_field", r"attended|taken|given|received|administered", _yesno, form=form
    )
    return {
        "form": form,
        "date_field": date.field_name if date else todo("the date field of this log"),
        "given_field": given.field_name
        if given
        else todo("the yes/no field: the session attended or the dose taken"),
    }


def _treatment(b: _Builder, visits: list[dict[str, Any]]) -> dict[str, Any]:
    def event_of(kind: str, question: str) -> str:
        for visit in visits:
            if visit.get("kind") == kind:
                return str(visit["event"])
        return todo(question)

    sessions = _exposure(b, "treatment.sessions", r"session|therapy|psychotherapy")
    doses = _exposure(b, "treatment.doses", r"\bdos(e|es|ing)\b|administration")
    treatment: dict[str, Any] = {
        "sessions": sessions
        or todo("the log of treatment sessions given to every arm (form, date_field, given_field)"),
        "doses": doses,
        "weeks": todo("the length of the treatment period in weeks"),
        "end_of_treatment_event": event_of(
            "end_of_treatment", "the event that ends the treatment period"
        ),
        "follow_up_event": event_of("follow_up", "the follow-up event after treatment"),
        "taper_weeks": [],
    }
    planned: int | str = todo("the number of treatment sessions planned per participant")
    if sessions is not None:
        number = b.find(
            "treatment.cbt_sessions_planned",
            r"session (number|no\b|#)",
            lambda f: f.validation == "integer" and bool(f.text_validation_max.strip()),
            form=str(sessions["form"]),
        )
        if number is not None and re.fullmatch(r"\d+", number.text_validation_max.strip()):
            planned = int(number.text_validation_max.strip())
    treatment["cbt_sessions_planned"] = planned
    treatment["adherence_threshold"] = todo(
        "the share of planned sessions that counts as adherent (0 to 1, e.g. 0.75)"
    )
    return treatment


def _eligibility(b: _Builder) -> dict[str, Any]:
    for instrument in b.project.instruments:
        form = instrument.instrument_name
        criteria: list[dict[str, Any]] = []
        kind: str | None = None
        for item in b.on(form):
            header = item.section_header
            if header:
                if re.search(r"inclusion", header, re.IGNORECASE):
                    kind = "inclusion"
                elif re.search(r"exclusion", header, re.IGNORECASE):
                    kind = "exclusion"
                else:
                    kind = None
            if kind is not None and _yesno(item):
                criteria.append(
                    {
                        "id": item.field_name,
                        "field": item.field_name,
                        "kind": kind,
                        "text": item.field_label.strip() or todo("the criterion's text"),
                    }
                )
        if not criteria:
            continue
        b.guesses.append(("eligibility.criteria", f"{len(criteria)} criteria on form {form}"))
        listed = [str(c["field"]) for c in criteria]
        return {
            "form": form,
            "event": b.event_or_todo(form, "the event of the eligibility form"),
            "date_field": b.field_or_todo(
                "eligibility.date_field", r"date", _is_date, "the eligibility date", form=form
            ),
            "eligible_field": b.field_or_todo(
                "eligibility.eligible_field",
                r"\beligible\b",
                _yesno,
                "choose the yes/no field: the participant is eligible",
                form=form,
                exclude=listed,
            ),
            "screen_fail_reason_field": b.field_or_todo(
                "eligibility.screen_fail_reason_field",
                r"screen(ing)?[\s-]*fail",
                _categorical,
                "choose the field that holds the reason for screen failure",
                form=form,
            ),
            "criteria": criteria,
        }
    return {
        "form": todo("the form that records eligibility (inclusion and exclusion criteria)"),
        "event": todo("the event of the eligibility form"),
        "date_field": todo("the eligibility date"),
        "eligible_field": todo("the yes/no field: the participant is eligible"),
        "screen_fail_reason_field": todo("the field holding the reason for screen failure"),
        "criteria": todo("the criteria (id, field, kind inclusion/exclusion, text)"),
    }


def _disposition(b: _Builder, eligibility: dict[str, Any]) -> dict[str, Any]:
    status = b.find(
        "disposition.status_field",
        r"status at (the )?end of (the )?study|disposition|completion status|study status",
        _categorical,
    )
    result: dict[str, Any]
    if status is None:
        result = {
            "form": todo("the form that records how each participant left the study"),
            "event": todo("the event of the disposition form"),
            "status_field": todo("the field holding the end-of-study status"),
            "date_field": todo("the date of completion or discontinuation"),
            "death_date_field": todo("the date of death"),
            "codes": todo("the status codes (code, name, label; completed, death, adverse_event)"),
        }
    else:
        form = status.form_name
        codes = []
        for choice in status.choices:
            entry: dict[str, Any] = {
                "code": _code(choice.code),
                "name": _name(choice.label),
                "label": choice.label,
            }
            if re.match(r"complete", choice.label, re.IGNORECASE):
                entry["completed"] = True
            if re.search(r"\bdeath\b|\bdied\b", choice.label, re.IGNORECASE):
                entry["death"] = True
            if re.search(r"adverse event", choice.label, re.IGNORECASE):
                entry["adverse_event"] = True
            codes.append(entry)
        result = {
            "form": form,
            "event": b.event_or_todo(form, "the event of the disposition form"),
            "status_field": status.field_name,
            "date_field": b.field_or_todo(
                "disposition.date_field",
                r"date",
                lambda f: _is_date(f) and not re.search(r"death", f.field_label, re.I),
                "the date of completion or discontinuation",
                form=form,
            ),
            "death_date_field": b.field_or_todo(
                "disposition.death_date_field",
                r"death",
                _is_date,
                "the date of death",
                form=form,
            ),
            "codes": codes,
        }
        if _known(models.Disposition, "death_cause_field"):
            cause = b.find(
                "disposition.death_cause_field", r"cause of death|death cause", _any_text
            )
            # None: the study records no cause of death (the schema allows it).
            result["death_cause_field"] = cause.field_name if cause else None
    reason_field = eligibility.get("screen_fail_reason_field")
    reason = b.project.dictionary.get(reason_field) if isinstance(reason_field, str) else None
    if reason is not None:
        result["screen_fail_reasons"] = [
            {"code": _code(c.code), "name": _name(c.label), "label": c.label}
            for c in reason.choices
        ]
    return result


def _recognise_scales(b: _Builder) -> list[RecognisedScale]:
    scales = []
    for instrument in b.project.instruments:
        scale = recognise_scale(
            instrument.instrument_name,
            instrument.instrument_label,
            b.on(instrument.instrument_name),
        )
        if scale is not None:
            b.guesses.append(
                (
                    "scoring",
                    f"{scale.spec.key} on form {scale.form} ({len(scale.items)} items); "
                    f"missing-item rule and proration are the scale's usual ones",
                )
            )
            scales.append(scale)
    return scales


def _scoring(scale: RecognisedScale) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "instrument": scale.form,
        "label": scale.spec.key,
        **({"paramcd": scale.spec.paramcd} if _known(models.Scoring, "paramcd") else {}),
        "total_field": scale.total_field
        or todo("the calc field holding the total (add one in REDCap)"),
        "total_range": {"min": 0, "max": scale.max_total},
        "max_missing_items": scale.spec.max_missing_items,
        "proration": scale.spec.proration,
        "items": [{"field": name, "values": list(values)} for name, values in scale.items],
    }
    if scale.unscored:
        entry["unscored_items"] = [
            {"field": name, "values": list(values)} for name, values in scale.unscored
        ]
    if scale.either_or:
        entry["exactly_one_of"] = [list(scale.either_or)]
    if scale.spec.bands:
        entry["bands"] = [
            {"name": name, "min": low, "max": high} for name, low, high in scale.spec.bands
        ]
    return entry


def _endpoints(
    b: _Builder, scales: Sequence[RecognisedScale], visits: list[dict[str, Any]]
) -> dict[str, Any]:
    def event_of(kind: str, question: str) -> str:
        for visit in visits:
            if visit.get("kind") == kind:
                return str(visit["event"])
        return todo(question)

    primary_scale = next((s for s in scales if s.spec.key in ("HAM-D-17", "MADRS")), None)
    primary: dict[str, Any] = {
        "name": todo("the primary endpoint in words (e.g. change from baseline in ... at week 12)")
    }
    if primary_scale is not None:
        b.guesses.append(
            ("endpoints.primary.instrument", f"{primary_scale.form} ({primary_scale.spec.key})")
        )
        primary["instrument"] = primary_scale.form
        primary["field"] = primary_scale.total_field or todo("the total field of the scale")
    else:
        primary["instrument"] = todo("the form of the primary outcome scale")
        primary["field"] = todo("the field of the primary outcome (the scale's total)")
    primary["baseline_event"] = event_of("baseline", "the baseline event of the primary endpoint")
    primary["event"] = event_of(
        "end_of_treatment", "the event at which the primary endpoint is assessed"
    )
    return {
        "primary": primary,
        "response_reduction": todo(
            "the relative reduction from baseline that counts as response (e.g. 0.5)"
        ),
        "remission_max": todo("the highest total that counts as remission"),
    }


#: The C-SSRS ideation questions 1 to 5, in the scale's own words.
_CSSRS_IDEATION: tuple[str, ...] = (
    r"wish to be dead",
    r"non[\s-]*specific active suicidal thought",
    r"any methods",
    r"some intent",
    r"with (a )?specific plan|plan and intent",
)


def _cssrs_forms(b: _Builder) -> list[str]:
    """Forms named as the C-SSRS, or asking its first ideation question."""
    named = b.forms_matching(r"c[\s-]*ssrs|columbia")
    asking = [
        i.instrument_name
        for i in b.project.instruments
        if any(
            _yesno(f) and re.search(_CSSRS_IDEATION[0], f.field_label, re.IGNORECASE)
            for f in b.on(i.instrument_name)
        )
    ]
    return named + [form for form in asking if form not in named]


def _ideation_fields(b: _Builder, form: str) -> list[str]:
    """The five ideation questions: by the scale's words, else numbered 1. to 5."""
    yesno = [f for f in b.on(form) if _yesno(f)]
    by_words = []
    for words in _CSSRS_IDEATION:
        hit = next(
            (
                f
                for f in yesno
                if f.field_name not in by_words and re.search(words, f.field_label, re.IGNORECASE)
            ),
            None,
        )
        if hit is None:
            break
        by_words.append(hit.field_name)
    if len(by_words) == len(_CSSRS_IDEATION):
        return by_words
    return [f.field_name for f in yesno if re.match(r"^\s*[1-5]\s*[.)]", f.field_label)]


def _cssrs(b: _Builder) -> dict[str, Any] | str:
    forms = _cssrs_forms(b)
    since = next((f for f in forms if re.search(r"since", b.form_label(f), re.I)), None)
    if since is None and len(forms) == 2:
        # The since-last-visit form is the one due at more events.
        since = max(forms, key=lambda form: len(b.project.events_of(form)))
    screening = next((f for f in forms if f != since), None)
    if since is None or screening is None:
        return todo(
            "the C-SSRS forms and fields (screening_form, since_last_form, ideation_fields, "
            "...); no C-SSRS forms (screening and since last visit) were recognised"
        )
    b.guesses.append(("cssrs", f"screening form {screening}, since-last-visit form {since}"))
    ideation = _ideation_fields(b, since)
    behaviour = [
        f.field_name
        for f in b.on(since)
        if _yesno(f) and re.search(r"attempt|preparatory", f.field_label, re.I)
    ]
    return {
        "screening_form": screening,
        "since_last_form": since,
        "ideation_fields": ideation or todo("the five ideation fields (types 1 to 5)"),
        "follow_up_ideation_fields": ideation[2:]
        if len(ideation) == 5
        else todo("the ideation fields asked only when type 1 or 2 is yes"),
        "gate_fields": ideation[:2]
        if len(ideation) == 5
        else todo("the ideation fields that open the rest (types 1 and 2)"),
        "behaviour_fields": behaviour or todo("the suicidal behaviour fields"),
        "self_injury_field": b.field_or_todo(
            "cssrs.self_injury_field",
            r"self[\s-]*injur",
            _yesno,
            "the non-suicidal self-injury field",
            form=since,
        ),
        "safety_action_field": b.field_or_todo(
            "cssrs.safety_action_field",
            r"safety action",
            _yesno,
            "the yes/no field: a safety action was taken",
            form=since,
        ),
        "safety_action_required_ideation": ideation[3:]
        if len(ideation) == 5
        else todo("the ideation types that require a safety action (usually 4 and 5)"),
    }


_LIVER_TESTS: tuple[tuple[str, str, str], ...] = (
    ("ALT", r"\bALT\b|alanine", "Alanine aminotransferase"),
    ("AST", r"\bAST\b|aspartate", "Aspartate aminotransferase"),
    ("ALP", r"\bALP\b|alkaline phosphatase", "Alkaline phosphatase"),
    ("BILI", r"bilirubin", "Total bilirubin"),
)


def _liver(b: _Builder) -> dict[str, Any] | str:
    found: dict[str, DictionaryField] = {}
    for test_id, words, _ in _LIVER_TESTS:
        hit = b.find(f"liver.tests ({test_id})", words, _number)
        if hit is not None:
            found[test_id] = hit
    if len(found) < len(_LIVER_TESTS):
        return todo(
            "the liver tests (ALT, AST, ALP, total bilirubin: field, unit, upper limit of "
            "normal) and the Hy's law rule; not all four were recognised"
        )
    form = found["ALT"].form_name
    tests = []
    for test_id, _, label in _LIVER_TESTS:
        item = found[test_id]
        unit = re.search(r"\(([^)]+)\)\s*$", item.field_label)
        uln = re.search(r"\bULN\s*([0-9]+(?:\.[0-9]+)?)", item.field_note)
        tests.append(
            {
                "id": test_id,
                "field": item.field_name,
                "label": label,
                "unit": unit.group(1) if unit else todo("the unit of this test"),
                "uln": float(uln.group(1))
                if uln
                else todo("this test's upper limit of normal (a number in its unit)"),
            }
        )
    for test in tests:
        if isinstance(test["uln"], float) and test["uln"].is_integer():
            test["uln"] = int(test["uln"])
    return {
        "form": form,
        "date_field": b.field_or_todo(
            "liver.date_field", r"date", _is_date, "the sample date field", form=form
        ),
        "tests": tests,
        # FDA guidance (2009) on drug-induced liver injury: the usual Hy's law thresholds.
        "hys_law": {
            "transaminases": ["ALT", "AST"],
            "transaminase_multiple": 3,
            "bilirubin": "BILI",
            "bilirubin_multiple": 2,
            "alp": "ALP",
            "alp_max_multiple": 2,
        },
        "transaminase_alert_multiple": 3,
    }


def _withdrawal(b: _Builder, scales: Sequence[RecognisedScale]) -> dict[str, Any] | None:
    cows = next((s for s in scales if s.spec.key == "COWS"), None)
    if cows is None:
        return None
    events = list(b.project.events_of(cows.form))
    moderate = next((low for name, low, _ in cows.spec.bands if name == "moderate"), None)
    return {
        "instrument": cows.form,
        "total_field": cows.total_field or todo("the total field of the withdrawal scale"),
        "events": events or todo("the events at which withdrawal is assessed"),
        "aesi_threshold": int(moderate)
        if moderate is not None
        else todo("the total at which withdrawal is reviewed as an AESI"),
    }


_VITAL_SIGNS: tuple[tuple[str, str], ...] = (
    ("SBP", r"systolic"),
    ("DBP", r"diastolic"),
    ("HR", r"heart rate|pulse"),
    ("RESP", r"respirat"),
    ("TEMP", r"temperature"),
    ("WEIGHT", r"weight"),
    ("HEIGHT", r"height"),
)


def _vital_signs(b: _Builder) -> dict[str, Any] | None:
    """The vital-signs form: numeric fields labelled as the usual measurements, on one form."""
    first = b.find("vital_signs.form", r"systolic|heart rate|pulse", _number)
    if first is None:
        return None
    parameters = []
    taken: set[str] = set()
    for item in b.on(first.form_name):  # in the form's order
        if not _number(item):
            continue
        parameter_id = next(
            (
                pid
                for pid, words in _VITAL_SIGNS
                if pid not in taken and re.search(words, item.field_label, re.IGNORECASE)
            ),
            None,
        )
        if parameter_id is None:
            continue
        taken.add(parameter_id)
        b.guesses.append(
            (f"vital_signs ({parameter_id})", f"{item.field_name} (label {item.field_label!r})")
        )
        unit = re.search(r"\(([^)]+)\)\s*$", item.field_label)
        parameters.append(
            {
                "id": parameter_id,
                "field": item.field_name,
                "label": re.sub(r"\s*\([^)]*\)\s*$", "", item.field_label).strip(),
                "unit": unit.group(1) if unit else todo("the unit of this measurement"),
            }
        )
    return {"form": first.form_name, "parameters": parameters}


def _adverse_events(b: _Builder) -> dict[str, Any] | str:
    form = b.form_of("adverse_events.form", r"adverse[\s_]*events?|\bAEs?\b", repeating=True)
    if form is None:
        return todo(
            "the adverse-event log (a repeating form) and its fields; no repeating form named "
            "for adverse events was found"
        )

    def pick(key: str, words: str, kind: Callable[[DictionaryField], bool], what: str) -> str:
        return b.field_or_todo(f"adverse_events.{key}", words, kind, what, form=form)

    def field_at(name: str) -> DictionaryField | None:
        return b.project.dictionary.get(name) if not name.startswith("TODO") else None

    result: dict[str, Any] = {
        "form": form,
        "event": b.event_or_todo(form, "the event of the adverse-event log"),
        "term_field": pick(
            "term_field", r"verbatim|adverse event|event term", _any_text, "the verbatim term"
        ),
        "pt_field": pick("pt_field", r"preferred term", _categorical, "the preferred-term field"),
        "soc_field": pick(
            "soc_field", r"system organ class|\bSOC\b", _categorical, "the SOC field"
        ),
        "start_field": pick("start_field", r"onset|start", _is_date, "the onset date"),
        "end_field": pick("end_field", r"\bend\b|stop|resol", _is_date, "the end date"),
        "severity_field": pick(
            "severity_field", r"severity|intensity|grade", _categorical, "the severity field"
        ),
        "serious_field": pick("serious_field", r"^\s*serious", _yesno, "the seriousness field"),
        "serious_criteria_field": pick(
            "serious_criteria_field",
            r"serious(ness)? criteri",
            _checkbox,
            "the seriousness criteria (a checkbox field)",
        ),
        "related_field": pick(
            "related_field", r"relat|causal", _categorical, "the relatedness field"
        ),
        "outcome_field": pick("outcome_field", r"^\s*outcome", _categorical, "the outcome field"),
        "awareness_field": pick(
            "awareness_field",
            r"aware",
            lambda f: _is_datetime(f) or _is_date(f),
            "the date (and time) the site became aware of a serious event",
        ),
        "report_field": pick(
            "report_field",
            r"sponsor",
            lambda f: _is_datetime(f) or _is_date(f),
            "the date (and time) the serious event was reported to the sponsor",
        ),
        "aesi_field": pick(
            "aesi_field", r"special interest|\bAESI\b", _categorical, "the AESI field"
        ),
    }
    expected = b.find("adverse_events.expected_field", r"^\s*expected", _yesno, form=form)
    if expected is not None:
        result["expected_field"] = expected.field_name
    unanticipated = b.find(
        "adverse_events.unanticipated_field", r"unanticipated", _yesno, form=form
    )
    if unanticipated is not None:
        result["unanticipated_field"] = unanticipated.field_name
    related = field_at(result["related_field"])
    criteria = field_at(result["serious_criteria_field"])
    outcome = field_at(result["outcome_field"])
    result["related_codes"] = b.codes(
        related, r"possibl|probabl|definite", "the relatedness codes counted as related"
    )
    result["fatal_or_life_threatening_criteria"] = b.codes(
        criteria,
        r"death|fatal|life",
        "the seriousness criteria codes that make an event fatal or life-threatening",
    )
    result["fatal_outcome_code"] = b.code(
        outcome, r"fatal|death|died", "the outcome code for a fatal event"
    )
    action = b.find("adverse_events.action_field", r"action taken", _categorical, form=form)
    if action is not None:
        result["action_field"] = action.field_name
        result["treatment_withdrawn_action_code"] = b.code(
            action,
            r"withdrawn|discontinued|stopped",
            "the action code meaning study treatment was withdrawn",
        )
    result["ongoing_outcome_codes"] = b.codes(
        outcome, r"^\s*(recovering|not recovered|ongoing|resolving)", "outcome codes: ongoing"
    )
    result["recovered_outcome_codes"] = b.codes(
        outcome, r"^\s*(recovered|resolved)", "outcome codes: recovered"
    )
    soc = field_at(result["soc_field"])
    pt = field_at(result["pt_field"])
    result["socs"] = (
        [{"code": _code(c.code), "name": c.label} for c in soc.choices]
        if soc is not None and soc.choices
        else todo("the system organ classes (code, name)")
    )
    result["coding_list"] = (
        [
            {
                "code": _code(c.code),
                "pt": c.label,
                "soc": todo(f"the SOC code of {c.label!r}"),
            }
            for c in pt.choices
        ]
        if pt is not None and pt.choices
        else todo("the study coding list (code, pt, soc)")
    )
    aesi = field_at(result["aesi_field"])
    if aesi is not None:
        result["aesi"] = [
            {
                "code": _code(c.code),
                "name": _name(c.label),
                "label": c.label,
                "pts": todo(f"the preferred-term codes that are {c.label!r} events"),
            }
            for c in aesi.choices
            if re.fullmatch(r"\d+", c.code) and int(c.code) >= 1
        ]
    return result


def _conmeds(b: _Builder) -> dict[str, Any] | str:
    form = b.form_of(
        "concomitant_medications.form",
        r"concomitant|con[\s_-]*meds?|medications?",
        repeating=True,
    )
    if form is None:
        return todo("the concomitant-medication log (a repeating form) and its fields")

    def pick(key: str, words: str, kind: Callable[[DictionaryField], bool], what: str) -> str:
        return b.field_or_todo(f"concomitant_medications.{key}", words, kind, what, form=form)

    result: dict[str, Any] = {
        "form": form,
        "name_field": pick("name_field", r"name|medication|drug", _any_text, "the name"),
        "class_field": pick("class_field", r"class", _categorical, "the class field"),
        "dose_field": pick("dose_field", r"^\s*dose", _number, "the dose"),
        "unit_field": pick("unit_field", r"unit", lambda f: True, "the unit"),
        "frequency_field": pick("frequency_field", r"frequen", lambda f: True, "the frequency"),
        "start_field": pick("start_field", r"start", _is_date, "the start date"),
        "stop_field": pick("stop_field", r"stop|end", _is_date, "the stop date"),
        "ongoing_field": pick("ongoing_field", r"ongoing|continu", _yesno, "ongoing (yes/no)"),
    }
    classes = b.project.dictionary.get(result["class_field"])
    result["classes"] = (
        [
            {
                "code": _code(c.code),
                "name": c.label,
                "rule": todo(
                    f"the rule for {c.label!r}: stable_dose, of_interest, prohibited or allowed"
                ),
            }
            for c in classes.choices
        ]
        if classes is not None and classes.choices
        else todo("the medication classes (code, name, rule)")
    )
    result["stable_dose"] = {
        "weeks_before_randomization": todo(
            "weeks a stable-dose medication must be unchanged before randomisation"
        ),
        "until_event": todo("the event until which stable-dose medications stay unchanged"),
    }
    result["prohibited_from_event"] = todo("the event from which prohibited medications count")
    return result


def _blinding(b: _Builder, arms: dict[str, Any]) -> dict[str, Any]:
    forms: list[str] = []
    arm_form = arms.get("form")
    if isinstance(arm_form, str) and not arm_form.startswith("TODO"):
        forms.append(arm_form)
    for form in b.forms_matching(r"unblind"):
        if form not in forms:
            forms.append(form)
    blinding: dict[str, Any] = {
        "unblinded_forms": forms
        or todo("the forms that reveal allocation (the randomisation form, dosing, ...)"),
        "reasons": {
            form: todo(f"why {form!r} reveals allocation, in one sentence") for form in forms
        },
    }
    if forms:
        b.guesses.append(("blinding.unblinded_forms", ", ".join(forms)))
        # Who may see the allocation today: the users REDCap lets open or export those forms.
        unblinded = [
            user.username
            for user in b.project.users
            if any(user.can_view(form) or user.can_export(form) for form in forms)
        ]
        if unblinded:
            b.guesses.append(
                ("blinding.unblinded_users", "users with REDCap rights on the unblinded forms")
            )
            blinding["unblinded_users"] = unblinded
    return blinding


def _deviations(b: _Builder) -> dict[str, Any] | str:
    form = b.form_of("deviations.form", r"deviation", repeating=True)
    if form is None:
        return todo("the protocol-deviation log (a repeating form) and its fields")
    category = b.find("deviations.category_field", r"categor|type", _categorical, form=form)
    major = b.find("deviations.major_field", r"major|important", _yesno, form=form)
    result: dict[str, Any] = {
        "form": form,
        "category_field": category.field_name if category else todo("the category field"),
        "major_field": major.field_name if major else todo("the yes/no field: major deviation"),
    }
    if _known(models.Deviations, "term_field"):
        result["term_field"] = b.field_or_todo(
            "deviations.term_field",
            r"descri|term|specify|detail",
            _any_text,
            "the text field describing the deviation",
            form=form,
        )
    if _known(models.Deviations, "date_field"):
        result["date_field"] = b.field_or_todo(
            "deviations.date_field", r"date", _is_date, "the deviation's date", form=form
        )
    result["categories"] = (
        [
            {
                "code": _code(c.code),
                "name": c.label,
                "major": todo(f"is every {c.label!r} deviation major? (true or false)"),
            }
            for c in category.choices
        ]
        if category is not None and category.choices
        else todo("the deviation categories (code, name, major)")
    )
    return result
