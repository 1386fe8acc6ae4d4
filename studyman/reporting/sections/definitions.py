"""Definitions: the populations and the treatment-emergent rule, in the words of the facts layer."""

from __future__ import annotations

import pandas as pd

from studyman.facts import DEFAULT_RULES, rule_texts
from studyman.reporting.sections.base import DsmbInputs, ReportTable, Section, SectionSpec
from studyman.reporting.sections.shared import _as_of_text

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "definitions"
TITLE = "Definitions"
TABLE_IDS: tuple[str, ...] = ("definitions.definitions",)


def definitions_section(inputs: DsmbInputs) -> Section:
    """The definitions every study fact follows, in the words of :func:`rule_texts` (the
    analysis report states them in the same words)."""
    rules = inputs.rules
    if rules.source == DEFAULT_RULES.source:
        origin = (
            "No analysis plan was supplied (--sap): these are studyman's default definitions "
            "(those of the reference analysis plan)."
        )
    else:
        origin = f"As the analysis plan declares them ({rules.source})."
    frame = pd.DataFrame(rule_texts(rules), columns=["Term", "Definition"])
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=(
            origin,
            "Screened: every participant with a record. Randomised: the randomised field is yes "
            "and the randomisation date is recorded, on or before the data cut-off. Query age: "
            "days from the query's first opening to the report's as-of time "
            f"({_as_of_text(inputs)}), never to the data cut-off, and never negative.",
        ),
        tables=(ReportTable("Definitions", frame),),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, definitions_section)
