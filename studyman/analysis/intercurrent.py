"""Intercurrent events and administrative censoring, from the study's facts.

The analyses need two facts per participant that the data, not the pattern of missing values,
decide: when study treatment was discontinued (the intercurrent event of the reference-based
imputations), and which analysis visits were not yet due at the data cut-off (administrative
censoring: the participant is ongoing, nothing is missing).

Notes
-----
* *Treatment discontinuation* (intercurrent event): a randomised participant who discontinued
  the study before the end of the treatment period (:mod:`studyman.facts`). Its date is the last
  study treatment received (the last CBT session attended or dose taken) when there was one,
  otherwise the disposition date. The first analysis visit whose target date (randomisation +
  target day) falls after that date is the first visit after the event.
* *Administrative censoring*: an analysis visit whose window had not closed by the cut-off for a
  participant still on study (the facts' ``not_yet_due``). Such a visit is not missing data: a
  composite strategy does not count it as non-response, and an imputation does not treat it as
  following an intercurrent event.
* A visit that was due and has no value, in a participant without an intercurrent event, is
  missing data (imputed under MAR by every strategy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from studyman.facts import StudyFacts

__all__ = [
    "administratively_censored",
    "first_visit_after_event",
    "treatment_discontinuation",
]


def treatment_discontinuation(facts: StudyFacts) -> pd.DataFrame:
    """One row per randomised participant: ``TRTDISFL`` (Y/N), ``TRTDISDT``, ``DCTREAS``.

    Parameters
    ----------
    facts
        The study's facts (any view: discontinuation reads the disposition form and the exposure
        logs the view holds).

    Returns
    -------
    pandas.DataFrame
        Indexed by record ID (text).
    """
    subjects = facts.subjects[facts.subjects["randomised"].to_numpy(bool)]
    stopped = subjects["discontinued_treatment"].to_numpy(bool)
    last = pd.to_datetime(subjects["last_treatment"])
    left = pd.to_datetime(subjects["disposition_date"])
    when = last.where(last.notna(), left).where(stopped)
    frame = pd.DataFrame(
        {
            "TRTDISFL": np.where(stopped, "Y", "N"),
            "TRTDISDT": when.to_numpy(),
            "DCTREAS": subjects["disposition_label"].astype("string").where(stopped).to_numpy(),
        },
        index=pd.Index([str(i) for i in subjects.index], name="SUBJID"),
    )
    return frame


def administratively_censored(facts: StudyFacts, visit_numbers: Mapping[str, int]) -> pd.DataFrame:
    """Analysis visits not yet due at the cut-off, per participant: ``SUBJID, AVISITN``.

    Parameters
    ----------
    facts
        The study's facts (their ``visits`` table).
    visit_numbers
        Event name → analysis visit number (``AVISITN``), as the ADaM data sets number visits.
    """
    visits = facts.visits
    pending = visits[visits["not_yet_due"].astype(bool)]
    numbers = pending["event"].astype(str).map(visit_numbers)
    frame = pd.DataFrame(
        {"SUBJID": pending["subject"].astype(str).to_numpy(), "AVISITN": numbers.to_numpy()}
    ).dropna(subset=["AVISITN"])
    frame["AVISITN"] = frame["AVISITN"].astype(int)
    return frame.reset_index(drop=True)


def first_visit_after_event(
    subjects: Sequence[str],
    visits: Sequence[int],
    target_days: Mapping[int, int],
    discontinuation: pd.DataFrame,
    randomised_on: Mapping[str, pd.Timestamp | None],
) -> NDArray[np.int64]:
    """Index into *visits* of each participant's first visit after the intercurrent event.

    Parameters
    ----------
    subjects
        Record IDs, in the order of the imputation data's rows.
    visits
        The analysis visits (``AVISITN``), in order.
    target_days
        Analysis visit → its target study day (randomisation = day 0).
    discontinuation
        :func:`treatment_discontinuation`.
    randomised_on
        Record ID → randomisation date.

    Returns
    -------
    numpy.ndarray
        ``len(visits)`` for a participant without an intercurrent event (or without a date).
    """
    k = len(visits)
    result = np.full(len(subjects), k, dtype=np.int64)
    dates = discontinuation["TRTDISDT"]
    for row, subject in enumerate(subjects):
        if subject not in dates.index:
            continue
        event = pd.Timestamp(dates.loc[subject]) if pd.notna(dates.loc[subject]) else None
        start = randomised_on.get(subject)
        if event is None or start is None or pd.isna(start):
            continue
        origin = pd.Timestamp(start)
        for index, visit in enumerate(visits):
            target = origin + pd.Timedelta(days=int(target_days[visit]))
            if target > event:
                result[row] = index
                break
    return result
