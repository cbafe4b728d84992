"""The extension's two layouts: the CMake file lists match the files, and the module imports and finds ControlCGLib
and Resources both from a source checkout ("Add module path" -> ControlCG/) and from the installed layout, which is
built here in a temporary folder from exactly the files the CMake rules declare."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUBS = Path(__file__).resolve().parent  # slicer_stubs.py


def cmake_list(cmake_file: Path, variable: str) -> list[str]:
    """Items of ``set(VARIABLE ...)`` in a CMake file, with ``${...}`` variables of that file substituted."""
    text = re.sub(r"#[^\n]*", "", cmake_file.read_text())
    values = {m.group(1): m.group(2).split() for m in re.finditer(r"set\((\w+)\s+([^)]*)\)", text)}
    if variable not in values:
        raise AssertionError(f"{cmake_file} has no set({variable} ...)")
    scalars = {k: v[0].strip('"') for k, v in values.items() if len(v) == 1}
    return [re.sub(r"\$\{(\w+)\}", lambda m: scalars[m.group(1)], item) for item in values[variable]]


def declared() -> dict[str, list[tuple[Path, str]]]:
    """(source file, path inside qt-scripted-modules) for every file the three build rules install."""
    lib = ROOT / "ControlCGLib" / "CMakeLists.txt"
    res = ROOT / "Resources" / "CMakeLists.txt"
    mod = ROOT / "ControlCG" / "CMakeLists.txt"
    return {
        "module": [(ROOT / "ControlCG" / f, f) for f in cmake_list(mod, "MODULE_PYTHON_SCRIPTS")],
        "lib": [
            (ROOT / "ControlCGLib" / f, f"ControlCGLib/{f}")
            for var in ("MODULELIB_PYTHON_SCRIPTS", "MODULELIB_PYTHON_RESOURCES")
            for f in cmake_list(lib, var)
        ],
        "resources": [
            (ROOT / "Resources" / f, f"Resources/{f}")
            for var in ("RESOURCES_PYTHON_SCRIPTS", "RESOURCES_PYTHON_RESOURCES")
            for f in cmake_list(res, var)
        ],
    }


def test_cmake_lists_name_every_file_and_only_existing_ones():
    files = declared()
    lib_listed = {src.relative_to(ROOT / "ControlCGLib").as_posix() for src, _ in files["lib"]}
    lib_present = {
        p.relative_to(ROOT / "ControlCGLib").as_posix()
        for p in (ROOT / "ControlCGLib").rglob("*")
        if p.is_file() and p.name != "CMakeLists.txt" and "__pycache__" not in p.parts
    }
    assert lib_listed == lib_present, f"ControlCGLib/CMakeLists.txt is out of date: {lib_listed ^ lib_present}"
    res_listed = {src.relative_to(ROOT / "Resources").as_posix() for src, _ in files["resources"]}
    res_present = {
        p.relative_to(ROOT / "Resources").as_posix()
        for p in (ROOT / "Resources").rglob("*")
        if p.is_file() and p.name != "CMakeLists.txt" and "__pycache__" not in p.parts
    }
    assert res_listed == res_present, f"Resources/CMakeLists.txt is out of date: {res_listed ^ res_present}"
    assert [t for _, t in files["module"]] == ["ControlCG.py"]
    for group in files.values():
        for src, _ in group:
            assert src.is_file(), f"listed but missing: {src}"


def test_top_level_cmake_follows_the_extension_template():
    text = (ROOT / "CMakeLists.txt").read_text()
    for needed in (
        "project(ControlCG)",
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CATEGORY",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
        'set(EXTENSION_DEPENDS "PyTorch")',
        "find_package(Slicer REQUIRED)",
        "include(${Slicer_USE_FILE})",
        "add_subdirectory(ControlCG)",
        "add_subdirectory(ControlCGLib)",
        "add_subdirectory(Resources)",
        "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
        "include(${Slicer_EXTENSION_CPACK})",
    ):
        assert needed in text, needed
    for shot in re.findall(r"/raw/main/(\S+?\.png)", text):
        assert (ROOT / shot).is_file(), f"the extension metadata points at {shot}, which does not exist"
    module = (ROOT / "ControlCG" / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule(" in module and "WITH_GENERIC_TESTS" in module
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in module
    for sub in ("ControlCGLib", "Resources"):
        rule = (ROOT / sub / "CMakeLists.txt").read_text()
        assert "ctkMacroCompilePythonScript(" in rule and "NO_INSTALL_SUBDIR" in rule
        assert f"${{Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}}/{sub}" in rule or "MODULELIB_NAME" in rule


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The extension as CMake would install it: lib/Slicer-X.Y/qt-scripted-modules/{ControlCG.py, ControlCGLib/,
    Resources/}, copied from the declared lists only."""
    target = tmp_path_factory.mktemp("extension") / "lib" / "Slicer-5.12" / "qt-scripted-modules"
    for group in declared().values():
        for src, rel in group:
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    return target


IMPORT_MODULE = """
import sys, json
sys.path.insert(0, {stubs!r})
import slicer_stubs
slicer_stubs.install()
sys.path.insert(0, {module_dir!r})  # what Slicer does for every scripted module folder
import ControlCG, ControlCGLib
module = ControlCG.ControlCG(__import__("types").SimpleNamespace())  # what Slicer does at start-up
sitk_at_startup = "SimpleITK" in sys.modules
from ControlCGLib import resources
print(json.dumps({{
    "sitk": sitk_at_startup,
    "root": ControlCG.LIBRARY_ROOT, "resources": ControlCG.RESOURCES, "lib": ControlCGLib.__file__,
    "model": str(resources.diffusion_dir()), "template": str(resources.template_dir()),
    "ui": str(__import__("pathlib").Path(ControlCG.RESOURCES, "UI", "ControlCG.ui").is_file()),
    "torch": "torch" in sys.modules,
    "reference": __import__("ControlCGLib.self_test").self_test.REFERENCE_FILE.is_file(),
}}))
"""


def _import_from(module_dir: Path, cwd: Path) -> dict:
    import json

    code = IMPORT_MODULE.format(stubs=str(STUBS), module_dir=str(module_dir))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120, env=_clean_env()
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _clean_env() -> dict:
    import os

    env = dict(os.environ)
    env.pop("CONTROLCG_RESOURCES", None)
    env.pop("PYTHONPATH", None)
    return env


def test_module_finds_library_and_resources_in_a_source_checkout(tmp_path):
    found = _import_from(ROOT / "ControlCG", tmp_path)
    assert Path(found["root"]) == ROOT
    assert Path(found["resources"]) == ROOT / "Resources"
    assert Path(found["lib"]).is_relative_to(ROOT / "ControlCGLib")
    assert found["ui"] == "True"
    assert not found["torch"], "opening the module must not import torch (it may not be installed yet)"
    assert not found["sitk"], "Slicer's start-up (importing the module, making it) must not import SimpleITK"


def test_module_finds_library_and_resources_in_the_installed_layout(installed, tmp_path):
    found = _import_from(installed, tmp_path)
    assert Path(found["root"]) == installed
    assert Path(found["lib"]).is_relative_to(installed / "ControlCGLib"), "imported the checkout, not the install"
    assert Path(found["model"]).is_relative_to(installed / "Resources")
    assert Path(found["template"]).is_relative_to(installed / "Resources")
    assert found["ui"] == "True"
    assert found["reference"], "the installed self-test has no reference values to compare with"
    assert not found["torch"]


def test_installed_layout_runs_the_command_line(installed, tmp_path):
    """What Slicer launches, from the installed files only: the child finds ControlCGLib through the environment the
    module gives it, with the working directory somewhere else."""
    from ControlCGLib import slicer_bridge as bridge

    env = {**_clean_env(), **bridge.child_environment(installed, installed / "Resources")}
    out = subprocess.run(
        [sys.executable, "-c", "import ControlCGLib, sys; print(ControlCGLib.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).is_relative_to(installed)
