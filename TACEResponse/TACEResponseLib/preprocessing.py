"""The one preprocessing path shared by training and inference, and its inverse.

Forward: any 3D CT (any orientation, flipped or oblique, any spacing) is resampled in one step onto a
canonical grid (identity direction, the model's spacing) covering the same physical box, then clipped
and scaled with the model's intensity window. Because the grid is defined by physical space only, the same
patient stored with permuted, flipped or shifted axes yields the same network input.
Inverse: class probabilities on that grid are interpolated back onto the input image's own grid, so the
label map has exactly the input's size, spacing, origin and direction.
"""

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from .errors import InputError

AIR_HU = -1024.0
MIN_EXTENT_MM = 40.0  # a field of view smaller than this cannot show a liver
SHORT_Z_MM = 100.0
BODY_HU = -500.0  # above this is patient (or table), below is air


@dataclass(frozen=True)
class PreprocessingSpec:
    """What the model card fixes about its input: phases, grid spacing (mm, x y z) and HU window."""

    phases: Tuple[str, ...]
    spacing: Tuple[float, float, float]
    window: Tuple[float, float]

    @classmethod
    def from_card(cls, card):
        return cls(tuple(card["inputs"]["phases"]), tuple(float(s) for s in card["preprocessing"]["spacing_mm"]),
                   tuple(float(w) for w in card["preprocessing"]["intensity_window_hu"]))


@dataclass(frozen=True)
class Grid:
    """An axis-aligned grid (identity direction); size and spacing in x, y, z order like SimpleITK."""

    origin: Tuple[float, float, float]
    spacing: Tuple[float, float, float]
    size: Tuple[int, int, int]

    def reference_image(self, pixel_type=sitk.sitkUInt8):
        image = sitk.Image([int(s) for s in self.size], pixel_type)
        image.SetOrigin(self.origin)
        image.SetSpacing(self.spacing)
        return image

    @property
    def voxel_volume_ml(self):
        return float(np.prod(self.spacing)) / 1000.0

    def cropped(self, low, high):
        """The part of this grid inside the physical box [low, high] (x, y, z), on the same voxel lattice, so
        its voxels are exactly voxels of the whole grid (what training saw)."""
        origin, spacing = np.asarray(self.origin), np.asarray(self.spacing)
        first = np.clip(np.floor((np.asarray(low) - origin) / spacing), 0, np.asarray(self.size) - 1).astype(int)
        last = np.clip(np.ceil((np.asarray(high) - origin) / spacing), 0, np.asarray(self.size) - 1).astype(int)
        last = np.maximum(last, first)
        return Grid(tuple(float(v) for v in origin + first * spacing), self.spacing,
                    tuple(int(v) for v in last - first + 1))


@dataclass
class PreparedCase:
    """Network input on the canonical grid: array (channels, z, y, x) float32, the grid, warnings."""

    array: np.ndarray
    grid: Grid
    warnings: List[str]


def physical_corners(image):
    """Physical positions of the 8 corner voxel centres of an image, shape (8, 3)."""
    size = image.GetSize()
    corners = []
    for i in (0, size[0] - 1):
        for j in (0, size[1] - 1):
            for k in (0, size[2] - 1):
                corners.append(image.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k))))
    return np.array(corners)


def canonical_grid(image, spacing):
    """Axis-aligned grid at ``spacing`` covering the physical box of ``image``, centred on it.

    The box's length is rarely a whole number of spacings; centring splits the shortfall between the two
    ends, so each image slice lies within half a grid spacing of the grid and maps back with a value. A grid
    starting at the low corner fell up to a whole spacing short at the top, and a CT's last slice came back
    as background (a whole slice of liver on a CT that cuts through the liver)."""
    corners = physical_corners(image)
    low, high = corners.min(axis=0), corners.max(axis=0)
    spacing = np.asarray(spacing, float)
    size = np.floor((high - low) / spacing + 1e-6).astype(int) + 1
    low = low + ((high - low) - (size - 1) * spacing) / 2.0
    return Grid(tuple(float(v) for v in low), tuple(float(s) for s in spacing), tuple(int(s) for s in size))


def resample(image, grid, interpolator=sitk.sitkLinear, default_value=AIR_HU, pixel_type=sitk.sitkFloat32):
    return sitk.Resample(image, grid.reference_image(pixel_type), sitk.Transform(), interpolator,
                         float(default_value), pixel_type)


def check_field_of_view(image, path):
    """Refuse volumes too small to hold a liver; return warnings for ones that may cut it."""
    extent = np.ptp(physical_corners(image), axis=0) + np.asarray(image.GetSpacing())
    size = image.GetSize()
    names = "xyz"
    for axis in range(3):
        if extent[axis] < MIN_EXTENT_MM:
            raise InputError(path, "field of view too small along {}: {} voxels, {:.1f} mm (need at least {:.0f} mm)"
                             .format(names[axis], size[axis], extent[axis], MIN_EXTENT_MM))
    if extent[2] < SHORT_Z_MM:
        return ["{}: only {:.0f} mm along z; the liver may not be fully covered".format(path, extent[2])]
    return []


def intensity_warnings(array, path):
    """Readable but implausible content: say so rather than silently predicting on it."""
    if not np.isfinite(array).all():
        raise InputError(path, "contains NaN or infinite voxel values")
    low, high = np.percentile(array, [0.5, 99.5])
    warnings = []
    if low > -500 or high < 0 or high > 4000:
        warnings.append("{}: intensities do not look like CT in Hounsfield units (0.5-99.5 percentile {:.0f}..{:.0f})"
                        .format(path, low, high))
    return warnings


def normalise(array, window):
    """Clip to the HU window and scale to [-1, 1]."""
    low, high = window
    out = np.clip(array, low, high, out=array)
    out -= (low + high) / 2.0
    out *= 2.0 / (high - low)
    return out


def denormalise(array, window):
    """The network input back in HU (clipped to the window): what the post-processing rules read."""
    low, high = window
    return array * ((high - low) / 2.0) + (low + high) / 2.0


def same_grid(a, b):
    """True when two images share size, and origin, spacing and direction within rounding."""
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-4)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4))


def check_phases_agree(images, paths):
    """Phases must cover largely the same physical box; returns warnings when their grids differ."""
    first_corners = physical_corners(images[0])
    low0, high0 = first_corners.min(0), first_corners.max(0)
    warnings = []
    for image, path in zip(images[1:], paths[1:]):
        corners = physical_corners(image)
        low, high = corners.min(0), corners.max(0)
        overlap = np.clip(np.minimum(high, high0) - np.maximum(low, low0), 0, None).prod()
        volume = max((high0 - low0).prod(), 1e-6)
        if overlap / volume < 0.5:
            raise InputError(path, "does not overlap the first phase ({}) in physical space ({:.0%} of its volume); "
                             "phases must show the same anatomy".format(paths[0], overlap / volume))
        if not same_grid(image, images[0]):
            warnings.append("{}: geometry differs from {}; resampled onto the same grid".format(path, paths[0]))
    return warnings


def prepare(images: Sequence[sitk.Image], spec: PreprocessingSpec, paths: Sequence[str] = (), box=None,
            check_intensities=True) -> PreparedCase:
    """Images (one per phase, in the model's order) -> normalised network input on the canonical grid.

    ``box`` (physical low and high corners, x y z) restricts the grid to a region of interest, e.g. the liver
    found by a coarse pass. ``check_intensities`` is off for such a region: percentiles of a region inside the
    body say nothing about whether the scan is CT.
    """
    paths = list(paths) or ["input {}".format(i + 1) for i in range(len(images))]
    if len(images) != len(spec.phases):
        raise InputError(None, "the model expects {} input(s) ({}), got {}".format(
            len(spec.phases), ", ".join(spec.phases), len(images)))
    warnings = []
    for image, path in zip(images, paths):
        warnings += check_field_of_view(image, path)
    warnings += check_phases_agree(images, paths)
    grid = canonical_grid(images[0], spec.spacing)
    if box is not None:
        grid = grid.cropped(*box)
    channels = []
    for image, path in zip(images, paths):
        array = sitk.GetArrayFromImage(resample(image, grid))
        if check_intensities:
            warnings += intensity_warnings(array, path)
        channels.append(normalise(array, spec.window))
    return PreparedCase(np.stack(channels), grid, warnings)


def labels_to_grid(label_image, grid):
    """Resample a label map onto a grid (nearest neighbour), as uint8 array (z, y, x)."""
    return sitk.GetArrayFromImage(resample(label_image, grid, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))


def nonzero_index_box(array):
    """Index range (x, y, z; first, last inclusive) of the nonzero voxels of a (z, y, x) array, or None when
    there are none. Projections instead of np.nonzero: no index arrays the size of the mask."""
    in_plane = array.any(axis=0)
    rows, cols = np.flatnonzero(in_plane.any(axis=1)), np.flatnonzero(in_plane.any(axis=0))
    if not len(rows):
        return None
    slices = np.flatnonzero(array[:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].any(axis=(1, 2)))
    return (np.array([cols[0], rows[0], slices[0]], int), np.array([cols[-1], rows[-1], slices[-1]], int))


def index_box(reference, low, high):
    """Voxel index range (x, y, z; first, last inclusive) of ``reference`` that covers a physical box."""
    corners = [reference.TransformPhysicalPointToContinuousIndex([float(c) for c in (x, y, z)])
               for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])]
    corners = np.array(corners)
    size = np.asarray(reference.GetSize())
    first = np.clip(np.floor(corners.min(0)), 0, size - 1).astype(int)
    last = np.clip(np.ceil(corners.max(0)), 0, size - 1).astype(int)
    return first, last


def probabilities_to_image(liver_prob, tumor_prob, grid, reference):
    """Class probabilities on ``grid`` -> uint8 label image with exactly the geometry of ``reference``.

    Probabilities are interpolated (not labels) so boundaries stay smooth on a finer input grid; they are
    quantised to 8 bits first to keep memory low on large inputs. Only the part of ``reference`` that
    ``grid`` covers is computed; the rest is background.
    """
    # the grid's voxels reach half a spacing beyond their centres; interpolation is defined up to there
    low = np.asarray(grid.origin) - np.asarray(grid.spacing) / 2.0
    high = low + np.asarray(grid.size) * np.asarray(grid.spacing)
    first, last = index_box(reference, low, high)
    region = sitk.Image([int(v) for v in last - first + 1], sitk.sitkUInt8)
    region.SetSpacing(reference.GetSpacing())
    region.SetDirection(reference.GetDirection())
    region.SetOrigin(reference.TransformIndexToPhysicalPoint([int(v) for v in first]))
    resampled = []
    for prob in (liver_prob, tumor_prob):
        quantised = sitk.GetImageFromArray(np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8))
        quantised.SetOrigin(grid.origin)
        quantised.SetSpacing(grid.spacing)
        # a copy, not a view: the resampled image is a temporary whose buffer is freed at once
        resampled.append(sitk.GetArrayFromImage(sitk.Resample(
            quantised, region, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkUInt8)).astype(np.int16))
    liver, tumor = resampled
    background = 255 - liver - tumor
    labels = np.zeros(reference.GetSize()[::-1], np.uint8)
    inside = labels[first[2]:last[2] + 1, first[1]:last[1] + 1, first[0]:last[0] + 1]
    inside[(liver > background) & (liver >= tumor)] = 1
    inside[(tumor > background) & (tumor > liver)] = 2
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(reference)
    return out


def mask_to_grid(mask_image, grid):
    """A binary mask (any nonzero = inside) resampled onto the canonical grid as float32 (z, y, x)."""
    binary = sitk.Cast(sitk.NotEqual(mask_image, 0), sitk.sitkUInt8)
    return labels_to_grid(binary, grid).astype(np.float32)


def crop_to_body(volume, window, multiple):
    """Bounding box of the body (above -500 HU), grown to a multiple of the network's size step.

    Returns (cropped volume padded as needed, slices of the crop in the volume, padding applied). The padding
    repeats the last slice: where a CT ends inside the liver, air beyond it looks like the lung over the
    dome, and the networks stopped the liver two slices short of the edge.
    """
    low, high = window
    body_level = (max(BODY_HU, low) - (low + high) / 2.0) * 2.0 / (high - low)
    inside = volume[0] > body_level
    if not inside.any():
        inside[...] = True
    bounds = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.nonzero(inside.any(axis=other))[0]
        bounds.append((int(hits[0]), int(hits[-1]) + 1))
    slices, pads = [], []
    for (start, end), length in zip(bounds, volume.shape[1:]):
        size = int(np.ceil((end - start) / multiple) * multiple)
        start = max(min(start - (size - (end - start)) // 2, length - size), 0)
        end = min(start + size, length)
        slices.append(slice(start, end))
        pads.append(size - (end - start))
    cropped = volume[(slice(None),) + tuple(slices)]
    if any(pads):
        cropped = np.pad(cropped, [(0, 0)] + [(0, p) for p in pads], mode="edge")
    return np.ascontiguousarray(cropped), tuple(slices), pads
