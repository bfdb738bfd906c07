"""One synthetic case: anatomy, grid, lesions and outcome drawn from split random streams, then rendered."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from . import outcome as rm
from .acquisition import _label_image, _phase_image, _render_axes, _sample_grid
from .anatomy import _build_liver, _sample_anatomy, _sample_organs
from .appearance import PHASE_ORDER
from .lesions import _place_lesions
from .render import _render_classes
from .tissues import CONTEXT_LUT, LABEL_LUT, LIVER


@dataclass
class CaseResult:
    case_id: str
    images: dict  # phase -> SimpleITK.Image (int16 HU)
    label: sitk.Image  # uint8: 0 background, 1 liver (+vessels), 2 tumour
    context: sitk.Image  # uint8: 0 none, k = CONTEXT_NAMES[k - 1] (neighbouring organs, training only)
    lesions: list
    features: dict
    response_probability: float  # NaN when the case has no lesion
    response: int | None
    os_time: float
    os_event: int
    ttp_time: float
    ttp_event: int
    clinical: dict
    meta: dict = field(default_factory=dict)


def _normalize_phases(phases):
    if isinstance(phases, str):
        phases = [p for p in phases.split(",") if p]
    phases = list(dict.fromkeys(phases))
    bad = [p for p in phases if p not in PHASE_ORDER]
    if bad or not phases:
        raise ValueError(f"unknown or empty phases {bad or phases!r}; choose from {PHASE_ORDER}")
    return tuple(p for p in PHASE_ORDER if p in phases)


def generate_case(rng: np.random.Generator, case_id: str, phases=("portal_venous",), size_scale=1.0) -> CaseResult:
    """One synthetic case in memory (see module docstring)."""
    phases = _normalize_phases(phases)
    if not size_scale > 0:
        raise ValueError("size_scale must be > 0")
    seeds = rng.integers(0, 2**32, size=(5, 4))
    r_anat, r_grid, r_les, r_noise, r_out = (np.random.default_rng([int(x) for x in s]) for s in seeds)
    A = _sample_anatomy(r_anat)
    liver = _build_liver(r_anat, A)
    O = _sample_organs(r_anat, A, liver)
    grid = _sample_grid(r_grid, A, liver, float(size_scale))
    lesions = _place_lesions(r_les, A, liver, grid["z_window"])
    noise_sigma = r_noise.uniform(4, 35)
    phase_seeds = r_noise.integers(0, 2**32, size=(len(PHASE_ORDER), 4))
    # reconstruction kernel: negative in-plane weight = sharp (edge-enhancing) kernel, positive = smooth
    w_xy = float(r_noise.uniform(-0.08, 0.3))

    feats = rm.case_features(lesions)
    max_d = max([les["diameter_mm"] for les in lesions], default=0.0)
    clinical = rm.draw_clinical(r_out, feats, max_d)
    outcome = rm.draw_outcomes(r_out, feats, clinical)
    feats["eta"] = outcome["eta"]
    feats["liver_volume_ml_nominal"] = round(liver["volume_ml"], 1)

    axes, render_lo = _render_axes(grid)
    cls, tex_list = _render_classes(A, O, liver, lesions, axes)
    images = {}
    for ph in phases:
        pi = PHASE_ORDER.index(ph)
        ph_rng = np.random.default_rng([int(x) for x in phase_seeds[pi]])
        sigma = noise_sigma * (1.0 if ph == "portal_venous" else ph_rng.uniform(0.9, 1.1))
        images[ph] = _phase_image(cls, tex_list, A, lesions, ph, grid, render_lo, ph_rng, sigma, w_xy)
    label, context = (_label_image(lut, cls, grid, render_lo) for lut in (LABEL_LUT, CONTEXT_LUT))
    del cls, tex_list
    voxel_ml = float(np.prod(grid["spacing"])) / 1000
    counts = np.bincount(sitk.GetArrayViewFromImage(label).ravel(), minlength=3)

    pub = []
    for k, les in enumerate(lesions):
        d = {key: val for key, val in les.items() if not key.startswith("_")}
        d["index"] = k
        d["center_mm"] = [round(float(x), 2) for x in les["_blob"].center + grid["p0"]]
        d["volume_ml"] = round(d["volume_ml"], 3)
        d["necrosis_fraction"] = round(d["necrosis_fraction"], 4)
        pub.append(d)
    meta = {
        "orientation": grid["kind"],
        "direction": [round(float(x), 6) for x in grid["direction"].ravel()],
        "spacing": [round(float(x), 4) for x in grid["spacing"]],
        "size": [int(x) for x in grid["size"]],
        "noise_sigma_hu": round(float(noise_sigma), 2),
        "liver_cut": grid["liver_cut"],
        "fov_circle": grid["fov_circle"],
        "liver_hu": {ph: round(float(A["hu"][i, LIVER]), 2) for i, ph in enumerate(PHASE_ORDER)},
        "liver_volume_ml": round(float(counts[1] + counts[2]) * voxel_ml, 1),
        "tumor_volume_ml_in_image": round(float(counts[2]) * voxel_ml, 2),
    }
    meta["contrast_timing"] = [round(float(x), 3) for x in A["timing"]]
    meta["stomach_contents"] = O["stomach_contents"]
    return CaseResult(
        case_id=case_id,
        images=images,
        label=label,
        context=context,
        lesions=pub,
        features=feats,
        response_probability=float(outcome["response_probability"]),
        response=outcome["response"],
        os_time=outcome["os_time"],
        os_event=outcome["os_event"],
        ttp_time=outcome["ttp_time"],
        ttp_event=outcome["ttp_event"],
        clinical=clinical,
        meta=meta,
    )
