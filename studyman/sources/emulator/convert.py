"""Convert a REDCap ODM file into a project directory (``studyman emulator convert``)."""

from __future__ import annotations

from pathlib import Path

from studyman.sources.emulator.formats import to_csv
from studyman.sources.emulator.odm import read_odm_file
from studyman.sources.emulator.project_dir import write_project_dir
from studyman.sources.emulator.store import ExportOptions, RecordStore
from studyman.sources.snapshot import write_bytes_atomic

__all__ = ["convert_odm"]


def convert_odm(odm: Path, directory: Path) -> list[Path]:
    """Write the project directory equivalent to *odm*; return the files written.

    ``records.csv`` is the raw flat CSV export of every record, with ``redcap_data_access_group``
    when the project has data access groups (survey columns included for survey projects).
    """
    project = read_odm_file(Path(odm))
    directory = Path(directory)
    write_project_dir(project.__class__(**{**project.__dict__, "records": ()}), directory)
    store = RecordStore(project)
    options = ExportOptions(columns=tuple(store.columns), export_dags=True, survey_fields=True)
    header, rows = store.export_flat(options)
    if rows:
        write_bytes_atomic(directory / "records.csv", to_csv(header, rows).encode("utf-8"))
    return sorted(p for p in directory.iterdir() if p.is_file())
