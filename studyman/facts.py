"""The study's facts, derived once: who was screened, randomised, treated, in which population,
which adverse events are treatment-emergent, who discontinued and why, deviations and queries.

Validation, the DSMB report (both sessions) and the analysis read these facts; none derives them
again, so that a number means one thing and has one value in every output. Each output folder
carries them as data in ``facts.json`` (:func:`facts_document`).

The layer sits above ``sources`` (it reads typed snapshot tables, already in the view the reader
may see: the blinded view of :mod:`studyman.sources.blinding` unless the randomisation list was
given) and below validation, analysis and reporting. Every form and field name comes from the
protocol.

Notes
-----
Definitions (stated in the same words by every report, from :func:`rule_texts`):

* *screened*: every participant with a record; *randomised*: the randomised field is yes and the
  randomisation date is recorded.
* *treated*: at least one study-treatment session attended or dose taken (doses only where the
  reader's view holds the dosing log); first/last treatment are the earliest/latest of those.
* populations: as the analysis plan defines them (:class:`FactRules`): the intersection of their
  criteria (randomised; treated; a post-baseline value of a scale; no major deviation).
* a deviation is *major* when its category is declared major in the protocol or the site recorded
  it as major.
* an adverse event is *treatment-emergent* when it starts on or after the day the plan names
  (randomisation, or the first study treatment), in a participant of the safety population.
* *discontinued the study*: a disposition other than completed; *discontinued due to an adverse
  event*: the disposition is the protocol's adverse-event reason (one definition, from the
  disposition form, so that it is the same in every view); *discontinued treatment*: discontinued
  the study before the end of the treatment period.
* a scheduled visit (baseline to follow-up) is *due* when its window closed before the cut-off
  and the participant had not left the study before the window opened; *done* when the visit
  form records it done, *missed* when the form records it not done, *overdue* when it is due and
  has no visit form; a visit whose window has not closed, of a participant still on study, is
  *not yet due* (the participant is ongoing, which is not missing data).
* an adverse event is an *AESI* when the site recorded it as one of the protocol's adverse
  events of special interest (the AESI field holds a declared AESI code).
* a *potential Hy's law case* is a participant with a liver sample after screening in which the
  larger transaminase is above its multiple of ULN and bilirubin above its multiple, with ALP
  not above its multiple (the protocol's rule, one sample).
* query age counts from the query's first opening to the run's *as of* time, never to the data
  cut-off (queries are raised after the cut), and is never negative.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from studyman.protocol.models import Protocol

__all__ = [
    "DEFAULT_RULES",
    "HEADLINE_KEYS",
    "FactRules",
    "PopulationRule",
    "StudyFacts",
    "cut_tables",
    "derive_facts",
    "facts_document",
    "redcap_codes",
    "rule_texts",
    "write_facts_json",
]

OPEN_STATUSES = ("open", "answered", "reopened")
_KIND_NAMES = {"site_query": "site", "review_signal": "review"}

HEADLINE_KEYS = (
    "screened",
    "eligible",
    "randomised",
    "treated",
    "safety_population",
    "itt_population",
    "mitt_population",
    "pp_population",
    "teae_participants",
    "teae_events",
    "serious_ae_participants",
    "deaths",
    "discontinued_treatment",
    "discontinued_study",
    "discontinued_due_to_ae",
    "deviations",
    "major_deviations",
    "participants_with_major_deviation",
    "visits_due",
    "visits_done",
    "visits_missed",
    "visits_overdue",
    "site_queries_open",
    "review_signals_open",
    "median_days_open",
)
"""The keys of ``facts.json``'s ``facts`` object, in order (per-arm values: ``<key>_by_arm``)."""

VISIT_COLUMNS = (
    "subject",
    "event",
    "label",
    "window_start",
    "window_end",
    "due",
    "done",
    "missed",
    "overdue",
    "not_yet_due",
)
"""Columns of :attr:`StudyFacts.visits`."""

SCHEDULED_KINDS = ("baseline", "treatment", "end_of_treatment", "follow_up")
"""Visit kinds whose completion is followed (screening, logs and end of study are not visits)."""

Criterion = Literal["randomized", "treated", "post_baseline", "no_major_deviation", "adherent"]


@dataclass(frozen=True)
class PopulationRule:
    """A population: its key (``mitt``), label, ADSL flag and criteria (kind, parameter)."""

    name: str
    label: str
    flag: str
    criteria: tuple[tuple[Criterion, str | None], ...]


@dataclass(frozen=True)
class FactRules:
    """The rules the analysis plan declares once for every output.

    Attributes
    ----------
    treatment_emergent_from
        ``randomisation`` or ``first_treatment``: an adverse event starting on or after that day
        is treatment-emergent.
    populations
        The plan's populations, in plan order.
    source
        Where the rules come from (the plan's file and version, or "default").
    """

    treatment_emergent_from: Literal["randomisation", "first_treatment"]
    populations: tuple[PopulationRule, ...]
    source: str = "default"

    def population(self, name: str) -> PopulationRule | None:
        """The population *name* (``itt``, ``mitt``, ``pp``, ``safety``), or None."""
        return next((p for p in self.populations if p.name == name), None)


DEFAULT_RULES = FactRules(
    treatment_emergent_from="randomisation",
    populations=(
        PopulationRule("itt", "Intention to treat", "ITTFL", (("randomized", None),)),
        PopulationRule(
            "mitt",
            "Modified intention to treat",
            "MITTFL",
            (("randomized", None), ("post_baseline", "HAMD17")),
        ),
        PopulationRule(
            "pp",
            "Per protocol",
            "PPROTFL",
            (
                ("randomized", None),
                ("post_baseline", "HAMD17"),
                ("no_major_deviation", None),
                ("adherent", "0.75"),
            ),
        ),
        PopulationRule("safety", "Safety", "SAFFL", (("treated", None),)),
    ),
)
"""The rules when no analysis plan is supplied (the reference plan's)."""

_CRITERION_TEXT = {
    "randomized": "randomised",
    "treated": "received at least one study treatment (a session attended or a dose taken)",
    "post_baseline": "with a post-baseline {parameter} value",
    "no_major_deviation": "without a major protocol deviation",
    "adherent": "attended at least {parameter} of the CBT sessions planned up to the end of the "
    "treatment period or the data cut-off",
}


def rule_texts(rules: FactRules) -> list[tuple[str, str]]:
    """The definitions as every report states them: (term, definition) pairs."""
    start = (
        "the day of randomisation"
        if rules.treatment_emergent_from == "randomisation"
        else "the day of the first study treatment"
    )
    texts = [
        (
            "Treatment-emergent adverse event",
            f"an adverse event starting on or after {start}, in a participant of the safety "
            "population",
        )
    ]
    for population in rules.populations:
        parts = [
            _CRITERION_TEXT[kind].format(
                parameter=f"{float(parameter or 0):.0%}" if kind == "adherent" else parameter or ""
            )
            for kind, parameter in population.criteria
        ]
        texts.append((f"{population.label} population", "participants " + ", ".join(parts)))
    texts.append(
        (
            "Major protocol deviation",
            "a deviation whose category the protocol declares major, or that the site recorded "
            "as major",
        )
    )
    texts.append(
        (
            "Discontinuation due to an adverse event",
            "the participant's study disposition is the protocol's adverse-event reason",
        )
    )
    return texts


@dataclass(frozen=True)
class StudyFacts:
    """The facts of one study at one cut-off, in one view.

    Attributes
    ----------
    subjects
        One row per screened participant (index: record ID): ``site``, ``screening_date``,
        ``date_of_consent``, ``is_eligible``, ``randomised``, ``randomisation_date``,
        ``first_session``, ``last_session``, ``sessions``, ``first_dose``, ``last_dose``,
        ``doses``, ``treated``, ``first_treatment``, ``last_treatment``, one boolean column per
        population (``population_<name>``), ``disposition_code``, ``disposition_label``,
        ``disposition_date``, ``completed``, ``discontinued_study``, ``discontinued_due_to_ae``,
        ``discontinued_treatment``, ``death``, ``date_of_death``, ``major_deviation``,
        ``hys_law``, ``arm`` (unblinded only).
    adverse_events
        One row per adverse event: ``subject``, ``instance``, ``start``, ``serious``, ``fatal``,
        ``aesi``, ``teae``.
    deviations
        One row per recorded deviation: ``subject``, ``instance``, ``date``, ``category``,
        ``major``.
    queries
        One row per query with ``kind`` (site or review), ``open`` and ``days_open`` (to
        *as_of*); empty when no query log was given.
    visits
        One row per randomised participant and scheduled visit: ``subject``, ``event``,
        ``label``, ``window_start``, ``window_end`` (dates), ``due``, ``done``, ``missed``,
        ``overdue``, ``not_yet_due`` (see the module Notes).
    cutoff, as_of, view, rules, snapshot_id
        The data cut-off, the time query ages count to, ``blinded``/``unblinded``, the rules
        and the snapshot's id.
    """

    subjects: pd.DataFrame
    adverse_events: pd.DataFrame
    deviations: pd.DataFrame
    queries: pd.DataFrame
    cutoff: date
    as_of: datetime
    view: Literal["blinded", "unblinded"]
    rules: FactRules
    snapshot_id: str = ""
    arm_order: tuple[str, ...] = field(default=())
    visits: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(VISIT_COLUMNS)))

    def members(self, population: str) -> pd.Index:
        """Record IDs of *population* (``itt``, ``mitt``, ``pp``, ``safety``, ``randomised``)."""
        column = "randomised" if population == "randomised" else f"population_{population}"
        return self.subjects.index[self.subjects[column].to_numpy(dtype=bool)]

    def headline(self) -> dict[str, Any]:
        """The flat headline facts (:data:`HEADLINE_KEYS`); per-arm values when unblinded."""
        subjects = self.subjects
        values: dict[str, Any] = {}
        per_arm: dict[str, pd.Series] = {}

        def put(key: str, mask: pd.Series | np.ndarray) -> None:
            flags = pd.Series(np.asarray(mask, dtype=bool), index=subjects.index)
            values[key] = int(flags.sum())
            per_arm[key] = flags

        put("screened", np.ones(len(subjects), dtype=bool))
        put("eligible", subjects["is_eligible"])
        put("randomised", subjects["randomised"])
        put("treated", subjects["treated"] & subjects["randomised"])
        for name in ("safety", "itt", "mitt", "pp"):
            column = f"population_{name}"
            if column in subjects.columns:
                put(f"{name}_population", subjects[column])
        # astype: without any adverse event the flag columns are empty object columns, which
        # pandas would read as column labels, not as a mask
        teae = self.adverse_events[self.adverse_events["teae"].astype(bool)]
        put("teae_participants", subjects.index.isin(teae["subject"]))
        values["teae_events"] = len(teae)
        serious = teae[teae["serious"].astype(bool)]
        put("serious_ae_participants", subjects.index.isin(serious["subject"]))
        put("deaths", subjects["death"])
        put("discontinued_treatment", subjects["discontinued_treatment"])
        put("discontinued_study", subjects["discontinued_study"])
        put("discontinued_due_to_ae", subjects["discontinued_due_to_ae"])
        # due visits only, so that due = done + missed + overdue
        visits = self.visits
        due = visits["due"].astype(bool)
        values["visits_due"] = int(due.sum())
        values["visits_done"] = int((due & visits["done"].astype(bool)).sum())
        values["visits_missed"] = int((due & visits["missed"].astype(bool)).sum())
        values["visits_overdue"] = int(visits["overdue"].astype(bool).sum())
        values["deviations"] = len(self.deviations)
        values["major_deviations"] = int(self.deviations["major"].sum())
        put("participants_with_major_deviation", subjects["major_deviation"])
        queries = self.queries
        if not queries.empty:
            open_rows = queries[queries["open"]]
            values["site_queries_open"] = int((open_rows["kind"] == "site").sum())
            values["review_signals_open"] = int((open_rows["kind"] == "review").sum())
            site_open = open_rows.loc[open_rows["kind"] == "site", "days_open"]
            values["median_days_open"] = (
                float(np.median(site_open.to_numpy(dtype=float))) if len(site_open) else 0.0
            )
        if self.view == "unblinded" and "arm" in subjects.columns:
            arms = subjects["arm"].astype("string")
            order = self.arm_order or tuple(sorted(arms.dropna().unique()))
            for key, flags in per_arm.items():
                if key in {"screened", "eligible"}:
                    continue  # not yet allocated
                values[f"{key}_by_arm"] = {
                    arm: int((flags & (arms == arm).fillna(False)).sum()) for arm in order
                }
            teae_arm = teae["subject"].map(arms)
            values["teae_events_by_arm"] = {arm: int((teae_arm == arm).sum()) for arm in order}
        ordered = {key: values[key] for key in HEADLINE_KEYS if key in values}
        ordered.update({k: v for k, v in values.items() if k not in ordered})
        return ordered


# ----------------------------------------------------------------------------- the cut


def _form_dates(protocol: Protocol) -> dict[str, str]:
    """Form → the date field that places its rows in time.

    Declared by the protocol where it names one (eligibility, randomisation, adverse events,
    medications, exposure logs, disposition, liver tests); otherwise the form's first date field
    in the data dictionary; visit forms without one go by their visit's date.
    """
    declared: dict[str, str] = {}

    def declare(field_name: str | None) -> None:
        if field_name and protocol.redcap is not None:
            spec = protocol.redcap.dictionary.get(field_name)
            if spec is not None:
                declared.setdefault(spec.form_name, field_name)

    declare(protocol.enrolment.screening_date_field)
    declare(protocol.eligibility.date_field)
    declare(protocol.randomization.date_field)
    declare(protocol.adverse_events.start_field)
    declare(protocol.concomitant_medications.start_field)
    declare(protocol.treatment.sessions.date_field)
    if protocol.treatment.doses is not None:
        declare(protocol.treatment.doses.date_field)
    declare(protocol.disposition.date_field)
    declare(protocol.liver.date_field)
    for visit in protocol.visits:
        declare(visit.date_field)
    if protocol.redcap is not None:
        for spec in protocol.redcap.dictionary.fields:
            if spec.is_date and not spec.is_datetime:
                declared.setdefault(spec.form_name, spec.field_name)
    return declared


def cut_tables(
    protocol: Protocol, tables: Mapping[str, pd.DataFrame], cutoff: date
) -> dict[str, pd.DataFrame]:
    """The tables as of *cutoff*: rows dated after it dropped (one cut for every output).

    Notes
    -----
    A form with a date field of its own is cut on it (:func:`_form_dates`); a visit form without
    one (HAM-D, C-SSRS, ...) is cut on the date of the visit it belongs to (the visit's date
    field, or the screening date at screening). Rows without any date are kept: they cannot be
    placed after the cut-off. Cutting twice changes nothing.
    """
    key = protocol.study.record_id_field
    event = "redcap_event_name"
    limit = pd.Timestamp(cutoff)
    dates = _form_dates(protocol)
    parts: list[pd.Series] = []
    for field_name in {v.date_field for v in protocol.visits if v.date_field}:
        form = next((f for f, d in dates.items() if d == field_name), None)
        frame = tables.get(form) if form else None
        if frame is not None and field_name in frame.columns and event in frame.columns:
            parts.append(frame.set_index([key, event])[field_name])
    visit_dates = pd.concat(parts) if parts else None
    if visit_dates is not None:
        visit_dates = pd.to_datetime(visit_dates, errors="coerce")
        visit_dates = visit_dates[~visit_dates.index.duplicated()]
    result: dict[str, pd.DataFrame] = {}
    for name, frame in tables.items():
        column = dates.get(name)
        if column is not None and column in frame.columns:
            when = pd.to_datetime(frame[column], errors="coerce")
        elif visit_dates is not None and event in frame.columns and key in frame.columns:
            keys = pd.MultiIndex.from_arrays([frame[key], frame[event]])
            when = pd.Series(visit_dates.reindex(keys).to_numpy(), index=frame.index)
        else:
            result[name] = frame
            continue
        keep = ~(when > limit).fillna(False).astype(bool)
        result[name] = frame.loc[keep.to_numpy()].reset_index(drop=True)
    return result


# ----------------------------------------------------------------------------- derivation


def _table_of(tables: Mapping[str, pd.DataFrame], protocol: Protocol, field_name: str) -> str:
    """The form (table) that holds *field_name*, from the REDCap dictionary."""
    if protocol.redcap is not None:
        spec = protocol.redcap.dictionary.get(field_name)
        if spec is not None:
            return spec.form_name
    for name, frame in tables.items():
        if field_name in frame.columns:
            return name
    return ""


def _first_values(
    tables: Mapping[str, pd.DataFrame], protocol: Protocol, field_name: str, key: str
) -> pd.Series:
    """*field_name* per record (first non-missing row), from the form that holds it."""
    frame = tables.get(_table_of(tables, protocol, field_name))
    if frame is None or field_name not in frame.columns or frame.empty:
        return pd.Series(dtype=object)
    rows = frame[[key, field_name]].dropna(subset=[field_name])
    rows = rows.drop_duplicates(key)
    return pd.Series(rows[field_name].to_numpy(), index=rows[key].astype(str).to_numpy())


def redcap_codes(series: pd.Series) -> pd.Series:
    """REDCap codes as text without a trailing ``.0`` (a float column's ``4.0`` is code ``4``)."""
    text = series.astype("string").str.strip()
    return text.str.replace(r"\.0$", "", regex=True)


def _dates(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series, errors="coerce")


def _exposure(
    tables: Mapping[str, pd.DataFrame], log: Any, key: str
) -> tuple[pd.Series, pd.Series, pd.Series]:
    """First date, last date and count of the log's rows given (attended / taken)."""
    empty = pd.Series(dtype="datetime64[us]")
    if log is None:
        return empty, empty, pd.Series(dtype=int)
    frame = tables.get(log.form)
    if frame is None or frame.empty or log.given_field not in frame.columns:
        return empty, empty, pd.Series(dtype=int)
    given = frame[redcap_codes(frame[log.given_field]) == "1"]
    dates = pd.DataFrame({"id": given[key].astype(str), "date": _dates(given[log.date_field])})
    grouped = dates.groupby("id")["date"]
    return grouped.min(), grouped.max(), grouped.size()


def _site_of(
    protocol: Protocol, tables: Mapping[str, pd.DataFrame], ids: pd.Index, key: str
) -> pd.Series:
    by_dag = {site.dag: site.id for site in protocol.sites}
    dags = pd.Series(dtype=object)
    for frame in tables.values():
        if "redcap_data_access_group" in frame.columns:
            rows = frame[[key, "redcap_data_access_group"]].dropna().drop_duplicates(key)
            dags = pd.Series(
                rows["redcap_data_access_group"].astype(str).map(by_dag).to_numpy(),
                index=rows[key].astype(str).to_numpy(),
            )
            break
    prefixes = {site.id for site in protocol.sites}
    by_prefix = pd.Series(
        [next((p for p in prefixes if str(i).startswith(p)), pd.NA) for i in ids], index=ids
    )
    site = dags.reindex(ids) if len(dags) else pd.Series(pd.NA, index=ids)
    return site.fillna(by_prefix).astype("string")


def _post_baseline(
    tables: Mapping[str, pd.DataFrame], protocol: Protocol, parameter: str, key: str
) -> set[str]:
    """Participants with a non-missing total of scale *parameter* (its PARAMCD) after baseline."""
    scoring = next((s for s in protocol.scoring if s.parameter_code == parameter), None)
    if scoring is None:
        return set()
    frame = tables.get(scoring.instrument)
    if frame is None or scoring.total_field not in frame.columns:
        return set()
    baseline_day = 0
    later = {
        visit.event
        for visit in protocol.scheduled_visits
        if visit.target_day is not None and visit.target_day > baseline_day
    }
    rows = frame[frame["redcap_event_name"].isin(later)] if "redcap_event_name" in frame else frame
    rows = rows[rows[scoring.total_field].notna()]
    return set(rows[key].astype(str))


def _hys_law_cases(protocol: Protocol, tables: Mapping[str, pd.DataFrame], key: str) -> set[str]:
    """Participants with a liver sample after screening meeting the protocol's Hy's law rule."""
    liver = protocol.liver
    rule = liver.hys_law
    frame = tables.get(liver.form)
    tests = {test.id: test for test in liver.tests}
    needed = [*rule.transaminases, rule.bilirubin, rule.alp]
    if (
        frame is None
        or frame.empty
        or any(name not in tests or tests[name].field not in frame.columns for name in needed)
    ):
        return set()
    screening = {visit.event for visit in protocol.visits if visit.kind == "screening"}
    if "redcap_event_name" in frame.columns:
        frame = frame[~frame["redcap_event_name"].astype(str).isin(screening).to_numpy(bool)]

    def ratio(name: str) -> pd.Series:
        test = tests[name]
        return pd.to_numeric(frame[test.field], errors="coerce").astype(float) / test.uln

    transaminase = pd.concat([ratio(name) for name in rule.transaminases], axis=1).max(axis=1)
    case = (
        (transaminase > rule.transaminase_multiple)
        & (ratio(rule.bilirubin) > rule.bilirubin_multiple)
        & ~(ratio(rule.alp) > rule.alp_max_multiple)
    )
    return set(frame.loc[case.fillna(False).to_numpy(bool), key].astype(str))


def _adherent(
    subjects: pd.DataFrame, protocol: Protocol, cutoff: date, threshold: float
) -> np.ndarray:
    """CBT sessions attended ≥ *threshold* × the sessions planned by the end of treatment or
    the cut-off (pro rata to the days since randomisation)."""
    treatment = protocol.treatment
    period = treatment.weeks * 7
    since = (pd.Timestamp(cutoff) - pd.to_datetime(subjects["randomisation_date"])).dt.days
    share = (since.clip(lower=0, upper=period) / period).fillna(0.0).to_numpy(float)
    expected = threshold * treatment.cbt_sessions_planned * share
    attended = subjects["sessions"].to_numpy(float)
    enough: np.ndarray = (attended >= expected - 1e-9) & subjects["randomised"].to_numpy(bool)
    return enough


def _visit_status(
    protocol: Protocol,
    tables: Mapping[str, pd.DataFrame],
    subjects: pd.DataFrame,
    cutoff: date,
    key: str,
) -> pd.DataFrame:
    """Scheduled visits of randomised participants: due, done, missed, overdue, not yet due."""
    event_column = "redcap_event_name"
    spec = protocol.visit_form
    frame = tables.get(spec.form)
    done_keys: set[tuple[str, str]] = set()
    missed_keys: set[tuple[str, str]] = set()
    if (
        frame is not None
        and not frame.empty
        and spec.done_field in frame.columns
        and event_column in frame.columns
    ):
        flags = redcap_codes(frame[spec.done_field])
        pairs = zip(
            frame[key].astype(str).tolist(), frame[event_column].astype(str).tolist(), strict=True
        )
        for pair, value in zip(pairs, flags.tolist(), strict=True):
            if value == "1":
                done_keys.add(pair)
            elif value == "0":
                missed_keys.add(pair)
    randomised = subjects[subjects["randomised"].to_numpy(bool)]
    ids = [str(i) for i in randomised.index]
    rand_dates = pd.to_datetime(randomised["randomisation_date"])
    left = pd.to_datetime(randomised["disposition_date"]).where(
        randomised["discontinued_study"].to_numpy(bool)
    )
    limit = pd.Timestamp(cutoff)
    parts: list[pd.DataFrame] = []
    for visit in protocol.visits:
        if visit.kind not in SCHEDULED_KINDS or visit.window is None:
            continue
        start = rand_dates + pd.to_timedelta(visit.window.start, unit="D")
        end = rand_dates + pd.to_timedelta(visit.window.end, unit="D")
        closed = (end < limit).fillna(False).to_numpy(bool)
        left_before = (left < start).fillna(False).to_numpy(bool)
        gone = left.notna().to_numpy(bool)  # left the study: a pending visit will not happen
        due = closed & ~left_before
        done = np.array([(i, visit.event) in done_keys for i in ids], dtype=bool)
        missed = np.array([(i, visit.event) in missed_keys for i in ids], dtype=bool)
        parts.append(
            pd.DataFrame(
                {
                    "subject": ids,
                    "event": visit.event,
                    "label": visit.label,
                    "window_start": start.to_numpy(),
                    "window_end": end.to_numpy(),
                    "due": due,
                    "done": done,
                    "missed": missed,
                    "overdue": due & ~done & ~missed,
                    "not_yet_due": ~closed & ~gone & ~done & ~missed,
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=list(VISIT_COLUMNS))
    return pd.concat(parts, ignore_index=True)[list(VISIT_COLUMNS)]


def _queries(queries: pd.DataFrame | None, as_of: datetime) -> pd.DataFrame:
    columns = ["query_id", "kind", "status", "open", "days_open"]
    if queries is None or queries.empty:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame({"query_id": queries["query_id"].astype(str)})
    # the query log says site_query / review_signal (studyman.validation.catalogue.finding_kind)
    frame["kind"] = (
        queries["kind"].astype(str).replace(_KIND_NAMES).to_numpy()
        if "kind" in queries.columns
        else "site"
    )
    frame["status"] = queries["status"].astype(str).to_numpy()
    frame["open"] = frame["status"].isin(OPEN_STATUSES).to_numpy()
    opened_column = "first_opened_at" if "first_opened_at" in queries.columns else "opened_at"
    opened = pd.to_datetime(queries[opened_column], errors="coerce", utc=True)
    reference = (
        pd.Timestamp(as_of).tz_convert("UTC") if as_of.tzinfo else pd.Timestamp(as_of, tz="UTC")
    )
    days = (reference - opened).dt.total_seconds() / 86400.0
    # a query cannot be older than now: opened after the as-of time means 0 days, not negative
    frame["days_open"] = np.floor(days.clip(lower=0).fillna(0).to_numpy())
    return frame


def derive_facts(
    protocol: Protocol,
    tables: Mapping[str, pd.DataFrame],
    *,
    cutoff: date,
    rules: FactRules = DEFAULT_RULES,
    arms: pd.Series | None = None,
    arm_order: Sequence[str] = (),
    queries: pd.DataFrame | None = None,
    as_of: datetime | None = None,
    snapshot_id: str = "",
) -> StudyFacts:
    """Derive the study's facts from typed snapshot tables.

    Parameters
    ----------
    protocol
        The study: every form and field name comes from it.
    tables
        Instrument → typed table, in the view the reader may see (the blinded view unless
        *arms* is given).
    cutoff
        The data cut-off: rows dated after it are left out (:func:`cut_tables`).
    rules
        The plan's rules (:func:`rules_from_plan`), else :data:`DEFAULT_RULES`.
    arms
        Record ID → arm label (unblinded readers only).
    queries
        The query log's queries (``QueryLog.queries``), when a reader has them.
    as_of
        The time query ages count to (default: now, UTC).
    snapshot_id
        The snapshot's id, recorded in ``facts.json``.
    """
    key = protocol.study.record_id_field
    tables = cut_tables(protocol, tables, cutoff)
    ids: set[str] = set()
    for frame in tables.values():
        if key in frame.columns:
            # unique first: iterating an Arrow-backed column value by value is slow
            ids.update(frame[key].dropna().astype(str).unique().tolist())
    index = pd.Index(sorted(ids), name=key, dtype=object)
    subjects = pd.DataFrame(index=index)
    subjects["site"] = _site_of(protocol, tables, index, key)
    enrolment = protocol.enrolment
    subjects["screening_date"] = _dates(
        _first_values(tables, protocol, enrolment.screening_date_field, key).reindex(index)
    )
    subjects["date_of_consent"] = _dates(
        _first_values(tables, protocol, enrolment.consent_date_field, key).reindex(index)
    )
    eligible = redcap_codes(
        _first_values(tables, protocol, protocol.eligibility.eligible_field, key).reindex(index)
    )
    subjects["is_eligible"] = (eligible == "1").fillna(False).to_numpy(dtype=bool)
    randomized = redcap_codes(
        _first_values(tables, protocol, protocol.randomization.randomized_field, key).reindex(index)
    )
    rand_date = _dates(
        _first_values(tables, protocol, protocol.randomization.date_field, key).reindex(index)
    )
    subjects["randomised"] = ((randomized == "1").fillna(False) & rand_date.notna()).to_numpy(
        dtype=bool
    )
    subjects["randomisation_date"] = rand_date.where(subjects["randomised"])

    treatment = protocol.treatment
    first_s, last_s, n_s = _exposure(tables, treatment.sessions, key)
    first_d, last_d, n_d = _exposure(tables, treatment.doses, key)
    subjects["first_session"] = first_s.reindex(index)
    subjects["last_session"] = last_s.reindex(index)
    subjects["sessions"] = n_s.reindex(index).fillna(0).astype(int)
    subjects["first_dose"] = first_d.reindex(index)
    subjects["last_dose"] = last_d.reindex(index)
    subjects["doses"] = n_d.reindex(index).fillna(0).astype(int)
    subjects["treated"] = (subjects["sessions"] > 0) | (subjects["doses"] > 0)
    subjects["first_treatment"] = subjects[["first_session", "first_dose"]].min(axis=1)
    subjects["last_treatment"] = subjects[["last_session", "last_dose"]].max(axis=1)

    # disposition
    dsp = protocol.disposition
    status = redcap_codes(_first_values(tables, protocol, dsp.status_field, key).reindex(index))
    subjects["disposition_code"] = status
    labels = {str(code.code): code.label for code in dsp.codes}
    subjects["disposition_label"] = status.map(
        lambda c: labels.get(str(c), pd.NA) if pd.notna(c) else pd.NA
    )
    subjects["disposition_date"] = _dates(
        _first_values(tables, protocol, dsp.date_field, key).reindex(index)
    )
    completed = {str(c.code) for c in dsp.codes if c.completed}
    death_codes = {str(c.code) for c in dsp.codes if c.death}
    ae_codes = {str(c.code) for c in dsp.codes if c.adverse_event}
    has_status = status.notna()
    subjects["completed"] = (has_status & status.isin(completed)).fillna(False).to_numpy(bool)
    subjects["discontinued_study"] = (has_status & ~status.isin(completed)).fillna(False).to_numpy(
        bool
    ) & subjects["randomised"].to_numpy(bool)
    subjects["discontinued_due_to_ae"] = subjects["discontinued_study"].to_numpy(
        bool
    ) & status.isin(ae_codes).fillna(False).to_numpy(bool)
    death_date = _dates(_first_values(tables, protocol, dsp.death_date_field, key).reindex(index))
    subjects["date_of_death"] = death_date
    subjects["death"] = death_date.notna().to_numpy(bool) | status.isin(death_codes).fillna(
        False
    ).to_numpy(bool)
    end_of_treatment = subjects["randomisation_date"] + pd.to_timedelta(
        treatment.weeks * 7, unit="D"
    )
    subjects["discontinued_treatment"] = subjects["discontinued_study"].to_numpy(bool) & (
        (subjects["disposition_date"] < end_of_treatment).fillna(True).to_numpy(bool)
    )

    # deviations
    dv = protocol.deviations
    dv_frame = tables.get(dv.form)
    major_categories = {str(c.code) for c in dv.categories if c.major}
    if dv_frame is not None and not dv_frame.empty and dv.category_field in dv_frame.columns:
        frame = dv_frame
        category = redcap_codes(frame[dv.category_field])
        recorded_major = (
            (redcap_codes(frame[dv.major_field]) == "1").fillna(False)
            if dv.major_field in frame.columns
            else pd.Series(False, index=frame.index)
        )
        date_columns = [c for c in frame.columns if c.endswith("_date") and c != key]
        deviations = pd.DataFrame(
            {
                "subject": frame[key].astype(str).to_numpy(),
                "instance": frame["redcap_repeat_instance"].to_numpy()
                if "redcap_repeat_instance" in frame.columns
                else 1,
                "date": _dates(frame[date_columns[0]]).to_numpy() if date_columns else pd.NaT,
                "category": category.to_numpy(),
                "major": (category.isin(major_categories).fillna(False) | recorded_major).to_numpy(
                    bool
                ),
            }
        )
    else:
        deviations = pd.DataFrame(columns=["subject", "instance", "date", "category", "major"])
        deviations["major"] = deviations["major"].astype(bool)
    majors = set(deviations.loc[deviations["major"].astype(bool), "subject"])
    subjects["major_deviation"] = index.isin(sorted(majors))
    subjects["hys_law"] = index.isin(sorted(_hys_law_cases(protocol, tables, key)))

    # populations, as the plan defines them
    scale_cache: dict[str, set[str]] = {}
    for population in rules.populations:
        mask = np.ones(len(index), dtype=bool)
        for kind, parameter in population.criteria:
            if kind == "randomized":
                mask &= subjects["randomised"].to_numpy(bool)
            elif kind == "treated":
                mask &= subjects["treated"].to_numpy(bool)
            elif kind == "no_major_deviation":
                mask &= ~subjects["major_deviation"].to_numpy(bool)
            elif kind == "adherent":
                mask &= _adherent(subjects, protocol, cutoff, float(str(parameter)))
            else:
                name = str(parameter)
                if name not in scale_cache:
                    scale_cache[name] = _post_baseline(tables, protocol, name, key)
                mask &= index.isin(sorted(scale_cache[name]))
        subjects[f"population_{population.name}"] = mask

    # adverse events
    ae = protocol.adverse_events
    ae_frame = tables.get(ae.form)
    if ae_frame is not None and not ae_frame.empty:
        frame = ae_frame
        start = _dates(frame[ae.start_field]) if ae.start_field in frame.columns else pd.NaT
        events = pd.DataFrame(
            {
                "subject": frame[key].astype(str).to_numpy(),
                "instance": frame["redcap_repeat_instance"].to_numpy()
                if "redcap_repeat_instance" in frame.columns
                else 1,
                "start": np.asarray(start),
                "serious": (redcap_codes(frame[ae.serious_field]) == "1")
                .fillna(False)
                .to_numpy(bool)
                if ae.serious_field in frame.columns
                else False,
                "fatal": (redcap_codes(frame[ae.outcome_field]) == str(ae.fatal_outcome_code))
                .fillna(False)
                .to_numpy(bool)
                if ae.outcome_field in frame.columns
                else False,
                "aesi": redcap_codes(frame[ae.aesi_field])
                .isin([str(a.code) for a in ae.aesi])
                .fillna(False)
                .to_numpy(bool)
                if ae.aesi_field in frame.columns
                else False,
            }
        )
    else:
        events = pd.DataFrame(columns=["subject", "instance", "start", "serious", "fatal", "aesi"])
    anchor_column = (
        "randomisation_date"
        if rules.treatment_emergent_from == "randomisation"
        else "first_treatment"
    )
    safety = rules.population("safety")
    in_safety = (
        subjects[f"population_{safety.name}"]
        if safety is not None
        else subjects["randomised"] & subjects["treated"]
    )
    anchor = events["subject"].map(subjects[anchor_column]) if len(events) else pd.Series()
    if len(events):
        started = pd.to_datetime(events["start"])
        events["teae"] = (started >= pd.to_datetime(anchor)).fillna(False).to_numpy(bool) & events[
            "subject"
        ].map(in_safety).fillna(False).to_numpy(bool)
    else:
        events["teae"] = pd.Series(dtype=bool)

    if arms is not None:
        subjects["arm"] = pd.Series(arms).astype("string").reindex(index)
        subjects.loc[~subjects["randomised"], "arm"] = pd.NA

    moment = as_of or datetime.now(UTC)
    return StudyFacts(
        subjects=subjects,
        adverse_events=events,
        deviations=deviations,
        queries=_queries(queries, moment),
        cutoff=cutoff,
        as_of=moment,
        view="unblinded" if arms is not None else "blinded",
        rules=rules,
        snapshot_id=snapshot_id,
        arm_order=tuple(arm_order),
        visits=_visit_status(protocol, tables, subjects, cutoff, key),
    )


def rules_from_plan(plan: Any, source: str = "") -> FactRules:
    """The rules an analysis plan declares (:class:`studyman.analysis.sap.AnalysisPlan`)."""
    populations = tuple(
        PopulationRule(
            name=str(name),
            label=str(population.label).split(" (")[0],
            flag=str(population.flag),
            criteria=tuple(
                (
                    criterion.kind,
                    f"{criterion.threshold:g}"
                    if criterion.kind == "adherent"
                    else criterion.parameter,
                )
                for criterion in population.criteria
            ),
        )
        for name, population in plan.populations.items()
    )
    declared = getattr(getattr(plan, "safety", None), "treatment_emergent_from", "randomisation")
    teae: Literal["randomisation", "first_treatment"] = (
        "first_treatment" if declared == "first_treatment" else "randomisation"
    )
    return FactRules(
        treatment_emergent_from=teae,
        populations=populations,
        source=source or f"analysis plan version {getattr(plan, 'version', '?')}",
    )


def facts_document(facts: StudyFacts, *, output: str) -> dict[str, Any]:
    """``facts.json``: the headline facts with what they were derived from."""
    return {
        "output": output,
        "snapshot_id": facts.snapshot_id,
        "cutoff": facts.cutoff.isoformat(),
        "as_of": facts.as_of.astimezone(UTC).isoformat(timespec="seconds"),
        "view": facts.view,
        "rules": {
            "source": facts.rules.source,
            "definitions": dict(rule_texts(facts.rules)),
        },
        "facts": facts.headline(),
    }


def write_facts_json(
    path: Path, facts: StudyFacts, *, output: str, mode: int | None = None
) -> Path:
    """Write :func:`facts_document` to *path* atomically; return *path*."""
    from studyman.sources.snapshot import write_bytes_atomic

    text = json.dumps(facts_document(facts, output=output), indent=2, ensure_ascii=False) + "\n"
    write_bytes_atomic(Path(path), text.encode("utf-8"), mode=mode)
    return Path(path)
