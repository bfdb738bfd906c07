"""A small HCC-TACE-Seg download built at test time from the real HCC_048 series (no DICOM is committed).

Layout as the NBIA Data Retriever writes it:
manifest-<n>/HCC-TACE-Seg/<PatientID>/<MM-DD-YYYY>-<StudyID|NA>-<StudyDescription>-<5>/<SeriesNumber %.6f>-
<SeriesDescription>-<5>/<acquisition>-<instance>.dcm, plus a metadata.csv the importer must not need.

- HCC_048: series 6 holds two acquisitions at the same positions: 2 = the real slices (portal venous, the SEG's
  reference) and 1 = a synthetic arterial copy (+10 HU). Series 3 "PRE LIVER" is a native copy at every second
  slice (5 mm, so it is resampled). The SEG (series 300) has Liver, Mass, Portal vein, Abdominal aorta with
  known masks (Mass overlaps Liver); aorta and portal vein HU are set per phase so enhancement tells the
  series-6 acquisitions apart. Its source images are listed in instance order, which runs against the slice
  position order.
- HCC_051: 20 slices, description "PORTAL VENOUS", SEG with Mass = segment 1 and Liver = segment 2 and no
  per-frame source references (frames placed by position only).
- HCC_050: 5 slices and a file that is not DICOM; no SEG.
- HCC_099: only in the spreadsheet.
"""

import copy
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

PV = {"aorta": 190, "portal_vein": 185}
ARTERIAL = {"aorta": 330, "portal_vein": 120, "offset": 10}
NATIVE = {"aorta": 45, "portal_vein": 45, "offset": -20}

CLINICAL_COLUMNS = [
    "TCIA_ID", "1_mRECIST", "2_mRECIST", "3_mRECIST", "1_mRECIST_BL", "1_mRECIST_FU", "1_RECIST", "1_EASL", "TTP",
    "Censored_0_progressed_1", "OS", "Death_1_StillAliveorLostToFU_0", "AFP", "AFP_group", "BCLC", "CPS",
    "tumor_nodul", "T_involvment", "Portal Vein Thrombosis", "Vascular invasion", "CLIP_Score", "Okuda", "TNM",
    "age", "Sex", "hepatitis", "chemotherapy",
]
CLINICAL_ROWS = [
    # reader 1 empty, reader 2 PR, reader 3 SD: majority is a tie (unknown); reader 2 -> 1, reader 3 -> 0
    ["HCC_048", None, 2, 3, 45.5, 20.1, 3, 2, 30.5, 1, 101.0, 1, 1234, ">400", "Stage-B", "A", "multi",
     "< or = 50%", 0, 1, 2, 1, 2, 63.0, "M", "HCV", "NA"],
    ["HCC_050", 4, 4, 3, None, None, 4, 4, 10, 1, 20, 0, 5.5, "<400", "Stage-C", "B", "solitary", ">50%", 1, 1,
     3, 2, 3, 70, "F", "HBV", "cisplatin"],
    # readers CR, PD, PR: majority responder; reader 2 -> 0
    ["HCC_051", 1, 4, 2, None, None, 1, 1, 12, 0, 80.25, 0, "NA", "NA", "Stage-A", "A", "solitary",
     "< or = 50%", 0, 0, 0, 1, 1, 58, "F", "NA", "doxorubicin"],
    ["HCC_099", 2, 2, 2, None, None, 2, 2, 40, 1, 60, 1, 10, "<400", "Stage-B", "A", "multi", "< or = 50%", 0,
     0, 1, 1, 2, 66, "M", "HCV", "NA"],
]


def _masks(shape):
    """Known synthetic masks on the CT grid, array order (z, y, x)."""
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    liver = ((z - 40) / 20.0) ** 2 + ((y - 230) / 70.0) ** 2 + ((x - 170) / 80.0) ** 2 <= 1
    mass = ((z - 48) / 6.0) ** 2 + ((y - 240) / 25.0) ** 2 + ((x - 235) / 25.0) ** 2 <= 1  # crosses the liver edge
    portal = ((y - 260) ** 2 + (x - 255) ** 2 <= 7 ** 2) & (z >= 34) & (z <= 54)
    aorta = ((y - 300) ** 2 + (x - 305) ** 2 <= 12 ** 2) & (z >= 20) & (z <= 70)
    return {"liver": np.broadcast_to(liver, shape), "mass": np.broadcast_to(mass, shape),
            "portal_vein": np.broadcast_to(portal, shape), "aorta": np.broadcast_to(aorta, shape)}


def expected_labels(masks):
    labels = np.zeros(masks["liver"].shape, np.uint8)
    labels[masks["liver"]] = 1
    labels[masks["mass"]] = 2
    return labels


def _stored(ds, hu):
    """HU -> stored pixel values of this file."""
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    return np.rint((hu - intercept) / slope).astype(np.int16)


def _write(ds, path, hu):
    ds.PixelData = _stored(ds, hu).astype("<i2").tobytes()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        ds.save_as(path, enforce_file_format=True)  # pydicom >= 3
    except TypeError:
        ds.save_as(path, write_like_original=False)


def _new_instance(ds, uid):
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid


def _set_vessels(hu, masks, k, values):
    hu[masks["aorta"][k]] = values["aorta"]
    hu[masks["portal_vein"][k]] = values["portal_vein"]
    return hu


def _seg(source, pixel_array, segments, series_uid, study_date):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    property_codes = {"Liver": (codes.SCT.Organ, codes.SCT.Liver),
                      "Mass": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Mass),
                      "Portal vein": (codes.SCT.AnatomicalStructure, codes.SCT.PortalVein),
                      "Abdominal aorta": (codes.SCT.AnatomicalStructure, codes.SCT.AbdominalAorta)}
    descriptions = [hd.seg.SegmentDescription(
        segment_number=i + 1, segment_label=name, segmented_property_category=property_codes[name][0],
        segmented_property_type=property_codes[name][1], algorithm_type="MANUAL") for i, name in enumerate(segments)]
    return hd.seg.Segmentation(
        source_images=source, pixel_array=pixel_array, segmentation_type="BINARY",
        segment_descriptions=descriptions, series_instance_uid=series_uid, series_number=300,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="test", manufacturer_model_name="fixture",
        software_versions="1", device_serial_number="1", series_description="Segmentation")


def build(root, source_dir):
    """Write the download under ``root``; returns paths and what the importer must produce."""
    import pydicom
    from pydicom.uid import generate_uid

    root = Path(root)
    collection = root / "manifest-1700000000000" / "HCC-TACE-Seg"
    paths = sorted(Path(source_dir).glob("*.dcm"))
    datasets = [pydicom.dcmread(str(p)) for p in paths]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(source_dir)))
    ct = reader.Execute()  # the CT grid (slices in ITK's order), the reference for every expectation
    size = ct.GetSize()
    shape = (size[2], size[1], size[0])
    masks = _masks(shape)
    # slice index on the CT grid of every source file, from its own position (independent of the importer)
    slice_of = [int(round(ct.TransformPhysicalPointToContinuousIndex([float(v) for v in ds.ImagePositionPatient])[2]))
                for ds in datasets]
    assert sorted(slice_of) == list(range(shape[0]))
    by_instance = sorted(range(len(datasets)), key=lambda i: int(datasets[i].InstanceNumber))
    assert slice_of[by_instance[0]] > slice_of[by_instance[-1]], "instance order should run against position"

    original = np.zeros(shape, np.float64)
    for ds, k in zip(datasets, slice_of):
        original[k] = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    volumes = {"portal_venous": original.copy(), "arterial": original + ARTERIAL["offset"],
               "native": original + NATIVE["offset"]}
    for k in range(shape[0]):
        _set_vessels(volumes["portal_venous"][k], masks, k, PV)
        _set_vessels(volumes["arterial"][k], masks, k, ARTERIAL)
        _set_vessels(volumes["native"][k], masks, k, NATIVE)

    # ---- HCC_048 ----
    study = datasets[0]
    study_folder = collection / "HCC_048" / "08-12-2001-NA-CT CAP LIVER PR-{}".format(study.StudyInstanceUID[-5:])
    series6 = study_folder / "6.000000-Recon 3 LIVER 2 PHASE CAP-{}".format(study.SeriesInstanceUID[-5:])
    reference = []
    for n, i in enumerate(by_instance, 1):
        ds = datasets[i]
        ds.PatientID, ds.PatientName = "HCC_048", "HCC_048^"
        k = slice_of[i]
        pv = copy.deepcopy(ds)
        _write(pv, str(series6 / "2-{:02d}.dcm".format(n)), volumes["portal_venous"][k])
        reference.append(pv)
        art = copy.deepcopy(ds)
        art.AcquisitionNumber = 1
        _new_instance(art, generate_uid())
        _write(art, str(series6 / "1-{:02d}.dcm".format(n)), volumes["arterial"][k])
    native_series = generate_uid()
    native_folder = study_folder / "3.000000-PRE LIVER-{}".format(native_series[-5:])
    native_slices = [i for i in by_instance if slice_of[i] % 2 == 0]
    for n, i in enumerate(native_slices, 1):
        ds = copy.deepcopy(datasets[i])
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = native_series, 3, "PRE LIVER"
        ds.AcquisitionNumber = 1
        _new_instance(ds, generate_uid())
        _write(ds, str(native_folder / "1-{:02d}.dcm".format(n)), volumes["native"][slice_of[i]])
    segments = ["Liver", "Mass", "Portal vein", "Abdominal aorta"]
    pixels = np.stack([np.stack([masks[name][slice_of[i]] for name in ("liver", "mass", "portal_vein", "aorta")],
                                axis=-1) for i in by_instance]).astype(np.uint8)
    seg_series = generate_uid()
    seg = _seg(reference, pixels, segments, seg_series, study.StudyDate)
    seg_path = study_folder / "300.000000-Segmentation-{}".format(seg_series[-5:]) / "1-1.dcm"
    seg_path.parent.mkdir(parents=True)
    seg.save_as(str(seg_path))

    # ---- HCC_051: 20 slices, its own study; SEG placed by plane positions only ----
    lo, hi = 30, 50
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    folder51 = collection / "HCC_051" / "03-02-2003-NA-CT ABDOMEN-{}".format(study_uid[-5:])
    series51 = folder51 / "2.000000-PORTAL VENOUS-{}".format(series_uid[-5:])
    chosen = [i for i in by_instance if lo <= slice_of[i] < hi]
    sources51 = []
    for n, i in enumerate(chosen, 1):
        ds = copy.deepcopy(datasets[i])
        ds.PatientID, ds.PatientName = "HCC_051", "HCC_051^"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.SeriesDescription, ds.SeriesNumber, ds.StudyDate = "PORTAL VENOUS", 2, "20030203"
        _new_instance(ds, generate_uid())
        _write(ds, str(series51 / "1-{:02d}.dcm".format(n)), volumes["portal_venous"][slice_of[i]])
        sources51.append(ds)
    pixels51 = np.stack([np.stack([masks["mass"][slice_of[i]], masks["liver"][slice_of[i]]], axis=-1)
                         for i in chosen]).astype(np.uint8)
    seg51_series = generate_uid()
    seg51 = _seg(sources51, pixels51, ["Mass", "Liver"], seg51_series, "20030203")
    for fg in seg51.PerFrameFunctionalGroupsSequence:
        del fg.DerivationImageSequence
    for item in seg51.ReferencedSeriesSequence:
        del item.ReferencedInstanceSequence
    seg51_path = folder51 / "300.000000-Segmentation-{}".format(seg51_series[-5:]) / "1-1.dcm"
    seg51_path.parent.mkdir(parents=True)
    seg51.save_as(str(seg51_path))

    # ---- HCC_050: CT without a SEG, and a broken file ----
    study_uid, series_uid = generate_uid(), generate_uid()
    series50 = (collection / "HCC_050" / "01-01-2002-NA-CT LIVER-{}".format(study_uid[-5:])
                / "2.000000-ABD-{}".format(series_uid[-5:]))
    for n, i in enumerate(by_instance[:5], 1):
        ds = copy.deepcopy(datasets[i])
        ds.PatientID, ds.PatientName = "HCC_050", "HCC_050^"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        _new_instance(ds, generate_uid())
        _write(ds, str(series50 / "1-{:02d}.dcm".format(n)), original[slice_of[i]])
    (series50 / "1-06.dcm").write_bytes(b"this is not a DICOM file")
    (collection.parent / "metadata.csv").write_text("Series UID,Collection,3rd Party Analysis\nx,HCC-TACE-Seg,NO\n")

    clinical = root / "HCC-TACE-Seg_clinical_data-V2.xlsx"
    write_clinical(clinical)

    sub = ct[:, :, lo:hi]
    return {
        "tcia_dir": collection.parent, "clinical": clinical, "ct": ct, "masks": masks,
        "labels_048": expected_labels(masks), "volumes": volumes,
        "labels_051": expected_labels({k: v[lo:hi] for k, v in masks.items()}), "ct_051": sub,
        "seg_048": seg_path, "seg_051": seg51_path,
    }


def write_clinical(path):
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "data table"
    sheet.append(CLINICAL_COLUMNS)
    for row in CLINICAL_ROWS:
        sheet.append(row)
    notes = book.create_sheet("key")
    notes.append(["1=CR 2=PR 3=SD 4=PD"])
    book.save(str(path))
