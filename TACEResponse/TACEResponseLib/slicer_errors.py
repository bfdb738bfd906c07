"""The Slicer logic's errors: each one a sentence fit to show the user as it is (no traceback)."""

from .errors import TACEResponseError
from .i18n import _


class SlicerLogicError(TACEResponseError):
    """A problem fit to show the user as it is (no traceback)."""


class EditedSegmentationError(SlicerLogicError):
    """Applying a prediction would overwrite segments the user edited; the caller must ask first."""

    def __init__(self, segmentation_node, edited):
        self.segmentation_node = segmentation_node
        self.edited = list(edited)
        super().__init__(_("{segmentation} has edited segments ({segments}); a new prediction would overwrite "
                           "them").format(segmentation=segmentation_node.GetName(), segments=", ".join(self.edited)))


class PredictionFailed(SlicerLogicError):
    """The background command ended with an error; the message is its one-line explanation."""

    def __init__(self, message, exit_code=None):
        self.exit_code = exit_code
        super().__init__(message)


class NonLinearTransformError(SlicerLogicError):
    """The input is under a non-linear transform: the network would see the unwarped voxels while the views
    show them warped. The caller asks whether to run on a hardened copy (``harden_copies=True``)."""

    def __init__(self, volume_node, transform_node):
        self.volume_node = volume_node
        self.transform_node = transform_node
        super().__init__(_("{volume} is under the non-linear transform {transform}; run on a hardened copy "
                           "(harden_copies=True; the panel asks) or harden the transform first").format(
            volume=volume_node.GetName(), transform=transform_node.GetName()))

    def question(self):
        """What the panel asks before making the copy."""
        return _("{volume} is under the non-linear transform {transform}.\n\nPredict can run on a hardened copy: "
                 "a new volume resampled through the transform, as the views show it. The "
                 "segmentation is made on the copy; {volume} and its transform stay as they are.\n\n"
                 "Make the copy and predict?").format(volume=self.volume_node.GetName(),
                                                      transform=self.transform_node.GetName())
