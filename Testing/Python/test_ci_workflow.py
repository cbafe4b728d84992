"""The workflow that runs the module's self-test inside a real 3D Slicer (.github/workflows/slicer-selftest.yml),
checked without running it (it needs Slicer's download and extension servers and PyPI): it parses as YAML, its steps
come in the order the recipe needs, and the Python each Slicer launch is given compiles."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML parses the workflow (pip install PyYAML; it is in the test extra)")

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "slicer-selftest.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def job(workflow) -> dict:
    (job,) = workflow["jobs"].values()
    return job


def _step(job: dict, words: str) -> tuple[int, dict]:
    found = [(i, s) for i, s in enumerate(job["steps"]) if words in s.get("name", "")]
    assert len(found) == 1, f"no single step named with {words!r}: {[s.get('name') for s in job['steps']]}"
    return found[0]


def _python_codes(script: str) -> list[str]:
    """The --python-code arguments of every Slicer launch in a step's script (line continuations joined)."""
    words = shlex.split(script.replace("\\\n", " "), comments=True)
    return [words[i + 1] for i, w in enumerate(words) if w == "--python-code"]


def test_workflow_parses_and_runs_when_a_hosting_service_would(workflow, job):
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert {"push", "pull_request", "workflow_dispatch"} <= set(triggers)
    assert job["runs-on"].startswith("ubuntu") and job["timeout-minutes"] <= 120
    assert job["defaults"]["run"]["shell"] == "bash"  # -eo pipefail: the tee'd Slicer run keeps its exit code
    assert job["env"]["SLICER_VERSION"] == "5.12.3"
    assert job["steps"][0]["uses"].startswith("actions/checkout@")


def test_steps_follow_the_recipe_in_order(job):
    download_at, download = _step(job, "Download 3D Slicer")
    url = "https://download.slicer.org/download?os=linux&stability=release&version=${SLICER_VERSION}"
    assert url in download["run"]
    assert "tar -xzf" in download["run"] and "--version" in download["run"]

    extension_at, extension = _step(job, "PyTorch extension")
    (code,) = _python_codes(extension["run"])
    assert "installExtensionFromServer('PyTorch', False)" in code
    assert "PyTorchUtils.py" in extension["run"] and "PYTORCH_MODULES" in extension["run"]

    torch_at, torch = _step(job, "Install torch")
    (code,) = _python_codes(torch["run"])
    assert "PyTorchUtilsLogic().installTorch(askConfirmation=False" in code and "is not None" in code

    requirements_at, requirements = _step(job, "requirements.txt")
    assert '"$SLICER_DIR/bin/PythonSlicer" -m pip install -r Resources/requirements.txt' in requirements["run"]

    test_at, test = _step(job, "self-test in Slicer")
    script = test["run"].replace("\\\n", " ")
    words = shlex.split(script)
    assert words[:3] == ["xvfb-run", "-a", "$SLICER_DIR/Slicer"]
    assert "--testing" in words and "--no-splash" in words and "--no-main-window" not in words
    paths = words[words.index("--additional-module-paths") + 1 : words.index("--python-code")]
    assert paths[0] == "$PWD/ControlCG"
    (code,) = _python_codes(test["run"])
    assert code == "import slicer.testing; slicer.testing.runUnitTest(['$PWD/ControlCG'], 'ControlCG')"
    assert 'exit "${PIPESTATUS[0]}"' in test["run"]

    # Slicer first, then the extension, torch before the requirements (pip must find torch there), then the test
    assert download_at < extension_at < torch_at < requirements_at < test_at


def test_every_python_code_given_to_slicer_compiles(job):
    codes = [code for step in job["steps"] for code in _python_codes(step.get("run", ""))]
    assert len(codes) == 3
    for code in codes:
        compile(code.replace("$PWD", "/checkout"), "<--python-code>", "exec")


def test_workflow_targets_what_the_repository_holds_and_stays_out_of_the_local_ci():
    assert (ROOT / "Resources" / "requirements.txt").is_file()
    module = (ROOT / "ControlCG" / "ControlCG.py").read_text()
    assert re.search(r"^class ControlCGTest\(ScriptedLoadableModuleTest\):", module, re.M)
    assert "NOT RUN YET" in WORKFLOW.read_text()
    assert ".github" not in (ROOT / ".ci" / "run").read_text() and "xvfb" not in (ROOT / ".ci" / "run").read_text()
