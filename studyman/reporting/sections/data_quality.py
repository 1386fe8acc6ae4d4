"""Data quality and timeliness: missing forms, import findings, queries and their age."""

from __future__ import annotations

import numpy as np
import pandas as pd

from studyman.errors import SnapshotError
from studyman.reporting.sections.base import (
    _EVENT,
    _SCHEDULED,
    DsmbInputs,
    ReportTable,
    Section,
    SectionSpec,
    _enrolment_form,
    _missing,
    _site_of,
    _texts,
)
from studyman.reporting.sections.shared import _as_of_text, _visit_status

_AGE_BANDS = ((0, 7, "0-7 days"), (8, 30, "8-30 days"), (31, 90, "31-90 days"))

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "data-quality"
TITLE = "Data quality and timeliness"
TABLE_IDS: tuple[str, ...] = (
    "data-quality.forms-missing-at-visits-done",
    "data-quality.overdue-visits-by-site-window-closed-no-visit-form",
    "data-quality.snapshot-import-findings-by-form",
    "data-quality.open-site-queries-by-site-and-age",
)


def _query_age(inputs: DsmbInputs, queries: pd.DataFrame) -> tuple[str, pd.DataFrame | None]:
    """The open-queries paragraph and the site queries' age table, from the facts.

    Status, kind and age are the facts' (:attr:`studyman.facts.StudyFacts.queries`: ages to
    the as-of time, never negative); the site comes from the query log, row for row.
    """
    facts = inputs.facts()
    frame = facts.queries.reset_index(drop=True)
    if len(frame) != len(queries) or (
        len(frame)
        and not (frame["query_id"].to_numpy() == queries["query_id"].astype(str).to_numpy()).all()
    ):
        raise SnapshotError("the facts' queries do not follow the query log row for row")
    headline = facts.headline()
    site_open = int(headline.get("site_queries_open", 0))
    review_open = int(headline.get("review_signals_open", 0))
    frame["site"] = queries["site"].astype("string").fillna("").astype(str).to_numpy()
    site_rows = frame[frame["kind"] == "site"]
    open_rows = site_rows[site_rows["open"].astype(bool)]
    alert = inputs.protocol.reporting.query_age_days_alert
    old = int((open_rows["days_open"] > alert).sum())
    paragraph = (
        f"{site_open} site queries open (open, answered or reopened), {old} of them for more "
        f"than {alert} days; {review_open} review signals open. Ages count to "
        f"{_as_of_text(inputs)}."
    )
    if open_rows.empty and site_rows.empty:
        return paragraph, None
    # days to resolution: the log's own span from opening to closing (no as-of involved)
    closed_days = pd.to_numeric(queries["days_open"], errors="coerce").clip(lower=0)
    closed = (queries["status"].astype(str) == "closed").to_numpy() & (
        frame["kind"] == "site"
    ).to_numpy()
    resolution = pd.Series(closed_days.to_numpy()[closed], index=frame["site"].to_numpy()[closed])
    sites = sorted(set(open_rows["site"]) | set(resolution.index))
    rows = []
    for site in [*sites, None]:
        part = open_rows if site is None else open_rows[open_rows["site"] == site]
        done = resolution if site is None else resolution[resolution.index == site]
        days = part["days_open"].astype(float)
        row = {"Site": "All sites" if site is None else (site or "–")}
        for low, high, label in _AGE_BANDS:
            row[label] = str(int(((days >= low) & (days <= high)).sum()))
        row["over 90 days"] = str(int((days > 90).sum()))
        row["open"] = str(len(part))
        median = float(np.median(days.to_numpy())) if len(part) else None
        row["median days open"] = "" if median is None else f"{median:g}"
        row["median days to resolution"] = (
            f"{float(np.median(done.to_numpy(dtype=float))):g}" if len(done) else ""
        )
        rows.append(row)
    return paragraph, pd.DataFrame(rows)


def data_quality_section(inputs: DsmbInputs) -> Section:
    """Missing and overdue forms; open queries and their age by site."""
    protocol = inputs.protocol
    missing = _missing(inputs, (inputs.protocol.visit_form.form, _enrolment_form(inputs)))
    tables: list[ReportTable] = []
    paragraphs: list[str] = []
    if not missing:
        status = _visit_status(inputs)
        done = status[status["done"]]
        unblinded = set(protocol.blinding.unblinded_forms)
        rows = []
        present_keys: dict[str, set[tuple[str, str]]] = {}
        for visit in protocol.visits:
            if visit.kind not in _SCHEDULED:
                continue
            visits_done = done[done["event"] == visit.event]
            for form in visit.instruments:
                if form in unblinded:
                    continue
                table = inputs.table(form)
                if table is None:
                    rows.append((visit.label, form, len(visits_done), "form not in snapshot", ""))
                    continue
                if form not in present_keys:
                    present_keys[form] = set(
                        zip(_texts(table[inputs.key]), _texts(table[_EVENT]), strict=True)
                    )
                present = present_keys[form]
                absent = sum(
                    (rid, visit.event) not in present for rid in _texts(visits_done[inputs.key])
                )
                rows.append(
                    (
                        visit.label,
                        form,
                        len(visits_done),
                        str(absent),
                        f"{100.0 * absent / len(visits_done):.1f}%" if len(visits_done) else "–",
                    )
                )
        missing_forms = pd.DataFrame(
            rows, columns=["Visit", "Form", "Visits done", "Forms missing", "% missing"]
        )
        missing_forms = missing_forms[missing_forms["Forms missing"] != "0"]
        missing_forms["Visits done"] = missing_forms["Visits done"].astype(str)
        if missing_forms.empty:
            paragraphs.append("Every expected form is present at every visit done.")
        else:
            tables.append(
                ReportTable(
                    "Forms missing at visits done",
                    missing_forms.reset_index(drop=True),
                    note="Only forms expected at a visit recorded as done are counted.",
                )
            )
        overdue = status[status["overdue"]]
        sites = [s.id for s in protocol.sites]
        site_of = _site_of(overdue[inputs.key])
        due_site = _site_of(status.loc[status["due"], inputs.key])
        every_site = _site_of(status[inputs.key])
        tables.append(
            ReportTable(
                "Overdue visits by site (window closed, no visit form)",
                pd.DataFrame(
                    {
                        "Site": [*sites, "All sites"],
                        "Visits due": [str(int((due_site == s).sum())) for s in sites]
                        + [str(int(status["due"].sum()))],
                        "Overdue": [str(int((site_of == s).sum())) for s in sites]
                        + [str(len(overdue))],
                        "Missed (recorded)": [
                            str(int(((every_site == s) & status["missed"] & status["due"]).sum()))
                            for s in sites
                        ]
                        + [str(int((status["missed"] & status["due"]).sum()))],
                    }
                ),
            )
        )
    findings = inputs.snapshot_findings
    if findings is not None:
        if findings.empty:
            paragraphs.append("The snapshot import raised no finding (every value cast).")
        else:
            counts = (
                findings.assign(
                    instrument=findings["instrument"].astype("string").fillna("").replace("", "–"),
                    check_id=findings["check_id"].astype("string"),
                )
                .groupby(["instrument", "check_id"], sort=True)
                .size()
                .reset_index(name="findings")
            )
            # forms in the protocol's order (not by name: a study's names sort its own way)
            position = {form.name: i for i, form in enumerate(protocol.instruments)}
            order = counts["instrument"].astype(str).map(lambda f: position.get(f, len(position)))
            counts = (
                counts.assign(_order=order.to_numpy())
                .sort_values(["_order", "instrument", "check_id"], kind="stable")
                .reset_index(drop=True)
            )
            tables.append(
                ReportTable(
                    "Snapshot import findings by form",
                    pd.DataFrame(
                        {
                            "Form": counts["instrument"].astype(str),
                            "Finding": counts["check_id"].astype(str),
                            "Count": counts["findings"].astype(str),
                        }
                    ),
                    note="Values the import could not read as their field type, and similar.",
                )
            )
    queries = inputs.queries
    if queries is None:
        paragraphs.append(
            "No validation query log was supplied (--query-log): open queries are not shown."
        )
    else:
        paragraph, age = _query_age(inputs, queries)
        paragraphs.append(paragraph)
        if age is not None:
            tables.append(
                ReportTable(
                    "Open site queries by site and age",
                    age,
                    note="Open: open, answered or reopened. Age: whole days from the first "
                    f"opening to {_as_of_text(inputs)} (the report's as-of time, not the data "
                    "cut-off). Days to resolution: from opening to closing, closed queries.",
                )
            )
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=tuple(paragraphs),
        tables=tuple(tables),
        missing=missing,
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, data_quality_section)
