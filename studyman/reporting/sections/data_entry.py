"""Data entry timeliness: days from a visit to its forms' first entry (from REDCap's log) and the
forms still outstanding at visits done, per site (pooled in both sessions: not arm data)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from studyman.facts import VISIT_COLUMNS
from studyman.reporting.sections.base import (
    DsmbInputs,
    ReportTable,
    Section,
    SectionSpec,
    _form_of,
    _pct,
)
from studyman.sources.redcap_log import LOG_TABLE, RECORD, blind_log

#: The section's anchor, its heading and the ids of the tables it can show
#: (:func:`studyman.reporting.dsmb.table_id`: section id and the slug of the title).
SECTION_ID = "data-entry"
TITLE = "Data entry timeliness"
TABLE_IDS: tuple[str, ...] = (
    "data-entry.days-from-visit-to-first-entry-by-site",
    "data-entry.outstanding-forms-at-visits-done-by-site",
)

ALL_SITES = "All sites"
NO_LOG = "Does not apply: no REDCap log in this snapshot."
_EVENT = "redcap_event_name"


def _visible_due(inputs: DsmbInputs) -> dict[str, tuple[str, ...]]:
    """Event → the forms due at it that every reader may see (non-repeating, not unblinded):
    the same forms in both sessions, so that both show the same numbers."""
    protocol = inputs.protocol
    hidden = set(protocol.blinding.unblinded_forms)
    repeating = {i.name for i in protocol.instruments if i.repeating}
    return {
        visit.event: tuple(f for f in visit.instruments if f not in hidden and f not in repeating)
        for visit in protocol.visits
    }


def _entered(inputs: DsmbInputs, forms: set[str]) -> set[tuple[str, str, str]]:
    """(record, event, form) of every form with a row in the snapshot (REDCap keeps a form's
    row once any of its values, or its status, was saved)."""
    found: set[tuple[str, str, str]] = set()
    for form in forms:
        frame = inputs.table(form)
        if frame is None or frame.empty or _EVENT not in frame.columns:
            continue
        pairs = frame[[inputs.key, _EVENT]].dropna().astype(str).drop_duplicates()
        records = pairs[inputs.key].astype(object).tolist()
        events = pairs[_EVENT].astype(object).tolist()
        found.update((r, e, form) for r, e in zip(records, events, strict=True))
    return found


def _visit_dates(inputs: DsmbInputs) -> pd.Series:
    """The date of each visit (record, event) from the visit's date field, as cut."""
    parts = []
    for visit in inputs.protocol.visits:
        if visit.date_field is None:
            continue
        frame = inputs.table(_form_of(inputs, visit.date_field))
        if frame is None or visit.date_field not in frame.columns or _EVENT not in frame.columns:
            continue
        rows = frame.loc[frame[_EVENT].astype(str) == visit.event, [inputs.key, visit.date_field]]
        dates = pd.to_datetime(rows[visit.date_field], errors="coerce")
        parts.append(
            pd.Series(
                dates.to_numpy(),
                index=pd.MultiIndex.from_arrays(
                    [rows[inputs.key].astype(str).to_numpy(), np.full(len(rows), visit.event)]
                ),
            )
        )
    if not parts:
        return pd.Series(dtype="datetime64[ns]")
    every: pd.Series = pd.concat(parts).dropna()
    kept: pd.Series = every[~every.index.duplicated()]
    return kept


def first_entries(inputs: DsmbInputs) -> pd.DataFrame | None:
    """One row per form first entered at a visit: ``record``, ``event``, ``form``, ``site``,
    ``visited`` (the visit date), ``first_entry`` and ``lag_days`` (whole days from the visit
    date to the first entry's date); None without a log.

    Notes
    -----
    Read from the blinded view of the log (:func:`studyman.sources.redcap_log.blind_log`) in
    both sessions, for the forms due at that visit that every reader may see, at the visits of
    the cut tables that carry a date (a visit after the cut-off has none). The first entry is
    the earliest log row naming the form at that record and event.
    """
    log = inputs.table(LOG_TABLE)
    if log is None:
        return None
    protocol = inputs.protocol
    hidden = set(protocol.blinding.unblinded_forms)
    masked = {
        *protocol.blinding.masked_field_names,
        *(m.field for m in protocol.blinding.masked_codes),
    }
    log = blind_log(log, hidden, masked)
    due = _visible_due(inputs)
    rows = log.loc[
        log[RECORD].notna() & log[_EVENT].notna(), [RECORD, _EVENT, "forms", "timestamp"]
    ]
    listed = rows["forms"].astype(object).astype(str).tolist()
    split = {text: text.split(",") for text in set(listed)}  # few distinct form lists
    frame = pd.DataFrame(
        {
            "record": rows[RECORD].astype(object).astype(str).tolist(),
            "event": rows[_EVENT].astype(object).astype(str).tolist(),
            "form": [split[text] for text in listed],
            "first_entry": pd.to_datetime(rows["timestamp"]).to_numpy(),
        }
    ).explode("form")
    keep = [
        form in due.get(event, ())
        for event, form in zip(frame["event"].tolist(), frame["form"].tolist(), strict=True)
    ]
    frame = frame.loc[keep]
    first = pd.DataFrame(
        frame.groupby(["record", "event", "form"], as_index=False)["first_entry"].min()
    )
    dates = _visit_dates(inputs)
    index = pd.MultiIndex.from_arrays([first["record"], first["event"]])
    first["visited"] = dates.reindex(index).to_numpy()
    first = first.dropna(subset=["visited", "first_entry"])
    first["lag_days"] = (
        first["first_entry"].dt.normalize() - first["visited"].dt.normalize()
    ).dt.days.astype(int)
    site = inputs.subjects()["site"]
    first["site"] = site.reindex(first["record"].to_numpy()).to_numpy()
    result: pd.DataFrame = first.reset_index(drop=True)
    return result


def outstanding_forms(inputs: DsmbInputs) -> pd.DataFrame:
    """One row per form due at a scheduled visit done (the facts' visit status: due, its
    window closed by the cut-off, and recorded done) that every reader may see: ``record``,
    ``event``, ``form``, ``site``, ``entered``."""
    visits = inputs.facts().visits
    done_due = visits["done"].to_numpy(bool) & visits["due"].to_numpy(bool)
    # the facts' own record column (VISIT_COLUMNS[0]), whatever the study calls its field
    done = visits.loc[done_due, [VISIT_COLUMNS[0], "event"]]
    due = _visible_due(inputs)
    rows = [
        (str(record), str(event), form)
        for record, event in zip(
            done[VISIT_COLUMNS[0]].astype(object).tolist(),
            done["event"].astype(object).tolist(),
            strict=True,
        )
        for form in due.get(str(event), ())
    ]
    frame = pd.DataFrame(rows, columns=["record", "event", "form"])
    entered = _entered(inputs, {form for _, _, form in rows})
    frame["entered"] = [row in entered for row in rows]
    site = inputs.subjects()["site"]
    frame["site"] = site.reindex(frame["record"].to_numpy()).to_numpy()
    return frame


def _days(values: pd.Series, quantile: float) -> str:
    if values.empty:
        return "–"
    return f"{float(np.percentile(values.to_numpy(dtype=float), quantile)):.1f}"


def data_entry_section(inputs: DsmbInputs) -> Section:
    """Entry lag (median, 90th percentile) and outstanding forms, per site and overall."""
    sites = [(f"{site.id} {site.name}", site.id) for site in inputs.protocol.sites]
    outstanding = outstanding_forms(inputs)
    out_rows = []
    for label, site_id in [*sites, (ALL_SITES, None)]:
        mine = outstanding if site_id is None else outstanding[outstanding["site"] == site_id]
        visits = mine[["record", "event"]].drop_duplicates()
        missing = int((~mine["entered"].to_numpy(bool)).sum())
        out_rows.append([label, str(len(visits)), str(len(mine)), _pct(missing, len(mine))])
    out_table = ReportTable(
        "Outstanding forms at visits done, by site",
        pd.DataFrame(out_rows, columns=["Site", "Visits done", "Forms due", "Forms outstanding"]),
        note="Forms due at a scheduled visit recorded done whose window closed by the cut-off "
        "(the visits done of the visit status) and not entered "
        "(no values saved) in the snapshot; forms of the unblinded team and repeating logs "
        "are not counted. Pooled over arms in both sessions.",
    )
    entries = first_entries(inputs)
    if entries is None:
        return Section(
            id=SECTION_ID,
            title=TITLE,
            paragraphs=(
                f"Days from visit to first entry — {NO_LOG} The outstanding forms are "
                "counted from the records.",
            ),
            tables=(out_table,),
        )
    lag_rows = []
    for label, site_id in [*sites, (ALL_SITES, None)]:
        mine = entries if site_id is None else entries[entries["site"] == site_id]
        lags = mine["lag_days"]
        lag_rows.append(
            [
                label,
                str(len(mine)),
                _days(lags, 50),
                _days(lags, 90),
                str(int(lags.max())) if len(lags) else "–",
                _pct(int((lags <= 7).sum()), len(mine)) if len(mine) else "–",
            ]
        )
    lag_table = ReportTable(
        "Days from visit to first entry, by site",
        pd.DataFrame(
            lag_rows,
            columns=[
                "Site",
                "Forms entered",
                "Median days",
                "90th percentile (days)",
                "Longest (days)",
                "Within 7 days",
            ],
        ),
        note="From REDCap's log: whole days from the visit date to the date of the first save "
        "of each form due at that visit; percentiles by linear interpolation (R's type 7). "
        "Pooled over arms in both sessions.",
    )
    overall = entries["lag_days"]
    return Section(
        id=SECTION_ID,
        title=TITLE,
        paragraphs=(
            f"{len(entries)} forms entered at visits up to the cut-off: median "
            f"{_days(overall, 50)} days from the visit to the first entry (90th percentile "
            f"{_days(overall, 90)} days).",
        ),
        tables=(lag_table, out_table),
    )


SPEC = SectionSpec(SECTION_ID, TITLE, TABLE_IDS, data_entry_section)
