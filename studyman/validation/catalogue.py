"""The catalogue of edit checks, as data.

Every check studyman runs has one entry here: a stable id (query identities are derived from it,
so an id is never reused for another meaning), a severity, what it looks for, and where the rule
comes from (the data dictionary, REDCap's Data Quality rule letter, or the protocol section).
Custom checks from a study's ``checks.yaml`` join the catalogue at run time
(:func:`studyman.validation.custom.load_custom_checks`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Final, Literal

import pandas as pd

__all__ = [
    "CATALOGUE",
    "MEDICAL_REVIEW",
    "REVIEW_SIGNALS",
    "CheckDefinition",
    "CheckSeverity",
    "FindingKind",
    "catalogue_frame",
    "check_by_id",
    "finding_kind",
    "needs_medical_review",
]

CheckSeverity = Literal["critical", "major", "minor"]
FindingKind = Literal["site_query", "review_signal"]


@dataclass(frozen=True, slots=True)
class CheckDefinition:
    """One edit check.

    Attributes
    ----------
    check_id
        Stable identifier (part of every query id the check raises).
    severity
        ``critical`` (participant safety or the primary endpoint), ``major`` or ``minor``.
    description
        What the check looks for, in a coordinator's words.
    reference
        Where the rule comes from (REDCap Data Quality rule, protocol section, dictionary).
    kind
        ``dictionary`` (from the data dictionary), ``protocol``, ``custom`` or
        ``reconciliation`` (:mod:`studyman.validation.reconciliation`).
    review_only
        A statistical signal to review (outlier, large change), not necessarily an error.
    needs_arm
        Runs only in an unblinded run (randomisation data given).
    deviation_category
        When set, a finding also enters the protocol deviation log with this DV category.
    across_participants
        Whether a participant's finding depends on other participants' data (a study-wide
        statistic, a list reconciled with every record): a partial run does not apply it.
    finding_kind
        ``site_query`` (a site must answer it: it goes into the site's workbook) or
        ``review_signal`` (outliers, large changes, statistical monitoring: the central team
        looks; ``review-signals.csv``/``.xlsx``, never a site's workbook).
    medical_review
        A safety check (liver, suicidality, SAE clocks, deaths): a site response makes its
        queries ``answered``, only a medical review closes them (as every ``critical`` one).
    """

    check_id: str
    severity: CheckSeverity
    description: str
    reference: str
    kind: Literal["dictionary", "protocol", "custom", "reconciliation"] = "protocol"
    review_only: bool = False
    needs_arm: bool = False
    deviation_category: str = ""
    across_participants: bool = False
    finding_kind: FindingKind = "site_query"
    medical_review: bool = False


def _c(
    check_id: str,
    severity: CheckSeverity,
    description: str,
    reference: str,
    *,
    kind: Literal["dictionary", "protocol", "custom", "reconciliation"] = "protocol",
    review_only: bool = False,
    needs_arm: bool = False,
    deviation: str = "",
    across_participants: bool = False,
) -> CheckDefinition:
    return CheckDefinition(
        check_id,
        severity,
        description,
        reference,
        kind,
        review_only,
        needs_arm,
        deviation,
        across_participants,
    )


_DQ = "REDCap Data Quality rule"

_ENTRIES: tuple[CheckDefinition, ...] = (
    # --- REDCap Data Quality rules (dictionary-driven)
    _c(
        "DQ-B",
        "major",
        "Required field blank where branching logic shows it",
        f"{_DQ} B",
        kind="dictionary",
    ),
    _c(
        "DQ-C",
        "major",
        "Value does not match the field's validation type",
        f"{_DQ} C",
        kind="dictionary",
    ),
    _c(
        "DQ-D", "major", "Value outside the field's validation range", f"{_DQ} D", kind="dictionary"
    ),
    _c(
        "DQ-E",
        "minor",
        "Numeric value far from the visit's median (robust z over 3.5, site against the rest) "
        "(review)",
        f"{_DQ} E",
        kind="dictionary",
        review_only=True,
        across_participants=True,
    ),
    _c(
        "DQ-F", "minor", "Value in a field hidden by branching logic", f"{_DQ} F", kind="dictionary"
    ),
    _c(
        "DQ-G",
        "major",
        "Multiple-choice value that is not one of the field's codes",
        f"{_DQ} G",
        kind="dictionary",
    ),
    _c(
        "DQ-H",
        "major",
        "Stored calculated value disagrees with its formula",
        f"{_DQ} H",
        kind="dictionary",
    ),
    _c(
        "DQ-I",
        "minor",
        "Field holds a missing-data code (review)",
        f"{_DQ} I",
        kind="dictionary",
        review_only=True,
    ),
    # --- structure
    _c(
        "STR-DUP",
        "critical",
        "Duplicate record, event, instrument and instance",
        "trial-domain: structure",
    ),
    _c(
        "STR-SITE",
        "major",
        "Record ID does not match the pattern or its site / data access group",
        "protocol: study.record_id_pattern, sites",
    ),
    _c(
        "STR-UNENROLLED",
        "major",
        "Data for a participant without a participant (screening) record",
        "trial-domain: structure",
    ),
    _c(
        "STR-EVENT",
        "major",
        "Form entered at an event the event mapping does not allow",
        "protocol: visits[].instruments",
    ),
    _c(
        "STR-COMPLETE",
        "major",
        "Form marked Complete with required fields blank",
        "trial-domain: structure",
    ),
    # --- dates and visits
    _c("DAT-FUTURE", "major", "Date after the data cut-off", "protocol: reporting.data_cut"),
    _c("DAT-INVALID", "major", "Date that is not a real calendar date", "trial-domain: dates"),
    _c(
        "DAT-BEFORE-CONSENT",
        "major",
        "Assessment dated before informed consent",
        "trial-domain: dates",
        deviation="Informed consent",
    ),
    _c(
        "DAT-RAND-ORDER",
        "major",
        "Randomisation before consent or eligibility confirmation",
        "protocol: randomization",
        deviation="Randomization",
    ),
    _c("DAT-VISIT-ORDER", "major", "Visit dates out of schedule order", "protocol: visits"),
    _c(
        "VIS-WINDOW",
        "minor",
        "Visit outside its target window",
        "protocol: visits[].window",
        deviation="Visit out of window",
    ),
    _c(
        "VIS-OVERDUE",
        "major",
        "Visit overdue: window closed, no data, participant not withdrawn",
        "protocol: visits[].window",
    ),
    _c(
        "ELG-AGE",
        "major",
        "Age at consent outside the inclusion range",
        "protocol: eligibility.criteria (a derived inclusion range on one field of the consent "
        "form)",
        deviation="Eligibility",
    ),
    # --- eligibility
    _c(
        "ELG-FORM",
        "critical",
        "Randomised with an inclusion criterion No or an exclusion criterion Yes",
        "protocol: eligibility.criteria",
        deviation="Eligibility",
    ),
    _c(
        "ELG-DERIVED",
        "major",
        "Eligibility derived from the data disagrees with the eligibility form",
        "protocol: eligibility.criteria[].derived",
    ),
    _c(
        "ELG-RAND-INELIGIBLE",
        "critical",
        "Randomised although the eligibility form says not eligible",
        "protocol: eligibility",
        deviation="Eligibility",
    ),
    _c(
        "ELG-STRATUM",
        "major",
        "Stratum recorded by the site differs from the stratum derived from the baseline score",
        "protocol: randomization.stratification",
    ),
    # --- scores
    _c(
        "SCO-TOTAL",
        "major",
        "Stored total differs from the protocol's scoring of its items",
        "protocol: scoring",
    ),
    _c(
        "SCO-TOTAL-MISSING-ITEMS",
        "major",
        "Total present although more items are missing than proration allows",
        "protocol: scoring[].max_missing_items",
    ),
    _c(
        "SCO-HAMD16",
        "major",
        "Items of which exactly one is scored (HAM-D 16A/16B) both scored or neither scored",
        "protocol: scoring[].exactly_one_of",
    ),
    _c(
        "SCO-PHQ9-CSSRS",
        "critical",
        "A flagged item (PHQ-9 item 9 above 0) without its required form (C-SSRS) at the visit",
        "protocol: scoring[].flags",
    ),
    _c(
        "SCO-RAND-LOW",
        "critical",
        "Randomised with a baseline scale total below the inclusion threshold",
        "protocol: eligibility.criteria (a derived inclusion on a scale total at randomisation)",
        deviation="Eligibility",
    ),
    _c(
        "SCO-CHANGE",
        "minor",
        "Primary scale total changed by more than the review threshold between visits (review)",
        "protocol: reporting.change_review_threshold",
        review_only=True,
    ),
    # --- C-SSRS
    _c(
        "CSR-SKIP",
        "major",
        "C-SSRS items 3 to 5 answered although items 1 and 2 are No",
        "protocol: cssrs",
    ),
    _c(
        "CSR-SAFETY",
        "critical",
        "C-SSRS ideation type 4-5 or suicidal behaviour without a safety action",
        "protocol: cssrs.safety_action_required_ideation",
    ),
    # --- adverse events
    _c(
        "AE-END-BEFORE-START",
        "major",
        "Adverse event ends before it starts",
        "trial-domain: adverse events",
    ),
    _c(
        "AE-OUTCOME-END",
        "major",
        "Outcome recovered without an end date, or ongoing with one",
        "protocol: adverse_events outcome codes",
    ),
    _c(
        "AE-SERIOUS-CRITERION",
        "critical",
        "Serious adverse event without a seriousness criterion",
        "protocol: adverse_events",
    ),
    _c(
        "AE-SAE-LATE",
        "critical",
        "SAE report sent later than the protocol's clock after awareness",
        "protocol: reporting_clocks sae_sponsor",
        deviation="Safety reporting",
    ),
    _c(
        "AE-CLOCK-SUSAR-FLT-LATE",
        "critical",
        "Fatal or life-threatening SUSAR reported to the regulator later than its clock",
        "protocol: reporting_clocks susar_fatal_life_threatening",
        deviation="Safety reporting",
    ),
    _c(
        "AE-CLOCK-SUSAR-FLT-MISSING",
        "critical",
        "Fatal or life-threatening SUSAR without a report to the regulator past its deadline",
        "protocol: reporting_clocks susar_fatal_life_threatening",
        deviation="Safety reporting",
    ),
    _c(
        "AE-CLOCK-SUSAR-LATE",
        "critical",
        "SUSAR (not fatal or life-threatening) reported to the regulator later than its clock",
        "protocol: reporting_clocks susar_other",
        deviation="Safety reporting",
    ),
    _c(
        "AE-CLOCK-SUSAR-MISSING",
        "critical",
        "SUSAR (not fatal or life-threatening) without a report to the regulator past its deadline",
        "protocol: reporting_clocks susar_other",
        deviation="Safety reporting",
    ),
    _c(
        "AE-CLOCK-SUICIDE-DEATH-LATE",
        "critical",
        "Suicide death reported to the DSMB later than its clock",
        "protocol: reporting_clocks suicide_death_dsmb",
        deviation="Safety reporting",
    ),
    _c(
        "AE-CLOCK-SUICIDE-DEATH-MISSING",
        "critical",
        "Suicide death without a report to the DSMB past its deadline",
        "protocol: reporting_clocks suicide_death_dsmb",
        deviation="Safety reporting",
    ),
    _c(
        "AE-CLOCK-UP-LATE",
        "major",
        "Unanticipated problem reported to the IRB later than its clock",
        "protocol: reporting_clocks unanticipated_problem_irb",
        deviation="Safety reporting",
    ),
    _c(
        "AE-CLOCK-UP-MISSING",
        "major",
        "Unanticipated problem without a report to the IRB past its deadline",
        "protocol: reporting_clocks unanticipated_problem_irb",
        deviation="Safety reporting",
    ),
    _c(
        "AE-SAE-DATES",
        "critical",
        "Serious adverse event without awareness or report date and time",
        "protocol: reporting_clocks",
    ),
    _c(
        "AE-MISSING",
        "major",
        "Adverse event severity or relatedness missing",
        "protocol: adverse_events",
    ),
    _c(
        "AE-BEFORE-CONSENT",
        "minor",
        "Adverse event onset before consent (belongs in medical history)",
        "trial-domain: adverse events",
    ),
    _c(
        "AE-FATAL-NO-DEATH",
        "critical",
        "Fatal adverse event without a death in the disposition form",
        "protocol: adverse_events.fatal_outcome_code",
    ),
    _c(
        "AE-DUPLICATE",
        "minor",
        "Likely duplicate adverse event (same term and start date)",
        "trial-domain: adverse events",
    ),
    _c(
        "AE-CODING",
        "major",
        "Preferred term and system organ class disagree with the study coding list",
        "protocol: adverse_events.coding_list",
    ),
    # --- concomitant medications
    _c(
        "CM-STOP-BEFORE-START",
        "major",
        "Medication stops before it starts",
        "trial-domain: concomitant medications",
    ),
    _c(
        "CM-PROHIBITED",
        "critical",
        "Prohibited medication taken during the study",
        "protocol: concomitant_medications.classes",
        deviation="Prohibited medication",
    ),
    _c(
        "CM-NEW-AD",
        "major",
        "Antidepressant started after randomisation",
        "protocol: concomitant_medications.stable_dose",
        deviation="Prohibited medication",
    ),
    _c(
        "CM-DOSE-CHANGE",
        "major",
        "Antidepressant dose changed during the stable-dose period",
        "protocol: concomitant_medications.stable_dose",
        deviation="Prohibited medication",
    ),
    _c(
        "CM-INCOMPLETE",
        "minor",
        "Medication dose, unit or frequency missing",
        "trial-domain: concomitant medications",
    ),
    # --- safety labs and withdrawal
    _c(
        "LIV-HYS",
        "critical",
        "Potential Hy's law case: ALT or AST > 3x ULN and bilirubin > 2x ULN, ALP <= 2x ULN "
        "(medical review)",
        "protocol: liver.hys_law",
        review_only=True,
    ),
    _c(
        "LIV-ALT",
        "major",
        "ALT or AST above the protocol's alert multiple of ULN (medical review)",
        "protocol: liver.transaminase_alert_multiple",
        review_only=True,
    ),
    _c(
        "COWS-AESI",
        "major",
        "COWS total at or above the withdrawal threshold without a withdrawal AESI",
        "protocol: withdrawal.aesi_threshold",
    ),
    # --- disposition and treatment
    _c("DS-DATA-AFTER", "major", "Data dated after withdrawal or death", "protocol: disposition"),
    _c(
        "DS-COMPLETED-NO-FINAL",
        "major",
        "Disposition completed without the final visit",
        "protocol: disposition, visits",
    ),
    _c(
        "DS-DEATH-DATE",
        "critical",
        "Death recorded without a date of death",
        "protocol: disposition",
    ),
    _c(
        "ADH-CBT",
        "minor",
        "CBT sessions attended below the protocol's adherence threshold (review)",
        "protocol: treatment.adherence_threshold",
        review_only=True,
    ),
    # --- reconciliation: a fact recorded twice agrees (studyman.validation.reconciliation)
    _c(
        "REC-DS-AE-NO-WITHDRAWAL",
        "major",
        "Disposition reason adverse event, but no adverse event withdrew study treatment",
        "protocol: disposition.codes[adverse_event]; adverse_events.action_field",
        kind="reconciliation",
        needs_arm=True,
    ),
    _c(
        "REC-WITHDRAWAL-NO-DS-AE",
        "major",
        "Adverse event withdrew study treatment, but the disposition reason is not adverse event",
        "protocol: adverse_events.treatment_withdrawn_action_code; disposition.codes",
        kind="reconciliation",
        needs_arm=True,
    ),
    _c(
        "REC-DEATH-NO-FATAL-AE",
        "critical",
        "Death in the disposition form without an adverse event of fatal outcome",
        "protocol: disposition.codes[death]; adverse_events.fatal_outcome_code",
        kind="reconciliation",
    ),
    _c(
        "REC-FATAL-NO-DEATH-DATE",
        "critical",
        "Adverse event of fatal outcome without a date of death",
        "protocol: adverse_events.fatal_outcome_code; disposition.death_date_field",
        kind="reconciliation",
    ),
    _c(
        "REC-TREATMENT-BEFORE-RAND",
        "major",
        "Study treatment (a session attended or a dose taken) before randomisation",
        "protocol: treatment.sessions, treatment.doses; randomization.date_field",
        kind="reconciliation",
    ),
    _c(
        "REC-DV-MAJOR-NOT-RECORDED",
        "major",
        "Deviation of a category the protocol declares major not recorded as major",
        "protocol: deviations.categories[major]",
        kind="reconciliation",
    ),
    # --- checks that need the arm (unblinded runs only)
    _c(
        "ARM-ADJUNCT-WRONG-ARM",
        "critical",
        "Adjunct dosing recorded for a participant in an arm without the adjunct",
        "protocol: arms[].receives_adjunct",
        needs_arm=True,
        deviation="Study treatment administration",
    ),
    _c(
        "ARM-LIST-MISSING",
        "major",
        "Randomised in the snapshot but without an arm in the randomisation list (the arm "
        "checks could not run for this participant)",
        "protocol: randomization.randomized_field; arms.field",
        needs_arm=True,
    ),
    _c(
        "ARM-LIST-UNKNOWN",
        "major",
        "In the randomisation list but not a record of the snapshot",
        "protocol: arms.field",
        needs_arm=True,
        across_participants=True,
    ),
    _c(
        "ARM-STRATUM",
        "major",
        "Randomisation stratum differs from the stratum derived from site and baseline score",
        "protocol: randomization.stratum_format",
        needs_arm=True,
        deviation="Randomization",
    ),
)

#: Central review signals: statistical flags the data manager or monitor looks at; sites do not.
REVIEW_SIGNALS: Final = frozenset({"DQ-E", "DQ-I", "SCO-CHANGE", "ADH-CBT"})

#: Safety checks reviewed by the medical monitor (besides every ``critical`` check): liver,
#: suicidality, withdrawal, serious adverse events and their reporting clocks, deaths.
MEDICAL_REVIEW: Final = frozenset(
    {
        "LIV-HYS",
        "LIV-ALT",
        "CSR-SAFETY",
        "SCO-PHQ9-CSSRS",
        "COWS-AESI",
        "AE-SERIOUS-CRITERION",
        "AE-SAE-LATE",
        "AE-SAE-DATES",
        "AE-FATAL-NO-DEATH",
        "DS-DEATH-DATE",
        *(entry.check_id for entry in _ENTRIES if entry.check_id.startswith("AE-CLOCK-")),
    }
)

CATALOGUE: tuple[CheckDefinition, ...] = tuple(
    replace(
        entry,
        finding_kind="review_signal" if entry.check_id in REVIEW_SIGNALS else "site_query",
        medical_review=entry.check_id in MEDICAL_REVIEW,
    )
    for entry in _ENTRIES
)


def needs_medical_review(check_id: str, severity: str) -> bool:
    """Whether a query of this check and severity is closed only by a medical review."""
    return severity == "critical" or check_id in MEDICAL_REVIEW


def finding_kind(check_id: str) -> FindingKind:
    """``review_signal`` for the central review checks, else ``site_query`` (custom checks)."""
    return "review_signal" if check_id in REVIEW_SIGNALS else "site_query"


def check_by_id(check_id: str, extra: Iterable[CheckDefinition] = ()) -> CheckDefinition | None:
    """Return the catalogue entry *check_id* (built-in or among *extra*), or ``None``."""
    for check in (*CATALOGUE, *extra):
        if check.check_id == check_id:
            return check
    return None


def catalogue_frame(extra: Iterable[CheckDefinition] = ()) -> pd.DataFrame:
    """The catalogue (plus *extra* custom checks) as a table, one row per check."""
    rows = [
        {
            "check_id": check.check_id,
            "severity": check.severity,
            "kind": check.kind,
            "review_only": check.review_only,
            "needs_arm": check.needs_arm,
            "finding_kind": check.finding_kind,
            "medical_review": check.medical_review or check.severity == "critical",
            "deviation_category": check.deviation_category,
            "description": check.description,
            "reference": check.reference,
        }
        for check in (*CATALOGUE, *extra)
    ]
    return pd.DataFrame(rows)
