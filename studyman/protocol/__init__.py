"""The study as typed, frozen data: the protocol and the REDCap project it maps onto."""

from __future__ import annotations

from studyman.protocol.conformance import check_conformance
from studyman.protocol.dictionary_check import check_dictionary
from studyman.protocol.loader import load_protocol, parse_protocol, protocol_sha256
from studyman.protocol.models import Protocol
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
    "Protocol",
    "RedcapProject",
    "check_conformance",
    "check_dictionary",
    "load_protocol",
    "load_redcap_project",
    "parse_protocol",
    "protocol_sha256",
    "read_data_dictionary",
]
