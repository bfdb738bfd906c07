"""Appearance: HU of every tissue class per contrast phase, randomised per structure (domain randomisation),
contrast timing, and the noise-free HU of a slab of the class volume."""

from __future__ import annotations

import numpy as np

from .geometry import F32
from .tissues import AIR, AORTA, ASCITES, BLADDER, BOWEL, BOWEL_CONTENT, CANAL, CARTILAGE, DIAPHRAGM, DISC, FAT, FECES, GALLBLADDER, GAS, GI_CONTRAST, HEART, HEPATIC, IVC, KID_CORTEX, KID_CYST, KID_MASS, KID_MEDULLA, LESION_BASE, LIVER, LUNG, MUSCLE, PANCREAS, PARASPINAL, PELVIC_BONE, PORTAL, PORTAL_TRUNK, POST_ELEM, RIB, SKIN, SPLEEN, STOM_CONTENT, STOM_WALL, TABLE_CORE, TABLE_SHELL, VERT_CANC, VERT_CORT, VFAT


PHASE_ORDER = ("native", "arterial", "portal_venous")  # acquisition order


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
    put(PANCREAS, u(35, 50), u(90, 140), u(80, 120))
    put(FECES, u(-60, 40))
    # positive oral contrast, when given, fills stomach and bowel; otherwise water or food
    oral = u(150, 700) if rng.random() < 0.35 else None
    put(GI_CONTRAST, oral if oral is not None else u(0, 30))
    put(BOWEL_CONTENT, u(0, 30) if oral is None or rng.random() < 0.3 else oral * u(0.6, 1.0))
    liver_native = u(40, 70)  # fatty to iron-rich livers
    put(LIVER, liver_native, liver_native + u(5, 35), liver_native + u(15, 90))
    put(PORTAL, u(35, 45), u(110, 150), u(140, 200))
    hu[:, PORTAL_TRUNK] = hu[:, PORTAL]  # one vessel, inside and outside the liver (no draw: the stream stays)
    put(HEPATIC, u(35, 45), u(60, 80), u(120, 190))
    put(KID_CYST, u(-5, 20))
    put(KID_MASS, u(25, 45), u(60, 160), u(50, 110))
    put(ASCITES, u(-5, 25))
    put(BLADDER, u(0, 20))
    put(PELVIC_BONE, u(250, 600))
    put(CARTILAGE, u(60, 200))
    return hu


# classes whose HU the appearance randomisation may move far from the realistic tables
_RANDOMISED_CLASSES = (SKIN, MUSCLE, PARASPINAL, DIAPHRAGM, HEART, KID_CORTEX, KID_MEDULLA, SPLEEN, STOM_WALL,
                       STOM_CONTENT, BOWEL, GALLBLADDER, PANCREAS, FECES, BOWEL_CONTENT, KID_CYST, KID_MASS,
                       ASCITES, BLADDER, CARTILAGE, AORTA, IVC)


def _randomise_appearance(rng, hu):
    """Domain randomisation (after SynthSeg): in about half the cases every neighbouring structure gets an
    intensity far from its usual one, so that shape and context, not HU alone, tell liver and tumour apart
    from spleen, stomach, bowel and kidney. The liver and lesions keep their outcome-linked contrasts."""
    if rng.random() < 0.5:
        return hu
    out = hu.copy()
    for c in _RANDOMISED_CLASSES:
        if rng.random() < 0.6:
            shift = rng.uniform(-60, 160)
            out[:, c] = np.maximum(out[:, c] + shift, -100)
    # neighbours drawn at the liver's own intensity: the hardest case for an HU-driven network
    for c in (SPLEEN, STOM_WALL, BOWEL, PANCREAS, KID_MASS, MUSCLE):
        if rng.random() < 0.25:
            out[:, c] = out[:, LIVER] + rng.uniform(-15, 15)
    return out


def _contrast_timing(rng):
    """Weights (arterial, portal) of the enhancement the 'portal venous' image shows: mostly a portal venous
    scan, sometimes late-arterial, delayed or weakly enhanced (bolus timing and dose vary between sites)."""
    draw = rng.random()
    if draw < 0.65:
        return 0.0, 1.0
    if draw < 0.8:
        return rng.uniform(0.4, 1.0), rng.uniform(0.0, 0.6)  # (late) arterial
    if draw < 0.9:
        return 0.0, rng.uniform(0.6, 0.85)  # delayed: enhancement fading
    return 0.0, rng.uniform(0.2, 0.6)  # weak bolus or native-like


def _base_phase_lut(A, lesions, phase):
    pi = PHASE_ORDER.index(phase)
    lut = A["hu"][pi].copy()
    for k, les in enumerate(lesions):
        base = LESION_BASE + 3 * k
        lut[base] = les["hu"][phase]
        lut[base + 1] = les["necrosis_hu"]
        lut[base + 2] = les["capsule_hu"][phase]
    return lut


def _phase_lut(A, lesions, phase):
    """HU per class of one phase; the portal venous image follows the case's contrast timing."""
    if phase != "portal_venous" or tuple(A["timing"]) == (0.0, 1.0):
        return _base_phase_lut(A, lesions, phase)
    native = _base_phase_lut(A, lesions, "native")
    w_art, w_pv = A["timing"]
    return (native + w_art * (_base_phase_lut(A, lesions, "arterial") - native)
            + w_pv * (_base_phase_lut(A, lesions, "portal_venous") - native))


def _render_slab(cls, tex_list, lut, A, phase, k0, k1):
    """Noise-free HU of render slices [k0, k1): class lookup + textures."""
    pi = PHASE_ORDER.index(phase)
    hu = lut[cls[k0:k1]]
    for kind, _k, sl, t, amps in tex_list:
        a, b = max(k0, sl[0].start), min(k1, sl[0].stop)
        if a < b:
            amp = amps[pi]
            hu[a - k0 : b - k0, sl[1], sl[2]] += amp * t[a - sl[0].start : b - sl[0].start]
    return hu
