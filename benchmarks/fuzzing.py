"""A seeded, bounded fuzzer of studyman's command line: the engine of ``python -m benchmarks fuzz``.

Shared by the benchmark command (``benchmarks/bench_fuzz.py``: >= 1,000 cases in a pool of
worker processes, each case under a wall-clock timeout) and the test suite
(``tests/fuzz/test_fuzz_cli.py``: a few dozen cases in process, part of the default run).

A *workspace* is a small, valid study built once: the reference protocol directory
(``protocol.yaml``, ``checks.yaml``, its REDCap project), the analysis plan and its lock, a
generated trial's raw CSV export and data dictionary, its randomisation list and a snapshot
imported from them. A *case* (numbered; everything about it follows from ``seed`` and its
number) copies the workspace, damages one file with one mutation and runs the real command
line (:func:`studyman.cli.main`, in process) on it: the commands that read that file.

A case passes when every command ends with exit 0, or with exit 1 or 2 and no traceback, and
an error (exit 2) is one line. Anything else (an exception escaping ``main``, a "Traceback" in
the output, a multi-line error) is a *failure* with the command and the traceback kept for the
report. Warnings are errors while a case runs, as in the test suite.

Mutations are byte-level (truncate, flip bytes, control characters, delete/duplicate/swap lines,
wrong encodings, an empty or missing file) and structure-aware (CSV: swap, drop or duplicate
columns, huge numbers, control characters and deep logic in cells; YAML and JSON: type swaps,
deleted and added keys, deep nesting, huge numbers, alias bombs; Parquet tables: dropped
columns, retyped columns, hostile values, duplicated or no rows, then re-sealed in the manifest
so the snapshot still verifies and the damage reaches the readers behind ``verify``).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import random
import shutil
import stat
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPOSITORY = Path(__file__).resolve().parents[1]
STUDY = REPOSITORY / "protocols" / "cbt-adjunct"
SAP = REPOSITORY / "analysis" / "sap.yaml"

#: What each case may damage (the keys of :data:`TARGETS`).
TARGET_NAMES = (
    "protocol",
    "checks",
    "sap",
    "records",
    "dictionary",
    "randomization",
    "manifest",
    "parquet",
)

# --------------------------------------------------------------------------------------------
# The workspace


@dataclass(frozen=True)
class Workspace:
    """A valid study on disk: every path a case's commands read (relative to *root*)."""

    root: Path
    study: Path = Path("study")
    sap: Path = Path("analysis/sap.yaml")
    records: Path = Path("export/records.csv")
    dictionary: Path = Path("export/data_dictionary.csv")
    randomization: Path = Path("unblinded/randomization.csv")
    snapshot: Path = Path("snapshots/base")

    def at(self, root: Path) -> Workspace:
        """The same workspace layout under another root (a case's copy)."""
        return Workspace(root)

    def path(self, relative: Path) -> Path:
        """An absolute path inside this workspace."""
        return self.root / relative


def build_workspace(root: Path, *, participants: int = 10, seed: int = 11) -> Workspace:
    """Write a small valid study under *root* (about 2 s): the corpus every case mutates."""
    from studyman.protocol.loader import load_protocol
    from studyman.synthetic.generator import generate_trial

    workspace = Workspace(root)
    shutil.copytree(STUDY, workspace.path(workspace.study))
    sap = workspace.path(workspace.sap)
    sap.parent.mkdir(parents=True)
    shutil.copy2(SAP, sap)
    trial = generate_trial(
        load_protocol(STUDY), n_participants=participants, seed=seed, plant_errors=True
    )
    records = workspace.path(workspace.records)
    records.parent.mkdir(parents=True)
    trial.records.to_csv(records, index=False)
    shutil.copy2(STUDY / "redcap" / "data_dictionary.csv", workspace.path(workspace.dictionary))
    randomization = workspace.path(workspace.randomization)
    randomization.parent.mkdir(parents=True)
    trial.randomization.to_csv(randomization, index=False)
    for argv in (
        ["sap", "lock", "--sap", str(sap)],
        [
            "import",
            "--protocol",
            str(workspace.path(workspace.study)),
            "--records",
            str(records),
            "--dictionary",
            str(workspace.path(workspace.dictionary)),
            "--out",
            str(workspace.path(workspace.snapshot).parent),
            "--name",
            workspace.snapshot.name,
        ],
    ):
        outcome = run_command(argv)
        if outcome.code != 0 or outcome.failure:
            problem = outcome.failure or outcome.error or outcome.output
            raise RuntimeError(f"building the fuzz workspace failed: {argv}: {problem}")
    return workspace


def copy_workspace(base: Workspace, root: Path) -> Workspace:
    """A writable copy of *base* under *root* (snapshot files are read-only where written)."""
    shutil.copytree(base.root, root, symlinks=True)
    for folder, _, files in os.walk(root):
        os.chmod(folder, 0o700)
        for name in files:
            os.chmod(os.path.join(folder, name), stat.S_IRUSR | stat.S_IWUSR)
    return base.at(root)


# --------------------------------------------------------------------------------------------
# Running the command line in process


@dataclass(frozen=True)
class Outcome:
    """One command's end: exit code, output, and the failure (a traceback) if any."""

    argv: tuple[str, ...]
    code: int
    output: str
    error: str
    seconds: float
    failure: str = ""


def run_command(argv: list[str]) -> Outcome:
    """Run ``studyman ARGV`` in process as the console script does; classify how it ended."""
    from studyman.cli import main

    out, err = io.StringIO(), io.StringIO()
    failure = ""
    started = time.perf_counter()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("error")
        try:
            result = main(argv)
            code = result if isinstance(result, int) else 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        except BaseException:  # a bug: keep its traceback for the report
            code = -1
            failure = traceback.format_exc()
    seconds = time.perf_counter() - started
    output, error = out.getvalue(), err.getvalue()
    if not failure:
        failure = _problem(code, output, error)
    return Outcome(tuple(argv), code, output, error, seconds, failure)


def _problem(code: int, output: str, error: str) -> str:
    """Why an ending that did not raise still breaks the promise, or ``""``."""
    if "Traceback (most recent call last)" in output + error:
        return "a traceback was printed:\n" + output + error
    if code not in (0, 1, 2):
        return f"exit code {code}:\n{error}"
    if code == 2:
        lines = [line for line in error.splitlines() if line.strip()]
        if len(lines) != 1:
            return f"exit 2 with a {len(lines)}-line error:\n{error}"
    return ""


# --------------------------------------------------------------------------------------------
# Mutations

Mutation = Callable[[bytes, random.Random], bytes]

_CONTROL = [
    "\x00",
    "\x01",
    "\x07",
    "\x08",
    "\x0b",
    "\x0c",
    "\x1b",
    "\x7f",
    "\r",
    "\u2028",
    "\ufeff",
]
_HUGE = [
    "1e308",
    "-1e308",
    "1e309",
    "99999999999999999999999999999999",
    "-0",
    "nan",
    "inf",
    "-inf",
    "0x10",
    "1_000",
    "9" * 400,
    "2147483648",
    "-9223372036854775809",
]
_ODD_TEXT = [
    "",
    " ",
    "'",
    '"',
    "[",
    "]",
    "((((",
    "NULL",
    "None",
    "~",
    "=cmd|' /C calc'!A0",
    "<script>alert(1)</script>",
    "[/x]",
    "[bold]",
    "é" * 3,
    "\U0001f600",
    "a" * 5000,
    "2025-02-30",
    "0000-00-00",
    "9999-12-31",
    "1900-01-01 25:61",
]


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def truncate(data: bytes, rng: random.Random) -> bytes:
    """Cut the file at a random byte (sometimes exactly at a line end)."""
    if not data:
        return data
    if rng.random() < 0.4:
        ends = [index + 1 for index, byte in enumerate(data) if byte == 0x0A]
        if ends:
            return data[: rng.choice(ends)]
    return data[: rng.randrange(len(data))]


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    """XOR a few random bytes with random values."""
    if not data:
        return b"\xff"
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        buffer[rng.randrange(len(buffer))] ^= rng.randint(1, 255)
    return bytes(buffer)


def control_characters(data: bytes, rng: random.Random) -> bytes:
    """Insert control characters (NUL, ESC, VT, a lone CR, U+2028, a BOM) at random places."""
    text = data.decode("utf-8", errors="surrogateescape")
    for _ in range(rng.randint(1, 4)):
        where = rng.randint(0, len(text))
        text = text[:where] + rng.choice(_CONTROL) + text[where:]
    return text.encode("utf-8", errors="surrogateescape")


def delete_line(data: bytes, rng: random.Random) -> bytes:
    """Remove one line (the header sometimes)."""
    lines = _lines(data)
    if lines:
        del lines[rng.randrange(len(lines))]
    return b"".join(lines)


def duplicate_line(data: bytes, rng: random.Random) -> bytes:
    """Repeat one line right after itself."""
    lines = _lines(data)
    if lines:
        index = rng.randrange(len(lines))
        line = lines[index] if lines[index].endswith(b"\n") else lines[index] + b"\n"
        lines.insert(index, line)
    return b"".join(lines)


def swap_lines(data: bytes, rng: random.Random) -> bytes:
    """Exchange two lines."""
    lines = [line if line.endswith(b"\n") else line + b"\n" for line in _lines(data)]
    if len(lines) >= 2:
        first, second = rng.sample(range(len(lines)), 2)
        lines[first], lines[second] = lines[second], lines[first]
    return b"".join(lines)


def wrong_encoding(data: bytes, rng: random.Random) -> bytes:
    """The same text in UTF-16, Latin-1 (with a non-ASCII letter), with a BOM, or CP1252."""
    text = data.decode("utf-8", errors="replace")
    choice = rng.randrange(4)
    if choice == 0:
        return text.encode("utf-16")
    if choice == 1:
        where = rng.randint(0, len(text))
        return (text[:where] + "é" + text[where:]).encode("latin-1", errors="replace")
    if choice == 2:
        return b"\xef\xbb\xbf" + data
    return text.replace("\n", "\r\n").encode("cp1252", errors="replace")


def empty(data: bytes, rng: random.Random) -> bytes:
    """No content at all (or only whitespace)."""
    return rng.choice([b"", b"\n", b" \n\n"])


def garbage(data: bytes, rng: random.Random) -> bytes:
    """Random bytes instead of the file."""
    return bytes(rng.randrange(256) for _ in range(rng.randint(1, 600)))


BYTE_MUTATIONS: tuple[Mutation, ...] = (
    truncate,
    flip_bytes,
    control_characters,
    delete_line,
    duplicate_line,
    swap_lines,
    wrong_encoding,
    empty,
    garbage,
)


def deep_logic(rng: random.Random) -> str:
    """REDCap logic nested beyond any limit (parentheses, if(), signs, not, ^)."""
    depth = rng.choice([120, 400, 3000])
    kind = rng.randrange(6)
    if kind == 0:
        return "(" * depth + "[age] > 1" + ")" * depth
    if kind == 1:
        return "if([age] = 1, " * depth + "1" + ", 0)" * depth
    if kind == 2:
        return "-" * depth + "[age] < 0"
    if kind == 3:
        return "not " * depth + "[age] = 1"
    if kind == 4:
        return "^".join(["2"] * depth)
    return " or ".join(["[age] = 1"] * depth * 10)


def _hostile_value(rng: random.Random) -> str:
    pick = rng.randrange(4)
    if pick == 0:
        return rng.choice(_HUGE)
    if pick == 1:
        return rng.choice(_ODD_TEXT)
    if pick == 2:
        return "x" + rng.choice(_CONTROL) + "y"
    return deep_logic(rng)


# --- CSV ----------------------------------------------------------------------------------


def _read_csv(data: bytes) -> list[list[str]] | None:
    try:
        return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error):
        return None


def _write_csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode("utf-8", errors="surrogateescape")


def csv_swap_columns(data: bytes, rng: random.Random) -> bytes:
    """Exchange two columns (header and values), or the two header names only."""
    rows = _read_csv(data)
    if not rows or len(rows[0]) < 2:
        return flip_bytes(data, rng)
    first, second = rng.sample(range(len(rows[0])), 2)
    header_only = rng.random() < 0.5
    for index, row in enumerate(rows):
        if (index == 0 or not header_only) and max(first, second) < len(row):
            row[first], row[second] = row[second], row[first]
    return _write_csv(rows)


def csv_drop_column(data: bytes, rng: random.Random) -> bytes:
    """Remove one column (the record ID sometimes)."""
    rows = _read_csv(data)
    if not rows or not rows[0]:
        return flip_bytes(data, rng)
    column = rng.choice([0, rng.randrange(len(rows[0]))])
    return _write_csv([[v for i, v in enumerate(row) if i != column] for row in rows])


def csv_duplicate_column(data: bytes, rng: random.Random) -> bytes:
    """Repeat one column (same header twice)."""
    rows = _read_csv(data)
    if not rows or not rows[0]:
        return flip_bytes(data, rng)
    column = rng.randrange(len(rows[0]))
    return _write_csv([[*row, row[column]] if column < len(row) else row for row in rows])


def csv_hostile_cells(data: bytes, rng: random.Random) -> bytes:
    """Put huge numbers, odd text, control characters or deep logic into a few cells."""
    rows = _read_csv(data)
    if not rows or len(rows) < 2:
        return control_characters(data, rng)
    for _ in range(rng.randint(1, 6)):
        row = rows[rng.randrange(1, len(rows))]
        if row:
            row[rng.randrange(len(row))] = _hostile_value(rng)
    return _write_csv(rows)


def csv_ragged_row(data: bytes, rng: random.Random) -> bytes:
    """A row with a cell too many or too few, or an unclosed quote."""
    lines = _lines(data)
    if len(lines) < 2:
        return data + b'"unclosed\n'
    index = rng.randrange(1, len(lines))
    line = lines[index].rstrip(b"\r\n")
    choice = rng.randrange(3)
    if choice == 0:
        line += b",extra"
    elif choice == 1:
        line = line.rsplit(b",", 1)[0]
    else:
        line += b',"unclosed'
    lines[index] = line + b"\n"
    return b"".join(lines)


def csv_other_delimiter(data: bytes, rng: random.Random) -> bytes:
    """Semicolons or tabs instead of commas (a spreadsheet's regional export)."""
    rows = _read_csv(data)
    if rows is None:
        return flip_bytes(data, rng)
    out = io.StringIO()
    csv.writer(out, delimiter=rng.choice([";", "\t"]), lineterminator="\n").writerows(rows)
    return out.getvalue().encode("utf-8")


def csv_deep_logic(data: bytes, rng: random.Random) -> bytes:
    """Deeply nested logic in a dictionary's branching logic or calculation column."""
    rows = _read_csv(data)
    if not rows or len(rows) < 2:
        return data
    header = rows[0]
    targets = [
        i
        for i, name in enumerate(header)
        if name in ("branching_logic", "Branching Logic (Show field only if...)")
    ]
    calc_column = next(
        (i for i, name in enumerate(header) if name.startswith("select_choices")), None
    )
    row = rows[rng.randrange(1, len(rows))]
    if targets and (calc_column is None or rng.random() < 0.6):
        column = targets[0]
    elif calc_column is not None:
        column = calc_column
        type_column = header.index("field_type") if "field_type" in header else None
        if type_column is not None and type_column < len(row):
            row[type_column] = "calc"
    else:
        return data
    if column < len(row):
        row[column] = deep_logic(rng)
    return _write_csv(rows)


CSV_MUTATIONS: tuple[Mutation, ...] = (
    csv_swap_columns,
    csv_drop_column,
    csv_duplicate_column,
    csv_hostile_cells,
    csv_ragged_row,
    csv_other_delimiter,
)


# --- YAML and JSON ---------------------------------------------------------------------------


def _paths(value: Any) -> list[tuple[Any, ...]]:
    """Every node's key path (a loop: a document nested thousands deep is walked too)."""
    paths: list[tuple[Any, ...]] = []
    pending: list[tuple[tuple[Any, ...], Any]] = [((), value)]
    while pending and len(paths) < 100_000:
        prefix, node = pending.pop()
        paths.append(prefix)
        if isinstance(node, dict):
            pending += [((*prefix, key), item) for key, item in node.items()]
        elif isinstance(node, list):
            pending += [((*prefix, index), item) for index, item in enumerate(node)]
    return paths


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


def _replacement(current: Any, rng: random.Random) -> Any:
    """A value of another type (a YAML type swap) or a hostile one of the same type."""
    choices: list[Any] = [
        None,
        True,
        0,
        -1,
        10**40,
        1e308,
        float("nan"),
        "",
        "text",
        "2025-02-30",
        [],
        [1, "a", None],
        {},
        {"unexpected": "key"},
        rng.choice(_ODD_TEXT),
        rng.choice(_HUGE),
        "x" + rng.choice(_CONTROL) + "y",
    ]
    if isinstance(current, str) and ("[" in current or "(" in current):
        choices += [deep_logic(rng)] * 4
    if isinstance(current, dict):
        choices.append(list(current.values()))
    if isinstance(current, list):
        choices.append({str(i): v for i, v in enumerate(current)})
        choices.append(current * 2)
    return rng.choice(choices)


def _nested(depth: int, as_list: bool) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


def mutate_tree(tree: Any, rng: random.Random) -> Any:
    """Change one node of a parsed YAML/JSON document: swap its type, delete it, add a key,
    nest it deeply, or duplicate a list item."""
    paths = list(_paths(tree))
    path = rng.choice(paths[1:] or paths)
    if not path:
        return _replacement(tree, rng)
    parent = _get(tree, path[:-1])
    key = path[-1]
    choice = rng.randrange(5)
    if choice == 0:
        del parent[key]
    elif choice == 1 and isinstance(parent, dict):
        parent[rng.choice(["unknown_key", "1", "", "id"])] = _replacement(None, rng)
    elif choice == 2:
        parent[key] = _nested(rng.choice([50, 600]), rng.random() < 0.5)
    elif choice == 3 and isinstance(parent, list):
        parent.insert(key, parent[key])
    else:
        parent[key] = _replacement(parent[key], rng)
    return tree


def yaml_structure(data: bytes, rng: random.Random) -> bytes:
    """Parse the YAML, change one node (:func:`mutate_tree`), write it back."""
    try:
        tree = yaml.safe_load(data)
    except yaml.YAMLError:
        return flip_bytes(data, rng)
    for _ in range(rng.randint(1, 3)):
        tree = mutate_tree(tree, rng)
    text = yaml.safe_dump(tree, sort_keys=False, allow_unicode=True, width=10**6)
    return text.encode("utf-8")


def yaml_text_tricks(data: bytes, rng: random.Random) -> bytes:
    """Textual YAML hazards: an alias bomb, a repeated key, tabs, a document separator, tags."""
    text = data.decode("utf-8", errors="replace")
    choice = rng.randrange(6)
    if choice == 0:
        bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
        for level in range(1, 9):
            previous = chr(ord("a") + level - 1)
            name = chr(ord("a") + level)
            bomb += f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]\n"
        return (bomb + text).encode("utf-8")
    if choice == 1:
        first = next((line for line in text.splitlines() if ":" in line), "key: 1")
        return (text + "\n" + first + "\n").encode("utf-8")
    if choice == 2:
        return text.replace("  ", "\t", rng.randint(1, 3)).encode("utf-8")
    if choice == 3:
        return (text + "\n---\n" + text).encode("utf-8")
    if choice == 4:
        return ("!!python/object/apply:os.system ['true']\n" + text).encode("utf-8")
    return ("[" * 3000 + "]" * 3000 + "\n").encode("utf-8")


def json_structure(data: bytes, rng: random.Random) -> bytes:
    """Parse the JSON, change one node (:func:`mutate_tree`), write it back."""
    try:
        tree = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return flip_bytes(data, rng)
    for _ in range(rng.randint(1, 3)):
        tree = mutate_tree(tree, rng)
    return json.dumps(tree, indent=2).encode("utf-8")


def json_deep(data: bytes, rng: random.Random) -> bytes:
    """JSON nested far beyond any real document (the decoder's recursion)."""
    depth = rng.choice([2000, 100_000])
    return ("[" * depth + "]" * depth).encode("utf-8")


TREE_MUTATIONS_YAML: tuple[Mutation, ...] = (yaml_structure, yaml_structure, yaml_text_tricks)
TREE_MUTATIONS_JSON: tuple[Mutation, ...] = (json_structure, json_structure, json_deep)


# --- Parquet (re-sealed) -------------------------------------------------------------------


def parquet_structure(data: bytes, rng: random.Random) -> bytes:
    """Rewrite a table: drop, retype or blank a column, hostile values, duplicate or no rows."""
    import numpy as np
    import pandas as pd

    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception:  # not Parquet any more (an earlier byte mutation): damage the bytes
        return flip_bytes(data, rng)
    choice = rng.randrange(7)
    columns = list(frame.columns)
    if choice == 0 and columns:
        frame = frame.drop(columns=[rng.choice(columns)])
    elif choice == 1 and columns:
        column = rng.choice(columns)
        frame[column] = frame[column].astype(str)
    elif choice == 2 and columns and len(frame):
        column = rng.choice(columns)
        values = frame[column].astype(object).to_numpy(copy=True)
        values[rng.randrange(len(values))] = _hostile_value(rng)
        frame[column] = pd.Series(values, index=frame.index).astype(str)
    elif choice == 3:
        frame = pd.concat([frame, frame], ignore_index=True)
    elif choice == 4:
        frame = frame.iloc[0:0]
    elif choice == 5 and columns:
        column = rng.choice(columns)
        frame[column] = np.nan
    elif columns:
        column = rng.choice(columns)
        frame[column] = rng.choice([10**18, -(10**18), 1e308, -1e308])
    out = io.BytesIO()
    frame.to_parquet(out, index=False)
    return out.getvalue()


PARQUET_MUTATIONS: tuple[Mutation, ...] = (
    parquet_structure,
    parquet_structure,
    parquet_structure,
    flip_bytes,
    truncate,
    empty,
)


def reseal(snapshot: Path, *, hashes: bool = True) -> None:
    """Re-hash the snapshot's files into its manifest and re-derive its snapshot id, so the
    damage passes ``verify`` and reaches the readers behind it (a hostile but sealed snapshot).

    With ``hashes=False`` only the id is re-derived from the manifest as it is (a manifest whose
    content was edited, then sealed again).
    """
    from studyman.sources import snapshot as snapshots

    manifest_path = snapshot / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if hashes and isinstance(files, dict):
        for name in list(files):
            path = snapshot / str(name)
            if path.is_file():
                files[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        manifest_path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    identity = getattr(snapshots, "manifest_id", None)
    id_name = getattr(snapshots, "SNAPSHOT_ID_NAME", None)
    if identity is None or id_name is None:
        return
    try:
        (snapshot / id_name).write_text(identity(manifest) + "\n", encoding="ascii")
    except Exception:  # not plain JSON data: the id cannot be derived, leave it stale
        return


# --------------------------------------------------------------------------------------------
# Targets: which file a case damages, how, and which commands read it


@dataclass(frozen=True)
class Target:
    """A file kind: how to find one in a workspace, its mutations, and the commands to run."""

    name: str
    files: Callable[[Workspace], list[Path]]
    mutations: tuple[Mutation, ...]
    commands: Callable[[Workspace, Path, random.Random], list[list[str]]]
    after: Callable[[Workspace, Path, random.Random], None] | None = None


def _validate(ws: Workspace, out: Path, *extra: str) -> list[str]:
    return [
        "validate",
        "--protocol",
        str(ws.path(ws.study)),
        "--snapshot",
        str(ws.path(ws.snapshot)),
        "--out",
        str(out / "validation"),
        *extra,
    ]


def _import(ws: Workspace, out: Path, *, protocol: bool = True) -> list[str]:
    argv = [
        "import",
        "--records",
        str(ws.path(ws.records)),
        "--dictionary",
        str(ws.path(ws.dictionary)),
        "--out",
        str(out / "snapshots"),
        "--name",
        "fuzzed",
    ]
    return [*argv, "--protocol", str(ws.path(ws.study))] if protocol else argv


def _report(ws: Workspace, out: Path, session: str = "open") -> list[str]:
    argv = [
        "report",
        "dsmb",
        "--session",
        session,
        "--protocol",
        str(ws.path(ws.study)),
        "--sap",
        str(ws.path(ws.sap)),
        "--snapshot",
        str(ws.path(ws.snapshot)),
        "--out",
        str(out / "dsmb"),
        "--no-pdf",
    ]
    if session == "closed":
        argv += ["--randomization", str(ws.path(ws.randomization))]
    return argv


def _analyze(ws: Workspace, out: Path, *, randomized: bool) -> list[str]:
    argv = [
        "analyze",
        "--sap",
        str(ws.path(ws.sap)),
        "--snapshot",
        str(ws.path(ws.snapshot)),
        "--out",
        str(out / "analysis"),
        "--protocol",
        str(ws.path(ws.study)),
        "--workers",
        "1",
    ]
    return [*argv, "--randomization", str(ws.path(ws.randomization))] if randomized else argv


def _snapshot_files(suffix: str) -> Callable[[Workspace], list[Path]]:
    def files(ws: Workspace) -> list[Path]:
        folder = ws.path(ws.snapshot)
        return sorted(p for p in folder.rglob(f"*{suffix}") if p.is_file())

    return files


@dataclass
class Settings:
    """How often a case also runs the slow commands (analyze, the DSMB report)."""

    heavy_share: float = 0.25


SETTINGS = Settings()


def _targets() -> dict[str, Target]:
    heavy = lambda rng: rng.random() < SETTINGS.heavy_share  # noqa: E731
    return {
        "protocol": Target(
            "protocol",
            lambda ws: [ws.path(ws.study) / "protocol.yaml"],
            BYTE_MUTATIONS + TREE_MUTATIONS_YAML * 4,
            lambda ws, out, rng: [
                ["protocol", "check", str(ws.path(ws.study))],
                ["protocol", "show", str(ws.path(ws.study))],
                _validate(ws, out),
                *([_report(ws, out)] if heavy(rng) else []),
            ],
        ),
        "checks": Target(
            "checks",
            lambda ws: [ws.path(ws.study) / "checks.yaml"],
            BYTE_MUTATIONS + TREE_MUTATIONS_YAML * 4,
            lambda ws, out, rng: [
                ["checks", "list", "--protocol", str(ws.path(ws.study))],
                _validate(ws, out),
            ],
        ),
        "sap": Target(
            "sap",
            lambda ws: [ws.path(ws.sap)],
            BYTE_MUTATIONS + TREE_MUTATIONS_YAML * 4,
            lambda ws, out, rng: [
                ["sap", "lock", "--sap", str(ws.path(ws.sap))],
                *([_analyze(ws, out, randomized=True)] if heavy(rng) else []),
                *([_report(ws, out)] if heavy(rng) else []),
            ],
        ),
        "records": Target(
            "records",
            lambda ws: [ws.path(ws.records)],
            BYTE_MUTATIONS + CSV_MUTATIONS * 2,
            lambda ws, out, rng: [
                _import(ws, out, protocol=rng.random() < 0.7),
                [
                    "validate",
                    "--protocol",
                    str(ws.path(ws.study)),
                    "--snapshot",
                    str(ws.path(ws.records)),
                    "--out",
                    str(out / "validation"),
                ],
            ],
        ),
        "dictionary": Target(
            "dictionary",
            lambda ws: [
                ws.path(ws.dictionary),
                ws.path(ws.study) / "redcap" / "data_dictionary.csv",
            ],
            BYTE_MUTATIONS + CSV_MUTATIONS * 2 + (csv_deep_logic,) * 4,
            lambda ws, out, rng: [
                [
                    "protocol",
                    "check",
                    str(ws.path(ws.study)),
                    "--dictionary",
                    str(ws.path(ws.dictionary)),
                ],
                ["protocol", "check", str(ws.path(ws.study))],
                _import(ws, out, protocol=rng.random() < 0.5),
                _validate(ws, out),
            ],
        ),
        "randomization": Target(
            "randomization",
            lambda ws: [ws.path(ws.randomization)],
            BYTE_MUTATIONS + CSV_MUTATIONS * 2,
            lambda ws, out, rng: [
                _validate(ws, out, "--randomization", str(ws.path(ws.randomization))),
                *([_analyze(ws, out, randomized=True)] if heavy(rng) else []),
                *([_report(ws, out, "closed")] if heavy(rng) else []),
            ],
        ),
        "manifest": Target(
            "manifest",
            lambda ws: [ws.path(ws.snapshot) / "manifest.json"],
            BYTE_MUTATIONS + TREE_MUTATIONS_JSON * 4,
            lambda ws, out, rng: [
                ["snapshot", "verify", str(ws.path(ws.snapshot))],
                ["snapshot", "show", str(ws.path(ws.snapshot))],
                _validate(ws, out),
                *([_report(ws, out)] if heavy(rng) else []),
            ],
            # half the edited manifests are sealed again, so their content reaches the readers
            after=lambda ws, file, rng: (
                reseal(ws.path(ws.snapshot), hashes=False) if rng.random() < 0.5 else None
            ),
        ),
        "parquet": Target(
            "parquet",
            _snapshot_files(".parquet"),
            PARQUET_MUTATIONS,
            lambda ws, out, rng: [
                ["snapshot", "verify", str(ws.path(ws.snapshot))],
                ["snapshot", "show", str(ws.path(ws.snapshot))],
                _validate(ws, out),
                *([_analyze(ws, out, randomized=rng.random() < 0.5)] if heavy(rng) else []),
                *([_report(ws, out)] if heavy(rng) else []),
            ],
            # damaged tables are sealed again, so the damage gets past verify to the readers
            after=lambda ws, file, rng: reseal(ws.path(ws.snapshot)),
        ),
    }


TARGETS: dict[str, Target] = _targets()


# --------------------------------------------------------------------------------------------
# Cases


@dataclass
class CaseResult:
    """What one case did and how it ended."""

    number: int
    target: str
    file: str
    mutation: str
    seconds: float = 0.0
    commands: list[tuple[str, int, float]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No command failed."""
        return not self.failures

    def describe(self) -> str:
        """One line: the case, its mutation, and how each command ended."""
        ends = ", ".join(f"{argv.split()[0]}={code}" for argv, code, _ in self.commands)
        return (
            f"case {self.number}: {self.target} {self.file} <- {self.mutation} "
            f"({self.seconds:.1f} s; {ends})"
        )


def plan_case(seed: int, number: int, targets: tuple[str, ...] = TARGET_NAMES) -> random.Random:
    """The random stream of case *number* (independent of every other case)."""
    return random.Random(f"studyman-fuzz:{seed}:{number}:{','.join(targets)}")


def run_case(
    base: Workspace,
    scratch: Path,
    seed: int,
    number: int,
    targets: tuple[str, ...] = TARGET_NAMES,
    *,
    mutate: bool = True,
) -> CaseResult:
    """Copy *base* under *scratch*, damage one file, run the commands that read it.

    With ``mutate=False`` nothing is damaged: the baseline (the benchmark runs it with
    ``SETTINGS.heavy_share = 1``, so the slow commands are measured too).
    """
    rng = plan_case(seed, number, targets)
    target = TARGETS[targets[number % len(targets)]]
    root = scratch / f"case-{number}"
    ws = copy_workspace(base, root / "workspace")
    candidates = target.files(ws)
    file = rng.choice(candidates)
    mutations = rng.randint(1, 2)
    names: list[str] = []
    if not mutate:
        names.append("none")
    elif rng.random() < 0.03:
        file.unlink()
        names.append("delete the file")
    else:
        data = file.read_bytes()
        for _ in range(mutations):
            mutation = rng.choice(target.mutations)
            try:
                data = mutation(data, rng)
            except RecursionError:  # a tree too deep for PyYAML's writer: nest it as text
                data = ("[" * 3000 + "]" * 3000 + "\n").encode("utf-8")
            names.append(mutation.__name__)
        file.write_bytes(data)
    if target.after is not None and mutate:
        target.after(ws, file, rng)
    result = CaseResult(number, target.name, str(file.relative_to(ws.root)), " + ".join(names))
    started = time.perf_counter()
    for argv in target.commands(ws, root / "out", rng):
        outcome = run_command(argv)
        shown = " ".join(a if not a.startswith("/") else Path(a).name for a in argv)
        result.commands.append((shown, outcome.code, outcome.seconds))
        if outcome.failure:
            result.failures.append((shown, outcome.failure))
    result.seconds = time.perf_counter() - started
    return result
