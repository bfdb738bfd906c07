"""Predictor(model_package).predict(images) -> Prediction: the single inference path.

Batch users (CLI), the Slicer module (through the CLI) and the tests all come through here.
"""

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np
import SimpleITK as sitk
import torch

from . import anatomy, coarse_pass, inference, measurements, preprocessing, tumor_margin
from .errors import InputError
from .model_package import localizer_card

MIN_LIVER_ML = 300.0
MAX_LIVER_ML = 6000.0
# a predicted tumor smaller than this (a 12 mm sphere) is too little to read a response from: the demo model
# finds no phantom lesion under 10 mL, so what it calls tumor at this size is mostly a false speck
MIN_TUMOR_ML = 1.0
# the response pathway pools again over the post-processed segmentation when it removed at least this much
REPOOL_MIN_ML = 1.0


@dataclass
class Prediction:
    label_image: sitk.Image
    response_probability: float
    fold_probabilities: List[float]
    risk_category: str
    risk_cutoff: float
    measurements: Dict[str, float]
    warnings: List[str]
    device: str
    timings_s: Dict[str, float] = field(default_factory=dict)
    tumor_source: str = "predicted"
    liver_source: str = "predicted"


def choose_device(requested="auto"):
    requested = (requested or "auto").lower()
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "--device cuda requested but no CUDA GPU is available to this PyTorch build")
    if requested == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InputError(None, "--device mps requested but Apple MPS is not available")
    if requested not in ("cpu", "cuda", "mps"):
        raise InputError(None, "unknown device {!r}: use auto, cpu, cuda or mps".format(requested))
    return requested


def _mask_box(mask_image):
    """Physical bounding box (low, high; x y z) of the nonzero voxels of a mask, or None when empty."""
    box = preprocessing.nonzero_index_box(sitk.GetArrayViewFromImage(mask_image))
    if box is None:
        return None
    first, last = box
    corners = np.array([mask_image.TransformIndexToPhysicalPoint([int(i), int(j), int(k)])
                        for i in (first[0], last[0]) for j in (first[1], last[1]) for k in (first[2], last[2])])
    return corners.min(0), corners.max(0)


class Predictor:
    """Holds a verified model package and its networks on one device.

    With a localiser in the package (and ``coarse_to_fine``), a small network first finds the liver on a
    coarse grid; the main networks then run only on the region around it, at their own spacing.
    """

    def __init__(self, package, device="auto", progress: Optional[Callable[[str, float], None]] = None,
                 coarse_to_fine=True):
        self.package = package
        self.card = package.card
        self.spec = preprocessing.PreprocessingSpec.from_card(self.card)
        self.device = choose_device(device)
        self.networks = package.build_networks()
        self.localizer = package.build_localizer() if coarse_to_fine else None
        if self.localizer is not None:
            coarse_card = localizer_card(self.card)
            self.localizer_spec = preprocessing.PreprocessingSpec.from_card(coarse_card)
            self.localizer_tile = tuple(int(v) for v in coarse_card["inference"]["tile_size"])
            self.localizer_margin = int(coarse_card["inference"]["tile_margin"])
            self.roi_margin_mm = float(self.card["localizer"].get("roi_margin_mm", 30.0))
            # how far beyond the coarse liver the main networks may label (null in the card: no limit)
            self.reach_mm = self.card["localizer"].get("organ_reach_mm", coarse_pass.DEFAULT_REACH_MM)
            self.tumor_reach_mm = self.card["localizer"].get("tumor_reach_mm", coarse_pass.DEFAULT_TUMOR_REACH_MM)
            self.fill_from_coarse = bool(self.card["localizer"].get("fill_missed_liver", True))
        self.progress = progress or (lambda stage, fraction: None)
        inference = self.card.get("inference", {})
        self.max_tile = tuple(int(v) for v in inference.get("tile_size", (128, 128, 128)))
        self.margin = int(inference.get("tile_margin", 16))
        self.liver_value = package.label_value("Liver")
        self.tumor_value = package.label_value("Tumor")

    def response_statistics(self, images, paths=()):
        """The response pathway's pooled sums of each network, computed exactly as predict computes them
        (localiser, region, tiles), without the label map: what refitting the response pathway needs."""
        coarse = self._locate(images, paths, None)[0] if self.localizer is not None else None
        box = None if coarse is None else (coarse.low, coarse.high)
        prepared = preprocessing.prepare(images, self.spec, paths, box=box, check_intensities=box is None)
        return self._segment(prepared, None, None, coarse)[3]

    def predict(self, images, paths=(), tumor_mask=None, tumor_mask_path=None, liver_mask=None, liver_mask_path=None):
        timings = {}
        warnings = []
        box = coarse = None
        if self.localizer is not None:
            started = time.perf_counter()
            self.progress("localize", 0.0)
            coarse, warnings = self._locate(images, paths, tumor_mask, liver_mask)
            box = None if coarse is None else (coarse.low, coarse.high)
            timings["localize"] = time.perf_counter() - started
        started = time.perf_counter()
        self.progress("preprocess", 0.0)
        prepared = preprocessing.prepare(images, self.spec, paths, box=box, check_intensities=box is None)
        warnings += [w for w in prepared.warnings if w not in warnings]
        mask_on_grid = None
        if tumor_mask is not None:
            mask_on_grid, mask_warnings = self._check_mask(tumor_mask, images[0], prepared.grid, tumor_mask_path)
            warnings += mask_warnings
        liver_on_grid = None
        if liver_mask is not None:
            liver_on_grid, mask_warnings = self._check_mask(liver_mask, images[0], prepared.grid, liver_mask_path,
                                                            "liver mask")
            warnings += mask_warnings
        timings["preprocess"] = time.perf_counter() - started

        started = time.perf_counter()
        liver, tumor, logits, _, device_used, network_warnings = self._segment(prepared, mask_on_grid, liver_on_grid,
                                                                                     coarse)
        warnings += network_warnings
        timings["network"] = time.perf_counter() - started

        started = time.perf_counter()
        self.progress("postprocess", 0.0)
        label_image = preprocessing.probabilities_to_image(liver, tumor, prepared.grid, images[0])
        tumor_source = "predicted"
        if tumor_mask is not None:
            label_image = self._apply_mask(label_image, tumor_mask)
            tumor_source = "user mask"
        liver_source = "predicted"
        if liver_mask is not None:  # after the tumor: the given liver bounds the organ, the tumor stays
            label_image = self._apply_liver_mask(label_image, liver_mask)
            liver_source = "user mask"
        measured = measurements.measure(label_image, self.liver_value, self.tumor_value)
        warnings += self._content_warnings(measured, tumor_mask is not None)
        timings["postprocess"] = time.perf_counter() - started

        probabilities = [float(1.0 / (1.0 + np.exp(-logit))) for logit in logits]
        probability = float(np.mean(probabilities))
        cutoff = float(self.card["risk"]["cutoff"])
        self.progress("done", 1.0)
        return Prediction(label_image, probability, probabilities, "low" if probability >= cutoff else "high",
                          cutoff, measured, warnings, device_used, {k: round(v, 3) for k, v in timings.items()},
                          tumor_source, liver_source)

    def _locate(self, images, paths, tumor_mask, liver_mask=None):
        """The coarse liver region (:mod:`coarse_pass`; its box also covers the user's masks) and the
        whole-volume warnings. None (process everything) when no liver is found."""
        boxes = [_mask_box(mask) for mask in (tumor_mask, liver_mask) if mask is not None]
        return coarse_pass.locate(self.localizer, self.localizer_spec, self.localizer_tile, self.localizer_margin,
                                  self.device, images, paths, self.roi_margin_mm, boxes)

    def _check_mask(self, mask_image, reference, grid, path, what="tumor mask"):
        if mask_image.GetDimension() != 3:
            raise InputError(path, "{} must be a 3D image".format(what))
        warnings = []
        if not preprocessing.same_grid(mask_image, reference):
            warnings.append("{}: {} geometry differs from the image; resampled onto it".format(path, what))
        on_grid = preprocessing.mask_to_grid(mask_image, grid)
        if not on_grid.any():
            warnings.append("{}: {} is empty".format(path, what))
        return on_grid, warnings

    def _apply_mask(self, label_image, mask_image):
        """The user's tumor replaces the predicted one; the organ keeps the predicted extent plus the mask."""
        mask = sitk.Resample(sitk.Cast(sitk.NotEqual(mask_image, 0), sitk.sitkUInt8), label_image,
                             sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        labels = sitk.GetArrayFromImage(label_image)
        inside = sitk.GetArrayViewFromImage(mask) > 0
        labels[labels == self.tumor_value] = self.liver_value
        labels[inside] = self.tumor_value
        out = sitk.GetImageFromArray(labels)
        out.CopyInformation(label_image)
        return out

    def _apply_liver_mask(self, label_image, mask_image):
        """The user's liver replaces the predicted one: liver = the mask outside the tumor, nothing beyond it."""
        mask = sitk.Resample(sitk.Cast(sitk.NotEqual(mask_image, 0), sitk.sitkUInt8), label_image,
                             sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        labels = sitk.GetArrayFromImage(label_image)
        inside = sitk.GetArrayViewFromImage(mask) > 0
        labels[(labels == self.liver_value) & ~inside] = 0
        labels[inside & (labels != self.tumor_value)] = self.liver_value
        out = sitk.GetImageFromArray(labels)
        out.CopyInformation(label_image)
        return out

    def _content_warnings(self, measured, user_mask):
        warnings = []
        if measured["liver_volume_ml"] < MIN_LIVER_ML:
            warnings.append("no liver found (liver volume {:.0f} mL): is this an abdominal CT covering the liver? "
                            "The response probability is not meaningful".format(measured["liver_volume_ml"]))
        elif measured["liver_volume_ml"] > MAX_LIVER_ML:
            warnings.append("implausible liver volume {:.0f} mL; check the segmentation".format(
                measured["liver_volume_ml"]))
        if measured["tumor_count"] == 0:
            warnings.append("no tumor {}; the response probability is not meaningful without a lesion".format(
                "in the given mask" if user_mask else "found"))
        elif not user_mask and measured["tumor_volume_ml"] < MIN_TUMOR_ML:
            warnings.append("only {:.1f} mL of tumor found (under {:g} mL); the response probability is not "
                            "meaningful for so little tumor".format(measured["tumor_volume_ml"], MIN_TUMOR_ML))
        return warnings

    def _segment(self, prepared, mask_on_grid, liver_on_grid, coarse=None):
        """Networks, restricted to the reach of the coarse liver region, then anatomical post-processing
        (:mod:`anatomy`). When these removed something, the
        response pathway pools again over the corrected segmentation, so the probability is not computed from
        labels the output no longer has (a given mask still wins over the corrected prediction). Returns
        liver and tumor probabilities on the prepared grid, logits, pooled sums, device and warnings."""
        liver, tumor, logits, pooled, device, warnings = self._run_networks(prepared, mask_on_grid, liver_on_grid)
        distance = None if coarse is None else coarse.distance_mm(prepared.grid)
        liver, tumor, beyond_ml = coarse_pass.restrict(liver, tumor, distance, self.reach_mm if coarse else None,
                                                       prepared.grid.voxel_volume_ml)
        if beyond_ml >= REPOOL_MIN_ML:
            warnings.append("removed {:.0f} mL labelled liver or tumor farther than {:g} mm from the coarse "
                            "pass's liver".format(beyond_ml, float(self.reach_mm)))
        liver, tumor, tumor_beyond_ml = coarse_pass.restrict_tumor(
            liver, tumor, distance, self.tumor_reach_mm if coarse else None, prepared.grid.voxel_volume_ml)
        if tumor_beyond_ml >= REPOOL_MIN_ML:
            warnings.append("removed {:.0f} mL of tumor farther than {:g} mm from the coarse pass's liver "
                            "(a neighbouring organ)".format(tumor_beyond_ml, float(self.tumor_reach_mm)))
        beyond_ml += tumor_beyond_ml
        hu = preprocessing.denormalise(prepared.array[0], self.spec.window)
        filled_ml = 0.0
        if coarse is not None and self.fill_from_coarse:
            liver, tumor, filled_ml = coarse_pass.fill_missed_liver(
                liver, tumor, coarse.probability_on(prepared.grid), distance, hu, prepared.grid.spacing,
                prepared.grid.voxel_volume_ml)
            if filled_ml >= REPOOL_MIN_ML:
                warnings.append("added {:.0f} mL as liver where the coarse pass is sure of the liver and the main "
                                "network missed it".format(filled_ml))
        liver, tumor, report = anatomy.constrain(liver, tumor, prepared.grid.spacing, hu)
        warnings += report.warnings()
        # both margin rules read the same smoothed HU; without tumor neither needs it
        smoothed = tumor_margin.smoothed_hu(hu, prepared.grid.spacing) if (tumor > liver).any() else None
        liver, tumor, halo_ml = tumor_margin.give_back_halo(liver, tumor, hu, prepared.grid.spacing, smoothed)
        if halo_ml >= REPOOL_MIN_ML:
            warnings.append("gave back to the liver {:.0f} mL labelled tumor at the liver's HU, more than {:g} mm "
                            "from anything lesion-like (a halo around a lesion)".format(halo_ml,
                                                                                      tumor_margin.KEEP_MM))
        liver, tumor, rim_ml = tumor_margin.take_viable_rim(liver, tumor, hu, prepared.grid.spacing, smoothed)
        if rim_ml >= REPOOL_MIN_ML:
            warnings.append("labelled tumor {:.0f} mL of liver clearly darker than the liver and joined to a "
                            "lesion (its viable rim)".format(rim_ml))
        changed_ml = report.removed_ml + beyond_ml + filled_ml + halo_ml + rim_ml
        if changed_ml >= REPOOL_MIN_ML and (mask_on_grid is None or liver_on_grid is None):
            tumor_weight = mask_on_grid if mask_on_grid is not None else tumor
            organ_weight = liver_on_grid if liver_on_grid is not None else np.minimum(liver + tumor, 1.0)
            _, _, logits, pooled, device, more = self._run_networks(prepared, tumor_weight, organ_weight)
            warnings += [w for w in more if w not in warnings]
        return liver, tumor, logits, pooled, device, warnings

    def _run_networks(self, prepared, mask_on_grid, liver_on_grid=None):
        """Run every network of the package; on CUDA out-of-memory, fall back to CPU and say so."""
        warnings = []
        try:
            liver, tumor, logits, pooled = self._infer(prepared, mask_on_grid, self.device, liver_on_grid)
            return liver, tumor, logits, pooled, self.device, warnings
        except torch.cuda.OutOfMemoryError:
            if self.device != "cuda":
                raise
            torch.cuda.empty_cache()
            warnings.append("GPU ran out of memory; prediction was rerun on the CPU")
            liver, tumor, logits, pooled = self._infer(prepared, mask_on_grid, "cpu", liver_on_grid)
            return liver, tumor, logits, pooled, "cpu (fallback from cuda: out of memory)", warnings

    def _infer(self, prepared, mask_on_grid, device, liver_on_grid=None):
        """Mean liver and tumor probabilities on the prepared grid, and each network's response logit and
        pooled sums."""
        multiple = self.networks[0].size_multiple
        volume, crop, pads = preprocessing.crop_to_body(prepared.array, self.spec.window, multiple)
        mask = None
        if mask_on_grid is not None:
            mask = np.pad(mask_on_grid[crop], [(0, p) for p in pads])
        liver_mask = None if liver_on_grid is None else np.pad(liver_on_grid[crop], [(0, p) for p in pads])
        valid = tuple(s.stop - s.start for s in crop)
        liver_sum = np.zeros(volume.shape[1:], np.float32)
        tumor_sum = np.zeros(volume.shape[1:], np.float32)
        logits, pooled = [], []
        for index, network in enumerate(self.networks):
            network.to(device)
            def on_tile(fraction, index=index):
                self.progress("network", (index + fraction) / len(self.networks))
            liver, tumor, sums = inference.run_network(network, volume, device, self.max_tile, self.margin, mask,
                                                       on_tile, liver_mask, valid=valid)
            liver_sum += liver
            tumor_sum += tumor
            with torch.inference_mode():
                logits.append(float(network.response_logit(sums).float().cpu()[0]))
            pooled.append(sums.float().cpu())
            network.to("cpu")
        n = float(len(self.networks))
        liver = np.zeros(prepared.array.shape[1:], np.float32)
        tumor = np.zeros(prepared.array.shape[1:], np.float32)
        inside = tuple(slice(0, size) for size in valid)
        liver[crop] = liver_sum[inside] / n
        tumor[crop] = tumor_sum[inside] / n
        return liver, tumor, logits, pooled
