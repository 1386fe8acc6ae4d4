"""A minimal, valid PDF of instruments (``content=pdf``), written by hand.

REDCap's PDF export lays each instrument out as its data entry form; the emulator's is a plain
listing (instrument label, then each field's label and, for a record, its value), enough for a
client to receive a real PDF (``%PDF-1.4`` … ``%%EOF`` with a correct cross-reference table).
Text is set in the standard Helvetica font; characters outside Latin-1 print as ``?``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["render_pdf"]

_LINES_PER_PAGE = 60
_WIDTH = 95  # characters per line at 10 pt on an A4 page with margins


def _escape(text: str) -> str:
    latin = text.encode("latin-1", errors="replace").decode("latin-1")
    printable = "".join(c if c.isprintable() else " " for c in latin)
    return printable.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _wrap(line: str) -> list[str]:
    if len(line) <= _WIDTH:
        return [line]
    return [line[i : i + _WIDTH] for i in range(0, len(line), _WIDTH)]


def render_pdf(title: str, lines: Sequence[str]) -> bytes:
    """A PDF whose pages list *title* then *lines* (wrapped, 60 lines a page)."""
    wrapped = [part for line in [title, "", *lines] for part in _wrap(line)]
    pages = [
        wrapped[i : i + _LINES_PER_PAGE] for i in range(0, max(len(wrapped), 1), _LINES_PER_PAGE)
    ]
    objects: list[bytes] = []
    # 1 catalog, 2 pages, 3 font, then (page, content) pairs.
    page_ids = [4 + 2 * i for i in range(len(pages))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{p} 0 R" for p in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for number, page in enumerate(pages):
        content_id = page_ids[number] + 1
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {content_id} 0 R >>".encode()
        )
        text = ["BT", "/F1 10 Tf", "12 TL", "50 800 Td"]
        for line in page:
            text.append(f"({_escape(line)}) Tj T*")
        text.append("ET")
        stream = "\n".join(text).encode("latin-1")
        objects.append(
            b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream"
        )
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for index, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{index} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    ).encode()
    return bytes(out)
