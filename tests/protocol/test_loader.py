"""load_protocol: the reference study loads; every malformed protocol is one clear error."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydantic
import pytest

from studyman.errors import ProtocolError
from studyman.protocol import load_protocol, protocol_sha256


def test_reference_study_loads_with_its_redcap_project(reference_study: Path) -> None:
    protocol = load_protocol(reference_study / "protocol.yaml")
    assert protocol.study.id == "CBT-ADJ"
    assert [arm.code for arm in protocol.arms.items] == [1, 2]
    assert [arm.name for arm in protocol.arms.items] == ["CBT + adjunct", "CBT alone"]
    assert sum(site.enrolment_target for site in protocol.sites) == protocol.enrolment.target == 300
    assert [site.dag for site in protocol.sites] == ["s01", "s02", "s03", "s04"]
    assert protocol.event_names == (
        "screening_arm_1",
        "baseline_arm_1",
        "week_1_arm_1",
        "week_2_arm_1",
        "week_4_arm_1",
        "week_6_arm_1",
        "week_8_arm_1",
        "week_12_arm_1",
        "week_16_arm_1",
        "logs_arm_1",
        "end_of_study_arm_1",
    )
    screening = protocol.visit("screening_arm_1")
    assert screening.window is not None
    assert (screening.window.start, screening.window.end) == (-28, -1)
    assert protocol.visit("week_12_arm_1").target_day == 84
    assert protocol.blinding.unblinded_forms == ("randomization", "dosing")
    assert protocol.redcap is not None
    assert protocol.redcap.dictionary.record_id_field == "record_id"
    assert len(protocol.redcap.events) == 11


def test_directory_and_file_paths_load_the_same_protocol(reference_study: Path) -> None:
    by_directory = load_protocol(reference_study)
    by_file = load_protocol(reference_study / "protocol.yaml")
    assert by_directory == by_file


def test_protocol_hash_is_the_sha256_of_the_file_bytes(reference_study: Path) -> None:
    expected = hashlib.sha256((reference_study / "protocol.yaml").read_bytes()).hexdigest()
    assert protocol_sha256(reference_study) == expected
    assert load_protocol(reference_study).source_sha256 == expected


def test_protocol_models_are_frozen(reference_study: Path) -> None:
    protocol = load_protocol(reference_study, with_redcap=False)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        protocol.study.id = "OTHER"  # type: ignore[misc]


MALFORMED = [
    pytest.param(
        "  id: CBT-ADJ\n",
        "  id: [CBT-ADJ\n",
        "line 7",
        "YAML syntax error",
        id="yaml-syntax",
    ),
    pytest.param(
        "  short_title: CBT adjunct trial\n",
        "  short_title: CBT adjunct trial\n  colour: blue\n",
        "study.colour",
        "unknown key 'colour': expected one of id, title",
        id="unknown-key",
    ),
    pytest.param(
        "    enrolment_target: 80\n",
        "    enrolment_target: eighty\n",
        "sites[1].enrolment_target",
        "expected a valid integer",
        id="wrong-type",
    ),
    pytest.param(
        "window: {start: 25, end: 31}",
        "window: {start: 31, end: 25}",
        "visits[4].window.start",
        "window start 31 follows its end 25",
        id="window-start-after-end",
    ),
    pytest.param(
        "instruments: [visit, hamd17, phq9, cssrs_since_last]",
        "instruments: [visit, hamd17, phq9, madrs]",
        "visits[2].instruments[3]",
        "unknown instrument 'madrs'",
        id="unknown-instrument",
    ),
    pytest.param(
        '  version: "1.2"\n',
        "  version: 1.2\n",
        "study.version",
        'expected a valid string, got 1.2 (quote it: "1.2")',
        id="unquoted-version",
    ),
    pytest.param(
        "  title: Cognitive",
        "  # title: Cognitive",
        "study.title",
        "missing key 'title'",
        id="missing-key",
    ),
    pytest.param(
        "  short_title: CBT adjunct trial\n",
        "  short_title: CBT adjunct trial\n  sponsor: Other\n",
        "study.sponsor",
        "key 'sponsor' repeats",
        id="duplicate-key",
    ),
    pytest.param(
        "total_range: {min: 0, max: 27}",
        "total_range: {min: 0, max: 28}",
        "scoring[1].total_range.max",
        "not the sum of the item maxima (27)",
        id="total-range-not-item-sum",
    ),
    pytest.param(
        "block_sizes: [4, 6]",
        "block_sizes: [4, 5]",
        "randomization.block_sizes[1]",
        "expected a positive multiple of the allocation ratio sum 2",
        id="block-size",
    ),
    pytest.param(
        "      pts: [21]",
        "      pts: [21, 99]",
        "adverse_events.aesi[1].pts[1]",
        "unknown PT code 99",
        id="aesi-unknown-pt",
    ),
    pytest.param(
        'record_id_pattern: "^S0[1-4]-[0-9]{4}$"',
        'record_id_pattern: "^S0(1-4-[0-9]{4}$"',
        "study.record_id_pattern",
        "not a regular expression",
        id="bad-record-id-pattern",
    ),
    pytest.param(
        "  start: 2025-02-03\n",
        "  start: 2025-02-30\n",
        "enrolment.start",
        "expected a valid date",
        id="impossible-date",
    ),
    pytest.param(
        "    label: Week 6\n",
        "    labl: Week 6\n",
        "visits[5].labl",
        "unknown key 'labl' (did you mean 'label'?)",
        id="misspelt-key",
    ),
    pytest.param(
        "window: {start: 25, end: 31}",
        "window: [25, 31]",
        "visits[4].window",
        "expected a mapping of keys, got [25, 31]",
        id="list-for-mapping",
    ),
    pytest.param(
        "  event: end_of_study_arm_1\n  status_field",
        "  event: week_16_arm_1\n  status_field",
        "disposition.event",
        "form 'disposition' is not due at 'week_16_arm_1'",
        id="form-not-due-at-its-event",
    ),
    pytest.param(
        "  short_title: CBT adjunct trial\n",
        "  short_title: CBT adjunct trial\n  sponsor: &loop [*loop]\n",
        "study.sponsor",
        "an alias refers to the node that contains it",
        id="recursive-alias",
    ),
    pytest.param(
        "    target_day: 56\n",
        "    target_day: 70\n",
        "visits[6].target_day",
        "target day 70 outside its window 51..61",
        id="target-outside-window",
    ),
]


@pytest.mark.parametrize(("old", "new", "key", "expected"), MALFORMED)
def test_malformed_protocol_is_one_error_naming_file_key_and_expectation(
    study_copy: Path, old: str, new: str, key: str, expected: str
) -> None:
    path = study_copy / "protocol.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ProtocolError) as caught:
        load_protocol(path)
    error = caught.value
    assert error.file == str(path)
    assert error.key is not None
    assert error.key.startswith(key)
    assert expected in str(error)
    assert str(error).startswith(f"{path}: {key}")


def test_error_key_carries_the_line_of_the_offending_key(study_copy: Path) -> None:
    path = study_copy / "protocol.yaml"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    number = next(i for i, line in enumerate(lines) if "enrolment_target: 80" in line)
    lines[number] = lines[number].replace("80", "eighty")
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(ProtocolError) as caught:
        load_protocol(path)
    assert caught.value.key == f"sites[1].enrolment_target (line {number + 1})"


def test_missing_redcap_project_directory_is_a_protocol_error(study_copy: Path) -> None:
    path = study_copy / "protocol.yaml"
    path.write_text(
        path.read_text(encoding="utf-8").replace("redcap_project: redcap", "redcap_project: gone"),
        encoding="utf-8",
    )
    with pytest.raises(ProtocolError, match="no REDCap project directory") as caught:
        load_protocol(path)
    assert caught.value.key == "redcap_project"


def test_loader_filled_keys_cannot_be_set_in_the_file(study_copy: Path) -> None:
    path = study_copy / "protocol.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "source_sha256: abc\n", encoding="utf-8")
    with pytest.raises(ProtocolError, match="unknown key 'source_sha256'"):
        load_protocol(path)


def test_missing_protocol_file_is_a_protocol_error(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="no protocol file"):
        load_protocol(tmp_path)


def test_protocol_that_is_not_a_mapping_is_a_protocol_error(tmp_path: Path) -> None:
    (tmp_path / "protocol.yaml").write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(ProtocolError, match="expected a mapping"):
        load_protocol(tmp_path)


def test_malformed_redcap_project_file_names_its_file_and_line(study_copy: Path) -> None:
    events = study_copy / "redcap" / "events.csv"
    events.write_text(
        events.read_text(encoding="utf-8").replace("Week 2,1,", "Week 2,one,"), encoding="utf-8"
    )
    with pytest.raises(ProtocolError) as caught:
        load_protocol(study_copy)
    assert caught.value.file == str(events)
    assert caught.value.key == "line 5, arm_num"


def test_protocol_package_exports_are_sorted_and_importable() -> None:
    import studyman.protocol as package

    assert package.__all__ == sorted(package.__all__)
    for name in package.__all__:
        assert hasattr(package, name), name
