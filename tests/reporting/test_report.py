"""The DSMB report end to end: files, the blind, page furniture, PDF pages and Chromium.

The reports are rendered once per test session (fixtures below) and looked at from several
angles: the PDF's text page by page (pypdf), its pages as images (pypdfium2), and the HTML in
headless Chromium (a screenshot and no console message).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pypdf import PdfReader

from studyman import __version__
from studyman.analysis.sap import load_sap
from studyman.cli import main
from studyman.errors import SourceError
from studyman.reporting.report import DsmbReport, render_dsmb_report
from studyman.sources.snapshot import MANIFEST_NAME, SNAPSHOT_ID_NAME, manifest_id, snapshot_id
from studyman.validation.query_log import QueryLog

from .conftest import SAP, Study, shared_dir

CUTOFF = "2026-09-30"
# a fixed as-of time: the query ages (and so the report) do not depend on when the test runs
AS_OF = datetime(2026, 10, 20, 12, 0, tzinfo=UTC)


@dataclasses.dataclass(frozen=True)
class Rendered:
    open_with: DsmbReport
    open_without: DsmbReport
    closed: DsmbReport


def _report(out: Path, session: str) -> DsmbReport:
    """The DsmbReport of a report rendered (once per run) into *out*."""
    stem = f"dsmb-{session}-{CUTOFF}"
    return DsmbReport(
        html=out / f"{stem}.html",
        pdf=out / f"{stem}.pdf",
        session=session,
        cutoff=date.fromisoformat(CUTOFF),
        snapshot_sha256=(out / "snapshot.sha256").read_text(),
        arm_key=None
        if (out / "key.txt").read_text() == "None"
        else Path((out / "key.txt").read_text()),
        arm_key_fingerprint=None
        if (out / "fingerprint.txt").read_text() == "None"
        else (out / "fingerprint.txt").read_text(),
        arm_key_created=False,
        safety_population=int((out / "safety.txt").read_text()),
        sections=(),
        incomplete=(),
        facts=out / "facts.json",
        data=out / f"{stem}.json",
        as_of=AS_OF,
    )


@pytest.fixture(scope="session")
def rendered(study: Study, tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    def build(out: Path) -> None:
        reports = {
            "open-with": render_dsmb_report(
                study.protocol,
                study.snapshot,
                out / "open-with",
                session="open",
                randomization=study.randomization,
                sap=SAP,
                as_of=AS_OF,
            ),
            "open-without": render_dsmb_report(
                study.protocol,
                study.snapshot,
                out / "open-without",
                session="open",
                sap=SAP,
                as_of=AS_OF,
            ),
            "closed": render_dsmb_report(
                study.protocol,
                study.snapshot,
                out / "closed",
                session="closed",
                randomization=study.randomization,
                sap=SAP,
                as_of=AS_OF,
            ),
        }
        for name, report in reports.items():
            (out / name / "safety.txt").write_text(str(report.safety_population))
            (out / name / "snapshot.sha256").write_text(report.snapshot_sha256)
            (out / name / "key.txt").write_text(str(report.arm_key))
            (out / name / "fingerprint.txt").write_text(str(report.arm_key_fingerprint))

    out = shared_dir(tmp_path_factory, "dsmb-reports", build)
    return Rendered(
        _report(out / "open-with", "open"),
        _report(out / "open-without", "open"),
        _report(out / "closed", "closed"),
    )


def _pdf_pages(path: Path) -> list[str]:
    return [page.extract_text() or "" for page in PdfReader(path).pages]


def _html_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _forbidden_arm_strings(study: Study) -> list[str]:
    arms = study.protocol.arms.items
    randomisation = pd.read_csv(study.randomization, dtype=str)
    return [
        *[arm.name for arm in arms],
        *[arm.short_name for arm in arms if arm.short_name and "+" in arm.short_name],
        *[f"Arm {arm.closed_report_code}" for arm in arms],
        "rand_arm",
        *randomisation["rand_number"].head(20).tolist(),
    ]


def test_open_report_is_the_same_with_or_without_the_randomisation_file(
    rendered: Rendered,
) -> None:
    a, b = rendered.open_with, rendered.open_without
    assert a.html.name == b.html.name == f"dsmb-open-{CUTOFF}.html"
    assert a.pdf is not None
    assert b.pdf is not None
    assert a.html.read_bytes() == b.html.read_bytes()
    assert a.pdf.read_bytes() == b.pdf.read_bytes()
    assert a.data is not None
    assert b.data is not None
    assert a.data.read_bytes() == b.data.read_bytes()
    assert a.facts is not None
    assert b.facts is not None
    assert a.facts.read_bytes() == b.facts.read_bytes()
    assert a.arm_key is None


def test_html_is_self_contained(rendered: Rendered) -> None:
    html = _html_text(rendered.closed.html)
    sources = re.findall(r'(?:src|href)="([^"#][^"]*)"', html)
    # every figure, and nothing else, is a source: embedded PNGs
    assert len(sources) == html.count("<img ") >= 5
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    assert "http" not in html
    assert "<link" not in html
    assert "@import" not in html


def test_open_session_never_opens_the_randomisation_file(study: Study, tmp_path: Path) -> None:
    # A path that cannot be read: any attempt to open or hash it would raise.
    absent = tmp_path / "no-such-randomization.csv"
    report = render_dsmb_report(
        study.protocol,
        study.snapshot,
        tmp_path / "out",
        session="open",
        randomization=absent,
        pdf=False,
    )
    assert report.html.is_file()
    assert report.arm_key is None
    assert not absent.exists()


def test_open_report_names_no_arm_in_html_or_pdf(study: Study, rendered: Rendered) -> None:
    html = _html_text(rendered.open_with.html)
    assert rendered.open_with.pdf is not None
    pdf_text = "\n".join(_pdf_pages(rendered.open_with.pdf))
    for forbidden in _forbidden_arm_strings(study):
        assert forbidden not in html, forbidden
        assert forbidden not in pdf_text, forbidden
    # The closed report, by contrast, does carry the coded arms.
    assert "Arm A" in _html_text(rendered.closed.html)


def test_every_pdf_page_carries_session_cutoff_and_page_x_of_y(rendered: Rendered) -> None:
    for report, session in ((rendered.open_with, "OPEN"), (rendered.closed, "CLOSED")):
        assert report.pdf is not None
        pages = _pdf_pages(report.pdf)
        assert 8 <= len(pages) <= 40
        for number, text in enumerate(pages, start=1):
            assert f"{session} SESSION" in text, number
            assert f"Data cut-off {CUTOFF}" in text, number
            assert f"Page {number} of {len(pages)}" in text, number


def test_title_page_names_snapshot_id_plan_version_and_studyman_version(
    study: Study, rendered: Rendered
) -> None:
    assert rendered.closed.pdf is not None
    first = _pdf_pages(rendered.closed.pdf)[0]
    flat = first.replace("\n", " ")
    # the snapshot's identity (sha256 of its canonical manifest), as the analysis records it
    assert snapshot_id(study.snapshot) in flat.replace(" ", "")
    assert "Analysis plan version 1.0" in flat
    assert f"studyman version {__version__}" in flat
    assert "Prepared by Data Coordinating Centre" in flat
    reader = PdfReader(rendered.closed.pdf)
    assert reader.metadata is not None
    assert reader.metadata.author == "Data Coordinating Centre"


def test_safety_population_n_agrees_across_the_rendered_tables(
    study: Study, rendered: Rendered
) -> None:
    for report in (rendered.open_with, rendered.closed):
        html = _html_text(report.html)
        found = re.findall(r"Denominators \(Safety population\):[^<]*?Total N = (\d+)", html)
        assert len(found) >= 10
        assert set(found) == {str(report.safety_population)}
        assert report.pdf is not None
        pdf_text = " ".join(_pdf_pages(report.pdf)).replace("\n", " ")
        assert f"Total (N={report.safety_population})" in pdf_text
        assert f"the safety population holds {report.safety_population} participants" in pdf_text
        randomised = pd.read_csv(study.randomization, dtype=str)["record_id"].nunique()
        assert f"and {randomised} randomised" in pdf_text
    # treated is view-dependent (studyman.facts): the closed view also sees doses taken
    # without any CBT session, the blinded one cannot
    assert rendered.open_with.safety_population <= rendered.closed.safety_population
    for report in (rendered.open_with, rendered.closed):
        assert report.facts is not None
        facts = json.loads(report.facts.read_text(encoding="utf-8"))["facts"]
        assert facts["safety_population"] == report.safety_population


def test_closed_report_is_owner_only_coded_and_prints_no_hash_of_the_list(
    study: Study, rendered: Rendered
) -> None:
    closed = rendered.closed
    assert closed.pdf is not None
    for path in (closed.html, closed.pdf):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(closed.html.parent.stat().st_mode) == 0o700
    html = _html_text(closed.html)
    pdf_text = "".join(_pdf_pages(closed.pdf)).replace("\n", "").replace(" ", "")
    data = study.randomization.read_bytes()
    for digest in (hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()):
        for form in (digest, digest.upper()):
            assert form not in html
            assert form not in pdf_text
            assert form.encode("ascii") not in closed.pdf.read_bytes()
    # the key that coded it is named by its fingerprint, the key itself is nowhere
    assert closed.arm_key_fingerprint is not None
    assert closed.arm_key_fingerprint in html
    assert closed.arm_key_fingerprint in pdf_text
    assert closed.arm_key is not None
    key_hex = closed.arm_key.read_text(encoding="ascii").strip()
    assert key_hex not in html
    assert key_hex not in pdf_text
    randomisation = pd.read_csv(study.randomization, dtype=str)
    assert not any(number in html for number in randomisation["rand_number"])
    assert "Arm A (N=" in html
    assert "Arm B (N=" in html
    assert not any(arm.name in html for arm in study.protocol.arms.items)


def test_unmasked_closed_report_names_the_arms(study: Study, tmp_path: Path) -> None:
    report = render_dsmb_report(
        study.protocol,
        study.snapshot,
        tmp_path,
        session="closed",
        randomization=study.randomization,
        unmask=True,
        pdf=False,
    )
    html = _html_text(report.html)
    assert all(f"{arm.name} (N=" in html for arm in study.protocol.arms.items)
    assert "Arm A (N=" not in html


def test_closed_session_refuses_to_run_without_randomisation(study: Study, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="randomisation list"):
        render_dsmb_report(study.protocol, study.snapshot, tmp_path, session="closed")
    assert not list(tmp_path.iterdir())


def test_randomisation_list_not_matching_the_snapshot_names_the_participants(
    study: Study, tmp_path: Path
) -> None:
    frame = pd.read_csv(study.randomization, dtype=str)
    dropped = frame.iloc[3]["record_id"]
    changed = pd.concat(
        [
            frame.drop(index=3),
            pd.DataFrame([{"record_id": "S04-9999", "rand_number": "X", "rand_arm": "1"}]),
        ]
    )
    path = tmp_path / "randomization.csv"
    changed.to_csv(path, index=False)
    with pytest.raises(SourceError) as caught:
        render_dsmb_report(
            study.protocol, study.snapshot, tmp_path / "out", session="closed", randomization=path
        )
    message = str(caught.value)
    assert dropped in message
    assert "S04-9999" in message
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_pdf_pages_render_to_images_with_content(rendered: Rendered) -> None:
    pdfium = pytest.importorskip("pypdfium2")
    assert rendered.closed.pdf is not None
    document = pdfium.PdfDocument(str(rendered.closed.pdf))
    try:
        assert len(document) == len(PdfReader(rendered.closed.pdf).pages)
        for index in (0, 2):
            image = np.asarray(document[index].render(scale=0.6).to_pil().convert("L"))
            assert image.shape[0] > image.shape[1]  # portrait A4
            ink = float((image < 128).mean())
            assert 0.002 < ink < 0.5, (index, ink)
    finally:
        document.close()


def test_open_queries_by_site_come_from_the_query_log(study: Study, tmp_path: Path) -> None:
    findings = pd.DataFrame(
        [
            {
                "check_id": "DQ-X",
                "severity": "major",
                "message": "m",
                "record_id": record,
                "event": "week_1_arm_1",
                "instrument": "vital_signs",
                "instance": "",
                "field": "vs_sbp",
                "value": "1",
                "source": "",
                "site": record.split("-")[0],
            }
            for record in ("S01-0001", "S01-0002", "S03-0001")
        ]
    )
    log_path = tmp_path / "queries.sqlite"
    with QueryLog(log_path) as log:
        log.sync(findings, checks_run={"DQ-X"}, at="2026-08-01T00:00:00Z")
    report = render_dsmb_report(
        study.protocol,
        study.snapshot,
        tmp_path / "out",
        session="open",
        query_log=log_path,
        pdf=False,
        as_of=datetime(2026, 9, 30, 23, 59, 59, tzinfo=UTC),
    )
    html = _html_text(report.html)
    assert "Open site queries by site and age" in html
    # Opened on 2026-08-01: 60 days old on the as-of day, so in the 31-90 days band.
    assert "3 site queries open" in html
    assert "3 of them for more than 30 days" in html
    table = html[html.index("Open site queries by site and age") :]
    table = table[: table.index("</table>")]
    assert "<th>31-90 days</th>" in table
    rows = re.findall(r"<tr[^>]*><td>(S0\d)</td>(.*?)</tr>", table)
    assert [site for site, _ in rows] == ["S01", "S03"]
    assert re.search(
        r"<tr[^>]*><td>All sites</td><td>0</td><td>0</td><td>3</td><td>0</td><td>3</td>", table
    )


def test_open_report_leaves_out_the_unblinded_runs_queries_of_a_shared_log(
    study: Study, tmp_path: Path
) -> None:
    def finding(check: str, record: str, instrument: str) -> dict[str, str]:
        return {
            "check_id": check, "severity": "major", "message": "m", "record_id": record,
            "event": "week_1_arm_1", "instrument": instrument, "instance": "", "field": "f",
            "value": "1", "source": "", "site": record.split("-")[0],
        }  # fmt: skip

    dosing = next(
        form for form in study.protocol.blinding.unblinded_forms if form != study.protocol.arms.form
    )
    findings = pd.DataFrame(
        [
            finding("DQ-X", "S01-0001", "vital_signs"),
            finding("ARM-ADJUNCT-WRONG-ARM", "S01-0002", dosing),  # unblinded run: needs the arm
            finding("DQ-Y", "S03-0001", dosing),  # unblinded run: on an unblinded form
        ]
    )
    log_path = tmp_path / "queries.sqlite"
    with QueryLog(log_path) as log:
        log.sync(
            findings, checks_run={"DQ-X", "DQ-Y", "ARM-ADJUNCT-WRONG-ARM"},
            at="2026-08-01T00:00:00Z",
        )  # fmt: skip
    report = render_dsmb_report(
        study.protocol, study.snapshot, tmp_path / "out", session="open", query_log=log_path,
        pdf=False,
    )  # fmt: skip
    html = _html_text(report.html)
    assert "1 site queries open" in html
    table = html[html.index("Open site queries by site and age") :]
    table = table[: table.index("</table>")]
    assert [site for site, _ in re.findall(r"<tr[^>]*><td>(S0\d)</td>(.*?)</tr>", table)] == ["S01"]


def _writable_copy(snapshot: Path, target: Path) -> dict[str, Any]:
    shutil.copytree(snapshot, target)
    for path in target.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    manifest: dict[str, Any] = json.loads((target / MANIFEST_NAME).read_text(encoding="utf-8"))
    return manifest


def test_open_session_never_reads_the_unblinded_forms_of_the_snapshot(
    study: Study, tmp_path: Path
) -> None:
    copy = tmp_path / "snapshot"
    manifest = _writable_copy(study.snapshot, copy)
    for form in study.protocol.blinding.unblinded_forms:
        # Not Parquet any more (the manifest is updated, so verification passes): reading the
        # file would fail.
        data = b"unblinded: must not be read"
        (copy / "tables" / f"{form}.parquet").write_bytes(data)
        manifest["files"][f"tables/{form}.parquet"] = hashlib.sha256(data).hexdigest()
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    (copy / SNAPSHOT_ID_NAME).write_text(manifest_id(manifest) + "\n")  # sealed again
    report = render_dsmb_report(study.protocol, copy, tmp_path / "out", session="open", pdf=False)
    assert "Doses are recorded on an unblinded form" in _html_text(report.html)
    with pytest.raises(Exception, match=r"(?i)parquet"):
        render_dsmb_report(
            study.protocol,
            copy,
            tmp_path / "closed",
            session="closed",
            randomization=study.randomization,
            pdf=False,
        )


def test_report_without_some_forms_still_renders_and_says_so(study: Study, tmp_path: Path) -> None:
    copy = tmp_path / "snapshot"
    manifest = _writable_copy(study.snapshot, copy)
    for form in ("adverse_events", "liver_tests"):
        del manifest["tables"][form]
        del manifest["files"][f"tables/{form}.parquet"]
        (copy / "tables" / f"{form}.parquet").unlink()
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    (copy / SNAPSHOT_ID_NAME).write_text(manifest_id(manifest) + "\n")  # sealed again
    report = render_dsmb_report(study.protocol, copy, tmp_path / "out", session="open", pdf=False)
    assert {"adverse-events", "aesi-liver", "sae"} <= set(report.incomplete)
    html = _html_text(report.html)
    assert "the snapshot has no &#39;adverse_events&#39; form" in html
    assert "Baseline characteristics" in html
    assert "Total score by band" in html


def test_cli_writes_the_open_report_and_refuses_a_closed_one_without_list(
    study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(
        [
            "report",
            "dsmb",
            "--session",
            "open",
            "--snapshot",
            str(study.snapshot),
            "--out",
            str(tmp_path),
            "--no-pdf",
        ]
    )
    assert (tmp_path / f"dsmb-open-{CUTOFF}.html").is_file()
    # without --protocol and --sap, the embedded study's plan is the one stated and applied
    cover = _html_text(tmp_path / f"dsmb-open-{CUTOFF}.html")
    assert "not supplied" not in cover
    version = load_sap(SAP).plan.version
    assert re.search(rf"Analysis plan version</td><td>{re.escape(version)} \(sap\.yaml\)", cover)
    with pytest.raises(SystemExit) as refused:
        main(
            [
                "report",
                "dsmb",
                "--session",
                "closed",
                "--snapshot",
                str(study.snapshot),
                "--out",
                str(tmp_path / "closed"),
            ]
        )
    assert refused.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error:")
    assert "randomisation" in err[0]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _screenshot(browser: str, page: Path, shot: Path, profile: Path) -> str:
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stderr


def _console_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def test_html_opens_in_headless_chromium_without_console_messages(
    rendered: Rendered, tmp_path: Path
) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (scripts/debian-packages.txt)")
        pytest.skip("chromium is not installed")
    # The detector works: a page with a script error is caught.
    bad = tmp_path / "bad.html"
    bad.write_text("<p>x</p><script>throw new Error('boom')</script>", encoding="utf-8")
    assert _console_lines(_screenshot(browser, bad, tmp_path / "bad.png", tmp_path / "p0"))
    for report in (rendered.open_with, rendered.closed):
        shot = tmp_path / f"{report.session}.png"
        log = _screenshot(browser, report.html, shot, tmp_path / f"p-{report.session}")
        assert _console_lines(log) == []
        from PIL import Image

        image = np.asarray(Image.open(shot).convert("L"))
        assert image.shape[:2] == (1600, 1200)
        assert float((image < 128).mean()) > 0.005  # text and the title were drawn
