"""A small generated trial imported as a snapshot, shared by the reporting tests.

Under pytest-xdist every worker would build the study (and render the reports) again; the
fixtures build them once per test run in a directory shared by the workers, under a file lock,
as the pytest-xdist documentation suggests for expensive session data.
"""

from __future__ import annotations

import dataclasses
import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def shared_dir(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A directory built once per test run (by whichever worker comes first)."""
    root = factory.getbasetemp()
    if root.name.startswith("popen-gw"):
        root = root.parent
    target = root / f"shared-{name}"
    with _locked(root / f"shared-{name}.lock"):
        if not (target / ".done").is_file():
            target.mkdir(parents=True, exist_ok=True)
            build(target)
            (target / ".done").write_text("", encoding="utf-8")
    return target


def _build_study(base: Path) -> None:
    protocol = load_protocol(PROTOCOL)
    trial = generate_trial(protocol, n_participants=80, seed=7)
    trial.records.to_csv(base / "records.csv", index=False)
    trial.randomization.to_csv(base / "randomization.csv", index=False)
    import_snapshot(protocol, base / "records.csv", DICTIONARY, base / "snapshots", name="s1")


@pytest.fixture(scope="session")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    base = shared_dir(tmp_path_factory, "dsmb-study", _build_study)
    return Study(
        load_protocol(PROTOCOL), base / "snapshots" / "s1", base / "randomization.csv", base
    )
