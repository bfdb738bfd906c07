"""Quantities a radiologist reads off a liver/tumor label map, in physical units on the image's own grid."""

import numpy as np
import SimpleITK as sitk

from .preprocessing import nonzero_index_box

LIVER, TUMOR = 1, 2
MIN_LESION_ML = 0.05  # components smaller than this are noise, not lesions
_ANGLES = np.deg2rad(np.arange(0.0, 180.0, 1.0))
_DIRECTIONS = np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], axis=1)


def _axial_axis(image):
    """Index (x=0, y=1, z=2) of the storage axis closest to the patient's superior-inferior axis."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return int(np.argmax(np.abs(direction[2, :])))


def _longest_in_plane_diameter(mask_zyx, image):
    """Longest distance (mm) between two voxels of ``mask`` lying in the same axial slice.

    Distances use the physical in-plane spacing and direction, so anisotropic or oblique grids measure
    correctly. Only boundary voxels can be extremes; the longest chord is found as the widest projection.
    """
    axis_xyz = _axial_axis(image)
    axis_zyx = 2 - axis_xyz
    spacing = np.array(image.GetSpacing())
    in_plane_xyz = [a for a in range(3) if a != axis_xyz]
    # the direction matrix is orthonormal, so in-plane distances are index offsets times spacing
    step = spacing[in_plane_xyz]
    best = 0.0
    mask = np.moveaxis(mask_zyx, axis_zyx, 0)
    for section in mask:
        if not section.any():
            continue
        padded = np.pad(section, 1)
        inner = (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1]
                 & padded[1:-1, :-2] & padded[1:-1, 2:])
        boundary = section & ~inner
        rows, cols = np.nonzero(boundary)
        # section axes are the remaining zyx axes in order, i.e. reversed in_plane_xyz
        index_xyz = np.stack([cols, rows], axis=1).astype(np.float64)
        points = index_xyz * step
        # the longest chord is the largest width over all directions; 1-degree steps err < 0.01%
        widths = points @ _DIRECTIONS.T
        best = max(best, float((widths.max(axis=0) - widths.min(axis=0)).max()))
    if best == 0.0 and mask_zyx.any():
        best = float(np.mean(spacing[in_plane_xyz]))
    return best


def _labelled_part(label_image):
    """The smallest sub-image holding every nonzero voxel (same geometry: RegionOfInterest keeps physical
    positions), or None when the image is empty. A liver is a small part of a large CT: measuring there
    avoids several passes over the whole volume."""
    box = nonzero_index_box(sitk.GetArrayViewFromImage(label_image))
    if box is None:
        return None
    first, last = box
    size = [int(v) for v in last - first + 1]
    if size == list(label_image.GetSize()):
        return label_image
    return sitk.RegionOfInterest(label_image, size, [int(v) for v in first])


def measure(label_image, liver_value=LIVER, tumor_value=TUMOR):
    """Volumes, lesion count, largest axial diameter and burden for a label image (any geometry)."""
    part = _labelled_part(label_image)
    label_image = part if part is not None else label_image
    labels = sitk.GetArrayViewFromImage(label_image)
    voxel_ml = float(np.prod(label_image.GetSpacing())) / 1000.0
    tumor = labels == tumor_value
    liver_ml = float(np.count_nonzero(labels == liver_value)) * voxel_ml
    tumor_ml = float(np.count_nonzero(tumor)) * voxel_ml
    count, largest = 0, 0.0
    if tumor_ml > 0:
        components = sitk.ConnectedComponent(sitk.Cast(label_image == tumor_value, sitk.sitkUInt8), True)
        shapes = sitk.LabelShapeStatisticsImageFilter()
        shapes.Execute(components)
        component_array = sitk.GetArrayViewFromImage(components)
        for value in shapes.GetLabels():
            if shapes.GetNumberOfPixels(value) * voxel_ml < MIN_LESION_ML:
                continue
            count += 1
            x, y, z, sx, sy, sz = shapes.GetBoundingBox(value)
            box = component_array[z:z + sz, y:y + sy, x:x + sx] == value
            largest = max(largest, _longest_in_plane_diameter(box, label_image))
    organ_ml = liver_ml + tumor_ml
    return {
        "liver_volume_ml": round(liver_ml + tumor_ml, 2),
        "liver_parenchyma_volume_ml": round(liver_ml, 2),
        "tumor_volume_ml": round(tumor_ml, 2),
        "tumor_count": int(count),
        "largest_tumor_diameter_mm": round(largest, 1),
        "tumor_burden_percent": round(100.0 * tumor_ml / organ_ml, 2) if organ_ml > 0 else 0.0,
    }
