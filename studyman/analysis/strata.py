"""Strata as randomised: the covariates of the randomisation's stratification, and site pooling.

Randomisation was stratified by the protocol's factors (``randomization.stratification``); the
analyses adjust for the same factors. A factor whose levels come from the site is the ADSL
covariate ``SITEID``; a factor derived from a baseline score is ``STRATSEV``.

Small sites make a site covariate unstable (few participants per level, a level with a single
arm), so the plan prespecifies a pooling rule (``site_pooling``): before any analysis, sites
with fewer than ``min_participants`` randomised participants are pooled into one level named
``pool_into``; if that pooled level itself has fewer than ``min_participants``, it is joined to
the smallest site that has enough (its level is then ``<site>+<pool_into>``). The counts are of
randomised participants, not of any analysis population, so that the rule depends on nothing
observed after randomisation and every analysis uses the same levels.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from studyman.analysis.sap import AnalysisPlan, SitePooling
from studyman.protocol.models import Protocol

__all__ = ["pool_sites", "site_levels", "stratification_covariates", "unstratified_analyses"]

#: ADSL covariate of a stratification factor, by the factor's source.
_COVARIATE_OF_SOURCE = {"site": "SITEID", "score": "STRATSEV"}


def stratification_covariates(protocol: Protocol) -> tuple[str, ...]:
    """The ADSL covariates of the protocol's stratification factors, in the protocol's order."""
    covariates: list[str] = []
    for factor in protocol.randomization.stratification:
        covariate = _COVARIATE_OF_SOURCE.get(str(factor.source))
        if covariate is not None and covariate not in covariates:
            covariates.append(covariate)
    return tuple(covariates)


def unstratified_analyses(plan: AnalysisPlan, protocol: Protocol) -> dict[str, list[str]]:
    """Analyses of the plan that adjust for strata but leave out a stratification factor.

    Returns analysis id → the covariates it omits (empty when every stratified model follows
    the randomisation).
    """
    wanted = stratification_covariates(protocol)
    missing: dict[str, list[str]] = {}
    for analysis in plan.analyses:
        strata = getattr(analysis, "strata", None)
        if strata is None:
            continue
        left_out = [c for c in wanted if c not in strata]
        if left_out:
            missing[analysis.id] = left_out
    return missing


def site_levels(randomised_sites: pd.Series, pooling: SitePooling | None) -> dict[str, str]:
    """Site → the level it has in the models, by the plan's pooling rule.

    Parameters
    ----------
    randomised_sites
        The site of every randomised participant (one entry per participant).
    pooling
        The plan's rule; None keeps every site as its own level.
    """
    values = randomised_sites.dropna().astype(str).value_counts()
    counts = {str(site): int(n) for site, n in values.items()}
    levels = {site: site for site in counts}
    if pooling is None:
        return levels
    small = sorted(site for site, n in counts.items() if n < pooling.min_participants)
    if not small:
        return levels
    pooled_n = sum(counts[site] for site in small)
    name = pooling.pool_into
    large = {site: n for site, n in counts.items() if site not in small}
    if pooled_n < pooling.min_participants and large:
        # the smallest site that has enough (ties: the first by name)
        smallest = min(large, key=lambda site: (large[site], site))
        name = f"{smallest}+{pooling.pool_into}"
        levels[smallest] = name
    for site in small:
        levels[site] = name
    return levels


def pool_sites(sites: pd.Series, levels: Mapping[str, str]) -> pd.Series:
    """*sites* mapped to their model levels (a site not randomised keeps its name)."""
    text = sites.astype("string")
    return text.map(lambda site: levels.get(str(site), site) if site is not pd.NA else site).astype(
        "string"
    )
