"""The closed report's arm codes come from a secret key, and nothing else decodes them.

The attacks: recompute the codes from what a DSMB member or a reader of the code has (the
report, the randomisation list's hash, the salt of the earlier scheme, the protocol's public
pairing); read a key that others can read; give a damaged key; race two first uses.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import secrets
import shutil
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from scipy.stats import binomtest

from studyman.cli import main
from studyman.errors import SourceError
from studyman.reporting.report import (
    ARM_KEY_NAME,
    ArmKey,
    arm_codes,
    read_arm_key,
    render_dsmb_report,
)

from .conftest import Study

# reports compared byte for byte state the same as-of time (by default it is the minute they ran)
AS_OF = datetime(2026, 10, 20, 12, 0, tzinfo=UTC)

# The scheme this replaced: a permutation drawn from sha256(salt + the list's printed sha256),
# with the salt in the source code. Anyone with the report and the source could decode it.
_OLD_SALT = b"studyman-dsmb-arm-codes/1"


def _old_scheme_codes(study: Study, randomization_sha256: str) -> dict[str, str]:
    names = [arm.name for arm in study.protocol.arms.items]
    codes = sorted(arm.closed_report_code for arm in study.protocol.arms.items)
    permutations = list(itertools.permutations(codes))
    digest = hashlib.sha256(_OLD_SALT + randomization_sha256.encode("ascii")).hexdigest()
    chosen = permutations[int(digest, 16) % len(permutations)]
    return {name: f"Arm {code}" for name, code in zip(names, chosen, strict=True)}


def _own_list(study: Study, folder: Path) -> Path:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / "randomization.csv"
    shutil.copyfile(study.randomization, path)
    return path


def _write_key(path: Path, text: bytes, mode: int = 0o600) -> Path:
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(handle, "wb") as stream:
        stream.write(text)
    os.chmod(path, mode)  # the test's own file: exactly this mode, whatever the umask
    return path


def _closed(study: Study, randomization: Path, out: Path, arm_key: Path | None = None) -> str:
    report = render_dsmb_report(
        study.protocol,
        study.snapshot,
        out,
        session="closed",
        randomization=randomization,
        arm_key=arm_key,
        pdf=False,
        as_of=AS_OF,
    )
    return report.html.read_text(encoding="utf-8")


def _label_counts(html: str) -> dict[str, str]:
    return dict(re.findall(r"(Arm [AB]) \(N=(\d+)\)", html))


def test_first_use_creates_a_private_key_beside_the_list_and_reuses_it(
    study: Study, tmp_path: Path
) -> None:
    randomization = _own_list(study, tmp_path / "unblinded")
    previous = os.umask(0o022)
    try:
        first = render_dsmb_report(
            study.protocol, study.snapshot, tmp_path / "a", session="closed",
            randomization=randomization, pdf=False, as_of=AS_OF,
        )  # fmt: skip
    finally:
        os.umask(previous)
    key = tmp_path / "unblinded" / ARM_KEY_NAME
    assert first.arm_key == key
    assert first.arm_key_created
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert re.fullmatch(rb"[0-9a-f]{64}\n", key.read_bytes())
    assert [p.name for p in key.parent.iterdir() if p.name.startswith(".")] == []
    second = render_dsmb_report(
        study.protocol, study.snapshot, tmp_path / "b", session="closed",
        randomization=randomization, pdf=False, as_of=AS_OF,
    )  # fmt: skip
    assert not second.arm_key_created
    assert second.arm_key_fingerprint == first.arm_key_fingerprint
    assert first.html.read_bytes() == second.html.read_bytes()


def test_the_same_key_gives_the_same_codes_and_another_key_may_not(
    study: Study, tmp_path: Path
) -> None:
    randomization = _own_list(study, tmp_path / "unblinded")
    key = read_arm_key(tmp_path / "key-1")
    assert key.created
    again = read_arm_key(tmp_path / "key-1")
    assert again.key == key.key
    assert not again.created
    assert arm_codes(study.protocol, key.key) == arm_codes(study.protocol, again.key)
    one = _closed(study, randomization, tmp_path / "one", arm_key=key.path)
    two = _closed(study, randomization, tmp_path / "two", arm_key=key.path)
    assert one == two
    # Keys that pick the other permutation swap the labels of the same arms.
    other = next(
        k
        for k in (bytes([i]) * 32 for i in range(64))
        if arm_codes(study.protocol, k) != arm_codes(study.protocol, key.key)
    )
    other_path = _write_key(tmp_path / "key-2", other.hex().encode("ascii") + b"\n")
    swapped = _closed(study, randomization, tmp_path / "three", arm_key=other_path)
    flip = {"Arm A": "Arm B", "Arm B": "Arm A"}
    codes = arm_codes(study.protocol, key.key)
    assert arm_codes(study.protocol, other) == {name: flip[code] for name, code in codes.items()}
    # the same tables, under the other labels: the report's by-arm columns change places
    assert swapped != one
    assert _label_counts(swapped) == {flip[c]: n for c, n in _label_counts(one).items()}


def test_nothing_in_the_report_or_the_source_predicts_the_codes(
    study: Study, tmp_path: Path
) -> None:
    randomization = _own_list(study, tmp_path / "unblinded")
    html = _closed(study, randomization, tmp_path / "out")
    listed = hashlib.sha256(randomization.read_bytes()).hexdigest()
    assert listed not in html
    assert listed.upper() not in html
    # Over many secret keys, three predictors an attacker has (the old salted scheme on the
    # list's hash, the protocol's public pairing, and the fingerprint printed in the report)
    # agree with the codes no more often than a coin: two-sided binomial test at 0.1 %.
    trials = 400
    public = {arm.name: f"Arm {arm.closed_report_code}" for arm in study.protocol.arms.items}
    old = _old_scheme_codes(study, listed)
    hits = {"old scheme": 0, "public pairing": 0, "fingerprint parity": 0}
    for _ in range(trials):
        key = ArmKey(tmp_path / "unused", secrets.token_bytes(32))
        codes = arm_codes(study.protocol, key.key)
        hits["old scheme"] += codes == old
        hits["public pairing"] += codes == public
        first_arm = study.protocol.arms.items[0].name
        guess = "Arm A" if int(key.fingerprint, 16) % 2 == 0 else "Arm B"
        hits["fingerprint parity"] += codes[first_arm] == guess
    for predictor, count in hits.items():
        assert binomtest(count, trials, 0.5).pvalue > 0.001, (predictor, count)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o700 | 0o001])
def test_a_key_others_can_reach_is_refused(study: Study, tmp_path: Path, mode: int) -> None:
    randomization = _own_list(study, tmp_path / "unblinded")
    key = _write_key(tmp_path / "unblinded" / ARM_KEY_NAME, secrets.token_hex(32).encode() + b"\n")
    os.chmod(key, mode)
    with pytest.raises(SourceError) as refused:
        _closed(study, randomization, tmp_path / "out")
    message = str(refused.value)
    assert "\n" not in message
    assert str(key) in message
    assert f"chmod 600 {key}" in message
    assert key.read_text(encoding="ascii").strip() not in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n",
        b"0" * 63 + b"\n",
        b"0" * 65 + b"\n",
        b"g" * 64 + b"\n",
        b"0" * 64 + b"\n\n",
        b"0" * 64 + b"\r\n",
        bytes(range(32)),
        "é".encode() * 32,
    ],
)
def test_a_malformed_key_is_refused_in_one_line(
    study: Study, tmp_path: Path, content: bytes
) -> None:
    randomization = _own_list(study, tmp_path / "unblinded")
    key = _write_key(tmp_path / "unblinded" / ARM_KEY_NAME, content)
    with pytest.raises(SourceError, match="not a DSMB arm-code key") as refused:
        _closed(study, randomization, tmp_path / "out")
    assert "\n" not in str(refused.value)
    assert str(key) in str(refused.value)
    assert key.read_bytes() == content  # never replaced by a new key
    assert not (tmp_path / "out").exists()


def test_a_key_that_is_a_folder_a_fifo_or_missing_when_named_is_refused(
    study: Study, tmp_path: Path
) -> None:
    randomization = _own_list(study, tmp_path / "unblinded")
    folder = tmp_path / "unblinded" / ARM_KEY_NAME
    folder.mkdir(mode=0o700)
    with pytest.raises(SourceError, match="not a regular file"):
        _closed(study, randomization, tmp_path / "out")
    folder.rmdir()
    os.mkfifo(folder, 0o600)  # opening a FIFO to read would wait for a writer: it must not
    with pytest.raises(SourceError, match="not a regular file"):
        _closed(study, randomization, tmp_path / "out")
    with pytest.raises(SourceError, match="no DSMB arm-code key there"):
        read_arm_key(tmp_path / "absent", create=False)


def test_first_uses_at_the_same_moment_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / ARM_KEY_NAME
    results: list[ArmKey] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def use() -> None:
        start.wait()
        try:
            results.append(read_arm_key(path))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len({result.key for result in results}) == 1
    assert sum(result.created for result in results) == 1
    assert [p.name for p in tmp_path.iterdir()] == [ARM_KEY_NAME]


def test_the_key_is_never_in_its_repr(tmp_path: Path) -> None:
    key = read_arm_key(tmp_path / ARM_KEY_NAME)
    assert key.key.hex() not in repr(key)
    assert key.key.hex() not in str(key)
    assert key.fingerprint == hashlib.sha256(b"fingerprint" + key.key).hexdigest()[:16]


def test_cli_arm_key_option_and_its_refusals(
    study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    randomization = _own_list(study, tmp_path / "unblinded")
    key = tmp_path / "vault" / "trial.key"
    base = ["report", "dsmb", "--snapshot", str(study.snapshot), "--no-pdf"]
    main([*base, "--session", "closed", "--randomization", str(randomization),
          "--arm-key", str(key), "--out", str(tmp_path / "out")])  # fmt: skip
    printed = capsys.readouterr().out
    fingerprint = read_arm_key(key, create=False).fingerprint
    assert f"arm-code key: {key} (created, fingerprint {fingerprint})" in printed
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert not (tmp_path / "unblinded" / ARM_KEY_NAME).exists()  # the named key was used
    html = next((tmp_path / "out").glob("*.html")).read_text(encoding="utf-8")
    assert fingerprint in html
    os.chmod(key, 0o644)
    for session in ("closed", "open"):
        with pytest.raises(SystemExit) as refused:
            main([*base, "--session", session, "--randomization", str(randomization),
                  "--arm-key", str(key), "--out", str(tmp_path / session)])  # fmt: skip
        assert refused.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert err[0].startswith("error:")
        assert ("chmod 600" if session == "closed" else "closed session only") in err[0]
