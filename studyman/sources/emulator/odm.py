"""Read a REDCap project from a CDISC ODM 1.3.1 file with REDCap's extensions.

REDCap's "whole project" XML export holds the metadata (forms, items, code lists), events and arms
(``StudyEventDef``), form–event mappings (``FormRef``), repeating instruments and events, data
access groups, user roles, survey settings and the records (``ClinicalData``). This module turns
it into a :class:`~studyman.sources.emulator.model.Project`.

Notes
-----
* Field order is the order of ``ItemRef`` within ``ItemGroupDef`` within ``FormDef``; checkbox
  items (``x___1`` …) collapse into one field; ``<form>_complete``, ``<form>_timestamp``,
  ``redcap_data_access_group`` and ``redcap_survey_identifier`` are export columns, not fields.
* ODM types map back to dictionary types: ``textarea`` → ``notes``, ``select`` → ``dropdown``;
  validation ``int`` → ``integer``, ``float`` → ``number``; soft ``RangeCheck`` GE/LE become the
  validation minimum and maximum.
* REDCap's ODM holds user *roles*, not users: each role is kept as a role, and (for a project
  served straight from its file) also becomes a user named after the role and assigned to it, so
  that a token can call with the role's rights. A project created through the API
  (``content=project``) lists only its creator as a user. ``sql`` fields lose their query
  (the ODM does not carry it).
* Line breaks in values become ``\r\n``: REDCap keeps a line break typed into a form as
  ``\r\n`` (its raw CSV export shows two spaces for it) while its ODM writes ``\n`` alone.
* A file field's value is the document's name (``redcap:DocName``), as REDCap 14's raw export
  shows it (older versions showed ``[document]``); the file itself is not kept.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from studyman.errors import ProtocolError
from studyman.sources.emulator.model import (
    USER_RIGHT_COLUMNS,
    Arm,
    DataAccessGroup,
    Event,
    Field,
    Instrument,
    Project,
    RepeatingSetting,
    User,
    UserRole,
)
from studyman.sources.emulator.project_dir import default_project_info

__all__ = ["read_odm_file", "read_odm_text", "unique_group_name"]

_ODM = "{http://www.cdisc.org/ns/odm/v1.3}"
_RC = "{https://projectredcap.org}"

_FIELD_TYPES = {"textarea": "notes", "select": "dropdown"}
_VALIDATION = {"int": "integer", "float": "number"}
# ODM role attribute → REDCap user export column.
_ROLE_RIGHTS = {
    "design": "design",
    "user_rights": "user_rights",
    "data_access_groups": "data_access_groups",
    "reports": "reports",
    "graphical": "stats_and_charts",
    "participants": "manage_survey_participants",
    "calendar": "calendar",
    "data_import_tool": "data_import_tool",
    "data_comparison_tool": "data_comparison_tool",
    "data_logging": "logging",
    "file_repository": "file_repository",
    "data_quality_design": "data_quality_create",
    "data_quality_execute": "data_quality_execute",
    "api_export": "api_export",
    "api_import": "api_import",
    "mobile_app": "mobile_app",
    "mobile_app_download_data": "mobile_app_download_data",
    "record_create": "record_create",
    "record_rename": "record_rename",
    "record_delete": "record_delete",
    "lock_record_customize": "lock_records_customization",
    "lock_record": "lock_records",
    "lock_record_multiform": "lock_records_all_forms",
}
_INFO_SETTINGS = {
    "Purpose": "purpose",
    "PurposeOther": "purpose_other",
    "ProjectNotes": "project_notes",
    "CustomRecordLabel": "custom_record_label",
    "SecondaryUniqueField": "secondary_unique_field",
    "SurveysEnabled": "surveys_enabled",
    "SchedulingEnabled": "scheduling_enabled",
    "RecordAutonumberingEnabled": "record_autonumbering_enabled",
    "RandomizationEnabled": "randomization_enabled",
    "DisplayTodayNowButton": "display_today_now_button",
    "MissingDataCodes": "missing_data_codes",
    "PreventBranchingEraseValues": "bypass_branching_erase_field_prompt",
}


def unique_group_name(name: str) -> str:
    """REDCap's unique name of a data access group: lower case, spaces to ``_``, others dropped."""
    cleaned = re.sub(r"[^a-z0-9_]", "", name.strip().lower().replace(" ", "_"))
    return cleaned[:18]


def _text(element: ET.Element | None) -> str:
    return "" if element is None or element.text is None else element.text


def _rights_list(text: str) -> dict[str, int]:
    return {form: int(right) for form, right in re.findall(r"\[([^,\]]+),(\d+)\]", text)}


def _label(item: ET.Element) -> str:
    question = item.find(f"{_ODM}Question")
    if question is None:
        return ""
    formatted = question.find(f"{_RC}FormattedTranslatedText")
    if formatted is not None and formatted.text:
        return formatted.text
    return _text(question.find(f"{_ODM}TranslatedText"))


def read_odm_file(path: Path) -> Project:
    """Read a REDCap ODM XML file; see :func:`read_odm_text`."""
    path = Path(path)
    try:
        # Bytes, not text mode: universal newlines would turn a value's \r\n into \n.
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ProtocolError(f"cannot read the ODM file: {error}", file=str(path)) from None
    return read_odm_text(text, source=str(path))


_TAG = re.compile(r'<[A-Za-z][^<>"]*(?:"[^"]*"[^<>"]*)*>')
_QUOTED = re.compile(r'"[^"]*"')


def _keep_attribute_newlines(text: str) -> str:
    # REDCap writes line breaks inside attribute values as they are; an XML parser must turn them
    # into spaces (attribute-value normalisation), so they are escaped first to survive.
    def fix_value(match: re.Match[str]) -> str:
        return match.group(0).replace("\r", "&#13;").replace("\n", "&#10;").replace("\t", "&#9;")

    def fix_tag(match: re.Match[str]) -> str:
        tag = match.group(0)
        return _QUOTED.sub(fix_value, tag) if "\n" in tag or "\r" in tag or "\t" in tag else tag

    return _TAG.sub(fix_tag, text)


def read_odm_text(text: str, source: str = "ODM") -> Project:
    """Read REDCap's ODM export (metadata, events, settings and records) into a Project.

    Raises
    ------
    ProtocolError
        When the text is not XML or not an ODM file with a ``Study`` and ``MetaDataVersion``.
    """
    try:
        root = ET.fromstring(_keep_attribute_newlines(text))
    except ET.ParseError as error:
        raise ProtocolError(f"not well-formed XML ({error})", file=source) from None
    if root.tag != f"{_ODM}ODM":
        raise ProtocolError("not a CDISC ODM 1.3 file (root element ODM expected)", file=source)
    study = root.find(f"{_ODM}Study")
    if study is None:
        raise ProtocolError("no Study element", file=source)
    metadata = study.find(f"{_ODM}MetaDataVersion")
    if metadata is None:
        raise ProtocolError("no MetaDataVersion element", file=source, key="Study")
    globals_ = study.find(f"{_ODM}GlobalVariables")
    title = _text(globals_.find(f"{_ODM}StudyName")) if globals_ is not None else ""

    # ---- forms and fields
    groups = {g.get("OID", ""): g for g in metadata.findall(f"{_ODM}ItemGroupDef")}
    items = {i.get("OID", ""): i for i in metadata.findall(f"{_ODM}ItemDef")}
    code_lists = {c.get("OID", ""): c for c in metadata.findall(f"{_ODM}CodeList")}
    instruments: list[Instrument] = []
    fields: list[Field] = []
    seen: set[str] = set()
    form_of_item: dict[str, str] = {}
    surveys: set[str] = set()
    if globals_ is not None:
        for survey in globals_.iter(f"{_RC}Surveys"):
            if survey.get("form_name"):
                surveys.add(survey.get("form_name", ""))
    for form in metadata.findall(f"{_ODM}FormDef"):
        form_name = form.get(f"{_RC}FormName") or form.get("OID", "").removeprefix("Form.")
        instruments.append(Instrument(form_name, form.get("Name", form_name), form_name in surveys))
        for group_ref in form.findall(f"{_ODM}ItemGroupRef"):
            group = groups.get(group_ref.get("ItemGroupOID", ""))
            if group is None:
                raise ProtocolError(
                    f"ItemGroupRef {group_ref.get('ItemGroupOID')!r} has no ItemGroupDef",
                    file=source,
                    key=f"FormDef {form_name}",
                )
            for ref in group.findall(f"{_ODM}ItemRef"):
                oid = ref.get("ItemOID", "")
                form_of_item[oid] = form_name
                item = items.get(oid)
                if item is None:
                    raise ProtocolError(
                        f"ItemRef {oid!r} has no ItemDef", file=source, key=f"FormDef {form_name}"
                    )
                variable = item.get(f"{_RC}Variable") or item.get("Name") or oid
                if variable in seen or variable in (
                    "redcap_data_access_group",
                    "redcap_survey_identifier",
                    f"{form_name}_complete",
                    f"{form_name}_timestamp",
                ):
                    continue
                seen.add(variable)
                fields.append(_field(item, variable, form_name, code_lists))

    # ---- events, arms, mappings
    events: list[Event] = []
    arms: dict[int, str] = {}
    mappings: list[tuple[int, str, str]] = []
    event_defs = {e.get("OID", ""): e for e in metadata.findall(f"{_ODM}StudyEventDef")}
    protocol = metadata.find(f"{_ODM}Protocol")
    ordered = (
        [
            event_defs[r.get("StudyEventOID", "")]
            for r in protocol.findall(f"{_ODM}StudyEventRef")
            if r.get("StudyEventOID", "") in event_defs
        ]
        if protocol is not None
        else list(event_defs.values())
    )
    for number, event_def in enumerate(ordered, start=1):
        arm_num = int(event_def.get(f"{_RC}ArmNum", "1") or 1)
        arms.setdefault(arm_num, event_def.get(f"{_RC}ArmName", f"Arm {arm_num}"))
        unique = event_def.get(f"{_RC}UniqueEventName") or event_def.get("OID", "").removeprefix(
            "Event."
        )
        events.append(
            Event(
                event_name=event_def.get(f"{_RC}EventName", event_def.get("Name", "")),
                arm_num=arm_num,
                unique_event_name=unique,
                custom_event_label=event_def.get(f"{_RC}CustomEventLabel", ""),
                event_id=number,
            )
        )
        for ref in event_def.findall(f"{_ODM}FormRef"):
            form_name = ref.get(f"{_RC}FormName") or ref.get("FormOID", "").removeprefix("Form.")
            mappings.append((arm_num, unique, form_name))
    longitudinal = bool(events)

    # ---- global settings
    repeating: list[RepeatingSetting] = []
    dags: list[DataAccessGroup] = []
    users: list[User] = []
    roles: list[UserRole] = []
    info = default_project_info(
        title, longitudinal=longitudinal, repeating=False, surveys=bool(surveys)
    )
    if globals_ is not None:
        for name, key in _INFO_SETTINGS.items():
            element = globals_.find(f"{_RC}{name}")
            if element is not None:
                value = _text(element)
                current = info.get(key)
                info[key] = (
                    int(value) if isinstance(current, int) and value.strip().isdigit() else value
                )
        for setting in globals_.iter(f"{_RC}RepeatingInstrument"):
            setting_event = setting.get(f"{_RC}UniqueEventName", "")
            repeating.append(
                RepeatingSetting(
                    setting_event if longitudinal else "",
                    setting.get(f"{_RC}RepeatInstrument", ""),
                    setting.get(f"{_RC}CustomLabel", ""),
                )
            )
        for setting in globals_.iter(f"{_RC}RepeatingEvent"):
            repeating.append(RepeatingSetting(setting.get(f"{_RC}UniqueEventName", ""), "", ""))
        for number, group in enumerate(globals_.iter(f"{_RC}DataAccessGroups"), start=1):
            name = group.get("group_name", "")
            dags.append(DataAccessGroup(name, unique_group_name(name), number))
        for role in globals_.iter(f"{_RC}UserRoles"):
            rights = {column: 0 for column in USER_RIGHT_COLUMNS}
            for attribute, column in _ROLE_RIGHTS.items():
                value = role.get(attribute, "")
                rights[column] = int(value) if value.strip().isdigit() else 0
            rights["data_export"] = 1 if role.get("data_export_instruments") else 0
            label = role.get("role_name", role.get("unique_role_name", "role"))
            unique_role = role.get("unique_role_name", "") or f"U-{len(roles) + 1:010d}"
            roles.append(
                UserRole(
                    unique_role_name=unique_role,
                    role_label=label,
                    rights=rights,
                    forms=_rights_list(role.get("data_entry", "")),
                    forms_export=_rights_list(role.get("data_export_instruments", "")),
                )
            )
            users.append(
                User(
                    username=label,
                    rights=rights,
                    forms=roles[-1].forms,
                    forms_export=roles[-1].forms_export,
                    role=unique_role,
                )
            )
    info["has_repeating_instruments_or_events"] = int(bool(repeating))
    info["is_longitudinal"] = int(longitudinal)

    # ---- records
    record_id_field = metadata.get(f"{_RC}RecordIdField") or (
        fields[0].field_name if fields else "record_id"
    )
    if fields and fields[0].field_name != record_id_field:
        raise ProtocolError(
            f"the record-ID field {record_id_field!r} is not the first field",
            file=source,
            key="MetaDataVersion",
        )
    repeating_forms = {(r.event_name, r.form_name) for r in repeating if r.form_name}
    repeating_events = {r.event_name for r in repeating if not r.form_name}
    records: list[dict[str, str]] = []
    clinical = study.find(f"{_ODM}ClinicalData")
    if clinical is None:
        clinical = root.find(f"{_ODM}ClinicalData")
    if clinical is not None:
        for subject in clinical.findall(f"{_ODM}SubjectData"):
            record = subject.get("SubjectKey", "")
            rows: dict[tuple[str, str, str], dict[str, str]] = {}
            dag = ""
            blocks: list[tuple[str, str, ET.Element]] = []
            event_blocks = subject.findall(f"{_ODM}StudyEventData")
            if event_blocks:
                for block in event_blocks:
                    block_event = block.get(f"{_RC}UniqueEventName") or block.get(
                        "StudyEventOID", ""
                    ).removeprefix("Event.")
                    key = block.get("StudyEventRepeatKey", "1")
                    for form_data in block.findall(f"{_ODM}FormData"):
                        blocks.append((block_event if longitudinal else "", key, form_data))
            else:
                for form_data in subject.findall(f"{_ODM}FormData"):
                    blocks.append(("", "1", form_data))
            for event, event_key, form_data in blocks:
                form_name = form_data.get("FormOID", "").removeprefix("Form.")
                form_key = form_data.get("FormRepeatKey", "1")
                if (event, form_name) in repeating_forms:
                    row_key = (event, form_name, form_key)
                elif event in repeating_events:
                    row_key = (event, "", event_key)
                else:
                    row_key = (event, "", "")
                row = rows.setdefault(row_key, {})
                for group in form_data.findall(f"{_ODM}ItemGroupData"):
                    for value_element in group:
                        oid = value_element.get("ItemOID", "")
                        if value_element.tag == f"{_ODM}ItemDataBase64Binary":
                            value = value_element.get(f"{_RC}DocName", "") or "[document]"
                        else:
                            # REDCap stores a typed line break as \r\n; its ODM writes \n only.
                            value = re.sub(r"\r?\n", "\r\n", value_element.get("Value", ""))
                        if oid == "redcap_data_access_group":
                            dag = value
                            continue
                        if oid == record_id_field or value == "":
                            continue
                        row[oid] = value
            for (event, instrument, instance), values in rows.items():
                flat: dict[str, str] = {record_id_field: record}
                if longitudinal:
                    flat["redcap_event_name"] = event
                if repeating:
                    flat["redcap_repeat_instrument"] = instrument
                    flat["redcap_repeat_instance"] = instance
                if dags:
                    flat["redcap_data_access_group"] = dag
                flat.update(values)
                records.append(flat)
    version = root.get("SourceSystemVersion", "14.5.0")
    return Project(
        info=info,
        fields=tuple(fields),
        instruments=tuple(instruments),
        arms=tuple(Arm(n, name) for n, name in sorted(arms.items())),
        events=tuple(events),
        mappings=tuple(mappings),
        repeating=tuple(repeating),
        dags=tuple(dags),
        users=tuple(users),
        roles=tuple(roles),
        records=tuple(records),
        redcap_version=version,
    )


def _field(
    item: ET.Element, variable: str, form_name: str, code_lists: dict[str, ET.Element]
) -> Field:
    odm_type = item.get(f"{_RC}FieldType", "text")
    field_type = _FIELD_TYPES.get(odm_type, odm_type)
    choices = ""
    ref = item.find(f"{_ODM}CodeListRef")
    code_list = code_lists.get(ref.get("CodeListOID", "")) if ref is not None else None
    if field_type == "checkbox" and code_list is not None:
        raw = code_list.get(f"{_RC}CheckboxChoices", "")
        choices = " | ".join(part.strip() for part in raw.split("|"))
    elif field_type in ("radio", "dropdown") and code_list is not None:
        choices = " | ".join(
            f"{entry.get('CodedValue', '')}, "
            f"{_text(entry.find(f'{_ODM}Decode/{_ODM}TranslatedText'))}"
            for entry in code_list.findall(f"{_ODM}CodeListItem")
        )
    elif field_type == "calc":
        choices = item.get(f"{_RC}Calculation", "")
    elif field_type == "slider":
        choices = item.get(f"{_RC}SliderLabels", "")
    validation = item.get(f"{_RC}TextValidationType", "")
    validation = _VALIDATION.get(validation, validation)
    minimum = maximum = ""
    for check in item.findall(f"{_ODM}RangeCheck"):
        value = _text(check.find(f"{_ODM}CheckValue"))
        if check.get("Comparator") == "GE":
            minimum = value
        elif check.get("Comparator") == "LE":
            maximum = value
    return Field(
        field_name=variable,
        form_name=form_name,
        field_type=field_type,
        field_label=_label(item),
        section_header=item.get(f"{_RC}SectionHeader", ""),
        select_choices_or_calculations=choices,
        field_note=item.get(f"{_RC}FieldNote", ""),
        text_validation_type_or_show_slider_number=validation,
        text_validation_min=minimum,
        text_validation_max=maximum,
        identifier=item.get(f"{_RC}Identifier", ""),
        branching_logic=item.get(f"{_RC}BranchingLogic", ""),
        required_field=item.get(f"{_RC}RequiredField", ""),
        custom_alignment=item.get(f"{_RC}CustomAlignment", ""),
        question_number=item.get(f"{_RC}QuestionNumber", ""),
        matrix_group_name=item.get(f"{_RC}MatrixGroupName", ""),
        matrix_ranking=item.get(f"{_RC}MatrixRanking", ""),
        field_annotation=item.get(f"{_RC}FieldAnnotation", ""),
    )
