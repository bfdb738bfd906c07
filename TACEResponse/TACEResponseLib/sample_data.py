"""The bundled synthetic CT in the Sample Data module. Runs inside Slicer only (imports qt and the application); Python 3.9 compatible (Slicer 5.8)."""

import logging
import os
import pathlib

from .i18n import _

MODULE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_CT_NAME = "TACESyntheticCT"
SAMPLE_CT_FILE = "synthetic_ct.nii.gz"
SAMPLE_CT_PATH = os.path.join(MODULE_DIR, "Resources", "SampleData", SAMPLE_CT_FILE)
SAMPLE_CT_CACHE_NAME = "TACEResponseSyntheticCT.nii.gz"  # its name in the shared SampleData cache
# drawn from the sample CT and its reference labels by scripts/make_sample_thumbnail.py
SAMPLE_CT_THUMBNAIL = os.path.join(MODULE_DIR, "Resources", "Icons", "TACESyntheticCT.png")
SAMPLE_LABEL_PATH = os.path.join(MODULE_DIR, "Resources", "SampleData", "synthetic_ct_label.nii.gz")
# SHA-256 of Resources/SampleData/synthetic_ct.nii.gz, written here (never computed at registration time);
# Testing/test_slicer_structure.py checks that it matches the file.
SAMPLE_CT_SHA256 = "273ad97995613eb4017c3d7168e8b2667c2548e8c9fd03497c2d9eae2928902e"


def registerSampleData():
    """Add the synthetic sample CT to the Sample Data module (checksum written in SAMPLE_CT_SHA256)."""
    import SampleData

    if not os.path.isfile(SAMPLE_CT_PATH) or not SAMPLE_CT_SHA256:
        logging.info("TACE Response: sample CT not registered ({path} missing or SAMPLE_CT_SHA256 not set)".format(
            path=SAMPLE_CT_PATH))
        return
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category=_("TACE Response"),
        sampleName=SAMPLE_CT_NAME,
        thumbnailFileName=SAMPLE_CT_THUMBNAIL,
        uris=pathlib.Path(SAMPLE_CT_PATH).as_uri(),
        fileNames=SAMPLE_CT_CACHE_NAME,
        checksums="SHA256:" + SAMPLE_CT_SHA256,
        nodeNames=SAMPLE_CT_NAME,
    )
