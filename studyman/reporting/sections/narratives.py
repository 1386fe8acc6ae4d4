"""Narratives of deaths, serious adverse events and potential Hy's law cases (a paragraph each in
the closed report; pooled counts only in the open one)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from studyman.reporting.sections.base import (
    TOTAL,
    DsmbInputs,
    ReportTable,
    Section,
    SectionSpec,
    _choice_labels,
    _participant_form,
)
from studyman.reporting.sections.shared import _SEVERITY, _adverse_events, _fmt_date

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "narratives"
TITLE = "Narratives: deaths, serious adverse events and potential Hy's law cases"
TABLE_IDS: tuple[str, ...] = (
    "narratives.cases-with-a-narrative",
    "narratives.narratives-index",
)

DEATH = "Death"
SAE = "Serious adverse event"
HYS_LAW = "Potential Hy's law case"


@dataclass(frozen=True)
class Narrative:
    """One narrative: the participant, why it is written, the onset and the paragraph."""

    participant: str
    kind: str
    onset: str
    text: str


def _day(when: object, first: object) -> str:
    """Study day of *when* relative to the first treatment (day 1; no day 0), as text."""
    if pd.isna(when) or pd.isna(first):  # type: ignore[call-overload]
        return ""
    delta = (pd.Timestamp(when).normalize() - pd.Timestamp(first).normalize()).days  # type: ignore[arg-type]
    return f"day {delta + 1 if delta >= 0 else delta} relative to the first study treatment"


def _labels(inputs: DsmbInputs, field_name: str | None) -> dict[str, str]:
    if field_name is None:
        return {}
    return {code: label.lower() for code, label in _choice_labels(inputs, field_name).items()}


def _per_participant(inputs: DsmbInputs, form: str, field_name: str) -> dict[str, object]:
    frame = inputs.table(form)
    if frame is None or field_name not in frame.columns:
        return {}
    rows = frame[[inputs.key, field_name]].dropna().drop_duplicates(inputs.key)
    return dict(zip(rows[inputs.key].astype(str), rows[field_name], strict=True))


class _Sources:
    """The records a narrative is assembled from, read once per report."""

    def __init__(self, inputs: DsmbInputs) -> None:
        protocol = inputs.protocol
        self.inputs = inputs
        #: The participants with a narrative (set by :func:`narratives`).
        self.cases: set[str] = set()
        self.facts = inputs.facts().subjects
        participant = _participant_form(inputs)
        self.age = _per_participant(inputs, participant, protocol.enrolment.age_field)
        self.sex = _per_participant(inputs, participant, protocol.enrolment.sex_field)
        self.sex_labels = _labels(inputs, protocol.enrolment.sex_field)
        liver = protocol.liver
        self.liver = inputs.table(liver.form)
        self._rows: dict[str, dict[str, pd.DataFrame]] = {}
        meds = protocol.concomitant_medications
        self.meds = inputs.table(meds.form)
        self.events = _adverse_events(inputs)

    def rows_of(self, name: str, frame: pd.DataFrame | None, record: str) -> pd.DataFrame:
        """*record*'s rows of *frame* (grouped once per table, not filtered per case)."""
        if frame is None:
            return pd.DataFrame()
        if name not in self._rows:
            keys = frame[self.inputs.key].astype(object).astype(str).to_numpy()
            # only the cases' rows are grouped (a few hundred of thousands of participants)
            mine = np.isin(keys, sorted(self.cases))
            small = frame.loc[mine]
            self._rows[name] = {str(k): part for k, part in small.groupby(keys[mine], sort=False)}
        return self._rows[name].get(record, frame.iloc[0:0])

    def intro(self, record: str) -> str:
        """ "A 47-year-old woman (Arm B)" from the participant form and the arm."""
        age = self.age.get(record)
        sex = self.sex_labels.get(_code_text(self.sex.get(record)), "")
        arm = ""
        if self.inputs.arms is not None:
            arm = str(self.inputs.arms.get(record, "arm not known"))
        who = f"{sex} participant" if sex else "sex not recorded"
        parts = [f"Participant {record}"]
        details = []
        if not _missing_value(age):
            details.append(f"{int(float(str(age)))} years old")
        details.append(who)
        if arm:
            details.append(arm)
        return f"{parts[0]} ({', '.join(details)})"

    def first_treatment(self, record: str) -> object:
        if record not in self.facts.index:
            return pd.NaT
        return self.facts.at[record, "first_treatment"]

    def disposition(self, record: str) -> str:
        if record not in self.facts.index:
            return "Disposition: not recorded."
        row = self.facts.loc[record]
        label = row.get("disposition_label")
        if label is None or pd.isna(label) or not str(label):
            return "Disposition: on study at the cut-off."
        when = _fmt_date(row.get("disposition_date"))
        return f"Disposition: {str(label).lower()}" + (f" on {when}." if when else ".")

    def labs(self, record: str, onset: object) -> str:
        """The liver tests (×ULN) of the last sample on or before *onset* and of the sample with
        the highest first transaminase after it."""
        liver = self.inputs.protocol.liver
        frame = self.liver
        if frame is None or liver.date_field not in frame.columns:
            return ""
        mine = self.rows_of("liver", frame, record).copy()
        if mine.empty:
            return "No liver tests recorded."
        mine["_date"] = pd.to_datetime(mine[liver.date_field], errors="coerce")

        def ratios(row: pd.Series) -> str:
            shown = []
            for test in liver.tests:
                value = pd.to_numeric(pd.Series([row.get(test.field)]), errors="coerce").iloc[0]
                if pd.notna(value):
                    shown.append(f"{test.id} {float(value) / test.uln:.1f}×ULN")
            return ", ".join(shown)

        text = []
        if pd.notna(onset):  # type: ignore[call-overload]
            before = mine[mine["_date"] <= pd.Timestamp(onset)]  # type: ignore[arg-type]
            if not before.empty:
                last = before.sort_values("_date").iloc[-1]
                when = _fmt_date(last["_date"])
                text.append(f"last liver tests on or before onset ({when}): {ratios(last)}")
            after = mine[mine["_date"] > pd.Timestamp(onset)]  # type: ignore[arg-type]
        else:
            after = mine
        if not after.empty:
            peak_test = liver.test(liver.hys_law.transaminases[0])
            values = pd.to_numeric(after[peak_test.field], errors="coerce")
            if values.notna().any():
                values = values.fillna(float("-inf"))
                peak = after.iloc[int(values.to_numpy().argmax())]
                when = _fmt_date(peak["_date"])
                text.append(f"highest {peak_test.id} after onset ({when}): {ratios(peak)}")
        return ("Laboratory: " + "; ".join(text) + ".") if text else ""

    def medications(self, record: str, onset: object) -> str:
        """The concomitant medications started before *onset* and not stopped before it."""
        spec = self.inputs.protocol.concomitant_medications
        frame = self.meds
        if frame is None or pd.isna(onset):  # type: ignore[call-overload]
            return ""
        mine = self.rows_of("meds", frame, record)
        start = pd.to_datetime(mine[spec.start_field], errors="coerce")
        stop = pd.to_datetime(mine[spec.stop_field], errors="coerce")
        when = pd.Timestamp(onset)  # type: ignore[arg-type]
        taken = (start < when) & (stop.isna() | (stop >= when))
        names = sorted({str(n) for n in mine.loc[taken.to_numpy(), spec.name_field].dropna()})
        if not names:
            return "No concomitant medication started before onset."
        return "Concomitant medications started before onset: " + ", ".join(names) + "."


def _missing_value(value: object) -> bool:
    """True for None, NaN, NaT and pandas' NA."""
    return bool(pd.isna(value)) if not isinstance(value, (list, tuple)) else False  # type: ignore[call-overload]


def _code_text(value: object) -> str:
    """A REDCap code as text (``3``, not ``3.0``); "" when missing."""
    if _missing_value(value):
        return ""
    text = str(value).strip()
    return text[:-2] if text.endswith(".0") else text


def _code(row: pd.Series, field_name: str) -> str:
    """The REDCap code in *row*'s *field_name* as text (``3``, not ``3.0``)."""
    return _code_text(row.get(field_name))


def _criteria(inputs: DsmbInputs, row: pd.Series) -> str:
    field_name = inputs.protocol.adverse_events.serious_criteria_field
    labels = _choice_labels(inputs, field_name)
    found = [
        label.lower()
        for code, label in labels.items()
        if str(row.get(f"{field_name}___{code}", "")) in ("1", "1.0", "True")
    ]
    return ", ".join(found) or "not recorded"


def _sae_narratives(inputs: DsmbInputs, sources: _Sources) -> list[Narrative]:
    spec = inputs.protocol.adverse_events
    events = sources.events
    if events is None:
        return []
    related = _labels(inputs, spec.related_field)
    outcome = _labels(inputs, spec.outcome_field)
    action = _labels(inputs, spec.action_field)
    serious = events[events["serious"].to_numpy(bool)].sort_values([inputs.key, spec.start_field])
    result = []
    for _, row in serious.iterrows():
        record = str(row[inputs.key])
        onset = pd.to_datetime(row[spec.start_field], errors="coerce")
        day = _day(onset, sources.first_treatment(record))
        severity = _SEVERITY.get(int(row["severity"]), "") if pd.notna(row["severity"]) else ""
        verbatim = row.get(spec.term_field)
        sentences = [
            f"{sources.intro(record)} had a serious adverse event, {row['PT']} "
            f"({row['SOC']}"
            + (f"; reported as '{verbatim}'" if verbatim is not None and pd.notna(verbatim) else "")
            + f"), with onset on {_fmt_date(onset) or 'an unrecorded date'}"
            + (f" ({day})" if day else "")
            + ".",
            f"Seriousness criteria: {_criteria(inputs, row)}; severity: "
            f"{severity.lower() or 'not recorded'}; relatedness to study treatment: "
            f"{related.get(_code(row, spec.related_field), 'not recorded')}.",
        ]
        if spec.action_field is not None and spec.action_field in row.index:
            code = _code(row, spec.action_field)
            sentences.append(
                f"Action taken with study treatment: {action.get(code, 'not recorded')}."
            )
        code = _code(row, spec.outcome_field)
        end = _fmt_date(row.get(spec.end_field))
        sentences.append(
            f"Outcome: {outcome.get(code, 'not recorded')}" + (f" ({end})." if end else ".")
        )
        sentences += [sources.labs(record, onset), sources.medications(record, onset)]
        sentences.append(sources.disposition(record))
        result.append(Narrative(record, SAE, _fmt_date(onset), " ".join(s for s in sentences if s)))
    return result


def _death_narratives(inputs: DsmbInputs, sources: _Sources) -> list[Narrative]:
    protocol = inputs.protocol
    facts = sources.facts
    deaths = facts[facts["death"].to_numpy(bool)]
    cause_field = protocol.disposition.death_cause_field
    causes = _per_participant(inputs, protocol.disposition.form, cause_field) if cause_field else {}
    events = sources.events
    result = []
    for record, row in deaths.iterrows():
        record = str(record)
        when = row.get("date_of_death")
        day = _day(when, sources.first_treatment(record))
        fatal = []
        if events is not None:
            mine = events[
                (events[inputs.key].astype(str) == record) & events["fatal"].to_numpy(bool)
            ]
            fatal = sorted(set(mine["PT"].astype(str)))
        cause = causes.get(record)
        sentences = [
            f"{sources.intro(record)} died on {_fmt_date(when) or 'an unrecorded date'}"
            + (f" ({day})" if day else "")
            + ".",
            f"Cause of death as recorded: {cause}."
            if cause is not None and not _missing_value(cause)
            else "Cause of death: not recorded.",
            ("Fatal adverse event: " + ", ".join(fatal) + ".")
            if fatal
            else "No adverse event recorded with a fatal outcome.",
            sources.labs(record, when),
            sources.medications(record, when),
            sources.disposition(record),
        ]
        result.append(
            Narrative(record, DEATH, _fmt_date(when), " ".join(s for s in sentences if s))
        )
    return result


def _hys_law_narratives(inputs: DsmbInputs, sources: _Sources) -> list[Narrative]:
    liver = inputs.protocol.liver
    frame = sources.liver
    facts = sources.facts
    cases: list[str] = (
        [str(r) for r in facts.index[facts["hys_law"].to_numpy(bool)]]
        if "hys_law" in facts.columns
        else []
    )
    events = sources.events
    result = []
    for record in cases:
        record = str(record)
        mine = sources.rows_of("liver", frame, record) if frame is not None else None
        first_hit = ""
        if mine is not None and not mine.empty:
            values = [
                {
                    t.field: pd.to_numeric(pd.Series([r.get(t.field)]), errors="coerce").iloc[0]
                    for t in liver.tests
                }
                for _, r in mine.iterrows()
            ]
            hits = [
                (r, v)
                for (_, r), v in zip(mine.iterrows(), values, strict=True)
                if liver.is_potential_hys_law(
                    {k: (None if pd.isna(x) else float(x)) for k, x in v.items()}
                )
            ]
            if hits:
                hits.sort(key=lambda h: pd.to_datetime(h[0][liver.date_field], errors="coerce"))
                sample = hits[0][0]
                first_hit = _fmt_date(sample[liver.date_field])
        when = pd.to_datetime(first_hit, errors="coerce") if first_hit else pd.NaT
        day = _day(when, sources.first_treatment(record))
        aes = []
        if events is not None:
            aes = sorted(
                set(events.loc[events[inputs.key].astype(str) == record, "PT"].astype(str))
            )
        rule = liver.hys_law
        sentences = [
            f"{sources.intro(record)} met the potential Hy's law rule ("
            + " or ".join(rule.transaminases)
            + f" > {rule.transaminase_multiple:g}×ULN, {rule.bilirubin} > "
            f"{rule.bilirubin_multiple:g}×ULN, {rule.alp} not > {rule.alp_max_multiple:g}×ULN) "
            f"in the sample of {first_hit or 'an unrecorded date'}"
            + (f" ({day})" if day else "")
            + ".",
            sources.labs(record, when),
            ("Treatment-emergent adverse events: " + ", ".join(aes) + ".")
            if aes
            else "No treatment-emergent adverse event recorded.",
            sources.medications(record, when),
            sources.disposition(record),
        ]
        result.append(Narrative(record, HYS_LAW, first_hit, " ".join(s for s in sentences if s)))
    return result


def narratives(inputs: DsmbInputs) -> list[Narrative]:
    """Every narrative of the closed report: deaths, then serious adverse events, then potential
    Hy's law cases, each by participant and onset."""
    sources = _Sources(inputs)
    subjects = sources.facts
    flagged = subjects["death"].to_numpy(bool)
    if "hys_law" in subjects.columns:
        flagged = flagged | subjects["hys_law"].to_numpy(bool)
    sources.cases = {str(r) for r in subjects.index[flagged]}
    if sources.events is not None:
        serious = sources.events[sources.events["serious"].to_numpy(bool)]
        sources.cases |= set(serious[inputs.key].astype(object).astype(str))
    return [
        *_death_narratives(inputs, sources),
        *_sae_narratives(inputs, sources),
        *_hys_law_narratives(inputs, sources),
    ]


def _counts(inputs: DsmbInputs) -> tuple[int, int, int, int]:
    """Deaths, serious TEAEs (events), participants with one and potential Hy's law cases."""
    subjects = inputs.facts().subjects
    events = _adverse_events(inputs)
    serious = events[events["serious"].to_numpy(bool)] if events is not None else pd.DataFrame()
    hys = int(subjects["hys_law"].sum()) if "hys_law" in subjects.columns else 0
    return (
        int(subjects["death"].sum()),
        len(serious),
        int(serious[inputs.key].nunique()) if len(serious) else 0,
        hys,
    )


def _count_rows(counts: Sequence[int]) -> list[list[str]]:
    deaths, events, participants, hys = counts
    return [
        ["Deaths", str(deaths)],
        ["Serious treatment-emergent adverse events", str(events)],
        ["Participants with a serious treatment-emergent adverse event", str(participants)],
        [HYS_LAW + "s", str(hys)],
        ["Narratives (closed report)", str(deaths + events + hys)],
    ]


def narratives_section(inputs: DsmbInputs) -> Section:
    """Closed: a paragraph per death, SAE and potential Hy's law case; open: the counts."""
    counts = _count_rows(_counts(inputs))
    count_table = ReportTable(
        "Cases with a narrative",
        pd.DataFrame(counts, columns=["Cases", TOTAL]),
        note="Pooled over arms. Serious adverse events: treatment-emergent, safety population.",
    )
    if not inputs.closed:
        return Section(
            id=SECTION_ID,
            title=TITLE,
            paragraphs=(
                "The narratives name participants and their arms: they are in the closed report "
                "only. The open session gives their numbers.",
            ),
            tables=(count_table,),
        )
    written = narratives(inputs)
    arms = inputs.arms if inputs.arms is not None else pd.Series(dtype="string")
    arm_of = [str(arms.get(n.participant, "–")) for n in written]
    index = pd.DataFrame(
        {
            "Participant": [n.participant for n in written],
            "Arm": arm_of,
            "Case": [n.kind for n in written],
            "Onset": [n.onset for n in written],
        }
    )
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=(
            "Assembled from the adverse-event, laboratory, concomitant-medication and "
            "disposition records; days are study days relative to the first study treatment "
            "(day 1), the arm as coded in this report.",
            *(f"{n.kind} — {n.text}" for n in written),
        ),
        tables=(count_table, ReportTable("Narratives index", index)),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, narratives_section)
