"""`predict --dicom`: the result as DICOM a PACS and viewers understand.

- segmentation.dcm: a DICOM SEG (BINARY) with one segment per model label (Liver, Tumor), coded with the
  model card's terminology, frames on the source CT slices that hold a segment, referencing the source
  series.
- report.dcm: a Comprehensive 3D SR Measurement Report (TID 1500): per segment a volumetric measurement group
  referencing it (volumes; tumor count, largest axial diameter, burden), and the response probability and
  risk category on the tumor group; the model (name, version, SHA-256) is the algorithm everywhere.

Codes without a standard concept (tumor count, burden, response probability, risk) use the private coding
scheme 99TACE, declared in the SR's coding scheme identification. highdicom and pydicom load lazily.
"""

import os
import warnings

import numpy as np
import SimpleITK as sitk

from .errors import InputError

SEG_NAME = "segmentation.dcm"
SR_NAME = "report.dcm"
SEG_SERIES_NUMBER = 901
SR_SERIES_NUMBER = 902
PRIVATE_SCHEME = "99TACE"
_POSITION_TOL_MM = 0.01


def check_inputs(inputs):
    """Refuse --dicom before any work unless the (first) input is DICOM: its slices are what SEG references."""
    import importlib.util

    first = str(inputs[0])
    if importlib.util.find_spec("highdicom") is None or importlib.util.find_spec("pydicom") is None:
        raise InputError(None, "--dicom needs highdicom and pydicom: pip install \"tace-response[dicom]\"")
    if not os.path.isdir(first):
        raise InputError(first, "--dicom needs DICOM input (a series or study folder): the DICOM SEG and SR "
                                "reference the source CT slices, which a {} file does not have".format(
                                    _kind(first)))


def _kind(path):
    name = os.path.basename(path).lower()
    for suffix, kind in ((".nii.gz", "NIfTI"), (".nii", "NIfTI"), (".nrrd", "NRRD"), (".mha", "MetaImage"),
                         (".mhd", "MetaImage")):
        if name.endswith(suffix):
            return kind
    return "non-DICOM"


def source_paths(inputs, study):
    """The slice files of the series the label map lies on (the first phase)."""
    if study is not None:
        phase = next(iter(study.selection.chosen))
        return study.selection.chosen[phase].paths
    from . import image_io

    files, _ = image_io.find_dicom_series(str(inputs[0]))
    return list(files)


def _code(entry):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=str(entry["code"]), scheme_designator=str(entry["scheme"]),
                        meaning=str(entry["meaning"]))


def _private(value, meaning):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=PRIVATE_SCHEME, meaning=meaning)


def _source_datasets(paths, label_image):
    """Source datasets in label-slice order: slice k is the file whose position is voxel (0, 0, k)."""
    import pydicom

    datasets = [pydicom.dcmread(str(p), stop_before_pixels=True) for p in paths]
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    ordered = []
    for k in range(label_image.GetSize()[2]):
        where = np.asarray(label_image.TransformIndexToPhysicalPoint((0, 0, k)))
        distance = np.linalg.norm(positions - where, axis=1)
        best = int(np.argmin(distance))
        if distance[best] > _POSITION_TOL_MM + 1e-3 * max(label_image.GetSpacing()):
            raise InputError(os.path.dirname(str(paths[0])), "slice {} of the segmentation matches no source "
                                                              "DICOM slice (geometry changed?)".format(k))
        ordered.append(datasets[best])
    if len({ds.SOPInstanceUID for ds in ordered}) != len(ordered):
        raise InputError(os.path.dirname(str(paths[0])), "source DICOM slices do not map one to one onto the "
                                                          "segmentation")
    return ordered


def _algorithm_sequence(package):
    from highdicom import AlgorithmIdentificationSequence
    from pydicom.sr.codedict import codes

    return AlgorithmIdentificationSequence(name=package.name, family=codes.cid7162.ArtificialIntelligence,
                                           version=package.version, source="tace-response",
                                           parameters={"sha256": package.sha256})


def build_seg(label_image, sources, package, labels, software_version):
    """A BINARY DICOM SEG of the card's labels, on the source slices (``sources`` in slice order)."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    array = sitk.GetArrayFromImage(label_image)  # (slice, row, column) = source frame order
    if array.shape[1:] != (int(sources[0].Rows), int(sources[0].Columns)):
        raise InputError(None, "segmentation grid {} differs from the source slices".format(array.shape))
    algorithm = _algorithm_sequence(package)
    descriptions, masks = [], []
    for number, label in enumerate(labels, 1):
        terminology = label["terminology"]
        regions = [_code(terminology["anatomic_region"])] if "anatomic_region" in terminology else None
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=label["name"],
            segmented_property_category=_code(terminology["category"]),
            segmented_property_type=_code(terminology["type"]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            tracking_uid=generate_uid(), tracking_id=label["name"], anatomic_regions=regions,
            display_color=hd.color.CIELabColor.from_rgb(*[int(round(255 * c)) for c in label["color"]])
            if "color" in label and hasattr(hd.color.CIELabColor, "from_rgb") else None))
        masks.append(array == int(label["value"]))
    pixels = np.stack(masks, axis=-1).astype(np.uint8)  # (frames, rows, columns, segments)
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="tace-response",
        manufacturer_model_name=package.name[:64], software_versions=software_version,
        device_serial_number="none", content_label="TACE_RESPONSE", content_description="Liver and tumor",
        series_description="TACE Response segmentation ({} {})".format(package.name, package.version)[:64])


def build_sr(seg, sources, document, package, labels, software_version):
    """The TID 1500 Measurement Report of ``document`` (result.json's content), tied to the SEG's segments."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    measured = document["measurements"]
    algorithm = hd.sr.AlgorithmIdentification(name=package.name, version=package.version,
                                              parameters=["sha256=" + package.sha256])
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=package.name[:64], manufacturer_name="tace-response",
            model_name=package.version[:64]))
    context = hd.sr.ObservationContext(observer_device_context=observer)
    source_series = hd.sr.SourceSeriesForSegmentation(sources[0].SeriesInstanceUID)
    ml = hd.sr.CodedConcept("mL", "UCUM", "milliliter")
    mm = hd.sr.CodedConcept("mm", "UCUM", "millimeter")
    percent = hd.sr.CodedConcept("%", "UCUM", "percent")
    unitless = hd.sr.CodedConcept("1", "UCUM", "no units")
    volume = hd.sr.CodedConcept("118565006", "SCT", "Volume")

    def measurement(name, value, unit):
        return hd.sr.Measurement(name=name, value=float(value), unit=unit, algorithm_id=algorithm)

    by_name = {label["name"]: (number, label) for number, label in enumerate(labels, 1)}
    groups = []
    for name, (number, label) in by_name.items():
        terminology = label["terminology"]
        if name == "Liver":
            values = [measurement(volume, measured["liver_parenchyma_volume_ml"], ml),
                      measurement(_private("liver-volume", "Liver volume including tumor"),
                                  measured["liver_volume_ml"], ml)]
            evaluations = None
        elif name == "Tumor":
            values = [measurement(volume, measured["tumor_volume_ml"], ml),
                      measurement(_private("tumor-count", "Number of tumor lesions"), measured["tumor_count"],
                                  unitless),
                      measurement(hd.sr.CodedConcept("103339001", "SCT", "Long axis"),
                                  measured["largest_tumor_diameter_mm"], mm),
                      measurement(_private("tumor-burden", "Tumor burden (tumor share of liver volume)"),
                                  measured["tumor_burden_percent"], percent),
                      measurement(_private("response-prob", "Probability of objective response to TACE"),
                                  document["response_probability"], unitless)]
            evaluations = [hd.sr.QualitativeEvaluation(
                name=_private("risk-category", "TACE non-response risk category"),
                value=_private("risk-" + document["risk_category"], "{} risk".format(document["risk_category"])))]
        else:
            continue
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=name),
            referenced_segment=hd.sr.ReferencedSegment(sop_class_uid=seg.SOPClassUID,
                                                       sop_instance_uid=seg.SOPInstanceUID, segment_number=number,
                                                       source_series=source_series),
            finding_type=_code(terminology["type"]), algorithm_id=algorithm,
            finding_sites=[hd.sr.FindingSite(_code(terminology["anatomic_region"]))]
            if "anatomic_region" in terminology else None,
            measurements=values, qualitative_evaluations=evaluations))
    report = hd.sr.MeasurementReport(observation_context=context,
                                     procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
                                     imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[seg] + list(sources), content=report, series_instance_uid=generate_uid(),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer="tace-response", is_complete=True, is_final=False, is_verified=False,
        series_description="TACE Response measurements ({} {})".format(package.name, package.version)[:64])
    _declare_private_scheme(sr)
    sr.SoftwareVersions = software_version
    return sr


def _declare_private_scheme(dataset):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    entry = Dataset()
    entry.CodingSchemeDesignator = PRIVATE_SCHEME
    entry.CodingSchemeName = "TACE Response concepts"
    entry.CodingSchemeResponsibleOrganization = "tace-response"
    existing = list(dataset.get("CodingSchemeIdentificationSequence", []))
    dataset.CodingSchemeIdentificationSequence = Sequence(existing + [entry])


def write(staging, label_image, document, package, paths, software_version):
    """Write SEG and SR into ``staging``; returns their names (the caller moves them into place)."""
    labels = sorted(package.card["labels"], key=lambda label: int(label["value"]))
    sources = _source_datasets(paths, label_image)
    with warnings.catch_warnings():
        # anonymised sources often carry one-component patient names; copied as they are, not our problem
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        seg = build_seg(label_image, sources, package, labels, software_version)
        sr = build_sr(seg, sources, document, package, labels, software_version)
    seg.save_as(os.path.join(staging, SEG_NAME))
    sr.save_as(os.path.join(staging, SR_NAME))
    return [SEG_NAME, SR_NAME]
