"""ADaM-style analysis data sets (ADSL, ADQS, ADAE) derived from snapshot tables.

Pure: typed instrument tables (as :mod:`studyman.sources.tidy` makes them and snapshots store
them), the data dictionary's choice labels and, when unblinded, the randomisation list in;
data frames out. REDCap field names are translated to CDISC names here and nowhere else.

Derivation rules (reference study, ``docs/design.md``):

* ``USUBJID`` = ``<STUDYID>-<record_id>``; ``SITEID`` = the record-ID prefix (``S01``).
* ``AVISITN`` = the week of the event (``week_12_arm_1`` → 12), baseline 0, screening −1.
* ``ABLFL`` = ``Y`` on the baseline-event record; ``BASE`` its ``AVAL``; ``CHG = AVAL − BASE``
  and ``PCHG = 100 · CHG / BASE`` after baseline.
* ``ANL01FL`` = ``Y`` on post-baseline records with a value at an analysis visit of the plan.
* From the study's facts (:func:`studyman.facts.derive_facts`, derived once for every output):
  ``RANDFL``/``RANDDT`` (randomised: the randomised field is yes and the date recorded),
  ``TRTSDT``/``TRTEDT`` (first/last study treatment: a session attended or a dose taken, doses
  only where the view holds the dosing log), ``TRTEMFL`` (treatment-emergent by the plan's one
  rule), ``EOSSTT``/``DCSREAS``/``EOSDT``/``DTHDT`` (the disposition) and the population flags
  (:mod:`studyman.analysis.populations`).
* Without a randomisation list ``TRT01P``/``TRT01A`` stay empty (blinded data).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from studyman.errors import AnalysisError
from studyman.facts import StudyFacts

__all__ = [
    "PARAMETERS",
    "AdamDatasets",
    "choice_labels",
    "derive_adam",
    "lookup",
    "normalise_randomization",
    "visit_number",
]

#: PARAMCD → (instrument, total field, label).
PARAMETERS: dict[str, tuple[str, str, str]] = {
    "HAMD17": ("hamd17", "hamd_total", "HAM-D-17 total score"),
    "PHQ9": ("phq9", "phq9_total", "PHQ-9 total score"),
    "GAD7": ("gad7", "gad7_total", "GAD-7 total score"),
}

_SEVERITY = {"1": "MILD", "2": "MODERATE", "3": "SEVERE"}
_STRATUM = {"1": "moderate", "2": "severe"}
_KEY = "record_id"
_EVENT = "redcap_event_name"


@dataclass(frozen=True)
class AdamDatasets:
    """The derived data sets."""

    adsl: pd.DataFrame
    adqs: pd.DataFrame
    adae: pd.DataFrame
    visits: pd.DataFrame


def visit_number(event: str) -> int | None:
    """Analysis visit number (week) of a unique event name; None for non-visit events."""
    if event.startswith("screening"):
        return -1
    if event.startswith("baseline"):
        return 0
    match = re.match(r"week_(\d+)_arm_\d+$", event)
    return int(match.group(1)) if match else None


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


def normalise_randomization(frame: pd.DataFrame, arm_labels: Mapping[str, str]) -> pd.DataFrame:
    """Bring a randomisation list to columns ``record_id, TRT01P`` (arm names).

    Accepts an arm column named ``rand_arm``, ``arm`` or ``TRT01P`` holding REDCap codes (decoded
    with *arm_labels*) or arm names.

    Raises
    ------
    AnalysisError
        No record-ID or arm column, an unknown arm, or a participant listed twice.
    """
    record = next((c for c in (_KEY, "USUBJID", "SUBJID") if c in frame.columns), None)
    arm = next((c for c in ("rand_arm", "arm", "TRT01P") if c in frame.columns), None)
    if record is None or arm is None:
        raise AnalysisError(
            "randomisation list needs a record_id column and an arm column "
            f"(rand_arm, arm or TRT01P); it has {', '.join(map(str, frame.columns))}"
        )
    values = frame[arm].astype("string").str.strip()
    names = set(arm_labels.values())
    decoded = values.map(lambda v: arm_labels.get(v, v) if v is not pd.NA else v)
    unknown = sorted({str(v) for v in decoded.dropna() if names and v not in names})
    if unknown:
        raise AnalysisError(f"randomisation list: unknown arm(s) {', '.join(unknown)}")
    result = pd.DataFrame(
        {_KEY: frame[record].astype("string"), "TRT01P": decoded.astype("string")}
    )
    duplicated = result[_KEY][result[_KEY].duplicated()].unique().tolist()
    if duplicated:
        raise AnalysisError(f"randomisation list: record(s) listed twice: {duplicated[:10]}")
    return result.dropna(subset=["TRT01P"])


def _table(tables: Mapping[str, pd.DataFrame], name: str, columns: Sequence[str]) -> pd.DataFrame:
    """The table *name* with *columns* (missing ones added empty); an absent table is empty."""
    frame = tables.get(name)
    if frame is None:
        frame = pd.DataFrame({_KEY: pd.Series(dtype="string")})
    frame = frame.copy()
    for column in columns:
        if column not in frame.columns:
            frame[column] = pd.NA
    return frame


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


def _by_record(frame: pd.DataFrame, column: str, how: str) -> pd.Series:
    valid = frame.dropna(subset=[column])
    if valid.empty:
        return pd.Series(dtype="datetime64[us]")
    grouped = valid.groupby(_KEY)[column]
    return grouped.min() if how == "min" else grouped.max()


def derive_adam(
    tables: Mapping[str, pd.DataFrame],
    *,
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
    study
        STUDYID.
    choices
        Field → {code: label} (:func:`choice_labels`).
    randomization
        ``record_id, TRT01P`` (:func:`normalise_randomization`) or None when blinded.
    analysis_visits
        PARAMCD (lower case) → analysis visits, for ``ANL01FL``.
    facts
        The study's facts from the same tables (randomisation, exposure, treatment-emergence,
        disposition); read, never derived again here.

    Returns
    -------
    AdamDatasets
        ADSL without population flags (see :func:`studyman.analysis.populations.flag_populations`).
    """
    participant = _table(tables, "participant", [_KEY, "age", "sex", "consent_date"])
    if participant[_KEY].isna().all():
        raise AnalysisError("snapshot has no 'participant' table rows; cannot derive ADSL")
    enrollment = _table(tables, "enrollment", [_KEY, "randomized", "rand_date", "strat_severity"])
    dosing = _table(tables, "dosing", [_KEY, "dose_date", "dose_taken"])
    visit = _table(tables, "visit", [_KEY, _EVENT, "visit_date", "visit_done"])

    adsl = pd.DataFrame({"SUBJID": participant[_KEY].astype("string")}).drop_duplicates()
    adsl = adsl.dropna().sort_values("SUBJID").reset_index(drop=True)
    adsl.insert(0, "USUBJID", study + "-" + adsl["SUBJID"])
    adsl.insert(0, "STUDYID", study)
    adsl["SITEID"] = adsl["SUBJID"].str.split("-").str[0]
    first = participant.drop_duplicates(_KEY).set_index(_KEY)
    adsl["AGE"] = pd.to_numeric(adsl["SUBJID"].map(first["age"]), errors="coerce")
    sex_labels = choices.get("sex", {})
    adsl["SEX"] = (
        adsl["SUBJID"]
        .map(_codes(first["sex"]))
        .map(lambda v: sex_labels.get(v, v) if isinstance(v, str) else pd.NA)
    )
    enrolled = enrollment.drop_duplicates(_KEY).set_index(_KEY)
    subjects = facts.subjects.set_axis(facts.subjects.index.astype(str))
    adsl["RANDFL"] = _flag(adsl["SUBJID"].map(subjects["randomised"]))
    adsl["RANDDT"] = lookup(adsl["SUBJID"], pd.to_datetime(subjects["rand_date"]))
    adsl["STRATSEV"] = (
        adsl["SUBJID"]
        .map(_codes(enrolled["strat_severity"]))
        .map(lambda v: _STRATUM.get(v, pd.NA) if isinstance(v, str) else pd.NA)
    )
    if randomization is not None:
        arms = randomization.set_index(_KEY)["TRT01P"]
        adsl["TRT01P"] = adsl["SUBJID"].map(arms).astype("string")
        adsl.loc[adsl["RANDFL"] != "Y", "TRT01P"] = pd.NA
    else:
        adsl["TRT01P"] = pd.Series(pd.NA, index=adsl.index, dtype="string")

    taken = dosing[_yes(dosing["dose_taken"])]
    adsl["TRTSDT"] = lookup(adsl["SUBJID"], pd.to_datetime(subjects["first_treatment"]))
    adsl["TRTEDT"] = lookup(adsl["SUBJID"], pd.to_datetime(subjects["last_treatment"]))
    dosed = set(taken[_KEY].astype(str))
    # As treated: the randomised arm; an experimental-arm participant who never took a dose
    # counts as treated with CBT alone when CBT sessions were attended (the adjunct arm's label
    # is the one whose participants receive doses).
    adsl["TRT01A"] = adsl["TRT01P"]
    if randomization is not None and len(dosed):
        dosed_arms = adsl.loc[adsl["SUBJID"].isin(dosed), "TRT01P"].dropna().unique().tolist()
        other_arms = [a for a in adsl["TRT01P"].dropna().unique() if a not in dosed_arms]
        if len(dosed_arms) == 1 and len(other_arms) == 1:
            undosed = adsl["TRT01P"].eq(dosed_arms[0]) & ~adsl["SUBJID"].isin(dosed)
            adsl.loc[undosed.fillna(False), "TRT01A"] = other_arms[0]
    adsl.loc[adsl["TRTSDT"].isna(), "TRT01A"] = pd.NA

    completed = adsl["SUBJID"].map(subjects["completed"]).fillna(False).astype(bool)
    label = adsl["SUBJID"].map(subjects["ds_label"]).astype("string")
    adsl["EOSSTT"] = np.where(
        completed, "COMPLETED", np.where(label.notna().to_numpy(bool), "DISCONTINUED", "ONGOING")
    )
    adsl["DCSREAS"] = label.where(~completed).astype("string")
    adsl["EOSDT"] = lookup(adsl["SUBJID"], pd.to_datetime(subjects["ds_date"]))
    adsl["DTHDT"] = lookup(adsl["SUBJID"], pd.to_datetime(subjects["death_date"]))
    visit_dates = visit.copy()
    visit_dates["visit_date"] = pd.to_datetime(visit_dates["visit_date"], errors="coerce")
    last_visit = lookup(adsl["SUBJID"], _by_record(visit_dates, "visit_date", "max"))
    last_contact = pd.concat(
        [pd.to_datetime(adsl["EOSDT"]), pd.to_datetime(last_visit), adsl["TRTEDT"]], axis=1
    ).max(axis=1)
    adsl["LSTCNDT"] = last_contact
    exposure = (last_contact - adsl["TRTSDT"]).dt.days + 1
    adsl["EXPDAYS"] = pd.to_numeric(exposure, errors="coerce").astype("Float64")

    visits = pd.DataFrame(
        {
            "SUBJID": visit_dates[_KEY].astype("string"),
            "AVISITN": visit_dates[_EVENT].astype(str).map(visit_number),
            "ADT": visit_dates["visit_date"],
        }
    ).dropna(subset=["AVISITN", "ADT"])
    visits["AVISITN"] = visits["AVISITN"].astype(int)
    visits = visits.sort_values(["SUBJID", "AVISITN"]).reset_index(drop=True)

    adqs = _derive_adqs(tables, adsl, visits, analysis_visits)
    adae = _derive_adae(tables, adsl, choices, facts)
    return AdamDatasets(adsl=adsl, adqs=adqs, adae=adae, visits=visits)


def _instance_key(value: object) -> str:
    """A repeat instance as text (``2``), whatever its dtype (``2.0``, ``"2"``)."""
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return "" if pd.isna(number) else str(int(number))


def _visit_label(number: int) -> str:
    return {-1: "Screening", 0: "Baseline"}.get(number, f"Week {number}")


def _derive_adqs(
    tables: Mapping[str, pd.DataFrame],
    adsl: pd.DataFrame,
    visits: pd.DataFrame,
    analysis_visits: Mapping[str, Sequence[int]],
) -> pd.DataFrame:
    parts = []
    for paramcd, (instrument, total, label) in PARAMETERS.items():
        table = _table(tables, instrument, [_KEY, _EVENT, total])
        if table[_KEY].isna().all():
            continue
        part = pd.DataFrame(
            {
                "SUBJID": table[_KEY].astype("string"),
                "PARAMCD": paramcd,
                "PARAM": label,
                "AVISITN": table[_EVENT].astype(str).map(visit_number),
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
    adsl: pd.DataFrame,
    choices: Mapping[str, Mapping[str, str]],
    facts: StudyFacts,
) -> pd.DataFrame:
    fields = [
        _KEY, "redcap_repeat_instance", "ae_term", "ae_pt", "ae_soc", "ae_start", "ae_end",
        "ae_severity", "ae_serious", "ae_related", "ae_action", "ae_outcome", "ae_aesi",
    ]  # fmt: skip
    table = _table(tables, "adverse_events", fields)
    table = table.dropna(subset=[_KEY])

    def decode(field: str) -> pd.Series:
        labels = choices.get(field, {})
        return _codes(table[field]).map(lambda v: labels.get(v, v) if isinstance(v, str) else v)

    adae = pd.DataFrame(
        {
            "SUBJID": table[_KEY].astype("string"),
            "AESEQ": pd.to_numeric(table["redcap_repeat_instance"], errors="coerce"),
            "AETERM": table["ae_term"].astype("string"),
            "AEDECOD": decode("ae_pt").astype("string"),
            "AESOC": decode("ae_soc").astype("string"),
            "AESEV": _codes(table["ae_severity"]).map(
                lambda v: _SEVERITY.get(v, pd.NA) if isinstance(v, str) else pd.NA
            ),
            "AESER": np.where(_yes(table["ae_serious"]), "Y", "N"),
            "AEREL": decode("ae_related").astype("string"),
            "AEACN": decode("ae_action").astype("string"),
            "AEOUT": decode("ae_outcome").astype("string"),
            "ASTDT": pd.to_datetime(table["ae_start"], errors="coerce"),
            "AENDT": pd.to_datetime(table["ae_end"], errors="coerce"),
            "AESI": _codes(table["ae_aesi"]).map(
                lambda v: (
                    choices.get("ae_aesi", {}).get(v, v) if isinstance(v, str) and v != "0" else ""
                )
            ),
        }
    )
    keys = adsl[["STUDYID", "USUBJID", "SUBJID", "SITEID", "TRT01A", "TRTSDT", "RANDDT"]]
    adae = keys.merge(adae, on="SUBJID", how="inner")
    # treatment-emergence is a fact (the plan's one rule), matched by record and instance
    events = facts.adverse_events
    emergent = {
        (str(record), _instance_key(instance))
        for record, instance in zip(
            events.loc[events["teae"].astype(bool), "record_id"],
            events.loc[events["teae"].astype(bool), "instance"],
            strict=True,
        )
    }
    place = zip(adae["SUBJID"].astype(str), adae["AESEQ"].map(_instance_key), strict=True)
    adae["TRTEMFL"] = np.where([key in emergent for key in place], "Y", "")
    adae["ASTDY"] = (adae["ASTDT"] - pd.to_datetime(adae["RANDDT"])).dt.days
    adae = adae.drop(columns=["TRTSDT", "RANDDT"])
    return adae.sort_values(["USUBJID", "AESEQ"]).reset_index(drop=True)
