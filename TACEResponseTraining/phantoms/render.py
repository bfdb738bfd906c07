"""Painting the anatomy and lesions into a uint8 tissue-class volume on the axis-aligned render grid."""

from __future__ import annotations

import numpy as np

from .anatomy import _body_map, _dome
from .geometry import F32, _Blob, _blob_rho, _box, _paint, _rot_z, _upsample, _waves_at
from .lesions import _lesion_parts
from .tissues import ASCITES, BLADDER, BOWEL, BOWEL_CONTENT, CARTILAGE, DIAPHRAGM, DISC, FECES, GALLBLADDER, GAS, GI_CONTRAST, HEART, HEPATIC, KID_CORTEX, KID_MEDULLA, LESION_BASE, LIVER, LUNG, MUSCLE, PANCREAS, PELVIC_BONE, PORTAL, PORTAL_TRUNK, RIB, SPLEEN, STOM_CONTENT, STOM_WALL, VERT_CANC, VERT_CORT, VFAT, _IN_KIDNEY_OR_FAT, _IN_LIVER, _IN_LIVER_ANY, _IN_LIVER_OR_FAT, _IN_LUNG, _IN_PELVIS, _IN_VFAT, _allowed


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
        band_z = (np.mod(zeff - phase, pitch) < width) & (zeff > zmin)
        rib = band_z & (post > 0.15)[None, :]
        cartilage = band_z & ((post > 0.03) & (post <= 0.15))[None, :]  # costal cartilage, anteriorly
        sub = cls2[:, idx]
        sub[rib] = RIB
        sub[cartilage] = CARTILAGE
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
    # fat clefts into the liver: the porta hepatis and the fissure of the ligamentum teres
    for cleft in (O["porta"], O["fissure"]):
        if cleft is not None:
            paint_blob(cleft, VFAT, _IN_LIVER)
    _paint_tube(cls, axes, *O["porta_sleeve"], VFAT, _IN_LIVER)
    if O["ascites"] > 0 and liver_box is not None:  # perihepatic fluid in the fat around the liver
        t = O["ascites"]
        bx = _box(axes, lo - t, hi + t)
        if bx is not None:
            sl, sub = bx
            d = _upsample(liver["outside"], o, h, *sub)
            _paint(cls, sl, (d > 0) & (d < t), ASCITES, _IN_VFAT)
    paint_blob(O["kidney_r"], KID_MEDULLA, _IN_VFAT, 6.0, KID_CORTEX)
    paint_blob(O["kidney_l"], KID_MEDULLA, _IN_VFAT, 6.0, KID_CORTEX)
    for b, cid in O["kidney_lesions"]:  # cysts and masses, exophytic ones bulging into the fat
        paint_blob(b, cid, _IN_KIDNEY_OR_FAT)
    res = paint_blob(O["spleen"], SPLEEN, _IN_VFAT)
    if res is not None:
        tex_list.append(_noise_texture(O["spleen_noise"], res, cls, SPLEEN, O["spleen_tex"]))
    for b in O["pancreas"]:
        paint_blob(b, PANCREAS, _IN_VFAT)
    _paint_stomach(cls, axes, O, tex_list)
    pz = O["pelvis_z"]
    for sgn in (-1, 1):  # iliac wings as curved bony shells
        wing = _Blob(np.array([sgn * 0.62 * A["a_c"], A["y_v"] + 5, pz - 70]), np.array([45.0, 28.0, 75.0]),
                     _rot_z(sgn * 25), [])
        e = wing.extent()
        bx = _box(axes, wing.center - e, wing.center + e)
        if bx is not None:
            sl, sub = bx
            rho = _blob_rho(*sub, wing)
            top = (sub[2] < pz)[:, None, None]
            _paint(cls, sl, (rho < 1) & (rho > 0.8) & top, PELVIC_BONE, _IN_PELVIS)
    paint_blob(O["bladder"], BLADDER, _IN_VFAT)
    pvtt = lesions[0].get("_pvtt_segments", 0) if lesions else 0
    for name, cid in (("portal", PORTAL), ("hepatic", HEPATIC)):
        for index, (a, b, ra, rb) in enumerate(O[name]):
            thrombus = name == "portal" and index < pvtt
            _paint_tube(cls, axes, a, b, ra, rb, LESION_BASE if thrombus else cid, _IN_LIVER)
    # outside the liver: the portal trunk and the first branches through the porta's fat, the bile duct
    root = O["portal_trunk"][0][1]
    branches = [seg for seg in O["portal"] if np.allclose(seg[0], root)]
    for a, b, ra, rb in O["portal_trunk"] + branches:
        _paint_tube(cls, axes, a, b, ra, rb, PORTAL_TRUNK, _OUTSIDE_LIVER)
    for a, b, ra, rb in O["bile_duct"]:
        _paint_tube(cls, axes, a, b, ra, rb, GALLBLADDER, _OUTSIDE_LIVER)
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
        m = _paint(cls, sl, inside, base, _IN_LIVER_OR_FAT if les["exophytic"] else _IN_LIVER_ANY)
        cs = cls[sl]
        cs[m & nec] = base + 1
        cs[m & cap] = base + 2
        tex, t0 = les["_tex"]
        t = _upsample(tex, t0, 3.0, *sub)
        t *= cs == base
        tex_list.append(("lesion", k, sl, t, (2.0, 7.0, 5.0)))
    # bowel loops last among soft tissues: they may not carve the liver
    for b in O["duodenum"]:
        paint_blob(b, BOWEL_CONTENT, _IN_VFAT, 2.5, BOWEL)
    for b, kind, gas_frac in O["bowel"]:
        content = {"fluid": BOWEL_CONTENT, "gas": GAS, "feces": FECES, "contrast": GI_CONTRAST,
                   "collapsed": BOWEL}[kind]
        res = paint_blob(b, content, _IN_VFAT, 2.0, BOWEL)
        if res is None:
            continue
        sl, sub, m = res
        inner = m & (cls[sl] == content)
        if kind == "feces":
            _add_mottled_gas(cls, sl, sub, b, inner, O["mottle"], 0.55)
        elif kind in ("fluid", "contrast") and gas_frac > 0.35:  # gas-fluid level
            ygas = b.center[1] - gas_frac * b.semi[1]
            cls[sl][inner & (sub[1] < ygas)[None, :, None]] = GAS
    if liver_box is not None:
        sl, sub = liver_box
        t = _upsample(liver["tex"], o, h, *sub)
        t *= cls[sl] == LIVER
        tex_list.append(("liver", -1, sl, t, A["tex_amp_liver"]))
    return cls, tex_list


_OUTSIDE_LIVER = _allowed(VFAT, PANCREAS)  # vessels and ducts of the porta run through fat and the pancreas


def _paint_tube(cls, axes, a, b, ra, rb, cid, allowed):
    """A straight tube from a (radius ra) to b (radius rb), patient mm, where ``allowed`` permits."""
    r = max(ra, rb)
    bx = _box(axes, np.minimum(a, b) - r, np.maximum(a, b) + r)
    if bx is None:
        return
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
    _paint(cls, sl, d2 < rr * rr, cid, allowed)


def _noise_texture(noise, painted, cls, cid, amps):
    """A texture entry for the render: smooth noise on the voxels of class ``cid`` that a blob painted."""
    field_, origin = noise
    sl, sub, m = painted
    t = _upsample(field_, origin, 3.0, *sub)
    t *= m & (cls[sl] == cid)
    return ("organ", cid, sl, t, amps)


def _add_mottled_gas(cls, sl, sub, blob, inside, waves, threshold):
    """Gas bubbles in feces or food: where a sum of fine sine waves is high (deterministic, no noise array)."""
    mottle = _waves_at(inside, sub, blob.center, waves)
    total = sum(w[2] for w in waves)
    cs = cls[sl]
    cs[tuple(i[mottle > threshold * total] for i in np.nonzero(inside))] = GAS


def _paint_stomach(cls, axes, O, tex_list):
    """Stomach: a wall with rugal folds of varying thickness around fluid, food (mottled, with gas), positive
    oral contrast, or nothing (collapsed: all wall); an air-fluid level on the anterior side."""
    b = O["stomach"]
    e = b.extent()
    bx = _box(axes, b.center - e, b.center + e)
    if bx is None:
        return
    sl, sub = bx
    kind = O["stomach_contents"]
    content = {"fluid": STOM_CONTENT, "food": STOM_CONTENT, "contrast": GI_CONTRAST, "collapsed": STOM_WALL}[kind]
    rho = _blob_rho(*sub, b)
    m = _paint(cls, sl, rho < 1, content, _IN_VFAT)
    wall_mm, fold_amp, fold_waves = O["rugae"]
    r_geo = float(np.prod(b.semi) ** (1 / 3))
    near_wall = m & (rho > 1 - wall_mm * (1.0 + 2.0 * fold_amp) / r_geo)
    folds = _waves_at(near_wall, sub, b.center, fold_waves) / sum(w[2] for w in fold_waves)
    thickness = wall_mm * (1.0 + fold_amp * 2.0 * folds)
    cs = cls[sl]
    idx = np.nonzero(near_wall)
    wall = rho[idx] > 1 - thickness / r_geo
    cs[tuple(i[wall] for i in idx)] = STOM_WALL
    inner = m & (cs == content)
    if kind == "food":
        tex_list.append(_noise_texture(O["stomach_noise"], (sl, sub, m), cls, STOM_CONTENT, (O["food_tex"],) * 3))
        _add_mottled_gas(cls, sl, sub, b, inner, O["mottle"], 0.6)
    if kind != "collapsed" and O["stomach_gas"] > -1:
        ygas = b.center[1] + O["stomach_gas"] * b.semi[1]
        cs[inner & (sub[1] < ygas)[None, :, None]] = GAS
