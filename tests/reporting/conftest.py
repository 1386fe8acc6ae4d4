"""A small generated trial imported as a snapshot, shared by the reporting tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from studyman.protocol.loader import load_protocol
from studyman.protocol.models import Protocol
from studyman.sources.offline import import_snapshot
from studyman.synthetic.generator import generate_trial

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = ROOT / "protocols" / "cbt-adjunct" / "protocol.yaml"
DICTIONARY = ROOT / "protocols" / "cbt-adjunct" / "redcap" / "data_dictionary.csv"
SAP = ROOT / "analysis" / "sap.yaml"


@dataclasses.dataclass(frozen=True)
class Study:
    protocol: Protocol
    snapshot: Path
    randomization: Path
    base: Path


@pytest.fixture(scope="session")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    base = tmp_path_factory.mktemp("dsmb-study")
    protocol = load_protocol(PROTOCOL)
    trial = generate_trial(protocol, n_participants=100, seed=7)
    trial.records.to_csv(base / "records.csv", index=False)
    trial.randomization.to_csv(base / "randomization.csv", index=False)
    result = import_snapshot(
        protocol, base / "records.csv", DICTIONARY, base / "snapshots", name="s1"
    )
    return Study(protocol, result.path, base / "randomization.csv", base)
