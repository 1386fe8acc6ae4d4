"""The seeded, deterministic synthetic trial generator (REDCap flat records).

``generate_trial(protocol, ...)`` simulates any declared study (names, scales, schedule, arms and
coding lists from its protocol); ``write_trial(trial, out_dir)``
writes it as REDCap's raw CSV export plus the randomisation list and the planted-error ground
truth.
"""

from __future__ import annotations

from studyman.synthetic.design import StudyDesign, design_from_protocol
from studyman.synthetic.generator import (
    PLANTED_ERROR_COLUMNS,
    GeneratedTrial,
    generate_trial,
    randomization_columns,
)
from studyman.synthetic.planting import ERROR_TYPES
from studyman.synthetic.writer import redcap_csv_text, write_trial

__all__ = [
    "ERROR_TYPES",
    "PLANTED_ERROR_COLUMNS",
    "GeneratedTrial",
    "StudyDesign",
    "design_from_protocol",
    "generate_trial",
    "randomization_columns",
    "redcap_csv_text",
    "write_trial",
]
