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

    def col(self, name: str) -> pd.Series:
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
                "record_id": str(self.df.at[row, self.rid]),
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
            and spec.form in ("vital_signs", "participant")
        ]
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
        visits = [v for v in self.design.visits if v.target_day > 0]
        for i in range(n):
            visit = visits[i % len(visits)]
            mask = self.at(visit.event) & (self.col("redcap_repeat_instrument") == "")
            mask &= self.col("visit_date") != ""
            for row in self.pick(mask, 1):
                record = str(self.df.at[row, self.rid])
                rand = self.base_value(record, self.design.visits[0].event, "rand_date")
                if not rand:
                    continue
                shifted = date.fromisoformat(rand) + timedelta(
                    days=visit.window_end + 3 + int(self.rng.integers(0, 4))
                )
                if shifted > self.cut:
                    shifted = date.fromisoformat(rand) + timedelta(days=visit.window_start - 3)
                self.set(
                    row,
                    "visit_date",
                    shifted.isoformat(),
                    "out_of_window",
                    f"{visit.event} visit on study day "
                    f"{(shifted - date.fromisoformat(rand)).days}, "
                    f"window {visit.window_start}..{visit.window_end}",
                )

    def missing_required(self, n: int) -> None:
        fields = (
            "ae_severity",
            "cm_ongoing",
            "cbt_attended",
            "consent_date",
            "elig_date",
            "ds_date",
        )
        for i in range(n):
            name = fields[i % len(fields)]
            if name not in self.df:
                continue
            for row in self.pick(self.col(name) != "", 1):
                self.set(row, name, "", "missing_required", f"required field {name} left blank")

    def invalid_code(self, n: int) -> None:
        fields = ("sex", "ae_severity", "cm_class", "dv_category", "ae_outcome", "rand_arm")
        for i in range(n):
            name = fields[i % len(fields)]
            if name not in self.df:
                continue
            codes = [int(c) for c in self.design.field(name).codes]
            bad = str(max(codes) + 2 + int(self.rng.integers(0, 5)))
            for row in self.pick(self.col(name) != "", 1):
                self.set(row, name, bad, "invalid_code", f"{name} code {bad} is not a choice")

    def dates_out_of_order(self, n: int) -> None:
        pairs = (("ae_start", "ae_end"), ("cm_start", "cm_stop"))
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
        fields = ("lab_date", "cbt_date", "dv_date")
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
        latest = (self.cut - timedelta(days=5)).isoformat()
        mask = (self.col("ae_aware_dt") != "") & (self.col("ae_aware_dt").str[:10] <= latest)
        for row in self.pick(mask, n):
            aware = datetime.strptime(str(self.df.at[row, "ae_aware_dt"]), "%Y-%m-%d %H:%M")
            late = aware + timedelta(
                hours=self.design.sae_report_hours + 2 + int(self.rng.integers(0, 70))
            )
            self.set(
                row,
                "ae_report_dt",
                late.strftime("%Y-%m-%d %H:%M"),
                "late_sae_report",
                f"SAE report sent {(late - aware).total_seconds() / 3600:.0f} h after awareness",
            )

    def duplicate_record(self, n: int) -> None:
        mask = (self.col("redcap_repeat_instrument") == "") & (self.col("visit_date") != "")
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
        mask = self.at(form="adverse_events") & (self.col("ae_serious") == "0")
        for row in self.pick(mask, n):
            record = str(self.df.at[row, self.rid])
            same = self.at(form="adverse_events") & (self.col(self.rid) == record)
            last = max(int(i) for i in self.col("redcap_repeat_instance")[same])
            copy = {c: str(self.df.at[row, c]) for c in self.df.columns}
            copy["redcap_repeat_instance"] = str(last + 1)
            self.new_rows.append(copy)
            self.truth.append(
                {
                    "error_type": "duplicate_adverse_event",
                    "record_id": record,
                    "event": copy["redcap_event_name"],
                    "instrument": "adverse_events",
                    "instance": str(last + 1),
                    "field": "ae_term",
                    "original_value": "",
                    "planted_value": copy["ae_term"],
                    "description": "copy of instance "
                    f"{self.df.at[row, 'redcap_repeat_instance']!s} (same term and start date)",
                }
            )

    def hamd_16a_and_16b(self, n: int) -> None:
        for row in self.pick((self.col("hamd_16a") == "") & (self.col("hamd_16b") != ""), n):
            self.set(
                row, "hamd_16a", "0", "hamd_16a_and_16b", "HAM-D items 16A and 16B both scored"
            )

    def phq9_item9_without_cssrs(self, n: int) -> None:
        cssrs = [
            c for s in self.design.fields if s.form == "cssrs_since_last" for c in s.export_columns
        ]
        rows = self.pick(
            (self.col("phq9_9") != "") & (self.col("phq9_9") != "0") & (self.col("cssrs_1") != ""),
            n,
        )
        for row in rows:
            for column in cssrs:
                self.df.at[row, column] = ""
            self.df.at[row, "cssrs_since_last_complete"] = "0"
            value = str(self.df.at[row, "phq9_9"])
            self.record(
                row,
                "phq9_9",
                value,
                value,
                "phq9_item9_without_cssrs",
                "C-SSRS since-last-visit form removed at a visit with PHQ-9 item 9 > 0",
            )

    def cssrs_without_safety_action(self, n: int) -> None:
        mask = (self.col("cssrs_4") == "0") & (self.col("cssrs_5") == "0")
        mask &= self.col("cssrs_safety_action") == "0"
        for row in self.pick(mask, n):
            self.set(
                row,
                "cssrs_4",
                "1",
                "cssrs_without_safety_action",
                "C-SSRS ideation type 4 without a safety action",
            )

    def cssrs_skip_logic(self, n: int) -> None:
        mask = (
            (self.col("cssrs_1") == "0")
            & (self.col("cssrs_2") == "0")
            & (self.col("cssrs_3") == "")
        )
        for row in self.pick(mask, n):
            self.set(
                row,
                "cssrs_3",
                "0",
                "cssrs_skip_logic",
                "C-SSRS question 3 answered although questions 1 and 2 are No",
            )

    def serious_without_criterion(self, n: int) -> None:
        crit = [c for c in self.df.columns if c.startswith("ae_ser_crit___")]
        checked = self.df[crit] == "1"
        mask = (self.col("ae_serious") == "1") & (checked.sum(axis=1) == 1)
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
        dead = set(self.col(self.rid)[self.col("ds_status") == "5"])
        mask = self.at(form="adverse_events") & (self.col("ae_end") != "")
        mask &= ~self.col(self.rid).isin(dead) & (self.col("ae_outcome") != "5")
        for row in self.pick(mask, n):
            self.set(
                row,
                "ae_outcome",
                "5",
                "fatal_without_death",
                "AE outcome fatal but no death in the disposition form",
            )

    def data_after_withdrawal(self, n: int) -> None:
        latest = (self.cut - timedelta(days=15)).isoformat()
        withdrawn = self.col("ds_status").isin(["2", "3", "4", "6", "7"])
        withdrawn &= self.col("ds_date") <= latest
        ds_date = dict(
            zip(self.col(self.rid)[withdrawn], self.col("ds_date")[withdrawn], strict=True)
        )
        mask = self.at(form="cbt_sessions") & self.col(self.rid).isin(set(ds_date))
        for row in self.pick(mask, n):
            record = str(self.df.at[row, self.rid])
            later = date.fromisoformat(ds_date[record]) + timedelta(
                days=5 + int(self.rng.integers(0, 10))
            )
            self.set(
                row,
                "cbt_date",
                later.isoformat(),
                "data_after_withdrawal",
                f"CBT session dated after the disposition date {ds_date[record]}",
            )

    def adjunct_in_control_arm(self, n: int) -> None:
        arms = self.design.arms
        if len(arms) < 2 or "rand_arm" not in self.df:
            return
        control = self.col(self.rid)[self.col("rand_arm") == arms[1]]
        has_dosing = set(self.col(self.rid)[self.at(form="dosing")])
        donors = self.df.index[self.at(form="dosing")]
        if len(donors) == 0:
            return
        mask = self.col(self.rid).isin(set(control) - has_dosing) & (self.col("rand_arm") != "")
        for row in self.pick(mask, n):
            record = str(self.df.at[row, self.rid])
            donor = int(donors[int(self.rng.integers(0, len(donors)))])
            copy = {c: str(self.df.at[donor, c]) for c in self.df.columns}
            copy[self.rid] = record
            copy["redcap_repeat_instance"] = "1"
            copy["redcap_data_access_group"] = str(self.df.at[row, "redcap_data_access_group"])
            copy["dose_date"] = self.base_value(record, self.design.visits[0].event, "rand_date")
            self.new_rows.append(copy)
            self.truth.append(
                {
                    "error_type": "adjunct_in_control_arm",
                    "record_id": record,
                    "event": copy["redcap_event_name"],
                    "instrument": "dosing",
                    "instance": "1",
                    "field": "dose_mg",
                    "original_value": "",
                    "planted_value": copy["dose_mg"],
                    "description": "adjunct dosing recorded for a participant of the CBT-alone arm",
                }
            )

    def stratum_mismatch(self, n: int) -> None:
        for row in self.pick(self.col("strat_severity") != "", n):
            recorded = str(self.df.at[row, "strat_severity"])
            other = "1" if recorded == "2" else "2"
            self.set(
                row,
                "strat_severity",
                other,
                "stratum_mismatch",
                "recorded stratum differs from the one the baseline HAM-D-17 gives",
            )

    def randomised_despite_exclusion(self, n: int) -> None:
        randomised = set(self.col(self.rid)[self.col("randomized") == "1"])
        names = ("exc_bipolar", "exc_psychosis", "exc_substance")
        for i in range(n):
            name = names[i % len(names)]
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
        consent = dict(
            zip(
                self.col(self.rid)[self.col("consent_date") != ""],
                self.col("consent_date")[self.col("consent_date") != ""],
                strict=True,
            )
        )
        for row in self.pick(self.at(form="adverse_events") & (self.col("ae_start") != ""), n):
            record = str(self.df.at[row, self.rid])
            before = date.fromisoformat(consent[record]) - timedelta(
                days=3 + int(self.rng.integers(0, 20))
            )
            self.set(
                row,
                "ae_start",
                before.isoformat(),
                "adverse_event_before_consent",
                f"AE onset before informed consent ({consent[record]})",
            )

    def prohibited_medication(self, n: int) -> None:
        prohibited = "5"
        mask = self.at(form="conmeds") & (self.col("cm_class") != prohibited)
        mask &= self.col("cm_start") >= self.col(self.rid).map(self._screening_dates())
        for row in self.pick(mask, n):
            self.set(
                row,
                "cm_class",
                prohibited,
                "prohibited_medication",
                "opioid (prohibited from screening) taken during the study",
            )

    def total_with_missing_item(self, n: int) -> None:
        mask = (self.col("hamd_total") != "") & (self.col("hamd_7") != "")
        for row in self.pick(mask, n):
            self.set(
                row,
                "hamd_7",
                "",
                "total_with_missing_item",
                "HAM-D-17 item 7 blank but the total is stored (no proration allowed)",
            )

    def unreported_unanticipated_problem(self, n: int) -> None:
        # A non-serious AE (its IRB clock runs from onset) judged an unanticipated problem, with
        # no IRB report although the protocol's deadline passed well before the data cut.
        hours = dict(self.design.extra.get("clock_hours", {})).get("unanticipated_problem", 168.0)
        latest = (self.cut - timedelta(hours=hours) - timedelta(days=2)).isoformat()
        mask = (
            self.at(form="adverse_events")
            & (self.col("ae_serious") == "0")
            & (self.col("ae_unanticipated") == "0")
            & (self.col("ae_irb_report_dt") == "")
            & (self.col("ae_start") != "")
            & (self.col("ae_start") <= latest)
        )
        for row in self.pick(mask, n):
            self.set(
                row,
                "ae_unanticipated",
                "1",
                "unreported_unanticipated_problem",
                f"unanticipated problem without an IRB report ({hours:.0f} h clock from onset)",
            )

    # -- disagreements between two records of one fact (studyman.validation.reconciliation) ----
    def _adjunct_participants(self) -> frozenset[str]:
        if "rand_arm" not in self.df or not self.design.arms:
            return frozenset()
        return frozenset(self.col(self.rid)[self.col("rand_arm") == self.design.arms[0]])

    def _with_fatal_ae(self) -> frozenset[str]:
        fatal = self.at(form="adverse_events") & (self.col("ae_outcome") == "5")
        return frozenset(self.col(self.rid)[fatal])

    def ae_disposition_without_withdrawal(self, n: int) -> None:
        withdrawn = self.at(form="adverse_events") & (self.col("ae_action") == "4")
        candidates = self._adjunct_participants() - set(self.col(self.rid)[withdrawn])
        mask = self.col("ds_status").isin(["2", "3", "6", "7"])
        mask &= self.col(self.rid).isin(candidates)
        for row in self.pick(mask, n):
            self.set(
                row,
                "ds_status",
                "4",
                "ae_disposition_without_withdrawal",
                "disposition reason adverse event, but no adverse event withdrew the adjunct",
            )

    def withdrawal_without_ae_disposition(self, n: int) -> None:
        other = self.col("ds_status").isin(["2", "3", "6", "7"])
        candidates = self._adjunct_participants() & set(self.col(self.rid)[other])
        mask = self.at(form="adverse_events") & self.col(self.rid).isin(candidates)
        mask &= self.col("ae_action") != "4"
        for row in self.pick(mask, n):
            self.set(
                row,
                "ae_action",
                "4",
                "withdrawal_without_ae_disposition",
                "adjunct withdrawn for this adverse event; the disposition gives another reason",
            )

    def death_without_fatal_ae(self, n: int) -> None:
        mask = self.col("ds_status").isin(["2", "3", "6", "7"]) & (self.col("ds_date") != "")
        mask &= ~self.col(self.rid).isin(self._with_fatal_ae())
        for row in self.pick(mask, n):
            # the death is recorded whole (reason and date), only its adverse event is missing
            self.df.at[row, "death_date"] = str(self.df.at[row, "ds_date"])
            self.set(
                row,
                "ds_status",
                "5",
                "death_without_fatal_ae",
                "death in the disposition form (with its date) but no adverse event is fatal",
            )

    def fatal_without_death_date(self, n: int) -> None:
        ended = self.at(form="adverse_events") & (self.col("ae_end") != "")
        ended &= self.col("ae_outcome") != "5"
        first_ended = {
            str(record): int(row)
            for row, record in zip(
                self.df.index[ended][::-1], self.col(self.rid)[ended][::-1], strict=True
            )
        }
        mask = self.col("ds_status").isin(["1", "2", "3", "4", "6", "7"])
        mask &= self.col(self.rid).isin(set(first_ended) - self._with_fatal_ae())
        for row in self.pick(mask, n):
            event_row = first_ended[str(self.df.at[row, self.rid])]
            # a fatal adverse event and a death in the disposition, without the date of death
            self.df.at[event_row, "ae_outcome"] = "5"
            instance = str(self.df.at[event_row, "redcap_repeat_instance"])
            self.set(
                row,
                "ds_status",
                "5",
                "fatal_without_death_date",
                f"death with a fatal adverse event (instance {instance}) but no date of death",
            )

    def treatment_before_randomisation(self, n: int) -> None:
        baseline = self.design.visits[0].event
        mask = self.at(form="cbt_sessions") & (self.col("cbt_attended") == "1")
        mask &= self.col("redcap_repeat_instance") == "1"
        for row in self.pick(mask, n):
            record = str(self.df.at[row, self.rid])
            randomised = self.base_value(record, baseline, "rand_date")
            if not randomised:
                continue
            before = date.fromisoformat(randomised) - timedelta(
                days=1 + int(self.rng.integers(0, 5))
            )
            self.set(
                row,
                "cbt_date",
                before.isoformat(),
                "treatment_before_randomisation",
                f"first CBT session dated before randomisation ({randomised})",
            )

    def major_deviation_recorded_minor(self, n: int) -> None:
        # the generator records its deviations of protocol-declared major categories as major
        mask = self.at(form="deviations") & (self.col("dv_major") == "1")
        for row in self.pick(mask, n):
            self.set(
                row,
                "dv_major",
                "0",
                "major_deviation_recorded_minor",
                "deviation of a category the protocol declares major recorded as not major",
            )

    def _screening_dates(self) -> dict[str, str]:
        dated = self.col("scr_date") != ""
        return dict(zip(self.col(self.rid)[dated], self.col("scr_date")[dated], strict=True))

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
