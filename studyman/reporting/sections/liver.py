"""AESI: liver injury and Hy's law."""

from __future__ import annotations

import pandas as pd

from studyman.reporting.sections.base import (
    _EVENT,
    TOTAL,
    DsmbInputs,
    FigureData,
    ReportTable,
    Section,
    SectionSpec,
    _count_table,
    _denominators,
    _fmt_num,
    _member,
)
from studyman.reporting.sections.shared import _arm_column, _fmt_date, _safety_form, _visit_labels

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "aesi-liver"
TITLE = "AESI: liver injury and Hy's law"
TABLE_IDS: tuple[str, ...] = (
    "aesi-liver.liver-test-abnormalities-after-randomisation",
    "aesi-liver.potential-hy-s-law-cases",
)


def liver_section(inputs: DsmbInputs) -> Section:
    """AESI liver injury: peak ALT/AST/bilirubin against ULN, eDISH plot, potential Hy's law."""
    protocol = inputs.protocol
    spec = protocol.liver
    found = _safety_form(inputs, spec.form, SECTION_ID, TITLE)
    if isinstance(found, Section):
        return found
    frame, groups = found
    tests = {t.id: t for t in spec.tests}
    hy = spec.hys_law
    screening = {visit.event for visit in inputs.protocol.visits if visit.kind == "screening"}
    post = frame[~frame[_EVENT].astype(str).isin(screening).to_numpy()].copy()
    ratios = pd.DataFrame(
        {inputs.key: post[inputs.key].astype(str), "event": post[_EVENT].astype(str)}
    )
    for test_id, test in tests.items():
        ratios[test_id] = pd.to_numeric(post[test.field], errors="coerce").astype(float) / test.uln
    ratios["date"] = post[spec.date_field].map(_fmt_date)
    trans = ratios[list(hy.transaminases)].max(axis=1)
    ratios["transaminase"] = trans
    peak = ratios.groupby(inputs.key)[["transaminase", hy.bilirubin]].max()
    hys = ratios[
        (ratios["transaminase"] > hy.transaminase_multiple)
        & (ratios[hy.bilirubin] > hy.bilirubin_multiple)
        & ~(ratios[hy.alp] > hy.alp_max_multiple)
    ]
    labels = _visit_labels(protocol)
    listing = pd.DataFrame(
        {
            "Participant": hys[inputs.key],
            "Visit": hys["event"].map(lambda e: labels.get(e, e)),
            "Sample date": hys["date"],
            **{f"{t} ×ULN": hys[t].map(lambda v: _fmt_num(float(v), 2)) for t in tests},
        }
    )
    if inputs.closed:
        listing.insert(1, "Arm", _arm_column(inputs, hys[inputs.key]))
    per = ratios.groupby(inputs.key)
    alert = spec.transaminase_alert_multiple
    peaks = per[list(tests)].max()
    hy_ids = set(hys[inputs.key])
    rows = [
        (
            f"ALT > {alert:g}×ULN",
            lambda ids: int((peaks["ALT"].reindex(ids.astype(str)) > alert).sum()),
        )
        if "ALT" in peaks.columns
        else None,
        (
            f"AST > {alert:g}×ULN",
            lambda ids: int((peaks["AST"].reindex(ids.astype(str)) > alert).sum()),
        )
        if "AST" in peaks.columns
        else None,
        (
            f"Total bilirubin > {hy.bilirubin_multiple:g}×ULN",
            lambda ids: int(
                (peaks[hy.bilirubin].reindex(ids.astype(str)) > hy.bilirubin_multiple).sum()
            ),
        ),
        ("Potential Hy's law case", lambda ids: len(hy_ids & set(ids.astype(str)))),
        (
            "With a post-baseline liver test",
            lambda ids: int(_member(peaks.index, ids).sum()),
        ),
    ]
    count_rows = [r for r in rows if r is not None]
    edish = peak.reset_index().rename(
        columns={hy.bilirubin: "bilirubin", inputs.key: "participant_id"}
    )
    if inputs.closed:
        edish["group"] = _arm_column(inputs, edish["participant_id"])
    else:
        edish["group"] = TOTAL
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=(
            f"Potential Hy's law case: {' or '.join(hy.transaminases)} > "
            f"{hy.transaminase_multiple:g}×ULN and total bilirubin > {hy.bilirubin_multiple:g}×ULN "
            f"without ALP > {hy.alp_max_multiple:g}×ULN, in the same sample. ULNs: "
            + ", ".join(f"{t.id} {t.uln:g} {t.unit}" for t in spec.tests)
            + ".",
        ),
        tables=(
            ReportTable(
                "Liver test abnormalities after randomisation",
                _count_table(count_rows, groups, first="Participants with"),
                "Safety population",
                _denominators(groups),
            ),
            ReportTable("Potential Hy's law cases", listing.reset_index(drop=True)),
        ),
        figures=(
            FigureData(
                kind="edish",
                title="eDISH: peak transaminase against peak total bilirubin (×ULN)",
                data={"points": edish},
                caption=f"Log axes; reference lines at {hy.transaminase_multiple:g}×ULN "
                f"(ALT or AST) and {hy.bilirubin_multiple:g}×ULN (bilirubin). The upper right "
                "quadrant holds potential Hy's law cases.",
            ),
        ),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, liver_section)
