"""Predict and Update on a Slicer scene: the MRML glue between a scene and ``tace-response predict`` (floor 4).

Everything here takes the scene as an argument and imports ``slicer`` and ``vtk`` only: never ``qt``,
``ctk``, ``slicer.app`` or ``slicer.mrmlScene``. So it runs, and is tested, against slicer-core's MRML
classes without the Slicer application; the module widget (TACEResponse.py) is a thin shell around it.

This file holds the scene logic (:class:`TACEResponseSceneLogic`); the parts it uses live beside it, one
job each, and their names are re-exported here for the widget and the tests:

- ``scene_io``: volume node -> NRRD with its geometry, input checks, hardened copies of volumes under a
  non-linear transform, node attributes, subject hierarchy;
- ``segments``: labelmap -> Liver/Tumor segments with terminology, segments -> masks, edit fingerprints,
  segments taken from other nodes;
- ``result_table``: result -> table node and back;
- ``command``: the command line, progress, log and errors of the background process (PredictionJob);
- ``model_choices``: the model selector's entries; ``environment``: packages and devices (no torch import).

Written for Python 3.9 (the Python bundled with Slicer 5.8).
"""

import datetime
import os
import shutil
import tempfile

from . import __version__, model_package
from .cli import SEGMENTATION_NAME
from .command import (LIB_PARENT, STAGE_SPANS, PredictionJob, child_environment, command_log,  # noqa: F401
                      error_message, overall_fraction, parse_progress_line, predict_command, read_result)
from .environment import (PIP_REQUIREMENTS, REQUIRED_PACKAGES, SLICER_OWNED_PACKAGES,  # noqa: F401
                          missing_packages, pip_constraints)
from .i18n import _
from .model_choices import ModelChoice, choice_for, model_choices  # noqa: F401
from .process_runner import ProcessRunner, run_to_completion
from .result_table import RESULT_ROWS, fill_table, result_values, table_result, table_values  # noqa: F401
from .scene_io import (ATTR_HARDENED_FROM, ATTR_MODEL, ATTR_PREDICTED_HASHES, ATTR_RESULT,  # noqa: F401
                       ATTR_RESULT_HASHES, ATTR_SEGMENT_IDS, MAX_PHASES, REF_INPUT_VOLUME, REF_RESULT_TABLE,
                       TemporaryNodes, check_inputs, find_label, hardened_copy,
                       non_linear_transform, phase_title,
                       phases_of, place_in_subject_hierarchy, read_labelmap, segmentation_name, sitk_image, table_name,
                       write_volume)
from .segments import (ANATOMIC_CONTEXT, DEFAULT_COLORS, DEFAULT_TERMINOLOGY, TERMINOLOGY_CONTEXT,  # noqa: F401
                       content_fingerprints, content_stamp, copy_segment, edited_segments, fingerprint,
                       import_segmentation, input_volumes, label_color, labels_of, measure_masks, segment_choices,
                       organ_fingerprint, segment_ids, segment_masks, terminology_entry, write_segment_mask,
                       write_tumor_mask)
from .scene_io import ATTR_PREDICTED_ORGAN, json_attribute, set_json_attribute
from .slicer_errors import (EditedSegmentationError, NonLinearTransformError, PredictionFailed,  # noqa: F401
                            SlicerLogicError)


class TACEResponseSceneLogic:
    """Predict and Update on one scene. The process runner is injectable; ``run`` drives a job to its end."""

    def __init__(self, scene, python_executable, lib_parent=LIB_PARENT, temp_root=None):
        self.scene = scene
        self.python_executable = python_executable
        self.lib_parent = lib_parent
        self.temp_root = temp_root
        self._current_cache = {}  # segmentation ID -> (content stamp, result_is_current answer)

    # -- models

    def resolve_model(self, key, allow_download=False, progress=None):
        return model_package.resolve(key or model_package.DEFAULT_MODEL, allow_download=allow_download,
                                     progress=progress)

    # -- starting

    def _work_dir(self):
        if self.temp_root:
            os.makedirs(self.temp_root, exist_ok=True)
        return tempfile.mkdtemp(prefix="TACEResponse-", dir=self.temp_root)

    def _write_inputs(self, work_dir, volume_nodes, phases):
        paths = []
        for index, (node, phase) in enumerate(zip(volume_nodes, phases)):
            paths.append(write_volume(node, os.path.join(work_dir, "input{}_{}.nrrd".format(index, phase))))
        return paths

    def owned_segmentation(self, segmentation_node, volume_nodes):
        """``segmentation_node`` if it may receive a prediction for these volumes, else None (make a new one)."""
        if segmentation_node is None or self.scene.GetNodeByID(segmentation_node.GetID()) is None:
            return None
        recorded = [node.GetID() if node else None for node in input_volumes(segmentation_node)]
        wanted = [node.GetID() for node in volume_nodes]
        if recorded == wanted:
            return segmentation_node
        if not recorded and segmentation_node.GetSegmentation().GetNumberOfSegments() == 0:
            return segmentation_node  # an empty segmentation the user created for this
        return None

    def start_predict(self, volume_nodes, model_key, device="auto", segmentation_node=None, table_node=None,
                      overwrite_edited=False, package=None, harden_copies=False):
        """Check the inputs, write them to a temporary folder, and build the command (nothing runs yet).

        Inputs under a non-linear transform raise NonLinearTransformError unless ``harden_copies``: then the
        prediction runs on hardened copies (new volume nodes; removed again if the job is discarded)."""
        package = package or self.resolve_model(model_key)
        phases = phases_of(package.card)
        volume_nodes = list(volume_nodes)
        problem = check_inputs(volume_nodes, phases)
        if problem:
            raise SlicerLogicError(problem)
        volume_nodes = volume_nodes[:len(phases)]
        warping = non_linear_transform(volume_nodes[0])
        if warping is not None and not harden_copies:
            raise NonLinearTransformError(volume_nodes[0], warping)
        copies = []
        try:
            if warping is not None:
                for node in volume_nodes:
                    copies.append(hardened_copy(self.scene, node))
                volume_nodes = copies
            segmentation_node = self.owned_segmentation(segmentation_node, volume_nodes)
            if segmentation_node is not None and not overwrite_edited:
                edited = edited_segments(self.scene, segmentation_node, volume_nodes[0], package.card["labels"])
                if edited:
                    raise EditedSegmentationError(segmentation_node, edited)
            work_dir = self._work_dir()
            try:
                inputs = self._write_inputs(work_dir, volume_nodes, phases)
            except BaseException:
                shutil.rmtree(work_dir, ignore_errors=True)
                raise
        except BaseException:
            for node in copies:
                self.scene.RemoveNode(node)
            raise
        output_dir = os.path.join(work_dir, "output")
        command = predict_command(self.python_executable, inputs, output_dir, model_key, device)
        if table_node is not None and segmentation_node is None:
            table_node = None  # a new segmentation gets a new table
        job = PredictionJob("predict", command, child_environment(self.lib_parent), work_dir, output_dir,
                            [node.GetID() for node in volume_nodes], model_key, package.card,
                            segmentation_node.GetID() if segmentation_node else None,
                            table_node.GetID() if table_node else None)
        job.created_volume_ids = [node.GetID() for node in copies]
        return job

    def start_update(self, segmentation_node, model_key, device="auto", package=None):
        """Write the inputs and the edited Tumor segment, measure the edited segmentation, build the command."""
        package = package or self.resolve_model(model_key)
        volume_nodes = input_volumes(segmentation_node)
        if not volume_nodes or any(node is None for node in volume_nodes):
            raise SlicerLogicError(_("the CT volume(s) {segmentation} was made from are no longer in the scene").format(
                segmentation=segmentation_node.GetName()))
        phases = phases_of(package.card)
        problem = check_inputs(volume_nodes, phases)
        if problem:
            raise SlicerLogicError(problem)
        labels = package.card["labels"]
        ids = segment_ids(segmentation_node, labels)
        tumor_name = str(find_label(labels, "Tumor")["name"])
        if tumor_name not in ids:
            raise SlicerLogicError(_("{segmentation} has no {segment} segment; add one (Segment Editor) and draw the "
                                     "tumor in it").format(segmentation=segmentation_node.GetName(), segment=tumor_name))
        liver_name = str(find_label(labels, "Liver")["name"])
        reference = volume_nodes[0]
        work_dir = self._work_dir()
        try:
            inputs = self._write_inputs(work_dir, volume_nodes, phases)
            mask_path = write_tumor_mask(self.scene, segmentation_node, reference,
                                         os.path.join(work_dir, "tumor_mask.nrrd"), ids[tumor_name])
            masks = segment_masks(self.scene, segmentation_node, reference, ids)
            # the liver goes to the command only when the user changed it: the Liver segment differs from the
            # model's and so does the organ (liver and tumor together). Painting tumor into the liver takes
            # voxels from the Liver segment but leaves the organ, and painting it beside the liver leaves the
            # Liver segment; in both the command finds the same liver by itself
            predicted = json_attribute(segmentation_node, ATTR_PREDICTED_HASHES) or {}
            liver_path = None
            if (liver_name in masks and fingerprint(masks[liver_name]) != predicted.get(liver_name)
                    and organ_fingerprint(masks, liver_name, tumor_name) != segmentation_node.GetAttribute(
                        ATTR_PREDICTED_ORGAN)):
                liver_path = write_segment_mask(self.scene, segmentation_node, reference,
                                                os.path.join(work_dir, "liver_mask.nrrd"), ids[liver_name])
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
        output_dir = os.path.join(work_dir, "output")
        command = predict_command(self.python_executable, inputs, output_dir, model_key, device, mask_path,
                                  liver_path)
        table = segmentation_node.GetNodeReference(REF_RESULT_TABLE)
        job = PredictionJob("update", command, child_environment(self.lib_parent), work_dir, output_dir,
                            [node.GetID() for node in volume_nodes], model_key, package.card,
                            segmentation_node.GetID(), table.GetID() if table else None)
        job.fingerprints = {name: fingerprint(mask) for name, mask in masks.items()}
        for label in labels:
            job.fingerprints.setdefault(str(label["name"]), "missing")
        job.measurements = measure_masks(masks, labels, reference)
        return job

    # -- running (synchronously; the widget polls a ProcessRunner from a timer instead)

    def run(self, job, runner_class=ProcessRunner, on_progress=None, idle=None, timeout=None, **finish_options):
        """Run the job's command to its end and apply the result. Returns the outcome (see ``finish``)."""
        def on_line(line):
            if job.handle_line(line) and on_progress is not None:
                on_progress(job.stage, job.fraction)

        try:
            code, stderr_text = run_to_completion(job.command, env=job.env, on_line=on_line, idle=idle,
                                                  timeout=timeout, runner_class=runner_class)
        except BaseException:
            self.discard(job)
            raise
        return self.finish(job, code, stderr_text, **finish_options)

    # -- applying

    def finish(self, job, exit_code, stderr_text="", overwrite_edited=False, new_segmentation=False,
               create_surface=False, keep_files=False):
        """Apply a finished command's result to the scene; returns {"segmentation", "table", "result"}.

        On failure raises PredictionFailed (scene unchanged). If the target segmentation was edited while
        the command ran, raises EditedSegmentationError and keeps the job's files so the caller can ask the
        user and call again with ``overwrite_edited`` or ``new_segmentation``. The temporary folder is
        removed afterwards unless ``keep_files`` (then call ``discard``).
        """
        try:
            if exit_code != 0:
                raise PredictionFailed(error_message(exit_code, stderr_text), exit_code)
            result = read_result(job.output_dir)
            if job.kind == "predict":
                outcome = self._apply_predict(job, result, overwrite_edited, new_segmentation, create_surface)
            else:
                outcome = self._apply_update(job, result)
        except EditedSegmentationError:
            raise
        except BaseException:
            self.discard(job)
            raise
        job.applied = True
        if not keep_files:
            self.discard(job)
        return outcome

    def discard(self, job):
        """Remove the job's temporary folder (inputs, mask, outputs) and, unless its result was applied, the
        hardened copies it made."""
        if job.work_dir and os.path.isdir(job.work_dir):
            shutil.rmtree(job.work_dir, ignore_errors=True)
        if not job.applied:
            for node_id in job.created_volume_ids:
                node = self.scene.GetNodeByID(node_id)
                if node is not None:
                    self.scene.RemoveNode(node)
            job.created_volume_ids = []

    def _volumes(self, job):
        nodes = [self.scene.GetNodeByID(node_id) for node_id in job.volume_ids]
        if any(node is None for node in nodes):
            raise SlicerLogicError(_("an input volume was removed from the scene while the prediction ran"))
        return nodes

    def _describe(self, result, job, volume_nodes):
        """The CLI's result, plus what Slicer knows: input node names, time, edit state."""
        result = dict(result)
        result["inputs"] = [node.GetName() for node in volume_nodes]
        result["model_key"] = job.model_key
        result["computed_at"] = datetime.datetime.now().isoformat(timespec="seconds")
        result.setdefault("software", {"name": "tace-response", "version": __version__})
        return result

    def _apply_predict(self, job, result, overwrite_edited, new_segmentation, create_surface):
        volume_nodes = self._volumes(job)
        reference = volume_nodes[0]
        labels = job.labels
        segmentation_node = None
        if job.segmentation_id and not new_segmentation:
            segmentation_node = self.scene.GetNodeByID(job.segmentation_id)
        if segmentation_node is not None and not overwrite_edited:
            edited = edited_segments(self.scene, segmentation_node, reference, labels)
            if edited:
                raise EditedSegmentationError(segmentation_node, edited)
        table_node = None
        if segmentation_node is not None:
            table_node = segmentation_node.GetNodeReference(REF_RESULT_TABLE)
        if table_node is None and job.table_id and not new_segmentation:
            table_node = self.scene.GetNodeByID(job.table_id)

        label_path = os.path.join(job.output_dir, SEGMENTATION_NAME)
        segmentation_node = import_segmentation(self.scene, label_path, labels, reference, segmentation_node,
                                                create_surface=create_surface)
        segmentation_node.RemoveNodeReferenceIDs(REF_INPUT_VOLUME)
        for node in volume_nodes:
            segmentation_node.AddNodeReferenceID(REF_INPUT_VOLUME, node.GetID())
        set_json_attribute(segmentation_node, ATTR_MODEL, {
            "key": job.model_key, "name": job.card["name"], "version": job.card["version"], "labels": labels})
        prints = content_fingerprints(self.scene, segmentation_node, reference, labels)
        set_json_attribute(segmentation_node, ATTR_PREDICTED_HASHES, prints)
        ids = segment_ids(segmentation_node, labels)
        masks = segment_masks(self.scene, segmentation_node, reference, ids)
        liver_name, tumor_name = (str(find_label(labels, name)["name"]) for name in ("Liver", "Tumor"))
        segmentation_node.SetAttribute(ATTR_PREDICTED_ORGAN, organ_fingerprint(masks, liver_name, tumor_name))
        set_json_attribute(segmentation_node, ATTR_RESULT_HASHES, prints)

        result = self._describe(result, job, volume_nodes)
        # not translated: the result's values read the same in every language (as the command line's)
        result.update({"tumor_edited": False, "liver_edited": False, "measured_on": "model output"})
        table_node = fill_table(self.scene, result, table_node, table_name(reference))
        segmentation_node.SetNodeReferenceID(REF_RESULT_TABLE, table_node.GetID())
        place_in_subject_hierarchy(self.scene, reference, [segmentation_node, table_node])
        return {"segmentation": segmentation_node, "table": table_node, "result": result}

    def _apply_update(self, job, result):
        volume_nodes = self._volumes(job)
        reference = volume_nodes[0]
        segmentation_node = self.scene.GetNodeByID(job.segmentation_id)
        if segmentation_node is None:
            raise SlicerLogicError(_("the segmentation was removed from the scene while the update ran"))
        labels = job.labels
        predicted = json_attribute(segmentation_node, ATTR_PREDICTED_HASHES) or {}
        tumor_name = str(find_label(labels, "Tumor")["name"])
        liver_name = str(find_label(labels, "Liver")["name"])

        result = self._describe(result, job, volume_nodes)
        result["measurements_from_command"] = result.get("measurements")
        result["measurements"] = job.measurements
        # the result's values read the same in every language (as the command line's): not translated
        result["tumor_source"] = "user mask (edited {segment} segment)".format(segment=tumor_name)  # not translated: value
        result["tumor_edited"] = job.fingerprints.get(tumor_name) != predicted.get(tumor_name)
        result["measured_on"] = "edited segmentation"  # not translated: value
        result["tumor_mask"] = "{segment} segment of {segmentation}".format(  # not translated: value
            segment=tumor_name, segmentation=segmentation_node.GetName())
        result["liver_edited"] = "--liver-mask" in job.command  # the organ changed, not just the tumor in it
        if "--liver-mask" in job.command:
            result["liver_source"] = "user mask (edited {segment} segment)".format(  # not translated: value
                segment=liver_name)
            result["liver_mask"] = "{segment} segment of {segmentation}".format(  # not translated: value
                segment=liver_name, segmentation=segmentation_node.GetName())
        table_node = self.scene.GetNodeByID(job.table_id) if job.table_id else None
        table_node = fill_table(self.scene, result, table_node, table_name(reference))
        segmentation_node.SetNodeReferenceID(REF_RESULT_TABLE, table_node.GetID())
        set_json_attribute(segmentation_node, ATTR_RESULT_HASHES, job.fingerprints)
        place_in_subject_hierarchy(self.scene, reference, [table_node])
        return {"segmentation": segmentation_node, "table": table_node, "result": result}

    # -- state for the panel

    def result_is_current(self, segmentation_node):
        """False when the segmentation was edited after its result was computed (Update is due).

        Finding out exports every segment; the answer is kept until a segment's data or the recorded
        result changes (entering the module asks more than once)."""
        stamp = content_stamp(segmentation_node)
        cached = self._current_cache.get(segmentation_node.GetID())
        if cached is not None and cached[0] == stamp:
            return cached[1]
        current = not edited_segments(self.scene, segmentation_node, against=ATTR_RESULT_HASHES)
        self._current_cache[segmentation_node.GetID()] = (stamp, current)
        return current
