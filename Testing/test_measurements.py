"""Volumes, lesion count and mRECIST-style longest axial diameter against shapes of known size."""

import numpy as np
import pytest
import SimpleITK as sitk

from TACEResponseLib.measurements import measure


def label_image(spacing=(0.8, 0.8, 2.0), size=(160, 160, 60), direction=None):
    image = sitk.Image(size, sitk.sitkUInt8)
    image.SetSpacing(spacing)
    image.SetOrigin((-50.0, 20.0, 300.0))
    if direction is not None:
        image.SetDirection(direction)
    return image


def paint(image, centre_mm, radii_mm, value):
    """Fill an axis-aligned ellipsoid given in index-aligned millimetres from the image origin."""
    array = sitk.GetArrayFromImage(image)
    size, spacing = image.GetSize(), image.GetSpacing()
    z, y, x = np.ogrid[:size[2], :size[1], :size[0]]
    inside = (((x * spacing[0] - centre_mm[0]) / radii_mm[0]) ** 2 + ((y * spacing[1] - centre_mm[1]) / radii_mm[1]) ** 2
              + ((z * spacing[2] - centre_mm[2]) / radii_mm[2]) ** 2) <= 1.0
    array[inside] = value
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def test_volumes_count_diameter_and_burden():
    image = paint(label_image(), (64, 64, 60), (50, 40, 40), 1)
    image = paint(image, (50, 60, 60), (15, 10, 10), 2)  # longest axial diameter 30 mm along x
    image = paint(image, (95, 80, 60), (5, 5, 5), 2)
    result = measure(image)
    liver_ml = 4 / 3 * np.pi * 50 * 40 * 40 / 1000
    assert result["liver_volume_ml"] == pytest.approx(liver_ml, rel=0.03)
    tumor_ml = 4 / 3 * np.pi * (15 * 10 * 10 + 5 * 5 * 5) / 1000
    assert result["tumor_volume_ml"] == pytest.approx(tumor_ml, rel=0.08)
    assert result["tumor_count"] == 2
    assert result["largest_tumor_diameter_mm"] == pytest.approx(30.0, abs=1.7)
    assert result["tumor_burden_percent"] == pytest.approx(100 * tumor_ml / liver_ml, rel=0.1)
    assert result["liver_parenchyma_volume_ml"] == pytest.approx(result["liver_volume_ml"] - result["tumor_volume_ml"], abs=0.05)


def test_diameter_is_axial_even_when_the_lesion_is_taller():
    """mRECIST measures in the axial plane: a lesion 60 mm tall but 20 mm wide measures about 20 mm."""
    image = paint(label_image(), (64, 64, 60), (10, 10, 30), 2)
    assert measure(image)["largest_tumor_diameter_mm"] == pytest.approx(20.0, abs=1.7)


def test_diagonal_diameter_uses_physical_spacing():
    image = label_image(spacing=(0.5, 1.0, 2.0), size=(200, 100, 20))
    array = sitk.GetArrayFromImage(image)
    for i in range(40):  # a diagonal bar: 40 steps of (0.5 mm, 1 mm), 4 slices deep to pass the noise floor
        array[8:12, 20 + i, 20 + i] = 2
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    assert measure(out)["largest_tumor_diameter_mm"] == pytest.approx(39 * np.hypot(0.5, 1.0), rel=0.01)


def test_permuted_storage_measures_the_same():
    image = paint(label_image(), (64, 64, 60), (50, 40, 40), 1)
    image = paint(image, (50, 60, 60), (15, 10, 10), 2)
    permuted = sitk.PermuteAxes(image, [2, 0, 1])  # axial plane is now stored along another axis
    a, b = measure(image), measure(permuted)
    assert a["largest_tumor_diameter_mm"] == pytest.approx(b["largest_tumor_diameter_mm"], abs=0.01)
    assert a["tumor_volume_ml"] == pytest.approx(b["tumor_volume_ml"], abs=0.01)


def test_empty_labels():
    result = measure(label_image())
    assert result == {"liver_volume_ml": 0.0, "liver_parenchyma_volume_ml": 0.0, "tumor_volume_ml": 0.0,
                      "tumor_count": 0, "largest_tumor_diameter_mm": 0.0, "tumor_burden_percent": 0.0}


def test_measuring_the_labelled_part_equals_measuring_the_whole():
    """Measurements are taken on the smallest sub-image holding the labels; an oblique, anisotropic image
    with the labels off-centre measures exactly as the same labels with nothing cropped."""
    from TACEResponseLib.measurements import _labelled_part, _longest_in_plane_diameter

    rng = np.random.default_rng(5)
    labels = np.zeros((40, 60, 50), np.uint8)
    labels[10:30, 20:50, 5:30] = 1
    labels[14:22, 25:37, 8:20] = 2
    labels[25:28, 40:44, 22:26] = 2
    labels[2:4, 2:4, 45:47] = 2 * (rng.random((2, 2, 2)) > 0.3)
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing((0.8, 0.6, 2.5))
    image.SetOrigin((-12.0, 40.0, 300.0))
    angle = np.deg2rad(20)
    image.SetDirection((np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1))
    part = _labelled_part(image)
    assert part.GetSize() == (47 - 5, 50 - 2, 30 - 2)
    np.testing.assert_allclose(part.GetOrigin(), image.TransformIndexToPhysicalPoint((5, 2, 2)), atol=1e-9)
    whole = measure(image)
    assert whole["tumor_count"] >= 2 and whole["liver_volume_ml"] > 0
    # the reference: the same quantities computed without cropping
    voxel_ml = 0.8 * 0.6 * 2.5 / 1000.0
    assert whole["tumor_volume_ml"] == pytest.approx(round((labels == 2).sum() * voxel_ml, 2))
    diameter = _longest_in_plane_diameter(labels[14:22, 25:37, 8:20] == 2, image)
    assert whole["largest_tumor_diameter_mm"] == pytest.approx(round(diameter, 1))
    assert _labelled_part(sitk.Image(5, 5, 5, sitk.sitkUInt8)) is None
