"""The generator is deterministic for a seed, fast, and randomises in balanced permuted blocks."""

from __future__ import annotations

import hashlib
import time
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from studyman.errors import ProtocolError
from studyman.protocol import Protocol, load_protocol
from studyman.synthetic import (
    design_from_protocol,
    generate_trial,
    randomization_columns,
    write_trial,
)

STUDY = Path(__file__).resolve().parents[2] / "protocols" / "cbt-adjunct"


@pytest.fixture(scope="module")
def protocol() -> Protocol:
    return load_protocol(STUDY / "protocol.yaml")


def _records_hash(protocol: Protocol, seed: int, directory: Path, **options: object) -> str:
    trial = generate_trial(protocol, n_participants=120, seed=seed, **options)  # type: ignore[arg-type]
    paths = write_trial(trial, directory)
    return hashlib.sha256(paths["records"].read_bytes()).hexdigest()


def test_same_seed_gives_the_same_records_bytes(protocol: Protocol, tmp_path: Path) -> None:
    first = _records_hash(protocol, 42, tmp_path / "a")
    second = _records_hash(protocol, 42, tmp_path / "b")
    assert first == second


def test_same_seed_with_planted_errors_gives_the_same_bytes(
    protocol: Protocol, tmp_path: Path
) -> None:
    first = _records_hash(protocol, 42, tmp_path / "a", plant_errors=True)
    second = _records_hash(protocol, 42, tmp_path / "b", plant_errors=True)
    assert first == second
    a = (tmp_path / "a" / "planted_errors.csv").read_bytes()
    assert a == (tmp_path / "b" / "planted_errors.csv").read_bytes()


def test_different_seeds_give_different_records(protocol: Protocol, tmp_path: Path) -> None:
    assert _records_hash(protocol, 1, tmp_path / "a") != _records_hash(protocol, 2, tmp_path / "b")


def test_dropout_mechanism_changes_the_data(protocol: Protocol, tmp_path: Path) -> None:
    mar = _records_hash(protocol, 3, tmp_path / "a", dropout="mar")
    mnar = _records_hash(protocol, 3, tmp_path / "b", dropout="mnar")
    assert mar != mnar


def test_randomisation_list_matches_the_randomization_form(protocol: Protocol) -> None:
    trial = generate_trial(protocol, n_participants=200, seed=8)
    columns = randomization_columns(design_from_protocol(protocol))
    assert columns == ["record_id", "rand_number", "rand_arm", "rand_stratum"]
    assert list(trial.randomization.columns) == columns
    form = trial.records[trial.records["randomization_complete"] == "2"]
    from_form = form[columns].sort_values("record_id").reset_index(drop=True)
    listed = trial.randomization.sort_values("record_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(from_form.astype(str), listed.astype(str))
    assert len(listed) == 200
    assert listed["rand_number"].is_unique


def test_randomisation_is_balanced_within_every_stratum(protocol: Protocol) -> None:
    trial = generate_trial(protocol, n_participants=600, seed=13)
    listed = trial.randomization
    largest_half = max(protocol.randomization.block_sizes) // 2
    sites = {site.id for site in protocol.sites}
    assert {s.split("-")[0] for s in listed["rand_stratum"]} == sites
    assert set(listed["rand_stratum"].str.split("-").str[1]) == {"moderate", "severe"}
    for stratum, group in listed.groupby("rand_stratum"):
        sequence = list(group.sort_values("rand_number")["rand_arm"])
        imbalance = 0
        closed_blocks = 0
        for arm in sequence:
            imbalance += 1 if arm == "1" else -1
            # Permuted blocks: never further apart than half the largest block.
            assert abs(imbalance) <= largest_half, stratum
            closed_blocks += imbalance == 0
        assert closed_blocks >= len(sequence) // max(protocol.randomization.block_sizes) - 1


def test_stratum_names_the_site_of_the_record(protocol: Protocol) -> None:
    trial = generate_trial(protocol, n_participants=100, seed=4)
    listed = trial.randomization
    assert (listed["record_id"].str[:3] == listed["rand_stratum"].str[:3]).all()
    dag = dict(
        zip(trial.records["record_id"], trial.records["redcap_data_access_group"], strict=False)
    )
    assert all(dag[r] == r[:3].lower() for r in listed["record_id"])


def test_participants_after_the_data_cut_do_not_exist_yet(protocol: Protocol) -> None:
    trial = generate_trial(protocol, n_participants=300, seed=6, data_cut=date(2026, 1, 15))
    records = trial.records
    assert trial.data_cut == date(2026, 1, 15)
    assert 0 < len(trial.randomization) < 300
    dated = records["scr_date"][records["scr_date"] != ""]
    assert (dated <= "2026-01-15").all()
    # Ongoing participants: randomised, not yet at their final visit, no disposition.
    with_disposition = set(records.loc[records["ds_status"] != "", "record_id"])
    assert len(set(trial.randomization["record_id"]) - with_disposition) > 50


def test_bad_options_are_one_clear_error(protocol: Protocol) -> None:
    with pytest.raises(ProtocolError, match="dropout"):
        generate_trial(protocol, dropout="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="n_participants"):
        generate_trial(protocol, n_participants=0)


def test_five_thousand_participants_generate_in_seconds(protocol: Protocol) -> None:
    started = time.perf_counter()
    trial = generate_trial(protocol, n_participants=5000, seed=1)
    elapsed = time.perf_counter() - started
    assert len(trial.randomization) == 5000
    assert trial.records["record_id"].nunique() == 6250
    # About 3 s here on one core; the bound leaves room for a loaded machine.
    assert elapsed < 30, elapsed


def test_same_bytes_across_processes_with_different_hash_seeds(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    digests = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        code = (
            "from studyman.protocol import load_protocol; "
            "from studyman.synthetic import generate_trial, write_trial; "
            f"t = generate_trial(load_protocol({str(STUDY)!r}), n_participants=60, seed=9, "
            "plant_errors=True); "
            f"write_trial(t, {str(out)!r})"
        )
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
        digests.append(
            [
                hashlib.sha256((out / n).read_bytes()).hexdigest()
                for n in ("records.csv", "planted_errors.csv")
            ]
        )
    assert digests[0] == digests[1]
