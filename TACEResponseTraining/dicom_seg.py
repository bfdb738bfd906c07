"""DICOM for the importers: index a download by its headers, read one CT acquisition, turn a DICOM-SEG into
a label map on that CT's own voxel grid.

Folder and file names are never trusted (they differ between NBIA Data Retriever versions); everything is
found from the headers. A series may hold two acquisitions (two contrast phases) at the same slice
positions, so a CT volume is one (series, acquisition number) pair, never a folder.
"""

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from TACEResponseLib.dicom_study import looks_like_dicom
from TACEResponseLib.errors import InputError

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
# headers needed to index a file; reading only these keeps a scan of thousands of files fast
_INDEX_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "Modality", "PatientID", "StudyInstanceUID", "SeriesInstanceUID",
    "SeriesNumber", "SeriesDescription", "StudyDate", "StudyDescription", "AcquisitionNumber", "InstanceNumber",
    "ImageType", "ImagePositionPatient", "ImageOrientationPatient", "Rows", "Columns", "PixelSpacing",
    "FrameOfReferenceUID", "NumberOfFrames",
]
_POSITION_ATOL_MM = 0.01
_GRID_TOL_VOXEL = 0.05  # a SEG frame must sit this close to a CT voxel position (fraction of a voxel)

LIVER_CODES = {"10200004"}  # SNOMED CT liver
TUMOR_CODES = {"4147007", "108369006", "86049000", "25370001"}  # mass, neoplasm, malignant neoplasm, HCC
TUMOR_WORDS = ("mass", "tumor", "tumour", "lesion", "neoplasm", "hcc", "carcinoma", "cancer", "nodule")


@dataclass
class DicomFile:
    """What the index keeps of one file (headers only)."""

    path: str
    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class: str
    modality: str
    series_number: str
    series_description: str
    study_date: str
    acquisition: str
    instance: Optional[int]
    image_type: Tuple[str, ...]
    position: Optional[Tuple[float, float, float]]
    orientation: Optional[Tuple[float, ...]]
    rows: int
    columns: int
    spacing: Optional[Tuple[float, float]]
    frame_of_reference: str
    frames: int

    @property
    def is_seg(self):
        return self.sop_class == SEG_SOP_CLASS or self.modality == "SEG"

    @property
    def is_ct_slice(self):
        return (self.modality == "CT" and self.position is not None and self.orientation is not None
                and self.frames <= 1 and "LOCALIZER" not in self.image_type)


def _text(ds, keyword):
    value = ds.get(keyword)
    if value is None:
        return ""
    return str(value).strip()


def _floats(ds, keyword, count):
    value = ds.get(keyword)
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not np.isfinite(numbers).all():
        return None
    return numbers


def _int(ds, keyword, default=None):
    try:
        return int(ds.get(keyword))
    except (TypeError, ValueError):
        return default


def index_folder(root):
    """All DICOM files under ``root`` (recursively): (list of DicomFile, list of (path, problem))."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    root = str(root)
    if not os.path.isdir(root):
        raise InputError(root, "is not a folder")
    files, problems = [], []
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            if not looks_like_dicom(path, name):
                continue
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_INDEX_TAGS)
            except InvalidDicomError:
                problems.append((path, "not a DICOM file (no DICOM header); ignored"))
                continue
            except (OSError, EOFError, ValueError, TypeError, KeyError) as exc:
                problems.append((path, "unreadable DICOM file ({}); ignored".format(
                    (str(exc).splitlines() or [type(exc).__name__])[0][:120])))
                continue
            if not _text(ds, "SOPInstanceUID") or not _text(ds, "SeriesInstanceUID"):
                problems.append((path, "DICOM file without SOP or series instance UID"))
                continue
            spacing = _floats(ds, "PixelSpacing", 2)
            files.append(DicomFile(
                path=path, patient_id=_text(ds, "PatientID"), study_uid=_text(ds, "StudyInstanceUID"),
                series_uid=_text(ds, "SeriesInstanceUID"), sop_uid=_text(ds, "SOPInstanceUID"),
                sop_class=_text(ds, "SOPClassUID"), modality=_text(ds, "Modality").upper(),
                series_number=_text(ds, "SeriesNumber"), series_description=_text(ds, "SeriesDescription"),
                study_date=_text(ds, "StudyDate"), acquisition=_text(ds, "AcquisitionNumber"),
                instance=_int(ds, "InstanceNumber"),
                image_type=tuple(str(v).upper() for v in (ds.get("ImageType") or ())),
                position=_floats(ds, "ImagePositionPatient", 3), orientation=_floats(ds, "ImageOrientationPatient", 6),
                rows=_int(ds, "Rows", 0), columns=_int(ds, "Columns", 0), spacing=spacing,
                frame_of_reference=_text(ds, "FrameOfReferenceUID"), frames=_int(ds, "NumberOfFrames", 1) or 1))
    return files, problems


# ---- one CT acquisition -----------------------------------------------------------------------------------


@dataclass
class Acquisition:
    """The slices of one (series, acquisition number): one CT volume."""

    files: List[DicomFile]

    @property
    def first(self):
        return self.files[0]

    @property
    def key(self):
        return (self.first.series_uid, self.first.acquisition)

    @property
    def folder(self):
        return os.path.dirname(self.first.path)

    def describe(self):
        return "series {} '{}' acquisition {} ({} slices, {})".format(
            self.first.series_number or "?", self.first.series_description, self.first.acquisition or "-",
            len(self.files), self.folder)


def acquisitions(files):
    """Group CT slices by (series UID, acquisition number), in a stable order."""
    groups: Dict[Tuple[str, str], List[DicomFile]] = {}
    for f in files:
        if f.is_ct_slice:
            groups.setdefault((f.series_uid, f.acquisition), []).append(f)
    return [Acquisition(groups[key]) for key in sorted(groups, key=lambda k: (groups[k][0].path, k))]


@dataclass
class CtVolume:
    image: sitk.Image
    sop_uids: List[str]  # per slice, in the image's slice order
    acquisition: Acquisition
    cache: Dict[str, object] = field(default_factory=dict)


def _normal(orientation):
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    return np.cross(row, col)


def read_ct(acq):
    """Read one acquisition with SimpleITK, slices sorted along the slice normal (ITK's own convention).

    Checks what ITK does not: one orientation and matrix for all slices, no duplicate or missing slices, and
    that the volume ITK assembled puts every slice where its header says (so SEG frames map exactly).
    """
    where = acq.folder
    files = acq.files
    if len(files) < 2:
        raise InputError(where, "{}: a single slice is not a CT volume".format(acq.describe()))
    first = files[0]
    for f in files:
        if not np.allclose(f.orientation, first.orientation, atol=1e-4):
            raise InputError(where, "{}: slices with different orientations".format(acq.describe()))
        if (f.rows, f.columns) != (first.rows, first.columns) or (
                f.spacing and first.spacing and not np.allclose(f.spacing, first.spacing, atol=1e-4)):
            raise InputError(where, "{}: slices with different matrix sizes or pixel spacings".format(acq.describe()))
    normal = _normal(first.orientation)
    depth = np.array([np.dot(f.position, normal) for f in files])
    order = np.argsort(depth, kind="stable")
    files = [files[i] for i in order]
    gaps = np.diff(depth[order])
    if gaps.min() < 1e-3:
        raise InputError(where, "{}: {} slice(s) at duplicate positions (two acquisitions with the same acquisition "
                                "number?)".format(acq.describe(), int((gaps < 1e-3).sum())))
    median = float(np.median(gaps))
    if gaps.max() - gaps.min() > max(0.05, 0.1 * median):
        raise InputError(where, "{}: uneven slice spacing ({:.2f} to {:.2f} mm): missing or extra slices?".format(
            acq.describe(), gaps.min(), gaps.max()))
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([f.path for f in files])
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise InputError(where, "{}: cannot read the slices ({})".format(
            acq.describe(), (lines[-1] if lines else "read error")[:200])) from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1 or image.GetSize()[2] != len(files):
        raise InputError(where, "{}: not a scalar 3D volume after reading".format(acq.describe()))
    for k in (0, len(files) - 1):
        placed = np.asarray(image.TransformIndexToPhysicalPoint((0, 0, k)))
        if not np.allclose(placed, files[k].position, atol=_POSITION_ATOL_MM + 1e-3 * abs(median)):
            raise InputError(where, "{}: slice {} is not where its header places it (tilted or irregular "
                                    "series?)".format(acq.describe(), k))
    image = _as_int16_if_exact(image)
    return CtVolume(image, [f.sop_uid for f in files], Acquisition(files))


def _as_int16_if_exact(image):
    """HU fit int16; store them so (ITK widens rescaled data to 32 bits or float)."""
    if image.GetPixelID() == sitk.sitkInt16:
        return image
    array = sitk.GetArrayViewFromImage(image)
    if array.size and array.min() >= -32768 and array.max() <= 32767 and (
            array.dtype.kind in "iu" or np.array_equal(array, np.round(array))):
        return sitk.Cast(image, sitk.sitkInt16)
    return image


# ---- DICOM-SEG --------------------------------------------------------------------------------------------


def read_seg(path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path))
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise InputError(path, "cannot read DICOM-SEG ({})".format(str(exc).splitlines()[0][:150])) from None


def referenced_series(seg):
    """(series UIDs from ReferencedSeriesSequence, per-frame referenced SOP instance UIDs)."""
    series = []
    for item in seg.get("ReferencedSeriesSequence") or ():
        uid = str(item.get("SeriesInstanceUID", "")).strip()
        if uid and uid not in series:
            series.append(uid)
    instances = set()
    for fg in seg.get("PerFrameFunctionalGroupsSequence") or ():
        uid = _frame_source_uid(fg)
        if uid:
            instances.add(uid)
    if not instances:  # some writers list the instances only at series level
        for item in seg.get("ReferencedSeriesSequence") or ():
            for inst in item.get("ReferencedInstanceSequence") or ():
                uid = str(inst.get("ReferencedSOPInstanceUID", "")).strip()
                if uid:
                    instances.add(uid)
    return series, instances


def _frame_source_uid(fg):
    for derivation in fg.get("DerivationImageSequence") or ():
        for source in derivation.get("SourceImageSequence") or ():
            uid = str(source.get("ReferencedSOPInstanceUID", "")).strip()
            if uid:
                return uid
    return None


def _functional(fg, shared, name):
    """A functional group macro from the frame's group, else from the shared group."""
    for group in (fg, shared):
        if group is not None and name in group and len(group[name].value):
            return group[name].value[0]
    return None


def segment_roles(seg):
    """{segment number: 'liver' | 'tumor' | None} from labels and SNOMED codes, and the labels by number."""
    roles, labels = {}, {}
    for item in seg.get("SegmentSequence") or ():
        number = int(item.SegmentNumber)
        label = str(item.get("SegmentLabel", "")).strip()
        labels[number] = label
        codes, meanings = set(), []
        for code in item.get("SegmentedPropertyTypeCodeSequence") or ():
            codes.add(str(code.get("CodeValue", "")).strip())
            meanings.append(str(code.get("CodeMeaning", "")).strip().lower())
        words = " ".join([label.lower()] + meanings)
        if any(w in words for w in TUMOR_WORDS) or codes & TUMOR_CODES:
            roles[number] = "tumor"
        elif label.lower() == "liver" or codes & LIVER_CODES or "liver" in meanings:
            roles[number] = "liver"
        elif "aorta" in words:
            roles[number] = "aorta"
        elif "portal" in words:
            roles[number] = "portal_vein"
        else:
            roles[number] = None
    return roles, labels


def _frame_masks(seg, path):
    """Frames as boolean (n, rows, cols); fractional SEGs are thresholded at half the maximum."""
    try:
        pixels = seg.pixel_array
    except Exception as exc:  # pydicom raises many types for bad or undecodable pixel data
        raise InputError(path, "cannot decode the SEG pixel data ({})".format(str(exc).splitlines()[0][:150])) \
            from None
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[None]
    if str(seg.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL":
        return pixels > float(seg.get("MaximumFractionalValue", 255)) / 2.0
    return pixels > 0


def seg_to_labels(seg, ct, path):
    """Label map (uint8, CT array order z, y, x): 1 liver, 2 tumor (tumor wins where segments overlap).

    Frames are placed by their Plane Position on the CT grid (exact: frames must sit on CT voxels), checked
    against the CT slice each frame says it was derived from. Returns (labels, other masks, info), where
    other masks holds the aorta and portal vein masks (boolean, same shape) when the SEG has them.
    """
    image = ct.image
    size = image.GetSize()  # x, y, z
    shape = (size[2], size[1], size[0])
    roles, seg_labels = segment_roles(seg)
    if "liver" not in roles.values():
        raise InputError(path, "no liver segment (segments: {})".format(
            ", ".join("{} '{}'".format(n, l) for n, l in sorted(seg_labels.items())) or "none"))
    frames = seg.get("PerFrameFunctionalGroupsSequence")
    if not frames:
        raise InputError(path, "SEG without per-frame functional groups")
    shared = seg.SharedFunctionalGroupsSequence[0] if seg.get("SharedFunctionalGroupsSequence") else None
    masks = _frame_masks(seg, path)
    if masks.shape[0] != len(frames):
        raise InputError(path, "SEG has {} frames of pixel data but {} frame descriptions".format(
            masks.shape[0], len(frames)))
    rows, cols = masks.shape[1:]
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing())
    seg_orientation = _functional(None, shared, "PlaneOrientationSequence")
    seg_measures = _functional(None, shared, "PixelMeasuresSequence")
    slice_of_uid = {uid: k for k, uid in enumerate(ct.sop_uids)}
    out = {"liver": np.zeros(shape, bool), "tumor": np.zeros(shape, bool), "aorta": None, "portal_vein": None}
    placed = mismatched = 0
    for i, fg in enumerate(frames):
        ident = _functional(fg, shared, "SegmentIdentificationSequence")
        if ident is None:
            raise InputError(path, "frame {} names no segment".format(i + 1))
        role = roles.get(int(ident.ReferencedSegmentNumber))
        if role is None or not masks[i].any():
            continue
        orientation = _functional(fg, None, "PlaneOrientationSequence") or seg_orientation
        measures = _functional(fg, None, "PixelMeasuresSequence") or seg_measures
        if orientation is not None and not np.allclose(
                np.asarray(orientation.ImageOrientationPatient, float), direction[:, :2].T.ravel(), atol=1e-3):
            raise InputError(path, "SEG frames are oriented differently from the CT they reference")
        if measures is not None and not np.allclose(
                np.asarray(measures.PixelSpacing, float)[::-1], spacing[:2], atol=1e-3):
            raise InputError(path, "SEG pixel spacing differs from the CT's")
        position = _functional(fg, None, "PlanePositionSequence")
        source_uid = _frame_source_uid(fg)
        if position is not None:
            index = np.asarray(image.TransformPhysicalPointToContinuousIndex(
                [float(v) for v in position.ImagePositionPatient]))
            nearest = np.round(index)
            if np.abs(index - nearest).max() > _GRID_TOL_VOXEL:
                raise InputError(path, "frame {} does not lie on the CT's voxel grid (at CT index {})".format(
                    i + 1, np.round(index, 2).tolist()))
            x0, y0, k = (int(v) for v in nearest)
            if source_uid in slice_of_uid and slice_of_uid[source_uid] != k:
                mismatched += 1
        elif source_uid in slice_of_uid:
            if (rows, cols) != (size[1], size[0]):
                raise InputError(path, "SEG frames have no position and a matrix other than the CT's")
            x0, y0, k = 0, 0, slice_of_uid[source_uid]
        else:
            raise InputError(path, "frame {} has neither a plane position nor a reference to a slice of the "
                                   "CT".format(i + 1))
        if not (0 <= k < shape[0]) or x0 < 0 or y0 < 0 or x0 + cols > shape[2] or y0 + rows > shape[1]:
            raise InputError(path, "frame {} lies outside the referenced CT".format(i + 1))
        if out[role] is None:
            out[role] = np.zeros(shape, bool)
        out[role][k, y0:y0 + rows, x0:x0 + cols] |= masks[i]
        placed += 1
    if mismatched:
        raise InputError(path, "{} frame(s) sit on a different CT slice than the one they reference".format(
            mismatched))
    labels = np.zeros(shape, np.uint8)
    labels[out["liver"]] = 1
    labels[out["tumor"]] = 2
    info = {"segments": {str(n): {"label": seg_labels[n], "role": roles[n]} for n in sorted(seg_labels)},
            "frames_placed": placed, "liver_voxels": int(out["liver"].sum()), "tumor_voxels": int(out["tumor"].sum()),
            "liver_tumor_overlap_voxels": int((out["liver"] & out["tumor"]).sum())}
    return labels, {"aorta": out["aorta"], "portal_vein": out["portal_vein"]}, info


def labels_image(labels, ct_image):
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(ct_image)
    return image
