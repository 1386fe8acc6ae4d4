"""The SQLite query log: stable ids, lifecycle, history, responses, imports."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from studyman.errors import ValidationError
from studyman.validation.query_log import Coverage, CoverageError, QueryLog, query_id


def _finding(check: str, record: str, field: str, value: str, message: str = "m") -> dict[str, str]:
    return {
        "check_id": check,
        "severity": "major",
        "message": message,
        "record_id": record,
        "event": "week_1_arm_1",
        "instrument": "vital_signs",
        "instance": "",
        "field": field,
        "value": value,
        "source": "",
        "site": record.split("-")[0],
    }


def _frame(*rows: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


RAN = {"DQ-D", "DQ-G"}


def _status(log: QueryLog) -> dict[str, str]:
    queries = log.queries(as_of="2026-01-10T00:00:00Z")
    return dict(zip(queries["query_id"], queries["status"], strict=True))


def test_query_id_depends_on_the_place_not_on_message_or_value() -> None:
    first = query_id("DQ-D", "S01-0001", "week_1_arm_1", "vital_signs", "", "vs_sbp")
    assert first == query_id("DQ-D", "S01-0001", "week_1_arm_1", "vital_signs", "", "vs_sbp")
    assert first != query_id("DQ-D", "S01-0001", "week_1_arm_1", "vital_signs", "1", "vs_sbp")
    assert first != query_id("DQ-C", "S01-0001", "week_1_arm_1", "vital_signs", "", "vs_sbp")
    assert first.startswith("Q-")


def test_rerun_on_unchanged_findings_creates_nothing_and_keeps_ids(tmp_path: Path) -> None:
    findings = _frame(
        _finding("DQ-D", "S01-0001", "vs_sbp", "300"), _finding("DQ-G", "S02-0001", "sex", "9")
    )
    with QueryLog(tmp_path / "q.sqlite") as log:
        first = log.sync(findings, checks_run=RAN, at="2026-01-01T00:00:00Z")
        before = log.queries()
        second = log.sync(findings, checks_run=RAN, at="2026-01-02T00:00:00Z")
        after = log.queries()
        history = log.history()
    assert len(first.opened) == 2
    assert second.opened == second.reopened == second.closed == ()
    assert list(before["query_id"]) == list(after["query_id"])
    assert list(after["status"]) == ["open", "open"]
    assert len(history) == 2  # one 'opened' entry each, nothing for the unchanged re-run


def test_correcting_data_closes_exactly_those_queries_and_a_return_reopens_the_same_id(
    tmp_path: Path,
) -> None:
    a = _finding("DQ-D", "S01-0001", "vs_sbp", "300")
    b = _finding("DQ-G", "S02-0001", "sex", "9")
    with QueryLog(tmp_path / "q.sqlite") as log:
        log.sync(_frame(a, b), checks_run=RAN, at="2026-01-01T00:00:00Z")
        qa, qb = (
            query_id(
                *(
                    f[k]
                    for k in ("check_id", "record_id", "event", "instrument", "instance", "field")
                )
            )
            for f in (a, b)
        )
        corrected = log.sync(_frame(b), checks_run=RAN, at="2026-01-03T00:00:00Z")
        assert corrected.closed == (qa,)
        assert _status(log) == {qa: "closed", qb: "open"}
        returned = log.sync(_frame(a, b), checks_run=RAN, at="2026-01-05T00:00:00Z")
        assert returned.reopened == (qa,)
        assert returned.opened == ()
        assert _status(log) == {qa: "reopened", qb: "open"}
        actions = list(log.history(qa)["action"])
    assert actions == ["opened", "closed: data corrected", "reopened"]


def test_checks_that_did_not_run_do_not_close_their_queries(tmp_path: Path) -> None:
    arm = _finding("ARM-ADJUNCT-WRONG-ARM", "S01-0002", "", "")
    with QueryLog(tmp_path / "q.sqlite") as log:
        log.sync(_frame(arm), checks_run={"ARM-ADJUNCT-WRONG-ARM"}, at="2026-01-01T00:00:00Z")
        blinded = log.sync(_frame(), checks_run=RAN, at="2026-01-02T00:00:00Z")
        assert blinded.closed == ()
        assert set(_status(log).values()) == {"open"}


def test_confirmed_correct_stays_closed_on_an_unchanged_value_and_reopens_when_it_changes(
    tmp_path: Path,
) -> None:
    finding = _finding("DQ-D", "S01-0001", "vs_sbp", "260")
    with QueryLog(tmp_path / "q.sqlite") as log:
        log.sync(_frame(finding), checks_run=RAN, at="2026-01-01T00:00:00Z")
        (qid,) = _status(log)
        assert log.respond(qid, "confirmed_correct", "checked source", who="site S01") == "closed"
        again = log.sync(_frame(finding), checks_run=RAN, at="2026-01-02T00:00:00Z")
        assert again.reopened == ()
        assert _status(log)[qid] == "closed"
        changed = log.sync(
            _frame({**finding, "value": "270"}), checks_run=RAN, at="2026-01-03T00:00:00Z"
        )
        assert changed.reopened == (qid,)
        history = log.history(qid)
    assert list(history["who"]) == ["studyman validate", "site S01", "studyman validate"]
    assert list(history["at"]) == ["2026-01-01T00:00:00Z", history["at"][1], "2026-01-03T00:00:00Z"]


def test_other_responses_answer_the_query_until_the_data_are_corrected(tmp_path: Path) -> None:
    finding = _finding("DQ-G", "S02-0001", "sex", "9")
    with QueryLog(tmp_path / "q.sqlite") as log:
        log.sync(_frame(finding), checks_run=RAN, at="2026-01-01T00:00:00Z")
        (qid,) = _status(log)
        assert log.respond(qid, "typographical_error", "will fix") == "answered"
        log.sync(_frame(finding), checks_run=RAN, at="2026-01-02T00:00:00Z")
        assert _status(log)[qid] == "answered"
        log.sync(_frame(), checks_run=RAN, at="2026-01-03T00:00:00Z")
        assert _status(log)[qid] == "closed"


def test_queries_and_history_are_never_deleted_or_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    with QueryLog(path) as log:
        log.sync(_frame(_finding("DQ-D", "S01-0001", "vs_sbp", "300")), checks_run=RAN)
    connection = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError, match="never deleted"):
        connection.execute("DELETE FROM queries")
    with pytest.raises(sqlite3.DatabaseError, match="never deleted"):
        connection.execute("DELETE FROM history")
    with pytest.raises(sqlite3.DatabaseError, match="never changed"):
        connection.execute("UPDATE history SET who = 'x'")
    connection.close()


def test_days_open_counts_from_opening_to_now_or_closing(tmp_path: Path) -> None:
    a = _finding("DQ-D", "S01-0001", "vs_sbp", "300")
    b = _finding("DQ-G", "S02-0001", "sex", "9")
    with QueryLog(tmp_path / "q.sqlite") as log:
        log.sync(_frame(a, b), checks_run=RAN, at="2026-01-01T00:00:00Z")
        log.sync(_frame(b), checks_run=RAN, at="2026-01-04T00:00:00Z")
        queries = log.queries(as_of="2026-01-11T00:00:00Z").set_index("check_id")
    assert queries.loc["DQ-D", "days_open"] == 3  # closed after three days
    assert queries.loc["DQ-G", "days_open"] == 10  # still open


def test_respond_rejects_unknown_ids_and_responses(tmp_path: Path) -> None:
    with QueryLog(tmp_path / "q.sqlite") as log:
        log.sync(_frame(_finding("DQ-D", "S01-0001", "vs_sbp", "300")), checks_run=RAN)
        (qid,) = _status(log)
        with pytest.raises(ValidationError, match="unknown response 'fixed'"):
            log.respond(qid, "fixed")
        with pytest.raises(ValidationError, match="Q-NOPE: no such query"):
            log.respond("Q-NOPE", "other")


def test_import_applies_each_response_once_and_all_or_nothing(tmp_path: Path) -> None:
    a = _finding("DQ-D", "S01-0001", "vs_sbp", "300")
    b = _finding("DQ-G", "S02-0001", "sex", "9")
    with QueryLog(tmp_path / "q.sqlite") as log:
        log.sync(_frame(a, b), checks_run=RAN, at="2026-01-01T00:00:00Z")
        ids = list(log.queries()["query_id"])
        sheet = pd.DataFrame(
            {"query_id": ids, "response": ["data_missing", ""], "response_note": ["chart lost", ""]}
        )
        assert log.import_responses(sheet) == 1
        assert log.import_responses(sheet) == 0  # the same sheet again changes nothing
        bad = pd.DataFrame(
            {"query_id": ids, "response": ["other", "not a response"], "response_note": ["x", "y"]}
        )
        with pytest.raises(ValidationError, match="row 3"):
            log.import_responses(bad)
        statuses = _status(log)
        responses = log.queries().set_index("query_id")["response"]
    assert statuses[ids[0]] == "answered"
    assert responses[ids[0]] == "data_missing"  # the failed import applied nothing
    assert statuses[ids[1]] == "open"


def test_another_programs_database_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE patients (id TEXT)")
    with pytest.raises(ValidationError, match=r"not a studyman query log .*patients") as caught:
        QueryLog(path)
    assert str(caught.value).startswith(f"{path}: ")
    with sqlite3.connect(path) as connection:
        names = [row[0] for row in connection.execute("SELECT name FROM sqlite_master")]
    assert names == ["patients"]
    # an empty file and an existing log still open
    QueryLog(tmp_path / "new.sqlite").close()
    QueryLog(tmp_path / "new.sqlite").close()


# ----------------------------------------------------------------------------- medical review


def _hys(value: str = "ALT 250") -> dict[str, str]:
    return {
        **_finding("LIV-HYS", "S01-0003", "lab_alt", value),
        "severity": "critical",
        "instrument": "liver_tests",
    }


def test_a_critical_query_is_not_closed_by_a_site_response_and_is_closed_by_a_review(
    tmp_path: Path,
) -> None:
    with QueryLog(tmp_path / "q.sqlite") as log:
        log.sync(_frame(_hys()), checks_run={"LIV-HYS"}, at="2026-01-01T00:00:00Z")
        (qid,) = _status(log)
        assert log.respond(qid, "confirmed_correct", "labs are right", who="site S01") == "answered"
        assert _status(log)[qid] == "answered"
        # a re-run with the finding unchanged keeps it waiting for the review
        log.sync(_frame(_hys()), checks_run={"LIV-HYS"}, at="2026-01-02T00:00:00Z")
        assert _status(log)[qid] == "answered"
        status = log.review(
            qid,
            "accepted",
            reviewer="Dr Medical Monitor",
            note="assessed",
            at="2026-01-03T00:00:00Z",
        )
        assert status == "closed"
        # accepted: stays closed while the value is unchanged
        again = log.sync(_frame(_hys()), checks_run={"LIV-HYS"}, at="2026-01-04T00:00:00Z")
        assert again.reopened == ()
        history = log.history(qid)
    last = history.iloc[-1]
    assert (last["who"], last["action"], last["status_after"], last["note"]) == (
        "Dr Medical Monitor",
        "review: accepted",
        "closed",
        "assessed",
    )
    assert last["at"] == "2026-01-03T00:00:00Z"


def test_corrected_data_leave_a_safety_query_awaiting_review_and_a_return_reopens_it(
    tmp_path: Path,
) -> None:
    with QueryLog(tmp_path / "q.sqlite") as log:
        log.sync(_frame(_hys()), checks_run={"LIV-HYS"}, at="2026-01-01T00:00:00Z")
        (qid,) = _status(log)
        corrected = log.sync(_frame(), checks_run={"LIV-HYS"}, at="2026-01-02T00:00:00Z")
        assert corrected.closed == ()
        assert corrected.awaiting_review == (qid,)
        assert _status(log)[qid] == "answered"
        still = log.sync(_frame(), checks_run={"LIV-HYS"}, at="2026-01-03T00:00:00Z")
        assert still.awaiting_review == ()  # recorded once
        back = log.sync(_frame(_hys()), checks_run={"LIV-HYS"}, at="2026-01-04T00:00:00Z")
        assert back.opened == ()
        assert _status(log)[qid] == "reopened"
        actions = list(log.history(qid)["action"])
    assert actions == ["opened", "data corrected: awaiting medical review", "reopened"]


def test_a_rejected_review_sends_the_query_back_to_the_site(tmp_path: Path) -> None:
    with QueryLog(tmp_path / "q.sqlite") as log:
        log.sync(_frame(_hys()), checks_run={"LIV-HYS"}, at="2026-01-01T00:00:00Z")
        (qid,) = _status(log)
        log.respond(qid, "other", "not an injury")
        assert log.review(qid, "rejected", reviewer="Dr M", note="need ALP") == "reopened"
        assert log.review(qid, "accepted", reviewer="Dr M") == "closed"
        assert log.review(qid, "rejected", reviewer="Dr M", note="new labs") == "reopened"
        with pytest.raises(ValidationError, match="unknown decision 'ok'"):
            log.review(qid, "ok", reviewer="Dr M")
        with pytest.raises(ValidationError, match="reviewer"):
            log.review(qid, "accepted", reviewer="  ")
        with pytest.raises(ValidationError, match="Q-NOPE: no such query"):
            log.review("Q-NOPE", "accepted", reviewer="Dr M")
        log.review(qid, "accepted", reviewer="Dr M")
        with pytest.raises(ValidationError, match="already closed"):
            log.review(qid, "accepted", reviewer="Dr M")


def test_an_imported_confirmation_of_a_critical_query_only_answers_it(tmp_path: Path) -> None:
    minor = _finding("DQ-D", "S01-0001", "vs_sbp", "300")
    with QueryLog(tmp_path / "q.sqlite") as log:
        log.sync(_frame(minor, _hys()), checks_run={"DQ-D", "LIV-HYS"}, at="2026-01-01T00:00:00Z")
        ids = dict(zip(log.queries()["check_id"], log.queries()["query_id"], strict=True))
        sheet = pd.DataFrame(
            {"query_id": list(ids.values()), "response": ["confirmed_correct"] * 2}
        )
        assert log.import_responses(sheet) == 2
        statuses = _status(log)
    assert statuses[ids["DQ-D"]] == "closed"
    assert statuses[ids["LIV-HYS"]] == "answered"


# ------------------------------------------------------------------------------------ coverage


def _coverage(records: set[str], fields: set[str], **extra: object) -> Coverage:
    rows = frozenset((record, "week_1_arm_1", "", "") for record in records)
    return Coverage(
        records=frozenset(records),
        events=frozenset({"week_1_arm_1"}),
        fields=frozenset(("vital_signs", name) for name in fields),
        sites=frozenset(record.split("-")[0] for record in records),
        rows=rows,
        **extra,  # type: ignore[arg-type]
    )


def test_a_query_closes_only_where_the_input_holds_its_place(tmp_path: Path) -> None:
    a = _finding("DQ-D", "S01-0001", "vs_sbp", "300")
    b = _finding("DQ-D", "S02-0001", "vs_sbp", "300")
    c = _finding("DQ-G", "S01-0001", "vs_dbp", "9")
    with QueryLog(tmp_path / "q.sqlite") as log:
        log.sync(
            _frame(a, b, c),
            checks_run=RAN,
            coverage=_coverage({"S01-0001", "S02-0001"}, {"vs_sbp", "vs_dbp"}),
            at="2026-01-01T00:00:00Z",
        )
        ids = {(q.record_id, q.field): q.query_id for q in log.queries().itertuples()}
        # S02-0001 and the field vs_dbp are not in this partial input: only a can close
        result = log.sync(
            _frame(),
            checks_run=RAN,
            coverage=_coverage({"S01-0001"}, {"vs_sbp"}),
            partial=True,
            at="2026-01-02T00:00:00Z",
        )
        notes = dict(zip(log.history()["query_id"], log.history()["note"], strict=False))
    assert result.closed == (ids[("S01-0001", "vs_sbp")],)
    assert set(result.kept) == {ids[("S02-0001", "vs_sbp")], ids[("S01-0001", "vs_dbp")]}
    assert notes[ids[("S02-0001", "vs_sbp")]] == "record S02-0001 not in the input"
    assert notes[ids[("S01-0001", "vs_dbp")]] == "field vs_dbp not in the input"


def test_less_coverage_than_the_last_complete_run_is_refused_unless_partial(
    tmp_path: Path,
) -> None:
    full = _coverage({"S01-0001", "S02-0001"}, {"vs_sbp", "vs_dbp"})
    with QueryLog(tmp_path / "q.sqlite") as log:
        log.sync(_frame(), checks_run=RAN, coverage=full, at="2026-01-01T00:00:00Z")
        less = _coverage({"S01-0001"}, {"vs_sbp"})
        with pytest.raises(CoverageError) as refused:
            log.sync(_frame(), checks_run=RAN, coverage=less, source="cut.csv")
        # a partial run is not the reference for the next one
        log.sync(_frame(), checks_run=RAN, coverage=less, partial=True)
        with pytest.raises(CoverageError):
            log.sync(_frame(), checks_run=RAN, coverage=less)
        log.sync(_frame(), checks_run=RAN, coverage=full)
    assert str(refused.value) == (
        "cut.csv: covers less than the query log's last complete run (2026-01-01T00:00:00Z): "
        "1 of 2 sites (DAGs) missing (S02); 1 of 2 participants missing (S02-0001); "
        "1 fields missing (vs_dbp); nothing was changed (validate the complete export, or run "
        "with --partial to close only the queries inside this input)"
    )


def test_a_field_outside_the_runs_view_is_not_demanded_of_it(tmp_path: Path) -> None:
    # an unblinded run saw a field the blinded view leaves out (a masked field): the blinded run
    # after it is not short of it, but is short of a field its own view has
    full = _coverage({"S01-0001"}, {"vs_sbp", "vs_dbp"})
    view = frozenset({("vital_signs", "vs_sbp")})
    blinded = _coverage({"S01-0001"}, {"vs_sbp"}, expected=view)
    with QueryLog(tmp_path / "q.sqlite") as log:
        log.sync(_frame(), checks_run=RAN, coverage=full, at="2026-01-01T00:00:00Z")
        log.sync(_frame(), checks_run=RAN, coverage=blinded, at="2026-01-02T00:00:00Z")
        narrower = _coverage({"S01-0001"}, set(), expected=view, lacking=frozenset({"vs_sbp"}))
        with pytest.raises(CoverageError, match=r"1 forms missing \(vital_signs\)"):
            log.sync(_frame(), checks_run=RAN, coverage=narrower)


def test_a_log_held_by_another_run_is_a_one_line_error_and_changes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "q.sqlite"
    with QueryLog(path) as log:
        log.sync(_frame(_finding("DQ-D", "S01-0001", "vs_sbp", "300")), checks_run=RAN)
    holder = sqlite3.connect(path, timeout=0, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process in the middle of its run
    try:
        with QueryLog(path) as log:
            log._connection.execute("PRAGMA busy_timeout = 0")
            with pytest.raises(ValidationError, match=r"another run or import") as busy:
                log.sync(_frame(), checks_run=RAN)
            assert str(busy.value).startswith(f"{path}: ")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with QueryLog(path) as log:
        assert set(_status(log).values()) == {"open"}
