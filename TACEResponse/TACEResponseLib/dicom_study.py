"""A DICOM study folder: group its files into series, reject what is not a primary axial CT volume, tell the
contrast phase of each remaining series, and pick one series per phase a model needs.

Evidence for the phase, in order: the series description; the delay between ContrastBolusStartTime and
the acquisition; a ContrastBolusAgent that says no contrast was given; and, where the headers are silent, how
the aorta enhances against the veins (measured on the image). Ambiguity is never resolved by guessing: the
caller gets an InputError listing the candidates and how to choose (``--series PHASE=SeriesInstanceUID``).

Imports without Slicer; pydicom is imported only when a folder is scanned.
"""

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from .errors import InputError

PHASES = ("native", "arterial", "portal_venous", "delayed")
PHASE_ALIASES = {
    "native": "native", "pre_contrast": "native", "precontrast": "native", "non_contrast": "native",
    "noncontrast": "native", "unenhanced": "native", "plain": "native",
    "arterial": "arterial", "late_arterial": "arterial", "hepatic_arterial": "arterial",
    "portal_venous": "portal_venous", "portal": "portal_venous", "venous": "portal_venous", "pv": "portal_venous",
    "delayed": "delayed", "delay": "delayed", "equilibrium": "delayed", "late": "delayed",
}
# words in a series description that name one phase (tested on the lower-cased description)
_DESCRIPTION_PATTERNS = {
    "native": r"\b(pre|pre[ _-]?contrast|non[ _-]?con(trast)?|noncon|unenhanced|native|plain|nc|w/?o|without)\b",
    "arterial": r"\b(art|arterial|arteriel|(late|early)[ _-]?art\w*|hap|lap)\b",
    "portal_venous": r"\b(portal|pv|pvp|venous|ven)\b",
    "delayed": r"\b(delay\w*|del|equilib\w*|eq|late(?![ _-]?art))\b",
}
# enhancement rules (HU medians of aorta and portal vein / other veins; see classify_by_enhancement)
UNENHANCED_AORTA_HU = 110.0
ARTERIAL_AORTA_MINUS_PV_HU = 70.0
DELAYED_BELOW_PV_HU = 15.0
# an aorta this bright with no enhanced vein beside it: veins not yet opacified
ARTERIAL_AORTA_ALONE_HU = 250.0
# seconds after the bolus start (typical multiphase liver CT protocols)
ARTERIAL_UNTIL_S = 50.0
PORTAL_VENOUS_UNTIL_S = 120.0
MIN_SLICES = 10
# |slice normal . patient z| below this is a coronal, sagittal or steeply oblique reformat (> ~37 degrees)
MIN_AXIAL_COSINE = 0.8
_REJECTED_IMAGE_TYPES = ("LOCALIZER", "DERIVED", "SECONDARY", "REFORMATTED", "MPR", "PROJECTION IMAGE", "MIP",
                         "MINIP", "VOLUME_RENDER", "CURVED")
_SCAN_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "Modality", "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber",
    "SeriesDescription", "AcquisitionNumber", "InstanceNumber", "ImageType", "ImagePositionPatient",
    "ImageOrientationPatient", "FrameOfReferenceUID", "NumberOfFrames", "ContrastBolusAgent",
    "ContrastBolusRoute", "ContrastBolusStartTime", "AcquisitionTime", "SeriesTime", "ContentTime", "Rows",
    "Columns",
]
_SKIPPED_SUFFIXES = (".csv", ".txt", ".json", ".xlsx", ".zip", ".md", ".nii", ".gz", ".nrrd", ".mha", ".mhd",
                     ".png", ".jpg", ".pdf")
# vessel search on the image (see measure_enhancement)
_ENHANCED_HU = 130.0
_VESSEL_AREA_MM2 = (80.0, 2000.0)
_VESSEL_MIN_ROUNDNESS = 0.8
_VESSEL_MAX_ELONGATION = 1.8
_VESSEL_MAX_SD_HU = 45.0  # blood is homogeneous; bone and bowel with oral contrast are not
_TUBE_STEP_MM = 15.0
_SAMPLED_SLICES = 12


def phase_from_description(description):
    """The one phase a series description names, else None (none named, or several)."""
    text = str(description or "").lower()
    hits = [p for p, pattern in _DESCRIPTION_PATTERNS.items() if re.search(pattern, text)]
    return hits[0] if len(hits) == 1 else None


def phase_name(text):
    """A phase or one of its aliases ('pv', 'late-arterial') -> the phase, else None."""
    return PHASE_ALIASES.get(str(text).strip().lower().replace("-", "_"))


def classify_by_enhancement(measured):
    """Phases from aorta/portal-vein HU of the acquisitions of one study: {key: phase or None}.

    Unenhanced blood is below ~110 HU. In the arterial phase the aorta is far brighter than the portal vein.
    Of the remaining (venous) acquisitions the one with the brightest portal vein is portal-venous; ones
    clearly darker in the portal vein are delayed.
    """
    phases = {}
    venous = []
    for key, (aorta, portal) in measured.items():
        if aorta is None:
            phases[key] = None
        elif aorta < UNENHANCED_AORTA_HU:
            phases[key] = "native"
        elif portal is None:
            phases[key] = None  # enhanced, but arterial vs venous cannot be told without the portal vein
        elif aorta - portal >= ARTERIAL_AORTA_MINUS_PV_HU:
            phases[key] = "arterial"
        else:
            venous.append((portal, key))
    if venous:
        top = max(p for p, _ in venous)
        for portal, key in venous:
            phases[key] = "portal_venous" if portal > top - DELAYED_BELOW_PV_HU else "delayed"
    return phases


# ---- scanning a folder ------------------------------------------------------------------------------------


@dataclass
class Series:
    """One series of a study, from its headers; ``phase``/``phase_by`` are filled by classify()."""

    uid: str
    number: str
    description: str
    modality: str
    study_uid: str
    image_type: Tuple[str, ...]
    orientation: Optional[Tuple[float, ...]]
    contrast_agent: str
    contrast_route: str
    bolus_start: str
    acquisition_time: str
    frames: int
    files: List[Tuple[str, Optional[Tuple[float, float, float]], str]] = field(default_factory=list)
    rejected: Optional[str] = None
    phase: Optional[str] = None
    phase_by: str = ""
    aorta_hu: Optional[float] = None
    vein_hu: Optional[float] = None

    @property
    def slices(self):
        return len(self.files)

    @property
    def paths(self):
        """File paths sorted along the slice normal (ITK's order)."""
        return [path for path, _, _ in self.files]

    @property
    def folders(self):
        return sorted({os.path.dirname(path) for path in self.paths})

    def describe(self):
        return "series {} '{}' ({} slices)".format(self.number or "?", self.description, self.slices)

    def listing(self):
        guess = "rejected: " + self.rejected if self.rejected else "guess {}".format(self.phase or "unknown")
        return "#{} '{}', {} slices, {} [{}]".format(self.number or "?", self.description, self.slices, guess,
                                                   self.uid)

    def record(self, reason):
        """The entry result.json keeps for a chosen series."""
        entry = {"series_instance_uid": self.uid, "series_number": self.number, "description": self.description,
                 "slices": self.slices, "phase_guess": self.phase, "phase_by": self.phase_by, "reason": reason}
        if self.aorta_hu is not None:
            entry.update(aorta_hu=round(self.aorta_hu, 1),
                         vein_hu=None if self.vein_hu is None else round(self.vein_hu, 1))
        return entry


def _text(ds, keyword):
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _floats(ds, keyword, count):
    try:
        numbers = tuple(float(v) for v in ds.get(keyword))
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and np.isfinite(numbers).all() else None


def looks_like_dicom(path, name):
    """True for a file worth opening as DICOM: .dcm, or any other name carrying the DICM preamble."""
    lower = name.lower()
    if lower.endswith(".dcm"):
        return True
    if name.upper() == "DICOMDIR" or lower.endswith(_SKIPPED_SUFFIXES) or name.startswith("."):
        return False
    try:  # files named by UID, with or without dots, carry the DICOM preamble
        with open(path, "rb") as stream:
            stream.seek(128)
            return stream.read(4) == b"DICM"
    except OSError:
        return False


def scan(folder):
    """The image series under ``folder`` (searched recursively), in series-number order. Headers only."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = str(folder)
    by_uid: Dict[str, Series] = {}
    for where, subfolders, names in os.walk(folder):
        subfolders[:] = sorted(s for s in subfolders if not s.startswith("."))
        for name in sorted(names):
            path = os.path.join(where, name)
            if not looks_like_dicom(path, name):
                continue
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_SCAN_TAGS)
            except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError, AttributeError):
                continue  # not DICOM or unreadable: such a file is never part of a series we read
            uid = _text(ds, "SeriesInstanceUID")
            if not uid or not _text(ds, "Rows"):
                continue  # not an image (SR, presentation state, ...)
            series = by_uid.get(uid)
            if series is None:
                try:
                    frames = int(ds.get("NumberOfFrames") or 1)
                except (TypeError, ValueError):
                    frames = 1
                series = by_uid[uid] = Series(
                    uid=uid, number=_text(ds, "SeriesNumber"), description=_text(ds, "SeriesDescription"),
                    modality=_text(ds, "Modality").upper(), study_uid=_text(ds, "StudyInstanceUID"),
                    image_type=tuple(str(v).strip().upper() for v in (ds.get("ImageType") or ())),
                    orientation=_floats(ds, "ImageOrientationPatient", 6),
                    contrast_agent=_text(ds, "ContrastBolusAgent"), contrast_route=_text(ds, "ContrastBolusRoute"),
                    bolus_start=_text(ds, "ContrastBolusStartTime"),
                    acquisition_time=_text(ds, "AcquisitionTime") or _text(ds, "SeriesTime"), frames=frames)
            series.files.append((path, _floats(ds, "ImagePositionPatient", 3), _text(ds, "AcquisitionNumber")))
    found = list(by_uid.values())
    for series in found:
        _sort_slices(series)
        series.rejected = _rejection(series)
    return sorted(found, key=lambda s: (_number(s.number), s.description, s.uid))


def _number(text):
    try:
        return float(text)
    except ValueError:
        return float("inf")


def _normal(orientation):
    return np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))


def _sort_slices(series):
    if series.orientation is None or any(position is None for _, position, _ in series.files):
        series.files.sort()
        return
    normal = _normal(series.orientation)
    series.files.sort(key=lambda entry: float(np.dot(entry[1], normal)))


def _rejection(series):
    """Why a series is never chosen as a phase, or None."""
    if series.modality != "CT":
        return "modality {}".format(series.modality or "missing")
    flagged = [t for t in _REJECTED_IMAGE_TYPES if t in series.image_type]
    if flagged:
        return "ImageType {}".format("/".join(flagged))
    if series.frames > 1:
        return "multi-frame object"
    if series.orientation is None:
        return "no ImageOrientationPatient"
    if abs(_normal(series.orientation)[2]) < MIN_AXIAL_COSINE:
        return "not axial (reformat)"
    if series.slices < MIN_SLICES:
        return "only {} slice(s)".format(series.slices)
    if len({acquisition for _, _, acquisition in series.files}) > 1:
        return "holds {} acquisitions".format(len({a for _, _, a in series.files}))
    return None


# ---- phase from headers -----------------------------------------------------------------------------------


def _seconds(tm):
    """DICOM TM 'HHMMSS.frac' (or 'HH:MM:SS') -> seconds after midnight, None when absent or malformed."""
    match = re.fullmatch(r"(\d\d):?(\d\d)?:?(\d\d)?(\.\d+)?", tm.strip()) if tm else None
    if not match:
        return None
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups()[:3])
    return hours * 3600 + minutes * 60 + seconds + (float(match.group(4)) if match.group(4) else 0.0)


def phase_from_headers(series):
    """(phase, evidence) from description, bolus timing and contrast agent; (None, '') when silent."""
    described = phase_from_description(series.description)
    if described:
        return described, "series description"
    start, acquired = _seconds(series.bolus_start), _seconds(series.acquisition_time)
    if start is not None and acquired is not None:
        delay = acquired - start
        if delay < 0:
            return "native", "acquired {:.0f} s before the contrast bolus".format(-delay)
        phase = ("arterial" if delay < ARTERIAL_UNTIL_S else
                 "portal_venous" if delay < PORTAL_VENOUS_UNTIL_S else "delayed")
        return phase, "{:.0f} s after the contrast bolus start".format(delay)
    if re.search(r"\b(none|no|nil|without)\b", series.contrast_agent.lower()):
        return "native", "ContrastBolusAgent '{}'".format(series.contrast_agent)
    return None, ""


# ---- phase from the image: aorta vs veins -----------------------------------------------------------------


def measure_enhancement(image):
    """(aorta HU, vein HU) of an axial CT: median HU of the enhanced vessels found, None where none is found.

    Blood vessels are round, homogeneous blobs that keep their place from slice to slice (tubes); bone and
    bowel with oral contrast are bright too but heterogeneous. On sampled slices of the middle part of the
    volume, blobs above 130 HU are collected into tubes; the tube seen on most slices (the brightest among
    equals) is the aorta, the others are veins (cava, portal vein). Unenhanced blood is not above 130 HU, so
    a native scan has no tube at all.
    """
    size = image.GetSize()
    spacing = image.GetSpacing()
    low, high = int(size[2] * 0.2), max(int(size[2] * 0.8), int(size[2] * 0.2) + 1)
    ks = sorted(set(np.linspace(low, high - 1, min(_SAMPLED_SLICES, high - low)).astype(int)))
    radius = [max(1, int(round(1.5 / s))) for s in spacing[:2]]
    tubes = []  # [last (x, y), [mean HU per slice]]
    for k in ks:
        plane = sitk.Cast(image[:, :, int(k)], sitk.sitkFloat32)
        smooth = sitk.Median(plane, [1, 1])
        mask = sitk.BinaryMorphologicalOpening(sitk.BinaryThreshold(smooth, _ENHANCED_HU, 1200.0), radius)
        components = sitk.ConnectedComponent(mask)
        shape = sitk.LabelShapeStatisticsImageFilter()
        shape.Execute(components)
        intensity = sitk.LabelIntensityStatisticsImageFilter()
        intensity.Execute(components, plane)
        for label in shape.GetLabels():
            area = shape.GetPhysicalSize(label)
            if not (_VESSEL_AREA_MM2[0] <= area <= _VESSEL_AREA_MM2[1] and
                    shape.GetRoundness(label) >= _VESSEL_MIN_ROUNDNESS and
                    shape.GetElongation(label) <= _VESSEL_MAX_ELONGATION and
                    intensity.GetStandardDeviation(label) <= _VESSEL_MAX_SD_HU):
                continue
            centre = np.asarray(shape.GetCentroid(label)[:2])
            mean = intensity.GetMean(label)
            near = [t for t in tubes if np.linalg.norm(t[0] - centre) <= _TUBE_STEP_MM and t[2] != k]
            if near:
                tube = min(near, key=lambda t: np.linalg.norm(t[0] - centre))
                tube[0], tube[2] = centre, k
                tube[1].append(mean)
            else:
                tubes.append([centre, [mean], k])
    vessels = [t[1] for t in tubes if len(t[1]) >= 3]
    if not vessels:
        return None, None
    vessels.sort(key=lambda values: (len(values), float(np.median(values))), reverse=True)
    aorta = float(np.median(vessels[0]))
    others = [float(np.median(v)) for v in vessels[1:]]
    return aorta, (float(np.median(others)) if others else None)


def classify(series_list, read):
    """Fill phase/phase_by of every accepted series: headers first, the image (``read(series)``) where silent."""
    measured = {}
    for series in series_list:
        if series.rejected:
            continue
        series.phase, series.phase_by = phase_from_headers(series)
        if series.phase:
            continue
        try:
            aorta, vein = measure_enhancement(read(series))
        except InputError as exc:
            series.rejected = "unreadable ({})".format(exc.problem)
            continue
        series.aorta_hu, series.vein_hu = aorta, vein
        if aorta is None:
            series.phase, series.phase_by = "native", "no contrast-enhanced vessel found on the image"
        elif vein is None and aorta >= ARTERIAL_AORTA_ALONE_HU:
            series.phase, series.phase_by = "arterial", "aorta {:.0f} HU, no enhanced vein".format(aorta)
        else:
            measured[series.uid] = (aorta, vein)
    by_uid = {s.uid: s for s in series_list}
    for uid, phase in classify_by_enhancement(measured).items():
        series = by_uid[uid]
        aorta, vein = measured[uid]
        series.phase = phase
        series.phase_by = "enhancement: aorta {:.0f} HU, veins {} HU{}".format(
            aorta, "?" if vein is None else "{:.0f}".format(vein), "" if phase else " (inconclusive)")


# ---- choosing one series per phase ------------------------------------------------------------------------


def parse_choices(texts):
    """['portal_venous=1.2.3', ...] (the --series options) -> {phase: SeriesInstanceUID}."""
    choices = {}
    for text in texts or ():
        phase_text, sep, uid = str(text).partition("=")
        phase = phase_name(phase_text)
        if not sep or not uid.strip() or phase is None:
            raise InputError(None, "--series {!r}: give PHASE=SeriesInstanceUID with PHASE one of {}".format(
                text, ", ".join(PHASES)))
        if phase in choices:
            raise InputError(None, "--series names phase {} twice".format(phase))
        choices[phase] = uid.strip()
    return choices


@dataclass
class Selection:
    """The series chosen per phase (in the model's phase order) and why."""

    folder: str
    chosen: Dict[str, Series]
    reasons: Dict[str, str]
    candidates: List[Series]
    images: Dict[str, sitk.Image] = field(default_factory=dict)  # read while classifying; reused by the caller

    def record(self):
        return {phase: series.record(self.reasons[phase]) for phase, series in self.chosen.items()}


def _listing(candidates):
    return "; ".join(s.listing() for s in candidates)


def select(folder, phases, choices=None, read=None, series_list=None):
    """One series per phase in ``phases`` from the study under ``folder``.

    ``choices`` ({phase: SeriesInstanceUID}) overrides the automatic choice; ``read(series)`` returns the
    series as a SimpleITK image (needed only where headers do not tell the phase). InputError, one line
    listing every series, when a phase has no candidate or several.
    """
    choices = dict(choices or {})
    unknown = [p for p in choices if p not in phases]
    if unknown:
        raise InputError(None, "--series names phase(s) {} but the model takes {}".format(
            ", ".join(unknown), ", ".join(phases)))
    series_list = scan(folder) if series_list is None else series_list
    images = {}

    def read_once(series):
        if series.uid not in images:
            images[series.uid] = read(series)
        return images[series.uid]

    if not series_list:
        raise InputError(folder, "no DICOM image series found in this folder or its subfolders")
    single = len(series_list) == 1 and len(phases) == 1 and not choices
    if single:
        # one series: used as it is (a folder with one series always worked so), whatever its headers say
        series = series_list[0]
        series.phase, series.phase_by = phase_from_headers(series)
        return Selection(str(folder), {phases[0]: series}, {phases[0]: "the only series in the folder"},
                         series_list, images)
    if not all(phase in choices for phase in phases):  # every phase chosen by the user: nothing to tell
        classify(series_list, read_once)
    chosen, reasons = {}, {}
    by_uid = {s.uid: s for s in series_list}
    for phase in phases:
        if phase in choices:
            series = by_uid.get(choices[phase])
            if series is None:
                raise InputError(folder, "--series {}={}: no such series here; series: {}".format(
                    phase, choices[phase], _listing(series_list)))
            if series.rejected:
                raise InputError(folder, "--series {}={}: {} cannot be used ({})".format(
                    phase, choices[phase], series.describe(), series.rejected))
            chosen[phase], reasons[phase] = series, "chosen with --series"
            continue
        options = [s for s in series_list if not s.rejected and s.phase == phase and s not in chosen.values()]
        hint = "choose with --series {}=SeriesInstanceUID".format(phase)
        if not options:
            raise InputError(folder, "no {} series found; {}; series: {}".format(phase, hint, _listing(series_list)))
        if len(options) > 1:
            raise InputError(folder, "{} series could be the {} phase; {}; series: {}".format(
                len(options), phase, hint, _listing(series_list)))
        series = options[0]
        chosen[phase] = series
        reasons[phase] = "the only {} series ({}); {} other series rejected or another phase".format(
            phase, series.phase_by, len(series_list) - 1)
    kept = {s.uid for s in chosen.values()}
    return Selection(str(folder), chosen, reasons, series_list,
                     {uid: image for uid, image in images.items() if uid in kept})


# ---- the predict command's door ---------------------------------------------------------------------------


@dataclass
class StudyInputs:
    """What `predict STUDY_DIR` reads: one image per phase (model order), and what it came from."""

    images: List[sitk.Image]
    warnings: List[str]
    selection: Selection

    @property
    def source_files(self):
        """Slice files per phase, in ITK's order (the DICOM outputs reference them)."""
        return {phase: series.paths for phase, series in self.selection.chosen.items()}

    def record(self):
        return self.selection.record()


def open_study(inputs, phases, series_options=None):
    """Read ``inputs`` as a study when it is one folder; None when the caller should read it as before.

    None for several inputs (one file or folder per phase) and for a folder without DICOM images (the image
    reader then reports the usual problem).
    """
    from . import image_io

    choices = parse_choices(series_options)
    if len(inputs) != 1 or not os.path.isdir(str(inputs[0])):
        if choices:
            raise InputError(None, "--series picks series from one study folder; give a single folder as INPUT")
        return None
    folder = str(inputs[0])
    found = scan(folder)
    if not found:
        if choices:
            raise InputError(folder, "--series given but no DICOM image series found here")
        return None

    def read(series):
        return image_io.read_dicom_series(folder, series.paths)[0]

    selection = select(folder, list(phases), choices, read, found)
    images, warnings = [], []
    for phase in phases:
        series = selection.chosen[phase]
        if series.uid in selection.images:
            images.append(selection.images.pop(series.uid))
        elif len(found) == 1 and [os.path.normpath(f) for f in series.folders] == [os.path.normpath(folder)]:
            # the folder holds just this series: read it exactly as a series folder always was
            image, read_warnings = image_io.read_image(folder)
            images.append(image)
            warnings += read_warnings
        else:
            images.append(read(series))
    return StudyInputs(images, warnings, selection)
