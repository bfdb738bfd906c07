"""Clinical spreadsheets (xlsx or csv) for the importers: read, clean cell values, derive the response label.

Cells become text the way a dataset.csv holds them: integers without ".0", missing markers ("NA", "N/A",
"nan", "-", empty) as empty. Columns are found by a normalised name (case, spaces and punctuation ignored),
because the collection's spreadsheet has changed spelling between versions.
"""

import csv
import datetime
import os
import re
from dataclasses import dataclass
from typing import Dict, List

from TACEResponseLib.errors import InputError

MISSING = {"", "na", "n/a", "nan", "none", "null", "-", "--", "."}
# mRECIST / RECIST / EASL codes as the collection writes them
RESPONSE_CODES = {"1": "CR", "2": "PR", "3": "SD", "4": "PD"}
RESPONDER = {"CR": 1, "PR": 1, "SD": 0, "PD": 0}
_TEXT_CODES = {"CR": "CR", "COMPLETE RESPONSE": "CR", "PR": "PR", "PARTIAL RESPONSE": "PR", "SD": "SD",
               "STABLE DISEASE": "SD", "PD": "PD", "PROGRESSIVE DISEASE": "PD"}


@dataclass
class Table:
    path: str
    columns: List[str]
    rows: List[Dict[str, str]]


def normalise_name(name):
    return re.sub(r"[^0-9a-z]+", "", str(name).lower())


def cell_text(value):
    """One cell as dataset.csv text; missing markers become ''."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return ""
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else format(value, ".10g")
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    text = str(value).strip()
    if text.lower() in MISSING:
        return ""
    # whole numbers typed as text ("12.0") are written the way numeric cells are
    if re.fullmatch(r"[-+]?\d+\.0*", text):
        return str(int(float(text)))
    return text


def read_table(path, sheet=None, id_column=None):
    """Read an .xlsx (first sheet named ``sheet``, else the only sheet) or a .csv/.tsv table.

    The header is the first row that holds ``id_column`` (xlsx files often have a title row above it).
    """
    path = str(path)
    if not os.path.isfile(path):
        raise InputError(path, "does not exist" if not os.path.exists(path) else "is not a file")
    lower = path.lower()
    if lower.endswith((".xlsx", ".xlsm")):
        grid = _xlsx_rows(path, sheet)
    elif lower.endswith(".xls"):
        raise InputError(path, "old .xls workbooks are not read; save it as .xlsx or .csv")
    else:
        grid = _csv_rows(path)
    header_at = 0
    if id_column:
        wanted = normalise_name(id_column)
        for i, row in enumerate(grid[:30]):
            if any(normalise_name(cell_text(c)) == wanted for c in row):
                header_at = i
                break
        else:
            raise InputError(path, "no column {!r} found (the id column; header row not found)".format(id_column))
    if not grid:
        raise InputError(path, "the table is empty")
    header = [cell_text(c) for c in grid[header_at]]
    columns, seen = [], set()
    for i, name in enumerate(header):
        name = name or "column_{}".format(i + 1)
        while name in seen:
            name += "_dup"
        seen.add(name)
        columns.append(name)
    rows = []
    for raw in grid[header_at + 1:]:
        values = [cell_text(c) for c in raw]
        if not any(values):
            continue
        values += [""] * (len(columns) - len(values))
        rows.append(dict(zip(columns, values[:len(columns)])))
    return Table(path, columns, rows)


def _xlsx_rows(path, sheet):
    try:
        import openpyxl
    except ImportError:
        raise InputError(path, "reading .xlsx needs openpyxl (pip install openpyxl)") from None
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile, KeyError and XML errors for damaged files
        raise InputError(path, "cannot read the workbook ({}: {})".format(type(exc).__name__, str(exc)[:150])) \
            from None
    try:
        names = book.sheetnames
        chosen = None
        if sheet:
            chosen = next((n for n in names if normalise_name(n) == normalise_name(sheet)), None)
        if chosen is None:
            if len(names) == 1:
                chosen = names[0]
            else:
                raise InputError(path, "no sheet named {!r} (sheets: {})".format(sheet, ", ".join(names)))
        return [list(row) for row in book[chosen].iter_rows(values_only=True)]
    finally:
        book.close()


def _csv_rows(path):
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            text = stream.read()
    except UnicodeDecodeError:
        with open(path, newline="", encoding="latin-1") as stream:
            text = stream.read()
    except OSError as exc:
        raise InputError(path, "cannot read ({})".format(exc.strerror or exc)) from None
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    if delimiter == "," and text.count(";") > text.count(",") and "\t" not in text:
        delimiter = ";"  # spreadsheet exports in comma-decimal locales
    return [row for row in csv.reader(text.splitlines(), delimiter=delimiter)]


def find_column(columns, *names):
    """The first column whose normalised name equals one of ``names`` (normalised), else None."""
    index = {normalise_name(c): c for c in reversed(columns)}
    for name in names:
        hit = index.get(normalise_name(name))
        if hit is not None:
            return hit
    return None


def response_category(value):
    """'CR' | 'PR' | 'SD' | 'PD' | None (empty); ValueError for anything else."""
    text = cell_text(value).upper()
    if not text:
        return None
    if text in RESPONSE_CODES:
        return RESPONSE_CODES[text]
    if text in _TEXT_CODES:
        return _TEXT_CODES[text]
    raise ValueError("not a response code (1=CR, 2=PR, 3=SD, 4=PD): {!r}".format(text))


def combine_readers(categories, reader):
    """Objective response (1 CR/PR, 0 SD/PD, None unknown) from per-reader categories.

    ``categories``: {reader name: category or None}; ``reader``: one reader name, or 'majority' (more than half of
    the readers with an assessment agree on responder vs non-responder; a tie is unknown).
    Returns (response, note).
    """
    if reader != "majority":
        category = categories.get(str(reader))
        if category is None:
            return None, "reader {} gave no assessment".format(reader)
        return RESPONDER[category], "reader {}: {}".format(reader, category)
    votes = [RESPONDER[c] for c in categories.values() if c is not None]
    if not votes:
        return None, "no reader gave an assessment"
    yes = sum(votes)
    no = len(votes) - yes
    if yes == no:
        return None, "readers split {}:{} (tie)".format(yes, no)
    return int(yes > no), "majority of {} reader(s): {} responder, {} non-responder".format(len(votes), yes, no)


def event_value(value):
    """0/1 event indicator as text, '' when missing; ValueError otherwise."""
    text = cell_text(value)
    if text in ("", "0", "1"):
        return text
    raise ValueError("event indicator must be 0 or 1, not {!r}".format(text))


def time_value(value):
    text = cell_text(value)
    if not text:
        return ""
    try:
        number = float(text)
    except ValueError:
        raise ValueError("time must be a number, not {!r}".format(text)) from None
    if not number >= 0:
        raise ValueError("time must not be negative ({})".format(text))
    return text


def outcome_columns(columns):
    """Find (os_time, os_event, ttp_time, ttp_event) columns in a table, by the collection's names or ours."""
    os_time = find_column(columns, "os_time", "OS", "overall_survival")
    os_event = find_column(columns, "os_event", "Death_1_StillAliveorLostToFU_0")
    if os_event is None:
        os_event = next((c for c in columns if normalise_name(c).startswith("death")), None)
    ttp_time = find_column(columns, "ttp_time", "TTP", "time_to_progression")
    ttp_event = find_column(columns, "ttp_event", "Censored_0_progressed_1")
    if ttp_event is None:
        ttp_event = next((c for c in columns if normalise_name(c).startswith("censored")), None)
    return os_time, os_event, ttp_time, ttp_event


def outcomes(row, found):
    """{'os_time', 'os_event', 'ttp_time', 'ttp_event'} as text, and the problems met (values left empty)."""
    out, problems = {}, []
    checks = (("os_time", time_value), ("os_event", event_value), ("ttp_time", time_value),
              ("ttp_event", event_value))
    for (key, check), column in zip(checks, found):
        out[key] = ""
        if column is None:
            continue
        try:
            out[key] = check(row.get(column, ""))
        except ValueError as exc:
            problems.append("{}: {}".format(column, exc))
    return out, problems


def carried_columns(row, outcome_columns, clinical_source, clinical_names):
    """The dataset columns an importer carries from a table row: outcomes (checked) and clinical values
    (as given, under their dataset names). Returns (values, problems)."""
    values, problems = outcomes(row, outcome_columns)
    for source, name in zip(clinical_source, clinical_names):
        values[name] = row.get(source, "")
    return values, problems

