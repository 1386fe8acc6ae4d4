"""The statistician's ``report.html``: a results report a reader can rely on (issue 16).

One small study (60 participants, few imputations) is analysed once for the module; each test
reads the report (and the figures it embeds) the way a careless or hostile reader would.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from studyman.analysis import outputs
from studyman.analysis.analyze import analyze
from studyman.analysis.executor import SerialExecutor
from studyman.analysis.lock import lock_sap
from studyman.analysis.sap import load_sap

ROOT = Path(__file__).resolve().parents[2]
SAP = ROOT / "analysis" / "sap.yaml"
PROTOCOL = ROOT / "protocols" / "cbt-adjunct" / "protocol.yaml"
DICTIONARY = ROOT / "protocols" / "cbt-adjunct" / "redcap" / "data_dictionary.csv"
#: the width of the report's content column, in CSS pixels (``max-width`` of the body)
CONTENT_WIDTH_PX = 1100


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from studyman.protocol.loader import load_protocol
    from studyman.sources.offline import import_snapshot
    from studyman.synthetic.generator import generate_trial

    base = tmp_path_factory.mktemp("study")
    protocol = load_protocol(PROTOCOL)
    trial = generate_trial(protocol, n_participants=60, seed=11)
    trial.records.to_csv(base / "records.csv", index=False)
    trial.randomization.to_csv(base / "randomization.csv", index=False)
    snapshot = import_snapshot(
        protocol, base / "records.csv", DICTIONARY, base / "snapshots", name="s1"
    )
    text = SAP.read_text(encoding="utf-8")
    text = text.replace("imputations: 100", "imputations: 4").replace(
        "imputations: 20", "imputations: 3"
    )
    sap = base / "sap.yaml"
    sap.write_text(text, encoding="utf-8")
    lock_sap(sap)
    target = base / "out"
    analyze(
        sap,
        snapshot.path,
        target,
        randomization=base / "randomization.csv",
        executor=SerialExecutor(),
    )
    return target


@pytest.fixture(scope="module")
def report(out: Path) -> str:
    return (out / "report.html").read_text(encoding="utf-8")


def _plan_ids() -> set[str]:
    plan = load_sap(SAP).plan
    ids = {a.id for a in plan.analyses} | {e.id for e in plan.estimands}
    return ids | set(plan.populations)


def _svgs(report: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", report, flags=re.DOTALL)


def _figures(report: str) -> list[str]:
    return re.findall(r"<figure\b.*?</figure>", report, flags=re.DOTALL)


def test_report_is_titled_as_results_with_plan_version_and_lock(report: str) -> None:
    plan = load_sap(SAP).plan
    title = re.search(r"<h1>(.*?)</h1>", report, flags=re.DOTALL)
    assert title is not None
    assert "results of the prespecified analyses" in title.group(1)
    assert "statistical analysis plan" not in title.group(1).lower()
    assert re.search(r"<title>[^<]*results of the prespecified analyses", report)
    under = report[title.end() : title.end() + 600]
    assert f"version {plan.version}" in under
    assert "locked" in under


def test_every_svg_scales_to_the_content_width(report: str) -> None:
    svgs = _svgs(report)
    assert len(svgs) >= 3
    for svg in svgs:
        tag = svg[: svg.index(">") + 1]
        assert re.search(r'viewBox="0 0 [\d.]+ [\d.]+"', tag), tag
        width = re.search(r'\swidth="([^"]*)"', tag)
        assert width is not None, tag
        assert width.group(1) == "100%", tag
        assert not re.search(r'\sheight="[\d.]+pt"', tag), tag
    # and in print: figures never wider than the page, never split across pages
    assert re.search(r"@media print\{.*?figure\{[^}]*break-inside:avoid", report)
    assert re.search(r"svg\{[^}]*max-width:100%", report)
    # a figure taller than a page shrinks to fit one, rather than being cut at its foot
    assert re.search(r"@media print\{.*?svg\{[^}]*max-height:[\d.]+in", report)


def test_no_caption_or_axis_label_is_a_plan_id(report: str) -> None:
    ids = _plan_ids()
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", report, flags=re.DOTALL)
    assert len(captions) >= 3
    for caption in captions:
        assert caption.strip() not in ids
        assert not re.search(r"\.svg\b", caption)
        assert not any(re.search(rf"\b{re.escape(i)}\b", caption) for i in ids if "_" in i)
    # Axis labels and tick labels are drawn as text in the SVG's <title>-less paths; studyman
    # writes every text element's string as a comment (matplotlib's svg backend) -> the
    # figure's own labels are checked through the text of each figure block.
    for figure in _figures(report):
        texts = re.findall(r"<!-- (.*?) -->", figure)
        assert texts, "each figure carries its labels as text"
        for text in texts:
            assert text.strip() not in ids, text
    assert "mi_j2r" not in "".join(captions)
    assert "Multiple imputation, jump to reference" in report or "jump to reference" in report


def test_no_number_in_the_html_has_more_than_six_decimals(report: str) -> None:
    without_svg = re.sub(r"<svg\b.*?</svg>", "", report, flags=re.DOTALL)
    long = re.findall(r"\d+\.\d{7,}", without_svg)
    assert long == []


def test_csv_keeps_full_precision(out: Path) -> None:
    summary = pd.read_csv(out / "results" / "summary.csv", comment="#")
    estimate = summary.loc[summary["analysis"] == "primary_mmrm", "estimate"].iloc[0]
    assert len(repr(float(estimate)).split(".")[1]) > 6


def test_p_values_are_never_p_equals_zero(report: str) -> None:
    assert not re.search(r"p\s*=\s*0(?![.\d])", report)
    assert not re.search(r"p\s*=\s*0\.0+(?!\d)", report)
    assert outputs._format_p(0.0) == "< 0.001"
    assert outputs._format_p(3e-17) == "< 0.001"
    assert outputs._format_p(0.0123) == "0.012"
    assert outputs._format_p(0.5) == "0.500"
    table = outputs._table_html(pd.DataFrame({"term": ["a", "b"], "p_value": [0.0, 1e-9]}))
    assert table.count("&lt; 0.001") == 2
    assert ">0<" not in table


def test_counts_are_integers_and_estimates_fixed_precision() -> None:
    frame = pd.DataFrame(
        {
            "arm": ["A", "B"],
            "participants": [31.0, 29.0],
            "estimate": [7104.119126982805, -3.4082135045962714],
        }
    )
    table = outputs._table_html(frame)
    assert "<td>31</td>" in table
    assert "31.0" not in table
    assert "7104.12" in table
    assert "7104.119126982805" not in table
    assert "-3.41" in table


def test_no_table_is_truncated(report: str) -> None:
    assert not re.search(r"first \d+ of \d+ rows", report)
    frame = pd.DataFrame({"row": range(300), "value": [i / 7 for i in range(300)]})
    table = outputs._table_html(frame)
    assert table.count("<tr>") == 301
    assert "<details" in table  # very long tables fold, but every row is there


def test_time_to_event_is_a_kaplan_meier_figure_with_numbers_at_risk(
    report: str, out: Path
) -> None:
    figures = [f for f in _figures(report) if "Kaplan" in f]
    assert figures, "a Kaplan-Meier figure"
    assert "Number at risk" in figures[0]
    summary = pd.read_csv(out / "results" / "ae_time_to_aesi__summary.csv", comment="#")
    section = report[report.index("id='ae_time_to_aesi'") :]
    section = section[: section.index("<h3", 10)]
    # the curve is a figure, not a 30-row table of event times
    assert "<h4>kaplan meier</h4>" not in section.lower()
    # in this study neither arm's curve falls to one half: both medians are "not reached"
    assert summary["median_days"].isna().sum() == 2
    assert section.count("<td>not reached</td>") == 2
    assert "<td></td>" not in section
    # the numbers at risk: everyone at day 0, as many as the arm's participants, in the figure
    at_risk = pd.read_csv(out / "results" / "ae_time_to_aesi__at_risk.csv", comment="#")
    start = at_risk[at_risk["day"] == 0].set_index("arm")["at_risk"]
    assert start.to_dict() == summary.set_index("arm")["participants"].to_dict()
    texts = re.findall(r"<!-- (.*?) -->", figures[0])
    for count in at_risk["at_risk"]:
        assert str(int(count)) in texts
    assert (at_risk.groupby("arm")["at_risk"].diff().dropna() <= 0).all()


def test_numbers_at_risk_count_those_still_followed() -> None:
    from studyman.analysis.models import at_risk_days, numbers_at_risk

    assert numbers_at_risk([1, 2, 3, 3, 4], [0, 3, 5]) == [5, 3, 0]
    assert at_risk_days(100.0) == [0.0, 14.0, 28.0, 42.0, 56.0, 70.0, 84.0, 98.0]
    assert at_risk_days(20.0) == [0.0, 7.0, 14.0]
    assert at_risk_days(float("nan")) == [0.0]


def test_a_reached_median_is_a_number_and_an_unreached_one_says_so() -> None:
    from studyman.analysis.models import AnalysisOutcome

    outcome = AnalysisOutcome(
        id="tte", kind="ae_time_to_first", role="safety", label="Time to first event", status="ok"
    )
    frame = pd.DataFrame(
        {"arm": ["A", "B"], "participants": [10, 12], "events": [6, 1], "median_days": [42.0, None]}
    )
    table = outputs._outcome_table_html(outcome, "summary", frame)
    assert "<td>42</td>" in table
    assert "<td>not reached</td>" in table


def _measure_kind(measure: str, role: str) -> str:
    text = measure.lower()
    for kind in ("slope", "odds ratio", "rate ratio", "risk difference"):
        if kind in text:
            return f"{role == 'safety'} {kind}"
    return f"{role == 'safety'} difference"


def test_forest_panels_never_mix_kinds_of_effect_measure(report: str, out: Path) -> None:
    plan = load_sap(SAP).plan
    labels = {a.id: a.label for a in plan.analyses}
    summary = pd.read_csv(out / "results" / "summary.csv", comment="#")
    with_effect = summary[(summary["status"] == "ok") & summary["estimate"].notna()]
    kinds = {
        row.analysis: _measure_kind(str(row.measure), str(row.role))
        for row in with_effect.itertuples()
    }
    # the reference study has every kind the issue names: differences at week 12, a slope,
    # efficacy odds ratios and safety rate ratios
    assert {"False difference", "False slope", "False odds ratio", "True rate ratio"} <= set(
        kinds.values()
    )
    forest = [f for f in _figures(report) if "id='forest'" in f]
    assert len(forest) == 1
    panels = re.split(r'<g id="axes_\d+">', forest[0])[1:]
    seen: set[str] = set()
    for panel in panels:
        text = " ".join(re.findall(r"<!-- (.*?) -->", panel))
        shown = {a for a in kinds if labels[a] in text}
        seen |= shown
        assert len({kinds[a] for a in shown}) == 1, {a: kinds[a] for a in shown}
        kind = kinds[next(iter(shown))]
        if "ratio" in kind:
            assert "log scale" in text
        elif "slope" in kind:
            assert "per week" in text
        else:
            assert "Difference" in text or "difference" in text
            assert "per week" not in text
            assert "ratio" not in text.lower()
    assert seen == set(kinds), set(kinds) - seen


def test_kaplan_meier_figure_draws_each_arm_once_with_several_comparisons() -> None:
    """Three arms: the reference arm is in both comparisons' tables, and is drawn once."""
    from studyman.analysis.models import AnalysisOutcome

    rows = []
    risk = []
    for comparison, arms in (("A vs C", ("A", "C")), ("B vs C", ("B", "C"))):
        for arm in arms:
            rows += [
                {"comparison": comparison, "arm": arm, "time": 5.0, "survival": 0.9},
                {"comparison": comparison, "arm": arm, "time": 9.0, "survival": 0.7},
            ]
            risk += [
                {"comparison": comparison, "arm": arm, "day": 0.0, "at_risk": 10},
                {"comparison": comparison, "arm": arm, "day": 7.0, "at_risk": 8},
            ]
    outcome = AnalysisOutcome(
        id="tte",
        kind="ae_time_to_first",
        role="safety",
        label="Time to first event",
        status="ok",
        tables={"kaplan_meier": pd.DataFrame(rows), "at_risk": pd.DataFrame(risk)},
    )
    figure = outputs._km_figure(outcome)
    curves, numbers = figure.axes
    assert [line.get_label() for line in curves.get_lines()] == ["A", "C", "B"]
    assert [list(line.get_ydata()) for line in curves.get_lines()] == [[1.0, 0.9, 0.7, 0.7]] * 3
    assert sorted(text.get_text() for text in numbers.texts) == ["10"] * 3 + ["8"] * 3
