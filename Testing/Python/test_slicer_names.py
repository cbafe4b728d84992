"""Every Slicer name ControlCG.py uses exists in the Slicer we target (v5.12.3), checked against lists taken from
Slicer's own source: Python API names (Testing/Data/slicer-api-v5.12.3.txt, a copy of ../shared/slicer-api) and the
C++/Qt methods it calls on Slicer objects (Testing/Data/slicer-methods-v5.12.3.txt, each with its header)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "ControlCG" / "ControlCG.py"
DATA = ROOT / "Testing" / "Data"
PYTHON_MODULES = ("util", "packaging", "ScriptedLoadableModule", "parameterNodeWrapper", "i18n")


def _api() -> set[str]:
    lines = (DATA / "slicer-api-v5.12.3.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def _methods() -> set[str]:
    lines = (DATA / "slicer-methods-v5.12.3.txt").read_text().splitlines()
    return {line.split()[0] for line in lines if line.strip() and not line.startswith("#")}


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _python_api_uses(tree: ast.AST) -> set[str]:
    """``slicer.<module>.<name>`` uses, including ``from slicer.<module> import name`` and ``import ... as``."""
    aliases = {}
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("slicer."):
            module = node.module.removeprefix("slicer.")
            for alias in node.names:
                used.add(f"slicer.{module}.{alias.name}")
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("slicer.") and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            if not dotted:
                continue
            head, _, rest = dotted.partition(".")
            if head in aliases:
                dotted = aliases[head] + "." + rest
            parts = dotted.split(".")
            if len(parts) >= 3 and parts[0] == "slicer" and parts[1] in PYTHON_MODULES:
                used.add(".".join(parts[:3]))
    return used


def test_every_slicer_python_name_exists_at_v5_12_3():
    tree = ast.parse(MODULE.read_text())
    used = _python_api_uses(tree)
    assert "slicer.util.launchConsoleProcess" in used  # the parser sees the names we know are there
    assert "slicer.packaging.pip_ensure" in used  # through "import slicer.packaging as packaging"
    missing = sorted(used - _api())
    assert not missing, f"not in Slicer v5.12.3's Python API: {missing}"


def test_every_method_called_on_slicer_objects_is_declared_in_slicer():
    tree = ast.parse(MODULE.read_text())
    own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            dotted = _dotted(node.func) or ""
            capitalised = name[:1].isupper()
            on_slicer_app = dotted.startswith(("slicer.app.", "slicer.modules."))
            python_api = dotted in _api()  # e.g. slicer.util.WaitCursor: a Python class, checked by the test above
            if (capitalised or on_slicer_app) and name not in own and not python_api:
                called.add(name)
    python_side = {"Path", "ControlCGParameterNode"}  # our own or pathlib's, not Slicer's
    missing = sorted(called - _methods() - python_side)
    assert "SetOverwriteProxyName" in called
    assert not missing, f"methods not listed (with their Slicer header) in slicer-methods-v5.12.3.txt: {missing}"


def test_module_has_slicer_structure():
    """The four classes Slicer looks up by name, and a parameter node class."""
    tree = ast.parse(MODULE.read_text())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    bases = {name: {_dotted(b) for b in c.bases} for name, c in classes.items()}
    assert "ScriptedLoadableModule" in bases["ControlCG"]
    assert "ScriptedLoadableModuleWidget" in bases["ControlCGWidget"]
    assert "ScriptedLoadableModuleLogic" in bases["ControlCGLogic"]
    assert "ScriptedLoadableModuleTest" in bases["ControlCGTest"]
    decorators = {_dotted(d) for d in classes["ControlCGParameterNode"].decorator_list}
    assert decorators == {"parameterNodeWrapper"}


def test_module_holds_no_numerics():
    """ControlCG.py is Qt/MRML glue: numpy appears only inside its self-test, torch nowhere."""
    tree = ast.parse(MODULE.read_text())
    test_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ControlCGTest")
    inside_test = {id(n) for n in ast.walk(test_class)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                assert not name.startswith(("torch", "monai")), f"ControlCG.py imports {name}"
                if name.startswith(("numpy", "SimpleITK", "scipy")):
                    assert id(node) in inside_test, f"ControlCG.py imports {name} outside its self-test"
