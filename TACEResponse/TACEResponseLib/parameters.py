"""The panel's state, saved with the scene (parameterNodeWrapper). Runs inside Slicer only (imports qt and the application); Python 3.9 compatible (Slicer 5.8)."""

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import parameterNodeWrapper

from . import model_package


@parameterNodeWrapper
class TACEResponseParameterNode:
    """What the panel holds, saved with the scene.

    inputVolume1..4 - one CT volume per phase the model declares (in the card's order).
    model - registry name (e.g. "demo") or path of a model package folder.
    device - "auto", "cpu", "cuda" or "mps".
    outputSegmentation - the segmentation Predict writes to (None: a new one is created).
    resultTable - the table with probability, risk and measurements.
    """

    inputVolume1: vtkMRMLScalarVolumeNode
    inputVolume2: vtkMRMLScalarVolumeNode
    inputVolume3: vtkMRMLScalarVolumeNode
    inputVolume4: vtkMRMLScalarVolumeNode
    model: str = model_package.DEFAULT_MODEL
    device: str = "auto"
    outputSegmentation: vtkMRMLSegmentationNode
    resultTable: vtkMRMLTableNode

    def inputVolumes(self):
        return [self.inputVolume1, self.inputVolume2, self.inputVolume3, self.inputVolume4]
