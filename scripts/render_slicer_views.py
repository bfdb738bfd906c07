"""Render a real TACE Response result through 3D Slicer's own display pipeline, without the desktop application.

The CT goes through the module's scene logic (TACEResponseSceneLogic: the real background command, the demo
model by default), and the resulting Liver and Tumor segments are drawn by slicer-core's MRML slice logic and
displayable managers (the classes Slicer's slice and 3D views use), offscreen (EGL or OSMesa):
an axial and a coronal slice through the largest lesion and a 3D view of the closed surfaces, side by side.

    python scripts/render_slicer_views.py                  # bundled sample CT -> Resources/Screenshots/slicer_views.png
    python scripts/render_slicer_views.py --ct CT.nrrd --model demo --output views.png

Needs slicer-core (pip install slicer-core) and a VTK that renders offscreen.
"""

import argparse
import os
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "TACEResponse"))

import slicer  # noqa: E402  (slicer-core)
import vtk  # noqa: E402

from TACEResponseLib import slicer_logic  # noqa: E402

SAMPLE_CT = os.path.join(REPO, "TACEResponse", "Resources", "SampleData", "synthetic_ct.nii.gz")
OUTPUT = os.path.join(REPO, "Resources", "Screenshots", "slicer_views.png")
VIEW_SIZE = (420, 420)
CT_WINDOW_LEVEL = (400.0, 60.0)  # HU: abdominal soft tissue


def scene_with_logics():
    """A scene wired as Slicer wires it: application logic, default colors, the module logics the result needs."""
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app_logic.GetColorLogic().SetMRMLScene(scene)
    app_logic.GetColorLogic().AddDefaultColorNodes()
    app_logic.SetSliceLogics(vtk.vtkCollection())
    app_logic.SetViewLogics(vtk.vtkCollection())
    app_logic.SetModuleLogic("Colors", app_logic.GetColorLogic())
    keep = []
    for name, class_name in (("Volumes", "vtkSlicerVolumesLogic"), ("Segmentations", "vtkSlicerSegmentationsModuleLogic"),
                             ("SubjectHierarchy", "vtkSlicerSubjectHierarchyModuleLogic"),
                             ("Tables", "vtkSlicerTablesLogic")):
        logic = getattr(slicer, class_name)()
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        keep.append(logic)
    return scene, app_logic, keep


def read_volume(scene, path):
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(path)
    volume = slicer.vtkMRMLScalarVolumeNode()
    volume.SetName(os.path.basename(path).split(".")[0])
    scene.AddNode(volume)
    if not storage.ReadData(volume):
        raise SystemExit("error: cannot read {}".format(path))
    volume.CreateDefaultDisplayNodes()
    display = volume.GetDisplayNode()
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(*CT_WINDOW_LEVEL)
    return volume


def offscreen_window(size):
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*size)
    renderer = vtk.vtkRenderer()
    window.AddRenderer(renderer)
    # displayable managers reach the interactor through the window; a generic one needs no display
    interactor = vtk.vtkGenericRenderWindowInteractor()
    interactor.SetRenderWindow(window)
    return window, renderer


def managers(factory_class, app_logic, renderer, names, view_node):
    factory = factory_class.GetInstance()
    factory.SetMRMLApplicationLogic(app_logic)
    for name in names:
        if not factory.IsDisplayableManagerRegistered(name):
            factory.RegisterDisplayableManager(name)
    group = slicer.vtkMRMLDisplayableManagerGroup()
    group.Initialize(factory, renderer)
    group.SetMRMLDisplayableNode(view_node)
    return group


def slice_view(scene, app_logic, volume, orientation, center, size=VIEW_SIZE):
    """One slice view (the volume layer and the segments' fill and outline) -> RGB array."""
    window, renderer = offscreen_window(size)
    renderer.GetActiveCamera().ParallelProjectionOn()
    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLApplicationLogic(app_logic)
    logic.SetMRMLScene(scene)
    app_logic.GetSliceLogics().AddItem(logic)
    slice_node = logic.AddSliceNode(orientation)
    slice_node.SetOrientation(orientation)
    group = managers(slicer.vtkMRMLSliceViewDisplayableManagerFactory, app_logic, renderer,
                     ["vtkMRMLSegmentationsDisplayableManager2D"], slice_node)
    logic.GetSliceCompositeNode().SetBackgroundVolumeID(volume.GetID())
    logic.ResizeSliceNode(*size)
    logic.FitSliceToBackground()
    slice_node.JumpSliceByCentering(*center)
    # the volume layers, blended by the slice logic, as Slicer's slice view shows them (8-bit RGBA)
    mapper = vtk.vtkImageMapper()
    mapper.SetColorWindow(255)
    mapper.SetColorLevel(127.5)
    mapper.SetInputConnection(logic.GetImageDataConnection())
    actor = vtk.vtkActor2D()
    actor.SetMapper(mapper)
    actor.GetProperty().SetDisplayLocationToBackground()
    renderer.AddViewProp(actor)
    group.RequestRender()
    window.Render()
    return grab(window), (window, group, logic)


def threed_view(scene, app_logic, segmentation, size=VIEW_SIZE):
    """The segments' closed surfaces through Slicer's 3D segmentation displayable manager -> RGB array."""
    window, renderer = offscreen_window(size)
    renderer.SetBackground(0.76, 0.76, 0.87)  # Slicer's default 3D background
    renderer.SetBackground2(0.33, 0.33, 0.51)
    renderer.GradientBackgroundOn()
    view_node = slicer.vtkMRMLViewNode()
    view_node.SetLayoutName("1")
    scene.AddNode(view_node)
    group = managers(slicer.vtkMRMLThreeDViewDisplayableManagerFactory, app_logic, renderer,
                     ["vtkMRMLSegmentationsDisplayableManager3D"], view_node)
    group.RequestRender()
    renderer.ResetCamera()
    camera = renderer.GetActiveCamera()
    camera.SetViewUp(0, 0, 1)
    focal = camera.GetFocalPoint()
    distance = camera.GetDistance()
    # from behind and a little above (posterior-superior): the lesions of the sample face that way
    direction = np.array([-0.3, -0.9, 0.35]) / np.linalg.norm([-0.3, -0.9, 0.35])
    camera.SetPosition(*(np.asarray(focal) + distance * direction))
    renderer.ResetCamera()
    camera.Zoom(1.3)
    window.Render()
    return grab(window), (window, group)


def grab(window):
    capture = vtk.vtkWindowToImageFilter()
    capture.SetInput(window)
    capture.SetInputBufferTypeToRGB()
    capture.ReadFrontBufferOff()
    capture.Update()
    image = capture.GetOutput()
    width, height, _ = image.GetDimensions()
    from vtk.util.numpy_support import vtk_to_numpy

    array = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, 3)
    return array[::-1]  # VTK's rows start at the bottom


def write_png(array, path):
    height, width, _ = array.shape
    image = vtk.vtkImageData()
    image.SetDimensions(width, height, 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    from vtk.util.numpy_support import vtk_to_numpy

    vtk_to_numpy(image.GetPointData().GetScalars())[...] = np.ascontiguousarray(array[::-1]).reshape(-1, 3)
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(path)
    writer.SetInputData(image)
    writer.Write()


def lesion_center(scene, segmentation, volume):
    """RAS center of the Tumor segment (the Liver's when there is no tumor)."""
    labels = slicer_logic.labels_of(segmentation)
    ids = slicer_logic.segment_ids(segmentation, labels)
    masks = slicer_logic.segment_masks(scene, segmentation, volume, ids)
    mask = masks.get("Tumor")
    if mask is None or not mask.any():
        mask = masks["Liver"]
    k, j, i = np.argwhere(mask).mean(axis=0)
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return matrix.MultiplyPoint((i, j, k, 1.0))[:3]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", default=SAMPLE_CT, help="CT volume file (default: the bundled sample)")
    parser.add_argument("--model", default="demo", help="model registry name or package folder (default: demo)")
    parser.add_argument("--output", default=OUTPUT, help="PNG to write")
    parser.add_argument("--labels", default=None,
                        help="draw this label file (1 liver, 2 tumor; on the CT grid) instead of running Predict")
    args = parser.parse_args(argv)

    scene, app_logic, _logics = scene_with_logics()
    volume = read_volume(scene, args.ct)
    if args.labels:
        from TACEResponseLib import model_package

        labels = model_package.resolve(args.model, allow_download=False).card["labels"]
        segmentation = slicer_logic.import_segmentation(scene, args.labels, labels, volume, create_surface=True)
        segmentation.SetAttribute(slicer_logic.ATTR_MODEL, '{"labels": %s}' % __import__("json").dumps(labels))
        result = None
    else:
        with tempfile.TemporaryDirectory(prefix="tace-render-") as work:
            logic = slicer_logic.TACEResponseSceneLogic(scene, sys.executable, temp_root=work)
            outcome = logic.run(logic.start_predict([volume], args.model, device="cpu"), create_surface=True,
                                timeout=1800)
        segmentation, result = outcome["segmentation"], outcome["result"]
    display = segmentation.GetDisplayNode()
    display.SetOpacity2DFill(0.45)
    display.SetOpacity2DOutline(1.0)
    center = lesion_center(scene, segmentation, volume)
    axial, keep_axial = slice_view(scene, app_logic, volume, "Axial", center)
    coronal, keep_coronal = slice_view(scene, app_logic, volume, "Coronal", center)
    threed, keep_threed = threed_view(scene, app_logic, segmentation)
    gap = np.full((VIEW_SIZE[1], 6, 3), 255, np.uint8)
    picture = np.concatenate([axial, gap, coronal, gap, threed], axis=1)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    write_png(picture, args.output)
    if result is None:
        print("wrote {} ({} x {}) from {}".format(args.output, picture.shape[1], picture.shape[0], args.labels))
        return 0
    m = result["measurements"]
    print("wrote {} ({} x {}): {} {}, response probability {:.0%}, liver {:.0f} mL, tumor {:.1f} mL".format(
        args.output, picture.shape[1], picture.shape[0], result["model"]["name"], result["model"]["version"],
        result["response_probability"], m["liver_volume_ml"], m["tumor_volume_ml"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
