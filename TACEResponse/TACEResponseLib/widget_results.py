"""The panel's result and correction sections: probability, risk and measurements from the table, whether
an Update is due, the Segment Editor, and segments taken from other nodes. Runs inside Slicer only (imports qt and the application); Python 3.9 compatible (Slicer 5.8)."""

import logging

import slicer

from . import slicer_logic
from .errors import TACEResponseError
from .i18n import _

RISK_COLORS = {"high": "#c62828", "low": "#2e7d32"}


class ResultsSection:
    """Mixed into TACEResponseWidget: needs self.ui, self.logic, self._parameterNode."""

    def onEditInSegmentEditor(self):
        segmentation = self._parameterNode.outputSegmentation
        if segmentation is None:
            return
        volumes = [v for v in slicer_logic.input_volumes(segmentation) if v is not None]
        volume = volumes[0] if volumes else self._parameterNode.inputVolume1
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(segmentation)
        if volume is not None:
            if hasattr(editor, "setSourceVolumeNode"):
                editor.setSourceVolumeNode(volume)
            else:  # Slicer before 5.2
                editor.setMasterVolumeNode(volume)
        labels = slicer_logic.labels_of(segmentation)
        ids = slicer_logic.segment_ids(segmentation, labels) if labels else {}
        tumorID = next((ids[name] for name in ids if name.lower() == "tumor"), None)
        if tumorID:
            editor.setCurrentSegmentID(tumorID)

    def populateSceneSegments(self):
        """Every segment in the scene except ours, to take the liver or the tumor from (e.g. TotalSegmentator)."""
        own = self._parameterNode.outputSegmentation if self._parameterNode else None
        self._sceneSegments = slicer_logic.segment_choices(slicer.mrmlScene, exclude=own)
        selector = self.ui.sceneSegmentSelector
        selector.clear()
        for _node, _segmentID, text in self._sceneSegments:
            selector.addItem(text)
        if not self._sceneSegments:
            selector.addItem(_("(no other segmentation in the scene)"))
        self.updateButtons()

    def onUseSceneSegment(self, labelName):
        """Replace our Liver or Tumor segment with the chosen segment of another node; Update then uses it."""
        index = self.ui.sceneSegmentSelector.currentIndex
        segmentation = self._parameterNode.outputSegmentation if self._parameterNode else None
        if segmentation is None or not (0 <= index < len(self._sceneSegments)):
            return
        sourceNode, sourceSegmentID, text = self._sceneSegments[index]
        labels = slicer_logic.labels_of(segmentation)
        ids = slicer_logic.segment_ids(segmentation, labels)
        volumes = [volume for volume in slicer_logic.input_volumes(segmentation) if volume is not None]
        if labelName not in ids or not volumes:
            self.showError(_("Run Predict first: the segment is copied into the segmentation Predict made."))
            return
        try:
            with slicer.util.WaitCursor():
                slicer_logic.copy_segment(slicer.mrmlScene, sourceNode, sourceSegmentID, segmentation, ids[labelName],
                                          volumes[0])
        except TACEResponseError as exc:
            self.showError(str(exc))
            return
        self.setStatus(_("{label} now holds {source}: click Update.").format(label=labelName, source=text))
        self.updateResultsPanel(checkEdits=True)

    def setStatus(self, text, color=None):
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: {}".format(color) if color else "")

    def showError(self, message):
        """The one-line error (e.g. from the command line) in the panel, in red."""
        self.setStatus(_("Error: {message}").format(message=message), "#c62828")
        logging.error("TACE Response: " + message)

    def updateResultsPanel(self, checkEdits=False):
        if not hasattr(self, "ui"):
            return
        segmentation = self._parameterNode.outputSegmentation if self._parameterNode else None
        table = self._parameterNode.resultTable if self._parameterNode else None
        if table is None and segmentation is not None:
            table = segmentation.GetNodeReference(slicer_logic.REF_RESULT_TABLE)
        result = slicer_logic.table_result(table) if table is not None else None
        fields = [self.ui.probabilityLabel, self.ui.riskLabel, self.ui.liverVolumeLabel, self.ui.tumorVolumeLabel,
                  self.ui.tumorCountLabel, self.ui.largestDiameterLabel, self.ui.tumorBurdenLabel,
                  self.ui.tumorSourceLabel, self.ui.modelUsedLabel, self.ui.deviceUsedLabel]
        if result is None:
            for field in fields:
                field.text = "—"
            self.ui.riskLabel.setStyleSheet("")
            self.ui.warningsLabel.text = ""
            self.ui.intendedUseLabel.text = ""
            self.ui.editStateLabel.text = ""
            self.updateButtons()
            return
        m = result.get("measurements", {})
        category = result.get("risk_category", "")
        self.ui.probabilityLabel.text = "{:.0%}".format(result["response_probability"])
        if category == "high":
            risk = _("High risk (cutoff {cutoff:.0%})")
        elif category == "low":
            risk = _("Low risk (cutoff {cutoff:.0%})")
        else:
            risk = _("Risk {category} (cutoff {cutoff:.0%})")
        self.ui.riskLabel.text = risk.format(category=category, cutoff=result.get("risk_cutoff", 0))
        self.ui.riskLabel.toolTip = result.get("risk_meaning", "")
        self.ui.riskLabel.setStyleSheet("font-weight: bold; color: {color}".format(  # not translated: style sheet
            color=RISK_COLORS.get(category, "black")))
        self.ui.liverVolumeLabel.text = _("{liver:.0f} mL (parenchyma {parenchyma:.0f} mL)").format(
            liver=m.get("liver_volume_ml", 0), parenchyma=m.get("liver_parenchyma_volume_ml", 0))
        self.ui.tumorVolumeLabel.text = "{:.1f} mL".format(m.get("tumor_volume_ml", 0))
        self.ui.tumorCountLabel.text = str(m.get("tumor_count", 0))
        self.ui.largestDiameterLabel.text = "{:.1f} mm".format(m.get("largest_tumor_diameter_mm", 0))
        self.ui.tumorBurdenLabel.text = "{:.1f} %".format(m.get("tumor_burden_percent", 0))
        if result.get("tumor_edited"):
            self.ui.tumorSourceLabel.text = _("edited by you (Segment Editor)")
        else:
            self.ui.tumorSourceLabel.text = result.get("tumor_source", "")
        if result.get("liver_source", "predicted") != "predicted":
            self.ui.tumorSourceLabel.text += _("; liver: {source}").format(source=result["liver_source"])
        model = result.get("model", {})
        self.ui.modelUsedLabel.text = "{} {}".format(model.get("name", ""), model.get("version", ""))
        self.ui.modelUsedLabel.toolTip = "SHA-256 " + model.get("sha256", "")
        self.ui.deviceUsedLabel.text = result.get("device", "")
        warnings = result.get("warnings", [])
        self.ui.warningsLabel.text = "<br>".join("⚠ " + w for w in warnings)
        use = model.get("intended_use", "")
        self.ui.intendedUseLabel.text = _("Intended use: {use}").format(use=use) if use else ""
        if checkEdits:  # otherwise keep the last answer (finding it exports every segment)
            stale = False
            if segmentation is not None and slicer_logic.labels_of(segmentation):
                with slicer.util.WaitCursor():
                    stale = not self.logic.sceneLogic.result_is_current(segmentation)
            self.ui.editStateLabel.text = _(
                "The segmentation was edited after this result was computed: click <b>Update</b>.") if stale else ""
        self.updateButtons()
