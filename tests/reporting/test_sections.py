"""The section modules: one per section, each declaring its anchor, heading and table ids."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from datetime import date

import pytest

import studyman.reporting.sections as sections_package
from studyman.reporting.dsmb import (
    SECTIONS,
    DsmbInputs,
    Section,
    SectionSpec,
    build_sections,
    cut_tables,
    table_ids,
)
from studyman.reporting.report import arm_codes, read_randomization_list
from studyman.sources.snapshot import read_snapshot

from .conftest import Study

CUT = date(2026, 9, 30)
#: Modules of the package that hold no section.
_NOT_SECTIONS = {"base", "shared"}


def _inputs(study: Study, *, closed: bool) -> DsmbInputs:
    tables = dict(read_snapshot(study.snapshot).tables)
    if not closed:
        for form in study.protocol.blinding.unblinded_forms:
            tables.pop(form, None)
        return DsmbInputs(study.protocol, cut_tables(study.protocol, tables, CUT), CUT)
    labels = arm_codes(study.protocol, bytes(32))
    arms = read_randomization_list(study.randomization, study.protocol).map(labels)
    return DsmbInputs(
        study.protocol,
        cut_tables(study.protocol, tables, CUT),
        CUT,
        arms=arms,
        arm_order=tuple(sorted(labels.values())),
        interim_efficacy=True,
    )


def test_every_section_module_declares_its_spec_and_is_in_the_report() -> None:
    modules = [
        info.name
        for info in pkgutil.iter_modules(sections_package.__path__)
        if info.name not in _NOT_SECTIONS
    ]
    specs = []
    for name in modules:
        module = importlib.import_module(f"{sections_package.__name__}.{name}")
        spec = getattr(module, "SPEC", None)
        assert isinstance(spec, SectionSpec), f"sections/{name}.py declares no SPEC"
        assert spec.build.__module__ == module.__name__, name
        specs.append(spec)
    # a module written but left out of the report's order is caught here
    assert sorted(s.id for s in specs) == sorted(s.id for s in SECTIONS)


def test_section_ids_and_table_ids_are_unique_and_prefixed_by_their_section() -> None:
    assert len({spec.id for spec in SECTIONS}) == len(SECTIONS)
    every = [identifier for spec in SECTIONS for identifier in spec.table_ids]
    assert len(set(every)) == len(every)
    for spec in SECTIONS:
        assert all(identifier.startswith(f"{spec.id}.") for identifier in spec.table_ids)


@pytest.mark.parametrize("closed", [False, True], ids=["open", "closed"])
def test_every_table_shown_has_an_id_its_module_declares(study: Study, closed: bool) -> None:
    built = build_sections(_inputs(study, closed=closed))
    specs = {spec.id: spec for spec in SECTIONS}
    assert [section.id for section in built] == [spec.id for spec in SECTIONS]
    shown = 0
    for section, identifiers in zip(built, table_ids(built), strict=True):
        spec = specs[section.id]
        assert section.title.startswith(spec.title.split(" (")[0]), section.title
        for identifier in identifiers:
            assert identifier in spec.table_ids, f"{identifier} is not declared in {spec.id}"
            shown += 1
    assert shown >= 25


def test_a_table_with_an_undeclared_title_is_caught(study: Study) -> None:
    """The check above can fail: a builder that renames a table shows an undeclared id."""
    spec = next(spec for spec in SECTIONS if spec.id == "retention")

    def renamed(inputs: DsmbInputs) -> Section:
        section = spec.build(inputs)
        first = dataclasses.replace(section.tables[0], title="Retention (renamed)")
        return dataclasses.replace(section, tables=(first, *section.tables[1:]))

    section = renamed(_inputs(study, closed=False))
    (identifiers,) = table_ids([section])
    assert identifiers[0] not in spec.table_ids


def test_a_section_whose_field_is_missing_keeps_its_declared_heading(study: Study) -> None:
    inputs = _inputs(study, closed=False)
    withdrawal = study.protocol.withdrawal
    assert withdrawal is not None
    tables = dict(inputs.tables)
    tables[withdrawal.instrument] = tables[withdrawal.instrument].drop(
        columns=[withdrawal.total_field]
    )
    built = {s.id: s for s in build_sections(DsmbInputs(study.protocol, tables, CUT))}
    spec = next(spec for spec in SECTIONS if spec.id == "aesi-withdrawal")
    assert built["aesi-withdrawal"].title == spec.title
    assert built["aesi-withdrawal"].missing == (withdrawal.total_field,)
    assert not built["aesi-withdrawal"].tables
    assert built["retention"].tables


@pytest.mark.parametrize("closed", [False, True], ids=["open", "closed"])
def test_no_table_has_an_empty_column_or_a_packed_cell(study: Study, closed: bool) -> None:
    for section in build_sections(_inputs(study, closed=closed)):
        for table in section.tables:
            frame = table.frame.astype("string").fillna("")
            if frame.empty:
                continue
            for position, column in enumerate(frame.columns):
                cells = frame.iloc[:, position]
                assert cells.str.strip().astype(bool).any(), (table.title, column)
            # several numbers behind a count ("61: 3 / 0", "12: -5.3 (4.1)") are unreadable:
            # one measure per cell
            packed = frame.apply(lambda col: col.str.fullmatch(r"\d+: .+").fillna(False))
            assert not packed.to_numpy().any(), table.title


def test_every_closed_listing_of_participants_names_their_arm(study: Study) -> None:
    listings = [
        table
        for section in build_sections(_inputs(study, closed=True))
        for table in section.tables
        if "Participant" in table.frame.columns and not table.frame.empty
    ]
    titles = {table.title for table in listings}
    assert {"Listing of serious adverse events", "Late, missing or undated reports"} <= titles
    for table in listings:
        assert "Arm" in table.frame.columns, table.title
        assert set(table.frame["Arm"]) <= {"Arm A", "Arm B"}, table.title
