"""What the Slicer module needs from its environment, checked without Slicer: no PyTorch in Slicer's own
process at start-up (devices come from a child process), the torch version check, the shipped
terminology file, and the model and device choices surviving a scene save and reload."""

import ast
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.path.join(ROOT, "TACEResponse")
MODULE_PY = os.path.join(MODULE, "TACEResponse.py")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from TACEResponseLib import environment, terminology  # noqa: E402


LIB = os.path.join(MODULE, "TACEResponseLib")
QT_SIDE = ("qt", "ctk", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper", "slicer.util")


def _lib_imports(tree):
    """TACEResponseLib modules a file imports at module level (not inside functions)."""
    found = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module is None:
                found.update(alias.name for alias in node.names)
            elif node.level == 1:
                found.add(node.module)
            elif node.module == "TACEResponseLib":
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("TACEResponseLib."):
                found.add(node.module.split(".", 1)[1])
    return {name for name in found if os.path.isfile(os.path.join(LIB, name + ".py"))}


def _parse(path):
    return ast.parse(open(path, encoding="utf-8").read())


def _startup_lib_modules():
    """Every TACEResponseLib module Slicer loads with TACEResponse.py (module-level imports, followed)."""
    todo, seen = sorted(_lib_imports(_parse(MODULE_PY))), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += sorted(_lib_imports(_parse(os.path.join(LIB, name + ".py"))) - seen)
    return sorted(seen)


def _imports_torch(nodes):
    for top in nodes:
        for node in ast.walk(top):
            if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "torch" for alias in node.names):
                return node.lineno
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "torch":
                return node.lineno
    return None


def _qt_side(tree):
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module)
    return bool(imported & set(QT_SIDE))


def test_no_torch_import_in_slicers_process_at_start_up():
    """Neither the module file nor any library file it loads imports torch at module level; the Slicer-side
    files (the panel, its logic, the self-test) import it nowhere at all: torch lives in the child processes."""
    modules = _startup_lib_modules()
    assert {"widget", "widget_models", "module_logic", "slicer_logic", "environment"} <= set(modules), modules
    assert _imports_torch([_parse(MODULE_PY)]) is None
    for name in modules:
        tree = _parse(os.path.join(LIB, name + ".py"))
        module_level = [node for node in tree.body if not isinstance(node, (ast.FunctionDef, ast.ClassDef))]
        assert _imports_torch(module_level) is None, "TACEResponseLib/{}.py imports torch at module level".format(name)
        if _qt_side(tree):
            line = _imports_torch([tree])
            assert line is None, "TACEResponseLib/{}.py:{} imports torch in Slicer's process".format(name, line)
    for name in ("widget_models.py", "widget.py"):
        assert "detect_devices" not in open(os.path.join(LIB, name), encoding="utf-8").read()


def test_startup_modules_do_not_import_torch(tmp_path):
    """Import the start-up library modules that run without Qt, and do what the panel's set-up does
    (device list, model list, version check), in a fresh interpreter: torch must not be loaded."""
    modules = [name for name in _startup_lib_modules() if not _qt_side(_parse(os.path.join(LIB, name + ".py")))]
    assert {"slicer_logic", "environment", "model_choices", "segments", "terminology"} <= set(modules), modules
    code = "\n".join([
        "import importlib, sys",
        "sys.path.insert(0, {!r})".format(MODULE),
        "for name in {!r}: importlib.import_module('TACEResponseLib.' + name)".format(modules),
        "from TACEResponseLib import environment, slicer_logic",
        "environment.device_choices(None)",
        "slicer_logic.model_choices()",
        "environment.torch_version_problem()",
        "from TACEResponseLib import dependency_install",
        "dependency_install.make_plan(sys.executable, {!r})".format(str(tmp_path)),
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'safetensors')))",
    ])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_devices_are_probed_in_a_child_process():
    from TACEResponseLib import slicer_logic
    from TACEResponseLib.process_runner import run_to_completion

    lines = []
    code, stderr_text = run_to_completion(environment.probe_command(sys.executable),
                                          env=slicer_logic.child_environment(), on_line=lines.append, timeout=300)
    assert code == 0, stderr_text
    found = environment.parse_probe("\n".join(lines))
    import torch

    assert found["torch"] == str(torch.__version__)
    assert bool(found["cuda"]) == torch.cuda.is_available()
    devices, description = environment.device_choices(found)
    assert [value for value, _, _ in devices] == ["auto", "cpu", "mps" if found["mps"] else "cuda"]
    assert description and all(value in environment.DEVICE_VALUES for value, _, _ in devices)
    # before the probe answers, the choices are offered unverified; a broken torch is said so
    assert [value for value, _, _ in environment.device_choices(None)[0]] == ["auto", "cpu", "cuda"]
    broken = environment.device_choices({"torch": None, "cuda": None, "mps": False, "error": "ImportError: x"})
    assert "does not load" in broken[1] and broken[0][2][2] is False
    assert environment.parse_probe("noise\nmore noise") is None


def test_torch_version_check():
    assert environment.satisfies("2.1.0+cu121", ">=2.1")
    assert environment.satisfies("2.13.0", ">=2.1,<3")
    assert not environment.satisfies("2.0.1", ">=2.1")
    assert not environment.satisfies("3.0", ">=2.1,<3")
    assert environment.satisfies("2.1", "==2.1.0")
    problem = environment.torch_version_problem(">=2.1", version="1.13.1+cpu")
    assert problem == "PyTorch 1.13.1+cpu is installed; TACE Response needs PyTorch >=2.1."
    assert environment.torch_version_problem(">=2.1", version="2.4.0") is None
    installed = environment.installed_version("torch")
    assert installed is not None and environment.torch_version_problem(environment.TORCH_REQUIREMENT) is None
    with pytest.raises(ValueError):
        environment.satisfies("2.1", "~=2.1")


# -------------------------------------------------------------------------------------------------------
# terminology and the parameter node (slicer-core)


def _slicer():
    slicer = pytest.importorskip("slicer", reason="slicer-core (MRML classes) is not installed")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the 'slicer' package here is not slicer-core")
    return slicer


def _labels():
    from TACEResponseLib import model_package

    demo = model_package.read_card(os.path.join(MODULE, "Resources", "Models", "demo"))
    defaults = [{"name": "Liver", "value": 1}, {"name": "Tumor", "value": 2}]  # cards without terminology
    return demo["labels"] + defaults


@pytest.mark.parametrize("index", range(4), ids=["demo-liver", "demo-tumor", "default-liver", "default-tumor"])
def test_terminology_tags_resolve_in_the_shipped_file(index):
    """Each tag the module writes names the shipped context, and its category and type are in that file
    (found by Slicer's own Terminologies logic), with an anatomic region only where the category allows one."""
    slicer = _slicer()
    import vtk

    from TACEResponseLib import slicer_logic

    label = _labels()[index]
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    assert logic.LoadTerminologyFromFile(terminology.TERMINOLOGY_FILE) == terminology.CONTEXT_NAME
    entry = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(
        slicer_logic.terminology_entry(label), entry)
    assert entry.GetTerminologyContextName() == terminology.CONTEXT_NAME
    wanted_category = entry.GetCategoryObject()
    wanted_type = entry.GetTypeObject()
    found = None
    for c in range(logic.GetNumberOfCategoriesInTerminology(terminology.CONTEXT_NAME)):
        category = slicer.vtkSlicerTerminologyCategory()
        assert logic.GetNthCategoryInTerminology(terminology.CONTEXT_NAME, c, category)
        if (category.GetCodingSchemeDesignator(), category.GetCodeValue()) != (
                wanted_category.GetCodingSchemeDesignator(), wanted_category.GetCodeValue()):
            continue
        for t in range(logic.GetNumberOfTypesInTerminologyCategory(terminology.CONTEXT_NAME, category)):
            candidate = slicer.vtkSlicerTerminologyType()
            assert logic.GetNthTypeInTerminologyCategory(terminology.CONTEXT_NAME, category, t, candidate)
            if (candidate.GetCodingSchemeDesignator(), candidate.GetCodeValue()) == (
                    wanted_type.GetCodingSchemeDesignator(), wanted_type.GetCodeValue()):
                found = (category, candidate)
    assert found is not None, "{} {} not in {}".format(wanted_category.GetCodeValue(), wanted_type.GetCodeValue(),
                                                         terminology.TERMINOLOGY_FILE)
    category, type_ = found
    assert type_.GetCodeMeaning() == wanted_type.GetCodeMeaning()
    region = entry.GetRegionObject() if hasattr(entry, "GetRegionObject") else entry.GetAnatomicRegionObject()
    if region.GetCodeValue():
        assert category.GetShowAnatomy()
    # the same codes through the plain JSON reader the module uses
    codes = terminology.codes()
    key = (wanted_category.GetCodingSchemeDesignator(), wanted_category.GetCodeValue())
    assert (wanted_type.GetCodingSchemeDesignator(), wanted_type.GetCodeValue()) in codes[key]["types"]
    assert vtk is not None


def test_terminology_file_is_slicer_format_and_installed():
    data = terminology.read_terminology()
    assert data["SegmentationCategoryTypeContextName"] == terminology.CONTEXT_NAME
    assert data["@schema"].endswith("segment-context-schema.json#")
    cmake = open(os.path.join(MODULE, "CMakeLists.txt"), encoding="utf-8").read()
    assert "Resources/Terminology/" + os.path.basename(terminology.TERMINOLOGY_FILE) in cmake
    module_text = open(MODULE_PY, encoding="utf-8").read()
    assert "terminology.load_into" in module_text and '"startupCompleted()", loadTerminology' in module_text


def test_model_and_device_survive_save_and_reload(tmp_path):
    """The parameter node (as parameterNodeWrapper stores it: one string parameter each) through .mrml and
    back; the saved model key resolves to the same choice the panel then shows and Predict uses."""
    slicer = _slicer()
    import slicer_fixtures as fx

    from TACEResponseLib import slicer_logic

    model_folder = str(tmp_path / "my-model")
    fx.write_random_model(model_folder)
    harness = fx.SceneHarness()
    parameters = slicer.vtkMRMLScriptedModuleNode()
    parameters.SetName("TACEResponse")
    parameters.SetAttribute("ModuleName", "TACEResponse")
    harness.scene.AddNode(parameters)
    parameters.SetParameter("model", model_folder)
    parameters.SetParameter("device", "cuda")
    mrml = fx.save_scene(harness, str(tmp_path / "saved"), {})
    reopened = fx.SceneHarness.load(mrml).scene.GetFirstNodeByName("TACEResponse")
    assert (reopened.GetParameter("model"), reopened.GetParameter("device")) == (model_folder, "cuda")
    choices = slicer_logic.model_choices(folders=[model_folder + os.sep])
    choice = slicer_logic.choice_for(choices, reopened.GetParameter("model"))
    assert choice is not None and choice.source == "folder" and choice.card["name"] == "test-random"
    assert slicer_logic.choice_for(choices, "demo").key == "demo"
    assert slicer_logic.choice_for(choices, "nothing-like-this") is None
    devices, _ = environment.device_choices(None)
    assert reopened.GetParameter("device") in [value for value, _, _ in devices]
    assert json.loads(json.dumps(reopened.GetParameter("model"))) == model_folder


# -------------------------------------------------------------------------------------------------------
# the self-test registered as a ctest (extension build servers: no GPU, no PyTorch, nothing to install)


SELF_TEST_PY = os.path.join(LIB, "self_test.py")


def _test_class():
    tree = ast.parse(open(SELF_TEST_PY, encoding="utf-8").read())
    return next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "TACEResponseTest")


def _called_names(node):
    return {call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
            for call in ast.walk(node) if isinstance(call, ast.Call)}


def test_registered_self_test_installs_nothing_and_runs_the_full_path_only_when_asked():
    test_class = _test_class()
    methods = {node.name: node for node in test_class.body if isinstance(node, ast.FunctionDef)}
    run_test = methods["runTest"]
    # the full Predict path sits behind the environment variable, nowhere else in runTest
    guarded = [node for node in ast.walk(run_test) if isinstance(node, ast.If)
               and "FULL_SELF_TEST_VARIABLE" in ast.dump(node.test)]
    assert guarded and "test_PredictEditUpdate" in _called_names(guarded[0])
    unguarded = [call for call in ast.walk(run_test) if isinstance(call, ast.Call)
                 and getattr(call.func, "attr", "") == "test_PredictEditUpdate"]
    assert len(unguarded) == 1
    # nothing in the test class installs or downloads, and no skipTest (Slicer shows a skip as an error)
    called = set().union(*(_called_names(method) for method in methods.values()))
    forbidden = {"ensureDependencies", "installTorch", "pip_install", "downloadModel", "skipTest", "uninstallTorch",
                 "InstallRun", "installThenContinue", "make_plan", "installPlan"}
    assert not called & forbidden, called & forbidden
    source = ast.get_source_segment(open(SELF_TEST_PY, encoding="utf-8").read(), test_class)
    assert "allow_download=True" not in source


def test_the_default_self_test_path_needs_no_torch(tmp_path):
    """What test_WithoutPyTorch does, against slicer-core in a fresh interpreter: the sample CT, the demo
    card, the reference labels as segments with terminology, the table; torch never loaded."""
    _slicer()
    code = "\n".join([
        "import sys",
        "sys.path[:0] = [{!r}, {!r}]".format(MODULE, os.path.dirname(os.path.abspath(__file__))),
        "import slicer, slicer_fixtures as fx",
        "from TACEResponseLib import slicer_logic as sl, model_package, terminology",
        "h = fx.SceneHarness()",
        "storage = slicer.vtkMRMLVolumeArchetypeStorageNode()",
        "storage.SetFileName({!r})".format(os.path.join(MODULE, "Resources", "SampleData", "synthetic_ct.nii.gz")),
        "volume = slicer.vtkMRMLScalarVolumeNode(); h.scene.AddNode(volume)",
        "assert storage.ReadData(volume)",
        "card = sl.choice_for(sl.model_choices(), model_package.DEFAULT_MODEL).card",
        "assert sl.check_inputs([volume], sl.phases_of(card)) is None",
        "seg = sl.import_segmentation(h.scene, {!r}, card['labels'], volume)".format(
            os.path.join(MODULE, "Resources", "SampleData", "synthetic_ct_label.nii.gz")),
        "logic = slicer.vtkSlicerTerminologiesModuleLogic()",
        "assert terminology.load_into(logic) == terminology.CONTEXT_NAME",
        "ids = sl.segment_ids(seg, card['labels'])",
        "measured = sl.measure_masks(sl.segment_masks(h.scene, seg, volume, ids), card['labels'], volume)",
        "assert measured['liver_volume_ml'] > 100 and measured['tumor_volume_ml'] > 0, measured",
        "table = sl.fill_table(h.scene, {'response_probability': 0.5, 'measurements': measured})",
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'safetensors')))",
    ])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


# -------------------------------------------------------------------------------------------------------
# model downloads that can be cancelled without a known size (installs: test_slicer_install.py)


def test_download_without_content_length_reports_progress_and_can_be_cancelled(tmp_path):
    """A server that sends no Content-Length (chunked): progress comes for every block (None: size
    unknown), an exception raised from it (Cancel) stops the download and leaves no partial file."""
    import http.server
    import threading

    from TACEResponseLib import model_package

    payload = os.urandom(5 << 20)

    class Chunked(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(payload), 1 << 20):
                block = payload[start:start + (1 << 20)]
                self.wfile.write(b"%x\r\n" % len(block) + block + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Chunked)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:{}/model.zip".format(server.server_address[1])
    try:
        seen = []
        import hashlib

        model_package.download(url, tmp_path / "whole.zip", hashlib.sha256(payload).hexdigest(), seen.append)
        assert (tmp_path / "whole.zip").read_bytes() == payload
        assert len(seen) >= 5 and set(seen) == {None}

        class Cancelled(Exception):
            pass

        calls = []

        def cancel_after_two(fraction):
            calls.append(fraction)
            if len(calls) == 2:
                raise Cancelled()

        with pytest.raises(Cancelled):
            model_package.download(url, tmp_path / "cancelled.zip", "0" * 64, cancel_after_two)
        assert len(calls) == 2 and sorted(os.listdir(str(tmp_path))) == ["whole.zip"]
    finally:
        server.shutdown()
