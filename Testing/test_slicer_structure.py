"""Structure of the Slicer extension, checked without Slicer: CMake lists, .ui widget names, Python 3.9
syntax, extension metadata (.s4ext, CMake, ExtensionsIndex JSON), icons, sample data checksum, docs."""

import ast
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.path.join(ROOT, "TACEResponse")
LIB = os.path.join(MODULE, "TACEResponseLib")
MODULE_PY = os.path.join(MODULE, "TACEResponse.py")
UI = os.path.join(MODULE, "Resources", "UI", "TACEResponse.ui")
# the Slicer-side files (Qt and the application); the module file imports their classes by name
WIDGET_PYS = [os.path.join(LIB, name) for name in ("widget.py", "widget_models.py", "widget_install.py",
                                                    "widget_runs.py", "widget_results.py")]
SLICER_SIDE_PYS = [MODULE_PY] + WIDGET_PYS + [os.path.join(LIB, name) for name in (
    "module_logic.py", "parameters.py", "sample_data.py", "self_test.py", "i18n.py")]
PARAMETERS_PY = os.path.join(LIB, "parameters.py")
SAMPLE_DATA_PY = os.path.join(LIB, "sample_data.py")
# the MRML glue tested against slicer-core: never Qt, never the application
CORE_SIDE_PYS = [os.path.join(LIB, name) for name in (
    "slicer_logic.py", "process_runner.py", "scene_io.py", "segments.py", "result_table.py", "command.py",
    "model_choices.py", "slicer_errors.py", "environment.py", "terminology.py", "dependency_install.py")]


def _read(path):
    with open(path, encoding="utf-8") as stream:
        return stream.read()


def _cmake_list(text, variable):
    match = re.search(r"set\(\s*{}\s+(.*?)\)".format(variable), text, re.S)
    assert match, variable
    return [item for item in match.group(1).split() if not item.startswith("#")]


def _python_files(folder):
    for base, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(base, name)


def _s4ext():
    fields = {}
    for line in _read(os.path.join(ROOT, "TACEResponse.s4ext")).splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
    return fields


def _cmake_extension_fields():
    text = _read(os.path.join(ROOT, "CMakeLists.txt"))
    return {key: quoted or bare for key, quoted, bare in
            re.findall(r'set\((EXTENSION_\w+)\s+(?:"([^"]*)"|([^\s)]+))\s*\)', text)}


# -------------------------------------------------------------------------------------------------------
# CMake


def test_module_cmake_lists_every_python_file_and_resource():
    text = _read(os.path.join(MODULE, "CMakeLists.txt"))
    scripts = [s.replace("${MODULE_NAME}", "TACEResponse") for s in _cmake_list(text, "MODULE_PYTHON_SCRIPTS")]
    resources = [r.replace("${MODULE_NAME}", "TACEResponse") for r in _cmake_list(text, "MODULE_PYTHON_RESOURCES")]
    on_disk = sorted(os.path.relpath(p, MODULE).replace(os.sep, "/") for p in _python_files(LIB))
    on_disk.append("TACEResponse.py")
    missing = sorted(set(on_disk) - set(scripts))
    assert not missing, "add to MODULE_PYTHON_SCRIPTS in TACEResponse/CMakeLists.txt: {}".format(missing)
    listed_missing = [s for s in scripts if not os.path.isfile(os.path.join(MODULE, s))]
    assert not listed_missing, "listed but absent: {}".format(listed_missing)
    for resource in resources:
        assert os.path.isfile(os.path.join(MODULE, resource)), resource
    # models and the sample CT are collected by a recursive glob (their files are data the owner adds)
    assert re.search(r"GLOB_RECURSE[^)]*Resources/Models/\*", text, re.S)
    assert re.search(r"GLOB_RECURSE[^)]*Resources/SampleData/\*", text, re.S)
    assert "slicerMacroBuildScriptedModule" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    testing = _read(os.path.join(MODULE, "Testing", "Python", "CMakeLists.txt"))
    for script in re.findall(r"(\w+\.py)", testing):
        assert os.path.isfile(os.path.join(MODULE, "Testing", "Python", script)), script


def test_top_level_cmake_has_extension_metadata():
    text = _read(os.path.join(ROOT, "CMakeLists.txt"))
    fields = _cmake_extension_fields()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert fields.get(key), key
    assert fields["EXTENSION_DEPENDS"] == "PyTorch"
    assert "add_subdirectory(TACEResponse)" in text
    assert "Slicer_EXTENSION_GENERATE_CONFIG" in text and "Slicer_EXTENSION_CPACK" in text


# -------------------------------------------------------------------------------------------------------
# extension metadata and pictures


def test_s4ext_has_its_fields_and_agrees_with_cmake_and_index():
    s4ext = _s4ext()
    for key in ("scm", "scmurl", "scmrevision", "depends", "category", "description", "homepage", "iconurl",
                "screenshoturls", "contributors", "status", "build_subdirectory", "enabled"):
        assert s4ext.get(key), key
    assert s4ext["scm"] == "git" and s4ext["depends"] == "PyTorch"
    cmake = _cmake_extension_fields()
    assert s4ext["homepage"] == cmake["EXTENSION_HOMEPAGE"]
    assert s4ext["category"] == cmake["EXTENSION_CATEGORY"]
    assert s4ext["iconurl"] == cmake["EXTENSION_ICONURL"]
    assert s4ext["screenshoturls"] == cmake["EXTENSION_SCREENSHOTURLS"]
    assert s4ext["description"] == cmake["EXTENSION_DESCRIPTION"]
    assert s4ext["contributors"] == cmake["EXTENSION_CONTRIBUTORS"]
    entry = json.loads(_read(os.path.join(ROOT, "Resources", "ExtensionsIndex", "TACEResponse.json")))
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "build_subdirectory", "enabled", "tier"}
    assert set(entry) <= allowed and {"$schema", "category", "scm_url"} <= set(entry)
    assert entry["scm_url"] == s4ext["scmurl"] and entry["scm_revision"] == s4ext["scmrevision"]
    assert entry["build_dependencies"] == ["PyTorch"] and entry["category"] == s4ext["category"]


def test_license_at_the_root_is_the_apache_2_0_text_pyproject_names():
    text = _read(os.path.join(ROOT, "LICENSE"))
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text
    assert 'license = { text = "Apache-2.0" }' in _read(os.path.join(ROOT, "pyproject.toml"))


def _png_size(path):
    with open(path, "rb") as stream:
        header = stream.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_icons_and_screenshots_exist_where_the_urls_point():
    assert _png_size(os.path.join(ROOT, "Resources", "TACEResponse.png")) == (128, 128)
    assert _png_size(os.path.join(MODULE, "Resources", "Icons", "TACEResponse.png")) == (128, 128)
    for url in _s4ext()["screenshoturls"].split() + [_s4ext()["iconurl"]]:
        relative = url.split("/main/", 1)[1]
        width, height = _png_size(os.path.join(ROOT, relative))
        assert width >= 300 and height >= 300 or relative.endswith("TACEResponse.png"), relative


# -------------------------------------------------------------------------------------------------------
# the .ui and the widget code


def _ui_widgets():
    tree = ElementTree.parse(UI)
    return {w.get("name"): w for w in tree.iter("widget")}


def test_every_widget_the_code_uses_exists_in_the_ui():
    widgets = _ui_widgets()
    used = set(re.findall(r"self\.ui\.(\w+)", "".join(_read(path) for path in WIDGET_PYS)))
    assert used, "the widget code uses no ui names?"
    missing = sorted(used - set(widgets))
    assert not missing, "not in TACEResponse.ui: {}".format(missing)
    assert widgets["TACEResponse"].get("class") == "qMRMLWidget"


def test_ui_parameter_names_match_the_parameter_node():
    tree = ElementTree.parse(UI)
    bound = {}
    for widget in tree.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[widget.get("name")] = prop.find("string").text
    module = ast.parse(_read(PARAMETERS_PY))
    wrapper = next(node for node in module.body if isinstance(node, ast.ClassDef)
                   and node.name == "TACEResponseParameterNode")
    fields = {node.target.id for node in wrapper.body if isinstance(node, ast.AnnAssign)}
    assert set(bound.values()) <= fields, sorted(set(bound.values()) - fields)
    assert {"inputVolume1", "outputSegmentation", "resultTable"} <= set(bound.values())
    assert {"model", "device"} <= fields
    # every node selector is given the scene by the top widget
    combos = {name for name, w in _ui_widgets().items() if w.get("class") == "qMRMLNodeComboBox"}
    receivers = {c.findtext("receiver") for c in tree.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    assert combos == receivers


def test_module_follows_the_scripted_module_template():
    text = "".join(_read(path) for path in SLICER_SIDE_PYS)
    classes = {}
    for path in SLICER_SIDE_PYS:
        classes.update({node.name: [b.id for b in node.bases if isinstance(b, ast.Name)]
                        for node in ast.parse(_read(path)).body if isinstance(node, ast.ClassDef)})
    assert classes["TACEResponse"] == ["ScriptedLoadableModule"]
    assert "ScriptedLoadableModuleWidget" in classes["TACEResponseWidget"]
    assert classes["TACEResponseLogic"] == ["ScriptedLoadableModuleLogic"]
    assert classes["TACEResponseTest"] == ["ScriptedLoadableModuleTest"]
    for needle in ("self.parent.helpText", "self.parent.acknowledgementText", "self.parent.contributors",
                   'slicer.util.loadUI(self.resourcePath("UI/TACEResponse.ui"))', "@parameterNodeWrapper",
                   "registerCustomSampleDataSource"):
        assert needle in text, needle
    # installs run in the background through the process runner, never on the GUI thread
    assert "pip_install" not in text and "installTorch" not in text


# -------------------------------------------------------------------------------------------------------
# Python 3.9 (Slicer 5.8) and the floor rules


def _module_files():
    return sorted(_python_files(MODULE))


def _annotations(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.args + node.args.kwonlyargs + node.args.posonlyargs
            args += [a for a in (node.args.vararg, node.args.kwarg) if a is not None]
            yield from (a.annotation for a in args if a.annotation is not None)
            if node.returns is not None:
                yield node.returns
        elif isinstance(node, ast.AnnAssign):
            yield node.annotation


@pytest.mark.parametrize("path", _module_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_module_code_is_python_3_9(path):
    source = _read(path)
    tree = ast.parse(source, filename=path, feature_version=(3, 9))  # rejects match statements and the like
    for annotation in _annotations(tree):
        unions = [n for n in ast.walk(annotation) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr)]
        assert not unions, "{}:{}: 'X | Y' annotations need Python 3.10".format(path, annotation.lineno)
    for node in ast.walk(tree):
        if isinstance(node, ast.With) and source.splitlines()[node.lineno - 1].rstrip().endswith("with ("):
            pytest.fail("{}:{}: parenthesised context managers need Python 3.10".format(path, node.lineno))


def _python39():
    """A Python 3.9 that actually runs (a pyenv shim may exist without the version being active)."""
    candidates = [shutil.which("python3.9")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))
    for candidate in filter(None, candidates):
        try:
            done = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                                  text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0 and done.stdout.strip() == "(3, 9)":
            return candidate
    return None


def test_module_code_compiles_with_a_real_python_3_9():
    python39 = _python39()
    if python39 is None:
        pytest.skip("no Python 3.9 here (the AST check above still ran)")
    code = ("import sys\n"
            "for path in sys.argv[1:]:\n"
            "    compile(open(path, encoding='utf-8').read(), path, 'exec')\n")
    result = subprocess.run([python39, "-c", code] + _module_files(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_module_file_is_a_thin_shell_that_names_its_parts():
    """Like SlicerNNUNet: the module file holds metadata and start-up; Slicer finds the widget, logic, test
    and parameter node classes in it by name, imported from TACEResponseLib."""
    text = _read(MODULE_PY)
    assert len(text.splitlines()) <= 110
    for module, name in (("widget", "TACEResponseWidget"), ("module_logic", "TACEResponseLogic"),
                         ("self_test", "TACEResponseTest"), ("parameters", "TACEResponseParameterNode")):
        assert "from TACEResponseLib.{} import {}".format(module, name) in text, name
    # one job per file: none of the split files grows back into a second module file
    for path in SLICER_SIDE_PYS[1:] + CORE_SIDE_PYS:
        assert len(_read(path).splitlines()) <= 400, path


def test_slicer_side_files_have_no_undefined_names():
    """pyflakes over the files only Slicer can run: a name lost in the split would break the module there."""
    pyflakes = pytest.importorskip("pyflakes.api")
    import io

    from pyflakes import reporter

    for path in SLICER_SIDE_PYS + CORE_SIDE_PYS:
        out = io.StringIO()
        pyflakes.check(_read(path), path, reporter.Reporter(out, out))
        problems = [line for line in out.getvalue().splitlines() if "undefined name" in line or "invalid syntax" in line]
        assert not problems, problems


def test_slicer_logic_never_imports_qt_or_the_application():
    for name in [os.path.basename(path) for path in CORE_SIDE_PYS]:
        source = _read(os.path.join(LIB, name))
        tree = ast.parse(source)
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
        assert not imported & {"qt", "ctk", "PythonQt", "__main__"}, (name, imported)
        used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name) and node.value.id == "slicer"}
        assert not used & {"app", "mrmlScene", "modules"}, (name, used & {"app", "mrmlScene", "modules"})
    assert "import slicer" not in _read(os.path.join(LIB, "process_runner.py"))


# -------------------------------------------------------------------------------------------------------
# sample data and docs


def _constant(name):
    tree = ast.parse(_read(SAMPLE_DATA_PY))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(name)


def test_sample_ct_checksum_is_a_constant_that_matches_the_file():
    path = os.path.join(MODULE, "Resources", "SampleData", _constant("SAMPLE_CT_FILE"))
    checksum = _constant("SAMPLE_CT_SHA256")
    source = _read(SAMPLE_DATA_PY)
    register = next(node for node in ast.parse(source).body
                    if isinstance(node, ast.FunctionDef) and node.name == "registerSampleData")
    body = ast.get_source_segment(source, register)
    assert "hashlib" not in body and "sha256_of" not in body, "the checksum must not be computed at registration"
    assert '"SHA256:" + SAMPLE_CT_SHA256' in body
    if not os.path.isfile(path):
        assert checksum is None, "SAMPLE_CT_SHA256 is set but {} is missing".format(path)
        pytest.skip("sample CT not bundled yet: SAMPLE_CT_SHA256 stays None until it is")
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    assert checksum == digest.hexdigest(), "set SAMPLE_CT_SHA256 = {!r}".format(digest.hexdigest())


def test_sample_data_has_its_own_thumbnail_and_cache_name():
    """Sample Data shows a picture of this CT (not the module icon), large enough for high-DPI screens, drawn
    by a script in the repository; the file lands in the shared SampleData cache under a name of its own."""
    thumbnail = os.path.join(MODULE, "Resources", "Icons", "TACESyntheticCT.png")
    width, height = _png_size(thumbnail)
    assert width == height and 256 <= width <= 512, (width, height)
    source = _read(SAMPLE_DATA_PY)
    assert "thumbnailFileName=SAMPLE_CT_THUMBNAIL" in source and '"TACESyntheticCT.png"' in source
    assert "Resources/Icons/TACESyntheticCT.png" in _read(os.path.join(MODULE, "CMakeLists.txt"))
    script = _read(os.path.join(ROOT, "scripts", "make_sample_thumbnail.py"))
    assert "TACESyntheticCT.png" in script and 'matplotlib.use("Agg")' in script
    cache_name = _constant("SAMPLE_CT_CACHE_NAME")
    assert cache_name.startswith("TACEResponse") and cache_name != _constant("SAMPLE_CT_FILE")
    assert "fileNames=SAMPLE_CT_CACHE_NAME" in source and "loadFileType" not in source


def test_thumbnail_script_draws_the_ct_with_both_outlines(tmp_path):
    """The script renders, offscreen, a picture of the requested size holding the liver and tumor colors."""
    pytest.importorskip("matplotlib")
    import importlib.util

    import numpy as np
    from PIL import Image

    spec = importlib.util.spec_from_file_location("make_sample_thumbnail",
                                                  os.path.join(ROOT, "scripts", "make_sample_thumbnail.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    if not os.path.isfile(script.SAMPLE_CT):
        pytest.skip("sample CT not bundled")
    path = script.render(str(tmp_path / "thumb.png"), size=256)
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert pixels.shape == (256, 256, 3)
    for value, color in script.label_colors().items():
        target = np.array([round(255 * c) for c in color[:3]])
        near = (np.abs(pixels - target).max(axis=2) <= 40).sum()
        assert near >= 20, "label {} outline ({}) not drawn".format(value, color)
    assert pixels.std() > 20  # the CT itself, not a blank frame


def test_docs_explain_the_slicer_module_with_the_panel_picture():
    readme = _read(os.path.join(ROOT, "README.md"))
    assert "\n## Using it in 3D Slicer\n" in readme
    text = readme.split("\n## Using it in 3D Slicer\n", 1)[1].split("\n## ", 1)[0]
    for needle in ("Extension", "Predict", "Segment Editor", "Update", "Cancel", "offline", "self-test"):
        assert needle in text, needle
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "Resources/Screenshots/slicer_views.png" in pictures  # a real result, rendered by scripts/render_slicer_views.py
    assert os.path.isfile(os.path.join(ROOT, "scripts", "render_slicer_views.py"))
    for picture in pictures:
        assert os.path.isfile(os.path.normpath(os.path.join(ROOT, picture))), picture
