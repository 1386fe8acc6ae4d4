"""Every number of the DSMB report is the facts' number (issue 12).

Both sessions are rendered (HTML only) from one snapshot with the analysis plan and the query
log of a real validation run made after the data cut-off, as in practice. Each table that
restates a fact is read back from ``dsmb-<session>-<cutoff>.json`` and compared with
``facts.json``; per-arm counts are added up against the total; the JSON is compared cell by
cell with the HTML; query ages are attacked with queries raised after the cut-off and an as-of
time before they were raised.
"""

from __future__ import annotations

import dataclasses
import html as html_module
import json
import re
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from studyman.analysis.sap import load_sap
from studyman.cli import main
from studyman.errors import SourceError
from studyman.facts import DEFAULT_RULES, rule_texts, rules_from_plan
from studyman.reporting.report import render_dsmb_report
from studyman.validation import validate_study
from studyman.validation.query_log import QueryLog

from .conftest import SAP, Study, shared_dir

CUTOFF = "2026-09-30"
# the validation run that raised the queries, ten days after the cut-off
RAISED = "2026-10-10T09:00:00Z"
AS_OF = datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC)  # 21.6 days after RAISED


@dataclasses.dataclass(frozen=True)
class Session:
    name: str
    folder: Path
    facts_document: dict[str, Any]
    data: dict[str, Any]
    html: str

    @property
    def facts(self) -> dict[str, Any]:
        return dict(self.facts_document["facts"])

    def table(self, table_id: str) -> dict[str, Any]:
        found = [table for table in self.data["tables"] if table["id"] == table_id]
        assert len(found) == 1, (table_id, [t["id"] for t in self.data["tables"]])
        return found[0]


def _load(folder: Path, session: str) -> Session:
    return Session(
        session,
        folder,
        json.loads((folder / "facts.json").read_text(encoding="utf-8")),
        json.loads((folder / f"dsmb-{session}-{CUTOFF}.json").read_text(encoding="utf-8")),
        (folder / f"dsmb-{session}-{CUTOFF}.html").read_text(encoding="utf-8"),
    )


@pytest.fixture(scope="module")
def reports(study: Study, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Session]:
    def build(out: Path) -> None:
        validate_study(study.protocol, study.snapshot, out / "validation", at=RAISED)
        for session in ("open", "closed"):
            render_dsmb_report(
                study.protocol,
                study.snapshot,
                out / session,
                session=session,  # type: ignore[arg-type]
                randomization=study.randomization if session == "closed" else None,
                query_log=out / "validation" / "queries.sqlite",
                sap=SAP,
                pdf=False,
                as_of=AS_OF,
            )

    out = shared_dir(tmp_path_factory, "dsmb-facts", build)
    return {session: _load(out / session, session) for session in ("open", "closed")}


def _count(cell: str) -> int:
    match = re.match(r"\s*(\d+)", cell)
    assert match is not None, cell
    return int(match.group(1))


def _total_column(table: dict[str, Any]) -> int:
    totals = [i for i, column in enumerate(table["columns"]) if column.startswith("Total")]
    assert totals, table["columns"]
    return totals[0]


def _row(table: dict[str, Any], label: str) -> list[str]:
    rows = [row for row in table["rows"] if row[0].strip() == label]
    assert len(rows) == 1, (table["id"], label, [row[0] for row in table["rows"]])
    return list(rows[0])


def _total(table: dict[str, Any], label: str) -> int:
    return _count(_row(table, label)[_total_column(table)])


# --------------------------------------------------------------------- totals are the facts


def test_facts_table_restates_facts_json(reports: dict[str, Session]) -> None:
    for report in reports.values():
        table = report.table("summary.study-facts-at-the-data-cut-off")
        shown = {row[1]: row[-1] for row in table["rows"]}
        facts = report.facts
        assert set(shown) == {key for key in facts if not key.endswith("_by_arm")}
        for key, value in facts.items():
            if not key.endswith("_by_arm"):
                assert shown[key] == (f"{value:g}" if isinstance(value, float) else str(value))
        assert report.data["facts"] == facts  # the report's JSON carries the same facts


def test_every_table_total_equals_the_fact_it_restates(reports: dict[str, Session]) -> None:
    for report in reports.values():
        facts = report.facts
        flow = report.table("status.participant-flow-after-randomisation")
        assert _total(flow, "Allocated") == facts["randomised"]
        assert (
            _total(flow, "Received allocated intervention (safety population)")
            == facts["safety_population"]
        )
        assert _total(flow, "Discontinued the study (any reason)") == facts["discontinued_study"]
        assert _total(flow, "Discontinued study treatment") == facts["discontinued_treatment"]
        assert (
            _total(flow, "Discontinued the study due to an adverse event")
            == facts["discontinued_due_to_ae"]
        )
        reasons = report.table("status.discontinuations-by-reason")
        assert _total(reasons, "All reasons") == facts["discontinued_study"]
        per_reason = [_count(row[-1]) for row in reasons["rows"] if row[0] != "All reasons"]
        assert sum(per_reason) == facts["discontinued_study"]
        retention = report.table("retention.retention")
        assert _total(retention, "Discontinued the study") == facts["discontinued_study"]
        visits = report.table("retention.scheduled-visits-done-due")
        total = _total_column(visits)
        cells = [row[total].split(" ")[0].split("/") for row in visits["rows"]]
        assert sum(int(done) for done, _ in cells) == facts["visits_done"]
        assert sum(int(due) for _, due in cells) == facts["visits_due"]
        stopped = report.table("discontinuations.discontinuations")
        assert _total(stopped, "Discontinued the study (any reason)") == facts["discontinued_study"]
        assert _total(stopped, "Discontinued study treatment") == facts["discontinued_treatment"]
        assert (
            _total(stopped, "Discontinued the study due to an adverse event")
            == facts["discontinued_due_to_ae"]
        )
        overview = report.table("adverse-events.overview-of-adverse-events")
        assert _total(overview, "Any adverse event") == facts["teae_participants"]
        assert _total(overview, "Number of events") == facts["teae_events"]
        assert _total(overview, "Any serious adverse event") == facts["serious_ae_participants"]
        assert _total(overview, "Death (any cause)") <= facts["deaths"]
        assert (
            _total(overview, "Discontinued the study due to an adverse event")
            <= facts["discontinued_due_to_ae"]
        )
        assert f"Total (N={facts['safety_population']})" in overview["columns"]
        soc = report.table("adverse-events.adverse-events-by-system-organ-class-and-preferred-term")
        total = _total_column(soc)
        top_level = [row for row in soc["rows"] if not row[0].startswith(" ")]
        assert sum(int(row[total + 1]) for row in top_level) == facts["teae_events"]
        sae = report.table("sae.serious-adverse-events-and-deaths")
        assert (
            _total(sae, "Participants with a serious treatment-emergent adverse event")
            == facts["serious_ae_participants"]
        )
        assert _total(sae, "Deaths (any cause)") == facts["deaths"]
        deviations = report.table("protocol-deviations.protocol-deviations-by-category")
        events_cell = _row(deviations, "All categories")[-1]
        assert events_cell == f"{facts['deviations']} ({facts['major_deviations']})"
        by_site = report.table("protocol-deviations.protocol-deviations-by-site")
        all_sites = _row(by_site, "All sites")
        assert all_sites[1:3] == [str(facts["deviations"]), str(facts["major_deviations"])]
        assert sum(int(row[1]) for row in by_site["rows"][:-1]) == facts["deviations"]
        queries = report.table("data-quality.open-site-queries-by-site-and-age")
        everyone = _row(queries, "All sites")
        position = {column: i for i, column in enumerate(queries["columns"])}
        assert int(everyone[position["open"]]) == facts["site_queries_open"]
        assert float(everyone[position["median days open"]]) == facts["median_days_open"]
        assert sum(int(row[position["open"]]) for row in queries["rows"][:-1]) == int(
            everyone[position["open"]]
        )
        assert f"{facts['site_queries_open']} site queries open" in report.html
        assert f"{facts['review_signals_open']} review signals open" in report.html
        assert (
            f"the safety population holds {facts['safety_population']} participants" in report.html
        )


def test_the_study_has_something_to_count(reports: dict[str, Session]) -> None:
    # the comparisons above mean little on zeros: the generated study has each kind of fact
    facts = reports["closed"].facts
    for key in (
        "teae_events",
        "serious_ae_participants",
        "deaths",
        "discontinued_study",
        "discontinued_due_to_ae",
        "deviations",
        "site_queries_open",
        "review_signals_open",
    ):
        assert facts[key] > 0, key


def test_view_independent_facts_agree_between_the_sessions(reports: dict[str, Session]) -> None:
    blinded, unblinded = reports["open"].facts, reports["closed"].facts
    for key in (
        "screened",
        "eligible",
        "randomised",
        "itt_population",
        "mitt_population",
        "pp_population",
        "deaths",
        "discontinued_treatment",
        "discontinued_study",
        "discontinued_due_to_ae",
        "deviations",
        "major_deviations",
        "participants_with_major_deviation",
        "site_queries_open",
        "review_signals_open",
        "median_days_open",
    ):
        assert blinded[key] == unblinded[key], key
    # treated is view-dependent: the closed view also sees doses taken without a CBT session
    assert blinded["safety_population"] <= unblinded["safety_population"]


# ---------------------------------------------------------------------- arms add up to total


def _arm_columns(table: dict[str, Any], arms: list[str]) -> tuple[list[list[int]], list[int]]:
    """Column positions per arm and of the total, for tables with one or more columns a group."""
    columns = table["columns"]
    starts = [
        next(i for i, c in enumerate(columns) if c.startswith(f"{label} (N=") or c == label)
        for label in [*arms, "Total"]
    ]
    width = starts[1] - starts[0]
    groups = [list(range(start, start + width)) for start in starts]
    return groups[:-1], groups[-1]


ADDITIVE = (
    "summary.study-facts-at-the-data-cut-off",
    "status.participant-flow-after-randomisation",
    "status.discontinuations-by-reason",
    "retention.retention",
    "protocol-deviations.protocol-deviations-by-category",
    "adverse-events.overview-of-adverse-events",
    "adverse-events.adverse-events-by-system-organ-class-and-preferred-term",
    "adverse-events.participants-by-worst-severity",
    "sae.serious-adverse-events-and-deaths",
    "discontinuations.discontinuations",
)


def test_counts_by_arm_sum_to_the_pooled_count(reports: dict[str, Session]) -> None:
    closed = reports["closed"]
    arms = sorted(closed.facts["randomised_by_arm"])
    assert arms == ["Arm A", "Arm B"]
    checked = 0
    for table_id in ADDITIVE:
        table = closed.table(table_id)
        per_arm, total = _arm_columns(table, arms)
        for row in table["rows"]:
            for offset, column in enumerate(total):
                cells = [row[group[offset]] for group in per_arm]
                if not re.match(r"\s*\d", row[column]) or any(c == "–" for c in cells):
                    continue
                assert sum(_count(c) for c in cells) == _count(row[column]), (table_id, row)
                checked += 1
    assert checked > 40
    for key, by_arm in closed.facts.items():
        if key.endswith("_by_arm"):
            assert sum(by_arm.values()) == closed.facts[key.removesuffix("_by_arm")], key


def test_open_session_json_holds_no_per_arm_value(
    study: Study, reports: dict[str, Session]
) -> None:
    report = reports["open"]
    assert report.facts_document["view"] == "blinded"
    assert report.facts_document["output"] == "dsmb-open"
    assert not [key for key in report.facts if key.endswith("_by_arm")]
    text = json.dumps(report.data) + json.dumps(report.facts_document)
    for arm in study.protocol.arms.items:
        assert arm.name not in text
        assert f"Arm {arm.closed_report_code}" not in text
    for table in report.data["tables"]:
        groups = [c for c in table["columns"] if re.search(r"\(N=\d+\)", c)]
        assert all(c.startswith("Total") for c in groups), table["id"]
        assert "Participant" not in table["columns"], table["id"]  # the listings stay withheld
    assert reports["closed"].facts_document["view"] == "unblinded"


# ------------------------------------------------------------------------ the JSON as written


def _html_tables(html: str) -> dict[str, list[list[str]]]:
    """Table id → rows of cells, read from the HTML (header row first)."""
    found: dict[str, list[list[str]]] = {}
    for match in re.finditer(r'<h3 id="([^"]+)">(.*?)(?=<h3 |</section>)', html, re.S):
        body = match.group(2)
        head = [html_module.unescape(c) for c in re.findall(r"<th>(.*?)</th>", body, re.S)]
        rows = [
            [html_module.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body.split("</thead>")[-1], re.S)
        ]
        found[match.group(1)] = [head, *rows] if head else []
    return found


def test_report_json_round_trips_and_matches_the_html_cell_by_cell(
    reports: dict[str, Session],
) -> None:
    for report in reports.values():
        path = report.folder / f"dsmb-{report.name}-{CUTOFF}.json"
        text = path.read_text(encoding="utf-8")
        assert json.loads(json.dumps(report.data)) == report.data
        assert json.dumps(report.data, indent=2, ensure_ascii=False) + "\n" == text
        ids = [table["id"] for table in report.data["tables"]]
        assert len(ids) == len(set(ids)) > 20
        assert all(re.fullmatch(r"[a-z0-9-]+\.[a-z0-9-]+", i) for i in ids), ids
        html_tables = _html_tables(report.html)
        assert list(html_tables) == ids
        for table in report.data["tables"]:
            assert set(table) == {"id", "title", "columns", "rows", "footnote"}
            shown = html_tables[table["id"]]
            if not table["rows"]:
                assert shown == []
                continue
            assert shown[0] == table["columns"], table["id"]
            # the HTML strips the indentation of row labels into a CSS class
            assert [[c.strip() for c in row] for row in table["rows"]] == shown[1:], table["id"]


def test_closed_session_json_files_are_owner_only(reports: dict[str, Session]) -> None:
    closed = reports["closed"].folder
    for name in ("facts.json", f"dsmb-closed-{CUTOFF}.json"):
        assert stat.S_IMODE((closed / name).stat().st_mode) == 0o600, name
    opened = reports["open"].folder
    assert stat.S_IMODE((opened / "facts.json").stat().st_mode) == 0o644


# ------------------------------------------------------------------------------- definitions


def test_report_states_the_plans_definitions_in_the_facts_words(
    reports: dict[str, Session],
) -> None:
    rules = rules_from_plan(load_sap(SAP).plan)
    for report in reports.values():
        table = report.table("definitions.definitions")
        assert [tuple(row) for row in table["rows"]] == rule_texts(rules)
        assert report.facts_document["rules"]["definitions"] == dict(rule_texts(rules))
        assert "As the analysis plan declares them (analysis plan version" in report.html
        for term, definition in rule_texts(rules):
            assert f"{term}</td><td>{definition}</td>" in html_module.unescape(report.html)


def test_without_a_plan_the_report_says_it_uses_the_default_definitions(
    study: Study, tmp_path: Path
) -> None:
    report = render_dsmb_report(
        study.protocol, study.snapshot, tmp_path, session="open", pdf=False, as_of=AS_OF
    )
    html = report.html.read_text(encoding="utf-8")
    assert "No analysis plan was supplied (--sap)" in html
    document = json.loads((tmp_path / "facts.json").read_text(encoding="utf-8"))
    assert document["rules"]["source"] == DEFAULT_RULES.source
    assert document["rules"]["definitions"] == dict(rule_texts(DEFAULT_RULES))


# --------------------------------------------------------------------------------- query age


def test_query_age_counts_to_the_as_of_time_not_the_cut_off(reports: dict[str, Session]) -> None:
    # raised on 2026-10-10 09:00, ten days after the cut-off: counted to the cut-off the ages
    # would be negative; to the as-of time (2026-10-31 23:59:59) they are 21 days
    for report in reports.values():
        assert report.facts_document["as_of"] == "2026-10-31T23:59:59+00:00"
        assert report.facts["median_days_open"] == 21.0
        table = report.table("data-quality.open-site-queries-by-site-and-age")
        everyone = _row(table, "All sites")
        position = {column: i for i, column in enumerate(table["columns"])}
        assert everyone[position["8-30 days"]] == everyone[position["open"]]
        assert "Ages count to 2026-10-31 23:59 UTC" in report.html


def test_query_age_is_never_negative_with_as_of_before_the_queries_were_raised(
    study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "queries.sqlite"
    validate_study(
        study.protocol, study.snapshot, tmp_path / "validation", query_log=log, at=RAISED
    )
    main(
        [
            "report", "dsmb", "--session", "open", "--snapshot", str(study.snapshot),
            "--out", str(tmp_path / "out"), "--query-log", str(log), "--no-pdf",
            "--as-of", "2026-10-05",
        ]
    )  # fmt: skip
    assert "facts: " in capsys.readouterr().out
    document = json.loads((tmp_path / "out" / "facts.json").read_text(encoding="utf-8"))
    assert document["as_of"] == "2026-10-05T23:59:59+00:00"
    assert document["facts"]["site_queries_open"] > 0
    assert document["facts"]["median_days_open"] == 0.0
    data = json.loads((tmp_path / "out" / f"dsmb-open-{CUTOFF}.json").read_text(encoding="utf-8"))
    table = next(t for t in data["tables"] if t["id"].startswith("data-quality.open-site"))
    position = {column: i for i, column in enumerate(table["columns"])}
    for row in table["rows"]:
        assert float(row[position["median days open"]]) == 0.0, row
        assert row[position["0-7 days"]] == row[position["open"]], row
    with QueryLog(log) as opened:
        # the log itself, read to the same moment, would give negative ages: the facts clip them
        assert (opened.queries(as_of="2026-10-05T23:59:59+00:00")["days_open"] < 0).all()


def test_as_of_that_is_not_a_date_is_refused_in_one_line(
    study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        main(
            [
                "report", "dsmb", "--session", "open", "--snapshot", str(study.snapshot),
                "--out", str(tmp_path), "--no-pdf", "--as-of", "last tuesday",
            ]
        )  # fmt: skip
    assert refused.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--as-of 'last tuesday'" in err[0]
    assert not (tmp_path / "facts.json").exists()


# ------------------------------------------------------------------------ one folder, one set


def test_a_session_refuses_a_folder_holding_the_other_sessions_facts(
    study: Study, tmp_path: Path
) -> None:
    render_dsmb_report(
        study.protocol, study.snapshot, tmp_path, session="open", pdf=False, as_of=AS_OF
    )
    before = (tmp_path / "facts.json").read_bytes()
    with pytest.raises(SourceError, match="facts of dsmb-open, not of dsmb-closed"):
        render_dsmb_report(
            study.protocol,
            study.snapshot,
            tmp_path,
            session="closed",
            randomization=study.randomization,
            pdf=False,
            as_of=AS_OF,
        )
    assert (tmp_path / "facts.json").read_bytes() == before
    assert not (tmp_path / f"dsmb-closed-{CUTOFF}.html").exists()
    # the same session again replaces its own facts
    render_dsmb_report(
        study.protocol, study.snapshot, tmp_path, session="open", pdf=False, as_of=AS_OF
    )
    assert json.loads((tmp_path / "facts.json").read_text())["output"] == "dsmb-open"
