"""The package's public surface is deliberate: exported names are sorted and importable."""

from __future__ import annotations

import studyman
from studyman import errors


def test_package_exports_are_sorted_and_importable() -> None:
    assert studyman.__all__ == sorted(studyman.__all__)
    for name in studyman.__all__:
        assert hasattr(studyman, name), name


def test_every_error_derives_from_the_one_base() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), studyman.StudymanError), name


def test_protocol_error_names_file_and_key() -> None:
    error = errors.ProtocolError("expected a date", file="protocol.yaml", key="sites[0].start")
    assert str(error) == "protocol.yaml: sites[0].start: expected a date"
