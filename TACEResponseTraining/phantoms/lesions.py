"""Liver lesions: 5 mm to 15 cm, solitary or multifocal, hypo-, iso- or hyper-dense or infiltrative, with
necrosis, capsule, exophytic growth and portal-vein tumour thrombus; features measured for the outcome model."""

from __future__ import annotations

import math

import numpy as np

from .appearance import PHASE_ORDER
from .geometry import _Blob, _blob_rho, _make_waves, _rand_rot, _smooth_noise, _upsample
from .tissues import LIVER, MAX_LESIONS


LESION_COUNT_PROBS = (0.10, 0.34, 0.18, 0.12, 0.08, 0.06, 0.05, 0.04, 0.03)  # 0..8 lesions
assert len(LESION_COUNT_PROBS) == MAX_LESIONS + 1
# portal venous washout of viable tumour below the liver: FLOOR + SPAN x vascularity (hypo-dense lesions).
# The floor (5 HU up to 2.1.0) keeps a hypo-dense lesion's viable tissue visible around its necrosis.
WASHOUT_FLOOR_HU = 12.0
WASHOUT_SPAN_HU = 38.0


def _place_lesions(rng, A, liver, z_window):
    """Draw 0-5 lesions inside the liver (center at depth >= 0.8 r, inside
    the scanned z window, not overlapping) and measure their features."""
    u = rng.uniform
    n = int(rng.choice(len(LESION_COUNT_PROBS), p=LESION_COUNT_PROBS))
    hu_l = A["hu"][:, LIVER]
    cells, dep = liver["cells"], liver["cell_depth"]
    lesions = []
    for _ in range(n):
        # 5 mm to 15 cm; multifocal disease adds satellites near the first lesion
        d = math.exp(u(math.log(5), math.log(150))) if not lesions or rng.random() < 0.6 \
            else math.exp(u(math.log(5), math.log(30)))
        v = rng.random()
        cap = bool(rng.random() < 0.5)
        nec = rng.random() * 0.6 * float(np.clip((d - 10) / 60, 0.1, 1.0))
        ratios = rng.uniform(0.8, 1.2, 3)
        ratios /= np.prod(ratios) ** (1 / 3)
        rot = _rand_rot(rng)
        infiltrative = bool(rng.random() < 0.15)  # ill-defined, irregular, near liver density
        cap = cap and not infiltrative
        exophytic = bool(rng.random() < 0.12)  # grows out of the liver surface
        density = "infiltrative" if infiltrative else str(rng.choice(["hypo", "iso", "hyper"], p=[0.7, 0.15, 0.15]))
        # the label's edge must be an edge the image shows (2.2.0): an iso-dense lesion is seen by its capsule,
        # and an infiltrative one has no dark core ringed by viable tissue at nearly the liver's density, which
        # taught the networks to draw a band of liver around every dark lesion
        cap = cap or density == "iso"
        nec = 0.0 if infiltrative else nec
        waves = _make_waves(rng, 6 if infiltrative else 3, 1.0, *((0.08, 0.18) if infiltrative else (0.02, 0.06)))
        nec_waves = _make_waves(rng, 2, 1.0, 0.05, 0.12)
        cap_t = u(1.5, 3.0)
        nec_hu = u(10, 30)
        cap_hu = (hu_l[0] - 5, hu_l[1] + u(-5, 5), hu_l[2] + u(25, 40))
        center = None
        for _attempt in range(6):
            r = d / 2
            depth_ok = (dep >= 0.1 * r) & (dep <= 0.6 * r) if exophytic else dep >= 0.8 * r
            ok = depth_ok & (cells[:, 2] >= z_window[0] + r) & (cells[:, 2] <= z_window[1] - r)
            for les in lesions:
                ok &= np.linalg.norm(cells - les["_blob"].center, axis=1) >= r + les["_r"] + 3
            if ok.any():
                idx = np.nonzero(ok)[0]
                center = cells[idx[int(rng.integers(idx.size))]] + rng.uniform(-1.5, 1.5, 3)
                break
            d *= 0.8
        if center is None:
            continue
        r = d / 2
        cap_t = min(cap_t, 0.1 * r)  # keep small lesions from being all rim
        blob = _Blob(center, r * ratios, rot, [(g / r, ph, a) for g, ph, a in waves])
        nec_w = [(g / r, ph, a) for g, ph, a in nec_waves]
        les = {
            "_blob": blob,
            "_r": r,
            "_nec_waves": nec_w,
            "_nec_thr": nec ** (1 / 3),
            "_cap_t": cap_t,
            "nominal_diameter_mm": round(d, 2),
            "vascularity": float(v),
            "necrosis_fraction_nominal": float(nec),
            "capsule": cap,
            "capsule_thickness_mm": round(cap_t, 2) if cap else 0.0,
            "density": density,
            "exophytic": exophytic,
            "hu": {
                "native": float(hu_l[0] - 10),
                "arterial": float(hu_l[1] + 30 + 90 * v),
                # washout grows with vascularity (the outcome model's driver); iso- and hyper-dense and
                # infiltrative lesions are the hard cases of real portal venous CT
                "portal_venous": float(hu_l[2] - (WASHOUT_FLOOR_HU + WASHOUT_SPAN_HU * v)
                                       * {"hypo": 1.0, "iso": 0.2, "hyper": -0.6, "infiltrative": 0.3}[density]),
            },
            "necrosis_hu": float(nec_hu),
            "capsule_hu": {ph: float(x) for ph, x in zip(PHASE_ORDER, cap_hu)},
        }
        ext = blob.extent() * 1.1
        tshape = tuple(int(2 * ext / 3.0) + 2 for _ in range(3))
        les["_tex"] = (_smooth_noise(rng, tshape, 1.2), center - ext)
        _measure_lesion(les, liver)
        lesions.append(les)
    if lesions and rng.random() < 0.12:  # portal vein tumour thrombus: the main branches filled by tumour
        lesions[0]["_pvtt_segments"] = int(rng.integers(1, 4))
    return lesions


def _lesion_parts(les, xs, ys, zs):
    """Boolean masks (inside, necrosis, capsule) of a lesion on separable coords."""
    blob = les["_blob"]
    rho, rho_n = _blob_rho(xs, ys, zs, blob, les["_nec_waves"])
    inside = rho < 1
    nec = rho_n < les["_nec_thr"]
    r_geo = float(np.prod(blob.semi) ** (1 / 3))
    cap = rho > 1 - les["_cap_t"] / r_geo if les["capsule"] else np.zeros_like(inside)
    return inside, nec, cap


def _measure_lesion(les, liver):
    """Volume, necrotic fraction and longest diameter on a grid tied to the
    lesion (~24 points across), so features do not depend on the image grid."""
    blob = les["_blob"]
    ext = blob.extent()
    h = ext / 12.0
    ax = [blob.center[i] + h * np.arange(-12, 13) for i in range(3)]
    inside, nec, cap = _lesion_parts(les, *ax)
    liv = _upsample(liver["field"], liver["origin"], liver["spacing"], *ax) > 0
    inside &= liv
    n_in = int(inside.sum())
    if n_in == 0:  # cannot happen for centres deep in the liver; keep a floor
        inside[12, 12, 12] = True
        n_in = 1
    nec_n = int((inside & nec & ~cap).sum())
    zi, yi, xi = np.nonzero(inside)
    d = np.stack([ax[0][xi], ax[1][yi], ax[2][zi]], axis=1) - blob.center
    loc = d @ blob.rot
    diam = float((loc.max(axis=0) - loc.min(axis=0)).max() + h)
    les["volume_ml"] = float(n_in * h**3 / 1000)
    les["necrosis_fraction"] = float(nec_n / n_in)
    les["diameter_mm"] = round(diam, 2)
