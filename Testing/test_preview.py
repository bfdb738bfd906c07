"""preview.png: the slices go through the largest tumor in physical space and are shown in radiological
orientation whatever the storage order (flipped, permuted, oblique), and `predict --preview` writes it.

The constructed patient is defined in physical (LPS) space and sampled onto differently stored grids, so the
expected positions are known exactly: a liver box on the patient's right, a tumor sphere inside it, and two
bright markers, one right-anterior in the tumor's axial plane, one right-superior in its coronal plane.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from TACEResponseLib import cli, preview

TUMOR_CENTRE = np.array([-45.0, -5.0, 10.0])
TUMOR_RADIUS = 12.0
LIVER_LOW, LIVER_HIGH = np.array([-80.0, -40.0, -40.0]), np.array([-10.0, 30.0, 40.0])
RIGHT_ANTERIOR_MARKER = np.array([-75.0, -55.0, 10.0])  # in the tumor's axial plane
RIGHT_SUPERIOR_MARKER = np.array([-75.0, -5.0, 35.0])  # in the tumor's coronal plane
MARKER_HALF_MM = 4.0


def _rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    angle = np.deg2rad(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


GEOMETRIES = {
    "identity": np.eye(3),
    "flipped-x-and-z": np.diag([-1.0, 1.0, -1.0]),
    # storage axes permuted (i runs head-feet, j right-left, k anterior-posterior) and tilted 20 degrees
    "permuted-oblique": _rotation([1.0, 1.0, 0.3], 20.0) @ np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0],
                                                                      [-1.0, 0.0, 0.0]]),
}


def constructed_patient(direction, spacing=(2.0, 2.2, 2.5), size=(100, 90, 80), tumor=True):
    """CT (HU) and label image of the constructed patient on a grid centred at the origin."""
    direction = np.asarray(direction, float)
    spacing, size = np.asarray(spacing), np.asarray(size)
    origin = -direction @ ((size - 1) * spacing / 2.0)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1).reshape(-1, 3)
    points = origin + (index * spacing) @ direction.T
    x, y, z = points.T
    hu = np.full(len(points), -1000.0)
    hu[(x / 95.0) ** 2 + (y / 75.0) ** 2 <= 1.0] = 40.0
    liver = np.all((points >= LIVER_LOW) & (points <= LIVER_HIGH), axis=1)
    hu[liver] = 110.0
    lesion = np.sum((points - TUMOR_CENTRE) ** 2, axis=1) <= TUMOR_RADIUS ** 2
    if tumor:
        hu[lesion] = 60.0
    for marker in (RIGHT_ANTERIOR_MARKER, RIGHT_SUPERIOR_MARKER):
        hu[np.all(np.abs(points - marker) <= MARKER_HALF_MM, axis=1)] = 1500.0
    labels = np.zeros(len(points), np.uint8)
    labels[liver] = 1
    if tumor:
        labels[lesion] = 2

    def to_image(values, pixel_type):
        image = sitk.GetImageFromArray(values.reshape(tuple(size)).transpose(2, 1, 0).copy())  # -> (k, j, i)
        image = sitk.Cast(image, pixel_type)
        image.SetSpacing(tuple(float(s) for s in spacing))
        image.SetOrigin(tuple(float(v) for v in origin))
        image.SetDirection(tuple(float(v) for v in direction.ravel()))
        return image

    return to_image(hu.astype(np.int16), sitk.sitkInt16), to_image(labels, sitk.sitkUInt8)


def _mask_centroid_mm(plane, mask):
    rows, columns = np.nonzero(mask)
    return plane.physical_point(rows.mean(), columns.mean())


@pytest.fixture(params=list(GEOMETRIES), scope="module")
def stored(request):
    return request.param, constructed_patient(GEOMETRIES[request.param])


def test_slices_cross_at_the_tumor_centre(stored):
    name, (ct, labels) = stored
    slices = preview.preview_slices(ct, labels, 1, 2)
    assert slices.centred_on == "largest tumor"
    np.testing.assert_allclose(slices.point, TUMOR_CENTRE, atol=1.0, err_msg=name)
    axial, coronal = slices.axial, slices.coronal
    rows, columns = axial.ct.shape
    # every pixel of the axial plane is at the tumor centre's height, every coronal pixel at its depth
    for row, column in ((0, 0), (rows - 1, columns - 1), (rows // 2, 0)):
        assert axial.physical_point(row, column)[2] == pytest.approx(slices.point[2], abs=1e-6)
    rows, columns = coronal.ct.shape
    for row, column in ((0, 0), (rows - 1, columns - 1)):
        assert coronal.physical_point(row, column)[1] == pytest.approx(slices.point[1], abs=1e-6)
    # the tumor seen in each plane is a disc of the sphere's radius around its centre
    for plane, axes in ((axial, [0, 1]), (coronal, [0, 2])):
        tumor = plane.labels == 2
        assert plane.labels[plane.pixel_of(TUMOR_CENTRE)] == 2, name
        np.testing.assert_allclose(_mask_centroid_mm(plane, tumor)[axes], TUMOR_CENTRE[axes], atol=1.5)
        area_mm2 = tumor.sum() * plane.spacing ** 2
        assert area_mm2 == pytest.approx(np.pi * TUMOR_RADIUS ** 2, rel=0.15), name


def test_radiological_orientation(stored):
    """Patient's right on the image left; anterior up (axial); head up (coronal)."""
    name, (ct, labels) = stored
    slices = preview.preview_slices(ct, labels, 1, 2)
    for plane, marker in ((slices.axial, RIGHT_ANTERIOR_MARKER), (slices.coronal, RIGHT_SUPERIOR_MARKER)):
        rows, columns = plane.ct.shape
        bright_rows, bright_columns = np.nonzero(plane.ct > 700.0)
        assert len(bright_rows) > 4, name
        assert bright_rows.max() < rows / 2 and bright_columns.max() < columns / 2, \
            "{}: marker not in the top-left quadrant".format(name)
        np.testing.assert_allclose(_mask_centroid_mm(plane, plane.ct > 700.0), marker, atol=2.0)
        # the liver (patient's right) lies in the left half
        _, liver_columns = np.nonzero(plane.labels == 1)
        assert np.mean(liver_columns < columns / 2) > 0.95, name
    # isotropic display grid: the axial plane's physical extent matches its pixel shape
    assert slices.axial.spacing == slices.coronal.spacing


def test_without_tumor_the_slices_go_through_the_liver():
    ct, labels = constructed_patient(GEOMETRIES["flipped-x-and-z"], tumor=False)
    slices = preview.preview_slices(ct, labels, 1, 2)
    assert slices.centred_on == "liver"
    np.testing.assert_allclose(slices.point, (LIVER_LOW + LIVER_HIGH) / 2.0, atol=1.5)


def test_a_ring_shaped_tumor_is_cut_through_its_tissue_not_its_empty_centre():
    """The centroid of a shell (a tumor with a necrotic core left unlabelled) lies outside it."""
    ct, labels = constructed_patient(GEOMETRIES["permuted-oblique"])
    array = sitk.GetArrayFromImage(labels)
    core = sitk.GetArrayFromImage(constructed_patient(GEOMETRIES["permuted-oblique"], tumor=False)[1])
    # hollow the sphere: voxels within 8 mm of the centre go back to liver
    index = np.stack(np.nonzero(array == 2)[::-1], axis=1).astype(float)
    points = np.array([labels.TransformContinuousIndexToPhysicalPoint(tuple(v)) for v in index])
    hollow = np.linalg.norm(points - TUMOR_CENTRE, axis=1) < 8.0
    k, j, i = index[hollow].astype(int)[:, ::-1].T
    array[k, j, i] = core[k, j, i]
    shell = sitk.GetImageFromArray(array)
    shell.CopyInformation(labels)
    slices = preview.preview_slices(ct, shell, 1, 2)
    chosen = shell.TransformPhysicalPointToIndex(slices.point)
    assert shell[chosen] == 2
    assert 7.0 < np.linalg.norm(np.asarray(slices.point) - TUMOR_CENTRE) <= TUMOR_RADIUS + 2.0
    assert (slices.axial.labels == 2).any() and (slices.coronal.labels == 2).any()


def _document():
    return {"response_probability": 0.6312, "risk_category": "low", "risk_cutoff": 0.5,
            "measurements": {"liver_volume_ml": 1523.4, "tumor_volume_ml": 7.24, "tumor_count": 1,
                             "largest_tumor_diameter_mm": 24.0, "tumor_burden_percent": 0.48},
            "model": {"name": "test-model", "version": "9.8.7"}, "warnings": ["one", "two"],
            "labels": {"Liver": 1, "Tumor": 2}}


def test_write_preview_png(tmp_path):
    import matplotlib.image

    ct, labels = constructed_patient(GEOMETRIES["permuted-oblique"])
    slices = preview.preview_slices(ct, labels, 1, 2)
    path = tmp_path / "preview.png"
    preview.write_preview(path, slices, _document())
    picture = matplotlib.image.imread(str(path))
    assert picture.ndim == 3 and picture.shape[0] >= 400 and picture.shape[1] > picture.shape[0]
    # red tumor outline pixels are there
    red = (picture[..., 0] > 0.9) & (picture[..., 1] < 0.3) & (picture[..., 2] < 0.3)
    assert red.sum() > 50
    lines = preview.summary_lines(_document())
    assert "Response probability 63%" in lines and "Model test-model 9.8.7" in lines and "Warnings: 2" in lines


def test_importing_the_cli_and_preview_does_not_import_matplotlib():
    code = ("import sys, TACEResponseLib.cli, TACEResponseLib.preview; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def _predict(ct_path, out_dir, model, *extra):
    return cli.main(["predict", str(ct_path), "-o", str(out_dir), "--model", str(model.folder), "--device", "cpu",
                     "--progress", "none"] + list(extra))


def test_predict_preview_writes_png(random_model, tmp_path, capfd):
    ct, _ = constructed_patient(GEOMETRIES["flipped-x-and-z"], spacing=(3.0, 3.0, 3.0), size=(70, 60, 40))
    ct_path = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct, str(ct_path))
    out_dir = tmp_path / "out"
    assert _predict(ct_path, out_dir, random_model, "--preview") == 0, capfd.readouterr().err
    assert sorted(os.listdir(str(out_dir))) == sorted([cli.PREVIEW_NAME, cli.RESULT_NAME, cli.SEGMENTATION_NAME])
    assert (out_dir / cli.PREVIEW_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    json.loads((out_dir / cli.RESULT_NAME).read_text())


def test_failed_preview_leaves_nothing(random_model, tmp_path, capfd, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(preview, "write_preview", broken)
    ct, _ = constructed_patient(GEOMETRIES["identity"], spacing=(3.0, 3.0, 3.0), size=(70, 60, 40))
    ct_path = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct, str(ct_path))
    out_dir = tmp_path / "out"
    assert _predict(ct_path, out_dir, random_model, "--preview") == 1
    assert "disk full" in capfd.readouterr().err
    assert not out_dir.exists()
