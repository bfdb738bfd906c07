"""TACE Response: liver and HCC tumor segmentation on CT with a prediction of the response to TACE.

The 3D Slicer module file: metadata and start-up only. Everything else lives in TACEResponseLib, one job
per file (see TACEResponseLib/__init__.py):
- the panel: ``widget`` (set-up, parameter node) with ``widget_models``, ``widget_runs``, ``widget_results``;
- Slicer-side services: ``module_logic`` (dependencies, models), ``parameters``, ``sample_data``, ``self_test``;
- the MRML glue, tested outside Slicer against slicer-core: ``slicer_logic`` and the files it names;
- ``PythonSlicer -m TACEResponseLib predict``: the same command line batch users run, in a background process.

Python 3.9 compatible (Slicer 5.8).
"""

import logging
import os
import sys

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModule

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
if MODULE_DIR not in sys.path:
    sys.path.insert(0, MODULE_DIR)

from TACEResponseLib import terminology  # noqa: E402
from TACEResponseLib.i18n import _, translate  # noqa: E402
from TACEResponseLib.module_logic import TACEResponseLogic  # noqa: E402,F401  (Slicer looks these up by name)
from TACEResponseLib.parameters import TACEResponseParameterNode  # noqa: E402,F401
from TACEResponseLib.sample_data import registerSampleData  # noqa: E402
from TACEResponseLib.self_test import TACEResponseTest  # noqa: E402,F401
from TACEResponseLib.widget import TACEResponseWidget  # noqa: E402,F401


class TACEResponse(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("TACE Response")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        # the PyTorch extension is an extension-level dependency (CMake); torch itself is installed in the
        # background with light-the-torch, as its PyTorchUtils does (dependency_install.py)
        self.parent.dependencies = []
        # not translated: names
        self.parent.contributors = ["TACE Response contributors (https://github.com/tace-response/SlicerTACEResponse)"]
        self.parent.helpText = _("""
Segments the liver and hepatocellular carcinoma (HCC) on a contrast CT and estimates the probability of an
objective response to transarterial chemoembolization (TACE), with liver and tumor measurements.
<ol>
<li>Pick the model and the CT volume (one per phase the model needs), then click <b>Predict</b>.
Prediction runs in the background; <b>Cancel</b> stops it and leaves the scene unchanged.</li>
<li>Check the Liver and Tumor segments in the slice and 3D views. To correct the tumor, click
<b>Edit in Segment Editor</b>, edit, come back and click <b>Update</b>: the measurements are recomputed and the
response is predicted again with your tumor.</li>
<li>Save the scene: the segmentation, the result table and this panel's settings are saved with it.</li>
</ol>
The bundled demo model was trained on synthetic data and is <b>not for clinical use</b>.
See <a href="https://github.com/tace-response/SlicerTACEResponse#using-it-in-3d-slicer">the documentation</a>.
""")
        self.parent.acknowledgementText = _("""
Multi-task network design after Li et al., J Pers Med 2022;12(2):248 ("multi-DL": shared encoder,
segmentation pathway, prediction pathway). Test CT from the TCIA HCC-TACE-Seg collection (Moawad et al., 2021,
CC BY 4.0). Uses PyTorch through the SlicerPyTorch extension.
""")
        slicer.app.connect("startupCompleted()", registerSampleData)
        slicer.app.connect("startupCompleted()", loadTerminology)


def loadTerminology():
    """Load the module's terminology context so Slicer's terminology selector knows the Liver and Tumor codes."""
    try:
        terminologiesLogic = slicer.modules.terminologies.logic()
    except AttributeError:  # Terminologies module not loaded
        logging.warning("TACE Response: the Terminologies module is not available; segment codes are still written")
        return
    if not terminology.load_into(terminologiesLogic):
        logging.warning("TACE Response: could not load {path}".format(path=terminology.TERMINOLOGY_FILE))
