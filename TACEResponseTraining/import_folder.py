"""`import-folder`: a folder of images (NIfTI, NRRD, MetaImage), a folder of label maps and a table -> dataset.

Files are matched to table rows by the case id at the start of the file name (``<id>.nii.gz``, ``<id>_ct.nrrd``,
``<id>_0000.nii.gz``; the longest matching id wins, so ``case1`` never takes ``case10_ct``). With several phases,
each image file names its phase after the id (``<id>_arterial.nii.gz``) or carries the nnU-Net channel number
(``<id>_0001.nii.gz`` is the second phase given). A label map must have exactly its image's grid (size,
spacing, origin, direction): a mask drawn on another grid would teach the network the wrong voxels.
"""

import os
import re
import shutil
import sys
import time
from typing import Dict, List

import numpy as np
import SimpleITK as sitk

from TACEResponseLib import image_io
from TACEResponseLib.errors import InputError
from TACEResponseLib.preprocessing import check_phases_agree, same_grid

from . import clinical_table as ct_table
from .import_output import CORE_COLUMNS, Staging, check_output_free, clinical_column_names, safe_name, write_csv, \
    write_report

IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_SEPARATORS = "_-. "
_RESPONSE_WORDS = {"1": 1, "0": 0, "true": 1, "false": 0, "yes": 1, "no": 0, "responder": 1, "non-responder": 0,
                   "nonresponder": 0, "cr": 1, "pr": 1, "sd": 0, "pd": 0}


def image_stem(name):
    """File name without its image extension, or None for files that are not images (or are detached data)."""
    lower = name.lower()
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[:-len(ext)]
    return None


def match_files(folder, case_ids):
    """{case id: [(path, remainder after the id)]} and the image files matching no id."""
    folder = str(folder)
    if not os.path.isdir(folder):
        raise InputError(folder, "does not exist or is not a folder")
    ids = sorted(case_ids, key=len, reverse=True)
    matched: Dict[str, List[tuple]] = {}
    unmatched = []
    for name in sorted(os.listdir(folder)):
        stem = image_stem(name)
        if stem is None or name.startswith("."):
            continue
        for case in ids:
            if stem == case or (stem.startswith(case) and stem[len(case)] in _SEPARATORS):
                matched.setdefault(case, []).append((os.path.join(folder, name), stem[len(case):].strip(_SEPARATORS)))
                break
        else:
            unmatched.append(name)
    return matched, unmatched


def parse_label_map(text):
    """'1=1,2=2,5=1' -> {1: 1, 2: 2, 5: 1}; targets must be 0 (background), 1 (liver) or 2 (tumor)."""
    if not text:
        return None
    mapping = {}
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        match = re.fullmatch(r"(-?\d+)\s*=\s*(\d+)", item)
        if not match:
            raise InputError(None, "--label-map: {!r} is not SOURCE=TARGET (e.g. 1=1,2=2)".format(item))
        source, target = int(match.group(1)), int(match.group(2))
        if target not in (0, 1, 2):
            raise InputError(None, "--label-map: target {} must be 0 (background), 1 (liver) or 2 (tumor)".format(
                target))
        if source in mapping and mapping[source] != target:
            raise InputError(None, "--label-map: value {} mapped twice".format(source))
        mapping[source] = target
    if not mapping:
        raise InputError(None, "--label-map is empty")
    return mapping


def map_labels(array, mapping, explicit):
    """(uint8 array with 0/1/2, values set to background). Without an explicit map only 0, 1, 2 are allowed."""
    if array.dtype.kind == "f":
        if not np.array_equal(array, np.round(array)):
            raise ValueError("holds non-integer values; a label map must be integer-valued")
    values = np.unique(array).astype(np.int64)
    unknown = [int(v) for v in values if int(v) not in mapping and v != 0]
    if unknown and not explicit:
        raise ValueError("holds values {} besides 0 (background), 1 (liver), 2 (tumor); give --label-map "
                         "(e.g. --label-map 1=1,2=2,3=2)".format(", ".join(map(str, unknown[:10]))))
    out = np.zeros(array.shape, np.uint8)
    for source, target in mapping.items():
        if target:
            out[array == source] = target
    return out, unknown


def response_value(text):
    """Text of a response cell -> '1', '0' or ''; ValueError when it is none of the accepted spellings."""
    text = ct_table.cell_text(text).strip().lower()
    if not text:
        return ""
    if text in ("1.0", "0.0"):
        text = text[0]
    if text not in _RESPONSE_WORDS:
        raise ValueError("response must be 1/0 (or CR/PR/SD/PD, yes/no), not {!r}".format(text))
    return str(_RESPONSE_WORDS[text])


def _pair(text, option):
    if not text:
        return None
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 2 or not all(parts):
        raise InputError(None, "{} takes TIME_COLUMN,EVENT_COLUMN".format(option))
    return parts


def _geometry_difference(label, image):
    for name, a, b in (("size", label.GetSize(), image.GetSize()), ("spacing", label.GetSpacing(), image.GetSpacing()),
                       ("origin", label.GetOrigin(), image.GetOrigin()),
                       ("direction", label.GetDirection(), image.GetDirection())):
        if not np.allclose(a, b, atol=1e-3 if name == "origin" else 1e-4):
            return "{} {} vs the image's {}".format(name, tuple(round(float(v), 4) for v in a),
                                                   tuple(round(float(v), 4) for v in b))
    return "grids differ"


class _FolderImporter:
    def __init__(self, images, labels, table, output, id_column, response_column, phases, label_map, os_columns,
                 ttp_columns, log):
        self.images, self.labels, self.table_path, self.output = str(images), str(labels), str(table), output
        self.id_column, self.response_column = id_column, response_column
        self.phases, self.label_map = phases, label_map
        self.os_columns, self.ttp_columns = os_columns, ttp_columns
        self.log = log
        self.problems, self.notes, self.cases, self.rows = [], [], [], []

    def problem(self, case, text, skipped=True):
        self.problems.append({"case": case, "problem": text, "skipped": skipped})

    def read_table(self):
        table = ct_table.read_table(self.table_path, id_column=self.id_column)
        id_column = ct_table.find_column(table.columns, self.id_column)
        if self.response_column:
            response = ct_table.find_column(table.columns, self.response_column)
            if response is None:
                raise InputError(self.table_path, "no response column {!r} (columns: {})".format(
                    self.response_column, ", ".join(table.columns)))
        else:  # not named: a 'response' column if there is one, else every response stays unknown
            response = ct_table.find_column(table.columns, "response")
            if response is None:
                self.notes.append({"case": None, "note": "the table has no 'response' column; responses left empty "
                                                         "(name one with --response-column)"})
        found = list(ct_table.outcome_columns(table.columns))
        for offset, pair, option in ((0, self.os_columns, "--os-columns"), (2, self.ttp_columns, "--ttp-columns")):
            if pair:
                for i, name in enumerate(pair):
                    column = ct_table.find_column(table.columns, name)
                    if column is None:
                        raise InputError(self.table_path, "{}: no column {!r}".format(option, name))
                    found[offset + i] = column
        self.outcome_columns = found
        skip = {id_column, response} | {c for c in found if c}
        self.clinical_source = [c for c in table.columns if c not in skip and not c.startswith("column_")]
        core = list(CORE_COLUMNS) + ["image_" + p for p in self.phases]
        self.clinical_names = clinical_column_names(self.clinical_source, core)
        self.response_source = response
        rows = {}
        for row in table.rows:
            case = row.get(id_column, "").strip()
            if not case:
                continue
            if case in rows:
                self.problem(case, "listed twice in the table; the first row is used", skipped=False)
                continue
            rows[case] = row
        if not rows:
            raise InputError(self.table_path, "no rows with a case id in column {!r}".format(id_column))
        return rows

    def pick_images(self, case, files):
        """{phase: path} for one case, by phase name or nnU-Net channel number after the id."""
        if len(self.phases) == 1 and len(files) == 1:
            return {self.phases[0]: files[0][0]}
        chosen = {}
        for index, phase in enumerate(self.phases):
            hits = [path for path, rest in files
                    if re.search(r"(^|[_.\- ]){}($|[_.\- ])".format(re.escape(phase)), rest.lower())
                    or rest == "{:04d}".format(index)]
            if len(hits) != 1:
                raise InputError(None, "{} image files for phase {} ({} files match the case id: {}); name the phase "
                                       "after the id, e.g. {}_{}.nii.gz".format(
                                           "no" if not hits else len(hits), phase, len(files),
                                           ", ".join(os.path.basename(p) for p, _ in files), case, phase))
            chosen[phase] = hits[0]
        return chosen

    def import_case(self, case, row, image_files, label_files, staging):
        if not image_files:
            raise InputError(None, "no image file in {} starts with this case id".format(self.images))
        if not label_files:
            raise InputError(None, "no label file in {} starts with this case id".format(self.labels))
        if len(label_files) > 1:
            exact = [f for f in label_files if not f[1]]
            if len(exact) != 1:
                raise InputError(None, "{} label files match ({}); keep one per case".format(
                    len(label_files), ", ".join(os.path.basename(p) for p, _ in label_files)))
            label_files = exact
        paths = self.pick_images(case, image_files)
        images = {phase: image_io.read_image(path)[0] for phase, path in paths.items()}
        ordered = [images[p] for p in self.phases]
        warnings = check_phases_agree(ordered, [paths[p] for p in self.phases])
        label_path = label_files[0][0]
        label = image_io.read_mask(label_path)
        reference = ordered[0]
        if not same_grid(label, reference):
            raise InputError(label_path, "label grid differs from the image {} ({})".format(
                os.path.basename(paths[self.phases[0]]), _geometry_difference(label, reference)))
        try:
            array, dropped = map_labels(sitk.GetArrayViewFromImage(label), self.label_map or {0: 0, 1: 1, 2: 2},
                                        self.label_map is not None)
        except ValueError as exc:
            raise InputError(label_path, str(exc)) from None
        if dropped:
            self.notes.append({"case": case, "note": "label values {} not in --label-map, set to background".format(
                ", ".join(map(str, dropped[:10])))})
        if not (array == 1).any() and not (array == 2).any():
            self.notes.append({"case": case, "note": "label map has no liver or tumor voxels"})
        name = safe_name(case)
        out = {"case_id": case}
        for phase in self.phases:
            rel = "images/{}_{}.nii.gz".format(name, phase)
            if paths[phase].lower().endswith(".nii.gz"):
                shutil.copyfile(paths[phase], staging.path(rel))  # already the dataset's format: keep it byte for byte
            else:
                sitk.WriteImage(images[phase], staging.path(rel), True)
            out["image_" + phase] = rel
        labels = sitk.GetImageFromArray(array)
        labels.CopyInformation(reference)
        rel = "labels/{}.nii.gz".format(name)
        sitk.WriteImage(labels, staging.path(rel), True)
        out["label"] = rel
        out["response"] = ""
        if self.response_source:
            try:
                out["response"] = response_value(row.get(self.response_source, ""))
            except ValueError as exc:
                self.problem(case, "{}; response left empty".format(exc), skipped=False)
        carried, problems = ct_table.carried_columns(row, self.outcome_columns, self.clinical_source,
                                                     self.clinical_names)
        for text in problems:
            self.problem(case, text + "; left empty", skipped=False)
        out.update(carried)
        self.rows.append(out)
        self.cases.append({"case_id": case, "images": {p: paths[p] for p in self.phases}, "label": label_path,
                           "label_values": {str(int(v)): int(n) for v, n in zip(*np.unique(array, return_counts=True))},
                           "warnings": warnings})

    def run(self):
        rows = self.read_table()
        image_matches, image_unmatched = match_files(self.images, rows)
        label_matches, label_unmatched = match_files(self.labels, rows)
        for folder, names in ((self.images, image_unmatched), (self.labels, label_unmatched)):
            if names:
                self.notes.append({"case": None, "note": "{} file(s) in {} match no case id and were not imported: {}"
                                   .format(len(names), folder, ", ".join(names[:10]) + (" ..." if len(names) > 10
                                                                                      else ""))})
        with Staging(self.output) as staging:
            for number, case in enumerate(rows, 1):
                started = time.time()
                try:
                    self.import_case(case, rows[case], image_matches.get(case, []), label_matches.get(case, []),
                                     staging)
                    self.log("[{}/{}] {}: imported ({:.1f} s)".format(number, len(rows), case, time.time() - started))
                except InputError as exc:
                    self.problem(case, str(exc))
                    self.log("[{}/{}] {}: skipped: {}".format(number, len(rows), case, exc))
            if not self.rows:
                first = self.problems[0] if self.problems else {"case": "-", "problem": "no cases"}
                raise InputError(self.table_path, "no case could be imported ({} problem(s); first: {}: {})".format(
                    len(self.problems), first["case"], first["problem"]))
            columns = (["case_id"] + ["image_" + p for p in self.phases]
                       + ["label", "response", "os_time", "os_event", "ttp_time", "ttp_event"] + self.clinical_names)
            write_csv(staging.path("dataset.csv"), columns, self.rows)
            report = self.report()
            write_report(staging.path("import_report.json"), report)
            staging.commit()
        return report

    def report(self):
        return {"command": "import-folder", "images": os.path.abspath(self.images),
                "labels": os.path.abspath(self.labels), "table": os.path.abspath(self.table_path),
                "output": os.path.abspath(self.output), "phases": list(self.phases),
                "label_map": {str(k): v for k, v in (self.label_map or {0: 0, 1: 1, 2: 2}).items()},
                "imported": len(self.rows), "problems": self.problems, "notes": self.notes, "cases": self.cases}


def import_folder(images, labels, table, output, id_column="case_id", response_column=None,
                  phases="portal_venous", label_map=None, os_columns=None, ttp_columns=None, log=None):
    """Import; returns the report (also written to OUTPUT/import_report.json)."""
    phase_list = [p.strip() for p in (phases.split(",") if isinstance(phases, str) else phases) if p.strip()]
    if not phase_list:
        raise InputError(None, "give at least one phase")
    for phase in phase_list:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", phase):
            raise InputError(None, "phase name {!r}: use lower-case letters, digits and '_' (e.g. portal_venous)"
                             .format(phase))
    if len(set(phase_list)) != len(phase_list):
        raise InputError(None, "a phase is listed twice in --phases")
    mapping = parse_label_map(label_map) if isinstance(label_map, str) or label_map is None else dict(label_map)
    for folder in (images, labels):
        if not os.path.isdir(str(folder)):
            raise InputError(folder, "does not exist or is not a folder")
    check_output_free(output)
    importer = _FolderImporter(images, labels, table, output, id_column, response_column, phase_list, mapping,
                               _pair(os_columns, "--os-columns"), _pair(ttp_columns, "--ttp-columns"),
                               log or (lambda text: print(text, file=sys.stderr)))
    return importer.run()
