"""The blind holds in every blinded output of a whole study (issue 11, items 1 and 3).

The demo runs end to end (emulator, PyCap pulls with a coordinator's and an unblinded token,
validation, the locked plan, both DSMB sessions); then the attacks a careless or hostile user
would try: a blinded analysis and an open report fed the *unblinded* snapshot, a blinded
validation of it. Every blinded output (CSV, XLSX, HTML, PDF text and metadata, SVG, PNG
metadata, SQLite, Parquet, JSON) is walked for the policy's hidden fields and masked codes, and
the participants the open report names are tested against the arms (ground truth from the
randomisation list).
"""

from __future__ import annotations

import json
import re
import sqlite3
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from openpyxl import load_workbook
from pypdf import PdfReader
from scipy.stats import fisher_exact

from studyman.analysis.analyze import analyze
from studyman.analysis.executor import SerialExecutor
from studyman.protocol import Protocol, load_protocol
from studyman.protocol.reference import default_protocol_path
from studyman.reporting.report import render_dsmb_report
from studyman.sources.randomization import read_randomization_list
from studyman.synthetic import generate_trial
from studyman.validation.run import validate_study

N_PARTICIPANTS = 200
SEED = 20261203


@pytest.fixture(scope="module")
def protocol() -> Protocol:
    return load_protocol(default_protocol_path())


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, protocol: Protocol) -> dict[str, Path]:
    """The demo's outputs plus the attacks' outputs; keys name them."""
    from studyman.demo import run_demo

    out = tmp_path_factory.mktemp("blinding")
    result = run_demo(out, n_participants=N_PARTICIPANTS, seed=SEED)
    unblinded_snapshot = result.outputs["snapshot (unblinded)"]
    blinded_snapshot = result.outputs["snapshot (blinded)"]
    sap = default_protocol_path().parent.parent / "analysis" / "sap.yaml"
    attacks = out / "attacks"
    # a blinded analysis given the unblinded snapshot (item 3), and of the blinded one
    analyze(
        sap,
        unblinded_snapshot,
        attacks / "analysis-of-unblinded",
        protocol=protocol,
        executor=SerialExecutor(),
    )
    analyze(sap, blinded_snapshot, attacks / "analysis-of-blinded", executor=SerialExecutor())
    # the open report and a blinded validation given the unblinded snapshot
    render_dsmb_report(
        protocol, unblinded_snapshot, attacks / "dsmb-open-of-unblinded", session="open"
    )
    validate_study(protocol, unblinded_snapshot, attacks / "validation-of-unblinded")
    return {
        "out": out,
        "attacks": attacks,
        "randomization": result.outputs["randomization list (unblinded)"],
        "open report": result.outputs["DSMB open report"],
    }


def _blinded_files(out: Path) -> Iterator[Path]:
    """Every file a blinded role receives: all of the demo's outputs but the unblinded and
    generated folders and the REDCap server's own project directory."""
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out).parts
        if relative[0] in {"unblinded", "generated", "redcap-project"} or not path.is_file():
            continue
        yield path


def _hidden_field_names(protocol: Protocol) -> set[str]:
    assert protocol.redcap is not None
    dictionary = protocol.redcap.dictionary
    names = {
        name
        for spec in dictionary.fields
        if spec.form_name in protocol.blinding.unblinded_forms
        and spec.field_name != dictionary.record_id_field
        for name in spec.export_names
    }
    return names | set(protocol.blinding.masked_field_names)


def _masked_labels(protocol: Protocol) -> set[str]:
    """Labels of the codes merged away (e.g. "Dose reduced", "Withdrawn", "Definite")."""
    assert protocol.redcap is not None
    labels = set()
    for masked in protocol.blinding.masked_codes:
        spec = protocol.redcap.dictionary.field(masked.field)
        for choice in spec.choices:
            if choice.code in masked.code_texts and choice.code != str(masked.masked_as):
                labels.add(choice.label)
    return labels


def _frames_of(path: Path) -> Iterator[tuple[str, pd.DataFrame]]:
    """The tables a file holds, if it is tabular."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield path.name, pd.read_csv(path, comment="#", dtype=str, keep_default_na=False)
    elif suffix == ".parquet":
        yield path.name, pd.read_parquet(path).astype("string")
    elif suffix == ".xlsx":
        workbook = load_workbook(path, read_only=True)
        for sheet in workbook.worksheets:
            rows = [
                [("" if v is None else str(v)) for v in row]
                for row in sheet.iter_rows(values_only=True)
            ]
            if rows:
                yield f"{path.name}:{sheet.title}", pd.DataFrame(rows[1:], columns=rows[0])
    elif suffix in {".sqlite", ".db"}:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            names = [
                r[0]
                for r in connection.execute("select name from sqlite_master where type='table'")
            ]
            for name in names:
                yield (
                    f"{path.name}:{name}",
                    pd.read_sql_query(f'select * from "{name}"', connection).astype("string"),
                )


def _text_of(path: Path) -> str:
    """Everything readable in a file: text, PDF text and metadata, XLSX parts, PNG chunks."""
    suffix = path.suffix.lower()
    data = path.read_bytes()
    if suffix == ".pdf":
        reader = PdfReader(path)
        metadata = " ".join(str(v) for v in (reader.metadata or {}).values())
        return metadata + "\n".join(page.extract_text() or "" for page in reader.pages)
    if suffix == ".xlsx":
        with zipfile.ZipFile(path) as archive:
            return "\n".join(
                archive.read(name).decode("utf-8", "replace") for name in archive.namelist()
            )
    if suffix == ".png":
        return _png_text_chunks(data)
    return data.decode("utf-8", "replace")


def _png_text_chunks(data: bytes) -> str:
    """The text chunks (tEXt, iTXt, zTXt: where PNG metadata lives) of a PNG file."""
    chunks = []
    offset = 8
    while offset + 8 <= len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        if kind in {b"tEXt", b"iTXt", b"zTXt"}:
            chunks.append(data[offset + 8 : offset + 8 + length].decode("latin-1"))
        offset += 12 + length
    return "\n".join(chunks)


def test_the_blinded_side_holds_every_kind_of_output(study: dict[str, Path]) -> None:
    kinds = {path.suffix.lower() for path in _blinded_files(study["out"])}
    # the walk below must see each kind the issue names, or it proves nothing about it
    assert {".csv", ".xlsx", ".html", ".pdf", ".sqlite", ".parquet", ".json", ".svg"} <= kinds


def test_no_blinded_output_holds_a_hidden_field_or_a_masked_label(
    study: dict[str, Path], protocol: Protocol
) -> None:
    hidden = _hidden_field_names(protocol)
    labels = _masked_labels(protocol)
    assert hidden
    assert labels
    words = re.compile(r"\b(" + "|".join(map(re.escape, sorted(hidden))) + r")\b")
    # a label standing alone in a cell or a line (C-SSRS "Interrupted attempt" is not one)
    label_words = re.compile(
        r"(?:^|>|,|\n)\s*(" + "|".join(map(re.escape, sorted(labels))) + r")\s*(?:<|,|\n|$)"
    )
    problems = []
    for path in _blinded_files(study["out"]):
        text = _text_of(path)
        if found := set(words.findall(text)):
            problems.append(f"{path.relative_to(study['out'])}: hidden field(s) {sorted(found)}")
        if found := set(label_words.findall(text)):
            problems.append(f"{path.relative_to(study['out'])}: masked label(s) {sorted(found)}")
    assert problems == []


def test_no_blinded_table_holds_a_masked_code(study: dict[str, Path], protocol: Protocol) -> None:
    problems = []
    seen_masked_columns = 0
    for path in _blinded_files(study["out"]):
        for name, frame in _frames_of(path):
            for masked in protocol.blinding.masked_codes:
                revealing = set(masked.code_texts) - {str(masked.masked_as)}
                if masked.field in frame.columns:
                    seen_masked_columns += 1
                    values = set(frame[masked.field].astype(str).str.strip())
                    if values & revealing:
                        problems.append(f"{name}: {masked.field} = {sorted(values & revealing)}")
                # query listings and logs: a row on the field, with its value
                if {"field", "value"} <= set(frame.columns):
                    rows = frame[frame["field"].astype(str) == masked.field]
                    values = set(rows["value"].astype(str).str.strip())
                    if values & revealing:
                        problems.append(
                            f"{name}: a query shows {masked.field} = {sorted(values & revealing)}"
                        )
    assert seen_masked_columns > 0  # the snapshot tables carry the masked fields, masked
    assert problems == []


def _arms(study: dict[str, Path]) -> pd.Series:
    listing = read_randomization_list(study["randomization"])
    return listing.set_index("record_id")["rand_arm"]


def _named_participants(text: str, protocol: Protocol) -> set[str]:
    pattern = protocol.study.record_id_pattern.strip("^$")
    return set(re.findall(pattern, text))


def _association(named: set[str], arms: pd.Series) -> float:
    """Fisher's exact p of (named or not) × (first arm or not) among randomised participants."""
    first = arms.iloc[0]
    in_first = arms == first
    listed = arms.index.isin(sorted(named))
    table = [
        [int((listed & in_first).sum()), int((listed & ~in_first).sum())],
        [int((~listed & in_first).sum()), int((~listed & ~in_first).sum())],
    ]
    return float(fisher_exact(table)[1])


def test_the_association_test_catches_a_listing_by_a_masked_code(protocol: Protocol) -> None:
    # the attack of item 1: listing the participants with an action on the adjunct (2-4)
    trial = generate_trial(protocol, n_participants=300, seed=SEED)
    records = trial.records
    named = set(records.loc[records["ae_action"].isin(["2", "3", "4"]), "record_id"])
    arms = trial.randomization.set_index("record_id")["rand_arm"]
    assert len(named) >= 10
    assert _association(named, arms) < 1e-4


def test_the_open_report_names_no_participant_who_reveals_an_arm(
    study: dict[str, Path], protocol: Protocol
) -> None:
    arms = _arms(study)
    for report in (
        study["open report"],
        study["open report"].with_suffix(".html"),
        *(study["attacks"] / "dsmb-open-of-unblinded").glob("dsmb-open-*"),
    ):
        named = _named_participants(_text_of(report), protocol)
        # no listing at all; and if one came back, it must not go with the arm beyond chance
        assert named == set(), report.name
        assert _association(named, arms) > 0.01


def test_a_blinded_analysis_of_an_unblinded_snapshot_sees_only_the_blinded_view(
    study: dict[str, Path],
) -> None:
    attacked = study["attacks"] / "analysis-of-unblinded" / "adam"
    reference = study["attacks"] / "analysis-of-blinded" / "adam"
    for name in ("adsl", "adae", "adqs"):
        left = pd.read_parquet(attacked / f"{name}.parquet")
        right = pd.read_parquet(reference / f"{name}.parquet")
        # the dosing form (treatment dates by arm) and the masked codes never get in
        pd.testing.assert_frame_equal(left, right, check_like=True)
    provenance = json.loads(
        (study["attacks"] / "analysis-of-unblinded" / "provenance.json").read_text()
    )
    assert provenance["blinded"] is True


def test_a_blinded_validation_of_an_unblinded_snapshot_lists_the_same_as_of_the_blinded(
    study: dict[str, Path],
) -> None:
    attacked = pd.read_csv(
        study["attacks"] / "validation-of-unblinded" / "queries.csv", comment="#"
    )
    reference = pd.read_csv(study["out"] / "validation" / "queries.csv", comment="#")
    assert sorted(attacked["query_id"]) == sorted(reference["query_id"])
