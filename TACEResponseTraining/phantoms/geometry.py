"""Small geometric helpers of the phantoms: perturbed ellipsoids, rotations, separable coordinates, painting."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage


F32 = np.float32


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


def _waves_at(mask, sub, centre, waves):
    """Sum of sine waves at the True voxels of ``mask`` only (1-D); cheaper than a whole box."""
    zi, yi, xi = np.nonzero(mask)
    d = [(sub[0][xi] - centre[0]).astype(F32), (sub[1][yi] - centre[1]).astype(F32),
         (sub[2][zi] - centre[2]).astype(F32)]
    out = np.zeros(zi.size, F32)
    for g, ph, amp in waves:
        out += amp * np.sin(float(g[0]) * d[0] + float(g[1]) * d[1] + float(g[2]) * d[2] + ph)
    return out
