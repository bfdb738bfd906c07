"""Synthetic abdominal CT phantoms with HCC lesions and TACE outcomes.

Each case is an axial CT-like volume (int16 HU) in one or more contrast
phases, a label map (0 background, 1 liver incl. vessels, 2 tumour) and an
outcome drawn from the documented model in :mod:`response_model`.

Design notes (why things are done this way):

* Anatomy lives in a *patient frame* (LPS axes, origin at the right
  diaphragm dome apex, shifted to scanner coordinates by a random offset).
  The image grid (spacing, flips, obliquity) is drawn independently, so it
  changes storage, never anatomy.
* Content is rendered as a uint8 tissue-class volume on an axis-aligned
  "render grid"; each phase is a lookup table of HU per class plus smooth
  textures.  Flipped grids are exact array flips of the render grid; oblique
  grids are resampled from it.  Noise and partial-volume blur are applied
  last, in storage index space, as the scanner would.
* Random streams are split (anatomy, grid, lesions, noise, outcome) so that
  e.g. size_scale or the list of phases does not change the anatomy or the
  outcome of a case.  Lesion features driving the outcome are measured on a
  grid tied to each lesion, independent of the image grid.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from multiprocessing import get_context

import numpy as np
import SimpleITK as sitk
from scipy import ndimage, special

from . import response_model as rm
from .metrics import roc_auc

GENERATOR_NAME = "tace_response_synth"
GENERATOR_VERSION = "1.0.0"
PHASE_ORDER = ("native", "arterial", "portal_venous")  # acquisition order
SLICE_SPACINGS = (1.0, 1.25, 2.0, 2.5, 3.0, 5.0)
LESION_COUNT_PROBS = (0.10, 0.40, 0.22, 0.14, 0.08, 0.06)  # 0..5 lesions
# Probabilities of grid orientation kinds; tests monkeypatch this.
_ORIENTATION_WEIGHTS = {"identity": 0.70, "flip": 0.20, "oblique": 0.10}
_FLIPS = ((-1, -1, 1), (1, 1, -1), (-1, 1, 1), (1, -1, -1))

F32 = np.float32
_COARSE_MM = 3.0  # liver shape grid (patient frame)
_CHUNK = 12  # slices per chunk in the noise/blur pass (bounds memory)
_W_XY = 0.2  # in-plane 3-tap PSF weight (sigma ~0.6 px)
_W_Z = 0.15  # slice-direction 3-tap weight (sigma ~0.55 slice, i.e. prop. to thickness)

# Tissue classes of the internal class volume.
AIR, TABLE_CORE, TABLE_SHELL, SKIN, FAT, MUSCLE, VFAT, RIB = range(8)
PARASPINAL, VERT_CANC, VERT_CORT, DISC, CANAL, POST_ELEM, AORTA, IVC = range(8, 16)
LUNG, DIAPHRAGM, HEART, KID_CORTEX, KID_MEDULLA, SPLEEN = range(16, 22)
STOM_WALL, STOM_CONTENT, GAS, BOWEL, GALLBLADDER = range(22, 27)
LIVER, PORTAL, HEPATIC = 30, 31, 32
LESION_BASE = 40  # lesion k uses LESION_BASE + 3k + (0 viable, 1 necrosis, 2 capsule)

LABEL_LUT = np.zeros(256, np.uint8)
LABEL_LUT[[LIVER, PORTAL, HEPATIC]] = 1
LABEL_LUT[LESION_BASE : LESION_BASE + 3 * 5] = 2


def _allowed(*classes):
    lut = np.zeros(256, bool)
    lut[list(classes)] = True
    return lut


_IN_VFAT = _allowed(VFAT)
_IN_LUNG = _allowed(LUNG)
_IN_LIVER = _allowed(LIVER)
_IN_LIVER_ANY = _allowed(LIVER, PORTAL, HEPATIC)


@dataclass
class CaseResult:
    case_id: str
    images: dict  # phase -> SimpleITK.Image (int16 HU)
    label: sitk.Image  # uint8: 0 background, 1 liver (+vessels), 2 tumour
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


# --------------------------------------------------------------------------
# small numeric helpers
# --------------------------------------------------------------------------
@dataclass
class _Blob:
    center: np.ndarray  # patient frame, mm
    semi: np.ndarray  # semi-axes, mm
    rot: np.ndarray  # columns = local axes
    waves: list  # [(g(3,), phase, amp)], radius scaled by 1/(1+sum amp*sin(g.d+phase))

    def extent(self) -> float:
        amp = sum(w[2] for w in self.waves)
        return float(self.semi.max() / max(1.0 - amp, 0.5))


def _rand_rot(rng, max_deg=None):
    """Random rotation: uniform (max_deg None) or a small tilt about a random axis."""
    if max_deg is None:
        q = rng.standard_normal(4)
        q /= np.linalg.norm(q)
        w, x, y, z = q
        return np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    ang = math.radians(rng.uniform(-max_deg, max_deg))
    return _axis_angle(axis, ang)


def _axis_angle(axis, ang):
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(ang) * k + (1 - math.cos(ang)) * (k @ k)


def _rot_z(deg):
    return _axis_angle(np.array([0.0, 0.0, 1.0]), math.radians(deg))


def _make_waves(rng, k, scale_mm, amp_lo, amp_hi):
    out = []
    for _ in range(k):
        g = rng.standard_normal(3)
        g *= rng.uniform(1.5, 3.0) / (np.linalg.norm(g) * scale_mm)
        out.append((g, float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(amp_lo, amp_hi))))
    return out


def _waves_eps(dx, dy, dz, waves):
    eps = None
    for g, ph, amp in waves:
        arg = (float(g[0]) * dx)[None, None, :] + (float(g[1]) * dy)[None, :, None]
        arg = arg + (float(g[2]) * dz + ph)[:, None, None]
        np.sin(arg, out=arg)
        arg *= amp
        eps = arg if eps is None else np.add(eps, arg, out=eps)
    return eps


def _blob_rho(xs, ys, zs, blob, extra_waves=None):
    """Normalised radius of a perturbed ellipsoid on separable coordinates
    (xs, ys, zs 1-D, patient frame); <1 inside.  Optionally also a second
    radius with extra perturbation (necrotic core)."""
    dx = (xs - blob.center[0]).astype(F32)
    dy = (ys - blob.center[1]).astype(F32)
    dz = (zs - blob.center[2]).astype(F32)
    rho2 = None
    for k in range(3):
        q = blob.rot[:, k] / blob.semi[k]
        u = (float(q[0]) * dx)[None, None, :] + (float(q[1]) * dy)[None, :, None]
        u = u + (float(q[2]) * dz)[:, None, None]
        u *= u
        rho2 = u if rho2 is None else np.add(rho2, u, out=rho2)
    rho = np.sqrt(rho2, out=rho2)
    if blob.waves:
        eps = _waves_eps(dx, dy, dz, blob.waves)
        eps += 1.0
        rho *= eps
    if extra_waves is None:
        return rho
    eps = _waves_eps(dx, dy, dz, extra_waves)
    eps += 1.0
    eps *= rho
    return rho, eps


def _box(axes, lo, hi):
    """Index box of the render grid inside [lo, hi] (patient mm, x,y,z).
    Returns (numpy slices z,y,x, [xs, ys, zs] sub-coordinates) or None."""
    sl, sub = [], []
    for ax, a, b in zip(axes, lo, hi):
        i0 = int(np.searchsorted(ax, a))
        i1 = int(np.searchsorted(ax, b, side="right"))
        if i1 <= i0:
            return None
        sl.append(slice(i0, i1))
        sub.append(ax[i0:i1])
    return (sl[2], sl[1], sl[0]), sub


def _interp1(a, axis, pos):
    n = a.shape[axis]
    pos = np.clip(pos, 0, n - 1)
    i0 = np.minimum(np.floor(pos).astype(np.intp), max(n - 2, 0))
    i1 = np.minimum(i0 + 1, n - 1)
    shape = [1] * a.ndim
    shape[axis] = -1
    w = (pos - i0).astype(F32).reshape(shape)
    out = np.take(a, i0, axis)
    out *= 1 - w
    out += np.take(a, i1, axis) * w
    return out


def _upsample(coarse, origin, spacing, xs, ys, zs):
    """Separable trilinear interpolation of a (z,y,x) coarse field at the
    separable coordinates xs, ys, zs (cheaper than map_coordinates)."""
    out = _interp1(coarse, 2, (xs - origin[0]) / spacing)
    out = _interp1(out, 1, (ys - origin[1]) / spacing)
    return _interp1(out, 0, (zs - origin[2]) / spacing)


def _smooth_noise(rng, shape, sigma):
    n = rng.standard_normal(shape).astype(F32)
    n = ndimage.gaussian_filter(n, sigma, mode="reflect")
    n /= max(float(n.std()), 1e-6)
    return n


def _paint(cls, sl, mask, value, allowed):
    sub = cls[sl]
    m = mask & allowed[sub]
    sub[m] = value
    return m


# --------------------------------------------------------------------------
# anatomy (patient frame: +x patient left, +y posterior, +z superior; mm)
# --------------------------------------------------------------------------
def _sample_tissue_hu(rng):
    """(native, arterial, portal_venous) HU per class for one case."""
    u = rng.uniform
    fat = u(-118, -85)
    musc = u(40, 50)
    hu = np.zeros((3, 256), F32)

    def put(c, n, a=None, p=None):
        hu[:, c] = (n, n if a is None else a, n if p is None else p)

    put(AIR, -1000.0)
    put(TABLE_CORE, u(-880, -820))
    put(TABLE_SHELL, u(200, 400))
    s = u(20, 40)
    put(SKIN, s, s + 5, s + 10)
    put(FAT, fat)
    put(MUSCLE, musc, musc + 5, musc + 10)
    put(VFAT, fat + u(0, 10))
    put(RIB, u(350, 550))
    put(PARASPINAL, musc, musc + 5, musc + 10)
    put(VERT_CANC, u(250, 400))
    put(VERT_CORT, u(700, 1000))
    put(DISC, u(70, 100))
    put(CANAL, u(15, 35))
    put(POST_ELEM, u(400, 650))
    put(AORTA, u(35, 50), u(250, 380), u(140, 180))
    put(IVC, u(35, 50), u(70, 110), u(120, 150))
    put(LUNG, u(-880, -820))
    put(DIAPHRAGM, musc, musc + 5, musc + 10)
    put(HEART, u(35, 50), u(200, 300), u(120, 160))
    put(KID_CORTEX, u(25, 40), u(170, 230), u(150, 190))
    put(KID_MEDULLA, u(25, 40), u(80, 120), u(140, 180))
    put(SPLEEN, u(40, 50), u(110, 150), u(110, 130))
    put(STOM_WALL, u(35, 45), u(70, 100), u(70, 95))
    put(STOM_CONTENT, u(5, 30))
    put(GAS, u(-1000, -960))
    put(BOWEL, u(25, 40), u(50, 80), u(60, 90))
    put(GALLBLADDER, u(0, 20))
    put(LIVER, u(50, 62), u(70, 90), u(100, 130))
    put(PORTAL, u(35, 45), u(110, 150), u(160, 190))
    put(HEPATIC, u(35, 45), u(60, 80), u(150, 180))
    return hu


def _sample_anatomy(rng):
    u = rng.uniform
    A = {}
    A["a"], A["b"], A["p"] = u(140, 180), u(100, 130), u(2.0, 2.6)
    A["skin"], A["fat"], A["fat_mod"], A["fat_phase"] = u(1.5, 2.5), u(10, 30), u(0, 0.4), u(-math.pi, math.pi)
    A["musc"] = u(8, 15)
    wall = A["skin"] + A["fat"] + A["musc"]
    A["a_c"], A["b_c"] = A["a"] - wall, A["b"] - wall  # approximate cavity semi-axes
    # spine and retroperitoneum
    A["y_v"] = A["b"] - u(70, 82)
    A["rv"] = (u(20, 26), u(16, 21))
    A["cort"] = u(1.5, 2.5)
    A["canal"] = (u(9, 12), u(7, 9))
    A["y_c"] = A["y_v"] + A["rv"][1] + A["canal"][1] + u(1, 3)
    A["para"] = (u(30, 40), A["y_c"] + u(0, 8), u(20, 28), u(16, 22))
    A["spinous_w"] = u(3.0, 4.5)
    A["disc"] = (u(30, 36), u(7, 10), u(0, 36))  # pitch, thickness, phase
    r_ao = u(10, 14)
    A["aorta"] = (u(12, 25), A["y_v"] - A["rv"][1] - r_ao - u(2, 6), r_ao)
    ivc_s = (u(11, 15), u(8, 12))
    A["ivc"] = (-u(20, 32), A["y_v"] - A["rv"][1] - ivc_s[1] - u(2, 10), ivc_s[0], ivc_s[1])
    A["table"] = (u(0, 3), u(8, 14), u(200, 260))  # gap, thickness, half width
    # diaphragm domes: h(x,y) = max(-k|p-R|^2, zL - k|p-L|^2)
    A["dome"] = (-u(0.35, 0.5) * A["a_c"], u(-15, 15), u(0.35, 0.5) * A["a_c"], u(-15, 15), -u(10, 25), u(0.004, 0.007))
    A["t_dia"] = u(3, 5)
    A["ribs"] = (u(28, 36), u(9, 13), u(0, 36), u(100, 150), -u(110, 150))  # pitch, width, phase, drop, zmin
    A["hu"] = _sample_tissue_hu(rng)
    A["tex_amp_liver"] = (u(1.5, 3), u(2, 4), u(2, 4))
    return A


def _body_depth(X, Y, A):
    """Depth below the skin (mm, <0 outside) of a superellipse body, and
    the local subcutaneous fat thickness."""
    r = np.hypot(X, Y)
    phi = np.arctan2(Y, X)
    p = A["p"]
    rb = 1.0 / ((np.abs(np.cos(phi)) / A["a"]) ** p + (np.abs(np.sin(phi)) / A["b"]) ** p) ** (1.0 / p)
    fat = A["fat"] * (1 + A["fat_mod"] * np.cos(phi - A["fat_phase"]))
    return rb - r, fat, phi


def _dome(X, Y, A):
    xr, yr, xl, yl, zl, k = A["dome"]
    return np.maximum(-k * ((X - xr) ** 2 + (Y - yr) ** 2), zl - k * ((X - xl) ** 2 + (Y - yl) ** 2))


def _body_map(xs, ys, A):
    """2-D class map of the axial cross-section (body, spine, great vessels,
    table); these structures are treated as constant along z."""
    X = xs[None, :].astype(np.float64)
    Y = ys[:, None].astype(np.float64)
    X, Y = np.broadcast_arrays(X, Y)
    depth, fat, phi = _body_depth(X, Y, A)
    skin, musc = A["skin"], A["musc"]
    m = np.full(X.shape, AIR, np.uint8)
    m[depth >= 0] = SKIN
    m[depth >= skin] = FAT
    m[depth >= skin + fat] = MUSCLE
    m[depth >= skin + fat + musc] = VFAT
    # table under the patient
    gap, tt, hw = A["table"]
    y0 = A["b"] + gap
    tab = (Y >= y0) & (Y <= y0 + tt) & (np.abs(X) <= hw) & (m == AIR)
    m[tab] = TABLE_CORE
    m[tab & ((Y <= y0 + 1.5) | (Y >= y0 + tt - 1.5))] = TABLE_SHELL
    inner = (m == VFAT) | (m == MUSCLE)
    xp, yp, sxp, syp = A["para"]
    for sgn in (-1, 1):
        e = ((X - sgn * xp) / sxp) ** 2 + ((Y - yp) / syp) ** 2
        m[(e < 1) & inner] = PARASPINAL
    inner = inner | (m == PARASPINAL)
    # vertebra: posterior arch, body with cortical rim, canal, spinous process
    cx, cy = A["canal"]
    y_c, y_v = A["y_c"], A["y_v"]
    ring = ((X / (cx + 5)) ** 2 + ((Y - y_c) / (cy + 5)) ** 2 < 1) & (Y > y_v) & inner
    post_fat = A["skin"] + A["fat"] * (1 + A["fat_mod"] * math.cos(math.pi / 2 - A["fat_phase"]))
    spin = (np.abs(X) < A["spinous_w"]) & (Y > y_c) & (Y < A["b"] - post_fat - 4) & inner
    m[ring | spin] = POST_ELEM
    rvx, rvy = A["rv"]
    ev = np.sqrt((X / rvx) ** 2 + ((Y - y_v) / rvy) ** 2)
    vb = (ev < 1) & inner
    m[vb] = VERT_CANC
    m[vb & (ev > 1 - A["cort"] / min(rvx, rvy))] = VERT_CORT
    m[((X / cx) ** 2 + ((Y - y_c) / cy) ** 2 < 1) & inner] = CANAL
    ax, ay, ar = A["aorta"]
    m[(((X - ax) ** 2 + (Y - ay) ** 2) < ar * ar) & (m == VFAT)] = AORTA
    ix, iy, isx, isy = A["ivc"]
    m[(((X - ix) / isx) ** 2 + ((Y - iy) / isy) ** 2 < 1) & (m == VFAT)] = IVC
    return m, depth, fat, phi


def _build_liver(rng, A):
    """Liver as the zero level set of a smooth field on a 3 mm patient-frame
    grid: soft union of two lobes + low-frequency noise, clipped to the
    abdominal cavity, below the diaphragm and away from the spine.  The
    threshold is set so the volume hits a drawn target."""
    u = rng.uniform
    a_c, b_c = A["a_c"], A["b_c"]
    v_target = u(1200, 2200)
    semi_r = np.array([u(65, 85), u(0.75, 0.9) * b_c, u(70, 90)])
    semi_l = np.array([u(45, 65), u(25, 40), u(30, 45)])
    v_nom = 4 / 3 * math.pi * (np.prod(semi_r) + 0.7 * np.prod(semi_l)) / 1000
    s = float(np.clip((1.15 * v_target / v_nom) ** (1 / 3), 0.8, 1.3))
    semi_r, semi_l = semi_r * s, semi_l * s
    c_r = np.array([-a_c + semi_r[0] * u(0.85, 0.95), u(-0.1, 0.1) * b_c, -semi_r[2] + u(5, 15)])
    c_l = np.array([u(0, 30), -b_c + semi_l[1] + u(5, 20), -u(25, 45)])
    x_left = u(0.5, 0.75) * a_c  # left lobe tip stops short of the spleen
    rot_r = _rot_z(u(-15, 15)) @ _rand_rot(rng, 8)
    rot_l = _rot_z(u(-25, 0))
    noise_amp = u(0.10, 0.22)
    h = _COARSE_MM
    origin = np.array([-a_c - 8, -b_c - 8, -240.0])
    shape = (int(270 / h), int((2 * b_c + 16) / h) + 1, int((2 * a_c + 16) / h) + 1)  # z,y,x
    xs = origin[0] + h * np.arange(shape[2])
    ys = origin[1] + h * np.arange(shape[1])
    zs = origin[2] + h * np.arange(shape[0])
    k = 5.0
    fr = 1 - _blob_rho(xs, ys, zs, _Blob(c_r, semi_r, rot_r, [])) ** 2
    fl = 1 - _blob_rho(xs, ys, zs, _Blob(c_l, semi_l, rot_l, [])) ** 2
    f = np.logaddexp(k * fr, k * fl) / k
    f += noise_amp * _smooth_noise(rng, shape, 15.0 / h)
    tex = _smooth_noise(rng, shape, 2.0)  # parenchymal texture, reused per phase
    # clipping field (mm-ish, >0 allowed): cavity, under the dome, off the spine
    X, Y = np.meshgrid(xs, ys)
    depth, fat, _ = _body_depth(X, Y, A)
    g_cav = (depth - (A["skin"] + fat + A["musc"]) - 1.5) / 10.0
    rvx, rvy = A["rv"]
    g_rp = (np.sqrt((X / (rvx + 20)) ** 2 + ((Y - A["y_v"]) / (rvy + 22)) ** 2) - 1) * 3
    xp, yp, sxp, syp = A["para"]
    for sgn in (-1, 1):  # keep clear of the paraspinal muscles
        g_rp = np.minimum(g_rp, (np.sqrt(((X - sgn * xp) / (sxp + 3)) ** 2 + ((Y - yp) / (syp + 3)) ** 2) - 1) * 3)
    dome = _dome(X, Y, A)
    clip = np.minimum(np.minimum(g_cav, g_rp), (x_left - X) / 10.0)[None].astype(F32)
    clip = np.minimum(clip, ((dome[None] - zs[:, None, None] - 1.0) / 10.0).astype(F32))
    allowed = clip > 0
    vals = f[allowed]
    n_target = int(v_target * 1000 / h**3)
    if n_target < vals.size:
        tau = float(np.partition(vals, vals.size - n_target)[vals.size - n_target])
    else:
        tau = float(vals.min())
    tau = max(tau, -0.5)
    field_ = np.minimum(f - tau, clip).astype(F32)
    mask = field_ > 0
    depth3 = ndimage.distance_transform_edt(mask).astype(F32) * h
    zz = np.nonzero(mask.any(axis=(1, 2)))[0]
    cells = np.argwhere(mask)
    pts = np.stack([xs[cells[:, 2]], ys[cells[:, 1]], zs[cells[:, 0]]], axis=1)
    return {
        "origin": origin,
        "spacing": h,
        "xs": xs,
        "ys": ys,
        "zs": zs,
        "field": field_,
        "tex": tex,
        "depth": depth3,
        "mask": mask,
        "cells": pts,
        "cell_depth": depth3[mask],
        "z_range": (float(zs[zz[0]] - h / 2), float(zs[zz[-1]] + h / 2)),
        "volume_ml": float(mask.sum() * h**3 / 1000),
        "target_volume_ml": v_target,
    }


def _liver_depth(liver, p):
    """Distance (mm) of point p to the liver surface, 0 outside."""
    idx = np.round((np.asarray(p) - liver["origin"]) / liver["spacing"]).astype(int)[::-1]
    if np.any(idx < 0) or np.any(idx >= np.array(liver["depth"].shape)):
        return 0.0
    return float(liver["depth"][tuple(idx)])


def _vessel_tree(rng, liver, root, dirs, radii, max_gen, r_min=1.8, max_segments=90):
    """Random branching tubes [(a, b, r_a, r_b)] kept inside the liver."""
    segs = []
    stack = [(np.asarray(root, float), np.asarray(d, float) / np.linalg.norm(d), r, 0) for d, r in zip(dirs, radii)]
    while stack and len(segs) < max_segments:
        p, d, r, gen = stack.pop()
        length = rng.uniform(18, 35) * math.sqrt(r / 4.0)
        q = None
        for frac in (1.0, 0.7, 0.45):
            cand = p + d * length * frac
            if _liver_depth(liver, cand) >= 0.7 * r + 1.5:
                q = cand
                break
        if q is None:
            continue
        r_end = r * rng.uniform(0.85, 0.95)
        segs.append((p, q, r, r_end))
        if gen >= max_gen:
            continue
        perp = rng.standard_normal(3)
        perp -= perp.dot(d) * d
        perp /= np.linalg.norm(perp) + 1e-9
        for sgn in (-1, 1):
            ang = math.radians(rng.uniform(20, 45))
            nd = _axis_angle(perp, sgn * ang) @ d
            nr = r_end * rng.uniform(0.65, 0.85)
            if nr >= r_min:
                stack.append((q, nd, nr, gen + 1))
    return segs


def _sample_organs(rng, A, liver):
    """Organ blobs and vessel trees (patient frame), drawn after the liver
    so they can sit relative to it."""
    u = rng.uniform
    a_c, b_c = A["a_c"], A["b_c"]
    z_lo, z_hi = liver["z_range"]
    O = {}

    def blob(c, semi, rot, nw=2, amp=(0.02, 0.06)):
        semi = np.asarray(semi, float)
        return _Blob(np.asarray(c, float), semi, rot, _make_waves(rng, nw, float(semi.mean()), *amp))

    O["heart"] = blob((u(0, 30), -0.3 * b_c, u(50, 70)), (u(50, 65), u(40, 50), u(45, 55)), _rot_z(u(-30, 0)))
    y_k = A["y_v"] + u(0, 12)
    O["kidney_r"] = blob((-u(55, 70), y_k, z_lo + u(20, 45)), (u(25, 32), u(22, 28), u(48, 58)), _rand_rot(rng, 15))
    O["kidney_l"] = blob((u(55, 70), y_k, z_lo + u(35, 60)), (u(25, 32), u(22, 28), u(48, 58)), _rand_rot(rng, 15))
    O["spleen"] = blob((a_c - u(35, 50), 0.35 * b_c, -u(50, 80)), (u(25, 35), u(45, 60), u(45, 60)), _rot_z(u(25, 55)))
    O["stomach"] = blob((u(40, 70), -0.3 * b_c, -u(50, 80)), (u(35, 50), u(25, 40), u(40, 60)), _rand_rot(rng, 20), 3, (0.03, 0.08))
    O["stomach_gas"] = u(-0.7, -0.2)
    # gallbladder straddling the inferior liver surface
    O["gallbladder"] = None
    gb_u = (rng.random(), u(15, 45), u(0.2, 0.45), u(0, 15), u(12, 18), u(12, 18), u(30, 45))
    if gb_u[0] < 0.7:
        gx, gy = -gb_u[1], -gb_u[2] * b_c
        ix = int(round((gx - liver["origin"][0]) / liver["spacing"]))
        iy = int(round((gy - liver["origin"][1]) / liver["spacing"]))
        m = liver["mask"]
        if 0 <= ix < m.shape[2] and 0 <= iy < m.shape[1] and m[:, iy, ix].any():
            gz = liver["zs"][np.nonzero(m[:, iy, ix])[0][0]] + gb_u[3]
            O["gallbladder"] = blob((gx, gy, gz), gb_u[4:], _rand_rot(rng, 25))
    bowel = []
    for _ in range(int(rng.integers(10, 21))):
        c = (u(-a_c + 25, a_c - 25), u(-b_c + 25, 0.3 * b_c), u(z_lo - 90, z_lo + 10))
        r = u(12, 25)
        bowel.append((blob(c, (r * u(0.8, 1.2), r * u(0.8, 1.2), r * u(0.8, 1.5)), _rand_rot(rng)), rng.random() < 0.5, u(0.2, 0.6)))
    O["bowel"] = bowel
    # portal vein from the hilum; hepatic veins converging on the IVC
    cells, dep = liver["cells"], liver["cell_depth"]

    def nearest_inside(target, min_depth):
        ok = dep >= min_depth
        pool = cells[ok] if ok.any() else cells
        return pool[np.argmin(np.linalg.norm(pool - target, axis=1))]

    hilum = nearest_inside(np.array([-u(10, 30), u(-10, 20), z_lo + 0.35 * (z_hi - z_lo)]), 8)
    O["portal"] = _vessel_tree(
        rng, liver, hilum, [(-1, 0.2, 0.3), (1, -0.6, 0.2)], [u(5.5, 7.5), u(4.5, 6.5)], max_gen=5
    )
    ix_, iy_, _, isy = A["ivc"]
    conf = nearest_inside(np.array([ix_, iy_ - isy, z_hi - u(15, 30)]), 6)
    O["hepatic"] = _vessel_tree(
        rng,
        liver,
        conf,
        [(-1, -0.2, -0.5), (-0.2, -1, -0.6), (0.6, -1, -0.4)],
        [u(4.5, 6.5), u(4, 6), u(3.5, 5.5)],
        max_gen=4,
    )
    return O


# --------------------------------------------------------------------------
# lesions
# --------------------------------------------------------------------------
def _place_lesions(rng, A, liver, z_window):
    """Draw 0-5 lesions inside the liver (center at depth >= 0.8 r, inside
    the scanned z window, not overlapping) and measure their features."""
    u = rng.uniform
    n = int(rng.choice(len(LESION_COUNT_PROBS), p=LESION_COUNT_PROBS))
    hu_l = A["hu"][:, LIVER]
    cells, dep = liver["cells"], liver["cell_depth"]
    lesions = []
    for _ in range(n):
        d = math.exp(u(math.log(10), math.log(90)))
        v = rng.random()
        cap = bool(rng.random() < 0.5)
        nec = rng.random() * 0.6 * float(np.clip((d - 10) / 60, 0.1, 1.0))
        ratios = rng.uniform(0.8, 1.2, 3)
        ratios /= np.prod(ratios) ** (1 / 3)
        rot = _rand_rot(rng)
        waves = _make_waves(rng, 3, 1.0, 0.02, 0.06)  # scaled to the radius below
        nec_waves = _make_waves(rng, 2, 1.0, 0.05, 0.12)
        cap_t = u(1.5, 3.0)
        nec_hu = u(10, 30)
        cap_hu = (hu_l[0] - 5, hu_l[1] + u(-5, 5), hu_l[2] + u(25, 40))
        center = None
        for _attempt in range(6):
            r = d / 2
            ok = (dep >= 0.8 * r) & (cells[:, 2] >= z_window[0] + r) & (cells[:, 2] <= z_window[1] - r)
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
            "hu": {
                "native": float(hu_l[0] - 10),
                "arterial": float(hu_l[1] + 30 + 90 * v),
                "portal_venous": float(hu_l[2] - (5 + 40 * v)),
            },
            "necrosis_hu": float(nec_hu),
            "capsule_hu": {ph: float(x) for ph, x in zip(PHASE_ORDER, cap_hu)},
        }
        ext = blob.extent() * 1.1
        tshape = tuple(int(2 * ext / 3.0) + 2 for _ in range(3))
        les["_tex"] = (_smooth_noise(rng, tshape, 1.2), center - ext)
        _measure_lesion(les, liver)
        lesions.append(les)
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


# --------------------------------------------------------------------------
# image grid
# --------------------------------------------------------------------------
def _choose_orientation(rng):
    """Direction matrix (columns = index axes in LPS) of one case."""
    u_kind, u_flip, ang, u_sign, u_axis = rng.random(), rng.random(), rng.uniform(2, 8), rng.random(), rng.random()
    w = _ORIENTATION_WEIGHTS
    tot = sum(w.values())
    if u_kind < w["identity"] / tot:
        return "identity", np.eye(3)
    if u_kind < (w["identity"] + w["flip"]) / tot:
        return "flip", np.diag(np.array(_FLIPS[int(u_flip * len(_FLIPS))], float))
    axis = np.array([0.0, 0.0, 1.0]) if u_axis < 0.5 else np.array([1.0, 0.0, 0.0])
    return "oblique", _axis_angle(axis, math.radians(ang if u_sign < 0.5 else -ang))


def _sample_grid(rng, A, liver, size_scale):
    u = rng.uniform
    sxy, sz = u(0.65, 1.0), float(SLICE_SPACINGS[int(rng.integers(len(SLICE_SPACINGS)))])
    fov = float(np.clip(max(u(300, 400), 2 * A["a"] + u(-10, 20)), 300, 400))
    kind, D = _choose_orientation(rng)
    cut_u, top_u, cut_mm, e_u, m_u = rng.random(), rng.random(), u(10, 40), rng.random(), rng.random()
    off = (rng.normal(0, 5), u(0, 20))
    p0 = np.array([u(-20, 20), u(-40, 10), u(-900, -700)])
    circle = bool(rng.random() < 0.4)
    lz0, lz1 = liver["z_range"]
    H = lz1 - lz0
    cut = cut_u < 0.10
    if not cut:
        e_min = max(150.0, H + 20)
        E = e_min + e_u * (max(260.0, e_min) - e_min)
        top = 10 + m_u * (E - H - 20)
        z_hi = lz1 + top
        z_lo = z_hi - E
    else:
        E = 150 + e_u * 110
        if top_u < 0.5:  # liver dome outside the scan
            z_hi = lz1 - cut_mm
            z_lo = min(z_hi - E, lz0 - 10)
        else:  # inferior tip outside the scan
            z_lo = lz0 + cut_mm
            z_hi = max(z_lo + E, lz1 + 10)
    spacing = np.array([sxy, sxy, sz]) * size_scale
    nxy = max(8, int(round(fov / spacing[0])))
    nz = max(4, int(round((z_hi - z_lo) / spacing[2])) + 1)
    size = np.array([nxy, nxy, nz])
    center = p0 + np.array([off[0], off[1], 0.5 * (z_lo + z_hi)])
    origin = center - D @ (spacing * (size - 1) / 2)
    return {
        "kind": kind,
        "direction": D,
        "spacing": spacing,
        "size": size,
        "origin": origin,
        "center": center,
        "p0": p0,
        "fov_circle": circle,
        "liver_cut": ("top" if top_u < 0.5 else "bottom") if cut else "",
        "z_window": (float(z_lo), float(z_hi)),  # patient frame
    }


def _render_axes(grid):
    """Axis-aligned render grid (patient-frame 1-D coordinates) covering
    the output grid."""
    s, n, D = grid["spacing"], grid["size"], grid["direction"]
    if grid["kind"] != "oblique":
        lo = grid["center"] - s * (n - 1) / 2
        size = n
    else:
        corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float) * (n - 1)
        pts = grid["origin"] + (D @ (corners * s).T).T
        lo = pts.min(axis=0) - s
        size = np.ceil((pts.max(axis=0) + s - lo) / s).astype(int) + 1
    axes = [lo[i] - grid["p0"][i] + s[i] * np.arange(size[i]) for i in range(3)]
    return axes, lo


# --------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------
def _render_classes(A, O, liver, lesions, axes):
    xs, ys, zs = axes
    nz, ny, nx = len(zs), len(ys), len(xs)
    m2, depth, fat, phi = _body_map(xs, ys, A)
    cls = np.empty((nz, ny, nx), np.uint8)
    cls[:] = m2[None]
    cls2 = cls.reshape(nz, ny * nx)
    zs32 = zs.astype(F32)
    # ribs: bony bands in the inner wall, sloping down anteriorly
    pitch, width, phase, drop, zmin = A["ribs"]
    band = (m2 == MUSCLE) & (depth >= A["skin"] + fat + 0.2 * A["musc"])
    idx = np.flatnonzero(band)
    if idx.size:
        post = (np.sin(phi.ravel()[idx]) + 1) / 2  # 1 posterior, 0 anterior
        zeff = zs32[:, None] + ((1 - post) * drop).astype(F32)[None, :]
        rib = (np.mod(zeff - phase, pitch) < width) & (zeff > zmin) & (post > 0.15)[None, :]
        sub = cls2[:, idx]
        sub[rib] = RIB
        cls2[:, idx] = sub
    # lungs and diaphragm above the dome, inside the cavity
    idx = np.flatnonzero(m2 == VFAT)
    if idx.size:
        X = np.broadcast_to(xs[None, :], (ny, nx)).ravel()[idx]
        Y = np.broadcast_to(ys[:, None], (ny, nx)).ravel()[idx]
        hd = _dome(X, Y, A).astype(F32)
        k0 = int(np.searchsorted(zs, float(hd.min())))
        if k0 < nz:
            sub = cls2[k0:, idx]
            above = zs32[k0:, None] - hd[None, :]
            sub[above > 0] = DIAPHRAGM
            sub[above > A["t_dia"]] = LUNG
            cls2[k0:, idx] = sub
    # vertebral discs
    idx = np.flatnonzero((m2 == VERT_CANC) | (m2 == VERT_CORT))
    dp, dt, dph = A["disc"]
    kd = np.nonzero(np.mod(zs - dph, dp) < dt)[0]
    if idx.size and kd.size:
        cls2[np.ix_(kd, idx)] = DISC

    def paint_blob(b, cid, allowed, rim=None, rim_id=None):
        e = b.extent()
        bx = _box(axes, b.center - e, b.center + e)
        if bx is None:
            return None
        sl, sub = bx
        rho = _blob_rho(*sub, b)
        m = _paint(cls, sl, rho < 1, cid, allowed)
        if rim is not None:
            r_geo = float(np.prod(b.semi) ** (1 / 3))
            cls[sl][m & (rho > 1 - rim / r_geo)] = rim_id
        return sl, sub, m

    paint_blob(O["heart"], HEART, _IN_LUNG)
    if O["gallbladder"] is not None:  # sits in a fossa carved out of the liver
        paint_blob(O["gallbladder"], GALLBLADDER, _IN_VFAT)
    # liver before the other organs so its volume stays near the drawn target;
    # kidneys, spleen and stomach are flattened against it instead
    tex_list = []
    fld = liver["field"]
    zi, yi, xi = np.nonzero(fld > 0)
    h, o = liver["spacing"], liver["origin"]
    lo = o + h * np.array([xi.min() - 1, yi.min() - 1, zi.min() - 1])
    hi = o + h * np.array([xi.max() + 1, yi.max() + 1, zi.max() + 1])
    bx = _box(axes, lo, hi)
    if bx is not None:
        sl, sub = bx
        f = _upsample(fld, o, h, *sub)
        _paint(cls, sl, f > 0, LIVER, _IN_VFAT)
        del f
        liver_box = (sl, sub)
    else:
        liver_box = None
    paint_blob(O["kidney_r"], KID_MEDULLA, _IN_VFAT, 6.0, KID_CORTEX)
    paint_blob(O["kidney_l"], KID_MEDULLA, _IN_VFAT, 6.0, KID_CORTEX)
    paint_blob(O["spleen"], SPLEEN, _IN_VFAT)
    res = paint_blob(O["stomach"], STOM_CONTENT, _IN_VFAT, 4.0, STOM_WALL)
    if res is not None:
        sl, sub, m = res
        b = O["stomach"]
        ygas = b.center[1] + O["stomach_gas"] * b.semi[1]
        gas = m & (sub[1] < ygas)[None, :, None] & (cls[sl] == STOM_CONTENT)
        cls[sl][gas] = GAS
    for name, cid in (("portal", PORTAL), ("hepatic", HEPATIC)):
        for a, b, ra, rb in O[name]:
            r = max(ra, rb)
            bx = _box(axes, np.minimum(a, b) - r, np.maximum(a, b) + r)
            if bx is None:
                continue
            sl, (sx, sy, sz_) = bx
            dx, dy, dz = (sx - a[0]).astype(F32), (sy - a[1]).astype(F32), (sz_ - a[2]).astype(F32)
            v = (b - a).astype(np.float64)
            L2 = float(v @ v)
            proj = (float(v[0]) * dx)[None, None, :] + (float(v[1]) * dy)[None, :, None]
            proj = proj + (float(v[2]) * dz)[:, None, None]
            d2 = (dx * dx)[None, None, :] + (dy * dy)[None, :, None]
            d2 = d2 + (dz * dz)[:, None, None]
            t = np.clip(proj / L2, 0, 1)
            d2 -= 2 * t * proj
            d2 += t * t * L2
            rr = ra + (rb - ra) * t
            _paint(cls, sl, d2 < rr * rr, cid, _IN_LIVER)
    # lesions replace parenchyma and vessels
    for k, les in enumerate(lesions):
        b = les["_blob"]
        e = b.extent()
        bx = _box(axes, b.center - e, b.center + e)
        if bx is None:
            continue
        sl, sub = bx
        inside, nec, cap = _lesion_parts(les, *sub)
        base = LESION_BASE + 3 * k
        m = _paint(cls, sl, inside, base, _IN_LIVER_ANY)
        cs = cls[sl]
        cs[m & nec] = base + 1
        cs[m & cap] = base + 2
        tex, t0 = les["_tex"]
        t = _upsample(tex, t0, 3.0, *sub)
        t *= cs == base
        tex_list.append(("lesion", k, sl, t))
    # bowel loops last among soft tissues: they may not carve the liver
    for b, has_gas, gas_frac in O["bowel"]:
        res = paint_blob(b, BOWEL, _IN_VFAT)
        if res is not None and has_gas:
            sl, sub, m = res
            ygas = b.center[1] - gas_frac * b.semi[1]
            cls[sl][m & (sub[1] < ygas)[None, :, None]] = GAS
    if liver_box is not None:
        sl, sub = liver_box
        t = _upsample(liver["tex"], o, h, *sub)
        t *= cls[sl] == LIVER
        tex_list.append(("liver", -1, sl, t))
    return cls, tex_list


def _phase_lut(A, lesions, phase):
    pi = PHASE_ORDER.index(phase)
    lut = A["hu"][pi].copy()
    for k, les in enumerate(lesions):
        base = LESION_BASE + 3 * k
        lut[base] = les["hu"][phase]
        lut[base + 1] = les["necrosis_hu"]
        lut[base + 2] = les["capsule_hu"][phase]
    return lut


def _render_slab(cls, tex_list, lut, A, phase, k0, k1):
    """Noise-free HU of render slices [k0, k1): class lookup + textures."""
    pi = PHASE_ORDER.index(phase)
    hu = lut[cls[k0:k1]]
    for kind, _k, sl, t in tex_list:
        a, b = max(k0, sl[0].start), min(k1, sl[0].stop)
        if a < b:
            amp = A["tex_amp_liver"][pi] if kind == "liver" else (2.0, 7.0, 5.0)[pi]
            hu[a - k0 : b - k0, sl[1], sl[2]] += amp * t[a - sl[0].start : b - sl[0].start]
    return hu


def _blur_xy(a, w):
    b = a * (1 - 2 * w)
    b[:, :, 1:] += w * a[:, :, :-1]
    b[:, :, :-1] += w * a[:, :, 1:]
    b[:, :, 0] += w * a[:, :, 0]  # replicate at the borders
    b[:, :, -1] += w * a[:, :, -1]
    a = b * (1 - 2 * w)
    a[:, 1:] += w * b[:, :-1]
    a[:, :-1] += w * b[:, 1:]
    a[:, 0] += w * b[:, 0]
    a[:, -1] += w * b[:, -1]
    return a


# Gaussian quantiles of 256 equiprobable bins: random bytes through this
# table give near-Gaussian noise far cheaper than standard_normal.
_GAUSS_BYTES = special.ndtri((np.arange(256) + 0.5) / 256).astype(F32)
_GAUSS_BYTES /= np.sqrt(np.mean(_GAUSS_BYTES.astype(np.float64) ** 2)).astype(F32)


def _finish(slab, shape, rng, sigma, circle):
    """Noise + partial-volume blur in storage index space, streamed over
    chunks of slices so no full float volume is needed.  slab(k0, k1)
    returns noise-free float32 HU of storage slices [k0, k1)."""
    nz, ny, nx = shape
    kxy = np.array([_W_XY, 1 - 2 * _W_XY, _W_XY])
    kz = np.array([_W_Z, 1 - 2 * _W_Z, _W_Z])
    gain = float(np.sqrt((kxy**2).sum() ** 2 * (kz**2).sum()))
    table = _GAUSS_BYTES * F32(sigma / gain)
    out = np.empty(shape, np.int16)

    def noisy(k0):
        k1 = min(nz, k0 + _CHUNK)
        a = table[rng.integers(0, 256, size=(k1 - k0, ny, nx), dtype=np.uint8)]
        a += slab(k0, k1)
        return _blur_xy(a, _W_XY)

    wz = _W_Z
    cur, prev_last = noisy(0), None
    for k0 in range(0, nz, _CHUNK):
        k1 = min(nz, k0 + _CHUNK)
        nxt = noisy(k1) if k1 < nz else None
        before = cur[:1] if prev_last is None else prev_last
        after = cur[-1:] if nxt is None else nxt[:1]
        c = cur * (1 - 2 * wz)
        c[1:] += wz * cur[:-1]
        c[:1] += wz * before
        c[:-1] += wz * cur[1:]
        c[-1:] += wz * after
        np.clip(c, -1024, 3071, out=c)
        np.rint(c, out=c)
        out[k0:k1] = c
        prev_last, cur = cur[-1:], nxt
    if circle:  # outside the reconstruction circle scanners store padding
        yy, xx = np.ogrid[:ny, :nx]
        r = min(nx, ny) / 2.0
        out[:, ((yy - (ny - 1) / 2) ** 2 + (xx - (nx - 1) / 2) ** 2) > r * r] = -1024
    return out


def _to_image(arr, grid):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing([float(x) for x in grid["spacing"]])
    img.SetOrigin([float(x) for x in grid["origin"]])
    img.SetDirection([float(x) for x in grid["direction"].ravel()])
    return img


def _flip_slices(grid):
    D = np.diag(grid["direction"])
    return tuple(slice(None, None, -1) if D[ax] < 0 else slice(None) for ax in (2, 1, 0))


def _resample_oblique(arr, grid, render_lo, nearest, default):
    """Resample a render-grid array onto the oblique output grid (physical
    points coincide: identity transform)."""
    src = sitk.GetImageFromArray(arr)
    src.SetSpacing([float(x) for x in grid["spacing"]])
    src.SetOrigin([float(x) for x in render_lo])
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(
        src,
        [int(x) for x in grid["size"]],
        sitk.Transform(),
        interp,
        [float(x) for x in grid["origin"]],
        [float(x) for x in grid["spacing"]],
        [float(x) for x in grid["direction"].ravel()],
        float(default),
        src.GetPixelID(),
    )


def _phase_image(cls, tex_list, A, lesions, phase, grid, render_lo, rng, sigma):
    lut = _phase_lut(A, lesions, phase)
    nz_r = cls.shape[0]
    shape = tuple(int(x) for x in grid["size"][::-1])
    if grid["kind"] != "oblique":
        fl = _flip_slices(grid)
        flip_z = fl[0].step == -1

        def slab(k0, k1):
            if flip_z:
                return _render_slab(cls, tex_list, lut, A, phase, nz_r - k1, nz_r - k0)[fl]
            return _render_slab(cls, tex_list, lut, A, phase, k0, k1)[fl]

        arr = _finish(slab, shape, rng, sigma, grid["fov_circle"])
    else:
        res = _resample_oblique(_render_slab(cls, tex_list, lut, A, phase, 0, nz_r), grid, render_lo, False, -1000.0)
        view = sitk.GetArrayViewFromImage(res)
        arr = _finish(lambda k0, k1: view[k0:k1], shape, rng, sigma, grid["fov_circle"])
        del view, res
    return _to_image(arr, grid)


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
    noise_sigma = r_noise.uniform(8, 20)
    phase_seeds = r_noise.integers(0, 2**32, size=(len(PHASE_ORDER), 4))

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
        images[ph] = _phase_image(cls, tex_list, A, lesions, ph, grid, render_lo, ph_rng, sigma)
    if grid["kind"] != "oblique":
        lab = np.ascontiguousarray(LABEL_LUT[cls][_flip_slices(grid)])
    else:
        lab = sitk.GetArrayFromImage(_resample_oblique(LABEL_LUT[cls], grid, render_lo, True, 0))
    del cls, tex_list
    label = _to_image(lab, grid)
    del lab
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
    return CaseResult(
        case_id=case_id,
        images=images,
        label=label,
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


# --------------------------------------------------------------------------
# cohort
# --------------------------------------------------------------------------
CLINICAL_COLUMNS = ("age", "sex", "afp", "bclc", "child_pugh", "tumor_count", "max_diameter_mm")


def case_rng(seed: int, index: int) -> np.random.Generator:
    """Generator of case `index`: child `index` of SeedSequence(seed), so a
    case depends only on (seed, index), not on n_cases or workers."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(index),)))


def _init_worker():
    # Pool processes already use all cores; keep ITK single-threaded.
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _cohort_case(task):
    seed, i, out_dir, phases, size_scale = task
    case_id = f"synth_{i:04d}"
    res = generate_case(case_rng(seed, i), case_id, phases, size_scale)
    row = {"case_id": case_id}
    for ph in phases:
        rel = f"images/{case_id}_{ph}.nii.gz"
        sitk.WriteImage(res.images[ph], os.path.join(out_dir, rel), True)
        row[f"image_{ph}"] = rel
    rel = f"labels/{case_id}.nii.gz"
    sitk.WriteImage(res.label, os.path.join(out_dir, rel), True)
    row["label"] = rel
    row["response"] = "" if res.response is None else int(res.response)
    row.update(os_time=res.os_time, os_event=res.os_event, ttp_time=res.ttp_time, ttp_event=res.ttp_event)
    for c in CLINICAL_COLUMNS:
        row[c] = res.clinical[c]
    p = res.response_probability
    info = {
        "true_probability": None if math.isnan(p) else p,
        "response": res.response,
        "features": res.features,
        "lesions": res.lesions,
        "meta": res.meta,
    }
    return row, info


def _auc_or_none(labels, scores):
    """AUC of the true probabilities, None (JSON null) when one class is absent."""
    auc = roc_auc(labels, scores)
    return None if auc != auc else auc


def generate_cohort(out_dir, n_cases, seed=0, phases=("portal_venous",), workers=1, size_scale=1.0, progress=None) -> dict:
    """Write a synthetic cohort to out_dir and return the cohort.json dict.

    Files: images/<case_id>_<phase>.nii.gz (int16 HU), labels/<case_id>.nii.gz
    (uint8), dataset.csv, cohort.json.  Refuses a non-empty out_dir.
    """
    phases = _normalize_phases(phases)
    n_cases = int(n_cases)
    if n_cases < 1:
        raise ValueError("n_cases must be >= 1")
    if int(seed) < 0:
        raise ValueError("seed must be a non-negative integer")
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir):
            raise ValueError(f"output path {out_dir!r} exists and is not a directory")
        if os.listdir(out_dir):
            raise ValueError(f"output directory {out_dir!r} is not empty; refusing to overwrite existing data")
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "labels"), exist_ok=True)
    tasks = [(int(seed), i, out_dir, phases, float(size_scale)) for i in range(n_cases)]
    results = []
    workers = max(1, min(int(workers), n_cases))
    if workers == 1:
        for t in tasks:
            results.append(_cohort_case(t))
            if progress:
                progress(len(results), n_cases)
    else:
        with get_context().Pool(workers, initializer=_init_worker) as pool:
            for r in pool.imap(_cohort_case, tasks):
                results.append(r)
                if progress:
                    progress(len(results), n_cases)

    columns = ["case_id"] + [f"image_{ph}" for ph in phases] + ["label", "response", "os_time", "os_event", "ttp_time", "ttp_event"]
    columns += list(CLINICAL_COLUMNS)
    with open(os.path.join(out_dir, "dataset.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for row, _ in results:
            w.writerow(row)

    probs = {row["case_id"]: info["true_probability"] for row, info in results}
    known = [(info["response"], info["true_probability"]) for _, info in results if info["response"] is not None]
    y = [k[0] for k in known]
    p = [k[1] for k in known]
    cohort = {
        "generator": GENERATOR_NAME,
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "n_cases": n_cases,
        "phases": list(phases),
        "size_scale": float(size_scale),
        "label_values": {"0": "background", "1": "liver (incl. vessels)", "2": "tumour"},
        "response_model": rm.describe(),
        "formula": rm.FORMULA,
        "coefficients": dict(rm.COEFFICIENTS),
        "n_with_response": len(y),
        "responder_rate": (float(np.mean(y)) if y else None),
        "bayes_auc": _auc_or_none(y, p),
        "os_event_rate": float(np.mean([row["os_event"] for row, _ in results])),
        "true_probability": probs,
        "cases": {row["case_id"]: info for row, info in results},
    }
    with open(os.path.join(out_dir, "cohort.json"), "w") as fh:
        json.dump(cohort, fh, indent=1, default=_json_default)
    return json.loads(json.dumps(cohort, default=_json_default))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")
