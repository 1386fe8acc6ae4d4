"""Protocol deviations by category and site."""

from __future__ import annotations

import pandas as pd

from studyman.reporting.sections.base import (
    TOTAL,
    DsmbInputs,
    ReportTable,
    Section,
    SectionSpec,
    _denominators,
    _groups,
    _header,
    _member,
    _missing,
    _pct,
    _randomised,
    _site_of,
    _unavailable,
)

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "protocol-deviations"
TITLE = "Protocol deviations"
TABLE_IDS: tuple[str, ...] = (
    "protocol-deviations.protocol-deviations-by-category",
    "protocol-deviations.protocol-deviations-by-site",
)


def deviations_section(inputs: DsmbInputs) -> Section:
    """Protocol deviations by category (major / minor) and site."""
    protocol = inputs.protocol
    form = protocol.deviations.form
    missing = _missing(inputs, (form,))
    if missing:
        return _unavailable(SECTION_ID, TITLE, missing)
    deviations = inputs.facts().deviations.reset_index(drop=True)
    randomised = _randomised(inputs)
    groups = _groups(inputs, randomised)
    record = deviations["subject"].astype(str)
    category = deviations["category"].astype("string")
    major = deviations["major"].astype(bool)
    names = {str(c.code): c.name for c in protocol.deviations.categories}
    majors = {str(c.code) for c in protocol.deviations.categories if c.major}
    rows: list[list[str]] = []
    columns = ["Category"]
    for label, ids in groups:
        columns += [f"{_header(label, len(ids))} participants", "events (major)"]
    known = category.isin(list(names)).fillna(False)
    categories = [*names.items()]
    if (~known).any():
        categories.append(("\x00", "Not recorded or unknown"))
    for code, name in [*categories, (None, "All categories")]:
        if code is None:
            mask = pd.Series(True, index=deviations.index)
        elif code == "\x00":
            mask = ~known
        else:
            mask = (category == code).fillna(False)
        if code is not None and not mask.any():
            continue
        row = [name + (" (major by protocol)" if code in majors else "")]
        for label, ids in groups:
            # the total counts every recorded deviation (the facts' count), an arm its members'
            chosen = mask if label == TOTAL else mask & _member(record, ids)
            sub = deviations[chosen.to_numpy(bool)]
            participants = sub["subject"].nunique()
            row += [_pct(participants, len(ids)), f"{len(sub)} ({int(major[sub.index].sum())})"]
        rows.append(row)
    outside = int((~_member(record, randomised)).sum())
    sites = [s.id for s in protocol.sites]
    site_of = record.map(inputs.subjects()["site"].astype(str).to_dict()).fillna(_site_of(record))
    by_site = pd.DataFrame(
        {
            "Site": [*sites, "All sites"],
            "Deviations": [str(int((site_of == s).sum())) for s in sites] + [str(len(record))],
            "Major": [str(int(((site_of == s) & major).sum())) for s in sites]
            + [str(int(major.sum()))],
            "Participants": [str(record[(site_of == s).to_numpy()].nunique()) for s in sites]
            + [str(record.nunique())],
        }
    )
    note = (
        "Major: the category is declared major in the protocol, or the site recorded the "
        "deviation as major."
    )
    if outside:
        note += (
            f" {outside} deviation(s) of participants not randomised are counted in the total only."
        )
    return Section(
        id=SECTION_ID,
        title=TITLE,
        tables=(
            ReportTable(
                "Protocol deviations by category",
                pd.DataFrame(rows, columns=columns),
                population="Randomised",
                denominators=_denominators(groups),
                note=note,
            ),
            ReportTable("Protocol deviations by site", by_site),
        ),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, deviations_section)
