"""Synthetic REDCap log entries: when each visit form of a generated trial was first entered.

:func:`entry_log` writes, for every form saved at a scheduled visit of the generated records,
one ``content=log`` row as REDCap keeps it (``timestamp``, ``username``, ``action``,
``details``): the record is saved some days after the visit date, by a lag drawn per site from
a different distribution (a site that enters promptly, one that lags by weeks). User names are
synthetic (``<data access group>_entry_<n>``); no real person is named. The emulator serves
the rows (:func:`emulator_entries` gives them as its log entries) and a pull stores them
(:mod:`studyman.sources.redcap_log`).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from studyman.protocol.models import Protocol
from studyman.sources.emulator.state import LogEntry
from studyman.sources.redcap_log import LOG_COLUMNS

__all__ = ["emulator_entries", "entry_log", "site_lag_medians"]

_EVENT = "redcap_event_name"
_REPEAT = "redcap_repeat_instrument"
_DAG = "redcap_data_access_group"


def site_lag_medians(protocol: Protocol) -> dict[str, float]:
    """The median entry lag (days) the generator draws for each site: 1.5 days for the first
    site, 1.5 more for each next one (so sites differ)."""
    return {site.id: 1.5 * (i + 1) for i, site in enumerate(protocol.sites)}


def _value_text(value: object) -> str:
    return str(value).replace("'", "''")


def entry_log(protocol: Protocol, records: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """One REDCap log row per visit form first saved, oldest first.

    Parameters
    ----------
    protocol
        The study (visits, their date fields and due forms; sites and their data access groups).
    records
        The generated flat records (REDCap's raw export, every value as text).
    seed
        The draw's seed.

    Returns
    -------
    pandas.DataFrame
        Columns ``timestamp`` (``YYYY-MM-DD HH:MM``), ``username``, ``action`` (``Create
        record <id> (<event>)`` for a record's first entry, ``Update record ...`` after) and
        ``details`` (up to two of the form's values and its ``<form>_complete``).

    Notes
    -----
    A form counts as saved at a visit when its ``<form>_complete`` is filled in that visit's
    row; the lag is ``floor(LogNormal(log(median), 0.8))`` days with the site's median
    (:func:`site_lag_medians`), at an hour between 08:00 and 18:59.
    """
    rng = np.random.default_rng(seed)
    key = protocol.study.record_id_field
    medians = site_lag_medians(protocol)
    site_of_dag = {site.dag: site.id for site in protocol.sites}
    form_fields: dict[str, list[str]] = {}
    if protocol.redcap is not None:
        for spec in protocol.redcap.dictionary.fields:
            if spec.field_name != key:
                form_fields.setdefault(spec.form_name, []).append(spec.field_name)
    frame = records
    if _REPEAT in frame.columns:
        frame = frame[frame[_REPEAT].fillna("").astype(str) == ""]
    entries: list[tuple[datetime, str, str, str, str]] = []
    for visit in protocol.visits:
        if visit.date_field is None or visit.date_field not in frame.columns:
            continue
        wanted = [key, _DAG, visit.date_field]
        for form in visit.instruments:
            wanted += [f"{form}_complete", *form_fields.get(form, [])]
        columns = [c for c in dict.fromkeys(wanted) if c in frame.columns]
        at_visit = frame.loc[frame[_EVENT].astype(str) == visit.event, columns]
        at_visit = at_visit.fillna("").astype(str)
        cells = [at_visit[c].tolist() for c in columns]
        for values in zip(*cells, strict=True):
            row = dict(zip(columns, values, strict=True))
            try:
                visit_date = datetime.fromisoformat(row[visit.date_field][:10])
            except ValueError:
                continue
            dag = str(row.get(_DAG, ""))
            site = site_of_dag.get(dag, str(row[key]).split("-")[0])
            median = medians.get(site, 3.0)
            for form in visit.instruments:
                complete = f"{form}_complete"
                if row.get(complete, "") == "":
                    continue
                lag = math.floor(float(rng.lognormal(math.log(median), 0.8)))
                when = visit_date + timedelta(
                    days=lag, hours=int(rng.integers(8, 19)), minutes=int(rng.integers(0, 60))
                )
                shown = [
                    f"{name} = '{_value_text(row[name])}'"
                    for name in form_fields.get(form, [])
                    if row.get(name, "") != ""
                ][:2]
                details = ", ".join([*shown, f"{complete} = '{_value_text(row[complete])}'"])
                user = f"{dag or site.lower()}_entry_{int(rng.integers(1, 3))}"
                entries.append((when, user, str(row[key]), visit.event, details))
    entries.sort(key=lambda e: (e[0], e[2], e[3]))
    seen: set[str] = set()
    out: dict[str, list[str]] = {name: [] for name in LOG_COLUMNS}
    for when, user, record, event, details in entries:
        verb = "Update" if record in seen else "Create"
        seen.add(record)
        out["timestamp"].append(when.strftime("%Y-%m-%d %H:%M"))
        out["username"].append(user)
        out["action"].append(f"{verb} record {record} ({event})")
        out["details"].append(details)
    return pd.DataFrame(out, columns=list(LOG_COLUMNS))


def emulator_entries(log: pd.DataFrame) -> list[LogEntry]:
    """The rows of :func:`entry_log` as the emulator's log entries, oldest first (prepend them
    to ``EmulatorServer.emulator.state.log`` to serve them as the project's history)."""
    result = []
    for timestamp, user, action, details in log[list(LOG_COLUMNS)].itertuples(
        index=False, name=None
    ):
        record = str(action).split(" ")[2] if str(action).count(" ") >= 2 else ""
        result.append(
            LogEntry(
                datetime.strptime(str(timestamp), "%Y-%m-%d %H:%M"),
                str(user),
                str(action),
                str(details),
                record,
                "record",
            )
        )
    return result
