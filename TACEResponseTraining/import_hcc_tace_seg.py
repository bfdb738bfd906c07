"""`import-hcc-tace-seg`: the public TCIA collection HCC-TACE-Seg, as downloaded, into a dataset folder.

For each patient: the DICOM-SEG (liver, mass, portal vein, abdominal aorta) and the CT acquisition it was drawn
on (the reference). The SEG becomes a label map on the reference CT's own grid (1 liver, 2 tumor from "Mass";
the tumor wins where segments overlap). Each requested phase is an acquisition of the SEG's study (the
pre-TACE study), found by its series description or, when that does not name one phase, by how the aorta and
portal vein (from the SEG) enhance; it is resampled onto the reference grid. Response comes from the mRECIST
readers of the clinical spreadsheet. Patient-level problems are reported and skipped, never fatal.
"""

import os
import re
import sys
import time
from typing import Dict, List

import numpy as np
import SimpleITK as sitk

from TACEResponseLib.dicom_study import PHASE_ALIASES, PHASES, classify_by_enhancement, phase_from_description
from TACEResponseLib.errors import InputError
from TACEResponseLib.preprocessing import same_grid

from . import clinical_table as ct_table
from . import dicom_seg
from .import_output import CORE_COLUMNS, Staging, check_output_free, clinical_column_names, safe_name, write_csv, \
    write_report

MIN_SAMPLES = 20
LOW_COVERAGE = 0.9
AIR_HU = -1024.0
_OUTSIDE = -32768.0


def parse_phases(text):
    """'portal_venous,arterial' -> [('portal_venous', 'portal_venous'), ('arterial', 'arterial')].

    The first element is the dataset column suffix as given, the second the phase it means.
    """
    out, seen = [], set()
    for name in [p.strip() for p in str(text).split(",") if p.strip()]:
        key = name.lower().replace("-", "_")
        if key not in PHASE_ALIASES:
            raise InputError(None, "unknown phase {!r}; use some of {}".format(name, ", ".join(PHASES)))
        phase = PHASE_ALIASES[key]
        if phase in seen:
            raise InputError(None, "phase {} requested twice".format(phase))
        seen.add(phase)
        out.append((key, phase))
    if not out:
        raise InputError(None, "give at least one phase")
    return out


def _sample_points(mask, limit=4000):
    """Up to ``limit`` voxel indices (z, y, x) of a mask, evenly spread (deterministic)."""
    if mask is None:
        return None
    points = np.argwhere(mask)
    if len(points) > limit:
        points = points[np.linspace(0, len(points) - 1, limit).astype(int)]
    return points


def _physical(image, zyx):
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    scale = direction * np.asarray(image.GetSpacing())
    return np.asarray(image.GetOrigin()) + zyx[:, ::-1].astype(float) @ scale.T


def _sample(image, points):
    """Median value of ``image`` at physical ``points`` (nearest voxel), None when too few fall inside."""
    if points is None or not len(points):
        return None
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    scale = direction * np.asarray(image.GetSpacing())
    index = np.rint(np.linalg.solve(scale, (points - np.asarray(image.GetOrigin())).T).T).astype(int)
    size = np.asarray(image.GetSize())
    inside = np.all((index >= 0) & (index < size), axis=1)
    if inside.sum() < MIN_SAMPLES:
        return None
    array = sitk.GetArrayViewFromImage(image)
    index = index[inside]
    return float(np.median(array[index[:, 2], index[:, 1], index[:, 0]]))


def onto_grid(image, reference):
    """``image`` on ``reference``'s grid (linear, rounded to int16), and the share of the grid it covers."""
    if same_grid(image, reference):
        return sitk.Cast(image, sitk.sitkInt16), 1.0
    out = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), reference, sitk.Transform(), sitk.sitkLinear,
                        _OUTSIDE, sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(out)
    outside = array <= _OUTSIDE + 0.5
    coverage = 1.0 - float(outside.mean())
    array[outside] = AIR_HU
    result = sitk.GetImageFromArray(np.clip(np.rint(array), -32768, 32767).astype(np.int16))
    result.CopyInformation(reference)
    return result, coverage


def _patient_folder(path):
    """The NBIA layout's patient folder name (…/<PatientID>/<study>/<series>/<file>), as a fallback id."""
    return os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(path)))))


class _Importer:
    def __init__(self, tcia_dir, clinical, output, reader, phases, reference_phase, sheet, log):
        self.tcia_dir = str(tcia_dir)
        self.clinical = str(clinical)
        self.output = output
        self.reader = reader
        self.phases = phases
        self.reference_phase = reference_phase
        self.sheet = sheet
        self.log = log
        self.problems: List[dict] = []
        self.notes: List[dict] = []
        self.cases: List[dict] = []
        self.rows: List[dict] = []

    def problem(self, case, text, path=None, skipped=True):
        entry = {"case": case, "problem": text, "skipped": skipped}
        if path:
            entry["path"] = path
        self.problems.append(entry)

    # ---- clinical spreadsheet ----

    def read_clinical(self):
        table = ct_table.read_table(self.clinical, sheet=self.sheet, id_column="TCIA_ID")
        self.id_column = ct_table.find_column(table.columns, "TCIA_ID")
        readers = {}
        for column in table.columns:
            match = re.fullmatch(r"(\d+)mrecist", ct_table.normalise_name(column))
            if match:
                readers.setdefault(match.group(1), column)
        if not readers:
            raise InputError(self.clinical, "no mRECIST reader columns (expected 1_mRECIST, 2_mRECIST, 3_mRECIST)")
        if self.reader != "majority" and self.reader not in readers:
            raise InputError(self.clinical, "no column for reader {} (reader columns: {})".format(
                self.reader, ", ".join(readers[r] for r in sorted(readers))))
        self.reader_columns = readers
        self.outcome_columns = ct_table.outcome_columns(table.columns)
        skip = {self.id_column} | {c for c in self.outcome_columns if c}
        # response assessments (RECIST, mRECIST, EASL, any reader) would leak the target into "clinical" columns
        self.clinical_source = [c for c in table.columns if c not in skip and not re.search(
            r"recist|easl", ct_table.normalise_name(c)) and not c.startswith("column_")]
        core = list(CORE_COLUMNS) + ["image_" + name for name, _ in self.phases]
        self.clinical_names = clinical_column_names(self.clinical_source, core)
        self.table: Dict[str, dict] = {}
        for row in table.rows:
            pid = row.get(self.id_column, "").strip()
            if not pid:
                continue
            if pid in self.table:
                self.problem(pid, "listed twice in the clinical table; the first row is used", skipped=False)
                continue
            self.table[pid] = row

    def clinical_values(self, pid, row):
        values = {}
        categories = {}
        for reader, column in sorted(self.reader_columns.items()):
            try:
                categories[reader] = ct_table.response_category(row.get(column, ""))
            except ValueError as exc:
                categories[reader] = None
                self.problem(pid, "{}: {}; reader ignored".format(column, exc), skipped=False)
        response, note = ct_table.combine_readers(categories, self.reader)
        values["response"] = "" if response is None else str(response)
        carried, problems = ct_table.carried_columns(row, self.outcome_columns, self.clinical_source,
                                                     self.clinical_names)
        for text in problems:
            self.problem(pid, text + "; left empty", skipped=False)
        values.update(carried)
        return values, {"readers": categories, "response_note": note}

    # ---- images ----

    def run(self):
        self.read_clinical()
        self.log("indexing DICOM files under {} ...".format(self.tcia_dir))
        files, file_problems = dicom_seg.index_folder(self.tcia_dir)
        for path, text in file_problems:
            self.problem(_patient_folder(path), text, path=path, skipped=False)
        by_patient: Dict[str, List[dicom_seg.DicomFile]] = {}
        table_ids = {pid.upper(): pid for pid in self.table}
        for f in files:
            pid = f.patient_id
            if pid.upper() in table_ids:
                pid = table_ids[pid.upper()]
            else:
                folder = _patient_folder(f.path)
                pid = table_ids.get(folder.upper(), pid or folder)
            by_patient.setdefault(pid, []).append(f)
        self.log("{} DICOM files, {} patient(s) with images, {} in the clinical table".format(
            len(files), len(by_patient), len(self.table)))
        with Staging(self.output) as staging:
            for number, pid in enumerate(sorted(by_patient), 1):
                started = time.time()
                try:
                    self.import_patient(pid, by_patient[pid], staging)
                    self.log("[{}/{}] {}: imported ({:.1f} s)".format(number, len(by_patient), pid,
                                                                    time.time() - started))
                except InputError as exc:
                    self.problem(pid, str(exc))
                    self.log("[{}/{}] {}: skipped: {}".format(number, len(by_patient), pid, exc))
                except (MemoryError, RuntimeError, ValueError, KeyError, AttributeError, TypeError, IndexError) as exc:
                    # malformed headers surface as these; one odd patient must not stop the import
                    self.problem(pid, "unexpected {}: {}".format(type(exc).__name__, str(exc)[:200]))
                    self.log("[{}/{}] {}: skipped: {}".format(number, len(by_patient), pid, exc))
            for pid in self.table:
                if pid not in by_patient:
                    self.problem(pid, "in the clinical table but no images found under {}".format(self.tcia_dir))
            report = self.report()
            if not self.rows:
                raise InputError(self.tcia_dir, "no patient could be imported ({} problem(s); first: {}: {})".format(
                    len(self.problems), *(next(((p["case"], p["problem"]) for p in self.problems),
                                               ("-", "no DICOM files found")))))
            columns = (["case_id"] + ["image_" + name for name, _ in self.phases]
                       + ["label", "response", "os_time", "os_event", "ttp_time", "ttp_event"] + self.clinical_names)
            write_csv(staging.path("dataset.csv"), columns, self.rows)
            write_report(staging.path("import_report.json"), report)
            staging.commit()
        return report

    def report(self):
        return {
            "command": "import-hcc-tace-seg", "tcia_dir": os.path.abspath(self.tcia_dir),
            "clinical": os.path.abspath(self.clinical), "output": os.path.abspath(self.output),
            "phases": [name for name, _ in self.phases], "reader": self.reader,
            "reference_phase": self.reference_phase,
            "imported": len(self.rows), "problems": self.problems, "notes": self.notes, "cases": self.cases,
        }

    def choose_seg(self, pid, files):
        segs = [f for f in files if f.is_seg]
        if not segs:
            series = {f.series_uid for f in files if f.modality == "CT"}
            raise InputError(None, "no DICOM-SEG found ({} CT series present)".format(len(series)))
        if len(segs) > 1:
            # the collection segments the pre-TACE study: prefer the earliest
            segs.sort(key=lambda f: (f.study_date or "99999999", f.path))
            self.notes.append({"case": pid, "note": "{} SEGs found; using {} (earliest study)".format(
                len(segs), segs[0].path)})
        return segs[0]

    def reference_acquisition(self, seg_file, seg, files):
        series, instances = dicom_seg.referenced_series(seg)
        ct_files = [f for f in files if f.is_ct_slice and (not series or f.series_uid in series)]
        if instances:
            hit = {(f.series_uid, f.acquisition) for f in ct_files if f.sop_uid in instances}
            if not hit:
                raise InputError(seg_file.path, "the CT slices the SEG references are not in the download "
                                                "(series {})".format(", ".join(series) or "?"))
            if len(hit) > 1:
                raise InputError(seg_file.path, "the SEG references slices of {} acquisitions".format(len(hit)))
            key = hit.pop()
        else:
            keys = sorted({(f.series_uid, f.acquisition) for f in ct_files})
            if not keys:
                raise InputError(seg_file.path, "the CT series the SEG references ({}) is not in the download"
                                 .format(", ".join(series) or "none named"))
            if len(keys) > 1:
                raise InputError(seg_file.path, "the SEG names no slices and its series holds {} acquisitions; "
                                                "cannot tell which one it was drawn on".format(len(keys)))
            key = keys[0]
        return dicom_seg.Acquisition([f for f in ct_files if (f.series_uid, f.acquisition) == key])

    def import_patient(self, pid, files, staging):
        seg_file = self.choose_seg(pid, files)
        seg = dicom_seg.read_seg(seg_file.path)
        reference_acq = self.reference_acquisition(seg_file, seg, files)
        reference = dicom_seg.read_ct(reference_acq)
        labels, vessels, seg_info = dicom_seg.seg_to_labels(seg, reference, seg_file.path)
        if not seg_info["tumor_voxels"]:
            self.notes.append({"case": pid, "note": "the SEG has no tumor (Mass) voxels"})
        ref_image = reference.image
        study = reference_acq.first.study_uid
        candidates = [a for a in dicom_seg.acquisitions([f for f in files if f.study_uid == study])
                      if len(a.files) >= 5 or a.key == reference_acq.key]
        volumes = {reference_acq.key: reference}
        aorta_points = _physical(ref_image, _sample_points(vessels["aorta"])) if vessels["aorta"] is not None \
            else None
        portal_points = _physical(ref_image, _sample_points(vessels["portal_vein"])) \
            if vessels["portal_vein"] is not None else None
        details, measured = {}, {}
        for acq in candidates:
            entry = {"description": acq.first.series_description, "series_number": acq.first.series_number,
                     "acquisition_number": acq.first.acquisition, "slices": len(acq.files), "folder": acq.folder,
                     "reference": acq.key == reference_acq.key}
            details[acq.key] = entry
            described = phase_from_description(acq.first.series_description)
            if acq.key == reference_acq.key and self.reference_phase:
                entry.update(phase=self.reference_phase, by="--reference-phase")
                continue
            if described:
                entry.update(phase=described, by="series description")
                continue
            if aorta_points is None:
                entry.update(phase=None, by="series description names no phase; the SEG has no aorta to measure")
                continue
            try:
                # not kept: a study may hold many large acquisitions; the chosen ones are read again below
                volume = volumes.get(acq.key) or dicom_seg.read_ct(acq)
            except InputError as exc:
                entry.update(phase=None, by="unreadable: {}".format(exc.problem))
                self.notes.append({"case": pid, "note": "{} skipped: {}".format(acq.describe(), exc.problem)})
                continue
            aorta, portal = _sample(volume.image, aorta_points), _sample(volume.image, portal_points)
            entry.update(aorta_hu=aorta, portal_vein_hu=portal)
            measured[acq.key] = (aorta, portal)
        for key, phase in classify_by_enhancement(measured).items():
            details[key].update(phase=phase, by="enhancement (aorta, portal vein HU)" if phase else
                                "enhancement inconclusive")

        case_id = safe_name(pid)
        row = {"case_id": pid}
        phase_info = {}
        chosen = {}
        for name, phase in self.phases:
            options = [a for a in candidates if details[a.key].get("phase") == phase]
            if not options:
                found = ", ".join("{} = {}".format(a.describe(), details[a.key].get("phase") or "unknown")
                                  for a in candidates)
                raise InputError(None, "no {} acquisition identified in the SEG's study (found: {})".format(
                    phase, found))
            chosen[name] = self.prefer(options, reference_acq)
        for name, phase in self.phases:
            acq = chosen[name]
            source = volumes[acq.key].image if acq.key in volumes else dicom_seg.read_ct(acq).image
            image, coverage = onto_grid(source, ref_image)
            if coverage < LOW_COVERAGE:
                self.notes.append({"case": pid, "note": "{} covers only {:.0%} of the reference CT".format(
                    name, coverage)})
            rel = "images/{}_{}.nii.gz".format(case_id, name)
            sitk.WriteImage(image, staging.path(rel), True)
            row["image_" + name] = rel
            phase_info[name] = {"source": acq.describe(), "phase_by": details[acq.key].get("by"),
                                "resampled": not same_grid(source, ref_image), "coverage": round(coverage, 4)}
            del source, image
        rel = "labels/{}.nii.gz".format(case_id)
        sitk.WriteImage(dicom_seg.labels_image(labels, ref_image), staging.path(rel), True)
        row["label"] = rel
        clinical = {"readers": {}, "response_note": "not in the clinical table"}
        if pid in self.table:
            values, clinical = self.clinical_values(pid, self.table[pid])
            row.update(values)
        else:
            self.problem(pid, "has images but is not in the clinical table; imported without response and outcomes",
                         skipped=False)
        self.rows.append(row)
        self.cases.append({
            "case_id": pid, "seg": seg_file.path, "reference": reference_acq.describe(),
            "grid": {"size": list(ref_image.GetSize()), "spacing": list(ref_image.GetSpacing()),
                     "origin": list(ref_image.GetOrigin()), "direction": list(ref_image.GetDirection())},
            "segments": seg_info, "phases": phase_info,
            "acquisitions": [details[a.key] for a in candidates],
            "response": row.get("response", ""), **clinical,
        })

    @staticmethod
    def prefer(options, reference_acq):
        """The reference itself, else the same frame of reference, the same orientation, most slices."""
        ref = reference_acq.first

        def score(acq):
            f = acq.first
            same_orientation = np.allclose(f.orientation, ref.orientation, atol=1e-3)
            return (acq.key == reference_acq.key, f.frame_of_reference == ref.frame_of_reference,
                    same_orientation, len(acq.files))
        return max(options, key=score)


def import_collection(tcia_dir, clinical, output, reader="majority", phases="portal_venous", reference_phase=None,
                      sheet="data table", log=None):
    """Import the collection; returns the report (also written to OUTPUT/import_report.json)."""
    if not os.path.isdir(str(tcia_dir)):
        raise InputError(tcia_dir, "does not exist or is not a folder (give the folder the NBIA Data Retriever "
                                   "wrote, e.g. manifest-…/HCC-TACE-Seg)")
    reader = str(reader).strip().lower()
    if reader != "majority" and not reader.isdigit():
        raise InputError(None, "--reader must be a reader number (1, 2, 3) or 'majority', not {!r}".format(reader))
    phase_list = parse_phases(phases) if isinstance(phases, str) else parse_phases(",".join(phases))
    if reference_phase:
        key = str(reference_phase).lower().replace("-", "_")
        if key not in PHASE_ALIASES:
            raise InputError(None, "unknown --reference-phase {!r}; use one of {}".format(reference_phase,
                                                                                        ", ".join(PHASES)))
        reference_phase = PHASE_ALIASES[key]
    check_output_free(output)
    importer = _Importer(tcia_dir, clinical, output, reader, phase_list, reference_phase, sheet,
                         log or (lambda text: print(text, file=sys.stderr)))
    return importer.run()
