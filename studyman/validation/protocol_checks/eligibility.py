"""Protocol checks of eligibility and randomisation: ``ELG-*`` and ``SCO-RAND-LOW``
(randomised with a baseline scale total below the inclusion threshold)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from studyman.validation.protocol_checks.view import (
    Emitter,
    StudyView,
    compare,
    parse_numbers,
)

__all__ = ["check_eligibility"]


def check_eligibility(view: StudyView, out: Emitter) -> None:
    """Raise the ``ELG-*`` findings and ``SCO-RAND-LOW``."""
    eligibility = view.protocol.eligibility
    event = eligibility.event
    randomized = view.randomized
    rand_ids = set(randomized.index[randomized.to_numpy(dtype=bool)])
    form = eligibility.form
    form_rows = view.rows_of(form) & (view.events == event)
    screened = set(view.ids[form_rows])
    for criterion in eligibility.criteria:
        recorded = view.value(event, criterion.field)
        failing_value = "0" if criterion.kind == "inclusion" else "1"
        failing = [rid for rid in recorded.index[recorded == failing_value] if rid in rand_ids]
        out.participants(
            "ELG-FORM",
            failing,
            event=event,
            instrument=form,
            field=criterion.field,
            values=[failing_value] * len(failing),
            messages=f"Randomised although {criterion.kind} criterion not met: {criterion.text}",
        )
        if criterion.derived is None:
            continue
        derived = _derived(view, criterion.derived)
        # derived "criterion met" (inclusion) / "exclusion applies"
        disagree: list[str] = []
        values: list[str] = []
        recorded_of = recorded.to_dict()
        for record_id in screened:
            verdict = derived.get(record_id)
            value = recorded_of.get(record_id, "")
            if verdict is None or value not in ("0", "1"):
                continue
            if (value == "1") != verdict:
                disagree.append(record_id)
                values.append(value)
        out.participants(
            "ELG-DERIVED",
            sorted(disagree),
            event=event,
            instrument=form,
            field=criterion.field,
            values=[v for _, v in sorted(zip(disagree, values, strict=True))],
            messages=f"{criterion.text}: the form disagrees with the data",
        )
        if _is_demographic_range(view, criterion):
            outside = [rid for rid in rand_ids if derived.get(rid) is False]
            ages = view.value(event, criterion.derived.conditions[0].field)
            out.participants(
                "ELG-AGE",
                sorted(outside),
                event=criterion.derived.conditions[0].event,
                instrument=view.inputs.dictionary.by_name[
                    criterion.derived.conditions[0].field
                ].form,
                field=criterion.derived.conditions[0].field,
                values=[str(ages.get(rid, "")) for rid in sorted(outside)],
                messages="Randomised with age at consent outside the inclusion range",
            )
        if criterion.kind == "inclusion":
            totals_of_scales = {scoring.total_field for scoring in view.protocol.scoring}
            for condition in criterion.derived.conditions:
                if (
                    condition.event != view.randomization_event
                    or condition.field not in totals_of_scales
                ):
                    continue
                totals = view.value(condition.event, condition.field)
                numbers = pd.Series(parse_numbers(totals.to_numpy()), index=totals.index)
                low = [
                    rid
                    for rid in sorted(rand_ids)
                    if rid in numbers.index
                    and not np.isnan(numbers[rid])
                    and not compare(np.array([numbers[rid]]), condition.op, condition.value)[0]
                ]
                out.participants(
                    "SCO-RAND-LOW",
                    low,
                    event=condition.event,
                    instrument=view.inputs.dictionary.by_name[condition.field].form,
                    field=condition.field,
                    values=[str(totals[rid]) for rid in low],
                    messages=(
                        f"Randomised with baseline {condition.field} below {condition.value:g}"
                    ),
                )
    eligible = view.value(event, eligibility.eligible_field)
    ineligible = [rid for rid in eligible.index[eligible == "0"] if rid in rand_ids]
    out.participants(
        "ELG-RAND-INELIGIBLE",
        ineligible,
        event=event,
        instrument=form,
        field=eligibility.eligible_field,
        values=["0"] * len(ineligible),
        messages="Randomised although the eligibility form says not eligible",
    )
    # stratum recorded by the site vs derived from the baseline score (not arm information)
    for factor in view.protocol.randomization.stratification:
        if factor.source != "score" or not factor.recorded_field or not factor.field:
            continue
        recorded = view.value(view.randomization_event, factor.recorded_field)
        scores = view.value(factor.event or view.randomization_event, factor.field)
        numbers = pd.Series(parse_numbers(scores.to_numpy()), index=scores.index)
        wrong: list[str] = []
        wrong_values: list[str] = []
        numbers_of = numbers.to_dict()
        recorded_of = recorded.to_dict()
        for record_id in sorted(rand_ids):
            score = numbers_of.get(record_id, np.nan)
            value = recorded_of.get(record_id, "")
            if np.isnan(score) or value == "":
                continue
            level = next(
                (
                    lv
                    for lv in factor.levels
                    if (lv.min is None or score >= lv.min) and (lv.max is None or score <= lv.max)
                ),
                None,
            )
            if level is not None and str(level.code) != value:
                wrong.append(record_id)
                wrong_values.append(value)
        out.participants(
            "ELG-STRATUM",
            wrong,
            event=view.randomization_event,
            instrument=view.inputs.dictionary.by_name[factor.recorded_field].form
            if factor.recorded_field in view.inputs.dictionary.by_name
            else "",
            field=factor.recorded_field,
            values=wrong_values,
            messages=(
                f"{factor.label or factor.id}: recorded stratum "
                f"differs from the baseline {factor.field}"
            ),
        )


def _is_demographic_range(view: StudyView, criterion: Any) -> bool:
    """An inclusion range on one field of the consent form (the age at consent): ``ELG-AGE``.

    Told by its shape, not its name: every condition of the derived rule is on the same field,
    and that field is on the form holding the protocol's consent date.
    """
    if criterion.kind != "inclusion" or criterion.derived is None:
        return False
    fields = {condition.field for condition in criterion.derived.conditions}
    if len(fields) != 1:
        return False
    consent_form = view.form_of(view.protocol.enrolment.consent_date_field)
    return bool(consent_form) and view.form_of(next(iter(fields))) == consent_form


def _derived(view: StudyView, rule: Any) -> dict[str, bool]:
    """Record ID -> whether the derived rule holds (absent when it cannot be decided)."""
    columns: list[pd.Series] = []
    for condition in rule.conditions:
        values = view.value(condition.event, condition.field)
        numbers = parse_numbers(values.to_numpy())
        verdict = np.where(
            np.isnan(numbers), np.nan, compare(numbers, condition.op, condition.value)
        )
        columns.append(pd.Series(verdict, index=values.index, dtype=np.float64))
    if not columns:
        return {}
    table = pd.concat(columns, axis=1).to_numpy(dtype=np.float64)
    index = pd.concat(columns, axis=1).index
    unknown = np.isnan(table).any(axis=1)
    true_any = (table == 1.0).any(axis=1)
    if rule.match == "all":
        decided = ~unknown
        verdicts = (table == 1.0).all(axis=1)
    else:
        decided = ~unknown | true_any
        verdicts = true_any
    return {
        str(record_id): bool(verdict)
        for record_id, verdict, known in zip(index, verdicts, decided, strict=True)
        if known
    }
