"""The blinding gate (studyman.sources.blinding) and the policy it enforces, under attack."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from studyman.errors import ProtocolError
from studyman.protocol import Protocol, load_protocol
from studyman.protocol.conformance import check_conformance
from studyman.protocol.redcap_project import load_redcap_project
from studyman.protocol.reference import default_protocol_path
from studyman.sources.blinding import (
    allocation_leaks,
    blind_dictionary,
    blind_findings,
    blind_flat_records,
    blind_tables,
)
from studyman.synthetic import generate_trial


@pytest.fixture(scope="module")
def protocol() -> Protocol:
    return load_protocol(default_protocol_path())


@pytest.fixture(scope="module")
def records(protocol: Protocol) -> pd.DataFrame:
    return generate_trial(protocol, n_participants=120, seed=7).records


def _dictionary(protocol: Protocol):  # type: ignore[no-untyped-def]
    assert protocol.redcap is not None
    return protocol.redcap.dictionary


def test_raw_records_leak_and_their_blinded_view_does_not(
    protocol: Protocol, records: pd.DataFrame
) -> None:
    dictionary = _dictionary(protocol)
    before = allocation_leaks({"records": records}, protocol, dictionary)
    assert any("rand_arm" in leak for leak in before)
    assert any("ae_action holds masked code" in leak for leak in before)
    blinded = blind_flat_records(records, protocol, dictionary)
    assert allocation_leaks({"records": blinded}, protocol, dictionary) == []
    assert "dosing" not in set(blinded["redcap_repeat_instrument"])
    hidden = {"rand_number", "rand_arm", "rand_stratum", "dose_date", "dose_mg", "dose_taken"}
    assert hidden <= set(records.columns)
    assert not hidden & set(blinded.columns)


def test_masking_merges_only_the_declared_codes_and_keeps_every_row(
    protocol: Protocol, records: pd.DataFrame
) -> None:
    blinded = blind_flat_records(records, protocol, _dictionary(protocol))
    ae = records["redcap_repeat_instrument"] == "adverse_events"
    kept = blinded["redcap_repeat_instrument"] == "adverse_events"
    assert int(ae.sum()) == int(kept.sum())
    raw = records.loc[ae, "ae_action"].value_counts()
    masked = blinded.loc[kept, "ae_action"].value_counts()
    assert masked["1"] == raw.reindex(["1", "2", "3", "4"]).fillna(0).sum()
    assert masked.get("5", 0) == raw.get("5", 0)
    # the severity of an AE is not part of the policy and is untouched
    assert list(blinded.loc[kept, "ae_severity"]) == list(records.loc[ae, "ae_severity"])


def test_blinding_is_idempotent(protocol: Protocol, records: pd.DataFrame) -> None:
    dictionary = _dictionary(protocol)
    once = blind_flat_records(records, protocol, dictionary)
    twice = blind_flat_records(once, protocol, dictionary)
    pd.testing.assert_frame_equal(once, twice)


def test_typed_tables_lose_hidden_forms_masked_columns_and_codes(protocol: Protocol) -> None:
    tables = {
        "randomization": pd.DataFrame({"record_id": ["S01-0001"], "rand_arm": ["1"]}),
        "adverse_events": pd.DataFrame(
            {
                "record_id": ["S01-0001", "S01-0002", "S01-0003"],
                "ae_action": pd.array(["4", "5", None], dtype="string"),
                "ae_action__raw": pd.array([None, None, "3"], dtype="string"),
                "ae_related": pd.array(["5", "2", "4"], dtype="string"),
            }
        ),
    }
    blinded = blind_tables(tables, protocol)
    assert set(blinded) == {"adverse_events"}
    ae = blinded["adverse_events"]
    assert list(ae["ae_action"].fillna("")) == ["1", "5", ""]
    assert list(ae["ae_action__raw"].fillna("")) == ["", "", "1"]
    assert list(ae["ae_related"]) == ["3", "2", "3"]
    assert ae["ae_action"].dtype == tables["adverse_events"]["ae_action"].dtype


def test_a_masked_field_goes_whole_with_its_derived_columns(protocol: Protocol) -> None:
    policy = protocol.blinding.model_copy(
        update={
            "masked_fields": (
                type(protocol.blinding.arm_neutral[0])(name="ae_ser_crit", reason="test"),
            )
        }
    )
    frame = pd.DataFrame(
        {"record_id": ["a"], "ae_ser_crit___1": [1], "ae_ser_crit__raw": ["x"], "ae_term": ["t"]}
    )
    assert list(blind_tables({"adverse_events": frame}, policy)["adverse_events"].columns) == [
        "record_id",
        "ae_term",
    ]


def test_the_blinded_dictionary_makes_the_neutral_code_valid_and_the_others_gone(
    protocol: Protocol,
) -> None:
    blinded = blind_dictionary(_dictionary(protocol), protocol)
    action = blinded.field("ae_action")
    assert action.choice_codes == ("1", "5")
    assert "masked" in dict((c.code, c.label) for c in action.choices)["1"]
    assert blinded.get("rand_arm") is None
    assert blinded.get("dose_mg") is None
    assert "randomization" not in blinded.forms


def test_findings_and_queries_on_hidden_data_never_pass_the_gate(protocol: Protocol) -> None:
    findings = pd.DataFrame(
        {
            "check_id": ["A", "B", "C", "D"],
            "instrument": ["dosing", "randomization", "adverse_events", "adverse_events"],
            "field": ["dose_mg", "rand_arm", "ae_action", "ae_severity"],
            "value": ["900", "1", "4", "3"],
        }
    )
    blinded = blind_findings(findings, protocol)
    assert list(blinded["check_id"]) == ["C", "D"]
    assert list(blinded["value"]) == ["1", "3"]


def test_a_policy_whose_neutral_code_is_not_masked_is_refused(protocol: Protocol) -> None:
    data = protocol.model_dump(mode="json")
    data["blinding"]["masked_codes"][0]["masked_as"] = 5
    with pytest.raises(ProtocolError, match=r"masked_as"):
        Protocol.model_validate(data)


def test_a_field_both_neutral_and_revealing_is_refused(protocol: Protocol) -> None:
    data = protocol.model_dump(mode="json")
    data["blinding"]["arm_neutral"].append({"name": "ae_action", "reason": "careless"})
    with pytest.raises(ProtocolError, match=r"both arm-neutral and revealing"):
        Protocol.model_validate(data)


@pytest.fixture
def study_copy(tmp_path: Path) -> Path:
    target = tmp_path / "study"
    shutil.copytree(default_protocol_path(), target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_an_undeclared_arm_specific_field_fails_conformance(study_copy: Path) -> None:
    # a new dictionary field about the adjunct, declared nowhere in the policy
    dictionary = study_copy / "redcap" / "data_dictionary.csv"
    lines = dictionary.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    row = dict.fromkeys(header, "")
    row.update(
        field_name="ae_adj_kit",
        form_name="adverse_events",
        field_type="text",
        field_label="Adjunct kit number returned",
    )
    lines.append(",".join(row[column] for column in header))
    dictionary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    protocol = load_protocol(study_copy)
    findings = check_conformance(protocol, load_redcap_project(study_copy / "redcap"))
    undeclared = [f for f in findings if f.check_id == "conformance.blinding_undeclared"]
    assert [(f.field, f.severity) for f in undeclared] == [("ae_adj_kit", "critical")]


def test_masking_a_code_the_field_does_not_have_fails_conformance(study_copy: Path) -> None:
    _edit(study_copy / "protocol.yaml", "      codes: [3, 4, 5]\n", "      codes: [3, 4, 5, 9]\n")
    protocol = load_protocol(study_copy)
    findings = check_conformance(protocol, load_redcap_project(study_copy / "redcap"))
    assert [f.field for f in findings if f.check_id == "conformance.blinding_codes"] == [
        "ae_related"
    ]


def test_a_masked_role_that_can_open_the_ae_form_fails_conformance(study_copy: Path) -> None:
    # the outcome raters get a REDCap user: the coordinator's rights include adverse events
    _edit(
        study_copy / "protocol.yaml",
        "      label: Outcome raters (HAM-D-17)\n      access: masked\n",
        "      label: Outcome raters (HAM-D-17)\n      access: masked\n"
        "      redcap_users: [coordinator]\n",
    )
    _edit(
        study_copy / "protocol.yaml",
        "      redcap_users: [coordinator]\n      outputs: blinded",
        "      outputs: blinded",
    )
    protocol = load_protocol(study_copy)
    findings = check_conformance(protocol, load_redcap_project(study_copy / "redcap"))
    access = [f for f in findings if f.check_id == "conformance.blinding_role_access"]
    assert [(f.value, f.instrument) for f in access] == [("coordinator", "adverse_events")]


def test_a_redcap_user_without_a_role_fails_conformance(study_copy: Path) -> None:
    _edit(
        study_copy / "protocol.yaml",
        "redcap_users: [site_s01, site_s02, site_s03, site_s04]",
        "redcap_users: [site_s01, site_s02, site_s03]",
    )
    protocol = load_protocol(study_copy)
    findings = check_conformance(protocol, load_redcap_project(study_copy / "redcap"))
    assert [f.value for f in findings if f.check_id == "conformance.blinding_role_missing"] == [
        "site_s04"
    ]


def test_the_reference_study_declares_its_blinding_completely(protocol: Protocol) -> None:
    assert protocol.redcap is not None
    findings = check_conformance(protocol, protocol.redcap)
    assert [f for f in findings if f.check_id.startswith("conformance.blinding")] == []
    assert {role.access for role in protocol.blinding.roles} == {"unblinded", "partial", "masked"}


def test_a_blinded_read_keeps_the_snapshot_id_and_never_opens_hidden_tables(
    protocol: Protocol, records: pd.DataFrame, tmp_path: Path
) -> None:
    from studyman.sources.blinding import read_blinded_snapshot
    from studyman.sources.offline import import_snapshot
    from studyman.sources.snapshot import snapshot_id

    assert protocol.redcap is not None
    records_csv = tmp_path / "records.csv"
    records.to_csv(records_csv, index=False)
    dictionary = tmp_path / "dictionary.csv"
    dictionary.write_text(protocol.redcap.dictionary.to_csv_text(), encoding="utf-8")
    path = import_snapshot(protocol, records_csv, dictionary, tmp_path / "snapshots").path
    view = read_blinded_snapshot(path, protocol)
    assert view.snapshot_id == snapshot_id(path)
    assert view.manifest["view"] == "blinded"
    assert not set(view.tables) & set(protocol.blinding.unblinded_forms)
    assert allocation_leaks(view.tables, protocol, protocol.redcap.dictionary) == []
