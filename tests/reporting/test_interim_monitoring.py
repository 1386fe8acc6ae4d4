"""Interim monitoring, previous recommendations and amendments in both DSMB sessions."""

from __future__ import annotations

import dataclasses
import math
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from studyman.analysis.sap import AnalysisPlan, load_sap
from studyman.protocol.dsmb_history import DsmbHistory, load_dsmb_history
from studyman.reporting.dsmb import DsmbInputs, cut_tables, report_data
from studyman.reporting.figures import draw_figure
from studyman.reporting.report import arm_codes, read_randomization_list
from studyman.reporting.sections.amendments import amendments_section
from studyman.reporting.sections.interim import interim_monitoring_section
from studyman.reporting.sections.recommendations import recommendations_section
from studyman.sources.snapshot import read_snapshot
from studyman.stats.group_sequential import conditional_power, group_sequential_design

from .conftest import SAP, Study

CUT = date(2026, 9, 30)
LOOKS = """interim:
  dsmb_efficacy: true
  analysis: primary_mmrm
  information_fractions: [0.5, 1.0]
  planned_participants: 100
  futility: {threshold: 0.1}
"""


def _plan(tmp_path: Path, interim: str = LOOKS) -> AnalysisPlan:
    lines = SAP.read_text(encoding="utf-8").splitlines(keepends=True)
    start = lines.index("interim:\n")
    end = start + 1
    while lines[end].startswith(" ") or not lines[end].strip():
        end += 1
    path = tmp_path / "sap.yaml"
    path.write_text("".join([*lines[:start], interim, *lines[end:]]), encoding="utf-8")
    return load_sap(path).plan


def _inputs(
    study: Study,
    *,
    closed: bool,
    plan: AnalysisPlan | None,
    history: DsmbHistory | None = None,
    cutoff: date = CUT,
) -> DsmbInputs:
    tables = dict(read_snapshot(study.snapshot).tables)
    if not closed:
        for form in study.protocol.blinding.unblinded_forms:
            tables.pop(form, None)
        return DsmbInputs(
            study.protocol,
            cut_tables(study.protocol, tables, cutoff),
            cutoff,
            plan=plan,
            dsmb_history=history,
        )
    labels = arm_codes(study.protocol, bytes(32))
    arms = read_randomization_list(study.randomization, study.protocol).map(labels)
    return DsmbInputs(
        study.protocol,
        cut_tables(study.protocol, tables, cutoff),
        cutoff,
        arms=arms,
        arm_order=tuple(sorted(labels.values())),
        interim_efficacy=True,
        plan=plan,
        arm_labels=labels,
        dsmb_history=history,
    )


def _values(frame: pd.DataFrame) -> dict[str, str]:
    return dict(zip(frame["Quantity"], frame["Value"], strict=True))


def test_closed_session_shows_boundaries_at_the_observed_fraction_and_its_z(
    study: Study, tmp_path: Path
) -> None:
    plan = _plan(tmp_path)
    section = interim_monitoring_section(_inputs(study, closed=True, plan=plan))
    boundaries, statistic = (t.frame for t in section.tables)
    values = _values(statistic)
    counts = [int(v) for k, v in values.items() if k.startswith("Participants with")]
    fraction = sum(counts) / 100
    assert boundaries["Status"].tolist() == ["This look", "Final analysis"]
    assert float(boundaries["Information fraction"][0]) == pytest.approx(fraction, abs=5e-4)
    # the boundary is the Lan-DeMets O'Brien-Fleming one at that fraction (rpact-checked)
    design = group_sequential_design([fraction, 1.0], alpha=0.025)
    assert float(boundaries["Efficacy boundary (Z)"][0]) == pytest.approx(
        design.critical_values[0], abs=5e-4
    )
    z = float(values["Observed Z (positive favours the experimental arm)"])
    expected_cp = conditional_power(design, look=0, z=z, drift=z / math.sqrt(fraction))
    assert float(values["Conditional power, current trend"]) == pytest.approx(expected_cp, abs=1e-3)
    assert section.figures[0].kind == "interim_boundaries"
    assert draw_figure(section.figures[0], study.protocol).startswith(b"\x89PNG")


def test_observed_z_is_the_experimental_arm_s_benefit(study: Study, tmp_path: Path) -> None:
    # Attack the sign: recompute Z by hand from the unblinded data (lower HAM-D is better).
    plan = _plan(tmp_path)
    inputs = _inputs(study, closed=True, plan=plan)
    endpoint = study.protocol.endpoints.primary
    frame = inputs.tables[endpoint.instrument]
    key = study.protocol.study.record_id_field
    wide = frame.pivot_table(
        index=key, columns="redcap_event_name", values=endpoint.field, aggfunc="first"
    ).astype(float)
    change = (wide[endpoint.event] - wide[endpoint.baseline_event]).dropna()
    names = read_randomization_list(study.randomization, study.protocol)
    arm = names.reindex(change.index.astype(str)).to_numpy()
    treated = change[arm == plan.treatment.experimental_arms[0]]
    control = change[arm == plan.treatment.reference]
    error = math.sqrt(treated.var() / len(treated) + control.var() / len(control))
    expected = -(treated.mean() - control.mean()) / error
    section = interim_monitoring_section(inputs)
    z = float(
        _values(section.tables[1].frame)["Observed Z (positive favours the experimental arm)"]
    )
    assert z == pytest.approx(expected, abs=5e-4)


def test_open_session_gives_only_the_plan_and_the_information_fraction(
    study: Study, tmp_path: Path
) -> None:
    plan = _plan(tmp_path)
    section = interim_monitoring_section(_inputs(study, closed=False, plan=plan))
    assert [t.title for t in section.tables] == ["Planned interim looks"]
    assert section.figures == ()
    text = " ".join(section.paragraphs)
    assert "information fraction of 0." in text
    assert "closed session only" in text
    for word in ("Z =", "boundary (", "Conditional power", "Arm "):
        assert word not in text
    frame = section.tables[0].frame
    assert frame.to_numpy().tolist() == [
        ["Interim look 1", "0.50", "50"],
        ["Final analysis", "1.00", "100"],
    ]


def test_a_plan_without_looks_says_so_in_both_sessions(study: Study, tmp_path: Path) -> None:
    reference = load_sap(SAP).plan
    for closed in (False, True):
        section = interim_monitoring_section(_inputs(study, closed=closed, plan=reference))
        assert section.tables == ()
        assert "prespecifies no interim" in section.paragraphs[0]
    section = interim_monitoring_section(_inputs(study, closed=True, plan=None))
    assert "No analysis plan was supplied" in section.paragraphs[0]


def test_an_earlier_look_recorded_in_the_history_is_counted_as_taken(
    study: Study, tmp_path: Path
) -> None:
    plan = _plan(tmp_path, LOOKS.replace("[0.5, 1.0]", "[0.25, 0.5, 1.0]"))
    history = DsmbHistory.model_validate(
        {"meetings": [{"date": "2026-03-16", "information_fraction": 0.3}]}
    )
    section = interim_monitoring_section(_inputs(study, closed=True, plan=plan, history=history))
    boundaries = section.tables[0].frame
    assert boundaries["Status"].tolist()[:2] == ["Taken", "This look"]
    assert boundaries["Information fraction"][0] == "0.300"


def test_history_sections_list_meetings_before_the_cut_off_and_amendments_since(
    study: Study,
) -> None:
    history = load_dsmb_history(study.protocol.source_file)
    assert history is not None
    for closed in (False, True):
        inputs = _inputs(study, closed=closed, plan=None, history=history)
        recommendations = recommendations_section(inputs)
        meetings, responses = (t.frame for t in recommendations.tables)
        assert meetings["Meeting"].tolist() == ["2025-09-15", "2026-03-16"]
        assert "2026-03-R2" in responses["Id"].tolist()
        amendments = amendments_section(inputs)
        assert amendments.tables[0].frame["Version"].tolist() == ["2.0"]
        # the same tables, as data, in both sessions (nothing here is by arm)
        ids = [
            t["id"] for t in report_data([recommendations, amendments], inputs.facts())["tables"]
        ]
        assert ids == [
            "recommendations.previous-meetings",
            "recommendations.recommendations-and-the-study-s-responses",
            "amendments.protocol-amendments-since-the-last-report",
        ]


def test_an_earlier_cut_off_shows_only_the_meetings_before_it(study: Study) -> None:
    history = load_dsmb_history(study.protocol.source_file)
    inputs = _inputs(study, closed=False, plan=None, history=history, cutoff=date(2025, 12, 31))
    meetings = recommendations_section(inputs).tables[0].frame
    assert meetings["Meeting"].tolist() == ["2025-09-15"]
    amendments = amendments_section(inputs).tables[0].frame
    assert amendments["Version"].tolist() == ["1.1"]


def test_without_a_history_file_both_sections_say_so(study: Study) -> None:
    inputs = _inputs(study, closed=False, plan=None, history=None)
    for build in (recommendations_section, amendments_section):
        section = build(inputs)
        assert section.tables == ()
        assert "No DSMB history is recorded" in section.paragraphs[0]
    empty = dataclasses.replace(inputs, dsmb_history=DsmbHistory())
    assert "first report" in recommendations_section(empty).paragraphs[0]
    assert "No protocol amendment" in amendments_section(empty).paragraphs[0]


def test_information_beyond_the_plan_is_the_final_look(study: Study, tmp_path: Path) -> None:
    # More participants with the endpoint than planned: the look is the final analysis, whose
    # boundary spends all alpha (no earlier look recorded: the fixed-sample 1.96), nothing left
    # to cross later.
    plan = _plan(tmp_path, LOOKS.replace("planned_participants: 100", "planned_participants: 20"))
    section = interim_monitoring_section(_inputs(study, closed=True, plan=plan))
    boundaries = section.tables[0].frame
    assert boundaries.to_numpy().tolist() == [
        ["1", "This look", "1.000", "1.960", "0.0250", "0.02500"]
    ]
    values = _values(section.tables[1].frame)
    assert values["Conditional power, current trend"] == "0.000"
    assert "information fraction of " in section.paragraphs[1]
