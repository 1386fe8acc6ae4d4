"""Rename every REDCap field, form and event of a study, consistently, in all its files (issue 13).

A test helper (not part of studyman): it proves that studyman takes every study name from the
protocol by giving it a study whose names share nothing with the reference study's. The scheme
is a bijection that scrambles a name beyond any pattern a program might match on: a field or form
``name`` becomes ``"z" + name reversed`` (``hamd_total`` -> ``zlatot_dmah``); an event keeps
REDCap's ``_arm_<n>`` suffix and scrambles the rest (``week_12_arm_1`` -> ``z21_keew_arm_1``).
Status fields (``<form>_complete``) and checkbox columns (``<field>___<code>``) follow their form
and field. Labels, codes, record IDs and data values are left alone: they are not names.

What is renamed: the REDCap project directory (data dictionary, including the ``[field]`` and
``[event][field]`` references in branching logic, calculations, labels and annotations;
instruments, events, form-event mapping, repeating forms and their custom labels, user rights),
``protocol.yaml`` (with every default of the protocol models written out, since a default is a
reference name), ``checks.yaml``, the analysis plan, and generated data (flat records,
randomisation list, planted-error ground truth).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from studyman.protocol import load_protocol

#: Keys whose string values are identifiers or keywords of studyman's own files (estimand ids,
#: analysis ids, criterion ids, a population criterion's kind), never REDCap names, even when
#: they happen to be spelled like one (``kind: randomized``).
_ID_KEYS = frozenset({"id", "estimand", "main_analysis", "analysis", "kind"})
#: Keys whose values are REDCap logic (``[field]`` references inside).
_LOGIC_KEYS = frozenset({"logic"})
#: Mappings whose keys are REDCap names, by the path of the mapping in the YAML document.
_NAME_KEYED = frozenset({("blinding", "reasons")})
#: Mappings whose keys only look like REDCap names: the plan's analysis visits are keyed by the
#: parameter (PARAMCD lower-cased, ``hamd17``), an analysis name that the renaming keeps.
_OWN_KEYED = frozenset({("visits",)})

_TOKEN = re.compile(r"\[([A-Za-z][A-Za-z0-9_]*)(?=[\]\(:])")
_EVENT = re.compile(r"(.+)_arm_(\d+)")
_PROJECT_FILES = frozenset(
    {
        "arms.csv",
        "dags.csv",
        "data_dictionary.csv",
        "events.csv",
        "instrument_event_mapping.csv",
        "instruments.csv",
        "project.json",
        "repeating_instruments.csv",
        "users.csv",
    }
)


def scramble(name: str) -> str:
    """The new name of a field or form."""
    return "z" + name[::-1]


def scramble_event(name: str) -> str:
    """The new unique name of an event (REDCap's ``_arm_<n>`` suffix kept)."""
    match = _EVENT.fullmatch(name)
    if match is None:
        return scramble(name)
    return f"{scramble(match[1])}_arm_{match[2]}"


@dataclass(frozen=True)
class Renaming:
    """The renaming of one study's REDCap names, both ways."""

    fields: Mapping[str, str]
    forms: Mapping[str, str]
    events: Mapping[str, str]

    @classmethod
    def of_project(cls, project_dir: Path) -> Renaming:
        """Every field, form and event of the REDCap project directory *project_dir*."""
        dictionary = _read_csv(project_dir / "data_dictionary.csv")
        instruments = _read_csv(project_dir / "instruments.csv")
        events = (
            _read_csv(project_dir / "events.csv") if (project_dir / "events.csv").is_file() else []
        )
        fields = {row["field_name"]: scramble(row["field_name"]) for row in dictionary}
        forms = {row["form_name"]: scramble(row["form_name"]) for row in dictionary}
        forms |= {row["instrument_name"]: scramble(row["instrument_name"]) for row in instruments}
        fields |= {f"{form}_complete": f"{new}_complete" for form, new in forms.items()}
        renamed_events = {
            row["unique_event_name"]: scramble_event(row["unique_event_name"]) for row in events
        }
        renaming = cls(fields=fields, forms=forms, events=renamed_events)
        clash = set(renaming.names) & set(renaming.names.values())
        assert not clash, f"a new name is also an old one: {sorted(clash)}"
        return renaming

    @property
    def names(self) -> dict[str, str]:
        """Every old name -> its new name (fields, status fields, forms, events)."""
        return {**self.fields, **self.forms, **self.events}

    @property
    def back_names(self) -> dict[str, str]:
        """Every new name -> its old name."""
        return {new: old for old, new in self.names.items()}

    def name(self, value: str) -> str:
        """*value* renamed when it is a name, else unchanged."""
        return self.names.get(value, value)

    def back(self, value: str) -> str:
        """*value* mapped back to the original name when it is a new name, else unchanged."""
        return self.back_names.get(value, value)

    def column(self, column: str) -> str:
        """A column of a record export or a snapshot table, renamed (checkbox codes and
        studyman's ``__raw``/``__missing`` suffixes kept)."""
        return _map_column(column, self.names)

    def column_back(self, column: str) -> str:
        """A renamed column mapped back to the original."""
        return _map_column(column, self.back_names)

    def logic(self, text: str) -> str:
        """REDCap logic or piping with every ``[name]`` reference renamed."""
        return _TOKEN.sub(lambda m: "[" + self.name(m[1]), text)

    # -- files ---------------------------------------------------------------------------

    def project(self, source: Path, target: Path) -> None:
        """Write the REDCap project directory *source* renamed into *target*."""
        unknown = sorted(
            p.name for p in source.iterdir() if p.name not in _PROJECT_FILES and p.is_file()
        )
        assert not unknown, f"the renamer does not know these project files: {unknown}"
        target.mkdir(parents=True, exist_ok=True)
        for name in ("arms.csv", "dags.csv"):
            if (source / name).is_file():
                (target / name).write_bytes((source / name).read_bytes())
        text_columns = (
            "section_header",
            "field_label",
            "select_choices_or_calculations",
            "field_note",
            "branching_logic",
            "field_annotation",
        )

        def dictionary_row(row: dict[str, str]) -> dict[str, str]:
            row = dict(row)
            row["field_name"] = self.fields[row["field_name"]]
            row["form_name"] = self.forms[row["form_name"]]
            for column in text_columns:
                if column in row:
                    row[column] = self.logic(row[column])
            return row

        self._rewrite_csv(source, target, "data_dictionary.csv", dictionary_row)
        self._rewrite_csv(
            source,
            target,
            "instruments.csv",
            lambda row: row | {"instrument_name": self.forms[row["instrument_name"]]},
        )
        self._rewrite_csv(
            source,
            target,
            "events.csv",
            lambda row: row | {"unique_event_name": self.events[row["unique_event_name"]]},
        )
        self._rewrite_csv(
            source,
            target,
            "instrument_event_mapping.csv",
            lambda row: (
                row
                | {
                    "unique_event_name": self.events[row["unique_event_name"]],
                    "form": self.forms[row["form"]],
                }
            ),
        )
        self._rewrite_csv(
            source,
            target,
            "repeating_instruments.csv",
            lambda row: (
                row
                | {
                    "event_name": self.events.get(row["event_name"], row["event_name"]),
                    "form_name": self.forms[row["form_name"]],
                    "custom_form_label": self.logic(row["custom_form_label"]),
                }
            ),
        )

        def rights(value: str) -> str:
            parts = []
            for part in value.split(","):
                form, _, right = part.partition(":")
                parts.append(
                    f"{self.forms.get(form.strip(), form.strip())}:{right}" if right else part
                )
            return ",".join(parts)

        self._rewrite_csv(
            source,
            target,
            "users.csv",
            lambda row: (
                row | {key: rights(row[key]) for key in ("forms", "forms_export") if key in row}
            ),
        )
        project = json.loads((source / "project.json").read_text(encoding="utf-8"))
        for key in ("custom_record_label", "secondary_unique_field"):
            if isinstance(project.get(key), str):
                project[key] = self.logic(self.name(project[key]))
        (target / "project.json").write_text(json.dumps(project, indent=2), encoding="utf-8")

    def _rewrite_csv(self, source: Path, target: Path, name: str, change: Any) -> None:
        if not (source / name).is_file():
            return
        with (source / name).open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = [change(row) for row in reader]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        (target / name).write_text(buffer.getvalue(), encoding="utf-8")

    def yaml_document(
        self,
        source: Path,
        target: Path,
        *,
        document: dict[str, Any] | None = None,
        add_paramcd: bool = False,
    ) -> None:
        """A protocol, checks or plan YAML file, renamed (comments are not kept).

        With *add_paramcd*, every scale without a declared ADaM PARAMCD gets the one the
        original name implied (the instrument upper-cased): the PARAMCD is an analysis name,
        which the analysis plan refers to, not a REDCap name.
        """
        if document is None:
            document = yaml.safe_load(source.read_text(encoding="utf-8"))
        if add_paramcd:
            for scale in document.get("scoring", []) or []:
                scale.setdefault("paramcd", str(scale["instrument"]).upper())
        renamed = self._walk(document, ())
        left = sorted(set(self._names_left(renamed, ())))
        assert not left, f"{source}: names not renamed: {left}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(
            yaml.safe_dump(renamed, sort_keys=False, allow_unicode=True, width=100),
            encoding="utf-8",
        )

    def _walk(self, node: Any, path: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            rename_keys = path in _NAME_KEYED
            return {
                (self.name(key) if rename_keys and isinstance(key, str) else key): self._walk(
                    value, (*path, str(key))
                )
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [self._walk(item, path) for item in node]
        if isinstance(node, str):
            key = path[-1] if path else ""
            if key in _ID_KEYS:
                return node
            if key in _LOGIC_KEYS:
                return self.logic(node)
            return self.name(node)
        return node

    def _names_left(self, node: Any, path: tuple[str, ...]) -> Iterable[str]:
        """Original names still standing as nested keys or (non-id) values."""
        if isinstance(node, dict):
            for key, value in node.items():
                # a nested key spelled like a study name (hamd17, adverse_events) is one; plain
                # words (visit) are the file's own schema keys
                if (
                    path
                    and path not in _OWN_KEYED
                    and key in self.names
                    and re.search(r"[_0-9]", key)
                ):
                    yield f"{'.'.join(path)}: key {key}"
                yield from self._names_left(value, (*path, str(key)))
        elif isinstance(node, list):
            for item in node:
                yield from self._names_left(item, path)
        elif (
            isinstance(node, str) and node in self.names and (path[-1:] or ("",))[0] not in _ID_KEYS
        ):
            yield f"{'.'.join(path)}: {node}"

    # -- data ----------------------------------------------------------------------------

    def records(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Flat REDCap records (raw export) renamed: columns, event and repeat-form values."""
        out = frame.rename(columns=self.column)
        # replace, not map: the column keeps its dtype
        if "redcap_event_name" in out:
            out["redcap_event_name"] = out["redcap_event_name"].replace(dict(self.events))
        if "redcap_repeat_instrument" in out:
            out["redcap_repeat_instrument"] = out["redcap_repeat_instrument"].replace(
                dict(self.forms)
            )
        return out

    def planted_errors(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Planted-error ground truth renamed (its event, instrument and field columns)."""
        out = frame.copy()
        for column in ("event", "instrument", "field"):
            if column in out:
                values = {v: self.column(v) for v in out[column].unique() if isinstance(v, str)}
                out[column] = out[column].replace(values)
        return out


def _map_column(column: str, names: Mapping[str, str]) -> str:
    if column in names:
        return names[column]
    for suffix in ("__raw", "__missing"):
        if column.endswith(suffix) and column[: -len(suffix)] in names:
            return names[column[: -len(suffix)]] + suffix
    base, sep, code = column.partition("___")
    if sep and base in names:
        return f"{names[base]}___{code}"
    return column


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def rename_study(protocol_dir: Path, plan_dir: Path, target: Path) -> tuple[Renaming, Path, Path]:
    """Write the study of *protocol_dir* (and its plan in *plan_dir*) renamed under *target*.

    Returns
    -------
    tuple
        The renaming, the renamed protocol directory and the renamed plan file.
    """
    project = protocol_dir / "redcap"
    renaming = Renaming.of_project(project)
    new_protocol = target / "protocol"
    renaming.project(project, new_protocol / "redcap")
    # every default written out: a default of the protocol models is a reference name, which a
    # renamed study (like any other study) must declare under its own name
    loaded = load_protocol(protocol_dir).model_dump(mode="json", exclude_none=True)
    renaming.yaml_document(
        protocol_dir / "protocol.yaml",
        new_protocol / "protocol.yaml",
        document=loaded,
        add_paramcd=True,
    )
    if (protocol_dir / "checks.yaml").is_file():
        renaming.yaml_document(protocol_dir / "checks.yaml", new_protocol / "checks.yaml")
    # any other file of the study (its DSMB history, notes): YAML renamed, the rest copied
    for path in sorted(protocol_dir.iterdir()):
        if path.name in ("protocol.yaml", "checks.yaml", "redcap") or not path.is_file():
            continue
        if path.suffix in (".yaml", ".yml"):
            renaming.yaml_document(path, new_protocol / path.name)
        else:
            (new_protocol / path.name).write_bytes(path.read_bytes())
    new_plan = target / "analysis" / "sap.yaml"
    renaming.yaml_document(plan_dir / "sap.yaml", new_plan)
    return renaming, new_protocol, new_plan
