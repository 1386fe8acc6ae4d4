"""No REDCap name of the reference study is a string literal in ``studyman/`` (issue 13).

studyman serves any REDCap study by editing ``protocols/<study>/`` only, so every field, form and
event name must come from the loaded protocol. This test reads the reference study's names from
its REDCap project (data dictionary, instruments, events) and walks every string constant of the
package's abstract syntax trees (f-string parts included, docstrings excepted): a constant equal
to one of those names is a hard-coded study name. The protocol models and loader are exempt:
their defaults are the one allowed home of the reference names.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from studyman.protocol import load_redcap_project

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "studyman"
REFERENCE_PROJECT = ROOT / "protocols" / "cbt-adjunct" / "redcap"

#: Where the reference names may stand as defaults (of optional protocol keys).
DEFAULTS_HOME = frozenset({"studyman/protocol/models.py", "studyman/protocol/loader.py"})

#: (file, literal) pairs that equal a reference name by coincidence, not as a study name.
#: Each says why; keep it short (the lead drives it to empty where the code can change).
ALLOWED: dict[tuple[str, str], str] = {
    # REDCap's own default record-ID field (a new project's first field), used where a project
    # has no dictionary yet: REDCap's name, which the reference study happens to keep.
    ("studyman/sources/casting.py", "record_id"): "REDCap default for an empty dictionary",
    ("studyman/sources/emulator/api.py", "record_id"): "REDCap's new-project first field",
    ("studyman/sources/emulator/model.py", "record_id"): "REDCap default for an empty dictionary",
    ("studyman/sources/emulator/odm.py", "record_id"): "REDCap default without RecordIdField",
    ("studyman/protocol/logic.py", "record_id"): "REDCap default for an empty dictionary",
    # Columns of studyman's own tables (findings, queries, listings: FINDING_COLUMNS, the
    # query log's schema), named after REDCap's default; the study's record-ID field is mapped
    # onto them where findings are made.
    ("studyman/findings.py", "record_id"): "FINDING_COLUMNS",
    ("studyman/validation/engine.py", "record_id"): "finding column",
    ("studyman/validation/outputs.py", "record_id"): "finding column",
    ("studyman/validation/query_log.py", "record_id"): "query-log column",
    ("studyman/validation/records.py", "record_id"): "finding column",
    ("studyman/validation/workbooks.py", "record_id"): "listing column",
    ("studyman/validation/protocol_checks/view.py", "record_id"): "finding column",
    # Section keys of protocol.yaml (the protocol's schema), written by the onboarding draft.
    ("studyman/onboarding/draft.py", "randomization"): "protocol.yaml key",
    ("studyman/onboarding/draft.py", "eligibility"): "protocol.yaml key",
    ("studyman/onboarding/draft.py", "disposition"): "protocol.yaml key",
    ("studyman/onboarding/draft.py", "adverse_events"): "protocol.yaml key",
    ("studyman/onboarding/draft.py", "deviations"): "protocol.yaml key",
    # English words that are also form names of the reference study.
    ("studyman/validation/workbooks.py", "visit"): "listing column (the visit's label)",
    ("studyman/stats/mmrm.py", "visit"): "the MMRM's own visit factor column",
    ("studyman/validation/outputs.py", "deviations"): "sheet name and count column",
    ("studyman/validation/protocol_checks/__init__.py", "eligibility"): "a module of the package",
    ("studyman/validation/protocol_checks/__init__.py", "disposition"): "a module of the package",
    # Words of studyman's own vocabularies that equal a reference name: keys of facts.json
    # (contracts of issue 12), population-criterion kinds and analysis kinds of the plan's
    # schema, attribute names of the protocol model, result-table keys and statistics columns.
    ("studyman/facts.py", "eligible"): "facts.json headline key",
    ("studyman/facts.py", "deviations"): "facts.json headline key (named by issue 12)",
    ("studyman/facts.py", "randomized"): "the plan's population-criterion kind",
    ("studyman/reporting/sections/summary.py", "eligible"): "facts.json headline key",
    ("studyman/reporting/sections/summary.py", "deviations"): "facts.json headline key",
    ("studyman/analysis/sap.py", "randomized"): "the plan's population-criterion kind",
    ("studyman/analysis/sap.py", "vital_signs"): "an analysis kind of the plan's schema",
    ("studyman/analysis/sap.py", "liver_tests"): "an analysis kind of the plan's schema",
    ("studyman/analysis/sap.py", "visit"): "a plan analysis attribute name",
    ("studyman/analysis/safety.py", "vital_signs"): "plan kind and the protocol model's key",
    ("studyman/analysis/safety.py", "liver_tests"): "an analysis kind of the plan's schema",
    ("studyman/analysis/safety.py", "conmeds"): "a result-table key",
    ("studyman/analysis/safety.py", "disposition"): "a result-table key",
    ("studyman/analysis/safety.py", "visit"): "a result-table column",
    ("studyman/analysis/run.py", "adverse_events"): "a blinded-review table key",
    ("studyman/analysis/run.py", "disposition"): "a blinded-review table key",
    ("studyman/analysis/outputs.py", "adverse_events"): "a blinded-review table key",
    ("studyman/analysis/models.py", "visit"): "the MMRM contrasts' visit column",
    ("studyman/cli/protocol.py", "randomization"): "protocol.yaml section key",
    ("studyman/demo.py", "randomization"): "write_trial's output key",
    ("studyman/synthetic/writer.py", "randomization"): "write_trial's output key",
    ("studyman/synthetic/generator.py", "record_id"): "planted-error ground-truth column",
    ("studyman/synthetic/planting.py", "record_id"): "planted-error ground-truth column",
}

#: Parts of the package that other work of issue 13 is still moving onto the protocol. Their
#: literals are listed (xfail) rather than failed until that work lands; the lead empties this.
PENDING: dict[str, str] = {}


def reference_names() -> frozenset[str]:
    """Every REDCap name of the reference study: fields, forms (and their status fields),
    unique event names."""
    project = load_redcap_project(REFERENCE_PROJECT)
    names = {spec.field_name for spec in project.dictionary.fields}
    forms = {spec.form_name for spec in project.dictionary.fields}
    forms |= {instrument.instrument_name for instrument in project.instruments}
    names |= forms | {f"{form}_complete" for form in forms}
    names |= {event.unique_event_name for event in project.events}
    return frozenset(names)


def _docstrings(tree: ast.AST) -> set[int]:
    nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                nodes.add(id(body[0].value))
    return nodes


def study_literals(package: Path, names: frozenset[str]) -> Iterator[tuple[str, int, str]]:
    """``(file, line, literal)`` for every string constant of *package* equal to a name."""
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package.parent).as_posix()
        if relative in DEFAULTS_HOME:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value in names
                and id(node) not in docstrings
            ):
                yield relative, node.lineno, node.value


def _listing(hits: list[tuple[str, int, str]]) -> str:
    return "\n".join(f"  {file}:{line}: {literal!r}" for file, line, literal in sorted(hits))


def test_reference_names_are_read_from_the_study_project() -> None:
    names = reference_names()
    # the scan is only as good as its list: the study's names of each kind are in it
    assert {"record_id", "hamd_1", "ae_term", "dv_date"} <= names
    assert {"hamd17", "adverse_events", "randomization", "deviations_complete"} <= names
    assert {"baseline_arm_1", "week_12_arm_1", "end_of_study_arm_1"} <= names
    assert len(names) > 200


def test_the_scan_finds_a_planted_literal(tmp_path: Path) -> None:
    package = tmp_path / "studyman"
    (package / "validation").mkdir(parents=True)
    (package / "validation" / "planted.py").write_text(
        '"""Docstring naming ae_term is fine."""\n'
        "def f(frame):\n"
        '    """ae_term"""\n'
        '    return frame["ae_term"], f"{frame}week_12_arm_1", "consent date"\n',
        encoding="utf-8",
    )
    (package / "protocol").mkdir()
    (package / "protocol" / "models.py").write_text('DEFAULT = "ae_term"\n', encoding="utf-8")
    hits = sorted(study_literals(package, frozenset({"ae_term", "week_12_arm_1", "consent"})))
    # docstrings, plain prose and the models' defaults are not hits; a subscript and an
    # f-string part are
    assert hits == [
        ("studyman/validation/planted.py", 4, "ae_term"),
        ("studyman/validation/planted.py", 4, "week_12_arm_1"),
    ]


def test_every_allowed_literal_is_still_there() -> None:
    # an allow-list entry whose literal has gone is stale: remove it so it cannot hide a new one
    hits = {(file, literal) for file, _, literal in study_literals(PACKAGE, reference_names())}
    stale = sorted(key for key in ALLOWED if key not in hits)
    assert not stale, f"allow-list entries no longer needed: {stale}"


def test_no_reference_study_name_is_a_string_literal_in_studyman() -> None:
    hits = [
        hit for hit in study_literals(PACKAGE, reference_names()) if (hit[0], hit[2]) not in ALLOWED
    ]
    pending = [hit for hit in hits if any(hit[0].startswith(prefix) for prefix in PENDING)]
    done = [hit for hit in hits if hit not in pending]
    assert not done, (
        f"{len(done)} REDCap name(s) of the reference study hard-coded in studyman/ (take them "
        f"from the loaded Protocol; defaults belong in studyman/protocol/models.py):\n"
        + _listing(done)
    )
    if pending:
        owners = sorted(
            {
                owner
                for prefix, owner in PENDING.items()
                for hit in pending
                if hit[0].startswith(prefix)
            }
        )
        pytest.xfail(
            f"waiting for {', '.join(owners)}: {len(pending)} literal(s) left:\n"
            + _listing(pending)
        )
