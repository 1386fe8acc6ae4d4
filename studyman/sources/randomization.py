"""The unblinded randomisation list: one reader for every layer that needs the arms.

The list is a CSV or Parquet file with one row per randomised participant: a record-ID column
(the protocol's record-ID field, or one of
:data:`~studyman.protocol.models.RANDOMIZATION_LIST_RECORD_HEADERS`: the reference export's name
and ``USUBJID`` / ``SUBJID`` of an ADaM-style list) and an arm column (the protocol's arm field as
exported from REDCap, holding the raw codes or the arm names, or one of
:data:`~studyman.protocol.models.RANDOMIZATION_LIST_ARM_HEADERS`). Other columns are kept.

:func:`read_randomization_list` checks the shape only; what an arm value means (a REDCap code or
a name, and whether it is one of the protocol's arms) is decided by the caller, so codes and
names are returned exactly as written in the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from studyman.errors import SourceError
from studyman.protocol.models import (
    RANDOMIZATION_LIST_ARM_HEADERS,
    RANDOMIZATION_LIST_RECORD_HEADERS,
)
from studyman.protocol.text_files import (
    CsvTableError,
    TextEncodingError,
    decode_utf8,
    parse_csv_table,
)

if TYPE_CHECKING:
    from studyman.protocol import Protocol

__all__ = [
    "ARM_COLUMNS",
    "RECORD_ID_COLUMNS",
    "read_randomization_list",
]

#: Accepted names of the record-ID column besides the protocol's record-ID field, in order of
#: preference; the chosen one is returned under the first of these names.
RECORD_ID_COLUMNS: tuple[str, ...] = RANDOMIZATION_LIST_RECORD_HEADERS
#: Accepted names of the arm column besides the protocol's arm field, in order of preference;
#: the chosen one is returned under the first of these names (its name in the file is kept in
#: ``frame.attrs["arm_column"]``).
ARM_COLUMNS: tuple[str, ...] = RANDOMIZATION_LIST_ARM_HEADERS

_SHOWN = 20


def read_randomization_list(path: Path, protocol: Protocol | None = None) -> pd.DataFrame:
    """Read a randomisation list (CSV or Parquet) as text, one row per participant.

    Parameters
    ----------
    path
        The list: ``.parquet`` is read as Parquet, anything else as CSV (UTF-8, a byte-order
        mark allowed).
    protocol
        The study: its record-ID field and arm field are accepted as headers first (without
        it only :data:`RECORD_ID_COLUMNS` and :data:`ARM_COLUMNS`).

    Returns
    -------
    pandas.DataFrame
        Columns ``RECORD_ID_COLUMNS[0]`` (record ID) and ``ARM_COLUMNS[0]`` (arm) first, then the
        file's other columns, every value
        a string with surrounding blanks stripped (``""`` for a blank cell; an integral number in
        a Parquet file as ``"1"``, not ``"1.0"``). Arm values are kept as given (REDCap codes or
        arm names). ``attrs["arm_column"]`` and ``attrs["record_id_column"]`` name the columns
        as they were in the file.

    Raises
    ------
    SourceError
        The file is missing or unreadable, it has no record-ID or no arm column (the message
        names the file, the accepted columns and the columns found), or a participant is listed
        more than once.

    Notes
    -----
    Rows with a blank record ID are dropped: they are unused slots of a pre-generated allocation
    sequence, not participants. A participant with a blank arm is kept (with ``""``); whether
    that is acceptable is the caller's decision.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: randomisation list not found")
    if path.suffix.lower() == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as error:
            detail = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise SourceError(f"{path}: not a readable randomisation list ({detail})") from None
    else:
        frame = _read_csv(path)
    frame.columns = pd.Index([str(column).strip() for column in frame.columns])
    repeated = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if repeated:
        raise SourceError(
            f"{path}: column(s) {', '.join(repeated)} appear more than once; a randomisation "
            "list has one record-ID and one arm column"
        )
    records, arms = RECORD_ID_COLUMNS, ARM_COLUMNS
    if protocol is not None:
        records = tuple(dict.fromkeys((protocol.study.record_id_field, *records)))
        arms = tuple(dict.fromkeys((protocol.arms.field, *arms)))
    record_column = next((c for c in records if c in frame.columns), None)
    arm_column = next((c for c in arms if c in frame.columns), None)
    if record_column is None or arm_column is None:
        missing = (
            f"no record-ID column ({' or '.join(records)})"
            if record_column is None
            else f"no arm column ({' or '.join(arms)})"
        )
        raise SourceError(
            f"{path}: {missing}; a randomisation list needs a record-ID column "
            f"({' or '.join(records)}) and an arm column ({' or '.join(arms)}); "
            f"found: {', '.join(map(str, frame.columns))}"
        )
    record_name, arm_name = RECORD_ID_COLUMNS[0], ARM_COLUMNS[0]
    others = [
        c
        for c in frame.columns
        if c not in (record_column, arm_column) and c not in (record_name, arm_name)
    ]
    text = pd.DataFrame(
        {
            record_name: _text(frame[record_column]),
            arm_name: _text(frame[arm_column]),
            **{column: _text(frame[column]) for column in others},
        }
    )
    text = text[text[record_name] != ""].reset_index(drop=True)
    ids = text[record_name]
    duplicated = ids[ids.duplicated()].unique().tolist()
    if duplicated:
        shown = ", ".join(duplicated[:_SHOWN]) + (" ..." if len(duplicated) > _SHOWN else "")
        raise SourceError(
            f"{path}: {len(duplicated)} participant(s) listed twice in column {record_column}: "
            f"{shown}; a randomisation list has one row per participant"
        )
    text.attrs["record_id_column"] = record_column
    text.attrs["arm_column"] = arm_column
    return text


def _read_csv(path: Path) -> pd.DataFrame:
    """The CSV list as text cells; damaged, truncated or non-UTF-8 files name their line."""
    try:
        text = decode_utf8(path.read_bytes())
    except OSError as error:
        raise SourceError(
            f"{path}: cannot read the randomisation list ({error.strerror})"
        ) from None
    except TextEncodingError as problem:
        raise SourceError(f"{path}: not a readable randomisation list: {problem}") from None
    try:
        header, rows = parse_csv_table(
            text, expected=f"{RECORD_ID_COLUMNS[0]}, {ARM_COLUMNS[0]}, ..."
        )
    except CsvTableError as problem:
        raise SourceError(f"{path}: {problem}") from None
    # repeated column names are kept: the caller names them
    return pd.DataFrame(rows, columns=pd.Index([str(c) for c in header]), dtype=object)


def _text(series: pd.Series) -> list[str]:
    """*series* as stripped strings, ``""`` for a missing value, integral numbers without ``.0``."""
    if pd.api.types.is_float_dtype(series.dtype):
        values = series.dropna()
        if bool((values == values.round()).all()):
            series = series.astype("Int64")
    return [
        "" if value is None or value is pd.NA or value != value else str(value).strip()
        for value in series.to_numpy(dtype=object)
    ]
