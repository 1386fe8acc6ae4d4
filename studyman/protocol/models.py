"""The study protocol as typed, frozen models (the schema of ``protocol.yaml``).

Every model forbids unknown keys. Names of fields, forms and events are REDCap names. Study days
count from the randomization date: baseline is day 0, the day before is day -1 (no day-1 shift).

:class:`Protocol` checks its own cross-references when built (a visit naming an unknown
instrument, a window whose start follows its end, a total range that is not the sum of its
items, ...) and raises :class:`~studyman.errors.ProtocolError` with the key path of the first
problem. Whether the named REDCap fields exist is a separate question, answered as findings by
:func:`studyman.protocol.conformance.check_conformance`.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from studyman.errors import ProtocolError
from studyman.protocol.redcap_project import RedcapProject

__all__ = [
    "RANDOMIZATION_LIST_ARM_HEADERS",
    "RANDOMIZATION_LIST_RECORD_HEADERS",
    "AdverseEventOfSpecialInterest",
    "AdverseEvents",
    "Arm",
    "Arms",
    "Band",
    "BlindingRole",
    "CodedTerm",
    "ConcomitantMedications",
    "Condition",
    "Criterion",
    "Cssrs",
    "DerivedRule",
    "DeviationCategory",
    "Deviations",
    "Disposition",
    "DispositionCode",
    "Eligibility",
    "EmergencyUnblinding",
    "Endpoints",
    "Enrolment",
    "ExposureLog",
    "HysLaw",
    "Instrument",
    "Liver",
    "LiverTest",
    "MaskedCodes",
    "MaskedItem",
    "MedicationClass",
    "PrimaryEndpoint",
    "Protocol",
    "Randomization",
    "Range",
    "RepeatingForm",
    "Reporting",
    "ReportingClock",
    "ScoreFlag",
    "ScoredItem",
    "Scoring",
    "ScreenFailReason",
    "Site",
    "StableDose",
    "StratificationFactor",
    "StratumLevel",
    "Study",
    "SystemOrganClass",
    "Treatment",
    "Visit",
    "Window",
    "Withdrawal",
    "compare",
    "redcap_round",
]

#: Record-ID headers a randomisation list may use besides the protocol's record-ID field
#: (the reference export's name and the ADaM names).
RANDOMIZATION_LIST_RECORD_HEADERS: tuple[str, ...] = ("record_id", "USUBJID", "SUBJID")
#: Arm headers a randomisation list may use besides the protocol's arm field.
RANDOMIZATION_LIST_ARM_HEADERS: tuple[str, ...] = ("rand_arm", "arm", "TRT01P")

Operator = Literal["lt", "le", "gt", "ge", "eq", "ne"]
Severity = Literal["critical", "major", "minor", "info"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def compare(value: float, op: Operator, threshold: float) -> bool:
    """Apply a protocol comparison (``lt``, ``le``, ``gt``, ``ge``, ``eq``, ``ne``)."""
    if op == "lt":
        return value < threshold
    if op == "le":
        return value <= threshold
    if op == "gt":
        return value > threshold
    if op == "ge":
        return value >= threshold
    if op == "eq":
        return value == threshold
    return value != threshold


def redcap_round(value: float, digits: int = 0) -> float:
    """Round as REDCap's ``round()`` does: halves away from zero (not Python's half-to-even)."""
    factor = 10.0**digits
    return math.copysign(math.floor(abs(value) * factor + 0.5) / factor, value)


# ----------------------------------------------------------------------------- study


class Study(_Frozen):
    """Identity of the study and of this protocol version."""

    id: str = Field(min_length=1)
    title: str = Field(min_length=1)
    short_title: str = ""
    version: str = Field(min_length=1)
    version_date: date | None = None
    sponsor: str = ""
    registration: str = ""
    record_id_field: str = "record_id"
    record_id_pattern: str = ""


class Arm(_Frozen):
    """A treatment arm, coded as in the randomization form."""

    code: int
    name: str
    short_name: str = ""
    ratio: int = Field(default=1, ge=1)
    receives_adjunct: bool = False
    closed_report_code: str = Field(min_length=1)


class Arms(_Frozen):
    """The treatment arms and where the allocation is recorded (unblinded form)."""

    field: str
    form: str
    event: str
    items: tuple[Arm, ...] = Field(min_length=2)
    #: The code of the reference arm (comparisons are each other arm against it); default: the
    #: last arm listed.
    reference: int | None = None

    @model_validator(mode="after")
    def _reference_is_an_arm(self) -> Arms:
        codes = [arm.code for arm in self.items]
        if self.reference is not None and self.reference not in codes:
            raise ValueError(f"reference arm code {self.reference} is not one of {codes}")
        return self

    @property
    def reference_arm(self) -> Arm:
        """The declared reference arm (the last arm listed when none is declared)."""
        if self.reference is None:
            return self.items[-1]
        return self.by_code(self.reference)

    @property
    def comparison_arms(self) -> tuple[Arm, ...]:
        """The arms compared with the reference, in the order listed."""
        reference = self.reference_arm
        return tuple(arm for arm in self.items if arm.code != reference.code)

    def by_code(self, code: int) -> Arm:
        """The arm with raw code *code*; raises KeyError when there is none."""
        for arm in self.items:
            if arm.code == code:
                return arm
        raise KeyError(code)


class StratumLevel(_Frozen):
    """One level of a stratification factor (a score band for a score-derived factor)."""

    code: int
    name: str
    label: str = ""
    min: float | None = None
    max: float | None = None


class StratificationFactor(_Frozen):
    """A stratification factor: the site, or a band of a score at an event."""

    id: str
    label: str = ""
    source: Literal["site", "score"]
    field: str | None = None
    event: str | None = None
    recorded_field: str | None = None
    levels: tuple[StratumLevel, ...] = ()

    def level_of(self, score: float) -> StratumLevel | None:
        """The level whose band holds *score*, or None (score-derived factors only)."""
        for level in self.levels:
            low = -math.inf if level.min is None else level.min
            high = math.inf if level.max is None else level.max
            if low <= score <= high:
                return level
        return None


class Randomization(_Frozen):
    """Allocation method and its fields."""

    method: str
    block_sizes: tuple[int, ...] = Field(min_length=1)
    date_field: str
    randomized_field: str
    number_field: str
    stratum_field: str
    stratum_format: str
    stratification: tuple[StratificationFactor, ...] = ()


class Site(_Frozen):
    """A recruiting site, its data access group and enrolment target."""

    id: str
    name: str
    dag: str
    enrolment_target: int = Field(ge=0)
    activation_date: date
    closing_date: date | None = None


class Enrolment(_Frozen):
    """Overall enrolment target and period, and the screening form's date fields."""

    target: int = Field(ge=1)
    start: date
    end: date
    screening_date_field: str = "scr_date"
    consent_date_field: str = "consent_date"
    #: Demographics on the participant form (the form that holds ``consent_date_field``).
    age_field: str = "age"
    sex_field: str = "sex"
    #: Race and ethnicity (NIH categories) on the same form, for the NIH inclusion table.
    race_field: str = "race"
    ethnicity_field: str = "ethnicity"
    #: Further baseline characteristics the DSMB report shows (fields of the participant form:
    #: categorical ones by their dictionary choices, numbers as mean and SD).
    baseline_fields: tuple[str, ...] = ("prior_ad",)


class Instrument(_Frozen):
    """A REDCap instrument (form) the protocol uses."""

    name: str
    label: str = ""
    repeating: bool = False


class Window(_Frozen):
    """A visit window in study days, both ends inclusive."""

    start: int
    end: int

    def contains(self, day: int) -> bool:
        """True when study day *day* is inside the window."""
        return self.start <= day <= self.end


VisitKind = Literal[
    "screening",
    "baseline",
    "treatment",
    "end_of_treatment",
    "follow_up",
    "log",
    "end_of_study",
    "unscheduled",
]


class Visit(_Frozen):
    """A REDCap event of the schedule, with its target day, window and due instruments."""

    event: str
    label: str
    kind: VisitKind
    target_day: int | None = None
    window: Window | None = None
    date_field: str | None = None
    instruments: tuple[str, ...] = Field(min_length=1)

    @property
    def is_scheduled(self) -> bool:
        """True for visits with a target day (not logs or end of study)."""
        return self.target_day is not None


class ExposureLog(_Frozen):
    """A repeating log of study treatment given: one row per session or dose."""

    form: str
    date_field: str
    given_field: str  # yes/no: the session attended, the dose taken


class Treatment(_Frozen):
    """Treatment period facts and the logs that record exposure.

    ``sessions`` (given to every arm, e.g. CBT) and ``doses`` (the adjunct, on an unblinded form;
    None when the study has none) date the first and last study treatment.
    """

    sessions: ExposureLog = ExposureLog(
        form="cbt_sessions", date_field="cbt_date", given_field="cbt_attended"
    )
    doses: ExposureLog | None = ExposureLog(
        form="dosing", date_field="dose_date", given_field="dose_taken"
    )
    weeks: int = Field(ge=1)
    end_of_treatment_event: str
    follow_up_event: str
    taper_weeks: tuple[int, ...] = ()
    cbt_sessions_planned: int = Field(ge=1)
    adherence_threshold: float = Field(ge=0, le=1)


class RepeatingForm(_Frozen):
    """A repeating instrument at an event."""

    event: str
    form: str


class Condition(_Frozen):
    """``field`` at ``event`` compared with ``value`` (numbers; yes/no as 1/0)."""

    field: str
    event: str
    op: Operator
    value: float

    def holds(self, value: float) -> bool:
        """True when *value* satisfies the condition."""
        return compare(value, self.op, self.value)


class DerivedRule(_Frozen):
    """How a criterion can be derived from the data: all or any of its conditions."""

    match: Literal["all", "any"]
    conditions: tuple[Condition, ...] = Field(min_length=1)

    def evaluate(self, values: Mapping[tuple[str, str], float | None]) -> bool | None:
        """Evaluate against ``{(event, field): value}``; None when a needed value is missing.

        With ``any``, one condition that holds decides even if others are missing.
        """
        results = []
        for condition in self.conditions:
            value = values.get((condition.event, condition.field))
            results.append(None if value is None else condition.holds(value))
        if self.match == "all":
            if any(result is False for result in results):
                return False
            return None if None in results else True
        if any(result is True for result in results):
            return True
        return None if None in results else False


class Criterion(_Frozen):
    """An eligibility criterion: its yes/no field, kind, text and optional data-derived rule.

    For an inclusion criterion the derived rule says when it is met; for an exclusion criterion
    it says when the participant is excluded.
    """

    id: str
    field: str
    kind: Literal["inclusion", "exclusion"]
    text: str
    derived: DerivedRule | None = None


class Eligibility(_Frozen):
    """The eligibility form and its criteria."""

    form: str
    event: str
    date_field: str
    eligible_field: str
    screen_fail_reason_field: str
    criteria: tuple[Criterion, ...] = Field(min_length=1)


class DispositionCode(_Frozen):
    """A disposition status code."""

    code: int
    name: str
    label: str
    completed: bool = False
    death: bool = False
    adverse_event: bool = False


class ScreenFailReason(_Frozen):
    """A screen-failure reason code."""

    code: int
    name: str
    label: str


class Disposition(_Frozen):
    """End-of-study disposition and its codes."""

    form: str
    event: str
    status_field: str
    date_field: str
    death_date_field: str
    #: The recorded cause of death (free text), listed with the deaths; None when not collected.
    death_cause_field: str | None = "death_cause"
    codes: tuple[DispositionCode, ...] = Field(min_length=1)
    screen_fail_reasons: tuple[ScreenFailReason, ...] = ()


class ScoredItem(_Frozen):
    """An item of a scale and the values it may take."""

    field: str
    values: tuple[int, ...] = Field(min_length=1)

    @property
    def min(self) -> int:
        """Smallest allowed value."""
        return min(self.values)

    @property
    def max(self) -> int:
        """Largest allowed value."""
        return max(self.values)


class Range(_Frozen):
    """A closed numeric range."""

    min: float
    max: float


class Band(_Frozen):
    """A named band of a total (both ends inclusive)."""

    name: str
    min: float
    max: float


class ScoreFlag(_Frozen):
    """A flag raised by an item value (e.g. PHQ-9 item 9 at or above 1)."""

    id: str
    label: str
    field: str
    op: Operator
    value: float
    severity: Severity = "major"
    requires_instrument: str | None = None


class Scoring(_Frozen):
    """Scoring of one scale: items, total field, missing-item rule, bands and flags.

    Notes
    -----
    The total is missing when more than ``max_missing_items`` scored items are missing. With
    ``proration = "none"`` the total is the sum of the items; with ``"prorate"`` it is the mean of
    the answered items times the number of scored items, rounded half away from zero (REDCap's
    ``round``), which equals the plain sum when nothing is missing. Fields in one
    ``exactly_one_of`` group (HAM-D 16A/16B) count as one item: exactly one must be scored.
    """

    instrument: str
    label: str = ""
    #: The ADaM PARAMCD of the total score; default: the instrument name in upper case.
    paramcd: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9]{0,7}$")
    total_field: str
    total_range: Range
    max_missing_items: int = Field(ge=0)
    proration: Literal["none", "prorate"]
    items: tuple[ScoredItem, ...] = Field(min_length=1)
    unscored_items: tuple[ScoredItem, ...] = ()
    exactly_one_of: tuple[tuple[str, ...], ...] = ()
    bands: tuple[Band, ...] = ()
    flags: tuple[ScoreFlag, ...] = ()

    @property
    def parameter_code(self) -> str:
        """The ADaM PARAMCD of the total (``paramcd``, else the instrument in upper case)."""
        return self.paramcd if self.paramcd is not None else self.instrument.upper()

    @property
    def item_fields(self) -> tuple[str, ...]:
        """The scored item fields in order."""
        return tuple(item.field for item in self.items)

    @property
    def n_items(self) -> int:
        """The number of scored items (an ``exactly_one_of`` group counts once)."""
        return len(self.items) - sum(len(group) - 1 for group in self.exactly_one_of)

    @property
    def max_total(self) -> float:
        """Highest possible total from the item ranges."""
        by_field = {item.field: item.max for item in self.items}
        grouped = {field for group in self.exactly_one_of for field in group}
        total = sum(value for field, value in by_field.items() if field not in grouped)
        total += sum(max(by_field[field] for field in group) for group in self.exactly_one_of)
        return float(total)

    def total(self, values: Mapping[str, float | None]) -> float | None:
        """The protocol total from item values (None or absent = missing).

        Returns None when more items are missing than the rule allows. Within an
        ``exactly_one_of`` group the one scored value counts; a group with none is one missing
        item, a group with both scored is treated as missing (it cannot be scored as specified).
        """
        grouped = {field for group in self.exactly_one_of for field in group}
        answered: list[float] = []
        missing = 0
        for field in self.item_fields:
            if field in grouped:
                continue
            value = values.get(field)
            if value is None:
                missing += 1
            else:
                answered.append(float(value))
        for group in self.exactly_one_of:
            scored = [values.get(field) for field in group if values.get(field) is not None]
            if len(scored) == 1 and scored[0] is not None:
                answered.append(float(scored[0]))
            else:
                missing += 1
        if missing > self.max_missing_items or not answered:
            return None
        if missing == 0 or self.proration == "none":
            return float(sum(answered))
        return redcap_round(sum(answered) / len(answered) * self.n_items)

    def band(self, total: float) -> Band | None:
        """The band holding *total*, or None."""
        return next((band for band in self.bands if band.min <= total <= band.max), None)


class PrimaryEndpoint(_Frozen):
    """The primary endpoint: change from baseline in a total at an event."""

    name: str
    instrument: str
    field: str
    baseline_event: str
    event: str


class Endpoints(_Frozen):
    """Endpoints and the response/remission parameters."""

    primary: PrimaryEndpoint
    response_reduction: float = Field(gt=0, le=1)
    remission_max: float


class Cssrs(_Frozen):
    """C-SSRS forms and fields."""

    screening_form: str
    since_last_form: str
    ideation_fields: tuple[str, ...]
    follow_up_ideation_fields: tuple[str, ...]
    gate_fields: tuple[str, ...]
    behaviour_fields: tuple[str, ...]
    self_injury_field: str
    safety_action_field: str
    safety_action_required_ideation: tuple[str, ...]


class LiverTest(_Frozen):
    """A liver test, its field and upper limit of normal."""

    id: str
    field: str
    label: str
    unit: str
    uln: float = Field(gt=0)


class HysLaw(_Frozen):
    """Potential Hy's law rule (multiples of ULN, same sample)."""

    transaminases: tuple[str, ...] = Field(min_length=1)
    transaminase_multiple: float = Field(gt=0)
    bilirubin: str
    bilirubin_multiple: float = Field(gt=0)
    alp: str
    alp_max_multiple: float = Field(gt=0)


class Liver(_Frozen):
    """Liver tests with ULNs and the Hy's law rule."""

    form: str
    date_field: str
    tests: tuple[LiverTest, ...] = Field(min_length=1)
    hys_law: HysLaw
    transaminase_alert_multiple: float = Field(gt=0)

    def test(self, test_id: str) -> LiverTest:
        """The test called *test_id* (``ALT``...); raises KeyError when absent."""
        for test in self.tests:
            if test.id == test_id:
                return test
        raise KeyError(test_id)

    def is_potential_hys_law(self, values: Mapping[str, float | None]) -> bool | None:
        """Apply the Hy's law rule to one sample ``{field: value}``.

        True when a transaminase exceeds its multiple of ULN and bilirubin exceeds its multiple
        while ALP does not exceed its maximum; False when the values rule it out; None when a
        value needed to decide is missing.
        """
        rule = self.hys_law
        transaminases = [values.get(self.test(test_id).field) for test_id in rule.transaminases]
        high_transaminase: bool | None
        if any(
            v is not None and v > rule.transaminase_multiple * self.test(t).uln
            for v, t in zip(transaminases, rule.transaminases, strict=True)
        ):
            high_transaminase = True
        elif any(v is None for v in transaminases):
            high_transaminase = None
        else:
            high_transaminase = False
        bilirubin_test = self.test(rule.bilirubin)
        bilirubin = values.get(bilirubin_test.field)
        alp_test = self.test(rule.alp)
        alp = values.get(alp_test.field)
        if high_transaminase is False:
            return False
        if bilirubin is not None and bilirubin <= rule.bilirubin_multiple * bilirubin_test.uln:
            return False
        if alp is not None and alp > rule.alp_max_multiple * alp_test.uln:
            return False
        if high_transaminase is None or bilirubin is None or alp is None:
            return None
        return True


class Withdrawal(_Frozen):
    """Withdrawal assessment (COWS) and the AESI threshold."""

    instrument: str
    total_field: str
    events: tuple[str, ...] = Field(min_length=1)
    aesi_threshold: float


class VitalSign(_Frozen):
    """A vital sign (or weight): its id (PARAMCD), field, label and unit; optionally the limits
    outside which a value is notable in the DSMB report (default: the data dictionary's
    validation minimum and maximum)."""

    id: str = Field(pattern=r"^[A-Z][A-Z0-9]{0,7}$")
    field: str
    label: str
    unit: str
    notable_low: float | None = None
    notable_high: float | None = None


class VitalSigns(_Frozen):
    """The vital-signs form and the measurements it holds (analysed by change from baseline)."""

    form: str
    parameters: tuple[VitalSign, ...] = Field(min_length=1)


class SystemOrganClass(_Frozen):
    """A system organ class of the study coding list."""

    code: int
    name: str


class CodedTerm(_Frozen):
    """A preferred term of the study coding list and its SOC code."""

    code: int
    pt: str
    soc: int


class AdverseEventOfSpecialInterest(_Frozen):
    """An AESI: its code in the AESI field, the PTs and criteria that define it."""

    code: int = Field(ge=1)
    name: str
    label: str
    pts: tuple[int, ...] = ()
    criteria: tuple[str, ...] = ()


class AdverseEvents(_Frozen):
    """The adverse-event log, its fields, coding list and AESIs.

    The optional ``expected_field`` (yesno: expected per the reference safety information) and
    ``unanticipated_field`` (yesno: the investigator's unanticipated-problem judgement) let the
    ``susar_*`` and ``unanticipated_problem`` reporting clocks be assessed; without them those
    clocks are not assessable. ``fatal_or_life_threatening_criteria`` lists the codes of
    ``serious_criteria_field`` (death, life-threatening) that make a SUSAR fatal or
    life-threatening (see :class:`ReportingClock`). The optional ``action_field`` and
    ``treatment_withdrawn_action_code`` (the action taken with study treatment, and its code for
    "withdrawn") let the disposition be reconciled with the adverse events.
    """

    form: str
    event: str
    term_field: str
    pt_field: str
    soc_field: str
    start_field: str
    end_field: str
    severity_field: str
    serious_field: str
    serious_criteria_field: str
    related_field: str
    outcome_field: str
    awareness_field: str
    report_field: str
    aesi_field: str
    expected_field: str | None = None
    unanticipated_field: str | None = None
    related_codes: tuple[int, ...] = Field(min_length=1)
    fatal_or_life_threatening_criteria: tuple[int, ...] = ()
    fatal_outcome_code: int
    action_field: str | None = None
    treatment_withdrawn_action_code: int | None = None
    ongoing_outcome_codes: tuple[int, ...] = ()
    recovered_outcome_codes: tuple[int, ...] = ()
    # Superseded: the analysis plan declares the one rule (safety.treatment_emergent_from);
    # kept so that older protocol files still load.
    treatment_emergent_from: Literal["first_dose", "randomization"] | None = None
    socs: tuple[SystemOrganClass, ...] = Field(min_length=1)
    coding_list: tuple[CodedTerm, ...] = Field(min_length=1)
    aesi: tuple[AdverseEventOfSpecialInterest, ...] = ()

    def term(self, code: int) -> CodedTerm:
        """The coded term with PT code *code*; raises KeyError when absent."""
        for term in self.coding_list:
            if term.code == code:
                return term
        raise KeyError(code)

    def soc(self, code: int) -> SystemOrganClass:
        """The SOC with code *code*; raises KeyError when absent."""
        for soc in self.socs:
            if soc.code == code:
                return soc
        raise KeyError(code)


ClockCase = Literal[
    "serious",
    "susar_fatal_life_threatening",
    "susar_other",
    "suicide_death",
    "unanticipated_problem",
]


class ReportingClock(_Frozen):
    """A reporting clock: which events, to whom, within how many hours of awareness.

    Attributes
    ----------
    id, label
        Identifier (named in findings) and the label shown in reports.
    applies_to
        Which adverse events the clock applies to (codes as in :class:`AdverseEvents`):

        ``serious``
            ``serious_field`` is Yes.
        ``susar_fatal_life_threatening``
            A SUSAR: serious, suspected (``related_field`` in ``related_codes``: possible,
            probable, definite) and unexpected (``expected_field`` is No) -- that is fatal or
            life-threatening: a ``fatal_or_life_threatening_criteria`` box ticked (death,
            life-threatening) or the outcome fatal (``fatal_outcome_code``).
        ``susar_other``
            Any other SUSAR (serious, suspected, unexpected, neither fatal nor life-threatening).
        ``suicide_death``
            Fatal outcome (``fatal_outcome_code``) and the AESI field coded as the AESI named
            ``suicidality``, whatever the seriousness and relatedness recorded.
        ``unanticipated_problem``
            The investigator judged the event an unanticipated problem (``unanticipated_field``
            is Yes; OHRP: unexpected, related or possibly related, greater risk).
    recipient
        Who receives the report (sponsor, regulator, DSMB, IRB).
    limit_hours
        Hours allowed from day 0 (the site's awareness date-time) to the report.
    report_field
        The date-time field holding when the report was sent. Optional: a ``serious`` clock
        defaults to ``adverse_events.report_field``; any other clock without one is not
        assessable.
    """

    id: str
    label: str
    applies_to: ClockCase
    recipient: str
    limit_hours: int = Field(gt=0)
    report_field: str | None = None


class MedicationClass(_Frozen):
    """A concomitant-medication class and its rule."""

    code: int
    name: str
    rule: Literal["stable_dose", "of_interest", "prohibited", "allowed"]


class StableDose(_Frozen):
    """Stable-dose period for medications whose rule is ``stable_dose``."""

    weeks_before_randomization: int = Field(ge=0)
    until_event: str


class ConcomitantMedications(_Frozen):
    """The medication log, classes and rules."""

    form: str
    name_field: str
    class_field: str
    dose_field: str
    unit_field: str
    frequency_field: str
    start_field: str
    stop_field: str
    ongoing_field: str
    classes: tuple[MedicationClass, ...] = Field(min_length=1)
    stable_dose: StableDose
    prohibited_from_event: str


class MaskedItem(_Frozen):
    """A form or field that reveals allocation (or is declared arm-neutral), with the reason."""

    name: str = Field(min_length=1)
    reason: str = Field(min_length=1)


class MaskedCodes(_Frozen):
    """Codes of a categorical field that reveal allocation, merged into one neutral code.

    In the blinded view every code of *codes* becomes *masked_as* (one of them), labelled
    *label*. The merged set must hold a code that every arm can have (e.g. ``None`` for an action
    on the adjunct): a neutral value that only one arm can take would still reveal it.
    """

    field: str = Field(min_length=1)
    codes: tuple[int | str, ...] = Field(min_length=2)
    masked_as: int | str
    label: str = Field(min_length=1)
    reason: str = Field(min_length=1)

    @property
    def code_texts(self) -> tuple[str, ...]:
        """The masked codes as REDCap raw code text."""
        return tuple(str(code) for code in self.codes)


class BlindingRole(_Frozen):
    """Who is masked to what.

    ``access``: ``unblinded`` (may see allocation and everything that reveals it), ``partial``
    (knows individual allocation in practice, e.g. sites that deliver the adjunct, or sees the
    masked codes in REDCap to query them, but may not open the unblinded forms), ``masked``
    (must not be able to know allocation or reconstruct any comparison by arm: gets studyman's
    blinded view only; its REDCap users may open neither the unblinded forms nor the forms that
    hold masked fields or codes).
    """

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str = Field(min_length=1)
    access: Literal["unblinded", "partial", "masked"]
    redcap_users: tuple[str, ...] = ()
    outputs: str = ""


class Blinding(_Frozen):
    """The blinding policy: what reveals allocation, and who is masked to what.

    ``unblinded_forms`` (whole forms: randomisation, dosing), ``masked_fields`` (whole fields
    elsewhere) and ``masked_codes`` (codes of a field) reveal allocation; the blinded view
    (:func:`studyman.sources.blinding.blinded_view`) drops the first two and merges the codes.
    ``reasons`` gives the reason per unblinded form. ``arm_neutral`` names forms and fields that
    look arm-specific (a label mentioning dose, randomisation or the adjunct) but are not.
    When ``unblinded_users`` is empty, only site (data access group) users are checked.
    """

    unblinded_forms: tuple[str, ...] = Field(min_length=1)
    unblinded_users: tuple[str, ...] = ()
    reasons: dict[str, str] = Field(default_factory=dict)
    masked_fields: tuple[MaskedItem, ...] = ()
    masked_codes: tuple[MaskedCodes, ...] = ()
    arm_neutral: tuple[MaskedItem, ...] = ()
    roles: tuple[BlindingRole, ...] = ()

    @property
    def masked_field_names(self) -> tuple[str, ...]:
        """Fields dropped whole from the blinded view."""
        return tuple(item.name for item in self.masked_fields)

    def masked_codes_of(self, field: str) -> MaskedCodes | None:
        """The code masking of *field*, or None."""
        for item in self.masked_codes:
            if item.field == field:
                return item
        return None


class DeviationCategory(_Frozen):
    """A protocol-deviation category code; ``major`` when every deviation of it is major
    (whatever the site recorded in the deviation's own major field)."""

    code: int
    name: str
    major: bool = False


class Deviations(_Frozen):
    """The deviation log."""

    form: str
    category_field: str
    major_field: str
    #: The site's description of the deviation and its date (the deviation log's DVTERM and
    #: DVSTDTC); the defaults are the reference study's names.
    term_field: str = "dv_term"
    date_field: str = "dv_date"
    categories: tuple[DeviationCategory, ...] = Field(min_length=1)


class TrafficLights(_Frozen):
    """Thresholds of the DSMB executive summary's traffic lights (amber below/above, red below/
    above): enrolment as a fraction of the enrolment expected by the cut-off, retention as visits
    done of visits due, data quality as the median days open of the open site queries."""

    enrolment_amber: float = Field(default=0.9, gt=0, le=1)
    enrolment_red: float = Field(default=0.75, gt=0, le=1)
    retention_amber: float = Field(default=0.9, gt=0, le=1)
    retention_red: float = Field(default=0.8, gt=0, le=1)
    query_days_amber: float = Field(default=14, ge=0)
    query_days_red: float = Field(default=30, ge=0)


class Reporting(_Frozen):
    """Data cut and reporting parameters."""

    data_cut: date | None = None
    dsmb_meetings: tuple[date, ...] = ()
    change_review_threshold: float = 15
    query_age_days_alert: int = 30
    traffic_lights: TrafficLights = TrafficLights()


# ----------------------------------------------------------------------------- the protocol


class EmergencyUnblinding(_Frozen):
    """The emergency-unblinding log: one row per time a participant's allocation was revealed
    to treat an emergency (the form, the date and, when collected, the reason and who asked).

    Optional: a protocol without it has no such log and the DSMB report says the section does
    not apply.
    """

    form: str
    date_field: str
    reason_field: str | None = None
    requested_by_field: str | None = None


class VisitForm(_Frozen):
    """The form that records, at each scheduled visit, whether it took place and when.

    A visit is *done* when ``done_field`` is yes, *missed* when it is no (the site recorded the
    visit as not done), and has no record otherwise. The defaults are the reference study's names.
    """

    form: str = "visit"
    done_field: str = "visit_done"
    date_field: str = "visit_date"


class Protocol(_Frozen):
    """The whole protocol (``protocol.yaml``), with the REDCap project it references.

    ``redcap``, ``source_file`` and ``source_sha256`` are filled by
    :func:`studyman.protocol.load_protocol`; they are not keys of the YAML file.
    """

    study: Study
    redcap_project: str = "redcap"
    arms: Arms
    randomization: Randomization
    sites: tuple[Site, ...] = Field(min_length=1)
    enrolment: Enrolment
    instruments: tuple[Instrument, ...] = Field(min_length=1)
    visits: tuple[Visit, ...] = Field(min_length=1)
    treatment: Treatment
    repeating: tuple[RepeatingForm, ...] = ()
    eligibility: Eligibility
    disposition: Disposition
    scoring: tuple[Scoring, ...] = ()
    endpoints: Endpoints
    cssrs: Cssrs
    liver: Liver
    withdrawal: Withdrawal | None = None
    vital_signs: VitalSigns | None = None
    visit_form: VisitForm = VisitForm()
    emergency_unblinding: EmergencyUnblinding | None = None
    adverse_events: AdverseEvents
    reporting_clocks: tuple[ReportingClock, ...] = ()
    concomitant_medications: ConcomitantMedications
    blinding: Blinding
    deviations: Deviations
    reporting: Reporting = Reporting()
    redcap: RedcapProject | None = Field(default=None, exclude=True, repr=False)
    source_file: str = Field(default="", exclude=True)
    source_sha256: str = Field(default="", exclude=True)

    @model_validator(mode="after")
    def _check_references(self) -> Protocol:
        problems = list(_reference_problems(self))
        if problems:
            key, message = problems[0]
            more = (
                f" ({len(problems) - 1} more problem(s) after this one)"
                if len(problems) > 1
                else ""
            )
            # Not a ValueError: pydantic lets it through unwrapped, keeping the key path.
            raise ProtocolError(message + more, key=key)
        return self

    # -- convenience lookups ------------------------------------------------------------

    @property
    def instrument_names(self) -> tuple[str, ...]:
        """Instrument names in protocol order."""
        return tuple(instrument.name for instrument in self.instruments)

    @property
    def event_names(self) -> tuple[str, ...]:
        """Event names in schedule order."""
        return tuple(visit.event for visit in self.visits)

    @property
    def scheduled_visits(self) -> tuple[Visit, ...]:
        """Visits with a target day and window, in order."""
        return tuple(visit for visit in self.visits if visit.is_scheduled)

    def visit(self, event: str) -> Visit:
        """The visit of *event*; raises KeyError when absent."""
        for visit in self.visits:
            if visit.event == event:
                return visit
        raise KeyError(event)

    def site(self, site_id: str) -> Site:
        """The site *site_id*; raises KeyError when absent."""
        for site in self.sites:
            if site.id == site_id:
                return site
        raise KeyError(site_id)

    def scoring_of(self, instrument: str) -> Scoring:
        """The scoring of *instrument*; raises KeyError when absent."""
        for scoring in self.scoring:
            if scoring.instrument == instrument:
                return scoring
        raise KeyError(instrument)

    def events_of(self, instrument: str) -> tuple[str, ...]:
        """Events at which *instrument* is due, in schedule order."""
        return tuple(visit.event for visit in self.visits if instrument in visit.instruments)

    def is_unblinded_form(self, form: str) -> bool:
        """True when only unblinded users may see *form*."""
        return form in self.blinding.unblinded_forms


def _duplicates(values: Iterable[object]) -> list[object]:
    seen: set[object] = set()
    repeated = []
    for value in values:
        if value in seen:
            repeated.append(value)
        seen.add(value)
    return repeated


def _reference_problems(protocol: Protocol) -> Iterable[tuple[str, str]]:
    """Yield (key path, message) for every internal inconsistency, in file order."""
    instruments = set(protocol.instrument_names)
    events = set(protocol.event_names)

    def known_instrument(key: str, name: str) -> Iterable[tuple[str, str]]:
        if name not in instruments:
            yield key, f"unknown instrument {name!r}: expected one of the instruments list"

    def known_event(key: str, name: str) -> Iterable[tuple[str, str]]:
        if name not in events:
            yield key, f"unknown event {name!r}: expected the event of one of the visits"

    def due_at(key: str, form: str, event: str) -> Iterable[tuple[str, str]]:
        if (
            event in events
            and form in instruments
            and form not in protocol.visit(event).instruments
        ):
            yield (
                key,
                f"form {form!r} is not due at {event!r}: expected it in that visit's instruments",
            )

    if protocol.study.record_id_pattern:
        try:
            re.compile(protocol.study.record_id_pattern)
        except re.error as error:
            yield "study.record_id_pattern", f"not a regular expression ({error})"

    # arms
    arms = protocol.arms
    for repeated in _duplicates(arm.code for arm in arms.items):
        yield "arms.items", f"arm code {repeated} repeats: expected unique codes"
    for repeated in _duplicates(arm.closed_report_code for arm in arms.items):
        yield "arms.items", f"closed-report code {repeated!r} repeats: expected unique codes"
    yield from known_instrument("arms.form", arms.form)
    yield from known_event("arms.event", arms.event)
    yield from due_at("arms.event", arms.form, arms.event)

    # randomization
    ratio_sum = sum(arm.ratio for arm in arms.items)
    for i, size in enumerate(protocol.randomization.block_sizes):
        if size <= 0 or size % ratio_sum:
            yield (
                f"randomization.block_sizes[{i}]",
                f"block size {size}: expected a positive multiple of the allocation ratio sum "
                f"{ratio_sum}",
            )
    for i, factor in enumerate(protocol.randomization.stratification):
        key = f"randomization.stratification[{i}]"
        if factor.source == "score":
            if not factor.field or not factor.event or not factor.levels:
                yield key, "a score-derived factor needs field, event and levels"
            elif factor.event:
                yield from known_event(f"{key}.event", factor.event)
        levels = sorted(
            (level for level in factor.levels if level.min is not None and level.max is not None),
            key=lambda level: level.min or 0.0,
        )
        for j, level in enumerate(factor.levels):
            if level.min is not None and level.max is not None and level.min > level.max:
                yield f"{key}.levels[{j}].min", f"min {level.min} follows max {level.max}"
        for low, high in itertools.pairwise(levels):
            if low.max is not None and high.min is not None and high.min <= low.max:
                yield f"{key}.levels", f"levels {low.name!r} and {high.name!r} overlap"

    # sites and enrolment
    for repeated in _duplicates(site.id for site in protocol.sites):
        yield "sites", f"site id {repeated!r} repeats: expected unique site ids"
    for repeated in _duplicates(site.dag for site in protocol.sites):
        yield "sites", f"data access group {repeated!r} repeats: expected one per site"
    enrolment = protocol.enrolment
    if enrolment.start > enrolment.end:
        yield "enrolment.start", f"start {enrolment.start} follows end {enrolment.end}"
    for i, site in enumerate(protocol.sites):
        if site.activation_date > enrolment.end:
            yield f"sites[{i}].activation_date", "activation after the end of enrolment"
        if site.closing_date is not None and site.closing_date < site.activation_date:
            yield f"sites[{i}].closing_date", "closing date before the activation date"

    # instruments and visits
    for repeated in _duplicates(protocol.instrument_names):
        yield "instruments", f"instrument {repeated!r} repeats"
    for repeated in _duplicates(protocol.event_names):
        yield "visits", f"event {repeated!r} repeats: expected one visit per event"
    previous_end: int | None = None
    for i, visit in enumerate(protocol.visits):
        key = f"visits[{i}]"
        for j, name in enumerate(visit.instruments):
            yield from known_instrument(f"{key}.instruments[{j}]", name)
        for repeated in _duplicates(visit.instruments):
            yield f"{key}.instruments", f"instrument {repeated!r} listed twice"
        if visit.kind in ("log", "end_of_study", "unscheduled"):
            if visit.window is not None or visit.target_day is not None:
                yield f"{key}.window", f"a {visit.kind} event has no target day or window"
            continue
        if visit.target_day is None:
            yield f"{key}.target_day", f"missing: a {visit.kind} visit needs a target day"
            continue
        if visit.window is None:
            yield f"{key}.window", f"missing: a {visit.kind} visit needs a window"
            continue
        if visit.window.start > visit.window.end:
            yield (
                f"{key}.window.start",
                f"window start {visit.window.start} follows its end {visit.window.end}: "
                "expected start <= end",
            )
            continue
        if not visit.window.contains(visit.target_day):
            yield (
                f"{key}.target_day",
                f"target day {visit.target_day} outside its window "
                f"{visit.window.start}..{visit.window.end}",
            )
        if previous_end is not None and visit.window.start <= previous_end:
            yield (
                f"{key}.window.start",
                f"window starts on day {visit.window.start}, inside or before the previous "
                f"visit's window (ends day {previous_end}): expected windows in schedule order",
            )
        previous_end = visit.window.end

    # treatment
    treatment = protocol.treatment
    yield from known_event("treatment.end_of_treatment_event", treatment.end_of_treatment_event)
    yield from known_event("treatment.follow_up_event", treatment.follow_up_event)

    # repeating
    declared = {(r.event, r.form) for r in protocol.repeating}
    for i, repeating in enumerate(protocol.repeating):
        key = f"repeating[{i}]"
        yield from known_event(f"{key}.event", repeating.event)
        yield from known_instrument(f"{key}.form", repeating.form)
        if (
            repeating.event in events
            and repeating.form not in protocol.visit(repeating.event).instruments
        ):
            yield f"{key}.form", f"form {repeating.form!r} is not due at {repeating.event!r}"
    for i, instrument in enumerate(protocol.instruments):
        if instrument.repeating and not any(form == instrument.name for _, form in declared):
            yield (
                f"instruments[{i}].repeating",
                f"{instrument.name!r} is marked repeating but is not listed under repeating",
            )
        if not instrument.repeating and any(form == instrument.name for _, form in declared):
            yield (
                f"instruments[{i}].repeating",
                f"{instrument.name!r} is listed under repeating: expected repeating: true",
            )

    # eligibility
    eligibility = protocol.eligibility
    yield from known_instrument("eligibility.form", eligibility.form)
    yield from known_event("eligibility.event", eligibility.event)
    yield from due_at("eligibility.event", eligibility.form, eligibility.event)
    for repeated in _duplicates(c.id for c in eligibility.criteria):
        yield "eligibility.criteria", f"criterion id {repeated!r} repeats"
    for i, criterion in enumerate(eligibility.criteria):
        if criterion.derived is None:
            continue
        for j, condition in enumerate(criterion.derived.conditions):
            yield from known_event(
                f"eligibility.criteria[{i}].derived.conditions[{j}].event", condition.event
            )

    # disposition
    disposition = protocol.disposition
    yield from known_instrument("disposition.form", disposition.form)
    yield from known_event("disposition.event", disposition.event)
    yield from due_at("disposition.event", disposition.form, disposition.event)
    for repeated in _duplicates(code.code for code in disposition.codes):
        yield "disposition.codes", f"code {repeated} repeats"

    # scoring
    for repeated in _duplicates(s.instrument for s in protocol.scoring):
        yield "scoring", f"instrument {repeated!r} is scored twice"
    for i, scoring in enumerate(protocol.scoring):
        key = f"scoring[{i}]"
        yield from known_instrument(f"{key}.instrument", scoring.instrument)
        fields = scoring.item_fields
        for repeated in _duplicates(fields):
            yield f"{key}.items", f"item {repeated!r} repeats"
        for j, group in enumerate(scoring.exactly_one_of):
            for field in group:
                if field not in fields:
                    yield f"{key}.exactly_one_of[{j}]", f"{field!r} is not an item of this scale"
        if scoring.total_range.min > scoring.total_range.max:
            yield f"{key}.total_range.min", "min follows max"
        elif scoring.total_range.max != scoring.max_total:
            yield (
                f"{key}.total_range.max",
                f"total maximum {scoring.total_range.max:g} is not the sum of the item maxima "
                f"({scoring.max_total:g})",
            )
        if scoring.max_missing_items >= scoring.n_items:
            yield f"{key}.max_missing_items", "expected fewer than the number of items"
        for j, band in enumerate(scoring.bands):
            if band.min > band.max:
                yield f"{key}.bands[{j}].min", f"band min {band.min:g} follows max {band.max:g}"
        for j, flag in enumerate(scoring.flags):
            if flag.field not in fields:
                yield f"{key}.flags[{j}].field", f"{flag.field!r} is not an item of this scale"
            if flag.requires_instrument is not None:
                yield from known_instrument(
                    f"{key}.flags[{j}].requires_instrument", flag.requires_instrument
                )

    # endpoints
    primary = protocol.endpoints.primary
    yield from known_instrument("endpoints.primary.instrument", primary.instrument)
    yield from known_event("endpoints.primary.baseline_event", primary.baseline_event)
    yield from known_event("endpoints.primary.event", primary.event)

    # C-SSRS
    yield from known_instrument("cssrs.screening_form", protocol.cssrs.screening_form)
    yield from known_instrument("cssrs.since_last_form", protocol.cssrs.since_last_form)

    # liver
    liver = protocol.liver
    yield from known_instrument("liver.form", liver.form)
    test_ids = [test.id for test in liver.tests]
    for repeated in _duplicates(test_ids):
        yield "liver.tests", f"test {repeated!r} repeats"
    hys = liver.hys_law
    for j, test_id in enumerate(hys.transaminases):
        if test_id not in test_ids:
            yield f"liver.hys_law.transaminases[{j}]", f"unknown test {test_id!r}"
    for name in ("bilirubin", "alp"):
        if getattr(hys, name) not in test_ids:
            yield f"liver.hys_law.{name}", f"unknown test {getattr(hys, name)!r}"

    # withdrawal (optional: a study without a withdrawal scale declares none)
    if protocol.withdrawal is not None:
        yield from known_instrument("withdrawal.instrument", protocol.withdrawal.instrument)
        for j, event in enumerate(protocol.withdrawal.events):
            yield from known_event(f"withdrawal.events[{j}]", event)

    # vital signs (optional)
    if protocol.vital_signs is not None:
        yield from known_instrument("vital_signs.form", protocol.vital_signs.form)
        for repeated in _duplicates(p.id for p in protocol.vital_signs.parameters):
            yield "vital_signs.parameters", f"id {repeated!r} repeats: expected unique ids"

    # the visit form
    yield from known_instrument("visit_form.form", protocol.visit_form.form)

    # adverse events
    ae = protocol.adverse_events
    yield from known_instrument("adverse_events.form", ae.form)
    yield from known_event("adverse_events.event", ae.event)
    yield from due_at("adverse_events.event", ae.form, ae.event)
    soc_codes = {soc.code for soc in ae.socs}
    for repeated in _duplicates(soc.code for soc in ae.socs):
        yield "adverse_events.socs", f"SOC code {repeated} repeats"
    for repeated in _duplicates(term.code for term in ae.coding_list):
        yield "adverse_events.coding_list", f"PT code {repeated} repeats"
    for j, term in enumerate(ae.coding_list):
        if term.soc not in soc_codes:
            yield f"adverse_events.coding_list[{j}].soc", f"unknown SOC code {term.soc}"
    pt_codes = {term.code for term in ae.coding_list}
    for repeated in _duplicates(a.code for a in ae.aesi):
        yield "adverse_events.aesi", f"AESI code {repeated} repeats"
    for j, aesi in enumerate(ae.aesi):
        for k, pt in enumerate(aesi.pts):
            if pt not in pt_codes:
                yield f"adverse_events.aesi[{j}].pts[{k}]", f"unknown PT code {pt}"

    # clocks
    for repeated in _duplicates(clock.id for clock in protocol.reporting_clocks):
        yield "reporting_clocks", f"clock id {repeated!r} repeats"
    # Clock findings are named by case and report field: two clocks sharing both would raise
    # the same query twice (the serious case keeps its one historical check, smallest limit).
    for repeated in _duplicates(
        f"{clock.applies_to}/{clock.report_field}"
        for clock in protocol.reporting_clocks
        if clock.applies_to != "serious"
    ):
        case, field = str(repeated).split("/", 1)
        yield (
            "reporting_clocks",
            f"two clocks apply to {case!r} with the same report_field {field!r}: "
            "give each its own report date field",
        )

    # medications
    cm = protocol.concomitant_medications
    yield from known_instrument("concomitant_medications.form", cm.form)
    for repeated in _duplicates(c.code for c in cm.classes):
        yield "concomitant_medications.classes", f"class code {repeated} repeats"
    yield from known_event(
        "concomitant_medications.stable_dose.until_event", cm.stable_dose.until_event
    )
    yield from known_event(
        "concomitant_medications.prohibited_from_event", cm.prohibited_from_event
    )

    # blinding and deviations
    blinding = protocol.blinding
    for j, form in enumerate(blinding.unblinded_forms):
        yield from known_instrument(f"blinding.unblinded_forms[{j}]", form)
    for form in blinding.reasons:
        if form not in blinding.unblinded_forms:
            yield f"blinding.reasons.{form}", f"{form!r} is not one of blinding.unblinded_forms"
    for j, masked in enumerate(blinding.masked_codes):
        where = f"blinding.masked_codes[{j}]"
        texts = masked.code_texts
        for repeated in _duplicates(texts):
            yield f"{where}.codes", f"code {repeated} repeats"
        if str(masked.masked_as) not in texts:
            yield (
                f"{where}.masked_as",
                f"{masked.masked_as!r} is not one of the masked codes {', '.join(texts)}",
            )
        if masked.field in blinding.masked_field_names:
            yield f"{where}.field", f"{masked.field!r} is already masked whole (masked_fields)"
    for repeated in _duplicates(m.field for m in blinding.masked_codes):
        yield "blinding.masked_codes", f"field {repeated!r} is masked twice"
    for repeated in _duplicates(m.name for m in blinding.masked_fields):
        yield "blinding.masked_fields", f"field {repeated!r} repeats"
    revealing = {*blinding.unblinded_forms, *blinding.masked_field_names}
    revealing |= {m.field for m in blinding.masked_codes}
    for j, neutral in enumerate(blinding.arm_neutral):
        if neutral.name in revealing:
            yield (
                f"blinding.arm_neutral[{j}]",
                f"{neutral.name!r} is declared both arm-neutral and revealing allocation",
            )
    for repeated in _duplicates(role.id for role in blinding.roles):
        yield "blinding.roles", f"role {repeated!r} repeats"
    for repeated in _duplicates(user for role in blinding.roles for user in role.redcap_users):
        yield "blinding.roles", f"REDCap user {repeated!r} has two roles"
    yield from known_instrument("deviations.form", protocol.deviations.form)
    for repeated in _duplicates(c.code for c in protocol.deviations.categories):
        yield "deviations.categories", f"category code {repeated} repeats"
