"""The Slicer logic's errors: each one a sentence fit to show the user as it is (no traceback)."""

from .errors import TACEResponseError


class SlicerLogicError(TACEResponseError):
    """A problem fit to show the user as it is (no traceback)."""


class EditedSegmentationError(SlicerLogicError):
    """Applying a prediction would overwrite segments the user edited; the caller must ask first."""

    def __init__(self, segmentation_node, edited):
        self.segmentation_node = segmentation_node
        self.edited = list(edited)
        super().__init__("{} has edited segments ({}); a new prediction would overwrite them".format(
            segmentation_node.GetName(), ", ".join(self.edited)))


class PredictionFailed(SlicerLogicError):
    """The background command ended with an error; the message is its one-line explanation."""

    def __init__(self, message, exit_code=None):
        self.exit_code = exit_code
        super().__init__(message)
