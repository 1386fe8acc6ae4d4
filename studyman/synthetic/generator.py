"""The seeded, deterministic synthetic trial: participants, randomisation, visits, safety, logs.

:func:`generate_trial` simulates the reference study as REDCap flat records. Everything random
comes from one ``numpy.random.Generator`` per component, each seeded from ``(seed, component)``,
so the same seed gives the same bytes and changing one component's draws does not shift another's.
No real personal data is used: initials are random letters, dates are simulated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from studyman.errors import ProtocolError
from studyman.synthetic.design import StudyDesign, design_from_protocol
from studyman.synthetic.planting import plant_errors as plant_errors_into
from studyman.synthetic.records import (
    FormBlock,
    as_text,
    assemble_records,
    days_to_text,
    minutes_to_text,
)
from studyman.synthetic.scores import allocate_items

if TYPE_CHECKING:
    from studyman.protocol import Protocol

__all__ = [
    "PLANTED_ERROR_COLUMNS",
    "RANDOMIZATION_COLUMNS",
    "GeneratedTrial",
    "generate_trial",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ObjectArray = npt.NDArray[np.object_]

RANDOMIZATION_COLUMNS = ["record_id", "rand_number", "rand_arm", "rand_stratum"]
PLANTED_ERROR_COLUMNS = [
    "error_type",
    "record_id",
    "event",
    "instrument",
    "instance",
    "field",
    "original_value",
    "planted_value",
    "description",
]

_EPOCH = date(1970, 1, 1)

# One random stream per component (the second entropy word of the seed sequence).
_STREAMS = {
    "screening": 1,
    "randomization": 2,
    "outcomes": 3,
    "dropout": 4,
    "visits": 5,
    "cssrs": 6,
    "cows": 7,
    "labs": 8,
    "vitals": 9,
    "adverse_events": 10,
    "conmeds": 11,
    "cbt": 12,
    "dosing": 13,
    "deviations": 14,
    "planting": 15,
    "screening_scales": 16,
    "screening_labs": 17,
    "hys_law": 18,
    "ae_reporting": 19,
    "major_deviations": 20,
}

# HAM-D-17 item propensities (items 1..17, item 16 = 16A or 16B): core mood, work and insomnia
# items carry points first; suicide, insight and weight loss last.
_HAMD_WEIGHTS = (
    1.6,
    1.0,
    0.35,
    0.9,
    0.9,
    0.8,
    1.3,
    0.6,
    0.6,
    1.1,
    0.9,
    0.6,
    0.9,
    0.6,
    0.5,
    0.5,
    0.3,
)
# PHQ-9: item 9 (thoughts of death or self-harm) is rarely scored.
_PHQ9_WEIGHTS = (1.2, 1.3, 1.1, 1.2, 0.9, 1.0, 1.0, 0.6, 0.1)
_GAD7_WEIGHTS = (1.2, 1.1, 1.1, 1.0, 0.7, 0.9, 0.8)
_COWS_WEIGHTS = (0.8, 1.0, 0.7, 0.5, 1.0, 1.0, 0.9, 0.7, 1.0, 1.2, 0.3)

# Adverse events drawn at random: expected events per participant over 12 weeks, by arm
# (adjunct arm, CBT alone). Adverse events of special interest are not drawn here: they follow
# from the C-SSRS, COWS and liver data (and the one death).
_AE_RATES: dict[str, tuple[float, float]] = {
    "Nausea": (0.20, 0.07),
    "Vomiting": (0.06, 0.03),
    "Constipation": (0.18, 0.04),
    "Dry mouth": (0.10, 0.03),
    "Diarrhoea": (0.04, 0.04),
    "Abdominal pain": (0.05, 0.04),
    "Headache": (0.16, 0.12),
    "Dizziness": (0.10, 0.05),
    "Somnolence": (0.14, 0.04),
    "Tremor": (0.03, 0.01),
    "Seizure": (0.003, 0.0),
    "Insomnia": (0.08, 0.08),
    "Anxiety": (0.06, 0.06),
    "Depression": (0.03, 0.04),
    "Irritability": (0.05, 0.03),
    "Fatigue": (0.10, 0.08),
    "Weight decreased": (0.03, 0.01),
    "Hyperhidrosis": (0.05, 0.01),
    "Pruritus": (0.03, 0.01),
    "Nasopharyngitis": (0.06, 0.06),
    "Upper respiratory tract infection": (0.05, 0.05),
    "Back pain": (0.04, 0.04),
    "Myalgia": (0.03, 0.02),
    "Palpitations": (0.02, 0.01),
    "Fall": (0.02, 0.02),
    "Rhinorrhoea": (0.02, 0.01),
    "Decreased appetite": (0.05, 0.02),
}
# Per-event probability that a randomly drawn AE is serious (default 1.5 %).
_SERIOUS_PROBABILITY = {"Seizure": 1.0, "Depression": 0.15}
# Terms the adjunct plausibly causes (relatedness leans to "possible"/"probable" in its arm).
_ADJUNCT_TYPICAL = {
    "Nausea",
    "Vomiting",
    "Constipation",
    "Dry mouth",
    "Dizziness",
    "Somnolence",
    "Tremor",
    "Hyperhidrosis",
    "Pruritus",
    "Decreased appetite",
    "Drug withdrawal syndrome",
    "Drug-induced liver injury",
}

# Terms the reference safety information lists for the adjunct (expected): its typical effects
# except drug-induced liver injury, which is not yet known, so a case is unexpected (a SUSAR).
_RSI_EXPECTED = _ADJUNCT_TYPICAL - {"Drug-induced liver injury"}

# Eligibility-form exclusion fields, in the order screen failures draw them.
_EXCLUSION_FIELDS = (
    "exc_bipolar",
    "exc_psychosis",
    "exc_substance",
    "exc_liver",
    "exc_suicide_risk",
    "exc_pregnancy",
)

# Concomitant medications: name, class code, dose choices, unit, frequency code, indication.
_Medication = tuple[str, str, tuple[float, ...], str, str, str]
_ANTIDEPRESSANTS = (
    ("Sertraline", "1", (50.0, 100.0), "mg", "1", "Depression"),
    ("Escitalopram", "1", (10.0, 20.0), "mg", "1", "Depression"),
    ("Fluoxetine", "1", (20.0,), "mg", "1", "Depression"),
    ("Venlafaxine", "2", (75.0, 150.0), "mg", "1", "Depression"),
    ("Duloxetine", "2", (60.0,), "mg", "1", "Depression"),
    ("Mirtazapine", "3", (15.0, 30.0), "mg", "1", "Depression"),
)
_OTHER_MEDS = (
    ("Lorazepam", "4", (0.5, 1.0), "mg", "5", "Anxiety"),
    ("Zolpidem", "6", (5.0, 10.0), "mg", "1", "Insomnia"),
    ("Ibuprofen", "7", (200.0, 400.0), "mg", "5", "Headache"),
    ("Paracetamol", "7", (500.0, 1000.0), "mg", "5", "Pain"),
    ("Omeprazole", "7", (20.0,), "mg", "1", "Dyspepsia"),
    ("Cetirizine", "7", (10.0,), "mg", "1", "Allergic rhinitis"),
    ("Levothyroxine", "7", (50.0, 75.0), "microgram", "1", "Hypothyroidism"),
    ("Atorvastatin", "7", (10.0, 20.0), "mg", "1", "Hypercholesterolaemia"),
    ("Salbutamol inhaler", "7", (100.0,), "microgram", "5", "Asthma"),
    ("Loperamide", "7", (2.0,), "mg", "5", "Diarrhoea"),
)


# One conmeds row: participant index, name, class, dose, unit, frequency, indication,
# start day, stop day (-1 while ongoing).
_ConmedRow = tuple[int, str, str, float, str, str, str, int, int]


def _conmed_row(p: int, med: _Medication, dose: float, start: int, stop: int) -> _ConmedRow:
    """A conmeds row for participant ``p`` taking ``med`` at ``dose`` from ``start`` to ``stop``."""
    return (p, med[0], med[1], dose, med[3], med[4], med[5], start, stop)


_SAFETY_ACTIONS = (
    "Risk assessment by the study psychiatrist; safety plan updated",
    "Safety plan reviewed with the participant; crisis contacts given",
    "Referred for same-day psychiatric assessment",
)
_MISSED_REASONS = (
    "Participant unavailable",
    "Intercurrent illness",
    "Travel",
    "Transport problems",
)
_DEATH_CAUSE = "Traumatic head injury after a fall"


@dataclass(frozen=True)
class GeneratedTrial:
    """A generated trial (frozen).

    Attributes
    ----------
    records
        REDCap flat raw records, every value a string (blank ``""``), columns in export order.
    randomization
        The unblinded list: ``record_id, rand_number, rand_arm, rand_stratum``.
    planted_errors
        Ground truth of planted errors (columns :data:`PLANTED_ERROR_COLUMNS`); empty when clean.
    seed, data_cut, dropout, n_participants
        The arguments that made it.
    """

    records: pd.DataFrame
    randomization: pd.DataFrame
    planted_errors: pd.DataFrame
    seed: int
    data_cut: date
    dropout: str
    n_participants: int
    settings: dict[str, Any] = field(default_factory=dict)


def _day(value: date) -> int:
    return (value - _EPOCH).days


def _rng(seed: int, component: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _STREAMS[component]]))


def _expit(x: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


def _largest_remainder(total: int, weights: list[float]) -> IntArray:
    shares = np.asarray(weights, dtype=np.float64)
    shares = shares / shares.sum() * total
    counts = np.floor(shares).astype(np.int64)
    remainder = total - int(counts.sum())
    order = np.argsort(-(shares - counts), kind="stable")
    counts[order[:remainder]] += 1
    return np.asarray(counts, dtype=np.int64)


def _fmt_number(values: FloatArray, decimals: int) -> ObjectArray:
    return np.asarray([f"{v:.{decimals}f}" for v in values], dtype=object)


def _fmt_dose(values: FloatArray) -> ObjectArray:
    return np.asarray([f"{v:g}" for v in values], dtype=object)


def _choice_text(options: tuple[str, ...], index: IntArray) -> ObjectArray:
    return np.asarray(options, dtype=object)[index]


class _Builder:
    """Holds the arrays of one generation run; methods fill them step by step."""

    def __init__(
        self,
        design: StudyDesign,
        *,
        n_participants: int,
        seed: int,
        dropout: str,
        data_cut: date,
        treatment_effect: float,
        screen_failure_rate: float,
        hys_law_cases: int,
        reporting_lapses: int = 0,
    ) -> None:
        self.design = design
        self.n_target = n_participants
        self.seed = seed
        self.dropout = dropout
        self.cut = _day(data_cut)
        self.effect = treatment_effect
        self.sf_rate = screen_failure_rate
        self.hys_law_cases = hys_law_cases
        self.reporting_lapses = reporting_lapses
        self.blocks: list[FormBlock] = []
        self.visits = design.visits
        self.n_visits = len(design.visits)
        self.visit_index = {v.event: i for i, v in enumerate(design.visits)}

    # --- helpers --------------------------------------------------------------------------------
    def add(
        self,
        form: str,
        who: IntArray,
        events: ObjectArray | str,
        values: dict[str, ObjectArray],
        instances: IntArray | None = None,
    ) -> None:
        """Add a block for participants *who* (indices into the screened arrays)."""
        if len(who) == 0:
            return
        known = {spec.name for spec in self.design.fields if spec.form == form}
        for name in values:
            if name not in known:
                raise ProtocolError(
                    f"the generator writes field {name!r} but form {form!r} in the data "
                    "dictionary has no such field",
                    key=name,
                )
        event_array = np.full(len(who), events, dtype=object) if isinstance(events, str) else events
        self.blocks.append(
            FormBlock(
                form=form,
                record_ids=self.record_id[who],
                events=event_array,
                values=values,
                instances=instances,
            )
        )

    def forms_at(self, event: str) -> tuple[str, ...]:
        return self.design.event_forms.get(event, ())

    # --- 1. screening ---------------------------------------------------------------------------
    def screen(self) -> None:
        """Screened participants: sites, dates, demographics, screen failures and reasons."""
        design = self.design
        rng = _rng(self.seed, "screening")
        n_rand = self.n_target
        n_sf = round(n_rand * self.sf_rate / (1.0 - self.sf_rate))
        n_all = n_rand + n_sf
        # Sites recruit at their own pace: a performance factor around 1 scales each target.
        performance = rng.uniform(0.75, 1.2, size=len(design.sites))
        counts = _largest_remainder(
            n_all, [s.target * float(f) for s, f in zip(design.sites, performance, strict=True)]
        )
        site = np.repeat(np.arange(len(design.sites)), counts)
        scr_parts: list[IntArray] = []
        ids: list[str] = []
        for s, count in enumerate(counts):
            spec = design.sites[s]
            # A mild ramp-up after activation (Beta(1.3, 1) over the site's enrolment period).
            span = _day(spec.end) - _day(spec.start)
            offset = np.floor(rng.beta(1.3, 1.0, size=int(count)) * (span + 1))
            days = np.sort(_day(spec.start) + np.minimum(offset, span))
            scr_parts.append(days.astype(np.int64))
            ids.extend(f"{spec.site_id}-{k + 1:04d}" for k in range(int(count)))
        self.site = site
        self.scr = np.concatenate(scr_parts) if scr_parts else np.zeros(0, np.int64)
        self.record_id = np.asarray(ids, dtype=object)
        self.dag_of = {rid: design.sites[s].dag for rid, s in zip(ids, site, strict=True)}
        n = n_all
        self.n = n
        sf = np.zeros(n, dtype=bool)
        sf[rng.choice(n, size=n_sf, replace=False)] = True
        self.sf = sf
        # Screening falls on day -gap before baseline, inside the screening window.
        lo = max(7, -design.screening.window_end)
        hi = min(27, -design.screening.window_start)
        gap = rng.integers(lo, hi + 1, size=n)
        self.base = self.scr + gap
        late_consent = rng.random(n) < 0.3
        self.consent = self.scr - late_consent * rng.integers(1, 4, size=n)
        self.elig = self.scr + (rng.random(n) * gap).astype(np.int64)
        self.exists = self.scr <= self.cut
        self.randomized = ~sf & (self.base <= self.cut) & self.exists
        # Screen-failure reasons: 1 HAM-D below threshold, 2 exclusion, 3 consent, 4 lost, 5 other.
        reason = rng.choice(np.arange(1, 6), size=n, p=[0.40, 0.30, 0.12, 0.08, 0.10])
        self.sf_reason = np.where(sf, reason, 0)
        # Demographics (simulated; no real person).
        age = np.clip(np.rint(rng.normal(40.0, 11.0, size=n)), 18, 65).astype(np.int64)
        other_age = self.sf_reason == 5
        age_fail = other_age & (rng.random(n) < 0.5)
        age[age_fail] = rng.integers(66, 76, size=int(age_fail.sum()))
        self.age = age
        self.age_fail = age_fail
        self.sex = rng.choice(np.array(["1", "2", "3"], dtype=object), size=n, p=[0.62, 0.37, 0.01])
        self.race = rng.choice(
            np.array(["1", "2", "3", "4", "5", "6"], dtype=object),
            size=n,
            p=[0.01, 0.08, 0.14, 0.01, 0.70, 0.06],
        )
        self.ethnicity = rng.choice(
            np.array(["1", "2", "3"], dtype=object), size=n, p=[0.14, 0.83, 0.03]
        )
        self.prior_ad = rng.random(n) < 0.5
        letters = np.array(list("ABCDEFGHJKLMNPRSTVWZ"), dtype=object)
        self.initials = (
            letters[rng.integers(0, len(letters), n)] + letters[rng.integers(0, len(letters), n)]
        )
        # Screening HAM-D (the baseline one follows in outcomes()).
        baseline_total = np.clip(np.rint(rng.normal(23.5, 4.0, size=n)), 18, 40).astype(np.int64)
        severe = baseline_total >= self.design.severe_from
        screening_total = baseline_total + np.rint(rng.normal(0.0, 1.5, size=n)).astype(np.int64)
        lo_t = np.where(severe, self.design.severe_from, self.design.hamd_threshold)
        hi_t = np.where(severe, 40, self.design.severe_from - 1)
        screening_total = np.clip(screening_total, lo_t, hi_t)
        low = self.sf_reason == 1
        screening_total[low] = rng.integers(8, self.design.hamd_threshold, size=int(low.sum()))
        self.baseline_total = baseline_total
        self.severity = np.where(severe, 2, 1)
        self.screening_total = screening_total
        # Exclusion failures: which exclusion applies.
        exclusions = np.array(_EXCLUSION_FIELDS, dtype=object)
        which = rng.integers(0, len(exclusions), size=n)
        which = np.where((exclusions[which] == "exc_pregnancy") & (self.sex != "1"), 0, which)
        self.exclusion = np.where(self.sf_reason == 2, exclusions[which], "")

    # --- 2. randomisation -----------------------------------------------------------------------
    def randomize(self) -> None:
        """Stratified permuted-block randomisation (site x baseline severity), 1:1."""
        design = self.design
        rng = _rng(self.seed, "randomization")
        who = np.flatnonzero(self.randomized)
        order = who[np.lexsort((self.record_id[who].astype(str), self.base[who]))]
        arm = np.full(self.n, "", dtype=object)
        number = np.full(self.n, "", dtype=object)
        stratum = np.full(self.n, "", dtype=object)
        names = design.extra.get("severity_names", {"1": "moderate", "2": "severe"})
        fmt = str(design.extra.get("stratum_format", "{site}-{severity}"))
        n_arms = len(design.arms)
        for s, site in enumerate(design.sites):
            for severity in (1, 2):
                members = order[(self.site[order] == s) & (self.severity[order] == severity)]
                if len(members) == 0:
                    continue
                sequence: list[str] = []
                while len(sequence) < len(members):
                    size = int(rng.choice(design.block_sizes))
                    block = list(design.arms) * (size // n_arms)
                    sequence.extend(
                        str(a) for a in rng.permutation(np.asarray(block, dtype=object))
                    )
                arm[members] = np.asarray(sequence[: len(members)], dtype=object)
                letter = "S" if severity == 2 else "M"
                number[members] = [
                    f"{site.site_id}{letter}{k + 1:03d}" for k in range(len(members))
                ]
                stratum[members] = fmt.format(
                    site=site.site_id, severity=names.get(str(severity), str(severity))
                )
        self.arm = arm
        self.rand_number = number
        self.stratum = stratum
        self.adjunct = arm == design.arms[0]

    # --- 3. outcomes, dropout and the visit calendar ------------------------------------------
    def outcomes(self) -> None:
        """HAM-D-17, PHQ-9 and GAD-7 totals at every scheduled visit (see generate_trial Notes)."""
        rng = _rng(self.seed, "outcomes")
        n, k = self.n, self.n_visits
        weeks = np.asarray([v.target_day / 7.0 for v in self.visits])
        tau = 4.0
        end_week = 12.0
        shape = (1.0 - np.exp(-np.minimum(weeks, end_week) / tau)) / (1.0 - np.exp(-end_week / tau))
        control_change = -8.0
        follow_up = weeks > end_week
        arm_effect = np.where(follow_up, 0.7 * self.effect, self.effect)
        mean_change = control_change * shape[None, :] + np.where(
            self.adjunct[:, None], (arm_effect * shape)[None, :], 0.0
        )
        slope = rng.normal(0.0, 3.5, size=(n, 1))
        rho, sd = 0.5, 2.5
        noise = np.zeros((n, k))
        noise[:, 0] = rng.normal(0.0, sd, size=n)
        for j in range(1, k):
            noise[:, j] = rho * noise[:, j - 1] + np.sqrt(1 - rho**2) * rng.normal(0.0, sd, size=n)
        noise[:, 0] = 0.0
        latent = self.baseline_total[:, None] + mean_change + slope * shape[None, :] + noise
        self.hamd = np.clip(np.rint(latent), 0, 52).astype(np.int64)
        self.hamd[:, 0] = self.baseline_total
        person_phq = rng.normal(0.0, 1.5, size=(n, 1))
        self.phq = np.clip(
            np.rint(0.5 * self.hamd + 1.5 + person_phq + rng.normal(0.0, 2.0, size=(n, k))), 0, 27
        ).astype(np.int64)
        person_gad = rng.normal(0.0, 1.5, size=(n, 1))
        self.gad = np.clip(
            np.rint(0.35 * self.hamd + 2.0 + person_gad + rng.normal(0.0, 2.0, size=(n, k))), 0, 21
        ).astype(np.int64)

    def calendar(self) -> None:
        """Dropout, the death, missed visits, visit dates and disposition."""
        rng = _rng(self.seed, "dropout")
        n, k = self.n, self.n_visits
        last = k - 1
        # Hazard of leaving after visit j: MAR on the score just observed, MNAR on the next one.
        scores = self.hamd[:, :last] if self.dropout == "mar" else self.hamd[:, 1:]
        hazard = _expit(np.log(0.025 / 0.975) + 0.4 * (scores - 18.0) / 5.0)
        leave = rng.random((n, last)) < hazard
        dropped = leave.any(axis=1)
        self.last_visit = np.where(dropped, leave.argmax(axis=1), last).astype(np.int64)

        vrng = _rng(self.seed, "visits")
        vday = np.zeros((n, k), dtype=np.int64)
        for j, visit in enumerate(self.visits):
            spread = max(0.5, (visit.window_end - visit.window_start) / 6.0)
            offset = np.rint(vrng.normal(0.0, spread, size=n)).astype(np.int64)
            offset = np.clip(
                offset, visit.window_start - visit.target_day, visit.window_end - visit.target_day
            )
            vday[:, j] = self.base + visit.target_day + offset
        self.vday = vday
        window_start = np.asarray([v.window_start for v in self.visits])
        window_end = np.asarray([v.window_end for v in self.visits])

        # The one death: a randomised participant who attended at least two post-baseline visits.
        self.death = np.zeros(n, dtype=bool)
        self.death_day = np.zeros(n, dtype=np.int64)
        candidates = np.flatnonzero(self.randomized & (self.last_visit >= 2))
        for p in rng.permutation(candidates):
            j = int(min(self.last_visit[p], 3, last - 1))
            day = int(vday[p, j]) + int(rng.integers(2, 6))
            if day <= self.cut and day < self.base[p] + window_start[j + 1]:
                self.death[p] = True
                self.death_day[p] = day
                self.last_visit[p] = j
                break

        # Intermittent missed visits (visit form "not done"): never the last attended or final one.
        index = np.arange(k)[None, :]
        missable = (index >= 1) & (index < self.last_visit[:, None]) & (index < last)
        self.missed = missable & (rng.random((n, k)) < 0.035)
        self.attended = (index <= self.last_visit[:, None]) & ~self.missed
        # Disposition.
        status = np.where(self.last_visit == last, 1, 0)
        reason = rng.choice(np.array([2, 3, 4, 6, 7]), size=n, p=[0.35, 0.35, 0.15, 0.05, 0.10])
        status = np.where(status == 0, reason, status)
        status = np.where(self.death, 5, status)
        last_day = vday[np.arange(n), self.last_visit]
        next_index = np.minimum(self.last_visit + 1, last)
        next_open = self.base + window_start[next_index] - 1
        leave_day = np.maximum(
            last_day, np.minimum(last_day + rng.integers(1, 5, size=n), next_open)
        )
        ds_day = np.where(status == 1, last_day, np.where(status == 3, last_day, leave_day))
        ds_day = np.where(self.death, self.death_day, ds_day)
        self.ds_status = status
        self.ds_day = ds_day
        self.has_disposition = self.randomized & (ds_day <= self.cut)
        self.end_day = np.where(self.has_disposition, ds_day, self.cut)
        # Which visit rows exist at the data cut.
        self.visit_exists = self.randomized[:, None] & self.attended & (vday <= self.cut)
        missed_window_closed = (self.base[:, None] + window_end[None, :]) <= self.cut
        self.missed_exists = self.randomized[:, None] & self.missed & missed_window_closed
        self.missed_exists &= (self.base[:, None] + window_end[None, :]) <= self.end_day[:, None]

    # --- 4. forms at the screening event --------------------------------------------------------
    def screening_forms(self) -> None:
        """Forms of the screening event for everyone screened by the data cut."""
        design = self.design
        event = design.screening.event
        forms = self.forms_at(event)
        who = np.flatnonzero(self.exists)
        if "participant" in forms:
            self.add(
                "participant",
                who,
                event,
                {
                    "initials": self.initials[who],
                    "scr_date": days_to_text(self.scr[who]),
                    "consent_date": days_to_text(self.consent[who]),
                    "age": as_text(self.age[who]),
                    "sex": self.sex[who],
                    "race": self.race[who],
                    "ethnicity": self.ethnicity[who],
                    "prior_ad": as_text(self.prior_ad[who].astype(np.int64)),
                },
            )
        if "eligibility" in forms:
            elig_who = who[self.elig[who] <= self.cut]
            reason = self.sf_reason[elig_who]
            values: dict[str, ObjectArray] = {"elig_date": days_to_text(self.elig[elig_who])}
            yes = np.full(len(elig_who), "1", dtype=object)
            no = np.full(len(elig_who), "0", dtype=object)
            values["inc_age"] = np.where(self.age_fail[elig_who], no, yes)
            values["inc_diagnosis"] = np.where((reason == 5) & ~self.age_fail[elig_who], no, yes)
            values["inc_hamd"] = np.where(reason == 1, no, yes)
            values["inc_consent"] = np.where(reason == 3, no, yes)
            for name in _EXCLUSION_FIELDS:
                values[name] = np.where(self.exclusion[elig_who] == name, yes, no)
            values["eligible"] = np.where(reason > 0, no, yes)
            values["screen_fail_reason"] = np.where(reason > 0, as_text(reason), "")
            other = np.where(
                self.age_fail[elig_who],
                "Age outside 18 to 65",
                "Diagnosis not confirmed at interview",
            )
            values["screen_fail_other"] = np.where(reason == 5, other.astype(object), "")
            self.add("eligibility", elig_who, event, values)
        if "hamd17" in forms:
            self.add_scale(
                "hamd17", who, event, self.screening_total[who], _rng(self.seed, "screening_scales")
            )
        if "cssrs_screening" in forms:
            self.cssrs_screening(who, event)
        if "liver_tests" in forms:
            self.add_labs(who, event, self.scr[who], screening=True)
        if "vital_signs" in forms:
            self.add_vitals(who, event)

    def cssrs_screening(self, who: IntArray, event: str) -> None:
        rng = _rng(self.seed, "cssrs")
        m = len(who)
        suicide_fail = self.exclusion[who] == "exc_suicide_risk"
        l1 = (rng.random(m) < 0.55) | suicide_fail
        l2 = (rng.random(m) < 0.35) | suicide_fail
        gate = l1 | l2
        l3 = gate & (rng.random(m) < 0.3)
        l4 = suicide_fail & (rng.random(m) < 0.6)
        l5 = suicide_fail & ~l4
        values = {
            "cssrs_l_1": as_text(l1.astype(np.int64)),
            "cssrs_l_2": as_text(l2.astype(np.int64)),
            "cssrs_l_3": np.where(gate, as_text(l3.astype(np.int64)), ""),
            "cssrs_l_4": np.where(gate, as_text(l4.astype(np.int64)), ""),
            "cssrs_l_5": np.where(gate, as_text(l5.astype(np.int64)), ""),
            "cssrs_l_beh": as_text((suicide_fail & (rng.random(m) < 0.5)).astype(np.int64)),
        }
        self.add(
            "cssrs_screening",
            who,
            event,
            {k: np.asarray(v, dtype=object) for k, v in values.items()},
        )

    # --- rating scales --------------------------------------------------------------------------
    def add_scale(
        self,
        form: str,
        who: IntArray,
        events: ObjectArray | str,
        totals: IntArray,
        rng: np.random.Generator,
    ) -> IntArray:
        """Write one rating-scale block; returns the item matrix (for PHQ-9 item 9 and C-SSRS)."""
        design = self.design
        if form == "hamd17":
            names = [f"hamd_{i}" for i in range(1, 16)] + ["hamd_16", "hamd_17"]
            maxima = tuple(
                min(
                    int(max(design.field("hamd_16a").codes)),
                    int(max(design.field("hamd_16b").codes)),
                )
                if name == "hamd_16"
                else int(max(int(c) for c in design.field(name).codes))
                for name in names
            )
            items = allocate_items(totals, maxima, _HAMD_WEIGHTS, rng)
            values: dict[str, ObjectArray] = {}
            for i, name in enumerate(names):
                if name != "hamd_16":
                    values[name] = as_text(items[:, i])
            by_history = rng.random(len(who)) < 0.7
            item16 = as_text(items[:, 15])
            values["hamd_16a"] = np.where(by_history, item16, "").astype(object)
            values["hamd_16b"] = np.where(by_history, "", item16).astype(object)
            values["hamd_total"] = as_text(items.sum(axis=1))
            ordered = {
                n: values[n]
                for n in [f"hamd_{i}" for i in range(1, 16)]
                + ["hamd_16a", "hamd_16b", "hamd_17", "hamd_total"]
            }
            self.add(form, who, events, ordered)
            return items
        if form == "phq9":
            items = allocate_items(totals, (3,) * 9, _PHQ9_WEIGHTS, rng)
            values = {f"phq9_{i + 1}": as_text(items[:, i]) for i in range(9)}
            difficulty = np.clip(np.rint(totals / 7.0 + rng.normal(0.0, 0.5, len(totals))), 0, 3)
            values["phq9_10"] = as_text(difficulty.astype(np.int64))
            values["phq9_total"] = as_text(items.sum(axis=1))
            self.add(form, who, events, values)
            return items
        if form == "gad7":
            items = allocate_items(totals, (3,) * 7, _GAD7_WEIGHTS, rng)
            values = {f"gad7_{i + 1}": as_text(items[:, i]) for i in range(7)}
            values["gad7_total"] = as_text(items.sum(axis=1))
            self.add(form, who, events, values)
            return items
        raise ProtocolError(f"no rating-scale generator for form {form!r}", key=form)

    # --- 5. post-baseline visits ----------------------------------------------------------------
    def visit_forms(self) -> None:
        """All scheduled-visit forms, one block per form across every visit (vectorised)."""
        rng = _rng(self.seed, "outcomes")
        crng = _rng(self.seed, "cssrs")
        n_v = self.n_visits
        pp, vv = np.nonzero(self.visit_exists)
        events = np.asarray([v.event for v in self.visits], dtype=object)
        day = self.vday[pp, vv]
        baseline_event = self.visits[0].event
        # Enrollment and randomisation at baseline.
        at_base = np.flatnonzero(self.visit_exists[:, 0])
        if "enrollment" in self.forms_at(baseline_event):
            self.add(
                "enrollment",
                at_base,
                baseline_event,
                {
                    "randomized": np.full(len(at_base), "1", dtype=object),
                    "rand_date": days_to_text(self.base[at_base]),
                    "strat_severity": as_text(self.severity[at_base]),
                },
            )
        if "randomization" in self.forms_at(baseline_event):
            self.add(
                "randomization",
                at_base,
                baseline_event,
                {
                    "rand_number": self.rand_number[at_base],
                    "rand_arm": self.arm[at_base],
                    "rand_stratum": self.stratum[at_base],
                },
            )

        def mask(form: str) -> BoolArray:
            allowed = np.asarray([form in self.forms_at(str(e)) for e in events])
            return np.asarray(allowed[vv], dtype=bool)

        # Visit form: done visits and missed ones.
        mp, mv = np.nonzero(self.missed_exists)
        sel = mask("visit")
        miss_sel = np.asarray([("visit" in self.forms_at(str(events[v]))) for v in mv], dtype=bool)
        vp = np.concatenate([pp[sel], mp[miss_sel]])
        vvis = np.concatenate([vv[sel], mv[miss_sel]])
        n_done = int(sel.sum())
        done = np.arange(len(vp)) < n_done
        self.add(
            "visit",
            vp,
            events[vvis],
            {
                "visit_date": np.where(done, days_to_text(self.vday[vp, vvis]), "").astype(object),
                "visit_done": np.where(done, "1", "0").astype(object),
                "visit_missed_reason": np.where(
                    done,
                    "",
                    _choice_text(_MISSED_REASONS, rng.integers(0, len(_MISSED_REASONS), len(vp))),
                ).astype(object),
            },
        )
        # Rating scales.
        sel = mask("hamd17")
        self.add_scale("hamd17", pp[sel], events[vv[sel]], self.hamd[pp[sel], vv[sel]], rng)
        phq_item9 = np.zeros((self.n, n_v), dtype=np.int64)
        sel = mask("phq9")
        if sel.any():
            items = self.add_scale(
                "phq9", pp[sel], events[vv[sel]], self.phq[pp[sel], vv[sel]], rng
            )
            phq_item9[pp[sel], vv[sel]] = items[:, 8]
        sel = mask("gad7")
        if sel.any():
            self.add_scale("gad7", pp[sel], events[vv[sel]], self.gad[pp[sel], vv[sel]], rng)
        # PHQ-9 item 9 above 0 must come with a C-SSRS at the same visit.
        needs_cssrs = (phq_item9[pp, vv] > 0) & ~mask("cssrs_since_last")
        if needs_cssrs.any():
            raise ProtocolError(
                "PHQ-9 is due at an event without the C-SSRS since-last-visit form; the generator "
                "cannot keep PHQ-9 item 9 paired with a C-SSRS",
                key="instrument_event_mapping",
            )
        sel = mask("cssrs_since_last")
        self.cssrs_since_last(pp[sel], vv[sel], events, phq_item9, crng)
        sel = mask("cows")
        self.cows(pp[sel], vv[sel], events)
        sel = mask("liver_tests")
        self.add_labs(pp[sel], events[vv[sel]], day[sel], screening=False, visit=vv[sel])
        sel = mask("vital_signs")
        self.add_vitals(pp[sel], events[vv[sel]])

    def cssrs_since_last(
        self,
        p: IntArray,
        v: IntArray,
        events: ObjectArray,
        item9: IntArray,
        rng: np.random.Generator,
    ) -> None:
        m = len(p)
        score = self.hamd[p, v].astype(np.float64)
        flag = (item9[p, v] > 0).astype(np.float64)
        c1 = rng.random(m) < _expit(-3.2 + 0.15 * (score - 20.0) + 1.8 * flag)
        c2 = rng.random(m) < _expit(-4.0 + 0.15 * (score - 20.0) + 1.5 * flag + 1.0 * c1)
        gate = c1 | c2
        c3 = gate & (rng.random(m) < 0.25)
        c4 = gate & (rng.random(m) < 0.02)
        c5 = gate & (rng.random(m) < 0.008)
        actual = rng.random(m) < 0.0008
        interrupted = rng.random(m) < 0.0005
        aborted = rng.random(m) < 0.0008
        prep = rng.random(m) < 0.001
        nssi = rng.random(m) < 0.002
        behaviour = actual | interrupted | aborted | prep
        safety = c4 | c5 | behaviour | nssi

        def yn(x: BoolArray) -> ObjectArray:
            return np.where(x, "1", "0").astype(object)

        values = {
            "cssrs_1": yn(c1),
            "cssrs_2": yn(c2),
            "cssrs_3": np.where(gate, yn(c3), "").astype(object),
            "cssrs_4": np.where(gate, yn(c4), "").astype(object),
            "cssrs_5": np.where(gate, yn(c5), "").astype(object),
            "cssrs_beh_actual": yn(actual),
            "cssrs_beh_interrupted": yn(interrupted),
            "cssrs_beh_aborted": yn(aborted),
            "cssrs_beh_prep": yn(prep),
            "cssrs_beh_nssi": yn(nssi),
            "cssrs_safety_action": yn(safety),
            "cssrs_safety_action_desc": np.where(
                safety, _choice_text(_SAFETY_ACTIONS, rng.integers(0, len(_SAFETY_ACTIONS), m)), ""
            ).astype(object),
        }
        self.add("cssrs_since_last", p, events[v], values)
        # Each safety event becomes a suicidality AE on the assessment date.
        attempt = actual | interrupted | aborted
        pt = np.where(
            attempt,
            "Suicide attempt",
            np.where(nssi & ~(c4 | c5 | prep), "Intentional self-injury", "Suicidal ideation"),
        )
        hit = np.flatnonzero(safety)
        for i in hit:
            self.special_ae.append(
                {
                    "p": int(p[i]),
                    "pt": str(pt[i]),
                    "start": int(self.vday[p[i], v[i]]),
                    "severity": 3 if attempt[i] else 2,
                    "serious": bool(attempt[i]),
                    "criteria": (3,) if attempt[i] else (),
                    "related": 1,
                    "duration": 14,
                }
            )

    def cows(self, p: IntArray, v: IntArray, events: ObjectArray) -> None:
        if len(p) == 0:
            return
        rng = _rng(self.seed, "cows")
        design = self.design
        names = [f"cows_{i}" for i in range(1, 12)]
        codes = [tuple(sorted(int(c) for c in design.field(name).codes)) for name in names]
        end_of_treatment = self.visit_index.get("week_12_arm_1", self.n_visits - 2)
        taper = v == end_of_treatment
        mean = np.where(self.adjunct[p], np.where(taper, 4.0, 1.8), np.where(taper, 0.8, 0.5))
        mean = mean * rng.gamma(2.0, 0.5, size=len(p))
        target = np.minimum(rng.poisson(mean), design.cows_flag - 1)
        levels = allocate_items(target.astype(np.int64), (2,) * 11, _COWS_WEIGHTS, rng)
        table = np.asarray(
            [[c[min(level, len(c) - 1)] for level in range(3)] for c in codes]
        )  # item x level
        scores = table[np.arange(11)[None, :], levels]
        # Keep the clean study below the protocol's withdrawal review threshold.
        total = scores.sum(axis=1)
        for row in np.flatnonzero(total >= design.cows_flag):
            while scores[row].sum() >= design.cows_flag:
                top = int(np.argmax(scores[row]))
                scores[row, top] = 0
        total = scores.sum(axis=1)
        values = {name: as_text(scores[:, i]) for i, name in enumerate(names)}
        values = {
            "cows_date": days_to_text(self.vday[p, v]),
            **values,
            "cows_total": as_text(total),
        }
        self.add("cows", p, events[v], values)
        # Mild withdrawal in the adjunct arm: reported as a withdrawal AE half the time.
        mild = np.flatnonzero(self.adjunct[p] & (total >= 5) & (rng.random(len(p)) < 0.5))
        for i in mild:
            self.special_ae.append(
                {
                    "p": int(p[i]),
                    "pt": "Drug withdrawal syndrome",
                    "start": int(self.vday[p[i], v[i]]),
                    "severity": 1,
                    "serious": False,
                    "criteria": (),
                    "related": 4,
                    "duration": 7,
                }
            )

    def add_labs(
        self,
        who: IntArray,
        events: ObjectArray | str,
        day: IntArray,
        *,
        screening: bool,
        visit: IntArray | None = None,
    ) -> None:
        if len(who) == 0:
            return
        rng = _rng(self.seed, "screening_labs") if screening else self.lab_rng
        uln = self.design.ulns
        m = len(who)
        alt = uln["alt"] * np.exp(rng.normal(np.log(0.55), 0.35, m))
        ast = alt * np.exp(rng.normal(0.0, 0.15, m))
        alp = uln["alp"] * np.exp(rng.normal(np.log(0.6), 0.25, m))
        bili = uln["bili"] * np.exp(rng.normal(np.log(0.45), 0.35, m))
        alt = np.minimum(alt, 1.9 * uln["alt"])
        ast = np.minimum(ast, 1.9 * uln["ast"])
        alp = np.minimum(alp, 1.6 * uln["alp"])
        bili = np.minimum(bili, 1.4 * uln["bili"])
        if screening:
            liver_fail = self.exclusion[who] == "exc_liver"
            # Above the exclusion limit (2 x ULN) but below the 3 x ULN alert: a screen failure, not
            # a safety signal.
            alt = np.where(liver_fail, uln["alt"] * rng.uniform(2.2, 2.9, m), alt)
        elif visit is not None:
            for p, j, peak in self.hys_law_rows:
                rows = np.flatnonzero((who == p) & (visit == j))
                later = np.flatnonzero((who == p) & (visit > j))
                if peak:
                    alt[rows] = uln["alt"] * rng.uniform(4.0, 8.0)
                    ast[rows] = uln["ast"] * rng.uniform(3.0, 6.0)
                    bili[rows] = uln["bili"] * rng.uniform(2.2, 3.5)
                    alp[rows] = uln["alp"] * rng.uniform(0.8, 1.5)
                    alt[later] = uln["alt"] * rng.uniform(1.2, 1.9)
                    ast[later] = uln["ast"] * rng.uniform(1.0, 1.8)
        self.add(
            "liver_tests",
            who,
            events,
            {
                "lab_date": days_to_text(day),
                "lab_alt": as_text(np.rint(alt).astype(np.int64)),
                "lab_ast": as_text(np.rint(ast).astype(np.int64)),
                "lab_alp": as_text(np.rint(alp).astype(np.int64)),
                "lab_bili": _fmt_number(np.round(bili, 2), 2),
            },
        )

    def add_vitals(self, who: IntArray, events: ObjectArray | str) -> None:
        if len(who) == 0:
            return
        rng = self.vital_rng
        m = len(who)
        sbp = np.clip(np.rint(rng.normal(122.0, 12.0, m)), 95, 170)
        dbp = np.clip(np.rint(0.62 * sbp + rng.normal(0.0, 6.0, m)), 55, 105)
        dbp = np.minimum(dbp, sbp - 20)
        hr = np.clip(np.rint(rng.normal(74.0, 9.0, m)), 50, 110)
        weight = np.clip(self.weight[who] + rng.normal(0.0, 0.8, m), 40.0, 160.0)
        temp = np.clip(rng.normal(36.7, 0.25, m), 35.9, 37.6)
        self.add(
            "vital_signs",
            who,
            events,
            {
                "vs_sbp": as_text(sbp.astype(np.int64)),
                "vs_dbp": as_text(dbp.astype(np.int64)),
                "vs_hr": as_text(hr.astype(np.int64)),
                "vs_weight": _fmt_number(np.round(weight, 1), 1),
                "vs_temp": _fmt_number(np.round(temp, 1), 1),
            },
        )

    def choose_hys_law(self) -> None:
        """Pick the few adjunct-arm participants with a Hy's-law-range liver panel."""
        self.hys_law_rows: list[tuple[int, int, bool]] = []
        self.drug_stop = np.full(self.n, 10**9, dtype=np.int64)
        rng = _rng(self.seed, "hys_law")
        liver_visits = [
            j
            for j, v in enumerate(self.visits)
            if "liver_tests" in self.forms_at(v.event) and 0 < j < self.n_visits - 2
        ]
        chosen = 0
        candidates = np.flatnonzero(self.randomized & self.adjunct & ~self.death)
        for p in rng.permutation(candidates):
            if self.has_disposition[p] and self.ds_status[p] in (2, 3, 6, 7):
                continue  # the adjunct is withdrawn: leaving early, it would be for this event
            if chosen >= self.hys_law_cases:
                break
            usable = [j for j in liver_visits if self.visit_exists[p, j] and self.last_visit[p] > j]
            if not usable:
                continue
            j = usable[0]
            day = int(self.vday[p, j])
            if day + 1 > self.end_day[p]:
                continue
            self.hys_law_rows.append((int(p), j, True))
            self.drug_stop[p] = day
            self.special_ae.append(
                {
                    "p": int(p),
                    "pt": "Drug-induced liver injury",
                    "start": day,
                    "aware": day + 1,
                    "severity": 3,
                    "serious": True,
                    "criteria": (6,),
                    "related": 4,
                    "action": 4,
                    "duration": 35,
                }
            )
            chosen += 1

    # --- 6. adverse events ----------------------------------------------------------------------
    def adverse_events(self) -> None:
        """The adverse-event log: random events by arm, special-interest events, the death."""
        design = self.design
        rng = _rng(self.seed, "adverse_events")
        code_of = {t.preferred_term: t for t in design.coding}
        rand = np.flatnonzero(self.randomized & self.visit_exists[:, 0])
        exposure = np.maximum(self.end_day[rand] - self.base[rand] + 1, 1).astype(np.float64)
        terms = [t for t in _AE_RATES if t in code_of]
        rates = np.asarray([_AE_RATES[t] for t in terms])  # term x arm
        arm_rate = np.where(self.adjunct[rand][:, None], rates[None, :, 0], rates[None, :, 1])
        counts = np.minimum(rng.poisson(arm_rate * exposure[:, None] / 84.0), 2)
        p_idx, t_idx = np.nonzero(counts)
        reps = counts[p_idx, t_idx]
        p_idx = np.repeat(p_idx, reps)
        t_idx = np.repeat(t_idx, reps)
        who = rand[p_idx]
        start = self.base[who] + np.floor(rng.random(len(who)) * exposure[p_idx]).astype(np.int64)
        pts = np.asarray(terms, dtype=object)[t_idx]
        serious_p = np.asarray([_SERIOUS_PROBABILITY.get(str(t), 0.015) for t in pts])
        serious = rng.random(len(who)) < serious_p
        records: list[dict[str, Any]] = [
            {"p": int(w), "pt": str(t), "start": int(s), "serious": bool(z)}
            for w, t, s, z in zip(who, pts, start, serious, strict=True)
        ]
        # Withdrawals for an adverse event get their AE.
        for q in np.flatnonzero(self.randomized & (self.ds_status == 4)):
            lo = max(int(self.base[q]), int(self.vday[q, self.last_visit[q]]) - 7)
            hi = min(int(self.ds_day[q]), self.cut)
            if hi < lo:
                continue
            term = str(
                rng.choice(
                    np.asarray(
                        ["Nausea", "Dizziness", "Somnolence", "Anxiety", "Headache", "Fatigue"]
                    )
                )
            )
            records.append(
                {
                    "p": int(q),
                    "pt": term,
                    "start": int(rng.integers(lo, hi + 1)),
                    "serious": False,
                    "severity": 2 + int(rng.random() < 0.4),
                    "action": 4 if self.adjunct[q] else 1,
                    "ongoing": True,
                }
            )
        # The death.
        for q in np.flatnonzero(self.death):
            day = int(self.death_day[q])
            records.append(
                {
                    "p": int(q),
                    "pt": "Fall",
                    "start": max(
                        day - int(rng.integers(0, 3)), int(self.vday[q, self.last_visit[q]])
                    ),
                    "end": day,
                    "serious": True,
                    "criteria": (1, 3),
                    "severity": 3,
                    "related": 1,
                    "outcome": 5,
                    "aware": day,
                    "action": 5,
                }
            )
        records.extend(self.special_ae)
        records = [r for r in records if r["pt"] in code_of and r["start"] <= self.end_day[r["p"]]]
        if not records:
            return
        frame = pd.DataFrame(records)
        frame = frame.drop_duplicates(subset=["p", "pt", "start"], keep="last", ignore_index=True)
        frame = frame.sort_values(["p", "start", "pt"], kind="stable", ignore_index=True)
        m = len(frame)
        p = frame["p"].to_numpy(dtype=np.int64)
        start_day = frame["start"].to_numpy(dtype=np.int64)
        serious = frame["serious"].to_numpy(dtype=bool)
        pt = frame["pt"].to_numpy(dtype=object)
        adj = self.adjunct[p]

        def column(name: str, default: FloatArray) -> FloatArray:
            if name not in frame:
                return default
            given = frame[name].to_numpy(dtype=object)
            return np.asarray(
                [
                    d if (g is None or (isinstance(g, float) and np.isnan(g))) else g
                    for g, d in zip(given, default, strict=True)
                ],
                dtype=np.float64,
            )

        severity = np.where(
            serious,
            np.where(rng.random(m) < 0.7, 3, 2),
            rng.choice([1, 2, 3], size=m, p=[0.65, 0.30, 0.05]),
        )
        severity = column("severity", severity.astype(np.float64)).astype(np.int64)
        typical = np.asarray([str(t) in _ADJUNCT_TYPICAL for t in pt])
        related = np.where(
            adj & typical,
            rng.choice([1, 2, 3, 4, 5], size=m, p=[0.15, 0.2, 0.35, 0.2, 0.1]),
            np.where(
                adj,
                rng.choice([1, 2, 3, 4, 5], size=m, p=[0.5, 0.3, 0.15, 0.05, 0.0]),
                rng.choice([1, 2, 3], size=m, p=[0.6, 0.3, 0.1]),
            ),
        )
        related = column("related", related.astype(np.float64)).astype(np.int64)
        action = np.where(
            adj & (severity == 3),
            rng.choice([1, 3, 4], size=m, p=[0.3, 0.3, 0.4]),
            np.where(adj & (severity == 2) & (rng.random(m) < 0.1), 2, 1),
        )
        # A participant who leaves the study early for another reason than an adverse event did
        # not have the adjunct withdrawn for one (the disposition would say so): a severe event
        # interrupts it instead. Drawn as before, so the random stream is unchanged.
        left_otherwise = np.isin(self.ds_status[p], (2, 3, 6, 7))
        action = np.where((action == 4) & left_otherwise, 3, action)
        action = column("action", action.astype(np.float64)).astype(np.int64)
        duration = 1 + np.minimum(rng.geometric(0.12, size=m), 60)
        duration = column("duration", duration.astype(np.float64)).astype(np.int64)
        end = start_day + duration
        end = column("end", end.astype(np.float64)).astype(np.int64)
        ongoing_flag = column("ongoing", np.zeros(m)).astype(bool)
        limit = self.end_day[p]
        ongoing = (end > limit) | ongoing_flag
        outcome = np.where(
            ongoing, rng.choice([2, 3], size=m), np.where(rng.random(m) < 0.95, 1, 4)
        )
        outcome = np.where(ongoing & ongoing_flag, 3, outcome)
        outcome = column("outcome", outcome.astype(np.float64)).astype(np.int64)
        ongoing = ongoing & (outcome != 5)
        criteria_given = (
            frame["criteria"].to_numpy(dtype=object)
            if "criteria" in frame
            else np.full(m, None, dtype=object)
        )
        crit = np.zeros((m, 6), dtype=bool)
        for i in range(m):
            given = criteria_given[i]
            if isinstance(given, tuple) and given:
                for c in given:
                    crit[i, c - 1] = True
            elif serious[i]:
                crit[i, 2 if rng.random() < 0.7 else 5] = True
        aware_day = column(
            "aware", np.minimum(start_day + rng.integers(0, 3, size=m), limit).astype(np.float64)
        ).astype(np.int64)
        aware_day = np.maximum(aware_day, start_day)
        aware_min = aware_day * 1440 + 8 * 60 + rng.integers(0, 361, size=m)
        report_limit = int(self.design.sae_report_hours * 60) - 60
        report_min = aware_min + rng.integers(30, max(31, min(9 * 60, report_limit)), size=m)
        # Drug withdrawn for an AE stops the dosing log.
        for k in np.flatnonzero(action == 4):
            self.drug_stop[p[k]] = min(int(self.drug_stop[p[k]]), int(start_day[k]))
        verbatim = np.asarray([t if rng.random() < 0.6 else t.lower() for t in pt], dtype=object)
        instance = np.asarray(
            frame.groupby("p").cumcount().to_numpy(dtype=np.int64) + 1, dtype=np.int64
        )
        values: dict[str, ObjectArray] = {
            "ae_term": verbatim,
            "ae_pt": np.asarray([code_of[t].code for t in pt], dtype=object),
            "ae_soc": np.asarray([code_of[t].soc_code for t in pt], dtype=object),
            "ae_start": days_to_text(start_day),
            "ae_end": days_to_text(end, missing=ongoing),
            "ae_severity": as_text(severity),
            "ae_serious": np.where(serious, "1", "0").astype(object),
        }
        for c in range(6):
            values[f"ae_ser_crit___{c + 1}"] = np.where(crit[:, c], "1", "0").astype(object)
        values.update(
            {
                "ae_related": as_text(related),
                "ae_action": as_text(action),
                "ae_outcome": as_text(outcome),
                "ae_aware_dt": minutes_to_text(aware_min, missing=~serious),
                "ae_report_dt": minutes_to_text(report_min, missing=~serious),
                "ae_aesi": np.asarray([code_of[t].aesi for t in pt], dtype=object),
            }
        )
        values.update(
            self.expedited_reports(
                pt=pt,
                serious=serious,
                related=related,
                outcome=outcome,
                grave_criteria=crit[:, 0] | crit[:, 1],
                aesi=values["ae_aesi"],
                aware_min=aware_min.astype(np.int64),
            )
        )
        self.add_repeating("adverse_events", p, values, instance)

    def expedited_reports(
        self,
        *,
        pt: ObjectArray,
        serious: BoolArray,
        related: IntArray,
        outcome: IntArray,
        grave_criteria: BoolArray,
        aesi: ObjectArray,
        aware_min: IntArray,
    ) -> dict[str, ObjectArray]:
        """Expectedness, the unanticipated-problem judgement and the expedited report dates.

        Expected (serious events only) when the term is listed in the reference safety
        information (:data:`_RSI_EXPECTED`: liver injury is not, so the Hy's-law-range cases are
        SUSARs); a SUSAR is serious, related (possible, probable,
        definite) and unexpected, and the investigator judges every SUSAR, and nothing else, an
        unanticipated problem. Reports go out inside their clock (regulator for SUSARs, IRB for
        unanticipated problems, DSMB for suicide deaths), or stay blank when that would fall after
        the data cut; then ``reporting_lapses`` of them, whose deadline is well before the cut, are
        made late (2-72 h over) or left blank (alternately). Drawn from their own stream, so the
        rest of the trial does not change with them.
        """
        rng = _rng(self.seed, "ae_reporting")
        m = len(pt)
        extra = self.design.extra
        hours = dict(extra.get("clock_hours", {}))
        related_codes = [int(c) for c in extra.get("related_codes", ("3", "4", "5"))]
        expected = np.asarray([str(t) in _RSI_EXPECTED for t in pt], dtype=bool)
        susar: BoolArray = np.asarray(
            serious & np.isin(related, related_codes) & ~expected, dtype=bool
        )
        grave = grave_criteria | (outcome == 5)
        suicide_death: BoolArray = np.asarray(
            (outcome == 5) & (np.asarray(aesi, dtype=object) == "1"), dtype=bool
        )
        regulator_hours: FloatArray = np.asarray(
            np.where(
                grave,
                hours.get("susar_fatal_life_threatening", 168.0),
                hours.get("susar_other", 360.0),
            ),
            dtype=np.float64,
        )
        cut_end = (self.cut + 1) * 1440
        clocks: tuple[tuple[str, BoolArray, FloatArray, tuple[float, float]], ...] = (
            (
                "ae_reg_report_dt",
                susar,
                regulator_hours,
                (24.0, 0.8),
            ),
            (
                "ae_dsmb_report_dt",
                suicide_death,
                np.full(m, hours.get("suicide_death", 48.0)),
                (2.0, 0.8),
            ),
            (
                "ae_irb_report_dt",
                susar,
                np.full(m, hours.get("unanticipated_problem", 168.0)),
                (24.0, 0.9),
            ),
        )
        out: dict[str, ObjectArray] = {
            "ae_expected": np.where(serious, np.where(expected, "1", "0"), "").astype(object),
            "ae_unanticipated": np.where(susar, "1", "0").astype(object),
        }
        candidates: list[tuple[str, int, float]] = []
        for name, due, limit, (low, share) in clocks:
            draw = low + rng.random(m) * np.maximum(limit * share - low, 0.0)
            sent = aware_min + np.round(draw * 60).astype(np.int64)
            blank = ~due | (sent > cut_end)
            out[name] = minutes_to_text(sent, missing=blank)
            for i in np.flatnonzero(due & (aware_min + (limit + 72) * 60 <= cut_end)):
                candidates.append((name, int(i), float(limit[i])))
        for k, pick in enumerate(rng.permutation(len(candidates))[: self.reporting_lapses]):
            name, row, limit_hours = candidates[int(pick)]
            if k % 2 == 0:
                late = int(aware_min[row]) + int((limit_hours + 2 + rng.integers(0, 71)) * 60)
                out[name][row] = minutes_to_text(np.asarray([late], dtype=np.int64))[0]
            else:
                out[name][row] = ""
        return out

    def add_repeating(
        self, form: str, p: IntArray, values: dict[str, ObjectArray], instance: IntArray
    ) -> None:
        if len(p) == 0:
            return
        known = {spec.name for spec in self.design.fields if spec.form == form}
        expanded: set[str] = set()
        for spec in self.design.fields:
            if spec.form == form:
                expanded.update(spec.export_columns)
        for name in values:
            if name not in known and name not in expanded:
                raise ProtocolError(
                    f"form {form!r} has no field {name!r} in the data dictionary", key=name
                )
        self.blocks.append(
            FormBlock(
                form=form,
                record_ids=self.record_id[p],
                events=np.full(len(p), self.design.logs_event, dtype=object),
                values=values,
                instances=instance,
            )
        )

    # --- 7. other logs ----------------------------------------------------------------------------
    def conmeds(self) -> None:
        """Concomitant medications: stable antidepressants, stopped ones, and others."""
        rng = _rng(self.seed, "conmeds")
        rows: list[_ConmedRow] = []
        for q in np.flatnonzero(self.randomized & self.visit_exists[:, 0]):
            p = int(q)
            base, scr, end = int(self.base[p]), int(self.scr[p]), int(self.end_day[p])
            if self.prior_ad[p]:
                med = _ANTIDEPRESSANTS[int(rng.integers(0, len(_ANTIDEPRESSANTS)))]
                dose = float(rng.choice(med[2]))
                if rng.random() < 0.4:  # stable dose for at least 8 weeks, continued
                    rows.append(_conmed_row(p, med, dose, base - int(rng.integers(60, 1500)), -1))
                else:  # stopped before screening
                    stop = scr - int(rng.integers(30, 180))
                    rows.append(_conmed_row(p, med, dose, stop - int(rng.integers(90, 1200)), stop))
            n_other = min(int(rng.poisson(0.8)), 3)
            for k in rng.choice(len(_OTHER_MEDS), size=n_other, replace=False):
                med = _OTHER_MEDS[int(k)]
                dose = float(rng.choice(med[2]))
                if rng.random() < 0.5:
                    rows.append(_conmed_row(p, med, dose, scr - int(rng.integers(30, 2000)), -1))
                else:
                    start = base + int(rng.integers(0, max(1, end - base + 1)))
                    stop = start + int(rng.integers(1, 31))
                    rows.append(_conmed_row(p, med, dose, start, stop if stop <= end else -1))
        if not rows:
            return
        frame = pd.DataFrame(
            rows, columns=["p", "name", "cls", "dose", "unit", "freq", "ind", "start", "stop"]
        )
        frame = frame.sort_values(["p", "start", "name"], kind="stable", ignore_index=True)
        ongoing = frame["stop"].to_numpy() < 0
        self.add_repeating(
            "conmeds",
            frame["p"].to_numpy(dtype=np.int64),
            {
                "cm_name": frame["name"].to_numpy(dtype=object),
                "cm_class": frame["cls"].to_numpy(dtype=object),
                "cm_dose": _fmt_dose(frame["dose"].to_numpy(dtype=np.float64)),
                "cm_unit": frame["unit"].to_numpy(dtype=object),
                "cm_freq": frame["freq"].to_numpy(dtype=object),
                "cm_start": days_to_text(frame["start"].to_numpy(dtype=np.int64)),
                "cm_stop": days_to_text(frame["stop"].to_numpy(dtype=np.int64), missing=ongoing),
                "cm_ongoing": np.where(ongoing, "1", "0").astype(object),
                "cm_indication": frame["ind"].to_numpy(dtype=object),
            },
            np.asarray(frame.groupby("p").cumcount().to_numpy(dtype=np.int64) + 1, dtype=np.int64),
        )

    def cbt_sessions(self) -> None:
        """Twelve weekly CBT sessions (attendance kept at or above 80 %)."""
        rng = _rng(self.seed, "cbt")
        who = np.flatnonzero(self.randomized & self.visit_exists[:, 0])
        n_sessions = 12
        session = np.arange(1, n_sessions + 1)
        day = (
            self.base[who][:, None]
            + 7 * (session[None, :] - 1)
            + rng.integers(0, 4, size=(len(who), n_sessions))
        )
        exists = day <= self.end_day[who][:, None]
        wants_to_miss = rng.random((len(who), n_sessions)) < 0.06
        # Attendance stays at or above 80 % of the sessions held at every point (the protocol's
        # adherence threshold is 75 %): a session may be missed only while misses <= sessions / 5.
        attended = np.ones((len(who), n_sessions), dtype=bool)
        missed_count = np.zeros(len(who), dtype=np.int64)
        for k in range(n_sessions):
            can_miss = missed_count + 1 <= (k + 1) // 5
            miss = wants_to_miss[:, k] & can_miss
            attended[:, k] = ~miss
            missed_count += miss
        rp, rk = np.nonzero(exists)
        minutes = np.clip(np.rint(rng.normal(52.0, 6.0, size=len(rp))), 30, 75).astype(np.int64)
        att = attended[rp, rk]
        self.add_repeating(
            "cbt_sessions",
            who[rp],
            {
                "cbt_date": days_to_text(day[rp, rk]),
                "cbt_session_num": as_text(session[rk]),
                "cbt_attended": np.where(att, "1", "0").astype(object),
                "cbt_minutes": np.where(att, as_text(minutes), "").astype(object),
            },
            session[rk].astype(np.int64),
        )

    def dosing(self) -> None:
        """Weekly adjunct dosing in the adjunct arm: titration, maintenance, taper."""
        rng = _rng(self.seed, "dosing")
        who = np.flatnonzero(self.randomized & self.adjunct & self.visit_exists[:, 0])
        weeks = np.arange(12)
        day = self.base[who][:, None] + 7 * weeks[None, :]
        maintenance = rng.choice(np.array([75.0, 100.0]), size=len(who))
        dose = np.empty((len(who), 12))
        dose[:, 0] = 25.0
        dose[:, 1] = 50.0
        dose[:, 2:9] = maintenance[:, None]
        dose[:, 9:] = np.array([50.0, 25.0, 10.0])[None, :]
        phase = np.where(weeks < 2, 1, np.where(weeks < 9, 2, 3))
        limit = np.minimum(self.end_day[who], self.drug_stop[who])
        exists = day <= limit[:, None]
        rp, rk = np.nonzero(exists)
        taken = rng.random(len(rp)) >= 0.03
        self.add_repeating(
            "dosing",
            who[rp],
            {
                "dose_date": days_to_text(day[rp, rk]),
                "dose_mg": _fmt_dose(dose[rp, rk]),
                "dose_phase": as_text(phase[rk]),
                "dose_taken": np.where(taken, "1", "0").astype(object),
            },
            (rk + 1).astype(np.int64),
        )

    def deviations(self) -> None:
        """Site-recorded protocol deviations (missed visits and a few others)."""
        rng = _rng(self.seed, "deviations")
        rows: list[tuple[int, int, str, str, str]] = []
        labels = {
            v.event: v.event.replace("_arm_1", "").replace("_", " ").capitalize()
            for v in self.visits
        }
        mp, mv = np.nonzero(self.missed_exists)
        for p, v in zip(mp, mv, strict=True):
            visit = self.visits[v]
            rows.append(
                (
                    int(p),
                    int(self.base[p]) + visit.target_day,
                    "4",
                    f"Missed visit: {labels[visit.event]}",
                    "0",
                )
            )
        terms = (
            ("9", "CBT session delivered by a therapist awaiting certification", "0"),
            ("9", "HAM-D rated by a back-up blinded rater", "0"),
            ("8", "Vital signs not repeated after an elevated reading", "0"),
        )
        who = np.flatnonzero(
            self.randomized & self.visit_exists[:, 0] & (rng.random(self.n) < 0.05)
        )
        for p in who:
            span = int(self.end_day[p] - self.base[p])
            cat, term, major = terms[int(rng.integers(0, len(terms)))]
            rows.append(
                (int(p), int(self.base[p]) + int(rng.integers(0, span + 1)), cat, term, major)
            )
        # Major deviations, of categories the protocol declares major (recorded as major): the
        # per-protocol population excludes these participants. A stream of their own, so the
        # deviations above stay as they were.
        major_rng = _rng(self.seed, "major_deviations")
        major_terms = (
            ("7", "Randomised before the baseline HAM-D-17 was confirmed", "1"),
            ("2", "Consent obtained on a superseded consent form version", "1"),
            ("1", "Enrolled with a screening HAM-D-17 rated outside its window", "1"),
        )
        who = np.flatnonzero(
            self.randomized & self.visit_exists[:, 0] & (major_rng.random(self.n) < 0.04)
        )
        for p in who:
            span = int(self.end_day[p] - self.base[p])
            cat, term, major = major_terms[int(major_rng.integers(0, len(major_terms)))]
            rows.append(
                (int(p), int(self.base[p]) + int(major_rng.integers(0, span + 1)), cat, term, major)
            )
        if not rows:
            return
        frame = pd.DataFrame(rows, columns=["p", "day", "cat", "term", "major"])
        frame = frame.sort_values(["p", "day", "term"], kind="stable", ignore_index=True)
        self.add_repeating(
            "deviations",
            frame["p"].to_numpy(dtype=np.int64),
            {
                "dv_date": days_to_text(frame["day"].to_numpy(dtype=np.int64)),
                "dv_category": frame["cat"].to_numpy(dtype=object),
                "dv_term": frame["term"].to_numpy(dtype=object),
                "dv_major": frame["major"].to_numpy(dtype=object),
            },
            np.asarray(frame.groupby("p").cumcount().to_numpy(dtype=np.int64) + 1, dtype=np.int64),
        )

    def disposition(self) -> None:
        """End-of-study disposition for everyone whose disposition date is by the data cut."""
        who = np.flatnonzero(self.has_disposition)
        status = self.ds_status[who]
        reasons = {
            1: "",
            2: "Withdrew consent for personal reasons",
            3: "Lost to follow-up after three contact attempts",
            4: "Discontinued because of an adverse event",
            5: "Death",
            6: "Investigator decision",
            7: "Moved out of the area",
        }
        dead = status == 5
        self.add(
            "disposition",
            who,
            self.design.disposition_event,
            {
                "ds_status": as_text(status),
                "ds_date": days_to_text(self.ds_day[who]),
                "ds_reason": np.asarray([reasons[int(s)] for s in status], dtype=object),
                "death_date": days_to_text(self.death_day[who], missing=~dead),
                "death_cause": np.where(dead, _DEATH_CAUSE, "").astype(object),
            },
        )

    def randomization_frame(self) -> pd.DataFrame:
        who = np.flatnonzero(self.visit_exists[:, 0])
        who = who[np.argsort(self.record_id[who].astype(str), kind="stable")]
        return pd.DataFrame(
            {
                "record_id": self.record_id[who],
                "rand_number": self.rand_number[who],
                "rand_arm": self.arm[who],
                "rand_stratum": self.stratum[who],
            },
            columns=RANDOMIZATION_COLUMNS,
        ).astype(str)

    def run(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        self.special_ae: list[dict[str, Any]] = []
        self.screen()
        self.randomize()
        self.outcomes()
        self.calendar()
        wrng = _rng(self.seed, "vitals")
        self.weight = np.clip(wrng.normal(78.0, 15.0, size=self.n), 45.0, 140.0)
        self.vital_rng = wrng
        self.lab_rng = _rng(self.seed, "labs")
        self.screening_forms()
        self.choose_hys_law()
        self.visit_forms()
        self.adverse_events()
        self.conmeds()
        self.cbt_sessions()
        self.dosing()
        self.deviations()
        self.disposition()
        records = assemble_records(self.design, self.blocks, self.dag_of)
        return records, self.randomization_frame()


def generate_trial(
    protocol: Protocol | StudyDesign,
    *,
    n_participants: int = 300,
    seed: int = 20250203,
    dropout: Literal["mar", "mnar"] = "mar",
    plant_errors: bool = False,
    data_cut: date | None = None,
    treatment_effect: float = -3.0,
    screen_failure_rate: float = 0.2,
    hys_law_cases: int = 2,
    errors_per_type: int = 3,
    reporting_lapses: int = 2,
) -> GeneratedTrial:
    """Simulate the study as REDCap flat records (seeded, deterministic).

    Parameters
    ----------
    protocol
        The study: a protocol from :func:`studyman.protocol.load_protocol` (with its REDCap
        project), or a :class:`~studyman.synthetic.design.StudyDesign` built from one.
    n_participants
        Participants randomised (screen failures come on top, about ``screen_failure_rate``
        of those screened).
    seed
        The seed: the same seed gives the same records, byte for byte.
    dropout
        ``"mar"``: the hazard of leaving after a visit depends on the HAM-D-17 just observed;
        ``"mnar"``: on the (unobserved) score at the next visit.
    plant_errors
        Plant known data errors and return their ground truth.
    data_cut
        Data cut-off: nothing dated later exists (default: the protocol's ``reporting.data_cut``).
    treatment_effect
        Difference (adjunct minus CBT alone) in mean HAM-D-17 change from baseline at week 12.
    screen_failure_rate
        Share of screened participants who fail screening.
    hys_law_cases
        Adjunct-arm participants given a Hy's-law-range liver panel (with its serious AE).
    errors_per_type
        How many times each error type is planted.
    reporting_lapses
        Expedited reports (regulator, IRB, DSMB) made late or left missing although due, so that
        the reporting-clock checks have something to find; ``0`` for a trial that satisfies
        every clock.

    Returns
    -------
    GeneratedTrial

    Notes
    -----
    HAM-D-17 totals follow ``baseline + f(t)·(μ_arm + u_i) + e_it``, rounded and clipped to
    0–52, where ``f`` rises to 1 at week 12 (``1 − exp(−t/4)``, normalised) and holds after,
    ``μ`` is −8 points for CBT alone and ``−8 + treatment_effect`` for the adjunct arm (70 % of the
    effect kept at the week-16 follow-up), ``u_i ~ N(0, 3.5²)`` a participant random slope and
    ``e_it`` AR(1) noise (ρ = 0.5, σ = 2.5). PHQ-9 and GAD-7 totals are linear in the HAM-D-17
    with their own participant effects. Items are then drawn to add up exactly to each total.
    Dropout is a discrete hazard per interval, logit-linear in the score (see *dropout*). Clean
    data satisfy the protocol's edit checks by construction: visits inside their windows,
    totals equal to the item sums, HAM-D 16A xor 16B, C-SSRS skip logic, safety actions for
    ideation 4–5 or behaviour, SAE reports within the sponsor clock, nothing after the data cut
    or after a participant's disposition; expedited reports within their clocks except the
    ``reporting_lapses`` (see ``_Builder.expedited_reports``).
    """
    design = protocol if isinstance(protocol, StudyDesign) else design_from_protocol(protocol)
    if dropout not in ("mar", "mnar"):
        raise ProtocolError(f"dropout must be 'mar' or 'mnar', got {dropout!r}", key="dropout")
    if n_participants < 1:
        raise ProtocolError("n_participants must be at least 1", key="n_participants")
    if not 0.0 <= screen_failure_rate < 1.0:
        raise ProtocolError("screen_failure_rate must be in [0, 1)", key="screen_failure_rate")
    if data_cut is None:
        configured = design.extra.get("data_cut")
        if configured is None:
            last_site = max(s.end for s in design.sites)
            data_cut = last_site + timedelta(days=60)
        else:
            data_cut = (
                configured if isinstance(configured, date) else date.fromisoformat(str(configured))
            )
    builder = _Builder(
        design,
        n_participants=n_participants,
        seed=seed,
        dropout=dropout,
        data_cut=data_cut,
        treatment_effect=treatment_effect,
        screen_failure_rate=screen_failure_rate,
        hys_law_cases=hys_law_cases,
        reporting_lapses=reporting_lapses,
    )
    records, randomization = builder.run()
    planted = pd.DataFrame(columns=PLANTED_ERROR_COLUMNS, dtype=str)
    if plant_errors:
        records, planted = plant_errors_into(
            records, design, data_cut=data_cut, rng=_rng(seed, "planting"), per_type=errors_per_type
        )
    return GeneratedTrial(
        records=records,
        randomization=randomization,
        planted_errors=planted,
        seed=seed,
        data_cut=data_cut,
        dropout=dropout,
        n_participants=n_participants,
        settings={
            "treatment_effect": treatment_effect,
            "screen_failure_rate": screen_failure_rate,
            "hys_law_cases": hys_law_cases,
            "reporting_lapses": reporting_lapses,
            "errors_per_type": errors_per_type if plant_errors else 0,
        },
    )
