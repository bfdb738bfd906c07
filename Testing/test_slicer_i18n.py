"""Messages the Slicer module shows are translatable, as Slicer's internationalization guide asks: every
sentence goes through ``_()`` (or ``translate()``) as one literal, with named placeholders ("{volume}", never
"{}"), so a translator sees what each placeholder holds and may reorder them.

The check reads the module's files (the panel, its logic and the MRML glue) with ``ast``. A sentence outside
``_()`` is allowed only in a log call, a docstring, or in a statement that says why (``# not translated: ...``
on one of its lines or the line above,
e.g. values recorded in result files that must read the same in every language). The checker is itself
tested on snippets with each kind of mistake, so it cannot pass by finding nothing.
"""

import ast
import os
import re
import string

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.path.join(ROOT, "TACEResponse", "TACEResponseLib")
# the files whose text reaches the user: the module file, the panel, its logic and the MRML glue
# (self_test.py is a developer test; the command line's files speak English in a terminal)
SHOWN_TO_USERS = [os.path.join(ROOT, "TACEResponse", "TACEResponse.py")] + [os.path.join(LIB, name) for name in (
    "widget.py", "widget_models.py", "widget_install.py", "widget_runs.py", "widget_results.py", "module_logic.py",
    "parameters.py", "sample_data.py", "slicer_logic.py", "scene_io.py", "segments.py", "result_table.py",
    "command.py", "model_choices.py", "slicer_errors.py", "environment.py", "dependency_install.py",
    "terminology.py")]

TRANSLATORS = {"_", "translate", "tr"}
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}
EXEMPT_MARK = "# not translated:"
TAG = re.compile(r"<[^>]*>")
# two words with a space between them: a phrase someone reads (not an identifier, a file name or a format)
PROSE = re.compile(r"[A-Za-z]{2,}[,;:.!?'’)]*\s+[(']*[A-Za-z]{2,}")


def _is_prose(text):
    without_fields = re.sub(r"\{[^{}]*\}", " ", TAG.sub(" ", text))
    return bool(PROSE.search(without_fields))


def _placeholders(text):
    try:
        return [field for _, field, _, _ in string.Formatter().parse(text) if field is not None]
    except ValueError:
        return []


def _call_name(call):
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _is_log_call(call):
    func = call.func
    return (isinstance(func, ast.Attribute) and func.attr in LOG_METHODS and isinstance(func.value, ast.Name)
            and func.value.id in ("logging", "logger", "log"))


def problems(source, path="<snippet>"):
    """Every untranslated sentence and every positional placeholder in ``source``: [(line, text, why)]."""
    tree = ast.parse(source)
    lines = source.splitlines()
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(first.value)
    found = []

    def exempt(node):
        """In a log call (Slicer's log stays English), or on a line that says why it is not translated."""
        ancestor = parents.get(node)
        while ancestor is not None:
            if isinstance(ancestor, ast.Call) and _is_log_call(ancestor):
                return True
            ancestor = parents.get(ancestor)
        statement = node
        while statement in parents and not isinstance(statement, ast.stmt):
            statement = parents[statement]
        # the statement's lines, or the comment line just above it
        span = range(getattr(statement, "lineno", node.lineno) - 2, getattr(statement, "end_lineno", node.lineno))
        return any(EXEMPT_MARK in lines[i] for i in span if i < len(lines))

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _call_name(node) in TRANSLATORS:
            texts = node.args[-1:] if _call_name(node) != "_" else node.args[:1]
            for argument in texts:
                if not (isinstance(argument, ast.Constant) and isinstance(argument.value, str)):
                    found.append((node.lineno, ast.dump(argument)[:60], "translated text must be one literal"))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
            template = node.func.value
            if isinstance(template, ast.Call) and _call_name(template) in TRANSLATORS and template.args:
                template = template.args[-1]
            if isinstance(template, ast.Constant) and isinstance(template.value, str) and _is_prose(template.value):
                fields = _placeholders(template.value)
                if any(not field or field.isdigit() for field in fields) and not exempt(node):
                    found.append((node.lineno, template.value, "positional placeholder"))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant) \
                and isinstance(node.left.value, str) and _is_prose(node.left.value) and not exempt(node):
            found.append((node.lineno, node.left.value, "%-formatting"))
        if isinstance(node, ast.JoinedStr):
            text = "".join(part.value for part in node.values if isinstance(part, ast.Constant))
            if _is_prose(text) and not exempt(node):
                found.append((node.lineno, text, "f-string sentence (cannot be translated)"))
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or node in docstrings:
            continue
        if not _is_prose(node.value):
            continue
        ancestor, translated = parents.get(node), False
        while ancestor is not None:
            if isinstance(ancestor, ast.Call) and _call_name(ancestor) in TRANSLATORS:
                translated = True
                break
            if isinstance(ancestor, ast.JoinedStr):
                translated = True  # reported above as an f-string
                break
            ancestor = parents.get(ancestor)
        if not translated and not exempt(node):
            found.append((node.lineno, node.value, "not translated"))
    return found


@pytest.mark.parametrize("path", SHOWN_TO_USERS, ids=os.path.basename)
def test_user_facing_text_is_translatable_with_named_placeholders(path):
    with open(path, encoding="utf-8") as stream:
        found = problems(stream.read(), path)
    assert not found, "\n".join("{}:{}: {} ({!r})".format(os.path.basename(path), line, why, text[:70])
                                for line, text, why in found)


def test_the_checker_finds_each_kind_of_mistake():
    bad = '\n'.join([
        'def check(node):',
        '    """A docstring is not a message."""',
        '    if node is None:',
        '        raise SlicerLogicError("{} has no image data".format(node.GetName()))',
        '    label.text = _("{} CT volume:").format(phase)',
        '    status = _("Done in {0} seconds").format(seconds)',
        '    tooltip = "Select the CT volume first."',
        '    message = "the file %s is missing" % path',
        '    other = f"could not read {path}"',
        '    dynamic = _(prefix + " more words")',
    ])
    found = {(line, why) for line, _text, why in problems(bad)}
    assert found == {(4, "not translated"), (4, "positional placeholder"), (5, "positional placeholder"),
                     (6, "positional placeholder"), (7, "not translated"), (8, "not translated"),
                     (8, "%-formatting"), (9, "f-string sentence (cannot be translated)"),
                     (10, "translated text must be one literal")}, sorted(found)


def test_the_checker_accepts_what_the_guide_asks_for():
    good = '\n'.join([
        'import logging',
        'def check(node, path, seconds):',
        '    """Docstrings may say anything."""',
        '    logging.warning("could not read {} at all".format(path))',
        '    label.text = _("{phase} CT volume:").format(phase=node)',
        '    status = _("Done in {seconds:.0f} s.").format(seconds=seconds)',
        '    title = translate("qSlicerAbstractCoreModule", "Segmentation")',
        '    name = "input{}_{}.nrrd".format(1, "ct")',
        '    cell = "{:.1f} mL".format(3.0)',
        '    html = "<b>{}</b>".format(name)',
        '    source = "user mask (edited segment)"  # not translated: recorded in result.json',
    ])
    assert problems(good) == []
