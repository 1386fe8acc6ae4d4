"""The command line under fuzzing: damaged study files end in exit 0 or one line, never a traceback.

Each case (``benchmarks/fuzzing.py``, shared with ``python -m benchmarks fuzz``, which runs
>= 1,000 of them in worker processes under a per-case timeout) damages one file of a small
valid study (protocol, custom checks, analysis plan, records export, data dictionary,
randomisation list, snapshot manifest or tables) with byte-level or structure-aware mutations
and runs, in process, the real commands that read it. The default run holds a fixed, seeded
sample; ``STUDYMAN_FUZZ_CASES=N`` runs more.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

_ENGINE = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzzing.py"


def _load_engine() -> ModuleType:
    # the benchmarks folder is not an installed package: load the engine by its path
    spec = importlib.util.spec_from_file_location("studyman_fuzzing", _ENGINE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


fuzzing = _load_engine()

SEED = 20261203
CASES = int(os.environ.get("STUDYMAN_FUZZ_CASES", "16"))
#: Seconds one case may take in process (the benchmark kills a worker after its --timeout).
CASE_SECONDS = 60.0
#: Share of cases that also run analyze and the DSMB report (the slow commands).
HEAVY_SHARE = 0.1


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> object:
    return fuzzing.build_workspace(tmp_path_factory.mktemp("fuzz") / "base")


@pytest.mark.parametrize("number", range(CASES))
def test_damaged_input_ends_in_exit_zero_or_one_line_never_a_traceback(
    number: int, workspace: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fuzzing.SETTINGS, "heavy_share", HEAVY_SHARE)
    result = fuzzing.run_case(workspace, tmp_path, SEED, number)
    details = "\n\n".join(
        f"$ studyman {command}\n{failure}" for command, failure in result.failures
    )
    assert result.ok, f"{result.describe()}\n{details}"
    assert result.seconds < CASE_SECONDS, result.describe()
    assert result.commands, result.describe()


def test_every_target_is_in_the_default_sample() -> None:
    targets = {fuzzing.TARGET_NAMES[number % len(fuzzing.TARGET_NAMES)] for number in range(CASES)}
    assert targets == set(fuzzing.TARGET_NAMES)
    assert {
        "protocol",
        "checks",
        "sap",
        "records",
        "dictionary",
        "randomization",
        "manifest",
        "parquet",
    } == set(fuzzing.TARGET_NAMES)


def test_the_undamaged_study_passes_every_command(
    workspace: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the baseline: without damage, every (fast) command of every target ends in exit 0 or 1
    # (three targets: protocol check/show, validate, import, snapshot verify/show; every
    # target's undamaged case is the benchmark's baseline)
    monkeypatch.setattr(fuzzing.SETTINGS, "heavy_share", 0.0)
    for name in ("protocol", "records", "manifest"):
        index = fuzzing.TARGET_NAMES.index(name)
        result = fuzzing.run_case(workspace, tmp_path, SEED, index, mutate=False)
        assert result.ok, result.describe()
        assert all(code in (0, 1) for _, code, _ in result.commands), result.describe()


def test_a_case_is_the_same_damage_every_time() -> None:
    data = ("a,b,c\n" + "1,2,3\n" * 20).encode()
    mutations = [*fuzzing.BYTE_MUTATIONS, *fuzzing.CSV_MUTATIONS]
    first = [m(data, fuzzing.plan_case(SEED, 7)) for m in mutations]
    again = [m(data, fuzzing.plan_case(SEED, 7)) for m in mutations]
    other = [m(data, fuzzing.plan_case(SEED, 8)) for m in mutations]
    assert first == again
    assert first != other
    assert all(isinstance(out, bytes) for out in first)


def test_the_fuzzer_flags_a_traceback_a_bad_exit_and_a_multiline_error() -> None:
    # what the fuzzer would miss it would report as passing: check its classifier on real ends
    missing = fuzzing.run_command(["snapshot", "verify", "/nonexistent/snapshot"])
    assert missing.code == 2
    assert missing.failure == ""
    assert missing.error.startswith("error: ")
    assert fuzzing._problem(0, "ok\n", "") == ""
    assert fuzzing._problem(2, "", "error: one line\n") == ""
    assert "traceback" in fuzzing._problem(1, "", "Traceback (most recent call last):\n  x\n")
    assert "exit code" in fuzzing._problem(3, "", "")
    assert "2-line error" in fuzzing._problem(2, "", "error: first\nsecond\n")


def test_deep_logic_nests_past_the_limit() -> None:
    from studyman.protocol.logic import check_logic

    rng = random.Random(3)
    texts = [fuzzing.deep_logic(rng) for _ in range(30)]
    refused = [text for text in texts if check_logic(text) is not None]
    assert refused
    assert all("nested more than" in str(check_logic(text)) for text in refused)


def test_a_snapshot_that_differs_is_one_line_for_every_reader(
    workspace: object, tmp_path: Path
) -> None:
    # found by the fuzzer: analyze (blinded view) and the DSMB report printed the multi-line
    # verification listing as their error
    ws = fuzzing.copy_workspace(workspace, tmp_path / "copy")
    snapshot = ws.path(ws.snapshot)
    (snapshot / "tables" / "extra.parquet").write_bytes(b"not a table")
    (snapshot / "findings.parquet").write_bytes(b"changed")
    out = tmp_path / "out"
    for argv in (
        fuzzing._analyze(ws, out, randomized=False),
        fuzzing._report(ws, out),
        fuzzing._validate(ws, out),
    ):
        outcome = fuzzing.run_command(argv)
        assert outcome.code == 2, argv
        assert outcome.failure == "", outcome.failure
        assert "differs from its manifest" in outcome.error
        assert "extra.parquet" in outcome.error
