"""A real CT as a scanner with thicker slices would have reconstructed it: each new slice averages the old
slices its slab covers (partial volume across the slice), weighted by their overlap.

Thick slices (5 mm and more) are common in hospital archives and are where the networks fare worst. The
real CTs here have thin slices, so a thick copy of one, with a lesion painted in it (``inserted_lesions``)
and its mask averaged the same way, measures that on real anatomy (``benchmarks/inserted_lesions.py``).
The new slices run along the image's own third axis, so flipped and oblique storage keeps its anatomy.
"""

import numpy as np
import SimpleITK as sitk


def _overlaps(n_old, old_mm, thickness_mm):
    """For each new slice: (old slice indices, weights) of the old slabs its slab covers. Slab edges start at
    the first old slab's edge; a last partial slab is dropped."""
    n_new = int(np.floor(n_old * old_mm / thickness_mm + 1e-6))
    rows = []
    for j in range(n_new):
        lo, hi = j * thickness_mm, (j + 1) * thickness_mm
        first, last = int(np.floor(lo / old_mm)), int(np.ceil(hi / old_mm))
        index = np.arange(first, min(last, n_old))
        weight = np.minimum(hi, (index + 1) * old_mm) - np.maximum(lo, index * old_mm)
        rows.append((index, weight / weight.sum()))
    return rows


def thicker_slices(image, thickness_mm, mask=False):
    """``image`` with slices ``thickness_mm`` thick and apart. A ``mask`` (0/1) is averaged the same way and
    kept where at least half the new slab was inside it. Raises ValueError below the present spacing."""
    old_mm = float(image.GetSpacing()[2])
    if thickness_mm < old_mm - 1e-6:
        raise ValueError("thicker slices asked ({} mm) are thinner than the image's ({} mm)".format(
            thickness_mm, old_mm))
    array = sitk.GetArrayFromImage(image)
    rows = _overlaps(array.shape[0], old_mm, float(thickness_mm))
    if not rows:
        raise ValueError("the image ({} slices of {} mm) is thinner than one slice of {} mm".format(
            array.shape[0], old_mm, thickness_mm))
    out = np.stack([np.tensordot(weight, array[index].astype(np.float32), axes=(0, 0)) for index, weight in rows])
    if mask:
        out = (out >= 0.5).astype(array.dtype)
    elif np.issubdtype(array.dtype, np.integer):
        out = np.rint(out).astype(array.dtype)
    result = sitk.GetImageFromArray(out)
    spacing = list(image.GetSpacing())
    spacing[2] = float(thickness_mm)
    result.SetSpacing(spacing)
    result.SetDirection(image.GetDirection())
    # the first new slab starts where the first old one did: its centre moves half the difference along z
    slice_axis = np.array(image.GetDirection()).reshape(3, 3)[:, 2]
    result.SetOrigin(tuple(np.array(image.GetOrigin()) + slice_axis * (thickness_mm - old_mm) / 2.0))
    return result
