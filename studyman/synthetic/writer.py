"""Writing a generated trial: REDCap's raw CSV export, the randomisation list, the ground truth.

All three files reveal the allocation (the records hold the randomisation form, the planted
errors name arm-specific ones): they are written for their owner only, 0600 from their creation,
in a folder created 0700 (:mod:`studyman.private_files`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from studyman.private_files import make_private_directory, write_private_bytes
from studyman.synthetic.generator import GeneratedTrial

__all__ = ["redcap_csv_text", "write_trial"]

_NEEDS_QUOTES = re.compile(r'[, "\n\r]')


def _quote(value: str) -> str:
    if _NEEDS_QUOTES.search(value):
        return '"' + value.replace('"', '""') + '"'
    return value


def redcap_csv_text(frame: pd.DataFrame) -> str:
    """*frame* as REDCap writes CSV: one header row, ``\\n`` line ends, a trailing newline, and a
    value quoted (quotes doubled) when it holds a comma, space, quote or newline.
    """
    columns: list[list[str]] = []
    for column in frame.columns:
        values = [str(value) for value in frame[column].tolist()]
        # Quote through a map of the distinct values: most columns hold few, and most none
        # that needs quoting.
        quoted = {u: _quote(u) for u in set(values) if _NEEDS_QUOTES.search(u)}
        columns.append([quoted.get(v, v) for v in values] if quoted else values)
    lines = [",".join(_quote(str(name)) for name in frame.columns)]
    lines.extend(map(",".join, zip(*columns, strict=True)))
    return "\n".join(lines) + "\n"


def write_trial(trial: GeneratedTrial, out_dir: str | Path) -> dict[str, Path]:
    """Write ``records.csv``, ``randomization.csv`` and ``planted_errors.csv`` into *out_dir*.

    Parameters
    ----------
    trial
        The generated trial.
    out_dir
        The directory (created 0700 when absent; an existing one is left as it is). Each file
        is written atomically, 0600.

    Returns
    -------
    dict
        The path of each file written, by name (``records``, ``randomization``,
        ``planted_errors``).
    """
    directory = make_private_directory(Path(out_dir))
    paths = {
        "records": directory / "records.csv",
        "randomization": directory / "randomization.csv",
        "planted_errors": directory / "planted_errors.csv",
    }
    for name, frame in (
        ("records", trial.records),
        ("randomization", trial.randomization),
        ("planted_errors", trial.planted_errors),
    ):
        write_private_bytes(paths[name], redcap_csv_text(frame).encode("utf-8"))
    return paths
