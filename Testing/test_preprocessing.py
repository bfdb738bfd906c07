"""The shared preprocessing path: canonical grid, invariance to storage order, exact inverse geometry."""

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import phantom_ct
from TACEResponseLib import preprocessing
from TACEResponseLib.errors import InputError

SPEC = preprocessing.PreprocessingSpec(("portal_venous",), (2.0, 2.0, 2.0), (-200.0, 300.0))


def flipped(image, axes):
    return sitk.Flip(image, axes)  # keeps every voxel at its physical position


def permuted(image, order):
    return sitk.PermuteAxes(image, order)


def oblique(image, degrees=12.0):
    """Resample onto a grid rotated about z and x: same anatomy, oblique storage."""
    transform = sitk.Euler3DTransform()
    transform.SetRotation(np.deg2rad(degrees / 2), 0.0, np.deg2rad(degrees))
    rotation = np.array(transform.GetMatrix()).reshape(3, 3)
    reference = sitk.Image(image.GetSize(), image.GetPixelID())
    reference.SetSpacing(image.GetSpacing())
    reference.SetDirection(tuple(rotation.ravel()))
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()]))
    reference.SetOrigin(tuple(centre - rotation @ (np.array(image.GetSpacing()) * (np.array(image.GetSize()) - 1) / 2)))
    return reference, sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, -1000.0)


@pytest.mark.parametrize("variant", ["flip_x", "flip_xyz", "permute_yxz", "permute_zxy"])
def test_storage_order_does_not_change_network_input(variant):
    ct, _ = phantom_ct()
    other = {"flip_x": lambda: flipped(ct, [True, False, False]),
             "flip_xyz": lambda: flipped(ct, [True, True, True]),
             "permute_yxz": lambda: permuted(ct, [1, 0, 2]),
             "permute_zxy": lambda: permuted(ct, [2, 0, 1])}[variant]()
    assert not np.array_equal(sitk.GetArrayFromImage(other), sitk.GetArrayFromImage(ct)) or variant.startswith("permute")
    a = preprocessing.prepare([ct], SPEC)
    b = preprocessing.prepare([other], SPEC)
    assert a.grid.size == b.grid.size
    np.testing.assert_allclose(a.grid.origin, b.grid.origin, atol=1e-6)
    np.testing.assert_allclose(a.array, b.array, atol=1e-4)


def test_shifted_origin_shifts_grid_not_content():
    ct, _ = phantom_ct()
    shifted = sitk.Image(ct)
    shifted.SetOrigin(tuple(np.array(ct.GetOrigin()) + [13.7, -4.2, 55.0]))
    a, b = preprocessing.prepare([ct], SPEC), preprocessing.prepare([shifted], SPEC)
    np.testing.assert_allclose(np.array(b.grid.origin) - a.grid.origin, [13.7, -4.2, 55.0], atol=1e-6)
    np.testing.assert_allclose(a.array, b.array, atol=1e-4)


def test_canonical_grid_covers_oblique_image():
    ct, _ = phantom_ct()
    reference, rotated = oblique(ct)
    grid = preprocessing.canonical_grid(rotated, (2.0, 2.0, 2.0))
    corners = preprocessing.physical_corners(rotated)
    low = np.array(grid.origin)
    high = low + (np.array(grid.size) - 1) * 2.0
    # every corner voxel centre lies within the grid's voxels (half a spacing beyond its outer centres)
    assert (corners.min(0) >= low - 1.0 - 1e-6).all() and (corners.max(0) <= high + 1.0 + 1e-6).all()
    # centred: the two ends fall short by the same amount
    np.testing.assert_allclose(low - corners.min(0), corners.max(0) - high, atol=1e-6)


def test_every_slice_maps_back_when_the_extent_is_not_a_whole_number_of_spacings():
    """30 slices of 3 mm span 87 mm between their centres, 43.5 grid spacings of 2 mm: the first and last
    slice must still come back labelled (a grid from the low corner missed the last one)."""
    image = sitk.Image([40, 40, 30], sitk.sitkInt16)
    image.SetSpacing((3.0, 3.0, 3.0))
    image.SetOrigin((10.0, -20.0, 94.3))
    grid = preprocessing.canonical_grid(image, (2.0, 2.0, 2.0))
    everywhere = np.ones(grid.size[::-1], np.float32)
    labels = sitk.GetArrayFromImage(preprocessing.probabilities_to_image(everywhere, 0 * everywhere, grid, image))
    assert (labels == 1).all()


@pytest.mark.parametrize("variant", ["identity", "flip_yz", "oblique", "anisotropic"])
def test_inverse_restores_exact_geometry_and_labels(variant):
    ct, labels = phantom_ct()
    if variant == "flip_yz":
        ct, labels = flipped(ct, [False, True, True]), flipped(labels, [False, True, True])
    elif variant == "oblique":
        reference, ct = oblique(ct)
        labels = sitk.Resample(labels, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    elif variant == "anisotropic":
        reference = sitk.Image([96, 80, 30], sitk.sitkInt16)
        reference.SetSpacing((1.9, 2.0, 5.0))
        reference.SetOrigin(ct.GetOrigin())
        ct = sitk.Resample(ct, reference, sitk.Transform(), sitk.sitkLinear, -1000.0)
        labels = sitk.Resample(labels, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    prepared = preprocessing.prepare([ct], SPEC)
    on_grid = preprocessing.labels_to_grid(labels, prepared.grid)
    back = preprocessing.probabilities_to_image((on_grid == 1).astype(np.float32), (on_grid == 2).astype(np.float32),
                                                prepared.grid, ct)
    assert back.GetSize() == ct.GetSize()
    assert back.GetSpacing() == ct.GetSpacing()
    assert back.GetOrigin() == ct.GetOrigin()
    assert back.GetDirection() == ct.GetDirection()
    assert back.GetPixelID() == sitk.sitkUInt8
    truth, result = sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(back)
    for value in (1, 2):
        overlap = 2 * np.sum((truth == value) & (result == value)) / (np.sum(truth == value) + np.sum(result == value))
        assert overlap > 0.9, (value, overlap)


def test_normalise_window():
    array = np.array([-1000.0, -200.0, 50.0, 300.0, 2000.0], np.float32)
    np.testing.assert_allclose(preprocessing.normalise(array, (-200.0, 300.0)), [-1, -1, 0, 1, 1])


def test_too_small_field_of_view_is_refused():
    ct, _ = phantom_ct(size=(72, 64, 4))
    with pytest.raises(InputError, match="field of view too small along z"):
        preprocessing.prepare([ct], SPEC, ["tiny.nii.gz"])


def test_non_ct_intensities_warn():
    ct, _ = phantom_ct()
    mr_like = sitk.Cast(sitk.RescaleIntensity(ct, 0, 800), sitk.sitkFloat32)
    prepared = preprocessing.prepare([mr_like], SPEC, ["mr.nii.gz"])
    assert any("do not look like CT" in w for w in prepared.warnings)


def test_nan_is_refused():
    ct, _ = phantom_ct()
    array = sitk.GetArrayFromImage(ct).astype(np.float32)
    array[10, 10, 10] = np.nan
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(ct)
    with pytest.raises(InputError, match="NaN"):
        preprocessing.prepare([image], SPEC, ["nan.nrrd"])


def test_crop_to_body_pads_by_repeating_the_edge_slice():
    """Air beyond a CT that ends inside the liver looks like the lung over the dome: pad with the edge."""
    volume = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 20, 32, 32)).astype(np.float32)  # all body
    padded, crop, pads = preprocessing.crop_to_body(volume, SPEC.window, 16)
    assert padded.shape == (1, 32, 32, 32) and list(pads) == [12, 0, 0]
    np.testing.assert_array_equal(padded[0, :20], volume[0])
    np.testing.assert_array_equal(padded[0, 20:], np.repeat(volume[0, -1:], 12, axis=0))


def test_crop_to_body_is_a_multiple_and_contains_body():
    ct, _ = phantom_ct()
    prepared = preprocessing.prepare([ct], SPEC)
    volume, crop, pads = preprocessing.crop_to_body(prepared.array, SPEC.window, 16)
    assert all(s % 16 == 0 for s in volume.shape[1:])
    body = prepared.array[0] > -0.9
    outside = body.copy()
    outside[crop] = False
    assert not outside.any()
