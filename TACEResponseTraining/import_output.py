"""Writing an imported dataset folder all at once: built in a hidden sibling folder, renamed into place at the end.

A failed or interrupted import therefore leaves no half dataset (no dataset.csv next to missing images), and an
existing non-empty folder is never written into.
"""

import csv
import json
import os
import re
import shutil

from TACEResponseLib.errors import InputError

CORE_COLUMNS = ("case_id", "label", "response", "os_time", "os_event", "ttp_time", "ttp_event")


def check_output_free(path):
    path = os.path.abspath(str(path))
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise InputError(path, "output exists and is not a folder")
        if os.listdir(path):
            raise InputError(path, "output folder is not empty; give a new or empty folder (nothing is overwritten)")
    return path


def safe_name(text):
    """A case id as a file name: keep letters, digits, '.', '-', '_'."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._")
    return name or "case"


class Staging:
    """``with Staging(out) as folder:`` write into ``folder``; ``commit()`` moves it to ``out``."""

    def __init__(self, output):
        self.output = check_output_free(output)
        parent = os.path.dirname(self.output)
        os.makedirs(parent, exist_ok=True)
        self.folder = os.path.join(parent, ".{}.importing-{}".format(os.path.basename(self.output), os.getpid()))
        self.committed = False

    def __enter__(self):
        if os.path.exists(self.folder):
            shutil.rmtree(self.folder)
        os.makedirs(os.path.join(self.folder, "images"))
        os.makedirs(os.path.join(self.folder, "labels"))
        return self

    def path(self, *parts):
        return os.path.join(self.folder, *parts)

    def commit(self):
        check_output_free(self.output)  # someone may have written there meanwhile
        if os.path.isdir(self.output):
            os.rmdir(self.output)
        os.rename(self.folder, self.output)
        self.committed = True

    def __exit__(self, *exc):
        if not self.committed and os.path.exists(self.folder):
            shutil.rmtree(self.folder, ignore_errors=True)
        return False


def clinical_column_names(names, taken):
    """Clinical column names that cannot collide with the dataset's own columns ('clinical_' prefix if so)."""
    out, used = [], set(taken)
    for name in names:
        new = name
        if new in used or new.startswith("image_"):
            new = "clinical_" + name
        while new in used:
            new += "_"
        used.add(new)
        out.append(new)
    return out


def write_csv(path, columns, rows):
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})


def write_report(path, report):
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(report, stream, indent=2, sort_keys=False)
        stream.write("\n")


def summary_text(report):
    """What the command prints: counts, then one line per problem."""
    lines = ["imported {} case(s) into {}".format(report["imported"], report["output"])]
    problems = report.get("problems") or []
    if problems:
        lines.append("{} problem(s) (see import_report.json):".format(len(problems)))
        for p in problems:
            lines.append("  {}: {}".format(p.get("case") or p.get("path") or "-", p["problem"]))
    notes = [n for n in report.get("notes") or []]
    if notes:
        lines.append("{} note(s):".format(len(notes)))
        lines.extend("  {}: {}".format(n.get("case") or "-", n["note"]) for n in notes)
    return "\n".join(lines)
