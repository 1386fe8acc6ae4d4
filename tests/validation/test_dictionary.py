"""The checks' data dictionary reads choices as REDCap does."""

from __future__ import annotations

import pandas as pd

from studyman.protocol.redcap_project import DICTIONARY_COLUMNS
from studyman.validation.dictionary import dictionary_from_frame, parse_choices


def test_choice_without_a_label_is_labelled_with_its_code() -> None:
    # REDCap shows the raw code as the label of a choice given without one ("9" rather than "").
    frame = pd.DataFrame(
        [
            ["record_id", "visit", "", "text", "Record ID", "", *[""] * 12],
            ["pain", "visit", "", "radio", "Pain", "1, Mild | 2, Severe | 9", *[""] * 12],
        ],
        columns=list(DICTIONARY_COLUMNS),
    )

    field = dictionary_from_frame(frame).by_name["pain"]

    assert field.choices == (("1", "Mild"), ("2", "Severe"), ("9", "9"))
    assert parse_choices("checkbox", "a, A | b") == (("a", "A"), ("b", "b"))
