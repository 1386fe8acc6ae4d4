"""Where the embedded reference study lives (the default of every command that reads a study).

The study (``protocols/cbt-adjunct``) and its analysis plan with the plan's lock
(``analysis/sap.yaml``, ``analysis/sap.lock.json``) are kept at the repository root. An
installed wheel carries them as package data in ``studyman/_reference/``, with the same layout
(``setup.py`` maps the folders there); a checkout or an editable install reads them at the
repository root. Either way the plan is at ``<root>/analysis`` and the study at
``<root>/protocols``, so a path computed from one finds the other.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from studyman.errors import ProtocolError

__all__ = ["REFERENCE_STUDY", "default_plan_path", "default_protocol_path", "reference_root"]

REFERENCE_STUDY = "cbt-adjunct"
"""The embedded study's folder name under ``protocols/``."""


def _candidate_roots() -> list[Path]:
    """The installed package data first, then the repository root of a checkout."""
    roots: list[Path] = []
    packaged = resources.files("studyman").joinpath("_reference")
    # A package imported from a zip archive gives no file system path: only the checkout then.
    if isinstance(packaged, Path):
        roots.append(packaged)
    roots.append(Path(__file__).resolve().parent.parent.parent)
    return roots


def reference_root() -> Path:
    """Return the folder that holds the embedded ``protocols/`` and ``analysis/``.

    Returns
    -------
    Path
        ``studyman/_reference`` in an installed package, else the repository root.

    Raises
    ------
    ProtocolError
        Neither place holds the reference study's ``protocol.yaml``.
    """
    roots = _candidate_roots()
    for root in roots:
        if (root / "protocols" / REFERENCE_STUDY / "protocol.yaml").is_file():
            return root
    raise ProtocolError(
        "the embedded reference study is missing (looked in "
        + " and ".join(str(root) for root in roots)
        + "); reinstall studyman or pass --protocol",
        file=str(roots[0] / "protocols" / REFERENCE_STUDY / "protocol.yaml"),
    )


def default_protocol_path() -> Path:
    """Return the embedded reference study's folder (``protocols/cbt-adjunct``).

    Returns
    -------
    Path
        Inside the installed package, or at the repository root in a checkout.

    Raises
    ------
    ProtocolError
        The study is not there (a damaged installation).
    """
    return reference_root() / "protocols" / REFERENCE_STUDY


def default_plan_path() -> Path:
    """Return the embedded study's analysis plan (``analysis/sap.yaml``; its lock beside it).

    Returns
    -------
    Path
        Inside the installed package, or at the repository root in a checkout.

    Raises
    ------
    ProtocolError
        The study or its plan is not there (a damaged installation).
    """
    plan = reference_root() / "analysis" / "sap.yaml"
    if not plan.is_file():
        raise ProtocolError(
            "the embedded analysis plan is missing; reinstall studyman or pass --sap",
            file=str(plan),
        )
    return plan
