"""Planting known data errors into clean generated records, with the ground truth.

Each error type is planted ``per_type`` times, each time in a different participant (no
participant carries two planted errors, so one error never hides or repairs another). The ground
truth names the cell: record, event, instrument, instance, field, the value before and after.
Validation is measured against it (recall of planted errors).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

from studyman.synthetic.design import StudyDesign
from studyman.synthetic.names import ScaleNames
from studyman.synthetic.records import sort_records

__all__ = ["ERROR_TYPES", "plant_errors"]

ERROR_TYPES = (
    "out_of_range",
    "wrong_total",
    "out_of_window",
    "missing_required",
    "invalid_code",
    "dates_out_of_order",
    "future_date",
    "late_sae_report",
    "duplicate_record",
    "duplicate_adverse_event",
    "hamd_16a_and_16b",
    "phq9_item9_without_cssrs",
    "cssrs_without_safety_action",
    "cssrs_skip_logic",
    "serious_without_criterion",
    "fatal_without_death",
    "data_after_withdrawal",
    "adjunct_in_control_arm",
    "stratum_mismatch",
    "randomised_despite_exclusion",
    "adverse_event_before_consent",
    "prohibited_medication",
    "total_with_missing_item",
    "unreported_unanticipated_problem",
    "ae_disposition_without_withdrawal",
    "withdrawal_without_ae_disposition",
    "death_without_fatal_ae",
    "fatal_without_death_date",
    "treatment_before_randomisation",
    "major_deviation_recorded_minor",
)

_COLUMNS = [
    "error_type",
    "record_id",
    "event",
    "instrument",
    "instance",
    "field",
    "original_value",
    "planted_value",
    "description",
]


class _Planter:
    def __init__(
        self, records: pd.DataFrame, design: StudyDesign, data_cut: date, rng: np.random.Generator
    ) -> None:
        self.df = records.reset_index(drop=True).copy()
        self.design = design
        self.cut = data_cut
        self.rng = rng
        self.used: set[str] = set()
        self.truth: list[dict[str, str]] = []
        self.new_rows: list[dict[str, str]] = []
        self.form_of: dict[str, str] = {}
        for spec in design.fields:
            for column in spec.export_columns:
                self.form_of[column] = spec.form
        self.rid = design.fields[0].name
        self.names = design.n
        # disposition codes by role (1 completed, 2 withdrew, 3 lost, 4 AE, 5 death, 6, 7 other)
        ds: dict[int, str] = dict(design.extra.get("ds_codes", {}))
        self.ds_other = [ds.get(r, str(r)) for r in (2, 3, 6, 7)]
        self.ds_ae = ds.get(4, "4")
        self.ds_death = ds.get(5, "5")
        self.ds_completed = ds.get(1, "1")

    # -- selection ---------------------------------------------------------------------------
    def pick(self, mask: pd.Series | np.ndarray, count: int) -> list[int]:
        """Up to *count* row positions from *mask*, one per not-yet-used participant."""
        rows = np.flatnonzero(np.asarray(mask, dtype=bool))
        chosen: list[int] = []
        for row in self.rng.permutation(rows):
            record = str(self.df.at[int(row), self.rid])
            if record in self.used:
                continue
            self.used.add(record)
            chosen.append(int(row))
            if len(chosen) == count:
                break
        return chosen

    def col(self, name: str | None) -> pd.Series:
        if name is None or name not in self.df:
            return pd.Series("", index=self.df.index, dtype=object)
        return self.df[name]

    def at(self, event: str | None = None, form: str | None = None) -> pd.Series:
        mask = pd.Series(True, index=self.df.index)
        if event is not None:
            mask &= self.col("redcap_event_name") == event
        if form is not None:
            mask &= self.col("redcap_repeat_instrument") == form
        return mask

    def base_value(self, record: str, event: str, field: str) -> str:
        rows = self.df.index[
            (self.col(self.rid) == record)
            & (self.col("redcap_event_name") == event)
            & (self.col("redcap_repeat_instrument") == "")
        ]
        return str(self.df.at[rows[0], field]) if len(rows) else ""

    # -- recording ---------------------------------------------------------------------------
    def set(self, row: int, field: str, value: str, error_type: str, description: str) -> None:
        original = str(self.df.at[row, field])
        self.df.at[row, field] = value
        self.record(row, field, original, value, error_type, description)

    def record(
        self, row: int, field: str, original: str, planted: str, error_type: str, description: str
    ) -> None:
        self.truth.append(
            {
                "error_type": error_type,
                _COLUMNS[1]: str(self.df.at[row, self.rid]),
                "event": str(self.df.at[row, "redcap_event_name"]),
                "instrument": self.form_of.get(field, "")
                or str(self.df.at[row, "redcap_repeat_instrument"]),
                "instance": str(self.df.at[row, "redcap_repeat_instance"]),
                "field": field,
                "original_value": original,
                "planted_value": planted,
                "description": description,
            }
        )

    # -- error types -------------------------------------------------------------------------
    def out_of_range(self, n: int) -> None:
        candidates = [
            spec
            for spec in self.design.fields
            if spec.field_type == "text"
            and spec.validation in ("integer", "number", "number_1dp")
            and spec.maximum
            and spec.name in self.df
            and spec.form in (self.names.vitals_form, self.names.participant_form)
        ]
        if not candidates:
            return
        for i in range(n):
            spec = candidates[i % len(candidates)]
            rows = self.pick(self.col(spec.name) != "", 1)
            for row in rows:
                high = float(spec.maximum) + 5 + int(self.rng.integers(0, 20))
                value = f"{high:.1f}" if spec.validation == "number_1dp" else str(int(high))
                self.set(
                    row,
                    spec.name,
                    value,
                    "out_of_range",
                    f"{spec.name} above its range maximum {spec.maximum}",
                )

    def wrong_total(self, n: int) -> None:
        totals = [
            s.name for s in self.design.fields if s.field_type == "calc" and s.name in self.df
        ]
        if not totals:
            return
        for i in range(n):
            name = totals[i % len(totals)]
            for row in self.pick(self.col(name) != "", 1):
                original = int(str(self.df.at[row, name]))
                delta = int(self.rng.choice([-3, -2, -1, 1, 2, 3]))
                value = original + delta if original + delta >= 0 else original + abs(delta)
                self.set(
                    row,
                    name,
                    str(value),
                    "wrong_total",
                    f"stored {name} {value} differs from the item sum {original}",
                )

    def out_of_window(self, n: int) -> None:
        names = self.names
        visits = [v for v in self.design.visits if v.target_day > 0]
        for i in range(n):
            visit = visits[i % len(visits)]
            mask = self.at(visit.event) & (self.col("redcap_repeat_instrument") == "")
            mask &= self.col(names.visit_date) != ""
            for row in self.pick(mask, 1):
                record = str(self.df.at[row, self.rid])
                rand = self.base_value(
                    record, self.design.visits[0].event, names.randomization_date
                )
                if not rand:
                    continue
                shifted = date.fromisoformat(rand) + timedelta(
                    days=visit.window_end + 3 + int(self.rng.integers(0, 4))
                )
                if shifted > self.cut:
                    shifted = date.fromisoformat(rand) + timedelta(days=visit.window_start - 3)
                self.set(
                    row,
                    names.visit_date,
                    shifted.isoformat(),
                    "out_of_window",
                    f"{visit.event} visit on study day "
                    f"{(shifted - date.fromisoformat(rand)).days}, "
                    f"window {visit.window_start}..{visit.window_end}",
                )

    def missing_required(self, n: int) -> None:
        names = self.names
        fields = (
            names.ae_severity,
            names.cm_ongoing,
            names.session_attended,
            names.consent_date,
            names.eligibility_date,
            names.disposition_date,
        )
        for i in range(n):
            name = fields[i % len(fields)]
            if name not in self.df:
                continue
            for row in self.pick(self.col(name) != "", 1):
                self.set(row, name, "", "missing_required", f"required field {name} left blank")

    def invalid_code(self, n: int) -> None:
        names = self.names
        fields = (
            names.sex,
            names.ae_severity,
            names.cm_class,
            names.deviation_category,
            names.ae_outcome,
            names.arm,
        )
        for i in range(n):
            name = fields[i % len(fields)]
            if name is None or name not in self.df:
                continue
            codes = [int(c) for c in self.design.field(name).codes]
            bad = str(max(codes) + 2 + int(self.rng.integers(0, 5)))
            for row in self.pick(self.col(name) != "", 1):
                self.set(row, name, bad, "invalid_code", f"{name} code {bad} is not a choice")

    def dates_out_of_order(self, n: int) -> None:
        pairs = (
            (self.names.ae_start, self.names.ae_end),
            (self.names.cm_start, self.names.cm_stop),
        )
        for i in range(n):
            start, end = pairs[i % len(pairs)]
            for row in self.pick((self.col(end) != "") & (self.col(start) != ""), 1):
                before = date.fromisoformat(str(self.df.at[row, start])) - timedelta(
                    days=1 + int(self.rng.integers(0, 10))
                )
                self.set(
                    row, end, before.isoformat(), "dates_out_of_order", f"{end} before {start}"
                )

    def future_date(self, n: int) -> None:
        fields = (self.names.liver_date, self.names.session_date, self.names.deviation_date)
        for i in range(n):
            name = fields[i % len(fields)]
            for row in self.pick(self.col(name) != "", 1):
                later = self.cut + timedelta(days=10 + int(self.rng.integers(0, 50)))
                self.set(
                    row,
                    name,
                    later.isoformat(),
                    "future_date",
                    f"{name} after the data cut {self.cut.isoformat()}",
                )

    def late_sae_report(self, n: int) -> None:
        # SAEs known early enough that the late report still falls before the data cut.
        names = self.names
        latest = (self.cut - timedelta(days=5)).isoformat()
        aware_column = self.col(names.ae_aware)
        mask = (aware_column != "") & (aware_column.str[:10] <= latest)
        for row in self.pick(mask, n):
            aware = datetime.strptime(str(self.df.at[row, names.ae_aware]), "%Y-%m-%d %H:%M")
            late = aware + timedelta(
                hours=self.design.sae_report_hours + 2 + int(self.rng.integers(0, 70))
            )
            self.set(
                row,
                names.ae_report,
                late.strftime("%Y-%m-%d %H:%M"),
                "late_sae_report",
                f"SAE report sent {(late - aware).total_seconds() / 3600:.0f} h after awareness",
            )

    def duplicate_record(self, n: int) -> None:
        mask = (self.col("redcap_repeat_instrument") == "") & (
            self.col(self.names.visit_date) != ""
        )
        for row in self.pick(mask, n):
            copy = {c: str(self.df.at[row, c]) for c in self.df.columns}
            self.new_rows.append(copy)
            self.record(
                row,
                self.rid,
                "",
                copy[self.rid],
                "duplicate_record",
                f"row for {copy['redcap_event_name']} exported twice",
            )
            self.truth[-1]["instrument"] = ""

    def duplicate_adverse_event(self, n: int) -> None:
        names = self.names
        mask = self.at(form=names.ae_form) & (self.col(names.ae_serious) == "0")
        for row in self.pick(mask, n):
            record = str(self.df.at[row, self.rid])
            same = self.at(form=names.ae_form) & (self.col(self.rid) == record)
            last = max(int(i) for i in self.col("redcap_repeat_instance")[same])
            copy = {c: str(self.df.at[row, c]) for c in self.df.columns}
            copy["redcap_repeat_instance"] = str(last + 1)
            self.new_rows.append(copy)
            self.truth.append(
                {
                    "error_type": "duplicate_adverse_event",
                    _COLUMNS[1]: record,
                    "event": copy["redcap_event_name"],
                    "instrument": names.ae_form,
                    "instance": str(last + 1),
                    "field": names.ae_term,
                    "original_value": "",
                    "planted_value": copy[names.ae_term],
                    "description": "copy of instance "
                    f"{self.df.at[row, 'redcap_repeat_instance']!s} (same term and start date)",
                }
            )

    def _scales(self) -> list[ScaleNames]:
        names = self.names
        return [names.primary, *names.secondary] + ([names.withdrawal] if names.withdrawal else [])

    def hamd_16a_and_16b(self, n: int) -> None:
        # an item of two fields of which exactly one is scored (HAM-D-17 16A/16B)
        group = next((g for s in self._scales() for g in s.groups if len(g) > 1), None)
        if group is None:
            return
        first, second = group[0], group[1]
        for row in self.pick((self.col(first) == "") & (self.col(second) != ""), n):
            self.set(row, first, "0", "hamd_16a_and_16b", f"items {first} and {second} both scored")

    def phq9_item9_without_cssrs(self, n: int) -> None:
        # a flagged item above 0 (PHQ-9 item 9) at a visit whose required form is removed
        scale = next((s for s in self._scales() if s.flag_item is not None), None)
        if scale is None or scale.flag_item is None or scale.requires_form is None:
            return
        item = scale.groups[scale.flag_item][0]
        required = scale.requires_form
        columns = [c for s in self.design.fields if s.form == required for c in s.export_columns]
        if not columns:
            return
        rows = self.pick(
            (self.col(item) != "") & (self.col(item) != "0") & (self.col(columns[0]) != ""),
            n,
        )
        for row in rows:
            for column in columns:
                self.df.at[row, column] = ""
            self.df.at[row, f"{required}_complete"] = "0"
            value = str(self.df.at[row, item])
            self.record(
                row,
                item,
                value,
                value,
                "phq9_item9_without_cssrs",
                f"form {required} removed at a visit with {item} > 0",
            )

    def cssrs_without_safety_action(self, n: int) -> None:
        names = self.names
        high = [names.cssrs_ideation[i] for i in names.cssrs_high_ideation]
        if not high:
            return
        mask = self.col(names.cssrs_safety_action) == "0"
        for name in high:
            mask &= self.col(name) == "0"
        for row in self.pick(mask, n):
            self.set(
                row,
                high[0],
                "1",
                "cssrs_without_safety_action",
                f"C-SSRS ideation {high[0]} without a safety action",
            )

    def cssrs_skip_logic(self, n: int) -> None:
        names = self.names
        gated = [name for i, name in enumerate(names.cssrs_ideation) if i not in names.cssrs_gate]
        if not gated or not names.cssrs_gate:
            return
        mask = self.col(gated[0]) == ""
        for i in names.cssrs_gate:
            mask &= self.col(names.cssrs_ideation[i]) == "0"
        for row in self.pick(mask, n):
            self.set(
                row,
                gated[0],
                "0",
                "cssrs_skip_logic",
                f"C-SSRS {gated[0]} answered although the gate questions are No",
            )

    def serious_without_criterion(self, n: int) -> None:
        crit = [c for c in self.names.ae_criteria if c in self.df]
        if not crit:
            return
        checked = self.df[crit] == "1"
        mask = (self.col(self.names.ae_serious) == "1") & (checked.sum(axis=1) == 1)
        for row in self.pick(mask, n):
            column = next(c for c in crit if str(self.df.at[row, c]) == "1")
            self.set(
                row,
                column,
                "0",
                "serious_without_criterion",
                "serious AE with no seriousness criterion checked",
            )

    def fatal_without_death(self, n: int) -> None:
        names = self.names
        dead = set(self.col(self.rid)[self.col(names.disposition_status) == self.ds_death])
        mask = self.at(form=names.ae_form) & (self.col(names.ae_end) != "")
        fatal = self.design.extra.get("fatal_outcome_code", "5")
        mask &= ~self.col(self.rid).isin(dead) & (self.col(names.ae_outcome) != fatal)
        for row in self.pick(mask, n):
            self.set(
                row,
                names.ae_outcome,
                fatal,
                "fatal_without_death",
                "AE outcome fatal but no death in the disposition form",
            )

    def data_after_withdrawal(self, n: int) -> None:
        names = self.names
        latest = (self.cut - timedelta(days=15)).isoformat()
        withdrawn = self.col(names.disposition_status).isin([*self.ds_other, self.ds_ae])
        withdrawn &= self.col(names.disposition_date) <= latest
        ds_date = dict(
            zip(
                self.col(self.rid)[withdrawn],
                self.col(names.disposition_date)[withdrawn],
                strict=True,
            )
        )
        mask = self.at(form=names.sessions_form) & self.col(self.rid).isin(set(ds_date))
        for row in self.pick(mask, n):
            record = str(self.df.at[row, self.rid])
            later = date.fromisoformat(ds_date[record]) + timedelta(
                days=5 + int(self.rng.integers(0, 10))
            )
            self.set(
                row,
                names.session_date,
                later.isoformat(),
                "data_after_withdrawal",
                f"CBT session dated after the disposition date {ds_date[record]}",
            )

    def adjunct_in_control_arm(self, n: int) -> None:
        names = self.names
        arms = self.design.arms
        adjunct = set(self.design.adjunct_arms or arms[:1])
        control_arms = [a for a in arms if a not in adjunct]
        if not control_arms or names.arm not in self.df or names.doses_form is None:
            return
        control = self.col(self.rid)[self.col(names.arm).isin(control_arms)]
        has_dosing = set(self.col(self.rid)[self.at(form=names.doses_form)])
        donors = self.df.index[self.at(form=names.doses_form)]
        if len(donors) == 0:
            return
        mask = self.col(self.rid).isin(set(control) - has_dosing) & (self.col(names.arm) != "")
        amount = names.dose_amount or names.dose_date or ""
        for row in self.pick(mask, n):
            record = str(self.df.at[row, self.rid])
            donor = int(donors[int(self.rng.integers(0, len(donors)))])
            copy = {c: str(self.df.at[donor, c]) for c in self.df.columns}
            copy[self.rid] = record
            copy["redcap_repeat_instance"] = "1"
            copy["redcap_data_access_group"] = str(self.df.at[row, "redcap_data_access_group"])
            if names.dose_date:
                copy[names.dose_date] = self.base_value(
                    record, self.design.visits[0].event, names.randomization_date
                )
            self.new_rows.append(copy)
            self.truth.append(
                {
                    "error_type": "adjunct_in_control_arm",
                    _COLUMNS[1]: record,
                    "event": copy["redcap_event_name"],
                    "instrument": names.doses_form,
                    "instance": "1",
                    "field": amount,
                    "original_value": "",
                    "planted_value": copy.get(amount, ""),
                    "description": "adjunct dosing recorded for a participant of an arm "
                    "without the adjunct",
                }
            )

    def stratum_mismatch(self, n: int) -> None:
        name = self.names.recorded_stratum
        levels = self.design.severity_levels
        if name is None or name not in self.df or len(levels) < 2:
            return
        first, second = levels[0][0], levels[1][0]
        for row in self.pick(self.col(name) != "", n):
            recorded = str(self.df.at[row, name])
            other = first if recorded == second else second
            self.set(
                row,
                name,
                other,
                "stratum_mismatch",
                "recorded stratum differs from the one the baseline primary-scale total gives",
            )

    def randomised_despite_exclusion(self, n: int) -> None:
        names = self.names
        randomised = set(self.col(self.rid)[self.col(names.randomized) == "1"])
        # exclusions that no derived rule (liver, C-SSRS) and no sex restriction decide
        plain = [
            e
            for e in names.exclusions
            if e not in (names.exclusion_liver, names.exclusion_suicide, names.exclusion_pregnancy)
        ][:3]
        if not plain:
            return
        for i in range(n):
            name = plain[i % len(plain)]
            mask = self.col(self.rid).isin(randomised) & (self.col(name) == "0")
            for row in self.pick(mask, 1):
                self.set(
                    row,
                    name,
                    "1",
                    "randomised_despite_exclusion",
                    f"randomised although exclusion {name} is Yes",
                )

    def adverse_event_before_consent(self, n: int) -> None:
        names = self.names
        given = self.col(names.consent_date) != ""
        consent = dict(
            zip(
                self.col(self.rid)[given],
                self.col(names.consent_date)[given],
                strict=True,
            )
        )
        mask = self.at(form=names.ae_form) & (self.col(names.ae_start) != "")
        for row in self.pick(mask, n):
            record = str(self.df.at[row, self.rid])
            before = date.fromisoformat(consent[record]) - timedelta(
                days=3 + int(self.rng.integers(0, 20))
            )
            self.set(
                row,
                names.ae_start,
                before.isoformat(),
                "adverse_event_before_consent",
                f"AE onset before informed consent ({consent[record]})",
            )

    def prohibited_medication(self, n: int) -> None:
        names = self.names
        codes = names.cm_classes_by_rule.get("prohibited", ())
        if not codes:
            return
        prohibited = codes[0]
        mask = self.at(form=names.cm_form) & (self.col(names.cm_class) != prohibited)
        mask &= self.col(names.cm_start) >= self.col(self.rid).map(self._screening_dates())
        for row in self.pick(mask, n):
            self.set(
                row,
                names.cm_class,
                prohibited,
                "prohibited_medication",
                "prohibited medication (from screening) taken during the study",
            )

    def total_with_missing_item(self, n: int) -> None:
        # a scale without proration whose total is kept although an item is blank
        scale = next(
            (
                s
                for s in self._scales()
                if self.design.extra.get("no_proration", {}).get(s.form, False)
                and len(s.groups) > 6
            ),
            None,
        )
        if scale is None:
            return
        item = scale.groups[6][0]
        mask = (self.col(scale.total) != "") & (self.col(item) != "")
        for row in self.pick(mask, n):
            self.set(
                row,
                item,
                "",
                "total_with_missing_item",
                f"{item} blank but the total {scale.total} is stored (no proration allowed)",
            )

    def unreported_unanticipated_problem(self, n: int) -> None:
        # A non-serious AE (its IRB clock runs from onset) judged an unanticipated problem, with
        # no IRB report although the protocol's deadline passed well before the data cut.
        names = self.names
        if names.ae_unanticipated is None or names.irb_report is None:
            return
        hours = dict(self.design.extra.get("clock_hours", {})).get("unanticipated_problem", 168.0)
        latest = (self.cut - timedelta(hours=hours) - timedelta(days=2)).isoformat()
        mask = (
            self.at(form=names.ae_form)
            & (self.col(names.ae_serious) == "0")
            & (self.col(names.ae_unanticipated) == "0")
            & (self.col(names.irb_report) == "")
            & (self.col(names.ae_start) != "")
            & (self.col(names.ae_start) <= latest)
        )
        for row in self.pick(mask, n):
            self.set(
                row,
                names.ae_unanticipated,
                "1",
                "unreported_unanticipated_problem",
                f"unanticipated problem without an IRB report ({hours:.0f} h clock from onset)",
            )

    # -- disagreements between two records of one fact (studyman.validation.reconciliation) ----
    def _adjunct_participants(self) -> frozenset[str]:
        names = self.names
        if names.arm not in self.df or not self.design.arms:
            return frozenset()
        adjunct = list(self.design.adjunct_arms or self.design.arms[:1])
        return frozenset(self.col(self.rid)[self.col(names.arm).isin(adjunct)])

    def _with_fatal_ae(self) -> frozenset[str]:
        fatal = self.design.extra.get("fatal_outcome_code", "5")
        mask = self.at(form=self.names.ae_form) & (self.col(self.names.ae_outcome) == fatal)
        return frozenset(self.col(self.rid)[mask])

    def _withdrawn_code(self) -> str:
        return str(self.design.extra.get("withdrawn_action_code", "4"))

    def ae_disposition_without_withdrawal(self, n: int) -> None:
        names = self.names
        if names.ae_action is None:
            return
        withdrawn = self.at(form=names.ae_form) & (
            self.col(names.ae_action) == self._withdrawn_code()
        )
        candidates = self._adjunct_participants() - set(self.col(self.rid)[withdrawn])
        # participants without any adverse event first: those with one are the only candidates
        # of withdrawal_without_ae_disposition
        with_ae = set(self.col(self.rid)[self.at(form=names.ae_form)])
        other = self.col(names.disposition_status).isin(self.ds_other)
        quiet = candidates - with_ae
        if int((other & self.col(self.rid).isin(quiet - self.used)).sum()) >= n:
            candidates = quiet
        mask = other & self.col(self.rid).isin(candidates)
        for row in self.pick(mask, n):
            self.set(
                row,
                names.disposition_status,
                self.ds_ae,
                "ae_disposition_without_withdrawal",
                "disposition reason adverse event, but no adverse event withdrew the adjunct",
            )

    def withdrawal_without_ae_disposition(self, n: int) -> None:
        names = self.names
        if names.ae_action is None:
            return
        other = self.col(names.disposition_status).isin(self.ds_other)
        candidates = self._adjunct_participants() & set(self.col(self.rid)[other])
        mask = self.at(form=names.ae_form) & self.col(self.rid).isin(candidates)
        mask &= self.col(names.ae_action) != self._withdrawn_code()
        for row in self.pick(mask, n):
            self.set(
                row,
                names.ae_action,
                self._withdrawn_code(),
                "withdrawal_without_ae_disposition",
                "adjunct withdrawn for this adverse event; the disposition gives another reason",
            )

    def death_without_fatal_ae(self, n: int) -> None:
        names = self.names
        mask = self.col(names.disposition_status).isin(self.ds_other)
        mask &= self.col(names.disposition_date) != ""
        mask &= ~self.col(self.rid).isin(self._with_fatal_ae())
        for row in self.pick(mask, n):
            # the death is recorded whole (reason and date), only its adverse event is missing
            self.df.at[row, names.death_date] = str(self.df.at[row, names.disposition_date])
            self.set(
                row,
                names.disposition_status,
                self.ds_death,
                "death_without_fatal_ae",
                "death in the disposition form (with its date) but no adverse event is fatal",
            )

    def fatal_without_death_date(self, n: int) -> None:
        names = self.names
        fatal = self.design.extra.get("fatal_outcome_code", "5")
        ended = self.at(form=names.ae_form) & (self.col(names.ae_end) != "")
        ended &= self.col(names.ae_outcome) != fatal
        first_ended = {
            str(record): int(row)
            for row, record in zip(
                self.df.index[ended][::-1], self.col(self.rid)[ended][::-1], strict=True
            )
        }
        mask = self.col(names.disposition_status).isin(
            [self.ds_completed, self.ds_ae, *self.ds_other]
        )
        mask &= self.col(self.rid).isin(set(first_ended) - self._with_fatal_ae())
        for row in self.pick(mask, n):
            event_row = first_ended[str(self.df.at[row, self.rid])]
            # a fatal adverse event and a death in the disposition, without the date of death
            self.df.at[event_row, names.ae_outcome] = fatal
            instance = str(self.df.at[event_row, "redcap_repeat_instance"])
            self.set(
                row,
                names.disposition_status,
                self.ds_death,
                "fatal_without_death_date",
                f"death with a fatal adverse event (instance {instance}) but no date of death",
            )

    def treatment_before_randomisation(self, n: int) -> None:
        names = self.names
        baseline = self.design.visits[0].event
        mask = self.at(form=names.sessions_form) & (self.col(names.session_attended) == "1")
        mask &= self.col("redcap_repeat_instance") == "1"
        for row in self.pick(mask, n):
            record = str(self.df.at[row, self.rid])
            randomised = self.base_value(record, baseline, names.randomization_date)
            if not randomised:
                continue
            before = date.fromisoformat(randomised) - timedelta(
                days=1 + int(self.rng.integers(0, 5))
            )
            self.set(
                row,
                names.session_date,
                before.isoformat(),
                "treatment_before_randomisation",
                f"first CBT session dated before randomisation ({randomised})",
            )

    def major_deviation_recorded_minor(self, n: int) -> None:
        # the generator records its deviations of protocol-declared major categories as major
        names = self.names
        mask = self.at(form=names.deviation_form) & (self.col(names.deviation_major) == "1")
        for row in self.pick(mask, n):
            self.set(
                row,
                names.deviation_major,
                "0",
                "major_deviation_recorded_minor",
                "deviation of a category the protocol declares major recorded as not major",
            )

    def _screening_dates(self) -> dict[str, str]:
        column = self.col(self.names.screening_date)
        dated = column != ""
        return dict(zip(self.col(self.rid)[dated], column[dated], strict=True))

    def result(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        frame = self.df
        if self.new_rows:
            added = pd.DataFrame(self.new_rows, columns=list(frame.columns))
            frame = pd.concat([frame, added], ignore_index=True)
            frame = sort_records(self.design, frame)
        truth = pd.DataFrame(self.truth, columns=_COLUMNS).astype(str)
        return frame, truth


def plant_errors(
    records: pd.DataFrame,
    design: StudyDesign,
    *,
    data_cut: date,
    rng: np.random.Generator,
    per_type: int = 3,
    types: tuple[str, ...] = ERROR_TYPES,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plant *per_type* errors of each type into a copy of *records*.

    Parameters
    ----------
    records
        Clean flat records (not modified).
    design
        The study (dictionary ranges and codes, windows, the SAE clock).
    data_cut
        The data cut-off (future dates are planted after it).
    rng
        The random generator (which cells are hit).
    per_type
        Errors planted per type (fewer when the data hold too few candidates, e.g. SAEs).
    types
        The error types to plant (:data:`ERROR_TYPES` by default).

    Returns
    -------
    tuple of pandas.DataFrame
        The records with errors, and the ground truth (one row per planted error).
    """
    planter = _Planter(records, design, data_cut, rng)
    for error_type in types:
        method: Callable[[int], None] = getattr(planter, error_type)
        method(per_type)
    return planter.result()
