"""The DSMB PDFs' page layout, read back from the rendered PDFs.

Both sessions are rendered (a small study; the closed one with a plan that declares interim looks,
so that every section has its tables) and checked from the PDF itself: the named destinations
WeasyPrint writes for every element id (a section, a table's caption, a table's last row) give
the page, and the text positions (pypdfium2's character boxes) give where a heading starts:

* no section heading starts in the bottom 15 % of a page;
* no table caption ends a page (it shares a page with the table's first row), and no table of
  10 rows or fewer is split across pages (its caption and last row share a page);
* the contents list every section with the page its heading is on;
* every page renders to a PNG with content.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pypdf import PdfReader

from studyman.protocol.loader import load_protocol
from studyman.reporting.report import render_dsmb_report
from studyman.sources.offline import import_snapshot
from studyman.synthetic.generator import generate_trial

from .conftest import DICTIONARY, PROTOCOL, SAP, shared_dir

pdfium = pytest.importorskip("pypdfium2")

AS_OF = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)
#: A heading must start above this share of the page height, measured from the bottom.
BOTTOM_SHARE = 0.15
#: Tables with at most this many rows must not be split across pages.
SMALL_TABLE_ROWS = 10
INTERIM = """interim:
  dsmb_efficacy: true
  analysis: primary_mmrm
  information_fractions: [0.5, 1.0]
  planned_participants: 100
  futility: {threshold: 0.1}
"""


@dataclass(frozen=True)
class RenderedPdf:
    pdf: Path
    html: Path
    data: Path


def _plan_with_looks(path: Path) -> Path:
    lines = SAP.read_text(encoding="utf-8").splitlines(keepends=True)
    start = lines.index("interim:\n")
    end = start + 1
    while lines[end].startswith(" ") or not lines[end].strip():
        end += 1
    path.write_text("".join([*lines[:start], INTERIM, *lines[end:]]), encoding="utf-8")
    return path


def _build(out: Path) -> None:
    protocol = load_protocol(PROTOCOL)
    trial = generate_trial(protocol, n_participants=60, seed=16)
    trial.records.to_csv(out / "records.csv", index=False)
    trial.randomization.to_csv(out / "randomization.csv", index=False)
    import_snapshot(protocol, out / "records.csv", DICTIONARY, out / "snapshots", name="s1")
    plan = _plan_with_looks(out / "sap.yaml")
    for session in ("open", "closed"):
        render_dsmb_report(
            protocol,
            out / "snapshots" / "s1",
            out / session,
            session=session,
            randomization=out / "randomization.csv" if session == "closed" else None,
            sap=plan,
            as_of=AS_OF,
        )


@pytest.fixture(scope="session")
def layout_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RenderedPdf]:
    out = shared_dir(tmp_path_factory, "dsmb-layout", _build)
    reports = {}
    for session in ("open", "closed"):
        folder = out / session
        stem = next(folder.glob("dsmb-*.pdf")).stem
        reports[session] = RenderedPdf(
            folder / f"{stem}.pdf", folder / f"{stem}.html", folder / f"{stem}.json"
        )
    return reports


class _Pdf:
    """Pages, named destinations and text positions of one PDF."""

    def __init__(self, path: Path) -> None:
        reader = PdfReader(path)
        self.height = float(reader.pages[0].mediabox.height)
        self.pages = len(reader.pages)
        self.destinations = {
            str(name): reader.get_destination_page_number(destination)
            for name, destination in reader.named_destinations.items()
        }
        self.document = pdfium.PdfDocument(str(path))
        self.texts = [self.document[i].get_textpage().get_text_range() for i in range(self.pages)]

    def text_top(self, page: int, text: str) -> float | None:
        """Top (points from the page's bottom) of the first occurrence of *text* on *page*."""
        textpage = self.document[page].get_textpage()
        searcher = textpage.search(text, match_case=True)
        hit = searcher.get_next()
        if hit is None:
            return None
        index, count = hit
        return max(textpage.get_charbox(index + k)[3] for k in range(min(count, 6)))

    def close(self) -> None:
        self.document.close()


def _headings(html_path: Path) -> list[tuple[str, str]]:
    """(section id, heading text) of every section, in order."""
    text = html_path.read_text(encoding="utf-8")
    found = re.findall(r'<section id="([^"]+)">\s*(?:<div[^>]*>)?<h2>(.*?)</h2>', text, re.DOTALL)
    return [(section_id, html.unescape(title)) for section_id, title in found]


def _search_text(heading: str) -> str:
    """What to look for on the page: the heading's number and first words (long headings
    wrap, and a wrapped line breaks a text search)."""
    return " ".join(heading.split()[:3])[:28]


@pytest.mark.parametrize("session", ["open", "closed"])
def test_no_section_heading_starts_in_the_bottom_15_percent_of_a_page(
    layout_reports: dict[str, RenderedPdf], session: str
) -> None:
    report = layout_reports[session]
    pdf = _Pdf(report.pdf)
    try:
        stranded = []
        headings = _headings(report.html)
        assert len(headings) > 15
        for element, heading in headings:
            page = pdf.destinations[element]
            top = pdf.text_top(page, _search_text(heading))
            assert top is not None, (heading, page + 1)  # the heading is on its page
            if top < BOTTOM_SHARE * pdf.height:
                stranded.append(f"p{page + 1} {heading!r} at {top / pdf.height:.0%}")
        assert not stranded, stranded
    finally:
        pdf.close()


@pytest.mark.parametrize("session", ["open", "closed"])
def test_every_table_caption_is_on_the_page_of_its_first_row(
    layout_reports: dict[str, RenderedPdf], session: str
) -> None:
    report = layout_reports[session]
    tables = json.loads(report.data.read_text(encoding="utf-8"))["tables"]
    pdf = _Pdf(report.pdf)
    try:
        stranded = []
        for number, table in enumerate(tables, start=1):
            if not table["rows"]:
                continue
            caption = pdf.destinations[table["id"]]
            # the caption's text is where its destination says (a text position, not only an id)
            assert pdf.text_top(caption, f"Table {number}.") is not None, table["id"]
            first = f"{table['id']}--first-row" if len(table["rows"]) > 1 else None
            row = pdf.destinations[first or f"{table['id']}--last-row"]
            if row != caption:
                stranded.append(f"Table {number} {table['id']}: caption p{caption + 1}")
        assert not stranded, stranded
    finally:
        pdf.close()


@pytest.mark.parametrize("session", ["open", "closed"])
def test_no_table_of_ten_rows_or_fewer_is_split_across_pages(
    layout_reports: dict[str, RenderedPdf], session: str
) -> None:
    report = layout_reports[session]
    tables = json.loads(report.data.read_text(encoding="utf-8"))["tables"]
    pdf = _Pdf(report.pdf)
    try:
        small = [t for t in tables if 0 < len(t["rows"]) <= SMALL_TABLE_ROWS]
        assert len(small) > 10
        split = []
        for table in small:
            first = pdf.destinations[table["id"]]
            last = pdf.destinations[f"{table['id']}--last-row"]
            if first != last:
                split.append(f"{table['id']} ({len(table['rows'])} rows): p{first + 1}-p{last + 1}")
        assert not split, split
    finally:
        pdf.close()


@pytest.mark.parametrize("session", ["open", "closed"])
def test_contents_give_the_page_of_every_section(
    layout_reports: dict[str, RenderedPdf], session: str
) -> None:
    report = layout_reports[session]
    pdf = _Pdf(report.pdf)
    try:
        first_section = min(
            page
            for name, page in pdf.destinations.items()
            if name != "contents" and "." not in name
        )
        contents = " ".join(pdf.texts[: first_section + 1]).split("Contents", 1)[1]
        contents = re.sub(r"\s+", " ", contents)
        sections = [(e, h) for e, h in _headings(report.html) if "." not in e]
        for element, heading in sections:
            title = heading.split(". ", 1)[1]
            listed = re.search(re.escape(title) + r"[ .]*?(\d+)\b", contents)
            assert listed is not None, f"{title!r} has no page number in the contents"
            assert int(listed.group(1)) == pdf.destinations[element] + 1, title
    finally:
        pdf.close()


@pytest.mark.parametrize("session", ["open", "closed"])
def test_every_page_renders_to_a_png_with_content(
    layout_reports: dict[str, RenderedPdf], session: str, tmp_path: Path
) -> None:
    pdf = _Pdf(layout_reports[session].pdf)
    try:
        for index in range(pdf.pages):
            image = pdf.document[index].render(scale=0.5).to_pil().convert("L")
            image.save(tmp_path / f"page-{index + 1}.png")
            pixels = np.asarray(image)
            assert pixels.shape[0] > pixels.shape[1]  # portrait A4
            # ink between the running header and footer: no page is blank but for them
            body = pixels[int(0.08 * len(pixels)) : int(0.92 * len(pixels))]
            assert 0.0005 < float((body < 160).mean()) < 0.5, index + 1
    finally:
        pdf.close()


def test_only_the_closed_pdf_shows_the_interim_statistics(
    layout_reports: dict[str, RenderedPdf],
) -> None:
    # The same plan with interim looks in both sessions: the open PDF gives the planned looks
    # and the information fraction, never the boundaries at this look, Z or conditional power.
    texts = {}
    for session, report in layout_reports.items():
        pdf = _Pdf(report.pdf)
        try:
            texts[session] = re.sub(r"\s+", " ", " ".join(pdf.texts))
        finally:
            pdf.close()
    assert "Planned interim looks" in texts["open"]
    assert "information fraction of 0." in texts["open"]
    for shown in ("Observed Z", "Conditional power", "Group-sequential boundaries"):
        assert shown not in texts["open"], shown
        assert shown in texts["closed"], shown
