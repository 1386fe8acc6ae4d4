"""The blinding gate: the one place where a study's data become its blinded view.

The protocol's blinding policy (:class:`studyman.protocol.models.Blinding`) declares what reveals
allocation: whole forms (``unblinded_forms``: randomisation, dosing), whole fields
(``masked_fields``) and codes of a field (``masked_codes``, merged into one neutral code). Every
reader without the randomisation list (blinded validation and listings, the blinded analysis run,
the DSMB open report, a pull or import with a blinded token, the demo's coordinator export) reads
the study through the functions here, and nothing else removes or masks data:

* :func:`blinded_view` — a read snapshot → its blinded view (tables, findings, manifest);
* :func:`read_blinded_snapshot` — the same, without ever opening an unblinded table;
* :func:`blind_tables` — typed snapshot tables (one per instrument);
* :func:`blind_flat_records` — REDCap's flat record export (text values);
* :func:`blind_dictionary` / :func:`blind_metadata_rows` — the data dictionary, with the masked
  codes' choices merged, so that a masked value is a valid code of its field;
* :func:`blind_findings` — findings and queries (no row on a hidden form or field; masked values).

:func:`allocation_leaks` states what of the policy is still visible in a set of tables; tests
and the output gates use it.

Notes
-----
Masking merges codes rather than inventing a new one: ``ae_action`` codes 1-4 become 1 with
the label "None, or an action on the adjunct (masked)". The merged set must hold a value that
every arm can take; a neutral value only one arm can have would still reveal it, which is why the
reference study merges "None" into the actions on the adjunct.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from studyman.protocol.models import Blinding, MaskedCodes, Protocol
from studyman.protocol.redcap_project import (
    DataDictionary,
    DictionaryField,
    field_choice_pairs,
)
from studyman.sources.redcap_log import LOG_TABLE, blind_log

__all__ = [
    "BLINDED_VIEW",
    "allocation_leaks",
    "blind_dictionary",
    "blind_findings",
    "blind_flat_records",
    "blind_metadata_rows",
    "blind_tables",
    "blinded_view",
    "hidden_forms",
    "read_blinded_snapshot",
]

BLINDED_VIEW = "blinded"
"""The manifest's ``view`` value of a snapshot read (or written) through the gate."""

_REPEAT = "redcap_repeat_instrument"


def _policy(protocol: Protocol | Blinding) -> Blinding:
    return protocol if isinstance(protocol, Blinding) else protocol.blinding


def hidden_forms(protocol: Protocol | Blinding) -> frozenset[str]:
    """The forms no blinded reader sees at all."""
    return frozenset(_policy(protocol).unblinded_forms)


def _masked_field_column(column: str, fields: Collection[str]) -> bool:
    """True for a masked field's own column and its derived ones (checkbox, raw, missing)."""
    if column in fields:
        return True
    base = re.sub(r"(___[a-z0-9_]+|__raw|__missing)$", "", column)
    return base != column and base in fields


def _mask_series(values: pd.Series, masked: MaskedCodes) -> pd.Series:
    """*values* with every masked code replaced by the neutral code (same dtype)."""
    codes = set(masked.code_texts)
    target = str(masked.masked_as)
    if values.empty:
        return values
    text = values.astype("string").str.strip()
    hit = text.isin(codes).fillna(False).to_numpy(dtype=bool)
    if not hit.any():
        return values
    replacement: object = target
    if pd.api.types.is_numeric_dtype(values.dtype):
        replacement = float(target) if "." in target else int(target)
    result = values.astype(object)
    result[hit] = replacement
    return result.astype(values.dtype)


def _mask_frame(frame: pd.DataFrame, policy: Blinding) -> pd.DataFrame:
    """Drop masked fields' columns and merge masked codes, in one table or flat export."""
    fields = policy.masked_field_names
    dropped = [column for column in frame.columns if _masked_field_column(str(column), fields)]
    kept = frame.drop(columns=dropped) if dropped else frame
    for masked in policy.masked_codes:
        for column in (masked.field, f"{masked.field}__raw"):
            if column in kept.columns:
                if kept is frame:
                    kept = frame.copy()
                kept[column] = _mask_series(kept[column], masked)
    return kept


def blind_tables(
    tables: Mapping[str, pd.DataFrame], protocol: Protocol | Blinding
) -> dict[str, pd.DataFrame]:
    """Typed snapshot tables (instrument → table) as a blinded reader may see them.

    The unblinded forms' tables are left out, masked fields' columns dropped (with their
    ``___code``, ``__raw`` and ``__missing`` columns) and masked codes merged.
    """
    policy = _policy(protocol)
    hidden = hidden_forms(policy)
    result: dict[str, pd.DataFrame] = {}
    for name, frame in tables.items():
        if name in hidden:
            continue
        if name == LOG_TABLE:  # the REDCap log: only rows about forms the reader may see
            masked = {*policy.masked_field_names, *(m.field for m in policy.masked_codes)}
            result[name] = blind_log(frame, hidden, masked)
            continue
        if _REPEAT in frame.columns:
            frame = frame.loc[~frame[_REPEAT].astype("string").isin(hidden).fillna(False)]
        result[name] = _mask_frame(frame, policy)
    return result


def blind_flat_records(
    records: pd.DataFrame, protocol: Protocol | Blinding, dictionary: DataDictionary
) -> pd.DataFrame:
    """REDCap's flat record export as a blinded reader may see it.

    The unblinded forms' columns (and ``<form>_complete``) and their repeating rows are dropped,
    masked fields' columns dropped and masked codes merged.
    """
    policy = _policy(protocol)
    forms = hidden_forms(policy)
    columns = [
        column
        for spec in dictionary.fields
        if spec.form_name in forms
        for column in spec.export_names
        if column in records.columns
    ]
    columns += [f"{form}_complete" for form in forms if f"{form}_complete" in records.columns]
    kept = records.drop(columns=columns)
    if _REPEAT in kept.columns:
        repeat = kept[_REPEAT].astype("string").fillna("").str.strip()
        kept = kept.loc[~repeat.isin(forms).to_numpy(dtype=bool)]
    return _mask_frame(kept, policy).reset_index(drop=True)


def _blind_field(spec: DictionaryField, masked: MaskedCodes) -> DictionaryField:
    codes = set(masked.code_texts)
    target = str(masked.masked_as)
    pairs = field_choice_pairs(spec.field_type, spec.select_choices_or_calculations)
    merged: list[str] = []
    for code, label in pairs:
        if code == target:
            merged.append(f"{code}, {masked.label}")
        elif code not in codes:
            merged.append(f"{code}, {label}")
    return spec.model_copy(update={"select_choices_or_calculations": " | ".join(merged)})


def blind_dictionary(dictionary: DataDictionary, protocol: Protocol | Blinding) -> DataDictionary:
    """The data dictionary of the blinded view.

    The unblinded forms' fields and the masked fields are left out; a field with masked codes
    keeps the neutral code, labelled as the policy says, and loses the codes merged into it.
    """
    policy = _policy(protocol)
    forms = hidden_forms(policy)
    fields = set(policy.masked_field_names)
    kept: list[DictionaryField] = []
    for spec in dictionary.fields:
        if spec.form_name in forms or spec.field_name in fields:
            continue
        masked = policy.masked_codes_of(spec.field_name)
        kept.append(_blind_field(spec, masked) if masked is not None else spec)
    return dictionary.model_copy(update={"fields": tuple(kept)})


def blind_metadata_rows(
    rows: Sequence[Mapping[str, Any]], protocol: Protocol | Blinding
) -> list[dict[str, Any]]:
    """REDCap ``content=metadata`` rows of the blinded view (:func:`blind_dictionary`)."""
    dictionary = DataDictionary.from_rows(rows)
    return [dict(row) for row in blind_dictionary(dictionary, protocol).as_rows()]


def blind_findings(findings: pd.DataFrame, protocol: Protocol | Blinding) -> pd.DataFrame:
    """Findings (or queries) a blinded reader may see.

    No row on an unblinded form or a masked field; masked codes in ``value`` are merged.
    """
    policy = _policy(protocol)
    if findings.empty:
        return findings
    keep = pd.Series(True, index=findings.index)
    if "instrument" in findings.columns:
        keep &= ~findings["instrument"].astype("string").isin(hidden_forms(policy)).fillna(False)
    if "field" in findings.columns:
        field = findings["field"].astype("string").fillna("")
        masked_fields = policy.masked_field_names
        keep &= ~field.map(lambda name: _masked_field_column(str(name), masked_fields))
    result = findings.loc[keep.to_numpy(dtype=bool)].copy()
    if "value" in result.columns and "field" in result.columns:
        for masked in policy.masked_codes:
            on_field = (result["field"].astype("string") == masked.field).fillna(False)
            if on_field.any():
                rows = on_field.to_numpy(dtype=bool)
                result.loc[rows, "value"] = _mask_series(
                    result.loc[rows, "value"], masked
                ).to_numpy()
    return result.reset_index(drop=True)


def blinded_view(snapshot: Any, protocol: Protocol) -> Any:
    """The blinded view of a read snapshot (:class:`studyman.sources.snapshot.Snapshot`).

    Tables through :func:`blind_tables`, findings through :func:`blind_findings`; the manifest
    loses the hidden tables and says ``"view": "blinded"``. A snapshot already in its blinded
    view is returned unchanged in content (blinding is idempotent).
    """
    manifest = dict(snapshot.manifest)
    tables_entry = manifest.get("tables")
    if isinstance(tables_entry, Mapping):
        hidden = hidden_forms(protocol)
        manifest["tables"] = {k: v for k, v in tables_entry.items() if k not in hidden}
    manifest["view"] = BLINDED_VIEW
    return replace(
        snapshot,
        manifest=manifest,
        tables=blind_tables(snapshot.tables, protocol),
        findings=blind_findings(snapshot.findings, protocol),
    )


def read_blinded_snapshot(path: Path, protocol: Protocol, *, verify: bool = True) -> Any:
    """Read the snapshot at *path* as its blinded view; unblinded tables are never opened."""
    from studyman.errors import SnapshotError
    from studyman.sources.snapshot import (
        Snapshot,
        _load_manifest,
        read_snapshot_file,
        read_snapshot_tables,
        snapshot_id,
        verify_snapshot,
    )

    path = Path(path)
    manifest = _load_manifest(path)
    if verify:
        verification = verify_snapshot(path)
        if not verification.ok:
            raise SnapshotError(verification.summary())
    tables = read_snapshot_tables(path, manifest, skip=hidden_forms(protocol))
    findings = read_snapshot_file(path, "findings.parquet")
    identity = snapshot_id(path) if verify else ""
    return blinded_view(
        Snapshot(
            path=path,
            manifest=manifest,
            tables=tables,
            findings=findings,
            snapshot_id=identity,
        ),
        protocol,
    )


def allocation_leaks(
    frames: Mapping[str, pd.DataFrame] | Iterable[tuple[str, pd.DataFrame]],
    protocol: Protocol,
    dictionary: DataDictionary | None = None,
) -> list[str]:
    """What the policy hides that is still visible in *frames* (name → table); empty when none.

    Looks for a hidden form's table or repeat rows, a column of a hidden form's field (with
    *dictionary*) or of a masked field, and a masked code other than the neutral one in a
    field's column.
    """
    policy = protocol.blinding
    hidden = hidden_forms(policy)
    hidden_fields: set[str] = set(policy.masked_field_names)
    if dictionary is not None:
        for spec in dictionary.fields:
            if spec.form_name in hidden and spec.field_name != dictionary.record_id_field:
                hidden_fields.update(spec.export_names)
    items = frames.items() if isinstance(frames, Mapping) else frames
    leaks: list[str] = []
    for name, frame in items:
        if name in hidden:
            leaks.append(f"{name}: a table of the unblinded form {name!r}")
        for column in frame.columns:
            if _masked_field_column(str(column), hidden_fields):
                leaks.append(f"{name}: column {column!r} reveals allocation")
        if _REPEAT in frame.columns:
            rows = frame[_REPEAT].astype("string").isin(hidden).fillna(False)
            if rows.any():
                leaks.append(f"{name}: {int(rows.sum())} row(s) of an unblinded repeating form")
        for masked in policy.masked_codes:
            if masked.field in frame.columns:
                text = frame[masked.field].astype("string").str.strip()
                revealing = set(masked.code_texts) - {str(masked.masked_as)}
                found = sorted(set(text[text.isin(revealing).fillna(False)].dropna()))
                if found:
                    leaks.append(f"{name}: {masked.field} holds masked code(s) {', '.join(found)}")
    return leaks


def is_blinded_export(tables: Collection[str], protocol: Protocol | None) -> bool:
    """True when an export holds none of the policy's unblinded forms (a blinded token's)."""
    return protocol is not None and not (set(tables) & hidden_forms(protocol))


def blind_export(
    tidy: Any, metadata: Sequence[Mapping[str, Any]], protocol: Protocol
) -> tuple[Any, list[dict[str, Any]]]:
    """A blinded export's typed tables (:class:`~studyman.sources.tidy.TidyTables`) and metadata
    as its snapshot stores them: the blinded view, so that the masked codes of a blinded pull or
    import never reach the disk."""
    blinded = replace(
        tidy,
        tables=blind_tables(tidy.tables, protocol),
        findings=blind_findings(tidy.findings, protocol),
    )
    return blinded, blind_metadata_rows(metadata, protocol) if metadata else []


def blind_form_rows(
    rows: Sequence[Mapping[str, Any]] | None, protocol: Protocol, key: str
) -> list[dict[str, Any]]:
    """Project-structure rows (repeating forms, form-event mappings) without the hidden forms:
    the blinded view reads as if the project did not have them."""
    hidden = hidden_forms(protocol)
    return [dict(row) for row in rows or () if str(row.get(key, "")) not in hidden]
