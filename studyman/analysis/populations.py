"""Analysis populations evaluated on the data, as ADSL flags (ITTFL, MITTFL, PPROTFL, SAFFL)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from studyman.analysis.sap import Criterion, Population

__all__ = ["flag_populations", "population_members"]


def _meets(
    criterion: Criterion, adsl: pd.DataFrame, adqs: pd.DataFrame, deviations: pd.DataFrame
) -> pd.Series:
    subjects = adsl["SUBJID"]
    if criterion.kind == "randomized":
        return adsl["RANDFL"] == "Y"
    if criterion.kind == "treated":
        return adsl["TRTSDT"].notna()
    if criterion.kind == "post_baseline":
        rows = adqs[
            (adqs["PARAMCD"] == criterion.parameter) & (adqs["AVISITN"] > 0) & adqs["AVAL"].notna()
        ]
        return subjects.isin(set(rows["SUBJID"].astype(str)))
    # no_major_deviation
    if deviations.empty or "dv_major" not in deviations.columns:
        return pd.Series(True, index=adsl.index)
    major = pd.to_numeric(deviations["dv_major"], errors="coerce").fillna(0) == 1
    return ~subjects.isin(set(deviations.loc[major, "record_id"].astype(str)))


def flag_populations(
    adsl: pd.DataFrame,
    adqs: pd.DataFrame,
    deviations: pd.DataFrame,
    populations: Mapping[str, Population],
) -> pd.DataFrame:
    """Return *adsl* with one ``Y``/``N`` flag column per population of the plan.

    Notes
    -----
    Each population is the intersection of its criteria (see
    :class:`~studyman.analysis.sap.Criterion`); a participant lacking the data a criterion needs
    does not meet it.
    """
    flagged = adsl.copy()
    for population in populations.values():
        mask = pd.Series(True, index=adsl.index)
        for criterion in population.criteria:
            mask &= _meets(criterion, adsl, adqs, deviations).fillna(False).astype(bool)
        flagged[population.flag] = np.where(mask, "Y", "N")
    return flagged


def population_members(adsl: pd.DataFrame, population: Population) -> set[str]:
    """SUBJIDs flagged ``Y`` for *population*."""
    return set(adsl.loc[adsl[population.flag] == "Y", "SUBJID"].astype(str))
