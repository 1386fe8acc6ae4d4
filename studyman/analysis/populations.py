"""Analysis populations as ADSL flags (ITTFL, MITTFL, PPROTFL, SAFFL), read from the facts.

Who belongs to a population is a study fact (:func:`studyman.facts.derive_facts`, with the rules
the plan declares: :func:`studyman.facts.rules_from_plan`), derived once for the analysis, the
DSMB report and validation alike; this module only writes it as the plan's ADSL flags.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from studyman.analysis.sap import Population
from studyman.errors import AnalysisError
from studyman.facts import StudyFacts

__all__ = ["flag_populations", "population_members"]


def flag_populations(
    adsl: pd.DataFrame, facts: StudyFacts, populations: Mapping[str, Population]
) -> pd.DataFrame:
    """Return *adsl* with one ``Y``/``N`` flag column per population of the plan.

    Notes
    -----
    A population's members are the facts' ``population_<name>`` column (the intersection of the
    plan's criteria, :class:`~studyman.analysis.sap.Criterion`); a participant lacking the data a
    criterion needs does not meet it.

    Raises
    ------
    AnalysisError
        The facts were derived with rules that lack one of the plan's populations.
    """
    flagged = adsl.copy()
    subjects = facts.subjects.set_axis(facts.subjects.index.astype(str))
    for name, population in populations.items():
        column = f"population_{name}"
        if column not in subjects.columns:
            raise AnalysisError(
                f"the study facts have no population {name!r} (rules: {facts.rules.source}); "
                "derive them with studyman.facts.rules_from_plan(plan)"
            )
        member = adsl["SUBJID"].astype(str).map(subjects[column]).fillna(False).astype(bool)
        flagged[population.flag] = np.where(member.to_numpy(bool), "Y", "N")
    return flagged


def population_members(adsl: pd.DataFrame, population: Population) -> set[str]:
    """SUBJIDs flagged ``Y`` for *population*."""
    return set(adsl.loc[adsl[population.flag] == "Y", "SUBJID"].astype(str))
