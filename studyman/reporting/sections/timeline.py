"""Study timeline and projected completion: milestones, accrual per site-month and the projected
last participant in at the current rate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from studyman.protocol.models import Protocol
from studyman.reporting.sections.base import (
    DsmbInputs,
    ReportTable,
    Section,
    SectionSpec,
)

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "timeline"
TITLE = "Study timeline and projected completion"
TABLE_IDS: tuple[str, ...] = (
    "timeline.study-timeline",
    "timeline.accrual-per-site-month",
)

#: Days in an average month (365.25 / 12): a site-month.
MONTH_DAYS = 30.4375

METHOD = (
    "Site-months: the months from each site's activation to the data cut-off (or its closing "
    "date, if earlier). Current rate: participants randomised per site-month over the whole "
    "study so far. Projected last participant in: the cut-off plus the participants still to "
    "randomise divided by the monthly accrual at the current rate with the sites open at the "
    "cut-off (rate × open sites), a month being 30.4375 days. Projected last visit: the projected "
    "last participant in plus the last scheduled visit's target day."
)


@dataclass(frozen=True)
class Projection:
    """Accrual at the cut-off and the projected completion.

    Attributes
    ----------
    randomised, target
        Randomised by the cut-off; the enrolment target.
    site_months
        Site-months of recruitment by the cut-off.
    rate
        Participants per site-month (NaN without site-months).
    open_sites
        Sites open for recruitment at the cut-off.
    last_in
        The projected (or, target reached, the actual) date of the last participant in; None
        when the rate is 0 or no site is open.
    reached
        True when the target had been reached by the cut-off.
    """

    randomised: int
    target: int
    site_months: float
    rate: float
    open_sites: int
    last_in: date | None
    reached: bool


def site_months(protocol: Protocol, cutoff: date) -> pd.Series:
    """Months each site recruited by *cutoff* (site ID → months; 0 before activation)."""
    values = {}
    for site in protocol.sites:
        end = min(cutoff, site.closing_date) if site.closing_date else cutoff
        values[site.id] = max((end - site.activation_date).days, 0) / MONTH_DAYS
    return pd.Series(values, dtype=float)


def project(protocol: Protocol, rand_dates: pd.Series, cutoff: date) -> Projection:
    """The projection of :data:`METHOD` from the randomisation dates of the randomised."""
    target = protocol.enrolment.target
    dates = pd.to_datetime(rand_dates).dropna().sort_values()
    randomised = len(dates)
    months = site_months(protocol, cutoff)
    total_months = float(months.sum())
    rate = randomised / total_months if total_months > 0 else float("nan")
    open_sites = sum(
        1
        for site in protocol.sites
        if site.activation_date <= cutoff
        and (site.closing_date is None or site.closing_date > cutoff)
    )
    if randomised >= target:
        return Projection(
            randomised,
            target,
            total_months,
            rate,
            open_sites,
            dates.iloc[target - 1].date(),
            True,
        )
    per_month = rate * open_sites
    last_in = None
    if not np.isnan(per_month) and per_month > 0:
        last_in = cutoff + timedelta(days=(target - randomised) / per_month * MONTH_DAYS)
    return Projection(randomised, target, total_months, rate, open_sites, last_in, False)


def _date(value: object) -> str:
    if value is None or pd.isna(value):  # type: ignore[call-overload]
        return "–"
    return pd.Timestamp(value).date().isoformat()  # type: ignore[arg-type]


def timeline_section(inputs: DsmbInputs) -> Section:
    """Milestones, accrual per site-month and the projected last participant in."""
    protocol = inputs.protocol
    subjects = inputs.facts().subjects
    randomised = subjects[subjects["randomised"].to_numpy(bool)]
    projection = project(protocol, randomised["randomisation_date"], inputs.cutoff)
    months = site_months(protocol, inputs.cutoff)
    per_site = randomised.groupby("site", observed=True).size()
    rows = []
    for site in protocol.sites:
        n = int(per_site.get(site.id, 0))
        m = float(months[site.id])
        rows.append(
            [
                f"{site.id} {site.name}",
                site.activation_date.isoformat(),
                f"{m:.1f}",
                str(n),
                f"{n / m:.2f}" if m > 0 else "–",
            ]
        )
    rows.append(
        [
            "All sites",
            protocol.enrolment.start.isoformat(),
            f"{projection.site_months:.1f}",
            str(projection.randomised),
            f"{projection.rate:.2f}" if not np.isnan(projection.rate) else "–",
        ]
    )
    accrual = pd.DataFrame(
        rows,
        columns=["Site", "Activated", "Site-months", "Randomised", "Per site-month"],
    )
    last_visit_day = max(
        (visit.target_day for visit in protocol.scheduled_visits if visit.target_day is not None),
        default=0,
    )
    if projection.reached:
        last_in_label = "Last participant in (target reached)"
    else:
        last_in_label = "Projected last participant in"
    first_in = randomised["randomisation_date"].min() if len(randomised) else None
    latest_in = randomised["randomisation_date"].max() if len(randomised) else None
    milestones: list[tuple[str, str]] = [
        ("Enrolment planned to start", protocol.enrolment.start.isoformat()),
        ("First participant randomised", _date(first_in)),
        ("Latest participant randomised", _date(latest_in)),
        ("Data cut-off", inputs.cutoff.isoformat()),
        *(
            ("DSMB meeting", meeting.isoformat())
            for meeting in sorted(protocol.reporting.dsmb_meetings)
        ),
        ("Enrolment planned to end", protocol.enrolment.end.isoformat()),
        (last_in_label, _date(projection.last_in)),
        (
            "Projected last participant's last scheduled visit",
            _date(
                projection.last_in + timedelta(days=last_visit_day)
                if projection.last_in is not None
                else None
            ),
        ),
    ]
    # in date order (ISO dates sort as text); a milestone without a date last
    milestones.sort(key=lambda milestone: (milestone[1] == "–", milestone[1]))
    timeline = pd.DataFrame(milestones, columns=["Milestone", "Date"])
    if projection.reached:
        outlook = (
            f"The enrolment target of {projection.target} was reached on "
            f"{_date(projection.last_in)}."
        )
    elif projection.last_in is None:
        outlook = (
            "No projection: no participant randomised per site-month yet, or no site open "
            "at the cut-off."
        )
    else:
        delay = (projection.last_in - protocol.enrolment.end).days
        outlook = (
            f"At the current rate of {projection.rate:.2f} participants per site-month with "
            f"{projection.open_sites} site{'' if projection.open_sites == 1 else 's'} open, the "
            f"remaining {projection.target - projection.randomised} participants would be "
            f"randomised by {projection.last_in.isoformat()}, "
            + (
                f"{delay} days after the planned end of enrolment."
                if delay > 0
                else f"{-delay} days before the planned end of enrolment."
            )
        )
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=(
            f"{projection.randomised} of {projection.target} participants randomised over "
            f"{projection.site_months:.1f} site-months.",
            outlook,
        ),
        tables=(
            ReportTable("Study timeline", timeline, note=METHOD),
            ReportTable(
                "Accrual per site-month",
                accrual,
                "Randomised",
                (("All sites", projection.randomised),),
                note="Site-months: from activation to the cut-off (or the site's closing date).",
            ),
        ),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, timeline_section)
