"""Deeply nested REDCap logic (issue 11 item 12): `protocol check` and `validate` agree.

A dictionary whose branching logic or formula nests deeper than ``MAX_LOGIC_DEPTH`` used to pass
``protocol check`` and then crash ``validate`` with a RecursionError. Both now apply
:func:`studyman.protocol.logic.check_logic`: ``protocol check`` reports it (exit 1) and
``validate`` refuses it in one line naming the field, as it does a custom check in checks.yaml.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from studyman.cli import main
from studyman.protocol.loader import load_protocol
from studyman.protocol.logic import MAX_LOGIC_DEPTH
from studyman.synthetic.generator import generate_trial

DEPTH = 150  # the depth the issue reproduced


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Exit status as the console script gives it (``sys.exit(main())``), and the output."""
    try:
        result = main(argv)
        code = result if isinstance(result, int) else 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


DEEP = {
    "parentheses": "(" * DEPTH + "[eligible] = '0'" + ")" * DEPTH,
    "nested-if": "if([eligible] = '0', " * DEPTH + "1" + ", 0)" * DEPTH + " = 1",
    "unary-minus": "-" * DEPTH + "[eligible] = 0",
    "not-chain": "not " * (DEPTH + 1) + "[eligible] = '1'",
}


def _set_logic(dictionary: Path, field: str, column: str, logic: str) -> None:
    rows = list(csv.DictReader(io.StringIO(dictionary.read_text(encoding="utf-8"))))
    assert any(row["field_name"] == field for row in rows)
    for row in rows:
        if row["field_name"] == field:
            row[column] = logic
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    dictionary.write_text(out.getvalue(), encoding="utf-8")


@pytest.fixture(scope="module")
def records_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    study = Path(__file__).parents[2] / "protocols" / "cbt-adjunct"
    trial = generate_trial(load_protocol(study), n_participants=6, seed=5)
    path = tmp_path_factory.mktemp("records") / "records.csv"
    trial.records.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("kind", sorted(DEEP))
def test_protocol_check_and_validate_refuse_the_same_deep_branching_logic(
    kind: str,
    study_copy: Path,
    records_csv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _set_logic(
        study_copy / "redcap" / "data_dictionary.csv",
        "screen_fail_reason",
        "branching_logic",
        DEEP[kind],
    )
    code, out, err = _run(["protocol", "check", str(study_copy)], capsys)
    assert code == 1, out + err
    assert "dictionary.logic_invalid" in out
    assert "screen_fail_reason" in out
    assert "NOT conformant" in out
    out_dir = tmp_path / "validation"
    argv = ["validate", "--protocol", str(study_copy), "--snapshot", str(records_csv)]
    code, out, err = _run([*argv, "--out", str(out_dir)], capsys)
    assert code == 2
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "the branching logic of 'screen_fail_reason'" in lines[0]
    assert f"nested more than {MAX_LOGIC_DEPTH} levels deep" in lines[0]
    assert not (out_dir / "queries.csv").exists()


def test_a_deep_formula_is_refused_by_both_in_the_same_words(
    study_copy: Path, records_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    formula = "sum(" * DEPTH + "[phq9_1]" + ")" * DEPTH
    _set_logic(
        study_copy / "redcap" / "data_dictionary.csv",
        "phq9_total",
        "select_choices_or_calculations",
        formula,
    )
    code, out, _ = _run(["protocol", "check", str(study_copy)], capsys)
    assert code == 1
    assert "phq9_total" in out
    assert "dictionary.logic_invalid" in out
    argv = ["validate", "--protocol", str(study_copy), "--snapshot", str(records_csv)]
    code, _, err = _run([*argv, "--out", str(tmp_path / "v")], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert "the formula of 'phq9_total'" in err
    assert f"nested more than {MAX_LOGIC_DEPTH} levels deep" in err


@pytest.mark.parametrize("kind", sorted(DEEP))
def test_validate_refuses_a_deep_custom_check_naming_it(
    kind: str,
    study_copy: Path,
    records_csv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    checks = study_copy / "checks.yaml"
    text = checks.read_text(encoding="utf-8")
    old = "logic: \"[vs_sbp] <> '' and [vs_dbp] <> '' and [vs_sbp] <= [vs_dbp]\""
    assert old in text
    logic = DEEP[kind].replace("[eligible]", "[vs_sbp]")
    checks.write_text(text.replace(old, f'logic: "{logic}"'), encoding="utf-8")
    argv = ["validate", "--protocol", str(study_copy), "--snapshot", str(records_csv)]
    code, out, err = _run([*argv, "--out", str(tmp_path / "v")], capsys)
    assert code == 2
    assert "Traceback" not in out + err
    assert err.count("\n") == 1
    assert "custom check CUS-BP-ORDER" in err
    assert f"nested more than {MAX_LOGIC_DEPTH} levels deep" in err


def test_a_long_or_chain_in_branching_logic_passes_both(
    study_copy: Path, records_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # many alternatives are a chain, not nesting: accepted by both, and validate runs
    chain = " or ".join(["[eligible] = '0'"] * 2_000)
    _set_logic(
        study_copy / "redcap" / "data_dictionary.csv",
        "screen_fail_reason",
        "branching_logic",
        chain,
    )
    code, out, _ = _run(["protocol", "check", str(study_copy)], capsys)
    assert code == 0, out
    argv = ["validate", "--protocol", str(study_copy), "--snapshot", str(records_csv)]
    code, _, err = _run([*argv, "--out", str(tmp_path / "v")], capsys)
    assert code == 0, err
    assert (tmp_path / "v" / "queries.csv").is_file()
