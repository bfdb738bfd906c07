"""The patient: body wall, spine, great vessels, liver (lobes, caudate, Riedel's lobe, nodularity, the porta
hepatis and the fissure of the ligamentum teres) and the organs around it (spleen, stomach, pancreas,
duodenum, bowel, kidneys with cysts and masses, heart, bladder, pelvis, ascites), in a patient frame (LPS
axes, mm; origin at the right diaphragm dome)."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .appearance import _contrast_timing, _randomise_appearance, _sample_tissue_hu
from .geometry import F32, _Blob, _axis_angle, _blob_rho, _make_waves, _rand_rot, _rot_z, _smooth_noise
from .tissues import AIR, AORTA, CANAL, FAT, IVC, KID_CYST, KID_MASS, MUSCLE, PARASPINAL, POST_ELEM, SKIN, TABLE_CORE, TABLE_SHELL, VERT_CANC, VERT_CORT, VFAT


_COARSE_MM = 3.0  # liver shape grid (patient frame)


def _sample_anatomy(rng):
    u = rng.uniform
    A = {}
    A["a"], A["b"], A["p"] = u(130, 190), u(95, 140), u(2.0, 2.6)
    A["skin"], A["fat"], A["fat_mod"], A["fat_phase"] = u(1.5, 2.5), u(4, 45), u(0, 0.4), u(-math.pi, math.pi)
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
    A["hu"] = _randomise_appearance(rng, _sample_tissue_hu(rng))
    A["timing"] = _contrast_timing(rng)
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
    v_target = u(900, 2800)  # atrophic / cirrhotic to enlarged
    semi_r = np.array([u(65, 85), u(0.75, 0.9) * b_c, u(70, 90)])
    semi_l = np.array([u(45, 75), u(25, 45), u(30, 50)])
    v_nom = 4 / 3 * math.pi * (np.prod(semi_r) + 0.7 * np.prod(semi_l)) / 1000
    s = float(np.clip((1.15 * v_target / v_nom) ** (1 / 3), 0.8, 1.3))
    semi_r, semi_l = semi_r * s, semi_l * s
    c_r = np.array([-a_c + semi_r[0] * u(0.85, 0.95), u(-0.1, 0.1) * b_c, -semi_r[2] + u(5, 15)])
    c_l = np.array([u(0, 30), -b_c + semi_l[1] + u(5, 20), -u(25, 45)])
    # the left lateral segment usually stops short of the spleen; in some patients it wraps across the
    # stomach to touch the spleen
    x_left = u(0.45, 0.75) * a_c if rng.random() < 0.65 else u(0.75, 0.95) * a_c
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
    extra = []
    if rng.random() < 0.2:  # Riedel's lobe: a tongue of the right lobe reaching far down
        extra.append(_Blob(c_r + np.array([u(-10, 15), u(-10, 10), -semi_r[2] * u(0.7, 1.0)]),
                           np.array([u(25, 40), u(25, 45), u(45, 70)]), _rand_rot(rng, 15), []))
    if rng.random() < 0.6:  # caudate lobe, next to the IVC
        ix_, iy_, _, isy = A["ivc"]
        extra.append(_Blob(np.array([ix_ + u(5, 20), iy_ - isy - u(5, 15), c_r[2] + u(-10, 20)]),
                           np.array([u(15, 25), u(12, 20), u(25, 40)]), _rand_rot(rng, 20), []))
    for blob in extra:
        f = np.logaddexp(k * f, k * (1 - _blob_rho(xs, ys, zs, blob) ** 2)) / k
    f += noise_amp * _smooth_noise(rng, shape, 15.0 / h)
    if rng.random() < 0.3:  # cirrhotic surface nodularity
        f += u(0.08, 0.25) * _smooth_noise(rng, shape, 1.3)
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
    outside3 = ndimage.distance_transform_edt(~mask).astype(F32) * h
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
        "outside": outside3,
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
    # spleen: normal to splenomegaly (portal hypertension), lobulated
    big = rng.random() < 0.25
    O["spleen"] = blob((a_c - u(35, 50), 0.35 * b_c, -u(40, 80)),
                       (u(30, 45) if big else u(22, 35), u(60, 90) if big else u(40, 60), u(60, 90) if big else u(40, 60)),
                       _rot_z(u(25, 55)), 4, (0.03, 0.09))
    # stomach: body in the left upper quadrant under the left lobe, with rugal folds and varied contents
    O["stomach"] = blob((u(30, 70), -u(0.1, 0.45) * b_c, -u(40, 80)), (u(30, 60), u(22, 45), u(35, 70)),
                        _rand_rot(rng, 25), 5, (0.03, 0.10))
    O["stomach_gas"] = u(-1.1, -0.2)  # gas level (fraction of the semi-axis; < -1: no gas)
    O["stomach_contents"] = str(rng.choice(["fluid", "food", "contrast", "collapsed"], p=[0.35, 0.25, 0.25, 0.15]))
    O["rugae"] = (u(3, 8), u(0.15, 0.45), _make_waves(rng, 6, 6.0, 0.3, 0.6))  # wall mm, relative fold amplitude
    O["food_tex"] = u(15, 45)
    O["spleen_tex"] = (u(2, 6), u(10, 45), u(3, 10))  # arterial-phase heterogeneity ("zebra" spleen)
    for name in ("spleen", "stomach"):
        b = O[name]
        e = b.extent() * 1.1
        shape = tuple(int(2 * e / 3.0) + 2 for _ in range(3))
        O[name + "_noise"] = (_smooth_noise(rng, shape, 1.0), b.center - e)
    O["mottle"] = _make_waves(rng, 6, 4.0, 0.5, 1.0)  # feces and food: gas bubbles in a mottled mass
    # pancreas: head by the duodenum, body over the aorta, tail to the splenic hilum
    ax_, ay_, _ = A["aorta"]
    zp = z_lo + u(15, 45)
    O["pancreas"] = [blob((-u(20, 35), ay_ - u(20, 35), zp - u(0, 15)), (u(14, 20), u(12, 18), u(18, 28)), _rand_rot(rng, 20)),
                     blob((ax_ + u(-5, 10), ay_ - u(22, 32), zp + u(0, 10)), (u(18, 26), u(8, 12), u(10, 14)), _rot_z(u(-20, 10))),
                     blob((u(50, 75), ay_ - u(0, 15), zp + u(10, 25)), (u(20, 28), u(8, 12), u(10, 14)), _rot_z(u(10, 40)))]
    # duodenum: a C around the pancreatic head, touching the liver hilum and gallbladder region
    hx, hy, hz = O["pancreas"][0].center
    duo = []
    for t in np.linspace(0.0, math.pi, 5):
        c = (hx - 22 * math.sin(t) - u(0, 6), hy - u(-5, 8), hz + 28 * math.cos(t))
        r = u(9, 14)
        duo.append(blob(c, (r, r * u(0.8, 1.2), r * u(1.0, 1.5)), _rand_rot(rng)))
    O["duodenum"] = duo
    # kidney cysts and masses (look-alikes that stay background)
    O["kidney_lesions"] = []
    for side in ("kidney_r", "kidney_l"):
        if rng.random() < 0.3:
            kb = O[side]
            direction = rng.standard_normal(3)
            direction /= np.linalg.norm(direction)
            c = kb.center + direction * kb.semi * u(0.3, 1.0)
            r = math.exp(u(math.log(6), math.log(45)))
            O["kidney_lesions"].append((blob(c, (r, r * u(0.85, 1.15), r * u(0.85, 1.15)), _rand_rot(rng)),
                                        KID_CYST if rng.random() < 0.6 else KID_MASS))
    O["ascites"] = u(4, 25) if rng.random() < 0.15 else 0.0  # thickness of perihepatic fluid, mm
    O["bladder"] = blob((u(-15, 15), -0.35 * b_c, z_lo - u(190, 240)), (u(35, 55), u(30, 45), u(30, 45)), _rand_rot(rng, 15))
    O["pelvis_z"] = z_lo - u(150, 190)  # iliac crests
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
    # bowel loops fill the abdomen below the liver down into the pelvis; contents per loop: fluid, gas,
    # feces (colon) or positive oral contrast. The hepatic flexure of the colon sits under the right lobe.
    bowel = []
    kinds, probs = ["fluid", "gas", "feces", "contrast", "collapsed"], [0.3, 0.2, 0.25, 0.15, 0.1]
    centres = [(-a_c + u(30, 55), -u(0.0, 0.4) * b_c, z_lo + u(-15, 20))]  # hepatic flexure
    centres += [(u(-a_c + 25, a_c - 25), u(-b_c + 25, 0.4 * b_c), u(z_lo - 230, z_lo + 15))
                for _ in range(int(rng.integers(18, 40)))]
    for c in centres:
        r = u(9, 28)
        bowel.append((blob(c, (r * u(0.8, 1.3), r * u(0.8, 1.3), r * u(0.8, 1.8)), _rand_rot(rng), 3, (0.03, 0.1)),
                      str(rng.choice(kinds, p=probs)), u(0.0, 0.7)))
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
    # drawn last so that every earlier draw, and so the rest of the case, stays as before
    O.update(_sample_hilum(rng, A, liver, O, hilum))
    return O


def _sample_hilum(rng, A, liver, O, hilum):
    """The fat clefts real livers have and that networks otherwise call liver or tumor: the porta hepatis
    (fat around the portal vein, the hepatic artery and the bile duct where they enter the liver; its portal
    trunk and common bile duct run through fat to the pancreas and duodenum) and the fissure of the
    ligamentum teres (a thin fat plane between the left lateral and the medial segment)."""
    u = rng.uniform
    cells = liver["cells"]
    ax_, ay_, _ = O["pancreas"][1].center
    confluence = np.array([ax_ - u(15, 30), ay_ + u(8, 16), O["pancreas"][1].center[2] + u(-5, 10)])
    towards = (confluence - hilum) / max(float(np.linalg.norm(confluence - hilum)), 1.0)
    porta = _Blob(hilum + towards * u(0, 10), np.array([u(15, 28), u(8, 15), u(10, 18)]), _rand_rot(rng, 25),
                  _make_waves(rng, 2, 10.0, 0.05, 0.15))
    trunk_r = u(5.5, 8.0)
    sleeve_r = trunk_r + u(4, 12)  # the fat of the hepatoduodenal ligament around the trunk, open to the surface
    duct_start = hilum + np.array([-u(4, 12), -u(4, 10), u(-4, 4)])  # anterolateral to the portal vein
    duct_end = O["pancreas"][0].center + np.array([-u(0, 10), u(0, 10), u(-5, 5)])
    out = {"porta": porta, "porta_sleeve": (confluence, hilum, sleeve_r, sleeve_r),
           "portal_trunk": [(confluence, hilum, trunk_r, trunk_r * u(0.85, 1.0))],
           "bile_duct": [(duct_start, duct_end, u(2.0, 5.0), u(2.0, 4.0))], "fissure": None}
    if rng.random() < 0.8:
        # the umbilical notch on the anterior surface, left of the midline; the plane runs back towards the porta
        z_lo, z_hi = liver["z_range"]
        target = np.array([u(-5, 30), -A["b_c"], z_lo + u(0.15, 0.45) * (z_hi - z_lo)])
        notch = cells[np.argmin(np.linalg.norm(cells - target, axis=1))]
        depth = u(15, 40)
        out["fissure"] = _Blob(notch + np.array([0.0, depth * 0.4, 0.0]), np.array([u(1.5, 4.0), depth, u(15, 35)]),
                               _rot_z(u(-30, 10)) @ _rand_rot(rng, 10), [])
    return out
