"""The terminology file shipped with the module: the SNOMED CT codes of the Liver and Tumor segments.

Slicer's built-in "3D Slicer General Anatomy list" lacks Neoplasm and Hepatocellular carcinoma, so the
module ships its own context (Resources/Terminology/*.term.json, Slicer's terminology format) and loads it
at start-up; the segment tags name this context so the terminology selector finds the codes.

Written for Python 3.9; no Qt, no MRML (the module file does the loading into Slicer).
"""

import json
import os

TERMINOLOGY_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Resources",
                                "Terminology", "SegmentationCategoryTypeModifier-TACEResponse.term.json")
CONTEXT_NAME = "Segmentation category and type - TACE Response"  # not translated: the file's context name
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"  # not translated: a context name; Slicer's own; it holds Liver (SCT 10200004)


def read_terminology(path=TERMINOLOGY_FILE):
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def codes(path=TERMINOLOGY_FILE):
    """{(category scheme, value): {"showAnatomy": bool, "types": {(type scheme, value): meaning}}}."""
    found = {}
    for category in read_terminology(path)["SegmentationCodes"]["Category"]:
        types = {(t["CodingSchemeDesignator"], t["CodeValue"]): t["CodeMeaning"] for t in category.get("Type", [])}
        found[(category["CodingSchemeDesignator"], category["CodeValue"])] = {
            "showAnatomy": bool(category.get("showAnatomy")), "types": types}
    return found


def load_into(terminologies_logic, path=TERMINOLOGY_FILE):
    """Load the shipped file into Slicer's Terminologies logic; returns the context name ("" on failure)."""
    return terminologies_logic.LoadTerminologyFromFile(path) or ""
