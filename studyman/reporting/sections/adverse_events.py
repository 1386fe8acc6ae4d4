"""Adverse events: overview and treatment-emergent events by SOC and preferred term."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from studyman.facts import rule_texts
from studyman.reporting.sections.base import (
    TOTAL,
    DsmbInputs,
    ReportTable,
    Section,
    SectionSpec,
    _choice_labels,
    _codes,
    _denominators,
    _groups,
    _header,
    _missing,
    _pct,
    _safety,
    _unavailable,
)
from studyman.reporting.sections.shared import _SEVERITY, _adverse_events

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "adverse-events"
TITLE = "Adverse events"
TABLE_IDS: tuple[str, ...] = (
    "adverse-events.overview-of-adverse-events",
    "adverse-events.adverse-events-by-system-organ-class-and-preferred-term",
    "adverse-events.participants-by-worst-severity",
    "adverse-events.participants-by-preferred-term-and-worst-severity",
    "adverse-events.adverse-events-by-relatedness",
    "adverse-events.related-adverse-events-by-preferred-term",
)


def _teae_rule_text(inputs: DsmbInputs) -> str:
    return dict(rule_texts(inputs.rules))["Treatment-emergent adverse event"]


def _with_group(inputs: DsmbInputs, frame: pd.DataFrame) -> pd.DataFrame:
    """*frame* with a ``_group`` column: the participant's arm label (closed) or the total."""
    frame = frame.copy()
    if inputs.arms is not None:
        frame["_group"] = frame[inputs.key].astype(str).map(inputs.arms).astype("string")
    else:
        frame["_group"] = TOTAL
    return frame


def _tally(
    frame: pd.DataFrame, by: str, groups: Sequence[tuple[str, pd.Index]], id_column: str
) -> dict[tuple[str, str], tuple[int, int]]:
    """(value of *by*, group) → (participants, events) for the rows of *frame*, participants
    counted by their record ID in *id_column*."""
    result: dict[tuple[str, str], tuple[int, int]] = {}
    if frame.empty:
        return result
    grouped = frame.groupby(by, sort=False)[id_column]
    for value, n in grouped.nunique().items():
        result[(str(value), TOTAL)] = (int(n), 0)
    for value, n in grouped.size().items():
        result[(str(value), TOTAL)] = (result[(str(value), TOTAL)][0], int(n))
    if len(groups) > 1:
        per_arm = frame.groupby([by, "_group"], sort=False)[id_column]
        sizes = {key: int(n) for key, n in per_arm.size().items()}
        for key, n in per_arm.nunique().items():
            pair: tuple[object, object] = tuple(key)  # type: ignore[arg-type,assignment]
            result[(str(pair[0]), str(pair[1]))] = (int(n), sizes[key])
    return result


def _order_by_total(tally: Mapping[tuple[str, str], tuple[int, int]]) -> list[str]:
    totals = {value: count[0] for (value, group), count in tally.items() if group == TOTAL}
    return sorted(totals, key=lambda value: (-totals[value], value))


def adverse_events_section(inputs: DsmbInputs) -> Section:
    """Adverse events: overview, by SOC and PT, by maximum severity, by relatedness.

    Notes
    -----
    Incidence counts a participant once per term (at the highest severity for the severity
    table); event counts count every event; the denominator is the safety population of each
    column. Adverse events counted are the treatment-emergent ones of the facts (one rule,
    declared in the analysis plan, the same in both sessions).
    """
    protocol = inputs.protocol
    form = protocol.adverse_events.form
    missing = _missing(inputs, (form,))
    if missing:
        return _unavailable(SECTION_ID, TITLE, missing)
    raw = _adverse_events(inputs)
    if raw is None:
        return _unavailable(SECTION_ID, TITLE, (form,))
    events = _with_group(inputs, raw)
    safety = _safety(inputs)
    groups = _groups(inputs, safety)
    sizes = {label: len(ids) for label, ids in groups}

    def cells(
        tally: Mapping[tuple[str, str], tuple[int, int]], value: str, events_too: bool
    ) -> list[str]:
        row: list[str] = []
        for label, _ids in groups:
            participants, count = tally.get((value, label), (0, 0))
            row.append(_pct(participants, sizes[label]))
            if events_too:
                row.append(str(count))
        return row

    # Overview. Deaths and discontinuations are the facts' (one definition each), among the
    # safety population of each column; the withdrawal of study treatment recorded on an AE is
    # not shown here (its code is masked in the open session's view).
    subjects = inputs.subjects()
    died_ids = set(subjects.index[subjects["death"].to_numpy(bool)].astype(str))
    flags = {
        "Any adverse event": pd.Series(True, index=events.index),
        "Any related adverse event": events["related"],
        "Any severe adverse event": events["severity"] == 3,
        "Any serious adverse event": events["serious"],
        "Adverse event with fatal outcome": events["fatal"],
    }
    overview_rows: list[list[str]] = []
    for label, mask in flags.items():
        tally = _tally(
            events[mask.fillna(False).to_numpy()].assign(_row=label), "_row", groups, inputs.key
        )
        overview_rows.append([label, *cells(tally, label, False)])
    left_for_ae = set(subjects.index[subjects["discontinued_due_to_ae"].to_numpy(bool)].astype(str))
    overview_rows.append(
        [
            "Discontinued the study due to an adverse event",
            *[_pct(len(left_for_ae & set(ids.astype(str))), len(ids)) for _, ids in groups],
        ]
    )
    overview_rows.append(
        [
            "Death (any cause)",
            *[_pct(len(died_ids & set(ids.astype(str))), len(ids)) for _, ids in groups],
        ]
    )
    all_tally = _tally(events.assign(_row="all"), "_row", groups, inputs.key)
    overview_rows.append(
        [
            "Number of events",
            *[str(all_tally.get(("all", label), (0, 0))[1]) for label, _ in groups],
        ]
    )
    overview = pd.DataFrame(
        overview_rows,
        columns=["Participants with", *[_header(label, n) for label, n in sizes.items()]],
    )

    # By SOC and PT.
    soc_tally = _tally(events, "SOC", groups, inputs.key)
    soc_rows: list[list[str]] = []
    for soc in _order_by_total(soc_tally):
        soc_rows.append([soc, *cells(soc_tally, soc, True)])
        in_soc = events[events["SOC"] == soc]
        pt_tally = _tally(in_soc, "PT", groups, inputs.key)
        for pt in _order_by_total(pt_tally):
            soc_rows.append([f"    {pt}", *cells(pt_tally, pt, True)])
    soc_columns = ["System organ class / Preferred term"]
    for label, n in sizes.items():
        soc_columns += [f"{_header(label, n)} n (%)", "events"]

    # By worst severity (any event, and per PT).
    worst = events.groupby(inputs.key, as_index=False).agg(
        severity=("severity", "max"), _group=("_group", "first")
    )
    worst["_sev"] = worst["severity"].map(
        lambda v: _SEVERITY.get(int(v), "") if pd.notna(v) else ""
    )
    sev_tally = _tally(worst, "_sev", groups, inputs.key)
    severity_table = pd.DataFrame(
        [[name, *cells(sev_tally, name, False)] for name in _SEVERITY.values()],
        columns=[
            "Worst severity (any adverse event)",
            *[_header(label, n) for label, n in sizes.items()],
        ],
    )
    pt_worst = events.groupby([inputs.key, "PT"], as_index=False).agg(
        severity=("severity", "max"), _group=("_group", "first")
    )
    pt_worst["_sev"] = pt_worst["severity"].map(
        lambda v: _SEVERITY.get(int(v), "") if pd.notna(v) else ""
    )
    # astype: with no events, map keeps the numeric dtype and the text join below would fail
    pt_worst["_cell"] = pt_worst["PT"].astype(str) + "\x1f" + pt_worst["_sev"].astype(str)
    cell_tally = _tally(pt_worst, "_cell", groups, inputs.key)
    pt_sev_rows: list[list[str]] = []
    for pt in _order_by_total(_tally(pt_worst, "PT", groups, inputs.key)):
        row = [pt]
        for label, _ids in groups:
            row.append(
                " / ".join(
                    str(cell_tally.get((f"{pt}\x1f{name}", label), (0, 0))[0])
                    for name in _SEVERITY.values()
                )
            )
        pt_sev_rows.append(row)
    pt_sev_columns = [
        "Preferred term",
        *[f"{_header(label, n)} mild / moderate / severe" for label, n in sizes.items()],
    ]

    # By relatedness (the labels of the session's view: masked codes merged when open).
    related_labels = _choice_labels(inputs, protocol.adverse_events.related_field) or {
        "1": "Not related",
        "2": "Unlikely",
        "3": "Possible",
        "4": "Probable",
        "5": "Definite",
    }
    events["_rel"] = _codes(events[protocol.adverse_events.related_field]).map(
        lambda c: related_labels.get(str(c), "Not recorded")
    )
    rel_tally = _tally(events, "_rel", groups, inputs.key)
    rel_rows = []
    for code, name in [*related_labels.items(), ("", "Not recorded")]:
        if code == "" and not any(key[0] == name for key in rel_tally):
            continue
        kind = (
            "related"
            if code and int(code) in protocol.adverse_events.related_codes
            else ("not related" if code else "missing")
        )
        rel_rows.append([f"{name} ({kind})", *cells(rel_tally, name, False)])
    related_table = pd.DataFrame(
        rel_rows,
        columns=[
            "Relatedness (participants with at least one)",
            *[_header(label, n) for label, n in sizes.items()],
        ],
    )
    related_events = events[events["related"].to_numpy()]
    rel_pt_tally = _tally(related_events, "PT", groups, inputs.key)
    rel_pt_rows = [[pt, *cells(rel_pt_tally, pt, True)] for pt in _order_by_total(rel_pt_tally)]
    rel_pt_columns = ["Preferred term"]
    for label, n in sizes.items():
        rel_pt_columns += [f"{_header(label, n)} n (%)", "events"]
    denominators = _denominators(groups)
    population = "Safety population"
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=(
            "Treatment-emergent adverse events (see 'Definitions': "
            + _teae_rule_text(inputs)
            + "), coded with the study coding list. Incidence counts a participant once per "
            "term; event counts count every event.",
        ),
        tables=(
            ReportTable("Overview of adverse events", overview, population, denominators),
            ReportTable(
                "Adverse events by system organ class and preferred term",
                pd.DataFrame(soc_rows, columns=soc_columns),
                population,
                denominators,
            ),
            ReportTable("Participants by worst severity", severity_table, population, denominators),
            ReportTable(
                "Participants by preferred term and worst severity",
                pd.DataFrame(pt_sev_rows, columns=pt_sev_columns),
                population,
                denominators,
                note="Each participant counted once per term, at the highest severity.",
            ),
            ReportTable("Adverse events by relatedness", related_table, population, denominators),
            ReportTable(
                "Related adverse events by preferred term",
                pd.DataFrame(rel_pt_rows, columns=rel_pt_columns),
                population,
                denominators,
                note="Related: possible, probable or definite.",
            ),
        ),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, adverse_events_section)
