"""DICOM study folders built at test time from the real HCC_048 series (nothing is committed).

Every series gets new UIDs (one new study, one frame of reference):
- the real slices as they are (portal venous; the description names no phase, so only the image tells);
- an arterial-like copy: the aorta +150 HU, other enhanced tissue -70 HU, description 'LIVER ARTERIAL',
  acquired 30 s after ContrastBolusStartTime;
- a scout (2 slices, ImageType LOCALIZER), a coronal reformat (20 slices) and a derived series (15 slices).
"""

import os
from pathlib import Path

import numpy as np

# The aorta of HCC_048 (found on the images: a round 170-310 mm^2, ~200 HU tube), as a line in LPS mm
AORTA_FROM = np.array([10.0, -10.0, -316.0])
AORTA_TO = np.array([35.0, 37.0, -176.0])
AORTA_RADIUS_MM = 12.0


def source_files(source):
    return sorted(str(p) for p in Path(source).glob("*.dcm"))


def _save(ds, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        ds.save_as(path, enforce_file_format=True)  # pydicom >= 3
    except TypeError:
        ds.save_as(path, write_like_original=False)


def arterial_hu(ds, hu):
    """An arterial-looking slice: aorta brighter, veins, liver and kidneys darker."""
    z = float(ds.ImagePositionPatient[2])
    out = hu.astype(np.float32)
    brighter = np.zeros(hu.shape, bool)
    if AORTA_FROM[2] - 15 <= z <= AORTA_TO[2] + 5:
        t = (z - AORTA_FROM[2]) / (AORTA_TO[2] - AORTA_FROM[2])
        cx, cy = (AORTA_FROM + t * (AORTA_TO - AORTA_FROM))[:2]
        x0, y0 = float(ds.ImagePositionPatient[0]), float(ds.ImagePositionPatient[1])
        dy, dx = (float(v) for v in ds.PixelSpacing)
        rows, cols = np.ogrid[:hu.shape[0], :hu.shape[1]]
        inside = (x0 + cols * dx - cx) ** 2 + (y0 + rows * dy - cy) ** 2 <= AORTA_RADIUS_MM ** 2
        brighter = inside & (hu > 130)
    dimmer = ~brighter & (hu >= 100) & (hu <= 300)
    out[brighter] += 150
    out[dimmer] -= 70
    return out


def write_series(files, folder, study_uid, frame_uid, number, description, hu_change=None, **headers):
    """Copy ``files`` into ``folder`` as a new series; returns its SeriesInstanceUID."""
    import pydicom
    from pydicom.uid import generate_uid

    series_uid = generate_uid()
    for index, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesNumber, ds.SeriesDescription = number, description
        for keyword, value in headers.items():
            setattr(ds, keyword, value)
        if hu_change is not None:
            slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
            hu = ds.pixel_array.astype(np.float32) * slope + intercept
            stored = np.rint((hu_change(ds, hu) - intercept) / slope)
            ds.PixelData = np.clip(stored, -32768, 32767).astype("<i2").tobytes()
        _save(ds, os.path.join(folder, "IM{:04d}.dcm".format(index + 1)))
    return series_uid


def build_study(root, source, ambiguous=False):
    """A study folder (series in subfolders); returns {'folder', 'uids': {name: SeriesInstanceUID}}."""
    from pydicom.uid import generate_uid

    files = source_files(source)
    root = Path(root)
    study, frame = generate_uid(), generate_uid()
    uids = {"portal_venous": write_series(files, root / "s6", study, frame, 6, "Recon 3: LIVER 2 PHASE (C/A/P)")}
    if ambiguous:
        uids["portal_venous_copy"] = write_series(files, root / "s7", study, frame, 7, "Recon 4: LIVER (C/A/P)")
    else:
        uids["arterial"] = write_series(files, root / "s4", study, frame, 4, "LIVER ARTERIAL", arterial_hu,
                                        ContrastBolusStartTime="101000", AcquisitionTime="101030")
    uids["scout"] = write_series(files[40:42], root / "s1", study, frame, 1, "SCOUT",
                                 ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    uids["reformat"] = write_series(files[10:30], root / "s8", study, frame, 8, "COR 3mm",
                                    ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    uids["derived"] = write_series(files[20:35], root / "s9", study, frame, 9, "Recon 3 processed",
                                   ImageType=["DERIVED", "SECONDARY", "AXIAL"])
    return {"folder": root, "uids": uids, "study_uid": study}
