import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ControlCGLib.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_help_runs_as_a_program():
    out = subprocess.run([sys.executable, "-m", "ControlCGLib.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "presets" in out.stdout and "demo" in out.stdout


def test_presets_command(capsys):
    assert main(["presets", "paper"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["unet"]["channels"] == [64, 64, 128] and data["grid"] == [80, 96, 80]


def test_unknown_preset_is_a_clean_error(capsys):
    assert main(["presets", "huge"]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["demo"], ["toy-demo", "--train-steps", "1"]])
def test_demos_refuse_to_overwrite(tmp_path, capsys, command):
    (tmp_path / "keep.txt").write_text("user data")
    assert main([*command, "--out", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "user data"


def test_library_never_imports_slicer_or_qt():
    pattern = re.compile(r"^\s*(import|from)\s+(slicer|qt|ctk|vtk|PythonQt)\b", re.M)
    offenders = [p.name for p in (ROOT / "ControlCGLib").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_truncated_compressed_scan_is_refused_before_any_work(tmp_path, capsys):
    from ControlCGLib.resources import sample_scan

    data = sample_scan().read_bytes()
    broken = tmp_path / "broken_T1.nii.gz"
    broken.write_bytes(data[: len(data) // 2])  # a copy that stopped half way
    out = tmp_path / "out"
    assert main(["counterfactual", str(broken), "--target", "AD", "--out", str(out)]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    assert not out.exists()


# Which library packages each package may import (docs/library.md "What is in the library": imports only go downward).
ALLOWED_IMPORTS = {
    "model": set(),
    "imaging": {"model"},
    "data": {"imaging", "model"},
    "sampling": {"model"},
    "training": {"data", "sampling", "model", "imaging"},
    # the evaluation measures what a user gets: the product's own path (pipeline) and its figures
    "evaluation": {"data", "sampling", "model", "imaging", "training", "pipeline", "figures"},
}


def _library_imports(path):
    """The ControlCGLib subpackages (or top-level modules) that one file imports, at any depth of the file."""
    import ast

    package = path.relative_to(ROOT / "ControlCGLib").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(package[: len(package) - node.level])
            parts = base + (node.module.split(".") if node.module else [])
            names = [parts[0]] if parts else [a.name for a in node.names]
            found.update(names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ControlCGLib."):
            found.add(node.module.split(".")[1])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED_IMPORTS))
def test_library_packages_import_only_downward(package):
    top_level = {p.stem for p in (ROOT / "ControlCGLib").glob("*.py")} - {"__init__"}
    shared = {"defaults", "progress", "resources", "hashing", "overlay"}  # modules every layer may use
    allowed = ALLOWED_IMPORTS[package] | {package} | shared
    offenders = {}
    for path in (ROOT / "ControlCGLib" / package).rglob("*.py"):
        bad = {m for m in _library_imports(path) if m not in allowed and (m in top_level or m in ALLOWED_IMPORTS)}
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}
