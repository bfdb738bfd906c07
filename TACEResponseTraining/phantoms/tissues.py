"""Tissue classes of the phantoms' internal class volume, and the label and context maps made from them."""

from __future__ import annotations

import numpy as np


MAX_LESIONS = 8  # lesion class ids up to LESION_BASE + 3 * MAX_LESIONS - 1

# Tissue classes of the internal class volume.
AIR, TABLE_CORE, TABLE_SHELL, SKIN, FAT, MUSCLE, VFAT, RIB = range(8)
PARASPINAL, VERT_CANC, VERT_CORT, DISC, CANAL, POST_ELEM, AORTA, IVC = range(8, 16)
LUNG, DIAPHRAGM, HEART, KID_CORTEX, KID_MEDULLA, SPLEEN = range(16, 22)
STOM_WALL, STOM_CONTENT, GAS, BOWEL, GALLBLADDER, PANCREAS, FECES, GI_CONTRAST = range(22, 30)
LIVER, PORTAL, HEPATIC = 30, 31, 32
KID_CYST, KID_MASS, ASCITES, BLADDER, PELVIC_BONE, CARTILAGE, BOWEL_CONTENT = range(33, 40)
LESION_BASE = 40  # lesion k uses LESION_BASE + 3k + (0 viable, 1 necrosis, 2 capsule)
PORTAL_TRUNK = LESION_BASE + 3 * MAX_LESIONS  # the portal vein outside the liver: portal HU, background label
LABEL_LUT = np.zeros(256, np.uint8)
LABEL_LUT[[LIVER, PORTAL, HEPATIC]] = 1
LABEL_LUT[LESION_BASE : LESION_BASE + 3 * MAX_LESIONS] = 2

# Context labels: neighbours the network must learn to tell from liver and tumour (training targets only;
# a model's output stays background / liver / tumour). Written to context/<case>.nii.gz.
CONTEXT_NAMES = ("spleen", "stomach_bowel", "kidney", "pancreas", "heart")
CONTEXT_LUT = np.zeros(256, np.uint8)
CONTEXT_LUT[SPLEEN] = 1
CONTEXT_LUT[[STOM_WALL, STOM_CONTENT, GAS, BOWEL, FECES, GI_CONTRAST, BOWEL_CONTENT]] = 2
CONTEXT_LUT[[KID_CORTEX, KID_MEDULLA, KID_CYST, KID_MASS]] = 3
CONTEXT_LUT[PANCREAS] = 4
CONTEXT_LUT[HEART] = 5


def _allowed(*classes):
    lut = np.zeros(256, bool)
    lut[list(classes)] = True
    return lut


_IN_VFAT = _allowed(VFAT)
_IN_LUNG = _allowed(LUNG)
_IN_LIVER = _allowed(LIVER)
_IN_LIVER_ANY = _allowed(LIVER, PORTAL, HEPATIC)
_IN_LIVER_OR_FAT = _allowed(LIVER, PORTAL, HEPATIC, VFAT, ASCITES)  # exophytic lesions
_IN_KIDNEY_OR_FAT = _allowed(KID_CORTEX, KID_MEDULLA, VFAT)
_IN_PELVIS = _allowed(VFAT, MUSCLE, PARASPINAL)
