"""The DSMB report as PDF, rendered from its HTML by WeasyPrint."""

from __future__ import annotations

import logging
from datetime import date

__all__ = ["html_to_pdf"]


def html_to_pdf(html: str, *, author: str, title: str, created: date) -> bytes:
    """Render self-contained *html* to PDF bytes.

    Parameters
    ----------
    html
        The report (no external resources).
    author, title
        PDF metadata (the author is a centre, not a person).
    created
        The date recorded as the PDF's creation date (the data cut-off, so that the same data
        give the same bytes).
    """
    import weasyprint  # type: ignore[import-untyped]

    # WeasyPrint logs unsupported CSS at WARNING level; the report's CSS is fixed and tested.
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    document = weasyprint.HTML(string=html).render()
    document.metadata.authors = [author]
    document.metadata.title = title
    stamp = f"{created.isoformat()}T00:00:00+00:00"
    document.metadata.created = stamp
    document.metadata.modified = stamp
    data: bytes = document.write_pdf()
    return data
