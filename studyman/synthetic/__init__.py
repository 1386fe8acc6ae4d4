"""The seeded, deterministic synthetic trial generator (REDCap flat records).

``generate_trial(protocol, ...)`` simulates the reference study; ``write_trial(trial, out_dir)``
writes it as REDCap's raw CSV export plus the randomisation list and the planted-error ground
truth.
"""

from __future__ import annotations

from studyman.synthetic.design import StudyDesign, design_from_protocol
from studyman.synthetic.generator import (
    PLANTED_ERROR_COLUMNS,
    RANDOMIZATION_COLUMNS,
    GeneratedTrial,
    generate_trial,
)
from studyman.synthetic.planting import ERROR_TYPES
from studyman.synthetic.writer import redcap_csv_text, write_trial

__all__ = [
    "ERROR_TYPES",
    "PLANTED_ERROR_COLUMNS",
    "RANDOMIZATION_COLUMNS",
    "GeneratedTrial",
    "StudyDesign",
    "design_from_protocol",
    "generate_trial",
    "redcap_csv_text",
    "write_trial",
]
