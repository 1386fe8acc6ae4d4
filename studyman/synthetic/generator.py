"""The seeded, deterministic synthetic trial: participants, randomisation, visits, safety, logs.

:func:`generate_trial` simulates a declared study as REDCap flat records, every name, scale,
visit and arm from its protocol (:mod:`studyman.synthetic.names`). Everything random comes from
one ``numpy.random.Generator`` per component, each seeded from ``(seed, component)``, so the same
seed gives the same bytes and changing one component's draws does not shift another's. No real
personal data is used: initials are random letters, dates are simulated.
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
from studyman.synthetic.names import ScaleNames
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
    "GeneratedTrial",
    "generate_trial",
    "randomization_columns",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ObjectArray = npt.NDArray[np.object_]

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
    "allocation": 2,
    "outcomes": 3,
    "dropout": 4,
    "visit_days": 5,
    "cssrs": 6,
    "withdrawal_scale": 7,
    "labs": 8,
    "vitals": 9,
    "ae_draws": 10,
    "medications": 11,
    "cbt": 12,
    "doses": 13,
    "protocol_deviations": 14,
    "planting": 15,
    "screening_scales": 16,
    "screening_labs": 17,
    "hys_law": 18,
    "ae_reporting": 19,
    "major_deviations": 20,
}

# COWS-like withdrawal scale: item propensities when the scale has eleven items, else equal.
_WITHDRAWAL_WEIGHTS = (0.8, 1.0, 0.7, 0.5, 1.0, 1.0, 0.9, 0.8, 1.0, 1.2, 0.3)

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
# A coding-list term not in the table above (and not of special interest).
_DEFAULT_AE_RATE = (0.03, 0.02)
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

# Concomitant medications: name, (class rule, index among the protocol's classes of that rule),
# dose choices, unit, as needed (else the first frequency code), indication.
_Medication = tuple[str, tuple[str, int], tuple[float, ...], str, bool, str]
_ANTIDEPRESSANTS: tuple[_Medication, ...] = (
    ("Sertraline", ("stable_dose", 0), (50.0, 100.0), "mg", False, "Depression"),
    ("Escitalopram", ("stable_dose", 0), (10.0, 20.0), "mg", False, "Depression"),
    ("Fluoxetine", ("stable_dose", 0), (20.0,), "mg", False, "Depression"),
    ("Venlafaxine", ("stable_dose", 1), (75.0, 150.0), "mg", False, "Depression"),
    ("Duloxetine", ("stable_dose", 1), (60.0,), "mg", False, "Depression"),
    ("Mirtazapine", ("stable_dose", 2), (15.0, 30.0), "mg", False, "Depression"),
)
_OTHER_MEDS: tuple[_Medication, ...] = (
    ("Lorazepam", ("of_interest", 0), (0.5, 1.0), "mg", True, "Anxiety"),
    ("Zolpidem", ("of_interest", 1), (5.0, 10.0), "mg", False, "Insomnia"),
    ("Ibuprofen", ("allowed", 0), (200.0, 400.0), "mg", True, "Headache"),
    ("Paracetamol", ("allowed", 0), (500.0, 1000.0), "mg", True, "Pain"),
    ("Omeprazole", ("allowed", 0), (20.0,), "mg", False, "Dyspepsia"),
    ("Cetirizine", ("allowed", 0), (10.0,), "mg", False, "Allergic rhinitis"),
    ("Levothyroxine", ("allowed", 0), (50.0, 75.0), "microgram", False, "Hypothyroidism"),
    ("Atorvastatin", ("allowed", 0), (10.0, 20.0), "mg", False, "Hypercholesterolaemia"),
    ("Salbutamol inhaler", ("allowed", 0), (100.0,), "microgram", True, "Asthma"),
    ("Loperamide", ("allowed", 0), (2.0,), "mg", True, "Diarrhoea"),
)


# One conmeds row: participant index, name, class, dose, unit, frequency, indication,
# start day, stop day (-1 while ongoing).
_ConmedRow = tuple[int, str, str, float, str, str, str, int, int]


def _conmed_row(
    design: StudyDesign, p: int, med: _Medication, dose: float, start: int, stop: int
) -> _ConmedRow:
    """A conmeds row for participant ``p`` taking ``med`` at ``dose`` from ``start`` to ``stop``."""
    names = design.n
    rule, index = med[1]
    codes = names.cm_classes_by_rule.get(rule) or names.cm_classes_by_rule.get("allowed") or ("",)
    frequency = names.cm_frequency_codes[1] if med[4] else names.cm_frequency_codes[0]
    return (
        p,
        med[0],
        codes[min(index, len(codes) - 1)],
        dose,
        med[3],
        frequency,
        med[5],
        start,
        stop,
    )


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
        The unblinded list: the protocol's record-ID, randomisation-number, arm and stratum
        fields (:func:`randomization_columns`).
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


def randomization_columns(design: StudyDesign) -> list[str]:
    """The randomisation list: the protocol's record-ID, number, arm and stratum fields."""
    names = design.n
    return [names.record_id, names.randomization_number, names.arm, names.stratum]


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
        # The generator's outcome model is set on the HAM-D-17's 0-52 range; other primary
        # scales stretch it to their own range.
        self.scale_factor = design.n.primary.total_max / 52.0

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
        # Screen-failure reasons, by the role of the protocol's codes in order: 1 scale below
        # threshold, 2 exclusion, 3 consent, 4 lost, 5 other.
        reason = rng.choice(np.arange(1, 6), size=n, p=[0.40, 0.30, 0.12, 0.08, 0.10])
        self.sf_reason = np.where(sf, reason, 0)
        # Demographics (simulated; no real person).
        names = design.n
        low, high = names.age_range
        age = np.clip(np.rint(rng.normal(40.0, 11.0, size=n)), low, high).astype(np.int64)
        other_age = self.sf_reason == 5
        age_fail = other_age & (rng.random(n) < 0.5) & (names.inclusion_age is not None)
        age[age_fail] = rng.integers(high + 1, high + 11, size=int(age_fail.sum()))
        self.age = age
        self.age_fail = age_fail
        sex_codes = np.asarray([c for c, _ in names.sex_codes] or [""], dtype=object)
        sex_p = np.asarray([s for _, s in names.sex_codes] or [1.0], dtype=np.float64)
        self.sex = rng.choice(sex_codes, size=n, p=sex_p / sex_p.sum())
        self.female = self.sex == (sex_codes[int(np.argmax(sex_p))] if len(sex_p) else "")
        # Other coded fields of the participant form (race, ethnicity, ...): uniform codes.
        self.participant_choices: dict[str, ObjectArray] = {}
        for name in names.other_participant_choices:
            codes = np.asarray(design.field(name).codes, dtype=object)
            self.participant_choices[name] = rng.choice(codes, size=n)
        self.prior_ad = rng.random(n) < 0.5
        letters = np.array(list("ABCDEFGHJKLMNPRSTVWZ"), dtype=object)
        self.initials = (
            letters[rng.integers(0, len(letters), n)] + letters[rng.integers(0, len(letters), n)]
        )
        # Screening primary-scale total (the baseline one follows in outcomes()), on the scale of
        # the reference HAM-D-17 (0-52) stretched to the primary scale's range.
        stretch = self.scale_factor
        threshold, severe_from = self.design.hamd_threshold, self.design.severe_from
        ceiling = min(design.n.primary.total_max, round(threshold + 22 * stretch))
        baseline_total = np.clip(
            np.rint(rng.normal(threshold + 5.5 * stretch, 4.0 * stretch, size=n)),
            threshold,
            ceiling,
        ).astype(np.int64)
        severe = baseline_total >= severe_from
        screening_total = baseline_total + np.rint(rng.normal(0.0, 1.5 * stretch, size=n)).astype(
            np.int64
        )
        lo_t = np.where(severe, severe_from, threshold)
        hi_t = np.where(severe, ceiling, severe_from - 1)
        screening_total = np.clip(screening_total, lo_t, hi_t)
        low_scale = self.sf_reason == 1
        screening_total[low_scale] = rng.integers(
            int(8 * stretch), threshold, size=int(low_scale.sum())
        )
        self.baseline_total = baseline_total
        self.severity = np.where(severe, 2, 1)
        self.screening_total = screening_total
        # Exclusion failures: which exclusion applies (pregnancy only for women).
        exclusions = np.array(names.exclusions or ("",), dtype=object)
        which = rng.integers(0, len(exclusions), size=n)
        if names.exclusion_pregnancy is not None:
            which = np.where(
                (exclusions[which] == names.exclusion_pregnancy) & ~self.female, 0, which
            )
        self.exclusion = np.where(self.sf_reason == 2, exclusions[which], "")

    # --- 2. randomisation -----------------------------------------------------------------------
    def randomize(self) -> None:
        """Stratified permuted-block randomisation (site x baseline severity), by the arm ratios."""
        design = self.design
        rng = _rng(self.seed, "allocation")
        who = np.flatnonzero(self.randomized)
        order = who[np.lexsort((self.record_id[who].astype(str), self.base[who]))]
        arm = np.full(self.n, "", dtype=object)
        number = np.full(self.n, "", dtype=object)
        stratum = np.full(self.n, "", dtype=object)
        levels = design.severity_levels or (("1", "moderate", 0), ("2", "severe", 0))
        fmt = str(design.extra.get("stratum_format", "{site}-{severity}"))
        site_key = str(design.extra.get("site_key", "site")) or "site"
        severity_key = str(design.extra.get("severity_key", "severity")) or "severity"
        ratios = design.arm_ratios or (1,) * len(design.arms)
        unit = [a for a, r in zip(design.arms, ratios, strict=True) for _ in range(r)]
        for s, site in enumerate(design.sites):
            for severity in (1, 2):
                members = order[(self.site[order] == s) & (self.severity[order] == severity)]
                if len(members) == 0:
                    continue
                sequence: list[str] = []
                while len(sequence) < len(members):
                    size = int(rng.choice(design.block_sizes))
                    block = unit * max(1, size // len(unit))
                    sequence.extend(
                        str(a) for a in rng.permutation(np.asarray(block, dtype=object))
                    )
                arm[members] = np.asarray(sequence[: len(members)], dtype=object)
                level = levels[min(severity, len(levels)) - 1]
                letter = (level[1][:1] or str(severity)).upper()
                number[members] = [
                    f"{site.site_id}{letter}{k + 1:03d}" for k in range(len(members))
                ]
                stratum[members] = fmt.format_map({site_key: site.site_id, severity_key: level[1]})
        self.arm = arm
        self.rand_number = number
        self.stratum = stratum
        self.adjunct = np.isin(
            arm, np.asarray(design.adjunct_arms or design.arms[:1], dtype=object)
        )

    # --- 3. outcomes, dropout and the visit calendar ------------------------------------------
    def outcomes(self) -> None:
        """Primary and secondary scale totals at every scheduled visit (generate_trial Notes)."""
        rng = _rng(self.seed, "outcomes")
        n, k = self.n, self.n_visits
        s = self.scale_factor
        primary = self.design.n.primary
        weeks = np.asarray([v.target_day / 7.0 for v in self.visits])
        tau = 4.0
        end_week = float(self.design.treatment_weeks)
        shape = (1.0 - np.exp(-np.minimum(weeks, end_week) / tau)) / (1.0 - np.exp(-end_week / tau))
        control_change = -8.0 * s
        follow_up = weeks > end_week
        effect = self.effect * s
        arm_effect = np.where(follow_up, 0.7 * effect, effect)
        mean_change = control_change * shape[None, :] + np.where(
            self.adjunct[:, None], (arm_effect * shape)[None, :], 0.0
        )
        slope = rng.normal(0.0, 3.5 * s, size=(n, 1))
        rho, sd = 0.5, 2.5 * s
        noise = np.zeros((n, k))
        noise[:, 0] = rng.normal(0.0, sd, size=n)
        for j in range(1, k):
            noise[:, j] = rho * noise[:, j - 1] + np.sqrt(1 - rho**2) * rng.normal(0.0, sd, size=n)
        noise[:, 0] = 0.0
        latent = self.baseline_total[:, None] + mean_change + slope * shape[None, :] + noise
        self.hamd = np.clip(np.rint(latent), 0, primary.total_max).astype(np.int64)
        self.hamd[:, 0] = self.baseline_total
        # Secondary scales: linear in the primary's share of its range, each with its own
        # participant effect (PHQ-9 about 0.5 x HAM-D-17 + 1.5, GAD-7 about 0.35 x HAM-D-17 + 2).
        share = self.hamd / float(primary.total_max)
        self.secondary: list[IntArray] = []
        for scale in self.design.n.secondary:
            top = float(scale.total_max)
            person = rng.normal(0.0, 1.5 * top / 27.0, size=(n, 1))
            latent_s = (
                0.9 * top * share + 0.06 * top + person + rng.normal(0.0, 2.0 * top / 27.0, (n, k))
            )
            self.secondary.append(np.clip(np.rint(latent_s), 0, top).astype(np.int64))

    def calendar(self) -> None:
        """Dropout, the death, missed visits, visit dates and disposition."""
        rng = _rng(self.seed, "dropout")
        n, k = self.n, self.n_visits
        last = k - 1
        # Hazard of leaving after visit j: MAR on the score just observed, MNAR on the next one.
        scores = self.hamd[:, :last] if self.dropout == "mar" else self.hamd[:, 1:]
        threshold = float(self.design.hamd_threshold)
        hazard = _expit(
            np.log(0.025 / 0.975) + 0.4 * (scores - threshold) / (5.0 * self.scale_factor)
        )
        leave = rng.random((n, last)) < hazard
        dropped = leave.any(axis=1)
        self.last_visit = np.where(dropped, leave.argmax(axis=1), last).astype(np.int64)

        vrng = _rng(self.seed, "visit_days")
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
        names = design.n
        event = design.screening.event
        forms = self.forms_at(event)
        who = np.flatnonzero(self.exists)
        if names.participant_form in forms:
            values: dict[str, ObjectArray] = {}
            if names.initials:
                values[names.initials] = self.initials[who]
            values[names.screening_date] = days_to_text(self.scr[who])
            values[names.consent_date] = days_to_text(self.consent[who])
            if names.age:
                values[names.age] = as_text(self.age[who])
            if names.sex:
                values[names.sex] = self.sex[who]
            for name, drawn in self.participant_choices.items():
                values[name] = drawn[who]
            if names.prior_treatment:
                values[names.prior_treatment] = as_text(self.prior_ad[who].astype(np.int64))
            self.add(names.participant_form, who, event, values)
        if names.eligibility_form in forms:
            self.eligibility_form(who, event)
        if names.primary.form in forms:
            self.add_scale(
                names.primary,
                who,
                event,
                self.screening_total[who],
                _rng(self.seed, "screening_scales"),
            )
        if names.cssrs_screening_form in forms:
            self.cssrs_screening(who, event)
        if names.liver_form in forms:
            self.add_labs(who, event, self.scr[who], screening=True)
        if names.vitals_form in forms:
            self.add_vitals(who, event)

    def eligibility_form(self, who: IntArray, event: str) -> None:
        """The eligibility form: criteria consistent with each screen failure's reason."""
        names = self.design.n
        elig_who = who[self.elig[who] <= self.cut]
        reason = self.sf_reason[elig_who]
        values: dict[str, ObjectArray] = {names.eligibility_date: days_to_text(self.elig[elig_who])}
        yes = np.full(len(elig_who), "1", dtype=object)
        no = np.full(len(elig_who), "0", dtype=object)
        if names.inclusion_age:
            values[names.inclusion_age] = np.where(self.age_fail[elig_who], no, yes)
        for k, name in enumerate(names.inclusion_other):
            values[name] = (
                np.where((reason == 5) & ~self.age_fail[elig_who], no, yes) if k == 0 else yes
            )
        if names.inclusion_scale:
            values[names.inclusion_scale] = np.where(reason == 1, no, yes)
        if names.inclusion_consent:
            values[names.inclusion_consent] = np.where(reason == 3, no, yes)
        for name in names.exclusions:
            values[name] = np.where(self.exclusion[elig_who] == name, yes, no)
        values[names.eligible] = np.where(reason > 0, no, yes)
        codes = names.screen_fail_codes or ("1", "2", "3", "4", "5")
        code_of = np.asarray(["", *[codes[min(r, len(codes)) - 1] for r in range(1, 6)]], object)
        values[names.screen_fail_reason] = code_of[reason]
        if names.screen_fail_other:
            other = np.where(
                self.age_fail[elig_who],
                "Age outside the eligible range",
                "Diagnosis not confirmed at interview",
            )
            values[names.screen_fail_other] = np.where(reason == 5, other.astype(object), "")
        ordered = {
            spec.name: values[spec.name]
            for spec in self.design.fields
            if spec.form == names.eligibility_form and spec.name in values
        }
        self.add(names.eligibility_form, elig_who, event, ordered)

    def cssrs_screening(self, who: IntArray, event: str) -> None:
        names = self.design.n
        rng = _rng(self.seed, "cssrs")
        m = len(who)
        suicide_fail = (
            self.exclusion[who] == names.exclusion_suicide
            if names.exclusion_suicide
            else np.zeros(m, dtype=bool)
        )
        ideation = names.cssrs_screening_ideation
        gate_index = names.cssrs_gate or (0, 1)
        high = names.cssrs_high_ideation
        drawn: list[BoolArray] = []
        for i in range(len(ideation)):
            if i in gate_index:
                share = 0.55 if i == gate_index[0] else 0.35
                drawn.append((rng.random(m) < share) | suicide_fail)
            else:
                drawn.append(np.zeros(m, dtype=bool))
        gate = np.zeros(m, dtype=bool)
        for i in gate_index:
            if i < len(drawn):
                gate |= drawn[i]
        first_high = True
        for i in range(len(ideation)):
            if i in gate_index:
                continue
            if i in high:
                if first_high:
                    drawn[i] = suicide_fail & (rng.random(m) < 0.6)
                    first_high = False
                else:
                    drawn[i] = suicide_fail & ~np.logical_or.reduce(
                        [drawn[j] for j in high if j != i and j < i] or [np.zeros(m, dtype=bool)]
                    )
            else:
                drawn[i] = gate & (rng.random(m) < 0.3)
        values: dict[str, ObjectArray] = {}
        for i, name in enumerate(ideation):
            text = as_text(drawn[i].astype(np.int64))
            values[name] = text if i in gate_index else np.where(gate, text, "").astype(object)
        if names.cssrs_screening_behaviour:
            values[names.cssrs_screening_behaviour] = as_text(
                (suicide_fail & (rng.random(m) < 0.5)).astype(np.int64)
            )
        self.add(
            names.cssrs_screening_form,
            who,
            event,
            {k: np.asarray(v, dtype=object) for k, v in values.items()},
        )

    # --- rating scales --------------------------------------------------------------------------
    def add_scale(
        self,
        scale: ScaleNames,
        who: IntArray,
        events: ObjectArray | str,
        totals: IntArray,
        rng: np.random.Generator,
    ) -> IntArray:
        """Write one rating-scale block; returns the item matrix (flag item and C-SSRS).

        Items are drawn to add up to each total (:func:`allocate_items`); an item of several
        fields of which exactly one is scored (HAM-D-17 16A/16B) goes into its first field 70 % of
        the time; unscored items follow the total.
        """
        items = allocate_items(totals, scale.maxima, scale.weights, rng)
        values: dict[str, ObjectArray] = {}
        for i, group in enumerate(scale.groups):
            text = as_text(items[:, i])
            if len(group) == 1:
                values[group[0]] = text
                continue
            pick = rng.random(len(who)) < 0.7
            for j, name in enumerate(group):
                chosen = pick if j == 0 else ~pick if j == 1 else np.zeros(len(who), bool)
                values[name] = np.where(chosen, text, "").astype(object)
        for name, allowed in scale.unscored:
            top = max(allowed)
            drawn = np.rint(
                totals / max(1.0, scale.total_max) * (top + 0.9) + rng.normal(0.0, 0.5, len(totals))
            )
            values[name] = as_text(np.clip(drawn, 0, top).astype(np.int64))
        values[scale.total] = as_text(items.sum(axis=1))
        ordered = {
            spec.name: values[spec.name]
            for spec in self.design.fields
            if spec.form == scale.form and spec.name in values
        }
        self.add(scale.form, who, events, ordered)
        return items

    # --- 5. post-baseline visits ----------------------------------------------------------------
    def visit_forms(self) -> None:
        """All scheduled-visit forms, one block per form across every visit (vectorised)."""
        names = self.design.n
        rng = _rng(self.seed, "outcomes")
        crng = _rng(self.seed, "cssrs")
        n_v = self.n_visits
        pp, vv = np.nonzero(self.visit_exists)
        events = np.asarray([v.event for v in self.visits], dtype=object)
        day = self.vday[pp, vv]
        baseline_event = self.visits[0].event
        # Enrollment and randomisation at baseline.
        at_base = np.flatnonzero(self.visit_exists[:, 0])
        if names.enrolment_form and names.enrolment_form in self.forms_at(baseline_event):
            levels = self.design.severity_levels or (("1", "", 0), ("2", "", 0))
            level_code = np.asarray([lv[0] for lv in levels], dtype=object)
            values: dict[str, ObjectArray] = {
                names.randomized: np.full(len(at_base), "1", dtype=object),
                names.randomization_date: days_to_text(self.base[at_base]),
            }
            if names.recorded_stratum:
                values[names.recorded_stratum] = level_code[
                    np.minimum(self.severity[at_base], len(levels)) - 1
                ]
            self.add(names.enrolment_form, at_base, baseline_event, values)
        if names.randomization_form in self.forms_at(baseline_event):
            self.add(
                names.randomization_form,
                at_base,
                baseline_event,
                {
                    names.randomization_number: self.rand_number[at_base],
                    names.arm: self.arm[at_base],
                    names.stratum: self.stratum[at_base],
                },
            )

        def mask(form: str | None) -> BoolArray:
            allowed = np.asarray(
                [form is not None and form in self.forms_at(str(e)) for e in events]
            )
            return np.asarray(allowed[vv], dtype=bool)

        # Visit form: done visits and missed ones.
        mp, mv = np.nonzero(self.missed_exists)
        sel = mask(names.visit_form)
        miss_sel = np.asarray(
            [(names.visit_form in self.forms_at(str(events[v]))) for v in mv], dtype=bool
        )
        vp = np.concatenate([pp[sel], mp[miss_sel]])
        vvis = np.concatenate([vv[sel], mv[miss_sel]])
        n_done = int(sel.sum())
        done = np.arange(len(vp)) < n_done
        visit_values: dict[str, ObjectArray] = {
            names.visit_date: np.where(done, days_to_text(self.vday[vp, vvis]), "").astype(object),
            names.visit_done: np.where(done, "1", "0").astype(object),
        }
        reasons = _choice_text(_MISSED_REASONS, rng.integers(0, len(_MISSED_REASONS), len(vp)))
        if names.visit_missed_reason:
            visit_values[names.visit_missed_reason] = np.where(done, "", reasons).astype(object)
        self.add(names.visit_form, vp, events[vvis], visit_values)
        # Rating scales.
        sel = mask(names.primary.form)
        self.add_scale(names.primary, pp[sel], events[vv[sel]], self.hamd[pp[sel], vv[sel]], rng)
        flagged = np.zeros((self.n, n_v), dtype=np.int64)
        for scale, totals in zip(names.secondary, self.secondary, strict=True):
            sel = mask(scale.form)
            if not sel.any():
                continue
            items = self.add_scale(scale, pp[sel], events[vv[sel]], totals[pp[sel], vv[sel]], rng)
            if scale.flag_item is None:
                continue
            flagged[pp[sel], vv[sel]] = np.maximum(
                flagged[pp[sel], vv[sel]], items[:, scale.flag_item]
            )
            # A flagged item above 0 must come with its required form at the same visit.
            required = mask(scale.requires_form)
            if ((flagged[pp, vv] > 0) & ~required).any():
                raise ProtocolError(
                    f"{scale.form} is due at an event without {scale.requires_form}; the "
                    "generator cannot keep its flagged item paired with that form",
                    key="instrument_event_mapping",
                )
        sel = mask(names.cssrs_form)
        self.cssrs_since_last(pp[sel], vv[sel], events, flagged, crng)
        if names.withdrawal is not None:
            sel = mask(names.withdrawal.form)
            self.withdrawal_scale(names.withdrawal, pp[sel], vv[sel], events)
        sel = mask(names.liver_form)
        self.add_labs(pp[sel], events[vv[sel]], day[sel], screening=False, visit=vv[sel])
        sel = mask(names.vitals_form)
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

        names = self.design.n
        ideation_drawn = [c1, c2, c3, c4, c5]
        gate_index = names.cssrs_gate or (0, 1)
        values: dict[str, ObjectArray] = {}
        for k, name in enumerate(names.cssrs_ideation):
            drawn = ideation_drawn[min(k, len(ideation_drawn) - 1)]
            values[name] = (
                yn(drawn) if k in gate_index else np.where(gate, yn(drawn), "").astype(object)
            )
        for name, drawn in zip(
            names.cssrs_behaviour, (actual, interrupted, aborted, prep), strict=False
        ):
            values[name] = yn(drawn)
        values[names.cssrs_self_injury] = yn(nssi)
        values[names.cssrs_safety_action] = yn(safety)
        if names.cssrs_safety_description:
            values[names.cssrs_safety_description] = np.where(
                safety, _choice_text(_SAFETY_ACTIONS, rng.integers(0, len(_SAFETY_ACTIONS), m)), ""
            ).astype(object)
        ordered = {
            spec.name: values[spec.name]
            for spec in self.design.fields
            if spec.form == names.cssrs_form and spec.name in values
        }
        self.add(names.cssrs_form, p, events[v], ordered)
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
                    "criteria": ("hospitalisation",) if attempt[i] else (),
                    "related": 1,
                    "duration": 14,
                }
            )

    def withdrawal_scale(
        self, scale: ScaleNames, p: IntArray, v: IntArray, events: ObjectArray
    ) -> None:
        """The withdrawal scale (COWS) at its visits, below the protocol's review threshold."""
        if len(p) == 0:
            return
        rng = _rng(self.seed, "withdrawal_scale")
        design = self.design
        codes = scale.values
        n_items = len(codes)
        weights = _WITHDRAWAL_WEIGHTS if n_items == len(_WITHDRAWAL_WEIGHTS) else (1.0,) * n_items
        end_of_treatment = self.visit_index.get(design.end_of_treatment_event, self.n_visits - 2)
        taper = v == end_of_treatment
        mean = np.where(self.adjunct[p], np.where(taper, 4.0, 1.8), np.where(taper, 0.8, 0.5))
        mean = mean * rng.gamma(2.0, 0.5, size=len(p))
        flag = design.cows_flag if design.cows_flag > 0 else scale.total_max + 1
        target = np.minimum(rng.poisson(mean), flag - 1)
        levels = allocate_items(target.astype(np.int64), (2,) * n_items, weights, rng)
        table = np.asarray(
            [[c[min(level, len(c) - 1)] for level in range(3)] for c in codes]
        )  # item x level
        scores = table[np.arange(n_items)[None, :], levels]
        # Keep the clean study below the protocol's withdrawal review threshold.
        total = scores.sum(axis=1)
        for row in np.flatnonzero(total >= flag):
            while scores[row].sum() >= flag:
                top = int(np.argmax(scores[row]))
                scores[row, top] = 0
        total = scores.sum(axis=1)
        values: dict[str, ObjectArray] = {}
        if scale.date_field:
            values[scale.date_field] = days_to_text(self.vday[p, v])
        for k, group in enumerate(scale.groups):
            values[group[0]] = as_text(scores[:, k])
        values[scale.total] = as_text(total)
        self.add(scale.form, p, events[v], values)
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
        names = self.design.n
        # ALT-like and AST-like transaminases, ALP and bilirubin (the protocol's Hy's-law tests).
        tests = names.liver_tests
        alt_t, ast_t, alp_t, bili_t = (tests * 4)[:4] if len(tests) < 4 else tests[:4]
        uln = {"alt": alt_t[1], "ast": ast_t[1], "alp": alp_t[1], "bili": bili_t[1]}
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
            liver_fail = (
                self.exclusion[who] == names.exclusion_liver
                if names.exclusion_liver
                else np.zeros(m, dtype=bool)
            )
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
        values: dict[str, ObjectArray] = {names.liver_date: days_to_text(day)}
        for (name, _, decimals), drawn in zip(tests, (alt, ast, alp, bili), strict=False):
            values[name] = (
                _fmt_number(np.round(drawn, decimals), decimals)
                if decimals
                else as_text(np.rint(drawn).astype(np.int64))
            )
        self.add(names.liver_form, who, events, values)

    def add_vitals(self, who: IntArray, events: ObjectArray | str) -> None:
        names = self.design.n
        if len(who) == 0 or names.vitals_form is None:
            return
        rng = self.vital_rng
        m = len(who)
        sbp = np.clip(np.rint(rng.normal(122.0, 12.0, m)), 95, 170)
        dbp = np.clip(np.rint(0.62 * sbp + rng.normal(0.0, 6.0, m)), 55, 105)
        dbp = np.minimum(dbp, sbp - 20)
        hr = np.clip(np.rint(rng.normal(74.0, 9.0, m)), 50, 110)
        weight = np.clip(self.weight[who] + rng.normal(0.0, 0.8, m), 40.0, 160.0)
        temp = np.clip(rng.normal(36.7, 0.25, m), 35.9, 37.6)
        values: dict[str, ObjectArray] = {}
        for name, drawn in zip(names.vitals, (sbp, dbp, hr, weight, temp), strict=True):
            if name is None:
                continue
            decimals = 1 if self.design.field(name).validation == "number_1dp" else 0
            values[name] = (
                _fmt_number(np.round(drawn, decimals), decimals)
                if decimals
                else as_text(drawn.astype(np.int64))
            )
        self.add(names.vitals_form, who, events, values)

    def choose_hys_law(self) -> None:
        """Pick the few adjunct-arm participants with a Hy's-law-range liver panel."""
        self.hys_law_rows: list[tuple[int, int, bool]] = []
        self.drug_stop = np.full(self.n, 10**9, dtype=np.int64)
        rng = _rng(self.seed, "hys_law")
        liver_visits = [
            j
            for j, v in enumerate(self.visits)
            if self.design.n.liver_form in self.forms_at(v.event) and 0 < j < self.n_visits - 2
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
                    "criteria": ("important",),
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
        rng = _rng(self.seed, "ae_draws")
        code_of = {t.preferred_term: t for t in design.coding}
        rand = np.flatnonzero(self.randomized & self.visit_exists[:, 0])
        exposure = np.maximum(self.end_day[rand] - self.base[rand] + 1, 1).astype(np.float64)
        # The study's coding list: terms of the table above at their rates, any other term that
        # is not of special interest (those follow from the safety data) at a low default rate.
        terms = [t for t in _AE_RATES if t in code_of]
        terms += [
            t.preferred_term
            for t in design.coding
            if t.preferred_term not in _AE_RATES and t.aesi == "0"
        ]
        rates = np.asarray([_AE_RATES.get(t, _DEFAULT_AE_RATE) for t in terms])  # term x arm
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
                    "criteria": ("death", "hospitalisation"),
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
        names = self.design.n
        roles = names.ae_criteria_roles
        n_crit = max(1, len(names.ae_criteria))
        hospital = roles.get("hospitalisation", 0)
        important = roles.get("important", n_crit - 1)
        crit = np.zeros((m, n_crit), dtype=bool)
        for i in range(m):
            given = criteria_given[i]
            if isinstance(given, tuple) and given:
                for role in given:
                    crit[i, roles.get(str(role), hospital)] = True
            elif serious[i]:
                crit[i, hospital if rng.random() < 0.7 else important] = True
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
            names.ae_term: verbatim,
            names.ae_pt: np.asarray([code_of[t].code for t in pt], dtype=object),
            names.ae_soc: np.asarray([code_of[t].soc_code for t in pt], dtype=object),
            names.ae_start: days_to_text(start_day),
            names.ae_end: days_to_text(end, missing=ongoing),
            names.ae_severity: as_text(severity),
            names.ae_serious: np.where(serious, "1", "0").astype(object),
        }
        for c, criterion_column in enumerate(names.ae_criteria):
            values[criterion_column] = np.where(crit[:, c], "1", "0").astype(object)
        aesi = np.asarray([code_of[t].aesi for t in pt], dtype=object)
        values[names.ae_related] = as_text(related)
        if names.ae_action:
            values[names.ae_action] = as_text(action)
        values[names.ae_outcome] = as_text(outcome)
        values[names.ae_aware] = minutes_to_text(aware_min, missing=~serious)
        values[names.ae_report] = minutes_to_text(report_min, missing=~serious)
        values[names.ae_aesi] = aesi
        grave = np.zeros(m, dtype=bool)
        for role in ("death", "life_threatening"):
            if role in roles:
                grave |= crit[:, roles[role]]
        values.update(
            self.expedited_reports(
                pt=pt,
                serious=serious,
                related=related,
                outcome=outcome,
                grave_criteria=grave,
                aesi=aesi,
                aware_min=aware_min.astype(np.int64),
            )
        )
        ordered = {
            column: values[column]
            for spec in self.design.fields
            if spec.form == names.ae_form
            for column in spec.export_columns
            if column in values
        }
        self.add_repeating(names.ae_form, p, ordered, instance)

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
        suicidality = str(extra.get("aesi_suicidality", ""))
        suicide_death: BoolArray = np.asarray(
            (outcome == 5) & (np.asarray(aesi, dtype=object) == suicidality), dtype=bool
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
        names = self.design.n
        every = (
            (names.regulator_report, susar, regulator_hours, (24.0, 0.8)),
            (
                names.dsmb_report,
                suicide_death,
                np.full(m, hours.get("suicide_death", 48.0)),
                (2.0, 0.8),
            ),
            (
                names.irb_report,
                susar,
                np.full(m, hours.get("unanticipated_problem", 168.0)),
                (24.0, 0.9),
            ),
        )
        clocks: tuple[tuple[str, BoolArray, FloatArray, tuple[float, float]], ...] = tuple(
            (name, due, limit, shape) for name, due, limit, shape in every if name
        )
        out: dict[str, ObjectArray] = {}
        if names.ae_expected:
            out[names.ae_expected] = np.where(serious, np.where(expected, "1", "0"), "").astype(
                object
            )
        if names.ae_unanticipated:
            out[names.ae_unanticipated] = np.where(susar, "1", "0").astype(object)
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
        rng = _rng(self.seed, "medications")
        rows: list[_ConmedRow] = []
        for q in np.flatnonzero(self.randomized & self.visit_exists[:, 0]):
            p = int(q)
            base, scr, end = int(self.base[p]), int(self.scr[p]), int(self.end_day[p])
            if self.prior_ad[p]:
                med = _ANTIDEPRESSANTS[int(rng.integers(0, len(_ANTIDEPRESSANTS)))]
                dose = float(rng.choice(med[2]))
                if rng.random() < 0.4:  # stable dose for at least 8 weeks, continued
                    rows.append(
                        _conmed_row(
                            self.design, p, med, dose, base - int(rng.integers(60, 1500)), -1
                        )
                    )
                else:  # stopped before screening
                    stop = scr - int(rng.integers(30, 180))
                    start = stop - int(rng.integers(90, 1200))
                    rows.append(_conmed_row(self.design, p, med, dose, start, stop))
            n_other = min(int(rng.poisson(0.8)), 3)
            for k in rng.choice(len(_OTHER_MEDS), size=n_other, replace=False):
                med = _OTHER_MEDS[int(k)]
                dose = float(rng.choice(med[2]))
                if rng.random() < 0.5:
                    start = scr - int(rng.integers(30, 2000))
                    rows.append(_conmed_row(self.design, p, med, dose, start, -1))
                else:
                    start = base + int(rng.integers(0, max(1, end - base + 1)))
                    stop = start + int(rng.integers(1, 31))
                    rows.append(
                        _conmed_row(self.design, p, med, dose, start, stop if stop <= end else -1)
                    )
        if not rows:
            return
        frame = pd.DataFrame(
            rows, columns=["p", "name", "cls", "dose", "unit", "freq", "ind", "start", "stop"]
        )
        frame = frame.sort_values(["p", "start", "name"], kind="stable", ignore_index=True)
        ongoing = frame["stop"].to_numpy() < 0
        names = self.design.n
        values: dict[str, ObjectArray] = {
            names.cm_name: frame["name"].to_numpy(dtype=object),
            names.cm_class: frame["cls"].to_numpy(dtype=object),
            names.cm_dose: _fmt_dose(frame["dose"].to_numpy(dtype=np.float64)),
            names.cm_unit: frame["unit"].to_numpy(dtype=object),
            names.cm_frequency: frame["freq"].to_numpy(dtype=object),
            names.cm_start: days_to_text(frame["start"].to_numpy(dtype=np.int64)),
            names.cm_stop: days_to_text(frame["stop"].to_numpy(dtype=np.int64), missing=ongoing),
            names.cm_ongoing: np.where(ongoing, "1", "0").astype(object),
        }
        if names.cm_indication:
            values[names.cm_indication] = frame["ind"].to_numpy(dtype=object)
        self.add_repeating(
            names.cm_form,
            frame["p"].to_numpy(dtype=np.int64),
            values,
            np.asarray(frame.groupby("p").cumcount().to_numpy(dtype=np.int64) + 1, dtype=np.int64),
        )

    def cbt_sessions(self) -> None:
        """Weekly CBT sessions, as many as planned (attendance kept at or above 80 %)."""
        names = self.design.n
        rng = _rng(self.seed, "cbt")
        who = np.flatnonzero(self.randomized & self.visit_exists[:, 0])
        n_sessions = int(self.design.extra.get("sessions_planned", 12))
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
        values: dict[str, ObjectArray] = {names.session_date: days_to_text(day[rp, rk])}
        if names.session_number:
            values[names.session_number] = as_text(session[rk])
        values[names.session_attended] = np.where(att, "1", "0").astype(object)
        if names.session_minutes:
            values[names.session_minutes] = np.where(att, as_text(minutes), "").astype(object)
        self.add_repeating(names.sessions_form, who[rp], values, session[rk].astype(np.int64))

    def dosing(self) -> None:
        """Weekly adjunct dosing in the adjunct arms: titration, maintenance, taper."""
        names = self.design.n
        if names.doses_form is None or names.dose_date is None or names.dose_taken is None:
            return
        rng = _rng(self.seed, "doses")
        who = np.flatnonzero(self.randomized & self.adjunct & self.visit_exists[:, 0])
        n_weeks = self.design.treatment_weeks
        weeks = np.arange(n_weeks)
        taper_weeks = tuple(self.design.extra.get("taper_weeks", ()))
        n_taper = len(taper_weeks)
        day = self.base[who][:, None] + 7 * weeks[None, :]
        maintenance = rng.choice(np.array([75.0, 100.0]), size=len(who))
        dose = np.empty((len(who), n_weeks))
        dose[:, :] = maintenance[:, None]
        titration = min(2, max(0, n_weeks - n_taper - 1))
        for k, mg in enumerate((25.0, 50.0)[:titration]):
            dose[:, k] = mg
        taper_doses = (50.0, 25.0, 10.0)[-n_taper:] if n_taper else ()
        for k, mg in enumerate(taper_doses):
            dose[:, n_weeks - n_taper + k] = mg
        phase = np.where(weeks < titration, 1, np.where(weeks < n_weeks - n_taper, 2, 3))
        limit = np.minimum(self.end_day[who], self.drug_stop[who])
        exists = day <= limit[:, None]
        rp, rk = np.nonzero(exists)
        taken = rng.random(len(rp)) >= 0.03
        values: dict[str, ObjectArray] = {names.dose_date: days_to_text(day[rp, rk])}
        if names.dose_amount:
            values[names.dose_amount] = _fmt_dose(dose[rp, rk])
        if names.dose_phase:
            codes = np.asarray(self.design.field(names.dose_phase).codes, dtype=object)
            values[names.dose_phase] = codes[np.minimum(phase[rk], len(codes)) - 1]
        values[names.dose_taken] = np.where(taken, "1", "0").astype(object)
        self.add_repeating(names.doses_form, who[rp], values, (rk + 1).astype(np.int64))

    def deviations(self) -> None:
        """Site-recorded protocol deviations (missed visits and a few others)."""
        names = self.design.n
        categories: tuple[tuple[str, str, bool], ...] = tuple(
            self.design.extra.get("deviation_categories", ())
        )

        def category(*words: str) -> str:
            for code, name, _ in categories:
                if any(w in name.lower() for w in words):
                    return code
            return categories[-1][0] if categories else ""

        rng = _rng(self.seed, "protocol_deviations")
        rows: list[tuple[int, int, str, str, str]] = []
        labels = {v.event: v.label or v.event for v in self.visits}
        missed = category("missed")
        mp, mv = np.nonzero(self.missed_exists)
        for p, v in zip(mp, mv, strict=True):
            visit = self.visits[v]
            rows.append(
                (
                    int(p),
                    int(self.base[p]) + visit.target_day,
                    missed,
                    f"Missed visit: {labels[visit.event]}",
                    "0",
                )
            )
        other, safety = category("other"), category("safety")
        terms = (
            (other, "CBT session delivered by a therapist awaiting certification", "0"),
            (other, "Outcome rated by a back-up blinded rater", "0"),
            (safety, "Vital signs not repeated after an elevated reading", "0"),
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
        major_terms: tuple[tuple[str, str, str], ...] = (
            (category("randomi"), "Randomised before the baseline rating was confirmed", "1"),
            (category("consent"), "Consent obtained on a superseded consent form version", "1"),
            (category("eligib"), "Enrolled with a screening rating outside its window", "1"),
        )
        major_codes = {code for code, _, major in categories if major}
        major_terms = tuple(term for term in major_terms if term[0] in major_codes)
        who = np.flatnonzero(
            self.randomized & self.visit_exists[:, 0] & (major_rng.random(self.n) < 0.04)
        )
        for p in who if major_terms else ():
            span = int(self.end_day[p] - self.base[p])
            cat, term, major = major_terms[int(major_rng.integers(0, len(major_terms)))]
            rows.append(
                (int(p), int(self.base[p]) + int(major_rng.integers(0, span + 1)), cat, term, major)
            )
        if not rows:
            return
        frame = pd.DataFrame(rows, columns=["p", "day", "cat", "term", "major"])
        frame = frame.sort_values(["p", "day", "term"], kind="stable", ignore_index=True)
        values: dict[str, ObjectArray] = {
            names.deviation_date: days_to_text(frame["day"].to_numpy(dtype=np.int64)),
            names.deviation_category: frame["cat"].to_numpy(dtype=object),
            names.deviation_term: frame["term"].to_numpy(dtype=object),
            names.deviation_major: frame["major"].to_numpy(dtype=object),
        }
        ordered = {
            spec.name: values[spec.name]
            for spec in self.design.fields
            if spec.form == names.deviation_form and spec.name in values
        }
        self.add_repeating(
            names.deviation_form,
            frame["p"].to_numpy(dtype=np.int64),
            ordered,
            np.asarray(frame.groupby("p").cumcount().to_numpy(dtype=np.int64) + 1, dtype=np.int64),
        )

    def disposition(self) -> None:
        """End-of-study disposition for everyone whose disposition date is by the data cut."""
        names = self.design.n
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
        ds_codes: dict[int, str] = dict(self.design.extra.get("ds_codes", {}))
        dead = status == 5
        values: dict[str, ObjectArray] = {
            names.disposition_status: np.asarray(
                [ds_codes.get(int(s), str(s)) for s in status], dtype=object
            ),
            names.disposition_date: days_to_text(self.ds_day[who]),
        }
        if names.disposition_reason:
            values[names.disposition_reason] = np.asarray(
                [reasons[int(s)] for s in status], dtype=object
            )
        values[names.death_date] = days_to_text(self.death_day[who], missing=~dead)
        if names.death_cause:
            values[names.death_cause] = np.where(dead, _DEATH_CAUSE, "").astype(object)
        ordered = {
            spec.name: values[spec.name]
            for spec in self.design.fields
            if spec.form == names.disposition_form and spec.name in values
        }
        self.add(names.disposition_form, who, self.design.disposition_event, ordered)

    def randomization_frame(self) -> pd.DataFrame:
        who = np.flatnonzero(self.visit_exists[:, 0])
        who = who[np.argsort(self.record_id[who].astype(str), kind="stable")]
        columns = randomization_columns(self.design)
        return pd.DataFrame(
            dict(
                zip(
                    columns,
                    (self.record_id[who], self.rand_number[who], self.arm[who], self.stratum[who]),
                    strict=True,
                )
            ),
            columns=columns,
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
