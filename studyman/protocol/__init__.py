"""The study as typed, frozen data: the protocol and the REDCap project it maps onto."""

from __future__ import annotations

from studyman.protocol.redcap_project import (
    DataDictionary,
    DictionaryField,
    RedcapProject,
    load_redcap_project,
    read_data_dictionary,
)

__all__ = [
    "DataDictionary",
    "DictionaryField",
    "RedcapProject",
    "load_redcap_project",
    "read_data_dictionary",
]
