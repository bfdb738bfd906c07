"""Synthetic lesions inserted into a real CT: tumor ground truth on a real patient's liver.

No real labelled liver-tumor CT can be brought onto the machines that build the shipped model, so the real
CTs there have no tumor masks. A lesion painted into a real liver keeps the real parenchyma, vessels, noise
texture and neighbours around it, and its mask is exact: what the networks do with tumor on real
background can be measured (``benchmarks/inserted_lesions.py``). It says nothing about real lesions'
own appearance, which only expert-labelled CT can.

The lesion is a lobulated sphere in physical coordinates (any storage orientation gives the same lesion),
its HU set relative to the liver's median within 30 mm of it, with the scan's own high-frequency noise kept
on top and a soft edge of about one millimetre (the scanner's point spread).
"""

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage


@dataclass(frozen=True)
class LesionKind:
    """diameter (mm); contrast to the liver (HU); necrotic core as a fraction of the radius, at 85 HU below
    the liver; an enhancing rim (HU above the liver, 3 mm wide, 0 for none)."""

    diameter_mm: float
    contrast_hu: float
    necrosis: float = 0.0
    rim_hu: float = 0.0


KINDS = {
    "hypodense 15 mm": LesionKind(15.0, -45.0),
    "hypodense 25 mm": LesionKind(25.0, -45.0),
    "hypodense 40 mm": LesionKind(40.0, -50.0),
    "necrotic 50 mm": LesionKind(50.0, -35.0, necrosis=0.5),
    "rim-enhancing 45 mm": LesionKind(45.0, -40.0, rim_hu=40.0),
    "iso-dense 35 mm": LesionKind(35.0, -15.0),
}

_EDGE_MM = 1.0
_NECROSIS_HU = -85.0
_RIM_MM = 3.0


def _box_around(image, centre, reach_mm):
    """Index slices (z, y, x) of ``image`` covering the physical cube of half-width ``reach_mm`` at ``centre``."""
    corners = np.array([image.TransformPhysicalPointToContinuousIndex(
        [float(c) + sx * reach_mm for c, sx in zip(centre, signs)])
        for signs in np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T])
    size = np.asarray(image.GetSize())
    first = np.clip(np.floor(corners.min(axis=0)).astype(int), 0, size - 1)
    last = np.clip(np.ceil(corners.max(axis=0)).astype(int), 0, size - 1)
    return tuple(slice(int(first[axis]), int(last[axis]) + 1) for axis in (2, 1, 0))


def _physical_points(image, box):
    """Physical x, y, z of the voxels of ``box`` (index slices z, y, x), each shaped like the box."""
    ranges = [np.arange(box[axis].start, box[axis].stop, dtype=np.float64) for axis in (2, 1, 0)]
    index = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1)  # (x, y, z, 3)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    points = index * np.asarray(image.GetSpacing()) @ direction.T + np.asarray(image.GetOrigin())
    return [points[..., axis].transpose(2, 1, 0) for axis in range(3)]


def lesion_centres(liver_mask, kinds, seed=0, margin_mm=8.0):
    """A physical centre (x, y, z) per kind, at least the lesion's radius plus ``margin_mm`` inside the liver
    (or as deep as the liver allows), drawn reproducibly from ``seed``."""
    binary = sitk.Cast(liver_mask > 0, sitk.sitkUInt8)
    if not sitk.GetArrayViewFromImage(binary).any():
        raise ValueError("the liver mask is empty")
    depth = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(binary, insideIsPositive=True, squaredDistance=False,
                                                               useImageSpacing=True))
    rng = np.random.default_rng(seed)
    centres = []
    for kind in kinds:
        deep = np.argwhere(depth >= min(kind.diameter_mm / 2.0 + margin_mm, depth.max() - 1.0))
        z, y, x = deep[rng.integers(len(deep))]
        centres.append(np.asarray(liver_mask.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))))
    return centres


def insert_lesion(ct, liver_mask, kind, centre, seed=0):
    """``ct`` (HU) with one lesion of ``kind`` centred at the physical point ``centre``; returns the new image
    (same geometry and pixel type) and the lesion's mask (uint8, same geometry). The liver's HU is the
    median of ``liver_mask`` within 30 mm of the lesion's edge."""
    raw = sitk.GetArrayFromImage(ct)
    liver_all = sitk.GetArrayFromImage(sitk.Resample(liver_mask, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    largest = kind.diameter_mm / 2.0 * 1.12
    box = _box_around(ct, centre, largest + 30.0)
    hu = raw[box].astype(np.float32)
    x, y, z = _physical_points(ct, box)
    dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
    distance = np.sqrt(dx ** 2 + dy ** 2 + dz ** 2)
    rng = np.random.default_rng(seed)
    phase, tilt = rng.uniform(0, 2 * np.pi, 2)
    azimuth, elevation = np.arctan2(dy, dx), np.arctan2(dz, np.hypot(dx, dy))
    radius = kind.diameter_mm / 2.0 * (1.0 + 0.12 * np.sin(3 * azimuth + phase) * np.cos(2 * elevation + tilt))
    inside = distance <= radius
    near = (liver_all[box] > 0) & ~inside
    if not near.any():
        raise ValueError("the lesion's centre is not in or near the liver mask")
    liver_hu = float(np.median(hu[near]))
    lesion = np.full(hu.shape, liver_hu + kind.contrast_hu, np.float32)
    if kind.necrosis:
        lesion[distance < kind.necrosis * radius] = liver_hu + _NECROSIS_HU
    if kind.rim_hu:
        lesion[(distance > radius - _RIM_MM) & inside] = liver_hu + kind.rim_hu
    spacing_zyx = np.asarray(ct.GetSpacing())[::-1]
    lesion = ndimage.gaussian_filter(lesion, _EDGE_MM / spacing_zyx)
    texture = hu - ndimage.gaussian_filter(hu, 1.5 / spacing_zyx)  # the scan's own noise, kept on the lesion
    weight = np.clip((radius - distance) / (2.0 * _EDGE_MM) + 0.5, 0.0, 1.0)
    painted = raw.copy()
    painted[box] = np.round((1.0 - weight) * hu + weight * (lesion + texture)).astype(raw.dtype)
    out = sitk.GetImageFromArray(painted)
    out.CopyInformation(ct)
    truth = np.zeros(raw.shape, np.uint8)
    truth[box] = inside
    mask = sitk.GetImageFromArray(truth)
    mask.CopyInformation(ct)
    return out, mask
