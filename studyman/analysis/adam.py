"""ADaM-style analysis data sets (ADSL, ADQS, ADAE) derived from snapshot tables.

Pure: typed instrument tables (as :mod:`studyman.sources.tidy` makes them and snapshots store
them), the data dictionary's choice labels and, when unblinded, the randomisation list in;
data frames out. REDCap field names are translated to CDISC names here and nowhere else, and
every one of them is read from the study's protocol (:class:`studyman.protocol.Protocol`).

Derivation rules (``docs/design.md``):

* ``USUBJID`` = ``<STUDYID>-<record ID>``; ``SITEID`` = the record-ID prefix (``S01``).
* ``AVISITN`` = the week of the visit from the protocol's schedule (``target_day / 7``), baseline
  0, screening −1 (:func:`visit_numbers`); event names are never parsed.
* ``PARAMCD`` = the scale's ``scoring.paramcd``; ``AVAL`` its declared total field. ADQS holds the
  scales the plan gives analysis visits for.
* ``ABLFL`` = ``Y`` on the baseline-event record; ``BASE`` its ``AVAL``; ``CHG = AVAL − BASE``
  and ``PCHG = 100 · CHG / BASE`` after baseline.
* ``ANL01FL`` = ``Y`` on post-baseline records with a value at an analysis visit of the plan.
* ``AESEV`` = the severity's dictionary label in upper case, ``AESEVN`` its rank in the
  dictionary's order of choices (1 = mildest).
* ``STRATSEV`` = the level name of the protocol's score stratification factor, as recorded.
* From the study's facts (:func:`studyman.facts.derive_facts`, derived once for every output):
  ``RANDFL``/``RANDDT`` (randomised: the randomised field is yes and the date recorded),
  ``TRTSDT``/``TRTEDT`` (first/last study treatment: a session attended or a dose taken, doses
  only where the view holds the dosing log), ``TRTEMFL`` (treatment-emergent by the plan's one
  rule), ``EOSSTT``/``DCSREAS``/``EOSDT``/``DTHDT`` (the disposition) and the population flags
  (:mod:`studyman.analysis.populations`).
* Treatment discontinuation, the intercurrent event
  (:func:`studyman.analysis.intercurrent.treatment_discontinuation`): ``EOTSTT`` is
  ``DISCONTINUED`` for a participant who discontinued treatment, ``COMPLETED`` when the
  treatment period ended on study (a disposition recorded after it, or its end before the
  cut-off) and ``ONGOING`` otherwise; ``DCTDT`` the last study treatment received (else the
  disposition date) and ``DCTREAS`` the disposition's reason. Empty for participants not
  randomised.
* :attr:`AdamDatasets.censored`: the analysis visits of participants still on study that were not
  yet due at the cut-off (administrative censoring,
  :func:`studyman.analysis.intercurrent.administratively_censored`), numbered as ``AVISITN``.
* Without a randomisation list ``TRT01P``/``TRT01A`` stay empty (blinded data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from studyman.analysis.intercurrent import administratively_censored, treatment_discontinuation
from studyman.errors import AnalysisError
from studyman.facts import StudyFacts
from studyman.protocol import Protocol
from studyman.protocol.models import (
    RANDOMIZATION_LIST_ARM_HEADERS,
    RANDOMIZATION_LIST_RECORD_HEADERS,
    Scoring,
)

__all__ = [
    "AdamDatasets",
    "analysis_parameters",
    "choice_labels",
    "derive_adam",
    "lookup",
    "normalise_randomization",
    "visit_numbers",
]

_EVENT = "redcap_event_name"
_INSTANCE = "redcap_repeat_instance"
#: The record-ID column of the facts layer's event tables (:attr:`StudyFacts.adverse_events`).
_FACTS_RECORD = "subject"
_DAYS_PER_WEEK = 7


def _no_censoring() -> pd.DataFrame:
    return pd.DataFrame({"SUBJID": pd.Series(dtype="string"), "AVISITN": pd.Series(dtype="int64")})


@dataclass(frozen=True)
class AdamDatasets:
    """The derived data sets.

    Attributes
    ----------
    adsl, adqs, adae
        Subject level, questionnaires, adverse events.
    visits
        Visit dates: ``SUBJID, AVISITN, ADT``.
    censored
        ``SUBJID, AVISITN``: analysis visits not yet due at the cut-off of participants still on
        study (administratively censored; not missing data). Empty when not derived.
    target_days
        ``AVISITN`` → the visit's target study day (randomisation = day 0), from the protocol.
        Empty when not derived: the reference-based imputations then fall back to the dropout
        rule (:mod:`studyman.analysis.imputation`).
    """

    adsl: pd.DataFrame
    adqs: pd.DataFrame
    adae: pd.DataFrame
    visits: pd.DataFrame
    censored: pd.DataFrame = field(default_factory=_no_censoring)
    target_days: Mapping[int, int] = field(default_factory=dict)


def visit_numbers(protocol: Protocol) -> dict[str, int]:
    """Event → analysis visit number (week) from the protocol's visit schedule.

    Screening is −1 and baseline 0; every other visit with a target day is its week
    (``target_day / 7``). Visits without a target day (logs, end of study) have no number.

    Raises
    ------
    AnalysisError
        A scheduled visit's target day is not a whole number of weeks (the key is named).
    """
    numbers: dict[str, int] = {}
    for index, visit in enumerate(protocol.visits):
        if visit.kind == "screening":
            numbers[visit.event] = -1
        elif visit.kind == "baseline":
            numbers[visit.event] = 0
        elif visit.target_day is not None:
            weeks, rest = divmod(visit.target_day, _DAYS_PER_WEEK)
            if rest:
                raise AnalysisError(
                    f"{protocol.source_file or 'protocol'}: visits[{index}] ({visit.event}): "
                    f"target day {visit.target_day} is not a whole week; analysis visit "
                    "numbers (AVISITN) count weeks"
                )
            numbers[visit.event] = weeks
    return numbers


def analysis_parameters(
    protocol: Protocol, analysis_visits: Mapping[str, Sequence[int]]
) -> list[Scoring]:
    """The protocol's scales that the plan gives analysis visits for, in protocol order.

    Raises
    ------
    AnalysisError
        The plan names a parameter that no scale of the protocol declares.
    """
    by_key = {scoring.parameter_code.lower(): scoring for scoring in protocol.scoring}
    unknown = sorted(set(analysis_visits) - set(by_key))
    if unknown:
        declared = ", ".join(s.parameter_code for s in protocol.scoring) or "none"
        raise AnalysisError(
            f"the plan's visits name parameter(s) {', '.join(u.upper() for u in unknown)} that "
            f"no scale of the protocol declares (scoring[].paramcd: {declared})"
        )
    return [s for s in protocol.scoring if s.parameter_code.lower() in analysis_visits]


def choice_labels(metadata: Sequence[Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """Field → {code: label} from data-dictionary rows (``content=metadata`` keys)."""
    labels: dict[str, dict[str, str]] = {}
    for row in metadata:
        if row.get("field_type") not in {"radio", "dropdown", "checkbox"}:
            continue
        pairs: dict[str, str] = {}
        for part in str(row.get("select_choices_or_calculations", "")).split("|"):
            code, _, label = part.partition(",")
            if code.strip():
                pairs[code.strip()] = label.strip()
        labels[str(row["field_name"])] = pairs
    return labels


def normalise_randomization(
    frame: pd.DataFrame,
    arm_labels: Mapping[str, str],
    *,
    record_id_field: str = "",
    arm_field: str = "",
) -> pd.DataFrame:
    """Bring a randomisation list to columns ``SUBJID, TRT01P`` (arm names).

    The record-ID column is *record_id_field* (the protocol's) or one of
    :data:`~studyman.protocol.models.RANDOMIZATION_LIST_RECORD_HEADERS`; the arm column is
    *arm_field* (the protocol's arm field) or one of
    :data:`~studyman.protocol.models.RANDOMIZATION_LIST_ARM_HEADERS`, holding REDCap codes
    (decoded with *arm_labels*) or arm names.

    Raises
    ------
    AnalysisError
        No record-ID or arm column, an unknown arm, or a participant listed twice.
    """
    records = tuple(
        dict.fromkeys(c for c in (record_id_field, *RANDOMIZATION_LIST_RECORD_HEADERS) if c)
    )
    arms = tuple(dict.fromkeys(c for c in (arm_field, *RANDOMIZATION_LIST_ARM_HEADERS) if c))
    record = next((c for c in records if c in frame.columns), None)
    arm = next((c for c in arms if c in frame.columns), None)
    if record is None or arm is None:
        raise AnalysisError(
            f"randomisation list needs a record-ID column ({', '.join(records)}) and an arm "
            f"column ({', '.join(arms)}); it has {', '.join(map(str, frame.columns))}"
        )
    values = frame[arm].astype("string").str.strip()
    names = set(arm_labels.values())
    decoded = values.map(lambda v: arm_labels.get(v, v) if v is not pd.NA else v)
    unknown = sorted({str(v) for v in decoded.dropna() if names and v not in names})
    if unknown:
        raise AnalysisError(f"randomisation list: unknown arm(s) {', '.join(unknown)}")
    result = pd.DataFrame(
        {"SUBJID": frame[record].astype("string"), "TRT01P": decoded.astype("string")}
    )
    duplicated = result["SUBJID"][result["SUBJID"].duplicated()].unique().tolist()
    if duplicated:
        raise AnalysisError(f"randomisation list: record(s) listed twice: {duplicated[:10]}")
    return result.dropna(subset=["TRT01P"])


def _table_of(protocol: Protocol, tables: Mapping[str, pd.DataFrame], field: str) -> str:
    """The form (table) holding *field*: from the REDCap dictionary, else the tables' columns."""
    if protocol.redcap is not None:
        spec = protocol.redcap.dictionary.get(field)
        if spec is not None:
            return spec.form_name
    return next((name for name, frame in tables.items() if field in frame.columns), "")


def _table(
    tables: Mapping[str, pd.DataFrame], name: str, key: str, columns: Sequence[str]
) -> pd.DataFrame:
    """The table *name* with *key* and *columns* (missing ones added empty); absent: empty."""
    frame = tables.get(name)
    if frame is None:
        frame = pd.DataFrame({key: pd.Series(dtype="string")})
    frame = frame.copy()
    for column in (key, *columns):
        if column not in frame.columns:
            frame[column] = pd.NA
    return frame


def _first_by_record(
    protocol: Protocol, tables: Mapping[str, pd.DataFrame], field: str, key: str
) -> pd.Series:
    """*field* per record (first row), from the form that holds it; empty when absent."""
    frame = tables.get(_table_of(protocol, tables, field))
    if frame is None or field not in frame.columns or key not in frame.columns:
        return pd.Series(dtype=object)
    first = frame.drop_duplicates(key)
    values = first[field].copy()
    values.index = pd.Index(first[key].astype(str).to_numpy())
    return values


def _codes(series: pd.Series) -> pd.Series:
    return series.astype("string").str.strip()


def _yes(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce").fillna(0).astype(int) == 1


def _flag(mask: pd.Series) -> pd.Series:
    return pd.Series(np.where(mask.fillna(False).to_numpy(bool), "Y", "N"), index=mask.index)


def lookup(keys: pd.Series, values: pd.Series) -> pd.Series:
    """``values`` looked up by each key (missing where absent), keeping the dtype of *values*.

    ``Series.map`` with an empty datetime series fails in pandas; ``reindex`` does not.
    """
    unique = values[~values.index.duplicated(keep="first")]
    found = unique.reindex(keys.to_numpy())
    found.index = keys.index
    return found


def _by_record(frame: pd.DataFrame, key: str, column: str, how: str) -> pd.Series:
    valid = frame.dropna(subset=[column])
    if valid.empty:
        return pd.Series(dtype="datetime64[us]")
    grouped = valid.groupby(key)[column]
    return grouped.min() if how == "min" else grouped.max()


def _stratum(protocol: Protocol, tables: Mapping[str, pd.DataFrame], key: str) -> pd.Series:
    """Record → the level name of the protocol's score stratum as recorded (empty if none)."""
    factor = next(
        (
            f
            for f in protocol.randomization.stratification
            if f.source == "score" and f.recorded_field
        ),
        None,
    )
    if factor is None or factor.recorded_field is None:
        return pd.Series(dtype=object)
    names = {str(level.code): level.name for level in factor.levels}
    recorded = _first_by_record(protocol, tables, factor.recorded_field, key)
    return _codes(recorded).map(lambda v: names.get(v, pd.NA) if isinstance(v, str) else pd.NA)


def derive_adam(
    tables: Mapping[str, pd.DataFrame],
    *,
    protocol: Protocol,
    study: str,
    choices: Mapping[str, Mapping[str, str]],
    randomization: pd.DataFrame | None,
    analysis_visits: Mapping[str, Sequence[int]],
    facts: StudyFacts,
) -> AdamDatasets:
    """Derive ADSL, ADQS and ADAE (and a visit-date table) from instrument tables.

    Parameters
    ----------
    tables
        Instrument name → typed table (snapshot tables).
    protocol
        The study: every form, field, code and visit is read from it.
    study
        STUDYID.
    choices
        Field → {code: label} (:func:`choice_labels`).
    randomization
        ``SUBJID, TRT01P`` (:func:`normalise_randomization`) or None when blinded.
    analysis_visits
        PARAMCD (lower case) → analysis visits, for ``ANL01FL``; ADQS holds these parameters.
    facts
        The study's facts from the same tables (randomisation, exposure, treatment-emergence,
        disposition); read, never derived again here.

    Returns
    -------
    AdamDatasets
        ADSL without population flags (see :func:`studyman.analysis.populations.flag_populations`).

    Raises
    ------
    AnalysisError
        The participant form has no rows, the plan names a parameter the protocol lacks, or a
        visit's target day is not a whole week.
    """
    key = protocol.study.record_id_field
    enrolment = protocol.enrolment
    participant_form = _table_of(protocol, tables, enrolment.consent_date_field)
    participant = _table(tables, participant_form, key, [])
    if participant[key].isna().all():
        where = f"{participant_form!r} table rows" if participant_form else "table"
        raise AnalysisError(
            f"snapshot has no {where} with the consent date field "
            f"{enrolment.consent_date_field!r} (enrolment.consent_date_field): the participant "
            "form; cannot derive ADSL"
        )
    numbers = visit_numbers(protocol)

    adsl = pd.DataFrame({"SUBJID": participant[key].astype("string")}).drop_duplicates()
    adsl = adsl.dropna().sort_values("SUBJID").reset_index(drop=True)
    adsl.insert(0, "USUBJID", study + "-" + adsl["SUBJID"])
    adsl.insert(0, "STUDYID", study)
    adsl["SITEID"] = adsl["SUBJID"].str.split("-").str[0]
    age = _first_by_record(protocol, tables, enrolment.age_field, key)
    adsl["AGE"] = pd.to_numeric(adsl["SUBJID"].map(age), errors="coerce")
    sex_labels = choices.get(enrolment.sex_field, {})
    adsl["SEX"] = (
        adsl["SUBJID"]
        .map(_codes(_first_by_record(protocol, tables, enrolment.sex_field, key)))
        .map(lambda v: sex_labels.get(v, v) if isinstance(v, str) else pd.NA)
    )
    subjects = facts.subjects.set_axis(facts.subjects.index.astype(str))
    adsl["RANDFL"] = _flag(adsl["SUBJID"].map(subjects["randomised"]))
    adsl["RANDDT"] = lookup(adsl["SUBJID"], pd.to_datetime(subjects["randomisation_date"]))
    adsl["STRATSEV"] = (
        adsl["SUBJID"]
        .map(_stratum(protocol, tables, key))
        .map(lambda v: v if isinstance(v, str) else pd.NA)
    )
    if randomization is not None:
        arms = randomization.set_index("SUBJID")["TRT01P"]
        adsl["TRT01P"] = adsl["SUBJID"].map(arms).astype("string")
        adsl.loc[adsl["RANDFL"] != "Y", "TRT01P"] = pd.NA
    else:
        adsl["TRT01P"] = pd.Series(pd.NA, index=adsl.index, dtype="string")

    adsl["TRTSDT"] = lookup(adsl["SUBJID"], pd.to_datetime(subjects["first_treatment"]))
    adsl["TRTEDT"] = lookup(adsl["SUBJID"], pd.to_datetime(subjects["last_treatment"]))
    adsl["TRT01A"] = _as_treated(protocol, tables, adsl, key, randomization is not None)
    adsl.loc[adsl["TRTSDT"].isna(), "TRT01A"] = pd.NA

    completed = adsl["SUBJID"].map(subjects["completed"]).fillna(False).astype(bool)
    label = adsl["SUBJID"].map(subjects["disposition_label"]).astype("string")
    adsl["EOSSTT"] = np.where(
        completed, "COMPLETED", np.where(label.notna().to_numpy(bool), "DISCONTINUED", "ONGOING")
    )
    adsl["DCSREAS"] = label.where(~completed).astype("string")
    adsl["EOSDT"] = lookup(adsl["SUBJID"], pd.to_datetime(subjects["disposition_date"]))
    adsl["DTHDT"] = lookup(adsl["SUBJID"], pd.to_datetime(subjects["date_of_death"]))
    _add_treatment_discontinuation(adsl, protocol, facts)
    form = protocol.visit_form
    visit = _table(tables, form.form, key, [_EVENT, form.date_field])
    visit_dates = pd.DataFrame(
        {
            "SUBJID": visit[key].astype("string"),
            "EVENT": visit[_EVENT].astype("string"),
            "ADT": pd.to_datetime(visit[form.date_field], errors="coerce"),
        }
    )
    last_visit = lookup(adsl["SUBJID"], _by_record(visit_dates, "SUBJID", "ADT", "max"))
    last_contact = pd.concat(
        [pd.to_datetime(adsl["EOSDT"]), pd.to_datetime(last_visit), adsl["TRTEDT"]], axis=1
    ).max(axis=1)
    adsl["LSTCNDT"] = last_contact
    exposure = (last_contact - adsl["TRTSDT"]).dt.days + 1
    adsl["EXPDAYS"] = pd.to_numeric(exposure, errors="coerce").astype("Float64")

    visits = pd.DataFrame(
        {
            "SUBJID": visit_dates["SUBJID"],
            "AVISITN": visit_dates["EVENT"].map(numbers),
            "ADT": visit_dates["ADT"],
        }
    ).dropna(subset=["AVISITN", "ADT"])
    visits["AVISITN"] = visits["AVISITN"].astype(int)
    visits = visits.sort_values(["SUBJID", "AVISITN"]).reset_index(drop=True)

    scales = analysis_parameters(protocol, analysis_visits)
    adqs = _derive_adqs(tables, key, scales, numbers, adsl, visits, analysis_visits)
    adae = _derive_adae(tables, protocol, adsl, choices, facts)
    censored = administratively_censored(facts, numbers)
    censored = censored[censored["AVISITN"] > 0].astype({"SUBJID": "string"})
    target_days = {
        numbers[v.event]: int(v.target_day)
        for v in protocol.visits
        if v.event in numbers and v.target_day is not None and numbers[v.event] > 0
    }
    return AdamDatasets(
        adsl=adsl,
        adqs=adqs,
        adae=adae,
        visits=visits,
        censored=censored.reset_index(drop=True),
        target_days=target_days,
    )


def _add_treatment_discontinuation(
    adsl: pd.DataFrame, protocol: Protocol, facts: StudyFacts
) -> None:
    """``EOTSTT``, ``DCTDT``, ``DCTREAS`` (randomised participants; see the module notes)."""
    ice = treatment_discontinuation(facts)
    stopped = adsl["SUBJID"].map(ice["TRTDISFL"]) == "Y"
    randomised = adsl["SUBJID"].isin(set(ice.index))
    # the treatment period ended on study: a disposition after it, or its end before the cut
    period_end = pd.to_datetime(adsl["RANDDT"]) + pd.Timedelta(days=7 * protocol.treatment.weeks)
    ended = pd.to_datetime(adsl["EOSDT"]).notna() | (period_end < pd.Timestamp(facts.cutoff))
    status = np.where(
        stopped, "DISCONTINUED", np.where(ended.to_numpy(bool), "COMPLETED", "ONGOING")
    )
    adsl["EOTSTT"] = pd.Series(status, index=adsl.index, dtype="string").where(randomised)
    adsl["DCTDT"] = lookup(adsl["SUBJID"], pd.to_datetime(ice["TRTDISDT"]))
    adsl["DCTREAS"] = lookup(adsl["SUBJID"], ice["DCTREAS"].astype("string"))


def _as_treated(
    protocol: Protocol,
    tables: Mapping[str, pd.DataFrame],
    adsl: pd.DataFrame,
    key: str,
    unblinded: bool,
) -> pd.Series:
    """TRT01A: the randomised arm, except a participant of an arm that takes doses who never
    took one: as treated in the one arm whose participants took no dose at all (CBT alone),
    when there is exactly one such arm."""
    as_treated = adsl["TRT01P"].copy()
    doses = protocol.treatment.doses
    if not unblinded or doses is None:
        return as_treated
    log = _table(tables, doses.form, key, [doses.given_field])
    dosed = set(log.loc[_yes(log[doses.given_field]), key].astype(str))
    if not dosed:
        return as_treated
    dosed_arms = adsl.loc[adsl["SUBJID"].isin(dosed), "TRT01P"].dropna().unique().tolist()
    other_arms = [a for a in adsl["TRT01P"].dropna().unique() if a not in dosed_arms]
    if dosed_arms and len(other_arms) == 1:
        undosed = adsl["TRT01P"].isin(dosed_arms) & ~adsl["SUBJID"].isin(dosed)
        as_treated.loc[undosed.fillna(False)] = other_arms[0]
    return as_treated


def _instance_key(value: object) -> str:
    """A repeat instance as text (``2``), whatever its dtype (``2.0``, ``"2"``)."""
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return "" if pd.isna(number) else str(int(number))


def _visit_label(number: int) -> str:
    return {-1: "Screening", 0: "Baseline"}.get(number, f"Week {number}")


def _derive_adqs(
    tables: Mapping[str, pd.DataFrame],
    key: str,
    scales: Sequence[Scoring],
    numbers: Mapping[str, int],
    adsl: pd.DataFrame,
    visits: pd.DataFrame,
    analysis_visits: Mapping[str, Sequence[int]],
) -> pd.DataFrame:
    parts = []
    for scoring in scales:
        paramcd, total = scoring.parameter_code, scoring.total_field
        table = _table(tables, scoring.instrument, key, [_EVENT, total])
        if table[key].isna().all():
            continue
        part = pd.DataFrame(
            {
                "SUBJID": table[key].astype("string"),
                "PARAMCD": paramcd,
                "PARAM": f"{scoring.label or scoring.instrument} total score",
                "AVISITN": table[_EVENT].astype("string").map(numbers),
                "AVAL": pd.to_numeric(table[total], errors="coerce").astype("float64"),
            }
        ).dropna(subset=["AVISITN", "SUBJID"])
        part["AVISITN"] = part["AVISITN"].astype(int)
        part = part.drop_duplicates(["SUBJID", "AVISITN"], keep="first")
        part["ABLFL"] = np.where(part["AVISITN"] == 0, "Y", "")
        base = part[(part["AVISITN"] == 0)].set_index("SUBJID")["AVAL"]
        part["BASE"] = part["SUBJID"].map(base).astype("float64")
        post = part["AVISITN"] > 0
        part["CHG"] = np.where(post, part["AVAL"] - part["BASE"], np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            part["PCHG"] = np.where(
                post & (part["BASE"] > 0), 100 * part["CHG"] / part["BASE"], np.nan
            )
        wanted = set(analysis_visits.get(paramcd.lower(), ()))
        part["ANL01FL"] = np.where(
            post & part["AVISITN"].isin(wanted) & part["AVAL"].notna(), "Y", ""
        )
        parts.append(part)
    columns = ["SUBJID", "PARAMCD", "PARAM", "AVISITN", "AVAL", "ABLFL", "BASE", "CHG", "PCHG"]
    if not parts:
        adqs = pd.DataFrame(columns=[*columns, "ANL01FL"])
    else:
        adqs = pd.concat(parts, ignore_index=True)
    adqs["AVISIT"] = adqs["AVISITN"].map(lambda n: _visit_label(int(n)))
    adqs = adqs.merge(visits, on=["SUBJID", "AVISITN"], how="left")
    keys = adsl[["STUDYID", "USUBJID", "SUBJID", "SITEID", "TRT01P", "STRATSEV"]]
    adqs = keys.merge(adqs, on="SUBJID", how="inner")
    adqs = adqs.sort_values(["USUBJID", "PARAMCD", "AVISITN"]).reset_index(drop=True)
    ordered = [
        "STUDYID", "USUBJID", "SUBJID", "SITEID", "TRT01P", "STRATSEV", "PARAMCD", "PARAM",
        "AVISIT", "AVISITN", "ADT", "AVAL", "ABLFL", "BASE", "CHG", "PCHG", "ANL01FL",
    ]  # fmt: skip
    return adqs[ordered]


def _derive_adae(
    tables: Mapping[str, pd.DataFrame],
    protocol: Protocol,
    adsl: pd.DataFrame,
    choices: Mapping[str, Mapping[str, str]],
    facts: StudyFacts,
) -> pd.DataFrame:
    key = protocol.study.record_id_field
    ae = protocol.adverse_events
    action = ae.action_field
    fields = [
        _INSTANCE, ae.term_field, ae.pt_field, ae.soc_field, ae.start_field, ae.end_field,
        ae.severity_field, ae.serious_field, ae.related_field, ae.outcome_field, ae.aesi_field,
        *((action,) if action else ()),
    ]  # fmt: skip
    table = _table(tables, ae.form, key, fields)
    table = table.dropna(subset=[key])

    def decode(field: str | None) -> pd.Series:
        if field is None:
            return pd.Series(pd.NA, index=table.index, dtype="string")
        labels = choices.get(field, {})
        return _codes(table[field]).map(lambda v: labels.get(v, v) if isinstance(v, str) else v)

    severity = {code: label.upper() for code, label in choices.get(ae.severity_field, {}).items()}
    rank = {code: index + 1 for index, code in enumerate(severity)}
    aesi_codes = {str(item.code) for item in ae.aesi}
    aesi_labels = choices.get(ae.aesi_field, {})
    adae = pd.DataFrame(
        {
            "SUBJID": table[key].astype("string"),
            "AESEQ": pd.to_numeric(table[_INSTANCE], errors="coerce"),
            "AETERM": table[ae.term_field].astype("string"),
            "AEDECOD": decode(ae.pt_field).astype("string"),
            "AESOC": decode(ae.soc_field).astype("string"),
            "AESEV": _codes(table[ae.severity_field]).map(
                lambda v: severity.get(v, pd.NA) if isinstance(v, str) else pd.NA
            ),
            # the rank of the severity in the dictionary's order of choices (1 = mildest)
            "AESEVN": pd.to_numeric(
                _codes(table[ae.severity_field]).map(
                    lambda v: rank.get(v, pd.NA) if isinstance(v, str) else pd.NA
                ),
                errors="coerce",
            ).astype("Int64"),
            "AESER": np.where(_yes(table[ae.serious_field]), "Y", "N"),
            "AEREL": decode(ae.related_field).astype("string"),
            "AEACN": decode(action).astype("string"),
            "AEOUT": decode(ae.outcome_field).astype("string"),
            "ASTDT": pd.to_datetime(table[ae.start_field], errors="coerce"),
            "AENDT": pd.to_datetime(table[ae.end_field], errors="coerce"),
            "AESI": _codes(table[ae.aesi_field]).map(
                lambda v: aesi_labels.get(v, v) if isinstance(v, str) and v in aesi_codes else ""
            ),
        }
    )
    keys = adsl[["STUDYID", "USUBJID", "SUBJID", "SITEID", "TRT01A", "TRTSDT", "RANDDT"]]
    adae = keys.merge(adae, on="SUBJID", how="inner")
    # treatment-emergence is a fact (the plan's one rule), matched by record and instance
    events = facts.adverse_events
    teae = events["teae"].astype(bool)
    emergent = {
        (str(record), _instance_key(instance))
        for record, instance in zip(
            events.loc[teae, _FACTS_RECORD], events.loc[teae, "instance"], strict=True
        )
    }
    place = zip(adae["SUBJID"].astype(str), adae["AESEQ"].map(_instance_key), strict=True)
    adae["TRTEMFL"] = np.where([key in emergent for key in place], "Y", "")
    adae["ASTDY"] = (adae["ASTDT"] - pd.to_datetime(adae["RANDDT"])).dt.days
    adae = adae.drop(columns=["TRTSDT", "RANDDT"])
    return adae.sort_values(["USUBJID", "AESEQ"]).reset_index(drop=True)
