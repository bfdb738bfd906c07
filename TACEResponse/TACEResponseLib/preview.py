"""preview.png: an axial and a coronal slice through the largest tumor with liver and tumor outlines.

The slices are resampled from physical space, so the picture is the same whatever the storage order of the
input (flipped, permuted, oblique): radiological convention, patient's right on the image left, anterior up
on the axial slice, head up on the coronal one. matplotlib is imported only when a picture is drawn (it is
an optional dependency, `pip install "tace-response[preview]"`), and only through its Agg canvas: no pyplot,
no global backend switch.
"""

import textwrap
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import SimpleITK as sitk

from .preprocessing import AIR_HU, physical_corners

WINDOW_HU = (400.0, 40.0)  # soft-tissue window: width, level
MAX_DISPLAY_PIXELS = 512  # along the longer side of a slice
LIVER_COLOUR = "#ffd92f"
TUMOR_COLOUR = "#ff2020"
# LPS patient axes: +x patient's left, +y posterior, +z superior. Each plane: (column axis, row axis).
AXIAL_AXES = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))  # columns right->left, rows anterior->posterior
CORONAL_AXES = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0))  # columns right->left, rows head->feet


@dataclass
class Plane:
    """One resampled slice: ``ct`` (HU) and ``labels`` as (rows, columns) arrays in display orientation.

    Pixel (row, column) lies at ``origin + column * spacing * column_axis + row * spacing * row_axis`` (LPS mm).
    """

    ct: np.ndarray
    labels: np.ndarray
    origin: Tuple[float, float, float]
    column_axis: Tuple[float, float, float]
    row_axis: Tuple[float, float, float]
    spacing: float

    def physical_point(self, row, column):
        return (np.asarray(self.origin) + column * self.spacing * np.asarray(self.column_axis)
                + row * self.spacing * np.asarray(self.row_axis))

    def pixel_of(self, point):
        """(row, column) nearest to a physical point lying in this plane."""
        offset = np.asarray(point, float) - np.asarray(self.origin)
        return (int(round(offset @ np.asarray(self.row_axis) / self.spacing)),
                int(round(offset @ np.asarray(self.column_axis) / self.spacing)))


@dataclass
class PreviewSlices:
    point: Tuple[float, float, float]  # LPS mm, where the two planes cross
    centred_on: str  # "largest tumor", "liver" or "image centre"
    axial: Plane
    coronal: Plane
    liver_value: int
    tumor_value: int


def _largest_component_centroid(mask_image):
    components = sitk.ConnectedComponent(mask_image, True)
    shapes = sitk.LabelShapeStatisticsImageFilter()
    shapes.Execute(components)
    labels = shapes.GetLabels()
    if not labels:
        return None
    largest = max(labels, key=shapes.GetNumberOfPixels)
    centroid = np.array(shapes.GetCentroid(largest))  # physical, the image's direction applied
    index = mask_image.TransformPhysicalPointToIndex(tuple(float(v) for v in centroid))
    inside = all(0 <= i < n for i, n in zip(index, mask_image.GetSize()))
    if inside and components[index] == largest:
        return tuple(centroid)
    # a crescent's or a horseshoe's centroid lies outside it: take the lesion's voxel nearest to it
    k, j, i = np.nonzero(sitk.GetArrayViewFromImage(components) == largest)
    direction = np.array(mask_image.GetDirection()).reshape(3, 3)
    points = np.asarray(mask_image.GetOrigin()) + (np.stack([i, j, k], axis=1) * mask_image.GetSpacing()) @ direction.T
    return tuple(points[np.argmin(np.sum((points - centroid) ** 2, axis=1))])


def choose_point(label_image, liver_value, tumor_value):
    """The centre of the largest tumor, else of the liver (tumor included), else of the image (LPS mm)."""
    tumor = sitk.Cast(label_image == tumor_value, sitk.sitkUInt8)
    centre = _largest_component_centroid(tumor)
    if centre is not None:
        return centre, "largest tumor"
    organ = sitk.Cast((label_image == liver_value) | (label_image == tumor_value), sitk.sitkUInt8)
    centre = _largest_component_centroid(organ)
    if centre is not None:
        return centre, "liver"
    return tuple(physical_corners(label_image).mean(axis=0)), "image centre"


def display_spacing(image):
    """Isotropic display spacing: the finest input spacing, coarsened so no side exceeds MAX_DISPLAY_PIXELS."""
    corners = physical_corners(image)
    extent = float((corners.max(axis=0) - corners.min(axis=0)).max())
    return max(float(min(image.GetSpacing())), extent / MAX_DISPLAY_PIXELS)


def resample_plane(ct_image, label_image, point, axes, spacing):
    """The plane through ``point`` spanned by ``axes`` (column, row), covering the image's physical box."""
    column_axis, row_axis = (np.asarray(a, float) for a in axes)
    normal = np.cross(column_axis, row_axis)
    corners = physical_corners(ct_image)
    # the box's extent along each in-plane axis, from the point
    along_columns, along_rows = corners @ column_axis, corners @ row_axis
    point = np.asarray(point, float)
    origin = (point + (along_columns.min() - point @ column_axis) * column_axis
              + (along_rows.min() - point @ row_axis) * row_axis)
    size = [int(np.floor((along_columns.max() - along_columns.min()) / spacing)) + 1,
            int(np.floor((along_rows.max() - along_rows.min()) / spacing)) + 1, 1]
    reference = sitk.Image(size, sitk.sitkFloat32)
    reference.SetSpacing((spacing, spacing, spacing))
    reference.SetOrigin(tuple(float(v) for v in origin))
    # direction columns are the grid's axes in physical space: image x = display column, y = display row
    reference.SetDirection(tuple(float(v) for v in np.stack([column_axis, row_axis, normal], axis=1).ravel()))
    ct = sitk.Resample(ct_image, reference, sitk.Transform(), sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)
    labels = sitk.Resample(label_image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    # arrays are (z, y, x) = (1, rows, columns)
    return Plane(sitk.GetArrayFromImage(ct)[0], sitk.GetArrayFromImage(labels)[0], tuple(float(v) for v in origin),
                 tuple(column_axis), tuple(row_axis), float(spacing))


def preview_slices(ct_image, label_image, liver_value=1, tumor_value=2):
    """Where to look and what is there: the two display planes through the largest tumor (or the liver)."""
    point, centred_on = choose_point(label_image, liver_value, tumor_value)
    spacing = display_spacing(ct_image)
    return PreviewSlices(tuple(float(v) for v in point), centred_on,
                         resample_plane(ct_image, label_image, point, AXIAL_AXES, spacing),
                         resample_plane(ct_image, label_image, point, CORONAL_AXES, spacing),
                         int(liver_value), int(tumor_value))


def _draw_plane(axes, plane, slices, title, top, bottom):
    width, level = WINDOW_HU
    axes.imshow(plane.ct, cmap="gray", vmin=level - width / 2, vmax=level + width / 2, interpolation="bilinear")
    organ = (plane.labels == slices.liver_value) | (plane.labels == slices.tumor_value)
    tumor = plane.labels == slices.tumor_value
    for mask, colour in ((organ, LIVER_COLOUR), (tumor, TUMOR_COLOUR)):
        if mask.any():
            axes.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.2)
    row, column = plane.pixel_of(slices.point)
    axes.plot([column], [row], marker="+", color="#00e5ff", markersize=10, markeredgewidth=1)
    axes.set_title(title, color="white", fontsize=10)
    rows, columns = plane.ct.shape
    label_style = dict(color="white", fontsize=9, fontweight="bold", ha="center", va="center")
    axes.text(0.03, 0.5, "R", transform=axes.transAxes, **label_style)
    axes.text(0.97, 0.5, "L", transform=axes.transAxes, **label_style)
    axes.text(0.5, 0.97, top, transform=axes.transAxes, **label_style)
    axes.text(0.5, 0.03, bottom, transform=axes.transAxes, **label_style)
    axes.set_xlim(-0.5, columns - 0.5)
    axes.set_ylim(rows - 0.5, -0.5)
    axes.set_axis_off()


def draw_slices(axial_axes, coronal_axes, slices):
    """Draw the two planes on two matplotlib axes (used by the preview and the patient report)."""
    x, y, z = slices.point
    _draw_plane(axial_axes, slices.axial, slices, "Axial, z = {:.0f} mm".format(z), "A", "P")
    _draw_plane(coronal_axes, slices.coronal, slices, "Coronal, y = {:.0f} mm".format(y), "S", "I")


def summary_lines(document):
    """The key numbers of a result.json document, one short line each."""
    m = document["measurements"]
    model = document["model"]
    return [
        "Response probability {:.0%}".format(document["response_probability"]),
        "Risk: {} (cutoff {:.2f})".format(document["risk_category"], document["risk_cutoff"]),
        "Liver {:.0f} mL".format(m["liver_volume_ml"]),
        "Tumor {:.1f} mL in {} lesion(s)".format(m["tumor_volume_ml"], m["tumor_count"]),
        "Largest diameter {:.1f} mm".format(m["largest_tumor_diameter_mm"]),
        "Tumor burden {:.1f}%".format(m["tumor_burden_percent"]),
        "Model {} {}".format(model["name"], model["version"]),
        "Warnings: {}".format(len(document.get("warnings", []))),
    ]


def new_figure(width_in, height_in):
    """A figure on matplotlib's Agg canvas, imported here so importing this module stays light."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), facecolor="black")
    FigureCanvasAgg(figure)
    return figure


def write_preview(path, slices, document, dpi=100):
    """Axial | coronal | key numbers, on black, as a PNG."""
    axial, coronal = slices.axial.ct.shape, slices.coronal.ct.shape
    # panel widths in proportion to each slice's aspect at a common height
    ratios = [axial[1] / axial[0], coronal[1] / coronal[0], 0.9]
    height = 4.5
    figure = new_figure(height * sum(ratios) + 0.3, height)
    grid = figure.add_gridspec(1, 3, width_ratios=ratios, left=0.01, right=0.99, bottom=0.02, top=0.92, wspace=0.03)
    draw_slices(figure.add_subplot(grid[0, 0]), figure.add_subplot(grid[0, 1]), slices)
    text_axes = figure.add_subplot(grid[0, 2])
    text_axes.set_axis_off()
    lines = summary_lines(document)
    lines += ["", "Centred on the " + slices.centred_on,
              "Outlines: liver (yellow), tumor (red)", "CT window W{:.0f}/L{:.0f}".format(*WINDOW_HU)]
    for warning in document.get("warnings", [])[:3]:
        lines += textwrap.wrap("- " + warning, 38)[:3]
    text_axes.text(0.02, 0.98, "\n".join(lines), transform=text_axes.transAxes, va="top", ha="left",
                   color="white", fontsize=9, family="monospace")
    figure.savefig(str(path), dpi=dpi, facecolor="black", format="png")
