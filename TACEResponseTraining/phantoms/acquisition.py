"""Acquisition: the image grid (spacing, slice thickness, orientation, field of view, scan range) and the
scanner's rendering of the class volume (partial volume, reconstruction kernel, noise, padding outside the
reconstruction circle)."""

from __future__ import annotations

import math

import numpy as np
from scipy import special
import SimpleITK as sitk

from .appearance import _phase_lut, _render_slab
from .geometry import F32, _axis_angle


# slice spacing = thickness (mm); thick slices are rendered supersampled and averaged (partial volume)
SLICE_SPACINGS = (0.625, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.5)

# thin slices are rarer than in practice: a model at 2 mm sees them resampled, and they cost the most to render
SLICE_SPACING_PROBS = (0.02, 0.03, 0.04, 0.04, 0.08, 0.14, 0.18, 0.15, 0.08, 0.15, 0.04, 0.05)
_SUBSLICE_MM = 1.25  # finest render step along z for thick slices

# Probabilities of grid orientation kinds; tests monkeypatch this.
_ORIENTATION_WEIGHTS = {"identity": 0.70, "flip": 0.20, "oblique": 0.10}
_FLIPS = ((-1, -1, 1), (1, 1, -1), (-1, 1, 1), (1, -1, -1))
_CHUNK = 12  # slices per chunk in the noise/blur pass (bounds memory)
_W_XY = 0.2  # in-plane 3-tap PSF weight (sigma ~0.6 px)
_W_Z = 0.15  # slice-direction 3-tap weight (sigma ~0.55 slice, i.e. prop. to thickness)


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
    sxy, sz = u(0.6, 1.0), float(SLICE_SPACINGS[int(rng.choice(len(SLICE_SPACINGS), p=SLICE_SPACING_PROBS))])
    fov = float(np.clip(max(u(300, 400), 2 * A["a"] + u(-10, 20)), 300, 420))
    if rng.random() < 0.15:  # field of view narrower than the patient: the flanks are cut off
        fov = float(np.clip(2 * A["a"] - u(10, 60), 250, 420))
    kind, D = _choose_orientation(rng)
    cut_u, top_u, cut_mm, e_u, m_u = rng.random(), rng.random(), u(10, 40), rng.random(), rng.random()
    off = (rng.normal(0, 5), u(0, 20))
    p0 = np.array([u(-20, 20), u(-40, 10), u(-900, -700)])
    circle = bool(rng.random() < 0.4)
    lz0, lz1 = liver["z_range"]
    H = lz1 - lz0
    cut = cut_u < 0.10
    if rng.random() < 0.3 and not cut:  # abdomen and pelvis: long scans, thicker slices
        sz = float(rng.choice([2.0, 2.5, 3.0, 5.0]))
        E = u(320, 480)
        z_hi = lz1 + u(10, 50)
        z_lo = z_hi - E
    elif not cut:
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
    # thick slices average thinner sub-slices (partial volume); oblique grids are resampled instead
    sub = max(1, int(round(spacing[2] / _SUBSLICE_MM))) if kind != "oblique" else 1
    return {
        "kind": kind,
        "sub": sub,
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
        m = grid["sub"]
        if m > 1:  # m sub-slices per slice, centred on it
            s = np.array([s[0], s[1], s[2] / m])
            lo = lo - np.array([0.0, 0.0, (m - 1) / 2 * s[2]])
            size = np.array([n[0], n[1], n[2] * m])
    else:
        corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float) * (n - 1)
        pts = grid["origin"] + (D @ (corners * s).T).T
        lo = pts.min(axis=0) - s
        size = np.ceil((pts.max(axis=0) + s - lo) / s).astype(int) + 1
    axes = [lo[i] - grid["p0"][i] + s[i] * np.arange(size[i]) for i in range(3)]
    return axes, lo


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


def _finish(slab, shape, rng, sigma, circle, w_xy=_W_XY):
    """Noise + partial-volume blur in storage index space, streamed over
    chunks of slices so no full float volume is needed.  slab(k0, k1)
    returns noise-free float32 HU of storage slices [k0, k1)."""
    nz, ny, nx = shape
    kxy = np.array([w_xy, 1 - 2 * w_xy, w_xy])
    kz = np.array([_W_Z, 1 - 2 * _W_Z, _W_Z])
    gain = float(np.sqrt((kxy**2).sum() ** 2 * (kz**2).sum()))
    table = _GAUSS_BYTES * F32(sigma / gain)
    out = np.empty(shape, np.int16)

    def noisy(k0):
        k1 = min(nz, k0 + _CHUNK)
        a = table[rng.integers(0, 256, size=(k1 - k0, ny, nx), dtype=np.uint8)]
        a += slab(k0, k1)
        return _blur_xy(a, w_xy)

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


def _phase_image(cls, tex_list, A, lesions, phase, grid, render_lo, rng, sigma, w_xy):
    lut = _phase_lut(A, lesions, phase)
    nz_r = cls.shape[0]
    shape = tuple(int(x) for x in grid["size"][::-1])
    if grid["kind"] != "oblique":
        fl = _flip_slices(grid)
        flip_z = fl[0].step == -1

        m = grid["sub"]
        n_slices = nz_r // m

        def slab(k0, k1):
            if flip_z:
                k0, k1 = n_slices - k1, n_slices - k0
            hu = _render_slab(cls, tex_list, lut, A, phase, k0 * m, k1 * m)
            if m > 1:
                hu = hu.reshape(k1 - k0, m, *hu.shape[1:]).mean(axis=1)
            return hu[fl]

        arr = _finish(slab, shape, rng, sigma, grid["fov_circle"], w_xy)
    else:
        res = _resample_oblique(_render_slab(cls, tex_list, lut, A, phase, 0, nz_r), grid, render_lo, False, -1000.0)
        view = sitk.GetArrayViewFromImage(res)
        arr = _finish(lambda k0, k1: view[k0:k1], shape, rng, sigma, grid["fov_circle"], w_xy)
        del view, res
    return _to_image(arr, grid)


def _label_image(lut, cls, grid, render_lo):
    """Labels of the output grid: the centre sub-slice of each slice, or resampled for oblique grids."""
    if grid["kind"] != "oblique":
        m = grid["sub"]
        lab = np.ascontiguousarray(lut[cls[m // 2::m]][_flip_slices(grid)])
    else:
        lab = sitk.GetArrayFromImage(_resample_oblique(lut[cls], grid, render_lo, True, 0))
    return _to_image(lab, grid)
